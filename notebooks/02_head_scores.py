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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/02_head_scores.ipynb)
#
# # 02 · Head scores: vanilla FLAP vs Contrastive-FLAP
#
# Before any patching, APP ranks every attention head with a score computed from activation statistics:
# one forward pass over the clean prompts, one over the corrupted prompts, no gradients, no patching.
# There are two scores:
#
# - **vanilla FLAP** asks *how much does this head's output fluctuate on the task's prompts?* It looks
#   only at clean prompts, so it rewards heads that are busy on this kind of text, whatever they do.
# - **Contrastive-FLAP** asks *how much does the corruption change how loudly this head writes?* A head
#   that matters for the task should behave differently when the information it needs is gone.
#
# This notebook computes both, step by step with the kit's functions, draws them, and compares the
# heads each one keeps.

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
TASK = "ioi"  # any task of notebook 01: ioi, greater_than, gendered_pronouns, name_induction, docstring
SIZE = "auto"  # "auto": the paper's size (N=100, held-out 200, 4 x 4 grid) if estimated to fit 10 min here;
# "tutorial": N=40, held-out 100, a 2 x 2 grid; "paper": the paper's always
N = None  # calibration prompts (clean and corrupted); None: the size's (tutorial 40, paper 100)
SEED = 0
SPARSITY = 0.75  # fraction of heads removed when we compare the kept sets
SOLUTIONS = True  # the exercises use the kit's reference solutions; set False to write and check your own

# %%
import torch

from app_helpers import sizing
from app_helpers.models import notebook_model

torch.set_grad_enabled(False)
model, facts = notebook_model(MODEL, task=TASK)  # which model and why, how big, how to get GPT-2
size, estimate = sizing.notebook_size(SIZE, model, "02", facts["is_gpt2_small"], N, None)
N = size.n
print(estimate)  # which size and why, and how long it takes at most here: before the long cells below
model_is_gpt2 = facts["is_gpt2_small"]
n_layers, n_heads = facts["layers"], facts["heads_per_layer"]

# %%
from app_helpers.circuits import references_for
from app_helpers.tasks import make_task

task = make_task(TASK, model, n=N, seed=SEED)
# Published circuits exist for GPT-2 small only; on other models nothing is outlined.
references = references_for(facts["location"], task.name)  # GPT-2's published, app-planted's truth
reference = next(iter(references.values())).heads if references else ()
print(f"task {task.name}: {len(task)} prompt pairs, {int(task.attention_mask.sum())} real tokens per prompt set"
      + (f"; reference circuit: {len(reference)} heads" if reference else ""))

# %% [markdown]
# ## 1 · Where the statistics are taken
# Each layer's heads produce outputs $z$ of size `d_head`; concatenated they form $C$ = `n_heads × d_head`
# **channels**, the input of the attention output matrix $W_O$ (TransformerLens hook
# `blocks.{l}.attn.hook_z`). Row $j$ of $W_O$ is what channel $j$ writes into the residual stream.
# Removing a head removes exactly its `d_head` channels, so this is the natural place to measure.
#
# The kit streams sums over every real (non-padding) token, batch by batch, so memory does not grow
# with the number of prompts.

# %%
from app_helpers.pruning import collect_channel_stats, output_weight_stats

clean = collect_channel_stats(model, task.clean_tokens, task.attention_mask)
corrupted = collect_channel_stats(model, task.corrupted_tokens, task.attention_mask)
w2, mean_abs_w = output_weight_stats(model)
print(f"per layer: {clean.sum.shape[1]} channels = {n_heads} heads × {clean.sum.shape[1] // n_heads} dims")
print(f"clean statistics over {clean.n_tokens} tokens of {clean.n_prompts} prompts")
print(f"shapes: variance {tuple(clean.variance.shape)}, energy {tuple(clean.energy.shape)}, "
      f"||W_O row||² {tuple(w2.shape)}, mean|W_O row| {tuple(mean_abs_w.shape)}")

# %% [markdown]
# ## 2 · The formulas
# For channel $j$ of layer $l$, with $x_j$ its value at one token:
#
# | quantity | definition |
# |---|---|
# | weight norm | $w^2_j = \lVert W_O[j,:] \rVert_2^2$, and $\overline{\lvert w\rvert}_j$ = mean of $\lvert W_O[j,i]\rvert$ |
# | input variance | $\mathrm{var}_j$ = unbiased variance of $x_j$ over all calibration tokens |
# | input energy | $e_j$ = mean over prompts of $\sum_\text{tokens} x_j^2$ |
# | fluctuation | $\mathrm{WIFV}_j = \mathrm{var}_j \cdot w^2_j$ |
# | weighted norm | $\mathrm{WIFN}_j = \overline{\lvert w\rvert}_j \cdot \sqrt{e_j}$ |
#
# $$ s^\text{FLAP}_j = \big(\mathrm{WIFV}_j^\text{clean}\big)^2 \qquad\qquad
#    s^\text{Contrastive}_j = \big|\, (\mathrm{WIFN}_j^\text{clean})^2 - (\mathrm{WIFN}_j^\text{corrupted})^2 \,\big| $$
#
# Then, per layer, the channel scores are standardised (z-score within the layer) and a head's score is
# the mean of its `d_head` standardised channels. Higher = keep. Standardising makes layers comparable
# before one global ranking over all heads.
#
# **Exercise · the channel scores.** Write both channel scores from the statistics: `clean.variance`
# and `clean.energy` are `[layers, channels]` tensors (so are `w2` and `mean_abs_w`); return a
# `[layers, channels]` tensor. The checks compare your functions with the kit's on random statistics
# and name common mistakes (a missing square, energy for variance, a missing absolute value).

# %%
from app_helpers import exercises


def my_flap_channel_score(clean, w2):
    raise NotImplementedError("replace this line: s_FLAP = (var · w²)²")


def my_contrastive_channel_score(clean, corrupted, mean_abs_w):
    raise NotImplementedError("replace this line: s_Contrastive = |WIFN_clean² − WIFN_corrupted²|")


flap_channel_score = exercises.solution_flap_channel_score if SOLUTIONS else my_flap_channel_score
contrastive_channel_score = (exercises.solution_contrastive_channel_score if SOLUTIONS
                             else my_contrastive_channel_score)
exercises.check_flap_channel_score(flap_channel_score)
exercises.check_contrastive_channel_score(contrastive_channel_score)

# %%
from app_helpers.pruning import heads_from_channels, score_heads

flap_channels = flap_channel_score(clean, w2)
contrastive_channels = contrastive_channel_score(clean, corrupted, mean_abs_w)
flap = heads_from_channels(flap_channels, n_heads)
contrastive = heads_from_channels(contrastive_channels, n_heads)

# Check: the one-call version gives the same matrices.
scores = score_heads(model, task)
assert torch.allclose(scores["flap"].scores, flap) and torch.allclose(scores["contrastive"].scores, contrastive)
print("step by step == score_heads(model, task) ✓   head score matrices:", tuple(flap.shape))

# %% [markdown]
# ## 3 · The two score maps
# Layers run down, heads across. Bright = high score = kept first. On GPT-2 small the heads of the
# published circuit are outlined.

# %%
import matplotlib.pyplot as plt

from app_helpers import viz

width, height = max(4.0, 0.45 * n_heads + 2), max(2.5, 0.4 * n_layers + 1.2)
fig, axes = plt.subplots(1, 2, figsize=(2 * width, height))
viz.head_heatmap(flap, "vanilla FLAP", outlined=reference, diverging=False, ax=axes[0], label="score (z)")
viz.head_heatmap(contrastive, "Contrastive-FLAP", outlined=reference, diverging=False, ax=axes[1], label="score (z)")
fig.tight_layout()

# %% [markdown]
# ## 4 · Which heads each score keeps
# Pruning at sparsity $p$ ranks all heads of all layers together and keeps the top
# round((1 − p) · #heads). Change `SPARSITY` in the parameters cell to move the threshold.

# %%
from app_helpers.circuits import overlap
from app_helpers.pruning import n_kept, prune

kept = {"FLAP": prune(scores["flap"], SPARSITY), "Contrastive": prune(scores["contrastive"], SPARSITY)}
print(f"sparsity {SPARSITY:.2f}: each score keeps {n_kept(facts['heads'], SPARSITY)} of {facts['heads']} heads")
for method, heads in kept.items():
    print(f"  {method:<12}", " ".join(f"{l}.{h}" for l, h in sorted(heads)))
agreement = overlap(kept["FLAP"], kept["Contrastive"])
print(f"kept by both: {agreement.true_positives}  (IoU {agreement.iou:.2f})")
fig = viz.kept_heatmap(kept, n_layers, n_heads, title=f"heads kept at sparsity {SPARSITY:.2f}", outlined=reference,
                       neither="pruned by both")

# %% [markdown]
# ### Across sparsities
# How much do the two scores agree, and (on GPT-2 small) how many circuit heads does each keep, as
# pruning gets harsher? The paper's observation on GPT-2 small: vanilla FLAP loses task heads already at
# low sparsity, Contrastive-FLAP keeps them much longer, and neither set alone is small enough to be a
# circuit. That is why APP keeps the **union** of the two (notebook 03).

# %%
header = f"{'sparsity':>8} {'kept':>5} {'IoU(FLAP, Contrastive)':>23}"
print(header + (f" {'circuit heads kept: FLAP':>25} {'Contrastive':>12}" if reference else ""))
for p in (0.5, 0.6, 0.7, 0.8, 0.9):
    f, c = prune(scores["flap"], p), prune(scores["contrastive"], p)
    line = f"{p:>8.2f} {len(f):>5} {overlap(f, c).iou:>23.2f}"
    if reference:
        line += f" {overlap(f, reference).true_positives:>18}/{len(reference)} {overlap(c, reference).true_positives:>9}/{len(reference)}"
    print(line)

# %% [markdown]
# **Exercise.** Suppose we gave Contrastive-FLAP the clean prompts *as the corrupted prompts too*.
# Predict the largest channel score it would produce, then run the check.

# %%
my_prediction = None  # a number

# %%
from app_helpers.pruning import contrastive_channel_scores

same = contrastive_channel_scores(clean, clean, mean_abs_w)
largest = same.abs().max().item()
if my_prediction is None:
    print("Not answered yet. Hint: look at the difference inside the Contrastive-FLAP formula.")
else:
    print("✓ right: nothing changed between the two prompt sets, so no channel scores"
          if abs(my_prediction - largest) < 1e-9 else f"✗ the kit computes {largest:g}")
assert largest == 0.0
print("and the head scores of a layer whose channels all tie are 0, not NaN:",
      bool((heads_from_channels(same, n_heads) == 0).all()))

# %% [markdown]
# ## Summary
# - Both scores come from two streamed forward passes and the $W_O$ weights: cheap compared with patching.
# - Vanilla FLAP measures activity; Contrastive-FLAP measures how much the corruption changes a head.
# - Try `TASK = "greater_than"` in the parameters cell: the Contrastive-FLAP map follows the task.
# - Next, **03 · Pruning and sparsity** chooses *how many* heads to keep.
