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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/03_pruning_and_sparsity.ipynb)
#
# # 03 · Pruning and sparsity: the sweep, the cliff, the merged set
#
# Notebook 02 ranked the heads. This one decides **how many to keep**. APP prunes at every sparsity
# from 0.60 to 0.98, measures how well each pruned model still does the task, and stops just before
# performance falls off a cliff. It does this for both scores and keeps the union of the two surviving
# sets: APP's search space. At the end, two widgets let you move the sparsity yourself: one common
# sparsity along the sweep, then each method's sparsity separately with the search space it gives.

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
TASK = "ioi"
SIZE = "auto"  # "auto": the paper's size (N=100, held-out 200, 4 x 4 grid) if estimated to fit 10 min here;
# "tutorial": N=40, held-out 100, a 2 x 2 grid; "paper": the paper's always
N = None  # calibration prompts: scores and the sweep's Perf are computed on them; None: the size's (tutorial 40, paper 100)
SEED = 0
RULE = "first"  # cliff rule: "first", "biggest" or "fixed" (always 0.75)
SOLUTIONS = True  # the exercise uses the kit's reference solution; set False to write and check your own

# %%
import torch

from app_helpers import sizing
from app_helpers.models import notebook_model

torch.set_grad_enabled(False)
model, facts = notebook_model(MODEL, task=TASK)  # which model and why, how big, how to get GPT-2
size, estimate = sizing.notebook_size(SIZE, model, "03", facts["is_gpt2_small"], N, None)
N = size.n
print(estimate)  # which size and why, and how long it takes at most here: before the long cells below
model_is_gpt2 = facts["is_gpt2_small"]
n_layers, n_heads = facts["layers"], facts["heads_per_layer"]

# %%
from app_helpers.circuits import references_for
from app_helpers.pruning import score_heads
from app_helpers.tasks import make_task

task = make_task(TASK, model, n=N, seed=SEED)
scores = score_heads(model, task)
references = references_for(facts["location"], task.name)  # GPT-2's published, app-planted's truth
reference = next(iter(references.values())).heads if references else ()
print(f"task {task.name}, {len(task)} prompts; scores for {', '.join(scores)}")

# %% [markdown]
# ## 1 · How good is a pruned model?
# A pruned head is **mean-ablated**: at every position its output is replaced by its mean output over
# the corrupted prompts of the same template group, so it carries no task information. MLPs are never
# pruned. **Perf** is the pruned model's logit difference as a percentage of the full model's: 100 %
# means nothing was lost.

# %%
from app_helpers.evaluation import evaluate_circuit
from app_helpers.pruning import prune

for p in (0.5, 0.8, 0.95):
    kept = prune(scores["contrastive"], p)
    r = evaluate_circuit(model, task, kept)
    print(f"Contrastive-FLAP at sparsity {p:.2f}: {len(kept):>3} heads kept, Perf {r.perf:6.1f} %")
print(f"(the fully corrupted model would score {r.corrupted_perf:.1f} %)")

# %% [markdown]
# Perf can exceed 100 %: some heads work *against* the task (Wang et al.'s negative name movers are the
# famous case). Pruning such a head removes its push in the wrong direction, so the pruned model's logit
# difference is larger than the full model's. A Perf above 100 % is not an error; it says the pruned
# heads, taken together, were hurting the behaviour.

# %% [markdown]
# ## 2 · The sweep
# `prune_for_app` does the whole pruning stage in one call: score the heads both ways, prune at each
# sparsity 0.60, 0.61, …, 0.98 and evaluate all the pruned models in batched forward passes (one
# `CircuitEvaluator`, which computes the task's clean and corrupted baselines once and counts every pass),
# take each method's cliff, and merge. The rest of this notebook reads its result: nothing is computed
# twice. (It also sweeps the union at equal sparsity, "merged", drawn dashed: APP does not use that
# curve's cliff, it takes each method's own.)

# %%
from app_helpers import viz
from app_helpers.pruning import prune_for_app

result = prune_for_app(model, task, rule=RULE)
sweeps = result.sweeps
print(f"scores and sweeps: {result.cost.forward_passes} batched passes, {result.cost.flops / 1e9:.2f} GFLOPs, "
      f"{result.cost.seconds:.1f} s")
for m, s in sweeps.items():
    print(f"{m:<12} Perf from {s.perfs[0]:6.1f} % at p={s.sparsities[0]:.2f} to {s.perfs[-1]:6.1f} % at "
          f"p={s.sparsities[-1]:.2f}; cliff: p={s.cliff.sparsity:.2f} ({s.cliff.rule})")
fig = viz.sweep_curves(list(sweeps.values()))

# %% [markdown]
# ## 3 · The cliff rule
# Where to stop? The rule looks for the last point before a steep fall:
#
# - window $w$ = round((number of points − 1) / 10), i.e. 4 for the default sweep;
# - threshold $d$ = (max Perf − min Perf) / 10 over the sweep;
# - point $i$ is a cliff if its Perf exceeds the minimum of the next $w$ points by at least $d$.
#
# **first** takes the first such point, **biggest** the one with the largest drop; with **fixed**, or
# when no cliff exists, the sparsity is 0.75 (the authors' fallback).
#
# **Exercise · the cliff rule.** Write `cliff_sparsity(sparsities, perfs, fallback=0.75)` returning the
# sparsity the **first** rule picks. The check compares it with the kit on constructed curves: a clear
# cliff, no cliff (fallback), a drop exactly equal to the threshold, a cliff near the end, noisy curves.

# %%
from app_helpers import exercises


def my_cliff_sparsity(sparsities, perfs, fallback=0.75):
    raise NotImplementedError("replace this line with the rule above")


cliff_sparsity = exercises.solution_cliff_sparsity if SOLUTIONS else my_cliff_sparsity
exercises.check_cliff_sparsity(cliff_sparsity)

# %%
from app_helpers.pruning import find_cliff

s = sweeps["contrastive"]
c = s.cliff
print(f"Contrastive-FLAP: window {c.window}, threshold {c.threshold:.2f} Perf points")
for rule in ("first", "biggest", "fixed"):
    other = find_cliff(s.sparsities, s.perfs, rule=rule)
    print(f"  rule {rule:<8} → sparsity {other.sparsity:.2f}  ({other.rule})")
if c.index is not None:  # check: the chosen point really drops by at least the threshold
    assert c.drops[c.index] >= c.threshold
    print(f"at p={c.sparsity:.2f}: Perf {s.perfs[c.index]:.1f} %, drop over the next {c.window} points "
          f"{c.drops[c.index]:.1f} ≥ {c.threshold:.2f} ✓")

# %% [markdown]
# ## 4 · The merged set: APP's search space
# Each method is pruned at its own cliff (or at a sparsity you give it) and the two kept sets are
# merged. The paper calls the union **Merged**.

# %%
from app_helpers.evaluation import evaluate_circuits

sets = {"FLAP": result.kept["flap"], "Contrastive": result.kept["contrastive"], "Merged": result.merged}
perfs = evaluate_circuits(model, task, list(sets.values()))
for (name, heads), r in zip(sets.items(), perfs):
    p = result.sparsity.get(name.lower())
    print(f"{name:<12} {'at p=%.2f' % p if p is not None else '(union)':<10} {len(heads):>3} heads, Perf {r.perf:6.1f} %")
fig = viz.kept_heatmap({"FLAP": result.kept["flap"], "Contrastive": result.kept["contrastive"]}, n_layers, n_heads,
                       title="kept at each method's cliff (union = search space)", outlined=reference,
                       neither="pruned by both")

# %% [markdown]
# ### Kit choice: which ablation?
# Mean ablation (the paper's) replaces a pruned head by an average. **Resample** ablation instead gives
# it its output on the prompt's own corrupted twin. The kit offers both so you can see how much the
# number depends on that choice.

# %%
for ablation in ("mean", "resample"):
    r = evaluate_circuit(model, task, result.merged, ablation=ablation)
    print(f"Merged set, {ablation:<8} ablation: Perf {r.perf:6.1f} %")

# %% [markdown]
# ## 5 · Your turn: move the sparsity
# The explorer below only looks up the sweep computed above, so it reacts instantly even for GPT-2.
# Pick a method and a sparsity: the left panel shows the kept heads (reference heads outlined on
# GPT-2 small), the right one where you are on the curves. Widgets need a live kernel: on GitHub you
# see the static snapshot underneath instead.

# %%
from app_helpers.widgets import sparsity_explorer

sparsity_explorer(result, reference=reference)

# %%
snapshot = result.sparsity["contrastive"]
kept, perf = result.sweeps["merged"].at(snapshot)
print(f"snapshot: merged set at p={snapshot:.2f} keeps {len(kept)} heads, Perf {perf:.1f} %")
fig = viz.sweep_curves(list(result.sweeps.values()), marker_at=snapshot)

# %% [markdown]
# ## 6 · Each method's sparsity, and what the search space does to a circuit
# APP prunes each method at its own sparsity. The second explorer moves the two separately and shows
# the union, its Perf (looked up in a grid computed once, below) and which heads of a circuit the search
# space would lose: APP can only find heads it is allowed to search. The circuit outlined is the known
# one (app-planted's planted truth; GPT-2 small: Wang et al.'s).

# %%
from app_helpers.evaluation import CircuitEvaluator
from app_helpers.pruning import merged_perf_grid
from app_helpers.widgets import search_space_explorer

grid_sparsities = result.sweeps["flap"].sparsities[::3]  # every third point of the sweep
perf_grid = merged_perf_grid(CircuitEvaluator(model, task), result, grid_sparsities)
print(f"Perf of the union for {len(perf_grid)} sparsity pairs, computed once")
search_space_explorer(result, perf_grid, circuit=reference)

# %% [markdown]
# To take your own sparsities into a search (notebook 05), ask the pruning result for them: it re-prunes
# from the scores already computed, with no forward pass.

# %%
mine = result.with_sparsity({"flap": 0.9, "contrastive": 0.8})
lost = sorted(set(reference) - mine.merged)
print(f"FLAP at 0.90 keeps {len(mine.kept['flap'])}, Contrastive at 0.80 keeps {len(mine.kept['contrastive'])}: "
      f"merged search space {len(mine.merged)} heads; reference heads outside it: "
      f"{' '.join(f'{l}.{h}' for l, h in lost) or 'none'}")
fig = viz.kept_heatmap({"FLAP": mine.kept["flap"], "Contrastive": mine.kept["contrastive"]}, n_layers, n_heads,
                       title="FLAP at 0.90, Contrastive at 0.80", outlined=reference, neither="pruned by both")

# %% [markdown]
# **Exercise.** Using `result.sweeps["merged"]` (its `.sparsities` and `.perfs` lists), find the highest
# sparsity at which the merged set still reaches at least 80 % Perf. Assign it to `my_answer`.

# %%
my_answer = None  # e.g. 0.83

# %%
merged = result.sweeps["merged"]
good = [p for p, perf in zip(merged.sparsities, merged.perfs) if perf >= 80]
expected = max(good) if good else None
if my_answer is None:
    print("Not answered yet.")
elif expected is None:
    print("No sparsity reaches 80 % on this model, so there is no such point.")
else:
    print("✓ right" if abs(my_answer - expected) < 1e-9 else f"✗ the answer is {expected:.2f}")

# %% [markdown]
# ## Summary
# - The sweep measures a pruned model's Perf at every sparsity; the cliff rule picks the last safe point.
# - APP searches the union of the FLAP and Contrastive-FLAP sets. On GPT-2 small neither alone keeps the
#   whole dense circuit (the paper, IOI: 81 % and 76 % of its heads, the union 90 %); together they keep
#   the task's heads while still removing many others. Section 4 shows what each keeps on this model.
# - Next, **04 · Path patching** explains the search that runs on that reduced set.
