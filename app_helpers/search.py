"""Automatic circuit search by path patching (method.md §2), restricted to a candidate head set.

Breadth-first from the logits: path-patch to the logits, select the heads that matter, then path-patch
into each selected head's q, k and v, select again, and so on. APP is exactly this search with the
candidate set = the merged pruned set: pruned heads are never evaluated and never selected. On an engine
with MLP nodes (``PathPatcher(..., mlps=True)``) the score matrices carry each layer's MLP in their last
column: MLPs are selected by the same rule beside the heads (always candidates: they are never pruned)
and a selected MLP is expanded through its input like a head through its q, k and v.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from . import validate
from .costs import Cost
from .identities import HEAD_INPUTS, LOGITS, MLP, Edge, Head, Method, Node, Receiver, head_input, mlp_input

GRID_SCALES = (1.0, 1.5, 2.0, 2.5)
GRID_THRESHOLDS = (0.01, 0.001, 0.02, 0.002)
LOGITS_SCALE = 2.0  # the paper's resid_scale for the first (logits) step
K = 2.0
CAP_FRACTION = 0.75


def select_heads(scores: torch.Tensor, scale: float, min_value_threshold: float,
                 candidates: Iterable[Head] | None = None, k: float = K) -> list[Head]:
    """Heads whose effect stands out: ``|S[l,h]| - |mean| > (scale + k / sqrt((l+1)·n_heads))·|std|``.

    NaN (not evaluated) counts as 0; absolute values select heads that hurt the behaviour too (negative
    name movers). Nothing is selected when no entry exceeds ``min_value_threshold`` in size. The extra
    ``k/sqrt(...)`` term is stricter for early layers, which have fewer heads below them to compare with.
    Returns heads in (layer, head) order, only from ``candidates`` when given.
    """
    scale, min_value_threshold, k = _settings(scale, min_value_threshold, k)
    s = torch.nan_to_num(validate.matrix("scores", scores).detach().double().cpu(), nan=0.0)
    if s.numel() == 0 or s.abs().max() <= min_value_threshold:
        return []
    mu = s.mean().abs()
    sigma = s.std().abs() if s.numel() > 1 else torch.tensor(0.0, dtype=s.dtype)
    n_layers, n_heads = s.shape
    allowed = None if candidates is None else set(map(tuple, candidates))
    chosen = []
    for layer in range(n_layers):
        threshold = (scale + k / math.sqrt((layer + 1) * n_heads)) * sigma
        for head in range(n_heads):
            if s[layer, head].abs() - mu > threshold and (allowed is None or (layer, head) in allowed):
                chosen.append((layer, head))
    return chosen


def select_nodes(scores: torch.Tensor, n_heads: int, scale: float, min_value_threshold: float,
                 candidates: Iterable[Head] | None = None, k: float = K) -> list[Node]:
    """``select_heads`` on a score matrix that may hold one more column than ``n_heads``: each layer's
    MLP (an engine with MLP nodes). The rule's mean and spread then run over heads and MLPs together and
    its per-layer term counts the layer's nodes; MLPs are always candidates. Returns heads and ``MLP``s."""
    if scores.shape[-1] == n_heads:
        return select_heads(scores, scale, min_value_threshold, candidates, k)
    allowed = None if candidates is None else [*candidates, *((l, n_heads) for l in range(scores.shape[0]))]
    return [MLP(l) if h == n_heads else (l, h)
            for l, h in select_heads(scores, scale, min_value_threshold, allowed, k)]


def _settings(scale, min_value_threshold, k=K) -> tuple[float, float, float]:
    """The selection rule's settings, checked: finite and not negative (a NaN threshold selects nothing)."""
    return (validate.number("scale", scale, at_least=0), validate.number("min_value_threshold", min_value_threshold,
                                                                          at_least=0),
            validate.number("k", k, at_least=0))


@dataclass
class SearchResult:
    """One automatic search: the circuit, how each node was found, every score matrix, and the cost."""

    heads: list[Head]  # circuit heads in the order they were added
    edges: list[Edge]  # (sender, receiver node or None for the logits, component)
    scores: dict[Receiver, torch.Tensor] = field(repr=False)  # receiver → [layers below it, n_columns]
    scale: float
    min_value_threshold: float
    capped: bool  # stopped by the 75 % cap
    cost: Cost
    mlps: list[int] = field(default_factory=list)  # layers of the circuit's MLPs (an engine with MLP nodes)


def search_circuit(engine, candidates: Iterable[Head] | None = None, scale: float = 1.0,
                   min_value_threshold: float = 0.01, logits_scale: float = LOGITS_SCALE, k: float = K,
                   cap_fraction: float = CAP_FRACTION, progress: Callable[[Node], None] | None = None
                   ) -> SearchResult:
    """Breadth-first path-patching search over ``engine`` (a ``PathPatcher`` or ``NaivePathPatcher``).

    Layer-0 heads join the circuit but are not expanded (nothing lies below them). The search stops when
    the queue empties, or when queued + expanded nodes exceed ``cap_fraction`` of all nodes (heads, and
    MLPs with MLP nodes) — then the queue joins the circuit as it is (a circuit that large is no circuit,
    but the user sees why). ``progress(node)`` is called before each receiver is expanded.
    """
    cfg = engine.cfg
    mlps = getattr(engine, "mlps", False)
    total = cfg.n_layers * (cfg.n_heads + mlps)
    _settings(scale, min_value_threshold, k)
    validate.number("logits_scale", logits_scale, at_least=0)
    validate.number("cap_fraction", cap_fraction, above=0, at_most=1)
    if candidates is not None:
        candidates = sorted(set(validate.heads_within(candidates, cfg.n_layers, cfg.n_heads, "candidates")))
        validate.nonempty("the candidate set", candidates, "pass None to search every head, or the pruned set "
                          "(PruningResult.merged)")
    before = engine.cost.copy()
    select = lambda m, scale_: select_nodes(m, cfg.n_heads, scale_, min_value_threshold, candidates, k)  # noqa: E731
    scores: dict[Receiver, torch.Tensor] = {LOGITS: engine.to_logits(candidates)}
    queue: list[Node] = select(scores[LOGITS], logits_scale)
    edges = [Edge(s, None, LOGITS.component) for s in queue]
    nodes: list[Node] = []
    expanded: list[Node] = []
    capped = False
    while queue:
        if len(queue) + len(expanded) > cap_fraction * total:
            nodes += [h for h in queue if h not in nodes]
            capped = True
            break
        receiver = queue.pop(0)
        if receiver not in nodes:
            nodes.append(receiver)
        if receiver in expanded or (not isinstance(receiver, MLP) and receiver[0] == 0):
            continue
        expanded.append(receiver)
        if progress:
            progress(receiver)
        # One sender pass for every queued receiver of this layer (the naive reference ignores the hint).
        engine.prefetch([receiver] + [q for q in queue if q[0] == receiver[0] and q not in expanded],
                        candidates)
        inputs = ([mlp_input(receiver.layer)] if isinstance(receiver, MLP)
                  else [head_input(receiver, c) for c in HEAD_INPUTS])
        for into in inputs:
            matrix = (engine.to_mlp(receiver.layer, candidates) if into.is_mlp
                      else engine.to_head(receiver, into.component, candidates))
            scores[into] = matrix
            selected = select(matrix, scale)
            edges += [Edge(s, receiver, into.component) for s in selected]
            queue += [s for s in selected if s not in expanded and s not in queue]
    heads = [n for n in nodes if not isinstance(n, MLP)]
    return SearchResult(heads, edges, scores, scale, min_value_threshold, capped, engine.cost - before,
                        sorted(n.layer for n in nodes if isinstance(n, MLP)))


@dataclass
class GridResult:
    """Every (scale, threshold) search, its Perf, and the Pareto choice."""

    runs: list[SearchResult]
    perfs: list[float]
    chosen: int
    rule: str

    @property
    def best(self) -> SearchResult:
        return self.runs[self.chosen]


def grid_search(engine, evaluate: Callable[[list[list[Head]]], Sequence[float]], method: Method,
                candidates: Iterable[Head] | None = None, scales=GRID_SCALES,
                thresholds=GRID_THRESHOLDS, progress: Callable[[SearchResult], None] | None = None
                ) -> GridResult:
    """The paper's scale × min_value_threshold grid on one engine (memoisation makes reruns cheap).

    ``evaluate`` maps a list of circuits (head lists) to their Perf %; ``method`` brings its Pareto
    settings (``Method.APP``: Perf ≥ 75 within half the heads, ``Method.DENSE``: 73 and a quarter; see
    ``pareto_choice``). ``progress(result)`` is called after each of the grid's searches.
    """
    scales, thresholds = _grid(scales, thresholds)
    runs = []
    for scale in scales:
        for threshold in thresholds:
            runs.append(search_circuit(engine, candidates, scale, threshold))
            if progress:
                progress(runs[-1])
    return _chosen(runs, evaluate, method, engine.cfg.n_layers * engine.cfg.n_heads)


def selection_grid(scores: torch.Tensor, evaluate: Callable[[list[list[Head]]], Sequence[float]], method: Method,
                   candidates: Iterable[Head] | None = None, scales=GRID_SCALES,
                   thresholds=GRID_THRESHOLDS) -> GridResult:
    """The grid for a method that scores heads, not paths (activation patching): each setting selects
    from the one ``scores`` matrix [n_layers, n_heads] with the selection rule at that scale, then the
    same Perf evaluation and Pareto choice as ``grid_search``. The runs have no edges and cost nothing
    (the scores were paid for when computed)."""
    scales, thresholds = _grid(scales, thresholds)
    runs = [SearchResult(select_heads(scores, scale, threshold, candidates), [], {LOGITS: scores}, scale, threshold,
                         False, Cost()) for scale in scales for threshold in thresholds]
    return _chosen(runs, evaluate, method, scores.numel())


def _grid(scales, thresholds) -> tuple[list[float], list[float]]:
    """The grid's settings, checked before any search runs: at least one of each, every pair valid."""
    scales = validate.nonempty("scales", list(scales), "pass at least one scale (the paper's: search.GRID_SCALES)")
    thresholds = validate.nonempty("thresholds", list(thresholds),
                                   "pass at least one threshold (the paper's: search.GRID_THRESHOLDS)")
    for scale in scales:
        for threshold in thresholds:
            _settings(scale, threshold)
    return scales, thresholds


def _chosen(runs: list[SearchResult], evaluate, method: Method, total: int) -> GridResult:
    perfs = [float(p) for p in evaluate([r.heads for r in runs])]
    chosen, rule = pareto_choice([len(r.heads) for r in runs], perfs, total, method.min_perf, method.max_fraction)
    return GridResult(runs, perfs, chosen, rule)


def pareto_choice(sizes: Sequence[int], perfs: Sequence[float], n_total: int, min_perf: float,
                  max_fraction: float) -> tuple[int, str]:
    """The smallest circuit with Perf ≥ ``min_perf`` and size ≤ ``max_fraction`` of all heads; failing
    that, the smallest with Perf ≥ the grid's mean Perf. Ties go to the higher Perf, then the earlier run.
    """
    if not sizes or len(sizes) != len(perfs):
        raise ValueError(f"pareto_choice needs one Perf per circuit and at least one circuit, got {len(sizes)} "
                         f"circuits and {len(perfs)} Perf values")
    perfs = [validate.number(f"the Perf of grid run {i}", p) for i, p in enumerate(perfs)]  # NaN: no order
    order = lambda i: (sizes[i], -perfs[i], i)  # noqa: E731
    eligible = [i for i in range(len(sizes)) if perfs[i] >= min_perf and sizes[i] <= max_fraction * n_total]
    if eligible:
        return min(eligible, key=order), f"smallest with Perf ≥ {min_perf:g} and ≤ {max_fraction:g} of heads"
    mean = sum(perfs) / len(perfs)
    # Tolerance: when all Perfs are equal, their float mean can exceed each of them by a rounding error.
    above = [i for i in range(len(sizes)) if perfs[i] >= mean - 1e-9 * max(1.0, abs(mean))]
    return min(above, key=order), f"no circuit met Perf ≥ {min_perf:g}: smallest with Perf ≥ mean ({mean:.1f})"
