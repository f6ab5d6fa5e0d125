"""Small helpers over TransformerBridge hooks, shared by scoring, patching and evaluation."""
from __future__ import annotations

import torch


#: Hook points inside a block's attention (``blocks.{l}.attn.hook_{point}``); the rest sit on the block.
ATTENTION_POINTS = ("z", "q", "k", "v", "pattern", "result")
#: ("resid_mid" is left out on purpose: on the bridge that hook is the MLP branch's own copy of the stream,
#: so a patch there reaches the MLP's input but never the residual stream; patch "attn_out" instead.)
BLOCK_POINTS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "q_input", "k_input", "v_input")


def hook_name(layer: int, point: str) -> str:
    """The bridge's name of hook ``point`` in block ``layer``: ``hook_name(3, "z")`` is
    ``"blocks.3.attn.hook_z"`` (a head's output), ``hook_name(3, "resid_pre")`` ``"blocks.3.hook_resid_pre"``."""
    if point in ATTENTION_POINTS:
        return f"blocks.{layer}.attn.hook_{point}"
    if point in BLOCK_POINTS:
        return f"blocks.{layer}.hook_{point}"
    raise ValueError(f"unknown hook point {point!r}; known: {ATTENTION_POINTS + BLOCK_POINTS}")


#: The hook every read of the final residual stream uses (the input of the last layer norm).
FINAL_RESIDUAL = "ln_final.hook_in"


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

    run_until(model, inputs, [*fwd_hooks, (FINAL_RESIDUAL, grab)], **forward_kwargs)
    return box["resid"]


#: The ``cfg.positional_embedding_type`` values a mid-model pass can be handed (see ``block_kwargs``).
RESUMABLE_POSITIONS = ("standard", "rotary")


def block_kwargs(model, seq: int) -> dict:
    """What the model hands each block besides the residual, for prompts of ``seq`` positions from 0.

    Absolute position embeddings (GPT-2) are added before block 0, so a block needs nothing more: ``{}``.
    Rotary models (Qwen2, Llama) hand every block the rotary (cos, sin) of each position, the position ids
    and the causal mask; they are read from block 0's own call in a forward over one row of ``seq``
    tokens, stopped there (only the embedding runs), so whatever this architecture passes is passed.
    The values do not depend on the tokens; their batch dimension is 1 and broadcasts.
    """
    kind = getattr(model.cfg, "positional_embedding_type", "standard")
    if kind == "standard":
        return {}
    if kind not in RESUMABLE_POSITIONS:
        raise NotImplementedError(f"resuming mid-model is implemented for {RESUMABLE_POSITIONS} position "
                                  f"embeddings; this model uses {kind!r}")
    captured: dict = {}

    def grab(module, args, kwargs):  # noqa: ARG001
        captured.update(kwargs)
        raise StopForward
    handle = model.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    device = model_device(model)
    try:
        with torch.inference_mode():
            model(torch.zeros((1, seq), dtype=torch.long, device=device))
    except StopForward:
        pass
    finally:
        handle.remove()
    captured.pop("past_key_values", None)  # a resumed pass keeps no key/value cache
    if "use_cache" in captured:
        captured["use_cache"] = False
    return captured


def cut_block_kwargs(kwargs: dict, positions: int) -> dict:
    """``block_kwargs`` of a longer prompt cut to its first ``positions`` positions (a view of prefixes)."""
    out = {}
    for key, value in kwargs.items():
        if key == "position_embeddings":
            out[key] = tuple(t[:, :positions] for t in value)  # (cos, sin) [1, seq, d_rotary]
        elif key == "attention_mask":
            out[key] = None if value is None else value[..., :positions, :positions]  # [1, 1, seq, seq]
        elif key in ("position_ids", "cache_position"):
            out[key] = value[..., :positions]
        elif isinstance(value, torch.Tensor):
            raise NotImplementedError(f"cannot cut the block input {key!r} {tuple(value.shape)} to fewer "
                                      "positions; resuming mid-model does not support this architecture yet")
        else:
            out[key] = value
    return out


def run_blocks(model, resid: torch.Tensor, start: int, fwd_hooks=(), stop: int | None = None,
               kwargs: dict | None = None):
    """The residual after blocks ``start .. stop-1`` (default: every block, i.e. the input of ``ln_final``),
    given the residual ``resid`` [batch, pos, d_model] entering block ``start``; None if a hook raised
    ``StopForward``. The rows are prompts from position 0 (right-padded prefixes).

    Why not ``model(resid, start_at_layer=start)``: the bridge still runs blocks ``0 .. start-1`` on that
    input and throws their output away, so it saves nothing. Calling the blocks one by one runs only the
    ones asked for, each given what the model would hand it (``kwargs``, default ``block_kwargs`` for
    ``pos`` positions; pass them in when running many passes). No padding mask is passed, as in a plain
    forward.
    """
    stop = model.cfg.n_layers if stop is None else stop
    kwargs = block_kwargs(model, resid.shape[1]) if kwargs is None else kwargs
    with torch.inference_mode(), model.hooks(fwd_hooks=list(fwd_hooks)):
        try:
            for layer in range(start, stop):
                out = model.blocks[layer](resid, **kwargs)
                resid = out[0] if isinstance(out, tuple) else out
        except StopForward:
            return None
    return resid


def logits_at(model, resid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits [batch, vocab] at one position per row: ln_final and unembedding act per position, so
    gathering first is exact and saves the vocabulary-sized matmul everywhere else."""
    picked = resid[torch.arange(resid.shape[0], device=resid.device), positions]
    with torch.inference_mode():
        return model.unembed(model.ln_final(picked[:, None]))[:, 0]
