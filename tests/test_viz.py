"""Figures build headless from the kit's data objects and show what they claim."""
import math

import matplotlib.pyplot as plt
import pytest
import torch

from app_helpers import viz
from app_helpers.costs import Cost
from app_helpers.pruning import DEFAULT_SPARSITIES, SweepResult, find_cliff


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_head_heatmap_greys_out_unevaluated_heads():
    m = torch.randn(3, 4)
    m[0, 1] = math.nan
    fig = viz.head_heatmap(m, "effects", outlined=[(2, 3)])
    ax = fig.axes[0]
    assert ax.get_title() == "effects"
    assert any("pruned" in t.get_text() for t in ax.get_legend().get_texts())
    assert len(ax.patches) >= 1  # the outline box
    labels = [t.get_text() for t in ax.texts]
    assert f"{m[2, 3].item():.2f}" in labels and len(labels) == 11  # NaN cell not annotated


def test_kept_heatmap_counts_each_category():
    fig = viz.kept_heatmap({"flap": [(0, 0), (1, 1)], "contrastive": [(1, 1), (2, 0)]}, 3, 2,
                           outlined=[(2, 0)])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:4] == ["in neither (3)", "flap only (1)", "contrastive only (1)", "both (1)"]
    fig = viz.kept_heatmap({"kept": [(0, 0)]}, 2, 2, neither="pruned")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["pruned (3)", "kept (1)"]
    with pytest.raises(ValueError):
        viz.kept_heatmap({"a": [], "b": [], "c": []}, 2, 2)


def test_sweep_curves_mark_the_cliff():
    perfs = [90.0] * 25 + [10.0] * 14
    sweep = SweepResult("contrastive", list(DEFAULT_SPARSITIES), [frozenset()] * 39, perfs,
                        find_cliff(DEFAULT_SPARSITIES, perfs))
    fig = viz.sweep_curves([sweep], marker_at=0.7)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("cliff: p=0.81" in t for t in legend) and any("0.70" in t for t in legend)


def test_circuit_graph_draws_every_head_and_edge():
    heads = [(0, 1), (1, 2), (2, 0)]
    edges = [((2, 0), "logits", "logits"), ((1, 2), (2, 0), "v"), ((0, 1), (1, 2), "k")]
    fig = viz.circuit_graph(heads, edges, 3, 4, roles={(2, 0): "name mover"})
    ax = fig.axes[0]
    node_labels = {t.get_text() for t in ax.texts}
    assert {"0.1", "1.2", "2.0", "logits"} <= node_labels
    arrows = [c for c in ax.get_children() if c.__class__.__name__ == "Annotation"]
    assert len(arrows) == 3


def test_cost_bars_label_values_and_ratios_on_a_scale_from_zero():
    fig = viz.cost_bars({"dense": Cost(100, 10, 2e9, 1e9, 3.0), "APP": Cost(20, 4, 5e8, 4e8, 0.5),
                         "worse": Cost(200, 10, 2e9, 1e9, 6.0)})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert {"100", "20\n×5.0 fewer", "2", "0.500\n×6.0 fewer", "200\n×2.0 more"} <= set(texts)
    assert all(ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0 for ax in fig.axes)


def test_cell_labels_read_on_dark_and_light_cells():
    fig = viz.head_heatmap(torch.tensor([[1.0, 0.0], [-1.0, 0.05]]))
    ink = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert ink["1.00"] == ink["-1.00"] == "white" and ink["0.00"] == "black"


def test_noise_floor_keeps_noise_pale():
    m = torch.tensor([[0.01, -0.005], [0.0, 0.002]])
    assert viz.head_heatmap(m, floor=0.5).axes[0].images[0].get_clim() == pytest.approx((-0.5, 0.5))
    assert viz.head_heatmap(m * 100, floor=0.5).axes[0].images[0].get_clim() == pytest.approx((-1.0, 1.0))


def test_cost_curve_break_even_matches_the_flop_model():
    from app_helpers.sizing import GPT2_SMALL, cost_curve, pruning_flops, search_flops

    curve = cost_curve(GPT2_SMALL, prompts=10, seq=16, circuit_heads=20)
    even = curve.break_even
    assert curve.app[-1] == curve.dense  # every head kept: APP is dense PP
    assert search_flops(GPT2_SMALL, 10, 16, 20, even) + pruning_flops(GPT2_SMALL, 10, 16) <= curve.dense
    assert search_flops(GPT2_SMALL, 10, 16, 20, even + 1) + pruning_flops(GPT2_SMALL, 10, 16) > curve.dense
    fig = viz.cost_vs_heads(curve, this_run=(40, 1.0), dense_measured=2.0)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"break-even: {even} of 144 heads" in legend and any("this run: 40 heads" in t for t in legend)


def test_legends_list_each_label_once():
    perfs = [90.0] * 39
    sweep = SweepResult("flap", list(DEFAULT_SPARSITIES), [frozenset()] * 39, perfs,
                        find_cliff(DEFAULT_SPARSITIES, perfs))
    fig = viz.sweep_curves([sweep, sweep])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(legend) == len(set(legend)) == 2


def test_head_heatmap_shared_limit_sets_the_colour_scale():
    m = torch.tensor([[0.1, -0.2], [0.05, 0.0]])
    own = viz.head_heatmap(m).axes[0].images[0].get_clim()
    shared = viz.head_heatmap(m, limit=1.5).axes[0].images[0].get_clim()
    assert own == pytest.approx((-0.2, 0.2)) and shared == pytest.approx((-1.5, 1.5))


def test_cost_curve_refuses_counts_below_one():
    from app_helpers.sizing import GPT2_SMALL, cost_curve

    with pytest.raises(ValueError, match="prompts must be at least 1, got 0"):
        cost_curve(GPT2_SMALL, prompts=0, seq=16, circuit_heads=20)


def test_mlp_nodes_get_their_own_column_in_the_graph_and_the_heatmap():
    edges = [("1.0", "mlp2", "mlp"), ("mlp2", None, "logits"), ("mlp0", "1.0", "q")]
    fig = viz.circuit_graph([(1, 0)], edges, n_layers=3, n_heads=4, mlps=[0, 2])
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "mlp0" in texts and "mlp2" in texts and "1.0" in texts
    assert len([c for c in ax.get_children() if type(c).__name__ == "Annotation"]) == 3
    assert "via mlp" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "MLP"
    with pytest.raises(ValueError, match="MLP layer"):
        viz.circuit_graph([(1, 0)], [], n_layers=3, n_heads=4, mlps=[3])
    heat = viz.head_heatmap(torch.zeros(3, 5), mlps=True)
    assert [t.get_text() for t in heat.axes[0].get_xticklabels()][-1] == "MLP"
    plt.close("all")
