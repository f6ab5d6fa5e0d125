"""What both engines share: the prompts, the clean/corrupted baselines, the normalised score, the checks
on senders and receivers, and the least work an exact method needs (``Cost.flops_lower_bound``)."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from .. import validate
from ..costs import Cost, layer_flops_per_token, qkv_flops_per_token, timed, unembed_flops
from ..hooks import final_residual, logits_at, model_device
from ..identities import MLP, Head, Node, head_input, node_order
from ..metrics import PATCHING_METRICS, kl_to_clean, task_metric, warn_if_untrusted

#: end-position logits [..., n_prompts, vocab] → per-prompt metric [..., n_prompts] (e.g. logit difference)
Metric = Callable[[torch.Tensor], torch.Tensor]


def input_head(cfg, head: int, component: str) -> int:
    """Which head slice of the ``component`` hook [batch, pos, heads, d_head] is query head ``head``'s input.

    q is every query head's own. Under grouped-query attention (``cfg.n_key_value_heads`` < ``n_heads``:
    Qwen2.5, Llama 3) k and v are computed once per key/value group and shared by the
    ``n_heads / n_key_value_heads`` query heads of the group; head h belongs to group
    ``h // (n_heads / n_key_value_heads)``, as the APP authors map it. So patching "head h's k" (or v)
    patches its group's k: every query head of the group then attends with the patched keys — the
    receiver is in effect the group, at the cost of one receiver like any other. Senders stay per query
    head (z is per query head).
    """
    if component == "q":
        return head
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return head // (cfg.n_heads // n_kv)


def column(node: Node, n_heads: int) -> tuple[int, int]:
    """Where ``node``'s score sits in a score matrix: a head at ``(layer, head)``, an MLP at
    ``(layer, n_heads)`` (the column after the heads; only with MLP nodes on)."""
    return (node.layer, n_heads) if isinstance(node, MLP) else (node[0], node[1])


class PatchingBase:
    """Inputs, the clean/corrupted baselines and the normalisation shared by both engines.

    ``clean_tokens`` / ``corrupted_tokens``: [n_prompts, seq]; ``end_pos``: [n_prompts], the position
    whose logits the metric reads. Subclasses compute the baselines and call ``_set_baselines``.

    ``mlps``: MLP nodes (off by default, as in the paper). Off, a sender patch freezes every head and
    recomputes the MLPs, so a path through an MLP is part of the edge it leaves (method.md §2). On, each
    layer's MLP is a node like a head: a sender (its output ``hook_mlp_out`` set to its corrupted value)
    and a receiver (its input, read through its recomputed output); every node that is not the sender is
    frozen at its clean value, so each edge is a direct path through the residual stream only, and a path
    through an MLP is two edges (into the MLP, out of it). Score matrices then have one more column,
    ``[..., n_heads]``, the layer's MLP (``n_columns``). MLPs are never pruned: with MLP nodes on they are
    always senders.
    """

    def __init__(self, model, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor,
                 end_pos: torch.Tensor, metric: Metric, mlps: bool = False):
        if clean_tokens.shape != corrupted_tokens.shape or clean_tokens.ndim != 2:
            raise ValueError(f"clean tokens {tuple(clean_tokens.shape)} and corrupted tokens "
                             f"{tuple(corrupted_tokens.shape)} must be [n_prompts, seq] of the same shape")
        n, seq = clean_tokens.shape
        end_pos = torch.as_tensor(end_pos)
        if end_pos.shape != (n,) or int(end_pos.min()) < 0 or int(end_pos.max()) >= seq:
            raise ValueError(f"end_pos must hold one position in [0, {seq}) per prompt ({n} prompts)")
        self.model, self.cfg, self.metric = model, model.cfg, metric
        if not isinstance(mlps, bool):
            raise validate.InputError(f"mlps (MLP nodes on or off) must be True or False, got {mlps!r}")
        self.mlps = mlps
        self.n_columns = self.cfg.n_heads + mlps  # score matrices: the heads, then (mlps) the layer's MLP
        self.problems: list[str] = []  # why the normalised scores cannot be trusted (``from_task`` checks)
        self.device = model_device(model)
        self.clean_tokens = clean_tokens.to(self.device)
        self.corrupted_tokens = corrupted_tokens.to(self.device)
        self.end_pos = end_pos.to(self.device)
        self.n_prompts, self.seq_len = n, seq
        self.cost = Cost()
        self.metric_name: str | None = None  # the metric's name when ``from_task`` chose it (a bare callable has none)
        self._sender_passes_seen: set[tuple[Node, int, bool]] = set()
        self._needed_positions = int((self.end_pos + 1).sum())  # causal: nothing after END reaches it
        # per-token FLOPs the cost counts use on every evaluation, computed once
        self._layer_flops = layer_flops_per_token(self.cfg, seq)  # a whole block over the prompts
        self._end_layer_flops = layer_flops_per_token(self.cfg, 1)  # a block at the prediction position alone
        self._qkv_projection_flops = qkv_flops_per_token(self.cfg, 0)  # a block up to q/k/v, no attention

    @classmethod
    def from_task(cls, model, task, metric: str | None = None, **kwargs):
        """An engine for a ``TaskData``: its tokens, prediction positions and metric — the task's (per-prompt
        answers) unless ``metric`` names another of ``metrics.PATCHING_METRICS``; ``"kl"`` first runs the
        clean prompts once for the reference distribution (counted in the engine's set-up cost)."""
        task.check_model(model)
        task = task.to(model_device(model))
        name = validate.one_of("patching metric", metric or task.metric, PATCHING_METRICS)
        reference = Cost()
        if name == "kl":
            with timed(reference):
                clean_final = logits_at(model, final_residual(model, task.clean_tokens), task.end_pos)
            reference.add_pass(model.cfg, len(task), task.clean_tokens.shape[1], model.cfg.n_layers, unembed=True)
            fn = kl_to_clean(clean_final)
        else:
            fn = task_metric(task, name)
        engine = cls(model, task.clean_tokens, task.corrupted_tokens, task.end_pos, fn, **kwargs)
        engine.cost, engine.setup_cost = engine.cost + reference, engine.setup_cost + reference
        engine.metric_name = name
        # The metric is named, so its trust threshold applies (a bare metric callable has none).
        engine.problems = warn_if_untrusted(engine.ld_clean, engine.ld_corrupted, name,
                                            f"path patching on task {task.name!r}")
        return engine

    def _set_baselines(self, ld_clean: float, ld_corrupted: float) -> None:
        self.ld_clean, self.ld_corrupted = ld_clean, ld_corrupted
        validate.finite("the metric on the clean and corrupted prompts", torch.tensor([ld_clean, ld_corrupted]),
                        "the model's outputs are not finite: check its weights (load_model refuses NaN) and use "
                        "float32 if a lower precision overflowed")
        if abs(ld_clean - ld_corrupted) < 1e-6:
            raise ValueError(f"clean and corrupted prompts give the same metric ({ld_clean:.4g}): there is "
                             "no behaviour to patch; check the task and the model")

    def prefetch(self, receivers: Iterable[Head], senders: Iterable[Head] | None = None) -> None:
        """Hint that these receivers come next; the naive reference ignores it (it shares nothing)."""

    def normalise(self, ld_patched: torch.Tensor) -> torch.Tensor:
        """0 = clean behaviour, -1 = as bad as the corrupted prompts."""
        return (ld_patched - self.ld_clean) / (self.ld_clean - self.ld_corrupted)

    def _senders(self, senders: Iterable[Head] | None, below_layer: int) -> list[Head]:
        """Requested senders that can influence a receiver in ``below_layer``, sorted by (layer, head)."""
        valid = {Head(l, h) for l in range(below_layer) for h in range(self.cfg.n_heads)}
        if senders is None:
            return sorted(valid)
        senders = set(validate.heads_within(senders, self.cfg.n_layers, self.cfg.n_heads, "senders"))
        return sorted(senders & valid)

    def _mlp_senders(self, below_layer: int) -> list[MLP]:
        """The MLPs below ``below_layer`` when MLP nodes are on (they are never pruned), else none."""
        return [MLP(l) for l in range(below_layer)] if self.mlps else []

    def _node_senders(self, senders: Iterable[Head] | None, below_layer: int, mlps_below: int) -> list[Node]:
        """Head senders below ``below_layer`` and (MLP nodes) MLPs below ``mlps_below``, in pass order
        (a layer's heads, then its MLP)."""
        return sorted([*self._senders(senders, below_layer), *self._mlp_senders(mlps_below)], key=node_order)

    def _check_mlp_receiver(self, layer) -> int:
        """``layer`` as an MLP receiver's layer of this model; refuses when MLP nodes are off."""
        if not self.mlps:
            raise ValueError("MLP receivers need MLP nodes: build the engine with mlps=True "
                             "(e.g. PathPatcher.from_task(model, task, mlps=True))")
        return validate.integer("the MLP receiver's layer", layer, at_least=0, at_most=self.cfg.n_layers - 1)

    def _check_receiver(self, receiver, component: str) -> Head:
        """``receiver`` as a ``Head`` of this model; refuses a component other than q, k, v."""
        head_input(receiver, component)
        return validate.heads_within([receiver], self.cfg.n_layers, self.cfg.n_heads, "receiver")[0]

    def _matrix(self, n_layers: int, scores: dict[Node, float]) -> torch.Tensor:
        """[n_layers, n_columns] with ``scores`` filled in (an MLP in the last column) and NaN elsewhere."""
        out = torch.full((n_layers, self.n_columns), math.nan)
        for node, value in scores.items():
            out[column(node, self.cfg.n_heads)] = value
        return out

    def _ld(self, resid: torch.Tensor, groups: int, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Mean metric per block of ``n_prompts`` rows of ``resid`` [groups*n_prompts, pos, d_model], read
        at ``positions`` (default: end_pos): [groups]."""
        positions = self.end_pos.repeat(groups) if positions is None else positions
        logits = logits_at(self.model, resid, positions)
        return self.metric(logits.reshape(groups, self.n_prompts, -1)).float().mean(-1).cpu()

    def _count_evaluation(self, sender: Node, receiver_layer: int | None, into_mlp: bool = False) -> None:
        """One (sender, receiver, component) score, and the least work an exact method needs for it.

        Lower bound, in whole layers at the positions that must be computed: for a logits receiver, the
        layers from the sender to the end at the prediction position only (frozen heads do not mix
        positions); for a head receiver, one sender pass over every position up to each prompt's
        prediction position to the receiver layer's q/k/v per (sender, receiver layer) over the engine's
        lifetime (it can serve every receiver there), plus a pass from the receiver layer to the end over
        the same positions (now attention mixes positions again). An MLP receiver (``into_mlp``) counts as
        a head receiver one layer higher for the sender pass (it needs its layer's attention) and one
        layer lower for the rest (its own layer's attention is not rerun).
        """
        cfg, n = self.cfg, self.n_prompts
        T = self._needed_positions / n
        self.cost.sender_evaluations += 1
        if receiver_layer is None:
            self.cost.flops_lower_bound += n * ((cfg.n_layers - sender[0]) * self._end_layer_flops
                                                + unembed_flops(cfg))
            return
        if (sender, receiver_layer, into_mlp) not in self._sender_passes_seen:
            self._sender_passes_seen.add((sender, receiver_layer, into_mlp))
            self.cost.flops_lower_bound += n * T * ((receiver_layer + into_mlp - sender[0]) * self._layer_flops
                                                    + (not into_mlp) * self._qkv_projection_flops)
        self.cost.flops_lower_bound += n * (T * (cfg.n_layers - receiver_layer - into_mlp) * self._layer_flops
                                            + unembed_flops(cfg))
