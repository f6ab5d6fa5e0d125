"""Figures: each function takes the kit's data objects and returns a matplotlib Figure (never just shows).

Returning figures lets notebooks display them, tests build them headless, and the CLI save them as PNG.
Conventions: layers run down the rows, heads across the columns, like the paper's heatmaps; NaN cells
(heads that were pruned and so never evaluated) are drawn grey and labelled as such.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from . import validate
from .identities import MLP, as_node

COMPONENT_COLOURS = {"q": "#1f77b4", "k": "#2ca02c", "v": "#d62728", "mlp": "#b8860b", "logits": "#555555"}
NAN_COLOUR = "#d9d9d9"


def _grid_axes(ax, n_layers: int, n_heads: int):
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(np.arange(-0.5, n_heads, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_layers, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.5)
    ax.tick_params(which="minor", length=0)


def _outline(ax, heads: Iterable[tuple[int, int]], colour="black", width=1.8):
    for layer, head in heads:
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor=colour, linewidth=width))


def head_heatmap(matrix, title: str = "", outlined: Iterable[tuple[int, int]] = (), diverging: bool = True,
                 annotate: bool | None = None, label: str = "", ax=None, limit: float | None = None,
                 floor: float = 0.0, mlps: bool = False):
    """A [layer, head] heatmap (scores or path-patching effects); ``outlined`` heads get a black box.
    ``mlps``: the matrix's last column is each layer's MLP (path patching with MLP nodes), labelled
    "MLP" and set off by a line.

    ``diverging`` centres the colour map at 0 (patching effects: red hurts, blue helps); NaN is grey.
    ``limit``: the colour scale runs over ±limit (diverging) or up to limit; by default this matrix's
    largest size, but at least ``floor``: a matrix of pure noise (largest 0.01) would otherwise be painted
    as saturated as a real effect. Give panels that are meant to be compared the same limit, or equal
    colours mislead. Cell labels are white on dark cells, black on light ones.
    """
    data = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    validate.matrix("the heatmap's matrix", torch.from_numpy(data))
    n_layers, n_heads = data.shape
    outlined = validate.heads_within(outlined, n_layers, n_heads, "outlined heads")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(
        figsize=(max(4.0, 0.45 * n_heads + 2), max(2.5, 0.4 * n_layers + 1.2)))
    cmap = plt.get_cmap("RdBu" if diverging else "viridis").with_extremes(bad=NAN_COLOUR)
    finite = data[np.isfinite(data)]
    bound = limit if limit is not None else max(float(np.abs(finite).max()) if finite.size else 1.0, floor)
    bound = bound or 1.0
    limits = dict(vmin=-bound, vmax=bound) if diverging else ({} if limit is None else dict(vmax=bound))
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, aspect="auto", **limits)
    fig.colorbar(image, ax=ax, label=label)
    _grid_axes(ax, n_layers, n_heads)
    if mlps:
        ax.set_xticks(range(n_heads), [*map(str, range(n_heads - 1)), "MLP"])
        ax.axvline(n_heads - 1.5, color="black", linewidth=1.5)
    _outline(ax, outlined)
    if annotate if annotate is not None else n_layers * n_heads <= 64:
        for (layer, head), value in np.ndenumerate(data):
            if np.isfinite(value):
                ax.text(head, layer, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color=_ink(image.cmap(image.norm(value))))
    if np.isnan(data).any():
        ax.legend(handles=[Rectangle((0, 0), 1, 1, color=NAN_COLOUR, label="not evaluated (pruned)")],
                  loc="upper left", bbox_to_anchor=(0, -0.12 - 0.02 * n_layers / 6), fontsize=8, frameon=False)
    ax.set_title(title)
    return fig


def kept_heatmap(kept: Mapping[str, Iterable[tuple[int, int]]], n_layers: int, n_heads: int,
                 title: str = "Heads kept", outlined: Iterable[tuple[int, int]] = (), ax=None,
                 neither: str = "in neither"):
    """Which set holds which head: one colour per combination of (up to two) head sets, plus ``neither``
    (say what it means here: "pruned by both" for kept sets, "in neither circuit" for circuits).

    ``outlined`` marks reference heads (e.g. a known circuit) so that losses are visible at a glance.
    """
    names = list(kept)
    if not 1 <= len(names) <= 2:
        raise ValueError("kept_heatmap compares one or two head sets")
    sets = [set(validate.heads_within(kept[n], n_layers, n_heads, f"heads of {n!r}")) for n in names]
    outlined = validate.heads_within(outlined, n_layers, n_heads, "outlined heads")
    code = np.zeros((n_layers, n_heads), dtype=int)
    for layer in range(n_layers):
        for head in range(n_heads):
            code[layer, head] = sum((1 << i) for i, s in enumerate(sets) if (layer, head) in s)
    labels = ([neither, f"{names[0]} only", f"{names[1]} only", "both"] if len(names) == 2
              else [neither, names[0]])
    colours = ["#f0f0f0", "#fdae61", "#74add1", "#4d4d4d"][:len(labels)]
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(
        figsize=(max(4.0, 0.45 * n_heads + 2), max(2.5, 0.4 * n_layers + 1.2)))
    ax.imshow(code, cmap=ListedColormap(colours), vmin=0, vmax=len(colours) - 1, aspect="auto")
    _grid_axes(ax, n_layers, n_heads)
    _outline(ax, outlined, colour="#e41a1c")
    handles = [Rectangle((0, 0), 1, 1, color=c, label=f"{l} ({int((code == i).sum())})")
               for i, (c, l) in enumerate(zip(colours, labels))]
    if outlined:
        handles.append(Rectangle((0, 0), 1, 1, fill=False, edgecolor="#e41a1c", label="reference head"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def sweep_curves(sweeps: Sequence, title: str = "Perf of the pruned model vs sparsity", ax=None,
                 marker_at: float | None = None):
    """Perf % against sparsity for each sweep (objects with ``method``, ``sparsities``, ``perfs``,
    ``cliff``), each method's cliff marked; ``marker_at`` draws the user's current sparsity. The merged
    sweep (the union at equal sparsity) gets no cliff marker: APP takes each method's own cliff."""
    validate.nonempty("sweeps", list(sweeps), "pass the sweeps of a PruningResult (result.sweeps.values())")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4))
    for sweep in sweeps:
        merged = sweep.method == "merged"
        line, = ax.plot(sweep.sparsities, sweep.perfs, linewidth=1.8, linestyle="--" if merged else "-",
                        label="merged (union at equal p)" if merged else sweep.method)
        if merged:
            continue
        cliff = sweep.cliff
        perf_at = np.interp(cliff.sparsity, sweep.sparsities, sweep.perfs)
        ax.scatter([cliff.sparsity], [perf_at], s=70, color=line.get_color(), edgecolor="black", zorder=3,
                   marker="o" if cliff.index is not None else "X",
                   label=f"{sweep.method} cliff: p={cliff.sparsity:.2f} ({cliff.rule})")
    if marker_at is not None:
        ax.axvline(marker_at, color="black", linestyle=":", linewidth=1, label=f"chosen p = {marker_at:.2f}")
    ax.axhline(100, color="grey", linewidth=0.6)
    ax.set_xlabel("sparsity (fraction of heads pruned)")
    ax.set_ylabel("Perf % (pruned heads mean-ablated)")
    ax.set_title(title)
    _legend(ax, fontsize=8)
    fig.tight_layout()
    return fig


def circuit_graph(heads: Iterable[tuple[int, int]], edges: Iterable, n_layers: int, n_heads: int,
                  roles: Mapping[tuple[int, int], str] | None = None, title: str = "Circuit", ax=None,
                  mlps: Iterable[int] = ()):
    """The circuit as a graph: layers as rows (input at the bottom), heads as nodes, edges coloured by
    the receiver component they were found through (q, k, v, an MLP's input) or 'logits' for direct
    effects. ``mlps``: the circuit's MLP layers (path patching with MLP nodes), drawn as squares in a
    column right of the heads."""
    heads = sorted(set(validate.heads_within(heads, n_layers, n_heads, "circuit heads")))
    mlps = sorted({validate.integer("an MLP layer", m, at_least=0, at_most=n_layers - 1) for m in mlps})
    roles = dict(roles or {})
    edges = [(as_node(e[0]), None if e[1] is None or e[1] == "logits" else as_node(e[1]), e[2]) for e in edges]
    ends = [n for e in edges for n in e[:2] if n is not None]
    validate.heads_within([n for n in ends if not isinstance(n, MLP)], n_layers, n_heads, "edge heads")
    validate.integer("an edge's MLP layer", max([n.layer for n in ends if isinstance(n, MLP)], default=0),
                     at_most=n_layers - 1)
    nodes = set(heads) | {MLP(m) for m in mlps}
    x_of = lambda node: n_heads + 0.5 if isinstance(node, MLP) else node[1]  # noqa: E731
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(
        figsize=(max(5.0, 0.6 * (n_heads + bool(mlps)) + 2), max(3.5, 0.55 * (n_layers + 1) + 1)))
    top = n_layers  # the logits sit above the last layer
    ax.scatter([h for l in range(n_layers) for h in range(n_heads)],
               [l for l in range(n_layers) for h in range(n_heads)], s=12, color="#e0e0e0", zorder=1)
    role_names = sorted(set(roles.get(h, "") for h in heads))
    palette = plt.get_cmap("tab10")
    role_colour = {r: palette(i % 10) for i, r in enumerate(role_names)}
    for sender, receiver, component in edges:
        if sender not in nodes:
            continue
        end = (n_heads / 2 - 0.5, top) if receiver is None else (x_of(receiver), receiver[0])
        ax.annotate("", xy=end, xytext=(x_of(sender), sender[0]), zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color=COMPONENT_COLOURS.get(component, "black"),
                                    lw=1.2, alpha=0.75, shrinkA=7, shrinkB=7,
                                    connectionstyle="arc3,rad=0.08"))
    for head in heads:
        colour = role_colour[roles.get(head, "")]
        ax.scatter([head[1]], [head[0]], s=480, color=colour, edgecolor="black", zorder=3)
        ax.text(head[1], head[0], f"{head[0]}.{head[1]}", ha="center", va="center", fontsize=8, zorder=4,
                color=_ink(colour))
    for layer in mlps:
        ax.scatter([n_heads + 0.5], [layer], s=480, marker="s", color="#f2c14e", edgecolor="black", zorder=3)
        ax.text(n_heads + 0.5, layer, f"mlp{layer}", ha="center", va="center", fontsize=7, zorder=4)
    ax.scatter([n_heads / 2 - 0.5], [top], s=400, marker="s", color="#555555", zorder=3)
    ax.text(n_heads / 2 - 0.5, top, "logits", ha="center", va="center", color="white", fontsize=7, zorder=4)
    ax.set_xlim(-1, n_heads + (1.5 if mlps else 0))
    ax.set_ylim(-0.8, top + 0.8)
    ax.set_yticks(range(n_layers))
    ax.set_xticks([*range(n_heads), *([n_heads + 0.5] if mlps else [])],
                  [*map(str, range(n_heads)), *(["MLP"] if mlps else [])])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    used = {e[2] for e in edges if e[0] in nodes}
    handles = [Line2D([0], [0], color=c, lw=2, label=f"via {k}") for k, c in COMPONENT_COLOURS.items() if k in used]
    handles += [Line2D([0], [0], marker="o", linestyle="", markerfacecolor=c, markeredgecolor="black",
                       markersize=9, label=r or "circuit head") for r, c in role_colour.items()]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def cost_bars(costs: Mapping[str, object], title: str = "Cost of the search", ax=None):
    """Side-by-side bars of sender evaluations, forward passes, GFLOPs and seconds for each named ``Cost``,
    on a linear scale from 0 (a log scale makes a 5× saving look like nothing). Each bar is labelled with
    its value and its ratio to the first bar, so "×5.3 fewer" is read off, not guessed."""
    metrics = [("sender_evaluations", "sender evals", 1), ("forward_passes", "passes", 1),
               ("flops", "GFLOPs", 1e-9), ("seconds", "seconds", 1)]
    names = list(validate.nonempty("costs", list(costs), "pass a mapping of names to Cost objects"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4)) if ax is None else (ax.figure, ax)
    palette = plt.get_cmap("tab10")
    for axis, (field_name, label, scale) in zip(np.atleast_1d(axes), metrics):
        values = [getattr(costs[n], field_name) * scale for n in names]
        bars = axis.bar(names, values, color=[palette(i) for i in range(len(names))])
        for i, (bar, value) in enumerate(zip(bars, values)):
            text = _short(value) + ("" if i == 0 else _ratio_label(values[0], value))
            axis.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), text, ha="center", va="bottom",
                      fontsize=8)
        axis.set_ylim(0, 1.18 * max(values + [1e-12]))
        axis.set_title(label)
        axis.tick_params(axis="x", labelrotation=20)
    fig.suptitle(title + f" (ratios vs {names[0]})")
    fig.tight_layout()
    return fig


def _ratio_label(base: float, value: float) -> str:
    if value <= 0 or base <= 0:
        return ""
    r = base / value
    return f"\n×{r:.1f} fewer" if r >= 1 else f"\n×{1 / r:.1f} more"


def cost_vs_heads(curve, this_run: tuple[int, float] | None = None, dense_measured: float | None = None,
                  title: str = "When does APP pay for its pruning?", ax=None):
    """GFLOPs of one search against the number of heads it may use (the pruned set), from the kit's FLOP
    model (``curve``: a ``sizing.CostCurve``): dense PP is flat, APP grows with the set, APP + pruning adds
    pruning's fixed cost. Where "APP + pruning" crosses "dense PP" is the break-even set size: a smaller
    pruned set pays for itself. ``this_run``: (heads in the pruned set, measured APP + pruning GFLOPs), a
    point; ``dense_measured``: this run's dense GFLOPs, a dotted line (the model is an upper bound: the
    engine's memoisation makes measured costs lower, so compare measured with measured)."""
    xs = np.asarray(curve.heads)
    dense, app, pruning = curve.dense / 1e9, np.asarray(curve.app) / 1e9, curve.pruning / 1e9
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4))
    ax.plot(xs, np.full(xs.shape, dense), color="#1f77b4", label="dense PP (model)")
    ax.plot(xs, app, color="#ff7f0e", label="APP (model)")
    ax.plot(xs, app + pruning, color="#d62728", label="APP + pruning (model)")
    if curve.break_even is not None:
        ax.axvline(curve.break_even, color="grey", linestyle="--", linewidth=1,
                   label=f"break-even: {curve.break_even} of {int(xs[-1])} heads")
    if dense_measured is not None:
        ax.axhline(dense_measured, color="#1f77b4", linestyle=":", label="dense PP (this run)")
    if this_run is not None:
        ax.scatter([this_run[0]], [this_run[1]], s=80, color="#d62728", edgecolor="black", zorder=3,
                   label=f"this run: {this_run[0]} heads, APP + pruning")
    ax.set_xlabel("heads in the pruned set (APP's search space)")
    ax.set_ylabel("GFLOPs")
    ax.set_ylim(0, None)
    ax.set_title(title)
    _legend(ax, fontsize=8)
    fig.tight_layout()
    return fig


def _legend(ax, **kwargs):
    """A legend with one entry per label (repeated calls on one axis would list a label twice)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(list(unique.values()), list(unique), **kwargs)


def _ink(colour) -> str:
    """Black or white text, whichever reads on ``colour`` (by its luminance)."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(colour)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _short(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.{max(0, 2 - int(math.floor(math.log10(abs(value)))))}f}"
