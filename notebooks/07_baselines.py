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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/07_baselines.ipynb)
#
# # 07 · Beside APP: activation patching, edge attribution patching, and each on the pruned set
#
# A researcher choosing a circuit-discovery method weighs APP against the cheaper families the field
# uses:
#
# - **activation patching** per head: patch one head's output from the corrupted run, everywhere, and
#   read the change — one pass per head, no paths (it cannot tell a name mover from the head that
#   steers it);
# - **edge attribution patching** (EAP, Syed et al. 2023): a first-order estimate of every edge at
#   once — (corrupted − clean activation) × gradient of the metric — from two forward passes and one
#   backward;
# - **EAP-IG** (Hanna et al. 2024): the same with the gradient averaged along a path from the corrupted
#   to the clean input, which repairs EAP where the model is far from linear.
#
# Each runs here with the kit's own selection rule, grid, Pareto choice and held-out Perf, so only the
# scores differ; and each runs again restricted to APP's pruned set, the paper's idea applied to it.

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

# %%
import torch

from app_helpers import sizing
from app_helpers.models import notebook_model

torch.set_grad_enabled(False)  # the baselines switch gradients on where they need them
model, facts = notebook_model(MODEL, task="ioi")  # which model and why, how big, how to get GPT-2
size, estimate = sizing.notebook_size(SIZE, model, "07", facts["is_gpt2_small"], N, EVAL_N)
N, EVAL_N = size.n, size.eval_n
print(estimate)  # which size and why, and how long it takes at most here: before the long cell below
n_layers, n_heads = facts["layers"], facts["heads_per_layer"]

# %% [markdown]
# ## 1 · Every method on the same prompts
# `run_comparison(..., baselines=True)` prunes once, runs dense path patching and APP (notebook 05), then
# each baseline twice: over every head and over the merged pruned set. Every method gets a fresh set-up,
# so no method profits from another's work, and every cost below is the method's own. Restricted
# methods are charged the pruning as well in the "+ pruning" column.

# %%
from app_helpers.circuits import references_for
from app_helpers.pipeline import run_comparison
from app_helpers.report import methods_table

references = references_for(facts["location"], "ioi")  # GPT-2's published circuits, app-planted's truth
comparison = run_comparison(model, "ioi", n=N, seed=SEED, eval_n=EVAL_N, scales=size.scales,
                            thresholds=size.thresholds, model_name=facts["spec"],
                            references=references, baselines=True)
print(methods_table(comparison))

# %% [markdown]
# How to read it: **TPR** is the share of the reference circuit's heads a method found (on app-planted:
# the planted truth; on GPT-2 small: Wang et al.'s 26 heads), **precision** the share of its heads that
# belong there. A method is better when it is cheaper *and* its circuit is as faithful (Perf) and as
# correct (TPR, precision). Activation patching finds heads that matter through any path, so it tends
# to pick up heads path patching reaches only through their receivers; EAP is cheap but approximates,
# and it is furthest off where the model is least linear.

# %%
import matplotlib.pyplot as plt

runs = [comparison.dense, comparison.app, *comparison.baselines]
ref = next(iter(comparison.references), None)
overlaps = comparison.overlaps()
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
for run in runs:
    restricted = run.candidates is not None
    flops = (run.cost.flops + (comparison.pruning_cost.flops if restricted else 0)) / 1e9
    tpr = overlaps[run.name][ref].tpr if ref else float("nan")
    marker = "s" if restricted else "o"
    axes[0].scatter(flops, run.perf, marker=marker, s=70, label=run.name)
    axes[1].scatter(flops, tpr, marker=marker, s=70, label=run.name)
axes[0].set_ylabel("Perf % (held-out)")
axes[1].set_ylabel(f"TPR vs {ref}" if ref else "TPR (no reference circuit for this model)")
for ax in axes:
    ax.set_xlabel("GFLOPs (restricted methods: pruning included)")
    ax.set_xscale("log")
axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
fig.suptitle("cost against quality, one point per method (squares: restricted to the pruned set)")
fig.tight_layout()

# %% [markdown]
# ## 2 · How close is EAP to the exact scores?
# EAP estimates each path-patching score to first order. On the logits receiver the two are directly
# comparable: the exact path-patching effect of every head into the logits, and EAP's estimate of the
# same edge. Points on the diagonal are estimated exactly.

# %%
from app_helpers.baselines import Baselines
from app_helpers.identities import LOGITS
from app_helpers.patching import PathPatcher
from app_helpers.tasks import make_task

task = make_task("ioi", model, n=N, seed=SEED)  # the search prompts (make_split's first half)
exact = PathPatcher.from_task(model, task).to_logits().flatten()
estimate = Baselines.from_task(model, task).eap().edges[LOGITS].flatten()
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.scatter(exact, estimate, s=14)
bound = float(max(exact.abs().max(), estimate.abs().max()))
ax.plot([-bound, bound], [-bound, bound], color="grey", linewidth=0.8)
ax.set_xlabel("path patching → logits (exact)")
ax.set_ylabel("EAP → logits (first order)")
ax.set_title("each head's edge into the logits")
corr = torch.corrcoef(torch.stack([exact, estimate]))[0, 1]
print(f"correlation {corr:.3f}; largest |error| {float((exact - estimate).abs().max()):.3f} "
      f"(scores are normalised: -1 = the full corruption)")

# %% [markdown]
# ## Summary
# - All methods share the kit's selection, grid, Pareto rule and held-out evaluation, so the table
#   compares the scores themselves and what they cost.
# - Restricting a method to the pruned set saves its work on the pruned heads; whether that pays once
#   pruning is charged depends on the method's own cost (EAP's is already small).
# - On GPT-2 small (Colab), compare the TPR column with Wang et al.'s 26 heads and with notebook 05's
#   Table 2 row.
