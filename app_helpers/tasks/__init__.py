"""Tasks: clean/corrupted prompt datasets for circuit discovery, for any tokenizer.

``make_task(name, model_or_tokenizer, n, seed)`` returns a ``TaskData`` (see ``tasks.data``).
``generate_sentences(name, n, seed)`` draws the same prompts as plain text with an answer, without a
tokenizer (training data for the bundled model). ``words`` holds every template and word list.

Tasks and their ``word_pos`` keys (each a token position per prompt; END is the prediction position):
ioi (IO, S1, S2, S1+1, END), greater_than (NOUN, YY, END), gendered_pronouns (SO, NAME, END),
name_induction (NAME, NAME+1, END), docstring (A, B, A_DOC, B_DOC, END; BPE tokenizers only).
"""
from __future__ import annotations

import random
from typing import Any

from . import docstring, greater_than, induction, ioi, pronouns, words
from .base import Sentence, Tok, TaskSpec, build, fill, resolve_options
from .data import Answers, TaskData

TASKS: dict[str, TaskSpec] = {m.TASK.name: m.TASK for m in (ioi, greater_than, pronouns, induction, docstring)}
ALIASES = {"greater-than": "greater_than", "gt": "greater_than", "pronouns": "gendered_pronouns",
           "gendered-pronouns": "gendered_pronouns", "induction": "name_induction",
           "name-induction": "name_induction"}

__all__ = ["TASKS", "TaskData", "Answers", "Sentence", "make_task", "generate_sentences", "get_task",
           "vocabulary", "words"]


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]


def make_task(name: str, model_or_tokenizer, n: int, seed: int = 0, *, prepend_bos: bool = True,
              metric: str | None = None, device=None, **options: Any) -> TaskData:
    """A tokenised dataset of ``n`` clean/corrupted prompt pairs, deterministic in ``seed``.

    ``model_or_tokenizer``: a ``TransformerBridge`` (its tokenizer is used and tensors go to its device)
    or a Hugging Face tokenizer. Tokens start with the tokenizer's BOS (GPT-2: ``<|endoftext|>``) unless
    ``prepend_bos=False``. ``metric``: "logit_diff" (default) or "prob_diff". Task options: IOI
    ``corruption`` ("ABC", "ABA", "ABD"); name induction ``names`` ("auto", "single", "full").
    """
    spec = get_task(name)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (number of prompts), got {n!r}")
    from ..metrics import metric_fn  # imported here: metrics imports tasks.data

    metric = metric or spec.metric
    metric_fn(metric)  # fail early on an unknown name
    tokenizer, model_device = _tokenizer_of(model_or_tokenizer)
    tok = Tok(tokenizer)
    if spec.bpe_only and not tok.is_bpe:
        raise ValueError(f"task {spec.name!r} is not available for this tokenizer: it needs a BPE tokenizer "
                         "such as GPT-2's (code tokens, newlines, indentation)")
    opts = resolve_options(spec, options)
    examples = spec.sample(random.Random(seed), n, spec.pools(tok, **opts), **opts)
    data = build(spec, spec.templates(**opts), examples, tok, prepend_bos, metric,
                 options=dict(opts, n=n, seed=seed, prepend_bos=prepend_bos))
    device = device if device is not None else model_device
    return data.to(device) if device is not None else data


def generate_sentences(name: str, n: int, seed: int = 0, **options: Any) -> list[Sentence]:
    """``n`` clean prompts as text, each with one correct continuation (a random one from a set), no tokenizer.

    Uses the unfiltered word lists; name induction uses first name + surname pairs.
    """
    spec = get_task(name)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (number of sentences), got {n!r}")
    opts = resolve_options(spec, options)
    rng = random.Random(seed)
    templates = spec.templates(**opts)
    return [Sentence(fill(templates[ex.group], ex.clean), rng.choice(ex.correct), ex.group)
            for ex in spec.sample(rng, n, spec.pools(None, **opts), **opts)]


def vocabulary() -> list[str]:
    """Texts holding every word of every task a word-level tokenizer can serve (Docstring excluded)."""
    return [text for spec in TASKS.values() for text in spec.vocabulary()]


def _tokenizer_of(obj) -> tuple[Any, Any]:
    """(tokenizer, device or None) from a model or a tokenizer."""
    if hasattr(obj, "encode") and hasattr(obj, "convert_ids_to_tokens"):
        return obj, None
    tokenizer = getattr(obj, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"expected a TransformerBridge with a tokenizer or a Hugging Face tokenizer, got "
                         f"{type(obj).__name__}")
    cfg = getattr(obj, "cfg", None)
    return tokenizer, getattr(cfg, "device", None)
