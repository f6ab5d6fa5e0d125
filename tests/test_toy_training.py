"""The bundled model's training command: seeded, lowers the loss, writes a loadable model directory."""
import json

import pytest
import torch

from app_helpers.models import load_model
from app_helpers.toy.corpus import Source, encode_batch, sample_texts
from app_helpers.toy.train import TrainConfig, learning_rate, train

TINY = dict(n_layers=1, n_heads=2, d_model=32, n_ctx=48, steps=60, batch_size=16, lr=3e-3, warmup=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    return out, train(TrainConfig(**TINY), out, progress=False)


def test_a_few_steps_lower_the_loss(trained):
    _, record = trained
    assert record["loss_window"] == 12
    assert record["loss_end"] < record["loss_start"] - 0.5, record["loss_every_50"]


def test_the_output_loads_offline_as_a_patchable_model(trained):
    out, _ = trained
    model = load_model(str(out), verbose=False)
    assert (model.cfg.n_layers, model.cfg.n_heads) == (1, 2)
    assert model.to_tokens(" Mary", prepend_bos=False).shape == (1, 1)
    assert json.loads((out / "training.json").read_text())["config"]["steps"] == 60


def test_same_seed_same_weights(tmp_path):
    config = TrainConfig(**{**TINY, "steps": 3})
    train(config, tmp_path / "a", progress=False)
    train(config, tmp_path / "b", progress=False)
    a = load_model(str(tmp_path / "a"), verbose=False)
    b = load_model(str(tmp_path / "b"), verbose=False)
    tokens = torch.tensor([[0, 5, 6, 7]])
    assert torch.equal(a(tokens), b(tokens))


def test_corpus_is_seeded_and_in_vocabulary():
    from app_helpers.wordlevel import word_level_tokenizer

    sources = [Source("ioi", 1.0), Source("greater_than", 1.0)]
    import random

    first = sample_texts(random.Random(3), sources, 20)
    assert first == sample_texts(random.Random(3), sources, 20)
    tokens, labels = encode_batch(word_level_tokenizer(), first)
    tok = word_level_tokenizer()
    assert (tokens[:, 0] == tok.bos_token_id).all()
    assert ((labels == -100) == (tokens == tok.pad_token_id)).all()
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        encode_batch(tok, ["Then, Zebediah went home"])


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    config = TrainConfig(steps=1000, lr=1e-3, warmup=100)
    assert learning_rate(config, 0) == pytest.approx(1e-5)
    assert learning_rate(config, 99) == pytest.approx(1e-3)
    assert learning_rate(config, 999) == pytest.approx(1e-4, rel=1e-2)
