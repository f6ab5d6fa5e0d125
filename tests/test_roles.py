"""Role labels: each signature on inputs whose answer is known, the labelling rules, and the planted model."""
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from app_helpers import roles
from app_helpers.circuits import Circuit, planted_truth
from app_helpers.hooks import final_residual, hook_name, logits_at
from app_helpers.identities import Head
from app_helpers.metrics import answer_logit_diff
from app_helpers.tasks import make_task


@pytest.fixture(scope="module")
def tiny_task(tiny_gpt2):
    return make_task("ioi", tiny_gpt2, n=6, seed=0)


@pytest.fixture(scope="module")
def planted():
    from app_helpers.models import load_model

    model = load_model("app-planted", verbose=False)
    task = make_task("ioi", model, n=50, seed=0)
    return model, task, roles.label_heads(model, task)


# --- attention signatures -----------------------------------------------------------------------------------------
def test_attention_scores_read_a_constructed_pattern(tiny_gpt2, tiny_task):
    task = tiny_task
    n, seq = len(task), task.clean_tokens.shape[1]
    patterns = torch.zeros(2, n, 4, seq, seq)
    w, rows = task.word_pos, torch.arange(n)
    patterns[0, rows, 1, w["S1"] + 1, w["S1"]] = 1.0  # a previous-token head, at both names
    patterns[0, rows, 1, w["IO"] + 1, w["IO"]] = 1.0
    patterns[0, rows, 2, w["S1"] + 1, w["S1"]] = 1.0  # ... and one at S1+1 only: half the score
    patterns[1, rows, 2, w["S2"], w["S1+1"]] = 0.6  # induction
    patterns[1, rows, 3, w["S2"], w["S1"]] = 1.0  # duplicate token
    patterns[1, rows, 0, w["END"], w["IO"]] = 0.7  # a name mover's reading
    patterns[1, rows, 0, w["END"], w["S2"]] = 0.2
    s = roles.attention_scores(task, patterns)
    want = {roles.PREVIOUS_TOKEN: {(0, 1): 1.0, (0, 2): 0.5}, roles.INDUCTION: {(1, 2): 0.6},
            roles.DUPLICATE_TOKEN: {(1, 3): 1.0}, "END->IO": {(1, 0): 0.7}, "END->S": {(1, 0): 0.2}}
    for name, cells in want.items():
        expected = torch.zeros(2, 4)
        for cell, value in cells.items():
            expected[cell] = value
        torch.testing.assert_close(s[name], expected, msg=name)


def test_stripe_scores_find_the_previous_token_and_induction_stripes():
    length = 4
    seq = 2 * length + 1
    patterns = torch.zeros(1, 3, 2, seq, seq)
    q = torch.arange(2, seq)
    patterns[0, :, 0, q, q - 1] = 1.0  # head 0: always the token before
    second = torch.arange(length + 1, seq)
    patterns[0, :, 1, second, second - length + 1] = 1.0  # head 1: the token after the last occurrence
    s = roles.stripe_scores(patterns, length)
    torch.testing.assert_close(s[roles.PREVIOUS_TOKEN], torch.tensor([[1.0, 0.0]]))
    # the two stripes (offsets 1 and T - 1) meet only when T = 2
    torch.testing.assert_close(s[roles.INDUCTION], torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="expected 2"):
        roles.stripe_scores(patterns, length + 1)


def test_repeated_sequence_scores_are_attention_fractions(tiny_gpt2):
    s = roles.repeated_sequence_scores(tiny_gpt2, n_seqs=2, length=6)
    for score in s.values():
        assert score.shape == (2, 4)
        assert (score >= 0).all() and (score <= 1).all()


# --- copying ------------------------------------------------------------------------------------------------------
def test_copying_fraction_counts_own_tokens_in_the_top_k():
    logits = torch.zeros(3, 10)
    logits[0, 4] = 5  # row 0's token 4 is top
    logits[1, :6] = torch.arange(6, 0, -1).float()  # row 1's token 5 is 6th: outside a top 5
    logits[2, 7] = 1  # row 2's token 7 is top
    tokens = torch.tensor([4, 5, 7])
    assert roles.copying_fraction(logits, tokens, top_k=5).item() == pytest.approx(2 / 3)
    assert roles.copying_fraction(logits, tokens, top_k=6).item() == pytest.approx(1.0)


def _ov_model(ov: list[torch.Tensor], d: int = 32, vocab: int = 24):
    """A one-layer stand-in with orthonormal embeddings, tied unembedding and the given OV matrices."""
    torch.manual_seed(0)
    w_e = torch.linalg.qr(torch.randn(d, vocab)).Q.T  # [vocab, d], orthonormal rows
    attn = SimpleNamespace(W_V=torch.stack(ov), W_O=torch.stack([torch.eye(d)] * len(ov)))
    return SimpleNamespace(
        cfg=SimpleNamespace(n_layers=1, n_heads=len(ov), normalization_type="RMS", eps=1e-5, d_vocab=vocab),
        W_E=w_e, W_U=w_e.T, blocks=[SimpleNamespace(attn=attn, ln1=lambda x: x)],
        ln_final=SimpleNamespace(w=torch.ones(d)), parameters=lambda: iter([w_e]))


def test_copy_scores_tell_copying_from_anti_copying_and_from_a_fixed_write():
    d, vocab = 64, 48
    u = torch.randn(d)
    fixed = torch.outer(u, u)  # writes ±u whatever it reads: its top 5 are one set of 5 tokens per sign
    model = _ov_model([torch.eye(d), -torch.eye(d), fixed], d=d, vocab=vocab)
    names = torch.arange(8, vocab)
    s = roles.copy_scores(model, names, through_mlp0=False)
    torch.testing.assert_close(s["copy"][0, :2], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(s["negative copy"][0, :2], torch.tensor([0.0, 1.0]))
    assert s["copy"][0, 2] <= 10 / len(names) and s["negative copy"][0, 2] <= 10 / len(names)


# --- direct effect ------------------------------------------------------------------------------------------------
def test_direct_effect_is_what_removing_a_last_layer_head_costs_with_mlp_and_scale_frozen(planted):
    """Removing a head's END output with everything after it frozen (the last MLP, the final norm's scale)
    changes the logits by its direct path alone: the direct effect, computed here without the formula (on
    the trained model, whose final norm has a weight other than ones)."""
    model, task, _ = planted
    task = task.subset(slice(0, 10))
    effects = roles.direct_effects(model, task)
    resid = final_residual(model, task.clean_tokens)
    last = model.cfg.n_layers - 1
    frozen_points = ("ln_final.hook_scale", f"blocks.{last}.hook_mlp_out")
    clean = {}

    def keep(act, hook):
        clean[hook.name] = act.clone()
    with model.hooks(fwd_hooks=[(point, keep) for point in frozen_points]):
        model(task.clean_tokens)
    full = answer_logit_diff(logits_at(model, resid, task.end_pos), task.answers).mean()
    rows = torch.arange(len(task))
    for head in range(model.cfg.n_heads):
        def remove(z, hook, head=head):  # noqa: ARG001
            z = z.clone()
            z[rows, task.end_pos, head] = 0
            return z
        hooks = [(hook_name(last, "z"), remove)] + [(p, lambda act, hook: clean[hook.name]) for p in frozen_points]
        with model.hooks(fwd_hooks=hooks):
            logits = model(task.clean_tokens)[rows, task.end_pos]
        without = answer_logit_diff(logits, task.answers).mean()
        assert effects[last, head].item() == pytest.approx(((full - without) / full).item(), rel=1e-3, abs=1e-5)


# --- S-inhibition -------------------------------------------------------------------------------------------------
def test_inhibition_matches_a_one_head_patch_and_is_zero_without_a_corruption(tiny_gpt2, tiny_task):
    model, task, mover, sender = tiny_gpt2, tiny_task, Head(1, 0), Head(0, 2)
    scores = roles.inhibition_scores(model, task, [mover])
    assert torch.isnan(scores[1]).all() and not torch.isnan(scores[0]).any()  # senders: layers below the mover

    rows, w = torch.arange(len(task)), task.word_pos
    store = {}

    def keep(name):
        def hook(act, hook):  # noqa: ARG001
            store[name] = act.clone()
        return hook
    with model.hooks(fwd_hooks=[(hook_name(0, "z"), keep("z"))]):
        model(task.corrupted_tokens)

    def mover_view(extra):
        with model.hooks(fwd_hooks=[*extra, (hook_name(1, "pattern"), keep("p"))]):
            model(task.clean_tokens)
        p = store["p"][rows, mover.head, task.end_pos]
        return (p[rows, w["S1"]] + p[rows, w["S2"]] - p[rows, w["IO"]]).mean()

    def patch(z, hook):  # noqa: ARG001
        z = z.clone()
        z[rows, task.end_pos, sender.head] = store["z"][rows, task.end_pos, sender.head]
        return z
    want = mover_view([(hook_name(0, "z"), patch)]) - mover_view([])
    assert scores[sender].item() == pytest.approx(want.item(), abs=1e-5)

    same = replace(task, corrupted_tokens=task.clean_tokens)
    torch.testing.assert_close(roles.inhibition_scores(model, same, [mover])[0], torch.zeros(4))
    assert torch.isnan(roles.inhibition_scores(model, task, [])).all()


# --- labels -------------------------------------------------------------------------------------------------------
def _scores(cells: dict) -> dict:
    """Every score zero on a 3 x 4 model except ``cells``: score name → {(layer, head): value}."""
    s = {name: torch.zeros(3, 4) for name in roles.SCORE_NAMES}
    for name, values in cells.items():
        for cell, v in values.items():
            s[name][cell] = v
    return s


def test_assign_roles_follows_the_rules_and_thresholds():
    s = _scores({"direct effect": {(2, 0): 0.2, (2, 1): -0.1, (2, 2): 0.01, (2, 3): 0.01},
                 "END->IO": {(2, 2): 0.6, (2, 3): 0.5}, "END->S": {(2, 2): 0.1, (2, 3): 0.5},
                 "copy": {(2, 2): 0.9, (2, 3): 0.9},
                 roles.S_INHIBITION: {(1, 0): 0.2, (1, 3): float("nan")},
                 roles.INDUCTION: {(1, 1): 0.4}, roles.DUPLICATE_TOKEN: {(1, 1): 0.3, (1, 2): 0.3},
                 roles.PREVIOUS_TOKEN: {(0, 0): 0.3, (0, 1): roles.ATTENTION_MIN - 0.01}})
    labels = roles.assign_roles(s)
    assert labels == {(2, 0): roles.NAME_MOVER, (2, 1): roles.NEGATIVE_NAME_MOVER,
                      (2, 2): roles.BACKUP_NAME_MOVER,  # (2, 3) reads S as much as IO: no name mover
                      (1, 0): roles.S_INHIBITION, (1, 1): roles.INDUCTION, (1, 2): roles.DUPLICATE_TOKEN,
                      (0, 0): roles.PREVIOUS_TOKEN}
    stricter = roles.assign_roles(s, {"attention": 0.35})
    assert (0, 0) not in stricter and (1, 2) not in stricter and stricter[(1, 1)] == roles.INDUCTION
    assert (2, 2) in stricter  # its IO - S margin, 0.5, still clears 0.35
    assert roles.assign_roles(s, heads=["2.0", (0, 0), (0, 2)]) == {(2, 0): roles.NAME_MOVER,
                                                                    (0, 0): roles.PREVIOUS_TOKEN}
    with pytest.raises(ValueError, match="unknown threshold"):
        roles.assign_roles(s, {"atention": 0.3})
    with pytest.raises(ValueError, match="lack"):
        roles.assign_roles({roles.INDUCTION: torch.zeros(3, 4)})


def test_role_names_include_the_planted_algorithms():
    from app_helpers.toy.ioi_algorithm import ROLES

    assert set(ROLES) <= set(roles.ROLE_NAMES)
    assert set(roles.ATTENTION_ROLES) <= set(roles.ROLE_NAMES)


def test_recovery_counts_heads_with_their_own_role_and_names_the_misses():
    truth = Circuit(heads=("0.1", "1.2", "2.3"), roles={"0.1": roles.PREVIOUS_TOKEN, "1.2": roles.INDUCTION,
                                                        "2.3": roles.NAME_MOVER})
    r = roles.recovery({"0.1": roles.PREVIOUS_TOKEN, (1, 2): roles.DUPLICATE_TOKEN, "3.0": roles.NAME_MOVER}, truth)
    assert r.recovered == {Head(0, 1): roles.PREVIOUS_TOKEN} and r.total == 3 and r.fraction == pytest.approx(1 / 3)
    assert str(r) == ("recovered 1/3; missed 1.2 (induction; labelled duplicate token), "
                      "2.3 (name mover; labelled nothing)")
    assert r.per_role == {roles.PREVIOUS_TOKEN: (1, 1), roles.INDUCTION: (0, 1), roles.NAME_MOVER: (0, 1)}
    with pytest.raises(ValueError, match="no roles"):
        roles.recovery({}, Circuit(heads=("0.1",)))


def test_label_heads_on_a_random_model_gives_every_score_and_respects_heads(tiny_gpt2, tiny_task):
    result = roles.label_heads(tiny_gpt2, tiny_task, heads=["0.0", "1.3"], inhibition_prompts=3)
    assert set(result.scores) == set(roles.SCORE_NAMES)
    for name, score in result.scores.items():
        assert score.shape == (2, 4), name
    assert set(result.labels) <= {Head(0, 0), Head(1, 3)}
    assert result.labels == roles.assign_roles(result.scores, result.thresholds, ["0.0", "1.3"])


# --- the planted model --------------------------------------------------------------------------------------------
def test_planted_labels_are_the_rules_applied_to_the_scores(planted):
    _, _, result = planted
    assert result.labels == roles.assign_roles(result.scores, result.thresholds)
    assert set(result.movers) == {h for h, r in result.labels.items() if r == roles.NAME_MOVER}


def test_planted_name_movers_are_found_by_their_direct_effect(planted):
    _, _, result = planted
    movers = planted_truth().by_role()[roles.NAME_MOVER]
    found = [h for h in movers if result[h] == roles.NAME_MOVER]
    assert len(found) > len(movers) / 2, roles.recovery(result, planted_truth())


def test_planted_circuit_heads_are_the_name_copiers(planted):
    """Every planted role carries a name (toy.ioi_algorithm), and the OV copying score (either sign) picks
    out the truth's heads far more often than the others: at least half of them, and five times the rate
    among the rest (measured on the shipped model: 6 of 10 truth heads, 2 of 54 others)."""
    model, _, result = planted
    copies = torch.maximum(result.scores["copy"], result.scores["negative copy"]) >= roles.COPY_MIN
    truth = planted_truth().head_mask(model.cfg.n_layers, model.cfg.n_heads)
    inside, outside = copies[truth].float().mean(), copies[~truth].float().mean()
    assert inside >= 0.5 and inside >= 5 * outside and outside <= 0.2, (inside, outside)


def test_the_model_card_reports_this_recovery(planted):
    """data/app-planted/README.md quotes planted_checks.role_recovery: the same labels on the same prompts."""
    import json

    from app_helpers.identities import head_name
    from app_helpers.models import BUNDLED_MODELS

    _, _, result = planted
    found = roles.recovery(result, planted_truth())
    card = json.loads((BUNDLED_MODELS["app-planted"] / "measurements.json").read_text())["role_recovery"]
    assert (card["recovered"], card["total"]) == (len(found.recovered), found.total)
    assert card["missed"] == {head_name(h): list(v) for h, v in sorted(found.missed.items())}


def test_planted_roles_are_recovered(planted):
    _, _, result = planted
    assert roles.recovery(result, planted_truth()).fraction >= 0.8


def test_label_heads_refuses_what_is_not_an_ioi_task(tiny_gpt2):
    with pytest.raises(ValueError, match="lacks IO, S1, S2, S1\\+1: pass make_task\\('ioi'"):
        roles.label_heads(tiny_gpt2, make_task("greater_than", tiny_gpt2, n=4, seed=0))
    with pytest.raises(ValueError, match="reads an IOI task .* got str"):
        roles.label_heads(tiny_gpt2, "ioi")
