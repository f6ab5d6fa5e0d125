"""Shared fixtures. Tests never touch the network: HF_HUB_OFFLINE makes an accidental hub call fail fast."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")  # figures are built headless

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_grad_enabled(False)
torch.set_num_threads(1)  # steadier (and on a loaded 2-core machine faster) than torch's default


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer GPT-2-architecture model with GPT-2's tokenizer, saved as a local HF directory."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from app_helpers.gpt2_offline import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64,
                                       vocab_size=len(tok)))
    out = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_gpt2():
    """A tiny random-weight GPT-2-shaped bridge (2 layers x 4 heads) with GPT-2's real tokenizer."""
    from app_helpers.gpt2_offline import random_gpt2

    return random_gpt2(n_layers=2, n_heads=4, d_model=64, seed=0)


@pytest.fixture(scope="session")
def word_tok(tmp_path_factory):
    """The word-level tokenizer over all tasks' words, built into a temporary directory and loaded back."""
    from app_helpers.wordlevel import build_word_level_tokenizer

    return build_word_level_tokenizer(tmp_path_factory.mktemp("word-level-tokenizer"))


@pytest.fixture(scope="session")
def gpt2_tok():
    """GPT-2's real BPE tokenizer (offline)."""
    from app_helpers.gpt2_offline import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def gpt2_3x4():
    """A random-weight GPT-2-shaped bridge, 3 layers x 4 heads: deep enough for head, MLP and logits
    receivers at several layers, small enough for the naive reference (the patching tests' model)."""
    from app_helpers.gpt2_offline import random_gpt2

    return random_gpt2(n_layers=3, n_heads=4, d_model=64, seed=3)


@pytest.fixture(scope="session")
def problem():
    """``references.patching_problem()``: prompts of different lengths, a two-slot corruption, a metric."""
    from references import patching_problem

    return patching_problem()
