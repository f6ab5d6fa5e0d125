"""Automatic circuit search by path patching (method.md §2), restricted to a candidate head set.

Breadth-first from the logits: path-patch to the logits, select the heads that matter, then path-patch
into each selected head's q, k and v, select again, and so on. APP is exactly this search with the
candidate set = the merged pruned set: pruned heads are never evaluated and never selected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from .costs import Cost
from .patching import COMPONENTS, LOGITS

Head = tuple[int, int]
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
    s = torch.nan_to_num(scores.detach().double().cpu(), nan=0.0)
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


@dataclass
class SearchResult:
    """One automatic search: the circuit, how each head was found, every score matrix, and the cost."""

    heads: list[Head]  # circuit heads in the order they were added
    edges: list[tuple[Head, object, str]]  # (sender, receiver head or "logits", component)
    scores: dict[object, torch.Tensor] = field(repr=False)  # "logits" or (receiver, component) → matrix
    scale: float
    min_value_threshold: float
    capped: bool  # stopped by the 75 % cap
    cost: Cost


def search_circuit(engine, candidates: Iterable[Head] | None = None, scale: float = 1.0,
                   min_value_threshold: float = 0.01, logits_scale: float = LOGITS_SCALE, k: float = K,
                   cap_fraction: float = CAP_FRACTION, progress: Callable[[str], None] | None = None
                   ) -> SearchResult:
    """Breadth-first path-patching search over ``engine`` (a ``PathPatcher`` or ``NaivePathPatcher``).

    Layer-0 heads join the circuit but are not expanded (nothing lies below them). The search stops when
    the queue empties, or when queued + expanded heads exceed ``cap_fraction`` of all heads — then the
    queue joins the circuit as it is (a circuit that large is no circuit, but the user sees why).
    """
    cfg = engine.cfg
    total = cfg.n_layers * cfg.n_heads
    candidates = None if candidates is None else sorted(set(map(tuple, candidates)))
    before = engine.cost.copy()
    scores: dict[object, torch.Tensor] = {LOGITS: engine.to_logits(candidates)}
    queue = select_heads(scores[LOGITS], logits_scale, min_value_threshold, candidates, k)
    edges = [(s, LOGITS, LOGITS) for s in queue]
    heads: list[Head] = []
    expanded: list[Head] = []
    capped = False
    while queue:
        if len(queue) + len(expanded) > cap_fraction * total:
            heads += [h for h in queue if h not in heads]
            capped = True
            break
        receiver = queue.pop(0)
        if receiver not in heads:
            heads.append(receiver)
        if receiver in expanded or receiver[0] == 0:
            continue
        expanded.append(receiver)
        if progress:
            progress(f"receiver {receiver[0]}.{receiver[1]}")
        # One sender pass for every queued receiver of this layer (the naive reference ignores the hint).
        engine.prefetch([receiver] + [q for q in queue if q[0] == receiver[0] and q not in expanded],
                        candidates)
        for component in COMPONENTS:
            matrix = engine.to_head(receiver, component, candidates)
            scores[(receiver, component)] = matrix
            selected = select_heads(matrix, scale, min_value_threshold, candidates, k)
            edges += [(s, receiver, component) for s in selected]
            queue += [s for s in selected if s not in expanded and s not in queue]
    return SearchResult(heads, edges, scores, scale, min_value_threshold, capped, engine.cost - before)


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


def grid_search(engine, evaluate: Callable[[list[list[Head]]], Sequence[float]],
                candidates: Iterable[Head] | None = None, scales=GRID_SCALES,
                thresholds=GRID_THRESHOLDS, min_perf: float = 75.0, max_fraction: float = 0.5,
                progress: Callable[[str], None] | None = None) -> GridResult:
    """The paper's scale × min_value_threshold grid on one engine (memoisation makes reruns cheap).

    ``evaluate`` maps a list of circuits (head lists) to their Perf %. APP uses ``min_perf=75,
    max_fraction=0.5``; dense path patching ``73`` and ``0.25`` (see ``pareto_choice``).
    """
    runs = []
    for scale in scales:
        for threshold in thresholds:
            if progress:
                progress(f"scale {scale}, threshold {threshold}")
            runs.append(search_circuit(engine, candidates, scale, threshold))
    perfs = [float(p) for p in evaluate([r.heads for r in runs])]
    total = engine.cfg.n_layers * engine.cfg.n_heads
    chosen, rule = pareto_choice([len(r.heads) for r in runs], perfs, total, min_perf, max_fraction)
    return GridResult(runs, perfs, chosen, rule)


def pareto_choice(sizes: Sequence[int], perfs: Sequence[float], n_total: int, min_perf: float,
                  max_fraction: float) -> tuple[int, str]:
    """The smallest circuit with Perf ≥ ``min_perf`` and size ≤ ``max_fraction`` of all heads; failing
    that, the smallest with Perf ≥ the grid's mean Perf. Ties go to the higher Perf, then the earlier run.
    """
    if not sizes or len(sizes) != len(perfs):
        raise ValueError("pareto_choice needs one Perf per circuit and at least one circuit")
    order = lambda i: (sizes[i], -perfs[i], i)  # noqa: E731
    eligible = [i for i in range(len(sizes)) if perfs[i] >= min_perf and sizes[i] <= max_fraction * n_total]
    if eligible:
        return min(eligible, key=order), f"smallest with Perf ≥ {min_perf:g} and ≤ {max_fraction:g} of heads"
    mean = sum(perfs) / len(perfs)
    # Tolerance: when all Perfs are equal, their float mean can exceed each of them by a rounding error.
    above = [i for i in range(len(sizes)) if perfs[i] >= mean - 1e-9 * max(1.0, abs(mean))]
    return min(above, key=order), f"no circuit met Perf ≥ {min_perf:g}: smallest with Perf ≥ mean ({mean:.1f})"
