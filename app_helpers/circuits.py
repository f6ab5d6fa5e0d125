"""Circuits as sets of attention heads, their JSON form, overlap scores, and published reference circuits.

A head is ``(layer, head)``. A ``Circuit`` keeps its heads sorted and unique, so two circuits with the
same heads in a different order are equal and evaluate identically. Optional extras: a role per head
("name mover"), edges ``(sender, receiver, component)`` with component in q/k/v (receiver a head), "mlp"
(receiver an MLP, ``identities.MLP``) or "logits" (receiver None), and MLP layers that belong to the
circuit (found by a search with MLP nodes on; every MLP an edge touches must be listed; informational in
evaluation: MLPs are never ablated).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from .identities import MLP, Edge, Head, HeadLike, Overlap, as_edge, as_head, head_name, node_name, node_order
from .toy.ioi_algorithm import ROLE_EDGES as PLANTED_EDGES, ROLES as PLANTED_ROLES


@dataclass(frozen=True)
class Circuit:
    """A set of heads with optional roles, edges and MLP layers. Construct from any head iterable."""

    heads: tuple[Head, ...]
    name: str = ""
    roles: dict[Head, str] = field(default_factory=dict)
    edges: tuple[Edge, ...] = ()
    mlps: tuple[int, ...] = ()
    description: str = ""

    def __post_init__(self):
        roles = {as_head(h): str(r) for h, r in dict(self.roles).items()}
        heads = set(map(as_head, self.heads))
        if not set(roles) <= heads:
            raise ValueError(f"roles given for heads not in the circuit: {_names(set(roles) - heads)}")
        edges = set(map(as_edge, self.edges))
        mlps = set(map(int, self.mlps))
        ends = {n for e in edges for n in (e.sender, e.receiver) if n is not None}
        strangers = {n for n in ends if not isinstance(n, MLP)} - heads
        if strangers:
            raise ValueError(f"edges touch heads not in the circuit: {_names(strangers)}")
        stray_mlps = sorted(n.layer for n in ends if isinstance(n, MLP) and n.layer not in mlps)
        if stray_mlps:
            raise ValueError(f"edges touch MLPs not in the circuit's mlps: {stray_mlps}; add their layers to mlps")
        object.__setattr__(self, "heads", tuple(sorted(heads)))
        object.__setattr__(self, "roles", dict(sorted(roles.items())))
        object.__setattr__(self, "edges", tuple(sorted(edges, key=_edge_key)))
        object.__setattr__(self, "mlps", tuple(sorted(mlps)))

    def __len__(self) -> int:
        return len(self.heads)

    def __iter__(self):
        return iter(self.heads)

    def __contains__(self, h) -> bool:
        return as_head(h) in set(self.heads)

    def by_role(self) -> dict[str, list[Head]]:
        """Role → heads (heads without a role are left out)."""
        out: dict[str, list[Head]] = {}
        for h, r in self.roles.items():
            out.setdefault(r, []).append(h)
        return out

    def head_mask(self, n_layers: int, n_heads: int) -> torch.Tensor:
        """Bool [n_layers, n_heads], True for circuit heads; fails if a head lies outside the model."""
        outside = [head_name(h) for h in self.heads if h[0] >= n_layers or h[1] >= n_heads]
        if outside:
            named = f"circuit {self.name} " if self.name else "circuit "
            raise ValueError(f"{named}has heads outside a {n_layers}x{n_heads} model: {', '.join(outside)}")
        mask = torch.zeros(n_layers, n_heads, dtype=torch.bool)
        for layer, head in self.heads:
            mask[layer, head] = True
        return mask

    @classmethod
    def from_mask(cls, mask: torch.Tensor, **kwargs) -> "Circuit":
        return cls(heads=tuple(map(tuple, mask.nonzero().tolist())), **kwargs)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "heads": [head_name(h) for h in self.heads],
                "roles": {head_name(h): r for h, r in self.roles.items()},
                "edges": [[node_name(e.sender), None if e.receiver is None else node_name(e.receiver),
                           e.component] for e in self.edges],
                "mlps": list(self.mlps)}

    @classmethod
    def from_dict(cls, d: dict) -> "Circuit":
        """A circuit from ``to_dict``'s layout; anything else is refused with the part that is wrong."""
        if not isinstance(d, dict):
            raise ValueError(f"not a circuit: expected an object with keys {sorted(_KEYS)}, got a "
                             f"{type(d).__name__}: {str(d)[:60]}")
        unknown = set(d) - _KEYS
        if unknown or "heads" not in d:
            raise ValueError(f"not a circuit: expected keys {sorted(_KEYS)} ('heads' required), got {sorted(d)}")
        for key, kind in (("heads", list), ("edges", list), ("mlps", list), ("roles", dict)):
            if key in d and not isinstance(d[key], kind):
                raise ValueError(f"circuit {key!r} must be a {'list' if kind is list else 'mapping'}, got "
                                 f"{d[key]!r}")
        edges = d.get("edges", [])
        short = [e for e in edges if not isinstance(e, (list, tuple)) or len(e) != 3]
        if short:
            raise ValueError(f"a circuit edge is [sender, receiver or null, component], got {short[0]!r}")
        mlps = d.get("mlps", [])
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in mlps):
            raise ValueError(f"circuit 'mlps' must be layer indices (non-negative integers), got {mlps!r}")
        return cls(heads=tuple(d["heads"]), name=str(d.get("name", "")), roles=d.get("roles", {}),
                   edges=tuple(edges), mlps=tuple(mlps), description=str(d.get("description", "")))

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Circuit":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"not a circuit: the text is not valid JSON ({err.msg} at line {err.lineno}, "
                             f"column {err.colno}); a circuit file is what Circuit.save writes") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Circuit":
        path = Path(path)
        if not path.is_file():
            folder = " (it is a folder)" if path.is_dir() else ""
            raise FileNotFoundError(f"no circuit file at {str(path)!r}{folder}")
        try:
            return cls.from_json(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


_KEYS = {"name", "description", "heads", "roles", "edges", "mlps"}


def _names(heads) -> str:
    return ", ".join(map(head_name, sorted(heads)))


def _edge_key(e: Edge):
    return (node_order(e.sender), (1 << 30, 0, 0) if e.receiver is None else node_order(e.receiver), e.component)


def as_circuit(c: "Circuit | Iterable[HeadLike]") -> Circuit:
    return c if isinstance(c, Circuit) else Circuit(heads=tuple(c))


def overlap(circuit: "Circuit | Iterable[HeadLike]", reference: "Circuit | Iterable[HeadLike]") -> Overlap:
    """Head-set agreement of ``circuit`` with ``reference`` (see ``Overlap``)."""
    return Overlap.of(as_circuit(circuit).heads, as_circuit(reference).heads)


# --- Reference circuits: GPT-2 small's (method.md §6) and the planted model's ---------------------------------------------------
def _heads(spec: str) -> list[str]:
    return spec.split()


_IOI_WANG_ROLES = {
    "name mover": "9.9 9.6 10.0",
    "backup name mover": "9.0 9.7 10.1 10.2 10.6 10.10 11.2 11.9",
    "negative name mover": "10.7 11.10",
    "s-inhibition": "7.3 7.9 8.6 8.10",
    "induction": "5.5 5.8 5.9 6.9",
    "duplicate token": "0.1 0.10 3.0",
    "previous token": "2.2 4.11",
}


def _ioi_wang() -> Circuit:
    roles = {h: role for role, spec in _IOI_WANG_ROLES.items() for h in _heads(spec)}
    return Circuit(heads=tuple(roles), roles=roles, name="ioi_wang",
                   description="IOI circuit of GPT-2 small, Wang et al. 2022 (26 heads, roles as published)")


def _ioi_app_pp() -> Circuit:
    heads = _heads("0.1 0.10 3.0 4.3 4.11 5.5 5.8 5.9 6.0 6.9 7.1 7.3 7.9 8.6 8.10 9.6 9.7 9.9 10.0 10.7 "
                   "11.10")
    return Circuit(heads=tuple(heads), name="ioi_app_pp",
                   description="IOI circuit of GPT-2 small found by dense path patching in the APP paper "
                               "(Andersen et al. 2025; 21 heads, no roles published)")


def _greater_than() -> Circuit:
    heads = _heads("5.1 5.5 6.9 7.10 8.8 8.11 9.1")
    return Circuit(heads=tuple(heads), roles={h: "year mover (attends from END to YY)" for h in heads},
                   mlps=(8, 9, 10, 11), name="greater_than_hanna",
                   description="Greater-Than circuit of GPT-2 small, Hanna et al. 2023: attention heads that "
                               "move the YY year to the END position, and MLPs 8-11 that compute the answer")


def planted_truth() -> Circuit:
    """The IOI circuit planted in the bundled model ``app-planted`` (``toy.ioi_algorithm``): its heads,
    roles, and the head-to-head edges of the high-level model (sender role → receiver role's input)."""
    roles = {head: role for role, heads in PLANTED_ROLES.items() for head in heads}
    edges = [(s, r, component) for sender, receiver, component in PLANTED_EDGES
             for s in PLANTED_ROLES[sender] for r in (PLANTED_ROLES[receiver] if receiver else [None])]
    return Circuit(heads=tuple(roles), roles=roles, edges=tuple(edges), name="ioi_planted",
                   description="IOI circuit planted in app-planted by strict interchange training: previous-"
                               "token → induction → S-inhibition → name movers (app_helpers.toy.ioi_algorithm)")


_REFERENCES = {"ioi_wang": _ioi_wang, "ioi_app_pp": _ioi_app_pp, "greater_than_hanna": _greater_than,
               "ioi_planted": planted_truth}
REFERENCE_NAMES = tuple(_REFERENCES)


def reference_circuit(name: str) -> Circuit:
    """A known circuit: GPT-2 small's published "ioi_wang", "ioi_app_pp", "greater_than_hanna", or the
    bundled model app-planted's ground truth "ioi_planted"."""
    if name not in _REFERENCES:
        raise ValueError(f"unknown reference circuit {name!r}; known: {', '.join(REFERENCE_NAMES)}")
    return _REFERENCES[name]()


#: Published circuits per task; they apply to GPT-2 small only.
GPT2_REFERENCES = {"ioi": ("ioi_wang", "ioi_app_pp"), "greater_than": ("greater_than_hanna",)}


def references_for(model_location: str, task: str) -> dict[str, Circuit]:
    """The known circuits to score a run against, the one to outline first: GPT-2 small's published ones,
    or those a local model directory ships in ``circuits/<task>.json`` (app-planted ships its ground truth
    so). Empty when none is known."""
    if model_location == "gpt2":
        return {name: reference_circuit(name) for name in GPT2_REFERENCES.get(task, ())}
    shipped = Path(model_location) / "circuits" / f"{task}.json"
    if shipped.is_file():
        circuit = Circuit.load(shipped)
        return {circuit.name or "shipped": circuit}
    return {}


# --- Published results beside which a run is read (GPT-2 small) -----------------------------------------
#: Andersen et al. 2025, Table 2: per task and row, (Perf %, heads, TPR % vs the dense PP circuit). "PP" is
#: the dense path-patching circuit (no TPR); the others are the pruned sets at their cliffs.
PAPER_TABLE2 = {
    "ioi": {"PP": (96.95, 21, None), "FLAP": (93.51, 49, 80.95), "Contrastive": (67.34, 22, 76.19),
            "Merged": (92.60, 54, 90.48)},
    "greater_than": {"PP": (79.65, 8, None), "FLAP": (7.63, 16, 37.5), "Contrastive": (69.38, 31, 87.5),
                     "Merged": (73.08, 37, 87.5)},
    "gendered_pronouns": {"PP": (74.74, 5, None), "Merged": (69.36, 48, 100.0)},
    "name_induction": {"PP": (93.35, 22, None), "Merged": (88.69, 47, 90.91)},
    "docstring": {"PP": (64.61, 46, None), "Merged": (76.36, 60, 76.09)},
}
#: GFLOPs of dense PP / APP over the whole grid (Andersen et al. 2025; the one per-task figure given).
PAPER_GFLOP_SPEEDUP = {"ioi": 5.6}
