"""Small helpers over TransformerBridge hooks, shared by scoring, patching and evaluation."""
from __future__ import annotations

import torch


class StopForward(Exception):
    """Raise from a hook to end a forward pass once everything needed has been read."""


def model_device(model) -> torch.device:
    """The device the model's weights live on."""
    return next(model.parameters()).device


def run_until(model, inputs, fwd_hooks, stop_after: str | None = None, **forward_kwargs):
    """Run ``model(inputs, **forward_kwargs)`` with ``fwd_hooks``; stop right after hook ``stop_after``.

    Stopping early skips the layers (and the unembedding) whose output nobody reads; ``stop_at_layer``
    cannot express "after this layer's attention". A hook may also raise ``StopForward`` itself.
    Returns the model output, or None if stopped.
    """
    hooks = list(fwd_hooks)
    if stop_after is not None:
        def stop(_act, hook):  # noqa: ARG001
            raise StopForward
        hooks.append((stop_after, stop))
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        try:
            return model(inputs, **forward_kwargs)
        except StopForward:
            return None


def final_residual(model, inputs, fwd_hooks=(), **forward_kwargs) -> torch.Tensor:
    """The residual stream entering ``ln_final`` [batch, pos, d_model], without computing any logits."""
    box = {}

    def grab(resid, hook):  # noqa: ARG001
        box["resid"] = resid
        raise StopForward

    run_until(model, inputs, [*fwd_hooks, ("ln_final.hook_in", grab)], **forward_kwargs)
    return box["resid"]


def logits_at(model, resid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits [batch, vocab] at one position per row: ln_final and unembedding act per position, so
    gathering first is exact and saves the vocabulary-sized matmul everywhere else."""
    picked = resid[torch.arange(resid.shape[0], device=resid.device), positions]
    with torch.inference_mode():
        return model.unembed(model.ln_final(picked[:, None]))[:, 0]
