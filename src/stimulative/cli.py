"""The ``stimulative`` command."""

from __future__ import annotations

import argparse
import os
import sys

from .config import add_config_arguments, resolve_config


def _cmd_train(args: argparse.Namespace) -> None:
    from .train import main

    main(resolve_config(args))


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .reevaluate import reevaluate

    reevaluate(args.run_dir, subnets=args.subnets, bn=args.bn, max_subnets=args.max_subnets, min_depths=args.min_depths, out=args.out, device=args.device, progress=not args.no_progress)


def _cmd_models(args: argparse.Namespace) -> None:
    from .models import create_model, list_models

    for name in list_models():
        model = create_model(name, num_classes=args.num_classes)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<26} {params:>7.2f}M params  stages {list(model.architecture.stage_sizes)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stimulative", description="Stimulative training of residual networks and measurement of network loafing.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a network (ST by default, on the digits)", description="Train with stimulative training (st), common training (ct) or one sub-network alone (individual). Writes a run folder: config.yaml, metrics.jsonl, checkpoint/, results.json.")
    add_config_arguments(p)
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate a finished run (other sub-networks or BN mode)", description="Evaluate the checkpoint of RUN_DIR again without training, e.g. with another BN mode or other sub-networks.")
    p.add_argument("run_dir", help="run folder written by `stimulative train`")
    p.add_argument("--subnets", nargs="*", default=None, metavar="SPEC", help="sub-networks to evaluate, e.g. 1,1,1 3,2,1 (default: the run's sampling space)")
    p.add_argument("--bn", choices=("both", "recalibrated", "running"), default="both", help="BN statistics: recalibrated per sub-network, the full network's running ones, or both (default: both)")
    p.add_argument("--min-depths", default=None, help="sampling space to evaluate, as minimum depths per stage (default: the run's)")
    p.add_argument("--max-subnets", type=int, default=None, help="evaluate a seeded sample of this many if the space is larger")
    p.add_argument("--out", default="evaluation.json", help="file name inside RUN_DIR for the results (default: evaluation.json)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(fn=_cmd_evaluate)

    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--num-classes", type=int, default=10)
    p.set_defaults(fn=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except KeyboardInterrupt:
        print("stimulative: interrupted; resume with --resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as e:
        if os.environ.get("STIMULATIVE_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"stimulative: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
