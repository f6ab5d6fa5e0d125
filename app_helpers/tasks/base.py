"""Machinery shared by all tasks: templates → word pieces → exact token ids and positions.

A task only says which words go into which template slots (an ``Example``); everything that must be exact
is done here once: tokenising word by word (so every slot's token position is known, not searched for),
checking that this equals tokenising the whole prompt, checking that clean and corrupted prompts have the
same length and the same slot positions, and padding on the right.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import torch

from .data import Answers, TaskData

_SLOT = re.compile(r"( ?)\{(\w+)\}")


def pieces(template: str, values: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Split a filled template into (text, slot name or None); a space before a slot goes with its word."""
    out, last = [], 0
    for m in _SLOT.finditer(template):
        if m.start() > last:
            out.append((template[last:m.start()], None))
        out.append((m.group(1) + values[m.group(2)], m.group(2)))
        last = m.end()
    if last < len(template):
        out.append((template[last:], None))
    return out


def fill(template: str, values: Mapping[str, str]) -> str:
    return "".join(text for text, _ in pieces(template, values))


def slot_names(template: str) -> list[str]:
    return [m.group(2) for m in _SLOT.finditer(template)]


def strip_slots(template: str) -> str:
    """The template's literal text (for collecting a vocabulary)."""
    return _SLOT.sub(" ", template)


@dataclass(frozen=True)
class Example:
    """One prompt pair before tokenisation. Answers are exact continuation texts (``" Mary"``, ``"45"``)."""

    group: int
    clean: Mapping[str, str]
    corrupted: Mapping[str, str]
    correct: tuple[str, ...]
    wrong: tuple[str, ...]


class Sentence(NamedTuple):
    """A clean prompt and one correct continuation, without any tokenizer (training data)."""

    text: str
    answer: str
    group: int


class Tok:
    """The few tokenizer operations the tasks need; unknown-token ids count as failures."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.unk_id = tokenizer.unk_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def single_id(self, text: str) -> int | None:
        ids = self.encode(text)
        return ids[0] if len(ids) == 1 and ids[0] != self.unk_id else None

    @property
    def is_bpe(self) -> bool:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        return backend is not None and type(backend.model).__name__ == "BPE"

    @property
    def bos_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        if bos is None:
            raise ValueError("the tokenizer has no BOS token; pass prepend_bos=False to make_task")
        return bos

    @property
    def pad_id(self) -> int:
        """Any id works (padding is right of every real token and masked by ``attention_mask``)."""
        for tid in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, self.tokenizer.bos_token_id):
            if tid is not None:
                return tid
        return 0


def keep_words(tok: Tok, words: Iterable[str], what: str, minimum: int, prefix: str = " ") -> list[str]:
    """The words that ``prefix + word`` encodes as exactly one known token; fail clearly if too few."""
    words = list(words)
    kept = [w for w in words if tok.single_id(prefix + w) is not None]
    require(kept, words, what, minimum, "one token" + (f" after {prefix!r}" if prefix else ""))
    return kept


def require(kept: Sequence, candidates: Sequence, what: str, minimum: int, how: str) -> None:
    if len(kept) < minimum:
        rejected = [c for c in candidates if c not in kept]
        raise ValueError(f"only {len(kept)} of {len(candidates)} {what} encode as {how} with this tokenizer, "
                         f"need at least {minimum}. Rejected: {', '.join(map(repr, rejected))}. Use a tokenizer "
                         "whose vocabulary holds these words (e.g. app_helpers.wordlevel.word_level_tokenizer())")


def balanced(rng: random.Random, n: int, k: int) -> list[int]:
    """n draws from range(k), each value used equally often (±1): concatenated shuffled permutations."""
    out: list[int] = []
    while len(out) < n:
        perm = list(range(k))
        rng.shuffle(perm)
        out.extend(perm)
    return out[:n]


def distinct(rng: random.Random, pool: Sequence, k: int, exclude: Iterable = ()) -> list:
    """k distinct items of ``pool`` not in ``exclude``."""
    exclude = set(exclude)
    options = [w for w in pool if w not in exclude]
    if len(options) < k:
        raise ValueError(f"need {k} distinct words besides {sorted(exclude)}, only {len(options)} available")
    return rng.sample(options, k)


class TaskSpec:
    """What a task module defines: the class attributes below and the four methods."""

    name: str = ""
    summary: str = ""
    #: word_pos name → (slot, token offset from the slot's first token); "END" is always added.
    positions: dict[str, tuple[str, int]] = {}
    option_defaults: dict[str, Any] = {}
    metric = "logit_diff"
    bpe_only = False

    def resolve(self, tok: "Tok | None", options: dict[str, Any]) -> dict[str, Any]:
        """Options whose default depends on the tokenizer ("auto") made concrete; the rest as given."""
        return options

    def templates(self, **options) -> list[str]:
        """One template per group id."""
        raise NotImplementedError

    def pools(self, tok: Tok | None, **options) -> dict[str, Any]:
        """Word lists for sampling: filtered for ``tok``, or the raw lists when ``tok`` is None."""
        raise NotImplementedError

    def sample(self, rng: random.Random, n: int, pools: dict[str, Any], **options) -> list[Example]:
        raise NotImplementedError

    def vocabulary(self) -> list[str]:
        """Every text the task can put in a prompt or answer (the word-level tokenizer is built from it)."""
        raise NotImplementedError


def build(spec: TaskSpec, templates: Sequence[str], examples: Sequence[Example], tok: Tok,
          prepend_bos: bool, metric: str, options: dict[str, Any]) -> TaskData:
    """Tokenise examples exactly; see the module docstring for what is checked."""
    bos = [tok.bos_id] if prepend_bos else []
    rows: list[tuple[list[int], list[int]]] = []
    word_pos: dict[str, list[int]] = {k: [] for k in (*spec.positions, "END")}
    answers: tuple[list[list[int]], list[list[int]]] = ([], [])
    for i, ex in enumerate(examples):
        template = templates[ex.group]
        clean, clean_starts = _encode(tok, template, ex.clean)
        corrupt, corrupt_starts = _encode(tok, template, ex.corrupted)
        if len(clean) != len(corrupt) or clean_starts != corrupt_starts:
            raise ValueError(f"prompt {i}: the corrupted words change token positions "
                             f"(clean {clean_starts}, corrupted {corrupt_starts}) in template {template!r}")
        rows.append((bos + clean, bos + corrupt))
        for name, (slot, offset) in spec.positions.items():
            word_pos[name].append(len(bos) + clean_starts[slot] + offset)
        word_pos["END"].append(len(bos) + len(clean) - 1)
        for out, texts in zip(answers, (ex.correct, ex.wrong)):
            out.append([_answer_id(tok, a, i) for a in texts])
    lengths = torch.tensor([len(c) for c, _ in rows])
    groups = torch.tensor([ex.group for ex in examples])
    _check_group_lengths(lengths, groups, templates)
    seq = int(lengths.max())
    clean_t = torch.full((len(rows), seq), tok.pad_id, dtype=torch.long)
    corrupt_t = clean_t.clone()
    for i, (c, k) in enumerate(rows):
        clean_t[i, : len(c)] = torch.tensor(c)
        corrupt_t[i, : len(k)] = torch.tensor(k)
    return TaskData(
        name=spec.name,
        clean_prompts=[fill(templates[ex.group], ex.clean) for ex in examples],
        corrupted_prompts=[fill(templates[ex.group], ex.corrupted) for ex in examples],
        clean_tokens=clean_t, corrupted_tokens=corrupt_t,
        attention_mask=torch.arange(seq)[None, :] < lengths[:, None],
        end_pos=lengths - 1, answers=Answers(*_pad_sets(answers[0]), *_pad_sets(answers[1])),
        groups=groups, templates=list(templates),
        word_pos={k: torch.tensor(v) for k, v in word_pos.items()},
        metric=metric, options=options, tokenizer=tok.tokenizer)


def _encode(tok: Tok, template: str, values: Mapping[str, str]) -> tuple[list[int], dict[str, int]]:
    """Token ids word by word and each slot's first-token index; must equal tokenising the whole text."""
    ids: list[int] = []
    starts: dict[str, int] = {}
    for text, slot in pieces(template, values):
        if slot is not None:
            starts.setdefault(slot, len(ids))
        ids.extend(tok.encode(text))
    whole = tok.encode(fill(template, values))
    if whole != ids:
        raise ValueError(f"{fill(template, values)!r} tokenizes differently as a whole than word by word "
                         f"({whole} vs {ids}); a word merges with its neighbours for this tokenizer")
    if tok.unk_id is not None and tok.unk_id in ids:
        raise ValueError(f"{fill(template, values)!r} contains words unknown to this tokenizer")
    return ids, starts


def _answer_id(tok: Tok, text: str, i: int) -> int:
    tid = tok.single_id(text)
    if tid is None:
        raise ValueError(f"prompt {i}: answer {text!r} is not a single known token for this tokenizer")
    return tid


def _pad_sets(sets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    k = max(len(s) for s in sets)
    ids = torch.zeros((len(sets), k), dtype=torch.long)
    mask = torch.zeros((len(sets), k), dtype=torch.bool)
    for i, s in enumerate(sets):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    return ids, mask


def _check_group_lengths(lengths: torch.Tensor, groups: torch.Tensor, templates: Sequence[str]) -> None:
    for g in groups.unique().tolist():
        sizes = lengths[groups == g].unique()
        if len(sizes) > 1:
            raise ValueError(f"prompts of template {templates[g]!r} have different token lengths "
                             f"{sizes.tolist()}; per-position group means would mix positions")


def resolve_options(spec: TaskSpec, options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(spec.option_defaults))
    if unknown:
        allowed = ", ".join(spec.option_defaults) or "none"
        raise ValueError(f"unknown option(s) {unknown} for task {spec.name!r}; allowed: {allowed}")
    return {**spec.option_defaults, **options}


def choose_option(value: str, allowed: Iterable[str], what: str) -> str:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {allowed}")
    return value

