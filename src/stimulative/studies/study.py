"""Turn the study's run folders into analyses (JSON), figures and the claims table."""

from __future__ import annotations

import contextlib
import io
import os

from ..analysis.bound import eq4
from ..analysis.claims import claims_table
from ..analysis.kl_tracking import load_kl_tracking
from ..analysis.loafing import loafing_table, subnet_top1
from ..analysis.sampling_rules import compare_samplers
from ..analysis.stats import mean_std
from ..analysis.subnet_stats import subnet_statistics
from ..core.batchnorm import BN_MODES
from ..reporting.figures import study_figures
from ..runtime.files import read_json, read_json_or_none, write_json
from ..tools.destruction import cached_destruction
from ..tools.reevaluate import reevaluate
from ..training.run_dir import RunDir


def load_results(study_dir: str, name: str, seeds: list[int]) -> list[dict]:
    return [read_json(os.path.join(study_dir, "runs", f"{name}-s{seed}", RunDir.RESULTS)) for seed in seeds]


def write_analysis(study_dir: str, name: str, data) -> str:
    path = os.path.join(study_dir, "analyses", f"{name}.json")
    write_json(path, data)
    return path


def train_split_results(study_dir: str, name: str, seeds: list[int]) -> list[dict]:
    """Each seed's run evaluated on its training images (cached as RUN/evaluation_train.json)."""
    out = []
    for seed in seeds:
        run_dir = os.path.join(study_dir, "runs", f"{name}-s{seed}")
        cached = read_json_or_none(os.path.join(run_dir, TRAIN_EVALUATION))
        if cached is None:
            with contextlib.redirect_stdout(io.StringIO()):  # its summary table: the study reports instead
                cached = reevaluate(
                    run_dir, bn="all", out=os.path.join(run_dir, TRAIN_EVALUATION), split="train", progress=False
                )
        out.append(cached)
    return out


TRAIN_EVALUATION = "evaluation_train.json"


def destruction_for(study_dir: str, name: str, seeds: list[int], progress: bool) -> dict:
    """Destruction sweeps of each seed's run, both BN modes (cached per run folder)."""
    per_seed = [cached_destruction(os.path.join(study_dir, "runs", f"{name}-s{seed}"), "cpu") for seed in seeds]
    return {"seeds": seeds, "per_seed": per_seed}


def analyse_study(
    study_dir: str, seeds: list[int], depths: tuple[str, ...] = ("resnet32", "resnet56"), progress: bool = True
) -> dict:
    """Every analysis of the study, the claims table among them, written to
    ``analyses/study.json``, and the figures drawn. Returns the analyses."""
    ct, st = load_results(study_dir, "ct-resnet20", seeds), load_results(study_dir, "st-resnet20", seeds)
    individual = {spec: load_results(study_dir, f"individual-{spec}", seeds) for spec in ("1,1,1", "2,2,2")}
    individual["3,3,3"] = ct  # the full network trained alone is common training
    out: dict = {"seeds": seeds}
    out["loafing"] = {bn: loafing_table(ct, st, individual, bn) for bn in BN_MODES}
    # deeper networks loaf more: resnet20 and 8-block sub-networks inside deeper networks
    trained = [("resnet20", ct, st)] + [
        (m, load_results(study_dir, f"ct-{m}", seeds), load_results(study_dir, f"st-{m}", seeds)) for m in depths
    ]
    out["loafing_depth"] = {bn: [_depth_row(*t, individual["1,1,1"], ct, bn) for t in trained] for bn in BN_MODES}
    space8 = load_results(study_dir, "st-space8-resnet20", seeds)
    out["subnet_stats"] = {
        bn: {
            "CT (0 sub-networks)": subnet_statistics(ct, bn),
            "ST, space of 8": subnet_statistics(space8, bn),
            "ST, space of 27": subnet_statistics(st, bn),
        }
        for bn in BN_MODES
    }
    out["subnet_values"] = {bn: {"CT": _subnet_top1s(ct, bn), "ST": _subnet_top1s(st, bn)} for bn in BN_MODES}
    samplers = {
        "ordered": st,
        "stochastic": load_results(study_dir, "st-stochastic-resnet20", seeds),
        "raw": load_results(study_dir, "st-raw-resnet20", seeds),
    }
    out["sampling_rules"] = {bn: compare_samplers(samplers, bn) for bn in BN_MODES}
    out["eq4"] = {bn: {"CT": [eq4(r, bn) for r in ct], "ST": [eq4(r, bn) for r in st]} for bn in BN_MODES}
    # the paper states Eq. 4 for training losses: the same runs evaluated on their training images
    on_train = {
        m: train_split_results(study_dir, name, seeds) for m, name in (("CT", "ct-resnet20"), ("ST", "st-resnet20"))
    }
    out["eq4_train"] = {bn: {m: [eq4(r, bn) for r in on_train[m]] for m in on_train} for bn in BN_MODES}
    out["kl_tracking"] = {
        method: [load_kl_tracking(os.path.join(study_dir, "runs", f"{name}-s{s}")) for s in seeds]
        for method, name in (("CT", "ct-resnet20"), ("ST", "st-resnet20"))
    }
    out["destruction"] = {
        "CT": destruction_for(study_dir, "ct-resnet20", seeds, progress),
        "ST": destruction_for(study_dir, "st-resnet20", seeds, progress),
    }
    out["train_seconds"] = {
        name: mean_std([r["train_seconds"] for r in runs])
        for name, runs in (
            ("CT", ct),
            ("ST", st),
            ("ST stochastic", samplers["stochastic"]),
            ("ST raw", samplers["raw"]),
        )
    }
    out["claims"] = claims_table(out)
    write_analysis(study_dir, "study", out)
    study_figures(out, os.path.join(study_dir, "figures"))
    return out


def _depth_row(
    model: str, runs_ct: list[dict], runs_st: list[dict], shallow_alone: list[dict], full_alone: list[dict], bn: str
) -> dict:
    """The 1,1,1 and 3,3,3 sub-networks inside CT and ST networks of one depth, next to the
    same networks trained alone, and the full networks' top-1."""
    row: dict = {"model": model}
    for spec, alone in (("1,1,1", shallow_alone), ("3,3,3", full_alone)):
        row[spec] = {
            "alone": mean_std([r["by_bn"][bn]["main"]["top1"] for r in alone]),
            "ct": mean_std([subnet_top1(r, spec, bn) for r in runs_ct]),
            "st": mean_std([subnet_top1(r, spec, bn) for r in runs_st]),
        }
    row["ct_full"] = mean_std([r["by_bn"][bn]["main"]["top1"] for r in runs_ct])
    row["st_full"] = mean_std([r["by_bn"][bn]["main"]["top1"] for r in runs_st])
    return row


def _subnet_top1s(runs: list[dict], bn: str) -> list[list[float]]:
    """Per run, the top-1 of every evaluated sub-network."""
    return [[p["top1"] for p in r["by_bn"][bn]["subnets"]["per_subnet"]] for r in runs]
