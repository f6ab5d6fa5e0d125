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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/06_beyond_ioi.ipynb)
#
# # 06 · Beyond IOI: Greater-Than, gendered pronouns, name induction, Docstring
#
# Nothing in APP is specific to IOI: any task with clean/corrupted prompt pairs and a metric will do.
# This notebook runs the comparison of notebook 05 — dense path patching vs APP, each with its grid of
# searches and Pareto choice — on the kit's other tasks:
#
# | task | the model must … | corrupted prompts |
# |---|---|---|
# | Greater-Than (Hanna et al., 2023) | continue "from the year 17YY to the year 17" with a year after YY | YY = 01 |
# | gendered pronouns (Mathwin et al., 2023) | pick " he" or " she" to match a name | the name becomes " person" |
# | name induction | complete a two-token name seen earlier in the prompt | other names: nothing to copy |
# | Docstring (Conmy et al., 2023) | name the next undocumented argument in a Python docstring | fresh argument names |
#
# Docstring needs a code-aware BPE tokenizer such as GPT-2's; on other models the kit says so and skips it.

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
TASKS = None  # None: the size's (tutorial: greater_than, gendered_pronouns; paper: also name_induction, docstring)
SIZE = "auto"  # "auto": the paper's size (N=100, held-out 200, 4 x 4 grid) if estimated to fit 10 min here;
# "tutorial": N=40, held-out 100, a 2 x 2 grid; "paper": the paper's always
N = None  # prompts for scoring and search, per task; None: the size's (tutorial 40, paper 100)
EVAL_N = None  # held-out prompts for Perf, per task; None: the size's (tutorial 100, paper 200)
SEED = 0

# %%
import torch

from app_helpers import sizing
from app_helpers.models import notebook_model

torch.set_grad_enabled(False)
model, facts = notebook_model(MODEL)  # says which model and why, how big, and how to get GPT-2 small
size, estimate = sizing.notebook_size(SIZE, model, "06", facts["is_gpt2_small"], N, EVAL_N, TASKS)
N, EVAL_N, TASKS = size.n, size.eval_n, list(size.tasks)
print(estimate)  # which size and why, and how long it takes at most here: before the long cells below
model_is_gpt2 = facts["is_gpt2_small"]
n_layers, n_heads = facts["layers"], facts["heads_per_layer"]

# %% [markdown]
# ## 1 · The tasks on this model
# First, does the model do each task at all? A circuit search needs a clear gap between the clean and
# the corrupted metric (notebook 01); without one, every patching effect is noise.

# %%
from app_helpers.metrics import clean_and_corrupted
from app_helpers.tasks import get_task, make_task

available = []
for name in TASKS:
    try:
        task = make_task(name, model, n=N, seed=SEED)
    except ValueError as err:
        print(f"{name}: skipped — {err}\n")
        continue
    clean, corrupted = clean_and_corrupted(model, task)
    available.append(name)
    print(f"{name}: {get_task(name).summary}")
    print(f"   e.g. {task.clean_prompts[0]!r}")
    print(f"   {task.metric}: clean {clean:+.3f}, corrupted {corrupted:+.3f}\n")

# %% [markdown]
# ## 2 · Dense path patching vs APP on every task
# One `run_comparison` per task (the slowest cell). On GPT-2 small the published Greater-Than circuit
# (Hanna et al.) is passed as a reference, so its overlap is reported too.

# %%
from app_helpers.circuits import references_for
from app_helpers.pipeline import run_comparison
from app_helpers.report import comparison_table

comparisons = {}
for name in available:
    refs = references_for(facts["location"], name)
    comparisons[name] = run_comparison(model, name, n=N, seed=SEED, eval_n=EVAL_N, scales=size.scales,
                                       thresholds=size.thresholds,
                                       model_name=facts["spec"], references=refs)
    print(comparison_table(comparisons[name]), "\n")

# %% [markdown]
# ## 3 · All tasks at a glance
# Per task: circuit sizes, held-out Perf, how many of the dense circuit's heads APP recovered (TPR), the
# size of APP's search space, and the saving in sender evaluations and GFLOPs (pruning cost excluded,
# as in the paper).

# %%
from app_helpers.report import comparison_rows

print(f"{'task':<18} {'heads d/APP':>11} {'Perf % dense / APP':>19} {'TPR':>5} {'search space':>12} "
      f"{'evals ×':>8} {'GFLOPs ×':>9}")
for name, c in comparisons.items():
    row = {label: (d, a) for label, d, a in comparison_rows(c)}
    tpr = row["TPR vs dense PP"][1]
    print(f"{name:<18} {len(c.dense.circuit):>5}/{len(c.app.circuit):<5} {c.dense.perf:>9.1f} / {c.app.perf:<7.1f} "
          f"{tpr:>5.2f} {len(c.pruning.merged):>5} of {c.pruning.n_heads_total:<4} "
          f"{row['speed-up: evaluations'][1]:>8.2f} {row['speed-up: GFLOPs'][1]:>9.2f}")

# %% [markdown]
# Where do the circuits sit? One panel per task: heads found by dense path patching only, by APP only,
# or by both (light grey: in neither circuit). Outlined: heads of the dense circuit that pruning
# removed, which APP could never find.

# %%
import matplotlib.pyplot as plt

from app_helpers import viz

if comparisons:
    width, height = max(4.0, 0.45 * n_heads + 2), max(2.5, 0.4 * n_layers + 1.2)
    fig, axes = plt.subplots(1, len(comparisons), figsize=(width * len(comparisons) + 1.5, height), squeeze=False)
    for ax, (name, c) in zip(axes[0], comparisons.items()):
        outlined = [h for h in c.dense.circuit.heads if h not in c.pruning.merged]
        viz.kept_heatmap({"dense PP": c.dense.circuit.heads, "APP": c.app.circuit.heads}, n_layers, n_heads,
                         title=name, outlined=outlined, ax=ax, neither="in neither circuit")
    fig.tight_layout()

# %% [markdown]
# And what the grids cost, summed over all tasks (linear scale, ratios to dense PP on the bars; per-task ratios
# are in the table above).

# %%
from app_helpers.costs import Cost

dense_total = sum((c.dense.cost for c in comparisons.values()), Cost())
app_total = sum((c.app.cost for c in comparisons.values()), Cost())
pruning_total = sum((c.pruning_cost for c in comparisons.values()), Cost())
fig = viz.cost_bars({"dense PP": dense_total, "APP": app_total, "APP + pruning": app_total + pruning_total},
                    title=f"cost of the {size.grid_runs}-run grids, {len(comparisons)} tasks together")

# %% [markdown]
# ## 4 · Beside the paper (Table 2, GPT-2 small)
# As in notebook 05: PP = the dense path-patching circuit (Perf, heads); the pruned sets at their cliffs
# with their Perf, size and TPR against the dense circuit. The paper lists all four rows for
# Greater-Than and the dense and Merged rows for the other tasks. Only meaningful on GPT-2 small.

# %%
from app_helpers.report import paper_table

if not model_is_gpt2:
    print(f"NOTE: this run used {facts['spec']}, not GPT-2 small: the paper's column is for orientation only.\n")
for c in comparisons.values():
    print(paper_table(c), "\n")

# %% [markdown]
# ## Summary
# - The same two calls — `run_comparison` and `comparison_table` — serve every task; only the prompts change.
# - Tasks differ in how much pruning can remove without losing circuit heads: compare the TPR column
#   with the search-space column.
# - To add a task of your own, see `app_helpers/tasks/` (one small module per task).
