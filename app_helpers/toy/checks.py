"""What the bundled model must show: task accuracy, and an IOI mechanism that spans several layers.

All measurements use the kit's own machinery (tasks, the path-patching engine, the evaluator), so the
model card, the tests and the notebooks report the same numbers in the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..evaluation import evaluate_circuits
from ..metrics import final_logits, task_metric
from ..identities import HEAD_INPUTS
from ..patching import PathPatcher
from ..tasks import make_task

TASKS = ("ioi", "greater_than", "gendered_pronouns", "name_induction")


def task_accuracy(model, task) -> tuple[float, float]:
    """(fraction of prompts whose metric is positive — the correct side wins —, mean metric)."""
    with torch.inference_mode():
        values = task_metric(task)(final_logits(model(task.clean_tokens), task))
    return float((values > 0).float().mean()), float(values.mean())


def accuracies(model, n: int = 200, seed: int = 12345) -> dict[str, tuple[float, float]]:
    """Accuracy and mean metric per task on held-out prompts (a seed the training never uses)."""
    return {name: task_accuracy(model, make_task(name, model, n=n, seed=seed)) for name in TASKS}


@dataclass
class Mechanism:
    """IOI path-patching and noising effects, with the issue's criteria evaluated on them."""

    direct: torch.Tensor  # [L, H] normalised path-patching effect on the logits
    noising_drop: torch.Tensor  # [L, H] fraction of the logit difference lost when one head is noised
    strongest: tuple[int, int]  # head with the largest |direct effect|
    edges: dict[str, torch.Tensor]  # component → [strongest layer, H] effects into that head

    @property
    def largest_share(self) -> float:
        """Largest single head's share of the summed |direct effect|."""
        a = self.direct.abs()
        return float(a.max() / a.sum())

    def layers_with_direct(self, at_least: float = 0.1) -> list[int]:
        return sorted({l for l, _ in (self.direct.abs() >= at_least).nonzero().tolist()})

    def layers_with_noising(self, at_least: float = 0.05) -> list[int]:
        return sorted({l for l, _ in (self.noising_drop >= at_least).nonzero().tolist()})

    @property
    def strongest_edge(self) -> tuple[float, str, tuple[int, int] | None]:
        best = (0.0, "", None)
        for component, m in self.edges.items():
            if m.numel():
                i = int(m.abs().argmax())
                value = float(m.flatten()[i].abs())
                if value > best[0]:
                    best = (value, component, divmod(i, m.shape[1]))
        return best

    def criteria(self) -> dict[str, bool]:
        return {"no head above 60% of direct effect": self.largest_share <= 0.6,
                "direct |m| >= 0.1 in >= 2 layers": len(self.layers_with_direct()) >= 2,
                "noising >= 5% in >= 3 layers": len(self.layers_with_noising()) >= 3,
                "an edge |m| >= 0.05 into the strongest head": self.strongest_edge[0] >= 0.05}


def ioi_mechanism(model, n: int = 200, seed: int = 12345) -> Mechanism:
    """Direct effects (path patching to the logits), single-head noising, and edges into the top head."""
    task = make_task("ioi", model, n=n, seed=seed)
    engine = PathPatcher.from_task(model, task)
    direct = engine.to_logits()
    cfg = model.cfg
    heads = [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
    # Noising one head = every other head clean, that head from its own corrupted prompt.
    everything_but = [[x for x in heads if x != head] for head in heads]
    results = evaluate_circuits(model, task, everything_but, ablation="resample")
    drop = torch.tensor([1 - r.perf / 100 for r in results]).reshape(cfg.n_layers, cfg.n_heads)
    strongest = divmod(int(direct.abs().argmax()), cfg.n_heads)
    edges = {c: engine.to_head(strongest, c) for c in HEAD_INPUTS}
    return Mechanism(direct, drop, strongest, edges)
