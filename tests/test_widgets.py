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
