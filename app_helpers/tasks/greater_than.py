"""Greater-Than (Hanna et al. 2023): "The war lasted from the year 1732 to the year 17" → YY in 33..99.

The year is written "17" + "YY": GPT-2 splits " 1732" into " 17" + "32" (the word-level tokenizer splits
digit pairs the same way), so YY is one token and the answer is one of the tokens "00".."99". Correct
answers are YY+1..99, wrong ones 00..YY-1 (method.md; Hanna et al. also count YY itself as wrong). YY is
drawn from 02..98 so both sets are non-empty; the corruption sets YY to 01. Years whose "17YY" the
tokenizer does not split as " 17" + "YY" (GPT-2: 1700) are never drawn.
"""
from __future__ import annotations

import random

from . import words
from .base import Example, Tok, TaskSpec, balanced, keep_words, require, strip_slots

DRAWN = tuple(f"{y:02d}" for y in range(2, 99))


class GreaterThan(TaskSpec):
    name = "greater_than"
    summary = "The [NOUN] lasted from the year 17YY to the year 17 → YY+1..99"
    positions = {"NOUN": ("NOUN", 0), "YY": ("YY", 0)}

    def templates(self, **options) -> list[str]:
        return list(words.GREATER_THAN_TEMPLATES)

    def pools(self, tok: Tok | None, **options) -> dict:
        if tok is None:
            return {"nouns": list(words.EVENT_NOUNS), "years": list(DRAWN)}
        suffixes = words.YEAR_SUFFIXES
        require([y for y in suffixes if tok.single_id(y) is not None], suffixes, "two-digit year endings",
                len(suffixes), "one token")
        century = tok.single_id(" " + words.CENTURY)

        def splits(yy: str) -> bool:
            return century is not None and tok.encode(f" {words.CENTURY}{yy}") == [century, tok.single_id(yy)]

        how = f"' {words.CENTURY}' + YY when written ' {words.CENTURY}YY'"
        corrupt = words.GREATER_THAN_CORRUPT_YY
        require([corrupt] if splits(corrupt) else [], [corrupt], "corrupted year endings", 1, how)
        years = [y for y in DRAWN if splits(y)]
        require(years, DRAWN, "year endings", 1, how)
        return {"nouns": keep_words(tok, words.EVENT_NOUNS, "event nouns", minimum=1), "years": years}

    def sample(self, rng: random.Random, n: int, pools: dict) -> list[Example]:
        out = []
        for t in balanced(rng, n, len(words.GREATER_THAN_TEMPLATES)):
            yy = rng.choice(pools["years"])
            clean = {"NOUN": rng.choice(pools["nouns"]), "YY": yy}
            out.append(Example(group=t, clean=clean,
                               corrupted={**clean, "YY": words.GREATER_THAN_CORRUPT_YY},
                               correct=words.YEAR_SUFFIXES[int(yy) + 1:],
                               wrong=words.YEAR_SUFFIXES[: int(yy)]))
        return out

    def vocabulary(self) -> list[str]:
        return ([strip_slots(t) for t in words.GREATER_THAN_TEMPLATES] + list(words.EVENT_NOUNS)
                + list(words.YEAR_SUFFIXES))


TASK = GreaterThan()
