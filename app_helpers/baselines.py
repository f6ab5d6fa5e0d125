"""Baselines to compare APP with: head activation patching, EAP and EAP-IG, on path patching's terms.

Every score here uses the prompts, metric and normalisation of path patching (``PatchingBase``: the change
of the metric's mean over prompts, divided by ``ld_clean - ld_corrupted``; 0 = no effect, -1 = as bad as
the corrupted prompts), and every method takes ``candidates`` as APP does: heads outside the set are never
scored (NaN) and, for activation patching, never cost a pass. Each method returns a ``BaselineScores``
with a [n_layers, n_heads] matrix and the ``Cost`` of the work, counted as the engines count theirs.

- ``Baselines.activation_patching``: each head's z from the corrupted run patched into the clean run at
  every position, everything downstream recomputed — exact, one batched pass per layer of heads.
- ``Baselines.eap`` (edge attribution patching, Syed et al. 2023): first-order estimates of the same node
  effects and of edge effects, from one forward and one backward pass for all of them.
- ``Baselines.eap_ig`` (Hanna et al. 2024): EAP with the gradient averaged along the straight line from
  the clean to the corrupted input embeddings.

``top_heads`` and ``select_heads`` (from ``search``) turn a matrix into heads; ``BaselineScores.as_engine``
lets ``search.search_circuit`` run the kit's breadth-first search on EAP's edge scores unchanged.

Costs, beside the set-up every method shares (one clean and one corrupted full pass, as path patching's):
activation patching runs one pass per ``chunk_size`` heads of a layer, from that layer to the end; EAP one
forward of 2n rows and one backward, EAP-IG one of each per step. A backward is charged as executed: the
weights take no gradient, so about one forward (each matmul once, the attention products twice), not the
training rule of thumb of two; the dot products that turn gradients into edge scores are charged too.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable

import torch

from . import validate
from .costs import Cost, layer_flops_per_token, qkv_flops_per_token, timed, unembed_flops
from .hooks import block_kwargs, hook_name, run_blocks
from .identities import HEAD_INPUTS, LOGITS, Head, Receiver, head_input
from .patching.base import Metric, PatchingBase, input_head
from .patching.execution import cache_run
from .patching.plan import auto_chunk_size, make_view, sender_chunks


@dataclass
class BaselineScores:
    """One baseline's scores and their cost.

    ``scores`` [n_layers, n_heads]: each head's normalised effect (activation patching: exact; EAP: its
    first-order estimate); NaN where the head was not a candidate. ``edges``: receiver → [receiver layer,
    n_heads] normalised effect of each sender below it (``LOGITS`` → [n_layers, n_heads]), NaN outside the
    candidates, the same layout as ``SearchResult.scores``; empty for activation patching (no paths).
    ``cost``: the shared set-up caches plus this method's own passes.
    """

    method: str
    scores: torch.Tensor
    edges: dict[Receiver, torch.Tensor] = field(repr=False)
    cost: Cost

    def top_heads(self, k: int) -> list[Head]:
        return top_heads(self.scores, k)

    def as_engine(self, cfg) -> "ScoreTable":
        """The edge scores behind the interface ``search.search_circuit`` reads (``cfg`` the model's)."""
        if not self.edges:
            raise ValueError(f"{self.method} scores no edges; a search needs EAP's (Baselines.eap); select "
                             "from its head scores with search.selection_grid")
        return ScoreTable(cfg, self.edges)


class ScoreTable:
    """Precomputed edge scores as an engine for ``search.search_circuit``: the kit's breadth-first search
    and selection rule then run on EAP's estimates instead of exact path patching. Reading is free: the
    search's own cost is zero; what the scores cost is ``BaselineScores.cost``."""

    def __init__(self, cfg, edges: dict[Receiver, torch.Tensor]):
        self.cfg, self.edges, self.cost = cfg, edges, Cost()

    def to_logits(self, senders: Iterable[Head] | None = None) -> torch.Tensor:
        return self._read(LOGITS, senders)

    def to_head(self, receiver: Head, component: str, senders: Iterable[Head] | None = None) -> torch.Tensor:
        return self._read(head_input(receiver, component), senders)

    def prefetch(self, receivers, senders=None) -> None:
        """Nothing to prepare: every score is already there."""

    def _read(self, receiver: Receiver, senders) -> torch.Tensor:
        if receiver not in self.edges:
            raise ValueError(f"receiver {receiver} was not scored (not a candidate)")
        matrix = self.edges[receiver].clone()
        if senders is not None:
            keep = torch.zeros_like(matrix, dtype=torch.bool)
            for layer, head in senders:
                if layer < matrix.shape[0]:
                    keep[layer, head] = True
            matrix[~keep] = math.nan
        return matrix


def top_heads(scores: torch.Tensor, k: int) -> list[Head]:
    """The ``k`` heads of largest |score| (NaN: never), largest first: a head that hurts the behaviour
    when corrupted matters as much as one that helps (as in ``search.select_heads``)."""
    k = validate.integer("k (heads to keep)", k, at_least=0)
    size = validate.matrix("scores", scores).detach().double().cpu().abs()
    scored = [Head(l, h) for l in range(size.shape[0]) for h in range(size.shape[1]) if not size[l, h].isnan()]
    return sorted(scored, key=lambda head: (-float(size[head]), head))[:k]


class Baselines(PatchingBase):
    """Activation patching, EAP and EAP-IG on one set of prompts, sharing one set-up.

    Set-up (``setup_cost``), as the path patchers': one clean and one corrupted full pass, keeping each
    layer's clean residual and both runs' z, cut to the positions up to the last prediction position
    (attention is causal: later positions never reach the metric). Build it with ``from_task``.
    ``chunk_size`` / ``memory_mb``: heads stacked in one activation-patching pass, as ``PathPatcher``'s.
    """

    def __init__(self, model, clean_tokens, corrupted_tokens, end_pos, metric: Metric,
                 chunk_size: int | None = None, memory_mb: float | None = None):
        super().__init__(model, clean_tokens, corrupted_tokens, end_pos, metric)
        if chunk_size is not None:
            chunk_size = validate.integer("chunk_size (heads per pass)", chunk_size, at_least=1)
        if memory_mb is None:
            memory_mb = 64 if self.device.type == "cpu" else 512
        memory_mb = validate.number("memory_mb", memory_mb, above=0)
        with timed(self.cost):
            clean_resid, clean_z, clean_final, _ = cache_run(model, self.clean_tokens)
            corrupted_resid, corrupted_z, corrupted_final, _ = cache_run(model, self.corrupted_tokens)
            for _ in range(2):
                self.cost.add_pass(self.cfg, self.n_prompts, self.seq_len, self.cfg.n_layers, unembed=True)
            self._set_baselines(float(self._ld(clean_final, 1)), float(self._ld(corrupted_final, 1)))
            everyone = torch.arange(self.n_prompts, device=self.device)
            self.view = make_view(everyone, self.end_pos, (clean_resid, clean_z, corrupted_z),
                                  block_kwargs(model, self.seq_len))
            self._corrupted_input = corrupted_resid[0][:, :self.view.positions]  # EAP-IG's far end
            self._grad_kwargs = _saveable(self.view.block_kwargs)
        dtype = next(model.parameters()).dtype
        self.chunk_size = chunk_size or auto_chunk_size(self.cfg, self.view.positions, self.n_prompts,
                                                        memory_mb, dtype)
        self.setup_cost = self.cost.copy()

    @property
    def gap(self) -> float:
        """``ld_clean - ld_corrupted``: what every score is divided by (``PatchingBase.normalise``)."""
        return self.ld_clean - self.ld_corrupted

    # ---- activation patching -------------------------------------------------------------------------

    def activation_patching(self, candidates: Iterable[Head] | None = None) -> BaselineScores:
        """Each candidate head's z [n, T, d_head] set to its corrupted value at every position in an
        otherwise clean run (later heads and MLPs recomputed): ``normalise`` of the patched metric.

        Heads of one layer are stacked, ``chunk_size`` copies of the prompts per pass, each copy patching
        one head; a pass starts at that layer from the cached clean residual (earlier layers are unchanged)
        and unembeds the prediction positions only. A head outside ``candidates`` runs nothing.
        """
        before, view, n = self.cost.copy(), self.view, self.n_prompts
        heads = self._senders(candidates, self.cfg.n_layers)
        scores: dict[Head, float] = {}
        with timed(self.cost):
            for chunk in sender_chunks(heads, self.chunk_size):
                layer = chunk[0].layer
                resid = run_blocks(self.model, view.resid[layer].repeat(len(chunk), 1, 1), layer,
                                   [(hook_name(layer, "z"), self._patch_z(chunk))], kwargs=view.block_kwargs)
                self.cost.add_pass(self.cfg, len(chunk) * n, view.positions, self.cfg.n_layers - layer, unembed=True)
                for head, value in zip(chunk, self.normalise(self._ld(resid, len(chunk))).tolist()):
                    scores[head] = value
                    self._count_head(head)
        return BaselineScores("activation patching", self._matrix(self.cfg.n_layers, scores), {},
                              self.setup_cost + (self.cost - before))

    def _patch_z(self, chunk: list[Head]):
        """z hook for ``chunk``'s layer: block b of the stacked rows gets head ``chunk[b]``'s corrupted z."""
        n, corrupted = self.n_prompts, self.view.corrupted_z[chunk[0].layer]

        def hook(z, hook):  # noqa: ARG001
            z = z.clone()
            for b, (_, head) in enumerate(chunk):
                z[b * n:(b + 1) * n, :, head] = corrupted[:, :, head].to(z.device)
            return z
        return hook

    def _count_head(self, head: Head) -> None:
        """One exact head score; the least work any exact method needs for it: its layer to the end over
        the positions that reach the metric, and one unembedding per prompt."""
        self.cost.sender_evaluations += 1
        self.cost.flops_lower_bound += (self._needed_positions * (self.cfg.n_layers - head.layer) * self._layer_flops
                                        + self.n_prompts * unembed_flops(self.cfg))

    # ---- EAP and EAP-IG -------------------------------------------------------------------------------

    def eap(self, candidates: Iterable[Head] | None = None) -> BaselineScores:
        """Edge attribution patching: every score below is a first-order Taylor estimate at the clean run,
        divided by ``gap``. With Δz = z_corrupted - z_clean [n, T, n_heads, d_head] per layer and a sender
        (l, h)'s output difference Δout = Δz[..., h, :] @ W_O[l, h] [n, T, d_model] (what it adds to the
        residual stream), summed over prompts and positions (M, the metric's mean, carries the 1/n):

        - node (l, h): Δz[..., h, :] · ∂M/∂z[..., h, :] — estimates ``activation_patching``;
        - edge (l, h) → receiver (l', h') q, k or v: Δout · ∂M/∂x, x [n, T, d_model] the receiver's own copy
          of the residual stream *before* its layer norm (``hook_{q,k,v}_input`` with the bridge's
          ``split_qkv_input``), so the layer norm is inside the gradient and Δout lands where the sender
          adds it. Under grouped-query attention k and v inputs are per key/value group
          (``patching.base.input_head``): an edge into (l', h') k is into its group, as in path
          patching; senders stay per query head. These edges are direct: path patching's sender→receiver
          path also runs through the MLPs in between, which would need one backward per receiver; in a
          model without MLPs the two agree to first order;
        - edge (l, h) → logits: Δout · ∂M/∂a[l], a [n, T, d_model] layer l's attention output (where Δout
          enters the stream), taken with every head's z frozen, i.e. through the MLPs of layers l.. and the
          final norm only — path patching's ``to_logits`` path (heads frozen, MLPs recomputed), so this
          edge is its first-order estimate.

        Passes: one forward of 2n rows (the clean prompts twice: live, and with every z frozen for the
        logits edges) from the lowest candidate layer's cached residual, and one backward down to that
        layer. Heads outside ``candidates`` are not scored (NaN) and receive no gradient hooks.
        """
        return self._attribution(1, candidates, "EAP")

    def eap_ig(self, steps: int = 5, candidates: Iterable[Head] | None = None) -> BaselineScores:
        """EAP-IG: ``eap``'s scores with each gradient averaged over ``steps`` inputs on the line from the
        clean to the corrupted input embeddings (the residual entering block 0, [n, T, d_model]), at
        α = 0, 1/steps, ..., (steps-1)/steps of the way (Hanna et al.'s points, counted from the clean end),
        a Riemann sum of the path integral that makes the estimate exact for the whole input; the
        differences Δz, Δout stay those between the two runs. ``steps=1`` is ``eap``. A point off the clean
        run starts at block 0: one forward and one backward per step."""
        steps = validate.integer("steps", steps, at_least=1)
        return self._attribution(steps, candidates, "EAP" if steps == 1 else f"EAP-IG ({steps} steps)")

    def _attribution(self, steps: int, candidates, label: str) -> BaselineScores:
        """Node and edge matrices (NaN outside the candidates) from the gradients averaged over ``steps``."""
        cfg, before = self.cfg, self.cost.copy()
        by_layer: dict[int, list[int]] = {}
        for layer, head in self._senders(candidates, cfg.n_layers):
            by_layer.setdefault(layer, []).append(head)
        nodes = torch.full((cfg.n_layers, cfg.n_heads), math.nan)
        edges = {LOGITS: nodes.clone()}
        edges.update({head_input((layer, h), c): torch.full((layer, cfg.n_heads), math.nan)
                      for layer, hs in by_layer.items() for h in hs for c in HEAD_INPUTS})
        with timed(self.cost):
            if by_layer:
                grads = self._mean_gradients(steps, sorted(by_layer))
                for layer, hs in sorted(by_layer.items()):
                    self._score_senders(layer, hs, by_layer, grads, nodes, edges)
        return BaselineScores(label, nodes, edges, self.setup_cost + (self.cost - before))

    def _mean_gradients(self, steps: int, layers: list[int]) -> dict[tuple[str, int], torch.Tensor]:
        """∂M/∂(each leaf) averaged over the ``steps`` points, keyed (kind, layer): "z" [n, T, H, d_head] and
        "attn_out" [n, T, d_model] (heads frozen) at every scored layer; "q", "k", "v" [n, T, heads,
        d_model] (k, v: the key/value heads) at every scored layer above the lowest (a receiver needs a
        sender below it)."""
        total: dict[tuple[str, int], torch.Tensor] = {}
        with split_qkv_inputs(self.model):
            for step in range(steps):
                for key, grad in self._gradient_pass(step / steps, layers).items():
                    total[key] = total[key] + grad if key in total else grad
        return {key: grad / steps for key, grad in total.items()}

    def _gradient_pass(self, alpha: float, layers: list[int]) -> dict[tuple[str, int], torch.Tensor]:
        """One forward and one backward at the input ``clean + alpha·(corrupted - clean)`` (block 0's).

        The rows are the n prompts twice: rows [:n] live, rows [n:] with every head's z detached (frozen),
        so M summed over both blocks has, at rows [n:], the gradient through MLPs and norms only. Gradients
        are read at zero-valued leaves added in the hooks (the bridge hands a forward hook a reshaped view,
        on which ``retain_grad`` sees nothing); ``autograd.grad`` runs the backward only down to the lowest
        leaf and leaves every parameter's ``.grad`` untouched.
        """
        model, view, n, cfg = self.model, self.view, self.n_prompts, self.cfg
        start = 0 if alpha else layers[0]
        x = view.resid[start]
        if alpha:
            x = x + alpha * (self._corrupted_input - x)
        receivers = [layer for layer in layers if layer > layers[0]]
        leaves: dict[tuple[str, int], torch.Tensor] = {}
        entering: dict[int, torch.Tensor] = {}

        def leaf(key, like):
            leaves[key] = torch.zeros_like(like, requires_grad=True)
            return leaves[key]

        def z_hook(layer):
            def hook(z, hook):  # noqa: ARG001
                live = z[:n] + leaf(("z", layer), z[:n]) if layer in layers else z[:n]
                return torch.cat([live, z[n:].detach()])
            return hook

        def attn_out_hook(layer):
            def hook(a, hook):  # noqa: ARG001
                return torch.cat([a[:n], a[n:] + leaf(("attn_out", layer), a[n:])])
            return hook

        def entering_hook(layer):
            def hook(resid, hook):  # noqa: ARG001
                entering[layer] = resid
            return hook

        def input_hook(layer, component):
            def hook(x, hook):  # noqa: ARG001
                if not torch.equal(x[:, :, 0], entering[layer]):
                    raise NotImplementedError(f"this model's hook_{component}_input is not the residual stream "
                                              "before the layer norm; EAP's edges assume it is")
                return torch.cat([x[:n] + leaf((component, layer), x[:n]), x[n:]])
            return hook

        hooks = [(hook_name(l, "z"), z_hook(l)) for l in range(start, cfg.n_layers)]
        # The attention output, not hook_resid_mid: on the bridge that hook is the MLP branch's own copy
        # of the stream (what is added there never reaches the residual), so its gradient misses the
        # direct path.
        hooks += [(hook_name(l, "attn_out"), attn_out_hook(l)) for l in layers]
        for layer in receivers:
            hooks.append((hook_name(layer, "resid_pre"), entering_hook(layer)))
            hooks += [(hook_name(layer, f"{c}_input"), input_hook(layer, c)) for c in HEAD_INPUTS]
        with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
            resid = x.repeat(2, 1, 1)
            for layer in range(start, cfg.n_layers):
                out = model.blocks[layer](resid, **self._grad_kwargs)
                resid = out[0] if isinstance(out, tuple) else out
            picked = resid[torch.arange(2 * n, device=resid.device), view.end.repeat(2)]
            logits = model.unembed(model.ln_final(picked[:, None]))[:, 0]
            value = self.metric(logits.reshape(2, n, -1)).float().mean(-1).sum()
            grads = torch.autograd.grad(value, list(leaves.values()))
        self.cost.add_pass(cfg, 2 * n, view.positions, cfg.n_layers - start, unembed=True)
        self.cost.flops += self._backward_flops(2 * n, layers[0])
        return {key: grad.detach() for key, grad in zip(leaves, grads)}

    def _backward_flops(self, rows: int, lowest: int) -> float:
        """FLOPs of the backward from M down to the z of layer ``lowest``, counted as executed: the weights
        take no gradient (``devices.prepare_for_patching``), so every weight matmul runs once more, for its
        input's gradient, and the two attention products, both of whose operands are activations, twice
        (4·T·H·d_head more FLOPs per token); not the training rule of thumb (2x, weight gradients too).
        So: the unembedding at one position per row, every layer above ``lowest`` once plus its attention
        products again, and at ``lowest`` its MLP and W_O only (the leaf is its z)."""
        cfg, T = self.cfg, self.view.positions
        above = cfg.n_layers - 1 - lowest
        per_token = (above * (layer_flops_per_token(cfg, T) + 4 * T * cfg.n_heads * cfg.d_head)
                     + layer_flops_per_token(cfg, T) - qkv_flops_per_token(cfg, T))
        return rows * (T * per_token + unembed_flops(cfg))

    def _score_senders(self, layer: int, heads: list[int], by_layer: dict[int, list[int]], grads,
                       nodes: torch.Tensor, edges: dict[Receiver, torch.Tensor]) -> None:
        """The dot products of the ``eap`` docstring for the senders ``heads`` of ``layer``, divided by
        ``gap`` and written into ``nodes`` and ``edges``; their matmuls (Δout, and Δout against each
        receiver layer's input gradients) are charged as FLOPs too."""
        cfg, view, idx = self.cfg, self.view, torch.tensor(heads, device=self.device)
        dz = (view.corrupted_z[layer] - view.clean_z[layer])[:, :, idx]  # [n, T, S, d_head]
        W_O = self.model.blocks[layer].attn.W_O[idx].to(dz.device)  # [S, d_head, d_model]
        d_out = torch.einsum("ntse,sed->sntd", dz, W_O)  # [S, n, T, d_model]
        node = (dz * grads[("z", layer)][:, :, idx]).sum((0, 1, 3))
        to_logits = torch.einsum("sntd,ntd->s", d_out, grads[("attn_out", layer)])
        nodes[layer, heads] = node.cpu().float() / self.gap
        edges[LOGITS][layer, heads] = to_logits.cpu().float() / self.gap
        self.cost.flops += 2 * d_out.numel() * (cfg.d_head + 1)
        for receiver_layer, receivers in by_layer.items():
            if receiver_layer <= layer:
                continue
            for c in HEAD_INPUTS:
                slices = sorted({input_head(cfg, r, c) for r in receivers})  # k, v: one per key/value group
                values = torch.einsum("sntd,ntrd->rs", d_out, grads[(c, receiver_layer)][:, :, slices])
                self.cost.flops += 2 * d_out.numel() * len(slices)
                values = values.cpu().float() / self.gap
                for r in receivers:
                    column = slices.index(input_head(cfg, r, c))
                    edges[head_input((receiver_layer, r), c)][layer, heads] = values[column]


def _saveable(value):
    """A copy of ``value`` (tensors, in tuples and dicts) that autograd may save for a backward: tensors
    made under ``inference_mode``, as every cached block input is, cannot be (rotary cos/sin would be)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_saveable(v) for v in value)
    if isinstance(value, dict):
        return {key: _saveable(v) for key, v in value.items()}
    return value


@contextmanager
def split_qkv_inputs(model):
    """The bridge's per-head q/k/v input hooks switched on for the ``with`` body, then put back."""
    was = bool(getattr(model.cfg, "use_split_qkv_input", False))
    model.set_use_split_qkv_input(True)
    try:
        yield model
    finally:
        model.set_use_split_qkv_input(was)
