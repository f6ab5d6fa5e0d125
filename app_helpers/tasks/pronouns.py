"""Gendered pronouns (Mathwin et al. 2023): "So Mary is a really great friend, isn't" → " she" (vs " he").

Half the prompts use a male name, half a female one. The corruption removes the gender cue: the name
becomes " person" and the opening "So" becomes "That" (same token counts).
"""
from __future__ import annotations

import random

from . import words
from .base import Example, Tok, TaskSpec, balanced, keep_words, require, strip_slots

GENDERS = ("male", "female")


class GenderedPronouns(TaskSpec):
    name = "gendered_pronouns"
    summary = "So [NAME] is a really great friend, isn't → he/she"
    positions = {"SO": ("SO", 0), "NAME": ("NAME", 0)}

    def templates(self, **options) -> list[str]:
        return list(words.PRONOUN_TEMPLATES)

    def pools(self, tok: Tok | None, **options) -> dict:
        if tok is None:
            return {"male": list(words.MALE_NAMES), "female": list(words.FEMALE_NAMES)}
        fixed = [words.PRONOUN_CLEAN_START, words.PRONOUN_CORRUPT_START, " " + words.PRONOUN_CORRUPT_NAME]
        require([w for w in fixed if tok.single_id(w) is not None], fixed, "fixed words", len(fixed), "one token")
        return {"male": keep_words(tok, words.MALE_NAMES, "male names", minimum=1),
                "female": keep_words(tok, words.FEMALE_NAMES, "female names", minimum=1)}

    def sample(self, rng: random.Random, n: int, pools: dict) -> list[Example]:
        out = []
        for i, t in enumerate(balanced(rng, n, len(words.PRONOUN_TEMPLATES))):
            gender, other = GENDERS[i % 2], GENDERS[1 - i % 2]
            clean = {"SO": words.PRONOUN_CLEAN_START, "NAME": rng.choice(pools[gender])}
            corrupted = {"SO": words.PRONOUN_CORRUPT_START, "NAME": words.PRONOUN_CORRUPT_NAME}
            out.append(Example(group=t, clean=clean, corrupted=corrupted,
                               correct=(words.PRONOUNS[gender],), wrong=(words.PRONOUNS[other],)))
        return out

    def vocabulary(self) -> list[str]:
        return ([strip_slots(t) for t in words.PRONOUN_TEMPLATES] + list(words.NAMES)
                + [words.PRONOUN_CLEAN_START, words.PRONOUN_CORRUPT_START, words.PRONOUN_CORRUPT_NAME,
                   *words.PRONOUNS.values()])


TASK = GenderedPronouns()
