"""Training sentences for the bundled model, drawn from the tasks' own generators.

Every source is a task name from ``app_helpers.tasks`` (with its options), so the model is trained on
exactly the templates and word lists it is later probed with; a sentence is the prompt followed by its
answer. The mixture weights say how often each source is drawn.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from ..tasks import generate_sentences


@dataclass(frozen=True)
class Source:
    """One stream of sentences: a task (and its generator options) with a mixture weight."""

    task: str
    weight: float
    options: dict = field(default_factory=dict)


def sample_texts(rng: random.Random, sources: list[Source], k: int) -> list[tuple[str, str]]:
    """``k`` (prompt, answer) pairs, each source drawn with probability proportional to its weight."""
    picks = rng.choices(range(len(sources)), [s.weight for s in sources], k=k)
    pairs: list[tuple[str, str]] = []
    for i, source in enumerate(sources):
        count = picks.count(i)
        if count:
            pairs += [(s.text, s.answer) for s in generate_sentences(source.task, count, rng.randrange(2**31),
                                                                      **source.options)]
    rng.shuffle(pairs)
    return pairs


def encode_batch(tokenizer, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids [k, seq] (BOS first, right-padded), language-model labels (-100 on padding) and the
    position of each sentence's answer token [k] (the first token after its prompt)."""
    prompts = [[tokenizer.bos_token_id] + tokenizer.encode(p) for p, _ in pairs]
    ids = [row + tokenizer.encode(a) for row, (_, a) in zip(prompts, pairs)]
    if any(tokenizer.unk_token_id in row for row in ids):
        bad = next(p + a for (p, a), row in zip(pairs, ids) if tokenizer.unk_token_id in row)
        raise ValueError(f"a training sentence has words outside the tokenizer's vocabulary: {bad!r}")
    width = max(map(len, ids))
    tokens = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(tokens, -100)
    for i, row in enumerate(ids):
        tokens[i, :len(row)] = torch.tensor(row)
        labels[i, :len(row)] = torch.tensor(row)
    return tokens, labels, torch.tensor([len(p) for p in prompts])
