"""The built-in sweep design on the digits: CT, ST configurations and stochastic depth, on
the full training split and a seeded, stratified 10 % of it, at 30, 100 and 200 epochs (see
:mod:`stimulative.studies.sweep` for the priorities and the budget). Cell ids and folder names
(``10pct-e30/st-l1-t1-n1-kl``) are those of the committed results in ``docs/evidence/``:
change them and those results no longer resume or analyse."""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis.evidence import DEFAULT_ST
from ..training.config import TrainConfig

LAMBDAS = (0.25, 0.5, 1.0, 2.0)
TEMPERATURES = (1.0, 2.0, 4.0)
EPOCHS = (30, 100, 200)
SUBNETS_PER_STEP = (1, 3, 6)
KL_KINDS = ("kl", "kl-direction")
SANDWICH = (False, True)
DROP_PATH_RATES = (0.5, 0.1, 0.2)  # the first is the default (Huang et al.'s p_L = 0.5)
FRACTIONS = (0.1, 1.0)  # training split: a seeded, stratified 10 %, and all of it
DESIGNS = ("ofat", "full")

# the cost model of a quiet 2-core CPU (resnet20, 8x8 digits, batch 64), measured on this
# project's machine: a CT step, each sub-network's extra share, per-epoch and per-run overheads
CT_STEP_SECONDS = 0.021
SUBNET_STEP_SHARE = 0.4  # an ST step with one sub-network costs 1.4 CT steps
SANDWICH_STEP_SHARE = 0.25  # the shallowest sub-network is short (it shares only the stem)
DROP_PATH_STEP_SHARE = 0.05
EPOCH_SECONDS = 0.05  # per-epoch test accuracy and checkpoint
RUN_SECONDS = 5.0  # data, model, final evaluation of 27 sub-networks in two BN modes
DESTRUCTION_SECONDS = 6.0  # destruction analysis of a core cell's run, both BN modes


@dataclass(frozen=True)
class Cell:
    """One configuration of the grid; run once per seed."""

    fraction: float
    epochs: int
    mode: str  # ct, st or stochastic-depth
    options: tuple[tuple[str, object], ...] = ()
    core: bool = False  # CT, default ST or default stochastic depth: also gets a destruction analysis

    @property
    def split(self) -> str:
        return "full" if self.fraction == 1.0 else f"{round(self.fraction * 100):g}pct"

    @property
    def group(self) -> str:
        return f"{self.split}-e{self.epochs}"

    @property
    def name(self) -> str:
        o = dict(self.options)
        if self.mode == "ct":
            return "ct"
        if self.mode == "stochastic-depth":
            return f"sd-p{o['drop_path_rate']:g}"
        kl = "kl" if o["kl"] == "kl" else "kldir"
        return f"st-l{o['kl_weight']:g}-t{o['temperature']:g}-n{o['subnets_per_step']}-{kl}" + (
            "-sandwich" if o["sandwich"] else ""
        )

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"

    @property
    def label(self) -> str:
        """Human-readable, for tables and figures."""
        o = dict(self.options)
        if self.mode == "ct":
            return "CT"
        if self.mode == "stochastic-depth":
            return f"SD rate {o['drop_path_rate']:g}"
        kl = "KL" if o["kl"] == "kl" else "KL-"
        text = f"ST λ={o['kl_weight']:g} T={o['temperature']:g} n={o['subnets_per_step']} {kl}"
        return text + (" +sandwich" if o["sandwich"] else "")

    @property
    def is_default(self) -> bool:
        o = dict(self.options)
        if self.mode == "st":
            return o == DEFAULT_ST
        if self.mode == "stochastic-depth":
            return o["drop_path_rate"] == DROP_PATH_RATES[0]
        return True

    def config(self, seed: int, out: str, model: str = "resnet20") -> TrainConfig:
        return TrainConfig(
            mode=self.mode,
            model=model,
            dataset="digits",
            train_fraction=self.fraction,
            epochs=self.epochs,
            seed=seed,
            out=out,
            progress=False,
            **dict(self.options),
        )

    def describe(self) -> dict:
        return describe_cell(self, self.is_default)


def ct_cell(fraction: float, epochs: int) -> Cell:
    return Cell(fraction, epochs, "ct", core=True)


def st_cell(fraction: float, epochs: int, core: bool = False, **changes) -> Cell:
    options = {**DEFAULT_ST, **changes}
    return Cell(fraction, epochs, "st", tuple(options.items()), core=core)


def sd_cell(fraction: float, epochs: int, rate: float, core: bool = False) -> Cell:
    return Cell(fraction, epochs, "stochastic-depth", (("drop_path_rate", rate),), core=core)


def core_cells(fraction: float, epochs: int) -> list[Cell]:
    return [
        ct_cell(fraction, epochs),
        st_cell(fraction, epochs, core=True),
        sd_cell(fraction, epochs, DROP_PATH_RATES[0], core=True),
    ]


def variant_cells(fraction: float, epochs: int, design: str = "ofat") -> list[Cell]:
    """The ST and stochastic-depth cells of a group besides the core ones."""
    out: list[Cell] = []
    if design == "ofat":
        out += [st_cell(fraction, epochs, kl_weight=v) for v in LAMBDAS if v != DEFAULT_ST["kl_weight"]]
        out += [st_cell(fraction, epochs, temperature=v) for v in TEMPERATURES if v != DEFAULT_ST["temperature"]]
        out += [
            st_cell(fraction, epochs, subnets_per_step=v)
            for v in SUBNETS_PER_STEP
            if v != DEFAULT_ST["subnets_per_step"]
        ]
        out += [st_cell(fraction, epochs, kl="kl-direction"), st_cell(fraction, epochs, sandwich=True)]
    elif design == "full":
        for lam in LAMBDAS:
            for t in TEMPERATURES:
                for n in SUBNETS_PER_STEP:
                    for kl in KL_KINDS:
                        for sw in SANDWICH:
                            cell = st_cell(
                                fraction, epochs, kl_weight=lam, temperature=t, subnets_per_step=n, kl=kl, sandwich=sw
                            )
                            if not cell.is_default:
                                out.append(cell)
    else:
        raise ValueError(f"unknown design {design!r}; choose from {', '.join(DESIGNS)}")
    out += [sd_cell(fraction, epochs, r) for r in DROP_PATH_RATES[1:]]
    return out


def prioritised_cells(design: str = "ofat") -> list[Cell]:
    """Every cell of the design, in the budget's order of priority (module docstring)."""
    cheap, full = FRACTIONS
    short, mid, long = EPOCHS
    tiers = [
        core_cells(cheap, short) + core_cells(full, short),
        core_cells(cheap, mid) + core_cells(cheap, long),
        variant_cells(cheap, short, design),
        core_cells(full, mid),
        variant_cells(full, short, design),
        variant_cells(cheap, mid, design) + variant_cells(cheap, long, design),
        core_cells(full, long),
        variant_cells(full, mid, design) + variant_cells(full, long, design),
    ]
    return [c for tier in tiers for c in tier]


DIGITS_TRAIN_IMAGES = 1211  # the fixed 75 % training split of the 1,797 digits, less the 10 % validation hold-out


def steps_of(cell: Cell, batch_size: int = 64) -> int:
    n = max(10, round(cell.fraction * DIGITS_TRAIN_IMAGES))  # stratified_fraction keeps >= 1 per class
    return cell.epochs * (n // batch_size)


def estimate_seconds(cell: Cell) -> float:
    """Seconds of one run of ``cell`` (with its destruction analysis, for a core cell) on a
    quiet 2-core CPU, by the fixed cost model above."""
    o = dict(cell.options)
    share = 1.0
    if cell.mode == "st":
        share += SUBNET_STEP_SHARE * o["subnets_per_step"] + (SANDWICH_STEP_SHARE if o["sandwich"] else 0.0)
    elif cell.mode == "stochastic-depth":
        share += DROP_PATH_STEP_SHARE
    seconds = steps_of(cell) * CT_STEP_SECONDS * share + cell.epochs * EPOCH_SECONDS + RUN_SECONDS
    return seconds + (DESTRUCTION_SECONDS if cell.core else 0.0)


def select_cells(cells: list[Cell], budget_minutes: float, n_seeds: int) -> list[Cell]:
    """The longest prefix of the cells, in order, whose runs (``n_seeds`` each) fit in the
    budget (0: all). A prefix, so that more time never drops a cell (skipping a cell that does
    not fit and trying later ones is not monotone in the budget); a cell whose group has no CT
    cell selected is dropped (it would have no paired baseline)."""
    if budget_minutes <= 0:
        return list(cells)
    left = budget_minutes * 60.0
    chosen: list[Cell] = []
    with_ct: set[str] = set()
    for cell in cells:
        cost = estimate_seconds(cell) * n_seeds
        if cell.mode != "ct" and cell.group not in with_ct:
            continue
        if cost > left:
            break
        chosen.append(cell)
        left -= cost
        if cell.mode == "ct":
            with_ct.add(cell.group)
    return chosen


def cell_of(cfg: TrainConfig) -> Cell:
    """The grid cell a run's configuration belongs to."""
    if cfg.mode == "ct":
        return ct_cell(cfg.train_fraction, cfg.epochs)
    if cfg.mode == "stochastic-depth":
        return sd_cell(
            cfg.train_fraction, cfg.epochs, cfg.drop_path_rate, core=cfg.drop_path_rate == DROP_PATH_RATES[0]
        )
    options = {k: getattr(cfg, k) for k in DEFAULT_ST}
    return st_cell(cfg.train_fraction, cfg.epochs, core=options == DEFAULT_ST, **options)


def describe_cell(cell, default: bool) -> dict:
    """What the evidence analysis reads of a cell (built-in or from a grid)."""
    return {
        "id": cell.id,
        "group": cell.group,
        "split": cell.split,
        "fraction": cell.fraction,
        "epochs": cell.epochs,
        "mode": cell.mode,
        "name": cell.name,
        "label": cell.label,
        "options": dict(cell.options),
        "core": cell.core,
        "default": default,
    }
