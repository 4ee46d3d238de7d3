"""What the bench, the Pareto front, export and FLOP accounting measure, in one place:
wall time (device synchronised), FLOPs (PyTorch's counter; a multiply-add counts 2),
peak memory and parameter counts."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def set_up_objects_frozen() -> Iterator[None]:
    """Inside, Python's cyclic garbage collector leaves alone the objects that exist on entry
    (collected once, then frozen): a timed section then pays for the collections its own
    allocations cause, not for full scans of a heap that its set-up (models, runs, data built
    just before) has grown, which now and then fall on whichever section is running (76-252
    ms each for the bench's heap of about 400,000 objects)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def timer_kind(device: torch.device) -> str:
    """How :func:`wall` times on ``device``: CUDA events on a GPU (the time the GPU spent,
    without the host's launch jitter), the host clock otherwise."""
    return "cuda_events" if device.type == "cuda" else "perf_counter"


def wall(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by ``fn()`` (the device is synchronised before and after)."""
    if timer_kind(device) == "cuda_events":
        return _cuda_event_seconds(fn, device)
    synchronize(device)
    t = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t


def _cuda_event_seconds(fn: Callable[[], object], device: torch.device) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / 1000.0  # milliseconds


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything ``fn()`` runs (forward and backward), as counted by PyTorch."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes held by PyTorch's allocator during ``fn()`` above those held before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and _is_cpu(e)]
    events.sort(key=lambda e: e.start_ns())
    held = peak = 0
    for e in events:
        held += e.nbytes()
        peak = max(peak, held)
    return int(peak)  # frees of blocks allocated before the call are not reported: peak >= 0


def _is_cpu(event) -> bool:
    kind = event.device_type()
    return getattr(kind, "name", str(kind)).upper().endswith("CPU")


@torch.no_grad()
def forward_flops(module: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one eval-mode forward pass of ``example``."""
    was_training = module.training
    module.eval()
    try:
        return count_flops(lambda: module(example))
    finally:
        module.train(was_training)


def count_params(module: nn.Module) -> int:
    """Parameters the module uses (each shared tensor once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
