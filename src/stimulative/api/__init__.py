"""The public Python API: a model (:func:`stimulative.create_model`), a training step
(:class:`Stimulative`) and an evaluation of every sub-network (:func:`evaluate_subnets`).
See docs/api.md."""

from .evaluate import BN_PROTOCOLS, SubnetSummary, evaluate_subnets
from .step import Stimulative

__all__ = ["BN_PROTOCOLS", "Stimulative", "SubnetSummary", "evaluate_subnets"]
