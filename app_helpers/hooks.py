"""Small helpers over TransformerBridge hooks, shared by scoring, patching and evaluation."""
from __future__ import annotations

import torch


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once everything needed has been read."""


def model_device(model) -> torch.device:
    """The device the model's weights live on."""
    return next(model.parameters()).device


def run_until(model, inputs, fwd_hooks, stop_after: str | None = None, **forward_kwargs):
    """Run ``model(inputs, **forward_kwargs)`` with ``fwd_hooks``; stop right after hook ``stop_after``.

    Stopping early skips the layers (and the unembedding) whose output nobody reads; ``stop_at_layer``
    cannot express "after this layer's attention". Returns the model output, or None if stopped.
    """
    hooks = list(fwd_hooks)
    if stop_after is not None:
        def stop(_act, hook):  # noqa: ARG001
            raise _StopForward
        hooks.append((stop_after, stop))
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        try:
            return model(inputs, **forward_kwargs)
        except _StopForward:
            return None
