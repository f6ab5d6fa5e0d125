"""Indirect Object Identification (Wang et al. 2022): "... Mary and John ... John gave a drink to" → " Mary".

Every template exists in ABBA order (IO named first) and BABA order (S first); prompts alternate between
the two, so each makes up half the dataset. Each (template, order) pair is its own group.
"""
from __future__ import annotations

import random

from . import words
from .base import Example, Tok, TaskSpec, balanced, choose_option, distinct, keep_words, strip_slots

#: corruption name → what it does to the clean ABB name slots (IO, S1, S2).
CORRUPTIONS = {
    "ABC": "IO, S1 and S2 all replaced by three fresh distinct names (the paper's default)",
    "ABA": "S2 replaced by the IO name (ABB → ABA)",
    "ABD": "S2 alone replaced by a fresh name (ABB → ABD)",
}


class IOI(TaskSpec):
    name = "ioi"
    summary = "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to → [A]"
    positions = {"IO": ("IO", 0), "S1": ("S1", 0), "S2": ("S2", 0), "S1+1": ("S1", 1)}
    option_defaults = {"corruption": "ABC"}

    def templates(self, **options) -> list[str]:
        out = []
        for t in words.IOI_TEMPLATES:
            out += [t, t.replace("{IO}", "{_}").replace("{S1}", "{IO}").replace("{_}", "{S1}")]
        return out

    def pools(self, tok: Tok | None, **options) -> dict:
        if tok is None:
            return {"names": list(words.NAMES), "places": list(words.PLACES), "objects": list(words.OBJECTS)}
        return {"names": keep_words(tok, words.NAMES, "IOI names", minimum=5),
                "places": keep_words(tok, words.PLACES, "IOI places", minimum=1),
                "objects": keep_words(tok, words.OBJECTS, "IOI objects", minimum=1)}

    def sample(self, rng: random.Random, n: int, pools: dict, corruption: str = "ABC") -> list[Example]:
        choose_option(corruption, CORRUPTIONS, "IOI corruption")
        out = []
        for i, t in enumerate(balanced(rng, n, len(words.IOI_TEMPLATES))):
            io, s = distinct(rng, pools["names"], 2)
            clean = {"IO": io, "S1": s, "S2": s, "PLACE": rng.choice(pools["places"]),
                     "OBJECT": rng.choice(pools["objects"])}
            if corruption == "ABC":
                new = dict(zip(("IO", "S1", "S2"), distinct(rng, pools["names"], 3, exclude=(io, s))))
            elif corruption == "ABA":
                new = {"S2": io}
            else:
                new = {"S2": distinct(rng, pools["names"], 1, exclude=(io, s))[0]}
            out.append(Example(group=2 * t + i % 2, clean=clean, corrupted={**clean, **new},
                               correct=(" " + io,), wrong=(" " + s,)))
        return out

    def vocabulary(self) -> list[str]:
        stories = words.IOI_STORY_PREAMBLES + words.IOI_DISTRACTOR_CLOSINGS
        return [strip_slots(t) for t in words.IOI_TEMPLATES + stories] + list(words.NAMES + words.PLACES
                                                                            + words.OBJECTS)


TASK = IOI()
