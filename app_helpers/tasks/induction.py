"""Name induction: a two-token name seen earlier is started again; the model must complete it.

"Yesterday, Delilah went to the park. Today, Del" → "ilah". The name must be exactly two tokens:
``names="single"`` uses rare first names the tokenizer splits in two (GPT-2 style, as the APP authors
did), ``names="full"`` uses first name + surname pairs (" Mary" + " Smith"; the only choice for a
word-level tokenizer), ``"auto"`` (default) takes "single" when at least ``MIN_SINGLE`` such names exist.
Corruption: the earlier name becomes another name B and the final first token that of a third name C,
so there is nothing to copy; the wrong answer is C's second token. A, B and C share no token.
"""
from __future__ import annotations

import itertools
import random

from . import words
from .base import Example, Tok, TaskSpec, balanced, choose_option, keep_words, require, strip_slots

NAME_STYLES = ("auto", "single", "full")
MIN_SINGLE = 10


class NameInduction(TaskSpec):
    name = "name_induction"
    summary = "Yesterday, [AB] went to the [PLACE]. Today, [A] → [B]  (two-token name)"
    positions = {"NAME": ("NAME", 0), "NAME+1": ("NAME", 1)}
    option_defaults = {"names": "auto"}

    def templates(self, **options) -> list[str]:
        return list(words.INDUCTION_TEMPLATES)

    def pools(self, tok: Tok | None, names: str = "auto") -> dict:
        style = choose_option(names, NAME_STYLES, "name style")
        if tok is None:
            if style == "single":
                raise ValueError("names='single' needs a tokenizer to split names; use names='full'")
            style = "full"
        places, objects = words.PLACES, words.OBJECTS
        if tok is not None:
            places = keep_words(tok, places, "places", minimum=1)
            objects = keep_words(tok, objects, "objects", minimum=1)
        split = _split_names(tok) if tok is not None and style != "full" else []
        if style == "single" or (style == "auto" and len(split) >= MIN_SINGLE):
            require([f + r for f, r in split], words.RARE_NAMES, "rare names", 3, "exactly two tokens")
            pairs = split
        else:
            firsts = words.NAMES if tok is None else keep_words(tok, words.NAMES, "first names", minimum=3)
            lasts = words.SURNAMES if tok is None else keep_words(tok, words.SURNAMES, "surnames", minimum=3)
            pairs = [(f, " " + s) for f, s in itertools.product(firsts, lasts)]
        return {"pairs": pairs, "places": list(places), "objects": list(objects)}

    def sample(self, rng: random.Random, n: int, pools: dict, names: str = "auto") -> list[Example]:
        out = []
        for t in balanced(rng, n, len(words.INDUCTION_TEMPLATES)):
            (a1, a2), (b1, b2), (c1, c2) = _three_unrelated(rng, pools["pairs"])
            place, obj = rng.choice(pools["places"]), rng.choice(pools["objects"])
            clean = {"NAME": a1 + a2, "FIRST": a1, "PLACE": place, "OBJECT": obj}
            out.append(Example(group=t, clean=clean, corrupted={**clean, "NAME": b1 + b2, "FIRST": c1},
                               correct=(a2,), wrong=(c2,)))
        return out

    def vocabulary(self) -> list[str]:
        return ([strip_slots(t) for t in words.INDUCTION_TEMPLATES]
                + list(words.NAMES + words.SURNAMES + words.PLACES + words.OBJECTS))


def _split_names(tok: Tok) -> list[tuple[str, str]]:
    """(first part, second part) of names that encode as two tokens, each part re-encoding to its token."""
    out = []
    for name in words.RARE_NAMES:
        ids = tok.encode(" " + name)
        if len(ids) != 2:
            continue
        first, rest = tok.tokenizer.decode(ids[:1]), tok.tokenizer.decode(ids[1:])
        if first.startswith(" ") and tok.encode(first) == ids[:1] and tok.encode(rest) == ids[1:]:
            out.append((first[1:], rest))
    return out


def _three_unrelated(rng: random.Random, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Three names with pairwise different first parts and different second parts."""
    for _ in range(1000):
        chosen = rng.sample(pairs, 3)
        if len({p[0] for p in chosen}) == 3 and len({p[1] for p in chosen}) == 3:
            return chosen
    raise ValueError("could not find three names with distinct first and second tokens; add names")


TASK = NameInduction()
