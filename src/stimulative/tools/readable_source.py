"""``model.py`` as plain PyTorch modules a person can read, for the registered families
(resnet, cifar_resnet, mobilenetv3): the block classes' own code, copied with
``inspect.getsource``, and one constructor call per kept module, so the file shows the
network's structure and imports nothing from stimulative.

The blocks' ``__init__`` arguments are not kept by the model, so each block is rebuilt
attribute by attribute (:func:`_module` in the written file) from its sub-modules, whose
constructors are standard ``torch.nn`` calls, and its plain attributes. A module this writer
does not know raises :class:`NotReadable`; the caller then falls back to the traced graph."""

from __future__ import annotations

import inspect

from torch import nn

from ..core.elastic import ResidualBlock
from ..core.sampling import BRANCH


class NotReadable(ValueError):
    """A module of the sub-network has no known plain-PyTorch constructor."""


def _conv(m: nn.Conv2d) -> str:
    return (
        f"nn.Conv2d({m.in_channels}, {m.out_channels}, {m.kernel_size}, stride={m.stride}, padding={m.padding}, "
        f"dilation={m.dilation}, groups={m.groups}, bias={m.bias is not None})"
    )


def _bn(m: nn.BatchNorm2d) -> str:
    return f"nn.BatchNorm2d({m.num_features}, eps={m.eps}, momentum={m.momentum}, affine={m.affine})"


# torch.nn modules rebuilt from their public attributes
_BUILTIN = {
    nn.Conv2d: _conv,
    nn.BatchNorm2d: _bn,
    nn.Linear: lambda m: f"nn.Linear({m.in_features}, {m.out_features}, bias={m.bias is not None})",
    nn.ReLU: lambda m: f"nn.ReLU(inplace={m.inplace})",
    nn.Hardswish: lambda m: "nn.Hardswish()",
    nn.Hardsigmoid: lambda m: "nn.Hardsigmoid()",
    nn.Sigmoid: lambda m: "nn.Sigmoid()",
    nn.SiLU: lambda m: "nn.SiLU()",
    nn.Identity: lambda m: "nn.Identity()",
    nn.Flatten: lambda m: f"nn.Flatten({m.start_dim}, {m.end_dim})",
    nn.Dropout: lambda m: f"nn.Dropout({m.p})",
    nn.AdaptiveAvgPool2d: lambda m: f"nn.AdaptiveAvgPool2d({m.output_size!r})",
    nn.MaxPool2d: lambda m: f"nn.MaxPool2d({m.kernel_size!r}, {m.stride!r}, {m.padding!r})",
}
_PLAIN = (int, float, bool, str, type(None), tuple)


def module_code(m: nn.Module, classes: list[type], indent: int = 1) -> str:
    """A Python expression that rebuilds ``m`` (without its weights); custom classes met on
    the way are appended to ``classes``."""
    pad = "    " * indent
    if type(m) in _BUILTIN:
        return _BUILTIN[type(m)](m)
    children = [(name, module_code(c, classes, indent + 1)) for name, c in m.named_children()]
    if type(m) in (nn.Sequential, nn.ModuleList):
        inner = "".join(f"{pad}    {code},\n" for _, code in children)
        kind = "nn.Sequential(\n" if type(m) is nn.Sequential else "nn.ModuleList([\n"
        return kind + inner + pad + (")" if type(m) is nn.Sequential else "])")
    if not type(m).__module__.startswith("stimulative."):
        raise NotReadable(f"{type(m).__module__}.{type(m).__qualname__}")
    for cls in reversed(type(m).__mro__):
        if cls.__module__.startswith("stimulative.") and cls not in classes:
            classes.append(cls)
    attributes = {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"}
    if not all(isinstance(v, _PLAIN) for v in attributes.values()):
        raise NotReadable(f"{type(m).__qualname__} holds non-plain attributes")
    inner = "".join(f"{pad}    {name}={code},\n" for name, code in children)
    return f"_module(\n{pad}    {type(m).__name__},\n{pad}    {attributes!r},\n{inner}{pad})"


def readable_source(sub: nn.Module, doc: str, weights_name: str) -> str:
    """The source of ``model.py`` for a :class:`SubnetModule` of a registered family."""
    classes: list[type] = []
    stem = module_code(sub.stem, classes, 2)
    blocks = "".join(f"            {module_code(b, classes, 3)},\n" for b in sub.blocks)
    head = module_code(sub.head, classes, 2)
    classes = [ResidualBlock, *[c for c in classes if c is not ResidualBlock]]
    source = _TEMPLATE.format(
        doc=doc.strip(),
        branch=BRANCH,
        classes="\n\n".join(inspect.getsource(c) for c in classes),
        stem=stem,
        blocks=blocks,
        branch_only=[bool(b) for b in sub.branch_only],
        head=head,
        weights_name=weights_name,
    )
    compile(source, "model.py", "exec")  # fail here, not in the user's hands
    return source


_TEMPLATE = '''"""{doc}

Plain PyTorch (needs only torch and safetensors):

    from model import load
    net = load()              # or load("path/to/weights.safetensors"); in eval mode
    logits = net(images)
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

BRANCH = {branch!r}  # a block on this path contributes its residual branch alone (the unraveled view)


# The block classes, as the library defines them. Their __init__ is kept for reading only:
# build() below rebuilds each kept block from its parts (see _module), since the export does
# not keep the constructor's arguments.

{classes}

class SubNetwork(nn.Module):
    """The stem, the kept blocks in order, the head."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], branch_only: list[bool], head: nn.Module) -> None:
        super().__init__()
        self.stem, self.head = stem, head
        self.blocks = nn.ModuleList(blocks)
        self.branch_only = branch_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block, branch in zip(self.blocks, self.branch_only):
            h = block.run(h, BRANCH) if branch else block(h)
        return self.head(h)


def _module(cls: type, attributes: dict, **children: nn.Module) -> nn.Module:
    """An instance of ``cls`` holding ``children`` (in order) and plain ``attributes``,
    without calling its __init__."""
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    for name, child in children.items():
        module.add_module(name, child)
    module.__dict__.update(attributes)
    return module


def build() -> SubNetwork:
    """The network without its weights."""
    return SubNetwork(
        stem={stem},
        blocks=[
{blocks}        ],
        branch_only={branch_only},
        head={head},
    )


def load(path: str = "") -> SubNetwork:
    """The network with its weights (default: {weights_name} beside this file), in eval mode."""
    from safetensors.torch import load_file

    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "{weights_name}")
    model = build()
    model.load_state_dict(load_file(path))
    return model.eval()
'''
