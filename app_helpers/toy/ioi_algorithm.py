"""The IOI algorithm planted in the bundled model ``app-planted``: the high-level causal model, in plain Python.

A prompt such as "Then, Mary and John went to the store. John gave a drink to" is seen by the algorithm
as a ``Story``: the two names of the "X and Y" phrase in the order they appear (slot 0, slot 1) and the
name that comes back later (at S2). The answer is the name that does *not* come back. Four roles, each a
set of attention heads of the trained model, compute it in four steps, in Wang et al.'s vocabulary:

1. **previous token** (at the token after each slot, e.g. "and", "went"): remember which name came
   just before. Value: the two names, one per slot.
2. **induction** (at S2): look for a position whose remembered name is the name at S2. Value: that name
   (the repeated one), or None when no position remembers it (the ABC corruption has no repeat).
3. **S-inhibition** (at END): carry the repeated name to the end of the sentence. Value: a name or None.
4. **name mover** (at END): copy the prompt's names to the output, except the inhibited one. Value: the
   output distribution — the other name with certainty, or both names half and half when the inhibited
   name is none of them.

Interchange interventions: patching one role's heads with their values from a *source* prompt (same
template, other names or the other name order) sets that step's value to what it is on the source, and
every later step recomputes from there. ``run`` computes the output of any such combination; the trainer
(``toy.siit``) makes the network agree with it, and the tests measure how often it does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

#: The roles in the order information flows, each with the heads (layer, head) that carry it.
ROLES: dict[str, tuple[tuple[int, int], ...]] = {
    "previous token": ((0, 3), (1, 5)),
    "induction": ((2, 2), (3, 6)),
    "s-inhibition": ((4, 1), (4, 6), (5, 3)),
    "name mover": ((6, 0), (6, 5), (7, 2)),
}
ROLE_ORDER = tuple(ROLES)
#: Edges of the high-level model as (sender role, receiver role, the receiver's input that reads it).
ROLE_EDGES = (("previous token", "induction", "k"),  # induction matches the *previous token* in its keys
              ("induction", "s-inhibition", "v"),  # S-inhibition moves induction's output from S2 to END
              ("s-inhibition", "name mover", "q"),  # ... where it tells the name movers which name to avoid
              ("name mover", None, "logits"))
#: A role whose heads are mean-ablated carries no information about the names.
ABLATED = "ablated"


@dataclass(frozen=True)
class Story:
    """What the algorithm reads from one prompt: the two names by slot, and the name repeated at S2."""

    names: tuple[str, str]
    repeated: str

    @property
    def answer(self) -> Optional[str]:
        """The name that is not repeated (None when the repeated name is neither: no answer)."""
        if self.repeated not in self.names:
            return None
        return self.names[1 - self.names.index(self.repeated)]


def previous_token(story: Story) -> tuple[str, str]:
    """Step 1: the token after slot k remembers the name at slot k."""
    return story.names


def induction(story: Story, remembered) -> Optional[str]:
    """Step 2: the name at S2 if some slot remembers it, else None."""
    if remembered == ABLATED or story.repeated not in remembered:
        return None
    return story.repeated


def s_inhibition(name) -> Optional[str]:
    """Step 3: move the repeated name to END unchanged (ablated: nothing to move)."""
    return None if name == ABLATED else name


def name_mover(story: Story, inhibited) -> dict[str, float]:
    """Step 4: the output distribution: the prompt's name that is not inhibited, or both names equally."""
    if inhibited not in story.names:
        return {story.names[0]: 0.5, story.names[1]: 0.5}
    return {story.names[1 - story.names.index(inhibited)]: 1.0}


def step(role: str, story: Story, upstream):
    """One role's value on ``story`` given the previous role's value ``upstream``."""
    if role == "previous token":
        return previous_token(story)
    if role == "induction":
        return induction(story, upstream)
    if role == "s-inhibition":
        return s_inhibition(upstream)
    if role == "name mover":
        return name_mover(story, upstream)
    raise ValueError(f"unknown role {role!r}; roles are {list(ROLES)}")


def run_upto(story: Story, role: str):
    """The value of ``role`` on an unpatched ``story``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {list(ROLES)}")
    upstream = None
    for r in ROLE_ORDER[:ROLE_ORDER.index(role) + 1]:
        upstream = step(r, story, upstream)
    return upstream


def run(base: Story, patches: Mapping[str, "Story | str"] = {}) -> dict[str, float]:
    """The algorithm's output distribution on ``base`` with some roles patched.

    ``patches``: role → a source ``Story`` (interchange: that role takes its value on the source) or
    ``ABLATED`` (mean ablation: the role carries nothing). Unpatched roles compute from the base.

    >>> base = Story(("Mary", "John"), "John")
    >>> run(base)
    {'Mary': 1.0}
    >>> run(base, {"s-inhibition": Story(("John", "Mary"), "Mary")})  # the source's repeated name is Mary
    {'John': 1.0}
    """
    unknown = set(patches) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}; roles are {list(ROLES)}")
    upstream = None
    for role in ROLE_ORDER:
        patch = patches.get(role)
        if isinstance(patch, Story):
            upstream = run_upto(patch, role)
        elif patch == ABLATED:
            upstream = name_mover(base, ABLATED) if role == "name mover" else ABLATED
        elif patch is None:
            upstream = step(role, base, upstream)
        else:
            raise ValueError(f"a patch is a source Story or ABLATED, got {patch!r} for role {role!r}")
    return upstream
