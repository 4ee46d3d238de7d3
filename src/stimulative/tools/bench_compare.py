"""Two bench results side by side: every verdict with its interval in each, and whether they
agree (``stimulative bench --compare A.json B.json``). A bench run twice on a quiet machine
should give the same verdicts; this says which did not."""

from __future__ import annotations

import json


def default_step_keys(step: str, n: str) -> tuple[str, str]:
    """The interval keys of the default step ``step`` (joint or per-subnet) with ``n``
    sub-networks: its wall over FLOP ratio, and the reference way over it."""
    own = "st" if step == "joint" else "low"
    return (f"wall_over_flops{n}" if own == "st" else f"low{n}_wall_over_flops"), f"reference{n}_over_{own}{n}"


def verdict_intervals(results: dict) -> dict[str, tuple[str, dict]]:
    """``"model/verdict"`` (and ``"trainer/ratio"``) -> (verdict, the interval it was judged by)."""
    out: dict[str, tuple[str, dict]] = {}
    for name, e in results["models"].items():
        iv = e["intervals"]
        for n, step in e.get("default_step", {"1": "joint", "6": "joint"}).items():
            wall, reference = default_step_keys(step, n)
            out[f"{name}/wall_over_flops_{n}"] = (e["verdicts"][f"wall_over_flops_{n}"], iv[wall])
            out[f"{name}/vs_reference_{n}"] = (e["verdicts"][f"vs_reference_{n}"], iv[reference])
        if "shared_eval_speedup" in e["verdicts"]:
            out[f"{name}/shared_eval_speedup"] = (
                e["verdicts"]["shared_eval_speedup"],
                e["eval"]["subnet"]["speedup_interval"],
            )
    trainer = results.get("trainer")
    if trainer:
        for key, v in trainer["verdicts"].items():
            out[f"trainer/{key}"] = (v, trainer["ratios"][key])
    return out


def _iv(d: dict) -> str:
    return f"{d['value']:.2f} [{d['low']:.2f}, {d['high']:.2f}]"


def compare(a: dict, b: dict) -> tuple[list[str], int]:
    """The table's lines and how many verdicts differ (a verdict in one only counts as differing)."""
    va, vb = verdict_intervals(a), verdict_intervals(b)
    rows = [f"{'verdict':<52} {'first':>30} {'second':>30}  same"]
    differ = 0
    for key in sorted(set(va) | set(vb)):
        left = f"{_iv(va[key][1])} {va[key][0]}" if key in va else "-"
        right = f"{_iv(vb[key][1])} {vb[key][0]}" if key in vb else "-"
        same = key in va and key in vb and va[key][0] == vb[key][0]
        differ += not same
        rows.append(f"{key:<52} {left:>30} {right:>30}  {'yes' if same else 'NO'}")
    rows.append(f"{len(rows) - 1 - differ} of {len(rows) - 1} verdicts agree")
    return rows, differ


def compare_files(first: str, second: str) -> int:
    """Print the comparison of two bench JSON files; 0 when every verdict agrees, else 1."""
    loaded = []
    for path in (first, second):
        try:
            with open(path) as fh:
                loaded.append(json.load(fh))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--compare: cannot read {path!r} as a bench result ({e})") from None
        if "models" not in loaded[-1]:
            raise ValueError(f"--compare: {path!r} is not a `stimulative bench --out` file (no 'models')")
    rows, differ = compare(*loaded)
    print("\n".join(rows))
    return 1 if differ else 0
