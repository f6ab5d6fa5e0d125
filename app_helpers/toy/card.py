"""The bundled model's card: what it is, how it was trained, and what its IOI mechanism looks like.

Numbers in the card are measured when it is written (``write_card``), never typed in by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..circuits import planted_truth
from ..models import load_model
from .checks import accuracies, ioi_mechanism
from .ioi_algorithm import ROLE_ORDER
from .planted_checks import measure as measure_planted


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
same thread count, CPU type and torch build for bit-identical weights). Mixture: {sources}. Loss on every token,
answer tokens weighted ×{c['answer_weight']:g} (see `app_helpers/toy/corpus.py` for the IOI stories that defeat one-layer shortcuts);
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


def write_planted_card(model_dir: str | Path) -> str:
    """Measure app-planted (``planted_checks.measure``), ship its ground truth as ``circuits/ioi.json``,
    and write ``README.md`` and ``measurements.json`` next to its weights."""
    model_dir = Path(model_dir)
    planted_truth().save(model_dir / "circuits" / "ioi.json")
    m = measure_planted(load_model(str(model_dir), verbose=False))
    (model_dir / "measurements.json").write_text(json.dumps(m, indent=1) + "\n")
    return render_planted_card(model_dir)


def render_planted_card(model_dir: str | Path) -> str:
    """``README.md`` from the ``measurements.json`` and ``training.json`` beside the weights."""
    model_dir = Path(model_dir)
    m = json.loads((model_dir / "measurements.json").read_text())
    training = json.loads((model_dir / "training.json").read_text())
    c = training["config"]
    truth = planted_truth()
    roles = "\n".join(f"| {role} | {' '.join(f'{l}.{h}' for l, h in heads)} |" for role, heads in truth.by_role().items())
    perf = m["perf"]
    without = "\n".join(f"| {k} | {v:.1f} % |" for k, v in perf.items())
    ic = ", ".join(f"{role} {acc * 100:.1f} %" for role, acc in m["interchange_accuracy"].items())
    st = m["strictness"]
    lay = "\n".join(f"  - {edge}: {'✅' if ok else '❌'} (top senders {', '.join(m['layering']['top'][edge.split(' -> ')[1]])})"
                    for edge, ok in m["layering"]["holds"].items())
    s = m["search"]
    criteria = "\n".join(f"- {'✅' if ok else '❌'} {name}" for name, ok in m["criteria"].items())
    criteria += "\n" + _budget(training)
    card = f"""# app-planted — a bundled model whose IOI circuit is known by construction

A GPT-2-architecture model (`GPT2LMHeadModel`, {c['n_layers']} layers × {c['n_heads']} heads =
{c['n_layers'] * c['n_heads']} heads, d_model {c['d_model']}{_network(c)}) over the kit's word-level vocabulary, trained on
IOI prompts only (the other tasks use `app-toy`). Its IOI algorithm was *planted* by strict interchange
intervention training (Geiger et al. 2022; Gupta et al. 2024): the high-level model in
`app_helpers/toy/ioi_algorithm.py` is mapped onto these heads, and the ground truth ships beside the weights
(`circuits/ioi.json`, also `reference_circuit("ioi_planted")`):

| role | heads |
|---|---|
{roles}

Information flows previous token → induction (its keys) → S-inhibition (its values, from S2) → name movers
(their queries, at END) → logits. There is no negative name mover: removing one would *raise* Perf, which
would contradict the "remove any role" check below by construction.

## Training
{_training(training)}

## Measured (held-out prompts, N = 200, seed 12345; ABC corruption)
- IOI accuracy {m['ioi_accuracy'] * 100:.1f} %, mean logit difference {m['ioi_logit_diff']:.2f}.
- Perf (mean ablation by template group):

| circuit | Perf |
|---|---|
{without}

- Interchange accuracy (N = 400 (base, source) pairs with a one-name prediction): {ic}.
  By the source's names (right/pairs): {_by_names(m, m['interchange_by_names'])}.{_own_positions(m)}
- S2's own token: switching the name at S2 to the other name (the answer flips) while the induction heads keep
  their values keeps {_bypass(m, 'induction')} of the logit difference; 100 % would mean that only they read S2's token
  (holding nothing: {_bypass(m, 'nothing held')}; holding the S-inhibition heads: {_bypass(m, 's-inhibition')}).
- Strictness: noising one head outside the truth changes the logit difference by at most
  {st['resample']['max_change'] * 100:.2f} % (head {st['resample']['head']}, its own ABC prompt) and
  {st['mean']['max_change'] * 100:.2f} % (head {st['mean']['head']}, group mean).
- Path patching sees the layers (the role upstream is the top-k senders into the next role's input):
{lay}
- Roles from Wang et al.'s signatures alone (`roles.label_heads`, n = 50, seed 0): {_recovery(m['role_recovery'])}.
- Search (N = 100, the paper's 4 × 4 grid): dense grid {s['dense_distinct_circuits']} distinct circuits, chosen
  {len(s['dense']['heads'])} heads (TPR {s['dense']['tpr']:.2f}, precision {s['dense']['precision']:.2f}, Perf
  {s['dense']['perf']:.1f}); APP on {s['search_space']} heads: {len(s['app']['heads'])} heads (TPR {s['app']['tpr']:.2f},
  precision {s['app']['precision']:.2f}, Perf {s['app']['perf']:.1f}). GFLOPs dense {s['gflops']['dense']:.1f}, APP
  {s['gflops']['app']:.1f}, pruning {s['gflops']['pruning']:.1f}: APP ×{s['speedup_gflops']:.2f} fewer without pruning,
  ×{s['speedup_gflops_incl_pruning']:.2f} with it.

## The issue's criteria, as measured
{criteria}
{_planted_shortfalls(m)}"""
    (model_dir / "README.md").write_text(card)
    return card


def _bypass(m: dict, held: str) -> str:
    return f"{m['s2_bypass'][held] * 100:.0f} %"


def _planted_shortfalls(m: dict) -> str:
    """What falls short, with the numbers that show where (written from the measurements)."""
    c = m["criteria"]
    if all(c.values()):
        return ""
    truth = _truth_roles()
    lines = ["\n## Known shortfalls (measured)"]
    if not c["interchange accuracy >= 95 % per role"]:
        weak = {r: a for r, a in m["interchange_accuracy"].items() if a < 0.95}
        lines.append("- Interchange accuracy below 95 % for " + ", ".join(f"{r} ({a * 100:.1f} %)" for r, a in weak.items())
                     + ". By the source's names: " + _by_names(m, weak) + "." + _where_it_goes_wrong(m, weak)
                     + (" And the heads downstream read S2's own token around the induction heads: with those held, "
                        f"switching the name at S2 keeps only {_bypass(m, 'induction')} of the logit difference, so a "
                        "source's induction value competes with the base's own token." if "induction" in weak else ""))
    if not c["noising one head outside the truth moves LD < 3 %"]:
        st = m["strictness"]
        lines.append(f"- Heads outside the truth still matter a little: noising {st['resample']['head']} moves the logit "
                     f"difference by {st['resample']['max_change'] * 100:.1f} % (own ABC prompt), "
                     f"{st['mean']['head']} by {st['mean']['max_change'] * 100:.1f} % (group mean).")
    if not c["path patching sees the layers"] or not c["dense and APP circuits: TPR >= 0.8 vs the truth"]:
        d = m["layering"]["direct_effects"]
        per_role = "; ".join(f"{role}: " + ", ".join(f"{h} {d.get(h, 0):+.2f}" for h in heads)
                             for role, heads in truth.items())
        lines.append("- Heads within a role do not share it evenly, and some roles also reach the logits or the "
                     "name movers' queries directly, so path patching misses the weak heads. Direct effects on the "
                     f"logits (normalised): {per_role}. Top senders per receiver input: "
                     + "; ".join(f"{k}: {', '.join(v)}" for k, v in m["layering"]["top"].items()) + ".")
        s = m["search"]
        missed = sorted(set(h for hs in truth.values() for h in hs) - set(s["dense"]["heads"]))
        extra = sorted(set(s["dense"]["heads"]) - set(h for hs in truth.values() for h in hs))
        lines.append(f"- The dense search's chosen circuit misses {', '.join(missed) or 'nothing'} and adds "
                     f"{', '.join(extra) or 'nothing'} (TPR {s['dense']['tpr']:.2f}).")
    return "\n".join(lines) + "\n"


#: The issue's budget for training app-planted: one seeded command, 2 CPU threads, at most 75 minutes.
TRAINING_BUDGET_MINUTES = 75


def _budget(training: dict) -> str:
    """The card's criteria line for the training budget, from the record (a chain of commands misses it)."""
    minutes, one = training["seconds"] / 60, training.get("one_command", True)
    ok = one and minutes <= TRAINING_BUDGET_MINUTES and training["threads"] <= 2
    why = "" if ok else "; where the time goes and what was tried to cut it: RECIPE-NOTES.md, \"The training budget\""
    return (f"- {'✅' if ok else '❌'} one seeded command trains it in <= {TRAINING_BUDGET_MINUTES} minutes on 2 CPU "
            f"threads (this model: {minutes:.0f} minutes with {training['threads']} threads, "
            f"{'one command' if one else 'a chain of commands, listed under Training'}{why})")


def _training(training: dict) -> str:
    """How the weights were trained: the one command, or each command of a chain with the phases it ran, told once
    per set of settings (a chain recorded before the record kept its steps: the record's own account, which lists
    every command's flags)."""
    clock = (f"{training['seconds'] / 60:.0f} minutes with {training['threads']} CPU threads — rerun with the same "
             "thread count, CPU type and torch build for bit-identical weights (another CPU rounds differently and the "
             "weights drift apart: RECIPE-NOTES.md); see `app_helpers/toy/siit.py`.")
    c = training["config"]
    if training.get("one_command", True):
        return (f"`python -m app_helpers.toy.siit --out data/app-planted --seed {c['seed']}{recipe_flags(c)}`: "
                f"{_phases(c, [1, 2, 3, 4])}. {clock} {training.get('how', '')}").rstrip()
    if "steps" not in training:
        return f"{training['how']} {clock}"
    recipe = training.get("recipe")
    runs = f" (`python -m app_helpers.toy.siit --recipe {recipe} --out data/app-planted` runs them)" if recipe else ""
    lines = [f"{len(training['steps'])} commands in turn{runs}. {clock}", ""]
    told: dict[str, int] = {}  # each description once: a later command with the same settings points back to it
    for i, step in enumerate(training["steps"], 1):
        cfg, phases = step["config"], step["phases"]
        where = (f"--seed {cfg['seed']}" if 1 in phases else
                 f"--continue-from <step {i - 1}> --phases {','.join(map(str, phases))}")
        counts = " ".join(f"--{PHASE_STEPS[p].replace('_', '-')} {cfg[PHASE_STEPS[p]]}" for p in phases)
        verdict = "" if step["same"] else "; a recipe of its own: no single command gives these weights"
        settings = _phases({**cfg, **{PHASE_STEPS[p]: "N" for p in phases if cfg[PHASE_STEPS[p]]}}, phases)
        first = told.setdefault(settings, i)
        what = _phases(cfg, phases) if first == i else f"as step {first}, with this command's step count"
        lines.append(f"{i}. `{where}{recipe_flags(cfg)} {counts}`: {what}{verdict}.")
    return "\n".join(lines)


#: Base prompts per training step unless ``--batch-size`` says otherwise (``SIITConfig``'s default; kept here, where
#: the card tells a command's flags, because ``toy.siit`` imports this module and not the other way round).
BATCH_SIZE = 32
#: Phase 4's peak learning rate unless ``--isolate-lr`` says otherwise (``SIITConfig``'s default; here for the same
#: reason).
ISOLATE_LR = 3e-4

#: Each training phase's step count in a recipe's config (``toy.siit`` names the phases a command ran by these).
PHASE_STEPS = {1: "behaviour_steps", 2: "planting_steps", 3: "polish_steps", 4: "isolate_steps"}


def _phases(c: dict, phases: list[int]) -> str:
    """What ``phases`` ran under the recipe ``c`` (phases without steps left out). The options of phases 2-4 are
    told with phase 2, or with phase 4 when that ran on its own."""
    options = f"{_positional(c)}{_weights(c)}{_token_rows(c)}{_path_rows(c)}"
    text = {1: f"{c['behaviour_steps']} behaviour steps",
            2: f"{c['planting_steps']} planting steps (batch {c['batch_size']} base prompts × "
               f"{6 + bool(c.get('token_rows'))} kinds of rows, AdamW lr {c['lr']:g} with warm-up and cosine decay"
               f"{options})",
            3: f"{c['polish_steps']} polish steps (fresh optimiser, lr {c['polish_lr']:g})",
            4: f"{c['isolate_steps']} isolating steps (isolated interchange rows, gradients through the source pass, "
               f"lr {c['isolate_lr']:g} with cosine decay{options * (2 not in phases)}{_signatures(c)})"}
    return ", then ".join(text[p] for p in phases if c[PHASE_STEPS[p]])


def recipe_flags(c: dict) -> str:
    """The command-line flags of the recipe's options that differ from off (older records lack them)."""
    flags = " --positional" if c.get("positional") else ""
    if c.get("interchange_weights"):
        flags += " --interchange-weights " + ",".join(f"{w:g}" for w in c["interchange_weights"])
    for key in ("attention_weight", "direct_weight"):
        if c.get(key):
            flags += f" --{key.replace('_', '-')} {c[key]:g}"
    if c.get("direct_weight") and "mover_direct_min" in c:  # records before the flag used its default
        flags += f" --mover-direct-min {c['mover_direct_min']:g}"
    if c.get("signatures_from", 4) != 4:
        flags += f" --signatures-from {c['signatures_from']}"
    if c.get("attention_weight") and tuple(c.get("attention_roles", ROLE_ORDER)) != ROLE_ORDER:
        flags += f" --attention-roles '{','.join(c['attention_roles'])}'"
    if c.get("head_level_share"):
        flags += f" --head-level-share {c['head_level_share']:g}"
    flags += " --token-rows" if c.get("token_rows") else ""
    flags += " --resample-silence" if c.get("resample_silence") else ""
    flags += " --mediated-path-rows" if c.get("mediated_path") else ""
    flags += f" --mlp-width {c['d_mlp']}" if c.get("d_mlp") else ""
    flags += " --fast-kernels" if c.get("fast_kernels") else ""
    batch, peak = c.get("batch_size", BATCH_SIZE), c.get("isolate_lr", ISOLATE_LR)
    flags += f" --batch-size {batch}" if batch != BATCH_SIZE else ""
    return flags + (f" --isolate-lr {peak:g}" if peak != ISOLATE_LR else "")


def _network(c: dict) -> str:
    """The network options, when used (GPT-2's MLP width and kernels otherwise, as in records before them)."""
    width = f", MLP width {c['d_mlp']}" if c.get("d_mlp") else ""
    return width + (", torch's fused tanh GELU" if c.get("fast_kernels") else "")


def _positional(c: dict) -> str:
    """The positional recipe, when used: phases 2-4 patch each role at its own positions only."""
    if not c.get("positional"):
        return ""
    whole = c.get("head_level_share", 0)
    how = " (by the group mean or, half the time, the ABC prompt's own value)" if c.get("resample_silence") else ""
    except_ = (f", except in {whole * 100:g} % of the interchange rows, patched at every position as the evaluator "
               "patches") if whole else ""
    return ("; from here on each role is patched at its own positions only (the token after each name, S2, END) "
            f"and silenced elsewhere{how}{except_}")


def _token_rows(c: dict) -> str:
    """The token rows, when used: phases 2-4 switch the name at S2 with what reads it held."""
    if not c.get("token_rows"):
        return ""
    return ("; each base prompt also gets a token row (phases 2-4): another name at S2, the previous-token and "
            "induction heads held at their clean values, the clean output as target")


def _path_rows(c: dict) -> str:
    """The mediated path rows, when used: phases 2-4 hold only the next role, every other head computes."""
    if not c.get("mediated_path"):
        return ""
    return ("; each path row holds only the next role's heads at their clean values (phases 2-4; every other "
            "head computes), so that no route around the next step goes unpunished")


def _weights(c: dict) -> str:
    """The interchange rows' role weights, when the recipe set them (phases 2-4; evenly otherwise)."""
    if not c.get("interchange_weights"):
        return ""
    return ("; the interchange rows draw their role with weights "
            + " / ".join(f"{w:g}" for w in c["interchange_weights"]) + " (previous token, induction, S-inhibition, "
            "name mover; phases 2-4)")


def _signatures(c: dict) -> str:
    """The phase-4 signature losses, when the recipe used them (records before them have no weights)."""
    a, d = c.get("attention_weight", 0), c.get("direct_weight", 0)
    if not (a or d):
        return ""
    roles = tuple(c.get("attention_roles", ROLE_ORDER))
    whose = "each role's" if roles == ROLE_ORDER else "the " + " and ".join(roles) + " heads'"
    planted = [f"{whose} attention on the positions they read, weight {a:g}"] * bool(a) + \
              [f"direct effects on the logits for the name movers only{_mover_share(c)}, weight {d:g}"] * bool(d)
    since = " (from the planting phase on)" if c.get("signatures_from", 4) == 2 else ""
    return ", and Wang et al.'s signatures planted" + since + ": " + " and ".join(planted)


def _mover_share(c: dict) -> str:
    """" (each at least 25 % of the logit difference)" where the record states the movers' share."""
    if "mover_direct_min" not in c:
        return ""
    return f" (each at least {c['mover_direct_min'] * 100:g} % of the logit difference)"


def _recovery(r: dict) -> str:
    """"7/10 truth heads get their planted role; missed: 4.1 (s-inhibition; labelled nothing), ..."."""
    missed = ", ".join(f"{h} ({role}; labelled {label or 'nothing'})" for h, (role, label) in r["missed"].items())
    return f"{r['recovered']}/{r['total']} truth heads get their planted role" + (f"; missed {missed}" if missed else "")


def _where_it_goes_wrong(m: dict, weak: dict) -> str:
    """For the shortfall: a weak role right at its own positions goes wrong through its heads' values elsewhere;
    one wrong there too, and right only with the base's own names, carries a slot, not the name."""
    own = m.get("interchange_at_own_positions", {})
    fine = [role for role in weak if own.get(role, 0) >= 0.95]
    text = ""
    if fine:
        text += (f" Patched at its own positions only, {' and '.join(f'{r} is right on {own[r] * 100:.1f} %' for r in fine)}"
                 " of the pairs: the rest comes from the same heads' values at other positions, which the model also "
                 "reads.")
    if len(fine) < len(weak):
        text += (" Where a role is right with the base's own names and wrong with others, its heads carry *which* of "
                 "the base's names (a slot), not the name.")
    return text


def _own_positions(m: dict) -> str:
    """Interchange accuracy with each role patched at its own positions only (records before it lack it)."""
    own = m.get("interchange_at_own_positions")
    if not own:
        return ""
    return ("\n  Patched at each role's own positions only (the token after each name, S2, END) instead of at every "
            "position: " + ", ".join(f"{role} {a * 100:.1f} %" for role, a in own.items()) + ".")


def _by_names(m: dict, roles) -> str:
    """"role: same names 185/185, ..." from ``interchange_by_names`` (categories without pairs left out)."""
    return "; ".join(f"{role}: " + ", ".join(f"{category} {right}/{total}" for category, (right, total)
                                              in m["interchange_by_names"][role].items() if total)
                     for role in roles)


def _truth_roles() -> dict[str, list[str]]:
    return {role: [f"{l}.{h}" for l, h in heads] for role, heads in planted_truth().by_role().items()}
