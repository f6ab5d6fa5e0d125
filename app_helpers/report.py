"""Presenting a ``Comparison``: the side-by-side table, a JSON record (written atomically), PNG figures."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from . import viz
from .circuits import PAPER_GFLOP_SPEEDUP, PAPER_TABLE2, overlap
from .identities import LOGITS, head_name
from .pipeline import Comparison


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def comparison_rows(c: Comparison) -> list[tuple[str, object, object]]:
    """(label, dense value, APP value) rows; speed-ups are dense / APP, with and without pruning cost."""
    ov = c.overlaps()
    d, a = c.dense.cost, c.app.cost
    with_pruning = a + c.pruning_cost
    rows = [
        ("heads in circuit", len(c.dense.circuit), len(c.app.circuit)),
        *([("MLPs in circuit", _mlps(c.dense.circuit), _mlps(c.app.circuit))]
          if c.dense.circuit.mlps or c.app.circuit.mlps else []),
        ("search space (heads)", c.pruning.n_heads_total, len(c.pruning.merged)),
        (f"Perf % (held-out, N={c.eval_n})", c.dense.perf, c.app.perf),
        ("TPR vs dense PP", ov["dense PP"]["dense PP"].tpr, ov["APP"]["dense PP"].tpr),
        ("precision vs dense PP", ov["dense PP"]["dense PP"].precision, ov["APP"]["dense PP"].precision),
        ("IoU vs dense PP", ov["dense PP"]["dense PP"].iou, ov["APP"]["dense PP"].iou),
    ]
    for ref in c.references:
        rows += [(f"{what} vs {ref}", getattr(ov["dense PP"][ref], key), getattr(ov["APP"][ref], key))
                 for what, key in (("TPR", "tpr"), ("precision", "precision"), ("IoU", "iou"))]
    rows += [
        ("sender evaluations (grid)", d.sender_evaluations, a.sender_evaluations),
        ("forward passes executed", d.forward_passes, a.forward_passes),
        ("GFLOPs executed", d.flops / 1e9, a.flops / 1e9),
        ("seconds", d.seconds, a.seconds),
        ("speed-up: evaluations", 1.0, _ratio(d.sender_evaluations, a.sender_evaluations)),
        ("speed-up: GFLOPs", 1.0, _ratio(d.flops, a.flops)),
        ("speed-up: seconds", 1.0, _ratio(d.seconds, a.seconds)),
        ("pruning: GFLOPs / seconds", "", f"{c.pruning_cost.flops / 1e9:.2f} / {c.pruning_cost.seconds:.1f}"),
        ("speed-up incl. pruning: GFLOPs", 1.0, _ratio(d.flops, with_pruning.flops)),
        ("speed-up incl. pruning: seconds", 1.0, _ratio(d.seconds, with_pruning.seconds)),
    ]
    return rows


def _mlps(circuit) -> str:
    """A circuit's MLP layers, e.g. "mlp0 mlp3" (path patching with MLP nodes), or "none"."""
    return " ".join(f"mlp{m}" for m in circuit.mlps) or "none"


def _size(circuit) -> str:
    """"6 heads", or "6 heads, 2 MLPs" for a circuit found with MLP nodes."""
    return f"{len(circuit)} heads" + (f", {len(circuit.mlps)} MLPs" if circuit.mlps else "")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def comparison_table(c: Comparison) -> str:
    """The table ``python -m app_helpers run`` prints."""
    rows = comparison_rows(c)
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{c.task} on {c.model or 'model'} — {c.n} prompts searched, {c.eval_n} held out, seed {c.seed}",
             f"{'':<{width}}{'dense PP':>14}{'APP':>14}"]
    lines += [f"{label:<{width}}{_fmt(dv):>14}{_fmt(av):>14}" for label, dv, av in rows]
    lines.append(f"dense circuit: {' '.join(map(head_name, c.dense.circuit.heads)) or '(empty)'}")
    lines.append(f"APP circuit:   {' '.join(map(head_name, c.app.circuit.heads)) or '(empty)'}")
    lines += [f"WARNING — numbers above are not to be trusted: {p}" for p in c.problems]
    if c.baselines:
        lines += ["", methods_table(c)]
    return "\n".join(lines)


def methods_table(c: Comparison) -> str:
    """Every method of the comparison side by side, one row each: circuit size, held-out Perf, overlap
    with the reference circuit (the first of ``c.references``, else dense PP), GFLOPs and seconds; methods
    restricted to the pruned set also show their cost with the pruning included."""
    ref = next(iter(c.references), "dense PP")
    ov = c.overlaps()
    head = (f"{'method':<40}{'heads':>6}{'Perf %':>8}{'TPR':>6}{'prec.':>6}{'GFLOPs':>10}"
            f"{'+ pruning':>11}{'seconds':>9}")
    lines = [f"{c.task} on {c.model or 'model'}: every method, overlap vs {ref}", head]
    for r in (c.dense, c.app, *c.baselines):
        o = ov[r.name][ref]
        pruned = "" if r.candidates is None else _fmt((r.cost.flops + c.pruning_cost.flops) / 1e9)
        lines.append(f"{r.name:<40}{len(r.circuit):>6}{_fmt(r.perf):>8}{_fmt(o.tpr):>6}{_fmt(o.precision):>6}"
                     f"{_fmt(r.cost.flops / 1e9):>10}{pruned:>11}{_fmt(r.cost.seconds):>9}")
    return "\n".join(lines)


def table2_rows(c: Comparison) -> dict[str, tuple[float, int, float | None]]:
    """This run's numbers in the shape of the paper's Table 2: the dense circuit (Perf, heads) and each
    pruned set at its cliff (Perf on the comparison's held-out prompts, size, TPR % against the dense
    circuit) — how much of the circuit survives pruning, and whether the survivors still do the task."""
    if not c.pruned_perf:
        raise ValueError("this Comparison carries no held-out Perf of the pruned sets; build it with run_comparison")
    rows = {"PP": (c.dense.perf, len(c.dense.circuit), None)}
    for label, heads in c.pruning.cliff_sets().items():
        rows[label] = (c.pruned_perf[label], len(heads), 100 * overlap(heads, c.dense.circuit).tpr)
    return rows


def paper_table(c: Comparison) -> str:
    """``table2_rows`` beside the paper's GPT-2 small numbers for the same task (rows the paper lists;
    all rows when it lists none), and the grid's GFLOPs speed-up where the paper gives it."""
    ours, paper = table2_rows(c), PAPER_TABLE2.get(c.task, {})

    def cell(values) -> str:
        if values is None:
            return "not in the paper"
        perf, heads, tpr = values
        return f"{perf:6.2f} / {heads:3d} / " + ("   —  " if tpr is None or math.isnan(tpr) else f"{tpr:6.2f}")
    lines = [f"{c.task}: paper (GPT-2 small) vs this run ({c.model or 'model'}) — Perf % / heads / TPR % vs dense",
             f"{'':<12} {'paper':>26}   {'this run':>26}"]
    lines += [f"{label:<12} {cell(paper.get(label)):>26}   {cell(ours[label]):>26}" for label in (paper or ours)]
    if c.task in PAPER_GFLOP_SPEEDUP:
        ours_speedup = _ratio(c.dense.cost.flops, c.app.cost.flops)
        lines.append(f"{'GFLOPs ×':<12} {'×' + format(PAPER_GFLOP_SPEEDUP[c.task], 'g'):>26}   "
                     f"{'×' + format(ours_speedup, '.2f'):>26}")
    return "\n".join(lines)


def comparison_record(c: Comparison) -> dict:
    """Everything needed to reproduce and check the numbers, as plain JSON types."""
    def run(r):
        return {"circuit": r.circuit.to_dict(), "perf": r.perf, "cost": r.cost.as_dict(),
                "candidates": None if r.candidates is None else sorted(map(head_name, r.candidates)),
                "grid": [{"scale": g.scale, "min_value_threshold": g.min_value_threshold,
                          "heads": [head_name(h) for h in g.heads], "perf": p, "capped": g.capped,
                          "sender_evaluations": g.cost.sender_evaluations}
                         for g, p in zip(r.grid.runs, r.grid.perfs)],
                "pareto_rule": r.grid.rule, "patching_metric": r.metric}
    p = c.pruning
    return {
        "model": c.model, "task": c.task, "n": c.n, "eval_n": c.eval_n, "seed": c.seed,
        "problems": list(c.problems),
        "task_options": None if c.eval_task is None else
        {k: v for k, v in c.eval_task.options.items() if k not in ("n", "seed", "held_out_of")} | {"metric": c.eval_task.metric},
        "pruning": {
            "sparsity": p.sparsity, "merged": sorted(map(head_name, p.merged)),
            "kept": {m: sorted(map(head_name, k)) for m, k in p.kept.items()},
            "scores": {m: s.scores.tolist() for m, s in p.scores.items()},
            "sweeps": {m: {"sparsities": s.sparsities, "perfs": s.perfs, "cliff": s.cliff.sparsity,
                           "cliff_rule": s.cliff.rule} for m, s in p.sweeps.items()},
            "cost": c.pruning_cost.as_dict()},
        "dense": run(c.dense), "app": run(c.app),
        "baselines": {r.name: run(r) for r in c.baselines},
        "overlaps": {m: {ref: o.as_dict() for ref, o in refs.items()} for m, refs in c.overlaps().items()},
        "table": [[label, dv, av] for label, dv, av in comparison_rows(c)],
    }


def write_json_atomic(data: dict, path: Path) -> Path:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(standard_json(data), f, indent=1, allow_nan=False)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's files are private (0600); a record is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def standard_json(value):
    """``value`` with NaN and infinities as ``null`` (standard JSON has no NaN: ``json.dump``'s bare ``NaN``
    breaks other readers) and numbers from numpy or torch as plain floats."""
    if isinstance(value, dict):
        return {k: standard_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [standard_json(v) for v in value]
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    number = float(value)
    return number if math.isfinite(number) else None


RECORD = "comparison.json"


def check_output_folder(out_dir: Path) -> None:
    """Refuse a folder that holds anything but an earlier run's outputs (``RECORD`` and PNG figures): a
    run replaces its folder as a whole, which must never take a user's other files with it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file, not a folder; name a new or empty folder")
    strangers = sorted(p.name for p in out_dir.iterdir() if p.name != RECORD and p.suffix != ".png") \
        if out_dir.is_dir() else []
    if strangers:
        raise ValueError(f"--out {str(out_dir)!r} holds files that are not a run's outputs "
                         f"({', '.join(strangers[:3])}{', …' if len(strangers) > 3 else ''}); a run replaces "
                         "its folder as a whole, so name a new or empty folder")


def write_outputs(c: Comparison, out_dir: Path, n_layers: int, n_heads: int) -> list[Path]:
    """The JSON record and the figures as one set: written into a temporary sibling folder, which then
    replaces ``out_dir`` by renames, so a reader sees the previous run's set or this one, never a mix.
    Temporary folders of killed runs are removed first (a previous set caught mid-swap is restored)."""
    out_dir = Path(out_dir)
    check_output_folder(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    try:
        write_json_atomic(comparison_record(c), tmp / RECORD)
        figures = save_figures(c, tmp, n_layers, n_heads)
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return [out_dir / RECORD, *(out_dir / p.name for p in figures)]


def _clean_stale(out_dir: Path) -> None:
    for stale in sorted(out_dir.parent.glob(f".{out_dir.name}.*-*")):
        kind, _, pid = stale.name.rpartition("-")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if kind.endswith(".old") and not out_dir.exists():
            os.replace(stale, out_dir)  # killed between the two renames: the previous set comes back
        else:
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier run of this very process that was interrupted
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_figures(c: Comparison, out_dir: Path, n_layers: int, n_heads: int) -> list[Path]:
    """Score heatmaps, sweep curves, kept sets, both circuits as graphs, and the cost bars, as PNG."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = c.pruning
    figures = {
        "scores_flap": viz.head_heatmap(p.scores["flap"].scores, "vanilla FLAP head scores", diverging=False),
        "scores_contrastive": viz.head_heatmap(p.scores["contrastive"].scores, "Contrastive-FLAP head scores",
                                               diverging=False),
        "sweep": viz.sweep_curves(list(p.sweeps.values())),
        "kept": viz.kept_heatmap({"FLAP": p.kept["flap"], "Contrastive": p.kept["contrastive"]}, n_layers,
                                 n_heads, title="heads kept at each method's cliff",
                                 outlined=c.dense.circuit.heads, neither="pruned by both"),
        "circuit_dense": viz.circuit_graph(c.dense.circuit.heads, c.dense.circuit.edges, n_layers, n_heads,
                                           title=f"dense PP circuit ({_size(c.dense.circuit)})",
                                           mlps=c.dense.circuit.mlps),
        "circuit_app": viz.circuit_graph(c.app.circuit.heads, c.app.circuit.edges, n_layers, n_heads,
                                         title=f"APP circuit ({_size(c.app.circuit)})", mlps=c.app.circuit.mlps),
        "costs": viz.cost_bars({"dense PP": c.dense.cost, "APP": c.app.cost,
                                "APP + pruning": c.app.cost + c.pruning_cost}),
        "logits_patching_app": viz.head_heatmap(c.app.grid.best.scores[LOGITS],
                                                "APP: path patching to the logits",
                                                mlps=c.app.grid.best.scores[LOGITS].shape[1] > n_heads),
    }
    paths = []
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
