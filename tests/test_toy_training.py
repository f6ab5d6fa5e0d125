"""The bundled model's training command: seeded, lowers the loss, writes a loadable model directory."""
import json
import random

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

    sources = [Source("ioi", 1.0), Source("greater_than", 1.0), Source("ioi_story", 1.0),
               Source("full_name_ioi", 1.0)]
    first = sample_texts(random.Random(3), sources, 20)
    assert first == sample_texts(random.Random(3), sources, 20)
    tok = word_level_tokenizer()
    tokens, labels, answers = encode_batch(tok, first)
    assert (tokens[:, 0] == tok.bos_token_id).all()
    assert ((labels == -100) == (tokens == tok.pad_token_id)).all()
    for row, mask, (_, answer) in zip(tokens, answers, first):
        assert row[mask].tolist() == tok.encode(answer)
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        encode_batch(tok, [("Then, Zebediah went", " home")])
    with pytest.raises(ValueError, match="unknown training source"):
        Source("chess", 1.0)


def test_stories_defeat_the_shortcuts_they_claim_to():
    from app_helpers.toy.corpus import full_name_ioi, ioi_story

    rng = random.Random(0)
    stories = [ioi_story(rng) for _ in range(300)]
    # The answer is in the prompt, once in the story proper; some stories end on a distractor name after
    # the subject, so "the most recent name is the subject" is false for them.
    assert all(answer.strip() in prompt for prompt, answer in stories)
    assert any(prompt.split()[-1] == "to" and "gave the" in prompt and " of " in prompt for prompt, _ in stories)
    # Some preambles mention the answer too, so "the name seen once is the answer" is false for them.
    assert any(prompt.count(answer.strip()) >= 2 for prompt, answer in stories)
    prompt, answer = full_name_ioi(rng)
    a, b = answer.split()
    assert f"{b} {a}" in prompt and sorted(prompt.split()).count(a) == sorted(prompt.split()).count(b)


def test_weighted_loss_is_plain_cross_entropy_at_weight_one_and_stresses_answers():
    from app_helpers.toy.train import weighted_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=gen)
    labels = torch.tensor([[1, 2, 3, 4, -100], [1, 2, 3, 4, 5]])
    answers = torch.zeros(2, 5, dtype=torch.bool)
    answers[0, 3], answers[1, 3:] = True, True  # a one-token and a two-token answer
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1),
                                              ignore_index=-100)
    torch.testing.assert_close(weighted_loss(logits, labels, answers, 1.0), plain)
    per_token = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1),
                                                  ignore_index=-100, reduction="none").view(2, 4)
    answer_losses = per_token[0, 2] + per_token[1, 2] + per_token[1, 3]
    want = (per_token[labels[:, 1:] != -100].sum() + 4 * answer_losses) / (7 + 4 * 3)
    torch.testing.assert_close(weighted_loss(logits, labels, answers, 5.0), want)


def test_head_dropout_only_in_training_and_off_at_zero():
    from app_helpers.toy.train import add_head_dropout, build_model
    from app_helpers.wordlevel import word_level_tokenizer

    torch.manual_seed(0)
    model = build_model(TrainConfig(**TINY), word_level_tokenizer())
    tokens = torch.tensor([[0, 5, 6, 7, 8]])
    model.eval()
    before = model(tokens).logits
    model.train()  # ordinary dropout is 0 in the recipe, so training mode alone changes nothing
    torch.testing.assert_close(model(tokens).logits, before)
    handles = add_head_dropout(model, 0.5)
    assert not torch.allclose(model(tokens).logits, before)
    model.eval()
    torch.testing.assert_close(model(tokens).logits, before)
    for h in handles:
        h.remove()


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    config = TrainConfig(steps=1000, lr=1e-3, warmup=100)
    assert learning_rate(config, 0) == pytest.approx(1e-5)
    assert learning_rate(config, 99) == pytest.approx(1e-3)
    assert learning_rate(config, 999) == pytest.approx(1e-4, rel=1e-2)
