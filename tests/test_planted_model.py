"""The shipped app-planted: its IOI circuit is the planted one, measured with the kit's own evaluator and
engine on held-out prompts (N = 200). The same numbers are in data/app-planted/README.md."""
import json

import pytest
import torch

from app_helpers.circuits import Circuit, planted_truth, references_for
from app_helpers.models import BUNDLED_MODELS, choose_model, load_model
from app_helpers.toy import planted_checks as pc
from app_helpers.toy.checks import task_accuracy
from app_helpers.toy.ioi_algorithm import ROLES

MODEL_DIR = BUNDLED_MODELS["app-planted"]


@pytest.fixture(scope="module")
def model():
    return load_model("app-planted", verbose=False)


@pytest.fixture(scope="module")
def task(model):
    return pc.held_out_task(model, n=200)


def test_shape_size_and_shipped_truth():
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"]
    assert config["n_layer"] >= 8 and config["n_layer"] * config["n_head"] >= 64
    assert sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file()) < 12 * 2**20
    assert Circuit.load(MODEL_DIR / "circuits" / "ioi.json") == planted_truth()
    assert references_for(str(MODEL_DIR), "ioi") == {"ioi_planted": planted_truth()}


def test_auto_picks_it_for_ioi_offline():
    if choose_model("auto").kind == "hub":
        pytest.skip("a GPU and the hub are available: auto picks GPT-2 small")
    assert choose_model("auto", "ioi").spec == "app-planted"
    assert choose_model("auto", "greater_than").spec == "app-toy"


def test_ioi_behaviour(model, task):
    accuracy, logit_diff = task_accuracy(model, task)
    assert accuracy >= 0.99 and logit_diff >= 3.0, (accuracy, logit_diff)


def test_the_truth_is_faithful_and_every_role_is_needed(model, task):
    perf = pc.faithfulness(model, task)
    assert perf["truth"] >= 90, perf
    for role in ROLES:
        assert perf[f"without {role}"] <= 60, perf


@pytest.fixture(scope="module")
def by_names(model):
    return pc.interchange_by_names(model, n=400)


@pytest.fixture(scope="module")
def interchange(by_names):
    return {role: pc.share_right(counts.values()) for role, counts in by_names.items()}


def test_the_breakdown_counts_every_pair_with_a_one_name_answer(model, by_names):
    import random

    from app_helpers.toy.ioi_algorithm import run
    from app_helpers.toy.ioi_prompts import PromptSampler

    sampler = PromptSampler(model.tokenizer, random.Random(pc.HELD_OUT_SEED))
    bases = [sampler.base() for _ in range(400)]
    pairs = list(zip(bases, [sampler.source(b) for b in bases]))
    for role, counts in by_names.items():
        want = {c: 0 for c in pc.NAME_OVERLAP}
        for base, source in pairs:
            if max(run(base.story, {role: source.story}).values()) == 1.0:
                want[pc.NAME_OVERLAP[2 - len(set(base.story.names) & set(source.story.names))]] += 1
        assert {c: total for c, (_, total) in counts.items()} == want, role
        assert all(0 <= right <= total for right, total in counts.values())


def test_name_movers_write_the_name_itself(by_names):
    """Patched from a source whose two names the base lacks, the name movers make the model say the
    source's answer: they carry the name, not which of the base's names (a slot)."""
    right, total = by_names["name mover"]["two other names"]
    assert total >= 50 and right / total >= 0.9, by_names["name mover"]


def test_the_name_at_s2_reaches_the_answer_mostly_through_induction(model):
    """Holding every head at its value, switching S2's name changes nothing (exactly); holding none, the
    answer flips; holding the induction heads alone keeps most of it (the token rows planted that)."""
    every = [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    assert pc.s2_bypass(model, every, n=50) == pytest.approx(1.0, abs=1e-4)
    assert pc.s2_bypass(model, [], n=50) < -0.5
    assert pc.s2_bypass(model, ROLES["induction"], n=50) > 0.5


@pytest.mark.xfail(strict=True, reason="shipped model: holding the induction heads keeps 87 % of the logit "
                   "difference on these 50 prompts (86 % on the card's 200); the rest reaches the answer from S2's "
                   "own token around them (v2 of the model: 102 %; see RECIPE-NOTES.md)")
def test_the_name_at_s2_reaches_the_answer_only_through_induction(model):
    """In the high-level model S2's name reaches the answer only through induction: holding those heads, a
    switched name at S2 keeps (nearly) all of the logit difference."""
    assert pc.s2_bypass(model, ROLES["induction"], n=50) >= 0.9


def test_patching_at_chosen_positions_only(model):
    """``_patched_end_logits`` with a position mask: all positions is the plain patch, none is no patch."""
    import random

    from app_helpers.toy.ioi_prompts import PromptSampler, pad

    sampler = PromptSampler(model.tokenizer, random.Random(0))
    bases = [sampler.base() for _ in range(16)]
    tokens, source = (pad([p.ids(sampler.vocab) for p in ps], model.tokenizer.pad_token_id)
                      for ps in (bases, [sampler.source(b) for b in bases]))
    end = torch.tensor([b.layout.end for b in bases])
    heads = ROLES["s-inhibition"]
    every = pc._patched_end_logits(model, tokens, source, heads, end)
    assert torch.equal(pc._patched_end_logits(model, tokens, source, heads, end, torch.ones(tokens.shape, dtype=bool)),
                       every)
    none = pc._patched_end_logits(model, tokens, source, heads, end, torch.zeros(tokens.shape, dtype=bool))
    assert torch.allclose(none, pc._patched_end_logits(model, tokens, tokens, [], end), atol=1e-5)
    assert not torch.allclose(none, every, atol=1e-2)


def test_every_role_is_right_at_its_own_positions_as_the_card_says(model):
    """Patched at its own positions only (the token after each name, S2, END), each role follows the high-level
    model on >= 95 % of the pairs, as patched at every position: the positional recipe planted each role there
    and silenced its heads elsewhere."""
    own = {role: pc.share_right(c.values()) for role, c in pc.interchange_by_names(model, own_positions=True).items()}
    assert own == pytest.approx(json.loads((MODEL_DIR / "measurements.json").read_text())["interchange_at_own_positions"])
    assert all(a >= 0.95 for a in own.values()), own


def test_interchange_accuracy_of_every_role(interchange):
    assert all(a >= 0.95 for a in interchange.values()), interchange


@pytest.fixture(scope="module")
def strict(model, task):
    return pc.strictness(model, task)


def test_heads_outside_the_truth_do_nothing(strict):
    assert strict["resample"]["max_change"] < 0.03 and strict["mean"]["max_change"] < 0.03, strict


@pytest.fixture(scope="module")
def layers(model, task):
    return pc.layering(model, task)


def test_path_patching_sees_every_layer(layers):
    assert all(layers.holds.values()), (layers.holds, layers.top)


@pytest.fixture(scope="module")
def search(model):
    return pc.search_quality(model, n=100, eval_n=200)


def test_the_search_is_not_degenerate_and_finds_only_truth_heads(search):
    assert search["dense_distinct_circuits"] >= 3, search
    assert search["dense"]["precision"] >= 0.8 and search["app"]["precision"] >= 0.8, search


def test_the_search_finds_the_truth(search):
    assert search["dense"]["tpr"] >= 0.8 and search["app"]["tpr"] >= 0.8, search


def test_app_pays_for_its_pruning(search):
    assert search["speedup_gflops_incl_pruning"] >= 1.5, search


def test_the_card_says_which_recipe_options_were_used(tmp_path):
    """Rendered from the shipped records as they are, then as if phase 4 had planted the signatures."""
    from app_helpers.toy.card import render_planted_card

    measured = json.loads((MODEL_DIR / "measurements.json").read_text())
    training = json.loads((MODEL_DIR / "training.json").read_text())
    (tmp_path / "measurements.json").write_text(json.dumps(measured))
    (tmp_path / "training.json").write_text(json.dumps(training))
    assert render_planted_card(tmp_path) == (MODEL_DIR / "README.md").read_text()
    training = {**{k: v for k, v in training.items() if k not in ("steps", "recipe")}, "one_command": True,
                "how": ""}  # as one command would have trained it
    training["config"].update(attention_weight=0.0, direct_weight=0.0, positional=False, interchange_weights=None,
                              token_rows=False, head_level_share=0.0, mediated_path=False, resample_silence=False,
                              attention_roles=list(ROLES))  # the plain recipe, as records before the movers' share
    training["config"].pop("mover_direct_min", None)
    (tmp_path / "training.json").write_text(json.dumps(training))
    card = render_planted_card(tmp_path)
    r = measured["role_recovery"]
    assert f"{r['recovered']}/{r['total']} truth heads get their planted role" in card
    assert all(f"{head} ({role}; labelled {label or 'nothing'})" in card for head, (role, label) in r["missed"].items())
    assert "signatures planted" not in card and "silenced elsewhere" not in card and "token row" not in card
    assert "× 6 kinds of rows" in card and "path row holds" not in card
    assert f"keeps {measured['s2_bypass']['induction'] * 100:.0f} % of the logit difference" in card
    assert f"--seed {training['config']['seed']}`" in card
    own = measured["interchange_at_own_positions"]
    assert "instead of at every position: " + ", ".join(f"{role} {a * 100:.1f} %" for role, a in own.items()) in card
    training["config"].update(attention_weight=3.0, direct_weight=10.0, positional=True,
                              interchange_weights=[0.3, 0.4, 0.1, 0.2], token_rows=True, head_level_share=0.5,
                              mediated_path=True, resample_silence=True)
    (tmp_path / "training.json").write_text(json.dumps(training))
    card = render_planted_card(tmp_path)
    assert "signatures planted" in card and "weight 3 and direct effects" in card and "weight 10)" in card
    assert ("--positional --interchange-weights 0.3,0.4,0.1,0.2 --attention-weight 3 --direct-weight 10 "
            "--head-level-share 0.5 --token-rows --resample-silence --mediated-path-rows`" in card)
    assert "also gets a token row" in card
    assert "(by the group mean or, half the time, the ABC prompt's own value)" in card
    assert "× 7 kinds of rows" in card and "each path row holds only the next role's heads" in card
    assert "except in 50 % of the interchange rows, patched at every position" in card
    assert "silenced elsewhere" in card and "weights 0.3 / 0.4 / 0.1 / 0.2 (previous token, induction" in card
    training["config"].update(attention_weight=0.0)  # a signature that is off is not named
    (tmp_path / "training.json").write_text(json.dumps(training))
    card = render_planted_card(tmp_path)
    assert "signatures planted: direct effects on the logits for the name movers only, weight 10)" in card
    training["config"].update(signatures_from=2)
    (tmp_path / "training.json").write_text(json.dumps(training))
    card = render_planted_card(tmp_path)
    assert "--direct-weight 10 --signatures-from 2 " in card and "planted (from the planting phase on): direct" in card
    training["config"].update(attention_weight=1.0, attention_roles=["name mover"])
    (tmp_path / "training.json").write_text(json.dumps(training))
    card = render_planted_card(tmp_path)
    assert "--attention-weight 1 --direct-weight 10 --signatures-from 2 --attention-roles 'name mover' " in card
    assert "the name mover heads' attention on the positions they read, weight 1 and direct" in card
    assert "d_model 128) over" in card and "--fast-kernels" not in card
    training["config"].update(d_mlp=128, fast_kernels=True)
    (tmp_path / "training.json").write_text(json.dumps(training))
    card = render_planted_card(tmp_path)
    assert "d_model 128, MLP width 128, torch's fused tanh GELU) over" in card
    assert "--mediated-path-rows --mlp-width 128 --fast-kernels`" in card


def test_the_card_says_whether_one_command_trained_it_within_the_budget(tmp_path):
    """The training-budget line comes from the record: one command, <= 75 minutes, 2 threads."""
    from app_helpers.toy.card import render_planted_card

    training = json.loads((MODEL_DIR / "training.json").read_text())
    (tmp_path / "measurements.json").write_text((MODEL_DIR / "measurements.json").read_text())
    for seconds, threads, one, ok in [(4400, 2, True, True), (4600, 2, True, False), (4400, 4, True, False),
                                      (4400, 2, False, False)]:
        (tmp_path / "training.json").write_text(json.dumps({**training, "seconds": seconds, "threads": threads,
                                                            "one_command": one}))
        line = next(l for l in render_planted_card(tmp_path).splitlines() if "one seeded command trains it" in l)
        assert line.startswith("- ✅" if ok else "- ❌"), line
        assert f"this model: {seconds / 60:.0f} minutes with {threads} threads" in line
        assert ("one command" if one else "a chain of commands") in line
        assert ("RECIPE-NOTES.md, \"The training budget\"" in line) is not ok  # a miss says where to read why
