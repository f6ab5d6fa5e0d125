"""How big a run is, and how long it will take here: the ``tutorial`` and ``paper`` sizes and a run-time
estimate from the kit's FLOP model and a short throughput probe.

A size fixes the prompts searched and held out, the hyper-parameter grid and (notebook 06) the tasks.
The estimate counts the FLOPs each stage would execute without any of the engine's savings (every sender
evaluation runs from the sender's layer to the end on all prompts; every evaluation is a full forward), so
it is an *upper bound* on the work; seconds = FLOPs / throughput, where the throughput is measured on
this device by timing one batched forward pass (``probe_throughput``). How many receivers a search expands
is not known before it runs: the estimate assumes ``circuit_heads`` receivers spread evenly over the
layers above 0 (the paper's dense circuit size for GPT-2 small, 15 % of the heads otherwise).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from . import validate
from .circuits import PAPER_TABLE2
from .costs import layer_flops_per_token, unembed_flops
from .pruning import DEFAULT_SPARSITIES
from .search import GRID_SCALES, GRID_THRESHOLDS
from .tasks import check_prompt_count, make_task


@dataclass(frozen=True)
class Size:
    """Everything a notebook or ``run`` scales with."""

    name: str
    n: int  # prompts scored and searched
    eval_n: int  # held-out prompts for Perf
    scales: tuple[float, ...]
    thresholds: tuple[float, ...]
    tasks: tuple[str, ...]  # notebook 06's tasks (beyond IOI)

    @property
    def grid_runs(self) -> int:
        return len(self.scales) * len(self.thresholds)


BEYOND_IOI = ("greater_than", "gendered_pronouns", "name_induction", "docstring")
SIZES = {
    "tutorial": Size("tutorial", n=40, eval_n=100, scales=(1.5, 2.5), thresholds=(0.01, 0.001),
                     tasks=("greater_than", "gendered_pronouns")),
    "paper": Size("paper", n=100, eval_n=200, scales=GRID_SCALES, thresholds=GRID_THRESHOLDS, tasks=BEYOND_IOI),
}
#: Assumed throughput of a Colab T4 for the README's table: FP32 peak 8.1 TFLOP/s (NVIDIA T4 data sheet),
#: of which batched inference on short prompts reaches about a quarter (an assumption, stated as such).
T4_FLOPS_PER_SECOND = 8.1e12 * 0.25


def get_size(name: str | Size) -> Size:
    if isinstance(name, Size):
        return name
    if name not in SIZES:
        raise ValueError(f"unknown size {name!r}; choose one of {list(SIZES)}")
    return SIZES[name]


def with_overrides(size: str | Size, n: int | None = None, eval_n: int | None = None, tasks=None) -> Size:
    """``size`` with its prompt counts (and tasks) replaced where given: a notebook's N, EVAL_N, TASKS or
    ``run --n``."""
    size = get_size(size)
    n = size.n if n is None else check_prompt_count("n (the number of search prompts)", n)
    eval_n = size.eval_n if eval_n is None else check_prompt_count("eval_n (the number of held-out prompts)", eval_n)
    return replace(size, n=n, eval_n=eval_n,
                   tasks=size.tasks if tasks is None else tuple(tasks))


@dataclass(frozen=True)
class Shape:
    """The few numbers of a model the FLOP model needs (a TransformerLens ``cfg`` has them all)."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_key_value_heads: int | None = None  # grouped-query attention (Qwen2.5: 2 for 14 query heads)
    gated_mlp: bool = False  # a third MLP matrix (Qwen2, Llama)

    @classmethod
    def of(cls, cfg) -> "Shape":
        return cls(cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_mlp, cfg.d_vocab,
                   getattr(cfg, "n_key_value_heads", None), bool(getattr(cfg, "gated_mlp", False)))


GPT2_SMALL = Shape(12, 12, 768, 64, 3072, 50257)


def forward_flops(shape: Shape, prompts: int, seq: int, layers: int | None = None) -> int:
    """One forward pass of ``prompts`` prompts of ``seq`` tokens through ``layers`` blocks (default: all),
    logits at the prediction position only."""
    layers = shape.n_layers if layers is None else layers
    return prompts * (seq * layers * layer_flops_per_token(shape, seq) + unembed_flops(shape))


def search_flops(shape: Shape, prompts: int, seq: int, circuit_heads: int, candidates: int | None = None) -> int:
    """Upper bound of one breadth-first search: every candidate sender to the logits, then ``circuit_heads``
    receivers spread evenly over layers 1.., each with its q, k and v from every candidate below it; one
    sender evaluation = a pass from the sender's layer to the end."""
    L, H = shape.n_layers, shape.n_heads
    share = 1.0 if candidates is None else candidates / (L * H)
    per_sender = [forward_flops(shape, prompts, seq, L - layer) for layer in range(L)]
    logits = share * H * sum(per_sender)
    receivers = [1 + (i * (L - 1)) // max(1, circuit_heads) for i in range(circuit_heads)]
    heads = sum(3 * share * H * sum(per_sender[:r]) for r in receivers)
    return int(logits + heads)


def pruning_flops(shape: Shape, prompts: int, seq: int) -> int:
    """FLAP scores (a clean and a corrupted pass) and the sweeps: each sparsity for both methods and the
    merged set, one evaluation each (the kit evaluates each distinct kept set once, so this is a bound)."""
    return forward_flops(shape, prompts, seq) * (2 + 3 * len(DEFAULT_SPARSITIES))


@dataclass(frozen=True)
class CostCurve:
    """One search's FLOPs (the model above) for every size of the pruned set: ``app[i]`` for
    ``heads[i]`` heads, beside dense PP and the pruning that APP pays first."""

    heads: tuple[int, ...]
    dense: int
    app: tuple[int, ...]
    pruning: int

    @property
    def break_even(self) -> int | None:
        """The largest pruned set for which APP + pruning costs no more than dense PP (None: never)."""
        paying = [h for h, a in zip(self.heads, self.app) if a + self.pruning <= self.dense]
        return paying[-1] if paying else None


def cost_curve(shape: Shape, prompts: int, seq: int, circuit_heads: int) -> CostCurve:
    """One search's modelled FLOPs for every pruned-set size, beside dense PP and pruning (``CostCurve``)."""
    for name, value in (("prompts", prompts), ("seq (tokens per prompt)", seq), ("circuit_heads", circuit_heads)):
        validate.integer(name, value, at_least=1)
    heads = tuple(range(1, shape.n_layers * shape.n_heads + 1))
    return CostCurve(heads, search_flops(shape, prompts, seq, circuit_heads),
                     tuple(search_flops(shape, prompts, seq, circuit_heads, h) for h in heads),
                     pruning_flops(shape, prompts, seq))


def comparison_flops(shape: Shape, size: Size, seq: int, circuit_heads: int, merged: int) -> dict[str, int]:
    """``run_comparison`` by stage: pruning, the dense grid, the APP grid, held-out evaluation. A grid costs
    one search: scores are memoised, and the loosest setting expands every receiver the others do."""
    return {"pruning": pruning_flops(shape, size.n, seq),
            "dense grid": search_flops(shape, size.n, seq, circuit_heads),
            "APP grid": search_flops(shape, size.n, seq, circuit_heads, merged),
            "evaluation": forward_flops(shape, size.eval_n, seq) * (2 * size.grid_runs + 4)}


def assumed_circuit(shape: Shape, task: str, is_gpt2_small: bool) -> tuple[int, int]:
    """(dense circuit heads, merged search space) assumed before a run: the paper's for GPT-2 small, else
    15 % and 40 % of the heads."""
    total = shape.n_layers * shape.n_heads
    row = PAPER_TABLE2.get(task, {})
    if is_gpt2_small and "PP" in row:
        return row["PP"][1], row.get("Merged", (None, int(0.4 * total)))[1]
    return max(1, round(0.15 * total)), max(1, round(0.4 * total))


#: The notebooks, by their two-digit prefix.
NOTEBOOKS = ("00", "01", "02", "03", "04", "05", "06", "07")


def notebook_flops(notebook: str, shape: Shape, size: Size, seq: int, is_gpt2_small: bool) -> dict[str, int]:
    """The heavy stages of each notebook (by its two-digit prefix) at ``size``."""
    def comparison(task):
        return comparison_flops(shape, size, seq, *assumed_circuit(shape, task, is_gpt2_small))

    one = forward_flops(shape, size.n, seq)
    if notebook == "00":
        c = comparison("ioi")
        return {**c, "one APP search": c["APP grid"]}
    if notebook == "01":
        return {"metrics on 5 tasks": 10 * one}
    if notebook == "02":
        return {"head scores": 4 * one}
    if notebook == "03":
        pairs = len(DEFAULT_SPARSITIES[::3]) ** 2  # the search-space explorer's Perf grid (an upper bound)
        return {"sweeps": pruning_flops(shape, size.n, seq), "merged Perf grid": pairs * one}
    if notebook == "04":
        heads, _ = assumed_circuit(shape, "ioi", is_gpt2_small)
        return {"naive to-logits check": shape.n_layers * shape.n_heads * one,
                "search and grid": search_flops(shape, size.n, seq, heads)}
    if notebook == "05":
        return comparison("ioi")
    if notebook == "06":
        return {f"{task} comparison": sum(comparison(task).values()) for task in size.tasks}
    if notebook == "07":  # the comparison, then each baseline twice: scores, then its grid's evaluation
        c = comparison("ioi")
        return {**c, "baselines": 6 * (shape.n_layers * shape.n_heads * one + c["evaluation"])}
    raise ValueError(f"unknown notebook {notebook!r}; notebooks are {', '.join(NOTEBOOKS)}")


def probe_throughput(model, prompts: int = 32, seq: int = 24, repeats: int = 3) -> float:
    """FLOP/s of this model on its device: the best of ``repeats`` timed forward passes (after a warm-up)."""
    device = next(model.parameters()).device
    tokens = torch.randint(0, model.cfg.d_vocab, (prompts, seq), device=device)
    best = float("inf")
    with torch.inference_mode():
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(tokens)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                best = min(best, time.perf_counter() - start)
    shape = Shape.of(model.cfg)
    # the probe unembeds every position, the FLOP model one per prompt: count what the probe really ran
    flops = forward_flops(shape, prompts, seq) + prompts * (seq - 1) * unembed_flops(shape)
    return flops / best


def describe_estimate(stages: dict[str, int], flops_per_second: float) -> str:
    total = sum(stages.values())
    parts = ", ".join(f"{k} {v / flops_per_second:.0f} s" for k, v in stages.items())
    return (f"estimated at most {_duration(total / flops_per_second)} here ({total / 1e12:.2f} TFLOPs at "
            f"{flops_per_second / 1e9:.0f} GFLOP/s measured; {parts})")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "1 s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def estimate_line(model, notebook: str, size: str | Size, is_gpt2_small: bool, seq: int | None = None,
                  flops_per_second: float | None = None) -> str:
    """The line a notebook prints before its long cells (``seq``: default, the IOI prompts' length)."""
    size = get_size(size)
    rate = flops_per_second or probe_throughput(model)
    return f"[{size.name} size] " + describe_estimate(_notebook_stages(model, notebook, size, is_gpt2_small, seq), rate)


def _notebook_stages(model, notebook: str, size: Size, is_gpt2_small: bool, seq: int | None = None) -> dict[str, int]:
    if seq is None:
        seq = make_task("ioi", model, n=size.n).clean_tokens.shape[1]
    return notebook_flops(notebook, Shape.of(model.cfg), size, seq, is_gpt2_small)


#: ``SIZE = "auto"``: the paper's size where a notebook's estimate at it (an upper bound) is at most this many
#: seconds on this device, the tutorial's otherwise. The bundled models on a laptop CPU and most notebooks of
#: GPT-2 small on a GPU get the paper's numbers; nobody waits much longer than ten minutes for a cell.
AUTO_BUDGET_SECONDS = 600
AUTO = "auto"


def notebook_size(name: str | Size, model, notebook: str, is_gpt2_small: bool, n: int | None = None,
                  eval_n: int | None = None, tasks=None, flops_per_second: float | None = None) -> tuple[Size, str]:
    """A notebook's size with its ``N`` / ``EVAL_N`` / ``TASKS`` overrides, and what to print before its long
    cells: for ``"auto"``, which size it chose and why (``AUTO_BUDGET_SECONDS``), then the estimate."""
    if name != AUTO and not isinstance(name, Size) and name not in SIZES:
        raise ValueError(f"unknown SIZE {name!r}; choose {AUTO!r} or one of {list(SIZES)}")
    rate = flops_per_second or probe_throughput(model)
    if name != AUTO:
        size = with_overrides(name, n, eval_n, tasks)
        return size, estimate_line(model, notebook, size, is_gpt2_small, flops_per_second=rate)
    paper = with_overrides("paper", n, eval_n, tasks)
    seconds = sum(_notebook_stages(model, notebook, paper, is_gpt2_small).values()) / rate
    fits = seconds <= AUTO_BUDGET_SECONDS
    size = paper if fits else with_overrides("tutorial", n, eval_n, tasks)
    why = (f"SIZE = 'auto' chose the {size.name} size: the paper's is estimated at most {_duration(seconds)} here, "
           f"{'within' if fits else 'over'} the {AUTO_BUDGET_SECONDS // 60} minutes 'auto' allows")
    return size, why + "\n" + estimate_line(model, notebook, size, is_gpt2_small, flops_per_second=rate)


def t4_table(seq: int = 20) -> str:
    """The README's table: each notebook at both sizes on GPT-2 small, at ``T4_FLOPS_PER_SECOND``."""
    lines = ["| notebook | tutorial | paper |", "|---|---|---|"]
    for nb in NOTEBOOKS:
        cells = [_duration(sum(notebook_flops(nb, GPT2_SMALL, SIZES[s], seq, True).values()) / T4_FLOPS_PER_SECOND)
                 for s in ("tutorial", "paper")]
        lines.append(f"| {nb} | ≤ {cells[0]} | ≤ {cells[1]} |")
    return "\n".join(lines)
