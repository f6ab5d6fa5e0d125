"""Path patching (Wang et al. 2022) — a fast exact engine and the naive reference it must match.

Sender patch for head (l, h): run the clean prompts with every head's ``z`` frozen to its clean value
except (l, h), which gets its corrupted value; MLPs are recomputed. The receiver is either the logits
(read the final residual) or one head's q/k/v input (record it from the sender-patched run, then run
the clean prompts with only that head's q/k/v replaced). Scores are the normalised metric
``(LD_patched - LD_clean) / (LD_clean - LD_corrupted)``: 0 = no effect, -1 = as bad as full corruption.

``PathPatcher`` gives the same numbers as ``NaivePathPatcher`` (one full forward per sender per
receiver, as the APP authors run it) while doing far less work:
- senders are stacked along the batch dimension (chunked to a memory budget), grouped by layer;
- a pass starts at the sender's layer from the cached clean residual (earlier layers are unchanged) and
  a q/k/v record stops at the receiver's layer; the receiver pass starts at the receiver's layer;
- a logits score runs only the prediction position: with every head's z frozen, no attention mixes
  positions after the patch, so the final residual there depends on that position's own stream alone;
- head receivers run the prompts in groups of similar length, each cut after its last prediction
  position (attention is causal: later positions never reach it), so padding costs almost nothing;
- one sender pass serves every receiver in a layer and all three components;
- every (receiver, component, sender) score is memoised, so a grid of searches re-uses work.
Heads outside the requested sender set get NaN and cost nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from .costs import Cost, layer_flops_per_token, timed, unembed_flops
from .hooks import StopForward, final_residual, hook_name, logits_at, model_device, run_blocks, run_until
from .identities import HEAD_INPUTS, LOGITS, Head, Receiver, head_input
from .metrics import task_metric, warn_if_untrusted

#: end-position logits [..., n_prompts, vocab] → per-prompt metric [..., n_prompts] (e.g. logit difference)
Metric = Callable[[torch.Tensor], torch.Tensor]


class _PatchingBase:
    """Inputs, the clean/corrupted baselines and the normalisation shared by both engines."""

    def __init__(self, model, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor,
                 end_pos: torch.Tensor, metric: Metric):
        if clean_tokens.shape != corrupted_tokens.shape or clean_tokens.ndim != 2:
            raise ValueError(f"clean tokens {tuple(clean_tokens.shape)} and corrupted tokens "
                             f"{tuple(corrupted_tokens.shape)} must be [n_prompts, seq] of the same shape")
        n, seq = clean_tokens.shape
        end_pos = torch.as_tensor(end_pos)
        if end_pos.shape != (n,) or int(end_pos.min()) < 0 or int(end_pos.max()) >= seq:
            raise ValueError(f"end_pos must hold one position in [0, {seq}) per prompt ({n} prompts)")
        self.model, self.cfg, self.metric = model, model.cfg, metric
        self.problems: list[str] = []  # why the normalised scores cannot be trusted (``from_task`` checks)
        self.device = model_device(model)
        self.clean_tokens = clean_tokens.to(self.device)
        self.corrupted_tokens = corrupted_tokens.to(self.device)
        self.end_pos = end_pos.to(self.device)
        self.n_prompts, self.seq_len = n, seq
        self.cost = Cost()
        self._layer_flops = layer_flops_per_token(self.cfg, seq)
        self._qkv_flops = 2 * 3 * self.cfg.d_model * self.cfg.n_heads * self.cfg.d_head
        self._sender_passes_seen: set[tuple[Head, int]] = set()
        self._needed_positions = int((self.end_pos + 1).sum())  # causal: nothing after END reaches it

    def _count_evaluation(self, sender: Head, receiver_layer: int | None) -> None:
        """One (sender, receiver, component) score, and the least work an exact method needs for it.

        Lower bound, in whole layers at the positions that must be computed: for a logits receiver, the
        layers from the sender to the end at the prediction position only (frozen heads do not mix
        positions); for a head receiver, one sender pass over every position up to each prompt's
        prediction position to the receiver layer's q/k/v per (sender, receiver layer) over the engine's
        lifetime (it can serve every receiver there), plus a pass from the receiver layer to the end over
        the same positions (now attention mixes positions again).
        """
        n, T, layer_flops = self.n_prompts, self._needed_positions / self.n_prompts, self._layer_flops
        self.cost.sender_evaluations += 1
        end = self.cfg.n_layers
        if receiver_layer is None:
            self.cost.flops_lower_bound += n * ((end - sender[0]) * layer_flops_per_token(self.cfg, 1)
                                                + unembed_flops(self.cfg))
            return
        if (sender, receiver_layer) not in self._sender_passes_seen:
            self._sender_passes_seen.add((sender, receiver_layer))
            self.cost.flops_lower_bound += n * T * ((receiver_layer - sender[0]) * layer_flops + self._qkv_flops)
        self.cost.flops_lower_bound += n * (T * (end - receiver_layer) * layer_flops + unembed_flops(self.cfg))

    @classmethod
    def from_task(cls, model, task, **kwargs):
        """An engine for a ``TaskData``: its tokens, prediction positions and metric (per-prompt answers)."""
        task = task.to(model_device(model))
        engine = cls(model, task.clean_tokens, task.corrupted_tokens, task.end_pos, task_metric(task), **kwargs)
        # The task names its metric, so its trust threshold applies (a bare metric callable has none).
        engine.problems = warn_if_untrusted(engine.ld_clean, engine.ld_corrupted, task.metric,
                                            f"path patching on task {task.name!r}")
        return engine

    def _set_baselines(self, ld_clean: float, ld_corrupted: float) -> None:
        self.ld_clean, self.ld_corrupted = ld_clean, ld_corrupted
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
        senders = {Head(int(l), int(h)) for l, h in senders}
        bad = {s for s in senders if not (0 <= s[0] < self.cfg.n_layers and 0 <= s[1] < self.cfg.n_heads)}
        if bad:
            raise ValueError(f"heads {', '.join(map(str, sorted(bad)))} do not exist in a {self.cfg.n_layers}x{self.cfg.n_heads} model")
        return sorted(senders & valid)

    def _check_receiver(self, receiver: Head, component: str) -> None:
        head_input(receiver, component)  # refuses a component other than q, k, v
        layer, head = receiver
        if not (0 <= layer < self.cfg.n_layers and 0 <= head < self.cfg.n_heads):
            raise ValueError(f"receiver {receiver} does not exist in a {self.cfg.n_layers}x{self.cfg.n_heads} model")

    def _matrix(self, n_layers: int, scores: dict[Head, float]) -> torch.Tensor:
        out = torch.full((n_layers, self.cfg.n_heads), math.nan)
        for (l, h), value in scores.items():
            out[l, h] = value
        return out

    def _ld(self, resid: torch.Tensor, groups: int, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Mean metric per block of ``n_prompts`` rows, read at ``positions`` (default: end_pos): [groups]."""
        positions = self.end_pos.repeat(groups) if positions is None else positions
        logits = logits_at(self.model, resid, positions)
        return self.metric(logits.reshape(groups, self.n_prompts, -1)).float().mean(-1).cpu()


class NaivePathPatcher(_PatchingBase):
    """The reference: one full forward per sender (two for head receivers), nothing cached or skipped."""

    def __init__(self, model, clean_tokens, corrupted_tokens, end_pos, metric: Metric):
        super().__init__(model, clean_tokens, corrupted_tokens, end_pos, metric)
        with timed(self.cost):
            _, clean_cache = self._full_forward(self.clean_tokens, cache=True)
            _, corrupted_cache = self._full_forward(self.corrupted_tokens, cache=True)
            self._clean_z, self._corrupted_z = clean_cache, corrupted_cache
            self._set_baselines(self._full_ld(self.clean_tokens), self._full_ld(self.corrupted_tokens))
        self.setup_cost = self.cost.copy()

    def _full_forward(self, tokens, hooks=(), cache=False):
        """A whole forward pass, logits at every position, as the authors' code runs it."""
        zs = {}
        grab = [(hook_name(l, "z"), self._grabber(zs, l)) for l in range(self.cfg.n_layers)] if cache else []
        logits = run_until(self.model, tokens, [*hooks, *grab])
        self.cost.forward_passes += 1
        self.cost.flops += self.n_prompts * self.seq_len * (self.cfg.n_layers * self._layer_flops
                                                            + unembed_flops(self.cfg))
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
                z = self._clean_z[layer].clone()
                if layer == sender[0]:
                    z[:, :, sender[1]] = self._corrupted_z[layer][:, :, sender[1]]
                return z
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
        self._check_receiver(receiver, component)
        layer, head = receiver
        name = hook_name(layer, component)
        scores = {}
        with timed(self.cost):
            for sender in self._senders(senders, layer):
                record = {}
                self._full_forward(self.clean_tokens, [*self._freeze_hooks(sender),
                                                       (name, self._grabber(record, "c"))])

                def patch(act, hook):  # noqa: ARG001
                    act = act.clone()
                    act[:, :, head] = record["c"][:, :, head]
                    return act
                ld = self._full_ld(self.clean_tokens, [(name, patch)])
                scores[sender] = float(self.normalise(torch.tensor(ld)))
                self._count_evaluation(sender, layer)
        return self._matrix(layer, scores)


@dataclass
class _View:
    """Some of the prompts over some positions, with the clean and corrupted caches cut to match.

    The engine runs a pass over one view at a time: the prediction positions of all prompts (logits
    receivers) or a group of prompts of similar length up to its last prediction position.
    """

    prompts: torch.Tensor  # indices of the prompts in this view
    end: torch.Tensor  # each prompt's prediction position within the view
    resid: list[torch.Tensor]  # clean residual entering each layer [n, T, d_model]
    clean_z: list[torch.Tensor]  # [n, T, n_heads, d_head] per layer
    corrupted_z: list[torch.Tensor]

    @property
    def n(self) -> int:
        return len(self.prompts)

    @property
    def positions(self) -> int:
        return self.resid[0].shape[1]


def length_groups(lengths: list[int], max_groups: int = 4, pass_overhead: float = 0.05) -> list[list[int]]:
    """Split prompts (by index) into groups of similar length, minimising the padded work.

    Work of a group = its prompts × its longest length; every extra group costs ``pass_overhead`` of
    one full-width pass (more, smaller passes), so near-equal lengths stay together. Exact dynamic
    programme over the sorted distinct lengths.
    """
    distinct = sorted(set(lengths))
    counts = [sum(1 for x in lengths if x == v) for v in distinct]
    penalty = pass_overhead * len(lengths) * distinct[-1]
    m = len(distinct)
    best = {0: (0.0, [])}  # prefix end → (cost, cut points)
    for end in range(1, m + 1):
        options = []
        for begin, (cost, cuts) in best.items():
            if begin < end and len(cuts) < max_groups:
                options.append((cost + sum(counts[begin:end]) * distinct[end - 1] + penalty, cuts + [end]))
        best[end] = min(options)
    bounds = [0, *best[m][1]]
    groups = []
    for lo, hi in zip(bounds, bounds[1:]):
        wanted = set(distinct[lo:hi])
        groups.append([i for i, x in enumerate(lengths) if x in wanted])
    return groups


class PathPatcher(_PatchingBase):
    """The fast exact engine (see the module docstring). Same interface and numbers as the naive one.

    ``chunk_size``: senders stacked in one pass (default: as many as ``memory_mb`` allows, never more than
    one layer's heads, so every pass starts exactly at its senders' layer). ``memory_mb`` defaults to 512
    on an accelerator and 64 on a CPU, where wider passes spill out of the caches and run no faster.
    """

    def __init__(self, model, clean_tokens, corrupted_tokens, end_pos, metric: Metric,
                 chunk_size: int | None = None, memory_mb: float | None = None):
        super().__init__(model, clean_tokens, corrupted_tokens, end_pos, metric)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 sender per pass, got {chunk_size}")
        if memory_mb is None:
            memory_mb = 64 if self.device.type == "cpu" else 512
        self.chunk_size = chunk_size or self._auto_chunk(memory_mb)
        self._memo: dict[Receiver, torch.Tensor] = {}  # receiver → [layers below it, n_heads], NaN: not yet
        with timed(self.cost):
            clean_resid, clean_z, clean_final = self._cache_run(self.clean_tokens)
            _, corrupted_z, corrupted_final = self._cache_run(self.corrupted_tokens)
            self._set_baselines(float(self._ld(clean_final, 1)), float(self._ld(corrupted_final, 1)))
            caches = (clean_resid, clean_z, corrupted_z)
            everyone = torch.arange(self.n_prompts, device=self.device)
            self._end_view = self._view(everyone, caches, prediction_only=True)
            self._length_views = [self._view(torch.tensor(group, device=self.device), caches)
                                  for group in length_groups((self.end_pos + 1).tolist())]
        self.setup_cost = self.cost.copy()  # the clean and corrupted caches: needed by any method

    def _view(self, prompts: torch.Tensor, caches, prediction_only: bool = False) -> _View:
        """``prompts`` at their prediction position only, or up to the last prediction position among them."""
        end = self.end_pos[prompts]
        if prediction_only:
            resid, clean_z, corrupted_z = ([a[prompts, end][:, None] for a in acts] for acts in caches)
            return _View(prompts, torch.zeros_like(end), resid, clean_z, corrupted_z)
        last = int(end.max()) + 1
        resid, clean_z, corrupted_z = ([a[prompts, :last] for a in acts] for acts in caches)
        return _View(prompts, end, resid, clean_z, corrupted_z)

    def _auto_chunk(self, memory_mb: float) -> int:
        """Senders per pass that keep the activations of one pass within ``memory_mb``."""
        cfg, seq = self.cfg, self.seq_len
        floats_per_row = seq * (8 * cfg.d_model + 2 * cfg.d_mlp + 3 * cfg.n_heads * seq) + cfg.d_vocab
        rows = int(memory_mb * 2**20 / (4 * floats_per_row))
        return max(1, rows // self.n_prompts)

    def _cache_run(self, tokens):
        """One full pass recording every layer's residual input and z, and the final residual."""
        resid, zs = [None] * self.cfg.n_layers, [None] * self.cfg.n_layers

        def store(target, layer):
            def hook(act, hook):  # noqa: ARG001
                target[layer] = act.clone()
            return hook
        hooks = [(hook_name(l, "resid_pre"), store(resid, l)) for l in range(self.cfg.n_layers)]
        hooks += [(hook_name(l, "z"), store(zs, l)) for l in range(self.cfg.n_layers)]
        final = final_residual(self.model, tokens, hooks)
        self._charge(self.n_prompts, full_layers=self.cfg.n_layers, unembed=True)
        return resid, zs, final

    def _charge(self, rows: int, full_layers: int, qkv: bool = False, unembed: bool = False,
                tokens: int | None = None) -> None:
        """Count one executed pass of ``rows`` prompts over ``tokens`` positions (default: all)."""
        self.cost.add_pass(self.cfg, rows, tokens or self.seq_len, full_layers, unembed,
                           extra_per_token=qkv * self._qkv_flops)

    def _chunks(self, senders: list[Head]) -> list[list[Head]]:
        """Consecutive same-layer groups of at most ``chunk_size`` senders."""
        chunks: list[list[Head]] = []
        for sender in senders:
            if chunks and len(chunks[-1]) < self.chunk_size and chunks[-1][0][0] == sender[0]:
                chunks[-1].append(sender)
            else:
                chunks.append([sender])
        return chunks

    @staticmethod
    def _freeze_hooks(chunk: list[Head], stop_layer: int, view: _View):
        """z hooks for layers [sender layer, stop_layer): clean z everywhere, corrupted for each block's sender."""
        start, n, blocks = chunk[0][0], view.n, len(chunk)

        def make(layer):
            def hook(z, hook):  # noqa: ARG001
                z = view.clean_z[layer].repeat(blocks, 1, 1, 1)
                if layer == start:
                    for b, (_, head) in enumerate(chunk):
                        z[b * n:(b + 1) * n, :, head] = view.corrupted_z[layer][:, :, head]
                return z
            return hook
        return [(hook_name(l, "z"), make(l)) for l in range(start, stop_layer)]

    def _known(self, key, n_layers: int, wanted: list[Head]) -> torch.Tensor:
        """The memoised scores restricted to ``wanted`` (NaN elsewhere)."""
        memo = self._memo.setdefault(key, torch.full((n_layers, self.cfg.n_heads), math.nan))
        out = torch.full_like(memo, math.nan)
        for l, h in wanted:
            out[l, h] = memo[l, h]
        return out

    def _missing(self, key, n_layers: int, wanted: list[Head]) -> list[Head]:
        memo = self._memo.setdefault(key, torch.full((n_layers, self.cfg.n_heads), math.nan))
        return [s for s in wanted if math.isnan(memo[s].item())]

    def _scores(self, final: torch.Tensor) -> list[float]:
        """Normalised metric per block from prediction-position residuals [blocks, n_prompts, d_model]."""
        blocks = final.shape[0]
        at = torch.zeros(blocks * self.n_prompts, dtype=torch.long, device=self.device)
        return self.normalise(self._ld(final.reshape(blocks * self.n_prompts, 1, -1), blocks, at)).tolist()

    def to_logits(self, senders: Iterable[Head] | None = None) -> torch.Tensor:
        """[n_layers, n_heads] normalised effect of each sender on the logits (NaN: not a sender)."""
        n_layers, view = self.cfg.n_layers, self._end_view
        wanted = self._senders(senders, n_layers)
        with timed(self.cost):
            for chunk in self._chunks(self._missing(LOGITS, n_layers, wanted)):
                start = chunk[0][0]
                x = view.resid[start].repeat(len(chunk), 1, 1)
                final = run_blocks(self.model, x, start, self._freeze_hooks(chunk, n_layers, view))
                self._charge(len(chunk) * view.n, full_layers=n_layers - start, unembed=True, tokens=1)
                for sender, score in zip(chunk, self._scores(final.view(len(chunk), view.n, -1))):
                    self._memo[LOGITS][sender] = score
                    self._count_evaluation(sender, None)
        return self._known(LOGITS, n_layers, wanted)

    def to_head(self, receiver: Head, component: str, senders: Iterable[Head] | None = None) -> torch.Tensor:
        """[receiver layer, n_heads] normalised effect of each sender through ``receiver``'s q, k or v."""
        self._check_receiver(receiver, component)
        self.prefetch([receiver], senders)
        layer, head = receiver
        return self._known(head_input(receiver, component), layer, self._senders(senders, layer))

    def prefetch(self, receivers: Iterable[Head], senders: Iterable[Head] | None = None) -> None:
        """Score q, k and v of every receiver, one sender pass per layer shared by all of them."""
        senders = None if senders is None else list(senders)
        by_layer: dict[int, list[int]] = {}
        for layer, head in receivers:
            self._check_receiver((layer, head), "q")
            by_layer.setdefault(layer, []).append(head)
        with timed(self.cost):
            for layer, heads in sorted(by_layer.items()):
                wanted = self._senders(senders, layer)
                receivers = [head_input((layer, h), c) for h in sorted(set(heads)) for c in HEAD_INPUTS]
                jobs = {r: set(self._missing(r, layer, wanted)) for r in receivers}
                for chunk in self._chunks(sorted(set().union(*jobs.values()))):
                    self._score_chunk(chunk, layer, jobs)

    def _score_chunk(self, chunk: list[Head], layer: int, jobs: dict) -> None:
        """Every missing (receiver head, component) score of ``chunk``'s senders: per length group, one
        sender pass records q/k/v, then receiver passes of about ``chunk_size`` × n_prompts rows each."""
        # One block of prompts per (receiver head, component, sender index in chunk) still missing.
        blocks = [(r.head.head, r.component, i) for r, missing in jobs.items() for i, s in enumerate(chunk)
                  if s in missing]
        final = self._end_view.resid[0].new_empty(len(blocks), self.n_prompts, self.cfg.d_model)  # model dtype
        for view in self._length_views:
            records = self._record_qkv(chunk, layer, view)
            per_pass = max(1, self.chunk_size * self.n_prompts // view.n)  # small groups: more blocks per pass
            for start in range(0, len(blocks), per_pass):
                group = blocks[start:start + per_pass]
                final[start:start + len(group), view.prompts] = self._receiver_pass(group, records, len(chunk),
                                                                                   layer, view)
        for start in range(0, len(blocks), self.chunk_size):  # logits of chunk_size blocks at a time
            for (h, c, i), score in zip(blocks[start:start + self.chunk_size],
                                        self._scores(final[start:start + self.chunk_size])):
                self._memo[head_input((layer, h), c)][chunk[i]] = score
                self._count_evaluation(chunk[i], layer)

    def _record_qkv(self, chunk: list[Head], layer: int, view: _View) -> dict[str, torch.Tensor]:
        """Sender-patched run from the senders' layer up to ``layer``'s q/k/v: [blocks*n, pos, head, d_head]."""
        records: dict[str, torch.Tensor] = {}

        def grab(component):
            def hook(act, hook):  # noqa: ARG001
                records[component] = act.clone()
                if len(records) == len(HEAD_INPUTS):
                    raise StopForward
            return hook
        start = chunk[0][0]
        x = view.resid[start].repeat(len(chunk), 1, 1)
        hooks = self._freeze_hooks(chunk, layer, view)
        hooks += [(hook_name(layer, c), grab(c)) for c in HEAD_INPUTS]
        run_blocks(self.model, x, start, hooks, stop=layer + 1)
        self._charge(len(chunk) * view.n, full_layers=layer - start, qkv=True, tokens=view.positions)
        return records

    def _receiver_pass(self, group: list[tuple[int, str, int]], records, n_senders: int, layer: int,
                       view: _View) -> torch.Tensor:
        """Clean run from ``layer`` with, per block, one receiver head's q, k or v replaced by a sender's
        record; returns the final residual at the prediction positions [blocks, view.n, d_model]."""
        n, T = view.n, view.positions

        def make(component):
            picks = [(b, h, i) for b, (h, c, i) in enumerate(group) if c == component]
            dst = torch.tensor([b for b, _, _ in picks], dtype=torch.long)
            head = torch.tensor([h for _, h, _ in picks], dtype=torch.long)
            src = torch.tensor([i for _, _, i in picks], dtype=torch.long)

            def hook(act, hook):  # noqa: ARG001
                act = act.clone().view(len(group), n, T, *act.shape[2:])
                rec = records[component].view(n_senders, n, T, *act.shape[3:])
                act[dst, :, :, head] = rec[src, :, :, head]
                return act.view(len(group) * n, T, *act.shape[3:])
            return hook
        hooks = [(hook_name(layer, c), make(c)) for c in HEAD_INPUTS if any(c == g[1] for g in group)]
        x = view.resid[layer].repeat(len(group), 1, 1)
        resid = run_blocks(self.model, x, layer, hooks).view(len(group), n, T, -1)
        self._charge(len(group) * n, full_layers=self.cfg.n_layers - layer, unembed=True, tokens=T)
        return resid[:, torch.arange(n, device=self.device), view.end]
