"""The bench's GPU path, as far as a CPU can test it: which timer, autocast, channels-last."""

from __future__ import annotations

import gc

import torch

from stimulative.runtime.measure import set_up_objects_frozen, timer_kind
from stimulative.tools.bench import (
    BenchConfig,
    Sizes,
    _memory_format,
    default_steps,
    prepare_model,
    run_bench,
    with_autocast,
)


def test_cuda_devices_are_timed_with_events() -> None:
    assert timer_kind(torch.device("cuda", 0)) == "cuda_events"
    assert timer_kind(torch.device("cpu")) == "perf_counter"


def test_autocast_bf16_runs_the_step_in_bf16_on_cpu() -> None:
    seen = []
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    step = with_autocast(lambda: seen.append((a @ b).dtype), torch.device("cpu"), "bf16")
    step()
    with_autocast(lambda: seen.append((a @ b).dtype), torch.device("cpu"), "none")()
    assert seen == [torch.bfloat16, torch.float32]


def test_channels_last_reaches_the_model_and_its_inputs() -> None:
    cfg = BenchConfig(models=["resnet20"], channels_last=True)
    model = prepare_model("resnet20", cfg, torch.device("cpu"))
    assert _memory_format(model) == torch.channels_last
    plain = prepare_model("resnet20", BenchConfig(models=["resnet20"]), torch.device("cpu"))
    assert _memory_format(plain) == torch.contiguous_format


def test_a_bf16_channels_last_bench_runs_and_says_so() -> None:
    tiny = Sizes(batch=4, image=8, eval_images=4, calib_images=4, draws=1, passes=1)
    cfg = BenchConfig(
        models=["resnet20"], sizes={"resnet20": tiny}, skip_eval=True, trainer=False, time_cap=0.01,
        amp="bf16", channels_last=True,
    )  # fmt: skip
    out = run_bench(cfg, log=lambda s: None)
    assert out["options"]["amp"] == "bf16" and out["options"]["channels_last"] is True
    assert out["models"]["resnet20"]["repeats"]["rounds"] == 3


def test_compile_mode_compiles_block_by_block_as_training_does(monkeypatch) -> None:
    import stimulative.tools.bench as bench

    calls = []
    monkeypatch.setattr(bench, "compile_blocks", lambda model, mode=None: calls.append(mode))
    prepare_model("resnet20", BenchConfig(models=["resnet20"]), torch.device("cpu"))
    assert calls == []
    prepare_model("resnet20", BenchConfig(models=["resnet20"], compile_mode="default"), torch.device("cpu"))
    prepare_model("resnet20", BenchConfig(models=["resnet20"], compile_mode="max-autotune"), torch.device("cpu"))
    assert calls == [None, "max-autotune"]


def test_the_bench_judges_the_step_training_would_take() -> None:
    # --backward auto: per-sub-network for several sub-networks, but not under fp16's grad scaler
    assert default_steps("none") == {1: "st", 6: "low"}
    assert default_steps("bf16") == {1: "st", 6: "low"}
    assert default_steps("fp16") == {1: "st", 6: "st"}


def test_set_up_objects_are_frozen_for_the_timed_section_only():
    set_up = [[] for _ in range(100)]  # tracked objects made before the timed section
    with set_up_objects_frozen():
        assert gc.get_freeze_count() >= len(set_up)
        inside = gc.get_freeze_count()
        made_inside = [[] for _ in range(100)]
        assert gc.get_freeze_count() == inside  # what the section allocates is collected as usual
    assert gc.get_freeze_count() == 0 and made_inside
