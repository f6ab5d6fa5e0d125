"""Train the bundled model: ``python -m app_helpers.toy.train --out data/app-toy``.

A GPT-2-architecture model (transformers ``GPT2LMHeadModel``) over the word-level vocabulary of the
tasks, trained on the tasks' own sentences (``corpus``). Seeded end to end: the same command gives the
same weights on the same machine and library versions. Writes the weights (safetensors), the tokenizer,
``training.json`` (the recipe and the loss curve) and a model card with the measured accuracies and
IOI mechanism (``checks``).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..wordlevel import build_word_level_tokenizer
from .card import write_card
from .corpus import Source, encode_batch, sample_texts


def default_sources() -> list[Source]:
    """IOI mostly as shortcut-defeating stories, a little in the evaluation wording; the other tasks as
    the datasets phrase them."""
    return [Source("ioi_story", 0.40), Source("ioi", 0.05), Source("full_name_ioi", 0.10),
            Source("name_induction", 0.20), Source("greater_than", 0.12), Source("gendered_pronouns", 0.13)]


@dataclass
class TrainConfig:
    """The recipe. Defaults reproduce the shipped model."""

    n_layers: int = 8
    n_heads: int = 4
    d_model: int = 128
    n_ctx: int = 64
    steps: int = 2500
    batch_size: int = 64
    lr: float = 1.5e-3
    warmup: int = 100
    weight_decay: float = 0.1
    dropout: float = 0.0  # ordinary (residual, embedding, attention) dropout
    head_dropout: float = 0.0  # chance that a head's whole output is zeroed for one sequence (training only)
    answer_weight: float = 5.0  # loss weight of each sentence's answer token relative to the others
    seed: int = 0
    sources: list[Source] = field(default_factory=default_sources)


def warmup_cosine(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to a tenth of it at step ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def learning_rate(config: TrainConfig, step: int) -> float:
    return warmup_cosine(step, config.lr, config.warmup, config.steps)


#: GPT-2's activation name for torch's fused tanh GELU: a saved model with it was trained with ``fast_kernels``.
FAST_GELU = "gelu_pytorch_tanh"


def gpt2_model(tokenizer, n_layers: int, n_heads: int, d_model: int, n_ctx: int, dropout: float = 0.0,
               d_mlp: int | None = None, fast_kernels: bool = False):
    """A freshly initialised ``GPT2LMHeadModel`` over ``tokenizer``'s vocabulary (both bundled models).

    ``d_mlp``: the MLP's width (None: GPT-2's 4 x d_model). ``fast_kernels``: torch's fused tanh GELU
    (``gelu_pytorch_tanh``, equal to GPT-2's ``gelu_new`` to about 5e-7) and plain ("eager") attention, which
    train faster on CPU than GPT-2's GELU and SDPA; they round differently, so training with them is a recipe of its
    own (not the default's weights).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
    if d_mlp is not None and d_mlp < 1:  # GPT2Config reads 0 as "the default width": say so instead
        raise ValueError(f"d_mlp is the MLP's hidden width, 1 or more (None: 4 x d_model); got {d_mlp}")
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_ctx, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
        n_inner=d_mlp, activation_function=FAST_GELU if fast_kernels else "gelu_new",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        attn_implementation="eager" if fast_kernels else None))


def network_options(config) -> tuple[int, bool]:
    """``(MLP width, fast kernels)`` of a saved GPT-2's config: what ``gpt2_model`` was asked for."""
    return config.n_inner or 4 * config.n_embd, config.activation_function == FAST_GELU


def build_model(config: TrainConfig, tokenizer):
    return gpt2_model(tokenizer, config.n_layers, config.n_heads, config.d_model, config.n_ctx, config.dropout)


def add_head_dropout(model, p: float) -> list:
    """Zero whole attention heads at random during training (rescaling the rest by 1/(1-p)).

    A model that cannot count on any one head spreads the task over several heads and layers, which is
    what circuit discovery needs to have something to find. Acts on the input of each block's output
    projection (the concatenated head outputs); returns the hook handles.
    """
    n_heads = model.config.n_head

    def hook(module, args):
        if not module.training or p <= 0:
            return None
        (x,) = args
        batch, seq, width = x.shape
        keep = (torch.rand(batch, 1, n_heads, 1, device=x.device) >= p).to(x.dtype) / (1 - p)
        return ((x.view(batch, seq, n_heads, width // n_heads) * keep).view(batch, seq, width),)
    return [block.attn.c_proj.register_forward_pre_hook(hook) for block in model.transformer.h]


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, answers: torch.Tensor,
                  answer_weight: float) -> torch.Tensor:
    """Next-token cross-entropy over real tokens, the answer tokens (mask ``answers``) weighted more.

    Most tokens of a story are unpredictable (which name comes next?); weighting the answers makes the
    task, not the filler, dominate the gradient.
    """
    logits, targets = logits[:, :-1], labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                               ignore_index=-100, reduction="none").view(targets.shape)
    weights = (targets != -100).float() * torch.where(answers[:, 1:], answer_weight, 1.0)
    return (losses * weights).sum() / weights.sum()


def train(config: TrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train from scratch and save everything to ``out_dir``; returns the training record."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = build_word_level_tokenizer(out_dir)
    model = build_model(config, tokenizer)
    hooks = add_head_dropout(model, config.head_dropout)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.98))
    losses, start = [], time.perf_counter()
    model.train()
    with torch.enable_grad():
        for step in tqdm(range(config.steps), desc="training", disable=not progress):
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(config, step)
            tokens, labels, answers = encode_batch(tokenizer, sample_texts(rng, config.sources,
                                                                           config.batch_size))
            logits = model(input_ids=tokens).logits  # right padding: real positions never see a pad
            loss = weighted_loss(logits, labels, answers, config.answer_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            losses.append(loss.item())
    for handle in hooks:
        handle.remove()
    model.eval()
    model.save_pretrained(out_dir)
    window = min(50, max(1, len(losses) // 5))  # non-overlapping start and end windows
    record = {"config": {**asdict(config), "sources": [asdict(s) for s in config.sources]},
              "seconds": round(time.perf_counter() - start, 1), "threads": torch.get_num_threads(),
              "loss_window": window,
              "loss_start": sum(losses[:window]) / window, "loss_end": sum(losses[-window:]) / window,
              "loss_every_50": [round(sum(losses[i:i + 50]) / len(losses[i:i + 50]), 4)
                                for i in range(0, len(losses), 50)]}
    (out_dir / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv=None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m app_helpers.toy.train", description=__doc__)
    parser.add_argument("--out", default="data/app-toy", help="output directory (default: data/app-toy)")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--head-dropout", type=float, default=defaults.head_dropout)
    parser.add_argument("--no-card", action="store_true", help="skip the measurements and the model card")
    args = parser.parse_args(argv)
    config = TrainConfig(steps=args.steps, seed=args.seed, head_dropout=args.head_dropout)
    record = train(config, args.out)
    print(f"trained {config.steps} steps in {record['seconds']} s; loss {record['loss_start']:.3f} → "
          f"{record['loss_end']:.3f}")
    if not args.no_card:
        print(write_card(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
