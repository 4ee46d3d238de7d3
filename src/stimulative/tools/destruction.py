"""Destruction of a trained run at test time (paper Fig. 6): delete one block, delete k,
permute k, under the three BN protocols, written to ``RUN/destruction.json``."""

from __future__ import annotations

from ..analysis.destruction import DEFAULT_LIMIT, run_destruction
from ..core.batchnorm import BN_PROTOCOLS, needs_calibration
from ..core.spaces import build_space
from ..runtime.files import read_json_or_none, write_json
from ..training.run_dir import RunDir


def destruction_of_run(
    run_dir: str,
    device: str = "cpu",
    max_k: int = 4,
    limit: int = DEFAULT_LIMIT,
    write: bool = True,
    seed: int | None = None,
    out: str = "",
) -> dict:
    """``{bn: result}`` for the three BN protocols (see :func:`run_destruction`); with ``write`` the
    result replaces ``out`` (default ``RUN/destruction.json``, where the report looks). ``seed``
    (default: the run's) draws the sampled combinations and the calibration images."""
    run = RunDir(run_dir)
    loaded = run.load(device)
    cfg, data = loaded.cfg, loaded.data
    seed = cfg.seed if seed is None else seed
    calibration = data.calibration_inputs(cfg.calib_images, cfg.eval_batch_size, seed)
    batches = lambda: data.eval_batches(data.test, cfg.eval_batch_size)  # noqa: E731
    # the training space and sampler say which blocks training never skips
    space = build_space(loaded.model.architecture, cfg.min_depths)
    result = {
        bn: run_destruction(
            loaded.model, batches, calibration if needs_calibration(bn) else [], bn, max_k, limit, seed,
            space=space, sampler=cfg.sampler,
        )
        for bn in BN_PROTOCOLS
    }  # fmt: skip
    if write:
        write_json(out or run.file(RunDir.DESTRUCTION), result)
    return result


def cached_destruction(run_dir: str, device: str = "cpu") -> dict:
    """``RUN/destruction.json`` if it exists, else computed (default settings) and written."""
    cached = read_json_or_none(RunDir(run_dir).file(RunDir.DESTRUCTION))
    return cached if cached is not None else destruction_of_run(run_dir, device)
