"""GPT-2's tokenizer without the hub, and GPT-2-shaped random-weight models."""
import torch

from app_helpers.gpt2_offline import gpt2_tokenizer, random_gpt2


def test_tokenizer_gives_gpt2_ids():
    tok = gpt2_tokenizer()
    assert len(tok) == 50257
    assert tok(" Mary").input_ids == [5335]
    assert tok(" John").input_ids == [1757]
    assert tok.eos_token_id == 50256
    # Known BPE splits: " 1732" is " 17" + "32" in GPT-2.
    assert [tok.decode([i]) for i in tok(" 1732").input_ids] == [" 17", "32"]


def test_random_model_shape_and_seed(tiny_gpt2):
    assert (tiny_gpt2.cfg.n_layers, tiny_gpt2.cfg.n_heads, tiny_gpt2.cfg.d_vocab) == (2, 4, 50257)
    again = random_gpt2(n_layers=2, n_heads=4, d_model=64, seed=0)
    other = random_gpt2(n_layers=2, n_heads=4, d_model=64, seed=1)
    tokens = torch.tensor([[50256, 5335, 1757, 290]])
    assert torch.equal(tiny_gpt2(tokens), again(tokens))
    assert not torch.allclose(tiny_gpt2(tokens), other(tokens))


def test_random_model_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    random_gpt2(n_layers=1, n_heads=2, d_model=32, seed=5)
    assert torch.equal(torch.rand(3), expected)
