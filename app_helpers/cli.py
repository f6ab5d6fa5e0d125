"""Command line: ``python -m app_helpers info`` (later issues add ``run`` and ``bench``)."""
from __future__ import annotations

import argparse
import sys

from . import models


def cmd_info(args) -> int:
    """Say which model a spec resolves to and how big it is, then load it to prove it works."""
    try:
        bridge = models.load_model(args.model, device=args.device, dtype=args.dtype)
    except (models.ModelLoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    facts = models.describe(bridge)
    print(f"model     {args.model} -> {models.choose_model(args.model).location}")
    print(f"shape     {facts['layers']} layers x {facts['heads_per_layer']} heads = {facts['heads']} heads, "
          f"d_model {facts['d_model']}, d_head {facts['d_head']}, vocab {facts['vocab']}")
    print(f"params    {facts['params'] / 1e6:.2f} M")
    print(f"device    {facts['device']} ({facts['dtype']})")
    print(f"GPU       {'yes' if models.has_gpu() else 'no'}; hub {'reachable' if models.hub_reachable() else 'unreachable'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app_helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show the chosen model, its size and device")
    info.add_argument("--model", default=models.AUTO,
                      help="'auto', a hub name (gpt2), a local model directory, a bundled name, or "
                           f"{models.RANDOM_GPT2!r} (default: auto)")
    info.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    info.add_argument("--dtype", default=None, help="float32 (default), float16 or bfloat16")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
