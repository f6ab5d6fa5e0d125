"""The one data object every later stage consumes: clean/corrupted token tensors plus exact positions.

Layout (n prompts, right-padded to a common length ``seq``):

- ``clean_tokens[i] = [BOS] + tokenize(clean_prompts[i])`` then padding; ``corrupted_tokens`` likewise,
  and prompt i has the same token length in both (corruptions only swap same-length words).
- ``attention_mask[i, p]`` is True for real tokens (BOS included), False for padding. Padding is on the
  right, so with causal attention no real position ever sees a pad token: logits at ``end_pos`` equal
  those of the prompt run alone. Models are given the token tensor only (no mask), which
  ``TransformerBridge`` leaves unmasked; statistics over tokens must use ``attention_mask``.
- ``end_pos[i]`` is the last real token, where the answer is predicted.
- ``groups[i]`` indexes ``templates`` (prompts of one group have equal length, so per-position group means
  are well defined).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor


class Answers(NamedTuple):
    """Answer token sets per prompt, padded: ``*_ids`` [n, k] with ``*_mask`` [n, k] marking real entries.

    Single-answer tasks have k = 1; Greater-Than's year sets and Docstring's other arguments have k > 1.
    """

    correct_ids: Tensor
    correct_mask: Tensor
    wrong_ids: Tensor
    wrong_mask: Tensor

    def index(self, idx) -> "Answers":
        return Answers(*(t[idx] for t in self))

    def to(self, device) -> "Answers":
        return Answers(*(t.to(device) for t in self))


@dataclass(eq=False)
class TaskData:
    """A tokenised task dataset. Build it with ``make_task``; see the module docstring for the layout."""

    name: str
    clean_prompts: list[str]
    corrupted_prompts: list[str]
    clean_tokens: Tensor  # long [n, seq]
    corrupted_tokens: Tensor  # long [n, seq]
    attention_mask: Tensor  # bool [n, seq]
    end_pos: Tensor  # long [n]
    answers: Answers
    groups: Tensor  # long [n], index into templates
    templates: list[str]
    word_pos: dict[str, Tensor]  # name -> long [n]
    metric: str = "logit_diff"  # key of app_helpers.metrics.METRICS
    options: dict[str, Any] = field(default_factory=dict)  # how it was made (seed, corruption, ...)
    tokenizer: Any = field(default=None, repr=False)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError if the tensors do not describe one consistent dataset."""
        n = len(self.clean_prompts)
        if n < 1:
            raise ValueError(f"task {self.name!r} has no prompts")
        if self.clean_tokens.shape != self.corrupted_tokens.shape:
            raise ValueError(f"clean and corrupted tokens differ in shape: {tuple(self.clean_tokens.shape)} vs "
                             f"{tuple(self.corrupted_tokens.shape)}; every corrupted prompt must have its clean "
                             "prompt's token length")
        if self.clean_tokens.ndim != 2 or self.clean_tokens.shape[0] != n:
            raise ValueError(f"tokens must be [n={n}, seq], got {tuple(self.clean_tokens.shape)}")
        if len(self.corrupted_prompts) != n:
            raise ValueError(f"{n} clean prompts but {len(self.corrupted_prompts)} corrupted prompts")
        if self.attention_mask.shape != self.clean_tokens.shape:
            raise ValueError(f"attention_mask {tuple(self.attention_mask.shape)} does not match tokens "
                             f"{tuple(self.clean_tokens.shape)}")
        per_prompt = {"end_pos": self.end_pos, "groups": self.groups,
                      **{f"word_pos[{k!r}]": v for k, v in self.word_pos.items()},
                      **{f"answers.{k}": v for k, v in self.answers._asdict().items()}}
        for what, t in per_prompt.items():
            if t.shape[0] != n:
                raise ValueError(f"{what} has {t.shape[0]} rows for {n} prompts")
        if (self.end_pos >= self.clean_tokens.shape[1]).any() or (self.end_pos < 0).any():
            raise ValueError("end_pos points outside the token tensors")
        if not self.attention_mask.gather(1, self.end_pos[:, None]).all():
            raise ValueError("end_pos points at a padding position")
        if len(self.groups) and int(self.groups.max()) >= len(self.templates):
            raise ValueError(f"groups index {int(self.groups.max())} but only {len(self.templates)} templates")

    def __len__(self) -> int:
        return len(self.clean_prompts)

    @property
    def n_groups(self) -> int:
        return len(self.templates)

    @property
    def lengths(self) -> Tensor:
        """Real token count per prompt (BOS included)."""
        return self.attention_mask.sum(1)

    @property
    def correct(self) -> Tensor:
        """The correct answer id per prompt [n] (single-answer tasks only)."""
        return self._single(self.answers.correct_ids, "correct")

    @property
    def wrong(self) -> Tensor:
        """The wrong answer id per prompt [n] (single-answer tasks only)."""
        return self._single(self.answers.wrong_ids, "wrong")

    def _single(self, ids: Tensor, what: str) -> Tensor:
        if ids.shape[1] != 1:
            raise ValueError(f"task {self.name!r} has sets of {what} answers; use task.answers")
        return ids[:, 0]

    @property
    def device(self) -> torch.device:
        return self.clean_tokens.device

    def to(self, device) -> "TaskData":
        """A copy with every tensor on ``device`` (self if already there)."""
        device = torch.device(device)
        if self.device == device:
            return self
        return replace(self, **{f.name: _to(getattr(self, f.name), device) for f in fields(self)
                                if f.name not in ("options", "tokenizer")})

    def subset(self, idx: slice | Sequence[int] | Tensor) -> "TaskData":
        """The prompts selected by ``idx`` (slice, index list or bool/long tensor), trailing padding trimmed."""
        rows = torch.arange(len(self))[idx.cpu() if isinstance(idx, Tensor) else idx]
        if rows.ndim == 0:
            rows = rows[None]
        seq = int(self.attention_mask[rows].sum(1).max()) if len(rows) else 0
        pick = rows.tolist()
        t = rows.to(self.device)
        return replace(
            self,
            clean_prompts=[self.clean_prompts[i] for i in pick],
            corrupted_prompts=[self.corrupted_prompts[i] for i in pick],
            clean_tokens=self.clean_tokens[t, :seq], corrupted_tokens=self.corrupted_tokens[t, :seq],
            attention_mask=self.attention_mask[t, :seq], end_pos=self.end_pos[t],
            answers=self.answers.index(t), groups=self.groups[t],
            word_pos={k: v[t] for k, v in self.word_pos.items()})

    __getitem__ = subset

    def check_model(self, model) -> None:
        """Refuse a model this task was not built for: token or answer ids beyond its vocabulary, or (when
        the task knows its tokenizer) a tokenizer that maps words to other ids. Either way every Perf % or
        patching score would be a number about other tokens — plausible-looking and meaningless."""
        d_vocab = model.cfg.d_vocab
        answer_ids = [ids[mask] for ids, mask in ((self.answers.correct_ids, self.answers.correct_mask),
                                                  (self.answers.wrong_ids, self.answers.wrong_mask))]
        largest = max(int(t.max()) for t in (self.clean_tokens, self.corrupted_tokens, *answer_ids) if t.numel())
        if largest >= d_vocab:
            raise ValueError(f"task {self.name!r} holds token id {largest}, beyond the model's vocabulary of "
                             f"{d_vocab}: it was built with another tokenizer; build it with "
                             "make_task(name, model, ...) for this model")
        theirs = getattr(model, "tokenizer", None)
        if self.tokenizer is not None and theirs is not None and not same_vocabulary(self.tokenizer, theirs):
            raise ValueError(f"task {self.name!r} was built with another tokenizer than the model's "
                             f"({type(self.tokenizer).__name__} of {len(self.tokenizer)} tokens vs "
                             f"{type(theirs).__name__} of {len(theirs)}): its ids name other words in this "
                             "model; build it with make_task(name, model, ...) for this model")

    def str_tokens(self, i: int, corrupted: bool = False) -> list[str]:
        """Prompt i's real tokens as strings (needs the tokenizer the task was built with)."""
        if self.tokenizer is None:
            raise ValueError("this TaskData has no tokenizer attached")
        toks = (self.corrupted_tokens if corrupted else self.clean_tokens)[i, : int(self.lengths[i])]
        return [self.tokenizer.decode([t]) for t in toks.tolist()]


def same_vocabulary(a, b) -> bool:
    """Two tokenizers give every token the same id (the same object, or equal vocabularies)."""
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())


def _to(value, device):
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, Answers):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value
