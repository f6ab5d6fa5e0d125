"""Docstring (ACDC, Conmy et al. 2023): predict the next argument name in a Python docstring.

``def load(self, file, name, path, mode):`` … ``:param file: …`` ``:param name: …`` ``:param`` → " path".
The correct answer is the first signature argument not yet documented; the wrong answers are the other
signature arguments. Corruption ("random_random" in ACDC): fresh names in the signature and other fresh
names in the docstring, so neither can be copied. Needs code tokens (newlines, indentation, ``:param``),
hence BPE tokenizers such as GPT-2's only.
"""
from __future__ import annotations

import random
import re

from . import words
from .base import Example, Tok, TaskSpec, balanced, distinct, keep_words, slot_names

_ARG = re.compile(r"[A-E]")


def signature_slots(template: str) -> list[str]:
    return [s for s in slot_names(template) if _ARG.fullmatch(s)]


def answer_slot(template: str) -> str:
    documented = {s[:-4] for s in slot_names(template) if s.endswith("_DOC")}
    return next(s for s in signature_slots(template) if s not in documented)


class Docstring(TaskSpec):
    name = "docstring"
    summary = "def f(self, a, b, c, d): ... :param a: ... :param b: ... :param → c"
    positions = {"A": ("A", 0), "B": ("B", 0), "A_DOC": ("A_DOC", 0), "B_DOC": ("B_DOC", 0)}
    bpe_only = True

    def templates(self, **options) -> list[str]:
        return list(words.DOCSTRING_TEMPLATES)

    def pools(self, tok: Tok | None, **options) -> dict:
        if tok is None:
            return {"funcs": list(words.FUNCTION_NAMES), "args": list(words.ARGUMENT_NAMES),
                    "doc": list(words.DOC_WORDS)}
        # clean signature + fresh signature + fresh docstring names, all distinct
        need = max(2 * len(signature_slots(t)) + sum(s.endswith("_DOC") for s in slot_names(t))
                   for t in self.templates())
        return {"funcs": keep_words(tok, words.FUNCTION_NAMES, "function names", minimum=1),
                "args": keep_words(tok, words.ARGUMENT_NAMES, "argument names", minimum=need),
                "doc": keep_words(tok, words.DOC_WORDS, "docstring words", minimum=1)}

    def sample(self, rng: random.Random, n: int, pools: dict) -> list[Example]:
        out = []
        templates = self.templates()
        for t in balanced(rng, n, len(templates)):
            slots = slot_names(templates[t])
            args = signature_slots(templates[t])
            docs = [s for s in slots if s.endswith("_DOC")]
            names = dict(zip(args, distinct(rng, pools["args"], len(args))))
            clean = {s: rng.choice(pools["doc"]) for s in slots if s.startswith("W")}
            clean.update(names, FUNC=rng.choice(pools["funcs"]), **{d: names[d[:-4]] for d in docs})
            fresh = distinct(rng, pools["args"], len(args) + len(docs), exclude=names.values())
            corrupted = {**clean, **dict(zip(args + docs, fresh))}
            answer = answer_slot(templates[t])
            out.append(Example(group=t, clean=clean, corrupted=corrupted, correct=(" " + names[answer],),
                               wrong=tuple(" " + names[a] for a in args if a != answer)))
        return out

    def vocabulary(self) -> list[str]:
        return []  # BPE only: the word-level tokenizer does not cover code


TASK = Docstring()
