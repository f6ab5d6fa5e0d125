"""Resuming a forward mid-model: the same numbers as a full pass, and no block before the start runs."""
from types import SimpleNamespace

import pytest
import torch

from app_helpers.hooks import StopForward, final_residual, logits_at, run_blocks, run_until


@pytest.fixture(scope="module")
def model():
    from app_helpers.gpt2_offline import random_gpt2

    return random_gpt2(n_layers=4, n_heads=2, d_model=32, seed=1)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 1000, (3, 7), generator=torch.Generator().manual_seed(0))


def _resid_pre(model, tokens):
    store = {}

    def keep(layer):
        def hook(act, hook):  # noqa: ARG001
            store[layer] = act.clone()
        return hook
    final = final_residual(model, tokens, [(f"blocks.{l}.hook_resid_pre", keep(l)) for l in range(4)])
    return store, final


@pytest.mark.parametrize("start", [0, 2, 3])
def test_run_blocks_resumes_exactly_and_skips_earlier_blocks(model, tokens, start):
    resid, final = _resid_pre(model, tokens)
    fired = []
    spy = [(f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: fired.append(l)) for l in range(4)]
    out = run_blocks(model, resid[start], start, spy)
    torch.testing.assert_close(out, final, atol=1e-6, rtol=0)
    assert fired == list(range(start, 4))  # the bridge's own start_at_layer would also run 0..start-1


def test_run_blocks_stops_early(model, tokens):
    resid, _ = _resid_pre(model, tokens)
    torch.testing.assert_close(run_blocks(model, resid[1], 1, stop=3), resid[3], atol=1e-6, rtol=0)

    def stop(act, hook):  # noqa: ARG001
        raise StopForward
    assert run_blocks(model, resid[1], 1, [("blocks.2.attn.hook_q", stop)]) is None


def test_logits_at_picks_one_position_per_row(model, tokens):
    full = run_until(model, tokens, [])
    positions = torch.tensor([6, 0, 3])
    picked = logits_at(model, final_residual(model, tokens), positions)
    torch.testing.assert_close(picked, full[torch.arange(3), positions], atol=1e-5, rtol=0)


def test_run_blocks_refuses_position_schemes_it_cannot_hand_on():
    alibi = SimpleNamespace(cfg=SimpleNamespace(positional_embedding_type="alibi", n_layers=2))
    with pytest.raises(NotImplementedError, match="'alibi'"):
        run_blocks(alibi, torch.zeros(1, 2, 4), 0)
