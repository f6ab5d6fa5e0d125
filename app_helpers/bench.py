"""``python -m app_helpers bench``: the speed table, every ratio measured side by side in one run.

Rows: the fast engine vs the naive reference (one search, then the whole 16-run grid, with a check that
both find identical circuits), APP vs dense path patching on the fast engine, executed FLOPs vs the lower
bound, the full APP pipeline's wall time, and random-weight models shaped like the paper's (GPT-2 small,
GPT-2 large, Qwen2.5-0.5B; a few senders and receivers each) so that the cost at their scale is visible.
Timings are wall-clock on this machine; nothing here is a test.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from .circuits import references_for
from .gpt2_offline import GPT2_LARGE_CONFIG, GPT2_SMALL_SHAPE, QWEN25_05B_CONFIG, random_gpt2, random_model
from .hooks import model_device
from .identities import Method
from .patching import NaivePathPatcher, PathPatcher
from .pipeline import run_comparison
from .report import comparison_rows, methods_table
from .search import GRID_SCALES, GRID_THRESHOLDS, grid_search, search_circuit
from .tasks import make_task


def _timed(fn, repeats: int = 1):
    """``fn()``'s result and its best wall time over ``repeats`` calls (the best is the least disturbed)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def engine_vs_naive(model, task, grid: bool = True, repeats: int = 3) -> list[tuple]:
    """One search at the grid's first setting (best of ``repeats``), then optionally the whole grid (once),
    on both engines; each timing includes building the engine (its caches)."""
    rows = []
    scale, threshold = GRID_SCALES[0], GRID_THRESHOLDS[0]
    naive_run, naive_s = _timed(lambda: search_circuit(NaivePathPatcher.from_task(model, task), None,
                                                       scale, threshold), repeats)
    fast_run, fast_s = _timed(lambda: search_circuit(PathPatcher.from_task(model, task), None, scale, threshold),
                              repeats)
    same = naive_run.heads == fast_run.heads and naive_run.edges == fast_run.edges
    rows.append(("one search: naive vs engine", f"{naive_s:.1f} s", f"{fast_s:.1f} s", f"{naive_s / fast_s:.1f}x",
                 f"same circuit: {same} ({len(fast_run.heads)} heads); passes {naive_run.cost.forward_passes}"
                 f" vs {fast_run.cost.forward_passes}; {naive_run.cost.flops / fast_run.cost.flops:.1f}x fewer "
                 "FLOPs"))
    if grid:
        no_eval = lambda circuits: [0.0] * len(circuits)  # noqa: E731 - timing the search only
        naive_grid, naive_gs = _timed(lambda: grid_search(NaivePathPatcher.from_task(model, task), no_eval, Method.DENSE))
        fast_grid, fast_gs = _timed(lambda: grid_search(PathPatcher.from_task(model, task), no_eval, Method.DENSE))
        same = all(a.heads == b.heads and a.edges == b.edges for a, b in zip(naive_grid.runs, fast_grid.runs))
        rows.append(("16-run grid: naive vs engine", f"{naive_gs:.1f} s", f"{fast_gs:.1f} s",
                     f"{naive_gs / fast_gs:.1f}x", f"same 16 circuits: {same}"))
    return rows


def app_vs_dense(model, task_name: str, n: int, eval_n: int, seed: int, references: dict | None = None,
                 baselines: bool = False, model_name: str = "") -> tuple[list[tuple], object]:
    """The full comparison (pruning, both grids, evaluation), timed end to end; scored against
    ``references`` (e.g. the planted truth) when given; ``baselines``: the other methods too (their
    table is ``report.methods_table``; the pipeline row's time then includes them)."""
    comparison, seconds = _timed(lambda: run_comparison(model, task_name, n=n, seed=seed, eval_n=eval_n,
                                                        show_progress=False, references=references,
                                                        baselines=baselines, model_name=model_name))
    table = {label: (d, a) for label, d, a in comparison_rows(comparison)}
    d, a = comparison.dense.cost, comparison.app.cost
    rows = [
        ("APP vs dense: sender evaluations", f"{d.sender_evaluations}", f"{a.sender_evaluations}",
         f"{d.sender_evaluations / max(1, a.sender_evaluations):.1f}x",
         f"search space {comparison.pruning.n_heads_total} → {len(comparison.pruning.merged)} heads"),
        ("APP vs dense: circuit", f"{len(comparison.dense.circuit)} heads", f"{len(comparison.app.circuit)} heads",
         "", f"TPR vs dense {table['TPR vs dense PP'][1]:.2f}, Perf {comparison.dense.perf:.1f} vs "
             f"{comparison.app.perf:.1f}"),
        *[(f"circuit vs {ref}", f"TPR {table[f'TPR vs {ref}'][0]:.2f}", f"TPR {table[f'TPR vs {ref}'][1]:.2f}", "",
           f"precision {table[f'precision vs {ref}'][0]:.2f} vs {table[f'precision vs {ref}'][1]:.2f}, IoU "
           f"{table[f'IoU vs {ref}'][0]:.2f} vs {table[f'IoU vs {ref}'][1]:.2f}") for ref in comparison.references],
        ("APP incl. pruning vs dense: GFLOPs", f"{d.flops / 1e9:.1f}", f"{(a + comparison.pruning_cost).flops / 1e9:.1f}",
         f"{d.flops / (a + comparison.pruning_cost).flops:.1f}x",
         f"pruning {comparison.pruning_cost.flops / 1e9:.1f} GFLOPs; without it {d.flops / a.flops:.1f}x"),
        ("executed FLOPs / lower bound", _bound_ratio(comparison.dense), _bound_ratio(comparison.app), "",
         "patching passes only (set-up caches excluded); 1.00 = nothing beyond the needed layers and positions"),
        ("full pipeline (scores, sweep, grids, eval" + (", baselines)" if baselines else ")"), "",
         f"{seconds:.1f} s", "",
         f"pruning {comparison.pruning_cost.seconds:.1f} s, APP grid {a.seconds:.1f} s, dense grid {d.seconds:.1f} s"),
    ]
    return rows, comparison


def _bound_ratio(run) -> str:
    work = run.cost.flops - run.setup_cost.flops
    return f"{work / run.cost.flops_lower_bound:.2f}" if run.cost.flops_lower_bound else "—"


def scale_row(label: str, model, n_prompts: int, senders: list, receivers) -> tuple:
    """Engine vs naive on one model: the logits receiver and each receiver's q, k and v, for ``senders``
    only (few, so that the naive side finishes in minutes on a CPU; the row says how many)."""
    task = make_task("ioi", model, n=n_prompts, seed=0)

    def work(engine):
        engine.to_logits(senders)
        for receiver in receivers:
            for c in "qkv":
                engine.to_head(receiver, c, senders)
        return engine
    naive, naive_s = _timed(lambda: work(NaivePathPatcher.from_task(model, task)))
    fast, fast_s = _timed(lambda: work(PathPatcher.from_task(model, task)))
    cfg = model.cfg
    return (f"{label}-shaped (random), {len(senders)} senders x {1 + 3 * len(receivers)} receivers",
            f"{naive_s:.1f} s", f"{fast_s:.1f} s", f"{naive_s / fast_s:.1f}x",
            f"{cfg.n_layers}x{cfg.n_heads} heads; {fast.cost.sender_evaluations} evaluations, N={n_prompts}; "
            f"GFLOPs {naive.cost.flops / 1e9:.0f} vs {fast.cost.flops / 1e9:.0f}")


def scale_rows():
    """GPT-2 small (two sender layers, two receivers, N = 20), then GPT-2 large (36 x 20) and Qwen2.5-0.5B
    (24 x 14, 2 key/value heads), four senders into one receiver each at N = 4, each model built, measured
    and dropped in turn (the larger two take 3-4 GB of memory each). Yields each row when measured."""
    small = random_gpt2(**GPT2_SMALL_SHAPE, n_ctx=64, seed=0)
    yield scale_row("GPT-2", small, 20, [(l, h) for l in (7, 8) for h in range(12)], ((9, 9), (10, 0)))
    del small
    for label, config, sender_layer, receiver in (("GPT-2-large", GPT2_LARGE_CONFIG, 28, (30, 0)),
                                                  ("Qwen2.5-0.5B", QWEN25_05B_CONFIG, 18, (20, 0))):
        model = random_model(**config)
        yield scale_row(label, model, 4, [(sender_layer, h) for h in range(4)], (receiver,))
        del model


def format_table(rows: list[tuple]) -> str:
    header = ("measurement", "baseline", "kit", "ratio", "notes")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def run_bench(model, model_name: str, task_name: str = "ioi", n: int = 100, eval_n: int = 200, seed: int = 0,
              grid: bool = True, gpt2: bool = True, baselines: bool = True,
              progress: Callable[[str], None] | None = None) -> str:
    """All benchmark rows for ``model`` (and the GPT-2-shaped row), as the printed table, followed by
    every method side by side (dense PP, APP and, with ``baselines``, activation patching, EAP and EAP-IG,
    dense and on the pruned set).

    ``progress`` receives one line per finished row, so a long run shows its results as they come.
    """
    torch.manual_seed(seed)
    task = make_task(task_name, model, n=n, seed=seed)
    references = references_for(model_name, task_name)
    compared = []

    def comparison_rows_():
        rows, comparison = app_vs_dense(model, task_name, n, eval_n, seed, references, baselines, model_name)
        compared.append(comparison)
        return rows
    steps = [lambda: engine_vs_naive(model, task, grid), comparison_rows_]
    if gpt2:
        steps.append(scale_rows)
    rows = []
    for step in steps:
        for row in step():
            rows.append(row)
            if progress:
                progress(f"done: {row[0]}: {row[1] or '-'} | {row[2]} | {row[3] or '-'}")
    device = model_device(model)
    where = f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else str(device)
    return (f"bench: {task_name} on {model_name}, N={n} (held-out {eval_n}), {where}\n" + format_table(rows)
            + "\n\n" + methods_table(compared[0]))
