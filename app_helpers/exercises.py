"""Coding exercises for the notebooks: write one piece of the method yourself, then check it.

Each exercise ``NAME`` has a checker ``check_NAME(fn)`` that runs your ``fn`` on constructed inputs with
known answers and compares it with the kit's own implementation. When every case agrees it prints one
line; otherwise it raises an ``AssertionError`` that names the input, shows what was expected and what
your function gave, and gives a hint (and the mistake, when it is a common one). ``solution_NAME`` is a
reference answer with the same signature: a notebook's ``SOLUTIONS = True`` uses it instead of yours.

Exercises: ``flap_channel_score`` and ``contrastive_channel_score`` (pruning's head scores, per channel),
``cliff_sparsity`` (where pruning stops), ``patch_head_input`` (the hook that path-patches a receiver's
q, k or v) and ``select_heads`` (which heads the search keeps).
"""
from __future__ import annotations

import functools
import math
import traceback
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Iterable, Iterator, Sequence

import torch

from .gpt2_offline import random_gpt2
from .hooks import hook_name
from .identities import Head
from .patching import NaivePathPatcher
from .patching.base import input_head
from .pruning import ChannelStats, contrastive_channel_scores, find_cliff, flap_channel_scores
from .search import K, select_heads

# --------------------------------------------------------------------------------------------------------
# The shared machinery: a case, running the student's function on it, comparing, reporting.


@dataclass
class Case:
    """One input to try: ``call(fn)`` runs the student's ``fn`` on it, ``want`` is the kit's answer."""

    name: str  # the input, in words, as the failure message shows it
    call: Callable
    want: object
    hint: str = ""  # what this case is about: what to look at when it fails
    mistakes: Sequence[tuple[str, object]] = ()  # (a common mistake, the answer it gives here)
    explain: Callable[[object], str | None] | None = None  # got → what it did, in the exercise's terms


class Wrong(Exception):
    """Raised by a case's ``call`` when something other than the answer is wrong (e.g. an input changed)."""


def _check(exercise: str, fn, cases: Iterable[Case], problem: Callable[[object, object], str | None],
           show: Callable[[object], str]) -> None:
    """Run ``fn`` on every case; ``problem(got, want)`` is None when they agree, else what differs.

    Stops at the first wrong case with an ``AssertionError`` written for the student; prints one line
    when all agree. ``cases`` may be a generator, so expensive cases are only built if earlier ones pass.
    """
    if not callable(fn):
        raise AssertionError(f"{exercise}: pass your function itself, e.g. check_{exercise}(my_{exercise}), "
                             f"not {_short(repr(fn))}")
    n = 0
    for n, case in enumerate(cases, 1):
        head = f"{exercise} is wrong on case {n} — {case.name}"
        try:
            got = case.call(fn)
        except Wrong as err:
            raise AssertionError(f"{head}:\n  problem:  {err}" + _hint(case.hint)) from None
        except Exception as err:  # the student's own error, said in one message instead of a torch trace
            raise AssertionError(f"{head}: your function raised {type(err).__name__}: {_short(str(err))}"
                                 f"{_where(err, fn)}" + _hint(case.hint)) from None
        wrong = problem(got, case.want)
        if wrong:
            lines = [f"{head}:", f"  expected: {show(case.want)}", f"  got:      {show(got)}",
                     f"  problem:  {wrong}"]
            lines += [f"  likely:   {what}" for what, value in case.mistakes if problem(got, value) is None]
            detail = _explained(case, got)
            lines += [f"  detail:   {detail}"] if detail else []
            raise AssertionError("\n".join(lines) + _hint(case.hint))
    print(f"✓ {exercise}: your function agrees with the kit on all {n} cases.")


def _explained(case: Case, got) -> str | None:
    """The case's own account of a wrong answer; None if it has none or ``got`` is too far off to explain."""
    try:
        return case.explain(got) if case.explain else None
    except Exception:  # noqa: BLE001 - a malformed answer is reported by the comparison already
        return None


def _hint(text: str) -> str:
    return f"\n  hint:     {text}" if text else ""


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _where(err: BaseException, fn) -> str:
    """`` (line N: code)`` of the deepest frame in the file ``fn`` was written in (a notebook cell)."""
    code = getattr(getattr(fn, "func", fn), "__code__", None)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if code and f.filename == code.co_filename]
    return f" (in {frames[-1].name}, line {frames[-1].lineno}: {frames[-1].line})" if frames else ""


def _tensor_problem(got, want: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-8) -> str | None:
    """None when ``got`` equals ``want`` (same shape, values within tolerance), else what differs."""
    if got is None:
        return "your function returned None — did you forget `return`?"
    try:
        got = torch.as_tensor(got)
    except (TypeError, ValueError, RuntimeError):
        return f"expected a tensor, got a {type(got).__name__}"
    if tuple(got.shape) != tuple(want.shape):
        return f"shape {list(got.shape)} instead of {list(want.shape)}"
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    bad = ~torch.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    if not bool(bad.any()):
        return None
    worst = tuple(int(i) for i in torch.nonzero(bad)[torch.nan_to_num((g - w).abs(), nan=math.inf)[bad].argmax()])
    return (f"{int(bad.sum())} of {bad.numel()} values differ; e.g. at index {list(worst)}: expected "
            f"{w[worst].item():.6g}, got {g[worst].item():.6g}")


def _show_tensor(t) -> str:
    try:
        t = torch.as_tensor(t)
    except (TypeError, ValueError, RuntimeError):
        return _short(repr(t), 120)
    values = ", ".join(f"{v:.4g}" for v in t.detach().double().flatten()[:6].tolist())
    return f"tensor of shape {list(t.shape)} [{values}{', …' if t.numel() > 6 else ''}]"


def _number_problem(got, want: float, tol: float = 1e-9) -> str | None:
    if got is None:
        return "your function returned None — did you forget `return`?"
    try:
        value = float(got)
    except (TypeError, ValueError, RuntimeError):
        return f"expected a number, got a {type(got).__name__}"
    if isinstance(got, bool) or not math.isclose(value, want, rel_tol=tol, abs_tol=tol):
        return f"expected {want:.6g}, got {value:.6g}"
    return None


def _show_number(x) -> str:
    return f"{x:.6g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else _short(repr(x), 120)


# --------------------------------------------------------------------------------------------------------
# Exercise 1: FLAP and Contrastive-FLAP channel scores (pruning.flap_channel_scores, contrastive_...).


def solution_flap_channel_score(clean: ChannelStats, w2: torch.Tensor) -> torch.Tensor:
    """Vanilla FLAP per channel: ``(variance · ||W_O row||²)²``.

    ``clean.variance`` [n_layers, C]: how much channel j of ``hook_z`` fluctuates over clean tokens;
    ``w2`` [n_layers, C]: the squared norm of the W_O row it writes with. Returns [n_layers, C].
    """
    fluctuation = clean.variance * w2  # FLAP's WIFV: variance weighted by how loudly the channel writes
    return fluctuation**2


def solution_contrastive_channel_score(clean: ChannelStats, corrupted: ChannelStats,
                                       mean_abs_w: torch.Tensor) -> torch.Tensor:
    """Contrastive-FLAP per channel: ``|WIFN(clean)² − WIFN(corrupted)²|``, WIFN = mean|W_O row| · √energy.

    ``*.energy`` [n_layers, C]: per-prompt sum of the channel's squares; ``mean_abs_w`` [n_layers, C]: the
    mean |weight| of its W_O row. High when corrupting the task changes how much the channel writes.
    """
    wifn_clean = mean_abs_w * clean.energy.sqrt()
    wifn_corrupted = mean_abs_w * corrupted.energy.sqrt()
    return (wifn_clean**2 - wifn_corrupted**2).abs()


def _random_stats(gen: torch.Generator, n_layers: int, channels: int, n_prompts: int = 3,
                  tokens: int = 5, spread: float = 1.0, constant: int | None = None) -> ChannelStats:
    """ChannelStats of random z values [n_prompts · tokens, n_layers, C] (channel ``constant`` fixed)."""
    x = 0.3 + spread * torch.randn(n_prompts * tokens, n_layers, channels, generator=gen, dtype=torch.float64)
    if constant is not None:
        x[:, :, constant] = 0.7
    return ChannelStats(n_prompts * tokens, n_prompts, x.sum(0), (x * x).sum(0))


def _weights(gen: torch.Generator, stats: ChannelStats) -> torch.Tensor:
    return 0.2 + torch.rand(stats.sum.shape, generator=gen, dtype=torch.float64)


#: (name, n_layers, channels, n_prompts, tokens per prompt, constant channel) of each channel-score case
_STATS_CASES = [("2 layers × 8 channels", 2, 8, 3, 5, None), ("3 layers × 12 channels", 3, 12, 4, 6, None),
                ("one layer, 4 channels, one prompt of 7 tokens", 1, 4, 1, 7, None),
                ("2 layers × 6 channels, channel 2 constant (variance 0)", 2, 6, 3, 4, 2)]


def _flap_cases() -> Iterator[Case]:
    gen = torch.Generator().manual_seed(1)
    for name, n_layers, channels, n_prompts, tokens, constant in _STATS_CASES:
        stats = _random_stats(gen, n_layers, channels, n_prompts, tokens, constant=constant)
        w2 = _weights(gen, stats)
        var, n = stats.variance, stats.n_tokens
        yield Case(f"{name} (clean.variance and w2 are [{n_layers}, {channels}])",
                   functools.partial(_call_copied, clean=stats, w2=w2), flap_channel_scores(stats, w2),
                   "FLAP scores each channel (clean.variance · w2)², elementwise; the result has the shape of w2.",
                   [("you forgot the square: the score is (variance · w2)², not variance · w2", var * w2),
                    ("you squared only the variance: square the whole product (variance · w2)²", var**2 * w2),
                    ("you used clean.energy; FLAP uses clean.variance", (stats.energy * w2) ** 2),
                    ("your variance divides by n_tokens; the kit's (unbiased) one by n_tokens − 1",
                     (var * (n - 1) / n * w2) ** 2)])


def _contrastive_cases() -> Iterator[Case]:
    gen = torch.Generator().manual_seed(2)
    for name, n_layers, channels, n_prompts, tokens, constant in _STATS_CASES:
        clean = _random_stats(gen, n_layers, channels, n_prompts, tokens, constant=constant)
        corrupted = _random_stats(gen, n_layers, channels, n_prompts, tokens, spread=1.3)
        m = _weights(gen, clean)
        ec, er = clean.energy, corrupted.energy
        yield Case(f"{name} (energies and mean_abs_w are [{n_layers}, {channels}])",
                   functools.partial(_call_copied, clean=clean, corrupted=corrupted, mean_abs_w=m),
                   contrastive_channel_scores(clean, corrupted, m),
                   "score = |WIFN(clean)² − WIFN(corrupted)²| with WIFN = mean_abs_w · √energy, elementwise.",
                   [("you forgot the absolute value: a channel that writes less when corrupted matters too",
                     m**2 * (ec - er)),
                    ("you did not square WIFN: take |WIFN(clean)² − WIFN(corrupted)²|",
                     (m * (ec.sqrt() - er.sqrt())).abs()),
                    ("you forgot to square mean_abs_w (it is inside WIFN, which is squared)", (m * (ec - er)).abs()),
                    ("you used the variance; Contrastive-FLAP uses the energy",
                     (m**2 * (clean.variance - corrupted.variance)).abs())])


def _call_copied(fn, **inputs):
    """``fn(**inputs)`` on copies, failing if it changed them (the kit reuses its statistics)."""
    copies = {k: _copy(v) for k, v in inputs.items()}
    got = fn(*copies.values())
    for key, value in inputs.items():
        if _tensor_problem(_as_compared(copies[key]), _as_compared(value), rtol=0, atol=0):
            raise Wrong(f"your function changed its input `{key}` in place; compute a new tensor instead")
    return got


def _copy(x):
    if isinstance(x, ChannelStats):
        return ChannelStats(x.n_tokens, x.n_prompts, x.sum.clone(), x.sumsq.clone())
    return x.clone() if isinstance(x, torch.Tensor) else x


def _as_compared(x) -> torch.Tensor:
    return torch.stack([x.sum, x.sumsq]) if isinstance(x, ChannelStats) else x


def check_flap_channel_score(fn) -> None:
    """Check ``fn(clean: ChannelStats, w2) -> [n_layers, C]``, the vanilla FLAP score of every channel,
    against ``pruning.flap_channel_scores`` on random statistics (to 1e-5, relative)."""
    _check("flap_channel_score", fn, _flap_cases(), _tensor_problem, _show_tensor)


def check_contrastive_channel_score(fn) -> None:
    """Check ``fn(clean, corrupted: ChannelStats, mean_abs_w) -> [n_layers, C]``, the Contrastive-FLAP
    score of every channel, against ``pruning.contrastive_channel_scores`` (to 1e-5, relative)."""
    _check("contrastive_channel_score", fn, _contrastive_cases(), _tensor_problem, _show_tensor)


# --------------------------------------------------------------------------------------------------------
# Exercise 2: the cliff rule (pruning.find_cliff, rule "first").


def solution_cliff_sparsity(sparsities: Sequence[float], perfs: Sequence[float], fallback: float = 0.75) -> float:
    """The last sparsity before Perf falls off a cliff, or ``fallback`` when the curve has none.

    With n points: window ``w = max(1, round((n − 1) / 10))``, threshold ``d = (max Perf − min Perf) / 10``.
    Point i (every point but the last) is a cliff when ``perf[i] − min(perf[i+1 : i+1+w]) ≥ d`` (near the
    end the window holds the points that remain). Returns the sparsity of the first cliff; a flat curve
    (d = 0) or one without a cliff gives ``fallback``.
    """
    n = len(perfs)
    window = max(1, round((n - 1) / 10))
    threshold = (max(perfs) - min(perfs)) / 10
    if threshold > 0:
        for i in range(n - 1):
            if perfs[i] - min(perfs[i + 1:i + 1 + window]) >= threshold:
                return float(sparsities[i])
    return fallback


def _grid(start: float, n: int, step: float = 0.01) -> list[float]:
    return [round(start + step * i, 2) for i in range(n)]


def _cliff_cases() -> Iterator[Case]:
    gen = torch.Generator().manual_seed(3)
    flat_drop = [100.0] * 10 + [0.0] * 16
    constructed = [
        ("a clear cliff: Perf [100, 98, 95, 40, 10] at sparsities [0.5 … 0.9]", [0.5, 0.6, 0.7, 0.8, 0.9],
         [100, 98, 95, 40, 10], 0.75, "return the sparsity *before* the drop (the last good point)."),
        ("a flat curve (every Perf 60), fallback 0.8", [0.5, 0.6, 0.7, 0.8, 0.9], [60] * 5, 0.8,
         "a flat curve has threshold 0 and no cliff: return the `fallback` you were given."),
        ("a rising curve (Perf never drops), fallback 0.7", [0.5, 0.6, 0.7, 0.8, 0.9], [10, 20, 30, 40, 50], 0.7,
         "no point drops by the threshold: return the `fallback` you were given."),
        ("the first cliff is not the biggest: Perf [100, 99, 80, 79, 78, 77, 10, 9, 8, 7, 6]", _grid(0.6, 11),
         [100, 99, 80, 79, 78, 77, 10, 9, 8, 7, 6], 0.75, "the rule takes the *first* point that drops enough."),
        ("a drop exactly equal to the threshold: Perf [100, 90, 89, 70, 69, 0] (threshold 10)", _grid(0.6, 6),
         [100, 90, 89, 70, 69, 0], 0.75, "a drop *equal* to the threshold counts: use ≥, not >."),
        ("31 points, window 3, a dip three points ahead that recovers", _grid(0.6, 31),
         [100] * 6 + [40] + [100] * 14 + [0] * 10, 0.75,
         "compare perf[i] with the minimum of the next w points, here w = round(30 / 10) = 3."),
        ("21 points, window 2, the only cliff at the second-to-last point (a spike)", _grid(0.6, 21),
         [0] * 19 + [100, 0], 0.75,
         "near the end the window holds the points that remain: point i = n − 2 compares with the last alone."),
        ("26 points, window round(2.5) = 2", _grid(0.6, 26), flat_drop, 0.75,
         "Python's round() rounds halves to even: round(2.5) == 2, so w = 2 here (not 3)."),
    ]
    sweep = _grid(0.6, 39)  # the kit's default sweep, 0.60 … 0.98: window 4
    for i in range(3):
        middle = 0.7 + 0.08 * i
        noise = torch.randn(39, generator=gen, dtype=torch.float64) * 3
        perfs = [100 / (1 + math.exp((s - middle) * 60)) + float(e) for s, e in zip(sweep, noise)]
        constructed.append((f"the default sweep 0.60 … 0.98 (39 points, window 4), noisy curve {i + 1}", sweep,
                            perfs, 0.75, "a longer sweep: the window is round(38 / 10) = 4 points."))
    for name, sparsities, perfs, fallback, hint in constructed:
        cliff = find_cliff(sparsities, perfs, "first", fallback)
        yield Case(name, lambda fn, s=sparsities, p=perfs, f=fallback: fn(list(s), list(p), f), cliff.sparsity,
                   hint, _cliff_mistakes(sparsities, perfs, fallback, cliff))


def _cliff_mistakes(sparsities, perfs, fallback, cliff) -> list[tuple[str, object]]:
    """The answers common slips give on this curve, read from the kit's own ``Cliff``."""
    out: list[tuple[str, object]] = []
    if cliff.index is not None:
        if cliff.index + 1 < len(sparsities):
            out.append(("off by one: you returned the sparsity after the cliff point", sparsities[cliff.index + 1]))
        out.append(("you returned the cliff's position in the sweep; return its sparsity", cliff.index))
        out.append(("no cliff found where the kit finds one (check the window, ≥, and the last points)", fallback))
        for what, window, strict in [("you used > where the rule uses ≥ (a drop equal to the threshold counts)",
                                      cliff.window, True),
                                     (f"you compared each point only with the next one; the window is w = "
                                      f"{cliff.window}", 1, False),
                                     (f"your window is {cliff.window + 1}; it is w = max(1, round((n − 1) / 10)) = "
                                      f"{cliff.window}", cliff.window + 1, False)]:
            i = _first_drop(perfs, window, cliff.threshold, strict)
            out.append((what, fallback if i is None else sparsities[i]))
        biggest = find_cliff(sparsities, perfs, "biggest", fallback)
        if biggest.index != cliff.index:
            out.append(("you took the biggest drop; the rule takes the first", biggest.sparsity))
    else:
        out.append(("you return 0.75 however the fallback is set; return the `fallback` argument", 0.75))
    return [(what, value) for what, value in out if value != cliff.sparsity]


def _first_drop(perfs, window: int, threshold: float, strict: bool) -> int | None:
    """The first point whose drop over ``window`` reaches ``threshold`` (passes it, when ``strict``)."""
    for i in range(len(perfs) - 1):
        drop = perfs[i] - min(perfs[i + 1:i + 1 + window])
        if drop > threshold or (drop == threshold and not strict):
            return i
    return None


def check_cliff_sparsity(fn) -> None:
    """Check ``fn(sparsities, perfs, fallback) -> float``, the cliff rule ("first"), against
    ``pruning.find_cliff`` on curves with known answers: a clear cliff, none, ties, dips, long sweeps."""
    _check("cliff_sparsity", fn, _cliff_cases(), _number_problem, _show_number)


# --------------------------------------------------------------------------------------------------------
# Exercise 3: the path-patching hook into a receiver's q, k or v (patching.NaivePathPatcher.to_head).


def solution_patch_head_input(activation: torch.Tensor, hook, patched: torch.Tensor, head: int) -> torch.Tensor:
    """The receiver's input with head ``head`` taken from the sender-patched run, every other head clean.

    ``activation`` [batch, pos, n_heads, d]: the receiver layer's q (k, v) in this run, at
    ``blocks.{layer}.attn.hook_q`` (``_k``, ``_v``: d = d_head), or at ``hook_{q,k,v}_input`` when the
    model runs with ``split_qkv_input`` (d = d_model); ``patched``: the same hook's value recorded in the
    run where the sender was patched; ``hook``: the hook point (unused). Returns a new tensor.
    """
    out = activation.clone()
    out[:, :, head] = patched[:, :, head].to(out.device)
    return out


def _hook_tensor_cases() -> Iterator[Case]:
    gen = torch.Generator().manual_seed(4)
    for shape, head, what in [((2, 5, 4, 8), 1, "q of 4 heads, d_head 8"), ((3, 6, 4, 8), 0, "k, head 0"),
                              ((2, 5, 4, 8), 3, "v, the last head"),
                              ((2, 7, 6, 16), 4, "q_input of 6 heads, d_model 16 (split_qkv_input)")]:
        activation, patched = torch.randn(2, *shape, generator=gen)
        want = solution_patch_head_input(activation, None, patched, head)
        mistakes = [("you returned `patched` as it is: only head `head` comes from the patched run", patched),
                    ("you patched nothing: head `head` must take its values from `patched`", activation)]
        along_pos = activation.clone()
        along_pos[:, head] = patched[:, head]
        mistakes.append(("you indexed positions (dim 1): heads are dim 2, activation[:, :, head]", along_pos))
        mistakes += [(f"you patched head {other}; the receiver is head {head}",
                      solution_patch_head_input(activation, None, patched, other))
                     for other in range(shape[2]) if other != head]
        yield Case(f"activation and patched of shape {list(shape)} ({what}), head={head}",
                   functools.partial(_call_hook, activation=activation, patched=patched, head=head),
                   want, "heads are dim 2 of [batch, pos, n_heads, d]: only head `head` takes `patched`'s values, "
                   "every other head keeps this run's.",
                   mistakes, functools.partial(_explain_heads, activation=activation, patched=patched, head=head))


def _explain_heads(got, activation, patched, head) -> str | None:
    """What each head of ``got`` [batch, pos, heads, d] holds: its clean value, a patched one, or other."""
    def holds(h):
        if torch.equal(got[:, :, h], activation[:, :, h]):
            return "its clean values"
        same = [g for g in range(activation.shape[2]) if torch.equal(got[:, :, h], patched[:, :, g])]
        return f"patched[:, :, {same[0]}]" if same else "values from neither input"
    said = [f"head {h} holds {holds(h)}" for h in range(activation.shape[2])]
    return f"want head {head} = patched[:, :, {head}], every other head clean; yours: " + ", ".join(said)


def _call_hook(fn, activation, patched, head):
    hook = SimpleNamespace(name=hook_name(1, "q"))
    patched_copy = patched.clone()
    try:
        got = fn(activation.clone(), hook=hook, patched=patched_copy, head=head)
    except TypeError as err:
        raise Wrong(f"the checker calls fn(activation, hook=hook, patched=patched, head=head), as TransformerLens "
                    f"calls a hook bound with functools.partial(fn, patched=..., head=...); that raised TypeError: "
                    f"{_short(str(err))}{_where(err, fn)}") from None
    if not torch.equal(patched_copy, patched):
        raise Wrong("your hook changed `patched` in place; leave it as it is (the same recorded run may "
                    "serve other receivers) and change a copy of `activation`")
    return got


#: (sender, receiver, component) of the path-patching cases on the practice model
_PATH_CASES = [((0, 2), (1, 0), "v"), ((0, 1), (1, 3), "v"), ((0, 2), (1, 0), "q"), ((0, 0), (1, 1), "k")]


@functools.lru_cache(maxsize=1)
def practice_patcher():
    """A ``NaivePathPatcher`` on a tiny random GPT-2 (2 layers × 4 heads, built offline, once per session):
    four random prompts of 6 tokens, corrupted at positions 1–3, an A-vs-B logit difference at the end."""
    model = random_gpt2(n_layers=2, n_heads=4, d_model=64, seed=0, device="cpu", dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    n, seq = 4, 6
    clean = torch.randint(0, 1000, (n, seq), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1:4] = torch.randint(0, 1000, (n, 3), generator=gen)
    a, b = torch.randint(0, 1000, (2, n), generator=gen)
    rows = torch.arange(n)

    def metric(logits):  # [..., n, vocab] -> [..., n]
        return logits[..., rows, a] - logits[..., rows, b]
    return NaivePathPatcher(model, clean, corrupted, torch.full((n,), seq - 1), metric)


def path_patching_score(patch_fn, patcher, sender: Head, receiver: Head, component: str) -> float:
    """The normalised effect of ``sender`` through ``receiver``'s ``component``, with ``patch_fn`` (a hook
    like ``solution_patch_head_input``) doing the receiver step, exactly as ``NaivePathPatcher.to_head``.

    Run 1: clean prompts, every head's z frozen clean but the sender's (corrupted); record the receiver
    layer's q/k/v. Run 2: clean prompts, only the receiver's slice of that hook replaced by the record.
    """
    name = hook_name(receiver[0], component)
    record: dict = {}
    patcher._full_forward(patcher.clean_tokens, [*patcher._freeze_hooks(Head(*sender)),
                                                 (name, patcher._grabber(record, "patched"))])
    hook = functools.partial(patch_fn, patched=record["patched"], head=input_head(patcher.cfg, receiver[1], component))
    return float(patcher.normalise(torch.tensor(patcher._full_ld(patcher.clean_tokens, [(name, hook)]))))


def _hook_cases() -> Iterator[Case]:
    yield from _hook_tensor_cases()
    patcher = practice_patcher()  # built only once the tensor cases pass
    for sender, receiver, component in _PATH_CASES:
        want = float(patcher.to_head(receiver, component, [sender])[sender])
        yield Case(f"path patching {sender[0]}.{sender[1]} → {receiver[0]}.{receiver[1]}'s {component} on a "
                   "tiny random GPT-2 (scores: 0 = clean, −1 = as bad as corrupted)",
                   functools.partial(path_patching_score, patcher=patcher, sender=sender, receiver=receiver,
                                     component=component), want,
                   "the hook is called as fn(activation, hook=hook, patched=patched, head=head); it must "
                   "return the activation to use.")


def check_patch_head_input(fn) -> None:
    """Check the hook ``fn(activation, hook, patched, head) -> activation`` on tensors, then by the
    path-patching scores it gives on a tiny random GPT-2, against ``NaivePathPatcher.to_head`` (to 1e-5)."""
    def problem(got, want):
        return (_number_problem(got, want, tol=1e-5) if isinstance(want, float)
                else _tensor_problem(got, want, rtol=0, atol=0))

    def show(x):
        return _show_number(x) if isinstance(x, float) else _show_tensor(x)
    _check("patch_head_input", fn, _hook_cases(), problem, show)


# --------------------------------------------------------------------------------------------------------
# Exercise 4: the selection rule (search.select_heads).


def solution_select_heads(scores: torch.Tensor, scale: float, min_value_threshold: float, k: float = K
                          ) -> list[tuple[int, int]]:
    """Heads whose |score| stands out: ``|S[l,h]| − |mean S| > (scale + k / √((l+1)·n_heads)) · |std S|``.

    ``scores`` [n_layers, n_heads]: path-patching effects, NaN where a head was not evaluated (counts as 0).
    Nothing is selected when no |score| exceeds ``min_value_threshold``. ``std`` is the unbiased one over
    every entry. Returns (layer, head) pairs in (layer, head) order.
    """
    s = torch.nan_to_num(scores.double(), nan=0.0)
    if s.abs().max() <= min_value_threshold:
        return []
    mu = s.mean().abs()
    sigma = s.std().abs() if s.numel() > 1 else 0.0
    n_layers, n_heads = s.shape
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)
            if s[layer, head].abs() - mu > (scale + k / math.sqrt((layer + 1) * n_heads)) * sigma]


def _select_cases() -> Iterator[Case]:
    gen = torch.Generator().manual_seed(5)

    def noise(n_layers, n_heads, size=0.02):
        return size * torch.randn(n_layers, n_heads, generator=gen)

    standout = noise(3, 4)
    standout[2, 1] = 0.9
    negative = noise(3, 4)
    negative[1, 3] = -0.9
    quiet = noise(3, 4, 0.0005)
    quiet[2, 1] = 0.008
    at_threshold = torch.zeros(3, 4)
    at_threshold[1, 2] = 0.5
    not_evaluated = noise(3, 4)
    not_evaluated[0, 1] = 0.6
    not_evaluated[1:] = math.nan
    twins = noise(3, 4)
    twins[0, 2] = twins[2, 2] = 0.7
    early = torch.zeros(4, 4)
    early[0, 0] = early[3, 0] = 1.0
    early.view(-1)[[1, 2, 3, 5, 6]] = 0.5
    constructed = [
        ("one head stands out (2.1 = 0.9 among noise)", standout, 1.0, 0.01, K,
         "select heads whose |score| − |mean| exceeds (scale + k/√((l+1)·n_heads)) · std."),
        ("a strongly negative head (1.3 = −0.9)", negative, 1.0, 0.01, K,
         "use |S[l,h]|: a head that hurts the behaviour matters as much as one that helps."),
        ("every |score| below min_value_threshold 0.01 (largest 0.008)", quiet, 1.0, 0.01, K,
         "when no |score| exceeds min_value_threshold, select nothing — however much one stands out."),
        ("the largest |score| exactly equals min_value_threshold (0.5)", at_threshold, 1.0, 0.5, K,
         "nothing is selected unless some |score| is *above* min_value_threshold (equal is not enough)."),
        ("the same matrix with min_value_threshold 0.4", at_threshold, 1.0, 0.4, K,
         "0.5 > 0.4, so the rule applies: 1.2 stands out."),
        ("a tie on the rule's boundary: [[1, −1, 0]], scale 1, k 0 (|S| − |mean| = std exactly)",
         torch.tensor([[1.0, -1.0, 0.0]]), 1.0, 0.01, 0.0,
         "a head is selected only when |S| − |mean| is strictly greater than the threshold: > , not ≥."),
        ("two heads tie with the same large score (0.2 and 2.2 = 0.7)", twins, 1.0, 0.01, K,
         "equal scores are treated alike: both are selected."),
        ("NaN for heads that were not evaluated (layers 1–2)", not_evaluated, 1.0, 0.01, K,
         "NaN counts as 0 (torch.nan_to_num): otherwise the mean and std are NaN and nothing is selected."),
        ("the early-layer term: 1.0 at heads 0.0 and 3.0, 0.5 at five others, zeros elsewhere", early, 1.0, 0.01, K,
         "the per-layer threshold (scale + k/√((l+1)·n_heads)) · std is stricter in early layers; "
         "note (l + 1), layers counted from 1."),
    ]
    for i, (shape, scale, threshold, k) in enumerate([((4, 6), 1.0, 0.01, K), ((6, 4), 1.5, 0.001, K),
                                                      ((5, 5), 2.0, 0.02, 1.0), ((12, 12), 2.5, 0.002, K),
                                                      ((3, 8), 0.5, 0.01, 0.5)]):
        scores = noise(*shape, 0.05)
        picks = torch.randint(0, scores.numel(), (3,), generator=gen)
        scores.view(-1)[picks] = torch.tensor([0.6, -0.4, 0.25])
        constructed.append((f"random {shape[0]} × {shape[1]} scores with three planted heads, scale {scale}, "
                            f"min_value_threshold {threshold}, k {k}", scores, scale, threshold, k,
                            "compare the rule piece by piece: |mean|, unbiased std, the (l + 1) term, >."))
    for name, scores, scale, threshold, k, hint in constructed:
        want = [tuple(h) for h in select_heads(scores, scale, threshold, None, k)]
        without_k = [tuple(h) for h in select_heads(scores, scale, threshold, None, 0.0)]
        mistakes = [("you left out the k / √((l+1)·n_heads) term", without_k)] if without_k != want else []
        yield Case(name, lambda fn, s=scores, a=scale, t=threshold, kk=k: _call_select(fn, s, a, t, kk), want,
                   hint, mistakes, functools.partial(_explain_selection, want=want, scores=scores, scale=scale, k=k))


def _explain_selection(got, want, scores, scale, k) -> str | None:
    """For each head wrongly selected or missed: its |S| − |mean| beside its layer's threshold."""
    got = [tuple(int(x) for x in h) for h in got]
    s = torch.nan_to_num(scores.double(), nan=0.0)
    mu, sigma, n_heads = float(s.mean().abs()), float(s.std().abs()), s.shape[1]
    parts = []
    for layer, head in sorted(set(got) ^ set(want)):
        factor = scale + k / math.sqrt((layer + 1) * n_heads)
        parts.append(f"{layer}.{head}: |S| − |mean| = {abs(float(s[layer, head])) - mu:.4g} vs threshold "
                     f"({scale:g} + {k:g}/√({layer + 1}·{n_heads}))·std = {factor:.4g}·{sigma:.4g} = "
                     f"{factor * sigma:.4g}")
    return "; ".join(parts) or None


def _call_select(fn, scores, scale, threshold, k):
    copy = scores.clone()
    got = fn(copy, scale, threshold, k)
    if not torch.equal(torch.nan_to_num(copy, nan=-7.0), torch.nan_to_num(scores, nan=-7.0)):
        raise Wrong("your function changed `scores` in place (e.g. with nan_to_num_ or abs_); work on a copy")
    return got


def _heads_problem(got, want: list[tuple[int, int]]) -> str | None:
    """None when ``got`` lists the same heads as ``want`` in the same order, else what differs."""
    if got is None:
        return "your function returned None — did you forget `return`?"
    try:
        heads = [tuple(int(x) for x in h) for h in (got.tolist() if isinstance(got, torch.Tensor) else got)]
        if any(len(h) != 2 for h in heads):
            raise ValueError
    except (TypeError, ValueError):
        return f"expected a list of (layer, head) pairs, got {_short(repr(got), 120)}"
    if heads == want:
        return None
    missing, extra = [h for h in want if h not in heads], [h for h in heads if h not in want]
    if not missing and not extra:
        return "the right heads, but listed twice or out of order: return each once, in (layer, head) order"
    return "; ".join(part for part in (f"missing {missing}" if missing else "",
                                       f"should not select {extra}" if extra else "") if part)


def check_select_heads(fn) -> None:
    """Check ``fn(scores, scale, min_value_threshold, k) -> [(layer, head), ...]``, the search's selection
    rule, against ``search.select_heads`` on constructed and random score matrices."""
    _check("select_heads", fn, _select_cases(), _heads_problem, lambda x: _short(repr(x), 200))
