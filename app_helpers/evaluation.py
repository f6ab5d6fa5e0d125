"""Circuit evaluation: Perf % = 100 · LD(circuit) / LD(full model) (method.md §4).

LD(circuit) runs the clean prompts with every head outside the circuit replaced, at all positions, by
- ``"mean"`` (the paper's choice): its mean output z over the corrupted prompts of the same template
  group, per position;
- ``"resample"`` (corrupt patching): its output z on the prompt's own corrupted counterpart.
Circuit heads keep their clean values and MLPs are always recomputed, never ablated.

Many circuits are evaluated together: each forward pass stacks (circuit, prompt) rows along the batch
with a per-row head mask, and only the prediction position is unembedded. A ``CircuitEvaluator`` computes
the corrupted activations once; whoever evaluates repeatedly holds one (no hidden cache: a changed model
or a new task always gets fresh baselines).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import torch
from torch import Tensor

from . import validate
from .circuits import Circuit, as_circuit
from .costs import Cost, timed
from .hooks import final_residual, hook_name, logits_at, model_device
from .identities import HeadLike
from .metrics import metric_fn, warn_if_untrusted
from .tasks.data import TaskData

ABLATIONS = {
    "mean": "mean z over the corrupted prompts of the same template group, per position",
    "resample": "z from the prompt's own corrupted counterpart (corrupt patching)",
}
CircuitLike = Union[Circuit, Tensor, Iterable[HeadLike]]


@dataclass(frozen=True)
class CircuitResult:
    """One circuit's evaluation. ``ld_*`` are means of the task metric (logit difference by default)."""

    perf: float  # 100 * ld_circuit / ld_full
    ld_circuit: float
    ld_full: float
    ld_corrupted: float
    n_heads: int
    ablation: str
    name: str = ""

    @property
    def corrupted_perf(self) -> float:
        """Perf of the fully corrupted run, the reference point for a circuit that explains nothing."""
        return _perf(self.ld_corrupted, self.ld_full)


class CircuitEvaluator:
    """Evaluates circuits of one model on one task; holds the clean/corrupted baselines and ablation values."""

    def __init__(self, model, task: TaskData, ablation: str = "mean", metric: str | None = None,
                 max_batch: int = 256):
        validate.one_of("ablation", ablation, ABLATIONS)
        max_batch = validate.integer("max_batch (rows per forward pass)", max_batch, at_least=1)
        self.model, self.ablation, self.max_batch = model, ablation, max_batch
        self.cost = Cost()  # every pass this evaluator runs, its baselines included
        self.metric_name = metric or task.metric
        self._metric = metric_fn(self.metric_name)
        self.task = task.to(model_device(model))
        self.n_layers, self.n_heads = model.cfg.n_layers, model.cfg.n_heads
        task.check_model(model)
        t = self.task
        with torch.inference_mode(), timed(self.cost):
            z: list[Tensor | None] = [None] * self.n_layers
            corrupted = self._final_logits(t.corrupted_tokens, t.end_pos, [
                (hook_name(layer, "z"), self._store(z, layer)) for layer in range(self.n_layers)])
            clean = self._final_logits(t.clean_tokens, t.end_pos)
            self.ld_full = self._metric(clean, t.answers).mean().item()
            self.ld_corrupted = self._metric(corrupted, t.answers).mean().item()
            validate.finite(f"the full model's {self.metric_name} on clean and corrupted prompts",
                            torch.tensor([self.ld_full, self.ld_corrupted]),
                            "the model's outputs are not finite: check its weights (load_model refuses NaN) and "
                            "use float32 if a lower precision overflowed")
            #: why this evaluator's Perf % cannot be trusted (also issued as warnings); empty when it can
            self.problems = warn_if_untrusted(self.ld_full, self.ld_corrupted, self.metric_name,
                                              f"Perf on task {task.name!r}")
            if ablation == "mean":
                self._source, self._row = [_group_means(zl, t.groups, t.n_groups) for zl in z], t.groups
            else:
                self._source, self._row = z, torch.arange(len(t), device=t.device)

    def _final_logits(self, tokens: Tensor, end_pos: Tensor, fwd_hooks=()) -> Tensor:
        """Logits [batch, vocab] at ``end_pos`` only (the unembedding is skipped everywhere else)."""
        self.cost.add_pass(self.model.cfg, rows=tokens.shape[0], tokens=tokens.shape[1], layers=self.n_layers,
                           unembed=True)
        return logits_at(self.model, final_residual(self.model, tokens, fwd_hooks), end_pos)

    @staticmethod
    def _store(out: list, layer: int):
        def hook(z: Tensor, hook) -> None:
            out[layer] = z.detach().clone()
        return hook

    def head_masks(self, circuits: Sequence[CircuitLike]) -> Tensor:
        """Bool [C, n_layers, n_heads]: True = the head keeps its clean value."""
        masks = []
        for c in circuits:
            if isinstance(c, Tensor):
                if c.shape != (self.n_layers, self.n_heads):
                    raise ValueError(f"a head mask must be [{self.n_layers}, {self.n_heads}], got {tuple(c.shape)}")
                masks.append(c.bool().cpu())
            else:
                masks.append(as_circuit(c).head_mask(self.n_layers, self.n_heads))
        return torch.stack(masks) if masks else torch.zeros(0, self.n_layers, self.n_heads, dtype=torch.bool)

    def scores(self, masks: Tensor) -> Tensor:
        """Per-prompt metric [C, n] of the clean run with heads outside each mask ablated."""
        t, n = self.task, len(self.task)
        masks = masks.to(t.device)
        with torch.inference_mode(), timed(self.cost):
            out = torch.empty(len(masks) * n, device=t.device)
            for start in range(0, len(out), self.max_batch):
                rows = torch.arange(start, min(start + self.max_batch, len(out)), device=t.device)
                prompts, keep = rows % n, masks[rows // n]
                seq = int(t.lengths[prompts].max())
                hooks = [(hook_name(layer, "z"), self._patch(keep[:, layer], layer, prompts, seq))
                         for layer in range(self.n_layers) if not keep[:, layer].all()]
                final = self._final_logits(t.clean_tokens[prompts, :seq], t.end_pos[prompts], hooks)
                out[rows] = self._metric(final, t.answers.index(prompts)).float()
        return out.view(len(masks), n)

    def _patch(self, keep: Tensor, layer: int, prompts: Tensor, seq: int):
        replacement = self._source[layer][self._row[prompts], :seq]
        keep = keep[:, None, :, None]

        def hook(z: Tensor, hook) -> Tensor:
            return torch.where(keep, z, replacement)
        return hook

    def evaluate(self, circuits: Sequence[CircuitLike]) -> list[CircuitResult]:
        circuits = list(circuits)
        masks = self.head_masks(circuits)
        lds = self.scores(masks).mean(1).tolist() if len(masks) else []
        return [CircuitResult(perf=_perf(ld, self.ld_full), ld_circuit=ld, ld_full=self.ld_full,
                              ld_corrupted=self.ld_corrupted, n_heads=int(m.sum()), ablation=self.ablation,
                              name=c.name if isinstance(c, Circuit) else "")
                for c, m, ld in zip(circuits, masks, lds)]


def _group_means(z: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """[n_groups, seq, heads, d_head] mean of z over each group's prompts, per position."""
    sums = torch.zeros((n_groups, *z.shape[1:]), dtype=z.dtype, device=z.device).index_add_(0, groups, z)
    counts = torch.bincount(groups, minlength=n_groups).clamp(min=1).to(z.dtype)
    return sums / counts[:, None, None, None]


def _perf(ld: float, ld_full: float) -> float:
    return 100.0 * ld / ld_full if ld_full != 0 else float("nan")


def evaluate_circuits(model, task: TaskData, circuits: Sequence[CircuitLike], ablation: str = "mean",
                      metric: str | None = None) -> list[CircuitResult]:
    """Evaluate many circuits in batched forward passes (circuits: ``Circuit``, head lists or bool masks).

    Builds a fresh ``CircuitEvaluator`` (two baseline passes); code that evaluates repeatedly on one task
    holds its own evaluator instead."""
    return CircuitEvaluator(model, task, ablation, metric).evaluate(circuits)


def evaluate_circuit(model, task: TaskData, circuit: CircuitLike, ablation: str = "mean",
                     metric: str | None = None) -> CircuitResult:
    """Perf % of one circuit; see the module docstring for the ablations."""
    return evaluate_circuits(model, task, [circuit], ablation, metric)[0]
