"""The ``stimulative`` command."""

from __future__ import annotations

import argparse
import os
import re
import sys

from . import __version__
from .analysis.destruction import DEFAULT_LIMIT
from .cli_grammar import (
    DEVICE_HELP,
    GroupedParser,
    Parser,
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
from .training.config import EVAL_BN, add_config_arguments, resolve_config
from .training.loop import main as train
from .training.results import SPLITS
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
    parser = Parser(
        prog="stimulative", description="Stimulative training of residual networks and measurement of network loafing."
    )
    parser.add_argument("--version", action="version", version=f"stimulative {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a network (ST by default, on the digits)",
        description="Train with stimulative training (st), common training (ct) or one sub-network alone "
        "(individual). Writes a run folder: config.yaml, metrics.jsonl, checkpoint/, results.json.",
    )
    add_config_arguments(GroupedParser(p))  # grouped in --help by the configuration's sections
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="re-evaluate a finished run (other sub-networks or BN mode)",
        description="Evaluate the checkpoint of RUN_DIR again without training, e.g. with another BN mode or other "
        "sub-networks.",
    )
    p.add_argument("run_dir", help="run folder written by `stimulative train`")
    p.add_argument(
        "--subnets",
        nargs="*",
        default=None,
        metavar="SPEC",
        help="sub-networks to evaluate, e.g. 1,1,1 3,2,1 (default: the run's sampling space)",
    )
    p.add_argument(
        "--bn",
        choices=EVAL_BN,
        default="all",
        help="BN protocol: full (the full network's statistics re-estimated, used by every sub-network: the "
        "paper's), subnet (each sub-network re-estimated), running (as trained), or all (default: all)",
    )
    p.add_argument(
        "--min-depths",
        default=None,
        help="sampling space to evaluate, as minimum depths per stage (default: the run's)",
    )
    p.add_argument(
        "--max-subnets", type=int, default=None, help="evaluate a seeded sample of this many if the space is larger"
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="images to evaluate on: test, val (the held-out validation images) or train (the training images, "
        "with test-time transforms: Eq. 4 is stated for training losses); writes evaluation_<split>.json but for "
        "test (default: test)",
    )
    _common(p, "evaluation.json", "RUN_DIR", force=True, seed="the run's: the sample of sub-networks, calibration")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(fn=_cmd_evaluate)

    p = sub.add_parser(
        "bench",
        help="measure speed and memory: CT vs ST step, ours vs the reference way, shared vs naive evaluation",
        description="Side-by-side speed and memory measurements in one process (warm-up, repeats, interleaved): CT "
        "vs ST step (1 and 6 sub-networks) next to their FLOP ratio, ours vs the reference "
        "implementation's separate forward/backward per sub-network, all-sub-network evaluation naive vs "
        "shared (with BN recalibration), peak memory. Prints a table; --out writes JSON.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller batches and images, a smaller evaluated space, 3-epoch trainer runs (about 15 minutes on 2 "
        "CPU cores; the full bench about 35)",
    )
    p.add_argument("--out", default="", metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--force", action="store_true", help="replace an existing --out FILE")
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="NAME",
        help="models to measure (default: resnet56 resnet50_cifar mobilenetv3_large_cifar)",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, inputs and sampled sub-networks")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: PyTorch's choice)")
    p.add_argument(
        "--skip-eval", action="store_true", help="measure the training steps only (parts a, b and their memory)"
    )
    p.add_argument(
        "--skip-trainer", action="store_true", help="leave out part e (the real trainer against a bare loop)"
    )
    p.add_argument(
        "--time-cap",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="per comparison: stop repeating at this many seconds even if a ratio's 95%% interval is wider "
        "than +-5%% or straddles its target (default: 90 for the steps and the judged evaluation, 120 for the "
        "trainer, 60 for the other evaluations, 20 with --quick)",
    )
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast of the training steps")
    p.add_argument("--channels-last", action="store_true", help="model and inputs in channels-last memory format")
    p.add_argument(
        "--compile-mode",
        default="",
        metavar="MODE",
        help="torch.compile the stem, head and each block as `train --compile` does, with this mode (default, "
        "reduce-overhead, max-autotune)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("FIRST", "SECOND"),
        help="measure nothing: print the verdicts and intervals of two --out files side by side (exit 1 if any "
        "verdict differs)",
    )
    p.set_defaults(fn=_cmd_bench)

    p = sub.add_parser(
        "reproduce",
        help="run the paper's whole study on the digits, with a report and a claims table",
        description="Train CT, ST, individual and sampling-rule baselines over seeds, run every analysis (loafing, "
        "all-sub-network statistics, destruction, KL through training, sampling rules, Eq. 4) and write "
        "STUDY/report.md and report.html. Resumes where it stopped.",
    )
    p.add_argument("--out", default="study", help="study folder (default: study)")
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="seeds (default: 0 1 2)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: 30)")
    p.add_argument(
        "--depths",
        nargs="*",
        default=["resnet32", "resnet56"],
        help="deeper networks for the 'deeper networks loaf more' check (default: resnet32 resnet56)",
    )
    p.add_argument("--quick", action="store_true", help="a smoke version: 1 seed, 3 epochs, no deeper networks")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: PyTorch's choice)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(fn=_cmd_reproduce)

    p = sub.add_parser(
        "sweep",
        help="evidence: when does ST improve the full network? A resumable grid of CT, ST configurations and "
        "stochastic depth, on any model and data set, on this machine or a SLURM cluster",
        description="Train CT, ST configurations and stochastic depth, several seeds per cell, and compare each "
        "configuration with CT trained with the same seed. The built-in design (the default) varies lambda, T, "
        "sub-networks per step, KL or KL- and the sandwich rule on the digits (full and 10 %% training splits; 30, "
        "100, 200 epochs); --budget keeps the cells that fit (a fixed priority order, estimated for a quiet 2-core "
        "CPU); --model, --dataset, --data-root run it on another model or data set. --grid GRID.yaml runs your own "
        "factors, levels, baselines and seeds instead (see docs/sweeps.md). Finished runs are skipped, interrupted "
        "ones resume; several launchers may work on one folder at once. Writes OUT/sweep.jsonl, OUT/evidence.json "
        "(per-cell mean ± std, paired differences to CT with 95 %% intervals, cost in seconds and FLOPs; rewritten "
        "after each run, so `stimulative report OUT` works while it runs), OUT/figures/ and OUT/conclusion.md.",
    )
    p.add_argument("--out", default="runs/sweep", help="sweep folder (default: runs/sweep)")
    p.add_argument("--grid", metavar="YAML", help="a grid file: factors, levels, baselines, seeds (docs/sweeps.md)")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="MINUTES",
        help="built-in design on the digits: time to fit, in minutes of a quiet 2-core CPU; 0 runs the whole design "
        "(default: 30)",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", help="seeds of every cell, at least 2 (default: the grid's, else 0 1 2)"
    )
    p.add_argument(
        "--design",
        choices=("ofat", "full"),
        default=None,
        help="ofat: one factor at a time around the default (first) levels; full: every combination (default: the "
        "grid's, else ofat)",
    )
    p.add_argument("--model", default=None, help="registered model (default: the grid's, else resnet20)")
    p.add_argument(
        "--dataset", default=None, help="digits, cifar10, cifar100 or imagefolder (default: the grid's, else digits)"
    )
    p.add_argument("--data-root", default=None, help="folder of the data set (default: the grid's, else data)")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda, cuda:N or auto (default: cpu)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per run (default: this machine's cores shared among --jobs; sequential: PyTorch's choice)",
    )
    p.add_argument(
        "--launcher",
        choices=("sequential", "local", "slurm", "submitit-local"),
        default="sequential",
        help="sequential: one run after the other here; local: --jobs runs at once in a process pool; slurm: a SLURM "
        "job array through submitit (pip install 'stimulative[slurm]'); submitit-local: the slurm launcher's code on "
        "this machine, to try it out (default: sequential)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=0,
        metavar="N",
        help="runs at once (local: default one per core; slurm: the job array's parallelism, default no limit)",
    )
    p.add_argument("--partition", default="", help="slurm: the partition to submit to")
    p.add_argument("--gpus-per-job", type=int, default=0, help="slurm: GPUs per run (with --device cuda)")
    p.add_argument("--cpus-per-job", type=int, default=0, help="slurm: CPU cores per run (its torch threads)")
    p.add_argument(
        "--time",
        default="60",
        help="slurm, submitit-local: time limit of one run, in minutes or H:MM[:SS] or D-HH:MM (default: 60)",
    )
    p.add_argument(
        "--slurm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="slurm: any other sbatch option, e.g. account=myproject, qos=short (repeatable)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="only the cells whose id matches a pattern, e.g. '10pct-e30/st-*' (with their group's CT)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the selected cells and the estimated time, train nothing"
    )
    p.add_argument(
        "--analyse-only",
        action="store_true",
        help="rewrite evidence.json, figures and conclusion.md from the finished runs, train nothing",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(fn=_cmd_sweep)

    p = sub.add_parser(
        "report",
        help="write report.md and report.html from runs, studies and sweeps",
        description="Collect finished runs (folders with results.json), studies (from `stimulative reproduce`) and "
        "sweeps (from `stimulative sweep`) into report.md and a single-file report.html with the figures "
        "embedded.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run, study or sweep folders")
    p.add_argument(
        "--out", default="", metavar="DIR", help="folder for report.md and report.html (default: the first DIR)"
    )
    p.add_argument("--force", action="store_true", help="replace an existing report")
    p.set_defaults(fn=_cmd_report)

    p = sub.add_parser(
        "destruction",
        help="delete and permute blocks of trained networks at test time",
        description="Top-1 drop when deleting one block, deleting k blocks, or permuting k blocks within a stage, "
        "without retraining, in both BN modes. Writes RUN_DIR/destruction.json and box-plot figures.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, e.g. a CT run and an ST run")
    p.add_argument("--max-k", type=int, default=4, help="largest number of deleted or permuted blocks (default: 4)")
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help="all combinations per k up to this many (their count is reported), else a seeded sample of this size "
        f"(default: {DEFAULT_LIMIT})",
    )
    _common(
        p,
        "destruction.json (one run; several: destruction-<folder>.json) and the figures",
        "the first RUN_DIR; destruction.json in each RUN_DIR",
        force=True,
        seed="the run's: the sampled combinations, calibration",
    )
    p.set_defaults(fn=_cmd_destruction)

    p = sub.add_parser(
        "export",
        help="write one sub-network as a standalone smaller network",
        description="Write sub-network SUBNET of RUN_DIR as a standalone network holding only its blocks: weights "
        "(.safetensors), a self-contained model.py (PyTorch + safetensors only) and model.json; "
        "optionally TorchScript, ONNX and torch.export .pt2. The written files are loaded back and their "
        "predictions checked against the sub-network inside the full model.",
    )
    p.add_argument("run_dir", help="run folder written by `stimulative train`")
    p.add_argument(
        "--subnets",
        "--subnet",
        nargs="+",
        required=True,
        metavar="SPEC",
        help="the sub-network(s), e.g. 2,3,1 (depths per stage) or 0.2/0.1/0 (blocks); several go to one folder each",
    )
    p.add_argument(
        "--out",
        default="",
        metavar="DIR",
        help="folder for model.safetensors, model.py and model.json (default: RUN_DIR/export/subnet-<SPEC>)",
    )
    p.add_argument(
        "--bn",
        choices=BN_PROTOCOLS,
        default="subnet",
        help="BN statistics of the exported network: subnet (re-estimated for this sub-network on training images: "
        "what a deployment does), full (the full network's, re-estimated) or running (as trained) (default: subnet)",
    )
    p.add_argument("--torchscript", default="", metavar="FILE", help="also write TorchScript (torch.jit.load)")
    p.add_argument("--onnx", default="", metavar="FILE", help="also write ONNX (needs onnx and onnxscript)")
    p.add_argument("--pt2", default="", metavar="FILE", help="also write torch.export's program (torch.export.load)")
    p.add_argument(
        "--check-images", type=int, default=1000, help="test images the export is checked on (default: 1000)"
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: PyTorch's choice)")
    p.set_defaults(fn=_cmd_export)

    p = sub.add_parser(
        "pareto",
        help="top-1, parameters, FLOPs and latency of every sub-network; the Pareto front",
        description="Measure every sub-network of RUN_DIR's sampling space (or a seeded sample): top-1, parameters, "
        "FLOPs (one image; a multiply-add counts 2) and latency on this machine; plot the Pareto front "
        "(RUN_DIR/pareto.png, pareto.json). --budget-ms / --budget-mflops pick the best sub-network "
        "within the budget. An existing pareto.json with the same settings is reused (only the pick and "
        "plot are redone).",
    )
    p.add_argument("run_dir", help="run folder written by `stimulative train`")
    p.add_argument(
        "--subnets",
        nargs="+",
        default=None,
        metavar="SPEC",
        help="sub-networks to measure, e.g. 1,1,1 3,2,1 (default: the sampling space, or its sample)",
    )
    p.add_argument("--budget-ms", type=float, default=None, help="pick the most accurate sub-network at most this slow")
    p.add_argument(
        "--budget-mflops", type=float, default=None, help="pick the most accurate sub-network with at most these MFLOPs"
    )
    p.add_argument(
        "--bn",
        choices=BN_PROTOCOLS,
        default="subnet",
        help="BN protocol of the top-1: subnet (each sub-network re-estimated: what a deployment of one "
        "sub-network sees), full or running (default: subnet)",
    )
    p.add_argument(
        "--min-depths",
        default=None,
        help="sampling space, as minimum depths per stage or a named space (default: the run's)",
    )
    p.add_argument(
        "--max-subnets",
        type=int,
        default=None,
        help="a seeded sample of this many if the space is larger (default: the run's --eval-subnets)",
    )
    p.add_argument("--latency-batch", type=int, default=1, help="images per timed forward pass (default: 1)")
    p.add_argument(
        "--latency-stat",
        choices=("median", "min"),
        default="min",
        help="statistic of the timed repeats used for the front and the budget: min is the steady estimate on a "
        "shared, busy machine (others' processes only ever add time), median the typical time on a quiet one "
        "(default: min)",
    )
    p.add_argument("--repeats", type=int, default=20, help="timed forward passes per sub-network (default: 20)")
    p.add_argument("--out", default="", metavar="DIR", help="folder for pareto.json and pareto.png (default: RUN_DIR)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--seed", type=int, default=None, help="seed of the sample of sub-networks (default: the run's)")
    p.add_argument("--force", action="store_true", help="measure again and overwrite")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for the measurement (default: PyTorch's choice; on a machine shared with other jobs, 1 "
        "avoids threads waiting on each other: resnet18 on one image took 1.6 s with 2 threads and 32 ms with 1 "
        "here)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(fn=_cmd_pareto)

    p = sub.add_parser(
        "models",
        help="list the registered models, or show how timm:/torchvision: models are adapted",
        description="List the registered models, or, given names such as timm:resnet50 or torchvision:swin_t, show "
        "the stages and skippable blocks the adapter finds.",
    )
    p.add_argument("names", nargs="*", help="models to show (default: every registered model)")
    p.add_argument(
        "--num-classes", type=int, default=10, help="classes of the classifier the models are built with (default: 10)"
    )
    p.add_argument(
        "--in-chans", type=int, default=3, help="input channels the models are built with, e.g. 1 (default: 3)"
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side for timm:/torchvision: models (default: the model's own)",
    )
    p.add_argument(
        "--model-args", default="", help="keyword arguments for timm:/torchvision: models, e.g. drop_path_rate=0.1"
    )
    p.set_defaults(fn=_cmd_models)
    return parser


def _common(p: argparse.ArgumentParser, writes: str, default_out: str, force: bool, seed: str) -> None:
    """The options every computing command spells the same way: --out, --device, --threads,
    --seed and --force."""
    p.add_argument("--out", default="", metavar="DIR", help=f"folder for {writes} (default: {default_out})")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: PyTorch's choice)")
    p.add_argument("--seed", type=int, default=None, help=f"seed (default: {seed})")
    if force:
        p.add_argument("--force", action="store_true", help="replace existing result files")


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
