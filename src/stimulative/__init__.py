"""stimulative: stimulative training of residual networks, and measurement of network loafing.

The public API in ten lines (docs/api.md)::

    model = stimulative.create_model("resnet20", num_classes=10, in_chans=1)  # or any nn.Module
    st = stimulative.Stimulative(model, kl_weight=1.0)
    for step, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        out = st(x, y, step)  # Eq. 1: out.loss, out.ce, out.kl
        out.loss.backward()
        optimizer.step()
    summary = stimulative.evaluate_subnets(model, test_loader, calibration, bn="subnet")
"""

from .api import BN_PROTOCOLS, Stimulative, SubnetSummary, evaluate_subnets
from .core.batchnorm import frozen_bn_stats
from .core.elastic import ElasticNet, ResidualBlock, subnet_bn_updates
from .core.loss import kl_divergence, stimulative_loss
from .core.sampling import SamplingSpace, SubnetSpec, enumerate_subnets, parse_spec, sample_subnet
from .models import create_model, list_models, register_model
from .models.adapter import AdapterError, adapt
from .training.accelerate import prepare_model
from .training.steps import LossOptions, StepOutput

__version__ = "0.1.0"
__all__ = [
    "BN_PROTOCOLS",
    "AdapterError",
    "ElasticNet",
    "LossOptions",
    "ResidualBlock",
    "SamplingSpace",
    "Stimulative",
    "StepOutput",
    "SubnetSpec",
    "SubnetSummary",
    "adapt",
    "create_model",
    "enumerate_subnets",
    "evaluate_subnets",
    "frozen_bn_stats",
    "kl_divergence",
    "list_models",
    "parse_spec",
    "prepare_model",
    "register_model",
    "sample_subnet",
    "stimulative_loss",
    "subnet_bn_updates",
]
