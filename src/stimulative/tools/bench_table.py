"""The bench's printed table: the point ratios, the ratios at n = 6 with their intervals and
verdicts, peak memory, and the trainer against a bare loop."""

from __future__ import annotations

from .bench_compare import default_step_keys


def format_table(results: dict) -> str:
    rows = [
        f"{'model':<24} {'ST/CT wall':>11} {'ST/CT FLOPs':>12} {'joint w/F':>11} {'per-sub w/F':>12} {'vs ref':>11} "
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
    """Per model and number of sub-networks, the default step's ratios with their 95 %
    intervals and verdicts, and the per-sub-network backward over the joint one; then the
    evaluation speedup beside its limit."""
    rows = [
        f"{'95% interval':<24} {'n':>2} {'default step':>12} {'wall/FLOPs (<=1.10)':>26} {'vs ref (>=1)':>26} "
        f"{'per-sub/joint':>20} {'faster':>10}"
    ]
    for name, e in results["models"].items():
        iv, vd = e["intervals"], e["verdicts"]
        for n, step in e["default_step"].items():
            wall, reference = default_step_keys(step, n)
            rows.append(
                f"{name:<24} {n:>2} {step:>12} {_iv(iv[wall]):>17} {vd[f'wall_over_flops_{n}']:>8} "
                f"{_iv(iv[reference]):>17} {vd[f'vs_reference_{n}']:>8} "
                f"{_iv(iv[f'low{n}_over_st{n}']):>20} {e.get(f'faster_step_{n}', ''):>10}"
            )
    return rows + ["", *eval_rows(results)]


def eval_rows(results: dict) -> list[str]:
    rows = [
        f"{'shared evaluation':<24} {'speedup (>=5x or ...)':>22} {'limit':>6} {'... >=80% of limit':>20} "
        f"{'verdict':>10} {'block runs':>10}"
    ]
    for name, e in results["models"].items():
        ev = e.get("eval")
        if ev:
            lim = ev["limit"]["subnet"]
            f = lim["fraction_of_limit_interval"]
            fraction = f"{f['value']:.0%} [{f['low']:.0%}, {f['high']:.0%}]"
            rows.append(
                f"{name:<24} {_iv(ev['subnet']['speedup_interval']):>22} {lim['limit']:>6.2f} {fraction:>20} "
                f"{e['verdicts']['shared_eval_speedup']:>10} {lim['block_run_ratio']:>10.2f}"
            )
    return rows if len(rows) > 1 else []


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


TRAINER_LINES = (  # ratio key, label
    ("ct_trainer_over_bare_steps", "CT trainer / bare images/s, steps (>= 0.95)"),
    ("ct_trainer_over_bare_same_work", "CT trainer / bare, whole epochs, same validation (>= 0.95)"),
    ("ct_trainer_over_bare_same_work_sums", "  the same from plain sums (machine stalls included)"),
    ("ct_trainer_over_bare_without_validation", "CT trainer whole / bare steps (validating every epoch)"),
    ("st_over_ct_trainer_wall_over_flops", "ST/CT trainer step time per FLOP (FLOP ratio {flops:.2f}) (<= 1.10)"),
)


def trainer_rows(t: dict) -> list[str]:
    r, v = t["ratios"], t["verdicts"]
    rows = [
        f"trainer vs bare loop (resnet20, digits, {t['work']['epochs']} epochs a run, {t['repeats']['rounds']} "
        "rounds, pairs are epochs)"
    ]
    for key, label in TRAINER_LINES:
        text = label.format(flops=t["st_over_ct_flops"])
        rows.append(f"  {text:<62} {_iv(r[key])}  {v.get(key, '')}")
    return rows
