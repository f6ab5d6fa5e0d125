"""The notebook exercises: each solution passes its checker and equals the kit; plausible wrong answers
fail with an AssertionError whose message names the mistake."""
import math

import pytest
import torch

from app_helpers import exercises as ex
from app_helpers.identities import HEAD_INPUTS
from app_helpers.pruning import ChannelStats, contrastive_channel_scores, find_cliff, flap_channel_scores
from app_helpers.search import select_heads

EXERCISES = ["flap_channel_score", "contrastive_channel_score", "cliff_sparsity", "patch_head_input",
             "select_heads"]


def fails(check, fn, *phrases):
    """``check(fn)`` raises an AssertionError whose message contains every phrase."""
    with pytest.raises(AssertionError) as err:
        check(fn)
    message = str(err.value)
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in:\n{message}"
    assert "Traceback" not in message
    return message


@pytest.mark.parametrize("name", EXERCISES)
def test_solution_passes_its_checker(name, capsys):
    getattr(ex, f"check_{name}")(getattr(ex, f"solution_{name}"))
    assert capsys.readouterr().out.startswith(f"✓ {name}: your function agrees with the kit on all")


def test_checkers_want_a_function():
    fails(ex.check_select_heads, [(0, 1)], "pass your function itself")


# --- the solutions equal the kit, on inputs the checkers do not use


def random_stats(gen, shape, n_prompts, tokens):
    x = torch.randn(n_prompts * tokens, *shape, generator=gen, dtype=torch.float64) * torch.rand(1, generator=gen)
    return ChannelStats(n_prompts * tokens, n_prompts, x.sum(0), (x * x).sum(0))


@pytest.mark.parametrize("seed", range(4))
def test_channel_score_solutions_equal_the_kit(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    shape = (1 + seed, 4 * (seed + 1))
    clean, corrupted = random_stats(gen, shape, 2 + seed, 3), random_stats(gen, shape, 2 + seed, 3)
    w = torch.rand(shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ex.solution_flap_channel_score(clean, w), flap_channel_scores(clean, w))
    torch.testing.assert_close(ex.solution_contrastive_channel_score(clean, corrupted, w),
                               contrastive_channel_scores(clean, corrupted, w))


def test_cliff_solution_equals_the_kit():
    gen = torch.Generator().manual_seed(7)
    for trial in range(300):
        n = int(torch.randint(2, 45, (1,), generator=gen))
        sparsities = [round(0.5 + 0.01 * i, 2) for i in range(n)]
        if trial % 3 == 0:  # rough staircases with exact ties
            perfs = torch.randint(0, 5, (n,), generator=gen).mul(25).tolist()
        else:
            perfs = (100 - torch.rand(n, generator=gen).cumsum(0) * 20 + torch.randn(n, generator=gen) * 5).tolist()
        fallback = float(torch.rand(1, generator=gen)) * 0.9
        assert ex.solution_cliff_sparsity(sparsities, perfs, fallback) == \
            find_cliff(sparsities, perfs, "first", fallback).sparsity, (sparsities, perfs, fallback)


def test_selection_solution_equals_the_kit():
    gen = torch.Generator().manual_seed(8)
    for trial in range(200):
        shape = tuple(int(x) for x in torch.randint(1, 9, (2,), generator=gen))
        scores = torch.randn(shape, generator=gen) * 10 ** float(torch.empty(1).uniform_(-3, 0, generator=gen))
        scores[torch.rand(shape, generator=gen) < 0.2] = math.nan
        if trial % 4 == 0:
            scores = scores.round(decimals=1)  # ties
        scale, threshold, k = (float(x) for x in torch.rand(3, generator=gen) * torch.tensor([3.0, 0.05, 3.0]))
        assert ex.solution_select_heads(scores, scale, threshold, k) == \
            [tuple(h) for h in select_heads(scores, scale, threshold, None, k)], (scores, scale, threshold, k)


def test_patch_solution_gives_the_naive_engine_scores_everywhere():
    patcher = ex.practice_patcher()
    for receiver in [(1, h) for h in range(4)]:
        for component in HEAD_INPUTS:
            want = patcher.to_head(receiver, component)
            for sender in [(0, h) for h in range(4)]:
                got = ex.path_patching_score(ex.solution_patch_head_input, patcher, sender, receiver, component)
                assert got == pytest.approx(float(want[sender]), abs=1e-6), (sender, receiver, component)
    assert want.abs().max() > 1e-3  # the comparisons were not between zeros


# --- wrong answers: FLAP and Contrastive-FLAP


def test_flap_mistakes_are_named():
    fails(ex.check_flap_channel_score, lambda clean, w2: clean.variance * w2, "case 1", "forgot the square",
          "expected:", "got:")
    fails(ex.check_flap_channel_score, lambda clean, w2: clean.variance**2 * w2, "squared only the variance")
    fails(ex.check_flap_channel_score, lambda clean, w2: (clean.energy * w2) ** 2, "you used clean.energy")
    fails(ex.check_flap_channel_score, lambda c, w2: (((c.sumsq - c.sum**2 / c.n_tokens) / c.n_tokens) * w2) ** 2,
          "divides by n_tokens")
    fails(ex.check_flap_channel_score, lambda clean, w2: ((clean.variance * w2) ** 2).sum(-1),
          "shape [2] instead of [2, 8]")


def test_flap_errors_and_side_effects_are_reported_for_the_student():
    def raises(clean, w2):
        return clean.variance @ w2
    message = fails(ex.check_flap_channel_score, raises, "your function raised RuntimeError",
                    "return clean.variance @ w2")
    assert "line" in message

    def in_place(clean, w2):
        return w2.mul_(clean.variance).pow_(2)
    fails(ex.check_flap_channel_score, in_place, "changed its input `w2` in place")
    fails(ex.check_flap_channel_score, lambda clean, w2: None, "returned None", "forget `return`")


def test_contrastive_mistakes_are_named():
    check = ex.check_contrastive_channel_score
    fails(check, lambda c, r, m: m**2 * (c.energy - r.energy), "forgot the absolute value")
    fails(check, lambda c, r, m: (m * c.energy.sqrt() - m * r.energy.sqrt()).abs(), "did not square WIFN")
    fails(check, lambda c, r, m: (m * (c.energy - r.energy)).abs(), "forgot to square mean_abs_w")
    fails(check, lambda c, r, m: (m**2 * (c.variance - r.variance)).abs(), "uses the energy")


# --- wrong answers: the cliff


def cliff_rule(*, strict=False, next_only=False, shift=0, window_round=round, full_windows_only=False,
               fixed_fallback=None, biggest=False, index=False):
    """A student's cliff rule with one of the usual slips."""
    def rule(sparsities, perfs, fallback=0.75):
        n = len(perfs)
        w = 1 if next_only else max(1, window_round((n - 1) / 10))
        d = (max(perfs) - min(perfs)) / 10
        drops = [perfs[i] - min(perfs[i + 1:i + 1 + w]) for i in range(n - w if full_windows_only else n - 1)]
        hits = [i for i, drop in enumerate(drops) if (drop > d if strict else drop >= d)] if d > 0 else []
        if not hits:
            return fixed_fallback if fixed_fallback is not None else fallback
        i = max(hits, key=lambda j: drops[j]) if biggest else hits[0]
        return i if index else sparsities[i + shift]
    return rule


@pytest.mark.parametrize("slip, phrases", [
    (dict(shift=1), ["a clear cliff", "off by one"]),
    (dict(strict=True), ["exactly equal to the threshold", "you used > where the rule uses ≥"]),
    (dict(fixed_fallback=0.75), ["fallback 0.8", "return the `fallback` argument"]),
    (dict(biggest=True), ["the first cliff is not the biggest", "you took the biggest drop"]),
    (dict(next_only=True), ["a dip three points ahead", "only with the next one; the window is w = 3"]),
    (dict(full_windows_only=True), ["the second-to-last point", "the window holds the points that remain"]),
    (dict(window_round=lambda x: math.floor(x + 0.5)),
     ["window round(2.5) = 2", "your window is 3", "rounds halves to even"]),
    (dict(index=True), ["position in the sweep"]),
])
def test_cliff_mistakes_are_named(slip, phrases):
    fails(ex.check_cliff_sparsity, cliff_rule(**slip), *phrases)


def test_cliff_answer_of_the_wrong_kind():
    fails(ex.check_cliff_sparsity, lambda s, p, fallback=0.75: [0.7], "expected a number, got a list")


# --- wrong answers: the path-patching hook


def wrong_head(activation, hook, patched, head):
    out = activation.clone()
    out[:, :, (head + 1) % activation.shape[2]] = patched[:, :, (head + 1) % activation.shape[2]]
    return out


def along_positions(activation, hook, patched, head):
    out = activation.clone()
    out[:, head] = patched[:, head]
    return out


def in_place_on_patched(activation, hook, patched, head):
    patched[:, :, [h for h in range(activation.shape[2]) if h != head]] = \
        activation[:, :, [h for h in range(activation.shape[2]) if h != head]]
    return patched


def no_return(activation, hook, patched, head):
    activation[:, :, head] = patched[:, :, head]


def misnamed(activation, hook, patched_z, head):
    return patched_z


@pytest.mark.parametrize("fn, phrases", [
    (wrong_head, ["head=1", "you patched head 2; the receiver is head 1", "head 1 holds its clean values"]),
    (lambda activation, hook, patched, head: patched, ["you returned `patched` as it is"]),
    (along_positions, ["you indexed positions (dim 1)"]),
    (lambda activation, hook, patched, head: activation, ["you patched nothing"]),
    (no_return, ["returned None", "forget `return`"]),
    (in_place_on_patched, ["changed `patched` in place"]),
    (misnamed, ["the checker calls fn(activation, hook=hook, patched=patched, head=head)", "TypeError"]),
])
def test_hook_mistakes_are_named(fn, phrases):
    fails(ex.check_patch_head_input, fn, *phrases)


# --- wrong answers: the selection rule


def selection_rule(*, signed=False, at_least=False, no_floor=False, floor_at_least=False, keep_nan=False,
                   no_k=False, layer_from_zero=False, mean_of_abs=False):
    """A student's selection rule with one of the usual slips."""
    def rule(scores, scale, min_value_threshold, k=2.0):
        s = scores.double() if keep_nan else torch.nan_to_num(scores.double(), nan=0.0)
        size = s if signed else s.abs()
        if not no_floor and (s.abs().max() < min_value_threshold if floor_at_least
                             else s.abs().max() <= min_value_threshold):
            return []
        mu = s.abs().mean() if mean_of_abs else s.mean().abs()
        sigma = s.std()
        out = []
        for layer in range(s.shape[0]):
            extra = 0.0 if no_k else k / math.sqrt((layer if layer_from_zero else layer + 1) * s.shape[1])
            for head in range(s.shape[1]):
                margin = size[layer, head] - mu
                limit = (scale + extra) * sigma
                if (margin >= limit) if at_least else (margin > limit):
                    out.append((layer, head))
        return out
    return rule


@pytest.mark.parametrize("slip, phrases", [
    (dict(signed=True), ["a strongly negative head", "missing [(1, 3)]", "use |S[l,h]|"]),
    (dict(at_least=True), ["a tie on the rule's boundary", "should not select [(0, 0), (0, 1)]", "> , not ≥"]),
    (dict(no_floor=True), ["every |score| below min_value_threshold", "should not select [(2, 1)]"]),
    (dict(floor_at_least=True), ["exactly equals min_value_threshold", "*above* min_value_threshold"]),
    (dict(keep_nan=True), ["NaN for heads that were not evaluated", "missing [(0, 1)]", "nan_to_num"]),
    (dict(no_k=True), ["the early-layer term", "you left out the k", "0.0: |S| − |mean| = 0.7188"]),
    (dict(layer_from_zero=True), ["ZeroDivisionError", "line"]),
    (dict(mean_of_abs=True), ["wrong on case"]),
])
def test_selection_mistakes_are_named(slip, phrases):
    fails(ex.check_select_heads, selection_rule(**slip), *phrases)


def test_selection_order_and_inputs_are_checked():
    def reversed_order(scores, scale, threshold, k=2.0):
        return ex.solution_select_heads(scores, scale, threshold, k)[::-1]
    fails(ex.check_select_heads, reversed_order, "two heads tie", "out of order")

    def in_place(scores, scale, threshold, k=2.0):
        return ex.solution_select_heads(scores.nan_to_num_(0.0), scale, threshold, k)
    fails(ex.check_select_heads, in_place, "changed `scores` in place")
    fails(ex.check_select_heads, lambda *args: 3, "expected a list of (layer, head) pairs")
