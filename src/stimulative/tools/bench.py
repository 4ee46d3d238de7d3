"""``stimulative bench``: speed and memory of stimulative training, measured side by side in
one process, with warm-up and repeats.

Per model (random CIFAR-shaped inputs; the data path is not part of the measurement):

a. **CT step vs ST step** (1 and 6 sub-networks): wall-time ratio ST/CT next to the FLOP
   ratio (forward + backward, :class:`torch.utils.flop_counter.FlopCounterMode`) of the very
   sub-networks sampled, for the joint backward and the per-sub-network backward; the
   verdicts are those of the step ``stimulative train`` takes by default (:func:`default_steps`).
   A step is what :func:`stimulative.training.loop.train_one_epoch` does: forward, loss,
   ``zero_grad``, backward(s), ``optimizer.step()``.
b. **Ours vs the reference implementation's way**: the same sampled sub-networks, each with
   its own forward from the stem and its own backward (nothing shared). The gradients of both
   are compared before timing.
c. **All-sub-network evaluation, naive vs shared** (every sub-network of the default ordered
   space): :func:`stimulative.evaluation.walk.naive_subnet_logits`'s way, one sub-network at a time,
   against :class:`stimulative.evaluation.walk.SubnetWalk`'s depth-first walk, with per-sub-network
   BN recalibration and with the running statistics; the logits are compared sub-network by
   sub-network. Also a destruction sweep (every single-block deletion).
d. **Peak memory** of each: on CPU, the peak of the bytes held by PyTorch's CPU allocator
   during the call above what was held before it (torch.profiler memory events; Python
   objects and oneDNN-internal buffers are not counted); on CUDA,
   ``torch.cuda.max_memory_allocated`` above the start.

e. **The real trainer against a bare loop** (:mod:`stimulative.tools.bench_trainer`).

Timings come in rounds: per round and sampled draw one step of each configuration, in an
order where every pair a verdict compares runs back to back (reversed every other time); so
the i-th timings of two configurations are a pair taken seconds apart at most. Every ratio
is the median of the per-pair ratios with a seeded 95 % bootstrap interval
(:mod:`stimulative.tools.bench_stats`), repeated until the interval is within 5 % and, for
a ratio with a target, clear of it, or the time cap (one still open on few pairs goes on, up
to three times the cap); a target is met, missed or undecided by that interval. Evaluation's
speedup is set beside its time-weighted limit and each way's overhead
(:mod:`stimulative.tools.bench_eval_parts`). On CUDA, times are taken
with CUDA events; ``amp``, ``channels_last`` and ``compile_mode`` set up the steps as
training would.
"""

from __future__ import annotations

import copy
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy
import torch
import torch.nn.functional as F
import torchvision

from .. import __version__
from ..core.batchnorm import frozen_bn_stats
from ..core.elastic import ElasticNet
from ..core.loss import kl_divergence
from ..core.sampling import (
    SamplingSpace,
    SubnetSpec,
    delete_blocks,
    enumerate_subnets,
    sample_subnet,
    skippable_blocks,
    step_generator,
)
from ..evaluation.walk import SubnetWalk, subnet_bn
from ..models import create_model
from ..runtime.files import write_json
from ..runtime.measure import count_flops, peak_memory, set_up_objects_frozen, timer_kind, wall
from ..training.accelerate import compile_blocks
from ..training.accelerate import prepare_model as prepare_for_speed
from ..training.backward import resolve_backward
from ..training.config import TrainConfig
from ..training.steps import low_memory_step, training_step
from .bench_eval_parts import eval_parts, module_seconds, perfect_seconds, prefixes
from .bench_stats import (
    MIN_PAIRS,
    MIN_ROUNDS,
    REL_HALF_WIDTH,
    Ratio,
    median,
    once_per_round,
    open_on_few_pairs,
    paired_ratio,
    precise_enough,
    repeat_until_precise,
    verdict,
)
from .bench_table import format_table
from .bench_trainer import CT_OVER_BARE_TARGET, ST_WALL_OVER_FLOPS_TARGET, TrainerWork, bench_trainer

DEFAULT_MODELS = ("resnet56", "resnet50_cifar", "mobilenetv3_large_cifar")
SUBNET_COUNTS = (1, 6)
STEP_NAMES = {"st": "joint", "low": "per-subnet"}
WALL_OVER_FLOPS_TARGET = 1.10
SHARED_EVAL_TARGET = 5.0
SHARED_EVAL_FRACTION_OF_LIMIT = 0.8  # or this much of the limit, where the limit is low
EQUAL_LOGITS_TOL = 1e-5


@dataclass
class Sizes:
    """The workload of one model: training batch, image side, evaluation and calibration images."""

    batch: int
    image: int
    eval_images: int
    calib_images: int
    draws: int  # sampled draws of sub-networks (one training step each)
    passes: int  # rounds timed at least (each: one step per configuration and draw)
    eval_min_depths: tuple[int, ...] | None = None  # evaluated space (default: the default space)


FULL_SIZES = {  # resnet50 at batch 16: a CT step is ~0.5 TFLOP at batch 64, too long for a CPU bench
    "resnet56": Sizes(batch=64, image=32, eval_images=32, calib_images=32, draws=4, passes=2),
    "resnet50_cifar": Sizes(batch=16, image=32, eval_images=16, calib_images=16, draws=2, passes=2),
    "mobilenetv3_large_cifar": Sizes(batch=64, image=32, eval_images=32, calib_images=32, draws=4, passes=2),
}
QUICK_SIZES = {  # resnet56's 729 sub-networks become 125 (at least 5 blocks per stage)
    "resnet56": Sizes(
        batch=16, image=32, eval_images=16, calib_images=16, draws=3, passes=2, eval_min_depths=(5, 5, 5)
    ),
    "resnet50_cifar": Sizes(batch=8, image=16, eval_images=8, calib_images=8, draws=2, passes=2),
    "mobilenetv3_large_cifar": Sizes(batch=8, image=16, eval_images=8, calib_images=8, draws=3, passes=2),
}
FALLBACK_FULL = Sizes(batch=64, image=32, eval_images=32, calib_images=32, draws=4, passes=2)
FALLBACK_QUICK = Sizes(batch=8, image=16, eval_images=8, calib_images=8, draws=3, passes=2)


@dataclass
class BenchConfig:
    models: Sequence[str] = DEFAULT_MODELS
    quick: bool = False
    device: str = "cpu"
    seed: int = 0
    num_classes: int = 10
    threads: int = 0  # 0: PyTorch's default
    skip_eval: bool = False
    out: str = ""
    sizes: dict[str, Sizes] = field(default_factory=dict)
    time_cap: float = 0.0  # seconds per comparison before it stops short (0: see cap, step_cap, trainer_cap)
    amp: str = "none"  # bf16 / fp16 autocast of the training steps
    channels_last: bool = False
    compile_mode: str = ""  # torch.compile mode of the model ("" : not compiled), e.g. default, max-autotune
    trainer: bool = True  # part e: the real trainer against a bare loop
    trainer_work: TrainerWork | None = None

    def cap(self) -> float:
        """Per evaluation comparison without a target (``running`` BN, deletions)."""
        return self.time_cap or (20.0 if self.quick else 60.0)

    def step_cap(self) -> float:
        """Per comparison with a target (training steps, all-sub-network evaluation): their
        ratios sit within 10-20 % of their targets, so they go on while undecided (quick too)."""
        return self.time_cap or 90.0

    def trainer_cap(self) -> float:
        """The trainer against the bare loop: its target sits 2-5 % from the ratio, so it keeps
        going while undecided (a lockstep round of three runs takes ~6 s on the digits)."""
        return self.time_cap or 120.0

    def work(self) -> TrainerWork:
        if self.trainer_work is not None:
            return self.trainer_work
        return TrainerWork(epochs=3 if self.quick else 5, seed=self.seed)

    def sizes_of(self, model: str) -> Sizes:
        if model in self.sizes:
            return self.sizes[model]
        table, fallback = (QUICK_SIZES, FALLBACK_QUICK) if self.quick else (FULL_SIZES, FALLBACK_FULL)
        return table.get(model, fallback)


# ---------------------------------------------------------------- measuring tools


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": _cpu_model() or platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": _memory_gb(),
        "device": str(device),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": numpy.__version__,
            "stimulative": __version__,
        },
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["versions"]["cuda"] = torch.version.cuda
        info["versions"]["cudnn"] = torch.backends.cudnn.version()
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------- the training steps compared


def ct_loss(model: ElasticNet, x: torch.Tensor, y: torch.Tensor, subnets: Sequence[SubnetSpec]) -> torch.Tensor:
    """Common training: the full network's cross-entropy (what ``--mode ct`` runs)."""
    return training_step(model, x, y, [], 0.0).loss


def st_loss(model: ElasticNet, x: torch.Tensor, y: torch.Tensor, subnets: Sequence[SubnetSpec]) -> torch.Tensor:
    """Ours: the sub-networks continue from the full network's shared prefix; one backward."""
    return training_step(model, x, y, list(subnets), 1.0).loss


def reference_backward(model: ElasticNet, x: torch.Tensor, y: torch.Tensor, subnets: Sequence[SubnetSpec]) -> None:
    """The reference implementation's way: the full network's forward and backward, then per
    sub-network its own forward from the stem and its own backward (gradients accumulate).
    Same loss as :func:`st_loss` (BN running statistics frozen for the sub-networks, as ours)."""
    main = model(x)
    F.cross_entropy(main.float(), y).backward()
    target = main.detach()
    with frozen_bn_stats(model):
        for spec in subnets:
            kl_divergence(target, model(x, spec)).backward()


def make_step(kind: str, model: ElasticNet, opt: torch.optim.Optimizer, x, y, subnets) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if kind == "reference":
            reference_backward(model, x, y, subnets)
        elif kind == "low":  # --low-memory
            low_memory_step(model, x, y, list(subnets), 1.0).loss.backward()
        else:
            (ct_loss if kind == "ct" else st_loss)(model, x, y, subnets).backward()
        opt.step()

    return step


def gradient_difference(
    model: ElasticNet, x, y, subnets: Sequence[SubnetSpec], against: str = "reference"
) -> dict[str, float]:
    """Largest |Δ gradient| between ours and the reference way (or ``--low-memory``'s
    step, ``against="low"``), from the same weights."""
    ours, ref = copy.deepcopy(model), copy.deepcopy(model)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(0)  # the same dropout masks (MobileNetV3's head) in both
        st_loss(ours, x, y, subnets).backward()
        torch.manual_seed(0)
        if against == "low":
            low_memory_step(ref, x, y, list(subnets), 1.0).loss.backward()
        else:
            reference_backward(ref, x, y, subnets)
    diff = scale = 0.0
    for p, q in zip(ours.parameters(), ref.parameters()):
        if p.grad is None and q.grad is None:
            continue
        diff = max(diff, (p.grad - q.grad).abs().max().item())
        scale = max(scale, q.grad.abs().max().item())
    return {"max_abs_diff": diff, "max_abs_grad": scale, "relative": diff / scale if scale else 0.0}


def default_steps(amp: str) -> dict[int, str]:
    """Per number of sub-networks, the step ``stimulative train --backward auto`` takes in one
    process with this autocast: ``"st"`` (joint backward) or ``"low"`` (per-sub-network)."""
    return {
        n: "low" if resolve_backward(TrainConfig(mode="st", subnets_per_step=n, amp=amp), distributed=False) else "st"
        for n in SUBNET_COUNTS
    }


def bench_steps(
    model: ElasticNet,
    sizes: Sizes,
    device: torch.device,
    seed: int,
    log: Callable[[str], None],
    time_cap: float = 60.0,
    amp: str = "none",
) -> dict:
    """Parts a, b and d (training steps) of one model."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sizes.batch, model_in_chans(model), sizes.image, sizes.image, generator=gen).to(device)
    x = x.contiguous(memory_format=_memory_format(model))
    y = torch.randint(model_classes(model), (sizes.batch,), generator=gen).to(device)
    draws = sampled_draws(model, sizes.draws, seed)
    defaults = default_steps(amp)
    configs = timing_order(defaults)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=3e-5)
    model.train()

    def step(kind: str, n: int, r: int) -> Callable[[], None]:
        return with_autocast(make_step(kind, model, opt, x, y, draws[r][:n]), device, amp)

    grads = {n: gradient_difference(model, x, y, draws[0][:n]) for n in SUBNET_COUNTS}
    low_grads = {n: gradient_difference(model, x, y, draws[0][:n], against="low") for n in SUBNET_COUNTS}
    log(f"  gradients ours vs reference: max |diff| {max(g['max_abs_diff'] for g in grads.values()):.2e}")
    flops = {(k, n): [count_flops(step(k, n, r)) for r in range(sizes.draws)] for k, n in configs}
    times, stop = _time_steps(step, configs, sizes, device, log, flops, defaults, time_cap, seed)
    memory = {}
    for c in configs:
        opt.zero_grad(set_to_none=True)  # the measured step allocates its gradients afresh
        memory[c] = peak_memory(step(*c, 0), device)
    rounds = {c: _round_sums(times[c], sizes.draws) for c in configs}
    out: dict = {
        "per_step_seconds": {_step_name(*c): median(rounds[c]) / sizes.draws for c in configs},
        "flops_per_step": {_step_name(*c): sum(flops[c]) / sizes.draws for c in configs},
        "flops_per_draw": {_step_name(*c): flops[c] for c in configs},
        "peak_memory_mb": {_step_name(*c): memory[c] / 2**20 for c in configs},
        "step_seconds": {_step_name(*c): times[c] for c in configs},
        "draws": sizes.draws,
        "repeats": stop,
        "default_step": {str(n): STEP_NAMES[kind] for n, kind in defaults.items()},
    }
    out.update(_step_ratios(times, flops, sizes.draws, defaults, seed))
    out["gradients_vs_reference"] = {str(n): g for n, g in grads.items()}
    out["low_memory_gradients_vs_joint"] = {str(n): g for n, g in low_grads.items()}
    out["sampled_subnets"] = [[s.to_text() for s in d] for d in draws]
    return out


def _memory_format(model: ElasticNet) -> torch.memory_format:
    """The memory format the model's 4-d weights are in (channels-last when asked for)."""
    conv = next((p for p in model.parameters() if p.dim() == 4), None)
    if conv is not None and conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def with_autocast(fn: Callable[[], None], device: torch.device, amp: str) -> Callable[[], None]:
    """``fn`` run under bf16/fp16 autocast (``amp="none"``: as it is)."""
    if amp == "none":
        return fn
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]

    def run() -> None:
        with torch.autocast(device.type, dtype=dtype):
            fn()

    return run


def sampled_draws(model: ElasticNet, draws: int, seed: int) -> list[list[SubnetSpec]]:
    """The sub-networks training would draw at steps 0..draws-1, 6 per step (the
    1-sub-network configuration takes the first of them, which is also what training draws)."""
    arch = model.architecture
    space = SamplingSpace.default(arch)
    out = []
    for r in range(draws):
        g = step_generator(seed, r)
        out.append([sample_subnet(space, arch, "ordered", g) for _ in range(max(SUBNET_COUNTS))])
    return out


def timing_order(defaults: dict[int, str]) -> list[tuple[str, int]]:
    """The configurations in the order a draw times them: a chain in which every pair a
    verdict compares is adjacent (the reference way, the default step, CT, the other default
    step, its reference way), the other step of each count at the ends. Back-to-back timings
    share the machine's slow spells, so their ratio sheds most of that noise."""
    lo, hi = min(SUBNET_COUNTS), max(SUBNET_COUNTS)
    other = {n: "low" if defaults[n] == "st" else "st" for n in SUBNET_COUNTS}
    return [(other[lo], lo), ("reference", lo), (defaults[lo], lo), ("ct", 0), (defaults[hi], hi),
            ("reference", hi), (other[hi], hi)]  # fmt: skip


def _time_steps(
    step: Callable[[str, int, int], Callable[[], None]],
    configs: list[tuple[str, int]],
    sizes: Sizes,
    device: torch.device,
    log: Callable[[str], None],
    flops: dict[tuple[str, int], list[int]],
    defaults: dict[int, str],
    time_cap: float = 60.0,
    seed: int = 0,
) -> tuple[dict[tuple[str, int], list[float | None]], dict]:
    """Rounds of one timed step per (draw, configuration), after one warm-up: per draw the
    configurations run back to back in the order of ``configs`` (:func:`timing_order`),
    reversed every other time so that neither of two neighbours always goes first; the i-th
    timings of two configurations (round ``i // draws``, draw ``i % draws``) are a pair.
    Rounds go on until the ratios with a target are within 5 % and clear of their targets,
    or ``time_cap`` seconds have passed (at least ``sizes.passes`` rounds). After those, a
    round times CT and the counts of sub-networks still open (:func:`counts_to_time`); a
    count left out of a round has ``None`` for it, its pairs the rounds that timed both."""
    for k, n in configs:  # warm-up
        step(k, n, 0)()
    times: dict[tuple[str, int], list[float | None]] = {c: [] for c in configs}

    judged = once_per_round(
        lambda: judged_steps(step_comparisons(times, flops, sizes.draws, seed), defaults),
        lambda: len(times[("ct", 0)]),
    )

    asked_at_cap: list[bool] = []  # the stopping rule asks open_at_cap only at or past the cap

    def open_at_cap() -> bool:
        asked_at_cap.append(True)
        return open_on_few_pairs(judged().values())

    def one_round() -> None:
        p = len(times[("ct", 0)]) // sizes.draws
        counts = (
            counts_to_time(judged(), bool(asked_at_cap)) if p >= max(MIN_ROUNDS, sizes.passes) else set(SUBNET_COUNTS)
        )
        chain = [c for c in configs if c[0] == "ct" or c[1] in counts]
        for r in range(sizes.draws):
            for c in configs:
                times[c].append(None)
            for c in chain if (p * sizes.draws + r) % 2 == 0 else chain[::-1]:
                times[c][-1] = wall(step(*c, r), device)
        log(f"  round {p + 1}: CT {sum(times[('ct', 0)][-sizes.draws :]):.3f} s over {sizes.draws} steps")

    with set_up_objects_frozen():  # the models' set-up is not collected in the timed rounds
        for _ in range(max(0, sizes.passes - MIN_ROUNDS)):  # a larger minimum than the stopping rule's own
            one_round()
        start = time.perf_counter()
        stop = repeat_until_precise(
            one_round,
            lambda: [r for r, _, _ in judged().values()],
            lambda: time.perf_counter() - start,
            time_cap,
            decided=lambda: all(verdict(*v) != "undecided" for v in judged().values()),
            open_at_cap=open_at_cap,
        )
    return times, {**stop, **_rounds_timed(times, sizes.draws)}


def _rounds_timed(times: dict[tuple[str, int], list[float | None]], draws: int) -> dict:
    """All rounds (the minimum's included), and the rounds each count of sub-networks was timed in."""
    counts = {str(n): sum(t is not None for t in times[("st", n)]) // draws for n in SUBNET_COUNTS}
    return {"rounds": len(times[("ct", 0)]) // draws, "rounds_by_count": counts}


def counts_to_time(judged: dict[str, tuple[Ratio, float, bool]], past_cap: bool = False) -> set[int]:
    """The numbers of sub-networks the next round times (``judged``: :func:`judged_steps`):
    those with a verdict still undecided or an interval wider than twice the precision goal
    (a verdict decided on a few wide rounds, e.g. 0.96 [0.68, 1.09] against 1.10, is met by
    luck as much as by its speed); when none is, those not yet within the goal. A settled
    count waits, so the open ones get the rounds. Past the time cap, the counts that hold
    the rounds there (:func:`open_on_few_pairs`), so none waits while the rounds go on for it."""

    def names(n: int) -> tuple[str, str]:
        return f"wall_over_flops_{n}", f"vs_reference_{n}"

    holding = {n for n in SUBNET_COUNTS if open_on_few_pairs(judged[k] for k in names(n))}
    if past_cap and holding:
        return holding

    def within(n: int, goal: float) -> bool:
        return precise_enough([judged[k][0] for k in names(n)], goal)

    undecided = {n for n in SUBNET_COUNTS if any(verdict(*judged[k]) == "undecided" for k in names(n))}
    open_counts = undecided | {n for n in SUBNET_COUNTS if not within(n, 2 * REL_HALF_WIDTH)}
    return open_counts or {n for n in SUBNET_COUNTS if not within(n, REL_HALF_WIDTH)}


def _round_sums(times: list[float | None], draws: int) -> list[float]:
    """Per round that timed the configuration, its draws' seconds summed."""
    rounds = [times[i : i + draws] for i in range(0, len(times), draws)]
    return [sum(r) for r in rounds if None not in r]


def step_comparisons(
    times: dict[tuple[str, int], list[float | None]], flops: dict[tuple[str, int], list[int]], draws: int, seed: int = 0
) -> dict[str, Ratio]:
    """The paired ratios the bench reports on the training steps, every pair taken over its
    own draw's FLOPs (seconds per FLOP of A over B): draws of shallow and deep sub-networks
    cost, and save, different amounts, and unnormalised pairs would fall into one cluster per
    draw, a median jumping between them. ``wall_over_flops`` is that ratio itself; a time
    ratio (``X_over_Y``) is it times the two configurations' FLOP ratio over all draws."""

    def paired(a: tuple[str, int], b: tuple[str, int]) -> Ratio:  # the rounds that timed both
        pairs = [(i, u, v) for i, (u, v) in enumerate(zip(times[a], times[b])) if u is not None and v is not None]
        num = [u / flops[a][i % draws] for i, u, _ in pairs]
        return paired_ratio(num, [v / flops[b][i % draws] for i, _, v in pairs], seed)

    def time_ratio(a: tuple[str, int], b: tuple[str, int]) -> Ratio:
        return paired(a, b).scaled(sum(flops[b]) / sum(flops[a]))

    ct = ("ct", 0)
    out = {}
    for n in SUBNET_COUNTS:
        st, low, ref = ("st", n), ("low", n), ("reference", n)
        out[f"st{n}_over_ct"] = time_ratio(st, ct)
        out[f"low{n}_over_ct"] = time_ratio(low, ct)
        out[f"reference{n}_over_st{n}"] = time_ratio(ref, st)
        out[f"low{n}_over_st{n}"] = time_ratio(low, st)
        out[f"wall_over_flops{n}"] = paired(st, ct)
        out[f"low{n}_wall_over_flops"] = paired(low, ct)
        out[f"reference{n}_over_low{n}"] = time_ratio(ref, low)
    return out


def _step_name(kind: str, n: int) -> str:
    return "ct" if kind == "ct" else f"{kind}{n}"


def _per_count(value: Callable[[int], float]) -> dict[str, float]:
    """``value(n)`` for each number of sub-networks, keyed by it as text."""
    return {str(n): value(n) for n in SUBNET_COUNTS}


def judged_steps(r: dict[str, Ratio], defaults: dict[int, str]) -> dict[str, tuple[Ratio, float, bool]]:
    """The step ratios with a target, by verdict name: ``(ratio, target, higher is better)``
    for the default step's wall over FLOP ratio and for the reference way over it."""
    out = {}
    for n in SUBNET_COUNTS:
        own = defaults[n]
        wall = r[f"wall_over_flops{n}" if own == "st" else f"low{n}_wall_over_flops"]
        out[f"wall_over_flops_{n}"] = (wall, WALL_OVER_FLOPS_TARGET, False)
        out[f"vs_reference_{n}"] = (r[f"reference{n}_over_{own}{n}"], 1.0, True)
    return out


def _step_ratios(
    times: dict[tuple[str, int], list[float | None]],
    flops: dict[tuple[str, int], list[int]],
    draws: int,
    defaults: dict[int, str],
    seed: int,
) -> dict:
    """ST against CT, the reference way against ST and the per-sub-network backward against CT
    and the joint step: paired wall-time ratios (median with interval) next to the FLOP
    ratios; the verdicts are those of the step `stimulative train` takes by default."""
    ct = ("ct", 0)
    r = step_comparisons(times, flops, draws, seed)
    flop_ratio = {n: sum(flops[("st", n)]) / sum(flops[ct]) for n in SUBNET_COUNTS}
    judged = judged_steps(r, defaults)
    default_wall_over_flops = {n: judged[f"wall_over_flops_{n}"][0] for n in SUBNET_COUNTS}
    vs_reference = {n: judged[f"vs_reference_{n}"][0] for n in SUBNET_COUNTS}
    verdicts = {name: verdict(*v) for name, v in judged.items()}
    n = max(SUBNET_COUNTS)
    # low/joint > 1 throughout: the joint step is faster; < 1 throughout: the per-sub-network one is
    faster = {"met": "joint", "missed": "low_memory"}.get(verdict(r[f"low{n}_over_st{n}"], 1.0, True), "undecided")
    return {
        "st_over_ct_wall": _per_count(lambda n: r[f"st{n}_over_ct"].value),
        "st_over_ct_flops": _per_count(lambda n: flop_ratio[n]),
        "wall_over_flops": _per_count(lambda n: r[f"wall_over_flops{n}"].value),
        "default_wall_over_flops": _per_count(lambda n: default_wall_over_flops[n].value),
        "reference_over_ct_flops": _per_count(lambda n: sum(flops[("reference", n)]) / sum(flops[ct])),
        "vs_reference_speedup": _per_count(lambda n: vs_reference[n].value),
        "vs_reference_flop_saving": _per_count(lambda n: sum(flops[("reference", n)]) / sum(flops[("st", n)])),
        # the per-sub-network backward (--backward per-subnet): same FLOPs as the joint step
        "low_memory_over_ct_wall": _per_count(lambda n: r[f"low{n}_over_ct"].value),
        "low_memory_wall_over_flops": _per_count(lambda n: r[f"low{n}_wall_over_flops"].value),
        f"faster_step_{n}": faster,
        "intervals": {k: v.to_dict() for k, v in r.items()},
        "verdicts": verdicts,
    }


def model_in_chans(model: ElasticNet) -> int:
    first = next(m for m in model.stem.modules() if isinstance(m, torch.nn.Conv2d))
    return first.in_channels


def model_classes(model: ElasticNet) -> int:
    last = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    return last.out_features


# ---------------------------------------------------------------- all-sub-network evaluation


@torch.no_grad()
def naive_all(
    model: ElasticNet, specs: Sequence[SubnetSpec], inputs, calibration, bn: str
) -> tuple[list, float, float]:
    """:func:`stimulative.evaluation.walk.naive_subnet_logits` for every spec, timing its two parts
    (setting up the spec's BN statistics, then inference): ``(logits per spec, calibration
    seconds, inference seconds)``."""
    out, t_cal, t_inf = [], 0.0, 0.0
    for spec in specs:
        t0 = time.perf_counter()
        with subnet_bn(model, spec, calibration, bn):
            t1 = time.perf_counter()
            out.append([model(x, spec) for x in inputs])
            t_inf += time.perf_counter() - t1
        t_cal += t1 - t0
    return out, t_cal, t_inf


@torch.no_grad()
def shared_all(
    model: ElasticNet, specs: Sequence[SubnetSpec], inputs, calibration, bn: str
) -> tuple[list, float, float]:
    """The shared walk over every spec: ``(logits per spec, calibration s, inference s)``."""
    out: list[list] = [[] for _ in specs]
    t0 = time.perf_counter()
    with SubnetWalk(model, specs, calibration, bn) as walk:
        t1 = time.perf_counter()
        for x in inputs:
            for indices, logits in walk(x):
                for i in indices:
                    out[i].append(logits)
        t2 = time.perf_counter()
    return out, t1 - t0, t2 - t1


def block_runs(specs: Sequence[SubnetSpec]) -> dict[str, int]:
    """Blocks run per image: one sub-network at a time vs once per distinct prefix (the
    nodes of the walk's tree). A count, no bound: the time-weighted limit comes from
    :func:`stimulative.tools.bench_eval_parts.eval_parts`."""
    return {"naive": sum(len(spec.flat()) for spec in specs), "shared": len(prefixes(specs))}


def max_abs_diff(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> float:
    return max(max((u - v).abs().max().item() for u, v in zip(xs, ys)) for xs, ys in zip(a, b))


def bench_eval(
    model: ElasticNet,
    sizes: Sizes,
    device: torch.device,
    seed: int,
    log: Callable[[str], None],
    time_cap: float = 60.0,
    verdict_cap: float = 60.0,
) -> dict:
    """Parts c and d (evaluation) of one model; ``verdict_cap``: the cap of the comparison
    with a target (every sub-network, ``subnet`` BN), ``time_cap`` the others'."""
    arch = model.architecture
    space = (
        SamplingSpace.from_min_depths(arch, sizes.eval_min_depths)
        if sizes.eval_min_depths
        else SamplingSpace.default(arch)
    )
    specs = list(enumerate_subnets(space, arch))
    inputs, calibration = _eval_batches(model, sizes, device, seed)
    model.eval()
    naive_all(model, specs[-1:], inputs, calibration, "subnet")  # warm-up
    out: dict = {
        "subnets": len(specs),
        "space_min_depths": [min(d) for d in space.depths],
        "eval_images": sizes.eval_images,
        "calib_images": sizes.calib_images,
        "block_runs": block_runs(specs),
    }
    for bn in ("subnet", "running"):

        def measure(naive: bool, bn: str = bn) -> dict:
            # the module seconds are taken in every round, beside the two ways, so the limit is paired too
            m = naive_against_shared(model, specs, inputs, calibration, bn, bn == "subnet", naive)
            out["module_seconds"] = module_seconds(model, inputs, calibration, device)  # the last round's is kept
            return {**m, "perfect_seconds": perfect_seconds(out["module_seconds"], specs, bn)}

        judged = bn == "subnet"  # the verdict's comparison: on while undecided, up to verdict_cap
        judge = (lambda r: eval_verdict(r["speedup"], r["fraction_of_limit"])) if judged else None
        out[bn] = repeated(measure, verdict_cap if judged else time_cap, seed, judge)
        log(
            f"  {bn} BN: naive {out[bn]['naive_seconds']:.2f} s, shared {out[bn]['shared_seconds']:.2f} s, "
            f"max |dlogit| {out[bn]['max_abs_diff']:.1e}"
        )
    out["limit"] = {
        bn: eval_parts(out["module_seconds"], specs, out[bn], out["block_runs"], bn) for bn in ("subnet", "running")
    }
    out["peak_memory_mb"] = eval_peak_memory(model, specs, inputs, calibration, device)
    # destruction sweep: the full network without one block, for every skippable block
    deletions = [delete_blocks(arch, [b]) for b in skippable_blocks(arch)]
    out["deletion"] = {
        "subnets": len(deletions),
        **repeated(
            lambda naive: naive_against_shared(model, deletions, inputs, calibration, "running"), time_cap, seed
        ),
    }
    return out


def eval_peak_memory(model: ElasticNet, specs: Sequence[SubnetSpec], inputs, calibration, device) -> dict:
    """Peak MB of evaluating the full network naively and of the shared walk over ``specs``."""
    full = [model.architecture.full()]
    return {
        "naive_one_subnet": peak_memory(lambda: naive_all(model, full, inputs, calibration, "subnet"), device) / 2**20,
        "shared_all_subnets": peak_memory(lambda: shared_all(model, specs, inputs, calibration, "subnet"), device)
        / 2**20,
        "note": "naive frees everything between sub-networks: its peak is one sub-network's (the full network's); "
        "the shared walk's covers the whole walk",
    }


def _eval_batches(
    model: ElasticNet, sizes: Sizes, device: torch.device, seed: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Random evaluation and calibration images, in chunks of at most 500."""
    gen = torch.Generator().manual_seed(seed + 1)
    shape = (model_in_chans(model), sizes.image, sizes.image)
    chunk = max(1, min(sizes.eval_images, 500))
    inputs = [t.to(device) for t in torch.randn(sizes.eval_images, *shape, generator=gen).split(chunk)]
    calibration = [t.to(device) for t in torch.randn(sizes.calib_images, *shape, generator=gen).split(chunk)]
    return inputs, calibration


def naive_against_shared(
    model: ElasticNet,
    specs: Sequence[SubnetSpec],
    inputs,
    calibration,
    bn: str,
    with_calibration: bool = False,
    naive: bool = True,
) -> dict:
    """Seconds of the naive and the shared way over ``specs``, the speedup, the largest
    logit difference; ``with_calibration``: the calibration part's seconds and speedup too;
    ``naive=False``: the shared way's seconds only. Naive first: the shared way then sits
    between it and the module timings that follow (:func:`bench_eval`), both its pairs."""
    out: dict = {}
    if naive:
        logits, n_cal, n_inf = naive_all(model, specs, inputs, calibration, bn)
        out["naive_seconds"] = n_cal + n_inf
    shared, s_cal, s_inf = shared_all(model, specs, inputs, calibration, bn)
    out["shared_seconds"] = s_cal + s_inf
    if with_calibration:
        out["shared_calibration_seconds"] = s_cal
    if naive:
        out.update(speedup=out["naive_seconds"] / out["shared_seconds"], max_abs_diff=max_abs_diff(logits, shared))
    if naive and with_calibration:
        out.update(naive_calibration_seconds=n_cal, calibration_speedup=n_cal / s_cal)
    return out


def repeated(
    measure: Callable[[bool], dict], time_cap: float, seed: int, judge: Callable[[dict[str, Ratio]], str] | None = None
) -> dict:
    """Rounds of ``measure(naive)`` (the shared way, the naive way when ``naive`` and the
    perfect walk's estimate when measured) until the speedup's interval (and the fraction of
    the limit's) is within 5 % and ``judge(ratios)`` (the verdict) is not undecided, or
    ``time_cap``: the first round's entry with the median seconds, the median per-round
    speedup and its interval, and those of the limit and its fraction. With a ``judge``, the
    naive way (most of a round) is left out once it cannot help (:func:`naive_needed`): the
    fraction of the limit needs no naive timing, so the rest of the time buys it more pairs."""
    rounds: list[dict] = []
    start = time.perf_counter()
    ratios_now = once_per_round(lambda: _round_ratios(rounds, seed), lambda: len(rounds))

    def one_round() -> None:
        naive = judge is None or naive_needed(rounds, ratios_now, time.perf_counter() - start, time_cap)
        rounds.append(measure(naive))

    def measured() -> list[Ratio]:  # without the naive way, the fraction of the limit is all that still moves
        r = ratios_now()
        return list(r.values()) if "naive_seconds" in rounds[-1] else [r["fraction_of_limit"]]

    with set_up_objects_frozen():
        stop = repeat_until_precise(
            one_round,
            measured,
            lambda: time.perf_counter() - start,
            time_cap,
            decided=lambda: judge is None or judge(ratios_now()) != "undecided",
        )
    timed = [r for r in rounds if "naive_seconds" in r]  # the first rounds: naive is never taken up again
    out = dict(rounds[0])
    for key in ("naive_seconds", "naive_calibration_seconds", "shared_seconds", "shared_calibration_seconds"):
        if key in out:
            out[key] = median([r[key] for r in (timed if key.startswith("naive") else rounds)])
    ratios = _round_ratios(rounds, seed)
    out["speedup"], out["speedup_interval"] = ratios["speedup"].value, ratios["speedup"].to_dict()
    if "perfect_seconds" in out:
        out["perfect_seconds"] = median([r["perfect_seconds"] for r in rounds])
        out["limit_interval"] = ratios["limit"].to_dict()
        out["fraction_of_limit_interval"] = ratios["fraction_of_limit"].to_dict()
    if "calibration_speedup" in out:
        cal = [r["naive_calibration_seconds"] for r in timed], [r["shared_calibration_seconds"] for r in timed]
        out["calibration_speedup"] = paired_ratio(*cal, seed).value
    out["max_abs_diff"] = max(r["max_abs_diff"] for r in timed)
    out["repeats"] = {**stop, "naive_rounds": len(timed)}
    out["round_seconds"] = {
        k: [r[f"{k}_seconds"] for r in rounds if f"{k}_seconds" in r]
        for k in ("naive", "shared", "perfect")
        if f"{k}_seconds" in out
    }
    return out


def naive_needed(rounds: list[dict], ratios: Callable[[], dict[str, Ratio]], elapsed: float, time_cap: float) -> bool:
    """Whether the next round of the judged evaluation times the naive way: in the first
    rounds; then until its speedup has 6 pairs (a 95 % interval), within the cap; then while
    the speedup is unsettled (undecided against 5x, or wider than 5 %), for half the cap at
    most. Never again once left out, so its rounds are the first ones."""
    if len(rounds) < MIN_ROUNDS:
        return True
    if "naive_seconds" not in rounds[-1]:
        return False
    if len(rounds) < MIN_PAIRS:
        return elapsed < time_cap
    speedup = ratios()["speedup"]
    unsettled = verdict(speedup, SHARED_EVAL_TARGET, True) == "undecided" or not precise_enough([speedup])
    return unsettled and elapsed < time_cap / 2


def _round_ratios(rounds: list[dict], seed: int) -> dict[str, Ratio]:
    """Per round: the speedup (naive over shared seconds) and, with the perfect walk's
    estimate, the limit (naive over perfect) and the fraction of it (perfect over shared).
    The naive way's rounds are the first ones: its ratios pair them with the same rounds."""
    shared = [r["shared_seconds"] for r in rounds]
    naive = [r["naive_seconds"] for r in rounds if "naive_seconds" in r]
    k = len(naive)
    out = {"speedup": paired_ratio(naive, shared[:k], seed)}
    if "perfect_seconds" in rounds[0]:
        perfect = [r["perfect_seconds"] for r in rounds]
        out["limit"] = paired_ratio(naive, perfect[:k], seed)
        out["fraction_of_limit"] = paired_ratio(perfect, shared, seed)
    return out


# ---------------------------------------------------------------- the command


def prepare_model(name: str, cfg: BenchConfig, device: torch.device) -> ElasticNet:
    """The model on the device in the memory format asked for and compiled as training
    compiles it (``--compile``: stem, head and each block on its own, so a new sub-network
    does not recompile; a whole-network graph would bake one sub-network in)."""
    torch.manual_seed(cfg.seed)
    model = create_model(name, num_classes=cfg.num_classes).to(device)
    model = prepare_for_speed(model, cfg.channels_last, compile=False)
    if cfg.compile_mode:
        compile_blocks(model, mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
    return model


def bench_header(cfg: BenchConfig, device: torch.device) -> dict:
    return {
        "quick": cfg.quick,
        "machine": machine_info(device),
        "load_average_start": _load(),
        "options": {
            "amp": cfg.amp,
            "channels_last": cfg.channels_last,
            "compile_mode": cfg.compile_mode,
            "time_cap_seconds": {
                "with_target": cfg.step_cap(),
                "trainer": cfg.trainer_cap(),
                "without_target": cfg.cap(),
            },
            "timer": timer_kind(device),
        },  # fmt: skip
        "memory_method": "CUDA: torch.cuda.max_memory_allocated above the start"
        if device.type == "cuda"
        else "CPU: peak bytes held by the PyTorch CPU allocator during the call, above those held before "
        "(torch.profiler memory events)",
        "timing_method": "rounds of one step per (configuration, draw), configurations interleaved; ratios are "
        "medians of per-round ratios with a 95 % bootstrap interval, repeated until its half-width is within "
        "5 % on at least 6 pairs and, with a target, the interval is clear of it, or the time cap (a comparison "
        "with a target still undecided or wider than 5 % goes on to 48 pairs, up to 3x the cap; the trainer's "
        "while undecided); after 3 rounds a round times only the configurations of verdicts still open: "
        "undecided or wider than 10 % (null where left out; pairs are the rounds that timed both); the set-up's "
        "objects frozen for the garbage collector during the rounds; one step = forward, loss, zero_grad, "
        "backward, optimizer.step()",
        "targets": {
            "wall_over_flops_max": WALL_OVER_FLOPS_TARGET,
            "shared_eval_speedup_min": SHARED_EVAL_TARGET,
            "shared_eval_fraction_of_limit_min": SHARED_EVAL_FRACTION_OF_LIMIT,
            "max_abs_diff_max": EQUAL_LOGITS_TOL,
            "ct_trainer_over_bare_min": CT_OVER_BARE_TARGET,
            "st_trainer_wall_over_flops_max": ST_WALL_OVER_FLOPS_TARGET,
        },
        "models": {},
    }


def bench_model(name: str, cfg: BenchConfig, device: torch.device, log: Callable[[str], None]) -> dict:
    sizes = cfg.sizes_of(name)
    log(
        f"{name}: batch {sizes.batch}, {sizes.image}x{sizes.image}, {sizes.draws} draws, caps {cfg.step_cap():.0f} s "
        f"(steps, evaluation's verdict), {cfg.cap():.0f} s (other evaluation)"
    )
    model = prepare_model(name, cfg, device)
    t = time.perf_counter()
    entry: dict = {"sizes": asdict(sizes)}
    entry.update(bench_steps(model, sizes, device, cfg.seed, log, cfg.step_cap(), cfg.amp))
    if not cfg.skip_eval:
        ev = bench_eval(model, sizes, device, cfg.seed, log, cfg.cap(), cfg.step_cap())
        entry["eval"] = ev
        entry["shared_eval_speedup"] = ev["subnet"]["speedup"]
        entry["shared_eval_max_abs_diff"] = max(
            ev["subnet"]["max_abs_diff"], ev["running"]["max_abs_diff"], ev["deletion"]["max_abs_diff"]
        )
        entry["verdicts"]["shared_eval_speedup"] = eval_verdict(
            _ratio(ev["subnet"]["speedup_interval"]), _ratio(ev["subnet"]["fraction_of_limit_interval"])
        )
    entry["seconds"] = time.perf_counter() - t
    entry["targets_met"] = targets_met(entry)
    return entry


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict:
    device = torch.device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    results = bench_header(cfg, device)
    start = time.perf_counter()
    for name in cfg.models:
        results["models"][name] = bench_model(name, cfg, device, log)
    if cfg.trainer:
        log("trainer (resnet20, digits) against a bare loop")
        results["trainer"] = bench_trainer(cfg.work(), cfg.device, cfg.trainer_cap(), log)
    results["seconds"] = time.perf_counter() - start
    results["load_average_end"] = _load()
    return results


def eval_verdict(speedup: Ratio, fraction_of_limit: Ratio) -> str:
    """The shared evaluation's target: at least 5x, or at least 80 % of its limit (a space
    whose limit is below 5x cannot reach 5x). Met when either interval clears its bar,
    missed when neither reaches it, else undecided."""
    verdicts = (
        verdict(speedup, SHARED_EVAL_TARGET, True),
        verdict(fraction_of_limit, SHARED_EVAL_FRACTION_OF_LIMIT, True),
    )
    if "met" in verdicts:
        return "met"
    return "missed" if verdicts == ("missed", "missed") else "undecided"


def _ratio(d: dict) -> Ratio:
    return Ratio(d["value"], d["low"], d["high"], d["pairs"])


def targets_met(entry: dict) -> dict:
    """Met only when the whole interval is on the right side (see ``verdicts`` for met /
    missed / undecided); the logits' equality is exact up to a tolerance, not timed."""
    met = {k: v == "met" for k, v in entry["verdicts"].items()}
    if "shared_eval_max_abs_diff" in entry:
        met["shared_eval_identical"] = entry["shared_eval_max_abs_diff"] <= EQUAL_LOGITS_TOL
    return met


def main(cfg: BenchConfig) -> dict:
    # PyTorch's profiler (the CPU peak memory) logs its start, its stop and a failed GPU query
    # ("ERROR: gpuGetDeviceCount failed") on stderr at every use, read at its first use; the
    # level above its highest (USDT, 5) keeps the bench's log readable, unless the user set one
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    results = run_bench(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(results))
    if cfg.out:
        write_json(cfg.out, results)
        print(f"written {cfg.out}")
    return results
