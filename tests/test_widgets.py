"""The sparsity explorer builds headless and re-displays pre-computed results."""
import matplotlib.pyplot as plt
import torch

from app_helpers.costs import Cost
from app_helpers.pruning import (DEFAULT_SPARSITIES, HeadScores, PruningResult, SweepResult, find_cliff, n_kept,
                                 rank_heads)
from app_helpers.widgets import sparsity_explorer


def test_slider_and_method_update_the_summary():
    scores = HeadScores("contrastive", torch.arange(8.0).reshape(2, 4), torch.zeros(2, 8))
    kept = [frozenset(rank_heads(scores.scores)[:n_kept(8, p)]) for p in DEFAULT_SPARSITIES]  # a sweep's sets
    perfs = [100.0 - 50 * p for p in DEFAULT_SPARSITIES]
    sweep = SweepResult("contrastive", list(DEFAULT_SPARSITIES), kept, perfs,
                        find_cliff(DEFAULT_SPARSITIES, perfs))
    merged = SweepResult("merged", sweep.sparsities, kept, perfs, sweep.cliff)
    result = PruningResult({"contrastive": scores}, {"contrastive": sweep, "merged": merged},
                           {"contrastive": 0.75}, {"contrastive": kept[15]}, kept[15], 8, Cost())
    box = sparsity_explorer(result, reference=[(1, 3), (0, 0)])
    slider, method = box.children[0].children
    summary = box.children[1]
    assert "keeps <b>2</b> of 8 heads" in summary.value and "1 of 2 reference heads" in summary.value
    slider.value = 0.6
    assert "keeps <b>3</b> of 8" in summary.value and "Perf <b>70.0 %</b>" in summary.value
    method.value = "contrastive"
    assert summary.value.startswith("<b>contrastive</b>")
    plt.close("all")


def test_search_space_explorer_moves_each_method_and_reports_lost_circuit_heads():
    from app_helpers import pruning
    from app_helpers.widgets import search_space_explorer

    flap = HeadScores("flap", torch.arange(8.0).reshape(2, 4), torch.zeros(2, 8))  # keeps the top of layer 1
    contrastive = HeadScores("contrastive", torch.arange(8.0).flip(0).reshape(2, 4), torch.zeros(2, 8))
    result = PruningResult({"flap": flap, "contrastive": contrastive}, {}, {"flap": 0.75, "contrastive": 0.75},
                           {"flap": frozenset({(1, 3), (1, 2)}), "contrastive": frozenset({(0, 0), (0, 1)})},
                           frozenset({(1, 3), (1, 2), (0, 0), (0, 1)}), 8, Cost())
    grid = (0.5, 0.75)
    perf_grid = {(a, b): 10 * a + b for a in grid for b in grid}  # distinguishable entries
    box = search_space_explorer(result, perf_grid, circuit=[(1, 3), (0, 1), (0, 2)])
    sliders, summary = box.children[0].children, box.children[1]
    assert "search space <b>4</b> of 8" in summary.value and f"Perf <b>{7.5 + 0.75:.1f} %" in summary.value
    assert "keeps 2 of the circuit's 3 heads (loses 0.2)" in summary.value
    sliders[1].value = 0.5  # Contrastive keeps 4: 0.0 0.1 0.2 0.3
    assert "Contrastive <b>4</b>" in summary.value and "search space <b>6</b>" in summary.value
    assert f"Perf <b>{7.5 + 0.5:.1f} %" in summary.value and "keeps 3 of the circuit's 3 heads" in summary.value
    assert pruning.prune(contrastive, 0.5) == {(0, 0), (0, 1), (0, 2), (0, 3)}
    plt.close("all")
