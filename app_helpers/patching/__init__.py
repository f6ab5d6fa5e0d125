"""Path patching (Wang et al. 2022) — a fast exact engine and the naive reference it must match.

Sender patch for head (l, h): run the clean prompts with every head's ``z`` frozen to its clean value
except (l, h), which gets its corrupted value; MLPs are recomputed. The receiver is either the logits
(read the final residual) or one head's q/k/v input (record it from the sender-patched run, then run
the clean prompts with only that head's q/k/v replaced). Scores are the normalised metric
``(LD_patched - LD_clean) / (LD_clean - LD_corrupted)``: 0 = no effect, -1 = as bad as full corruption.

MLP nodes (``mlps=True``, off by default as in the paper): each layer's MLP is a node too — a sender
(its output corrupted), a receiver (``to_mlp(layer)``: its output recomputed from the sender-patched
stream, then put into the clean run) — and every node but the sender is frozen, MLPs included, so each
edge is a direct path; score matrices gain a last column, the layer's MLP (``base.PatchingBase``).

``PathPatcher`` gives the same numbers as ``NaivePathPatcher`` (one full forward per sender per
receiver, as the APP authors run it) while doing far less work:
- senders are stacked along the batch dimension (chunked to a memory budget), grouped by layer;
- a pass starts at the sender's layer from the cached clean residual (earlier layers are unchanged) and
  a q/k/v record stops at the receiver's layer; the receiver pass starts at the receiver's layer;
- a logits score runs only the prediction position: with every head's z frozen, no attention mixes
  positions after the patch, so the final residual there depends on that position's own stream alone;
- head receivers run the prompts in groups of similar length, each cut after its last prediction
  position (attention is causal: later positions never reach it), so padding costs almost nothing;
- one sender pass serves every receiver in a layer and all three components;
- every (receiver, sender) score is memoised, so a grid of searches re-uses work.
Heads outside the requested sender set get NaN and cost nothing.

The package, one job per module (each readable in one sitting):
- ``base``: the inputs, the clean/corrupted baselines, the normalisation, the lower-bound count;
- ``naive``: the reference engine;
- ``plan``: which passes run — views of the prompts, length groups, sender chunks, blocks of work;
- ``execution``: the passes themselves (freeze hooks, sender pass, q/k/v record, receiver pass);
- ``memo``: the scores computed so far;
- ``engine``: ``PathPatcher``, which ties plan, execution and memo together and counts their cost.
"""
from .base import Metric
from .engine import PathPatcher
from .naive import NaivePathPatcher
from .plan import length_groups

__all__ = ["Metric", "NaivePathPatcher", "PathPatcher", "length_groups"]
