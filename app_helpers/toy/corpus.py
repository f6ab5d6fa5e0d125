"""Training sentences for the bundled model, drawn from the tasks' own templates and word lists.

A source is either a task of ``app_helpers.tasks`` (its prompts exactly as the datasets make them, with
the answer) or one of the IOI *stories* below, which recombine the IOI templates' openings and closings
(``tasks.words``) with what defeats one-layer shortcuts: preamble sentences mentioning the story's names
(so counting names fails), another name after the subject (so "suppress the most recent name" fails),
and people with two-token names that share their tokens ("Mary John" and "John Mary": only whole-name
matching tells them apart). Every item is (prompt, answer); the answer's tokens get the answer weight.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from ..tasks import TASKS, generate_sentences, words
from ..tasks.base import fill

_OPENINGS, _CLOSINGS = zip(*(t.split("{S2}", 1) for t in words.IOI_TEMPLATES))
OPENINGS = tuple(o.rstrip() for o in _OPENINGS)
CLOSINGS = tuple("{S2}" + c for c in _CLOSINGS)
PREAMBLE_COUNTS = (0, 1, 1, 2)
P_PREAMBLE_NAMES_FROM_STORY = 0.7
P_DISTRACTOR_CLOSING = 0.4


def _names(rng: random.Random, k: int) -> list[str]:
    return rng.sample(words.NAMES, k)


def _opening(rng: random.Random, io: str, s: str, place: str, obj: str) -> str:
    first, second = (io, s) if rng.random() < 0.5 else (s, io)  # ABBA or BABA
    return fill(rng.choice(OPENINGS), {"IO": first, "S1": second, "PLACE": place, "OBJECT": obj})


def ioi_story(rng: random.Random) -> tuple[str, str]:
    """Preamble (0–2 sentences) + an IOI opening + a closing, possibly with a distractor name."""
    io, s, c, d = _names(rng, 4)
    place, obj = rng.choice(words.PLACES), rng.choice(words.OBJECTS)
    preamble = []
    for _ in range(rng.choice(PREAMBLE_COUNTS)):
        pool = [io, s, c, d] if rng.random() < P_PREAMBLE_NAMES_FROM_STORY else [c, d]
        n, m = rng.sample(pool, 2)
        preamble.append(fill(rng.choice(words.IOI_STORY_PREAMBLES),
                             {"N": n, "M": m, "PLACE2": rng.choice(words.PLACES),
                              "OBJECT2": rng.choice(words.OBJECTS)}))
    closings = words.IOI_DISTRACTOR_CLOSINGS if rng.random() < P_DISTRACTOR_CLOSING else CLOSINGS
    closing = fill(rng.choice(closings), {"S2": s, "C": c, "OBJECT": obj, "PLACE": place})
    return " ".join([*preamble, _opening(rng, io, s, place, obj), closing]), " " + io


def full_name_ioi(rng: random.Random) -> tuple[str, str]:
    """IOI between "a b" and "b a": every token occurs equally often, only whole names differ."""
    a, b = rng.sample(words.NAMES if rng.random() < 0.5 else words.SURNAMES, 2)
    subject, io = f"{a} {b}", f"{b} {a}"
    place, obj = rng.choice(words.PLACES), rng.choice(words.OBJECTS)
    closing = fill(rng.choice(CLOSINGS), {"S2": subject, "OBJECT": obj, "PLACE": place})
    return f"{_opening(rng, io, subject, place, obj)} {closing}", " " + io


STORIES = {"ioi_story": ioi_story, "full_name_ioi": full_name_ioi}


@dataclass(frozen=True)
class Source:
    """One stream of training items: a task name (with generator options) or a story kind, and a weight."""

    name: str
    weight: float
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in TASKS and self.name not in STORIES:
            raise ValueError(f"unknown training source {self.name!r}; use a task ({', '.join(TASKS)}) or a "
                             f"story ({', '.join(STORIES)})")

    def draw(self, rng: random.Random, k: int) -> list[tuple[str, str]]:
        if self.name in STORIES:
            return [STORIES[self.name](rng) for _ in range(k)]
        return [(s.text, s.answer) for s in generate_sentences(self.name, k, rng.randrange(2**31), **self.options)]


def sample_texts(rng: random.Random, sources: list[Source], k: int) -> list[tuple[str, str]]:
    """``k`` (prompt, answer) pairs, each source drawn with probability proportional to its weight."""
    picks = rng.choices(range(len(sources)), [s.weight for s in sources], k=k)
    pairs = [pair for i, source in enumerate(sources) if picks.count(i)
             for pair in source.draw(rng, picks.count(i))]
    rng.shuffle(pairs)
    return pairs


def encode_batch(tokenizer, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids [k, seq] (BOS first, right-padded), language-model labels (-100 on padding) and a mask
    [k, seq] of the answer's tokens (the tokens after each prompt)."""
    prompts = [[tokenizer.bos_token_id] + tokenizer.encode(p) for p, _ in pairs]
    ids = [row + tokenizer.encode(a) for row, (_, a) in zip(prompts, pairs)]
    if any(tokenizer.unk_token_id in row for row in ids):
        bad = next(p + a for (p, a), row in zip(pairs, ids) if tokenizer.unk_token_id in row)
        raise ValueError(f"a training sentence has words outside the tokenizer's vocabulary: {bad!r}")
    width = max(map(len, ids))
    tokens = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(tokens, -100)
    answers = torch.zeros_like(tokens, dtype=torch.bool)
    for i, (row, prompt) in enumerate(zip(ids, prompts)):
        tokens[i, :len(row)] = torch.tensor(row)
        labels[i, :len(row)] = torch.tensor(row)
        answers[i, len(prompt):len(row)] = True
    return tokens, labels, answers
