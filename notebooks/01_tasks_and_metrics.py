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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/01_tasks_and_metrics.ipynb)
#
# # 01 · Tasks and metrics
#
# Circuit discovery needs three things before any patching: a **behaviour** the model shows reliably, a
# **number** that measures it, and a **corrupted** version of every prompt in which the behaviour has no
# basis. This notebook builds them for Indirect Object Identification (IOI), looks at where a few heads
# attend, and tours the kit's other tasks.
#
# You will see: clean vs corrupted prompts, the token positions the kit records, the logit difference
# and its normalised form, attention patterns (circuitsvis), and the other four tasks.

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
N = None  # prompts per task; None: the size's (tutorial 40, paper 100)
SEED = 0  # seed of the prompts

# %%
import torch

from app_helpers import sizing
from app_helpers.models import notebook_model

torch.set_grad_enabled(False)
model, facts = notebook_model(MODEL)  # says which model and why, how big, and how to get GPT-2 small
size, estimate = sizing.notebook_size(SIZE, model, "01", facts["is_gpt2_small"], N, None)
N = size.n
print(estimate)  # which size and why, and how long it takes at most here: before the long cells below
model_is_gpt2 = facts["is_gpt2_small"]
n_layers, n_heads = facts["layers"], facts["heads_per_layer"]

# %% [markdown]
# ## 1 · IOI: clean and corrupted prompts
# In *"Then, Mary and John went to the store. John gave a drink to"* the model should predict
# **" Mary"**, the indirect object (IO), and not **" John"**, the subject (S) who appears twice. The
# corrupted twin replaces all three names with fresh ones (the "ABC" corruption): the sentence keeps its
# shape, but nothing in it says which name should come next.

# %%
from app_helpers.tasks import make_task

task = make_task("ioi", model, n=N, seed=SEED)
decode = model.tokenizer.decode
for i in range(3):
    print(f"clean:     {task.clean_prompts[i]}")
    print(f"corrupted: {task.corrupted_prompts[i]}")
    print(f"correct {decode([int(task.correct[i])])!r}, wrong {decode([int(task.wrong[i])])!r}\n")

# %% [markdown]
# Every template comes in two orders: **ABBA** (IO named first: "Mary and John … John … to") and
# **BABA** (S named first: "John and Mary … John … to"), half the prompts each, so that "pick the first
# name" or "pick the second name" cannot solve the task. Each (template, order) pair is its own
# **group**; later, an ablated head is replaced by its mean output over the prompts of the same group.

# %%
orders = ["ABBA" if t.index("{IO}") < t.index("{S1}") else "BABA" for t in task.templates]
counts = torch.bincount(task.groups, minlength=task.n_groups).tolist()
print(f"{task.n_groups} groups; prompts in ABBA order: {sum(c for c, o in zip(counts, orders) if o == 'ABBA')}, "
      f"BABA: {sum(c for c, o in zip(counts, orders) if o == 'BABA')}")
print("first template, both orders:")
print("  ", task.templates[0], f"({orders[0]})")
print("  ", task.templates[1], f"({orders[1]})")

# %% [markdown]
# The kit tokenises each slot separately, so it knows exactly where every name sits; no searching for
# tokens afterwards. `task.word_pos` holds one position per prompt for IO, S1 (first mention of S),
# S2 (second mention), S1+1 (the token after S1) and END (where the answer is predicted).

# %%
where = {int(pos[0]): name for name, pos in task.word_pos.items()}
for p, tok in enumerate(task.str_tokens(0)):
    print(f"{p:>3} {tok!r:<14} {where.get(p, '')}")

# %% [markdown]
# ## 2 · The logit difference
# The behaviour is measured at END as **LD = logit(correct) − logit(wrong)**, averaged over prompts.
# On clean prompts a model that does IOI has LD well above 0; on corrupted prompts there is nothing to
# prefer, so LD should be near 0.

# %%
from app_helpers.metrics import logit_diff, normalised_metric

clean_logits = model(task.clean_tokens)
corrupted_logits = model(task.corrupted_tokens)
ld_clean = logit_diff(clean_logits, task)  # one value per prompt
ld_corrupted = logit_diff(corrupted_logits, task)
print(f"clean LD     {ld_clean.mean():+.3f}  (prompts with LD > 0: {(ld_clean > 0).float().mean():.0%})")
print(f"corrupted LD {ld_corrupted.mean():+.3f}")
if model_is_gpt2:
    print("GPT-2 small does IOI: expect a clean LD of a few logits and a corrupted LD near zero.")

# %% [markdown]
# Patching experiments report the **normalised metric**
#
# $$ m = \frac{LD_\text{patched} - LD_\text{clean}}{LD_\text{clean} - LD_\text{corrupted}} $$
#
# so that numbers are comparable across tasks and models.
#
# **Exercise.** Without running anything: what is *m* when the "patched" run is simply the clean run?
# And when it is the corrupted run? Put your two numbers below and run the check.

# %%
my_m_clean = None  # your prediction for m when LD_patched = LD_clean
my_m_corrupted = None  # your prediction for m when LD_patched = LD_corrupted

# %%
m_clean = normalised_metric(ld_clean.mean(), ld_clean.mean(), ld_corrupted.mean()).item()
m_corrupted = normalised_metric(ld_corrupted.mean(), ld_clean.mean(), ld_corrupted.mean()).item()
if my_m_clean is None or my_m_corrupted is None:
    print("Not answered yet: fill in the cell above. (Hint: put each LD into the formula.)")
else:
    ok = abs(my_m_clean - m_clean) < 1e-6 and abs(my_m_corrupted - m_corrupted) < 1e-6
    print("✓ right" if ok else f"✗ not quite: the kit computes {m_clean:g} and {m_corrupted:g}")
assert abs(m_clean) < 1e-6 and abs(m_corrupted + 1) < 1e-6  # 0 = behaves as clean, -1 = as corrupted

# %% [markdown]
# ### Knob: which corruption?
# ABC (the paper's default) replaces all three names, so the corrupted prompt carries no information
# about the answer. The kit offers two others. ABA puts the IO name where S2 was: now the IO name is the
# repeated one, so a model that does IOI should prefer the *other* name and LD turns negative. ABD
# replaces only S2 with a fresh name, so no name is repeated. The gap between clean and corrupted LD is
# the room patching has to show an effect, and its sign tells you what "fully corrupted" means.

# %%
from app_helpers.tasks.ioi import CORRUPTIONS

for corruption, what in CORRUPTIONS.items():
    variant = make_task("ioi", model, n=N, seed=SEED, corruption=corruption)
    ld = logit_diff(model(variant.corrupted_tokens), variant).mean()
    print(f"{corruption}: corrupted LD {ld:+.3f}   ({what})")

# %% [markdown]
# ## 3 · Where do heads look?
# Wang et al. found **name mover** heads in GPT-2 small (9.9, 9.6, 10.0) that attend from END to the
# IO name and copy it to the output. A cheap first look at every head: the mean attention from END to
# IO minus the attention from END to S1. A head that copies names without caring which scores about 0;
# a head that prefers IO scores above 0.

# %%
from app_helpers import viz
from app_helpers.attention import attention_between, attention_patterns

patterns = attention_patterns(model, task.clean_tokens)  # [layer, prompt, head, query, key]
io_minus_s = attention_between(task, patterns, "END", "IO") - attention_between(task, patterns, "END", "S1")
name_movers = [(9, 9), (9, 6), (10, 0)] if model_is_gpt2 else []
# attention differences lie in [-1, 1]: a fixed scale keeps small, noisy differences pale
fig = viz.head_heatmap(io_minus_s, "attention END→IO minus END→S1, mean over prompts", outlined=name_movers,
                       label="attention difference", limit=1.0)

# %% [markdown]
# The same thing, prompt by prompt, with **circuitsvis**: hover over a token to see where it attends.
# We show the heads with the largest IO preference above (on GPT-2, the three name movers). This figure
# is interactive; it does not render on GitHub, only in Jupyter or Colab.

# %%
import circuitsvis as cv

shown = name_movers or [divmod(int(i), n_heads) for i in io_minus_s.flatten().argsort(descending=True)[:3]]
length = int(task.lengths[0])
cv.attention.attention_heads(
    attention=torch.stack([patterns[layer, 0, head, :length, :length] for layer, head in shown]).cpu(),
    tokens=task.str_tokens(0),
    attention_head_names=[f"{layer}.{head}" for layer, head in shown],
)

# %% [markdown]
# ## 4 · The other tasks
# The kit ships four more tasks with the same structure: clean and corrupted prompts of equal token
# length, answer sets, and a metric. (Docstring needs code tokens, so it exists only for BPE tokenizers
# such as GPT-2's; the kit says so when it cannot build a task.)
#
# | task | clean prompt (schematic) → answer | corruption |
# |---|---|---|
# | Greater-Than | "The [NOUN] lasted from the year 17YY to the year 17" → any of YY+1 … 99 | YY becomes 01 |
# | gendered pronouns | "So [NAME] is a really great friend, isn't" → " he" / " she" | the name becomes " person", "So" becomes "That" |
# | name induction | "Yesterday, [AB] went to the [PLACE]. Today, [A]" → [B] (a two-token name) | other names: nothing to copy |
# | Docstring | the next argument name in a Python docstring | fresh names in signature and docstring |
#
# For each: one example, and the model's metric on clean and corrupted prompts.

# %%
from app_helpers.metrics import clean_and_corrupted
from app_helpers.tasks import TASKS

for name, spec in TASKS.items():
    if name == "ioi":
        continue
    print(f"— {name}: {spec.summary}")
    try:
        other = make_task(name, model, n=N, seed=SEED)
    except ValueError as err:
        print(f"   not available for this model: {err}\n")
        continue
    clean, corrupted = clean_and_corrupted(model, other)
    n_correct, n_wrong = int(other.answers.correct_mask[0].sum()), int(other.answers.wrong_mask[0].sum())
    print(f"   clean:     {other.clean_prompts[0]!r}")
    print(f"   corrupted: {other.corrupted_prompts[0]!r}")
    print(f"   answers of prompt 0: {n_correct} correct, {n_wrong} wrong; metric {other.metric}: "
          f"clean {clean:+.3f}, corrupted {corrupted:+.3f}\n")

# %% [markdown]
# ## Summary
# - A task is a set of clean/corrupted prompt pairs with exact token positions and answer sets.
# - LD measures the behaviour; the normalised metric puts "clean" at 0 and "corrupted" at −1.
# - Next, **02 · Head scores** ranks every head from activation statistics alone, before any patching.
