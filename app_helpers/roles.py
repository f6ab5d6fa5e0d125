"""What kind of head is it? Role labels from measurable signatures, as Wang et al. (2022) classed IOI heads.

A circuit search says *which* heads matter; this module says *what each one does*, from the evidence Wang et
al. used on GPT-2 small: where a head looks on the task's own prompts (previous token, duplicate token,
induction), whether it writes the answer straight into the logits and whether its OV circuit copies names
(name movers), and whether it steers the name movers' attention (S-inhibition). Every signature is a score
per head, ``[n_layers, n_heads]``; ``assign_roles`` turns the scores into labels with the thresholds below,
and ``recovery`` checks the labels against a circuit whose roles are known (``circuits.planted_truth()``).

The signatures describe a *mechanism*. A model that computes the same algorithm another way (attention on
other tokens, information at other positions) can do the task and still carry none of them; the labels
then say so, and that is a finding about the model, not a fault of the labeller. The bundled app-planted shows
both sides: interchange training on head outputs alone planted what each role carries but not where it looks
(its first versions showed only the name movers' signatures); with the roles' attention and the name movers'
direct effects asked for as well (``toy.siit``), the labeller recovers every one of its planted roles
(tests/test_roles.py measures it).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

import torch
from torch import Tensor

from . import validate
from .attention import attention_between, attention_patterns
from .attribution import direct_logit_attribution, final_norm_centres, final_norm_scale
from .circuits import Circuit
from .hooks import hook_name, final_residual, logits_at, model_device, run_until
from .identities import Head, HeadLike, as_head, head_name
from .metrics import answer_logit_diff
from .tasks.data import TaskData

# --- Role names (those of toy.ioi_algorithm.ROLES, plus Wang et al.'s other classes) ------------------------------
PREVIOUS_TOKEN = "previous token"
DUPLICATE_TOKEN = "duplicate token"
INDUCTION = "induction"
S_INHIBITION = "s-inhibition"
NAME_MOVER = "name mover"
BACKUP_NAME_MOVER = "backup name mover"
NEGATIVE_NAME_MOVER = "negative name mover"
ROLE_NAMES = (PREVIOUS_TOKEN, DUPLICATE_TOKEN, INDUCTION, S_INHIBITION, NAME_MOVER, BACKUP_NAME_MOVER,
              NEGATIVE_NAME_MOVER)

# --- Thresholds ---------------------------------------------------------------------------------------------------
#: Mean attention from one word to another that counts as "the head looks there". An IOI prompt shows a head
#: 10-20 tokens, so attention spread evenly puts 0.05-0.1 on any one of them; a quarter on one chosen token
#: is several times that and cannot come from spreading.
ATTENTION_MIN = 0.25
#: Direct effect on the logit difference at END, as a fraction of the model's own clean logit difference,
#: from which a head counts as writing the answer (name mover) or against it (negative name mover): a head
#: worth 5 % of the whole margin on its own is a main contributor in a model of tens or hundreds of heads.
DIRECT_MIN = 0.05
#: The copying score asks whether a name's own token is among the top-k logits of the head's OV output; 5 as in
#: Wang et al. (out of a vocabulary of hundreds to ~50k tokens, chance is k / d_vocab).
COPY_TOP_K = 5
#: Fraction of the task's names a head must copy to count as a copier: most of them, not a lucky few.
COPY_MIN = 0.5
#: Rise of the name movers' attention to S (minus that to IO) at END when one head's output at END is replaced
#: by its value on the corrupted (ABC) prompt, averaged over the movers downstream of it: 5 points of
#: attention from a single head is a steering effect; a head the movers do not read moves it by ~0.
INHIBITION_MIN = 0.05
#: Prompts used for the S-inhibition score (one forward pass per prompt and candidate head).
INHIBITION_PROMPTS = 32

THRESHOLDS = {"attention": ATTENTION_MIN, "direct": DIRECT_MIN, "copy": COPY_MIN, "inhibition": INHIBITION_MIN}

#: Score names, the keys of ``RoleLabels.scores``.
SCORE_NAMES = (PREVIOUS_TOKEN, DUPLICATE_TOKEN, INDUCTION, "END->IO", "END->S", "copy", "negative copy",
               "direct effect", S_INHIBITION)
#: The attention-only roles, tried when no effect-based role applies (the best-scoring one wins).
ATTENTION_ROLES = (INDUCTION, DUPLICATE_TOKEN, PREVIOUS_TOKEN)
#: Rows per forward pass while scoring S-inhibition.
MAX_ROWS = 512


# --- Attention signatures -----------------------------------------------------------------------------------------
def with_next_word(task, word: str = "IO", name: str | None = None):
    """``task`` with one more word position: the token right after ``word`` ("IO+1" by default).

    Previous-token heads are read at the token after each name; the IOI task records "S1+1" only.
    """
    name = name or f"{word}+1"
    nxt = task.word_pos[word] + 1
    if (nxt > task.end_pos).any():
        raise ValueError(f"some prompt has no token after {word!r} before END")
    return replace(task, word_pos={**task.word_pos, name: nxt})


def attention_scores(task, patterns: Tensor) -> dict[str, Tensor]:
    """Wang et al.'s attention signatures on the task's prompts, each ``[n_layers, n_heads]``.

    ``patterns``: ``attention_patterns(model, task.clean_tokens)`` ``[n_layers, n, n_heads, seq, seq]``.
    - previous token: mean of S1+1 → S1 and IO+1 → IO (the token after a name looks back at it);
    - duplicate token: S2 → S1 (the repeated name finds its first occurrence);
    - induction: S2 → S1+1 (it finds the token that *followed* the first occurrence);
    - END → IO and END → S (S1 and S2 together): where a name mover reads from.
    """
    task = with_next_word(task)

    def between(query: str, key: str) -> Tensor:
        return attention_between(task, patterns, query, key)
    return {PREVIOUS_TOKEN: (between("S1+1", "S1") + between("IO+1", "IO")) / 2,
            DUPLICATE_TOKEN: between("S2", "S1"),
            INDUCTION: between("S2", "S1+1"),
            "END->IO": between("END", "IO"),
            "END->S": between("END", "S1") + between("END", "S2")}


def stripe_scores(patterns: Tensor, length: int) -> dict[str, Tensor]:
    """Previous-token and induction scores on sequences ``[BOS, x_1..x_T, x_1..x_T]`` (T = ``length``).

    ``patterns`` ``[n_layers, batch, n_heads, 2T+1, 2T+1]``. Previous token: mean attention from each token to
    the one before it (BOS excluded as a query). Induction: from the second copy of x_i to the first copy of
    x_{i+1}, the token that followed x_i last time — the stripe T-1 below the diagonal.
    """
    if patterns.shape[-1] != 2 * length + 1:
        raise ValueError(f"patterns cover {patterns.shape[-1]} positions, expected 2 * {length} + 1")
    q = torch.arange(2, 2 * length + 1)
    second = torch.arange(length + 1, 2 * length + 1)
    prev = patterns[..., q, q - 1].mean((1, -1))
    induction = patterns[..., second, second - length + 1].mean((1, -1))
    return {PREVIOUS_TOKEN: prev.cpu(), INDUCTION: induction.cpu()}


def repeated_sequence_scores(model, n_seqs: int = 8, length: int = 16, seed: int = 0) -> dict[str, Tensor]:
    """``stripe_scores`` on random token sequences repeated once: the task-free test for previous-token and
    induction heads (Olsson et al. 2022). A head can score here and do something else on the task, so
    ``label_heads`` does not use it; it is a cross-check."""
    g = torch.Generator().manual_seed(seed)
    special = set(getattr(model.tokenizer, "all_special_ids", ()))
    ordinary = torch.tensor([i for i in range(model.cfg.d_vocab) if i not in special])
    body = ordinary[torch.randint(len(ordinary), (n_seqs, length), generator=g)]
    bos = getattr(model.tokenizer, "bos_token_id", None)
    first = torch.full((n_seqs, 1), int(ordinary[0]) if bos is None else bos)
    tokens = torch.cat([first, body, body], 1).to(model_device(model))
    return stripe_scores(attention_patterns(model, tokens), length)


# --- Name movers: direct effect and OV copying --------------------------------------------------------------------
def final_norm_linear(model, x: Tensor) -> Tensor:
    """The final norm as a linear map (no bias) on ``x`` ``[..., d_model]``, scaled by ``x``'s own norm:
    what a head's OV output alone would become at the logits (the scale rule is ``attribution``'s)."""
    if final_norm_centres(model):
        x = x - x.mean(-1, keepdim=True)
    out = x.float() / final_norm_scale(model, x)
    w = getattr(model.ln_final, "w", None)
    return out if w is None else out * w.detach().float()


def _head_weight(weight: Tensor, n_heads: int) -> Tensor:
    """[n_heads, ...]: grouped-query models store fewer key/value heads; each serves n_heads / n_kv heads."""
    if weight.shape[0] != n_heads:
        weight = weight.repeat_interleave(n_heads // weight.shape[0], 0)
    return weight.detach()


def direct_effects(model, task) -> Tensor:
    """Each head's direct effect on the logit difference at END over the clean one, ``[n_layers, n_heads]``:
    ``attribution.direct_logit_attribution`` normalised. Positive: the head writes the answer (name mover);
    negative: it writes against it (negative name mover)."""
    ld = answer_logit_diff(logits_at(model, final_residual(model, task.clean_tokens), task.end_pos),
                           task.answers).mean()
    return direct_logit_attribution(model, task) / float(ld)


def name_tokens(task) -> Tensor:
    """The distinct answer tokens of the task (for IOI: every IO and S name it uses), ``[n_names]``."""
    return torch.unique(torch.cat([task.correct, task.wrong]))


def copying_fraction(logits: Tensor, tokens: Tensor, top_k: int = COPY_TOP_K) -> Tensor:
    """Fraction of rows whose own token is among the ``top_k`` logits: ``logits`` ``[..., n, vocab]``,
    ``tokens`` ``[n]`` → ``[...]``."""
    top = logits.topk(top_k, dim=-1).indices
    return (top == tokens.to(top.device)[:, None]).any(-1).float().mean(-1)


def copy_scores(model, names: Tensor, top_k: int = COPY_TOP_K, through_mlp0: bool = True) -> dict[str, Tensor]:
    """Wang et al.'s copying score per head, ``[n_layers, n_heads]``, and its negative twin.

    For each name token: its embedding (after block 0's MLP when ``through_mlp0``: GPT-2 uses that MLP as part
    of its embedding), the head's layer norm, its OV circuit W_V W_O, the final norm and W_U. The copying
    score is the fraction of names whose own token lands in the top ``top_k`` logits; the negative score
    asks the same of the negated output (a head that writes *against* the names it reads). Biases are left
    out: they add the same vector for every name and say nothing about copying.
    """
    x = model.W_E[names.to(model_device(model))].detach()[:, None]  # [N, 1, d]
    if through_mlp0:
        block = model.blocks[0]
        x = x + block.mlp(block.ln2(x))
    positive, negative = [], []
    for layer in range(model.cfg.n_layers):
        attn = model.blocks[layer].attn
        w_v = _head_weight(attn.W_V, model.cfg.n_heads)  # [H, d, d_head]
        w_o = _head_weight(attn.W_O, model.cfg.n_heads)  # [H, d_head, d]
        h_in = model.blocks[layer].ln1(x)[:, 0]  # [N, d]
        for head in range(model.cfg.n_heads):  # one head at a time: [N, vocab] logits, not [H, N, vocab]
            logits = final_norm_linear(model, h_in @ w_v[head] @ w_o[head]) @ model.W_U.detach()
            positive.append(copying_fraction(logits, names, top_k))
            negative.append(copying_fraction(-logits, names, top_k))
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    return {"copy": torch.stack(positive).view(shape).cpu(),
            "negative copy": torch.stack(negative).view(shape).cpu()}


# --- S-inhibition: steering the name movers -----------------------------------------------------------------------
def _mover_attention(patterns: Mapping[int, Tensor], movers: list[Head], task) -> Tensor:
    """(attention to S1 and S2) minus attention to IO from END, per mover and row: ``[n_movers, rows]``.
    ``patterns``: layer → pattern ``[rows, n_heads, seq, seq]``, rows = the task's prompts repeated."""
    n = len(task)
    out = []
    for layer, head in movers:
        p = patterns[layer][:, head]
        rows = torch.arange(p.shape[0], device=p.device)
        pos = {w: task.word_pos[w].repeat(p.shape[0] // n) for w in ("IO", "S1", "S2")}
        end = task.end_pos.repeat(p.shape[0] // n)
        out.append(p[rows, end, pos["S1"]] + p[rows, end, pos["S2"]] - p[rows, end, pos["IO"]])
    return torch.stack(out)


def inhibition_scores(model, task, movers: Iterable[HeadLike], max_prompts: int = INHIBITION_PROMPTS,
                      max_rows: int = MAX_ROWS) -> Tensor:
    """How much each head steers the name movers away from S, ``[n_layers, n_heads]`` (NaN: not measured).

    For each head below the deepest mover: its output *at END* is replaced by its value on the corrupted
    prompt (no repeated name there, so nothing to inhibit), and the rise of the movers' END attention to S
    (S1 + S2) minus to IO is averaged over the prompts and the movers in later layers. An S-inhibition head
    tells the movers which name not to copy; without its message they turn to S. Patching at END only keeps
    out heads that act earlier (induction, duplicate token), whose effect reaches the movers through it.
    Uses the first ``max_prompts`` prompts; one pass per prompt and head.
    """
    movers = sorted(set(map(as_head, movers)))
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    scores = torch.full((n_layers, n_heads), float("nan"))
    if not movers:
        return scores
    task = task.subset(slice(0, min(max_prompts, len(task))))
    n, last = len(task), max(layer for layer, _ in movers)
    if last == 0:  # movers in the first layer: no head can steer them
        return scores
    senders = [Head(l, h) for l in range(last) for h in range(n_heads)]
    corrupted = _z_at_end(model, task, task.corrupted_tokens, last)
    clean_patterns = _patterns_with(model, task, [], corrupted, movers)
    base = _mover_attention(clean_patterns, movers, task).mean(1)  # [n_movers]
    per_chunk = max(1, max_rows // n)
    for start in range(0, len(senders), per_chunk):
        chunk = senders[start:start + per_chunk]
        shift = _mover_attention(_patterns_with(model, task, chunk, corrupted, movers), movers, task)
        shift = shift.view(len(movers), len(chunk), n).mean(-1) - base[:, None]  # [n_movers, chunk]
        for j, (layer, head) in enumerate(chunk):
            downstream = torch.tensor([m.layer > layer for m in movers])
            if downstream.any():
                scores[layer, head] = shift[downstream, j].mean().item()
    return scores


def _z_at_end(model, task, tokens: Tensor, last: int) -> list[Tensor]:
    """z at END for layers 0..last-1 on ``tokens``: ``[n, n_heads, d_head]`` each."""
    rows = torch.arange(len(task), device=tokens.device)
    store: list = [None] * last

    def keep(layer):
        def hook(z, hook):  # noqa: ARG001
            store[layer] = z[rows, task.end_pos].detach().clone()
        return hook
    run_until(model, tokens, [(hook_name(l, "z"), keep(l)) for l in range(last)],
              stop_after=hook_name(last - 1, "z"))
    return store


def _patterns_with(model, task, senders: list[Head], corrupted: list[Tensor], movers: list[Head]):
    """Movers' patterns on the clean prompts, one block of rows per sender whose END output is corrupted
    (one block of plain clean rows when ``senders`` is empty): layer → ``[rows, n_heads, seq, seq]``."""
    n, blocks = len(task), max(1, len(senders))
    tokens = task.clean_tokens.repeat(blocks, 1)
    end = task.end_pos
    got: dict[int, Tensor] = {}

    def patch(layer):
        mine = [(j, h) for j, (l, h) in enumerate(senders) if l == layer]

        def hook(z, hook):  # noqa: ARG001
            z = z.clone()
            for j, head in mine:
                rows = torch.arange(j * n, (j + 1) * n, device=z.device)
                z[rows, end, head] = corrupted[layer][:, head].to(z.dtype)
            return z
        return hook

    def keep(layer):
        def hook(pattern, hook):  # noqa: ARG001
            got[layer] = pattern.detach().clone()
        return hook
    layers = sorted({m.layer for m in movers})
    hooks = [(hook_name(l, "z"), patch(l)) for l in sorted({s.layer for s in senders})]
    hooks += [(hook_name(l, "pattern"), keep(l)) for l in layers]
    run_until(model, tokens, hooks, stop_after=hook_name(layers[-1], "pattern"))
    return got


# --- From scores to labels ----------------------------------------------------------------------------------------
def assign_roles(scores: Mapping[str, Tensor], thresholds: Mapping[str, float] | None = None,
                 heads: Iterable[HeadLike] | None = None) -> dict[Head, str]:
    """Labels from signature scores (``SCORE_NAMES``, each ``[n_layers, n_heads]``); heads with none are left
    out. First rule that applies, latest step of the IOI flow first:

    1. direct effect ≥ ``direct`` → name mover; ≤ -``direct`` → negative name mover;
    2. END → IO exceeds END → S by ``attention`` and copy ≥ ``copy``, but little direct effect → backup
       name mover (the mechanism, unused on clean prompts; Wang et al. saw such heads take over when the name
       movers are ablated). A head that reads both names alike moves no answer, whatever it copies;
    3. S-inhibition ≥ ``inhibition`` → s-inhibition;
    4. of induction, duplicate token, previous token, the highest attention score ≥ ``attention``.

    ``thresholds`` overrides some of ``THRESHOLDS``; ``heads`` restricts the labelling (e.g. to a circuit
    found by a search).
    """
    t = {**THRESHOLDS, **(thresholds or {})}
    unknown = set(t) - set(THRESHOLDS)
    if unknown:
        raise ValueError(f"unknown threshold(s) {sorted(unknown)}; known: {sorted(THRESHOLDS)}")
    missing = [s for s in SCORE_NAMES if s not in scores]
    if missing:
        raise ValueError(f"scores lack {missing}; label_heads computes all of {list(SCORE_NAMES)}")
    shape = scores[SCORE_NAMES[0]].shape
    wanted = [Head(l, h) for l in range(shape[0]) for h in range(shape[1])] if heads is None else \
        sorted(set(map(as_head, heads)))
    labels = {}
    for head in wanted:
        s = {name: float(scores[name][head]) for name in SCORE_NAMES}
        role = _role(s, t)
        if role:
            labels[head] = role
    return labels


def _role(s: dict[str, float], t: dict[str, float]) -> str | None:
    """One head's role from its scores ``s`` (NaN never clears a threshold)."""
    if s["direct effect"] >= t["direct"]:
        return NAME_MOVER
    if s["direct effect"] <= -t["direct"]:
        return NEGATIVE_NAME_MOVER
    if s["END->IO"] - s["END->S"] >= t["attention"] and s["copy"] >= t["copy"]:
        return BACKUP_NAME_MOVER
    if s[S_INHIBITION] >= t["inhibition"]:
        return S_INHIBITION
    best = max(ATTENTION_ROLES, key=lambda r: s[r])
    return best if s[best] >= t["attention"] else None


@dataclass(frozen=True)
class RoleLabels:
    """Labels with the evidence behind them: ``labels`` (heads with a role only), ``scores`` (signature name →
    ``[n_layers, n_heads]``), the ``thresholds`` used and the ``movers`` the S-inhibition score watched."""

    labels: dict[Head, str]
    scores: dict[str, Tensor] = field(repr=False)
    thresholds: dict[str, float]
    movers: tuple[Head, ...] = ()

    def __getitem__(self, head: HeadLike) -> str | None:
        return self.labels.get(as_head(head))

    def by_role(self) -> dict[str, list[Head]]:
        """Role → heads, in the order of ``ROLE_NAMES``."""
        out: dict[str, list[Head]] = {}
        for role in ROLE_NAMES:
            heads = sorted(h for h, r in self.labels.items() if r == role)
            if heads:
                out[role] = heads
        return out

    def evidence(self, head: HeadLike) -> dict[str, float]:
        """Every signature score of one head."""
        head = as_head(head)
        return {name: float(score[head]) for name, score in self.scores.items()}


def label_heads(model, task, heads: Iterable[HeadLike] | None = None, movers: Iterable[HeadLike] | None = None,
                thresholds: Mapping[str, float] | None = None, through_mlp0: bool = True,
                inhibition_prompts: int = INHIBITION_PROMPTS) -> RoleLabels:
    """Label ``model``'s heads on an IOI ``task`` (``make_task("ioi", model, n)``) by Wang et al.'s signatures.

    ``movers``: the name movers whose attention defines S-inhibition; by default the heads whose direct effect
    clears the threshold. ``heads`` restricts which heads get labels (all scores are computed for all).
    """
    _check_ioi(task)
    task.check_model(model)
    task = task.to(model_device(model))
    scores = attention_scores(task, attention_patterns(model, task.clean_tokens))
    scores["direct effect"] = direct_effects(model, task)
    scores.update(copy_scores(model, name_tokens(task), through_mlp0=through_mlp0))
    t = {**THRESHOLDS, **(thresholds or {})}
    if movers is None:
        movers = [Head(*hc) for hc in (scores["direct effect"] >= t["direct"]).nonzero().tolist()]
    movers = tuple(sorted(set(map(as_head, movers))))
    scores[S_INHIBITION] = inhibition_scores(model, task, movers, max_prompts=inhibition_prompts)
    return RoleLabels(assign_roles(scores, t, heads), scores, t, movers)


#: The word positions the signatures read
IOI_POSITIONS = ("IO", "S1", "S2", "S1+1", "END")


def _check_ioi(task) -> None:
    """The signatures are IOI's: refuse anything but an IOI ``TaskData`` before any pass runs."""
    if not isinstance(task, TaskData):
        raise validate.InputError(f"label_heads reads an IOI task (make_task('ioi', model, n)), got "
                                  f"{type(task).__name__}")
    missing = [p for p in IOI_POSITIONS if p not in task.word_pos]
    if missing:
        raise validate.InputError(f"label_heads reads IOI's word positions, and task {task.name!r} lacks "
                                  f"{', '.join(missing)}: pass make_task('ioi', model, n)")


# --- Against a known circuit --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recovery:
    """How many of a known circuit's heads got their own role: ``recovered`` (head → its role) and ``missed``
    (head → (its role, the label it got or None))."""

    recovered: dict[Head, str]
    missed: dict[Head, tuple[str, str | None]]

    @property
    def total(self) -> int:
        return len(self.recovered) + len(self.missed)

    @property
    def fraction(self) -> float:
        return len(self.recovered) / self.total if self.total else float("nan")

    @property
    def per_role(self) -> dict[str, tuple[int, int]]:
        """True role → (heads recovered, heads with that role)."""
        roles = list(self.recovered.values()) + [role for role, _ in self.missed.values()]
        got = list(self.recovered.values())
        return {role: (got.count(role), roles.count(role)) for role in dict.fromkeys(roles)}

    def __str__(self) -> str:
        text = f"recovered {len(self.recovered)}/{self.total}"
        if self.missed:
            text += "; missed " + ", ".join(f"{head_name(h)} ({role}; labelled {label or 'nothing'})"
                                            for h, (role, label) in sorted(self.missed.items()))
        return text


def recovery(labels: RoleLabels | Mapping[HeadLike, str], truth: Circuit) -> Recovery:
    """Which of ``truth``'s heads (those with a role, e.g. ``planted_truth()``) were labelled with their role."""
    if not truth.roles:
        raise ValueError(f"circuit {truth.name or '(unnamed)'} has no roles to recover")
    given = labels.labels if isinstance(labels, RoleLabels) else {as_head(h): r for h, r in labels.items()}
    recovered = {h: role for h, role in truth.roles.items() if given.get(h) == role}
    missed = {h: (role, given.get(h)) for h, role in truth.roles.items() if given.get(h) != role}
    return Recovery(recovered, missed)
