"""stimulative: stimulative training of residual networks, and measurement of network loafing."""

from .core.elastic import ElasticNet, ResidualBlock
from .core.loss import kl_divergence, stimulative_loss
from .core.sampling import SamplingSpace, SubnetSpec, parse_spec, sample_subnet
from .models import create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = [
    "ElasticNet",
    "ResidualBlock",
    "SamplingSpace",
    "SubnetSpec",
    "create_model",
    "kl_divergence",
    "list_models",
    "parse_spec",
    "register_model",
    "sample_subnet",
    "stimulative_loss",
]
