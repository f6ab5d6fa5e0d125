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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/00_quickstart.ipynb)
#
# # 00 · Quickstart: Accelerated Path Patching end to end
#
# A *circuit* is the small set of attention heads that carries one behaviour of a language model.
# **Path patching** (Wang et al., 2022) finds it by swapping one head's output for its output on a
# corrupted prompt and measuring what changes downstream. It is exact, but slow: about one forward pass
# per (sender head, receiver) pair, repeated at every step of the search.
#
# **APP** (Andersen et al., 2025) makes it cheaper in two moves:
#
# 1. **prune** — score every head with two cheap activation statistics (vanilla FLAP and
#    Contrastive-FLAP) and keep the heads that survive either score;
# 2. **search** — run path patching only over those survivors. A pruned head is never evaluated and can
#    never be selected; that is the whole saving.
#
# This notebook runs the pipeline on the IOI task in a handful of cells, then compares it with dense
# (un-pruned) path patching. Notebooks 01–06 open up each step.
#
# | step | kit call |
# |---|---|
# | load a model | `load_model` |
# | make the task (search and held-out prompts) | `make_split` |
# | prune | `prune_for_app` |
# | search | `PathPatcher.from_task` + `search_circuit` |
# | evaluate | `evaluate_circuit` |
# | compare with dense path patching | `run_comparison` + `comparison_table` |

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

# %% [markdown]
# ## Parameters
# Change these and re-run the notebook. `N` and `EVAL_N` trade accuracy for time.

# %% tags=["parameters"]
MODEL = "auto"  # "auto", "gpt2", "app-toy" (bundled), "random-gpt2", or a local Hugging Face model directory
SIZE = "auto"  # "auto": the paper's size (N=100, held-out 200, 4 x 4 grid) if estimated to fit 10 min here;
# "tutorial": N=40, held-out 100, a 2 x 2 grid; "paper": the paper's always
N = None  # prompts used to score heads and to search (the paper: 100); None: the size's (tutorial 40, paper 100)
EVAL_N = None  # held-out prompts used to measure Perf (the paper: 200); None: the size's (tutorial 100, paper 200)
SEED = 0  # seed of the search prompts; the held-out prompts use SEED + 1000

# %% [markdown]
# ## Which model?
# With `MODEL = "auto"` the kit picks GPT-2 small when a GPU and the Hugging Face hub are available, and
# its own bundled model otherwise. `notebook_model` loads it and prints the choice, the reason and the
# model's size.

# %%
import torch

from app_helpers import sizing
from app_helpers.models import notebook_model

torch.set_grad_enabled(False)  # patching only reads and overwrites activations
model, facts = notebook_model(MODEL, task="ioi")  # which model and why, how big, how to get GPT-2
size, estimate = sizing.notebook_size(SIZE, model, "00", facts["is_gpt2_small"], N, EVAL_N)
N, EVAL_N = size.n, size.eval_n
print(estimate)  # which size and why, and how long it takes at most here: before the long cells below
model_is_gpt2 = facts["is_gpt2_small"]
n_layers, n_heads = facts["layers"], facts["heads_per_layer"]

# %% [markdown]
# ## 1 · The task
# Indirect Object Identification (IOI): *"When Mary and John went to the store, John gave a drink to"*
# should continue with *" Mary"* (the indirect object, IO), not *" John"* (the subject, S). Every clean
# prompt has a **corrupted** twin in which all three names are replaced by fresh ones, so nothing in it
# points to the right answer. The held-out prompts, drawn with another seed, are used only to score
# the final circuits.

# %%
from app_helpers.tasks import make_split

split = make_split("ioi", model, n=N, eval_n=EVAL_N, seed=SEED)  # held-out prompts never repeat a search prompt
task, eval_task = split.search, split.held_out
answer = model.tokenizer.decode([int(task.correct[0])])
print(f"{len(task)} search prompts and {len(eval_task)} held-out prompts, for example")
print(f"  clean:     {task.clean_prompts[0]} → {answer.strip()}")
print(f"  corrupted: {task.corrupted_prompts[0]}")

# %% [markdown]
# ### The algorithm to find
# Offline, the kit's model for IOI is **app-planted**: a GPT-2-shaped model whose IOI algorithm was
# planted by training, so we know the answer the search should find. The algorithm is four roles in
# Wang et al.'s vocabulary, written as plain Python in `app_helpers/toy/ioi_algorithm.py`:
# **previous token** heads remember which name came before the next token; **induction** heads at S2
# find the earlier position whose remembered name is S2's; **S-inhibition** heads carry that repeated
# name to END; **name movers** copy the name that is *not* inhibited to the output. Each role lives in
# chosen heads. An *interchange* — giving one role its value from another prompt — changes the output
# exactly as the algorithm predicts; that is what training enforced and what the tests measure.
# (On GPT-2 small the same roles exist, found by Wang et al. with the methods of this kit.)

# %%
from app_helpers.circuits import planted_truth
from app_helpers.toy import ioi_algorithm as algorithm

for role, heads in algorithm.ROLES.items():
    print(f"{role:<15} heads {' '.join(f'{l}.{h}' for l, h in heads)}")
base = algorithm.Story(names=("Mary", "John"), repeated="John")  # "… Mary and John … John gave … to"
source = algorithm.Story(names=("Mary", "John"), repeated="Mary")  # "… Mary and John … Mary gave … to"
print(f"\nbase prompt → {algorithm.run(base)}")
print(f"S-inhibition heads patched from a prompt that repeats Mary → {algorithm.run(base, {'s-inhibition': source})}")
print(f"name movers ablated → {algorithm.run(base, {'name mover': algorithm.ABLATED})}")
print(f"\nthe planted truth: {len(planted_truth())} heads; "
      f"{'this notebook searches app-planted, so it can be scored against it' if facts['location'].endswith('app-planted') else 'this model is not app-planted: the truth is shown for reference only'}")

# %% [markdown]
# ## 2 · Prune
# `prune_for_app` scores every head twice, sweeps the sparsity (the fraction of heads removed) from
# 0.60 to 0.98, picks for each score the last sparsity before performance falls off a cliff, and
# merges the two kept sets. The union is APP's search space. (Notebooks 02 and 03 explain each part.)

# %%
from app_helpers import viz
from app_helpers.circuits import references_for
from app_helpers.pruning import prune_for_app

pruning = prune_for_app(model, task)
for method in ("flap", "contrastive"):
    print(f"{method:<12} cliff at sparsity {pruning.sparsity[method]:.2f}: keeps {len(pruning.kept[method])} heads")
print(f"merged: APP searches {len(pruning.merged)} of {pruning.n_heads_total} heads")

# Outline the known IOI circuit (GPT-2 small: Wang et al.'s; app-planted: its planted truth) to see which survive.
known = references_for(facts["location"], "ioi")
reference = next(iter(known.values())).heads if known else ()
fig = viz.kept_heatmap({"FLAP": pruning.kept["flap"], "Contrastive": pruning.kept["contrastive"]},
                       n_layers, n_heads, title="heads kept by each score at its cliff", outlined=reference,
                       neither="pruned by both")

# %% [markdown]
# ## 3 · Search
# The search starts at the logits: it path-patches every candidate head into the logits, selects the
# heads whose effect stands out, then path-patches into each selected head's query, key and value, and
# so on, breadth first. `scale` and `min_value_threshold` set how much an effect must stand out.

# %%
from app_helpers.patching import PathPatcher
from app_helpers.search import search_circuit

engine = PathPatcher.from_task(model, task)
app_run = search_circuit(engine, candidates=pruning.merged, scale=1.0, min_value_threshold=0.01)
print(f"APP circuit ({len(app_run.heads)} heads):", " ".join(f"{l}.{h}" for l, h in sorted(app_run.heads)) or "(empty)")
print(f"cost: {app_run.cost.sender_evaluations} sender evaluations, {app_run.cost.forward_passes} batched "
      f"forward passes, {app_run.cost.flops / 1e9:.2f} GFLOPs, {app_run.cost.seconds:.1f} s")
fig = viz.circuit_graph(app_run.heads, app_run.edges, n_layers, n_heads,
                        title="APP circuit, one search (scale 1, threshold 0.01)")

# %% [markdown]
# ## 4 · Evaluate
# **Perf** = 100 × LD(circuit) / LD(full model), where LD is the mean logit difference
# logit(IO) − logit(S). To run "only the circuit", every other head is mean-ablated: its output is
# replaced by its average output over the corrupted prompts. 100 % means the circuit alone recovers the
# model's behaviour.

# %%
from app_helpers.evaluation import evaluate_circuit

result = evaluate_circuit(model, eval_task, app_run.heads)
print(f"full model LD {result.ld_full:.3f}, corrupted LD {result.ld_corrupted:.3f}, circuit LD {result.ld_circuit:.3f}")
print(f"Perf of the APP circuit on {len(eval_task)} held-out prompts: {result.perf:.1f} %")

# %% [markdown]
# ## 5 · APP vs dense path patching
# One setting of `scale` and `min_value_threshold` can miss heads: where a role is shared by several heads
# (backups), each head's own effect is small and may stay under the bar. So the paper runs each method over
# a 4 × 4 grid of the two (`SIZE = "paper"`; the tutorial size runs 2 × 2), picks one circuit from the grid
# by a Pareto rule (small but good enough), and scores it on held-out prompts. `run_comparison` does
# exactly that for both methods, each on its own engine, and measures every cost. This is the slowest
# cell: dense path patching visits every head.

# %%
from app_helpers.pipeline import run_comparison
from app_helpers.report import comparison_table

references = references_for(facts["location"], "ioi")  # GPT-2's published circuits, app-planted's truth
comparison = run_comparison(model, "ioi", n=N, seed=SEED, eval_n=EVAL_N, scales=size.scales, thresholds=size.thresholds, model_name=facts["spec"],
                            references=references)
print(comparison_table(comparison))

# %% [markdown]
# Left: what each method paid for its grid (linear scale, ratios to dense PP on the bars; "APP + pruning" adds the
# scoring and sweep).
# Right: the two chosen circuits drawn over the same model.

# %%
fig = viz.cost_bars({"dense PP": comparison.dense.cost, "APP": comparison.app.cost,
                     "APP + pruning": comparison.app.cost + comparison.pruning_cost},
                    title=f"cost of the {size.grid_runs}-run grid")

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(2 * max(5.0, 0.6 * n_heads + 2), max(3.5, 0.55 * (n_layers + 1) + 1)))
for ax, run in zip(axes, (comparison.dense, comparison.app)):
    viz.circuit_graph(run.circuit.heads, run.circuit.edges, n_layers, n_heads, ax=ax,
                      title=f"{run.name}: {len(run.circuit)} heads, Perf {run.perf:.1f} %")
fig.tight_layout()

# %% [markdown]
# ## What to try next
# - Raise `N` or switch `MODEL` and re-run: the numbers above are all recomputed.
# - On a random-weight model (`random-gpt2`) there is no behaviour to find: circuits come out empty
#   or arbitrary and Perf is noise. The pipeline still runs, which is what that model is for.
# - Continue with **01 · Tasks and metrics** to see what the model is asked to do.
