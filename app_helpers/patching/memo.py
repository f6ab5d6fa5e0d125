"""The fast engine's memory: every (receiver, sender) score computed so far, so that a grid of searches,
a second call or another receiver in the same layer never recomputes one."""
from __future__ import annotations

import math

import torch

from ..identities import Head, Receiver


class ScoreMemo:
    """Per receiver, a [senders' layers, n_heads] table of normalised scores; NaN means not computed yet.

    A head receiver in layer l can only hear senders below it, so its table has l rows; the logits' has
    every layer.
    """

    def __init__(self, n_layers: int, n_heads: int):
        self.n_layers, self.n_heads = n_layers, n_heads
        self._tables: dict[Receiver, torch.Tensor] = {}

    def _table(self, receiver: Receiver) -> torch.Tensor:
        rows = self.n_layers if receiver.is_logits else receiver.head.layer
        return self._tables.setdefault(receiver, torch.full((rows, self.n_heads), math.nan))

    def missing(self, receiver: Receiver, wanted: list[Head]) -> list[Head]:
        """The senders of ``wanted`` whose score into ``receiver`` is not known yet (in ``wanted``'s order)."""
        table = self._table(receiver)
        return [s for s in wanted if math.isnan(table[s].item())]

    def store(self, receiver: Receiver, sender: Head, score: float) -> None:
        self._table(receiver)[sender] = score

    def read(self, receiver: Receiver, wanted: list[Head]) -> torch.Tensor:
        """The known scores into ``receiver`` for ``wanted`` senders, NaN for every other head."""
        table = self._table(receiver)
        out = torch.full_like(table, math.nan)
        for sender in wanted:
            out[sender] = table[sender]
        return out
