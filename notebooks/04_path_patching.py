# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/04_path_patching.ipynb)
#
# # 04 · Path patching: one path by hand, then the automatic search
#
# Activation patching asks "what if this head had seen the corrupted prompt?" and lets the change flow
# everywhere downstream. **Path patching** (Wang et al., 2022) is more precise: it asks how much a
# *sender* head affects one *receiver* **directly**, i.e. not through other attention heads.
#
# The receiver is either the **logits** or one later head's **query, key or value** input. Done for every
# sender, and repeated for every head found to matter, this traces a circuit backwards from the output.
#
# We first compute one number by hand with TransformerLens hooks — the slow, obvious way — then get the
# same number from the kit's engine, and then let the kit search automatically.

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
N = None  # prompts used for patching; None: the size's (tutorial 40, paper 100)
EVAL_N = None  # held-out prompts for Perf; None: the size's (tutorial 100, paper 200)
SEED = 0
SENDER = None  # (layer, head) patched by hand in section 1; None: the known name mover with the largest effect
SOLUTIONS = True  # the exercises use the kit's reference solutions; set False to write and check your own
SCALE = 1.0  # selection strictness inside the search (the paper's grid: 1, 1.5, 2, 2.5)
THRESHOLD = 0.01  # min_value_threshold: below this no effect counts (the paper's grid: 0.01, 0.001, 0.02, 0.002)

# %%
import torch

from app_helpers import sizing
from app_helpers.models import notebook_model

torch.set_grad_enabled(False)
model, facts = notebook_model(MODEL, task="ioi")  # which model and why, how big, how to get GPT-2
size, estimate = sizing.notebook_size(SIZE, model, "04", facts["is_gpt2_small"], N, EVAL_N)
N, EVAL_N = size.n, size.eval_n
print(estimate)  # which size and why, and how long it takes at most here: before the long cells below
model_is_gpt2 = facts["is_gpt2_small"]
n_layers, n_heads = facts["layers"], facts["heads_per_layer"]

# %%
from app_helpers.circuits import references_for
from app_helpers.tasks import make_split

split = make_split("ioi", model, n=N, eval_n=EVAL_N, seed=SEED)  # held-out prompts never repeat a search prompt
task, eval_task = split.search, split.held_out
known = references_for(facts["location"], "ioi")  # GPT-2's published circuits, app-planted's planted truth
movers = sorted({h for c in known.values() for h, role in c.roles.items() if role == "name mover"})
candidates = [tuple(SENDER)] if SENDER is not None else movers or [(n_layers - 1, h) for h in range(n_heads)]
print(f"IOI, {len(task)} prompts; heads we patch by hand: {' '.join(f'{l}.{h}' for l, h in candidates)}")

# %% [markdown]
# ## 1 · One sender → logits, by hand (the slow way)
# The recipe for a sender head $(l, h)$ and the logits as receiver:
#
# 1. run the clean prompts and the corrupted prompts once, and record every head's output $z$;
# 2. run the clean prompts again, and at **every** layer overwrite **every** head's $z$ with its clean
#    value, except the sender, which gets its corrupted value;
# 3. read the logit difference and normalise: 0 = no effect, −1 = as bad as the full corruption.
#
# Freezing all the other heads at their clean values is what makes this a *path*: the sender's change
# cannot reach the logits through another head. MLPs are **not** frozen; they are recomputed, so the
# path sender → MLPs → logits counts as direct.

# %%
from app_helpers.metrics import logit_diff, normalised_metric

z_hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
clean_logits, clean_cache = model.run_with_cache(task.clean_tokens, names_filter=z_hooks)
corrupted_logits, corrupted_cache = model.run_with_cache(task.corrupted_tokens, names_filter=z_hooks)
ld_clean = logit_diff(clean_logits, task).mean()
ld_corrupted = logit_diff(corrupted_logits, task).mean()


def freeze(layer, sender):
    """Hook for one layer: every head's z at its clean value, the sender's at its corrupted value."""
    def hook(z, hook):
        z = clean_cache[f"blocks.{layer}.attn.hook_z"].clone()  # [prompt, position, head, d_head]
        if layer == sender[0]:
            z[:, :, sender[1]] = corrupted_cache[f"blocks.{layer}.attn.hook_z"][:, :, sender[1]]
        return z
    return hook


def by_hand_to_logits(sender):
    patched = model.run_with_hooks(task.clean_tokens,
                                   fwd_hooks=[(z_hooks[layer], freeze(layer, sender)) for layer in range(n_layers)])
    return normalised_metric(logit_diff(patched, task).mean(), ld_clean, ld_corrupted).item()


print(f"LD clean {ld_clean:.3f}, corrupted {ld_corrupted:.3f}")
hand = {h: by_hand_to_logits(h) for h in candidates}
for h, effect in hand.items():
    print(f"path patching {h[0]}.{h[1]} → logits, by hand: {effect:+.4f}")
strongest = max(abs(effect) for effect in hand.values())
sender = next(h for h, effect in hand.items() if abs(effect) == strongest)
by_hand = hand[sender]
print(f"the strongest, {sender[0]}.{sender[1]}, is the sender we follow below")

# %% [markdown]
# That took three forward passes for **one** sender. Every head of the model is a sender, every head
# found later is a new receiver with three inputs (q, k, v): done this way, a search costs thousands
# of passes.
#
# ## 2 · The same number from the kit
# `PathPatcher` computes exactly the same quantity, but stacks many senders into one batch, starts
# each pass at the sender's layer (earlier layers are unchanged, so their cached clean values are
# reused), and remembers every score it has computed. For the logits it goes further: with every
# head frozen, no attention layer moves information between positions after the patch, so the final
# residual at the prediction position depends only on that position's own stream — the engine runs
# one position per prompt instead of all of them. `NaivePathPatcher` is the kit's deliberately plain
# reference: one full forward pass per sender, like the code above.

# %%
import math

from app_helpers.patching import NaivePathPatcher, PathPatcher

engine = PathPatcher.from_task(model, task)
to_logits = engine.to_logits()  # every head as a sender → [n_layers, n_heads]
assert math.isclose(to_logits[sender].item(), by_hand, rel_tol=1e-3, abs_tol=1e-4)
print(f"kit engine, same sender: {to_logits[sender].item():+.4f}  ✓ equals the hand computation")

naive = NaivePathPatcher.from_task(model, task)
assert torch.allclose(naive.to_logits(), to_logits, rtol=1e-3, atol=1e-4)
print("the naive reference gives the same matrix for every sender ✓\n")
print(f"{'all senders → logits':<22} {'forward passes':>15} {'GFLOPs':>9} {'seconds':>8}")
for name, e in (("naive (one per sender)", naive), ("kit engine", engine)):
    work = e.cost - e.setup_cost  # leave out the two caching passes both need
    print(f"{name:<22} {work.forward_passes:>15} {work.flops / 1e9:>9.2f} {work.seconds:>8.2f}")
print("(the naive loop runs every layer at every position per sender; the engine runs the layers from the sender on,\n"
      " at the prediction position only, several senders per pass)")

# %%
from app_helpers import viz

fig = viz.head_heatmap(to_logits, "path patching: each head → logits (normalised)", outlined=[sender],
                       label="effect (0 none, −1 full corruption)")

# %% [markdown]
# Red cells: patching the head *hurts* the behaviour (towards −1), so on clean prompts the head supports
# it. Blue cells: patching *helps*, so the head works against the behaviour. On GPT-2 small you should
# see the name movers (9.9, 9.6, 10.0) strongly red and the negative name movers (10.7, 11.10) blue; on
# app-planted, the planted name movers (printed in section 1).

# %% [markdown]
# ## 3 · Receivers inside the model: query, key, value
# For a head receiver $(L, r)$ and one of its inputs $c \in \{q, k, v\}$:
#
# 1. run the sender patch (as above) up to layer $L$ and record head $r$'s $c$ vector;
# 2. run the clean prompts with only head $r$'s $c$ replaced by that record, everything else recomputed;
# 3. read and normalise the logit difference.
#
# Only heads in layers below $L$ can be senders, so the matrices have $L$ rows. We take as receiver the
# strongest head above layer 0 (on GPT-2 small: usually a name mover, whose **query** is steered by the
# S-inhibition heads). The three panels share one colour scale, so equal colours mean equal effects.
#
# **Exercise 1 · the receiver hook.** Step 2 needs a hook that replaces one head's q (or k, or v) with
# the recorded one and leaves the other heads alone. Write it: `activation` and `patched` are
# `[prompt, position, head, d_head]` tensors; return the activation with head `head` taken from `patched`
# (do not modify the inputs in place). The check runs your hook inside a full path-patching computation
# on a small random GPT-2 and compares the scores with the kit's naive reference.

# %%
from app_helpers import exercises


def my_patch_head_input(activation, hook, patched, head):
    raise NotImplementedError("replace this line with your hook")


patch_head_input = exercises.solution_patch_head_input if SOLUTIONS else my_patch_head_input
exercises.check_patch_head_input(patch_head_input)

# %%
import matplotlib.pyplot as plt

upper = to_logits[1:].abs().nan_to_num(0)
receiver = (1 + int(upper.flatten().argmax()) // n_heads, int(upper.flatten().argmax()) % n_heads)
qkv = {c: engine.to_head(receiver, c) for c in ("q", "k", "v")}
width, height = max(4.0, 0.45 * n_heads + 2), max(2.5, 0.4 * receiver[0] + 1.2)
fig, axes = plt.subplots(1, 3, figsize=(3 * width, height))
shared = max(float(m.abs().nan_to_num(0).max()) for m in qkv.values())
for ax, (c, matrix) in zip(axes, qkv.items()):
    viz.head_heatmap(matrix, f"senders → {receiver[0]}.{receiver[1]} via {c}", ax=ax, limit=shared)
fig.tight_layout()

# %% [markdown]
# ## 4 · Which heads are selected?
# The search turns a score matrix $S$ into a set of heads. With $\mu$ and $\sigma$ the mean and standard
# deviation of all entries, head $(l, h)$ is selected when
#
# $$ |S_{l,h}| - |\mu| > \Big(\text{scale} + \frac{k}{\sqrt{(l+1) \cdot n_\text{heads}}}\Big)\,|\sigma|, \qquad k = 2, $$
#
# and nothing is selected when no entry exceeds `min_value_threshold`. Absolute values mean that heads
# which *hurt* the behaviour are selected too. The extra term is stricter for early layers, which have
# fewer heads below them. The first step (receiver = logits) uses scale 2.

# %% [markdown]
# **Exercise 2 · the selection rule.** Write `select_heads(scores, scale, min_value_threshold, k=2.0)`:
# `scores` is `[layers, heads]` (NaN = not evaluated, counts as 0); return the selected heads as a list
# of `(layer, head)` in layer-then-head order. The check compares it with the kit on constructed edge
# cases (ties on the boundary, all below the threshold, negative heads) and random matrices.

# %%
from app_helpers.search import LOGITS_SCALE


def my_select_heads(scores, scale, min_value_threshold, k=2.0):
    raise NotImplementedError("replace this line with the rule above")


select_heads = exercises.solution_select_heads if SOLUTIONS else my_select_heads
exercises.check_select_heads(select_heads)

# %%
selected = select_heads(to_logits, LOGITS_SCALE, THRESHOLD)
print(f"selected at the logits step (scale {LOGITS_SCALE:g}, threshold {THRESHOLD:g}):",
      " ".join(f"{l}.{h}" for l, h in selected) or "none")
fig = viz.head_heatmap(to_logits, "selected senders at the logits step (outlined)", outlined=selected)

# %% [markdown]
# ## 5 · The automatic search
# Breadth first from the logits:
#
# 1. path-patch every head to the logits and select (scale 2);
# 2. take the next selected head, add it to the circuit and, unless it is in layer 0, path-patch every
#    lower head into its q, k and v; queue the newly selected heads;
# 3. stop when the queue is empty, or when more than 75 % of all heads are queued or done (then the
#    queue joins the circuit as it is, and the result says `capped`).
#
# The engine above already holds the logits scores and one receiver, which a search would reuse for
# free; to show what a search really costs, it runs on a fresh engine.

# %%
from app_helpers.search import search_circuit

fresh = PathPatcher.from_task(model, task)  # nothing memoised: the cost below is the whole search's
run = search_circuit(fresh, scale=SCALE, min_value_threshold=THRESHOLD)
components = {c: sum(1 for e in run.edges if e[2] == c) for c in ("logits", "q", "k", "v")}
print(f"circuit: {len(run.heads)} heads (in the order found):", " ".join(f"{l}.{h}" for l, h in run.heads) or "none")
print(f"edges: {components}; capped: {run.capped}")
print(f"this search: {run.cost.sender_evaluations} sender evaluations, {run.cost.forward_passes} batched passes, "
      f"{run.cost.seconds:.1f} s")

# %% [markdown]
# The circuit as a graph: layers are rows (input at the bottom, logits on top), heads are nodes, and each
# edge is coloured by the receiver's input it was found through. Nodes are coloured by their role in the
# known circuit where they have one (GPT-2 small: Wang et al.'s; app-planted: the planted roles).

# %%
from app_helpers.circuits import overlap

roles = {h: r for c in known.values() for h, r in c.roles.items() if h in run.heads}
fig = viz.circuit_graph(run.heads, run.edges, n_layers, n_heads, roles=roles,
                        title=f"IOI circuit, scale {SCALE:g}, threshold {THRESHOLD:g}")

# %%
from app_helpers.evaluation import evaluate_circuit

r = evaluate_circuit(model, eval_task, run.heads)
print(f"Perf on {len(eval_task)} held-out prompts: {r.perf:.1f} % with {len(run.heads)} of {facts['heads']} heads")
for name, circuit in known.items():
    o = overlap(run.heads, circuit)
    print(f"vs {name}: TPR {o.tpr:.2f}, precision {o.precision:.2f} ({o.true_positives} of {o.n_reference} heads)")

# %% [markdown]
# ## 6 · What does each head do?
# Path patching says *which* heads matter and through which input. Wang et al. then asked *what* each
# one does, from evidence anyone can measure: where a head attends on the task's own prompts (previous
# token: S1+1 → S1 and IO+1 → IO; duplicate token: S2 → S1; induction: S2 → S1+1), whether it writes
# the answer straight into the logits (direct effect, see section 7) and copies names through its OV
# circuit (name movers; writing *against* them: negative name movers), and whether corrupting it moves
# the name movers' attention from IO towards S (S-inhibition). `roles.label_heads` computes each
# signature for every head and labels a head when a score clears its stated threshold (printed below).
# On app-planted the labels can be checked against the planted truth; on GPT-2 small, against Wang et
# al.'s classes.

# %%
from app_helpers.identities import head_name
from app_helpers.roles import label_heads, recovery

labels = label_heads(model, task)
print("thresholds:", ", ".join(f"{k} {v:g}" for k, v in labels.thresholds.items()))
for role, heads in labels.by_role().items():
    print(f"  {role:<20} {' '.join(f'{l}.{h}' for l, h in heads)}")
for name, circuit in known.items():
    if circuit.roles:
        found = recovery(labels, circuit)
        print(f"\nlabels vs {name}: {found}")
        for head in found.missed:  # the evidence: which score fell short of its threshold
            print(f"  {head_name(head)}: " + ", ".join(f"{k} {v:.2f}" for k, v in labels.evidence(head).items()))

# %% [markdown]
# **Reading the labels on app-planted.** Its roles were planted by interchange training: the trainer made
# each role's heads *carry* the algorithm's value (patch them from another prompt and the answer changes as
# the high-level model says). That alone says nothing about *how* a head gets its value, and the model's first
# versions did their jobs with attention elsewhere: the labeller found their name movers and little else. So
# the trainer also asked each role's heads to look where Wang et al.'s heads look, and the name movers to write
# the answer into the logits; now the labeller finds the planted roles (all 10 on the card's 50 prompts; on
# this notebook's prompts, the line above). A head it misses is printed with its evidence: which score fell
# short of its threshold. Heads outside the truth get attention labels too: many heads look at the previous
# token or at S1+1 and carry nothing the task needs. Attention is evidence for a mechanism, not the definition
# of a role; the effect-based signatures (direct effect, S-inhibition) are the ones that tie a head to the
# task. The model card (`data/app-planted/README.md`) gives the recovery on its own prompts;
# `data/app-planted/RECIPE-NOTES.md` tells what each training step changed.

# %% [markdown]
# ## 7 · Beside Perf: direct logit attribution and minimality
# **Direct logit attribution** (DLA) splits the logit difference at END into one share per head: the
# head's output through the final norm (its scale frozen at the clean run's) onto the answer direction.
# It counts only the straight path to the logits, so a head that works by steering later heads
# (S-inhibition) can matter a lot and still score near 0: compare it with the path-patching heatmap of
# section 2.
#
# **Minimality** (Wang et al.) asks whether every head of the found circuit C is needed: for a head v,
# remove the other heads of its role first (K; otherwise a redundant twin covers for it), then see how
# much removing v as well changes the logit difference: 100 · |LD(C∖K) − LD(C∖(K∪{v}))| / LD(model).
# Heads below the threshold add nothing the rest of the circuit does not already do.

# %%
from app_helpers.attribution import direct_logit_attribution, minimality
from app_helpers.circuits import Circuit

dla = direct_logit_attribution(model, eval_task)
fig = viz.head_heatmap(dla, "direct logit attribution at END (found circuit outlined)", outlined=run.heads,
                       label="logit difference")
head_roles = {h: roles.get(h) or labels[h] for h in run.heads if roles.get(h) or labels[h]}
m = minimality(model, eval_task, Circuit(heads=run.heads, roles=head_roles))
print(f"minimality of the found circuit (threshold {m.threshold:g} % of the model's logit difference):")
print(f"  {'head':<5} {'role':<20} {'K':<14} {'score %':>8}  DLA")
for row, head in zip(m.rows(), m.scores):
    print(f"  {row['head']:<5} {head_roles.get(head, '-'):<20} {row['K']:<14} {row['score %']:>8.1f}  "
          f"{float(dla[head]):+.2f}{'' if row['needed'] else '   ← not needed'}")
print("every head is needed ✓" if m.passed else f"not needed: {' '.join(f'{l}.{h}' for l, h in m.not_needed)}")

# %% [markdown]
# ## Summary
# - Path patching = patch one sender with its corrupted output while freezing all other heads, and read
#   the effect at one receiver (logits, or a head's q/k/v). MLPs are recomputed.
# - The kit's engine reproduces the hand computation and the naive reference exactly, with far fewer
#   passes.
# - Try `SCALE = 2.0` or `THRESHOLD = 0.001` and watch the circuit shrink or grow.
# - Next, **05 · Accelerated path patching** runs this search over the pruned set only, and counts what
#   that saves.
