"""A sweep written as a YAML grid (``stimulative sweep --grid grid.yaml``): any model, any data
set, the factors and their levels, the baselines, the seeds.

```yaml
dataset: cifar10             # dataset, data_root and model: shared by every run (flags override them)
data_root: data
model: resnet32
base: {epochs: 30, train_fraction: 0.1}   # any training option, shared by every run
factors:                     # option -> levels; the first level of each is the default
  kl_weight: [1.0, 0.5, 2.0]
  epochs: [30, 100]
design: ofat                 # ofat (default): the first levels, then one factor changed at a time
                             # full: every combination
baselines:                   # named configurations run in every group (default: ct only)
  ct: {mode: ct}
  sd: {mode: stochastic-depth, drop_path_rate: 0.5}
seeds: [0, 1, 2]
```

Factors on ST's options (``kl_weight``, ``temperature``, ``sandwich`` ...) or stochastic depth's
(``drop_path_rate``) make the cells of a *group*; factors on anything else (``epochs``,
``train_fraction``, ``lr``, ``model`` ...) make the groups themselves, and every group gets its
own baselines, so each configuration is compared with CT trained in the same conditions and with
the same seeds. Group folders are named ``<split>[,option=level...]-e<epochs>`` (``10pct-e30``,
``full,lr=0.1-e100``), cells ``st,kl_weight=0.5`` or the baseline's name, as the analysis of
:mod:`stimulative.analysis.evidence` expects (it pairs cells by group and mode).
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, fields
from typing import Any

import yaml

from ..analysis.evidence import DEFAULT_ST
from ..training.config import TrainConfig, _coerce
from .digits_design import describe_cell

TOP_KEYS = ("dataset", "data_root", "model", "base", "factors", "design", "baselines", "seeds", "destruction")
SHARED_KEYS = ("dataset", "data_root", "model")  # top-level shortcuts into base
DESIGNS = ("ofat", "full")
# set by the sweep itself: a grid that sets them would fight it
MANAGED = {
    "seed": "list the seeds under seeds:",
    "out": "the sweep names every run folder",
    "resume": "the sweep resumes interrupted runs itself",
    "force": "the sweep never starts a finished run over",
    "progress": "the sweep shows one progress bar over its runs",
    "device": "set by `stimulative sweep --device`",
}
# the options each method's cells vary; a factor on any other option makes groups
METHOD_FIELDS = {
    "st": (
        "kl_weight",
        "temperature",
        "kl",
        "kl_amplitude",
        "subnets_per_step",
        "sampler",
        "min_depths",
        "sandwich",
        "kl_schedule",
        "kl_start_epoch",
        "subnet_resolution",
    ),
    "stochastic-depth": ("drop_path_rate",),
    "ct": (),
}
MODE_PREFIX = {"st": "st", "stochastic-depth": "sd", "ct": "ct"}
MODE_LABELS = {"st": "ST", "stochastic-depth": "SD", "ct": "CT"}
# a baseline runs in its group's conditions: it may not change what defines the group
GROUP_FIXED = ("epochs", "train_fraction", "model", "dataset", "data_root")
FIELDS = {f.name: f for f in fields(TrainConfig)}


@dataclass(frozen=True)
class GridCell:
    """One configuration of a grid; run once per seed. Describes itself as the built-in
    design's cells do (:meth:`describe`), so the same analysis pairs it with its group's CT."""

    group: str
    name: str
    label: str
    mode: str
    split: str
    fraction: float
    epochs: int
    settings: tuple[tuple[str, Any], ...]  # every training option the cell sets
    options: tuple[tuple[str, Any], ...]  # its method's options, for tables and figures
    default: bool = False
    core: bool = False  # also gets a destruction analysis (grid key destruction: true)

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"

    def config(self, seed: int, out: str) -> TrainConfig:
        return TrainConfig(**dict(self.settings), seed=seed, out=out, progress=False)

    def describe(self) -> dict:
        return describe_cell(self, self.default)


@dataclass(frozen=True)
class Grid:
    cells: tuple[GridCell, ...]
    seeds: tuple[int, ...]
    design: str
    source: dict  # the grid as read, for plan.json


def load_grid(path: str, shared: dict[str, Any] | None = None, design: str | None = None) -> Grid:
    """The grid in the YAML file ``path``. ``shared``: dataset, data_root or model given on the
    command line (they override the file's); ``design``: overrides the file's. Every mistake in
    the file is reported at once, in one ValueError."""
    data = _read_yaml(path)
    errors: list[str] = []
    spec = _parse(data, errors)
    spec["base"].update({k: v for k, v in (shared or {}).items() if v is not None})
    spec["design"] = design or spec["design"]
    if spec["design"] not in DESIGNS:
        errors.append(f"unknown design {spec['design']!r} (choose from {', '.join(DESIGNS)})")
    _check_semantics(spec, errors)
    cells = _build_cells(spec, errors) if not errors else []
    if errors:
        raise ValueError(f"grid {path}: " + "; ".join(errors))
    return Grid(tuple(cells), spec["seeds"], spec["design"], data)


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as e:
        raise ValueError(f"cannot read grid {path!r}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"grid {path!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"grid {path!r} must be a mapping (dataset, model, base, factors, baselines, seeds)")
    return data


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse(data: dict, errors: list[str]) -> dict:
    """The grid's parts, coerced to the training options' types; mistakes appended to ``errors``."""
    for key in data:
        if key in TOP_KEYS:
            continue
        hint = " (a training option: put it under base:)" if str(key).replace("-", "_") in FIELDS else ""
        errors.append(f"unknown key {key!r}{hint or _did_you_mean(str(key), TOP_KEYS)}")
    base = _options(data.get("base") or {}, "base", errors)
    base.update(_options({k: data[k] for k in SHARED_KEYS if k in data}, "", errors))
    factors = _factors(data.get("factors") or {}, errors)
    baselines = _baselines(data.get("baselines", {"ct": {"mode": "ct"}}), errors)
    seeds = data.get("seeds", [0, 1, 2])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        errors.append(f"seeds must be a list of integers, got {seeds!r}")
        seeds = [0, 1]
    destruction = data.get("destruction", False)
    if not isinstance(destruction, bool):
        errors.append(f"destruction must be true or false, got {destruction!r}")
    return {
        "base": base,
        "factors": factors,
        "baselines": baselines,
        "seeds": tuple(seeds),
        "design": data.get("design", "ofat"),
        "destruction": destruction is True,
    }


def _option(name: str, value: Any, where: str, errors: list[str]) -> tuple[str, Any] | None:
    """``(field, value)`` coerced to the training option's type, or None (and an error)."""
    key = str(name).replace("-", "_")
    at = f"{where}.{name}" if where else str(name)
    if key in MANAGED:
        errors.append(f"{at}: not in a grid ({MANAGED[key]})")
        return None
    if key not in FIELDS:
        errors.append(f"{at}: unknown training option{_did_you_mean(key, FIELDS)}")
        return None
    f = FIELDS[key]
    try:
        value = _coerce(value, f, "")
    except ValueError:
        errors.append(f"{at} must be {f.type}, got {value!r}")
        return None
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        errors.append(f"{at}: unknown {key} {value!r} (choose from {', '.join(choices)})")
        return None
    return key, value


def _options(mapping: Any, where: str, errors: list[str]) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        errors.append(f"{where} must be a mapping of option: value, got {mapping!r}")
        return {}
    out = {}
    for name, value in mapping.items():
        opt = _option(name, value, where, errors)
        if opt:
            out[opt[0]] = opt[1]
    return out


def _factors(mapping: Any, errors: list[str]) -> dict[str, list]:
    if not isinstance(mapping, dict):
        errors.append(f"factors must be a mapping of option: [levels], got {mapping!r}")
        return {}
    out: dict[str, list] = {}
    for name, levels in mapping.items():
        if str(name) == "mode":
            errors.append("factors.mode: modes come from base.mode (the factor cells) and the baselines")
            continue
        if not isinstance(levels, list) or not levels:
            errors.append(f"factors.{name} must be a non-empty list of levels, got {levels!r}")
            continue
        coerced = [_option(name, v, "factors", errors) for v in levels]
        if all(coerced):
            values = [c[1] for c in coerced]
            if len(set(map(repr, values))) != len(values):
                errors.append(f"factors.{name}: each level once, got {levels!r}")
            out[coerced[0][0]] = values
    return out


def _baselines(mapping: Any, errors: list[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(mapping, dict) or not mapping:
        errors.append(f"baselines must be a mapping of name: {{options}}, e.g. ct: {{mode: ct}}, got {mapping!r}")
        return {}
    out = {}
    for name, options in mapping.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", str(name)):
            errors.append(f"baselines.{name}: a name of letters, digits and _ . + - (it names a folder)")
            continue
        out[str(name)] = _options(options or {}, f"baselines.{name}", errors)
    return out


def _check_semantics(spec: dict, errors: list[str]) -> None:
    """What the analysis needs: the factor cells' mode owns the method factors, one CT baseline
    per group, baselines that keep their group's conditions."""
    mode = spec["base"].get("mode", "st")
    if mode not in ("st", "stochastic-depth"):
        errors.append(f"base.mode {mode!r}: the factor cells are st or stochastic-depth (CT is a baseline)")
    other = [m for m in METHOD_FIELDS if m != mode]
    for name in spec["factors"]:
        owner = next((m for m in other if name in METHOD_FIELDS[m]), None)
        if owner:
            errors.append(f"factors.{name} acts only in {owner} mode, and the factor cells are {mode} (base.mode)")
    modes = {name: b.get("mode", mode) for name, b in spec["baselines"].items()}
    if sum(m == "ct" for m in modes.values()) != 1:
        errors.append(
            f"baselines: exactly one with mode ct (every cell is paired with its group's CT), got "
            f"{sum(m == 'ct' for m in modes.values())}"
        )
    for name, m in modes.items():
        if m not in MODE_PREFIX:
            errors.append(f"baselines.{name}: mode {m!r} is not compared by the analysis (ct, st or stochastic-depth)")
    fixed = set(GROUP_FIXED) | {f for f in spec["factors"] if f not in METHOD_FIELDS.get(mode, ())}
    for name, b in spec["baselines"].items():
        for key in sorted(fixed & set(b)):
            errors.append(
                f"baselines.{name}.{key}: a baseline keeps its group's conditions (set {key} in base or factors)"
            )


def design_points(factors: dict[str, list], design: str) -> list[dict[str, Any]]:
    """The factor levels of every factor cell: every combination (full), or the first levels
    and then each other level of one factor at a time (ofat)."""
    if design == "full":
        return [dict(zip(factors, combo)) for combo in itertools.product(*factors.values())]
    first = {k: v[0] for k, v in factors.items()}
    return [first] + [{**first, k: level} for k, levels in factors.items() for level in levels[1:]]


def _token(value: Any, in_group: bool = False) -> str:
    """A level as it appears in a folder name."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    text = str(value)
    # no '-' in a group's levels: the analysis reads the epochs after the group's last '-e'
    return re.sub(r"[^A-Za-z0-9._+]" if in_group else r"[^A-Za-z0-9._+-]", "+", text)


def _split(fraction: float) -> str:
    return "full" if fraction == 1.0 else f"{fraction * 100:g}pct"


def _group_of(settings: dict[str, Any], levels: dict[str, Any]) -> tuple[str, str, float, int]:
    """(group, split, fraction, epochs) of a run with these settings; ``levels``: its group
    factors' levels (the fraction and the epochs are named by the split and the ``-e`` part)."""
    fraction = settings.get("train_fraction", FIELDS["train_fraction"].default)
    epochs = settings.get("epochs", FIELDS["epochs"].default)
    extra = "".join(f",{k}={_token(v, True)}" for k, v in levels.items() if k not in ("train_fraction", "epochs"))
    split = _split(fraction) + extra
    return f"{split}-e{epochs}", split, fraction, epochs


def _make_cell(
    name: str, label: str, settings: dict, where: tuple, default: bool, core: bool, errors: list[str]
) -> GridCell | None:
    group, split, fraction, epochs = where
    try:
        cfg = TrainConfig(**settings, out="grid-check").validate()
    except ValueError as e:
        errors.append(f"cell {group}/{name}: {str(e).splitlines()[0]}")
        return None
    mode = cfg.mode
    options: dict[str, Any] = {}
    if mode == "st":  # the keys the evidence figures name variants by, and whatever else the cell sets
        options = {k: getattr(cfg, k) for k in (*DEFAULT_ST, *(k for k in METHOD_FIELDS["st"] if k in settings))}
    elif mode == "stochastic-depth":
        options = {"drop_path_rate": cfg.drop_path_rate}
    return GridCell(
        group,
        name,
        label,
        mode,
        split,
        fraction,
        epochs,
        tuple(settings.items()),
        tuple(options.items()),
        default,
        core,
    )


def _build_cells(spec: dict, errors: list[str]) -> list[GridCell]:
    """Every group's baselines (CT first), then its factor cells, groups in order of appearance."""
    mode = spec["base"].get("mode", "st")
    method = [k for k in spec["factors"] if k in METHOD_FIELDS[mode]]
    first = {k: spec["factors"][k][0] for k in method}
    groups: dict[str, list[GridCell | None]] = {}
    for point in design_points(spec["factors"], spec["design"]):
        levels = {k: v for k, v in point.items() if k not in method}
        settings = {**spec["base"], **point}
        where = _group_of(settings, levels)
        if where[0] not in groups:
            groups[where[0]] = _baseline_cells(spec, {**spec["base"], **levels}, where, mode, errors)
        name = MODE_PREFIX[mode] + "".join(f",{k}={_token(point[k])}" for k in method)
        label = MODE_LABELS[mode] + "".join(f" {k}={_token(point[k])}" for k in method)
        is_default = all(point[k] == first[k] for k in method)
        core = spec["destruction"] and is_default
        groups[where[0]].append(_make_cell(name, label, settings, where, is_default, core, errors))
    cells = [c for members in groups.values() for c in members if c is not None]
    ids = [c.id for c in cells]
    for cid in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append(f"two cells are named {cid}: rename the baseline")
    return cells


def _baseline_cells(spec: dict, shared: dict, where: tuple, mode: str, errors: list[str]) -> list[GridCell | None]:
    """The baselines of one group; the first of each mode is that mode's default (the paired
    reference), unless the factor cells' default already is."""
    named = sorted(spec["baselines"].items(), key=lambda kv: kv[1].get("mode", mode) != "ct")
    out = []
    seen = {mode}
    for name, options in named:
        settings = {**shared, **options}
        m = settings.get("mode", mode)
        label = {"ct": "CT", "sd": "SD", "st": "ST"}.get(name, name)
        default = m not in seen
        seen.add(m)
        out.append(_make_cell(name, label, settings, where, default, spec["destruction"] and default, errors))
    return out
