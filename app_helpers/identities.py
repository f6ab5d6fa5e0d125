"""The kit's vocabulary: what a head, a receiver, an edge, a method and an overlap *are*, defined once.

Every module speaks these types, so a head is never a bare tuple in one place and a string in another,
the logits are one receiver among others (not ``"logits"`` here and ``None`` there), and a method's label
and Pareto settings travel with it instead of being re-derived from whether a candidate set was given.
This module imports nothing from the kit: everything else may import it.
"""
from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Iterable, NamedTuple, Union

#: The inputs of a head that path patching can patch (a head receiver's component).
HEAD_INPUTS = ("q", "k", "v")
#: The component name of the logits receiver.
LOGITS_COMPONENT = "logits"
#: The component name of an MLP receiver: its input (the residual stream after its layer's attention).
MLP_COMPONENT = "mlp"


class Head(NamedTuple):
    """One attention head. A plain ``(layer, head)`` tuple compares and hashes equal to it."""

    layer: int
    head: int

    def __str__(self) -> str:
        return f"{self.layer}.{self.head}"


HeadLike = Union[Head, tuple, str, Iterable[int]]


def as_head(h: HeadLike) -> Head:
    """A ``Head`` from ``(layer, head)`` or a ``"layer.head"`` string such as ``"9.9"``."""
    if isinstance(h, str):
        parts = h.split(".")
        if len(parts) != 2:
            raise ValueError(f"a head string looks like '9.6' (layer.head), got {h!r}")
        h = parts
    try:
        layer, head = (int(x) for x in h)
    except (TypeError, ValueError):
        raise ValueError(f"a head is (layer, head) or 'layer.head', got {h!r}") from None
    if layer < 0 or head < 0:
        raise ValueError(f"head indices must be non-negative, got {h!r}")
    return Head(layer, head)


def head_name(h: HeadLike) -> str:
    """``"layer.head"``, the form heads take in JSON, tables and figures."""
    return str(as_head(h))


class MLP(NamedTuple):
    """The MLP of one layer, a node of the circuit graph when path patching runs with ``mlps=True``
    (off by default, as in the paper). Written ``"mlp3"`` in JSON, tables and figures."""

    layer: int

    def __str__(self) -> str:
        return f"mlp{self.layer}"


#: A node of the circuit graph: an attention head or (with MLP nodes on) a layer's MLP.
Node = Union[Head, MLP]


def as_node(n) -> Node:
    """A ``Head`` or an ``MLP`` from either, from ``"mlp3"``, or from anything ``as_head`` reads."""
    if isinstance(n, MLP):
        return n
    if isinstance(n, str) and n.startswith("mlp"):
        try:
            layer = int(n[3:])
        except ValueError:
            raise ValueError(f"an MLP node is written 'mlp' and its layer, e.g. 'mlp3', got {n!r}") from None
        if layer < 0:
            raise ValueError(f"an MLP's layer must be non-negative, got {n!r}")
        return MLP(layer)
    return as_head(n)


def node_order(n: Node) -> tuple[int, int, int]:
    """Sort key in computation order: a layer's heads, then its MLP."""
    return (n.layer, 1, 0) if isinstance(n, MLP) else (n[0], 0, n[1])


def node_name(n) -> str:
    """``"9.6"`` for a head, ``"mlp3"`` for an MLP."""
    return str(as_node(n))


class Receiver(NamedTuple):
    """Where a path ends: the logits (``head`` None), one head's q, k or v input, or an MLP's input
    (``head`` an ``MLP``, component ``"mlp"``)."""

    head: Node | None
    component: str

    @property
    def is_logits(self) -> bool:
        return self.head is None

    @property
    def is_mlp(self) -> bool:
        return isinstance(self.head, MLP)

    def __str__(self) -> str:
        if self.is_logits or self.is_mlp:
            return str(self.head or LOGITS_COMPONENT)
        return f"{self.head}.{self.component}"


LOGITS = Receiver(None, LOGITS_COMPONENT)


def mlp_input(layer: int) -> Receiver:
    """The receiver "MLP ``layer``'s input"."""
    return Receiver(MLP(int(layer)), MLP_COMPONENT)


def head_input(head: HeadLike, component: str) -> Receiver:
    """The receiver ``head``'s ``component`` input; refuses components other than q, k, v."""
    if component not in HEAD_INPUTS:
        raise ValueError(f"a head's input component is one of {HEAD_INPUTS}, got {component!r}")
    return Receiver(as_head(head), component)


class Edge(NamedTuple):
    """A path from a sender node into a receiver: ``(sender, receiver node or None, component)``."""

    sender: Node
    receiver: Node | None  # None for the logits
    component: str  # "q", "k", "v" (a head receiver), "mlp" (an MLP receiver) or "logits"

    @property
    def into(self) -> Receiver:
        return Receiver(self.receiver, self.component)


EDGE_COMPONENTS = (*HEAD_INPUTS, MLP_COMPONENT, LOGITS_COMPONENT)


def as_edge(e) -> Edge:
    """An ``Edge`` from ``(sender, receiver, component)``; the logits' receiver is None (or "logits"),
    an MLP receiver's component is "mlp", a head receiver's q, k or v."""
    sender, receiver, component = e
    if component not in EDGE_COMPONENTS:
        raise ValueError(f"edge component must be one of {EDGE_COMPONENTS}, got {component!r}")
    if (component == LOGITS_COMPONENT) != (receiver is None or receiver == LOGITS_COMPONENT):
        raise ValueError(f"an edge to the logits has receiver None and component 'logits', got {e!r}")
    receiver = None if component == LOGITS_COMPONENT else as_node(receiver)
    if receiver is not None and isinstance(receiver, MLP) != (component == MLP_COMPONENT):
        raise ValueError(f"an edge into an MLP has component 'mlp', one into a head q, k or v; got {e!r}")
    return Edge(as_node(sender), receiver, component)


class Method(enum.Enum):
    """A circuit-discovery method compared by the kit, with its label and Pareto settings (method.md §2):
    the smallest grid circuit with Perf ≥ ``min_perf`` and at most ``max_fraction`` of all heads."""

    DENSE = ("dense PP", 73.0, 0.25)
    APP = ("APP", 75.0, 0.5)

    def __init__(self, label: str, min_perf: float, max_fraction: float):
        self.label, self.min_perf, self.max_fraction = label, min_perf, max_fraction

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Overlap:
    """Agreement of a circuit's heads C with a reference R: TPR |C∩R|/|R|, precision |C∩R|/|C|,
    IoU |C∩R|/|C∪R| (NaN when a ratio is 0/0)."""

    tpr: float
    precision: float
    iou: float
    true_positives: int
    false_positives: int
    false_negatives: int
    n_circuit: int
    n_reference: int

    @classmethod
    def of(cls, circuit: Iterable[HeadLike], reference: Iterable[HeadLike]) -> "Overlap":
        c, r = set(map(as_head, circuit)), set(map(as_head, reference))
        tp = len(c & r)
        return cls(_ratio(tp, len(r)), _ratio(tp, len(c)), _ratio(tp, len(c | r)), tp, len(c - r), len(r - c),
                   len(c), len(r))

    def as_dict(self) -> dict:
        return asdict(self)


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan
