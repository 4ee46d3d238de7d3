import json
import math

import pytest
import torch

from stimulative.analysis.bound import eq4
from stimulative.analysis.claims import CONTRADICTS, NOT_MEASURED, PARTLY, SUPPORTS, paired_verdict
from stimulative.analysis.destruction import destruction_specs, run_destruction
from stimulative.analysis.kl_tracking import load_kl_tracking, record_kl
from stimulative.analysis.stats import mean_std, quantiles
from stimulative.core.sampling import SamplingSpace, enumerate_subnets
from stimulative.models import create_model


def _tiny_model():
    torch.manual_seed(0)
    model = create_model("resnet20", in_chans=1)
    model.train()
    for _ in range(3):  # give BN running statistics something to hold
        model(torch.randn(32, 1, 8, 8))
    return model.eval()


def test_destruction_specs_cover_every_combination_of_resnet20():
    arch = create_model("resnet20").architecture
    specs = destruction_specs(arch, max_k=4, limit=100)
    assert len(specs["delete_one"]) == 7  # 3 + 2 + 2 skippable blocks
    assert len(specs["delete_k"]) == 7 + 21 + 35 + 35
    by_k = {}
    for _, k, spec in specs["permute_k"]:
        by_k[k] = by_k.get(k, 0) + 1
        arch.validate(spec)
        assert spec != arch.full()  # every permutation moves its blocks
    assert by_k == {2: 3 + 1 + 1, 3: 1}
    sampled = destruction_specs(arch, max_k=4, limit=10, seed=1)
    assert sum(1 for _, k, _ in sampled["delete_k"] if k == 3) == 10
    assert sampled == destruction_specs(arch, max_k=4, limit=10, seed=1)


def test_run_destruction_reports_drops_against_the_intact_network():
    model = _tiny_model()
    x, y = torch.randn(40, 1, 8, 8), torch.randint(10, (40,))
    calib = [torch.randn(30, 1, 8, 8)]
    for bn, c in (("running", []), ("recalibrated", calib)):
        r = run_destruction(model, lambda: [(x, y)], c, bn, max_k=2, limit=5)
        assert r["bn"] == bn
        for kind in ("delete_one", "delete_k", "permute_k"):
            for e in r[kind]:
                assert e["drop"] == pytest.approx(r["intact_top1"] - e["top1"])
        assert len(r["delete_one"]) == 7 and len(r["delete_k"]) == 5 + 5  # C(7,1), C(7,2) > 5: sampled


def test_destruction_coverage_says_what_was_enumerated_and_what_sampled():
    from stimulative.analysis.destruction import destruction_plan

    arch = create_model("resnet20").architecture  # 7 skippable blocks: (3, 2, 2)
    plan = destruction_plan(arch, max_k=4, limit=30)
    delete = plan.coverage["delete_k"]
    assert delete["1"] == {"total": 7, "evaluated": 7, "sampled": False}
    assert delete["2"] == {"total": 21, "evaluated": 21, "sampled": False}
    assert delete["3"] == {"total": 35, "evaluated": 30, "sampled": True}
    assert plan.coverage["permute_k"]["2"] == {"total": 3 + 1 + 1, "evaluated": 5, "sampled": False}
    assert plan.coverage["permute_k"]["4"] == {"total": 0, "evaluated": 0, "sampled": False}
    assert plan.coverage["delete_one"]["1"] == {"total": 7, "evaluated": 7, "sampled": False}
    # the default limit enumerates every combination of ResNet-50's 12 skippable blocks
    r50 = create_model("resnet50").architecture
    assert {k: c["sampled"] for k, c in destruction_plan(r50).coverage["delete_k"].items()} == dict.fromkeys(
        "1234", False
    )
    assert destruction_plan(r50).coverage["delete_k"]["4"]["evaluated"] == math.comb(12, 4)


def test_never_skipped_blocks_follow_the_training_space():
    from stimulative.core.spaces import build_space, never_skipped

    arch = create_model("resnet20").architecture
    assert never_skipped(build_space(arch, ""), arch) == {(0, 0), (1, 0), (2, 0)}
    assert never_skipped(build_space(arch, "2,2,2"), arch) == {(s, b) for s in range(3) for b in range(2)}
    assert never_skipped(build_space(arch, "2,2,3"), arch, "stochastic") == {(1, 0), (2, 0), (2, 1), (2, 2)}
    assert never_skipped(build_space(arch, "2,2,2"), arch, "raw") == {(1, 0), (2, 0)}


def test_destruction_flags_and_summarises_never_skipped_blocks():
    from stimulative.core.spaces import build_space

    model = _tiny_model()
    x, y = torch.randn(40, 1, 8, 8), torch.randint(10, (40,))
    space = build_space(model.architecture, "2,2,2")
    r = run_destruction(model, lambda: [(x, y)], [], "running", max_k=2, space=space)
    assert r["never_skipped_blocks"] == ["0.0", "0.1", "1.1", "2.1"]
    flags = {e["label"]: e["never_skipped"] for e in r["delete_one"]}
    assert flags == {"0.0": True, "0.1": True, "0.2": False, "1.1": True, "1.2": False, "2.1": True, "2.2": False}
    assert {e["label"] for e in r["delete_k"] if e["k"] == 2 and not e["never_skipped"]} == {
        "0.2 1.2",
        "0.2 2.2",
        "1.2 2.2",
    }
    summary = r["summary"]["delete_k"]
    assert summary["all"]["count"] == 7 + 21
    assert summary["without_never_skipped"]["count"] == 3 + 3
    assert summary["with_never_skipped"]["count"] == 4 + 18
    kept = [e["drop"] for e in r["delete_k"] if not e["never_skipped"]]
    assert summary["without_never_skipped"]["mean"] == pytest.approx(sum(kept) / len(kept))
    assert summary["by_k"]["2"]["without_never_skipped"]["count"] == 3
    assert r["coverage"]["delete_k"]["2"] == {"total": 21, "evaluated": 21, "sampled": False}
    json.dumps(r)  # the result stays plain JSON


def test_kl_tracking_records_quantiles_of_all_subnets(tmp_path):
    model = _tiny_model()
    arch = model.architecture
    specs = list(enumerate_subnets(SamplingSpace.default(arch), arch))
    batch = (torch.randn(20, 1, 8, 8), torch.randint(10, (20,)))
    path = tmp_path / "kl_tracking.jsonl"
    for epoch in (0, 1, 1):  # a resumed run may write an epoch twice
        rec = record_kl(model, specs, batch, epoch, str(path))
    assert len(rec["values"]) == 26  # the full network is left out
    assert "3,3,3" not in rec["values"]
    assert rec["min"] <= rec["q1"] <= rec["median"] <= rec["q3"] <= rec["max"]
    assert min(rec["values"].values()) >= 0
    assert [r["epoch"] for r in load_kl_tracking(str(tmp_path))] == [0, 1]


def test_eq4_by_hand():
    per = [{"ce": 0.5, "kl": 0.1}, {"ce": 0.7, "kl": 0.3}]
    results = {"num_classes": 10, "by_bn": {"running": {"main": {"ce": 0.2}, "subnets": {"per_subnet": per}}}}
    e = eq4(results, "running")
    assert e["gap"] == pytest.approx(0.4)
    assert e["eps2"] == pytest.approx(0.2)
    # (eps2 + log N) * e^eps1 + eps1 = 2.502585 * 1.221403 + 0.2 = 3.256664, by hand
    assert e["bound"] == pytest.approx(3.256664, abs=1e-6)
    assert e["bound"] == pytest.approx((0.2 + math.log(10)) / math.exp(-0.2) + 0.2)  # as the paper writes it
    assert e["slack"] == pytest.approx(3.256664 - 0.4, abs=1e-6)
    assert e["holds"]


def test_verdicts_and_statistics():
    assert paired_verdict([1.0, 2.0, 0.5]) == SUPPORTS
    assert paired_verdict([3.0, -1.0, 0.5]) == PARTLY
    assert paired_verdict([-3.0, 1.0, 0.5]) == CONTRADICTS
    ms = mean_std([1.0, 2.0, 3.0])
    assert ms["mean"] == 2.0 and ms["std"] == pytest.approx(1.0)
    assert quantiles([1, 2, 3, 4, 5]) == {"min": 1, "q1": 2, "median": 3, "q3": 4, "max": 5}


def test_tiny_study_end_to_end_with_report(tmp_path):
    """The whole study machinery on a tiny budget: one seed, one epoch, 20 % of the digits."""
    from stimulative.studies.reproduce import reproduce

    out = tmp_path / "study"
    extra = (("train_fraction", 0.2), ("batch_size", 128), ("calib_images", 200), ("eval_bn", "all"))
    a = reproduce(str(out), seeds=(0,), epochs=1, depths=(), progress=False, extra=extra)
    claims = {c["claim"]: c["verdict"] for c in a["claims"]}
    assert len(claims) == 3 * 11 + 2  # 11 claims per BN protocol, then KL tracking and cost
    assert all(v in (SUPPORTS, PARTLY, CONTRADICTS) or v.startswith("not measured") for v in claims.values())
    saved = json.loads((out / "analyses" / "study.json").read_text())
    # Eq. 4 also on the training images, where the paper states it (cached per run)
    on_train = json.loads((out / "runs" / "st-resnet20-s0" / "evaluation_train.json").read_text())
    assert on_train["split"] == "train" and set(saved["eq4_train"]) == {"full", "subnet", "running"}
    assert saved["eq4_train"]["full"]["ST"][0]["eps1"] == pytest.approx(on_train["by_bn"]["full"]["main"]["ce"])
    assert saved["eq4_train"]["full"]["ST"][0]["eps1"] != saved["eq4"]["full"]["ST"][0]["eps1"]  # another split
    for bn in ("full", "subnet", "running"):
        # the verdicts follow the measured per-seed numbers; without deeper networks, depth is not measured
        stats = saved["subnet_stats"][bn]
        st, ct = stats["ST, space of 27"]["main"]["values"], stats["CT (0 sub-networks)"]["main"]["values"]
        assert claims[f"ST improves the full network over CT [{bn} BN]"] == paired_verdict(
            [s - c for s, c in zip(st, ct)]
        )
        assert claims[f"Deeper networks loaf more (gap of 1,1,1 alone vs inside CT grows with depth) [{bn} BN]"] == (
            NOT_MEASURED
        )
    assert saved["loafing"]["subnet"][0]["spec"] == "1,1,1"
    # the space-of-8 run is evaluated over the same 27 sub-networks as the others
    assert saved["subnet_stats"]["running"]["ST, space of 8"]["count"] == 27
    for name in (
        "loafing",
        "loafing_depth",
        "subnet_distribution",
        "space_size",
        "destruction_full",
        "destruction_subnet",
        "destruction_running",
        "kl_tracking",
        "sampling_rules",
    ):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "Claims of the paper" in md and "figures/loafing.png" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 9
    # resumable: a second call trains nothing and gives the same analyses
    again = reproduce(str(out), seeds=(0,), epochs=1, depths=(), progress=False, extra=extra)
    assert again["subnet_stats"] == a["subnet_stats"]
