"""Greater-Than (Hanna et al. 2023): "The war lasted from the year 1732 to the year 17" → YY in 33..99.

Two ways of writing the year, chosen by the tokenizer (option ``digits``; ``"auto"`` picks and says so):

- ``"pairs"`` (GPT-2, the word-level tokenizer): " 1732" is " 17" + "32", so YY is one token and the
  answer is one of the tokens "00".."99". Correct answers are YY+1..99, wrong ones 00..YY-1 (method.md;
  Hanna et al. also count YY itself as wrong). YY is drawn from 02..98 so both sets are non-empty; the
  corruption sets YY to 01. Years whose "17YY" the tokenizer does not split as " 17" + "YY" (GPT-2: 1700)
  are never drawn.
- ``"single"`` (tokenizers that write numbers digit by digit, such as Qwen's): the year is predicted at
  two positions, as the APP authors' code does for such models. Half the prompts end at "17" and ask for
  the tens digit (correct: digits above YY's tens digit, wrong: below it); the other half end at "17" +
  YY's tens digit and ask for the units digit (correct: above YY's, wrong: below). The digit equal to
  YY's is in neither set: at the first position it may still lead to a later year. Each half has its own
  template groups (first the "17" templates, then the "17" + tens-digit ones), so mean ablation by group
  never mixes the two positions. Corruption: YY = 01, as above; the appended tens digit stays the clean one.
"""
from __future__ import annotations

import random

from . import words
from .base import Example, Tok, TaskSpec, balanced, choose_option, keep_words, require, strip_slots

DRAWN = tuple(f"{y:02d}" for y in range(2, 99))
DIGITS = tuple(str(d) for d in range(10))
DIGIT_MODES = ("auto", "pairs", "single")
#: appended to each template for the second position of the ``"single"`` variant (YY's tens digit)
TENS_SLOT = "{TENS}"


class GreaterThan(TaskSpec):
    name = "greater_than"
    summary = "The [NOUN] lasted from the year 17YY to the year 17 → YY+1..99"
    positions = {"NOUN": ("NOUN", 0), "YY": ("YY", 0)}
    option_defaults = {"digits": "auto"}

    def resolve(self, tok: Tok | None, options: dict) -> dict:
        digits = choose_option(options["digits"], DIGIT_MODES, "year-digit mode (option digits)")
        if digits == "auto":
            digits = "single" if tok is not None and not _writes_pairs(tok) and _writes_digits(tok) else "pairs"
            if digits == "single":
                print(f"[app_helpers] greater_than: this tokenizer writes ' {words.CENTURY}32' digit by digit, "
                      "so the year is predicted at two positions (tens digit, then units digit; half the "
                      "prompts each); pass digits='single' or 'pairs' to choose yourself")
        return {**options, "digits": digits}

    def templates(self, digits: str = "pairs") -> list[str]:
        base = list(words.GREATER_THAN_TEMPLATES)
        return base if digits == "pairs" else base + [t + TENS_SLOT for t in base]

    def pools(self, tok: Tok | None, digits: str = "pairs") -> dict:
        nouns = list(words.EVENT_NOUNS) if tok is None else keep_words(tok, words.EVENT_NOUNS, "event nouns",
                                                                        minimum=1)
        if tok is None:
            return {"nouns": nouns, "years": list(DRAWN)}
        if digits == "single":
            require([d for d in DIGITS if tok.single_id(d) is not None], DIGITS, "digits", len(DIGITS),
                    "one token")
            how = f"one token per digit when written ' {words.CENTURY}YY'"
            years = [y for y in DRAWN if _digit_by_digit(tok, y)]
            require(years, DRAWN, "year endings", 1, how)
            return {"nouns": nouns, "years": years}
        suffixes = words.YEAR_SUFFIXES
        require([y for y in suffixes if tok.single_id(y) is not None], suffixes, "two-digit year endings",
                len(suffixes), "one token (for tokenizers that split years into digits, use digits='single')")
        how = f"' {words.CENTURY}' + YY when written ' {words.CENTURY}YY'"
        corrupt = words.GREATER_THAN_CORRUPT_YY
        require([corrupt] if _splits(tok, corrupt) else [], [corrupt], "corrupted year endings", 1, how)
        years = [y for y in DRAWN if _splits(tok, y)]
        require(years, DRAWN, "year endings", 1, how)
        return {"nouns": nouns, "years": years}

    def sample(self, rng: random.Random, n: int, pools: dict, digits: str = "pairs") -> list[Example]:
        k = len(words.GREATER_THAN_TEMPLATES)
        out = []
        for group in balanced(rng, n, k if digits == "pairs" else 2 * k):
            if digits == "pairs":
                yy = rng.choice(pools["years"])
                correct, wrong = words.YEAR_SUFFIXES[int(yy) + 1:], words.YEAR_SUFFIXES[: int(yy)]
                clean = {"NOUN": rng.choice(pools["nouns"]), "YY": yy}
            else:
                second = group >= k  # the prompt asks for the units digit
                digit = 1 if second else 0  # the digit of YY being predicted: both answer sets non-empty
                yy = rng.choice([y for y in pools["years"] if 0 < int(y[digit]) < 9])
                correct, wrong = DIGITS[int(yy[digit]) + 1:], DIGITS[: int(yy[digit])]
                clean = {"NOUN": rng.choice(pools["nouns"]), "YY": yy, **({"TENS": yy[0]} if second else {})}
            out.append(Example(group=group, clean=clean, corrupted={**clean, "YY": words.GREATER_THAN_CORRUPT_YY},
                               correct=correct, wrong=wrong))
        return out

    def vocabulary(self) -> list[str]:
        return ([strip_slots(t) for t in words.GREATER_THAN_TEMPLATES] + list(words.EVENT_NOUNS)
                + list(words.YEAR_SUFFIXES))


def _splits(tok: Tok, yy: str) -> bool:
    """' 17YY' is ' 17' + 'YY', one token each (the ``"pairs"`` variant)."""
    century = tok.single_id(" " + words.CENTURY)
    return century is not None and tok.encode(f" {words.CENTURY}{yy}") == [century, tok.single_id(yy)]


def _writes_pairs(tok: Tok) -> bool:
    return _splits(tok, "32")


def _digit_by_digit(tok: Tok, yy: str) -> bool:
    """' 17YY' ends in one token per digit of YY, and the text before YY tokenizes the same on its own."""
    whole, head = tok.encode(f" {words.CENTURY}{yy}"), tok.encode(f" {words.CENTURY}")
    return whole == head + [tok.single_id(yy[0]), tok.single_id(yy[1])] and None not in whole


def _writes_digits(tok: Tok) -> bool:
    return all(tok.single_id(d) is not None for d in DIGITS) and _digit_by_digit(tok, "32")


TASK = GreaterThan()
