"""The bundled model's card: what it is, how it was trained, and what its IOI mechanism looks like.

Numbers in the card are measured when it is written (``write_card``), never typed in by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..models import load_model
from .checks import accuracies, ioi_mechanism


def _fmt_heads(matrix, at_least: float) -> str:
    items = [(abs(float(matrix[l, h])), f"{l}.{h} ({float(matrix[l, h]):+.2f})")
             for l in range(matrix.shape[0]) for h in range(matrix.shape[1]) if abs(float(matrix[l, h])) >= at_least]
    return ", ".join(text for _, text in sorted(items, reverse=True)) or "none"


def measure(model_dir: str | Path) -> dict:
    """Accuracy per task and the IOI mechanism criteria of the model in ``model_dir``."""
    model = load_model(str(model_dir), verbose=False)
    acc = accuracies(model)
    mech = ioi_mechanism(model)
    value, component, sender = mech.strongest_edge
    return {
        "accuracy": {task: {"accuracy": a, "mean_metric": m} for task, (a, m) in acc.items()},
        "direct_effect_per_layer_max": [round(float(x), 3) for x in mech.direct.abs().max(1).values],
        "direct_effects": _fmt_heads(mech.direct, 0.05),
        "largest_share": round(mech.largest_share, 3),
        "noising_drop_per_layer_max": [round(float(x), 3) for x in mech.noising_drop.max(1).values],
        "strongest_head": f"{mech.strongest[0]}.{mech.strongest[1]}",
        "strongest_edge": {"value": round(value, 3), "component": component,
                           "sender": None if sender is None else f"{sender[0]}.{sender[1]}"},
        "criteria": mech.criteria(),
    }


def _shortfall(m: dict) -> str:
    """Say plainly which criterion fails and by how much (the tests mark it as an expected failure)."""
    if all(m["criteria"].values()):
        return ""
    per_layer = m["direct_effect_per_layer_max"]
    ranked = sorted(range(len(per_layer)), key=lambda l: -per_layer[l])
    lines = ["\n## Known shortfall"]
    if not m["criteria"]["direct |m| >= 0.1 in >= 2 layers"]:
        lines.append(f"Direct effects reach 0.1 in {sum(x >= 0.1 for x in per_layer)} layer(s) only: the best two layers "
                     f"are {ranked[0]} ({per_layer[ranked[0]]:.3f}) and {ranked[1]} ({per_layer[ranked[1]]:.3f}); the "
                     "criterion asks for 0.1 in two. The mechanism is layered all the same: early heads matter "
                     "through later ones (see the noising row), not directly on the logits.")
    other = [name for name, ok in m["criteria"].items() if not ok and not name.startswith("direct |m|")]
    lines += [f"Also failing: {name}." for name in other]
    return "\n".join(lines) + "\n"


def write_card(model_dir: str | Path) -> str:
    """Measure the model and write ``README.md`` and ``measurements.json`` next to its weights."""
    model_dir = Path(model_dir)
    m = measure(model_dir)
    (model_dir / "measurements.json").write_text(json.dumps(m, indent=1) + "\n")
    training = json.loads((model_dir / "training.json").read_text())
    c = training["config"]
    sources = ", ".join(f"{s['name']} {s['weight']:g}" + (f" {s['options']}" if s["options"] else "")
                        for s in c["sources"])
    acc = "\n".join(f"| {task} | {v['accuracy'] * 100:.1f} % | {v['mean_metric']:.2f} |"
                    for task, v in m["accuracy"].items())
    criteria = "\n".join(f"- {'✅' if ok else '❌'} {name}" for name, ok in m["criteria"].items())
    card = f"""# app-toy — the kit's bundled model

A small GPT-2-architecture model (`GPT2LMHeadModel`, {c['n_layers']} layers × {c['n_heads']} heads =
{c['n_layers'] * c['n_heads']} heads, d_model {c['d_model']}, context {c['n_ctx']}) over a word-level vocabulary built
from the kit's own tasks. It exists so that every notebook, test and benchmark of the kit runs offline
and on a CPU; on Colab the notebooks use GPT-2 small instead. It knows nothing but the tasks' mini-language.

## Training
`python -m app_helpers.toy.train --out data/app-toy --seed {c['seed']}` ({c['steps']} steps, batch {c['batch_size']},
AdamW lr {c['lr']:g} with {c['warmup']} warm-up steps and cosine decay, weight decay {c['weight_decay']:g},
head dropout {c['head_dropout']:g}; {training['seconds']:.0f} s with {training['threads']} CPU thread(s) — rerun with the
same thread count for bit-identical weights). Mixture: {sources}. Loss on every token, answer tokens weighted
×{c['answer_weight']:g} (see `app_helpers/toy/corpus.py` for the IOI stories that defeat one-layer shortcuts);
mean loss {training['loss_start']:.2f} over the first {training['loss_window']} steps, {training['loss_end']:.2f} over the last
{training['loss_window']}.

## Accuracy (held-out prompts, N = 200; correct answer scores above the wrong one)
| task | accuracy | mean logit / probability difference |
|---|---|---|
{acc}

## The IOI mechanism (N = 200, ABC corruption)
- Path patching to the logits, largest |normalised effect| per layer: {m['direct_effect_per_layer_max']}.
  Heads with |effect| ≥ 0.05: {m['direct_effects']}. Largest single share of the summed |effect|:
  {m['largest_share']:.2f}.
- Noising one head (its corrupted output in the clean run), largest fraction of the logit difference lost
  per layer: {m['noising_drop_per_layer_max']}.
- Strongest head {m['strongest_head']}; strongest edge into it: {m['strongest_edge']['value']:.3f} from
  {m['strongest_edge']['sender']} through its {m['strongest_edge']['component']} input.

Criteria of the kit:
{criteria}
{_shortfall(m)}"""
    (model_dir / "README.md").write_text(card)
    return card
