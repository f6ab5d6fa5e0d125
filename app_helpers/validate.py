"""Checks of the settings users pass in, one helper per kind of value, so every boundary of the kit
refuses bad input the same way: an ``InputError`` that names the setting, shows the value and says what
to pass instead — never a trace from deep inside torch, and never a silent, meaningless number.

``InputError`` is both a ``ValueError`` and a ``TypeError`` (a wrong type is a bad value here), so code
that catches either keeps working; the CLI turns it into one line and exit status 2.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence

import torch

from .identities import Head, as_head


class InputError(ValueError, TypeError):
    """A setting or an input the kit cannot use; the message says which, with its value, and what to do."""


def integer(name: str, value, *, at_least: int | None = None, at_most: int | None = None, why: str = "") -> int:
    """``value`` as an int within [at_least, at_most]; refuses bools, floats and strings (``2.5`` prompts or
    ``True`` as a batch size are mistakes, not numbers to round). ``why`` explains a cap."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if at_least is not None and value < at_least:
        raise InputError(f"{name} must be at least {at_least}, got {value}")
    if at_most is not None and value > at_most:
        raise InputError(f"{name} must be at most {at_most}, got {value}" + (f": {why}" if why else ""))
    return value


def number(name: str, value, *, at_least: float | None = None, above: float | None = None,
           below: float | None = None, at_most: float | None = None) -> float:
    """``value`` as a finite float within the given bounds (NaN and infinity are refused: a NaN threshold
    silently selects nothing, or everything)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    for bound, ok, words in ((at_least, lambda b: value >= b, "at least"), (above, lambda b: value > b, "above"),
                             (below, lambda b: value < b, "below"), (at_most, lambda b: value <= b, "at most")):
        if bound is not None and not ok(bound):
            raise InputError(f"{name} must be {words} {bound}, got {value!r}")
    return value


def seed(value) -> int:
    """A seed is an integer: ``None`` would draw different prompts on every call, so the same command
    would no longer give the same circuit."""
    if value is None:
        raise InputError("seed must be an integer, got None: without a fixed seed every call draws different "
                         "prompts; pass seed=0 (or any integer)")
    return integer("seed", value)


def nonempty(name: str, values: Sequence, what_to_do: str) -> Sequence:
    """``values`` with at least one item (an empty grid or candidate set would report a 'result' of nothing)."""
    if len(values) == 0:
        raise InputError(f"{name} is empty; {what_to_do}")
    return values


def one_of(name: str, value, choices: Iterable):
    """``value`` if it is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; choose one of {choices}")
    return value


def heads_within(heads: Iterable, n_layers: int, n_heads: int, what: str = "heads") -> list[Head]:
    """``heads`` as ``Head``s, every one inside an ``n_layers`` × ``n_heads`` model."""
    heads = [as_head(h) for h in heads]
    outside = sorted({h for h in heads if h.layer >= n_layers or h.head >= n_heads})
    if outside:
        raise InputError(f"{what} outside a {n_layers}x{n_heads} model (layers 0-{n_layers - 1}, heads "
                         f"0-{n_heads - 1}): {', '.join(map(str, outside))}")
    return heads


def matrix(name: str, value, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """A 2-D [n_layers, n_heads] tensor (of the given ``shape`` when known)."""
    t = torch.as_tensor(value)
    if t.ndim != 2 or (shape is not None and tuple(t.shape) != tuple(shape)):
        want = f"[{shape[0]}, {shape[1]}]" if shape else "[n_layers, n_heads]"
        raise InputError(f"{name} must be a {want} matrix of per-head values, got shape {tuple(t.shape)}")
    return t


def finite(name: str, t: torch.Tensor, what_to_do: str) -> torch.Tensor:
    """``t`` if it holds no NaN or infinity (NaN must never leave the kit as if it were a number)."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise InputError(f"{name} hold{'s' if t.ndim == 0 else ''} {int(bad.sum())} non-finite value(s) "
                         f"(NaN or inf) of {t.numel()}; {what_to_do}")
    return t
