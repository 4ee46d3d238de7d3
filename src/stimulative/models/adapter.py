"""Any timm or torchvision residual network as an :class:`ElasticNet` (``timm:resnet50``,
``torchvision:resnet50``, ``timm:vit_tiny_patch16_224``, ...).

Nothing is looked up in a list of block names; the model's structure decides:

1. **probe**: one forward pass (eval mode, a small random batch) records every module call,
   its input and its output;
2. **skippable blocks**: a module is a skippable residual block when it maps one tensor to a
   tensor of the *same shape*, has parameters, and with all its parameters zeroed (its
   residual branch cut) returns its input unchanged: it has an identity shortcut. A plain
   layer of matching shape returns zeros instead, and a projection shortcut is zeroed with
   the rest, so a shape match alone is not enough. The innermost such modules are the
   blocks; their parents are the *stage containers*, and every child of a stage container
   is a block (skippable or not, e.g. the strided first block of a ResNet stage);
3. **split**: the model's own forward is traced with ``torch.fx``, the blocks as leaves. The
   code before the first block becomes the stem (a ViT's patch embedding, class token and
   position embedding), the code after the last block the head (a ViT's final norm and
   token pooling, a CNN's pooling and classifier), and code between two blocks (a Swin or
   ConvNeXt downsampling layer) a shape-changing block that opens the next stage;
4. **stages**: a new stage starts at each shape-changing block and where the stage
   container changes; consecutive shape-changing blocks are run as one, and those after
   the last skippable block join the head;
5. **check**: the adapted network must reproduce the original model's outputs.

An adapted block is run whole: as a unit ``y = x + G(x)``, so its residual branch (the
unraveled view's non-identity path) is ``G(x) = block(x) - x``.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..core.elastic import ElasticNet, ResidualBlock
from ..core.sampling import BRANCH
from ..runtime.weights import WeightsFileError, read_weights

SOURCES = ("timm", "torchvision")


class AdapterError(ValueError):
    """A model cannot be made a stimulative model; the message says why."""


class AdaptedBlock(ResidualBlock):
    """One block of an adapted model, run whole. Skippable blocks are ``y = x + G(x)``."""

    def __init__(self, module: nn.Module, skippable: bool) -> None:
        super().__init__()
        self.module = module
        self.skippable = skippable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return out - x if self.skippable else out

    def merge(self, x: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        return b if x is None or not self.skippable else x + b

    def run(self, x: torch.Tensor, path: str) -> torch.Tensor:
        out = self.module(x)
        return out - x if path == BRANCH else out


class AdaptedNet(ElasticNet):
    """``stem -> stages -> head`` cut out of a timm/torchvision model (shares its modules)."""

    def __init__(self, stem: nn.Module, stages: list[list[AdaptedBlock]], head: nn.Module, source: str) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(nn.ModuleList(s) for s in stages)
        self.head = head
        self.source = source
        self.notes: list[str] = []  # what the adapter decided that a user may want to know

    def extra_repr(self) -> str:
        return f"source={self.source!r}"


# ---------------------------------------------------------------------------------------
# building the source model


def parse_model_args(text: str) -> dict:
    """``"drop_path_rate=0.1,dynamic_img_size=True"`` -> keyword arguments (Python literals,
    anything else kept as a string)."""
    out: dict = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(
                f"--model-args {text!r}: write key=value pairs separated by commas, e.g. drop_path_rate=0.1"
            )
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def build_source_model(
    name: str, num_classes: int, in_chans: int, image_size: int | None = None, **kwargs
) -> nn.Module:
    """The timm/torchvision model ``source:arch`` with random weights (never downloads).

    ``image_size`` is passed to models that take one (``img_size`` for timm ViT/Swin,
    ``image_size`` for torchvision ViT); models that do not take it are built without it."""
    source, _, arch = name.partition(":")
    if source == "timm":
        try:
            import timm
        except ImportError:
            raise AdapterError("timm:* models need timm; install it with `pip install timm`") from None
        if not timm.is_model(arch):
            raise AdapterError(
                f"unknown timm model {arch!r}; list them with `python -c 'import timm; print(timm.list_models())'`"
            )
        kwargs.pop("pretrained", None)

        def build(**kw):
            return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kw)

        size_key = "img_size"
    elif source == "torchvision":
        # imported here, not at the top: importing torchvision costs every command about 2 s of
        # CPU at start-up, and only torchvision:NAME models need it (data.py does the same)
        from torchvision import models as torchvision_models

        try:
            builder = torchvision_models.get_model_builder(arch)
        except ValueError:
            names = ", ".join(torchvision_models.list_models(torchvision_models))
            raise AdapterError(f"unknown torchvision model {arch!r}; choose from {names}") from None

        def build(**kw):
            return builder(weights=None, num_classes=num_classes, **kw)

        size_key = "image_size"
    else:
        raise AdapterError(f"unknown model source {source!r} in {name!r}; choose from {', '.join(SOURCES)}")
    if image_size and size_key not in kwargs:
        try:
            model = build(**kwargs, **{size_key: image_size})
        except TypeError as e:  # the family has no input size argument (CNNs)
            if size_key not in str(e):
                raise
            model = build(**kwargs)
    else:
        model = build(**kwargs)
    if source == "torchvision" and in_chans != 3:
        _replace_input_conv(model, in_chans)
    return model


def _replace_input_conv(model: nn.Module, in_chans: int) -> None:
    """torchvision models take RGB: give their first convolution ``in_chans`` inputs."""
    for parent in model.modules():
        for child_name, conv in parent.named_children():
            if isinstance(conv, nn.Conv2d) and conv.in_channels == 3:
                new = nn.Conv2d(
                    in_chans,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    conv.dilation,
                    conv.groups,
                    conv.bias is not None,
                    conv.padding_mode,
                )
                setattr(parent, child_name, new)
                return
    raise AdapterError(f"cannot find the input convolution of {type(model).__name__} to give it {in_chans} channels")


def load_pretrained(model: nn.Module, path: str, num_classes: int) -> list[str]:
    """Load a local weights file of the *original* model (timm/torchvision key names;
    ``.safetensors`` or a ``torch.save``'d state dict read with ``weights_only=True``).

    Tolerated differences, reported in the returned notes: a classifier for another number
    of classes (kept at its fresh initialisation), an RGB input convolution loaded into a
    model with other input channels (summed / repeated as timm does), and anything the
    family's own timm ``checkpoint_filter_fn`` resamples (e.g. ViT position embeddings for
    another input size). Anything else is an error."""
    if not os.path.isfile(path):
        raise AdapterError(f"--pretrained-file {path!r}: no such file")
    state = _original_state(model, path)
    load, notes = _fit_to_model(state, model, num_classes, path)
    model.load_state_dict(load, strict=False)
    return notes


def _original_state(model: nn.Module, path: str) -> dict[str, torch.Tensor]:
    """The tensors of a pretrained weights file under the model's own key names: unwrapped
    from a training checkpoint, without DDP's ``module.`` prefix, through the timm family's
    ``checkpoint_filter_fn`` if it has one."""
    try:
        state = read_weights(path)
    except WeightsFileError as e:
        raise AdapterError(f"cannot read pretrained weights {path!r}: {e}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    family = sys.modules.get(type(model).__module__)
    filter_fn = getattr(family, "checkpoint_filter_fn", None)
    if filter_fn is not None and type(model).__module__.startswith("timm."):
        try:
            state = filter_fn(state, model)
        except Exception:  # noqa: BLE001 - the filter is a best effort; shapes are checked below
            pass
    return state


def _fit_to_model(
    state: dict[str, torch.Tensor], model: nn.Module, num_classes: int, path: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors to load (an input convolution adapted to the model's channels) and notes
    on what was left out or adapted; any other difference is an error."""
    notes, load = [], {}
    for k, target in model.state_dict().items():
        if k not in state:
            if k.endswith("num_batches_tracked"):
                continue
            raise AdapterError(
                f"{path!r} does not fit {type(model).__name__}: it has no {k!r} (is it another architecture?)"
            )
        v = state[k]
        if v.shape == target.shape:
            load[k] = v
        elif (
            target.ndim >= 1
            and target.shape[0] == num_classes
            and v.ndim == target.ndim
            and v.shape[1:] == target.shape[1:]
        ):
            notes.append(f"{k}: {v.shape[0]} classes in the file, {num_classes} here; kept freshly initialised")
        elif v.ndim == 4 and target.ndim == 4 and v.shape[0] == target.shape[0] and v.shape[2:] == target.shape[2:]:
            load[k] = _adapt_input_conv(v, target.shape[1])
            notes.append(f"{k}: input convolution adapted from {v.shape[1]} to {target.shape[1]} channels")
        else:
            raise AdapterError(
                f"{path!r} does not fit: {k} has shape {tuple(v.shape)} there, {tuple(target.shape)} here"
            )
    return load, notes


def _adapt_input_conv(w: torch.Tensor, in_chans: int) -> torch.Tensor:
    """timm's rule: one channel takes the sum of the RGB filters; more repeat them, rescaled."""
    if in_chans == 1:
        return w.sum(dim=1, keepdim=True)
    reps = -(-in_chans // w.shape[1])
    return w.repeat(1, reps, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans)


# ---------------------------------------------------------------------------------------
# finding the blocks


@dataclass
class _Call:
    order: int
    inp: object  # its first argument (the object itself, to follow chains)
    out: object = None  # its output
    x: torch.Tensor | None = None  # a copy of its input if it may be a block (one tensor in, parameters)
    count: int = 1
    extra_inputs: bool = False  # called with more than one argument


def _probe(model: nn.Module, x: torch.Tensor) -> dict[str, _Call]:
    """Run ``model(x)`` recording each module's first call (in call order)."""
    calls: dict[str, _Call] = {}
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def pre(module, args, kwargs):
        name = names[module]
        if name in calls:
            calls[name].count += 1
            return
        first = args[0] if args else None
        single = len(args) == 1 and not kwargs and isinstance(first, torch.Tensor)
        keep = single and any(True for _ in module.parameters())
        calls[name] = _Call(len(calls), first, x=first.detach().clone() if keep else None, extra_inputs=not single)

    def post(module, args, kwargs, out):
        call = calls[names[module]]
        if call.count == 1:
            call.out = out

    for m in names:
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


@torch.no_grad()
def has_identity_shortcut(module: nn.Module, x: torch.Tensor, rtol: float = 1e-4) -> bool:
    """True if ``module`` keeps the shape of ``x`` and, with every parameter zeroed (its
    residual branch cut, a projection shortcut with it), returns ``x`` unchanged."""
    params = list(module.parameters())
    if not params or not bool(x.abs().max() > 0):
        return False
    saved = [p.detach().clone() for p in params]
    was_training = module.training
    module.eval()
    try:
        for p in params:
            p.zero_()
        out = module(x.clone())
    finally:
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
        module.train(was_training)
    # relative to the input's scale: a randomly initialised network's activations may be tiny
    return (
        isinstance(out, torch.Tensor) and out.shape == x.shape and bool((out - x).abs().max() <= rtol * x.abs().max())
    )


def _called_parent(name: str, calls: dict[str, _Call]) -> str:
    """The nearest ancestor that was called (a ModuleList is iterated, never called)."""
    parent = _parent(name)
    while parent and parent not in calls:
        parent = _parent(parent)
    return parent


def _children_chain(name: str, calls: dict[str, _Call]) -> list[str] | None:
    """The called children of ``name`` (through uncalled ModuleLists) if its call is exactly
    the chain of their calls (the first takes its input, each the previous one's output,
    the last gives its output)."""
    if name not in calls:
        return None
    kids = sorted(
        (n for n in calls if n and n != name and _called_parent(n, calls) == name), key=lambda n: calls[n].order
    )
    if not kids or any(calls[k].count != 1 for k in kids):
        return None
    value = calls[name].inp
    for k in kids:
        if calls[k].inp is not value:
            return None
        value = calls[k].out
    return kids if value is calls[name].out else None


def find_blocks(model: nn.Module, calls: dict[str, _Call]) -> list[str]:
    """Names of the skippable residual blocks.

    Of the modules with an identity shortcut, one that merely chains its children, some of
    which have one too, is a container (a ViT's ``blocks``, a ResNet stage of identity
    blocks, a MaxViT block of three residual sub-blocks); one nested in a block (ConvNeXt-V2's
    response normalisation, FastViT's token mixer) is part of that block. The blocks are the
    outermost of the others."""
    modules = dict(model.named_modules())
    found = {
        name
        for name, c in calls.items()
        if name
        and c.count == 1
        and c.x is not None
        and isinstance(c.out, torch.Tensor)
        and c.out.shape == c.x.shape
        and has_identity_shortcut(modules[name], c.x)
    }
    containers = set()
    for name in found:
        kids = _children_chain(name, calls)
        if kids and any(k in found for k in kids):
            containers.add(name)
    candidates = found - containers
    return sorted(n for n in candidates if not any(n.startswith(o + ".") for o in candidates))


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


# ---------------------------------------------------------------------------------------
# splitting the forward into stem, blocks and head


class _Tracer(fx.Tracer):
    """Traces only the model's forward and the containers leading to the blocks."""

    def __init__(self, units: set[str], path: set[str]) -> None:
        super().__init__()
        self.units, self.path = units, path

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.units:
            return True
        if qualname in self.path or isinstance(m, nn.Identity):
            return False
        return True


_DROPOUTS = {
    F.dropout: 2,
    F.dropout1d: 2,
    F.dropout2d: 2,
    F.dropout3d: 2,
    F.alpha_dropout: 2,
    F.feature_alpha_dropout: 2,
}


def _honour_training(graph: fx.Graph) -> None:
    """A traced ``F.dropout(x, p, training=self.training)`` froze ``self.training`` at trace
    time; read it from the module at run time instead."""
    flag = None
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _DROPOUTS:
            if flag is None:
                with graph.inserting_before(next(iter(n for n in graph.nodes if n.op != "placeholder"))):
                    flag = graph.get_attr("training")
            pos = _DROPOUTS[node.target]
            if len(node.args) > pos:
                node.args = (*node.args[:pos], flag, *node.args[pos + 1 :])
            else:
                node.kwargs = {**node.kwargs, "training": flag}


def _segment(
    root: nn.Module, nodes: list[fx.Node], inp: fx.Node, out: fx.Argument, name: str, what: str
) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {inp: graph.placeholder("x")}

    def lookup(a: fx.Node) -> fx.Node:
        if a not in env:
            if a.op != "get_attr":
                raise AdapterError(
                    f"the {what} uses {a.name!r}, computed elsewhere: the model is not one chain of "
                    "stem -> blocks -> head (a block taking extra inputs, or a long skip connection)"
                )
            env[a] = graph.node_copy(a)
        return env[a]

    for node in nodes:
        if node.op != "output":
            env[node] = graph.node_copy(node, lookup)
    graph.output(fx.map_arg(out, lookup))
    _honour_training(graph)
    graph.lint()
    return fx.GraphModule(root, graph, class_name=name)


def _trace(model: nn.Module, units: list[str]) -> fx.Graph:
    path = {""}
    for u in units:
        parts = u.split(".")
        path.update(".".join(parts[:i]) for i in range(1, len(parts)))
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    concrete = {}
    for p in params:
        if p.default is inspect.Parameter.empty:
            raise AdapterError(f"{type(model).__name__}.forward needs more than an image ({p.name!r})")
        concrete[p.name] = p.default
    try:
        graph = _Tracer(set(units), path).trace(model, concrete_args=concrete or None)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds; name the cause
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AdapterError(
            f"cannot split {type(model).__name__} into stem, blocks and head: torch.fx cannot trace its forward ({msg})"
        ) from None
    # fx keeps a placeholder, and assertions that it has the fixed value, for each argument
    # fixed above: drop them when nothing else depends on the argument
    for node in [n for n in graph.nodes if n.op == "placeholder"][1:]:
        checks: list[fx.Node] = []
        todo = list(node.users)
        while todo:
            user = todo.pop()
            if user not in checks:
                checks.append(user)
                todo.extend(user.users)
        if any(n.op == "output" or n.op == "call_module" for n in checks):
            raise AdapterError(
                f"{type(model).__name__}.forward uses its argument {node.target!r}; only an image input is supported"
            )
        for n in sorted(checks, key=lambda n: -_position(graph, n)):
            graph.erase_node(n)
        graph.erase_node(node)
    return graph


def _position(graph: fx.Graph, node: fx.Node) -> int:
    return next(i for i, n in enumerate(graph.nodes) if n is node)


@dataclass
class _Piece:
    module: nn.Module
    skippable: bool
    container: str | None  # the stage container of a block; None for code between blocks


def adapt(model: nn.Module, example: torch.Tensor, name: str = "") -> AdaptedNet:
    """Make ``model`` an :class:`AdaptedNet` sharing its modules (see the module docstring).
    ``example`` is an input batch of the size the model will see."""
    label = name or type(model).__name__
    model.eval()
    try:
        calls = _probe(model, example)
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AdapterError(f"{label} cannot run on inputs of shape {tuple(example.shape)}: {msg}") from None
    blocks = find_blocks(model, calls)
    if not blocks:
        extra = sorted(
            (n for n, c in calls.items() if c.extra_inputs and n), key=lambda n: (n.count("."), calls[n].order)
        )
        hint = (
            f" ({len(extra)} modules, e.g. {extra[0]!r}, take inputs besides the activation: such blocks are not "
            "supported)"
            if extra
            else ""
        )
        raise AdapterError(
            f"{label} has no skippable residual block (a block that keeps its input's shape and adds "
            f"its input back unchanged){hint}; stimulative training needs residual blocks to drop"
        )
    try:
        return _split(model, calls, blocks, example, label)
    except AdapterError as first:
        # blocks nested in a module that is not a plain chain (MobileViT's transformer inside
        # a convolutional block) cannot be cut out; keep the others if that helps
        main = [b for b in blocks if all(_children_chain(a, calls) for a in _ancestors(_parent(b)) if a in calls)]
        if not main or main == blocks:
            raise
        try:
            net = _split(model, calls, main, example, label)
        except AdapterError:
            raise first from None
        net.notes.append(
            f"{len(blocks) - len(main)} residual blocks nested in non-sequential modules are run as part of them "
            f"(e.g. {sorted(set(blocks) - set(main))[0]!r})"
        )
        return net


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b", "a.b.c"]`` (the root excluded)."""
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _split(
    model: nn.Module, calls: dict[str, _Call], blocks: list[str], example: torch.Tensor, label: str
) -> AdaptedNet:
    """Cut ``model`` into stem, stages of blocks and head around the skippable ``blocks``,
    and check that the result reproduces the model."""
    units, skippable = _units(calls, blocks)
    stem, pieces, head = _cut(model, _trace(model, units), units, skippable, label)
    stages, fixed = _stages(pieces)
    if fixed:  # shape-changing code after the last skippable block runs with the head
        head = nn.Sequential(*fixed, head)
    net = AdaptedNet(stem, stages, head, label)
    _check_same_outputs(model, net, example, label)
    return net


def _units(calls: dict[str, _Call], blocks: list[str]) -> tuple[list[str], set[str]]:
    """The modules run as units, in call order (every called child of a stage container),
    and which of them are skippable."""
    containers = {_parent(n) for n in blocks}
    units = sorted(
        (n for n in calls if n and _parent(n) in containers and n not in containers and calls[n].count == 1),
        key=lambda n: calls[n].order,
    )
    # a unit nested in another container's unit is run as part of that one
    units = [u for u in units if not any(u.startswith(c + ".") for c in containers if c != _parent(u))]
    return units, set(blocks) & set(units)


def _cut(
    model: nn.Module, graph: fx.Graph, units: list[str], skippable: set[str], label: str
) -> tuple[fx.GraphModule, list[_Piece], fx.GraphModule]:
    """The traced forward cut at the unit calls: the stem, the pieces in order (each unit, and
    the code between two units), the head."""
    modules = dict(model.named_modules())
    nodes = list(graph.nodes)
    unit_set = set(units)
    unit_nodes = [n for n in nodes if n.op == "call_module" and n.target in unit_set]
    if sorted(n.target for n in unit_nodes) != sorted(units):
        raise AdapterError(f"{label}: the traced forward does not call each block once, as the probe did")
    for n in unit_nodes:
        if len(n.args) != 1 or n.kwargs or not isinstance(n.args[0], fx.Node):
            raise AdapterError(
                f"{label}: block {n.target!r} takes more than one tensor; only chains of blocks are supported"
            )
    placeholder = next(n for n in nodes if n.op == "placeholder")
    pieces: list[_Piece] = []
    segment: list[fx.Node] = []
    previous = placeholder
    stem = None
    for node in nodes:
        if node.op == "placeholder":
            continue
        if node in unit_nodes:
            feed = node.args[0]
            if previous is placeholder:
                stem = _segment(model, segment, placeholder, feed, "Stem", "stem")
            elif segment or feed is not previous:
                between = _segment(model, segment, previous, feed, "Between", f"code before block {node.target!r}")
                pieces.append(_Piece(between, False, None))
            pieces.append(_Piece(modules[node.target], node.target in skippable, _parent(node.target)))
            previous, segment = node, []
        else:
            segment.append(node)
    output = next(n for n in nodes if n.op == "output")
    return stem, pieces, _segment(model, segment, previous, output.args[0], "Head", "head")


def _stages(pieces: list[_Piece]) -> tuple[list[list[AdaptedBlock]], list[nn.Module]]:
    """The stages: a new one at each shape-changing piece (consecutive ones run as one block)
    and where the stage container changes. Also the shape-changing pieces left after the
    last skippable block."""
    stages: list[list[AdaptedBlock]] = []
    fixed: list[nn.Module] = []
    current: list[AdaptedBlock] | None = None
    container = None
    for p in pieces:
        if not p.skippable:
            fixed.append(p.module)
            continue
        if fixed:
            current = [AdaptedBlock(_chain(fixed), False)]
            stages.append(current)
            fixed = []
        elif current is None or p.container != container:
            current = []
            stages.append(current)
        current.append(AdaptedBlock(p.module, True))
        container = p.container
    return stages, fixed


def _chain(mods: list[nn.Module]) -> nn.Module:
    return mods[0] if len(mods) == 1 else nn.Sequential(*mods)


@torch.no_grad()
def _check_same_outputs(model: nn.Module, net: AdaptedNet, x: torch.Tensor, label: str) -> None:
    model.eval()
    net.eval()
    want, got = model(x), net(x)
    if not isinstance(want, torch.Tensor) or want.shape != got.shape:
        raise AdapterError(f"{label}: the adapted network's output does not match the model's")
    tol = 1e-4 * max(1.0, float(want.abs().max()))
    if not torch.allclose(want, got, atol=tol, rtol=1e-4):
        diff = float((want - got).abs().max())
        raise AdapterError(f"{label}: the adapted network does not reproduce the model (max difference {diff:.3g})")


# ---------------------------------------------------------------------------------------
# entry point used by the registry


def is_adapted_name(name: str) -> bool:
    return name.partition(":")[0] in SOURCES and ":" in name


def create_adapted(
    name: str,
    num_classes: int = 10,
    in_chans: int = 3,
    image_size: int | None = None,
    pretrained_file: str = "",
    model_args: str | dict = "",
    log: Callable[[str], None] | None = None,
) -> AdaptedNet:
    """``create_model("timm:resnet50", ...)``: build, optionally load local pretrained
    weights of the original model, then adapt. ``image_size`` is the input side the model
    will see (also the probe's); default: the model's own (224 for ImageNet models)."""
    kwargs = parse_model_args(model_args) if isinstance(model_args, str) else dict(model_args)
    model = build_source_model(name, num_classes, in_chans, image_size, **kwargs)
    if pretrained_file:
        for note in load_pretrained(model, pretrained_file, num_classes):
            (log or print)(f"{name}: {note}")
    size = image_size or _default_size(model)
    example = torch.randn(2, in_chans, size, size, generator=torch.Generator().manual_seed(0))
    net = adapt(model, example, name)
    for note in net.notes:
        (log or print)(f"{name}: {note}")
    return net


def _default_size(model: nn.Module) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size", (3, 224, 224))
    return int(size[-1])
