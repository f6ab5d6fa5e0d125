"""Task metrics on logits, and the normalised patching metric.

``logit_diff`` / ``prob_diff`` take ``logits`` in one of two explicit forms:
- full logits ``[n, seq, vocab]`` (a model's output): each prompt's row at ``task.end_pos`` is used;
- final logits ``[n, vocab]``: already taken at each prompt's prediction position;
and return one value per prompt ``[n]``; take ``.mean()`` for the dataset value (the paper's LD).
``task_metric(task)`` is the form the path-patching engine and evaluation use: final logits with any
leading batch dimensions ``[..., n, vocab]`` → ``[..., n]``.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

if TYPE_CHECKING:  # metrics sit below tasks: a task names its metric, the metric only reads its answers
    from .tasks.data import Answers, TaskData


def final_logits(logits: Tensor, task: TaskData) -> Tensor:
    """``[n, vocab]`` logits at each prompt's prediction position (see the module docstring)."""
    n = len(task)
    if logits.ndim == 3 and logits.shape[0] == n:
        return logits[torch.arange(n, device=logits.device), task.end_pos.to(logits.device)]
    if logits.ndim == 2 and logits.shape[0] == n:
        return logits
    raise ValueError(f"logits must be [n={n}, seq, vocab] or [n={n}, vocab], got {tuple(logits.shape)}")


def _set_sum(values: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """Sum of ``values`` [..., n, vocab] over each prompt's id set (``ids``/``mask`` [n, k]) → [..., n]."""
    ids = ids.to(values.device).expand(*values.shape[:-2], *ids.shape)
    return (values.gather(-1, ids) * mask.to(values.device)).sum(-1)


def _set_mean(values: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    return _set_sum(values, ids, mask) / mask.to(values.device).sum(-1)


def answer_logit_diff(final: Tensor, answers: Answers) -> Tensor:
    """Mean logit over the correct answers minus mean logit over the wrong ones: [..., n, vocab] → [..., n]."""
    final = final.float()
    return (_set_mean(final, answers.correct_ids, answers.correct_mask)
            - _set_mean(final, answers.wrong_ids, answers.wrong_mask))


def answer_prob_diff(final: Tensor, answers: Answers) -> Tensor:
    """Total probability of the correct answers minus that of the wrong ones (Hanna et al.'s metric)."""
    probs = final.float().softmax(-1)
    return (_set_sum(probs, answers.correct_ids, answers.correct_mask)
            - _set_sum(probs, answers.wrong_ids, answers.wrong_mask))


#: metric name (``TaskData.metric``) → function of (final logits [..., n, vocab], the n prompts' answers).
METRICS: dict[str, Callable[[Tensor, Answers], Tensor]] = {
    "logit_diff": answer_logit_diff,
    "prob_diff": answer_prob_diff,
}


def logit_diff(logits: Tensor, task: TaskData) -> Tensor:
    """Per-prompt logit difference [n] (single answers: logit(correct) - logit(wrong))."""
    return answer_logit_diff(final_logits(logits, task), task.answers)


def prob_diff(logits: Tensor, task: TaskData) -> Tensor:
    """Per-prompt probability difference [n] (Greater-Than: P(year > YY) - P(year < YY))."""
    return answer_prob_diff(final_logits(logits, task), task.answers)


def task_metric(task: TaskData, name: str | None = None) -> Callable[[Tensor], Tensor]:
    """The task's metric (``task.metric`` unless ``name`` is given) on final logits [..., n, vocab] → [..., n]."""
    fn, answers = metric_fn(name or task.metric), task.answers

    def metric(final: Tensor) -> Tensor:
        if final.ndim < 2 or final.shape[-2] != len(task):
            raise ValueError(f"expected final logits [..., n={len(task)}, vocab], got {tuple(final.shape)}")
        return fn(final, answers)
    return metric


def clean_and_corrupted(model, task: TaskData) -> tuple[float, float]:
    """The task's metric, averaged over prompts, on the clean and on the corrupted prompts: the gap a
    circuit search needs (equal values mean the model does not do the task)."""
    metric = task_metric(task)
    with torch.inference_mode():
        return tuple(float(metric(final_logits(model(tokens), task)).mean())
                     for tokens in (task.clean_tokens, task.corrupted_tokens))


def kl_to_clean(clean_final: Tensor) -> Callable[[Tensor], Tensor]:
    """Path patching's KL metric: final logits [..., n, vocab] → −KL(p_clean ‖ p) per prompt [..., n], with
    ``clean_final`` [n, vocab] the full model's logits on the clean prompts.

    Negative so that, like the logit difference, higher means closer to the clean behaviour: 0 on the clean
    prompts, −KL(clean ‖ corrupted) on the corrupted ones, so the normalised score keeps its meaning (0 = no
    effect, −1 = as far from the clean distribution as full corruption). It needs no answer tokens.
    """
    clean_log_probs = clean_final.float().log_softmax(-1)

    def metric(final: Tensor) -> Tensor:
        log_probs = final.float().log_softmax(-1)
        return -(clean_log_probs.exp() * (clean_log_probs - log_probs)).sum(-1)
    return metric


#: Metrics a path-patching engine can score with: the task metrics and KL to the clean distribution.
PATCHING_METRICS = (*METRICS, "kl")


def metric_fn(name: str) -> Callable[[Tensor, Answers], Tensor]:
    if name == "kl":
        raise ValueError("'kl' is a path-patching metric (PathPatcher.from_task(model, task, metric='kl')); Perf % "
                         "is a ratio to the full model's metric, which KL to the clean distribution makes 0: use "
                         f"one of {list(METRICS)} here")
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {list(METRICS)}")
    return METRICS[name]


#: The smallest clean − corrupted gap of each metric (means over the prompts) at which a normalised patching
#: score or a Perf % is worth reading. Below it both divide by noise: a random-weight GPT-2 on IOI has a gap
#: of about 0.01 in logit difference, and there the empty circuit scores near 100 %.
TRUSTED_GAP = {"logit_diff": 0.1, "prob_diff": 0.01, "kl": 0.01}


class UntrustedMetricWarning(UserWarning):
    """The model's clean and corrupted baselines make Perf % and normalised scores meaningless."""


def baseline_problems(clean: float, corrupted: float, metric: str) -> list[str]:
    """Why numbers measured against these baselines (means of ``metric`` on the clean and corrupted prompts)
    cannot be trusted; empty when they can. Perf % is a ratio to ``clean``, so ``clean <= 0`` (the model
    does not do the task) voids it; the normalised metric divides by the gap."""
    problems = []
    if metric != "kl" and not clean > 0:  # KL's clean value is 0 by construction
        problems.append(f"the full model's mean {metric} is {clean:.4g} (not > 0): it does not do the task, "
                        "so Perf % (a ratio to it) has no meaning; use a model trained on the task")
    gap, least = abs(clean - corrupted), TRUSTED_GAP[metric]
    if not gap >= least:
        problems.append(f"clean ({clean:.4g}) and corrupted ({corrupted:.4g}) prompts differ by {gap:.3g} in "
                        f"{metric}, below the {least:g} at which scores are read (metrics.TRUSTED_GAP): "
                        "normalised scores and Perf % would divide by noise")
    return problems


def warn_if_untrusted(clean: float, corrupted: float, metric: str, where: str) -> list[str]:
    """``baseline_problems``, each issued as an ``UntrustedMetricWarning`` naming ``where``; returns them."""
    problems = baseline_problems(clean, corrupted, metric)
    for problem in problems:
        warnings.warn(f"{where}: {problem}", UntrustedMetricWarning, stacklevel=3)
    return problems


def normalised_metric(patched, clean, corrupted):
    """(patched - clean) / (clean - corrupted): 0 = behaves as clean, -1 = as bad as full corruption.

    Works on floats or tensors (elementwise); raises if the clean and corrupted values are equal, because
    then the task does not separate them on this model and no patching effect can be measured.
    """
    gap = clean - corrupted
    if (torch.as_tensor(gap) == 0).any():
        raise ValueError(f"clean ({clean}) and corrupted ({corrupted}) metric values are equal: the model does "
                         "not tell clean from corrupted prompts, so the normalised metric is undefined")
    return (patched - clean) / gap
