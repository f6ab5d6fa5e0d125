"""Head scores from activation statistics (vanilla FLAP, Contrastive-FLAP), pruning, sweep, cliff, merge.

The statistic is taken on the input of each layer's attention output projection — the concatenated
per-head outputs ``z`` (``blocks.{l}.attn.hook_z``), ``C = n_heads * d_head`` channels — because that is
where removing a head removes exactly its channels. Statistics are streamed over batches (sums in
float64), so memory does not grow with the number of prompts and one forward pass per prompt set suffices.
See ``shared/spec/method.md`` §1 for the formulas.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import validate
from .costs import Cost, timed
from .evaluation import CircuitEvaluator
from .hooks import hook_name, model_device, run_until

METHODS = ("flap", "contrastive")


@dataclass
class ChannelStats:
    """Streamed per-channel sums over every real (non-padding) token of a prompt set.

    Shapes are [n_layers, C]. From them: unbiased variance of each channel and the per-prompt energy
    ``e_j = mean over prompts of sum over that prompt's tokens of x_j^2`` (= total sum of squares / prompts).
    """

    n_tokens: int
    n_prompts: int
    sum: torch.Tensor
    sumsq: torch.Tensor

    @property
    def variance(self) -> torch.Tensor:
        if self.n_tokens < 2:
            raise ValueError("the variance needs at least two real tokens; give more or longer prompts")
        mean = self.sum / self.n_tokens
        return (self.sumsq - self.n_tokens * mean**2) / (self.n_tokens - 1)

    @property
    def energy(self) -> torch.Tensor:
        return self.sumsq / self.n_prompts


@dataclass
class HeadScores:
    """A [n_layers, n_heads] score matrix (higher = keep) with the method that produced it."""

    method: str
    scores: torch.Tensor
    channel_scores: torch.Tensor = field(repr=False)

    @property
    def n_heads_total(self) -> int:
        return self.scores.numel()


def collect_channel_stats(model, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                          batch_size: int = 64, cost: Cost | None = None) -> ChannelStats:
    """Stream ``hook_z`` sums over ``tokens`` [n, seq]; ``mask`` [n, seq] marks real tokens (default all).

    The forward stops at the last block's z (no MLP, no unembedding): the statistics need nothing later.
    Each pass is counted in ``cost`` when given.
    """
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise ValueError(f"tokens must be a non-empty [n_prompts, seq] tensor, got shape {tuple(tokens.shape)}")
    if mask is None:
        mask = torch.ones_like(tokens, dtype=torch.bool)
    if mask.shape != tokens.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from tokens shape {tuple(tokens.shape)}")
    batch_size = validate.integer("batch_size (prompts per scoring pass)", batch_size, at_least=1)
    cfg = model.cfg
    channels = cfg.n_heads * cfg.d_head
    device = model_device(model)
    total = torch.zeros(cfg.n_layers, channels, dtype=torch.float64, device=device)
    total_sq = torch.zeros_like(total)
    batch_mask = None

    def make_hook(layer):
        def hook(z, hook):  # noqa: ARG001 - TransformerLens passes the hook point
            x = z.reshape(*z.shape[:2], channels).to(torch.float64)[batch_mask]  # [real tokens, C]
            total[layer] += x.sum(0)
            total_sq[layer] += (x * x).sum(0)
        return hook

    hooks = [(hook_name(layer, "z"), make_hook(layer)) for layer in range(cfg.n_layers)]
    for start in range(0, tokens.shape[0], batch_size):
        batch_mask = mask[start:start + batch_size].to(device)
        batch = tokens[start:start + batch_size].to(device)
        run_until(model, batch, hooks, stop_after=hook_name(cfg.n_layers - 1, "z"))
        if cost is not None:
            cost.add_pass(cfg, rows=batch.shape[0], tokens=batch.shape[1], layers=cfg.n_layers, stop_at_last_z=True)
    return ChannelStats(int(mask.sum()), int(tokens.shape[0]), total, total_sq)


def output_weight_stats(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel of W_O viewed as [C, d_model]: squared L2 norm and mean |weight|, each [n_layers, C].

    Row j of W_O is what channel j writes into the residual stream, so these say how loudly it writes.
    """
    cfg = model.cfg
    w = torch.stack([model.blocks[layer].attn.W_O.detach().reshape(cfg.n_heads * cfg.d_head, -1)
                     for layer in range(cfg.n_layers)]).to(torch.float64)
    return (w * w).sum(-1), w.abs().mean(-1)


def flap_channel_scores(clean: ChannelStats, w2: torch.Tensor) -> torch.Tensor:
    """Vanilla FLAP: (WIFV on clean prompts)^2 with WIFV = var * ||W_O row||^2 (squared, as the authors do)."""
    return (clean.variance * w2) ** 2


def contrastive_channel_scores(clean: ChannelStats, corrupted: ChannelStats,
                               mean_abs_w: torch.Tensor) -> torch.Tensor:
    """Contrastive-FLAP: |WIFN^2(clean) - WIFN^2(corrupted)| with WIFN = mean|W_O row| * sqrt(energy).

    A channel scores high when the task's corruption changes how much it writes: task-specific heads.
    """
    return (mean_abs_w**2 * (clean.energy - corrupted.energy)).abs()


def heads_from_channels(channel_scores: torch.Tensor, n_heads: int) -> torch.Tensor:
    """z-score each layer's channels (unbiased std), then average each head's d_head channels → [L, H].

    Standardising per layer makes layers comparable before the global threshold; a layer whose channels
    all score the same gets zeros rather than NaN.
    """
    mean = channel_scores.mean(-1, keepdim=True)
    std = channel_scores.std(-1, keepdim=True)
    z = torch.where(std > 0, (channel_scores - mean) / std.clamp_min(torch.finfo(std.dtype).tiny),
                    torch.zeros_like(channel_scores))
    n_layers, channels = channel_scores.shape
    return z.reshape(n_layers, n_heads, channels // n_heads).mean(-1).to(torch.float32)


def score_heads_from_tokens(model, clean_tokens, corrupted_tokens=None, clean_mask=None,
                            corrupted_mask=None, methods=METHODS, batch_size: int = 64,
                            cost: Cost | None = None) -> dict[str, HeadScores]:
    """Both scores from one streamed pass over the clean and (for Contrastive-FLAP) one over the corrupted
    (counted in ``cost`` when given)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown scoring method(s) {unknown}; choose from {list(METHODS)}")
    if corrupted_tokens is not None and corrupted_tokens.shape != clean_tokens.shape:
        raise ValueError(f"clean tokens {tuple(clean_tokens.shape)} and corrupted tokens "
                         f"{tuple(corrupted_tokens.shape)} must have the same shape")
    w2, mean_abs = output_weight_stats(model)
    clean = collect_channel_stats(model, clean_tokens, clean_mask, batch_size, cost)
    out = {}
    if "flap" in methods:
        channel = flap_channel_scores(clean, w2)
        out["flap"] = HeadScores("flap", heads_from_channels(channel, model.cfg.n_heads), channel)
    if "contrastive" in methods:
        if corrupted_tokens is None:
            raise ValueError("Contrastive-FLAP needs corrupted prompts; the task has none")
        corrupted = collect_channel_stats(model, corrupted_tokens, corrupted_mask, batch_size, cost)
        channel = contrastive_channel_scores(clean, corrupted, mean_abs)
        out["contrastive"] = HeadScores("contrastive", heads_from_channels(channel, model.cfg.n_heads),
                                        channel)
    for method, result in out.items():
        validate.finite(f"the {method} head scores", result.scores,
                        "the model's activations are not finite (check its weights; use float32 if a lower "
                        "precision overflowed) or a layer's channels are all constant")
    return out


def n_kept(n_total: int, sparsity: float) -> int:
    """How many heads survive sparsity p: round((1 - p) * n_total), halves rounded up."""
    check_sparsity(sparsity)
    return int(math.floor((1.0 - sparsity) * n_total + 0.5 + 1e-9))


def check_sparsity(sparsity: float) -> None:
    """Sparsity is the fraction of heads removed: 0 ≤ p < 1 (p = 1 would remove every head)."""
    if not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1) — the fraction of heads removed — got {sparsity!r}")


def rank_heads(scores: torch.Tensor) -> list[tuple[int, int]]:
    """All heads, best first. Ties (and NaN, ranked last) are broken by (layer, head) ascending."""
    n_layers, n_heads = scores.shape
    flat = scores.flatten().tolist()
    order = sorted(range(len(flat)), key=lambda i: (math.isnan(flat[i]),
                                                   -flat[i] if not math.isnan(flat[i]) else 0.0, i))
    return [divmod(i, n_heads) for i in order]


def prune(scores: HeadScores | torch.Tensor, sparsity: float) -> frozenset[tuple[int, int]]:
    """The heads kept at ``sparsity`` with one global threshold over all layers; refuses NaN scores (the
    ranking would be by index) and a sparsity that keeps no head (nothing would be left to search)."""
    matrix = validate.matrix("head scores", scores.scores if isinstance(scores, HeadScores) else scores)
    validate.finite("head scores", matrix, "score the heads again (score_heads) on a model with finite weights")
    kept = _keep(matrix, sparsity)
    if not kept:
        n = matrix.numel()
        raise validate.InputError(f"sparsity {sparsity} keeps 0 of {n} heads: nothing would be left to search; "
                                  f"use a sparsity of at most {1 - 0.5 / n:.4f}")
    return kept


def _keep(matrix: torch.Tensor, sparsity: float) -> frozenset[tuple[int, int]]:
    """The top ``n_kept`` heads of ``matrix``, possibly none (a sweep's last points may keep nothing)."""
    return frozenset(rank_heads(matrix)[:n_kept(matrix.numel(), sparsity)])


@dataclass(frozen=True)
class Cliff:
    """The chosen sparsity and how it was found (so notebooks can draw and explain it)."""

    index: int | None  # position in the sweep, None when the fallback was used
    sparsity: float
    rule: str
    window: int
    threshold: float
    drops: tuple[float, ...]  # drop after each point: perf[i] - min(next `window` perfs)


DEFAULT_SPARSITIES = tuple(round(0.60 + 0.01 * i, 2) for i in range(39))  # 0.60 … 0.98
FALLBACK_SPARSITY = 0.75
CLIFF_RULES = ("first", "biggest", "fixed")


def find_cliff(sparsities, perfs, rule: str = "first", fallback: float = FALLBACK_SPARSITY) -> Cliff:
    """The last sparsity before performance falls off a cliff.

    Window ``w = round((n_points - 1) / 10)`` (4 for the default sweep), threshold ``d = (max - min) / 10``;
    point i is a cliff when its Perf exceeds the minimum of the next w points by at least d (near the end,
    of the points that remain). "first": the first such point; "biggest": the largest drop; "fixed", a
    flat curve, or no cliff: ``fallback`` (0.75 in the paper's code).
    """
    validate.one_of("cliff rule", rule, CLIFF_RULES)
    check_sparsity(fallback)
    sparsities, perfs = _checked(sparsities), list(perfs)
    if len(perfs) != len(sparsities):
        raise validate.InputError(f"a cliff needs one Perf per sparsity: got {len(perfs)} Perf values for "
                                  f"{len(sparsities)} sparsities")
    perfs = [validate.number(f"Perf at sparsity {p}", perf) for p, perf in zip(sparsities, perfs)]
    window = max(1, round((len(perfs) - 1) / 10))
    threshold = (max(perfs) - min(perfs)) / 10
    drops = tuple(perfs[i] - min(perfs[i + 1:i + 1 + window]) for i in range(len(perfs) - 1))
    candidates = [i for i, drop in enumerate(drops) if drop >= threshold] if threshold > 0 else []
    if rule == "fixed" or not candidates:
        return Cliff(None, fallback, "fixed" if rule == "fixed" else f"{rule} (no cliff: fallback)",
                     window, threshold, drops)
    index = candidates[0] if rule == "first" else max(candidates, key=lambda i: (drops[i], -i))
    return Cliff(index, sparsities[index], rule, window, threshold, drops)


def merge(*head_sets) -> frozenset[tuple[int, int]]:
    """APP's search space: the union of the kept sets (the paper's "Merged", the authors' "hybrid")."""
    return frozenset().union(*head_sets)


def score_heads(model, task, methods=METHODS, batch_size: int = 64, cost: Cost | None = None
                ) -> dict[str, HeadScores]:
    """Vanilla FLAP and/or Contrastive-FLAP scores of every head on ``task`` (a ``TaskData``).

    Statistics run over the real tokens (``task.attention_mask``) of the clean prompts and, for
    Contrastive-FLAP, of the corrupted prompts: one streamed forward pass each.
    """
    if task is None or len(task) == 0:
        raise ValueError("scoring needs a task with at least one prompt; build one with make_task(...)")
    task.check_model(model)
    return score_heads_from_tokens(model, task.clean_tokens, task.corrupted_tokens, task.attention_mask,
                                   task.attention_mask, methods, batch_size, cost)


@dataclass
class SweepResult:
    """Perf % of the pruned model at each sparsity, and the cliff chosen on that curve."""

    method: str
    sparsities: list[float]
    kept: list[frozenset]
    perfs: list[float]
    cliff: Cliff

    def at(self, sparsity: float) -> tuple[frozenset, float]:
        """Kept heads and Perf at the sweep point nearest to ``sparsity``."""
        i = min(range(len(self.sparsities)), key=lambda j: abs(self.sparsities[j] - sparsity))
        return self.kept[i], self.perfs[i]


def sparsity_sweep(evaluator: CircuitEvaluator, scores: HeadScores, sparsities=DEFAULT_SPARSITIES,
                   rule: str = "first") -> SweepResult:
    """Prune at each sparsity, evaluate the pruned model (pruned heads ablated as ``evaluator`` does,
    on its task), find the cliff.

    All pruned models are evaluated in one batched call; heads that survive keep their clean values.
    """
    sparsities = _checked(sparsities)
    matrix = validate.finite(f"the {scores.method} head scores", scores.scores, "score the heads again")
    return _evaluate_sweep(evaluator, scores.method, sparsities, [_keep(matrix, p) for p in sparsities], rule)


def merged_sweep(evaluator: CircuitEvaluator, sweeps: list[SweepResult], rule: str = "first") -> SweepResult:
    """The union of several methods' kept sets at each common sparsity, evaluated the same way."""
    validate.nonempty("sweeps", sweeps, "pass the per-method sweeps to merge (sparsity_sweep results)")
    sparsities = sweeps[0].sparsities
    if any(s.sparsities != sparsities for s in sweeps):
        raise ValueError("sweeps to merge must share their sparsity grid")
    kept = [merge(*(s.kept[i] for s in sweeps)) for i in range(len(sparsities))]
    return _evaluate_sweep(evaluator, "merged", sparsities, kept, rule)


def _checked_overrides(sparsity: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(sparsity) - set(METHODS))
    if unknown:
        raise validate.InputError(f"sparsity overrides for unknown method(s) {unknown}; methods are {list(METHODS)}")
    for p in sparsity.values():
        check_sparsity(p)
    return {m: float(p) for m, p in sparsity.items()}


def _checked(sparsities) -> list[float]:
    """A sweep's sparsities: at least two, each in [0, 1), increasing (a curve and its cliff need them so)."""
    sparsities = list(sparsities)
    for p in sparsities:
        check_sparsity(p)
    sparsities = [float(p) for p in sparsities]
    if len(sparsities) < 2 or any(b <= a for a, b in zip(sparsities, sparsities[1:])):
        raise validate.InputError(f"sparsities must be at least two increasing values in [0, 1) (a curve to find "
                                  f"the cliff on), got {sparsities}")
    return sparsities


def _evaluate_sweep(evaluator: CircuitEvaluator, method, sparsities, kept, rule) -> SweepResult:
    """Evaluate each distinct kept set once (with few heads, neighbouring sparsities keep the same set)."""
    distinct = list(dict.fromkeys(kept))
    perf_of = dict(zip(distinct, (r.perf for r in evaluator.evaluate([sorted(k) for k in distinct]))))
    perfs = [perf_of[k] for k in kept]
    return SweepResult(method, sparsities, kept, perfs, find_cliff(sparsities, perfs, rule))


@dataclass
class PruningResult:
    """Everything the pruning stage decided: scores, sweeps (per method and of the union at equal
    sparsity), the sparsity used per method, the kept sets and their union — APP's search space."""

    scores: dict[str, HeadScores]
    sweeps: dict[str, SweepResult]
    sparsity: dict[str, float]
    kept: dict[str, frozenset]
    merged: frozenset
    n_heads_total: int
    cost: Cost  # measured: the scoring passes and every evaluation pass of the sweeps, and the wall time

    def cliff_sets(self) -> dict[str, frozenset]:
        """The pruned sets as the paper's Table 2 names them: each method's kept set and their union."""
        return {"FLAP": self.kept["flap"], "Contrastive": self.kept["contrastive"], "Merged": self.merged}

    def with_sparsity(self, sparsity: dict[str, float]) -> "PruningResult":
        """The same scores and sweeps with other sparsities for some methods (the rest keep theirs): no
        forward pass, so a notebook or widget can move each method's sparsity freely."""
        chosen = {**self.sparsity, **_checked_overrides(sparsity)}
        kept = {m: _keep(self.scores[m].scores, chosen[m]) for m in METHODS}
        if not merge(*kept.values()):
            raise validate.InputError(f"pruning at sparsities {chosen} keeps no head of {self.n_heads_total}: APP "
                                      "would search nothing; pass lower sparsities (sparsity={'flap': ..., "
                                      "'contrastive': ...})")
        return PruningResult(self.scores, self.sweeps, chosen, kept, merge(*kept.values()), self.n_heads_total,
                             self.cost)


def merged_perf_grid(evaluator: CircuitEvaluator, result: PruningResult, sparsities) -> dict[tuple[float, float], float]:
    """Perf % of the merged set for every (FLAP sparsity, Contrastive sparsity) pair of ``sparsities``, in
    one batched evaluation: what a widget that moves the two sparsities separately looks up."""
    sparsities = _checked(sparsities)
    pairs = [(a, b) for a in sparsities for b in sparsities]
    sets = [merge(_keep(result.scores["flap"].scores, a), _keep(result.scores["contrastive"].scores, b))
            for a, b in pairs]
    distinct = sorted(set(sets), key=sorted)
    perf = dict(zip(distinct, (r.perf for r in evaluator.evaluate([list(s) for s in distinct]))))
    return {pair: perf[heads] for pair, heads in zip(pairs, sets)}


def prune_for_app(model, task, sparsities=DEFAULT_SPARSITIES, rule: str = "first",
                  sparsity: dict[str, float] | None = None, ablation: str = "mean",
                  batch_size: int = 64) -> PruningResult:
    """Score heads both ways, sweep, take each method's cliff (or ``sparsity[method]`` to override it),
    and merge the two kept sets."""
    validate.one_of("cliff rule", rule, CLIFF_RULES)
    sparsities, sparsity = _checked(sparsities), _checked_overrides(sparsity or {})  # before any pass
    scoring = Cost()
    with timed(scoring):
        scores = score_heads(model, task, METHODS, batch_size, scoring)
    evaluator = CircuitEvaluator(model, task, ablation)
    sweeps = {m: sparsity_sweep(evaluator, scores[m], sparsities, rule) for m in METHODS}
    sweeps["merged"] = merged_sweep(evaluator, [sweeps[m] for m in METHODS], rule)
    cliffs = {m: sweeps[m].cliff.sparsity for m in METHODS}
    kept = {m: _keep(scores[m].scores, cliffs[m]) for m in METHODS}
    total = model.cfg.n_layers * model.cfg.n_heads
    at_cliffs = PruningResult(scores, sweeps, cliffs, kept, merge(*kept.values()), total, scoring + evaluator.cost)
    return at_cliffs.with_sparsity(sparsity)
