"""The shipped bundled model (data/app-toy): it loads offline, solves the tasks on held-out prompts, and
its IOI mechanism spans several layers — measured with the kit's own engine and evaluator."""
import pytest
import torch

from app_helpers.models import BUNDLED_DEFAULT, BUNDLED_MODELS, load_model
from app_helpers.toy.checks import accuracies, ioi_mechanism

MODEL_DIR = BUNDLED_MODELS[BUNDLED_DEFAULT]


@pytest.fixture(scope="module")
def model():
    return load_model(BUNDLED_DEFAULT, verbose=False)


@pytest.fixture(scope="module")
def mechanism(model):
    return ioi_mechanism(model, n=200, seed=12345)


def test_shipped_files_are_complete_and_small():
    names = {p.name for p in MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "training.json"} <= names
    assert sum(p.stat().st_size for p in MODEL_DIR.iterdir()) < 25 * 2**20


def test_loads_offline_with_its_own_tokenizer(model):
    assert model.cfg.n_layers >= 6 and model.cfg.n_layers * model.cfg.n_heads >= 32
    assert model.to_tokens(" Mary", prepend_bos=False).shape == (1, 1)
    assert model.tokenizer.name_or_path.rstrip("/").endswith(MODEL_DIR.name)


def test_task_accuracy_on_held_out_prompts(model):
    acc = accuracies(model, n=200, seed=12345)
    ioi_accuracy, ioi_ld = acc["ioi"]
    assert ioi_accuracy >= 0.95 and ioi_ld >= 3.0, acc
    for task in ("greater_than", "gendered_pronouns", "name_induction"):
        assert acc[task][0] >= 0.90, (task, acc[task])


def test_no_single_head_dominates_the_direct_effect(mechanism):
    assert mechanism.largest_share <= 0.6, mechanism.direct


@pytest.mark.xfail(strict=True, reason="shipped model: direct effects reach 0.1 in one layer only (layer 4: 0.26; "
                   "next best layer 2: 0.08) — see data/app-toy/README.md, 'Known shortfall'")
def test_direct_effects_in_two_layers(mechanism):
    assert len(mechanism.layers_with_direct(0.1)) >= 2, mechanism.direct


def test_noising_matters_in_three_layers(mechanism):
    assert len(mechanism.layers_with_noising(0.05)) >= 3, mechanism.noising_drop


def test_a_head_to_head_edge_into_the_strongest_head(mechanism):
    assert mechanism.strongest_edge[0] >= 0.05, mechanism.edges


@pytest.fixture(scope="module")
def small_ioi(model):
    from app_helpers.tasks import make_task

    return make_task("ioi", model, n=6, seed=7)


@pytest.fixture(scope="module")
def naive_reference(model, small_ioi):
    from app_helpers.identities import HEAD_INPUTS
    from app_helpers.patching import NaivePathPatcher

    naive = NaivePathPatcher.from_task(model, small_ioi)
    receivers = [(model.cfg.n_layers - 1, 0), (model.cfg.n_layers // 2, 1)]
    return {"logits": naive.to_logits(), **{(r, c): naive.to_head(r, c) for r in receivers for c in HEAD_INPUTS}}


@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_engine_equals_naive_reference_on_the_bundled_model(model, small_ioi, naive_reference, chunk_size):
    from app_helpers.patching import PathPatcher

    fast = PathPatcher.from_task(model, small_ioi, chunk_size=chunk_size)
    torch.testing.assert_close(fast.to_logits(), naive_reference["logits"], atol=1e-5, rtol=0)
    for key, want in naive_reference.items():
        if key != "logits":
            torch.testing.assert_close(fast.to_head(*key), want, atol=1e-5, rtol=0)
    assert naive_reference["logits"].abs().max() > 0.1  # a trained model: real effects, not zeros


def test_head_scores_equal_naive_computation_on_the_bundled_model(model, small_ioi):
    from references import naive_head_scores

    from app_helpers import pruning

    got = pruning.score_heads(model, small_ioi, batch_size=4)
    want = naive_head_scores(model, small_ioi.clean_tokens, small_ioi.corrupted_tokens, small_ioi.attention_mask,
                        small_ioi.attention_mask)
    for method in pruning.METHODS:
        torch.testing.assert_close(got[method].scores, want[method].float(), atol=1e-5, rtol=0)
