"""Command line: ``info`` (which model, how big), ``run`` (dense PP vs APP on a task), ``bench``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import devices, models, report, sizing
from .validate import InputError
from .bench import run_bench
from .circuits import references_for
from .pipeline import run_comparison
from .metrics import PATCHING_METRICS, metric_fn
from .tasks import TASKS, check_prompt_count, generate_sentences, get_task, make_task


def cmd_info(args) -> int:
    """Say which model a spec resolves to and how big it is, then load it to prove it works."""
    _check_before_loading(args)
    bridge = models.load_model(args.model, device=args.device, dtype=args.dtype, task=args.task)
    facts = models.describe(bridge)
    print(f"model     {args.model} -> {models.choose_model(args.model, args.task).location}")
    print(f"shape     {facts['layers']} layers x {facts['heads_per_layer']} heads = {facts['heads']} heads, "
          f"d_model {facts['d_model']}, d_head {facts['d_head']}, vocab {facts['vocab']}")
    print(f"params    {facts['params'] / 1e6:.2f} M")
    print(f"device    {facts['device']} ({facts['dtype']})")
    print(f"GPU       {'yes' if devices.has_gpu() else 'no'}; hub {'reachable' if models.hub_reachable() else 'unreachable'}")
    return 0


def cmd_run(args) -> int:
    """Dense path patching and APP side by side; table on stdout, JSON and PNG figures in ``--out``."""
    import torch

    task_options = _check_before_loading(args)
    report.check_output_folder(Path(args.out))
    size = sizing.with_overrides(args.size, n=args.n, eval_n=args.eval_n)
    torch.manual_seed(args.seed)
    bridge = models.load_model(args.model, device=args.device, dtype=args.dtype, task=args.task)
    choice = models.choose_model(args.model, args.task)
    task = get_task(args.task).name
    if not args.quiet:
        shape = sizing.Shape.of(bridge.cfg)
        seq = make_task(task, bridge, n=size.n, seed=args.seed, **task_options).clean_tokens.shape[1]
        stages = sizing.comparison_flops(shape, size, seq, *sizing.assumed_circuit(shape, task, choice.location == "gpt2"))
        print(f"[{size.name} size: N={size.n}, held-out {size.eval_n}, {size.grid_runs}-run grid] "
              + sizing.describe_estimate(stages, sizing.probe_throughput(bridge)), flush=True)
    comparison = run_comparison(bridge, task, n=size.n, seed=args.seed, eval_n=size.eval_n,
                                model_name=choice.spec, show_progress=not args.quiet,
                                scales=size.scales, thresholds=size.thresholds,
                                references=references_for(choice.location, task),
                                task_options=task_options,
                                engine_kwargs=_engine_kwargs(args), baselines=args.baselines)
    print(report.comparison_table(comparison))
    out = Path(args.out)
    written = report.write_outputs(comparison, out, bridge.cfg.n_layers, bridge.cfg.n_heads)
    print(f"wrote {out / report.RECORD} and {len(written) - 1} figures to {out}/ (one set: the previous run's "
          "outputs there were replaced)")
    return 0


def cmd_bench(args) -> int:
    """Print the benchmark table (engine vs naive, APP vs dense, FLOPs, pipeline time, GPT-2 scale)."""
    _check_before_loading(args)
    check_prompt_count("--n", args.n)
    check_prompt_count("--eval-n", args.eval_n)
    bridge = models.load_model(args.model, device=args.device, dtype=args.dtype, task=args.task)
    print(run_bench(bridge, models.choose_model(args.model, args.task).location, args.task, args.n, args.eval_n,
                    args.seed, grid=not args.no_grid, gpt2=not args.no_gpt2, baselines=not args.no_baselines,
                    progress=lambda line: print(line, file=sys.stderr, flush=True)))
    return 0


def _engine_kwargs(args) -> dict | None:
    """What ``run``'s options hand both path-patching engines: the patching metric, MLP nodes."""
    kwargs = {"metric": args.patching_metric} if args.patching_metric else {}
    if args.mlps:
        kwargs["mlps"] = True
    return kwargs or None


def _check_before_loading(args) -> dict[str, str]:
    """Everything that can be checked without a model — the model spec, device, dtype, task and its
    options — so that bad input fails in a second instead of after a model load. Returns the task options."""
    options = _task_options(getattr(args, "task_option", []))
    devices.resolve_device(args.device)
    devices.resolve_dtype(args.dtype)
    models.choose_model(args.model, args.task)
    if getattr(args, "mlps", False) and getattr(args, "baselines", False):
        raise InputError("--mlps and --baselines together: the baselines score heads only; run them without "
                         "--mlps (or path patching with MLP nodes without --baselines)")
    if args.task is not None:
        metric = options.get("metric")
        if metric is not None:
            metric_fn(metric)
        generate_sentences(args.task, 1, 0, **{k: v for k, v in options.items() if k != "metric"})
    return options


def _task_options(pairs: list[str]) -> dict[str, str]:
    """``["metric=prob_diff", ...]`` → ``{"metric": "prob_diff"}``; ``make_task`` checks the names."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not (sep and key and value):
            raise ValueError(f"--task-option wants KEY=VALUE (e.g. metric=prob_diff), got {pair!r}")
        options[key] = value
    return options


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=models.AUTO,
                        help="'auto', a hub name (gpt2), a local model directory, a bundled name, or "
                             f"{models.RANDOM_GPT2!r} (default: auto)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    parser.add_argument("--dtype", default=None, help="float32 (default), float16 or bfloat16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app_helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show the chosen model, its size and device")
    _model_options(info)
    info.add_argument("--task", default=None, help="the task 'auto' chooses a bundled model for (offline: "
                      "app-planted for ioi, app-toy otherwise)")
    info.set_defaults(func=cmd_info)
    run = sub.add_parser("run", help="dense path patching vs APP on a task: table, JSON, figures")
    _model_options(run)
    run.add_argument("--task", default="ioi", help=f"one of {', '.join(TASKS)} (default ioi)")
    run.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                     help="repeatable: metric=prob_diff, corruption=ABA|ABD (IOI), names=single|full (induction)")
    run.add_argument("--patching-metric", default=None, choices=list(PATCHING_METRICS),
                     help="what path patching scores (default: the task's metric); kl = KL divergence to the "
                          "clean distribution (Perf keeps the task's metric)")
    run.add_argument("--size", default="paper", choices=list(sizing.SIZES),
                     help="paper: N=100, held-out 200, the 4 x 4 grid (default); tutorial: N=40, 100, a 2 x 2 grid")
    run.add_argument("--n", type=int, default=None, help="prompts used for scoring and search (default: the size's)")
    run.add_argument("--eval-n", type=int, default=None, help="held-out prompts for Perf (default: the size's)")
    run.add_argument("--seed", type=int, default=0, help="seed of the search prompts (the held-out prompts are drawn from seed+1000 and never repeat one)")
    run.add_argument("--out", default="out/run", help="folder for comparison.json and the PNG figures")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--mlps", action="store_true",
                     help="MLPs as nodes of path patching, senders and receivers beside the heads (off by default, "
                          "as in the paper); circuits may then contain MLPs")
    run.add_argument("--baselines", action="store_true",
                     help="also run activation patching, EAP and EAP-IG, dense and on APP's pruned set "
                          "(one table of every method)")
    run.set_defaults(func=cmd_run)
    bench = sub.add_parser("bench", help="print the speed table (engine vs naive, APP vs dense, GPT-2 scale)")
    _model_options(bench)
    bench.add_argument("--task", default="ioi")
    bench.add_argument("--n", type=int, default=100)
    bench.add_argument("--eval-n", type=int, default=200)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--no-grid", action="store_true", help="skip the naive 16-run grid (the slowest row)")
    bench.add_argument("--no-baselines", action="store_true",
                       help="skip activation patching, EAP and EAP-IG (the methods table then has PP and APP only)")
    bench.add_argument("--no-gpt2", action="store_true",
                       help="skip the rows of random models shaped like GPT-2 small, GPT-2 large and Qwen2.5-0.5B")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    """Run one command; bad input (an unknown model or task, a bad number) exits 2 with one clear line."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (models.ModelLoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written is left (a run's JSON record and figures appear together or "
              "not at all, and the previous outputs in --out stay as they were)", file=sys.stderr)
        return 130
