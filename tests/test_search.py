"""Selection rule, breadth-first search, cap, candidate restriction and the Pareto choice."""
import math
from types import SimpleNamespace

import pytest
import torch

from app_helpers.costs import Cost
from app_helpers.search import pareto_choice, search_circuit, select_heads


def test_selection_picks_outliers_of_either_sign():
    s = torch.zeros(4, 4)
    s[3, 1] = -0.9  # a head that destroys the behaviour when patched
    s[2, 2] = 0.6  # a head that helps the corrupted answer (negative name mover style)
    s[1, 0] = 0.02
    assert select_heads(s, scale=1.0, min_value_threshold=0.01) == [(2, 2), (3, 1)]


def test_selection_threshold_by_hand():
    s = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    mu, sigma = 0.25, s.std().item()  # unbiased std of [0, 0, 0, 1] = 0.5
    assert sigma == pytest.approx(0.5)
    # Layer 1 threshold at scale 1: (1 + 2/sqrt(2*2)) * 0.5 = 1.0; |1.0| - 0.25 = 0.75 is not above it.
    assert select_heads(s, 1.0, 0.001) == []
    # At scale 0.4: (0.4 + 1) * 0.5 = 0.7 < 0.75 → selected.
    assert select_heads(s, 0.4, 0.001) == [(1, 1)]
    assert mu == s.mean().item()


def test_nothing_selected_below_min_value_threshold_and_nan_counts_as_zero():
    s = torch.full((3, 4), 0.001)
    s[2, 3] = 0.009
    assert select_heads(s, 0.0, min_value_threshold=0.01) == []
    with_nan = torch.full((3, 4), math.nan)
    with_nan[1, 2] = -0.5
    assert select_heads(with_nan, 1.0, 0.01) == [(1, 2)]
    assert select_heads(torch.full((2, 2), math.nan), 1.0, 0.01) == []
    assert select_heads(torch.zeros(0, 4), 1.0, 0.01) == []


def test_candidates_restrict_the_selection():
    s = torch.zeros(4, 4)
    s[3, 1], s[2, 2] = -0.9, 0.8
    assert select_heads(s, 1.0, 0.01, candidates={(2, 2)}) == [(2, 2)]


class StubEngine:
    """Fixed score matrices, 4 layers x 8 heads: the logits see (3, 0) and (3, 1); (3, 0)'s v sees (1, 2);
    (1, 2)'s q sees (0, 3). Each stands out clearly from the selection threshold (checked by hand)."""

    def __init__(self, n_layers=4, n_heads=8):
        self.cfg = SimpleNamespace(n_layers=n_layers, n_heads=n_heads)
        self.cost = Cost()
        self.calls = []

    def _mask(self, m, senders):
        if senders is not None:
            keep = torch.zeros_like(m, dtype=torch.bool)
            for l, h in senders:
                if l < m.shape[0]:
                    keep[l, h] = True
            m = torch.where(keep, m, torch.full_like(m, math.nan))
        self.cost.sender_evaluations += int((~torch.isnan(m)).sum())
        return m

    def prefetch(self, receivers, senders=None):
        """Part of the engine interface; a stub has nothing to share."""

    def to_logits(self, senders=None):
        self.calls.append("logits")
        m = torch.zeros(self.cfg.n_layers, self.cfg.n_heads)
        m[3, 0], m[3, 1] = -0.9, -0.9
        return self._mask(m, senders)

    def to_head(self, receiver, component, senders=None):
        self.calls.append((receiver, component))
        m = torch.zeros(receiver[0], self.cfg.n_heads)
        if receiver == (3, 0) and component == "v":
            m[1, 2] = -0.6
        if receiver == (1, 2) and component == "q":
            m[0, 3] = -0.5
        return self._mask(m, senders)


def test_breadth_first_search_on_a_known_graph():
    engine = StubEngine()
    result = search_circuit(engine, scale=1.0, min_value_threshold=0.01)
    assert result.heads == [(3, 0), (3, 1), (1, 2), (0, 3)]
    assert ((1, 2), (3, 0), "v") in result.edges and ((0, 3), (1, 2), "q") in result.edges
    assert ((3, 0), None, "logits") in result.edges  # the logits receiver is None, as in Circuit
    # Layer-0 heads join but are never expanded; every expanded head is patched through q, k and v.
    assert not any(call[0] == (0, 3) for call in engine.calls if call != "logits")
    assert [c for c in engine.calls if c != "logits"] == [((3, 0), c) for c in "qkv"] + \
        [((3, 1), c) for c in "qkv"] + [((1, 2), c) for c in "qkv"]
    assert not result.capped


def test_candidates_outside_cost_nothing_and_are_never_selected():
    engine = StubEngine()
    result = search_circuit(engine, candidates={(3, 0), (3, 1), (0, 3)})
    assert (1, 2) not in result.heads and (0, 3) not in result.heads
    assert result.heads == [(3, 0), (3, 1)]
    # 3 candidates for the logits + 1 candidate below layer 3 for each of 2 receivers x 3 components.
    assert result.cost.sender_evaluations == 3 + 2 * 3 * 1


def test_all_heads_as_candidates_equals_the_dense_search():
    every = [(l, h) for l in range(4) for h in range(8)]
    dense, restricted = search_circuit(StubEngine()), search_circuit(StubEngine(), candidates=every)
    assert dense.heads == restricted.heads and dense.edges == restricted.edges
    assert dense.cost.sender_evaluations == restricted.cost.sender_evaluations


def test_the_cap_stops_a_runaway_search():
    class Everything(StubEngine):
        def to_head(self, receiver, component, senders=None):
            m = torch.full((receiver[0], self.cfg.n_heads), -1.0)
            m[:, 0] = 0.0  # every head but one per layer stands out
            return self._mask(m, senders)

        def to_logits(self, senders=None):
            m = torch.zeros(self.cfg.n_layers, self.cfg.n_heads)
            m[3, :] = -1.0
            return self._mask(m, senders)
    result = search_circuit(Everything(), scale=0.0, min_value_threshold=0.01, logits_scale=0.0, k=0.0)
    assert result.capped
    assert len(result.heads) > 0.75 * 32 - 8  # the queue joined the circuit when the cap hit


def test_pareto_choice():
    sizes, perfs = [10, 4, 6, 30], [90.0, 70.0, 80.0, 95.0]
    assert pareto_choice(sizes, perfs, n_total=32, min_perf=75, max_fraction=0.5)[0] == 2
    # No circuit reaches 99: the smallest with Perf ≥ mean (83.75) is index 0.
    index, rule = pareto_choice(sizes, perfs, 32, 99, 0.5)
    assert index == 0 and "mean" in rule
    with pytest.raises(ValueError):
        pareto_choice([], [], 32, 75, 0.5)
    # Equal Perfs whose float mean exceeds each of them by a rounding error still give a choice.
    assert sum([0.1] * 16) / 16 > 0.1
    assert pareto_choice([0] * 16, [0.1] * 16, 32, 75.0, 0.5)[0] == 0


def test_fast_and_naive_engines_find_the_same_circuit():
    from app_helpers.gpt2_offline import random_gpt2
    from app_helpers.patching import NaivePathPatcher, PathPatcher

    model = random_gpt2(n_layers=3, n_heads=4, d_model=64, seed=3)
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(0, 1000, (4, 6), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1] = torch.randint(0, 1000, (4,), generator=gen)
    a, b = torch.randint(0, 1000, (2, 4), generator=gen)
    metric = lambda logits: logits[..., torch.arange(4), a] - logits[..., torch.arange(4), b]  # noqa: E731
    end = torch.full((4,), 5)
    loose = dict(scale=0.0, logits_scale=0.0, k=0.0, min_value_threshold=0.0)  # a random model: select a lot
    fast = search_circuit(PathPatcher(model, clean, corrupted, end, metric), **loose)
    naive = search_circuit(NaivePathPatcher(model, clean, corrupted, end, metric), **loose)
    assert fast.heads == naive.heads and fast.edges == naive.edges and len(fast.heads) >= 2
