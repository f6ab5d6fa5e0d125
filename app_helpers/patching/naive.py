"""The reference engine: path patching exactly as the APP authors run it, one full forward per sender
(two for a head receiver), nothing cached, batched or skipped. The fast engine must match it."""
from __future__ import annotations

from typing import Iterable

import torch

from ..costs import timed, unembed_flops
from ..hooks import hook_name, run_until
from ..identities import MLP, Head, Node
from .base import Metric, PatchingBase, input_head


class NaivePathPatcher(PatchingBase):
    """One full forward per sender (two for head and MLP receivers); scores as [layers, n_columns] (the
    heads, then with ``mlps`` the layer's MLP; see ``PatchingBase``), NaN: not a sender."""

    def __init__(self, model, clean_tokens, corrupted_tokens, end_pos, metric: Metric, mlps: bool = False):
        super().__init__(model, clean_tokens, corrupted_tokens, end_pos, metric, mlps)
        with timed(self.cost):
            _, self._clean = self._full_forward(self.clean_tokens, cache=True)
            _, self._corrupted = self._full_forward(self.corrupted_tokens, cache=True)
            self._set_baselines(self._full_ld(self.clean_tokens), self._full_ld(self.corrupted_tokens))
        self.setup_cost = self.cost.copy()

    def _full_forward(self, tokens, hooks=(), cache=False):
        """A whole forward pass, logits at every position [n, seq, vocab], and (``cache``) every layer's z
        (key ``(layer, "z")``) and, with MLP nodes, MLP output (``(layer, "mlp_out")``)."""
        acts = {}
        points = ("z", "mlp_out") if self.mlps else ("z",)
        grab = [(hook_name(l, p), self._grabber(acts, (l, p))) for l in range(self.cfg.n_layers)
                for p in points] if cache else []
        logits = run_until(self.model, tokens, [*hooks, *grab])
        self.cost.add_pass(self.cfg, self.n_prompts, self.seq_len, self.cfg.n_layers,
                           extra_per_token=unembed_flops(self.cfg))  # logits at every position
        return logits, acts

    @staticmethod
    def _grabber(store, key):
        def grab(act, hook):  # noqa: ARG001
            store[key] = act.clone()
        return grab

    def _full_ld(self, tokens, hooks=()) -> float:
        logits, _ = self._full_forward(tokens, hooks)
        picked = logits[torch.arange(self.n_prompts, device=self.device), self.end_pos]
        return float(self.metric(picked).float().mean())

    def _freeze_hooks(self, sender: Node, recompute_mlp: int | None = None):
        """Every head's z set to its clean value at every layer, the sender's to its corrupted value; with
        MLP nodes, every MLP's output too (the sender MLP corrupted), except MLP ``recompute_mlp``, the
        receiver whose recomputed output is recorded."""
        def make(layer, point):
            def hook(act, hook):  # noqa: ARG001
                frozen = self._clean[(layer, point)].clone()
                if point == "mlp_out" and sender == MLP(layer):
                    frozen = self._corrupted[(layer, point)].clone()
                elif point == "z" and isinstance(sender, Head) and layer == sender.layer:
                    frozen[:, :, sender.head] = self._corrupted[(layer, point)][:, :, sender.head]
                return frozen.to(act.device)
            return hook
        hooks = [(hook_name(l, "z"), make(l, "z")) for l in range(self.cfg.n_layers)]
        if self.mlps:
            hooks += [(hook_name(l, "mlp_out"), make(l, "mlp_out")) for l in range(self.cfg.n_layers)
                      if l != recompute_mlp]
        return hooks

    def to_logits(self, senders: Iterable[Head] | None = None) -> torch.Tensor:
        """[n_layers, n_columns] normalised effect of each sender on the logits (NaN: not a sender)."""
        scores = {}
        with timed(self.cost):
            for sender in self._node_senders(senders, self.cfg.n_layers, self.cfg.n_layers):
                scores[sender] = float(self.normalise(torch.tensor(
                    self._full_ld(self.clean_tokens, self._freeze_hooks(sender)))))
                self._count_evaluation(sender, None)
        return self._matrix(self.cfg.n_layers, scores)

    def to_head(self, receiver: Head, component: str, senders: Iterable[Head] | None = None) -> torch.Tensor:
        """[receiver layer, n_columns] normalised effect of each sender through ``receiver``'s q, k or v."""
        layer, head = self._check_receiver(receiver, component)
        index = input_head(self.cfg, head, component)
        scores = {}
        with timed(self.cost):
            for sender in self._node_senders(senders, layer, layer):
                scores[sender] = self._through(sender, hook_name(layer, component), (slice(None),) * 2 + (index,))
                self._count_evaluation(sender, layer)
        return self._matrix(layer, scores)

    def to_mlp(self, layer: int, senders: Iterable[Head] | None = None) -> torch.Tensor:
        """[layer + 1, n_columns] normalised effect of each sender through MLP ``layer``'s input: the heads
        of layers ≤ ``layer`` and the MLPs below it (needs ``mlps=True``)."""
        layer = self._check_mlp_receiver(layer)
        scores = {}
        with timed(self.cost):
            for sender in self._node_senders(senders, layer + 1, layer):
                scores[sender] = self._through(sender, hook_name(layer, "mlp_out"), (), recompute_mlp=layer)
                self._count_evaluation(sender, layer, into_mlp=True)
        return self._matrix(layer + 1, scores)

    def _through(self, sender: Node, name: str, index: tuple, recompute_mlp: int | None = None) -> float:
        """Record activation ``name`` (at ``index``) in the sender-patched run, then score the clean run
        with only that activation replaced by the record."""
        record = {}
        self._full_forward(self.clean_tokens, [*self._freeze_hooks(sender, recompute_mlp),
                                               (name, self._grabber(record, "c"))])

        def patch(act, hook):  # noqa: ARG001
            act = act.clone()
            act[index] = record["c"][index].to(act.device)
            return act
        return float(self.normalise(torch.tensor(self._full_ld(self.clean_tokens, [(name, patch)]))))
