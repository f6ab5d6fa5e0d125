"""A word-level tokenizer built from the tasks' own vocabulary (the bundled model's tokenizer).

One token per word or punctuation mark ("Mary," → "Mary", ","), and digit pairs split like GPT-2 splits
years (" 1732" → "17", "32"), so every task has the same token structure as with GPT-2. Leading spaces
carry no information: " Mary" and "Mary" are the same single token. Special tokens: ``<|bos|>``,
``<|eos|>``, ``<|pad|>``, ``<|unk|>``; nothing is added automatically (like GPT-2's tokenizer, BOS is
prepended by whoever builds the tokens). The tokenizer lives in a directory in Hugging Face format:
TransformerLens re-loads tokenizers by path, so an in-memory one breaks when attached to a model.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from .gpt2_offline import cache_dir
from .tasks import vocabulary

SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>",
                  "unk_token": "<|unk|>"}


def pre_tokenizer(digits: str = "pairs"):
    """Words and punctuation runs split apart, then digit runs split into pairs (GPT-2's years) or, with
    ``digits="single"``, into single digits (as Qwen's tokenizer writes numbers)."""
    from tokenizers import Regex, pre_tokenizers

    split = (pre_tokenizers.Digits(individual_digits=True) if digits == "single"
             else pre_tokenizers.Split(Regex(r"\d\d"), behavior="isolated"))
    return pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), split])


def vocabulary_words(texts: Iterable[str] | None = None, extra_words: Iterable[str] = (),
                     digits: str = "pairs") -> list[str]:
    """Sorted distinct words of ``texts`` (default: every task's templates and word lists) and extras."""
    if texts is None:
        texts = vocabulary()
    split = pre_tokenizer(digits).pre_tokenize_str
    found = {w for text in (*texts, *extra_words) for w, _ in split(text)}
    return sorted(found - set(SPECIAL_TOKENS.values()))


def build_word_level_tokenizer(out_dir: str | os.PathLike, extra_words: Iterable[str] = (),
                               texts: Iterable[str] | None = None, digits: str = "pairs"):
    """Build the tokenizer, save it to ``out_dir`` (HF format) and return it loaded from there.

    ``texts``: where the vocabulary comes from (default: all tasks); ``extra_words``: more words or texts;
    ``digits``: "pairs" or "single" (see ``pre_tokenizer``).
    Ids: special tokens first, then words in sorted order, so the same vocabulary gives the same ids.
    """
    if digits not in ("pairs", "single"):
        raise ValueError(f"digits must be 'pairs' or 'single', not {digits!r}")
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIAL_TOKENS.values()) + vocabulary_words(texts, extra_words, digits)
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizer(digits)
    out_dir = Path(out_dir)
    PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS).save_pretrained(out_dir)
    return load_word_level_tokenizer(out_dir)


def load_word_level_tokenizer(path: str | os.PathLike):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path))


@functools.lru_cache(maxsize=None)
def word_level_tokenizer():
    """The tokenizer for all tasks' words, built once into the kit's cache directory."""
    return load_word_level_tokenizer(word_level_tokenizer_dir())


def word_level_tokenizer_dir() -> Path:
    """Cache directory of the default tokenizer; its name hashes the vocabulary, so edits rebuild it."""
    words = vocabulary_words()
    digest = hashlib.sha256(json.dumps([SPECIAL_TOKENS, words]).encode()).hexdigest()[:12]
    out = cache_dir() / f"word-level-{digest}"
    if not (out / "tokenizer.json").exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        build_word_level_tokenizer(tmp)
        try:
            os.replace(tmp, out)
        except OSError:  # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
    return out
