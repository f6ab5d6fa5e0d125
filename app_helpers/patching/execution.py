"""The fast engine's passes. Each stacks several patched copies of a view's prompts along the batch
dimension ("blocks" of ``view.n`` rows) and runs only the blocks of the model it must.

The functions return tensors and count nothing; the engine charges each pass to its ``Cost``.
"""
from __future__ import annotations

import torch

from ..hooks import StopForward, final_residual, hook_name, run_blocks
from ..identities import HEAD_INPUTS, Head
from .base import input_head
from .plan import Block, View


def cache_run(model, tokens: torch.Tensor):
    """One full pass over ``tokens`` [n, seq] recording, per layer, the residual entering it [n, seq, d_model]
    and the heads' outputs z [n, seq, n_heads, d_head]; also the final residual [n, seq, d_model]."""
    n_layers = model.cfg.n_layers
    resid, zs = [None] * n_layers, [None] * n_layers

    def store(target, layer):
        def hook(act, hook):  # noqa: ARG001
            target[layer] = act.clone()
        return hook
    hooks = [(hook_name(l, "resid_pre"), store(resid, l)) for l in range(n_layers)]
    hooks += [(hook_name(l, "z"), store(zs, l)) for l in range(n_layers)]
    final = final_residual(model, tokens, hooks)
    return resid, zs, final


def freeze_hooks(chunk: list[Head], stop_layer: int, view: View):
    """z hooks for layers [sender layer, stop_layer): clean z everywhere, and in block b the corrupted z
    of the chunk's b-th sender. All of ``chunk`` sits in one layer."""
    start, n, blocks = chunk[0][0], view.n, len(chunk)

    def make(layer):
        def hook(z, hook):  # noqa: ARG001
            frozen = view.clean_z[layer].repeat(blocks, 1, 1, 1)
            if layer == start:
                for b, (_, head) in enumerate(chunk):
                    frozen[b * n:(b + 1) * n, :, head] = view.corrupted_z[layer][:, :, head]
            return frozen.to(z.device)  # a model spread over devices: this block's device
        return hook
    return [(hook_name(l, "z"), make(l)) for l in range(start, stop_layer)]


def logits_pass(model, chunk: list[Head], view: View) -> torch.Tensor:
    """Sender-patched run from the chunk's layer to the end: the final residual [blocks*n, T, d_model]."""
    start = chunk[0][0]
    x = view.resid[start].repeat(len(chunk), 1, 1)
    return run_blocks(model, x, start, freeze_hooks(chunk, model.cfg.n_layers, view), kwargs=view.block_kwargs)


def record_qkv(model, chunk: list[Head], layer: int, view: View) -> dict[str, torch.Tensor]:
    """Sender-patched run from the chunk's layer up to ``layer``'s q/k/v, then stop:
    component → [blocks*n, T, heads, d_head] (k and v: the key/value heads, see ``base.input_head``)."""
    records: dict[str, torch.Tensor] = {}

    def grab(component):
        def hook(act, hook):  # noqa: ARG001
            records[component] = act.clone()
            if len(records) == len(HEAD_INPUTS):
                raise StopForward
        return hook
    start = chunk[0][0]
    x = view.resid[start].repeat(len(chunk), 1, 1)
    hooks = freeze_hooks(chunk, layer, view) + [(hook_name(layer, c), grab(c)) for c in HEAD_INPUTS]
    run_blocks(model, x, start, hooks, stop=layer + 1, kwargs=view.block_kwargs)
    return records


def receiver_pass(model, group: list[Block], records: dict[str, torch.Tensor], n_senders: int, layer: int,
                  view: View) -> torch.Tensor:
    """Clean run from ``layer`` with, in each block, one receiver head's q, k or v replaced by a sender's
    record (``records`` from ``record_qkv`` over ``n_senders`` senders); returns the final residual at
    the prediction positions [blocks, view.n, d_model]."""
    n, T = view.n, view.positions

    def make(component):
        picks = [(b, block) for b, block in enumerate(group) if block.component == component]
        dst = torch.tensor([b for b, _ in picks], dtype=torch.long)
        head = torch.tensor([input_head(model.cfg, block.head, component) for _, block in picks], dtype=torch.long)
        src = torch.tensor([block.sender for _, block in picks], dtype=torch.long)

        def hook(act, hook):  # noqa: ARG001
            act = act.clone().view(len(group), n, T, *act.shape[2:])
            rec = records[component].view(n_senders, n, T, *act.shape[3:]).to(act.device)
            act[dst, :, :, head] = rec[src, :, :, head]
            return act.view(len(group) * n, T, *act.shape[3:])
        return hook
    hooks = [(hook_name(layer, c), make(c)) for c in HEAD_INPUTS if any(block.component == c for block in group)]
    x = view.resid[layer].repeat(len(group), 1, 1)
    resid = run_blocks(model, x, layer, hooks, kwargs=view.block_kwargs).view(len(group), n, T, -1)
    return resid[:, torch.arange(n, device=resid.device), view.end]
