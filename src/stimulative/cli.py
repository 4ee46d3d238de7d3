"""The ``stimulative`` command."""

from __future__ import annotations

import argparse
import os
import re
import sys

from . import cli_parser
from .cli_grammar import (
    check_device,
    check_folders,
    check_mode_flags,
    check_mode_keys,
    check_out_is_folder,
    check_yaml_keys,
    out_folder,
    reword,
)
from .core.batchnorm import BN_PROTOCOLS
from .models import create_model, list_models
from .reporting.figures import destruction_figure
from .reporting.report import write_report
from .runtime.device import resolve_device, set_threads
from .runtime.distributed import distributed_session, main_process_output
from .studies.launchers import Launch, parse_minutes
from .studies.reproduce import reproduce
from .studies.sweep import print_plan, sweep
from .tools.bench import DEFAULT_MODELS, BenchConfig
from .tools.bench import main as run_bench_command
from .tools.bench_compare import compare_files
from .tools.destruction import destruction_of_run
from .tools.export import export_run
from .tools.pareto import pareto_run
from .tools.reevaluate import reevaluate
from .training.config import resolve_config
from .training.loop import main as train
from .training.run_dir import RunDir


def _cmd_train(args: argparse.Namespace) -> None:
    if args.config:
        check_yaml_keys(args.config)  # every bad key at once, before the first one stops the loader
    cfg = resolve_config(args)
    check_mode_flags(args, cfg.mode)
    if args.config and (warning := check_mode_keys(args.config, cfg.mode, args.mode is not None)):
        print(warning, file=sys.stderr)
    train(cfg)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    name = "evaluation.json" if args.split == "test" else f"evaluation_{args.split}.json"
    out = out_folder(args.out or args.run_dir, args.force, [name])
    # under torchrun the sub-networks are split across the processes; rank 0 writes and prints
    with distributed_session(resolve_device(args.device)) as env, main_process_output(env):
        reevaluate(
            args.run_dir,
            subnets=args.subnets,
            bn=args.bn,
            max_subnets=args.max_subnets,
            min_depths=args.min_depths,
            out=os.path.join(out, name),
            device=str(env.device),
            progress=not args.no_progress,
            seed=args.seed,
            split=args.split,
        )


def _cmd_models(args: argparse.Namespace) -> None:
    # every name is shown or its error printed; one bad name does not hide the others
    print(f"{'model':<26} {'params':>8}  stages / skippable blocks per stage")
    failed = []
    for name in args.names or list_models():
        try:
            kw = {"image_size": args.image_size, "model_args": args.model_args} if ":" in name else {}
            model = create_model(name, num_classes=args.num_classes, in_chans=args.in_chans, **kw)
        except Exception as e:  # noqa: BLE001 - any failure of one name is reported and the list goes on
            failed.append(name)
            print(f"{name:<26} error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            continue
        arch = model.architecture
        params = sum(p.numel() for p in model.parameters()) / 1e6
        skippable = [sum(s) for s in arch.skippable]
        print(f"{name:<26} {params:>7.2f}M  stages {list(arch.stage_sizes)}  skippable {skippable}")
    if failed:
        raise ValueError(f"{len(failed)} of the models failed: {', '.join(failed)}")


def _cmd_export(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    for spec in args.subnets:
        name = "subnet-" + re.sub(r"[^0-9A-Za-z]+", "_", spec).strip("_")
        out = args.out or os.path.join(args.run_dir, "export", name)
        if args.out and len(args.subnets) > 1:
            out = os.path.join(args.out, name)  # several sub-networks: one folder each
        if os.path.isfile(out):
            raise ValueError(f"--out {out!r} is a file; --out names a folder (model.safetensors goes inside)")
        export_run(
            args.run_dir,
            spec,
            os.path.join(out, "model.safetensors"),
            args.bn,
            args.torchscript,
            args.onnx,
            args.pt2,
            str(resolve_device(args.device)),
            args.check_images,
            args.force,
        )


def _cmd_pareto(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    out = out_folder(args.out or args.run_dir, True, [])  # an equal earlier measurement is reused; --force redoes it
    pareto_run(
        args.run_dir,
        bn=args.bn,
        max_subnets=args.max_subnets,
        min_depths=args.min_depths,
        latency_batch=args.latency_batch,
        repeats=args.repeats,
        budget_ms=args.budget_ms,
        budget_mflops=args.budget_mflops,
        out=os.path.join(out, "pareto.json"),
        device=str(resolve_device(args.device)),
        force=args.force,
        progress=not args.no_progress,
        latency_stat=args.latency_stat,
        seed=args.seed,
        subnets=args.subnets,
    )


def _cmd_bench(args: argparse.Namespace) -> int | None:
    if args.compare:
        return compare_files(*args.compare)
    models = args.models or list(DEFAULT_MODELS)
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; choose from {', '.join(list_models())}")
    if args.out and os.path.exists(args.out) and not args.force:
        raise ValueError(f"--out {args.out!r} exists; pass --force to replace it")
    run_bench_command(
        BenchConfig(
            models=models,
            quick=args.quick,
            device=str(resolve_device(args.device)),
            seed=args.seed,
            threads=args.threads,
            skip_eval=args.skip_eval,
            out=args.out,
            time_cap=args.time_cap,
            amp=args.amp,
            channels_last=args.channels_last,
            compile_mode=args.compile_mode,
            trainer=not args.skip_trainer,
        )
    )


def _cmd_reproduce(args: argparse.Namespace) -> None:
    seeds = tuple(args.seeds) if args.seeds else ((0,) if args.quick else (0, 1, 2))
    epochs = args.epochs or (3 if args.quick else 30)
    depths = () if args.quick else tuple(args.depths)
    set_threads(args.threads)
    reproduce(args.out, seeds, epochs, depths, progress=not args.no_progress)


def _sweep_options(args: argparse.Namespace) -> dict:
    """``stimulative sweep``'s flags as :func:`stimulative.studies.sweep.sweep` takes them."""

    options = []
    for text in args.slurm_option:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm-option {text!r}: give KEY=VALUE, e.g. account=myproject")
        options.append((key.replace("-", "_"), value))
    if args.gpus_per_job and args.device == "cpu":
        raise ValueError("--gpus-per-job: train on them with --device cuda")
    how = Launch(
        launcher=args.launcher,
        jobs=args.jobs,
        threads=args.threads,
        partition=args.partition,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        time_minutes=parse_minutes(args.time),
        slurm_options=tuple(options),
    ).validate()
    return {
        "sweep_dir": args.out,
        "budget_minutes": args.budget,
        "seeds": tuple(args.seeds) if args.seeds else None,
        "design": args.design,
        "model": args.model,
        "dataset": args.dataset,
        "data_root": args.data_root,
        "grid": args.grid,
        "device": args.device,
        "progress": not args.no_progress,
        "only": tuple(args.only),
        "how": how,
    }


def _cmd_sweep(args: argparse.Namespace) -> None:
    options = _sweep_options(args)
    set_threads(args.threads)
    print_plan(sweep(**options, dry_run=True))
    if args.dry_run:
        return
    evidence = sweep(**options, analyse_only=args.analyse_only)
    counts = evidence["runs_this_invocation"].get("counts", {})
    runs = ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "none to train"
    print(
        f"runs: {runs}; evidence: {os.path.join(args.out, 'evidence.json')}; conclusion: "
        f"{os.path.join(args.out, 'conclusion.md')}; figures in {os.path.join(args.out, 'figures')} "
        f"({evidence['wall_seconds_this_invocation']:.0f} s)"
    )


def _cmd_report(args: argparse.Namespace) -> None:
    out = out_folder(args.out or args.dirs[0], args.force, ["report.md", "report.html"])
    path = write_report(args.dirs, os.path.join(out, "report.md"))
    print(f"written {path} and {os.path.splitext(path)[0]}.html")


def _cmd_destruction(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    out = out_folder(args.out or args.run_dirs[0], True, [])
    targets = {run: _destruction_file(args, run, out) for run in args.run_dirs}
    existing = [p for p in targets.values() if os.path.exists(p)]
    if existing and not args.force:
        raise ValueError(f"{existing[0]!r} already exists; pass --force to replace it")
    # under torchrun the destroyed networks are split across the processes; rank 0 writes and prints
    with distributed_session(resolve_device(args.device)) as env, main_process_output(env):
        _destruction(args, str(env.device), env.is_main, targets, out)


def _destruction_file(args: argparse.Namespace, run_dir: str, out: str) -> str:
    """Each run's destruction.json: in its own folder (where the report reads it) unless --out
    names another; several runs under one --out are told apart by their folder names."""
    if not args.out:
        return os.path.join(run_dir, "destruction.json")
    if len(args.run_dirs) == 1:
        return os.path.join(out, "destruction.json")
    return os.path.join(out, f"destruction-{os.path.basename(os.path.normpath(run_dir))}.json")


def _destruction(args: argparse.Namespace, device: str, write: bool, targets: dict, figures: str) -> None:
    results = {}
    for run_dir in args.run_dirs:
        per_bn = destruction_of_run(
            run_dir, device, args.max_k, args.limit, write=write, seed=args.seed, out=targets[run_dir]
        )
        mode, seed = per_bn_label(run_dir)
        label = f"{mode} s{seed}" if mode in [r.split()[0] for r in results] else mode
        results[label] = {"per_seed": [per_bn]}
        for bn, r in per_bn.items():
            worst = {k: max((e["drop"] for e in r[k]), default=0.0) for k in ("delete_one", "delete_k", "permute_k")}
            print(
                f"{run_dir} ({bn} BN): intact {r['intact_top1']:.2f}; worst drop: delete one "
                f"{worst['delete_one']:.2f}, "
                f"delete k {worst['delete_k']:.2f}, permute {worst['permute_k']:.2f}"
            )
    for bn in BN_PROTOCOLS:
        if write:
            print("figure:", destruction_figure(results, bn, figures))


def per_bn_label(run_dir: str) -> tuple[str, int]:
    """The mode (upper case) and seed a run folder was trained with."""
    cfg = RunDir(run_dir).saved_config()
    return cfg.mode.upper(), cfg.seed


def build_parser() -> argparse.ArgumentParser:
    return cli_parser.build_parser(
        {
            "train": _cmd_train,
            "evaluate": _cmd_evaluate,
            "bench": _cmd_bench,
            "reproduce": _cmd_reproduce,
            "sweep": _cmd_sweep,
            "report": _cmd_report,
            "destruction": _cmd_destruction,
            "export": _cmd_export,
            "pareto": _cmd_pareto,
            "models": _cmd_models,
        }
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse; unknown flags are reported by the command's own parser, which knows its flags."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        commands.get(args.command, parser).unknown_flags(extras)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        check_device(getattr(args, "device", None))
        check_folders(args)
        check_out_is_folder(args)
        code = args.fn(args)  # most commands return nothing; a few say something with their exit code
    except KeyboardInterrupt:
        print("stimulative: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as e:
        if os.environ.get("STIMULATIVE_DEBUG"):
            raise
        msg = reword(str(e).splitlines()[0]) if str(e) else type(e).__name__
        print(f"stimulative: error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug, not bad input: still one line, and a way to see more
        if os.environ.get("STIMULATIVE_DEBUG"):
            raise
        print(
            f"stimulative: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (set "
            "STIMULATIVE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
