"""Where heads look, by word: attention patterns and the mean attention between two named positions.

A cheap first look before any patching: name movers in IOI attend from END to the IO name. Word names
are the task's ``word_pos`` keys ("IO", "S1", "S2", "END", ...), so the same call works for every task
and every prompt length.
"""
from __future__ import annotations

import torch

from .hooks import hook_name, run_until


def attention_patterns(model, tokens: torch.Tensor) -> torch.Tensor:
    """Every head's attention pattern, one forward pass: [n_layers, n_prompts, n_heads, query, key]."""
    n_layers = model.cfg.n_layers
    store: list[torch.Tensor | None] = [None] * n_layers

    def keep(layer):
        def hook(pattern, hook):  # noqa: ARG001
            store[layer] = pattern.detach().clone()
        return hook
    run_until(model, tokens, [(hook_name(l, "pattern"), keep(l)) for l in range(n_layers)],
              stop_after=hook_name(n_layers - 1, "pattern"))
    return torch.stack(store)


def attention_between(task, patterns: torch.Tensor, query: str = "END", key: str = "IO") -> torch.Tensor:
    """Mean over prompts of each head's attention from word ``query`` to word ``key``: [n_layers, n_heads].

    ``patterns`` come from ``attention_patterns(model, task.clean_tokens)`` (or the corrupted tokens).
    """
    for word in (query, key):
        if word not in task.word_pos:
            raise ValueError(f"task {task.name!r} has no word {word!r}; its words: {', '.join(task.word_pos)}")
    if patterns.shape[1] != len(task):
        raise ValueError(f"patterns cover {patterns.shape[1]} prompts but the task has {len(task)}")
    rows = torch.arange(len(task), device=patterns.device)
    q, k = (task.word_pos[w].to(patterns.device) for w in (query, key))
    return patterns[:, rows, :, q, k].mean(0).cpu()  # split advanced indices go first: [prompt, layer, head]
