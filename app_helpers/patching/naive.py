"""The reference engine: path patching exactly as the APP authors run it, one full forward per sender
(two for a head receiver), nothing cached, batched or skipped. The fast engine must match it."""
from __future__ import annotations

from typing import Iterable

import torch

from ..costs import timed, unembed_flops
from ..hooks import hook_name, run_until
from ..identities import Head
from .base import Metric, PatchingBase, input_head


class NaivePathPatcher(PatchingBase):
    """One full forward per sender (two for head receivers); scores as [layers, n_heads], NaN: not a sender."""

    def __init__(self, model, clean_tokens, corrupted_tokens, end_pos, metric: Metric):
        super().__init__(model, clean_tokens, corrupted_tokens, end_pos, metric)
        with timed(self.cost):
            _, self._clean_z = self._full_forward(self.clean_tokens, cache=True)
            _, self._corrupted_z = self._full_forward(self.corrupted_tokens, cache=True)
            self._set_baselines(self._full_ld(self.clean_tokens), self._full_ld(self.corrupted_tokens))
        self.setup_cost = self.cost.copy()

    def _full_forward(self, tokens, hooks=(), cache=False):
        """A whole forward pass, logits at every position [n, seq, vocab], and (``cache``) every layer's z."""
        zs = {}
        grab = [(hook_name(l, "z"), self._grabber(zs, l)) for l in range(self.cfg.n_layers)] if cache else []
        logits = run_until(self.model, tokens, [*hooks, *grab])
        self.cost.add_pass(self.cfg, self.n_prompts, self.seq_len, self.cfg.n_layers,
                           extra_per_token=unembed_flops(self.cfg))  # logits at every position
        return logits, zs

    @staticmethod
    def _grabber(store, key):
        def grab(act, hook):  # noqa: ARG001
            store[key] = act.clone()
        return grab

    def _full_ld(self, tokens, hooks=()) -> float:
        logits, _ = self._full_forward(tokens, hooks)
        picked = logits[torch.arange(self.n_prompts, device=self.device), self.end_pos]
        return float(self.metric(picked).float().mean())

    def _freeze_hooks(self, sender: Head):
        """Every head's z set to its clean value, the sender's to its corrupted value, at every layer."""
        def make(layer):
            def hook(z, hook):  # noqa: ARG001
                frozen = self._clean_z[layer].clone()
                if layer == sender[0]:
                    frozen[:, :, sender[1]] = self._corrupted_z[layer][:, :, sender[1]]
                return frozen.to(z.device)
            return hook
        return [(hook_name(l, "z"), make(l)) for l in range(self.cfg.n_layers)]

    def to_logits(self, senders: Iterable[Head] | None = None) -> torch.Tensor:
        """[n_layers, n_heads] normalised effect of each sender on the logits (NaN: not a sender)."""
        scores = {}
        with timed(self.cost):
            for sender in self._senders(senders, self.cfg.n_layers):
                scores[sender] = float(self.normalise(torch.tensor(
                    self._full_ld(self.clean_tokens, self._freeze_hooks(sender)))))
                self._count_evaluation(sender, None)
        return self._matrix(self.cfg.n_layers, scores)

    def to_head(self, receiver: Head, component: str, senders: Iterable[Head] | None = None) -> torch.Tensor:
        """[receiver layer, n_heads] normalised effect of each sender through ``receiver``'s q, k or v."""
        layer, head = self._check_receiver(receiver, component)
        name = hook_name(layer, component)
        index = input_head(self.cfg, head, component)
        scores = {}
        with timed(self.cost):
            for sender in self._senders(senders, layer):
                record = {}
                self._full_forward(self.clean_tokens, [*self._freeze_hooks(sender),
                                                       (name, self._grabber(record, "c"))])

                def patch(act, hook):  # noqa: ARG001
                    act = act.clone()
                    act[:, :, index] = record["c"][:, :, index].to(act.device)
                    return act
                ld = self._full_ld(self.clean_tokens, [(name, patch)])
                scores[sender] = float(self.normalise(torch.tensor(ld)))
                self._count_evaluation(sender, layer)
        return self._matrix(layer, scores)
