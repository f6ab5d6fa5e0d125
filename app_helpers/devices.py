"""Where and in which precision the kit runs a model, and a bridge made ready for patching work."""
from __future__ import annotations

import torch


def resolve_device(device=None) -> torch.device:
    """The requested device, or the best available one: CUDA, then Apple's MPS, then CPU.

    A device that is named but absent is refused here, by name: torch would otherwise fail later, deep in a
    forward pass, or a library would quietly fall back to the CPU.
    """
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' (or 'cuda:N') or 'mps', or leave it "
                             "unset to pick the best available") from None
        available = {"cpu": True, "cuda": torch.cuda.is_available(), "meta": True,
                     "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
        if not available.get(device.type, True):
            raise ValueError(f"device {str(device)!r} was asked for but this machine has none (no {device.type} "
                             "device is visible to torch); use 'cpu', or leave the device unset")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype=None) -> torch.dtype:
    """float32 unless asked otherwise: patching compares small differences, so exactness beats speed."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        try:
            dtype = getattr(torch, dtype)
        except AttributeError:
            raise ValueError(f"unknown dtype {dtype!r}; use 'float32', 'float16' or 'bfloat16'") from None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    return dtype


def has_gpu() -> bool:
    """A GPU that makes GPT-2-scale path patching take minutes instead of hours."""
    return resolve_device().type in {"cuda", "mps"}


def prepare_for_patching(bridge):
    """Eval mode and no gradients: patching only reads and overwrites activations."""
    bridge.eval()
    bridge.requires_grad_(False)
    return bridge
