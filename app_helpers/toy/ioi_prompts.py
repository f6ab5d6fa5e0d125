"""IOI prompts as the planted model's trainer and checks draw them: tokenised layouts with open name slots,
base prompts, their ABC corruptions and interchange sources (same template, so positions align)."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..tasks import words
from ..tasks.base import pieces
from .ioi_algorithm import Story


@dataclass(frozen=True)
class Layout:
    """One IOI template in one name order, tokenised: ids with the name slots left open."""

    group: int
    ids: tuple[int, ...]  # BOS first; name slots hold -1
    slots: tuple[int, int]  # positions of the "X and Y" names
    s2: int
    place: int | None
    obj: int | None

    @property
    def end(self) -> int:
        return len(self.ids) - 1


def layouts(tokenizer) -> list[Layout]:
    """Every (template, order) group, in the group numbering of ``make_task("ioi", ...)``."""
    out = []
    for t, template in enumerate(words.IOI_TEMPLATES):
        for order in (0, 1):
            text = template if order == 0 else template.replace("{IO}", "{_}").replace("{S1}", "{IO}").replace(
                "{_}", "{S1}")
            ids, where = [tokenizer.bos_token_id], {}
            for piece, slot in pieces(text, {k: k for k in ("IO", "S1", "S2", "PLACE", "OBJECT")}):
                if slot is None:
                    ids.extend(tokenizer.encode(piece, add_special_tokens=False))
                else:
                    where[slot] = len(ids)
                    ids.append(-1)
            first, second = sorted((where["IO"], where["S1"]))
            out.append(Layout(2 * t + order, tuple(ids), (first, second), where["S2"], where.get("PLACE"),
                              where.get("OBJECT")))
    return out


def role_positions(layout: Layout, role: str) -> list[int]:
    """Where ``role`` computes its value in a prompt of ``layout`` (the steps of ``toy.ioi_algorithm``): previous
    token at the token after each name slot, induction at S2, S-inhibition and name movers at END."""
    where = {"previous token": [slot + 1 for slot in layout.slots], "induction": [layout.s2],
             "s-inhibition": [layout.end], "name mover": [layout.end]}
    if role not in where:
        raise ValueError(f"unknown role {role!r}; roles are {list(where)}")
    return where[role]


@dataclass(frozen=True)
class Prompt:
    layout: Layout
    story: Story
    place: str
    obj: str
    s2: str  # the name at S2 (the story's repeated name)

    def ids(self, vocab: dict[str, int]) -> list[int]:
        ids = list(self.layout.ids)
        ids[self.layout.slots[0]], ids[self.layout.slots[1]] = (vocab[n] for n in self.story.names)
        ids[self.layout.s2] = vocab[self.s2]
        if self.layout.place is not None:
            ids[self.layout.place] = vocab[self.place]
        if self.layout.obj is not None:
            ids[self.layout.obj] = vocab[self.obj]
        return ids


class PromptSampler:
    """Base prompts, their ABC corruptions and interchange sources (same template, so positions align)."""

    #: Where ``source`` cuts a uniform draw: below the first an ABC prompt, then the base's two names, then one
    #: of them and a fresh one, else two fresh names.
    SOURCE_MIX = (0.15, 0.6, 0.8)

    def __init__(self, tokenizer, rng: random.Random, source_mix: tuple[float, float, float] = SOURCE_MIX):
        self.rng = rng
        self.source_mix = source_mix
        self.vocab = {w: tokenizer.convert_tokens_to_ids(w) for w in words.NAMES + words.PLACES + words.OBJECTS}
        self.layouts = layouts(tokenizer)

    def base(self) -> Prompt:
        layout = self.rng.choice(self.layouts)
        io, s = self.rng.sample(words.NAMES, 2)
        names = (io, s) if layout.group % 2 == 0 else (s, io)
        return self._prompt(layout, names, s)

    def _prompt(self, layout: Layout, names, repeated) -> Prompt:
        return Prompt(layout, Story(tuple(names), repeated), self.rng.choice(words.PLACES),
                      self.rng.choice(words.OBJECTS), repeated)

    def abc(self, base: Prompt) -> Prompt:
        """All three name occurrences replaced by fresh distinct names (the kit's default corruption)."""
        c, d, e = self.rng.sample([n for n in words.NAMES if n not in base.story.names], 3)
        return Prompt(base.layout, Story((c, d), e), base.place, base.obj, e)

    def source(self, base: Prompt) -> Prompt:
        """Same template, either name order; names reused from the base often, so that a patch changes
        the answer in every way the algorithm allows (swapped, same, one new name, ABC)."""
        r = self.rng.random()
        fresh = [n for n in words.NAMES if n not in base.story.names]
        abc, same, one = self.source_mix
        if r < abc:
            return self.abc(base)
        if r < same:
            pair = list(base.story.names)
        elif r < one:
            pair = [self.rng.choice(base.story.names), self.rng.choice(fresh)]
        else:
            pair = self.rng.sample(fresh, 2)
        self.rng.shuffle(pair)
        layout = self.layouts[base.layout.group - base.layout.group % 2 + self.rng.randrange(2)]
        return self._prompt(layout, pair, self.rng.choice(pair))


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])
