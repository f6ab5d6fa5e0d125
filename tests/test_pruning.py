"""FLAP / Contrastive-FLAP scores against a naive full-cache computation; pruning; cliff; merge."""
import math

import pytest
import torch

from app_helpers import pruning
from references import counted_flops, naive_head_scores


@pytest.fixture(scope="module")
def prompts():
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 50000, (6, 8), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 3] = torch.randint(0, 50000, (6,), generator=gen)
    mask = torch.ones_like(clean, dtype=torch.bool)
    mask[:2, 5:] = False  # two shorter prompts: padding must not count
    return clean, corrupted, mask


def test_scores_equal_naive_computation(tiny_gpt2, prompts):
    clean, corrupted, mask = prompts
    got = pruning.score_heads_from_tokens(tiny_gpt2, clean, corrupted, mask, mask, batch_size=4)
    want = naive_head_scores(tiny_gpt2, clean, corrupted, mask, mask)
    for method in pruning.METHODS:
        assert got[method].scores.shape == (2, 4)
        torch.testing.assert_close(got[method].scores, want[method].float(), atol=1e-5, rtol=0)

def test_scoring_cost_is_what_torch_counts(tiny_gpt2, prompts):
    """The scoring passes stop at the last layer's z: their counted FLOPs are the matmuls really run."""
    from app_helpers.costs import Cost

    clean, corrupted, mask = prompts
    cost = Cost()
    _, flops = counted_flops(pruning.score_heads_from_tokens, tiny_gpt2, clean, corrupted, mask, mask,
                             batch_size=4, cost=cost)
    assert cost.flops == flops > 0 and cost.forward_passes == 4  # 6 prompts in batches of 4, twice


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_streaming_equals_one_batch(tiny_gpt2, prompts, batch_size):
    clean, corrupted, mask = prompts
    one = pruning.score_heads_from_tokens(tiny_gpt2, clean, corrupted, mask, mask, batch_size=len(clean))
    streamed = pruning.score_heads_from_tokens(tiny_gpt2, clean, corrupted, mask, mask, batch_size=batch_size)
    for method in pruning.METHODS:
        torch.testing.assert_close(streamed[method].scores, one[method].scores, atol=1e-6, rtol=0)


def test_padding_is_excluded_from_statistics(tiny_gpt2, prompts):
    clean, _, mask = prompts
    stats = pruning.collect_channel_stats(tiny_gpt2, clean, mask)
    assert stats.n_tokens == int(mask.sum()) == 6 * 8 - 2 * 3
    padded_differently = clean.clone()
    padded_differently[~mask] = 0
    again = pruning.collect_channel_stats(tiny_gpt2, padded_differently, mask)
    torch.testing.assert_close(again.sum, stats.sum)  # causal model: pads after the prompt change nothing


def test_bad_inputs_are_clear_errors(tiny_gpt2, prompts):
    clean, corrupted, mask = prompts
    with pytest.raises(ValueError, match="same shape"):
        pruning.score_heads_from_tokens(tiny_gpt2, clean, corrupted[:, :5])
    with pytest.raises(ValueError, match="unknown scoring method"):
        pruning.score_heads_from_tokens(tiny_gpt2, clean, corrupted, methods=("wanda",))
    with pytest.raises(ValueError, match="non-empty"):
        pruning.collect_channel_stats(tiny_gpt2, clean[:0])
    with pytest.raises(ValueError, match="needs corrupted prompts"):
        pruning.score_heads_from_tokens(tiny_gpt2, clean, None, methods=("contrastive",))


@pytest.mark.parametrize("n_total", [8, 32, 144])
def test_pruned_set_sizes_are_exact_for_every_sparsity(n_total):
    scores = torch.randn(n_total // 4, 4, generator=torch.Generator().manual_seed(n_total))
    for sparsity in [i / 100 for i in range(100)]:
        size = math.floor((1 - sparsity) * n_total + 0.5 + 1e-9)
        if size == 0:  # nothing left to search: refused, with the largest sparsity that keeps a head
            with pytest.raises(ValueError, match=f"keeps 0 of {n_total} heads.*at most {1 - 0.5 / n_total:.4f}"):
                pruning.prune(scores, sparsity)
            continue
        kept = pruning.prune(scores, sparsity)
        assert len(kept) == size
        # Global threshold: every kept head scores at least as high as every pruned head.
        dropped = {(l, h) for l in range(scores.shape[0]) for h in range(4)} - kept
        if kept and dropped:
            assert min(scores[k].item() for k in kept) >= max(scores[d].item() for d in dropped)


def test_ties_break_by_layer_then_head_and_nan_ranks_last():
    scores = torch.tensor([[1.0, float("nan")], [1.0, 2.0]])
    assert pruning.rank_heads(scores) == [(1, 1), (0, 0), (1, 0), (0, 1)]
    assert pruning.prune(scores.nan_to_num(-1.0), 0.5) == {(1, 1), (0, 0)}
    with pytest.raises(ValueError, match="1 non-finite value"):  # pruning by a NaN would prune by index
        pruning.prune(scores, 0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5"])
def test_sparsity_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        pruning.prune(torch.zeros(2, 2), bad)


def test_cliff_on_a_clean_step():
    sparsities = pruning.DEFAULT_SPARSITIES
    perfs = [90.0] * 25 + [10.0] * 14  # falls after index 24 (p = 0.84)
    for rule in ("first", "biggest"):
        cliff = pruning.find_cliff(sparsities, perfs, rule)
        assert cliff.window == 4 and cliff.threshold == pytest.approx(8.0)
        # "first": the first point whose next four points hold the fall is 4 before it; "biggest" ties → first.
        assert cliff.index == 21 and cliff.sparsity == 0.81


def test_cliff_without_a_drop_falls_back():
    flat = pruning.find_cliff(pruning.DEFAULT_SPARSITIES, [50.0] * 39)
    assert flat.index is None and flat.sparsity == 0.75
    rising = pruning.find_cliff(pruning.DEFAULT_SPARSITIES, list(range(39)))
    assert rising.index is None and rising.sparsity == 0.75
    fixed = pruning.find_cliff(pruning.DEFAULT_SPARSITIES, [90.0] * 25 + [10.0] * 14, rule="fixed")
    assert fixed.sparsity == 0.75


def test_cliff_on_a_noisy_slope_biggest_finds_the_fall():
    gen = torch.Generator().manual_seed(1)
    base = [80.0 - 0.5 * i for i in range(30)] + [5.0] * 9  # gentle slope, then a fall after index 29
    noise = (torch.rand(39, generator=gen) * 4 - 2).tolist()
    perfs = [b + n for b, n in zip(base, noise)]
    cliff = pruning.find_cliff(pruning.DEFAULT_SPARSITIES, perfs, "biggest")
    assert 26 <= cliff.index <= 29
    assert perfs[cliff.index] - min(perfs[cliff.index + 1:cliff.index + 5]) == max(cliff.drops)
    with pytest.raises(ValueError, match="unknown cliff rule"):
        pruning.find_cliff([0.6, 0.7], [1, 0], "steepest")


def test_merged_set_is_the_union():
    a, b = frozenset({(0, 1), (2, 3)}), frozenset({(2, 3), (5, 0)})
    assert pruning.merge(a, b) == {(0, 1), (2, 3), (5, 0)}


def test_prune_for_app_merges_the_kept_sets_and_respects_overrides(tiny_gpt2):
    from app_helpers.tasks import make_task

    task = make_task("ioi", tiny_gpt2, n=8, seed=0)
    sparsities = (0.5, 0.6, 0.7, 0.8)
    result = pruning.prune_for_app(tiny_gpt2, task, sparsities=sparsities, sparsity={"flap": 0.5})
    assert set(result.sweeps) == {"flap", "contrastive", "merged"}
    assert result.sparsity["flap"] == 0.5
    assert result.sparsity["contrastive"] == result.sweeps["contrastive"].cliff.sparsity
    assert result.kept["flap"] == pruning.prune(result.scores["flap"], 0.5)
    assert result.merged == result.kept["flap"] | result.kept["contrastive"]
    for i, p in enumerate(sparsities):
        assert len(result.sweeps["flap"].kept[i]) == pruning.n_kept(8, p)
        assert result.sweeps["merged"].kept[i] == result.sweeps["flap"].kept[i] | result.sweeps["contrastive"].kept[i]
    assert len(result.sweeps["merged"].perfs) == 4 and all(map(math.isfinite, result.sweeps["merged"].perfs))
    # moving one method's sparsity afterwards gives what asking for it up front gives, with no new pass
    moved = result.with_sparsity({"contrastive": 0.75})
    asked = pruning.prune_for_app(tiny_gpt2, task, sparsities=sparsities, sparsity={"flap": 0.5, "contrastive": 0.75})
    assert moved.sparsity == asked.sparsity == {"flap": 0.5, "contrastive": 0.75}
    assert moved.kept == asked.kept and moved.merged == asked.merged and moved.cost == result.cost
    with pytest.raises(ValueError, match="unknown method"):
        result.with_sparsity({"flapp": 0.5})
    with pytest.raises(ValueError, match="keeps no head"):
        result.with_sparsity({"flap": 0.99, "contrastive": 0.99})


def test_scoring_an_empty_task_is_a_clear_error(tiny_gpt2):
    class Empty:
        def __len__(self):
            return 0
    with pytest.raises(ValueError, match="at least one prompt"):
        pruning.score_heads(tiny_gpt2, Empty())
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        pruning.sparsity_sweep(None, pruning.HeadScores("flap", torch.zeros(2, 4), torch.zeros(2, 64)),
                               sparsities=(0.5, 1.0))


def test_merged_perf_grid_equals_evaluating_each_union(tiny_gpt2):
    from app_helpers.evaluation import CircuitEvaluator
    from app_helpers.tasks import make_task

    task = make_task("ioi", tiny_gpt2, n=8, seed=0)
    result = pruning.prune_for_app(tiny_gpt2, task, sparsities=(0.5, 0.7))
    evaluator = CircuitEvaluator(tiny_gpt2, task)
    grid = pruning.merged_perf_grid(evaluator, result, (0.25, 0.5, 0.75))
    assert len(grid) == 9
    for (a, b), perf in grid.items():
        union = result.with_sparsity({"flap": a, "contrastive": b}).merged
        assert perf == pytest.approx(evaluator.evaluate([list(union)])[0].perf, abs=1e-4)
