"""APP end to end, beside dense path patching: prune → restricted search grid → evaluation → costs.

Dense path patching and APP each run the paper's 4 × 4 grid on their own engine (so neither profits
from the other's memoised scores), pick a circuit by the Pareto rule, and are evaluated on held-out
prompts that never repeat a search prompt (``make_split``). APP's pruning cost is measured separately,
so speed-ups can be reported with and without it (the paper's exclude it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from .circuits import Circuit, overlap
from .costs import Cost, layer_flops_per_token, unembed_flops
from .evaluation import evaluate_circuits
from .patching import PathPatcher
from .pruning import DEFAULT_SPARSITIES, PruningResult, prune_for_app
from .search import GRID_SCALES, GRID_THRESHOLDS, GridResult, grid_search
from .tasks import TaskData, make_split

#: Pareto settings per method (method.md §2): minimum Perf and maximum fraction of all heads.
PARETO = {"dense": (73.0, 0.25), "app": (75.0, 0.5)}


@dataclass
class SearchRun:
    """One method's grid, the circuit it chose, its held-out Perf and what it cost."""

    name: str
    candidates: frozenset | None
    grid: GridResult
    circuit: Circuit
    perf: float
    cost: Cost  # everything: engine set-up, all 16 searches, wall time incl. evaluation
    setup_cost: Cost  # the engine's clean/corrupted caching passes (part of ``cost``)


@dataclass
class Comparison:
    """Dense path patching vs APP on one model and task."""

    model: str
    task: str
    n: int
    eval_n: int
    seed: int
    pruning: PruningResult
    pruning_cost: Cost
    dense: SearchRun
    app: SearchRun
    references: dict[str, Circuit] = field(default_factory=dict)
    eval_task: TaskData | None = field(default=None, repr=False)  # the held-out prompts Perf was measured on

    def overlaps(self) -> dict[str, dict[str, dict]]:
        """Overlap of each method's circuit with the dense circuit and with every reference circuit."""
        refs = {"dense PP": self.dense.circuit, **self.references}
        return {run.name: {ref: overlap(run.circuit, c) for ref, c in refs.items()}
                for run in (self.dense, self.app)}


def pruning_cost(model, task, n_circuits: int, seconds: float) -> Cost:
    """Analytic cost of ``prune_for_app``: two scoring passes plus the sweep's batched evaluations."""
    cfg, (n, seq) = model.cfg, task.clean_tokens.shape
    full = n * (seq * cfg.n_layers * layer_flops_per_token(cfg, seq))
    evaluation = full + n * unembed_flops(cfg)
    return Cost(forward_passes=2 + 2 + n_circuits, flops=2 * full + (2 + n_circuits) * evaluation,
                seconds=seconds)


def run_grid(model, task, eval_task, name: str, candidates=None, scales=GRID_SCALES,
             thresholds=GRID_THRESHOLDS, engine_kwargs=None, show_progress: bool = True) -> SearchRun:
    """The 4 × 4 grid on a fresh engine, the Pareto choice, and its held-out Perf."""
    start = time.perf_counter()
    engine = PathPatcher.from_task(model, task, **(engine_kwargs or {}))
    bar = tqdm(total=len(scales) * len(thresholds), desc=f"{name} grid", disable=not show_progress, leave=False)

    def evaluate(circuits):
        return [r.perf for r in evaluate_circuits(model, eval_task, circuits)]

    def tick(message):
        if message.startswith("scale"):
            bar.update(1)
    min_perf, max_fraction = PARETO["app" if candidates is not None else "dense"]
    grid = grid_search(engine, evaluate, candidates, scales, thresholds, min_perf, max_fraction, tick)
    bar.close()
    best = grid.best
    circuit = Circuit(heads=tuple(best.heads), edges=tuple(best.edges),
                      name=f"{name} (scale {best.scale:g}, threshold {best.min_value_threshold:g})")
    cost = engine.cost.copy()
    cost.seconds = time.perf_counter() - start  # includes the engine set-up and grid evaluation
    return SearchRun(name, None if candidates is None else frozenset(candidates), grid, circuit,
                     grid.perfs[grid.chosen], cost, engine.setup_cost)


def run_comparison(model, task_name: str = "ioi", n: int = 100, seed: int = 0, eval_n: int = 200,
                   model_name: str = "", sparsities=DEFAULT_SPARSITIES, rule: str = "first",
                   sparsity: dict | None = None, scales=GRID_SCALES, thresholds=GRID_THRESHOLDS,
                   references: dict[str, Circuit] | None = None, engine_kwargs=None,
                   show_progress: bool = True, task_options: dict | None = None) -> Comparison:
    """Dense path patching and APP on ``task_name`` (``n`` prompts to search, ``eval_n`` held out).

    ``task_options`` go to ``make_split`` for both prompt sets (e.g. ``{"metric": "prob_diff"}``).
    """
    options = dict(task_options or {})
    split = make_split(task_name, model, n=n, eval_n=eval_n, seed=seed, **options)
    task, eval_task = split.search, split.held_out
    start = time.perf_counter()
    pruning = prune_for_app(model, task, sparsities, rule, sparsity)
    cost = pruning_cost(model, task, sum(len(set(s.kept)) for s in pruning.sweeps.values()),
                        time.perf_counter() - start)
    dense = run_grid(model, task, eval_task, "dense PP", None, scales, thresholds, engine_kwargs, show_progress)
    app = run_grid(model, task, eval_task, "APP", pruning.merged, scales, thresholds, engine_kwargs,
                   show_progress)
    return Comparison(model_name, task.name, n, eval_n, seed, pruning, cost, dense, app, dict(references or {}),
                      eval_task)
