"""Attention by word: the patterns are probabilities over earlier positions; the word lookup is exact."""
import pytest
import torch

from app_helpers.attention import attention_between, attention_patterns
from app_helpers.tasks import make_task


@pytest.fixture(scope="module")
def setup(tiny_gpt2):
    task = make_task("ioi", tiny_gpt2, n=6, seed=0)
    return task, attention_patterns(tiny_gpt2, task.clean_tokens)


def test_patterns_are_causal_probabilities(tiny_gpt2, setup):
    task, patterns = setup
    seq = task.clean_tokens.shape[1]
    assert patterns.shape == (tiny_gpt2.cfg.n_layers, len(task), tiny_gpt2.cfg.n_heads, seq, seq)
    torch.testing.assert_close(patterns.sum(-1), torch.ones(patterns.shape[:-1]), atol=1e-5, rtol=0)
    assert patterns.triu(diagonal=1).abs().max() == 0  # no query looks at a later key


def test_attention_between_equals_a_prompt_by_prompt_lookup(setup):
    task, patterns = setup
    got = attention_between(task, patterns, "END", "IO")
    end, io = task.word_pos["END"], task.word_pos["IO"]
    want = torch.stack([patterns[:, i, :, end[i], io[i]] for i in range(len(task))]).mean(0)
    torch.testing.assert_close(got, want)
    assert got.shape == patterns.shape[0:1] + patterns.shape[2:3]


def test_unknown_words_and_mismatched_patterns_are_clear_errors(setup):
    task, patterns = setup
    with pytest.raises(ValueError, match="no word 'X'.*END"):
        attention_between(task, patterns, "END", "X")
    with pytest.raises(ValueError, match="cover 3 prompts"):
        attention_between(task, patterns[:, :3], "END", "IO")
