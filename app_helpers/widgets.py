"""ipywidgets controls that re-display pre-computed results: no heavy work happens in a callback.

Moving the slider looks up the nearest point of the sweep that ``prune_for_app`` already evaluated,
so the figure updates instantly even for GPT-2.
"""
from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

from . import validate, viz
from .pruning import PruningResult


def sparsity_explorer(result: PruningResult, reference=(), n_layers: int | None = None,
                      n_heads: int | None = None) -> widgets.VBox:
    """A sparsity slider and a method selector over ``result``'s sweeps; shows the kept heads (reference
    heads outlined), Perf at that sparsity, and where the point sits on the sweep curves."""
    if not isinstance(result, PruningResult):
        raise validate.InputError(f"sparsity_explorer shows a PruningResult (what prune_for_app returns), got "
                                  f"{type(result).__name__}")
    first = next(iter(result.scores.values())).scores
    n_layers, n_heads = n_layers or first.shape[0], n_heads or first.shape[1]
    reference = validate.heads_within(reference, n_layers, n_heads, "reference heads")
    sweep0 = result.sweeps["merged"]
    slider = widgets.FloatSlider(value=result.sparsity.get("contrastive", sweep0.sparsities[0]),
                                 min=min(sweep0.sparsities), max=max(sweep0.sparsities), step=0.01,
                                 description="sparsity", continuous_update=False, readout_format=".2f")
    method = widgets.Dropdown(options=list(result.sweeps), value="merged", description="method")
    summary = widgets.HTML()
    out = widgets.Output()

    def redraw(*_):
        sweep = result.sweeps[method.value]
        kept, perf = sweep.at(slider.value)
        reference_kept = len(set(map(tuple, reference)) & kept)
        summary.value = (f"<b>{method.value}</b> at p = {slider.value:.2f}: keeps <b>{len(kept)}</b> of "
                         f"{result.n_heads_total} heads, Perf <b>{perf:.1f} %</b>"
                         + (f", {reference_kept} of {len(reference)} reference heads" if reference else ""))
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
            viz.kept_heatmap({method.value: kept}, n_layers, n_heads, outlined=reference, ax=axes[0],
                             title=f"kept at p = {slider.value:.2f}", neither="pruned")
            viz.sweep_curves(list(result.sweeps.values()), ax=axes[1], marker_at=slider.value)
            fig.tight_layout()
            display(fig)
            plt.close(fig)

    slider.observe(redraw, names="value")
    method.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([slider, method]), summary, out])


def search_space_explorer(result: PruningResult, perf_grid: dict[tuple[float, float], float],
                          circuit=(), n_layers: int | None = None, n_heads: int | None = None) -> widgets.VBox:
    """One slider per method: the two kept sets, their union (APP's search space), its Perf (looked up in
    ``perf_grid``, from ``pruning.merged_perf_grid``) and which heads of ``circuit`` (e.g. the dense PP
    circuit) the search space would lose: APP can only find heads it is allowed to search."""
    if not isinstance(result, PruningResult):
        raise validate.InputError(f"search_space_explorer shows a PruningResult (what prune_for_app returns), got "
                                  f"{type(result).__name__}")
    if not perf_grid:
        raise validate.InputError("perf_grid is empty: compute it with pruning.merged_perf_grid(evaluator, result, "
                                  "sparsities)")
    first = next(iter(result.scores.values())).scores
    n_layers, n_heads = n_layers or first.shape[0], n_heads or first.shape[1]
    circuit = set(validate.heads_within(circuit, n_layers, n_heads, "circuit heads"))
    grid = sorted({p for pair in perf_grid for p in pair})

    def slider(method):
        start = min(grid, key=lambda p: abs(p - result.sparsity[method]))
        return widgets.SelectionSlider(options=[(f"{p:.2f}", p) for p in grid], value=start,
                                       description=method, continuous_update=False)

    sliders = {m: slider(m) for m in ("flap", "contrastive")}
    summary = widgets.HTML()
    out = widgets.Output()

    def redraw(*_):
        chosen = {m: s.value for m, s in sliders.items()}
        space = result.with_sparsity(chosen)
        lost = sorted(circuit - space.merged)
        summary.value = (f"FLAP keeps <b>{len(space.kept['flap'])}</b>, Contrastive <b>{len(space.kept['contrastive'])}"
                         f"</b>: search space <b>{len(space.merged)}</b> of {result.n_heads_total} heads, Perf "
                         f"<b>{perf_grid[(chosen['flap'], chosen['contrastive'])]:.1f} %</b>"
                         + (f"; keeps {len(circuit) - len(lost)} of the circuit's {len(circuit)} heads"
                            + (" (loses " + ", ".join(f"{l}.{h}" for l, h in lost) + ")" if lost else "")
                            if circuit else ""))
        with out:
            out.clear_output(wait=True)
            fig = viz.kept_heatmap({"FLAP": space.kept["flap"], "Contrastive": space.kept["contrastive"]},
                                   n_layers, n_heads, outlined=sorted(circuit), neither="pruned by both",
                                   title="search space = union (circuit heads outlined)")
            display(fig)
            plt.close(fig)

    for s in sliders.values():
        s.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox(list(sliders.values())), summary, out])
