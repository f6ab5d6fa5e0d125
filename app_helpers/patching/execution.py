"""The fast engine's passes. Each stacks several patched copies of a view's prompts along the batch
dimension ("blocks" of ``view.n`` rows) and runs only the blocks of the model it must.

The functions return tensors and count nothing; the engine charges each pass to its ``Cost``.
"""
from __future__ import annotations

import torch

from ..hooks import StopForward, final_residual, hook_name, run_blocks
from ..identities import HEAD_INPUTS, MLP, MLP_COMPONENT, Head, Node
from .base import input_head
from .plan import Block, View


def cache_run(model, tokens: torch.Tensor, mlps: bool = False):
    """One full pass over ``tokens`` [n, seq] recording, per layer, the residual entering it [n, seq, d_model]
    and the heads' outputs z [n, seq, n_heads, d_head]; also the final residual [n, seq, d_model], and
    (``mlps``) each MLP's output [n, seq, d_model] (else None). Returns (resid, z, final, mlp_out)."""
    n_layers = model.cfg.n_layers
    resid, zs = [None] * n_layers, [None] * n_layers
    mlp_outs = [None] * n_layers if mlps else None

    def store(target, layer):
        def hook(act, hook):  # noqa: ARG001
            target[layer] = act.clone()
        return hook
    hooks = [(hook_name(l, "resid_pre"), store(resid, l)) for l in range(n_layers)]
    hooks += [(hook_name(l, "z"), store(zs, l)) for l in range(n_layers)]
    if mlps:
        hooks += [(hook_name(l, "mlp_out"), store(mlp_outs, l)) for l in range(n_layers)]
    final = final_residual(model, tokens, hooks)
    return resid, zs, final, mlp_outs


def freeze_hooks(chunk: list[Node], stop_layer: int, view: View, mlp_stop: int | None = None):
    """z hooks for layers [sender layer, stop_layer): clean z everywhere, and in block b the corrupted z
    of the chunk's b-th sender if it is a head. With MLP nodes (the view holds MLP outputs), mlp_out hooks
    for layers [sender layer, ``mlp_stop``, default ``stop_layer``) the same way: clean, and the corrupted
    output in the block of an MLP sender. All of ``chunk`` sits in one layer (its MLP after its heads)."""
    start, n, blocks = chunk[0][0], view.n, len(chunk)

    def make(layer, clean, corrupted, senders):
        def hook(act, hook):  # noqa: ARG001
            frozen = clean[layer].repeat(blocks, *[1] * (clean[layer].ndim - 1))
            if layer == start:
                for b, index in senders:
                    rows = (slice(b * n, (b + 1) * n), slice(None), *index)
                    frozen[rows] = corrupted[layer][(slice(None), slice(None), *index)]
            return frozen.to(act.device)  # a model spread over devices: this block's device
        return hook
    heads = [(b, (s.head,)) for b, s in enumerate(chunk) if isinstance(s, Head)]
    hooks = [(hook_name(l, "z"), make(l, view.clean_z, view.corrupted_z, heads)) for l in range(start, stop_layer)]
    if view.clean_mlp is not None:
        mlps = [(b, ()) for b, s in enumerate(chunk) if isinstance(s, MLP)]
        hooks += [(hook_name(l, "mlp_out"), make(l, view.clean_mlp, view.corrupted_mlp, mlps))
                  for l in range(start, stop_layer if mlp_stop is None else mlp_stop)]
    return hooks


def logits_pass(model, chunk: list[Node], view: View) -> torch.Tensor:
    """Sender-patched run from the chunk's layer to the end: the final residual [blocks*n, T, d_model]."""
    start = chunk[0][0]
    x = view.resid[start].repeat(len(chunk), 1, 1)
    return run_blocks(model, x, start, freeze_hooks(chunk, model.cfg.n_layers, view), kwargs=view.block_kwargs)


def record_inputs(model, chunk: list[Node], layer: int, view: View, mlp: bool = False) -> dict[str, torch.Tensor]:
    """Sender-patched run from the chunk's layer up to ``layer``'s q/k/v — or, with ``mlp``, on through
    that layer's heads (frozen) to its MLP, recomputed from the patched stream — then stop:
    component → [blocks*n, T, heads, d_head] for q, k, v (k and v: the key/value heads, see
    ``base.input_head``), and "mlp" → the MLP's output [blocks*n, T, d_model]."""
    records: dict[str, torch.Tensor] = {}
    wanted = (*HEAD_INPUTS, MLP_COMPONENT) if mlp else HEAD_INPUTS

    def grab(component):
        def hook(act, hook):  # noqa: ARG001
            records[component] = act.clone()
            if len(records) == len(wanted):
                raise StopForward
        return hook
    start = chunk[0][0]
    x = view.resid[start].repeat(len(chunk), 1, 1)
    hooks = freeze_hooks(chunk, layer + mlp, view, mlp_stop=layer) + [(hook_name(layer, c), grab(c)) for c in HEAD_INPUTS]
    if mlp:
        hooks.append((hook_name(layer, "mlp_out"), grab(MLP_COMPONENT)))
    run_blocks(model, x, start, hooks, stop=layer + 1, kwargs=view.block_kwargs)
    return records


def receiver_pass(model, group: list[Block], records: dict[str, torch.Tensor], n_senders: int, layer: int,
                  view: View) -> torch.Tensor:
    """Clean run from ``layer`` with, in each block, one receiver head's q, k or v — or the layer's MLP
    output — replaced by a sender's record (``records`` from ``record_inputs`` over ``n_senders``
    senders); returns the final residual at the prediction positions [blocks, view.n, d_model]."""
    n, T = view.n, view.positions

    def make(component):
        picks = [(b, block) for b, block in enumerate(group) if block.component == component]
        dst = torch.tensor([b for b, _ in picks], dtype=torch.long)
        src = torch.tensor([block.sender for _, block in picks], dtype=torch.long)
        if component == MLP_COMPONENT:
            where = ()
        else:
            where = (slice(None), slice(None), torch.tensor([input_head(model.cfg, block.head, component)
                                                             for _, block in picks], dtype=torch.long))

        def hook(act, hook):  # noqa: ARG001
            act = act.clone().view(len(group), n, T, *act.shape[2:])
            rec = records[component].view(n_senders, n, T, *act.shape[3:]).to(act.device)
            act[(dst, *where)] = rec[(src, *where)]
            return act.view(len(group) * n, T, *act.shape[3:])
        return hook
    point = {c: c for c in HEAD_INPUTS} | {MLP_COMPONENT: "mlp_out"}
    hooks = [(hook_name(layer, point[c]), make(c)) for c in point if any(block.component == c for block in group)]
    x = view.resid[layer].repeat(len(group), 1, 1)
    resid = run_blocks(model, x, layer, hooks, kwargs=view.block_kwargs).view(len(group), n, T, -1)
    return resid[:, torch.arange(n, device=resid.device), view.end]
