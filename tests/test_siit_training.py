"""The planting trainer (toy.siit): its prompts are the kit's IOI prompts, its interventions do what they
say, and a few steps lower the behaviour, interchange and strictness losses."""
import json
import math
import random

import pytest
import torch

from app_helpers.tasks import make_task
from app_helpers.toy import ioi_prompts, siit


@pytest.fixture(scope="module")
def sampler(word_tok):
    return ioi_prompts.PromptSampler(word_tok, random.Random(0))


def test_layouts_tokenise_exactly_like_make_task(word_tok, sampler):
    task = make_task("ioi", word_tok, n=64, seed=3)
    layouts = {layout.group: layout for layout in sampler.layouts}
    assert len(layouts) == task.n_groups
    for i in range(len(task)):
        layout = layouts[int(task.groups[i])]
        ids = task.clean_tokens[i, : int(task.lengths[i])].tolist()
        open_slots = [p for p in (*layout.slots, layout.s2, layout.place, layout.obj) if p is not None]
        assert [t if p not in open_slots else ids[p] for p, t in enumerate(layout.ids)] == ids
        assert layout.s2 == int(task.word_pos["S2"][i]) and layout.end == int(task.end_pos[i])
        assert set(layout.slots) == {int(task.word_pos["IO"][i]), int(task.word_pos["S1"][i])}


def test_prompts_carry_their_story(sampler):
    for _ in range(50):
        base = sampler.base()
        ids = base.ids(sampler.vocab)
        assert ids[base.layout.s2] == sampler.vocab[base.story.repeated]
        assert base.story.answer in base.story.names and base.story.repeated in base.story.names
        abc = sampler.abc(base)
        assert abc.story.answer is None and not set(abc.story.names) & set(base.story.names)
        source = sampler.source(base)
        assert source.layout.group // 2 == base.layout.group // 2  # same template: positions align
        assert len(source.ids(sampler.vocab)) == len(ids)


def test_interventions_replace_exactly_the_planned_heads(word_tok):
    config = siit.SIITConfig(n_layers=2, n_heads=4, d_model=32)
    torch.manual_seed(0)
    model = siit.build_model(config, word_tok).eval()
    iv = siit.HeadInterventions(model)
    source = torch.randint(5, 100, (2, 7))
    base = torch.randint(5, 100, (3, 7))
    iv.recording = True
    model(input_ids=source)
    iv.recording = False
    recorded = [z.clone() for z in iv.recorded]
    plan = torch.zeros(3, 2, 4, dtype=torch.long)
    plan[1, 1, 2] = siit.SOURCE  # row 1, layer 1, head 2 from source row 0
    plan[2, 0, 0] = siit.CLEAN  # row 2, layer 0, head 0 from row 0 of this pass
    plan = plan[:, None].repeat(1, 7, 1, 1)  # [rows, seq, L, H]
    plan[0, 3, 1, 1] = siit.SOURCE  # row 0: layer 1, head 1 at position 3 only
    iv.plan, iv.source_row, iv.abc_row = plan, torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1])
    iv.clean_row = torch.tensor([0, 0, 0])
    seen = {}
    hook = model.transformer.h[1].attn.c_proj.register_forward_pre_hook(
        lambda m, a: seen.__setitem__("z1", a[0].view(3, 7, 4, 8).clone()))
    model(input_ids=base)
    hook.remove()
    iv.plan = None
    # the pre-hook registered after ours sees the replaced input
    assert torch.equal(seen["z1"][1, :, 2], recorded[1][0, :, 2])
    assert torch.equal(seen["z1"][0, 3, 1], recorded[1][0, 3, 1])
    assert not torch.equal(seen["z1"][0, 2, 1], recorded[1][0, 2, 1])  # the other positions keep their own
    iv.remove()


@pytest.mark.parametrize("positional, token_rows", [(False, False), (True, False), (True, True)])
def test_planting_steps_lower_the_behaviour_interchange_strict_and_isolated_losses(word_tok, positional, token_rows):
    torch.manual_seed(0)
    config = siit.SIITConfig(d_model=32, attention_weight=1.0, direct_weight=1.0, positional=positional,
                             token_rows=token_rows)
    model = siit.build_model(config, word_tok)
    with torch.no_grad():  # make every head matter, as in a trained model, so strictness has something to fix
        for block in model.transformer.h:
            block.attn.c_proj.weight.mul_(20)
    planter = siit.Planter(model, ioi_prompts.PromptSampler(word_tok, random.Random(0)), random.Random(0), config,
                           isolated=True)

    def losses(seed):  # the same rows every time: the sampler, the plans and torch all reseeded
        planter.rng.seed(seed)
        planter.sampler.rng.seed(seed)
        torch.manual_seed(seed)
        return planter.losses([planter.sampler.base() for _ in range(16)])

    before = {k: float(v) for k, v in losses(123).items() if k != "accuracy"}
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.enable_grad():
        for step in range(25):
            parts = losses(step)
            loss = parts["next_token"] + parts["clean"] + siit.planting_loss(parts) + parts["attention"] + \
                parts["direct"]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    after = {k: float(v) for k, v in losses(123).items() if k != "accuracy"}
    for name in ("clean", "interchange", "strict", "isolated", "attention", "direct") + ("token",) * token_rows:
        assert after[name] < before[name], (name, before, after)
    assert ("token" in before) == token_rows


def positional_plans(word_tok, n: int, **options):
    """One positional planting step's rows for ``n`` base prompts on a small model: (rows, each row's base
    prompt, the plans [rows, L, H], the per-position plans [rows, seq, L, H])."""
    config = siit.SIITConfig(d_model=32, positional=True, **options)
    sampler = ioi_prompts.PromptSampler(word_tok, random.Random(0))
    planter = siit.Planter(siit.build_model(config, word_tok), sampler, random.Random(0), config, isolated=True)
    bases = [sampler.base() for _ in range(n)]
    rows = planter.rows(bases, [sampler.source(b) for b in bases])
    prompts = [bases[i] for i in torch.arange(n).repeat_interleave(len(rows) // n).tolist()]
    plans = torch.stack([row[1] for row in rows])
    seq = max(p.layout.end for p in prompts) + 1
    out = planter.per_position(plans, [row[0] for row in rows], prompts, seq)
    planter.remove_hooks()
    return rows, prompts, plans, out


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_head_level_interchange_rows_patch_the_role_at_every_position(word_tok, share):
    """``head_level_share`` 1: every interchange row gives its role's heads the source at every position (the
    evaluator's interchange) and silences nothing; 0: at the role's positions only. Other rows unchanged."""
    from app_helpers.circuits import planted_truth
    from app_helpers.toy.ioi_algorithm import ROLES

    rows, prompts, _, out = positional_plans(word_tok, 8, head_level_share=share)
    kinds = [row[0] for row in rows]
    for i, (kind, (_, _, _, role)) in enumerate(zip(kinds, rows)):
        if kind != "interchange":
            continue
        for layer, head in ROLES[role]:
            patched = out[i, :, layer, head] == siit.SOURCE
            if share:  # the role from the source everywhere, the rest of the truth computes everywhere
                others = [h for h in planted_truth().heads if h not in ROLES[role]]
                assert patched.all() and all((out[i, :, l, h] == siit.KEEP).all() for l, h in others)
            else:
                assert patched.nonzero()[:, 0].tolist() == ioi_prompts.role_positions(prompts[i].layout, role)


@pytest.mark.parametrize("bad", [["--head-level-share", "1.5", "--positional"], ["--head-level-share", "nan",
                                                                                   "--positional"],
                                 ["--head-level-share", "0.5"]])
def test_the_head_level_share_is_refused_outside_0_to_1_or_without_the_positional_recipe(tmp_path, capsys, bad):
    with pytest.raises(SystemExit):
        siit.main(["--out", str(tmp_path), "--no-card", *bad])
    assert "--head-level-share is a share of the --positional recipe's interchange rows" in capsys.readouterr().err


def test_token_rows_switch_the_name_at_s2_only_and_hold_what_reads_it(word_tok):
    """A token row is its base prompt with a fresh name at S2, the previous-token and induction heads held at
    the clean row's values. Known answer: with *every* head held, nothing carries S2 to END, so the row's
    output is the clean row's exactly; with none held it is not."""
    from app_helpers.toy.ioi_algorithm import ROLES

    torch.manual_seed(0)
    config = siit.SIITConfig(d_model=32, token_rows=True)
    model = siit.build_model(config, word_tok)
    with torch.no_grad():  # heads that matter, as in a trained model
        for block in model.transformer.h:
            block.attn.c_proj.weight.mul_(20)
    sampler = ioi_prompts.PromptSampler(word_tok, random.Random(0))
    planter = siit.Planter(model, sampler, random.Random(0), config)
    readers = {h for role in ("previous token", "induction") for h in ROLES[role]}
    for layer in range(8):
        for head in range(8):
            assert planter.s2_readers[layer, head] == (siit.CLEAN if (layer, head) in readers else siit.KEEP)
    seen = {}
    forward = model.forward
    model.forward = lambda input_ids, **kw: seen.setdefault("tokens", []).append(input_ids) or forward(input_ids, **kw)

    def token_loss(plan):
        planter.s2_readers = plan
        planter.rng.seed(1)
        planter.sampler.rng.seed(1)
        seen.clear()
        bases = [sampler.base() for _ in range(8)]
        with torch.no_grad():
            return float(planter.losses(bases)["token"]), bases, seen["tokens"][-1]

    held, bases, tokens = token_loss(torch.full((8, 8), siit.CLEAN))
    free, _, _ = token_loss(torch.full((8, 8), siit.KEEP))
    assert held < 1e-9 and free > 1e-6  # KL; the random model is unsure of everything, so both are small
    k = len(tokens) // len(bases)
    for i, base in enumerate(bases):
        clean, token = tokens[i * k], tokens[i * k + k - 1]  # the token row comes last (no isolated row)
        differ = (clean != token).nonzero()[:, 0].tolist()
        assert differ == [base.layout.s2]
        assert int(token[base.layout.s2]) not in {sampler.vocab[n] for n in base.story.names}
    model.forward = forward
    planter.remove_hooks()


@pytest.mark.parametrize("mediated", [False, True])
def test_path_rows_hold_every_other_head_or_only_the_next_role(word_tok, mediated):
    """A path row patches one role (never the name movers) from the source. As shipped every other head is held
    at its clean value; ``mediated_path`` holds only the next role's heads (the one that reads it in the
    high-level model) and lets every other head compute, so no route around the next step goes unpunished."""
    from app_helpers.toy.ioi_algorithm import ROLE_ORDER, ROLES

    config = siit.SIITConfig(d_model=32, mediated_path=mediated)
    sampler = ioi_prompts.PromptSampler(word_tok, random.Random(0))
    planter = siit.Planter(siit.build_model(config, word_tok), sampler, random.Random(0), config)
    bases = [sampler.base() for _ in range(24)]
    rows = [row for row in planter.rows(bases, [sampler.source(b) for b in bases]) if row[0] == "path"]
    planter.remove_hooks()
    assert len(rows) == 24 and {row[3] for row in rows} == set(ROLE_ORDER[:-1])
    for _, plan, target, role in rows:
        held = set(ROLES[ROLE_ORDER[ROLE_ORDER.index(role) + 1]])
        assert target is None  # the clean row's output
        for layer in range(8):
            for head in range(8):
                if (layer, head) in ROLES[role]:
                    expected = siit.SOURCE
                elif mediated:
                    expected = siit.CLEAN if (layer, head) in held else siit.KEEP
                else:
                    expected = siit.CLEAN
                assert plan[layer, head] == expected, (role, layer, head)


@pytest.mark.parametrize("signatures_from, phases_with", [(4, {4}), (2, {2, 3, 4})])
def test_the_signature_losses_start_in_the_phase_the_recipe_names(word_tok, signatures_from, phases_with):
    config = siit.SIITConfig(d_model=32, attention_weight=1.0, signatures_from=signatures_from)
    model = siit.build_model(config, word_tok)
    sampler = ioi_prompts.PromptSampler(word_tok, random.Random(0))
    seen = set()
    for phase in (2, 3, 4):
        planter = siit.Planter(model, sampler, random.Random(0), config, isolated=phase == 4, phase=phase)
        with torch.no_grad():
            parts = planter.losses([sampler.base() for _ in range(4)])
        planter.remove_hooks()
        if "attention" in parts:
            seen.add(phase)
            assert float(siit.signature_loss(parts, config)) == pytest.approx(float(parts["attention"]))
        else:
            assert siit.signature_loss(parts, config) == 0.0
    assert seen == phases_with


def test_the_training_command_writes_a_loadable_model(tmp_path):
    assert siit.main(["--out", str(tmp_path), "--behaviour-steps", "2", "--planting-steps", "2",
                      "--polish-steps", "2", "--isolate-steps", "2", "--no-card"]) == 0
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["config"]["planting_steps"] == 2 and len(record["every"]) == 1
    from app_helpers.models import load_model

    model = load_model(str(tmp_path), verbose=False)
    assert (model.cfg.n_layers, model.cfg.n_heads) == (8, 8)


def test_same_seed_same_weights_and_continuing_equals_the_full_run(tmp_path):
    from safetensors.torch import load_file

    small = dict(d_model=32, behaviour_steps=3, planting_steps=3, batch_size=4, warmup=1)
    late = dict(polish_steps=3, isolate_steps=3)
    torch.set_num_threads(1)
    siit.train(siit.SIITConfig(**small, polish_steps=0, isolate_steps=0), tmp_path / "phase2", progress=False)
    siit.continue_from(siit.SIITConfig(**small, **late), tmp_path / "phase2", tmp_path / "from2", (3, 4),
                       progress=False)
    siit.train(siit.SIITConfig(**small, polish_steps=3, isolate_steps=0), tmp_path / "phase3", progress=False)
    siit.continue_from(siit.SIITConfig(**small, **late), tmp_path / "phase3", tmp_path / "from3", (4,),
                       progress=False)
    for name in ("full", "again"):
        siit.train(siit.SIITConfig(**small, **late), tmp_path / name, progress=False)
    weights = {name: load_file(tmp_path / name / "model.safetensors") for name in ("full", "again", "from2", "from3")}
    for key, value in weights["full"].items():
        for other in ("again", "from2", "from3"):
            assert torch.equal(value, weights[other][key]), (other, key)
    record = json.loads((tmp_path / "from3" / "training.json").read_text())
    before = json.loads((tmp_path / "phase3" / "training.json").read_text())
    assert record["every"][:len(before["every"])] == before["every"] and record["seconds"] > before["seconds"]
    assert record["one_command"] and "the same weights as the one command" in record["how"]


def test_a_phase_4_run_again_or_with_other_flags_is_recorded_as_a_recipe_of_its_own(tmp_path):
    from app_helpers.toy import card

    small = dict(d_model=32, behaviour_steps=2, planting_steps=2, polish_steps=2, batch_size=4, warmup=1)
    torch.set_num_threads(1)
    siit.train(siit.SIITConfig(**small, isolate_steps=0), tmp_path / "phase3", progress=False)
    siit.continue_from(siit.SIITConfig(**small, isolate_steps=2, direct_weight=10, mover_direct_min=0.25),
                       tmp_path / "phase3", tmp_path / "other", (4,), progress=False)
    siit.continue_from(siit.SIITConfig(**small, isolate_steps=2), tmp_path / "phase3", tmp_path / "same", (4,),
                       progress=False)
    siit.continue_from(siit.SIITConfig(**small, isolate_steps=2), tmp_path / "same", tmp_path / "again", (4,),
                       progress=False)
    records = {name: json.loads((tmp_path / name / "training.json").read_text()) for name in ("other", "same", "again")}
    assert records["same"]["one_command"] and not records["other"]["one_command"]
    assert not records["again"]["one_command"]  # phase 4 had run already: twice is no single command
    # the tiny batch is part of each command: the record must give it to rerun them
    assert "--phases 4 --direct-weight 10 --mover-direct-min 0.25 --batch-size 4 --isolate-steps 2` ran on those " \
           "weights, a recipe of its own" in records["other"]["how"]
    assert records["again"]["how"].count("--continue-from DIR --phases 4") == 2
    assert records["again"]["how"].startswith("First `--seed 0 --batch-size 4 --behaviour-steps 2 --planting-steps 2 "
                                              "--polish-steps 2 --isolate-steps 0`. Then `--continue-from")
    assert [step["phases"] for step in records["again"]["steps"]] == [[1, 2, 3, 4], [4], [4]]
    assert [step["same"] for step in records["again"]["steps"]] == [True, True, False]
    told = card._training(records["again"])  # each command with the settings its phases ran under
    assert told.startswith("3 commands in turn. ") and "--recipe" not in told
    assert "\n1. `--seed 0 --batch-size 4 --behaviour-steps 2 --planting-steps 2 --polish-steps 2 " \
           "--isolate-steps 0`: 2 behaviour steps, then 2 planting steps" in told
    assert "then 2 polish steps (fresh optimiser, lr 0.0003)." in told
    assert "\n2. `--continue-from <step 1> --phases 4 --batch-size 4 --isolate-steps 2`: 2 isolating steps" in told
    assert "\n3. `--continue-from <step 2> --phases 4 --batch-size 4 --isolate-steps 2`: as step 2, with this " \
           "command's step count; a recipe of its own" in told  # the same settings are told once
    assert told.count("a recipe of its own") == 1
    other = card._training(records["other"])
    assert "\n2. `--continue-from <step 1> --phases 4 --direct-weight 10 --mover-direct-min 0.25 --batch-size 4 " \
           "--isolate-steps 2`" in other and "direct effects on the logits for the name movers only" in other
    assert card._training(records["same"]).startswith(
        "`python -m app_helpers.toy.siit --out data/app-planted --seed 0 --batch-size 4`")


def test_a_chain_of_commands_equals_running_them_one_by_one(tmp_path):
    """``run_chain`` (what ``--recipe`` runs) gives the weights and record of the same commands typed in turn."""
    from safetensors.torch import load_file

    steps = (["--behaviour-steps", "2", "--planting-steps", "2", "--polish-steps", "0", "--isolate-steps", "0"],
             ["--phases", "4", "--isolate-steps", "2", "--direct-weight", "10"],
             ["--phases", "4", "--isolate-steps", "1", "--attention-weight", "3"])
    torch.set_num_threads(1)
    siit.run_chain(steps, tmp_path / "chain")
    start = None
    for i, flags in enumerate(steps):
        siit.main([*flags, "--out", str(tmp_path / f"typed{i}"), "--no-card",
                   *(["--continue-from", str(start)] if start else [])])
        start = tmp_path / f"typed{i}"
    chain, typed = (load_file(d / "model.safetensors") for d in (tmp_path / "chain", start))
    assert all(torch.equal(value, typed[key]) for key, value in chain.items())
    records = [json.loads((d / "training.json").read_text()) for d in (tmp_path / "chain", start)]
    assert records[0]["how"] == records[1]["how"] and not records[0]["one_command"]
    assert records[0]["how"].count("--continue-from DIR --phases 4") == 2


def test_the_shipped_record_is_the_app_planted_recipe():
    """data/app-planted/training.json states the steps ``--recipe app-planted`` runs, flag for flag."""
    from dataclasses import asdict

    from app_helpers.models import BUNDLED_MODELS

    shipped = json.loads((BUNDLED_MODELS["app-planted"] / "training.json").read_text())
    configs = [siit._parse(siit._parser(), flags)[1] for flags in siit.RECIPES["app-planted"]]
    record = {"config": json.loads(json.dumps(asdict(configs[0])))}
    for config in configs[1:]:
        how, same = siit._continued(record, config, (4,))
        record = {"config": json.loads(json.dumps(asdict(config))), "how": how}
    # settings newer than the record (the network options) read as their defaults, as the card reads them
    assert shipped["how"] == record["how"] and siit._recorded_config(shipped) == record["config"]
    assert shipped["recipe"] == "app-planted" and not shipped["one_command"]


def test_the_short_recipe_is_the_shipped_first_command_then_its_last_phase_4_settings_for_fewer_steps():
    """``app-planted-short`` shares phases 1-3 with ``app-planted`` and runs the shipped recipe's last phase-4
    settings from its first phase-4 command on: only the step counts and the first peak learning rate differ."""
    from dataclasses import replace

    def configs(name):
        return [siit._parse(siit._parser(), flags)[1] for flags in siit.RECIPES[name]]

    shipped, short = configs("app-planted"), configs("app-planted-short")
    assert short[0] == shipped[0]
    assert [(c.isolate_steps, c.isolate_lr) for c in short[1:]] == [(2500, 6e-4), (1000, 3e-4), (1000, 3e-4)]
    assert all(replace(c, isolate_steps=1000, isolate_lr=3e-4) == shipped[-1] for c in short[1:])


def test_a_chain_or_recipe_that_is_not_one_says_what_it_wants(tmp_path):
    with pytest.raises(ValueError, match="unknown recipe 'app-toy'; recipes: app-planted"):
        siit.run_recipe("app-toy", tmp_path)
    for steps in ((), ("--seed 1",)):
        with pytest.raises(ValueError, match="a chain is one or more commands, each a list of flags"):
            siit.run_chain(steps, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("extra", [["--seed", "1"], ["--positional"], ["--continue-from", "x"]])
def test_a_recipe_refuses_flags_of_its_own(tmp_path, capsys, extra):
    with pytest.raises(SystemExit):
        siit.main(["--recipe", "app-planted", "--out", str(tmp_path), *extra])
    flag = extra[0]
    assert f"--recipe app-planted runs its own flags; drop {flag}" in capsys.readouterr().err
    assert not (tmp_path / "training.json").exists()


def test_attention_targets_are_wang_et_al_s_positions(sampler):
    for _ in range(20):
        prompt = sampler.base()
        ids, vocab, story = prompt.ids(sampler.vocab), sampler.vocab, prompt.story
        queries, keys = siit.attention_positions(prompt, "previous token")
        assert queries == list(range(1, prompt.layout.end + 1)) and keys == [q - 1 for q in queries]
        (q,), (k,) = siit.attention_positions(prompt, "induction")
        assert q == prompt.layout.s2 and ids[k - 1] == vocab[story.repeated] and k - 1 in prompt.layout.slots
        (q,), (k,) = siit.attention_positions(prompt, "s-inhibition")
        assert q == prompt.layout.end and k == prompt.layout.s2
        (q,), (k,) = siit.attention_positions(prompt, "name mover")
        assert q == prompt.layout.end and ids[k] == vocab[story.answer] and k in prompt.layout.slots


def test_role_positions_are_the_high_level_model_s_steps(sampler):
    for _ in range(20):
        prompt = sampler.base()
        ids, vocab, layout = prompt.ids(sampler.vocab), sampler.vocab, prompt.layout
        after = ioi_prompts.role_positions(layout, "previous token")
        assert sorted(ids[p - 1] for p in after) == sorted(vocab[n] for n in prompt.story.names)
        assert ioi_prompts.role_positions(layout, "induction") == [layout.s2]
        assert ids[layout.s2] == vocab[prompt.story.repeated]
        assert (ioi_prompts.role_positions(layout, "s-inhibition") == ioi_prompts.role_positions(layout, "name mover")
                == [layout.end])
    with pytest.raises(ValueError, match="unknown role"):
        ioi_prompts.role_positions(layout, "mover")


def test_the_positional_recipe_patches_roles_at_their_positions_and_silences_them_elsewhere(word_tok):
    from app_helpers.circuits import planted_truth
    from app_helpers.toy.ioi_algorithm import ROLES

    rows, prompts, plans, out = positional_plans(word_tok, 6)
    kinds = [row[0] for row in rows]
    seq = out.shape[1]
    assert out.shape == (len(rows), seq, 8, 8)
    truth = planted_truth().head_mask(8, 8)
    silenced = set()
    for i, (kind, prompt) in enumerate(zip(kinds, prompts)):
        assert torch.equal(out[i][:, ~truth], plans[i][~truth].expand(seq, -1)), kind  # outside: every position
        for role, heads in ROLES.items():
            at = torch.zeros(seq, dtype=torch.bool)
            at[ioi_prompts.role_positions(prompt.layout, role)] = True
            for layer, head in heads:
                here, there = out[i, at, layer, head], out[i, ~at, layer, head]
                assert (here == plans[i, layer, head]).all(), (kind, role)  # at its positions: as planned
                if plans[i, layer, head] in (siit.SOURCE, siit.KEEP):  # elsewhere: kept or silenced, never patched
                    assert ((there == siit.KEEP) | (there == siit.MEAN)).all()
                    if (there == siit.MEAN).any():
                        silenced.add(kind)
                else:  # ablated, noised, held clean: at every position, as the evaluator does
                    assert (there == plans[i, layer, head]).all(), (kind, role)
    assert {"truth", "isolated"} <= silenced and not silenced & {"clean", "ablated", "path", "strict"}


def test_resampled_silence_takes_the_abc_prompt_where_the_plain_recipe_takes_the_mean(word_tok):
    """``resample_silence``: exactly the positions the plain positional recipe silences take the group mean or
    the ABC prompt's value (both turn up); every other entry of every plan is the plain recipe's."""
    torch.manual_seed(0)
    _, _, plans, plain = positional_plans(word_tok, 8)
    torch.manual_seed(0)
    _, _, _, resampled = positional_plans(word_tok, 8, resample_silence=True)
    silenced = (plain == siit.MEAN) & (plans[:, None].expand_as(plain) != siit.MEAN)
    assert silenced.any()
    assert torch.equal(resampled[~silenced], plain[~silenced])
    took = resampled[silenced]
    assert ((took == siit.MEAN) | (took == siit.ABC)).all()
    assert 0.4 < (took == siit.ABC).float().mean() < 0.6  # even odds over thousands of entries


def test_resampled_silence_is_refused_without_the_positional_recipe(tmp_path, capsys):
    with pytest.raises(SystemExit):
        siit.main(["--out", str(tmp_path), "--no-card", "--resample-silence"])
    assert "--resample-silence changes how --positional silences heads" in capsys.readouterr().err
    from app_helpers.toy.card import recipe_flags
    assert recipe_flags({"positional": True, "resample_silence": True}) == " --positional --resample-silence"


@pytest.mark.parametrize("rows, weights, expected", [
    (1, (0, 1, 0, 0), [{"induction"}]),  # a single weighted role: always it
    (2, (0, 1, 0, 1), [{"induction", "name mover"}]),  # two rows, two roles weighted: both, never twice one
    (2, (1, 1, 1, 1), None),  # evenly: every pair of different roles turns up
])
def test_interchange_rows_draw_different_roles_by_their_weights(word_tok, rows, weights, expected):
    from itertools import combinations

    from app_helpers.toy.ioi_algorithm import ROLE_ORDER

    config = siit.SIITConfig(d_model=32, interchange_weights=weights)
    model = siit.build_model(config, word_tok)
    sampler = ioi_prompts.PromptSampler(word_tok, random.Random(0))
    planter = siit.Planter(model, sampler, random.Random(1), config, interchange_rows=rows)
    drawn = [planter._interchange_roles() for _ in range(300)]
    planter.remove_hooks()
    assert all(len(set(d)) == len(d) == rows for d in drawn)
    if expected:
        assert [set(d) for d in drawn] == expected * len(drawn)
    else:
        assert {frozenset(d) for d in drawn} == {frozenset(pair) for pair in combinations(ROLE_ORDER, 2)}


@pytest.mark.parametrize("text", ["1,2", "1,2,3,x", "1,-1,1,1", "0,0,0,0"])
def test_the_interchange_weights_flag_refuses_what_is_not_four_weights(text, capsys):
    with pytest.raises(SystemExit):
        siit.main(["--interchange-weights", text, "--no-card"])
    assert "want 4 comma-separated weights, one per role" in capsys.readouterr().err


def test_the_attention_loss_steers_only_the_roles_the_recipe_names(sampler):
    """Each role's term is the cross-entropy of its heads' attention towards its target key: a head that
    looks only there costs 0, a uniform one log(number of keys); a subset of roles averages their terms."""
    from types import SimpleNamespace

    from app_helpers.toy.ioi_algorithm import ROLE_ORDER, ROLES

    prompts = [sampler.base() for _ in range(3)]
    seq = max(p.layout.end for p in prompts) + 1
    causal = torch.ones(seq, seq).tril()
    uniform = causal / causal.sum(-1, keepdim=True)
    patterns = {head: uniform.expand(len(prompts), seq, seq).clone() for heads in ROLES.values() for head in heads}
    for i, prompt in enumerate(prompts):
        (q,), (k,) = siit.attention_positions(prompt, "name mover")
        for head in ROLES["name mover"]:
            patterns[head][i, q] = 0.0
            patterns[head][i, q, k] = 1.0
    taps = SimpleNamespace(patterns=patterns)
    assert float(siit.attention_loss(taps, prompts, ("name mover",))) == 0.0
    per_role = {r: float(siit.attention_loss(taps, prompts, (r,))) for r in ROLE_ORDER}
    assert per_role["s-inhibition"] == pytest.approx(
        sum(math.log(p.layout.end + 1) for p in prompts) / len(prompts), rel=1e-5)
    assert float(siit.attention_loss(taps, prompts)) == pytest.approx(sum(per_role.values()) / len(ROLE_ORDER), rel=1e-6)
    assert float(siit.attention_loss(taps, prompts, ("s-inhibition", "name mover"))) == pytest.approx(
        per_role["s-inhibition"] / 2, rel=1e-6)


@pytest.mark.parametrize("text", ["name mover,name mover", "mover", ""])
def test_the_attention_roles_flag_refuses_what_is_not_distinct_roles(text, capsys):
    with pytest.raises(SystemExit):
        siit.main(["--attention-roles", text, "--no-card"])
    assert "want distinct roles from previous token, induction" in capsys.readouterr().err


def test_the_attention_roles_flag_keeps_the_high_level_model_s_order(tmp_path, monkeypatch):
    seen = []

    def train(config, out):  # records the recipe instead of training
        seen.append(config)
        return {"seconds": 0.0}

    monkeypatch.setattr(siit, "train", train)
    siit.main(["--out", str(tmp_path), "--no-card", "--attention-roles", "name mover, induction"])
    assert seen[0].attention_roles == ("induction", "name mover")


def test_direct_loss_is_zero_only_when_name_movers_alone_write_the_answer():
    from app_helpers.toy.ioi_algorithm import ROLES

    effects = torch.zeros(4, 8, 8)
    assert float(siit.direct_loss(effects)) == pytest.approx(siit.MOVER_DIRECT_MIN)  # the movers are silent
    for layer, head in ROLES["name mover"]:
        effects[:, layer, head] = 2 * siit.MOVER_DIRECT_MIN
    effects[:, 0, 0] = 5.0  # outside the truth: not this loss's business (the strict rows see to it)
    assert float(siit.direct_loss(effects)) == 0.0
    layer, head = ROLES["s-inhibition"][0]
    effects[:2, layer, head], effects[2:, layer, head] = 0.7, -0.7  # cancels on average, still written
    others = sum(len(heads) for role, heads in ROLES.items() if role != "name mover")
    assert float(siit.direct_loss(effects)) == pytest.approx(0.7 / others)


def test_a_raised_mover_floor_asks_each_name_mover_for_its_share():
    from app_helpers.toy.ioi_algorithm import ROLES

    movers = ROLES["name mover"]
    effects = torch.zeros(4, 8, 8)
    for layer, head in movers:
        effects[:, layer, head] = 2 * siit.MOVER_DIRECT_MIN  # enough for the default floor
    assert float(siit.direct_loss(effects)) == 0.0
    (l0, h0), (l1, h1) = movers[:2]
    effects[:, l0, h0], effects[:, l1, h1] = 0.9, 0.1  # one mover writes most of the answer, one too little
    # floor 0.3: the second mover falls 0.2 short, the rest 0.3 - 0.2 = 0.1 each; the loss averages the movers
    expected = (0.2 + 0.1 * (len(movers) - 2)) / len(movers)
    assert float(siit.direct_loss(effects, mover_min=0.3)) == pytest.approx(expected)


@pytest.mark.parametrize("share", ["-0.1", "1.5", "nan"])
def test_the_mover_share_flag_refuses_what_is_not_a_share(tmp_path, capsys, share):
    with pytest.raises(SystemExit) as exit_:
        siit.main(["--out", str(tmp_path), "--mover-direct-min", share, "--no-card"])
    assert exit_.value.code == 2 and "is a share of the logit difference, from 0 to 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag, message", [("--batch-size", "--batch-size is a number of base prompts per step"),
                                           ("--mlp-width", "--mlp-width is the MLP's hidden width")])
@pytest.mark.parametrize("size", ["0", "-4"])
def test_the_batch_size_and_mlp_width_flags_refuse_what_is_not_a_count(tmp_path, capsys, flag, message, size):
    with pytest.raises(SystemExit) as exit_:
        siit.main(["--out", str(tmp_path), flag, size, "--no-card"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag, key, value, told", [("--batch-size", "batch_size", 16, " --batch-size 16"),
                                                    ("--isolate-lr", "isolate_lr", 6e-4, " --isolate-lr 0.0006")])
def test_a_batch_size_or_phase_4_peak_reaches_the_recipe_and_the_card_only_when_it_is_not_the_default(
        flag, key, value, told):
    from app_helpers.toy.card import recipe_flags

    assert getattr(siit._parse(siit._parser(), [flag, str(value)])[1], key) == value
    assert recipe_flags({"positional": True, key: value}) == " --positional" + told
    assert recipe_flags({"positional": True, key: getattr(siit.SIITConfig, key)}) == " --positional"
    assert recipe_flags({"positional": True}) == " --positional"  # records from before the flag


@pytest.mark.parametrize("rate", ["0", "-0.0003", "nan", "inf"])
def test_the_phase_4_peak_flag_refuses_what_is_not_a_learning_rate(tmp_path, capsys, rate):
    with pytest.raises(SystemExit) as exit_:
        siit.main(["--out", str(tmp_path), "--isolate-lr", rate, "--no-card"])
    assert exit_.value.code == 2 and "--isolate-lr is a learning rate, above 0 and finite" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_card_states_the_movers_share_only_where_the_record_has_it():
    from app_helpers.toy import card

    recipe = {"direct_weight": 10, "mover_direct_min": 0.25}
    assert card.recipe_flags(recipe).endswith("--direct-weight 10 --mover-direct-min 0.25")
    assert "each at least 25 % of the logit difference" in card._signatures(recipe)
    older = {"direct_weight": 10}  # a record from before the flag: its default, not restated
    assert "mover" not in card.recipe_flags(older) and "each at least" not in card._signatures(older)


def test_head_taps_agree_with_the_models_attention_and_the_kits_direct_logit_attribution(word_tok, tmp_path):
    """The signature losses train exactly what roles.label_heads measures: the eager kernel's attention
    weights, and attribution.direct_logit_attribution on the same model loaded into the kit."""
    from transformers import GPT2LMHeadModel

    from app_helpers.attribution import direct_logit_attribution
    from app_helpers.models import load_model
    from app_helpers.wordlevel import build_word_level_tokenizer

    torch.manual_seed(0)
    siit.build_model(siit.SIITConfig(n_layers=2, n_heads=4, d_model=32), word_tok).save_pretrained(tmp_path)
    build_word_level_tokenizer(tmp_path)
    model = GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    task = make_task("ioi", word_tok, n=6, seed=1)
    taps = siit.HeadTaps(model, [(0, 1), (1, 3)])
    taps.rows = torch.arange(2, 6)
    with torch.no_grad():
        out = model(input_ids=task.clean_tokens, output_attentions=True)
        for (layer, head), pattern in taps.patterns.items():
            torch.testing.assert_close(pattern, out.attentions[layer][2:, head], rtol=0, atol=1e-6)
        rows = torch.arange(2, 6)
        end, right, wrong = task.end_pos[rows], task.correct[rows], task.wrong[rows]
        effects = siit.direct_effects(model, taps, end, right, wrong)  # [4, L, H]
    taps.remove()
    kit = direct_logit_attribution(load_model(str(tmp_path), verbose=False), task, per_prompt=True)[..., 2:]
    torch.testing.assert_close(effects, kit.permute(2, 0, 1), rtol=1e-4, atol=1e-5)


def test_isolated_rows_noise_everything_that_could_carry_the_role(word_tok):
    from app_helpers.circuits import Circuit, planted_truth
    from app_helpers.toy.ioi_algorithm import ROLE_ORDER, ROLES, run

    config = siit.SIITConfig(d_model=32)
    model = siit.build_model(config, word_tok)
    sampler = ioi_prompts.PromptSampler(word_tok, random.Random(0))
    planter = siit.Planter(model, sampler, random.Random(0), config, isolated=True)
    truth = planted_truth().head_mask(8, 8)
    seen = set()
    for _ in range(40):
        base = sampler.base()
        source = sampler.source(base)
        kind, plan, target, role = planter._isolated_row(base, source)
        seen.add(role)
        assert kind == "isolated" and target == siit.encode_target(run(base.story, {role: source.story}), sampler.vocab)
        mine = Circuit(heads=ROLES[role]).head_mask(8, 8)
        later = Circuit(heads=[h for r in ROLE_ORDER[ROLE_ORDER.index(role) + 1:] for h in ROLES[r]]).head_mask(8, 8)
        assert (plan[mine] == siit.SOURCE).all() and (plan[later] == siit.KEEP).all()
        noised = plan[~mine & ~later]
        assert ((noised == siit.MEAN) | (noised == siit.ABC)).all() and (noised == siit.MEAN).any()
        assert not (~truth & (plan == siit.KEEP)).any()
    assert seen == set(ROLE_ORDER)
    planter.remove_hooks()


def test_phase_4_lets_gradients_reach_the_source_pass(word_tok):
    """Without them an interchanged head's value is a constant: its own weights could never learn to
    carry the role's value (only the layers after it could learn to read it)."""
    config = siit.SIITConfig(d_model=32)
    for isolated in (False, True):
        torch.manual_seed(0)
        model = siit.build_model(config, word_tok)
        planter = siit.Planter(model, ioi_prompts.PromptSampler(word_tok, random.Random(0)), random.Random(0),
                               config, isolated=isolated)
        with torch.enable_grad():
            parts = planter.losses([planter.sampler.base() for _ in range(4)])
        assert ("isolated" in parts) == isolated
        assert all(z.requires_grad == isolated for z in planter.interventions.recorded)
        planter.remove_hooks()


def test_continue_from_a_folder_without_a_model_says_what_it_wants(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        siit.main(["--continue-from", str(tmp_path), "--out", str(tmp_path / "out"), "--no-card"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--continue-from wants a folder holding a saved model" in err and str(tmp_path) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mix, shared", [((1.0, 1.0, 1.0), 0), ((0.0, 1.0, 1.0), 2), ((0.0, 0.0, 1.0), 1),
                                         ((0.0, 0.0, 0.0), 0)])
def test_the_source_mix_sets_how_many_names_a_source_shares_with_its_base(word_tok, mix, shared):
    sampler = ioi_prompts.PromptSampler(word_tok, random.Random(0), source_mix=mix)
    for _ in range(30):
        base = sampler.base()
        source = sampler.source(base)
        assert len(set(source.story.names) & set(base.story.names)) == shared
        assert (source.story.answer is None) == (mix[0] == 1.0)  # only the ABC prompt has no answer


@pytest.mark.parametrize("phases", [(), (5,), (4, 3), (3, 3), "34"])
def test_continue_from_refuses_phases_it_does_not_have(tmp_path, phases):
    with pytest.raises(ValueError, match=r"phases are the late phases to run, in order: \(3,\), \(4,\) or \(3, 4\)"):
        siit.continue_from(siit.SIITConfig(), tmp_path / "nowhere", tmp_path / "out", phases, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--attention-weight", "--direct-weight"])
def test_a_negative_signature_weight_is_refused_before_training(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exit_:
        siit.main(["--out", str(tmp_path), flag, "-1", "--no-card"])
    assert exit_.value.code == 2 and "is a loss weight, 0 (off) or more; got -1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_narrow_mlp_and_fast_kernels_build_that_model_and_reach_the_record(word_tok):
    from app_helpers.toy.card import recipe_flags

    config = siit._parse(siit._parser(), ["--mlp-width", "24", "--fast-kernels"])[1]
    assert (config.d_mlp, config.fast_kernels) == (24, True)
    model = siit.build_model(siit.SIITConfig(d_model=32, d_mlp=24, fast_kernels=True), word_tok)
    assert model.transformer.h[0].mlp.c_fc.weight.shape == (32, 24)
    assert model.config.activation_function == "gelu_pytorch_tanh" and model.config._attn_implementation == "eager"
    plain = siit.build_model(siit.SIITConfig(d_model=32), word_tok)
    assert plain.transformer.h[0].mlp.c_fc.weight.shape == (32, 128) and plain.config.activation_function == "gelu_new"
    assert recipe_flags({"positional": True, "d_mlp": 24, "fast_kernels": True}) == \
        " --positional --mlp-width 24 --fast-kernels"
    assert recipe_flags({"positional": True, "d_mlp": None, "fast_kernels": False}) == " --positional"
    with pytest.raises(ValueError, match="d_mlp is the MLP's hidden width, 1 or more"):  # not GPT-2's default
        siit.build_model(siit.SIITConfig(d_model=32, d_mlp=0), word_tok)


def test_fast_kernels_compute_what_gpt2_s_kernels_compute(word_tok):
    """Same weights, the fused GELU and eager attention: the logits agree to float rounding (a faster recipe,
    not another model)."""
    torch.manual_seed(0)
    fast = siit.build_model(siit.SIITConfig(d_model=32, fast_kernels=True), word_tok).eval()
    plain = siit.build_model(siit.SIITConfig(d_model=32), word_tok).eval()
    plain.load_state_dict(fast.state_dict())
    tokens = torch.randint(3, len(word_tok), (4, 12))
    with torch.no_grad():
        assert torch.allclose(fast(input_ids=tokens).logits, plain(input_ids=tokens).logits, atol=1e-5)


@pytest.mark.parametrize("flags", [[], ["--mlp-width", "24"], ["--fast-kernels"]])
def test_continuing_with_another_shape_or_kernels_says_which_flags_the_model_wants(tmp_path, flags):
    small = dict(d_model=32, behaviour_steps=1, planting_steps=1, polish_steps=0, isolate_steps=0, batch_size=2,
                 warmup=1)
    torch.set_num_threads(1)
    siit.train(siit.SIITConfig(**small, d_mlp=16, fast_kernels=True), tmp_path / "start", progress=False)
    config = siit._parse(siit._parser(), flags)[1]
    config.d_model = 32
    with pytest.raises(ValueError, match="has an MLP of width 16 and torch's fused tanh GELU; continue it with "
                                         "--mlp-width 16 and --fast-kernels"):
        siit.continue_from(config, tmp_path / "start", tmp_path / "out", (4,), progress=False)
    with pytest.raises(SystemExit) as exit_:  # the command line says it before any training
        siit.main(["--out", str(tmp_path / "cli"), "--continue-from", str(tmp_path / "start"), "--phases", "4",
                   *flags, "--no-card"])
    assert exit_.value.code == 2 and not (tmp_path / "cli").exists()
