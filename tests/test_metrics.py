"""Metrics on hand-made logits: logit difference, probability difference, the normalised metric."""
import math

import pytest
import torch

from app_helpers.metrics import final_logits, logit_diff, normalised_metric, prob_diff, task_metric
from app_helpers.tasks import make_task


@pytest.fixture(scope="module")
def ioi(word_tok):
    return make_task("ioi", word_tok, 6, seed=0)


@pytest.fixture(scope="module")
def gt(word_tok):
    return make_task("greater_than", word_tok, 4, seed=0, metric="prob_diff")


def full_logits(task, vocab, fill_end):
    """[n, seq, vocab] zeros, with ``fill_end(row_logits, i)`` applied at each prompt's END position."""
    logits = torch.zeros(len(task), task.clean_tokens.shape[1], vocab)
    for i in range(len(task)):
        fill_end(logits[i, int(task.end_pos[i])], i)
    return logits


def test_logit_diff_by_hand(ioi, word_tok):
    vocab = len(word_tok)

    def fill(row, i):
        row[int(ioi.correct[i])] = 3.0 + i
        row[int(ioi.wrong[i])] = 1.0

    logits = full_logits(ioi, vocab, fill)
    expected = torch.tensor([2.0 + i for i in range(6)])
    assert torch.allclose(logit_diff(logits, ioi), expected)
    final = final_logits(logits, ioi)
    assert final.shape == (6, vocab) and torch.allclose(logit_diff(final, ioi), expected)
    # garbage at other positions (e.g. padding) does not matter
    logits[:, 0] = 100.0
    assert torch.allclose(logit_diff(logits, ioi), expected)


def test_set_valued_answers_use_the_mean_logit_and_total_probability(gt, word_tok):
    vocab = len(word_tok)
    a = gt.answers
    n_correct, n_wrong = a.correct_mask.sum(1).float(), a.wrong_mask.sum(1).float()

    def fill(row, i):
        row[a.correct_ids[i][a.correct_mask[i]]] = 2.0
        row[a.wrong_ids[i][a.wrong_mask[i]]] = -1.0

    logits = full_logits(gt, vocab, fill)
    assert torch.allclose(logit_diff(logits, gt), torch.full((4,), 3.0))
    # uniform logits: P(correct set) - P(wrong set) = (|C| - |W|) / vocab
    uniform = torch.zeros(4, vocab)
    assert torch.allclose(prob_diff(uniform, gt), (n_correct - n_wrong) / vocab)
    # by hand for prompt 0: each correct year has weight e^2, each wrong one e^-1, the rest e^0
    z = n_correct[0] * math.e ** 2 + n_wrong[0] * math.e ** -1 + (vocab - n_correct[0] - n_wrong[0])
    expected0 = (n_correct[0] * math.e ** 2 - n_wrong[0] * math.e ** -1) / z
    assert prob_diff(logits, gt)[0].item() == pytest.approx(expected0.item(), rel=1e-5)


def test_task_metric_takes_final_logits_with_leading_dims(gt, word_tok):
    final = torch.randn(3, 4, len(word_tok), generator=torch.Generator().manual_seed(0))
    metric = task_metric(gt)  # the task's own metric: prob_diff
    batched = metric(final)
    assert batched.shape == (3, 4)
    assert torch.allclose(batched, torch.stack([prob_diff(f, gt) for f in final]))
    assert torch.allclose(task_metric(gt, "logit_diff")(final[1]), logit_diff(final[1], gt))
    with pytest.raises(ValueError, match=r"final logits \[..., n=4, vocab\]"):
        metric(final[:, :3])


def test_normalised_metric():
    assert normalised_metric(2.0, clean=2.0, corrupted=0.5) == 0.0
    assert normalised_metric(0.5, clean=2.0, corrupted=0.5) == -1.0
    assert normalised_metric(1.25, clean=2.0, corrupted=0.5) == -0.5
    out = normalised_metric(torch.tensor([2.0, 0.5]), torch.tensor(2.0), torch.tensor(0.5))
    assert out.tolist() == [0.0, -1.0]
    with pytest.raises(ValueError, match="equal"):
        normalised_metric(1.0, clean=1.0, corrupted=1.0)


def test_wrong_shapes_are_rejected(ioi, word_tok):
    with pytest.raises(ValueError, match=r"\[n=6, seq, vocab\] or \[n=6, vocab\]"):
        logit_diff(torch.zeros(5, len(word_tok)), ioi)
    with pytest.raises(ValueError, match="unknown metric"):
        task_metric(ioi, "accuracy")


def test_clean_and_corrupted_means_the_task_metric_over_prompts(tiny_gpt2):
    from app_helpers.metrics import clean_and_corrupted

    task = make_task("ioi", tiny_gpt2, n=5, seed=0)
    clean, corrupted = clean_and_corrupted(tiny_gpt2, task)
    with torch.inference_mode():
        by_hand = [logit_diff(tiny_gpt2(t), task).mean().item() for t in (task.clean_tokens, task.corrupted_tokens)]
    assert (clean, corrupted) == pytest.approx(by_hand, abs=1e-6)
    assert clean != corrupted


def test_untrusted_baselines_are_named_with_their_values():
    from app_helpers.metrics import TRUSTED_GAP, baseline_problems

    assert baseline_problems(3.0, -1.0, "logit_diff") == []
    negative = baseline_problems(-0.5, -2.0, "logit_diff")
    assert len(negative) == 1 and "-0.5" in negative[0] and "does not do the task" in negative[0]
    small = baseline_problems(1.0, 1.0 - TRUSTED_GAP["logit_diff"] / 2, "logit_diff")
    assert len(small) == 1 and "0.05" in small[0] and "TRUSTED_GAP" in small[0]
    assert len(baseline_problems(float("nan"), 0.0, "logit_diff")) == 2  # NaN never passes as trusted
    assert baseline_problems(0.2, 0.195, "prob_diff") and not baseline_problems(0.2, 0.1, "prob_diff")


def test_a_random_model_gets_a_warning_and_a_flagged_comparison(tiny_gpt2):
    """A random-weight model does not do IOI: evaluator, engine and comparison say so (constructed case)."""
    from app_helpers.evaluation import CircuitEvaluator
    from app_helpers.metrics import UntrustedMetricWarning
    from app_helpers.patching import PathPatcher
    from app_helpers.pipeline import run_comparison
    from app_helpers.report import comparison_record, comparison_table
    from app_helpers.tasks import make_task

    task = make_task("ioi", tiny_gpt2, 8, seed=0)
    with pytest.warns(UntrustedMetricWarning, match="Perf on task 'ioi'"):
        assert CircuitEvaluator(tiny_gpt2, task).problems
    with pytest.warns(UntrustedMetricWarning, match="path patching on task 'ioi'"):
        assert PathPatcher.from_task(tiny_gpt2, task).problems
    with pytest.warns(UntrustedMetricWarning):
        c = run_comparison(tiny_gpt2, "ioi", n=8, eval_n=8, seed=0, show_progress=False, scales=(1.0,),
                           thresholds=(0.0,))
    assert c.problems and comparison_record(c)["problems"] == c.problems
    assert "WARNING — numbers above are not to be trusted" in comparison_table(c)


def test_kl_to_clean_is_the_literal_divergence_with_its_sign():
    from app_helpers.metrics import kl_to_clean

    gen = torch.Generator().manual_seed(0)
    clean, patched = torch.randn(3, 7, generator=gen), torch.randn(2, 3, 7, generator=gen)  # [..., n, vocab]
    p = clean.softmax(-1)
    want = torch.tensor([[-sum(float(p[i, v] * (p[i, v].log() - patched[b, i].softmax(-1)[v].log())) for v in range(7))
                          for i in range(3)] for b in range(2)])
    torch.testing.assert_close(kl_to_clean(clean)(patched), want, atol=1e-6, rtol=0)
    assert kl_to_clean(clean)(clean).abs().max() < 1e-6  # the clean prompts: 0


def test_kl_is_a_patching_metric_and_the_engines_agree_under_it():
    """On a trained model (KL(clean ‖ corrupted) = 11 nats on IOI; a random model's 1e-4 would amplify float
    noise in the normalised score)."""
    from app_helpers.evaluation import CircuitEvaluator
    from app_helpers.models import load_model
    from app_helpers.patching import NaivePathPatcher, PathPatcher
    from app_helpers.tasks import make_task

    model = load_model("app-toy", verbose=False)
    task = make_task("ioi", model, n=6, seed=1)
    fast, naive = (cls.from_task(model, task, metric="kl") for cls in (PathPatcher, NaivePathPatcher))
    assert abs(fast.ld_clean) < 1e-6 and fast.ld_corrupted < -1 and fast.metric_name == "kl" and not fast.problems
    torch.testing.assert_close(fast.to_logits(), naive.to_logits(), atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.to_head((1, 2), "v"), naive.to_head((1, 2), "v"), atol=1e-5, rtol=0)
    assert fast.setup_cost.forward_passes == 3  # the clean reference pass, then the two caches
    with pytest.raises(ValueError, match="path-patching metric"):
        CircuitEvaluator(model, task, metric="kl")
    with pytest.raises(ValueError, match="'nll'"):
        PathPatcher.from_task(model, task, metric="nll")
