"""Deploy one sub-network as a standalone, smaller network holding only the blocks it keeps.

``stimulative export RUN_DIR --subnet 2,3,1 --out model.safetensors`` writes, side by side:

* ``model.safetensors``: the sub-network's weights only (stem, kept blocks, head), with its
  BatchNorm statistics re-estimated for it (``--bn subnet``, the default), the full
  network's re-estimated ones (``--bn full``) or the running ones as trained (``--bn running``);
* ``model.py``: a self-contained module file that needs only PyTorch and safetensors (no
  stimulative, no timm): ``from model import load; net = load()`` (or
  ``load("path/to/model.safetensors")``), then ``net(images)``;
* ``model.json``: what was exported, its size and cost, and the check below;
* optionally TorchScript (``--torchscript``), ONNX (``--onnx``, needs ``onnx`` and
  ``onnxscript``) and ``torch.export``'s ``.pt2`` (``--pt2``), each loadable with plain
  PyTorch (``torch.jit.load``, ``torch.export.load``) or ONNX runtimes.

How: ``torch.export`` traces the sub-network into a graph of PyTorch operators with a
dynamic batch dimension; the graph's code becomes ``model.py`` and its inputs (parameters,
buffers) the weights. Nothing is trusted: the written files are loaded back and their
predictions compared with the sub-network inside the full model (same BN statistics) on
test images; files only take their final names once the check passes.
"""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from safetensors.torch import save_file
from torch import nn

from ..core.batchnorm import BN_PROTOCOLS, calibration_mode, needs_calibration, reestimate_full_network
from ..core.elastic import ElasticNet
from ..core.sampling import SubnetSpec, parse_spec
from ..evaluation.walk import naive_subnet_logits
from ..runtime.files import write_json, write_text
from ..runtime.measure import count_params, forward_flops
from ..training.config import TrainConfig
from ..training.run_dir import RunDir
from .pareto import SubnetModule
from .preprocessing import preprocessing
from .readable_source import NotReadable, readable_source

EXPORT_BN = BN_PROTOCOLS


class ExportError(ValueError):
    """A sub-network cannot be exported as asked; the message says why."""


def prepare_subnet(model: ElasticNet, spec: SubnetSpec, bn: str = "subnet", calibration=()) -> SubnetModule:
    """A copy of the sub-network (only its modules) in eval mode with the BN statistics of
    protocol ``bn``: re-estimated for it (subnet) or for the full network (full) on
    ``calibration`` batches, or the running ones (running)."""
    if bn not in EXPORT_BN:
        raise ExportError(f"unknown BN protocol {bn!r}; choose from {', '.join(EXPORT_BN)}")
    if needs_calibration(bn) and not calibration:
        raise ExportError(f"the {bn!r} BN protocol re-estimates statistics on calibration batches (training images)")
    source = model
    if bn == "full":
        source = copy.deepcopy(model)
        reestimate_full_network(source, calibration)
    sub = copy.deepcopy(SubnetModule(source, spec))
    if bn == "subnet":
        with torch.no_grad(), calibration_mode(sub):
            for x in calibration:
                sub(x)
    return sub.eval()


def export_program(sub: nn.Module, example: torch.Tensor) -> tuple[torch.export.ExportedProgram, bool]:
    """``torch.export`` of ``sub`` with a dynamic batch size, or, if the model's code fixes
    it, for the example's batch size. Returns ``(program, dynamic)``."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            batch = torch.export.Dim("batch", min=1, max=1 << 16)
            return torch.export.export(sub, (example,), dynamic_shapes={"x": {0: batch}}), True
        except Exception:  # noqa: BLE001 - fall back to a fixed batch size, then report
            pass
        try:
            return torch.export.export(sub, (example,)), False
        except Exception as e:  # noqa: BLE001
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ExportError(f"torch.export cannot trace this sub-network ({msg}); try --torchscript") from None


_IMPORTS = {
    "torch": "import torch",
    "operator": "import operator",
    "math": "import math",
    "device": "from torch import device",
    "inf": "from math import inf",
    "nan": "from math import nan",
    "NoneType": "NoneType = type(None)",
}


def module_file(
    sub: SubnetModule, program: torch.export.ExportedProgram, doc: str, weights_name: str, adapted: bool
) -> tuple[str, dict[str, torch.Tensor]]:
    """``model.py``'s source and the tensors it loads: plain PyTorch modules a person can read
    for the registered families, the traced graph for adapted (timm:/torchvision:) models and
    anything the readable writer does not know."""
    if not adapted:
        try:
            source = readable_source(sub, doc, weights_name)
        except NotReadable:
            return standalone_source(program, doc, weights_name)
        return source, {k: v.detach().cpu().contiguous().clone() for k, v in sub.state_dict().items()}
    return standalone_source(program, doc, weights_name)


def standalone_source(
    program: torch.export.ExportedProgram, doc: str, weights_name: str
) -> tuple[str, dict[str, torch.Tensor]]:
    """The Python source of a self-contained module running ``program``, and the tensors
    (parameters, buffers, constants) it loads, by name."""
    code = program.graph_module.graph.python_code("self")
    body = code.src.strip()
    if "self." in body:  # regions (autocast, no-grad) kept as submodules: decomposing inlines them
        program = program.run_decompositions({})
        code = program.graph_module.graph.python_code("self")
        body = code.src.strip()
    if "self." in body:
        raise ExportError(
            "the exported graph calls submodules (a control-flow or no-grad region); use --pt2 or --torchscript"
        )
    kinds = {"PARAMETER": True, "BUFFER": False, "CONSTANT_TENSOR": False}
    state = {**program.state_dict, **program.constants}
    tensors, rows, args = {}, [], []
    for spec in program.graph_signature.input_specs:
        kind = spec.kind.name
        args.append(spec.arg.name)
        if kind == "USER_INPUT":
            continue
        if kind not in kinds:
            raise ExportError(f"the exported graph takes an input of kind {kind}; use --pt2")
        t = state[spec.target].detach().cpu().contiguous().clone()
        tensors[spec.target] = t
        rows.append(f"    ({spec.target!r}, {tuple(t.shape)!r}, {t.dtype}, {kinds[kind]}),")
    if sum(1 for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT") != 1:
        raise ExportError("the exported graph does not take exactly one image batch")
    if len(program.graph_signature.output_specs) != 1:
        raise ExportError("the exported graph does not return exactly one tensor")
    body = re.sub(r"^def forward\(self, ", "def _graph(", body, count=1)
    imports = []
    for name, obj in code.globals.items():
        if not re.search(rf"\b{re.escape(name)}\b", body):
            continue
        if name in _IMPORTS:
            imports.append(_IMPORTS[name])
            continue
        module = getattr(obj, "__module__", "") or ""
        if module.split(".")[0] not in ("torch", "math", "operator", "builtins"):
            raise ExportError(
                f"the exported graph needs {name!r} from {module!r}, not only PyTorch; use --pt2 or --torchscript"
            )
        imports.append(f"from {module} import {obj.__qualname__} as {name}")
    source = _TEMPLATE.format(
        doc=doc.strip(),
        imports="\n".join(sorted(set(imports) | {"import torch"})),
        tensors="\n".join(rows),
        graph=body,
        weights_name=weights_name,
    )
    compile(source, "model.py", "exec")  # fail here, not in the user's hands
    return source, tensors


_TEMPLATE = '''"""{doc}

Standalone: needs only PyTorch and safetensors.

    from model import load
    net = load()              # or load("path/to/weights.safetensors"); in eval mode
    logits = net(images)
"""

import os

{imports}

# (name, shape, dtype, is a parameter) of every tensor the graph takes, in its order
TENSORS = [
{tensors}
]


{graph}


class Model(torch.nn.Module):
    """The exported sub-network; its weights are loaded by :func:`load`."""

    def __init__(self) -> None:
        super().__init__()
        self._slots = []
        for name, shape, dtype, is_parameter in TENSORS:
            *path, leaf = name.split(".")
            module = self
            for part in path:
                if part not in module._modules:
                    module.add_module(part, torch.nn.Module())
                module = module._modules[part]
            tensor = torch.empty(shape, dtype=dtype)
            if is_parameter:
                module.register_parameter(leaf, torch.nn.Parameter(tensor))
            else:
                module.register_buffer(leaf, tensor)
            self._slots.append((module, leaf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _graph(*(getattr(module, leaf) for module, leaf in self._slots), x)[0]


def load(path: str = "") -> Model:
    """The network with its weights (default: {weights_name} beside this file), in eval mode."""
    from safetensors.torch import load_file

    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "{weights_name}")
    model = Model()
    model.load_state_dict(load_file(path))
    return model.eval()
'''


def load_standalone(py_path: str, weights_path: str = "") -> nn.Module:
    """Import an exported ``model.py`` (by path) and load its weights: what a user does."""
    name = f"_stimulative_export_{abs(hash(os.path.abspath(py_path)))}"
    loader = importlib.machinery.SourceFileLoader(name, py_path)
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    weights = weights_path or os.path.splitext(py_path)[0] + ".safetensors"
    return module.load(weights)


def export_run(
    run_dir: str,
    subnet: str,
    out: str = "",
    bn: str = "subnet",
    torchscript: str = "",
    onnx: str = "",
    pt2: str = "",
    device: str = "cpu",
    check_images: int = 1000,
    force: bool = False,
) -> dict:
    """Export sub-network ``subnet`` of the run in ``run_dir`` (see the module docstring)."""
    spec = parse_spec(subnet)
    paths = _output_paths(run_dir, spec, out, {"torchscript": torchscript, "onnx": onnx, "pt2": pt2}, force)
    if bn not in EXPORT_BN:
        raise ExportError(f"unknown BN mode {bn!r}; choose from {', '.join(EXPORT_BN)}")

    model, cfg, data, dev, meta = RunDir(run_dir).load(device)
    model.eval()
    model.architecture.validate(spec)
    calibration = (
        data.calibration_inputs(cfg.calib_images, cfg.eval_batch_size, cfg.seed, 0, str(dev))
        if needs_calibration(bn)
        else []
    )
    sub = prepare_subnet(model, spec, bn, calibration)
    test_x, test_y = _test_images(data, check_images, cfg.eval_batch_size, str(dev))
    example = test_x[0][:2]
    program, dynamic = export_program(sub, example)
    doc = _module_doc(spec, cfg, model, data.image_size, meta, run_dir, bn, None if dynamic else len(example))
    source, tensors = module_file(sub, program, doc, os.path.basename(paths["weights"]), ":" in cfg.model)

    with _staged(paths) as tmp:
        save_file(
            tensors,
            tmp["weights"],
            metadata={"subnet": spec.to_text(), "model": cfg.model, "bn": bn, "run": os.path.abspath(run_dir)},
        )
        write_text(tmp["module"], source)
        reference = torch.cat(naive_subnet_logits(model, spec, test_x, calibration, bn))
        check = _check_exports(tmp, sub, program, example, dynamic, dev, (test_x, test_y, reference))
        report = {
            "run": os.path.abspath(run_dir),
            "model": cfg.model,
            "subnet": spec.to_text(),
            "bn": bn,
            **_sizes(model, sub, spec, example[:1]),
            "input": [meta["in_chans"], data.image_size, data.image_size],
            "preprocessing": preprocessing(cfg, meta["in_chans"], data.image_size),
            "num_classes": meta["num_classes"],
            "dynamic_batch": dynamic,
            "check": check,
            "files": {k: os.path.abspath(v) for k, v in paths.items() if k != "report"},
        }
        write_json(tmp["report"], report)
    _print_report(report, paths)
    return report


def _module_doc(
    spec: SubnetSpec,
    cfg: TrainConfig,
    model: ElasticNet,
    image_size: int,
    meta: dict,
    run_dir: str,
    bn: str,
    fixed_batch: int | None,
) -> str:
    """The docstring of ``model.py``: what was exported, from where, and what it takes."""
    return (
        f"Sub-network {spec} of {cfg.model} ({len(spec.flat())} of {sum(model.architecture.stage_sizes)} blocks), "
        f"exported by `stimulative export` from {os.path.abspath(run_dir)}.\n"
        f"BatchNorm statistics: {bn}. Input: (batch, {meta['in_chans']}, {image_size}, {image_size}) "
        f"{f'with batch size {fixed_batch} exactly ' if fixed_batch else ''}normalised as the run's {cfg.dataset} "
        f"data; output: (batch, {meta['num_classes']}) logits."
    )


def _sizes(model: ElasticNet, sub: nn.Module, spec: SubnetSpec, image: torch.Tensor) -> dict:
    """Blocks, parameters and MFLOPs (for one ``image``) of the sub-network and the full network."""
    return {
        "blocks": len(spec.flat()),
        "blocks_full": sum(model.architecture.stage_sizes),
        "params": count_params(sub),
        "params_full": count_params(model),
        "mflops": forward_flops(sub, image) / 1e6,
        "mflops_full": forward_flops(model, image) / 1e6,
    }


def _output_paths(run_dir: str, spec: SubnetSpec, out: str, extra: dict[str, str], force: bool) -> dict[str, str]:
    """The files to write, by kind: the weights (``out``, by default under the run's
    ``export`` folder), ``model.py`` and ``model.json`` beside them, and each asked-for
    ``extra`` format. Existing files are refused unless ``force``."""
    out = out or os.path.join(
        run_dir, "export", f"subnet-{re.sub(r'[^0-9A-Za-z]+', '_', spec.to_text()).strip('_')}", "model.safetensors"
    )
    if not out.endswith(".safetensors"):
        raise ExportError(f"--out {out!r}: name the weights file *.safetensors (model.py and model.json go beside it)")
    stem = out[: -len(".safetensors")]
    paths = {"weights": out, "module": stem + ".py", "report": stem + ".json"}
    paths.update({k: v for k, v in extra.items() if v})
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not force:
        raise ExportError(f"{existing[0]!r} already exists; pass --force to overwrite it, or another --out")
    return paths


@contextmanager
def _staged(paths: dict[str, str]) -> Iterator[dict[str, str]]:
    """Temporary names for ``paths``, by kind; they take their final names together when the
    block completes, and whatever is left of them is removed either way (nothing half-written
    or unchecked ever bears a final name)."""
    os.makedirs(os.path.dirname(os.path.abspath(paths["weights"])), exist_ok=True)
    tmp = {k: f"{v}.tmp{os.path.splitext(v)[1]}" for k, v in paths.items()}
    try:
        yield tmp
        for k, p in paths.items():
            os.replace(tmp[k], p)
    finally:
        for p in tmp.values():
            if os.path.exists(p):
                os.remove(p)


def _check_exports(
    tmp: dict[str, str],
    sub: nn.Module,
    program: torch.export.ExportedProgram,
    example: torch.Tensor,
    dynamic: bool,
    dev: torch.device,
    images: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor],
) -> dict:
    """Write the asked-for extra formats, load every written file back and compare its logits
    with the sub-network inside the full model (``images``: test inputs, labels and those
    reference logits). Raises if any differs."""
    check = {"standalone": _compare(load_standalone(tmp["module"], tmp["weights"]).to(dev), *images)}
    if "torchscript" in tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(sub, example, check_trace=False)
            traced.save(tmp["torchscript"])
            check["torchscript"] = _compare(torch.jit.load(tmp["torchscript"], map_location=dev), *images)
    if "pt2" in tmp:
        torch.export.save(program, tmp["pt2"])
        check["pt2"] = _compare(torch.export.load(tmp["pt2"]).module(), *images) if dynamic else "written"
    if "onnx" in tmp:
        _export_onnx(sub, example, tmp["onnx"], dynamic)
        check["onnx"] = _check_onnx(tmp["onnx"], *images)
    bad = {k: v for k, v in check.items() if isinstance(v, dict) and not v["equal"]}
    if bad:
        k, v = next(iter(bad.items()))
        raise ExportError(
            f"the {k} export differs from the sub-network inside the full model (max |logit difference| "
            f"{v['max_abs_diff']:.3g}); nothing written"
        )
    return check


def _test_images(data, count: int, batch_size: int, device: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    xs, ys, n = [], [], 0
    for x, y in data.eval_batches(data.test, batch_size, 0, device):
        xs.append(x[: count - n])
        ys.append(y[: count - n])
        n += len(xs[-1])
        if n >= count:
            break
    return xs, torch.cat(ys)


@torch.no_grad()
def _compare(module: nn.Module, xs: list[torch.Tensor], y: torch.Tensor, reference: torch.Tensor) -> dict:
    got = torch.cat([module(x) for x in xs])
    diff = float((got - reference).abs().max())
    tol = 1e-3 * max(1.0, float(reference.abs().max()))
    same = float((got.argmax(1) == reference.argmax(1)).float().mean()) * 100
    return {
        "images": len(y),
        "max_abs_diff": diff,
        "equal": diff <= tol,
        "same_predictions_pct": same,
        "top1": float((got.argmax(1) == y).float().mean()) * 100,
        "top1_inside_full_model": float((reference.argmax(1) == y).float().mean()) * 100,
    }


def _export_onnx(sub: nn.Module, example: torch.Tensor, path: str, dynamic: bool) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError("--onnx needs the onnx and onnxscript packages: pip install onnx onnxscript") from None
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=1 << 16)}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            sub,
            (example,),
            path,
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=["images"],
            output_names=["logits"],
            external_data=False,  # one self-contained file
        )


def _check_onnx(path: str, xs: list[torch.Tensor], y: torch.Tensor, reference: torch.Tensor) -> dict | str:
    """Run the ONNX file with onnx's reference evaluator (pure Python: a few images only)."""
    x = xs[0][:8]
    try:
        from onnx.reference import ReferenceEvaluator

        got = torch.from_numpy(ReferenceEvaluator(path).run(None, {"images": x.cpu().numpy()})[0])
    except Exception as e:  # noqa: BLE001 - an operator the reference evaluator lacks: say so
        return (
            f"written; not run (onnx's reference evaluator: {str(e).splitlines()[0] if str(e) else type(e).__name__})"
        )
    return _compare(lambda _: got, [x], y[: len(x)], reference[: len(x)].cpu())


def _print_report(report: dict, paths: dict) -> None:
    c = report["check"]["standalone"]
    print(
        f"exported sub-network {report['subnet']} of {report['model']}: {report['blocks']}/{report['blocks_full']} "
        "blocks, "
        f"{report['params']:,}/{report['params_full']:,} parameters, "
        f"{report['mflops']:.3f}/{report['mflops_full']:.3f} MFLOPs ({report['bn']} BN)"
    )
    print(
        f"check on {c['images']} test images: max |logit difference| {c['max_abs_diff']:.2e} to the sub-network "
        "inside the full model, "
        f"same predictions {c['same_predictions_pct']:.1f} %, top-1 {c['top1']:.2f} % (inside the full model "
        f"{c['top1_inside_full_model']:.2f} %)"
    )
    for k, p in paths.items():
        print(f"  {k:<12} {p}")
    if not report["dynamic_batch"]:
        print(
            f"note: the model's code fixes the batch size; the export takes batches of {report['input']} exactly as "
            "traced",
            file=sys.stderr,
        )
