"""What ``app-planted`` must show, measured with the kit's own evaluator and path-patching engine.

- ``faithfulness``: Perf of the planted truth, and of the truth with one role removed (mean ablation by
  template group, the evaluator's default);
- ``interchange_accuracy``: per role, how often patching that role's heads from a source prompt changes
  the answer exactly as the high-level model (``toy.ioi_algorithm``) says;
- ``interchange_by_names``: the same pairs by how many names the source shares with the base, and (with
  ``own_positions``) with each role patched at its own positions only;
- ``s2_bypass``: how much of the answer follows S2's own token around the heads that should read it (why a
  middle role's interchange accuracy can fall short);
- ``strictness``: the largest change of the logit difference when one head outside the truth is noised;
- ``layering``: which heads path patching ranks first into the logits and into each role's input;
- ``role_recovery``: how many truth heads ``roles.label_heads`` gives their planted role, from Wang et al.'s
  signatures alone (n = 50, seed 0, as tests/test_roles.py and notebook 04).

The card (``toy.card``), the tests and the notebooks all call these, so they report the same numbers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch

from ..circuits import Circuit, planted_truth
from ..evaluation import CircuitEvaluator
from ..hooks import hook_name
from ..identities import head_name
from ..patching import PathPatcher
from ..pipeline import run_comparison
from ..roles import label_heads, recovery
from ..tasks import make_task
from .checks import task_accuracy
from .ioi_algorithm import ROLE_EDGES, ROLES, Story, run
from .ioi_prompts import PromptSampler, pad, role_positions

HELD_OUT_SEED = 12345


def held_out_task(model, n: int = 200, seed: int = HELD_OUT_SEED):
    return make_task("ioi", model, n=n, seed=seed)


def faithfulness(model, task) -> dict[str, float]:
    """Perf % of the truth and of the truth without each role (heads outside kept mean-ablated)."""
    truth = planted_truth()
    without = {role: Circuit(heads=tuple(h for h in truth.heads if h not in set(heads)))
               for role, heads in ROLES.items()}
    results = CircuitEvaluator(model, task).evaluate([truth, *without.values()])
    return {"truth": results[0].perf, **{f"without {role}": r.perf for role, r in zip(without, results[1:])}}


def interchange_accuracy(model, n: int = 400, seed: int = HELD_OUT_SEED) -> dict[str, float]:
    """Per role: the fraction of (base, source) pairs where the patched model's top token is the name the
    high-level model predicts. Pairs whose prediction is a tie (no slot inhibited) have no single right
    name and are left out; pairs are drawn by the training's own sampler with a seed it never uses."""
    return {role: share_right(counts.values()) for role, counts in interchange_by_names(model, n, seed).items()}


#: How a source's names relate to its base's: the categories of ``interchange_by_names``.
NAME_OVERLAP = ("same names", "one other name", "two other names")


def interchange_by_names(model, n: int = 400, seed: int = HELD_OUT_SEED,
                         own_positions: bool = False) -> dict[str, dict[str, list[int]]]:
    """``interchange_accuracy``'s pairs, counted by how many of the source's two names the base lacks
    (``NAME_OVERLAP``): role -> category -> [right, pairs]. A role whose heads carry *which* of the
    prompt's names (a slot) rather than the name itself is right on "same names" only.

    ``own_positions``: patch each role's heads at the role's own positions only (``role_positions``: the
    token after each name, S2, END) instead of at every position. Where a role is right there and wrong
    patched everywhere, its heads carry something at other positions that the model reads too."""
    sampler = PromptSampler(model.tokenizer, random.Random(seed))
    bases = [sampler.base() for _ in range(n)]
    sources = [sampler.source(b) for b in bases]
    pad_id = model.tokenizer.pad_token_id
    device = next(model.parameters()).device
    base_tokens = pad([b.ids(sampler.vocab) for b in bases], pad_id).to(device)
    source_tokens = pad([s.ids(sampler.vocab) for s in sources], pad_id).to(device)
    end = torch.tensor([b.layout.end for b in bases], device=device)
    overlap = [NAME_OVERLAP[2 - len(set(b.story.names) & set(s.story.names))] for b, s in zip(bases, sources)]
    out = {}
    for role, heads in ROLES.items():
        targets = [run(b.story, {role: s.story}) for b, s in zip(bases, sources)]
        at = None
        if own_positions:
            at = torch.zeros(base_tokens.shape, dtype=torch.bool, device=device)
            for i, b in enumerate(bases):
                at[i, role_positions(b.layout, role)] = True
        top = _patched_end_logits(model, base_tokens, source_tokens, heads, end, at).argmax(-1).tolist()
        counts = {category: [0, 0] for category in NAME_OVERLAP}
        for i, target in enumerate(targets):
            if max(target.values()) == 1.0:
                counts[overlap[i]][0] += top[i] == sampler.vocab[next(iter(target))]
                counts[overlap[i]][1] += 1
        out[role] = counts
    return out


def share_right(counts) -> float:
    """Right / pairs over ``[right, pairs]`` counts (0 when there are no pairs)."""
    counts = list(counts)
    return sum(c[0] for c in counts) / max(1, sum(c[1] for c in counts))


def _patched_end_logits(model, tokens: torch.Tensor, source_tokens: torch.Tensor, heads, end: torch.Tensor,
                        at: torch.Tensor | None = None):
    """Logits at ``end`` [n] of ``tokens`` [n, seq] with ``heads`` (layer, head) given their z from
    ``source_tokens`` [n, seq] at every position, or where ``at`` [n, seq] is True: ``[n, vocab]``."""
    layers = sorted({layer for layer, _ in heads})
    with torch.inference_mode():
        _, cache = model.run_with_cache(source_tokens, names_filter=[hook_name(l, "z") for l in layers])
        hooks = [(hook_name(l, "z"), _replace([h for ll, h in heads if ll == l], cache[hook_name(l, "z")], at))
                 for l in layers]
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return logits[torch.arange(len(end), device=end.device), end]


def s2_bypass(model, heads, n: int = 200, seed: int = HELD_OUT_SEED) -> float:
    """How much of the logit difference reaches the answer from S2's token *around* ``heads``.

    The algorithm reads the name at S2 in one place only: the induction heads. Switch that name to the other
    one (the answer flips) while ``heads`` keep their values from the unswitched prompt: if nothing else reads
    S2's token, the answer stays. Returns mean LD(switched, heads held) / mean LD(prompt), with LD = logit of
    the prompt's answer − logit of its repeated name at END: 1 when only ``heads`` read S2's token, about −1
    when they are bypassed entirely (holding no heads: the answer flips). Holding every head gives exactly 1
    (the name at S2 reaches END through attention only)."""
    sampler = PromptSampler(model.tokenizer, random.Random(seed))
    bases = [sampler.base() for _ in range(n)]
    switched = [replace(b, story=Story(b.story.names, b.story.answer), s2=b.story.answer) for b in bases]
    device = next(model.parameters()).device
    tokens, tokens_switched = (pad([p.ids(sampler.vocab) for p in ps], model.tokenizer.pad_token_id).to(device)
                               for ps in (bases, switched))
    end = torch.tensor([b.layout.end for b in bases], device=device)
    answer, repeated = (torch.tensor([sampler.vocab[getattr(b.story, k)] for b in bases], device=device)[:, None]
                        for k in ("answer", "repeated"))

    def logit_diff(logits):
        return float((logits.gather(1, answer) - logits.gather(1, repeated)).mean())

    held = _patched_end_logits(model, tokens_switched, tokens, list(heads), end)
    return logit_diff(held) / logit_diff(_patched_end_logits(model, tokens, tokens, [], end))


def s2_bypass_by_role(model) -> dict[str, float]:
    """``s2_bypass`` holding nothing, the induction heads (the algorithm's only reader of S2's token), and the
    S-inhibition heads (what reaches END from S2 around them)."""
    return {"nothing held": s2_bypass(model, []),
            **{role: s2_bypass(model, ROLES[role]) for role in ("induction", "s-inhibition")}}


def _replace(heads: list[int], source_z: torch.Tensor, at: torch.Tensor | None = None):
    """A z hook giving ``heads`` their ``source_z`` [n, seq, H, d] values, at every position or where ``at``
    [n, seq] is True."""
    def hook(z, hook):  # noqa: ARG001
        seq = z.shape[1]
        source = source_z[:, :seq, heads]
        if at is not None:
            source = torch.where(at[:, :seq, None, None], source, z[:, :, heads])
        z = z.clone()
        z[:, :, heads] = source
        return z
    return hook


def strictness(model, task) -> dict[str, object]:
    """Noise each head outside the truth alone (its output from the prompt's own ABC corruption, and its
    group mean) and report the largest |change of the logit difference| as a fraction of it."""
    cfg = model.cfg
    truth = set(planted_truth().heads)
    outside = [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads) if (l, h) not in truth]
    everything = [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
    out = {}
    for ablation in ("resample", "mean"):
        evaluator = CircuitEvaluator(model, task, ablation=ablation)
        results = evaluator.evaluate([[x for x in everything if x != head] for head in outside])
        change = torch.tensor([abs(r.ld_circuit - r.ld_full) / abs(r.ld_full) for r in results])
        i = int(change.argmax())
        out[ablation] = {"max_change": float(change[i]), "head": f"{outside[i][0]}.{outside[i][1]}"}
    return out


@dataclass
class Layering:
    """Path-patching scores into the logits and into each role's inputs, and whether they rank the heads
    of the role upstream of it first (the edges of ``ROLE_EDGES``)."""

    to_logits: torch.Tensor  # [L, H]
    into: dict[str, torch.Tensor]  # "role (component)" -> [receiver layer, H] mean score over the role's heads
    top: dict[str, list[str]]  # same keys + "logits" -> strongest senders, as "layer.head"
    holds: dict[str, bool]  # edge -> the sender role's heads are the top-|role size| senders


def layering(model, task) -> Layering:
    engine = PathPatcher.from_task(model, task)
    direct = engine.to_logits()
    into, top, holds = {}, {"logits": _top(direct, len(ROLES["name mover"]))}, {}
    holds["name mover -> logits"] = set(top["logits"]) == {f"{l}.{h}" for l, h in ROLES["name mover"]}
    for sender, receiver, component in ROLE_EDGES:
        if receiver is None:
            continue
        engine.prefetch(ROLES[receiver])  # one sender pass per layer for all of the role's heads
        scores = [engine.to_head(head, component) for head in ROLES[receiver]]
        depth = min(s.shape[0] for s in scores)
        mean = torch.stack([s[:depth] for s in scores]).mean(0)
        key = f"{receiver} ({component})"
        into[key] = mean
        top[key] = _top(mean, len(ROLES[sender]))
        holds[f"{sender} -> {key}"] = set(top[key]) == {f"{l}.{h}" for l, h in ROLES[sender]}
    return Layering(direct, into, top, holds)


def _top(scores: torch.Tensor, k: int) -> list[str]:
    flat = scores.nan_to_num(0).abs().flatten()
    idx = flat.argsort(descending=True)[:k].tolist()
    return [f"{i // scores.shape[1]}.{i % scores.shape[1]}" for i in idx]


def search_quality(model, n: int = 100, seed: int = 0, eval_n: int = 200) -> dict:
    """Dense path patching and APP on IOI (the kit's ``run_comparison``), scored against the truth."""
    truth = planted_truth()
    c = run_comparison(model, "ioi", n=n, seed=seed, eval_n=eval_n, show_progress=False,
                       references={truth.name: truth})
    ov = c.overlaps()
    with_pruning = c.app.cost + c.pruning_cost
    return {
        "dense_distinct_circuits": len({tuple(r.heads) for r in c.dense.grid.runs}),
        "app_distinct_circuits": len({tuple(r.heads) for r in c.app.grid.runs}),
        "dense": {"heads": [f"{l}.{h}" for l, h in c.dense.circuit.heads], "perf": c.dense.perf,
                  **{k: getattr(ov["dense PP"][truth.name], k) for k in ("tpr", "precision", "iou")}},
        "app": {"heads": [f"{l}.{h}" for l, h in c.app.circuit.heads], "perf": c.app.perf,
                **{k: getattr(ov["APP"][truth.name], k) for k in ("tpr", "precision", "iou")}},
        "search_space": len(c.pruning.merged),
        "gflops": {"dense": c.dense.cost.flops / 1e9, "app": c.app.cost.flops / 1e9,
                   "pruning": c.pruning_cost.flops / 1e9},
        "speedup_gflops": c.dense.cost.flops / c.app.cost.flops,
        "speedup_gflops_incl_pruning": c.dense.cost.flops / with_pruning.flops,
    }


def role_recovery(model, n: int = 50, seed: int = 0) -> dict:
    """``roles.recovery`` of ``label_heads`` on ``make_task("ioi", model, n, seed)`` against the truth, as JSON:
    recovered / total, per role [recovered, heads], and each missed head's [role, label given or None]."""
    found = recovery(label_heads(model, make_task("ioi", model, n=n, seed=seed)), planted_truth())
    return {"recovered": len(found.recovered), "total": found.total,
            "per_role": {role: list(v) for role, v in found.per_role.items()},
            "missed": {head_name(h): list(v) for h, v in sorted(found.missed.items())}}


def measure(model) -> dict:
    """Every number of the model card, on held-out prompts (N = 200)."""
    task = held_out_task(model)
    acc, ld = task_accuracy(model, task)
    lay = layering(model, task)
    by_names = interchange_by_names(model)
    truth = set(planted_truth().heads)
    direct = {f"{l}.{h}": round(float(lay.to_logits[l, h]), 3) for l in range(lay.to_logits.shape[0])
              for h in range(lay.to_logits.shape[1]) if (l, h) in truth or abs(float(lay.to_logits[l, h])) >= 0.05}
    m = {"ioi_accuracy": acc, "ioi_logit_diff": ld, "perf": faithfulness(model, task),
         "interchange_accuracy": {role: share_right(c.values()) for role, c in by_names.items()},
         "interchange_by_names": by_names,
         "interchange_at_own_positions": {role: share_right(c.values())
                                          for role, c in interchange_by_names(model, own_positions=True).items()},
         "s2_bypass": s2_bypass_by_role(model), "strictness": strictness(model, task),
         "layering": {"top": lay.top, "holds": lay.holds, "direct_effects": direct},
         "search": search_quality(model), "role_recovery": role_recovery(model)}
    return {**m, "criteria": criteria(m)}


def criteria(m: dict) -> dict[str, bool]:
    """The planted-model issue's targets, evaluated on ``measure``'s numbers."""
    s = m["search"]
    return {
        "IOI accuracy >= 99 %, logit difference >= 3": m["ioi_accuracy"] >= 0.99 and m["ioi_logit_diff"] >= 3,
        "Perf(truth) >= 90 %": m["perf"]["truth"] >= 90,
        "removing any one role: Perf <= 60 %": all(v <= 60 for k, v in m["perf"].items() if k != "truth"),
        "interchange accuracy >= 95 % per role": all(v >= 0.95 for v in m["interchange_accuracy"].values()),
        "noising one head outside the truth moves LD < 3 %": all(
            v["max_change"] < 0.03 for v in m["strictness"].values()),
        "path patching sees the layers": all(m["layering"]["holds"].values()),
        "dense grid: >= 3 distinct circuits": s["dense_distinct_circuits"] >= 3,
        "dense and APP circuits: TPR >= 0.8 vs the truth": s["dense"]["tpr"] >= 0.8 and s["app"]["tpr"] >= 0.8,
        "APP incl. pruning >= 1.5x fewer GFLOPs (goal)": s["speedup_gflops_incl_pruning"] >= 1.5,
    }
