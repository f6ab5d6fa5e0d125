"""Which passes the fast engine runs: views of the prompts, groups of similar length, chunks of senders
stacked in one pass, and the blocks of work (one per receiver input and sender) a chunk still owes.

Nothing here runs the model; ``execution`` runs what this module lays out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple

import torch

from ..hooks import cut_block_kwargs
from ..identities import Head, Node, Receiver


@dataclass
class View:
    """Some of the prompts over some positions, with the clean and corrupted caches cut to match.

    The engine runs a pass over one view at a time: the prediction positions of all prompts (logits
    receivers) or a group of prompts of similar length up to its last prediction position.
    """

    prompts: torch.Tensor  # [n] indices of the prompts in this view
    end: torch.Tensor  # [n] each prompt's prediction position within the view
    resid: list[torch.Tensor]  # per layer, the clean residual entering it [n, T, d_model]
    clean_z: list[torch.Tensor]  # per layer [n, T, n_heads, d_head]
    corrupted_z: list[torch.Tensor]  # per layer [n, T, n_heads, d_head]
    block_kwargs: dict  # what each block is handed for T positions (rotary positions, mask; {} for GPT-2)
    clean_mlp: list[torch.Tensor] | None = None  # with MLP nodes: per layer the MLP output [n, T, d_model]
    corrupted_mlp: list[torch.Tensor] | None = None

    @property
    def n(self) -> int:
        return len(self.prompts)

    @property
    def positions(self) -> int:
        return self.resid[0].shape[1]


def make_view(prompts: torch.Tensor, end_pos: torch.Tensor, caches, block_kwargs: dict,
              prediction_only: bool = False) -> View:
    """``prompts`` [n] at their prediction position only (T = 1), or up to the last prediction position
    among them. ``caches``: (clean resid, clean z, corrupted z[, clean mlp_out, corrupted mlp_out]), each a
    per-layer list over all prompts (the MLP outputs with MLP nodes only); ``block_kwargs``:
    ``hooks.block_kwargs`` for the full prompts.

    A prediction-only view runs its positions as if they were position 0: that is exact because such a
    pass freezes every head's z from the sender's layer on, so no attention result (where positions
    matter) is used, and the MLPs act per position."""
    end = end_pos[prompts]
    if prediction_only:
        resid, clean_z, corrupted_z, *mlp = ([a[prompts, end][:, None] for a in acts] for acts in caches)
        return View(prompts, torch.zeros_like(end), resid, clean_z, corrupted_z, cut_block_kwargs(block_kwargs, 1),
                    *mlp)
    last = int(end.max()) + 1
    resid, clean_z, corrupted_z, *mlp = ([a[prompts, :last] for a in acts] for acts in caches)
    return View(prompts, end, resid, clean_z, corrupted_z, cut_block_kwargs(block_kwargs, last), *mlp)


def length_groups(lengths: list[int], max_groups: int = 4, pass_overhead: float = 0.05) -> list[list[int]]:
    """Split prompts (by index) into groups of similar length, minimising the padded work.

    Work of a group = its prompts × its longest length; every extra group costs ``pass_overhead`` of
    one full-width pass (more, smaller passes), so near-equal lengths stay together. Exact dynamic
    programme over the sorted distinct lengths.
    """
    distinct = sorted(set(lengths))
    counts = [sum(1 for x in lengths if x == v) for v in distinct]
    penalty = pass_overhead * len(lengths) * distinct[-1]
    m = len(distinct)
    best = {0: (0.0, [])}  # prefix end → (cost, cut points)
    for end in range(1, m + 1):
        options = []
        for begin, (cost, cuts) in best.items():
            if begin < end and len(cuts) < max_groups:
                options.append((cost + sum(counts[begin:end]) * distinct[end - 1] + penalty, cuts + [end]))
        best[end] = min(options)
    bounds = [0, *best[m][1]]
    groups = []
    for lo, hi in zip(bounds, bounds[1:]):
        wanted = set(distinct[lo:hi])
        groups.append([i for i, x in enumerate(lengths) if x in wanted])
    return groups


def auto_chunk_size(cfg, seq: int, n_prompts: int, memory_mb: float, dtype: torch.dtype) -> int:
    """Senders per pass that keep one pass's live activations within ``memory_mb``.

    Per prompt row a block holds, per position, about eight residual-width tensors (the residual in,
    two layer-norm outputs, q, k, v, z, the attention output), the MLP's hidden layer before and after
    its activation (2 × d_mlp) and the attention scores, masked scores and pattern (3 × n_heads × seq);
    plus one vocabulary-sized row of logits. Each element takes ``dtype``'s size (2 bytes in bfloat16).
    """
    elements_per_row = seq * (8 * cfg.d_model + 2 * cfg.d_mlp + 3 * cfg.n_heads * seq) + cfg.d_vocab
    bytes_per_element = torch.empty((), dtype=dtype).element_size()
    rows = int(memory_mb * 2**20 / (bytes_per_element * elements_per_row))
    return max(1, rows // n_prompts)


def sender_chunks(senders: Iterable[Node], chunk_size: int) -> list[list[Node]]:
    """Consecutive same-layer groups of at most ``chunk_size`` senders (sorted input; a layer's MLP may
    share its heads' pass), so that every pass starts exactly at its senders' layer."""
    chunks: list[list[Head]] = []
    for sender in senders:
        if chunks and len(chunks[-1]) < chunk_size and chunks[-1][0][0] == sender[0]:
            chunks[-1].append(sender)
        else:
            chunks.append([sender])
    return chunks


class Block(NamedTuple):
    """One block of ``n_prompts`` rows in a receiver pass: receiver ``head`` (in the receiver layer) gets
    its ``component`` input from the record of the chunk's ``sender``-th sender; an MLP receiver has
    component "mlp" and head -1."""

    head: int
    component: str
    sender: int


def owed_blocks(chunk: list[Head], missing: dict[Receiver, set[Head]]) -> list[Block]:
    """The blocks ``chunk`` still owes: one per (receiver input, sender of the chunk) not yet scored."""
    return [Block(-1 if r.is_mlp else r.head.head, r.component, i) for r, owed in missing.items()
            for i, sender in enumerate(chunk) if sender in owed]


def batches(blocks: list[Block], size: int) -> list[tuple[int, list[Block]]]:
    """``blocks`` cut into consecutive runs of at most ``size``, each with its offset in the list."""
    return [(start, blocks[start:start + size]) for start in range(0, len(blocks), size)]
