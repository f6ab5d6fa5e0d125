# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/05_accelerated_path_patching.ipynb)
#
# # 05 · Accelerated path patching vs dense path patching
#
# APP is the search of notebook 04 with one change: only heads in the merged pruned set of notebook 03
# can be senders or be selected. Everything else — the selection rule, the breadth-first search, the
# 4 × 4 grid of settings, the Pareto choice — is identical, so the two methods can be compared fairly.
#
# This notebook runs both on IOI and asks three questions:
#
# 1. **What does APP save?** Sender evaluations, forward passes, FLOPs and seconds.
# 2. **What does it lose?** Overlap with the dense circuit, and Perf on held-out prompts.
# 3. **How is one circuit chosen** from the searches of the grid (16 at the paper's size, 4 at the tutorial's)?
#
# On GPT-2 small, the paper's numbers are shown beside ours.

# %%
# Colab only: install the kit (Colab's own torch, built for its GPU, is kept). Elsewhere this does nothing.
import importlib.util
import sys

REPOSITORY = "https://github.com/OWNER/REPO"  # from pyproject.toml [project.urls]
if "google.colab" in sys.modules and importlib.util.find_spec("app_helpers") is None:
    if "OWNER/REPO" in REPOSITORY:
        raise SystemExit(
            "This copy of the kit names no public repository yet, so Colab cannot install it from GitHub. "
            "Either upload the kit's folder (Files pane) and run: %pip install ./<folder>  or build a wheel "
            "where you have the kit (python -m pip wheel . --no-deps -w dist), upload it and run: "
            "%pip install app_helpers-0.1.0-py3-none-any.whl  Then run this notebook again.")
    # %pip install -q "app-helpers @ git+https://github.com/OWNER/REPO"

# %% tags=["parameters"]
MODEL = "auto"  # "auto", "gpt2", "app-toy" (bundled), "random-gpt2", or a local Hugging Face model directory
SIZE = "auto"  # "auto": the paper's size (N=100, held-out 200, 4 x 4 grid) if estimated to fit 10 min here;
# "tutorial": N=40, held-out 100, a 2 x 2 grid; "paper": the paper's always
N = None  # prompts for scoring and search (the paper: 100); None: the size's (tutorial 40, paper 100)
EVAL_N = None  # held-out prompts for Perf (the paper: 200); None: the size's (tutorial 100, paper 200)
SEED = 0
RULE = "first"  # cliff rule for the pruning step: "first", "biggest" or "fixed"

# %%
import torch

from app_helpers import sizing
from app_helpers.models import notebook_model

torch.set_grad_enabled(False)
model, facts = notebook_model(MODEL, task="ioi")  # which model and why, how big, how to get GPT-2
size, estimate = sizing.notebook_size(SIZE, model, "05", facts["is_gpt2_small"], N, EVAL_N)
N, EVAL_N = size.n, size.eval_n
print(estimate)  # which size and why, and how long it takes at most here: before the long cells below
model_is_gpt2 = facts["is_gpt2_small"]
n_layers, n_heads = facts["layers"], facts["heads_per_layer"]

# %% [markdown]
# ## 1 · Run both methods
# `run_comparison` prunes (scores, sweeps, cliffs, merge), then runs the grid (`size.scales` × `size.thresholds`) twice, each on a
# fresh path-patching engine: once over every head (dense) and once over the merged set (APP). Each
# grid's chosen circuit is scored on `EVAL_N` held-out prompts drawn with seed `SEED + 1000`. This is the
# slowest cell of the notebook.

# %%
from app_helpers.circuits import references_for
from app_helpers.pipeline import run_comparison
from app_helpers.report import comparison_table

references = references_for(facts["location"], "ioi")  # GPT-2's published circuits, app-planted's truth
comparison = run_comparison(model, "ioi", n=N, seed=SEED, eval_n=EVAL_N, scales=size.scales,
                            thresholds=size.thresholds, rule=RULE,
                            model_name=facts["spec"], references=references)
dense, app, pruning = comparison.dense, comparison.app, comparison.pruning
print(comparison_table(comparison))

# %% [markdown]
# ## 2 · What APP never looks at
# The first step of every search path-patches each candidate head into the logits. Left: dense path
# patching evaluates every head. Right: APP evaluates only the merged set; grey cells were pruned and
# cost nothing. The same saving repeats at every receiver of the search.

# %%
import matplotlib.pyplot as plt

from app_helpers import viz
from app_helpers.identities import LOGITS

width, height = max(4.0, 0.45 * n_heads + 2), max(2.5, 0.4 * n_layers + 1.2)
fig, axes = plt.subplots(1, 2, figsize=(2 * width, height + 0.6))
shared = float(dense.grid.best.scores[LOGITS].abs().nan_to_num(0).max())  # APP's scores are a subset of these
viz.head_heatmap(dense.grid.best.scores[LOGITS], f"dense PP: {pruning.n_heads_total} heads evaluated", ax=axes[0],
                 limit=shared)
viz.head_heatmap(app.grid.best.scores[LOGITS], f"APP: {len(pruning.merged)} heads evaluated", ax=axes[1],
                 limit=shared)
fig.tight_layout()

# %% [markdown]
# ## 3 · Cost
# Four ways to count, side by side:
#
# - **sender evaluations** — one per (sender, receiver, component) score; what the paper calls forward
#   passes, since the authors' code runs one pass per evaluated sender;
# - **forward passes executed** — after the kit's engine has stacked many senders into one batch;
# - **GFLOPs** — analytic matrix-multiply FLOPs of the layers actually run;
# - **seconds** — wall time on this machine, including setting up the engine and evaluating the grid.
#
# The paper's speed-ups leave out the pruning cost; the kit shows both.

# %%
from app_helpers.report import comparison_rows

fig = viz.cost_bars({"dense PP": dense.cost, "APP": app.cost, "APP + pruning": app.cost + comparison.pruning_cost},
                    title=f"cost of the {size.grid_runs}-run grid")
speedups = {label: value for label, _, value in comparison_rows(comparison) if label.startswith("speed-up")}
for label, value in speedups.items():
    print(f"{label:<34} ×{value:.2f}")

# %% [markdown]
# ### When does pruning pay for itself?
# Pruning has a fixed price (scores and sweeps: about 120 evaluations of the whole model); the search's
# saving grows with the number of heads pruned away. The figure draws, from the kit's FLOP model, one
# search's cost against the size of the pruned set: dense PP is flat, APP grows with the set, and
# "APP + pruning" crosses dense PP at the **break-even** size. A pruned set smaller than that pays for
# itself. The red point is this run (measured, pruning included). The model counts every sender
# evaluation at full price (an upper bound); the engine's batching and memoisation make measured costs
# lower, which is why the point can lie below the curves: compare the point with the dotted line, this
# run's measured dense cost.

# %%
from app_helpers.sizing import Shape, cost_curve

seq = int(comparison.eval_task.clean_tokens.shape[1])
curve = cost_curve(Shape.of(model.cfg), N, seq, circuit_heads=max(1, len(dense.circuit)))
with_pruning = app.cost + comparison.pruning_cost
fig = viz.cost_vs_heads(curve, this_run=(len(pruning.merged), with_pruning.flops / 1e9),
                        dense_measured=dense.cost.flops / 1e9)
pays = with_pruning.flops < dense.cost.flops
print(f"this run: a search space of {len(pruning.merged)} of {pruning.n_heads_total} heads; the model's break-even is "
      f"{curve.break_even} heads. Measured, APP + pruning costs {with_pruning.flops / 1e9:.1f} GFLOPs against dense "
      f"PP's {dense.cost.flops / 1e9:.1f}: pruning {'pays for itself' if pays else 'does NOT pay for itself'} here "
      f"(×{dense.cost.flops / with_pruning.flops:.2f}).")

# %% [markdown]
# ## 4 · The grid and the Pareto choice
# At the paper's size each method runs 16 searches, `scale` ∈ {1, 1.5, 2, 2.5} × `min_value_threshold` ∈
# {0.01, 0.001, 0.02, 0.002}; the tutorial size runs 4 of them ({1.5, 2.5} × {0.01, 0.001}). Looser settings select more heads: bigger circuits, usually higher Perf. The Pareto rule
# picks **the smallest circuit that is good enough**: Perf ≥ 75 % and at most half of all heads for APP,
# Perf ≥ 73 % and at most a quarter of all heads for dense path patching (the authors' settings). If no
# circuit qualifies, it takes the smallest circuit whose Perf is at least the grid's mean. The engine
# remembers every score it computed, so a later search only pays for receivers that no earlier search
# expanded (the `evals` column).

# %%
for run in (dense, app):
    m = run.method  # Method.DENSE or Method.APP: its label and Pareto settings
    print(f"{m.label}: Perf ≥ {m.min_perf:g} %, ≤ {m.max_fraction:g} of the heads → chosen: {run.grid.rule}")
    print(f"  {'scale':>5} {'threshold':>9} {'heads':>5} {'Perf %':>7} {'evals':>6}")
    for i, (search, perf) in enumerate(zip(run.grid.runs, run.grid.perfs)):
        mark = "  ← chosen" if i == run.grid.chosen else ""
        capped = " (capped)" if search.capped else ""
        print(f"  {search.scale:>5g} {search.min_value_threshold:>9g} {len(search.heads):>5} {perf:>7.1f} "
              f"{search.cost.sender_evaluations:>6}{capped}{mark}")
    print()

# %% [markdown]
# **Exercise.** Suppose we demanded Perf ≥ 90 % for APP (still at most half the heads). Which of APP's
# runs would be chosen? Give its index (in the order of the table) and check with the kit's own
# rule, `pareto_choice`.

# %%
my_index = None  # 0..15

# %%
from app_helpers.search import pareto_choice

index, why = pareto_choice([len(r.heads) for r in app.grid.runs], app.grid.perfs, pruning.n_heads_total, 90.0, 0.5)
if my_index is None:
    print("Not answered yet.")
else:
    print("✓ right" if my_index == index else f"✗ the rule picks run {index}")
print(f"with Perf ≥ 90: run {index} ({why})")

# %% [markdown]
# ## 5 · Overlap and Perf
# How close is APP's circuit to the dense one? **TPR** (recall) = share of the dense circuit's heads that
# APP found, **precision** = share of APP's heads that are in the dense circuit, **IoU** = intersection
# over union. In the figure, light grey heads are in neither circuit; heads of the dense circuit that
# pruning removed (outlined) were out of APP's reach from the start.

# %%
overlaps = comparison.overlaps()
for method in ("APP", "dense PP"):
    for ref, o in overlaps[method].items():
        if method == "dense PP" and ref == "dense PP":
            continue
        print(f"{method:<8} vs {ref:<10}: TPR {o.tpr:.2f}  precision {o.precision:.2f}  IoU {o.iou:.2f}  "
              f"({o.true_positives} shared of {o.n_circuit} / {o.n_reference} heads)")
print(f"\nPerf on held-out prompts: dense {dense.perf:.1f} %, APP {app.perf:.1f} %")
unreachable = [h for h in dense.circuit.heads if h not in pruning.merged]
fig = viz.kept_heatmap({"dense PP": dense.circuit.heads, "APP": app.circuit.heads}, n_layers, n_heads,
                       title="circuit heads: dense PP vs APP", outlined=unreachable, neither="in neither circuit")

# %%
fig, axes = plt.subplots(1, 2, figsize=(2 * max(5.0, 0.6 * n_heads + 2), max(3.5, 0.55 * (n_layers + 1) + 1)))
for ax, run in zip(axes, (dense, app)):
    viz.circuit_graph(run.circuit.heads, run.circuit.edges, n_layers, n_heads, ax=ax,
                      title=f"{run.name}: {len(run.circuit)} heads, Perf {run.perf:.1f} %")
fig.tight_layout()

# %% [markdown]
# ## 6 · Beside the paper (Table 2, GPT-2 small, IOI)
# The paper reports, for dense path patching (PP), its circuit's Perf and size, and for the pruned sets
# (FLAP, Contrastive-FLAP, Merged, each at its cliff) their Perf, size and **TPR against the dense PP
# circuit**: how many of the circuit's heads survive pruning. We compute the same quantities from this
# run (Perf on the held-out prompts). The paper also reports ×5.6 fewer GFLOPs for APP's whole grid on
# IOI. The comparison is only meaningful on GPT-2 small.

# %%
from app_helpers.report import paper_table

if not model_is_gpt2:
    print(f"NOTE: this run used {facts['spec']}, not GPT-2 small: the paper's column is for orientation only.\n")
print(paper_table(comparison))

# %% [markdown]
# ## Summary
# - APP runs the same search over fewer heads: fewer sender evaluations, passes and FLOPs than dense
#   path patching, and a circuit that can only contain heads the pruning kept.
# - Pruning itself has a fixed price. Whether APP *including* pruning is cheaper depends on how small the
#   pruned set is against the break-even size of section 3; this run's answer is printed there, measured.
# - Whether that costs accuracy shows in the overlap with the dense circuit and in held-out Perf.
# - Next, **06 · Beyond IOI** repeats the comparison on the other tasks.
