"""Sizes and the run-time estimate: the FLOP model by hand on a constructed shape, seconds = FLOPs / rate."""
from pathlib import Path

import pytest

from app_helpers import sizing
from app_helpers.costs import layer_flops_per_token
from app_helpers.pruning import DEFAULT_SPARSITIES

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SHAPE = sizing.Shape(n_layers=3, n_heads=2, d_model=8, d_head=4, d_mlp=32, d_vocab=10)


def test_forward_flops_by_hand():
    per_token = 2 * (4 * 8 * 8 + 2 * 5 * 8 + 2 * 8 * 32)  # q,k,v,o + attention + MLP for seq 5
    assert layer_flops_per_token(SHAPE, 5) == per_token
    assert sizing.forward_flops(SHAPE, 7, 5) == 7 * (5 * 3 * per_token + 2 * 8 * 10)
    assert sizing.forward_flops(SHAPE, 7, 5, layers=1) == 7 * (5 * per_token + 2 * 8 * 10)


def test_search_flops_by_hand():
    f = [sizing.forward_flops(SHAPE, 4, 5, layers=3 - layer) for layer in range(3)]  # a sender in layer 0, 1, 2
    logits = 2 * (f[0] + f[1] + f[2])  # every head to the logits
    # 2 receivers spread over layers 1..2: layers 1 and 2; q, k, v from every head below each
    heads = 3 * 2 * f[0] + 3 * 2 * (f[0] + f[1])
    assert sizing.search_flops(SHAPE, 4, 5, circuit_heads=2) == logits + heads
    # APP: a third of the heads as candidates scales every sender count by a third
    assert sizing.search_flops(SHAPE, 4, 5, circuit_heads=2, candidates=2) == int((logits + heads) / 3)


def test_pruning_and_comparison_stages():
    one = sizing.forward_flops(SHAPE, 4, 5)
    assert sizing.pruning_flops(SHAPE, 4, 5) == one * (2 + 3 * len(DEFAULT_SPARSITIES))
    size = sizing.with_overrides("tutorial", n=4, eval_n=6)
    stages = sizing.comparison_flops(SHAPE, size, 5, circuit_heads=2, merged=3)
    assert stages["evaluation"] == sizing.forward_flops(SHAPE, 6, 5) * (2 * size.grid_runs + 4)
    assert stages["APP grid"] < stages["dense grid"]


def test_estimate_is_flops_over_the_rate():
    stages = {"a": 3e12, "b": 1e12}
    line = sizing.describe_estimate(stages, 2e10)
    assert "at most 3.3 min" in line and "a 150 s" in line and "b 50 s" in line


def test_sizes_and_overrides():
    paper, tutorial = sizing.get_size("paper"), sizing.get_size("tutorial")
    assert (paper.n, paper.eval_n, paper.grid_runs) == (100, 200, 16)
    assert tutorial.n < paper.n and tutorial.grid_runs < paper.grid_runs
    assert sizing.with_overrides("paper", n=20).n == 20 and sizing.with_overrides("paper").eval_n == 200
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        sizing.get_size("huge")


def test_the_probe_measures_a_positive_rate(tiny_gpt2):
    assert sizing.probe_throughput(tiny_gpt2, prompts=4, seq=8, repeats=1) > 0


def test_auto_takes_the_paper_size_where_its_estimate_fits_the_budget(tiny_gpt2):
    paper = sizing.with_overrides("paper", n=7)
    flops = sum(sizing._notebook_stages(tiny_gpt2, "05", paper, False).values())
    at_budget = flops / sizing.AUTO_BUDGET_SECONDS
    for rate, chosen in [(at_budget, "paper"), (at_budget * 0.99, "tutorial"), (1e30, "paper")]:
        size, line = sizing.notebook_size("auto", tiny_gpt2, "05", False, n=7, flops_per_second=rate)
        assert size == sizing.with_overrides(chosen, n=7), rate
        first, estimate = line.split("\n")
        assert first.startswith(f"SIZE = 'auto' chose the {chosen} size") and estimate.startswith(f"[{chosen} size]")
        assert ("within" if chosen == "paper" else "over") in first
    size, line = sizing.notebook_size("tutorial", tiny_gpt2, "05", False, eval_n=9, flops_per_second=1e30)
    assert size == sizing.with_overrides("tutorial", eval_n=9) and line.startswith("[tutorial size]")
    with pytest.raises(ValueError, match="unknown SIZE 'huge'; choose 'auto' or one of"):
        sizing.notebook_size("huge", tiny_gpt2, "05", False)


def test_tutorial_notebooks_fit_ten_minutes_on_the_assumed_t4():
    assert [p.stem[:2] for p in sorted(NOTEBOOK_DIR.glob("*.py"))] == list(sizing.NOTEBOOKS)
    for nb in sizing.NOTEBOOKS:
        seconds = sum(sizing.notebook_flops(nb, sizing.GPT2_SMALL, sizing.SIZES["tutorial"], 20, True).values())
        assert seconds / sizing.T4_FLOPS_PER_SECOND <= 600, nb


def test_the_flop_model_knows_grouped_queries_and_gated_mlps():
    """Qwen2.5-style block by hand: q and o at full width, k and v at the key/value width, three MLP matrices."""
    qwen = sizing.Shape(n_layers=3, n_heads=4, d_model=8, d_head=2, d_mlp=32, d_vocab=10, n_key_value_heads=2,
                        gated_mlp=True)
    per_token = 2 * (8 * 8 + 2 * 8 * 4 + 2 * 5 * 8 + 8 * 8 + 3 * 8 * 32)  # q, k+v, attention, o, MLP; seq 5
    assert layer_flops_per_token(qwen, 5) == per_token
    cfg = type("cfg", (), dict(n_layers=3, n_heads=4, d_model=8, d_head=2, d_mlp=32, d_vocab=10,
                               n_key_value_heads=2, gated_mlp=True))
    assert sizing.Shape.of(cfg) == qwen
