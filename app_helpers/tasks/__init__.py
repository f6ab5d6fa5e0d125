"""Tasks: clean/corrupted prompt datasets for circuit discovery, for any tokenizer.

``make_task(name, model_or_tokenizer, n, seed)`` returns a ``TaskData`` (see ``tasks.data``);
``make_split(name, model_or_tokenizer, n, eval_n, seed)`` search and held-out prompts that never overlap.
``generate_sentences(name, n, seed)`` draws the same prompts as plain text with an answer, without a
tokenizer (training data for the bundled model). ``words`` holds every template and word list.

Tasks and their ``word_pos`` keys (each a token position per prompt; END is the prediction position):
ioi (IO, S1, S2, S1+1, END), greater_than (NOUN, YY, END), gendered_pronouns (SO, NAME, END),
name_induction (NAME, NAME+1, END), docstring (A, B, A_DOC, B_DOC, END; BPE tokenizers only).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .. import validate
from ..devices import resolve_device
from ..metrics import metric_fn
from . import docstring, greater_than, induction, ioi, pronouns, words
from .base import Sentence, Tok, TaskSpec, build, fill, resolve_options
from .data import Answers, TaskData

TASKS: dict[str, TaskSpec] = {m.TASK.name: m.TASK for m in (ioi, greater_than, pronouns, induction, docstring)}
ALIASES = {"greater-than": "greater_than", "gt": "greater_than", "pronouns": "gendered_pronouns",
           "gendered-pronouns": "gendered_pronouns", "induction": "name_induction",
           "name-induction": "name_induction"}

__all__ = ["TASKS", "MAX_PROMPTS", "TaskData", "TaskSplit", "Answers", "Sentence", "make_task", "make_split",
           "check_prompt_count",
           "generate_sentences", "get_task", "vocabulary", "words"]


#: The most prompts one task may hold. The paper uses 100-500; every prompt is tokenised, and path
#: patching and Perf keep per-prompt caches of every layer, so far larger sets only exhaust memory (and
#: 5 000 prompts already take tens of seconds to draw).
MAX_PROMPTS = 5_000


def check_prompt_count(name: str, n) -> int:
    """``n`` prompts, an integer in [1, MAX_PROMPTS]."""
    return validate.integer(name, n, at_least=1, at_most=MAX_PROMPTS,
                            why=f"tasks.MAX_PROMPTS caps a task at {MAX_PROMPTS} prompts (the paper uses 100-500; "
                                "per-prompt caches of every layer would exhaust memory)")


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
    ``corruption`` ("ABC", "ABA", "ABD"); name induction ``names`` ("auto", "single", "full"); Greater-Than
    ``digits`` ("auto", "pairs", "single": years as digit pairs or digit by digit, see ``tasks.greater_than``).
    """
    spec = get_task(name)
    n, seed = check_prompt_count("n (the number of prompts)", n), validate.seed(seed)
    metric = metric or spec.metric
    metric_fn(metric)  # fail early on an unknown name
    tokenizer, model_device = _tokenizer_of(model_or_tokenizer)
    tok = Tok(tokenizer)
    if spec.bpe_only and not tok.is_bpe:
        raise ValueError(f"task {spec.name!r} is not available for this tokenizer: it needs a BPE tokenizer "
                         "such as GPT-2's (code tokens, newlines, indentation)")
    opts = spec.resolve(tok, resolve_options(spec, options))
    examples = spec.sample(random.Random(seed), n, spec.pools(tok, **opts), **opts)
    data = build(spec, spec.templates(**opts), examples, tok, prepend_bos, metric,
                 options=dict(opts, n=n, seed=seed, prepend_bos=prepend_bos))
    device = resolve_device(device) if device is not None else model_device
    return data.to(device) if device is not None else data


@dataclass(frozen=True)
class TaskSplit:
    """Search prompts and held-out prompts of one task, drawn together: no held-out prompt pair repeats a
    search prompt pair, so Perf on the held-out set is never partly measured on the search prompts."""

    search: TaskData
    held_out: TaskData


#: The held-out prompts are drawn from the seed ``seed + HELD_OUT_SEED_OFFSET`` (then further seeds while
#: pairs repeat search pairs), so the search prompts equal ``make_task(name, model, n, seed)``.
HELD_OUT_SEED_OFFSET = 1000
MAX_HELD_OUT_DRAWS = 50


def make_split(name: str, model_or_tokenizer, n: int, eval_n: int, seed: int = 0, *, prepend_bos: bool = True,
               metric: str | None = None, device=None, **options: Any) -> TaskSplit:
    """``n`` search prompts (exactly ``make_task(name, ..., n, seed)``) and ``eval_n`` held-out prompts,
    none of which repeats a search prompt (clean and corrupted text compared)."""
    search = make_task(name, model_or_tokenizer, n, seed, prepend_bos=prepend_bos, metric=metric, device=device,
                       **options)
    eval_n = check_prompt_count("eval_n (the number of held-out prompts)", eval_n)
    spec = get_task(name)
    tokenizer, model_device = _tokenizer_of(model_or_tokenizer)
    tok = Tok(tokenizer)
    opts = {key: search.options[key] for key in resolve_options(spec, options)}  # as the search resolved them
    templates = spec.templates(**opts)
    pools = spec.pools(tok, **opts)
    seen = set(zip(search.clean_prompts, search.corrupted_prompts))
    kept: list = []
    for draw in range(MAX_HELD_OUT_DRAWS):
        for ex in spec.sample(random.Random(seed + HELD_OUT_SEED_OFFSET + draw), eval_n, pools, **opts):
            if (fill(templates[ex.group], ex.clean), fill(templates[ex.group], ex.corrupted)) not in seen:
                kept.append(ex)
        if len(kept) >= eval_n:
            break
    else:
        raise ValueError(f"task {spec.name!r}: could not draw {eval_n} held-out prompts that differ from the "
                         f"{n} search prompts in {MAX_HELD_OUT_DRAWS} draws; the task has too few distinct "
                         "prompts for this tokenizer — ask for fewer prompts")
    held_out = build(spec, templates, kept[:eval_n], tok, prepend_bos, metric or spec.metric,
                     options=dict(opts, n=eval_n, seed=seed + HELD_OUT_SEED_OFFSET, held_out_of=seed,
                                  prepend_bos=prepend_bos))
    device = resolve_device(device) if device is not None else model_device
    return TaskSplit(search, held_out.to(device) if device is not None else held_out)


def generate_sentences(name: str, n: int, seed: int = 0, **options: Any) -> list[Sentence]:
    """``n`` clean prompts as text, each with one correct continuation (a random one from a set), no tokenizer.

    Uses the unfiltered word lists; name induction uses first name + surname pairs.
    """
    spec = get_task(name)
    n = validate.integer("n (the number of sentences)", n, at_least=1)
    opts = spec.resolve(None, resolve_options(spec, options))
    rng = random.Random(validate.seed(seed))
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
