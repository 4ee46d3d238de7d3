"""The ``stimulative`` command line's grammar: every command's arguments and help, one
function per command; :mod:`stimulative.cli` gives each command its handler."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from . import __version__
from .analysis.destruction import DEFAULT_LIMIT
from .cli_grammar import DEVICE_HELP, GroupedParser, Parser
from .core.batchnorm import BN_PROTOCOLS
from .training.config import EVAL_BN, add_config_arguments
from .training.results import SPLITS

Subcommands = argparse._SubParsersAction  # what add_subparsers returns


def build_parser(handlers: dict[str, Callable[[argparse.Namespace], int | None]]) -> argparse.ArgumentParser:
    """The parser of every command, in ``--help``'s order; ``handlers[command]`` runs it."""
    parser = Parser(
        prog="stimulative", description="Stimulative training of residual networks and measurement of network loafing."
    )
    parser.add_argument("--version", action="version", version=f"stimulative {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add in COMMANDS.items():
        add(sub).set_defaults(fn=handlers[name])
    return parser


def _train(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a network (ST by default, on the digits)",
        description="Train with stimulative training (st), common training (ct) or one sub-network alone "
        "(individual). Writes a run folder: config.yaml, metrics.jsonl, checkpoint/, results.json.",
    )
    add_config_arguments(GroupedParser(p))  # grouped in --help by the configuration's sections
    return p


def _evaluate(sub: Subcommands) -> argparse.ArgumentParser:
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
    return p


def _bench(sub: Subcommands) -> argparse.ArgumentParser:
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
        help="smaller batches and images, a smaller evaluated space, 3-epoch trainer runs (6-16 minutes on 2 "
        "CPU cores; the full bench 22-36)",
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
    return p


def _reproduce(sub: Subcommands) -> argparse.ArgumentParser:
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
    return p


def _sweep(sub: Subcommands) -> argparse.ArgumentParser:
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
    _sweep_launch_options(p)
    return p


def _sweep_launch_options(p: argparse.ArgumentParser) -> None:
    """Where and how the runs go: device, threads, launcher and its SLURM settings, selection."""
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


def _report(sub: Subcommands) -> argparse.ArgumentParser:
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
    return p


def _destruction(sub: Subcommands) -> argparse.ArgumentParser:
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
    return p


def _export(sub: Subcommands) -> argparse.ArgumentParser:
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
    return p


def _pareto(sub: Subcommands) -> argparse.ArgumentParser:
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
    _pareto_measurement_options(p)
    return p


def _pareto_measurement_options(p: argparse.ArgumentParser) -> None:
    """How latency is measured, and the usual output, device, seed and thread options."""
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


def _models(sub: Subcommands) -> argparse.ArgumentParser:
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
    return p


COMMANDS = {  # --help lists them in this order
    "train": _train,
    "evaluate": _evaluate,
    "bench": _bench,
    "reproduce": _reproduce,
    "sweep": _sweep,
    "report": _report,
    "destruction": _destruction,
    "export": _export,
    "pareto": _pareto,
    "models": _models,
}


def _common(p: argparse.ArgumentParser, writes: str, default_out: str, force: bool, seed: str) -> None:
    """The options every computing command spells the same way: --out, --device, --threads,
    --seed and --force."""
    p.add_argument("--out", default="", metavar="DIR", help=f"folder for {writes} (default: {default_out})")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: PyTorch's choice)")
    p.add_argument("--seed", type=int, default=None, help=f"seed (default: {seed})")
    if force:
        p.add_argument("--force", action="store_true", help="replace existing result files")
