"""The fast path-patching engine equals the naive reference, costs nothing outside the sender set, memoises."""
import math

import pytest
import torch

from app_helpers.identities import HEAD_INPUTS
from app_helpers.patching import NaivePathPatcher, PathPatcher, length_groups
from references import counted_flops


@pytest.fixture(scope="module")
def model(gpt2_3x4):
    return gpt2_3x4


@pytest.fixture(scope="module")
def naive(model, problem):
    return NaivePathPatcher(model, *problem)


@pytest.fixture(scope="module")
def naive_scores(naive):
    out = {"logits": naive.to_logits()}
    for receiver in [(1, 2), (2, 0)]:
        for c in HEAD_INPUTS:
            out[(receiver, c)] = naive.to_head(receiver, c)
    return out


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 1000])
def test_engine_equals_naive_reference(model, problem, naive_scores, chunk_size):
    fast = PathPatcher(model, *problem, chunk_size=chunk_size)
    assert len(fast._length_views) > 1  # the length-group path is the one under test
    torch.testing.assert_close(fast.to_logits(), naive_scores["logits"], atol=1e-5, rtol=0)
    fast.prefetch([(1, 2), (2, 0)])
    for key, want in naive_scores.items():
        if key != "logits":
            (receiver, c) = key
            torch.testing.assert_close(fast.to_head(receiver, c), want, atol=1e-5, rtol=0)
    assert not torch.isnan(naive_scores["logits"]).any()
    assert naive_scores["logits"].abs().max() > 0.01  # the comparison is not between zeros


def test_baselines_match(naive, model, problem):
    fast = PathPatcher(model, *problem)
    assert fast.ld_clean == pytest.approx(naive.ld_clean, abs=1e-5)
    assert fast.ld_corrupted == pytest.approx(naive.ld_corrupted, abs=1e-5)
    assert fast.normalise(torch.tensor(fast.ld_corrupted)).item() == pytest.approx(-1.0)


def test_senders_outside_the_set_cost_nothing_and_get_nan(model, problem, naive_scores):
    fast = PathPatcher(model, *problem)
    candidates = {(0, 1), (1, 3), (2, 2)}
    scores = fast.to_logits(candidates)
    assert fast.cost.sender_evaluations == 3
    for l in range(3):
        for h in range(4):
            if (l, h) in candidates:
                assert scores[l, h] == pytest.approx(naive_scores["logits"][l, h].item(), abs=1e-5)
            else:
                assert math.isnan(scores[l, h])
    head_scores = fast.to_head((2, 0), "v", candidates)
    assert head_scores.shape == (2, 4)  # senders live below the receiver's layer
    assert fast.cost.sender_evaluations == 3 + 2 * 3  # two candidates below layer 2, three components


def test_memoised_scores_cost_nothing_the_second_time(model, problem):
    fast = PathPatcher(model, *problem)
    first = fast.to_head((2, 1), "k")
    before = fast.cost.copy()
    again = fast.to_head((2, 1), "q")  # served by the same sender pass and receiver passes
    torch.testing.assert_close(fast.to_head((2, 1), "k"), first)
    assert fast.cost.sender_evaluations == before.sender_evaluations
    assert fast.cost.forward_passes == before.forward_passes
    assert again.shape == (2, 4)


def test_layer_zero_receivers_have_no_senders(model, problem):
    fast = PathPatcher(model, *problem)
    assert fast.to_head((0, 3), "q").shape == (0, 4)
    assert fast.cost.sender_evaluations == 0


def test_fewer_passes_and_flops_than_naive_and_a_lower_bound_that_holds(model, problem, naive):
    fast = PathPatcher(model, *problem)
    setup = fast.cost.copy()
    fast.to_logits()
    fast.prefetch([(1, 2), (2, 0)])
    work = fast.cost - setup
    assert work.sender_evaluations == 12 + 3 * 4 + 3 * 8
    assert work.flops_lower_bound <= work.flops
    assert work.forward_passes < work.sender_evaluations


@pytest.mark.parametrize("engine", ["naive", "fast"])
def test_counted_flops_equal_what_torch_counts(model, problem, engine):
    """Every pass an engine charges — its caches, logits senders, head receivers over length groups — is
    exactly the matmul work torch itself counts while the engine runs."""
    make = (lambda: NaivePathPatcher(model, *problem)) if engine == "naive" else \
        (lambda: PathPatcher(model, *problem, chunk_size=2))
    patcher, flops = counted_flops(make)
    assert patcher.cost.flops == flops > 0
    for work in (lambda: patcher.to_logits([(0, 1), (1, 2), (1, 3)]),
                 lambda: [patcher.to_head((2, 1), c, [(0, 0), (1, 2)]) for c in HEAD_INPUTS]):
        before = patcher.cost.flops
        _, flops = counted_flops(work)
        assert patcher.cost.flops - before == flops > 0


def test_lower_bound_is_reached_where_nothing_can_be_shared(model):
    """Equal-length prompts, one sender per pass: the engine runs exactly the work the lower bound
    describes (the sender's layers at END only; one q/k/v record and one receiver pass per component),
    so the bound equals torch's count of the passes run; the naive engine runs far more."""
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(0, 1000, (4, 6), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1] = torch.randint(0, 1000, (4,), generator=gen)
    end_pos = torch.full((4,), 5)

    def metric(logits):
        return logits[..., 11] - logits[..., 12]
    for receiver in [None, (2, 1), (1, 0)]:
        fast, naive = (cls(model, clean, corrupted, end_pos, metric, **kw)
                       for cls, kw in ((PathPatcher, {"chunk_size": 1}), (NaivePathPatcher, {})))
        costs = []
        for patcher in (fast, naive):
            before = patcher.cost.copy()
            if receiver is None:
                work = (lambda p: p.to_logits([(0, 3), (1, 2)]))
            else:
                work = (lambda p: [p.to_head(receiver, c, [(0, 3), (0, 1)]) for c in HEAD_INPUTS])
            _, flops = counted_flops(work, patcher)
            costs.append((patcher.cost - before, flops))
        (fast_cost, fast_flops), (naive_cost, naive_flops) = costs
        assert fast_cost.flops_lower_bound == fast_cost.flops == fast_flops
        assert naive_cost.flops_lower_bound == fast_flops < naive_cost.flops == naive_flops


def test_bad_inputs_are_clear_errors(model, problem):
    clean, corrupted, end_pos, metric = problem
    with pytest.raises(ValueError, match="same shape"):
        PathPatcher(model, clean, corrupted[:, :6], end_pos, metric)
    with pytest.raises(ValueError, match="end_pos"):
        PathPatcher(model, clean, corrupted, end_pos + 1, metric)
    with pytest.raises(ValueError, match="no behaviour to patch"):
        PathPatcher(model, clean, clean, end_pos, metric)
    with pytest.raises(ValueError, match="chunk_size"):
        PathPatcher(model, clean, corrupted, end_pos, metric, chunk_size=0)
    fast = PathPatcher(model, clean, corrupted, end_pos, metric)
    with pytest.raises(ValueError, match="component"):
        fast.to_head((1, 0), "z")
    with pytest.raises(ValueError, match=r"outside a 3x4 model.*: 3\.0"):
        fast.to_head((3, 0), "q")
    with pytest.raises(ValueError, match=r"outside a 3x4 model.*: 0\.9"):
        fast.to_logits({(0, 9)})


def test_length_groups_trade_padding_against_passes():
    assert length_groups([5, 5, 5]) == [[0, 1, 2]]
    lengths = [4] * 10 + [20] * 10
    assert length_groups(lengths) == [list(range(10)), list(range(10, 20))]  # 240 + 2 overheads < 400 + 1
    assert length_groups([10, 11, 10, 11]) == [[0, 1, 2, 3]]  # one padded position is cheaper than a pass
    groups = length_groups(list(range(1, 30)), max_groups=3)
    assert len(groups) == 3 and sorted(i for g in groups for i in g) == list(range(29))


def test_engine_runs_in_the_models_own_dtype(problem):
    from app_helpers.gpt2_offline import random_gpt2

    half = random_gpt2(n_layers=3, n_heads=4, d_model=64, seed=3).to(torch.bfloat16)
    fast, naive = PathPatcher(half, *problem), NaivePathPatcher(half, *problem)
    got = fast.to_head((2, 0), "v")
    assert got.shape == (2, 4) and torch.isfinite(got).all()
    torch.testing.assert_close(got, naive.to_head((2, 0), "v"), atol=0.05, rtol=0)  # bfloat16 rounding
