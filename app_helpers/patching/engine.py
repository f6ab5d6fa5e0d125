"""``PathPatcher``, the fast exact engine: the plan says which passes, ``execution`` runs them, the memo
keeps every score, and each pass is charged to ``cost`` as it runs (see the package docstring)."""
from __future__ import annotations

from typing import Iterable

import torch

from .. import validate
from ..costs import timed
from ..hooks import block_kwargs
from ..identities import HEAD_INPUTS, LOGITS, MLP, MLP_COMPONENT, Head, Node, Receiver, head_input, mlp_input, node_order
from . import execution
from .base import Metric, PatchingBase
from .memo import ScoreMemo
from .plan import auto_chunk_size, batches, length_groups, make_view, owed_blocks, sender_chunks


class PathPatcher(PatchingBase):
    """The fast exact engine. Same interface and numbers as ``NaivePathPatcher``.

    ``chunk_size``: senders stacked in one pass (default: as many as ``memory_mb`` allows, never more than
    one layer's heads, so every pass starts exactly at its senders' layer). ``memory_mb`` defaults to 512
    on an accelerator and 64 on a CPU, where wider passes spill out of the caches and run no faster.
    """

    def __init__(self, model, clean_tokens, corrupted_tokens, end_pos, metric: Metric,
                 chunk_size: int | None = None, memory_mb: float | None = None, mlps: bool = False):
        super().__init__(model, clean_tokens, corrupted_tokens, end_pos, metric, mlps)
        if chunk_size is not None:
            chunk_size = validate.integer("chunk_size (senders per pass)", chunk_size, at_least=1)
        if memory_mb is None:
            memory_mb = 64 if self.device.type == "cpu" else 512
        memory_mb = validate.number("memory_mb", memory_mb, above=0)
        dtype = next(model.parameters()).dtype
        self.chunk_size = chunk_size or auto_chunk_size(self.cfg, self.seq_len, self.n_prompts, memory_mb, dtype)
        self._memo = ScoreMemo(self.cfg.n_layers, self.cfg.n_heads, self.n_columns)
        with timed(self.cost):
            kwargs = block_kwargs(model, self.seq_len)
            clean_resid, clean_z, clean_final, clean_mlp = self._cache_run(self.clean_tokens)
            _, corrupted_z, corrupted_final, corrupted_mlp = self._cache_run(self.corrupted_tokens)
            self._set_baselines(float(self._ld(clean_final, 1)), float(self._ld(corrupted_final, 1)))
            caches = (clean_resid, clean_z, corrupted_z, *((clean_mlp, corrupted_mlp) if mlps else ()))
            everyone = torch.arange(self.n_prompts, device=self.device)
            self._end_view = make_view(everyone, self.end_pos, caches, kwargs, prediction_only=True)
            self._length_views = [make_view(torch.tensor(group, device=self.device), self.end_pos, caches, kwargs)
                                  for group in length_groups((self.end_pos + 1).tolist())]
        self.setup_cost = self.cost.copy()  # the clean and corrupted caches: needed by any method

    def _cache_run(self, tokens):
        out = execution.cache_run(self.model, tokens, self.mlps)
        self._charge(self.n_prompts, full_layers=self.cfg.n_layers, unembed=True)
        return out

    def _charge(self, rows: int, full_layers: int, qkv: bool = False, unembed: bool = False,
                tokens: int | None = None) -> None:
        """Count one executed pass of ``rows`` prompts over ``tokens`` positions (default: all) through
        ``full_layers`` whole blocks, plus (``qkv``) one more block's q/k/v projections."""
        self.cost.add_pass(self.cfg, rows, tokens or self.seq_len, full_layers, unembed,
                           extra_per_token=qkv * self._qkv_projection_flops)

    def _scores(self, final: torch.Tensor) -> list[float]:
        """Normalised metric per block from prediction-position residuals [blocks, n_prompts, d_model]."""
        blocks = final.shape[0]
        at = torch.zeros(blocks * self.n_prompts, dtype=torch.long, device=self.device)
        return self.normalise(self._ld(final.reshape(blocks * self.n_prompts, 1, -1), blocks, at)).tolist()

    def to_logits(self, senders: Iterable[Head] | None = None) -> torch.Tensor:
        """[n_layers, n_columns] normalised effect of each sender on the logits (NaN: not a sender)."""
        n_layers, view = self.cfg.n_layers, self._end_view
        wanted = self._node_senders(senders, n_layers, n_layers)
        with timed(self.cost):
            for chunk in sender_chunks(self._memo.missing(LOGITS, wanted), self.chunk_size):
                final = execution.logits_pass(self.model, chunk, view)
                self._charge(len(chunk) * view.n, full_layers=n_layers - chunk[0].layer, unembed=True, tokens=1)
                for sender, score in zip(chunk, self._scores(final.view(len(chunk), view.n, -1))):
                    self._memo.store(LOGITS, sender, score)
                    self._count_evaluation(sender, None)
        return self._memo.read(LOGITS, wanted)

    def to_head(self, receiver: Head, component: str, senders: Iterable[Head] | None = None) -> torch.Tensor:
        """[receiver layer, n_columns] normalised effect of each sender through ``receiver``'s q, k or v."""
        receiver = self._check_receiver(receiver, component)
        senders = None if senders is None else list(senders)
        self._score_receivers([receiver], senders)
        return self._memo.read(head_input(receiver, component), self._node_senders(senders, receiver[0], receiver[0]))

    def to_mlp(self, layer: int, senders: Iterable[Head] | None = None) -> torch.Tensor:
        """[layer + 1, n_columns] normalised effect of each sender through MLP ``layer``'s input: the heads
        of layers ≤ ``layer`` and the MLPs below it (needs ``mlps=True``)."""
        layer = self._check_mlp_receiver(layer)
        senders = None if senders is None else list(senders)
        self._score_receivers([MLP(layer)], senders)
        return self._memo.read(mlp_input(layer), self._node_senders(senders, layer + 1, layer))

    def prefetch(self, receivers: Iterable[Node], senders: Iterable[Head] | None = None) -> None:
        """Score q, k and v of every head receiver (and the input of every MLP receiver) now, one sender
        pass per layer shared by all of them (a search that will ask for all of them saves the passes it
        would run one receiver at a time)."""
        self._score_receivers(list(receivers), None if senders is None else list(senders))

    def _score_receivers(self, receivers: list[Node], senders: list[Head] | None) -> None:
        """Compute every missing score of ``senders`` into q, k and v of the head receivers and into the
        MLP receivers, layer by layer."""
        by_layer: dict[int, list[Receiver]] = {}
        for receiver in receivers:
            if isinstance(receiver, MLP):
                inputs = [mlp_input(self._check_mlp_receiver(receiver.layer))]
            else:
                receiver = self._check_receiver(receiver, "q")
                inputs = [head_input(receiver, c) for c in HEAD_INPUTS]
            by_layer.setdefault(inputs[0].head.layer, []).extend(inputs)
        with timed(self.cost):
            for layer, inputs in sorted(by_layer.items()):
                missing = {r: set(self._memo.missing(r, self._node_senders(senders, layer + r.is_mlp, layer)))
                           for r in sorted(set(inputs))}
                for chunk in sender_chunks(sorted(set().union(*missing.values()), key=node_order), self.chunk_size):
                    self._score_chunk(chunk, layer, missing)

    def _score_chunk(self, chunk: list[Node], layer: int, missing: dict[Receiver, set[Node]]) -> None:
        """Every missing (receiver input, sender) score of ``chunk``'s senders into ``layer``: per length
        group, one sender pass records q/k/v (and, for an MLP receiver, runs on through the layer's frozen
        heads to its MLP), then receiver passes of about ``chunk_size`` × n_prompts rows.

        The metric reads every prompt's answer at once, so each length group writes its prompts' final
        residuals into one [blocks, n_prompts, d_model] tensor that is scored when all groups are in.
        """
        blocks = owed_blocks(chunk, missing)
        mlp = any(block.component == MLP_COMPONENT for block in blocks)
        final = self._end_view.resid[0].new_empty(len(blocks), self.n_prompts, self.cfg.d_model)  # model dtype
        for view in self._length_views:
            records = execution.record_inputs(self.model, chunk, layer, view, mlp)
            self._charge(len(chunk) * view.n, full_layers=layer + mlp - chunk[0].layer, qkv=not mlp,
                         tokens=view.positions)
            per_pass = max(1, self.chunk_size * self.n_prompts // view.n)  # small groups: more blocks per pass
            for start, group in batches(blocks, per_pass):
                final[start:start + len(group), view.prompts] = execution.receiver_pass(
                    self.model, group, records, len(chunk), layer, view)
                self._charge(len(group) * view.n, full_layers=self.cfg.n_layers - layer, unembed=True,
                             tokens=view.positions)
        for start, group in batches(blocks, self.chunk_size):  # logits of chunk_size blocks at a time
            for block, score in zip(group, self._scores(final[start:start + len(group)])):
                into_mlp = block.component == MLP_COMPONENT
                receiver = mlp_input(layer) if into_mlp else head_input((layer, block.head), block.component)
                self._memo.store(receiver, chunk[block.sender], score)
                self._count_evaluation(chunk[block.sender], layer, into_mlp)
