"""Two bench results side by side: which verdicts agree, with the intervals they were judged by."""

from __future__ import annotations

import json

from stimulative.cli import main as cli_main
from stimulative.tools.bench_compare import compare, verdict_intervals


def _iv(value: float, low: float, high: float) -> dict:
    return {"value": value, "low": low, "high": high, "pairs": 9, "rel_half_width": (high - low) / 2 / value}


def result(wall6: str, trainer_steps: str) -> dict:
    intervals = {
        "wall_over_flops1": _iv(1.0, 0.97, 1.03),
        "reference1_over_st1": _iv(1.2, 1.1, 1.3),
        "low6_wall_over_flops": _iv(1.08, 1.02, 1.14),
        "reference6_over_low6": _iv(1.4, 1.3, 1.5),
    }
    verdicts = {
        "wall_over_flops_1": "met",
        "vs_reference_1": "met",
        "wall_over_flops_6": wall6,
        "vs_reference_6": "met",
    }
    trainer = {
        "verdicts": {"ct_trainer_over_bare_steps": trainer_steps},
        "ratios": {"ct_trainer_over_bare_steps": _iv(0.98, 0.96, 1.0)},
    }
    return {
        "models": {
            "m": {"intervals": intervals, "verdicts": verdicts, "default_step": {"1": "joint", "6": "per-subnet"}}
        },
        "trainer": trainer,
    }


def test_each_verdict_is_read_with_the_interval_of_the_default_step() -> None:
    v = verdict_intervals(result("undecided", "met"))
    assert v["m/wall_over_flops_6"] == ("undecided", _iv(1.08, 1.02, 1.14))  # the per-subnet step's
    assert v["m/vs_reference_6"][1]["value"] == 1.4
    assert v["trainer/ct_trainer_over_bare_steps"][0] == "met"
    assert len(v) == 5


def test_differing_verdicts_are_counted_and_named(tmp_path, capsys) -> None:
    rows, differ = compare(result("undecided", "met"), result("met", "met"))
    assert differ == 1
    assert [r.split()[0] for r in rows if r.endswith("NO")] == ["m/wall_over_flops_6"]
    assert rows[-1] == "4 of 5 verdicts agree"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(result("met", "met")))
    b.write_text(json.dumps(result("met", "met")))
    assert cli_main(["bench", "--compare", str(a), str(b)]) == 0
    b.write_text(json.dumps(result("missed", "met")))
    assert cli_main(["bench", "--compare", str(a), str(b)]) == 1
    assert cli_main(["bench", "--compare", str(a), str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
