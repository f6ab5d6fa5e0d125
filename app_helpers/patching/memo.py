"""The fast engine's memory: every (receiver, sender) score computed so far, so that a grid of searches,
a second call or another receiver in the same layer never recomputes one."""
from __future__ import annotations

import math

import torch

from ..identities import Node, Receiver
from .base import column


class ScoreMemo:
    """Per receiver, a [senders' layers, n_columns] table of normalised scores (the heads, then with MLP
    nodes the layer's MLP, ``base.column``); NaN means not computed yet.

    A head receiver in layer l can only hear senders below it, so its table has l rows; an MLP receiver
    in layer l also hears layer l's heads (l + 1 rows); the logits' has every layer.
    """

    def __init__(self, n_layers: int, n_heads: int, n_columns: int | None = None):
        self.n_layers, self.n_heads = n_layers, n_heads
        self.n_columns = n_heads if n_columns is None else n_columns
        self._tables: dict[Receiver, torch.Tensor] = {}

    def _table(self, receiver: Receiver) -> torch.Tensor:
        rows = self.n_layers if receiver.is_logits else receiver.head.layer + receiver.is_mlp
        return self._tables.setdefault(receiver, torch.full((rows, self.n_columns), math.nan))

    def missing(self, receiver: Receiver, wanted: list[Node]) -> list[Node]:
        """The senders of ``wanted`` whose score into ``receiver`` is not known yet (in ``wanted``'s order)."""
        table = self._table(receiver)
        return [s for s in wanted if math.isnan(table[column(s, self.n_heads)].item())]

    def store(self, receiver: Receiver, sender: Node, score: float) -> None:
        self._table(receiver)[column(sender, self.n_heads)] = score

    def read(self, receiver: Receiver, wanted: list[Node]) -> torch.Tensor:
        """The known scores into ``receiver`` for ``wanted`` senders, NaN for every other node."""
        table = self._table(receiver)
        out = torch.full_like(table, math.nan)
        for sender in wanted:
            out[column(sender, self.n_heads)] = table[column(sender, self.n_heads)]
        return out
