"""The bench's printed table: the point ratios, the ratios at n = 6 with their intervals and
verdicts, peak memory, and the trainer against a bare loop."""

from __future__ import annotations


def format_table(results: dict) -> str:
    rows = [
        f"{'model':<24} {'ST/CT wall':>11} {'ST/CT FLOPs':>12} {'wall/FLOPs':>11} {'low-mem w/F':>12} {'vs ref':>11} "
        f"{'eval x':>7} {'calib x':>8} {'del x':>6} {'max|dlogit|':>11}",
        f"{'':<24} {'1 / 6':>11} {'1 / 6':>12} {'1 / 6':>11} {'1 / 6':>12} {'1 / 6':>11}",
    ]
    for name, e in results["models"].items():
        pair = lambda d: f"{d['1']:.2f}/{d['6']:.2f}"  # noqa: E731
        ev = e.get("eval")
        rows.append(
            f"{name:<24} {pair(e['st_over_ct_wall']):>11} {pair(e['st_over_ct_flops']):>12} "
            f"{pair(e['wall_over_flops']):>11} "
            f"{pair(e['low_memory_wall_over_flops']):>12} {pair(e['vs_reference_speedup']):>11} "
            + (
                f"{ev['subnet']['speedup']:>7.2f} {ev['subnet']['calibration_speedup']:>8.2f} "
                f"{ev['deletion']['speedup']:>6.2f} {e['shared_eval_max_abs_diff']:>11.1e}"
                if ev
                else ""
            )
        )
    rows += ["", *interval_rows(results), "", *memory_rows(results)]
    if "trainer" in results:
        rows += ["", *trainer_rows(results["trainer"])]
    return "\n".join(rows)


def _iv(d: dict) -> str:
    return f"{d['value']:.2f} [{d['low']:.2f}, {d['high']:.2f}]"


def interval_rows(results: dict) -> list[str]:
    """Per model, n = 6: the ratios with their 95 % intervals and verdicts; the faster of the
    joint and the ``--low-memory`` step; the evaluation speedup (subnet BN) beside its
    time-weighted limit, the fraction of it, and the block-run count ratio."""
    rows = [
        f"{'n = 6, 95% interval':<24} {'wall/FLOPs (<=1.10)':>26} {'vs ref (>=1)':>26} {'low-mem/joint':>20} "
        f"{'faster':>10} {'eval x':>20} {'limit':>6} {'of limit':>8} {'block runs':>10}"
    ]
    for name, e in results["models"].items():
        iv, vd = e["intervals"], e["verdicts"]
        line = (
            f"{name:<24} {_iv(iv['wall_over_flops6']):>17} {vd['wall_over_flops_6']:>8} "
            f"{_iv(iv['reference6_over_st6']):>17} {vd['vs_reference_6']:>8} {_iv(iv['low6_over_st6']):>20} "
            f"{e['faster_step_6']:>10}"
        )
        ev = e.get("eval")
        if ev:
            lim = ev["limit"]["subnet"]
            line += f" {_iv(ev['subnet']['speedup_interval']):>20} {lim['limit']:>6.2f} "
            line += f"{lim['fraction_of_limit']:>8.0%} {lim['block_run_ratio']:>10.2f}"
        rows.append(line)
    return rows


def memory_rows(results: dict) -> list[str]:
    rows = [
        f"{'peak memory (MB)':<24} {'CT':>7} {'ST1':>7} {'ref1':>7} {'ST6':>7} {'ref6':>7} {'low6':>7} "
        f"{'naive eval':>11} {'shared eval':>12}"
    ]
    for name, e in results["models"].items():
        m = e["peak_memory_mb"]
        ev = e.get("eval", {}).get("peak_memory_mb")
        rows.append(
            f"{name:<24} {m['ct']:>7.0f} {m['st1']:>7.0f} {m['reference1']:>7.0f} {m['st6']:>7.0f} "
            f"{m['reference6']:>7.0f} {m['low6']:>7.0f} "
            + (f"{ev['naive_one_subnet']:>11.0f} {ev['shared_all_subnets']:>12.0f}" if ev else "")
        )
    return rows


def trainer_rows(t: dict) -> list[str]:
    r, v = t["ratios"], t["verdicts"]
    return [
        f"trainer vs bare loop (resnet20, digits, {t['work']['epochs']} epochs, {t['repeats']['rounds']} rounds)",
        f"  CT trainer / bare images/s, steps only (>= 0.95):        {_iv(r['ct_trainer_over_bare_steps'])}  "
        f"{v['ct_trainer_over_bare_steps']}",
        f"  CT trainer / bare images/s, with checkpoints+validation: {_iv(r['ct_trainer_over_bare_train_seconds'])}  "
        f"{v['ct_trainer_over_bare_train_seconds']}",
        f"  ST/CT trainer wall over FLOPs {t['st_over_ct_flops']:.2f} (<= 1.10):           "
        f"{_iv(r['st_over_ct_trainer_wall_over_flops'])}  {v['st_over_ct_trainer_wall_over_flops']}",
    ]
