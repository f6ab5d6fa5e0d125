"""Honest cost accounting: sender evaluations, forward passes executed, analytic FLOPs, wall time.

The paper counts "forward passes" as one per evaluated sender per receiver; an engine that batches and
starts mid-model executes far fewer passes and FLOPs. Both numbers are kept, side by side, so a speed-up
can always be traced to what was actually skipped.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields


def layer_flops_per_token(cfg, seq_len: int) -> int:
    """Multiply-add FLOPs (×2) of one transformer block for one token of a ``seq_len`` prompt.

    The block up to z (``qkv_flops_per_token``), the output projection (d·H·d_head) and the MLP: in and out
    (2·d·d_mlp), plus the gate of a gated MLP (Qwen2, Llama: 3·d·d_mlp). Layer norms, biases, activations
    and softmax are ignored: they are a few percent.
    """
    mlp_matrices = 3 if getattr(cfg, "gated_mlp", False) else 2
    return qkv_flops_per_token(cfg, seq_len) + 2 * (cfg.d_model * cfg.n_heads * cfg.d_head
                                                    + mlp_matrices * cfg.d_model * cfg.d_mlp)


def qkv_flops_per_token(cfg, seq_len: int) -> int:
    """The part of a block up to its heads' outputs z: the q projection (d·H·d_head), k and v projections
    (d·H_kv·d_head each; H_kv < H under grouped-query attention) and attention scores and mixing
    (2·seq·H·d_head). With ``seq_len`` 0: the projections alone."""
    inner = cfg.n_heads * cfg.d_head
    kv_inner = (getattr(cfg, "n_key_value_heads", None) or cfg.n_heads) * cfg.d_head
    return 2 * (cfg.d_model * (inner + 2 * kv_inner) + 2 * seq_len * inner)


def unembed_flops(cfg) -> int:
    """FLOPs to turn one residual vector into logits."""
    return 2 * cfg.d_model * cfg.d_vocab


@dataclass
class Cost:
    """What a piece of work cost. Adding two costs adds every field."""

    sender_evaluations: int = 0  # (sender, receiver, component) scores computed — the paper's count
    forward_passes: int = 0  # batched passes actually executed (partial passes count as one)
    flops: float = 0.0  # analytic FLOPs of the layers actually traversed
    flops_lower_bound: float = 0.0  # each evaluated sender alone: sender→receiver layers, needed positions
    seconds: float = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __sub__(self, other: "Cost") -> "Cost":
        return Cost(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def add_pass(self, cfg, rows: int, tokens: int, layers: int, unembed: bool = False,
                 stop_at_last_z: bool = False, extra_per_token: int = 0) -> None:
        """Count one executed forward pass of ``rows`` prompts over ``tokens`` positions through ``layers``
        whole blocks (``stop_at_last_z``: the last of them only up to its heads' outputs), plus
        ``extra_per_token`` FLOPs, and the unembedding of one position per row when ``unembed``."""
        per_token = layers * layer_flops_per_token(cfg, tokens) + extra_per_token
        if stop_at_last_z and layers:
            per_token += qkv_flops_per_token(cfg, tokens) - layer_flops_per_token(cfg, tokens)
        self.forward_passes += 1
        self.flops += rows * (tokens * per_token + unembed * unembed_flops(cfg))

    def copy(self) -> "Cost":
        return Cost(**asdict(self))

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def timed(cost: Cost):
    """Add the wall time of the ``with`` body to ``cost.seconds``."""
    start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds += time.perf_counter() - start
