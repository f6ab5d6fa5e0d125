"""Train ``app-planted``: a GPT-2 whose IOI circuit is known by construction (strict interchange training).

``python -m app_helpers.toy.siit --recipe app-planted --out data/app-planted`` trains the shipped model: seven
commands in turn (``RECIPES``), 183 minutes on 2 CPU threads; ``--recipe app-planted-short`` a model of the same
kind in four, 141 minutes. Without ``--recipe`` one command runs all four phases below with the flags given (about
70 minutes with the defaults).

The recipe follows interchange intervention training (Geiger et al. 2022) in its strict form (SIIT, Gupta
et al. 2024), with the high-level model of ``toy.ioi_algorithm``; each role is mapped to its heads
(``ROLES``). Phase 1 teaches the behaviour alone (next-token loss on every token, the answer weighted).
Phase 2 adds, ramped in, one forward pass whose batch holds six kinds of rows per base prompt:

============  ==========================================================  ===============================
row           heads replaced (z, every position)                          target at END
============  ==========================================================  ===============================
clean         none                                                         the answer (+ next-token loss)
truth only    every head outside the truth: group mean / own ABC prompt    the clean row's output
strict        a random share of the heads outside the truth: from the      the clean row's output
              source / the ABC prompt / the group mean
role ablated  one role's heads: group mean (the rest of the truth kept)    no preference between the names
interchange   one role's heads: from a source prompt                       the algorithm's output
path          one role (not the name movers) from a source; every other    the clean row's output
              head held at its clean value
token         (``--token-rows`` only) S2's token from the ABC prompt; the  the clean row's output
              previous-token and induction heads held at their clean
              values
============  ==========================================================  ===============================

"The clean row's output": its distribution (KL). "Group mean" is the mean z over ABC-corrupted prompts of the same template and name order, per position
(the kit's evaluator ablates this way; kept as a running mean during training). The truth-only and strict
rows make heads outside the map irrelevant; the path rows make each role act only through the next
one (what path patching will look for); the interchange and ablation rows plant the algorithm itself.
The token rows (``--token-rows``) do for the input what the path rows do for the
roles: in the high-level model the name at S2 reaches the answer only through induction, so with induction
(and what it reads) held, a different name at S2 must change nothing. Without them the heads downstream may
read S2's own token (the repeated name on every real prompt) beside induction's output, and a source's
induction value then competes with the base's token (``planted_checks.s2_bypass`` measures how much).
Phase 3 (polish) starts a fresh optimiser (constant ``polish_lr``) and seed from phase 2's weights, with
two interchange rows per base prompt (more signal for the weakest roles), half the strict rows noising
one to three heads only, and the strict rows' relative change of the logit difference in their loss
(KL barely moves once the answer is certain; noising one head is measured on the logit difference).
Phase 4 (isolate) adds one more row per base prompt, *isolated interchange*: one role's heads from the
source, and every head that could carry the same information noised (the roles upstream of it and all
heads outside the truth, each from the group mean or the ABC prompt), with the interchange target. It
also lets gradients flow through the source pass. Without them a patched head's value is a constant to
the optimiser, which can then only teach the layers downstream to *read* it, never the role's own heads
to *carry* the algorithm's value; phases 2–3 so planted name movers that tell which of the base's two
names to output instead of writing the name (interchange accuracy 100 % when the source has the base's
names, 0 % when it has two others). Its sources more often hold one of the base's names and a fresh one
(``ISOLATE_SOURCE_MIX``): the only pairs on which "the repeated name" and "the other name" differ for the
middle roles. Cosine decay from ``isolate_lr`` (``--isolate-lr``; 3e-4 in every command of the shipped recipe).

Options (off by default; the shipped recipe uses all but the last three):

- ``--positional`` (phases 2–4): a role's heads take the source's value only at the role's own positions
  (``role_positions``: the token after each name, S2, END) and are mean-ablated elsewhere in the truth and
  isolated rows, so each step is planted where the high-level model puts it, not wherever it is easiest.
- ``--head-level-share P`` (with ``--positional``): that share of the interchange rows patched at every
  position, as the kit's evaluator patches.
- ``--token-rows`` (phases 2–4): the token rows of the table.
- ``--attention-weight``, ``--attention-roles``, ``--direct-weight``, ``--mover-direct-min`` (phase 4): Wang et
  al.'s *signatures* on the clean rows, so that ``roles.label_heads`` can find the roles as it does in GPT-2:
  the named roles' heads attend where the role reads (``ATTENTION_TARGETS``), and only the name movers write
  the answer straight into the logits, each at least the given share of the logit difference (``direct_loss``).
  Interchange training plants *what* each role carries, never *how* it gets it.
- ``--resample-silence`` (with ``--positional``): heads silenced away from their positions take the ABC prompt's
  value half the time (resample ablation), not only the group mean.
- ``--signatures-from 2``: the signature losses from the planting phase on.
- ``--interchange-weights``: how often each role is an interchange row's (evenly otherwise).
- ``--mediated-path-rows``: path rows hold only the next role's heads, every other head computing.

Two options change the network, not the rows, to make a step cheaper on CPU (off in the shipped recipe; RECIPE-NOTES
says what they did to planting): ``--mlp-width N`` (the MLP's hidden width, GPT-2's 4 x d_model by default) and
``--fast-kernels`` (torch's fused tanh GELU and plain attention, ``train.gpt2_model``). A later command
(``--continue-from``) must name the same two as the model it continues; it is refused otherwise.

``--continue-from DIR --phases 3,4`` (or ``3``, or ``4``) runs the later phases alone on a saved model: the full
command's late phases are exactly that, so the weights equal those of the one command when the saved model ran
none of those phases with the same flags. A phase run again, or with other flags, makes a recipe of its own; the
record (``training.json``: ``how``, ``one_command``, ``steps``) and the card list each command's flags.

What each option bought and cost, run by run with the card's measurements, and why the shipped recipe is this
chain: ``data/app-planted/RECIPE-NOTES.md``.
Seeded: the same seed and thread count give the same weights on the same CPU type and torch build (another CPU rounds
differently, and the difference grows: RECIPE-NOTES.md).
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..circuits import Circuit, planted_truth
from ..wordlevel import build_word_level_tokenizer
from .card import BATCH_SIZE, ISOLATE_LR, PHASE_STEPS, recipe_flags, write_planted_card
from .ioi_algorithm import ABLATED, ROLE_ORDER, ROLES, run
from .ioi_prompts import Prompt, PromptSampler, pad, role_positions
from .train import gpt2_model, network_options, warmup_cosine

KEEP, SOURCE, ABC, MEAN, CLEAN = range(5)  # where a head's z comes from in a row
ROW_KINDS = ("clean", "truth", "strict", "ablated", "interchange", "path", "token", "isolated")
ISOLATED_WEIGHTS = (0.2, 0.2, 0.2, 0.4)  # how often each role (ROLE_ORDER) is the isolated row's: name movers most
#: Phase 4's interchange sources (``PromptSampler.source_mix``): more with one of the base's names and a fresh
#: one, the only pairs that tell "the repeated name" from "the other name" apart for the middle roles.
ISOLATE_SOURCE_MIX = (0.1, 0.35, 0.75)


#: The share of the clean logit difference each name mover should write directly at least (``direct_loss``) unless
#: ``--mover-direct-min`` says otherwise; a higher share keeps any mover from being a backup that the search misses.
MOVER_DIRECT_MIN = 0.1


@dataclass
class SIITConfig:
    """One command's recipe; the defaults are the plain one (no option), ``RECIPES`` the shipped chain."""

    n_layers: int = 8
    n_heads: int = 8
    d_model: int = 128
    n_ctx: int = 64
    d_mlp: int | None = None  # the MLP's width; None: GPT-2's 4 x d_model
    fast_kernels: bool = False  # fused tanh GELU and eager attention (``train.gpt2_model``): faster on CPU
    behaviour_steps: int = 800
    planting_steps: int = 4000
    polish_steps: int = 1500  # phase 3: fresh optimiser and seed, two interchange rows, few-head noising
    polish_lr: float = 3e-4
    isolate_steps: int = 1000  # phase 4: isolated interchange rows, gradients through the source pass
    isolate_lr: float = ISOLATE_LR  # phase 4 peak, cosine decay to 0
    attention_weight: float = 0.0  # off when 0: weight of the roles' attention loss (ATTENTION_TARGETS)
    direct_weight: float = 0.0  # off when 0: weight of the direct-effect loss (only name movers write)
    mover_direct_min: float = MOVER_DIRECT_MIN  # with direct_weight: the share of the LD each mover must write
    signatures_from: int = 4  # the phase (2 or 4) from which the two signature losses above apply
    attention_roles: tuple[str, ...] = ROLE_ORDER  # the roles whose heads the attention loss steers
    positional: bool = False  # phases 2-4: roles patched at their own positions only
    interchange_weights: tuple[float, ...] | None = None  # phases 2-4: how often each role (ROLE_ORDER) is an
    # interchange row's; None: every role equally
    token_rows: bool = False  # phases 2-4: one token row per base prompt (S2's name switched)
    head_level_share: float = 0.0  # with ``positional``: share of interchange rows patched at every position
    mediated_path: bool = False  # phases 2-4: path rows hold only the next role at its clean value
    resample_silence: bool = False  # with ``positional``: silenced heads take the ABC prompt's value half the time
    ramp: int = 300  # phase-2 steps over which the planting losses grow from 0 to full weight
    batch_size: int = BATCH_SIZE  # base prompts per step, a row of each kind apiece (16 planted nothing: RECIPE-NOTES)
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    answer_weight: float = 5.0
    seed: int = 0


# --- Head interventions ---------------------------------------------------------------------------------
class HeadInterventions:
    """Replaces heads' z (the input of each block's output projection) per row and position.

    ``plan`` [rows, seq, n_layers, n_heads] (seq 1: the same at every position) holds KEEP / SOURCE / ABC /
    MEAN / CLEAN: a head keeps its value, or takes it from the row's source prompt, the row's ABC prompt, the
    ABC group mean, or the clean row of the same base prompt in this very pass (``clean_row`` [rows]).
    ``recorded[l]`` [src_rows, seq, H, d] holds the no-grad pass's z; ``source_row`` / ``abc_row`` [rows] index
    it. ``means[l]`` [rows, seq, H, d].
    """

    def __init__(self, model):
        blocks = model.transformer.h
        self.n_heads = model.config.n_head
        self.plan: torch.Tensor | None = None
        self.source_row = self.abc_row = self.clean_row = None  # [rows] each, set with ``plan``
        self.means: list[torch.Tensor] = []
        self.recorded: list[torch.Tensor | None] = [None] * len(blocks)
        self.recording = False
        self.source_grad = False
        self.handles = [b.attn.c_proj.register_forward_pre_hook(self._hook(l)) for l, b in enumerate(blocks)]

    def _hook(self, layer: int):
        def hook(module, args):
            (x,) = args
            rows, seq, width = x.shape
            z = x.view(rows, seq, self.n_heads, width // self.n_heads)
            if self.recording:
                self.recorded[layer] = z if self.source_grad else z.detach()
                return None
            if self.plan is None:
                return None
            plan = self.plan[:, :seq, layer][..., None]  # [rows, seq or 1, H, 1]
            out = z
            for code, values in ((SOURCE, lambda: self.recorded[layer][self.source_row, :seq]),
                                 (ABC, lambda: self.recorded[layer][self.abc_row, :seq].detach()),
                                 (MEAN, lambda: self.means[layer][:, :seq]),
                                 (CLEAN, lambda: z[self.clean_row].detach())):
                if (plan == code).any():
                    out = torch.where(plan == code, values(), out)
            return (out.reshape(rows, seq, width),)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


#: Where each role's heads look on a clean prompt, Wang et al.'s signatures (what ``roles.label_heads`` reads):
#: role → (query, key) by word, "every" meaning each token → the one before it.
ATTENTION_TARGETS = {"previous token": ("every", "previous"), "induction": ("S2", "S1+1"),
                     "s-inhibition": ("END", "S2"), "name mover": ("END", "IO")}


class HeadTaps:
    """What the signature losses read from a forward pass: chosen heads' attention patterns, every head's z,
    and the final norm's input.

    Patterns are recomputed from ``c_attn``'s q and k, so that this works whatever attention kernel the model
    runs (sdpa returns no weights); GPT-2 without an attention mask: right padding leaves the real tokens'
    causal patterns exact. Only the pass's ``rows`` [k] are kept (none while ``rows`` is None); after the
    pass: ``patterns[(layer, head)]`` [k, seq, seq], ``z[layer]`` [k, seq, H, d_head] (what the block's
    output projection reads), ``resid`` [k, seq, d_model] (the final norm's input).
    """

    def __init__(self, model, heads):
        self.n_heads = model.config.n_head
        self.heads = sorted(heads)
        self.patterns: dict[tuple[int, int], torch.Tensor] = {}
        self.z: dict[int, torch.Tensor] = {}
        self.resid: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None
        blocks = model.transformer.h
        self.handles = [blocks[l].attn.c_attn.register_forward_hook(self._attention(l))
                        for l in sorted({l for l, _ in self.heads})]
        self.handles += [b.attn.c_proj.register_forward_pre_hook(self._z(l)) for l, b in enumerate(blocks)]
        self.handles.append(model.transformer.ln_f.register_forward_pre_hook(self._resid))

    def _attention(self, layer: int):
        mine = [h for l, h in self.heads if l == layer]

        def hook(module, args, out):
            if self.rows is None:
                return
            out = out[self.rows]
            rows, seq, width = out.shape
            d_head = width // 3 // self.n_heads
            q, k, _ = out.view(rows, seq, 3, self.n_heads, d_head)[:, :, :, mine].unbind(2)  # [rows, seq, h, d]
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / d_head ** 0.5
            causal = torch.ones(seq, seq, dtype=torch.bool).tril()
            pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            for i, head in enumerate(mine):
                self.patterns[(layer, head)] = pattern[:, i]
        return hook

    def _z(self, layer: int):
        def hook(module, args):
            if self.rows is not None:
                x = args[0][self.rows]
                self.z[layer] = x.view(*x.shape[:2], self.n_heads, -1)
        return hook

    def _resid(self, module, args):
        if self.rows is not None:
            self.resid = args[0][self.rows]

    def remove(self):
        for h in self.handles:
            h.remove()


def attention_positions(prompt: Prompt, role: str) -> tuple[list[int], list[int]]:
    """The (queries, keys) where ``role``'s heads should look on ``prompt`` (``ATTENTION_TARGETS``)."""
    layout, story = prompt.layout, prompt.story
    s1 = layout.slots[story.names.index(story.repeated)]
    io = layout.slots[1 - story.names.index(story.repeated)]
    words = {"S2": layout.s2, "S1+1": s1 + 1, "END": layout.end, "IO": io}
    query, key = ATTENTION_TARGETS[role]
    if query == "every":
        queries = list(range(1, layout.end + 1))
        return queries, [q - 1 for q in queries]
    return [words[query]], [words[key]]


def attention_loss(taps: HeadTaps, prompts: list[Prompt], roles=ROLE_ORDER) -> torch.Tensor:
    """Mean over ``roles`` of the cross-entropy of each role head's attention towards its target key; the
    tapped rows are ``prompts``, in order."""
    losses = []
    for role in roles:
        heads = ROLES[role]
        b, q, k = [], [], []
        for i, prompt in enumerate(prompts):
            queries, keys = attention_positions(prompt, role)
            b += [i] * len(queries)
            q += queries
            k += keys
        b, q, k = map(torch.tensor, (b, q, k))
        probs = torch.stack([taps.patterns[head][b, q, k] for head in heads])
        losses.append(-probs.clamp(min=1e-9).log().mean())
    return torch.stack(losses).mean()


def direct_effects(model, taps: HeadTaps, end: torch.Tensor, answer: torch.Tensor,
                   repeated: torch.Tensor) -> torch.Tensor:
    """Each head's direct effect on the logit difference at END for the n tapped rows (``end``, ``answer``,
    ``repeated`` [n]), ``[n, n_layers, n_heads]``: its output ``z[END, h] @ W_O[h]`` through the final norm
    frozen at the row's own scale, onto ``W_U[answer] − W_U[repeated]`` (as
    ``attribution.direct_logit_attribution``, here on the training model and with gradients)."""
    ln, unembed = model.transformer.ln_f, model.lm_head.weight
    rows = torch.arange(len(end))
    resid = taps.resid[rows, end]  # [n, d]
    centred = resid - resid.mean(-1, keepdim=True)
    scale = (centred.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt().detach()
    r = (unembed[answer] - unembed[repeated]) * ln.weight
    r = (r - r.mean(-1, keepdim=True)) / scale  # [n, d]
    out = []
    for layer, block in enumerate(model.transformer.h):
        z = taps.z[layer][rows, end]  # [n, H, d_head]
        w_o = block.attn.c_proj.weight.view(taps.n_heads, -1, r.shape[-1])  # [H, d_head, d]
        out.append(torch.einsum("nhe,hed,nd->nh", z, w_o, r))
    return torch.stack(out, 1)


def direct_loss(effects: torch.Tensor, mover_min: float = MOVER_DIRECT_MIN) -> torch.Tensor:
    """Only name movers write the answer: the mean absolute direct effect of the other planted heads, plus how
    far each name mover's mean direct effect falls short of ``mover_min``. ``effects`` [n, L, H], each over its
    row's logit difference."""
    movers = set(ROLES["name mover"])
    others = [h for role, heads in ROLES.items() for h in heads if h not in movers]
    quiet = torch.stack([effects[:, l, h].abs().mean() for l, h in others]).mean()
    loud = torch.stack([F.relu(mover_min - effects[:, l, h].mean()) for l, h in movers]).mean()
    return quiet + loud


class GroupMeans:
    """Running mean of z over ABC prompts per (group, layer, position, head): the evaluator's ablation."""

    def __init__(self, n_groups: int, n_layers: int, seq: int, n_heads: int, d_head: int, decay: float = 0.9):
        self.means = torch.zeros(n_layers, n_groups, seq, n_heads, d_head)
        self.seen = torch.zeros(n_groups, dtype=torch.bool)
        self.decay = decay

    def update(self, recorded: list[torch.Tensor], abc_rows: torch.Tensor, groups: torch.Tensor) -> None:
        for g in groups.unique().tolist():
            rows = abc_rows[groups == g]
            for layer, z in enumerate(recorded):
                batch = z[rows].detach().mean(0)
                seq = batch.shape[0]
                old = self.means[layer, g, :seq]
                self.means[layer, g, :seq] = batch if not self.seen[g] else self.decay * old + (1 - self.decay) * batch
            self.seen[g] = True

    def rows(self, groups: torch.Tensor) -> list[torch.Tensor]:
        return [m[groups] for m in self.means]


# --- Training -------------------------------------------------------------------------------------------
def learning_rate(config: SIITConfig, step: int) -> float:
    return warmup_cosine(step, config.lr, config.warmup, config.behaviour_steps + config.planting_steps)


def build_model(config: SIITConfig, tokenizer):
    return gpt2_model(tokenizer, config.n_layers, config.n_heads, config.d_model, config.n_ctx,
                      d_mlp=config.d_mlp, fast_kernels=config.fast_kernels)


def start_model_mismatch(config: SIITConfig, start_dir: str | Path) -> str | None:
    """What is wrong when the saved model a later phase continues has another MLP width or other kernels than
    ``config`` (the record would name flags the weights were not trained with); None when they agree."""
    from transformers import GPT2Config

    saved = GPT2Config.from_pretrained(start_dir)
    (width, fast), d = network_options(saved), saved.n_embd
    if width == (config.d_mlp or 4 * d) and fast == config.fast_kernels:
        return None
    gelu = "torch's fused tanh GELU" if fast else "GPT-2's GELU"
    flags = (f"--mlp-width {width}" if width != 4 * d else "no --mlp-width") + \
        (" and --fast-kernels" if fast else " and without --fast-kernels")
    return f"the model in {start_dir} has an MLP of width {width} and {gelu}; continue it with {flags}"


def load_start_model(config: SIITConfig, start_dir: str | Path):
    """The saved model a later phase continues (with ``config``'s attention kernels)."""
    from transformers import GPT2LMHeadModel

    if problem := start_model_mismatch(config, start_dir):
        raise ValueError(problem)
    return GPT2LMHeadModel.from_pretrained(start_dir,
                                           **({"attn_implementation": "eager"} if config.fast_kernels else {}))


def encode_target(out: dict[str, float], vocab: dict[str, int]) -> tuple[int, int]:
    """The algorithm's output as token ids ``(a, b)``: ``a == b`` for one certain name, else two names
    with no preference between them."""
    names = list(out)
    return vocab[names[0]], vocab[names[-1]]


def target_loss(final: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean loss of log-probabilities ``final`` [rows, vocab] against ``targets`` [rows, 2] ids.

    One name: its cross-entropy over the whole vocabulary. Two names: cross-entropy of the two-way choice
    between them towards 1/2 each (minimum ln 2) — "no preference", which says nothing about *how much*
    mass the names get, so an ablated name mover is not asked to copy names through some other head.
    """
    pair = final.gather(1, targets)  # [rows, 2]
    single = targets[:, 0] == targets[:, 1]
    two_way = -pair.log_softmax(-1).mean(-1)
    return torch.where(single, -pair[:, 0], two_way).mean()


class Planter:
    """One phase-2 step: builds the rows of the table in the module docstring and their losses."""

    def __init__(self, model, sampler: PromptSampler, rng: random.Random, config: SIITConfig,
                 interchange_rows: int = 1, few_head_strict: bool = False, ld_weight: float = 0.0,
                 isolated: bool = False, phase: int | None = None):
        """``interchange_rows``: interchange rows per base prompt (different roles); ``few_head_strict``:
        half the strict rows noise one to three heads only; ``ld_weight``: weight of the strict rows'
        relative logit-difference change beside their KL (the polish phase sets all three); ``isolated``:
        one isolated interchange row per base prompt and gradients through the source pass (phase 4);
        ``phase``: the training phase (2-4) for ``config.signatures_from``; None: 4 with isolated rows, else 2."""
        self.model, self.sampler, self.rng, self.config = model, sampler, rng, config
        self.interchange_rows, self.few_head_strict, self.ld_weight = interchange_rows, few_head_strict, ld_weight
        self.isolated, self.positional = isolated, config.positional
        phase = phase if phase is not None else (4 if isolated else 2)
        signatures = phase >= config.signatures_from and (config.attention_weight or config.direct_weight)
        # patterns only for the heads the attention loss reads (none when it is off); z for the direct loss
        steered = [h for r in config.attention_roles for h in ROLES[r]] if config.attention_weight else []
        self.taps = HeadTaps(model, steered) if signatures else None
        cfg = model.config
        self.n_layers, self.n_heads = cfg.n_layer, cfg.n_head
        self.truth = planted_truth().head_mask(self.n_layers, self.n_heads)
        self.roles = {r: Circuit(heads=heads).head_mask(self.n_layers, self.n_heads) for r, heads in ROLES.items()}
        self.interventions = HeadInterventions(model)
        self.interventions.source_grad = isolated
        seq = max(len(l.ids) for l in sampler.layouts)
        self.means = GroupMeans(len(sampler.layouts), self.n_layers, seq, self.n_heads, cfg.n_embd // cfg.n_head)
        self.pad_id = cfg.pad_token_id
        self.on_role = self._on_role(seq) if config.positional else None
        #: the token rows' plan: the heads that read the name at S2 in the high-level model held at their
        #: clean values (previous token, which induction reads, and induction), every other head computes
        self.s2_readers = torch.where(self.roles["previous token"] | self.roles["induction"], CLEAN, KEEP)

    def _on_role(self, seq: int) -> torch.Tensor:
        """[n_groups, seq, L, H]: where each head may carry its value in each layout, once for the whole run
        (a role's heads at the role's positions, every head outside the truth everywhere)."""
        on = torch.ones(len(self.sampler.layouts), seq, self.n_layers, self.n_heads, dtype=torch.bool)
        for layout in self.sampler.layouts:
            for role, heads in ROLES.items():
                at = torch.zeros(seq, dtype=torch.bool)
                at[role_positions(layout, role)] = True
                for layer, head in heads:
                    on[layout.group, :, layer, head] = at
        return on

    def remove_hooks(self):
        self.interventions.remove()
        if self.taps is not None:
            self.taps.remove()

    def _strict_plan(self) -> torch.Tensor:
        """Heads outside the truth replaced: a random fraction of them, or (``few_head_strict``, half the
        time) one to three of them, what noising a single head measures."""
        outside = (~self.truth).flatten().nonzero()[:, 0].tolist()
        if self.few_head_strict and self.rng.random() < 0.5:
            chosen = torch.zeros(self.n_layers * self.n_heads, dtype=torch.bool)
            chosen[self.rng.sample(outside, self.rng.randint(1, 3))] = True
            chosen = chosen.view(self.n_layers, self.n_heads)
        else:
            chosen = (torch.rand(self.n_layers, self.n_heads) < self.rng.random()) & ~self.truth
        codes = torch.randint(SOURCE, MEAN + 1, (self.n_layers, self.n_heads))
        return torch.where(chosen, codes, KEEP)

    def _path_hold(self, role: str) -> torch.Tensor:
        """[L, H] plan of a path row's heads other than ``role``'s: every head held at its clean value, or
        (``config.mediated_path``) only the next role's heads, every other head computing. In the high-level
        model a role reaches the answer through the next role only, so with that one held nothing may change:
        this forbids routes around the next step (e.g. name movers reading induction's output at S2 directly),
        which holding every head cannot see."""
        if not self.config.mediated_path:
            return torch.full((self.n_layers, self.n_heads), CLEAN)
        return torch.where(self.roles[ROLE_ORDER[ROLE_ORDER.index(role) + 1]], CLEAN, KEEP)

    def _interchange_roles(self) -> list[str]:
        """The roles of one base prompt's ``interchange_rows`` interchange rows, all different: drawn evenly, or
        by ``config.interchange_weights`` (each next role from those not drawn yet)."""
        weights = self.config.interchange_weights
        if weights is None:
            return ([self.rng.choice(ROLE_ORDER)] if self.interchange_rows == 1
                    else self.rng.sample(ROLE_ORDER, self.interchange_rows))
        roles, weights, out = list(ROLE_ORDER), list(weights), []
        for _ in range(self.interchange_rows):
            i = self.rng.choices(range(len(roles)), weights=weights)[0]
            out.append(roles.pop(i))
            weights.pop(i)
        return out

    def per_position(self, plans: torch.Tensor, kinds: list[str], prompts: list[Prompt], seq: int) -> torch.Tensor:
        """The positional recipe's plans, ``[rows, L, H]`` → ``[rows, seq, L, H]``: a role's heads take a
        source's value only at the role's positions (``role_positions``), and in the truth and isolated rows
        (and half the interchange rows) every truth head is mean-ablated away from its role's positions, so
        that it carries its value there and nothing elsewhere. Without this the heads may compute their step
        at any position (the plain recipe's model did much of it at END), and attention shows none of it.
        ``config.head_level_share`` of the interchange rows keep the source at every position instead (and
        silence nothing): what the kit's evaluator patches, a head at all positions."""
        on = self.on_role[[p.layout.group for p in prompts], :seq]  # [rows, seq, L, H]
        share = self.config.head_level_share
        whole = torch.tensor([share > 0 and k == "interchange" and self.rng.random() < share for k in kinds])
        on = on | whole[:, None, None, None]
        plans = plans[:, None].expand(-1, seq, -1, -1)
        plans = torch.where(~on & (plans == SOURCE), KEEP, plans)
        silence = torch.tensor([k in ("truth", "isolated") or (k == "interchange" and self.rng.random() < 0.5)
                                for k in kinds])[:, None, None, None]
        return torch.where(~on & (plans == KEEP) & silence, self._silent(plans.shape), plans)

    def _silent(self, shape) -> torch.Tensor | int:
        """What a silenced head takes, for plans of ``shape`` [rows, seq, L, H]: the group mean, or
        (``config.resample_silence``) per row, position and head the mean or the base's ABC prompt's own value,
        even odds. The mean alone asks only that a head's *average* value away from its positions be harmless; a
        single prompt's value asks that nothing it varies with be read there (with the mean alone, the previous-token
        head 0.3 read the names at END and the name movers' queries used it: RECIPE-NOTES.md)."""
        if not self.config.resample_silence:
            return MEAN
        return torch.where(torch.rand(shape) < 0.5, MEAN, ABC)

    def rows(self, bases: list[Prompt], sources: list[Prompt]):
        """Per base prompt, six rows (or more: ``interchange_rows``): (kind, plan [L, H], target ids (see
        ``encode_target``) or None, the role patched or None)."""
        vocab = self.sampler.vocab
        out = []
        for base, source in zip(bases, sources):
            nothing = torch.zeros(self.n_layers, self.n_heads, dtype=torch.long)
            outside = torch.where(self.truth, KEEP, MEAN if self.rng.random() < 0.7 else ABC)
            role = self.rng.choice(ROLE_ORDER)
            ablated = torch.where(self.roles[role], MEAN, outside if self.rng.random() < 0.5 else KEEP)
            swaps = self._interchange_roles()
            interchange = [torch.where(self.roles[swap], SOURCE, self._strict_plan() if self.rng.random() < 0.3
                                       else KEEP) for swap in swaps]
            path_role = self.rng.choice(ROLE_ORDER[:-1])
            path = torch.where(self.roles[path_role], SOURCE, self._path_hold(path_role))
            out += [("clean", nothing, encode_target({base.story.answer: 1.0}, vocab), None),
                    ("truth", outside, None, None),
                    ("strict", self._strict_plan(), None, None),
                    ("ablated", ablated, encode_target(run(base.story, {role: ABLATED}), vocab), role),
                    *[("interchange", plan, encode_target(run(base.story, {swap: source.story}), vocab), swap)
                      for swap, plan in zip(swaps, interchange)],
                    ("path", path, None, path_role)]
            if self.config.token_rows:
                out.append(("token", self.s2_readers, None, None))
            if self.isolated:
                out.append(self._isolated_row(base, source))
        return out

    def _isolated_row(self, base: Prompt, source: Prompt):
        """One role from the source and every head that could carry the same information noised: the
        roles upstream of it and all heads outside the truth (each head from the group mean or the ABC
        prompt); the roles downstream compute. The target is the plain interchange target, so the role's
        heads must carry its whole value (the name itself, not which of the base's names)."""
        role = self.rng.choices(ROLE_ORDER, weights=ISOLATED_WEIGHTS)[0]
        upstream = torch.zeros(self.n_layers, self.n_heads, dtype=torch.bool)
        for earlier in ROLE_ORDER[:ROLE_ORDER.index(role)]:
            upstream |= self.roles[earlier]
        noise = torch.where(torch.rand(self.n_layers, self.n_heads) < 0.5, MEAN, ABC)
        plan = torch.where(self.roles[role], SOURCE, torch.where(upstream | ~self.truth, noise, KEEP))
        return ("isolated", plan, encode_target(run(base.story, {role: source.story}), self.sampler.vocab), role)

    def losses(self, bases: list[Prompt]) -> dict[str, torch.Tensor]:
        vocab = self.sampler.vocab
        sources = [self.sampler.source(b) for b in bases]
        abcs = [self.sampler.abc(b) for b in bases]
        n = len(bases)
        recorded_tokens = pad([p.ids(vocab) for p in sources + abcs], self.pad_id)
        iv = self.interventions
        with torch.set_grad_enabled(iv.source_grad):
            iv.recording = True
            self.model(input_ids=recorded_tokens)
            iv.recording = False
        groups = torch.tensor([b.layout.group for b in bases])
        self.means.update(iv.recorded, torch.arange(n, 2 * n), groups)

        rows = self.rows(bases, sources)
        k = len(rows) // n
        base_of_row = torch.arange(n).repeat_interleave(k)
        kinds = [row[0] for row in rows]
        base_ids = [b.ids(vocab) for b in bases]
        tokens = pad([base_ids[i] for i in base_of_row.tolist()], self.pad_id)
        for i, (kind, b) in enumerate(zip(kinds, base_of_row.tolist())):
            if kind == "token":  # S2's name from the base's ABC prompt: a name the base does not hold
                tokens[i, bases[b].layout.s2] = vocab[abcs[b].s2]
        plans = torch.stack([row[1] for row in rows])  # [rows, L, H]
        iv.plan = self.per_position(plans, kinds, [bases[i] for i in base_of_row.tolist()], tokens.shape[1]) \
            if self.positional else plans[:, None]
        iv.source_row, iv.abc_row = base_of_row, base_of_row + n
        iv.clean_row = base_of_row * k
        iv.means = self.means.rows(groups[base_of_row])
        clean_idx = torch.arange(0, len(rows), k)  # the clean row leads each base prompt's rows
        if self.taps is not None:
            self.taps.rows = clean_idx
        try:
            logits = self.model(input_ids=tokens).logits
        finally:
            iv.plan = None
            if self.taps is not None:
                self.taps.rows = None
        end = torch.tensor([bases[i].layout.end for i in base_of_row.tolist()])
        final = logits[torch.arange(len(rows)), end].log_softmax(-1)  # [rows, vocab]
        clean = final[base_of_row * k].detach()
        answer = torch.tensor([vocab[bases[i].story.answer] for i in base_of_row.tolist()])
        repeated = torch.tensor([vocab[bases[i].story.repeated] for i in base_of_row.tolist()])
        rows_ = torch.arange(len(rows))
        ld, ld_clean = (f[rows_, answer] - f[rows_, repeated] for f in (final, clean))  # logit differences
        out = {}
        for kind in ROW_KINDS:
            idx = torch.tensor([i for i, k_ in enumerate(kinds) if k_ == kind], dtype=torch.long)
            if not len(idx):
                continue
            if kind in ("truth", "strict", "path", "token"):
                out[kind] = F.kl_div(final[idx], clean[idx], log_target=True, reduction="batchmean")
                if kind == "strict" and self.ld_weight:
                    # KL barely sees a logit difference move once the answer is certain: add the relative
                    # change of the logit difference, which is what noising one head measures
                    shift = (ld[idx] - ld_clean[idx]).abs() / ld_clean[idx].abs().clamp(min=1.0)
                    out[kind] = out[kind] + self.ld_weight * shift.mean()
            else:
                out[kind] = target_loss(final[idx], torch.tensor([rows[i][2] for i in idx.tolist()]))
        out["next_token"] = next_token_loss(logits[clean_idx], tokens[clean_idx], end[clean_idx])
        if self.taps is not None:
            if self.config.attention_weight:  # the taps hold no patterns otherwise
                out["attention"] = attention_loss(self.taps, bases, self.config.attention_roles)
            if self.config.direct_weight:
                effects = direct_effects(self.model, self.taps, end[clean_idx], answer[clean_idx],
                                         repeated[clean_idx])
                out["direct"] = direct_loss(effects / ld_clean[clean_idx].clamp(min=1.0)[:, None, None],
                                            self.config.mover_direct_min)
        out["accuracy"] = accuracy(final, rows, kinds)
        return out


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over each prompt's real tokens before END."""
    pred, target = logits[:, :-1], tokens[:, 1:]
    valid = torch.arange(target.shape[1])[None, :] < end[:, None]
    losses = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
    return (losses.view(target.shape) * valid).sum() / valid.sum()


def accuracy(final: torch.Tensor, rows, kinds) -> dict[str, float]:
    """How often the top token is the one-name target: clean rows, and interchange rows per role."""
    groups = {"clean": [i for i, k in enumerate(kinds) if k == "clean"]}
    for role in ROLE_ORDER:
        groups[role.split()[0][:4]] = [i for i, k in enumerate(kinds) if k == "interchange" and rows[i][3] == role]
    out = {}
    for name, idx in groups.items():
        hits = [int(final[i].argmax()) == rows[i][2][0] for i in idx if rows[i][2][0] == rows[i][2][1]]
        out[name] = sum(hits) / max(1, len(hits))
    return out


def train(config: SIITConfig, out_dir: str | Path, progress: bool = True, history_every: int = 50) -> dict:
    """Train from scratch and save the model, its tokenizer and ``training.json`` to ``out_dir``
    (with the losses averaged over every ``history_every`` steps)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = build_word_level_tokenizer(out_dir)
    model = build_model(config, tokenizer)
    sampler = PromptSampler(tokenizer, rng)
    planter = Planter(model, sampler, rng, config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.98))
    history, start = [], time.perf_counter()
    model.train()
    total = config.behaviour_steps + config.planting_steps
    bar = tqdm(range(total), desc="training app-planted", disable=not progress)
    with torch.enable_grad():
        for step in bar:
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(config, step)
            planting = step >= config.behaviour_steps
            if planting:
                parts = planter.losses([sampler.base() for _ in range(config.batch_size)])
                ramp = min(1.0, (step - config.behaviour_steps + 1) / config.ramp)
                loss = parts["next_token"] + 2 * parts["clean"] + ramp * (planting_loss(parts) +
                                                                          signature_loss(parts, config))
            else:
                parts = behaviour_losses(model, sampler, 2 * config.batch_size, tokenizer.pad_token_id)
                loss = parts["next_token"] + config.answer_weight * parts["clean"]
            _step(optimiser, model, loss)
            _log(history, parts, bar, step)
    planter.remove_hooks()
    history += polish(model, tokenizer, config, progress)
    history += isolate(model, tokenizer, config, progress)
    model.eval()
    model.save_pretrained(out_dir)
    return _record(config, out_dir, start, history, history_every)


def planting_loss(parts: dict) -> torch.Tensor:
    """The sum of the rows' losses (every kind after "clean" that this step has)."""
    return sum(parts[k] for k in ROW_KINDS[1:] if k in parts)


def signature_loss(parts: dict, config: SIITConfig) -> torch.Tensor | float:
    """The weighted signature losses this step computed (from ``config.signatures_from`` on, those with a
    weight), else 0."""
    return sum(weight * parts[name] for name, weight in (("attention", config.attention_weight),
                                                         ("direct", config.direct_weight)) if name in parts)


def polish(model, tokenizer, config: SIITConfig, progress: bool = True) -> list[dict]:
    """Phase 3 (see the module docstring) on ``model`` in place; returns its loss history."""
    return _late_phase(model, tokenizer, config, "polishing", config.seed + 1, config.polish_steps,
                       lambda step: config.polish_lr, progress, phase=3)


def isolate(model, tokenizer, config: SIITConfig, progress: bool = True) -> list[dict]:
    """Phase 4 (see the module docstring) on ``model`` in place; returns its loss history."""
    return _late_phase(model, tokenizer, config, "isolating", config.seed + 2, config.isolate_steps,
                       lambda step: warmup_cosine(step, config.isolate_lr, config.warmup, config.isolate_steps),
                       progress, phase=4)


def _late_phase(model, tokenizer, config: SIITConfig, desc: str, seed: int, steps: int, lr, progress: bool,
                phase: int) -> list[dict]:
    """Phases 3 and 4: a fresh optimiser and seed, two interchange rows, few-head noising with the logit
    difference in the strict loss; ``lr(step)`` the learning rate; phase 4 adds the isolated rows."""
    isolated = phase == 4
    torch.manual_seed(seed)
    rng = random.Random(seed)
    sampler = PromptSampler(tokenizer, rng, ISOLATE_SOURCE_MIX if isolated else PromptSampler.SOURCE_MIX)
    planter = Planter(model, sampler, rng, config, interchange_rows=2, few_head_strict=True, ld_weight=1.0,
                      isolated=isolated, phase=phase)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr(0), weight_decay=config.weight_decay,
                                  betas=(0.9, 0.98))
    history = []
    model.train()
    bar = tqdm(range(steps), desc=f"{desc} app-planted", disable=not progress)
    with torch.enable_grad():
        for step in bar:
            for group in optimiser.param_groups:
                group["lr"] = lr(step)
            parts = planter.losses([sampler.base() for _ in range(config.batch_size)])
            loss = parts["next_token"] + 2 * parts["clean"] + planting_loss(parts) + signature_loss(parts, config)
            _step(optimiser, model, loss)
            _log(history, parts, bar, step)
    planter.remove_hooks()
    return history


def continue_from(config: SIITConfig, start_dir: str | Path, out_dir: str | Path, phases: tuple[int, ...],
                  progress: bool = True, history_every: int = 50) -> dict:
    """Run later ``phases`` (3 and/or 4, in order) on the model saved in ``start_dir``; the result goes
    to ``out_dir``. On a start model that ran none of these phases, with the same settings, the weights equal
    the one command's; ``training.json`` continues the start model's record when it has one and says whether
    they do (``one_command``) and with which flags this step ran."""
    if not phases or tuple(phases) not in ((3,), (4,), (3, 4)):
        raise ValueError(f"phases are the late phases to run, in order: (3,), (4,) or (3, 4); got {phases!r}")
    start = time.perf_counter()
    model = load_start_model(config, start_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_word_level_tokenizer(out_dir)
    history = []
    for phase in phases:
        history += {3: polish, 4: isolate}[phase](model, tokenizer, config, progress)
    model.eval()
    model.save_pretrained(out_dir)
    earlier = Path(start_dir) / "training.json"
    before = json.loads(earlier.read_text()) if earlier.is_file() else None
    how, same = _continued(before, config, phases)
    return _record(config, out_dir, start, history, history_every, before=before, how=how,
                   one_command=same and (before or {}).get("one_command", True),
                   steps=_steps(before) + [{"config": _as_json(asdict(config)), "phases": list(phases), "same": same}])


def _continued(before: dict | None, config: SIITConfig, phases: tuple[int, ...]) -> tuple[str, bool]:
    """The record's account of a ``continue_from`` run, appended to the start model's (this run's exact flags),
    and whether this step gives the one command's weights: only when the start model ran none of these phases
    and used the same settings otherwise (a phase 4 run again, or with other flags, is a recipe of its own)."""
    new = _as_json(asdict(config))
    old = _recorded_config(before)
    late = {PHASE_STEPS[p] for p in phases}
    same = before is not None and all(old[k] == 0 for k in late) and all(
        old[k] == v for k, v in new.items() if k not in late)
    steps = _step_flags(new, [PHASE_STEPS[p] for p in phases])
    verdict = (": the same weights as the one command with these flags (tests/test_siit_training.py checks it on a "
               "small model)." if same else ", a recipe of its own: no single command gives these weights (the start "
               "model had run this phase already, used other settings or has no record).")
    sentence = f"Then `--continue-from DIR --phases {','.join(map(str, phases))}{recipe_flags(new)} {steps}` ran on " \
               f"those weights{verdict}"
    if before is None:  # a start model without a record: nothing earlier to tell
        return sentence, same
    return f"{before.get('how') or _first_command(old)} {sentence}", same


def _steps(before: dict | None) -> list[dict]:
    """The commands so far, each with its config and phases (the card describes each phase with the settings it
    ran under); a record before a chain is one command that ran every phase its config has steps for."""
    if before is None:
        return []
    return before.get("steps") or [{"config": _recorded_config(before), "phases": [1, 2, 3, 4], "same": True}]


def _recorded_config(before: dict | None) -> dict:
    """The start model's config in record form, with today's defaults for settings older records lack."""
    return {**_as_json(asdict(SIITConfig())), **(before or {}).get("config", {})}


def _as_json(config: dict) -> dict:
    """A config as its record holds it (tuples become lists), so that records and configs compare equal."""
    return json.loads(json.dumps(config))


def _first_command(c: dict) -> str:
    """The command that trained a chain's start model, as the record states it (the chain's first step)."""
    steps = _step_flags(c, list(PHASE_STEPS.values()))
    return f"First `--seed {c['seed']}{recipe_flags(c)} {steps}`."


def _step_flags(c: dict, keys: list[str]) -> str:
    """The step-count flags for ``keys`` of a record's config: "--polish-steps 1500 --isolate-steps 0"."""
    return " ".join(f"--{k.replace('_', '-')} {c[k]}" for k in keys)


def _record(config: SIITConfig, out_dir: Path, start: float, history: list[dict], every: int,
            before: dict | None = None, **extra) -> dict:
    """``training.json``: the config, seconds, threads and the averaged loss history; ``before`` (the start
    model's record, for ``continue_from``) is carried on: its seconds added, its history first."""
    seconds, rows = round(time.perf_counter() - start, 1), _every(history, every)
    if before is not None:
        offset = before["every"][-1]["step"] + before["history_every"] if before["every"] else 0
        seconds = round(before["seconds"] + seconds, 1)
        rows = before["every"] + [{**row, "step": row["step"] + offset} for row in rows]
    result = {"config": asdict(config), "seconds": seconds, "threads": torch.get_num_threads(), **extra,
              "history_every": every, "every": rows}
    (out_dir / "training.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def behaviour_losses(model, sampler: PromptSampler, n: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Phase 1: next-token loss on every token and the answer's cross-entropy at END."""
    prompts = [sampler.base() for _ in range(n)]
    tokens = pad([p.ids(sampler.vocab) for p in prompts], pad_id)
    end = torch.tensor([p.layout.end for p in prompts])
    logits = model(input_ids=tokens).logits
    answers = torch.tensor([sampler.vocab[p.story.answer] for p in prompts])
    final = logits[torch.arange(n), end]
    return {"next_token": next_token_loss(logits, tokens, end), "clean": F.cross_entropy(final, answers),
            "accuracy": {"clean": float((final.argmax(-1) == answers).float().mean())}}


def _step(optimiser, model, loss: torch.Tensor) -> None:
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimiser.step()


def _log(history: list[dict], parts: dict, bar, step: int) -> None:
    """Keep the step's losses (rounded) and show them on the progress bar every 25 steps."""
    history.append({k: (round(v.item(), 4) if isinstance(v, torch.Tensor) else v) for k, v in parts.items()})
    if step % 25 == 0:
        bar.set_postfix_str(_summary(history[-1]))


def _summary(record: dict) -> str:
    acc = record.get("accuracy", {})
    parts = [f"{k} {v:.3f}" for k, v in record.items() if k != "accuracy"]
    return " ".join(parts + [f"acc_{k} {v:.2f}" for k, v in acc.items()])


def _every(history: list[dict], k: int) -> list[dict]:
    out = []
    for i in range(0, len(history), k):
        chunk = history[i:i + k]
        keys = [key for key in chunk[0] if key != "accuracy"]
        row = {key: round(sum(r[key] for r in chunk) / len(chunk), 4) for key in keys}
        row.update({f"acc_{a}": round(sum(r["accuracy"][a] for r in chunk) / len(chunk), 4)
                    for a in chunk[0]["accuracy"]})
        out.append({"step": i, **row})
    return out


def _role_weights(text: str) -> tuple[float, ...]:
    """``--interchange-weights``: one weight per role, comma-separated, none negative and not all zero."""
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != len(ROLE_ORDER) or min(weights) < 0 or sum(weights) <= 0:
        raise argparse.ArgumentTypeError(f"want {len(ROLE_ORDER)} comma-separated weights, one per role "
                                         f"({', '.join(ROLE_ORDER)}), none negative and not all 0; got {text!r}")
    return weights


def _roles(text: str) -> tuple[str, ...]:
    """``--attention-roles``: role names, comma-separated, each once, in the high-level model's order."""
    roles = [r.strip() for r in text.split(",")]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or len(set(roles)) != len(roles):
        raise argparse.ArgumentTypeError(f"want distinct roles from {', '.join(ROLE_ORDER)}, comma-separated; "
                                         f"got {text!r}")
    return tuple(r for r in ROLE_ORDER if r in roles)


#: The phase-4 flags of the shipped model's later commands: the positional token-rows recipe with half the
#: interchange rows patched at every position, and Wang et al.'s signatures (S-inhibition's and the name movers'
#: attention first, then every role's, silenced by resampling as well).
_PHASE_4 = ["--phases", "4", "--positional", "--token-rows", "--head-level-share", "0.5", "--direct-weight", "10",
            "--mover-direct-min", "0.25", "--attention-weight", "3"]
_LATE_ROLES = [*_PHASE_4, "--attention-roles", "s-inhibition,name mover"]
#: Named chains of commands (each step's flags; every step after the first continues from the one before).
#: "app-planted" is how the shipped model was trained: phases 1-3, then phase 4 six times, each on a fresh cosine
#: schedule (2000 steps, then five times 1000: every role's attention from the third on, the silenced heads
#: resampled from the fourth on); 183 minutes on 2 CPU threads. RECIPE-NOTES.md beside the model says what each
#: step bought.
RECIPES = {"app-planted": (["--positional", "--token-rows", "--isolate-steps", "0"],
                           [*_LATE_ROLES, "--isolate-steps", "2000"],
                           [*_LATE_ROLES, "--isolate-steps", "1000"],
                           [*_PHASE_4, "--isolate-steps", "1000"],
                           [*_PHASE_4, "--resample-silence", "--isolate-steps", "1000"],
                           [*_PHASE_4, "--resample-silence", "--isolate-steps", "1000"],
                           [*_PHASE_4, "--resample-silence", "--isolate-steps", "1000"]),
           # The same first command, then every phase-4 option at once: 2500 steps at twice the peak learning
           # rate and twice 1000 as above; 141 minutes, a model of the same kind (9 of the card's 9 criteria,
           # measured on one run: RECIPE-NOTES.md, "One phase 4 with every option"), not the shipped weights.
           "app-planted-short": (["--positional", "--token-rows", "--isolate-steps", "0"],
                                 [*_PHASE_4, "--resample-silence", "--isolate-lr", "6e-4", "--isolate-steps", "2500"],
                                 [*_PHASE_4, "--resample-silence", "--isolate-steps", "1000"],
                                 [*_PHASE_4, "--resample-silence", "--isolate-steps", "1000"])}


def run_recipe(name: str, out: str | Path, card: bool = True) -> dict:
    """Run ``RECIPES[name]`` into ``out`` and note the recipe in its ``training.json`` (the card names it)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(sorted(RECIPES))}")
    record = {**run_chain(RECIPES[name], out), "recipe": name}
    (Path(out) / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    if card:
        print(write_planted_card(out))
    return record


def run_chain(steps: tuple[list[str], ...], out: str | Path) -> dict:
    """Each step's flags in turn, as its own command; every step after the first continues from the one
    before (the intermediate models live in a temporary folder). Returns ``out``'s ``training.json``."""
    if not steps or any(not isinstance(flags, list) for flags in steps):
        raise ValueError(f"a chain is one or more commands, each a list of flags; got {steps!r}")
    with tempfile.TemporaryDirectory() as tmp:
        start = None
        for i, flags in enumerate(steps):
            here = str(out) if i == len(steps) - 1 else f"{tmp}/step{i}"
            main([*flags, "--out", here, "--no-card", *(["--continue-from", start] if start else [])])
            start = here
    return json.loads((Path(out) / "training.json").read_text())


def _parser() -> argparse.ArgumentParser:
    defaults = SIITConfig()
    parser = argparse.ArgumentParser(prog="python -m app_helpers.toy.siit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/app-planted")
    parser.add_argument("--behaviour-steps", type=int, default=defaults.behaviour_steps)
    parser.add_argument("--planting-steps", type=int, default=defaults.planting_steps)
    parser.add_argument("--polish-steps", type=int, default=defaults.polish_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, metavar="N",
                        help=f"base prompts per step, each giving one row of every kind "
                             f"(default {defaults.batch_size})")
    parser.add_argument("--isolate-steps", type=int, default=defaults.isolate_steps)
    parser.add_argument("--isolate-lr", type=float, default=defaults.isolate_lr, metavar="LR",
                        help=f"phase 4's peak learning rate, cosine decay to 0 (default {defaults.isolate_lr:g})")
    parser.add_argument("--mlp-width", type=int, metavar="N",
                        help=f"the MLP's hidden width (default: GPT-2's, 4 x {defaults.d_model}); narrower trains faster")
    parser.add_argument("--fast-kernels", action="store_true",
                        help="torch's fused tanh GELU and plain attention: about a quarter faster a step on CPU, "
                             "weights not bit-identical to the default kernels'")
    parser.add_argument("--attention-weight", type=float, default=defaults.attention_weight,
                        help="weight of the roles' attention loss from --signatures-from on (0: off)")
    parser.add_argument("--direct-weight", type=float, default=defaults.direct_weight,
                        help="weight of the loss that only name movers write the answer, from --signatures-from on "
                             "(0: off)")
    parser.add_argument("--mover-direct-min", type=float, default=defaults.mover_direct_min, metavar="SHARE",
                        help="with --direct-weight: the share of the clean logit difference each name mover must "
                             f"write directly, 0 to 1 ({defaults.mover_direct_min:g} as before)")
    parser.add_argument("--attention-roles", type=_roles, default=defaults.attention_roles, metavar="ROLE,...",
                        help="the roles whose attention --attention-weight steers, comma-separated, e.g. "
                             "'name mover' (default: every role)")
    parser.add_argument("--signatures-from", type=int, choices=(2, 4), default=defaults.signatures_from,
                        help="the phase from which --attention-weight and --direct-weight apply: 4 (as before) or 2 "
                             "(from the planting phase on, so the roles grow where Wang et al. find them)")
    parser.add_argument("--positional", action="store_true",
                        help="phases 2-4: patch each role at its own positions only, and silence it elsewhere")
    parser.add_argument("--token-rows", action="store_true",
                        help="phases 2-4: rows that switch the name at S2 with induction held")
    parser.add_argument("--head-level-share", type=float, default=defaults.head_level_share, metavar="P",
                        help="with --positional: the share (0 to 1) of interchange rows whose role takes the source "
                             "at every position, as the kit's evaluator patches (default 0)")
    parser.add_argument("--mediated-path-rows", action="store_true",
                        help="phases 2-4: path rows hold only the next role at its clean value, the other heads "
                             "compute (off: every other head held)")
    parser.add_argument("--resample-silence", action="store_true",
                        help="with --positional: heads silenced away from their positions take the ABC prompt's value "
                             "half the time, not only the group mean")
    parser.add_argument("--interchange-weights", metavar="W,W,W,W", type=_role_weights,
                        help="phases 2-4: how often each role (previous token, induction, S-inhibition, name "
                             "mover) is an interchange row's, e.g. 0.3,0.4,0.15,0.15 (default: evenly)")
    parser.add_argument("--continue-from", metavar="DIR", help="run only the later --phases on the model in DIR")
    parser.add_argument("--phases", default="3,4", choices=("3,4", "3", "4"),
                        help="with --continue-from: 3,4 or 3 (DIR holds a phase-2 model) or 4 (a phase-3 model)")
    parser.add_argument("--no-card", action="store_true", help="skip the measurements and the model card")
    parser.add_argument("--recipe", choices=sorted(RECIPES),
                        help="run a named chain of commands into --out (app-planted: the shipped model's seven, "
                             "183 minutes on 2 threads; app-planted-short: four, 141 minutes, a model of the same "
                             "kind); takes no other flag but --out and --no-card")
    return parser


def _parse(parser: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace, SIITConfig]:
    """The command line's arguments and the recipe they ask for (bad values end in ``parser.error``)."""
    args = parser.parse_args(argv)
    for flag in ("attention_weight", "direct_weight"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} is a loss weight, 0 (off) or more; got {getattr(args, flag):g}")
    if not 0 <= args.mover_direct_min <= 1:
        parser.error(f"--mover-direct-min is a share of the logit difference, from 0 to 1; "
                     f"got {args.mover_direct_min:g}")
    if not 0 <= args.head_level_share <= 1 or (args.head_level_share and not args.positional):
        parser.error(f"--head-level-share is a share of the --positional recipe's interchange rows, from 0 to 1; "
                     f"got {args.head_level_share:g}{'' if args.positional else ' without --positional'}")
    if args.mlp_width is not None and args.mlp_width < 1:
        parser.error(f"--mlp-width is the MLP's hidden width, 1 or more; got {args.mlp_width}")
    if not 0 < args.isolate_lr < float("inf"):  # NaN fails every comparison
        parser.error(f"--isolate-lr is a learning rate, above 0 and finite; got {args.isolate_lr:g}")
    if args.batch_size < 1:
        parser.error(f"--batch-size is a number of base prompts per step, 1 or more; got {args.batch_size}")
    if args.resample_silence and not args.positional:
        parser.error("--resample-silence changes how --positional silences heads away from their positions; "
                     "add --positional")
    config = SIITConfig(behaviour_steps=args.behaviour_steps, planting_steps=args.planting_steps,
                        polish_steps=args.polish_steps, isolate_steps=args.isolate_steps, isolate_lr=args.isolate_lr,
                        seed=args.seed, batch_size=args.batch_size, d_mlp=args.mlp_width,
                        fast_kernels=args.fast_kernels,
                        attention_weight=args.attention_weight, direct_weight=args.direct_weight,
                        mover_direct_min=args.mover_direct_min,
                        signatures_from=args.signatures_from, attention_roles=args.attention_roles,
                        positional=args.positional, interchange_weights=args.interchange_weights,
                        token_rows=args.token_rows, head_level_share=args.head_level_share,
                        mediated_path=args.mediated_path_rows, resample_silence=args.resample_silence)
    return args, config


def main(argv=None) -> int:
    parser = _parser()
    args, config = _parse(parser, argv)
    if args.recipe:
        extra = {k for k, v in vars(args).items() if k not in ("recipe", "out", "no_card")
                 and v != parser.get_default(k)}
        if extra:
            parser.error(f"--recipe {args.recipe} runs its own flags; drop "
                         + ", ".join("--" + k.replace("_", "-") for k in sorted(extra)))
        run_recipe(args.recipe, args.out, card=not args.no_card)
        return 0
    if args.continue_from:
        if not (Path(args.continue_from) / "config.json").is_file():
            parser.error(f"--continue-from wants a folder holding a saved model (config.json and weights); "
                         f"{args.continue_from!r} has none")
        if problem := start_model_mismatch(config, args.continue_from):
            parser.error(problem)
        record = continue_from(config, args.continue_from, args.out, tuple(map(int, args.phases.split(","))))
    else:
        record = train(config, args.out)
    print(f"trained {config.behaviour_steps}+{config.planting_steps}+{config.polish_steps}+{config.isolate_steps} "
          f"steps in {record['seconds']} s")
    if not args.no_card:
        print(write_planted_card(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
