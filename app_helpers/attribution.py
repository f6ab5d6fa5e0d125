"""Two readings of a model and a circuit beside Perf %: direct logit attribution and Wang et al.'s minimality.

**Direct logit attribution (DLA)** asks how much each head *writes the answer itself*, at the prediction
position (END). The residual entering the final norm is a sum of what every component wrote (embeddings,
each head, each attention bias, each MLP). Freeze the norm's scale at the value it had on the clean run and
the norm becomes a linear map, so the logits split into one share per component: a head's share is its
output ``z[END, h] @ W_O[h]`` through that frozen norm (LayerNorm: centred, divided by the clean scale,
times the norm's weight; RMSNorm, as in Qwen2 and Llama: not centred), then through ``W_U`` and onto the
task's answer direction — mean logit of the correct answers minus mean logit of the wrong ones. Left out,
because they are nobody's head: the attention output bias ``b_O`` (one vector per layer, added once for all
its heads), the norm's bias and the unembedding bias. DLA counts only the straight path to the logits; a
head that works by steering later heads (S-inhibition in IOI) can matter a great deal and score near 0.
The number is always in logit-difference units, also for a task scored by probability difference
(Greater-Than): a probability is not linear in the residual, so it has no per-component split.

**Minimality** (Wang et al. 2022) asks whether every head of a circuit C is needed. For a head v and
a set K ⊆ C \\ {v}, it compares the circuit without K to the circuit without K and v:
``score(v) = 100 · |LD(C \\ K) − LD(C \\ (K ∪ {v}))| / LD(full model)``. Why not K = ∅: circuits have
redundant heads (IOI's name movers and their backups), and removing one twin alone shows nothing because
the others cover for it; removing the twins first (K) exposes what v adds. That is why Wang et al. choose K
per class of heads. The kit's rule is the plainest such choice: K = the other heads of v's role in C
(``Circuit.by_role``); a head without a role (or a circuit without roles) gets K = ∅, so there the score
is just what removing v alone costs, and twins without a shared role can both look unneeded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from torch import Tensor

from . import validate
from .circuits import Circuit, as_circuit
from .evaluation import CircuitEvaluator
from .hooks import final_residual, hook_name, model_device
from .identities import Head, HeadLike, head_name

if TYPE_CHECKING:
    from .tasks.data import Answers, TaskData


# --- Direct logit attribution ------------------------------------------------------------------------------
def answer_direction(model, answers: Answers) -> Tensor:
    """Per prompt, the residual direction the task's logit difference reads ``[n, d_model]`` (float32):
    the mean ``W_U`` column of the correct answers minus the mean column of the wrong ones."""
    w_u = model.W_U.detach().float()  # [d_model, vocab]; the bridge's view of the HF unembedding

    def set_mean(ids: Tensor, mask: Tensor) -> Tensor:
        ids, mask = ids.to(w_u.device), mask.to(w_u.device).float()
        columns = w_u.T[ids]  # [n, k, d_model]
        return (columns * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return set_mean(answers.correct_ids, answers.correct_mask) - set_mean(answers.wrong_ids, answers.wrong_mask)


def final_norm_centres(model) -> bool:
    """Whether the final norm subtracts the mean over d_model (LayerNorm) or not (RMSNorm)."""
    kind = str(getattr(model.cfg, "normalization_type", "LN") or "LN")
    if kind.startswith("RMS"):
        return False
    if kind.startswith("LN"):
        return True
    raise NotImplementedError(f"direct logit attribution knows LayerNorm and RMSNorm final norms, not {kind!r}")


def final_norm_eps(model) -> float:
    """The final norm's epsilon, read from the wrapped Hugging Face module (``eps`` for LayerNorm,
    ``variance_epsilon`` for Qwen2/Llama's RMSNorm), else the bridge config's ``eps``."""
    module = getattr(model.ln_final, "original_component", None)
    for name in ("eps", "variance_epsilon"):
        value = getattr(module, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return float(model.cfg.eps)


def final_norm_scale(model, resid: Tensor) -> Tensor:
    """The scale the final norm divides ``resid`` ``[..., d_model]`` by: ``sqrt(mean(x²) + eps)`` of the
    (for LayerNorm, centred) residual; ``[..., 1]``."""
    x = resid.float()
    if final_norm_centres(model):
        x = x - x.mean(-1, keepdim=True)
    return (x.pow(2).mean(-1, keepdim=True) + final_norm_eps(model)).sqrt()


def readout(model, answers: Answers, resid_end: Tensor) -> Tensor:
    """The vector ``r`` ``[n, d_model]`` with ``x · r`` = the logit difference that ``x`` ``[n, d_model]``
    alone contributes at END, the final norm's scale frozen at the clean residual ``resid_end``'s.

    The frozen norm is linear, so it can be moved onto the answer direction: ``norm(x) · u =
    x · centre(w ⊙ u) / scale`` (centring is symmetric; RMSNorm skips it).
    """
    weight = getattr(model.ln_final, "w", None)
    r = answer_direction(model, answers).to(resid_end.device)
    if weight is not None:
        r = r * weight.detach().float().to(r.device)
    if final_norm_centres(model):
        r = r - r.mean(-1, keepdim=True)
    return r / final_norm_scale(model, resid_end)


def direct_effect(model, answers: Answers, vectors: Tensor, resid_end: Tensor) -> Tensor:
    """What ``vectors`` ``[..., n, d_model]`` (anything written into the END residual of the n prompts)
    contribute to the logit difference, through the final norm frozen at ``resid_end``: ``[..., n]``."""
    r = readout(model, answers, resid_end)
    return (vectors.float().to(r.device) * r).sum(-1)


def head_weight_out(model, layer: int) -> Tensor:
    """``W_O`` of ``layer`` per query head, ``[n_heads, d_head, d_model]`` (float32). Grouped-query models
    share keys and values between heads, never the output projection, so it is per head there too."""
    w_o = model.blocks[layer].attn.W_O.detach()
    if w_o.shape[0] != model.cfg.n_heads:
        raise NotImplementedError(f"layer {layer}'s W_O has {w_o.shape[0]} heads, the model {model.cfg.n_heads}")
    return w_o.float()


def end_outputs(model, task: TaskData, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """From clean forward passes: every head's z at END ``[n_layers, n, n_heads, d_head]`` and the residual
    entering the final norm at END ``[n, d_model]`` (no logits are computed)."""
    batch_size = validate.integer("batch_size (prompts per pass)", batch_size, at_least=1)
    task = task.to(model_device(model))
    task.check_model(model)
    n_layers = model.cfg.n_layers
    zs, resids = [], []
    for start in range(0, len(task), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(task)), device=task.device)
        seq = int(task.lengths[rows].max())
        end = task.end_pos[rows]
        here = torch.arange(len(rows), device=task.device)
        z_end: list = [None] * n_layers

        def keep(layer):
            def hook(z, hook):  # noqa: ARG001
                z_end[layer] = z[here.to(z.device), end.to(z.device)].detach().float().to(task.device)
            return hook
        resid = final_residual(model, task.clean_tokens[rows, :seq],
                               [(hook_name(layer, "z"), keep(layer)) for layer in range(n_layers)])
        zs.append(torch.stack(z_end))
        resids.append(resid[here, end].float())
    return torch.cat(zs, 1), torch.cat(resids)


def direct_logit_attribution(model, task: TaskData, per_prompt: bool = False, batch_size: int = 64) -> Tensor:
    """Each head's direct effect on the logit difference at END, ``[n_layers, n_heads]`` (mean over the
    prompts; ``per_prompt``: ``[n_layers, n_heads, n]``), float32 on the CPU. See the module docstring:
    the head's output ``z[END, h] @ W_O[h]`` through the final norm frozen at the clean run's scale, onto
    ``W_U[correct] − W_U[wrong]``. Positive: the head writes the answer; negative: it writes against it.

    Does not include ``b_O``, the norms' and the unembedding's biases (no head's), nor any indirect path.
    """
    z_end, resid_end = end_outputs(model, task, batch_size)
    r = readout(model, task.answers, resid_end)  # [n, d_model]
    out = []
    for layer in range(model.cfg.n_layers):
        w_o = head_weight_out(model, layer).to(r.device)
        # z · (W_O r) per head: the same number as (z @ W_O) · r without the [n, H, d_model] outputs
        read = torch.einsum("hed,nd->nhe", w_o, r)
        out.append(torch.einsum("nhe,nhe->hn", z_end[layer], read))
    dla = torch.stack(out).cpu()  # [L, H, n]
    return dla if per_prompt else dla.mean(-1)


# --- Minimality ----------------------------------------------------------------------------------------------
#: Below this score (% of the full model's logit difference) a head is flagged "not needed". The kit's
#: choice: Wang et al. show each head's bar and read them by eye, without a formal cut-off.
MINIMALITY_THRESHOLD = 3.0


@dataclass(frozen=True)
class Minimality:
    """Wang et al.'s minimality scores of a circuit's heads.

    ``scores[v]``: ``100 · |LD(C \\ K_v) − LD(C \\ (K_v ∪ {v}))| / |LD(full)|`` in % of the full model's
    logit difference (the absolute value of LD(full) keeps a score a size; a full LD ≤ 0 voids it anyway
    and is listed in ``problems``); ``k[v]``: the set K_v used; ``ld_without_k`` / ``ld_without_kv``: the
    two LDs.
    """

    scores: dict[Head, float]
    k: dict[Head, tuple[Head, ...]]
    ld_without_k: dict[Head, float]
    ld_without_kv: dict[Head, float]
    ld_full: float
    threshold: float = MINIMALITY_THRESHOLD
    problems: list[str] = field(default_factory=list)  # the evaluator's warnings about its baselines

    @property
    def not_needed(self) -> list[Head]:
        """Heads whose score is below ``threshold``: removing them changes the LD by too little to count."""
        return [h for h, s in self.scores.items() if not s >= self.threshold]

    @property
    def passed(self) -> bool:
        return not self.not_needed

    def rows(self) -> list[dict]:
        """One row per head, for a table."""
        return [{"head": head_name(h), "K": " ".join(map(head_name, self.k[h])) or "-",
                 "score %": self.scores[h], "LD(C\\K)": self.ld_without_k[h],
                 "LD(C\\(K+v))": self.ld_without_kv[h], "needed": self.scores[h] >= self.threshold}
                for h in self.scores]


def minimality_sets(circuit: Circuit, heads: Sequence[Head]) -> dict[Head, tuple[Head, ...]]:
    """K per head: the other heads of its role in ``circuit``; empty for a head without a role."""
    by_role = circuit.by_role()
    return {v: tuple(h for h in by_role.get(circuit.roles.get(v), []) if h != v) for v in heads}


def minimality(model, task: TaskData, circuit: Circuit | Iterable[HeadLike], evaluator: CircuitEvaluator | None = None,
               heads: Iterable[HeadLike] | None = None, threshold: float = MINIMALITY_THRESHOLD,
               ablation: str = "mean") -> Minimality:
    """Minimality scores of ``circuit``'s heads (all, or ``heads``), from one batched ``evaluate`` call.

    ``evaluator``: a ``CircuitEvaluator`` of this model and task to reuse (its ablation is then used);
    without one a fresh evaluator is built with ``ablation``. A head outside the circuit is refused: the
    criterion asks whether a head *of the circuit* is needed.
    """
    threshold = validate.number("threshold (minimality score, % of the full logit difference)", threshold,
                                at_least=0)
    circuit = as_circuit(circuit)
    validate.nonempty("the circuit", circuit.heads, "minimality needs a circuit with at least one head")
    validate.heads_within(circuit.heads, model.cfg.n_layers, model.cfg.n_heads, "circuit heads")
    chosen = list(circuit.heads) if heads is None else validate.heads_within(
        heads, model.cfg.n_layers, model.cfg.n_heads, "heads to score")
    strangers = [h for h in chosen if h not in circuit]
    if strangers:
        named = f"circuit {circuit.name!r}" if circuit.name else "the circuit"
        raise validate.InputError(f"heads not in {named}: {', '.join(map(head_name, strangers))}; minimality "
                                  "scores the heads of a circuit (whether each is needed), so pass heads from "
                                  f"it: {', '.join(map(head_name, circuit.heads))}")
    if evaluator is None:
        evaluator = CircuitEvaluator(model, task, ablation=ablation)
    elif evaluator.model is not model or evaluator.task.clean_prompts != task.clean_prompts:
        raise validate.InputError("the evaluator given was built for another model or other prompts; pass "
                                  "CircuitEvaluator(model, task) for this model and task, or none")
    ks = minimality_sets(circuit, chosen)
    everything = set(circuit.heads)
    without_k = {v: frozenset(everything - set(ks[v])) for v in chosen}
    without_kv = {v: without_k[v] - {v} for v in chosen}
    unique = list(dict.fromkeys([*without_k.values(), *without_kv.values()]))  # one row block per distinct set
    results = evaluator.evaluate([sorted(s) for s in unique])
    ld = {s: r.ld_circuit for s, r in zip(unique, results)}
    full = evaluator.ld_full
    scale = 100.0 / abs(full) if full != 0 else float("nan")
    scores = {v: abs(ld[without_k[v]] - ld[without_kv[v]]) * scale for v in chosen}
    return Minimality(scores=scores, k=ks, ld_without_k={v: ld[without_k[v]] for v in chosen},
                      ld_without_kv={v: ld[without_kv[v]] for v in chosen}, ld_full=full, threshold=threshold,
                      problems=list(evaluator.problems))
