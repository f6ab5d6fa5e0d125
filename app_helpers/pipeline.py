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

from .baselines import Baselines
from . import validate
from .circuits import Circuit, overlap
from .costs import Cost
from .evaluation import CircuitEvaluator
from .identities import Method, Overlap
from .patching import PathPatcher
from .pruning import DEFAULT_SPARSITIES, PruningResult, prune_for_app
from .search import GRID_SCALES, GRID_THRESHOLDS, GridResult, grid_search, selection_grid
from .tasks import TaskData, make_split

@dataclass
class SearchRun:
    """One method's grid, the circuit it chose, its held-out Perf and what it cost."""

    method: Method
    candidates: frozenset | None
    grid: GridResult
    circuit: Circuit
    perf: float
    cost: Cost  # the engine's passes: set-up and all 16 searches; seconds: wall time incl. evaluation
    setup_cost: Cost  # the engine's clean/corrupted caching passes (part of ``cost``)
    problems: list[str] = field(default_factory=list)  # why its engine's normalised scores are untrustworthy
    metric: str = "logit_diff"  # what path patching scored (the task's metric, or "kl")
    label: str = ""  # a baseline's name ("EAP on the pruned set"); path patching's is its method's

    @property
    def name(self) -> str:
        return self.label or self.method.label


@dataclass
class Comparison:
    """Dense path patching vs APP on one model and task."""

    model: str
    task: str
    n: int
    eval_n: int
    seed: int
    pruning: PruningResult
    dense: SearchRun
    app: SearchRun
    references: dict[str, Circuit] = field(default_factory=dict)
    eval_task: TaskData | None = field(default=None, repr=False)  # the held-out prompts Perf was measured on
    #: Held-out Perf of each pruned set at its cliff ("FLAP", "Contrastive", "Merged"): the paper's Table 2
    pruned_perf: dict[str, float] = field(default_factory=dict)
    #: Why some numbers cannot be trusted (the search prompts' and the held-out prompts' baselines); the
    #: table and the JSON record carry them, so a meaningless Perf % never passes as a normal one
    problems: list[str] = field(default_factory=list)
    #: Other methods beside PP and APP (``run_comparison(..., baselines=True)``), dense and on the pruned set
    baselines: list[SearchRun] = field(default_factory=list)

    @property
    def pruning_cost(self) -> Cost:
        return self.pruning.cost

    def overlaps(self) -> dict[str, dict[str, Overlap]]:
        """Overlap of each method's circuit (baselines included) with the dense circuit and with every
        reference circuit."""
        refs = {"dense PP": self.dense.circuit, **self.references}
        return {run.name: {ref: overlap(run.circuit, c) for ref, c in refs.items()}
                for run in (self.dense, self.app, *self.baselines)}


def run_grid(model, task, evaluator: CircuitEvaluator, method: Method, candidates=None, scales=GRID_SCALES,
             thresholds=GRID_THRESHOLDS, engine_kwargs=None, show_progress: bool = True) -> SearchRun:
    """The 4 × 4 grid on a fresh engine, the Pareto choice, and its Perf by ``evaluator`` (held out)."""
    start = time.perf_counter()
    engine = PathPatcher.from_task(model, task, **(engine_kwargs or {}))
    bar = tqdm(total=len(scales) * len(thresholds), desc=f"{method.label} grid", disable=not show_progress,
               leave=False)
    grid = grid_search(engine, _perfs(evaluator), method, candidates, scales, thresholds, lambda _: bar.update(1))
    bar.close()
    best = grid.best
    circuit = Circuit(heads=tuple(best.heads), edges=tuple(best.edges), mlps=tuple(best.mlps),
                      name=f"{method.label} (scale {best.scale:g}, threshold {best.min_value_threshold:g})")
    cost = engine.cost.copy()
    cost.seconds = time.perf_counter() - start  # includes the engine set-up and grid evaluation
    return SearchRun(method, None if candidates is None else frozenset(candidates), grid, circuit,
                     grid.perfs[grid.chosen], cost, engine.setup_cost, engine.problems, engine.metric_name)


def _perfs(evaluator: CircuitEvaluator):
    """The grid's ``evaluate``: circuits → their held-out Perf %."""
    return lambda circuits: [r.perf for r in evaluator.evaluate(circuits)]


#: The baselines ``run_comparison(..., baselines=True)`` runs beside PP and APP: label → scoring call
BASELINES = {
    "activation patching": lambda b, candidates: b.activation_patching(candidates),
    "EAP": lambda b, candidates: b.eap(candidates),
    "EAP-IG": lambda b, candidates: b.eap_ig(candidates=candidates),
}


def run_baseline(model, task, evaluator: CircuitEvaluator, which: str, candidates=None, scales=GRID_SCALES,
                 thresholds=GRID_THRESHOLDS, engine_kwargs=None) -> SearchRun:
    """One baseline (``BASELINES``) scored on a fresh ``Baselines`` set-up, then the same grid, selection
    rule, Pareto choice and held-out Perf as path patching: EAP's edge scores drive the kit's search in
    place of exact path patching; activation patching's head scores are selected from directly at each
    grid setting (it has no paths: ``search.selection_grid``). ``candidates``: the pruned set (the paper's
    idea applied to the baseline): heads outside it are never scored and the Pareto rule is APP's."""
    validate.one_of("baseline", which, BASELINES)
    start = time.perf_counter()
    method = Method.DENSE if candidates is None else Method.APP
    setup = Baselines.from_task(model, task, **(engine_kwargs or {}))
    scores = BASELINES[which](setup, candidates)
    evaluate = _perfs(evaluator)
    grid = (grid_search(scores.as_engine(model.cfg), evaluate, method, candidates, scales, thresholds) if scores.edges
            else selection_grid(scores.scores, evaluate, method, candidates, scales, thresholds))
    best = grid.best
    label = which + ("" if candidates is None else " on the pruned set")
    circuit = Circuit(heads=tuple(best.heads), edges=tuple(best.edges),
                      name=f"{label} (scale {best.scale:g}, threshold {best.min_value_threshold:g})")
    cost = scores.cost.copy()
    cost.seconds = time.perf_counter() - start
    return SearchRun(method, None if candidates is None else frozenset(candidates), grid, circuit,
                     grid.perfs[grid.chosen], cost, setup.setup_cost, setup.problems, setup.metric_name, label)


def run_comparison(model, task_name: str = "ioi", n: int = 100, seed: int = 0, eval_n: int = 200,
                   model_name: str = "", sparsities=DEFAULT_SPARSITIES, rule: str = "first",
                   sparsity: dict | None = None, scales=GRID_SCALES, thresholds=GRID_THRESHOLDS,
                   references: dict[str, Circuit] | None = None, engine_kwargs=None,
                   show_progress: bool = True, task_options: dict | None = None,
                   baselines: bool = False) -> Comparison:
    """Dense path patching and APP on ``task_name`` (``n`` prompts to search, ``eval_n`` held out).

    ``task_options`` go to ``make_split`` for both prompt sets (e.g. ``{"metric": "prob_diff"}``: Perf and,
    by default, path patching use it); ``engine_kwargs`` go to both engines (e.g. ``{"metric": "kl"}``: path
    patching scores KL to the clean distribution while Perf keeps the task's metric; ``{"mlps": True}``: MLP
    nodes, so circuits may contain MLPs — Perf still ablates heads only). ``baselines``: also run every
    method of ``BASELINES``, dense and on APP's pruned set (``Comparison.baselines``; heads only, so not
    with MLP nodes).
    """
    if baselines and (engine_kwargs or {}).get("mlps"):
        raise validate.InputError("the baselines score heads only: run them without MLP nodes (engine_kwargs mlps), or "
                         "path patching with MLP nodes without baselines")
    options = dict(task_options or {})
    split = make_split(task_name, model, n=n, eval_n=eval_n, seed=seed, **options)
    task, eval_task = split.search, split.held_out
    pruning = prune_for_app(model, task, sparsities, rule, sparsity)
    held_out = CircuitEvaluator(model, eval_task)
    dense = run_grid(model, task, held_out, Method.DENSE, None, scales, thresholds, engine_kwargs, show_progress)
    app = run_grid(model, task, held_out, Method.APP, pruning.merged, scales, thresholds, engine_kwargs,
                   show_progress)
    pruned = pruning.cliff_sets()
    pruned_perf = {label: r.perf for label, r in zip(pruned, held_out.evaluate(list(pruned.values())))}
    problems = list(dict.fromkeys(dense.problems + held_out.problems))
    todo = [(which, candidates) for which in (BASELINES if baselines else ()) for candidates in (None, pruning.merged)]
    others = [run_baseline(model, task, held_out, which, candidates, scales, thresholds, engine_kwargs)
              for which, candidates in tqdm(todo, desc="baselines", disable=not show_progress or not todo,
                                            leave=False)]
    return Comparison(model_name, task.name, n, eval_n, seed, pruning, dense, app, dict(references or {}),
                      eval_task, pruned_perf, problems, others)
