"""`stimulative export`: a standalone smaller network whose predictions equal the
sub-network's inside the full model, loadable without stimulative (or timm)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from stimulative.cli import main as cli
from stimulative.core.sampling import parse_spec
from stimulative.evaluation.walk import naive_subnet_logits
from stimulative.tools.export import load_standalone
from stimulative.training.run_dir import RunDir

from ..tiny import tiny_flags

# a few steps: the weights need not be good, the export must be exact
TINY = tiny_flags(epochs=1, batch_size=32, calib_images=64, eval_bn="running")


@pytest.fixture(scope="module")
def native_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r20"
    assert cli(["train", "--model", "resnet20", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory):
    pytest.importorskip("timm")
    out = tmp_path_factory.mktemp("runs") / "timm"
    assert cli(["train", "--model", "timm:resnet18", "--resize", "16", "--out", str(out), *TINY]) == 0
    return out


def _reference(run, spec_text: str, bn: str, images: int = 64):
    model, cfg, data, _, _ = RunDir(str(run)).load("cpu")
    x = data.test.tensors[0][:images]
    calib = data.calibration_inputs(cfg.calib_images, cfg.eval_batch_size, cfg.seed) if bn == "subnet" else []
    return x, naive_subnet_logits(model.eval(), parse_spec(spec_text), [x], calib, bn)[0]


@pytest.mark.parametrize("bn", ["subnet", "running"])
def test_native_export_equals_the_subnetwork_inside_the_full_model(native_run, tmp_path, bn):
    out = tmp_path / "m"  # --out is a folder: model.safetensors, model.py, model.json inside
    assert (
        cli(["export", str(native_run), "--subnet", "2,1,3", "--out", str(out), "--bn", bn, "--check-images", "64"])
        == 0
    )
    report = json.loads((tmp_path / "m" / "model.json").read_text())
    assert report["check"]["standalone"]["equal"] and report["blocks"] == 6 and report["params"] < report["params_full"]
    net = load_standalone(str(tmp_path / "m" / "model.py"))
    x, want = _reference(native_run, "2,1,3", bn)
    with torch.no_grad():
        got = net(x)
    assert torch.allclose(got, want, atol=1e-5)
    # only the kept blocks: 6 of the 9 blocks' weights, no more
    blocks = {k.split(".")[1] for k in net.state_dict() if k.startswith("blocks.")}
    assert len(blocks) == 6


def test_standalone_file_runs_without_stimulative_or_timm(timm_run, tmp_path):
    assert cli(["export", str(timm_run), "--subnet", "1,1,2,1", "--out", str(tmp_path), "--check-images", "32"]) == 0
    source = (tmp_path / "model.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all(line.split()[1].split(".")[0] in ("os", "torch", "math", "operator") for line in imports), imports
    code = (
        "import sys; sys.modules['stimulative'] = None; sys.modules['timm'] = None\n"
        "import torch; from model import load\n"
        "print(tuple(load()(torch.randn(3, 1, 16, 16)).shape))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(3, 10)"
    x, want = _reference(timm_run, "1,1,2,1", "subnet", 32)
    with torch.no_grad():
        assert torch.allclose(load_standalone(str(tmp_path / "model.py"))(x), want, atol=1e-4)


def test_raw_path_subnetwork_exports_too(native_run, tmp_path):
    # the unraveled view: block 1 of stage 0 contributes its residual branch alone
    out = tmp_path
    assert (
        cli(
            [
                "export",
                str(native_run),
                "--subnet",
                "0.1r/0.2/0",
                "--out",
                str(out),
                "--bn",
                "running",
                "--torchscript",
                str(tmp_path / "m.ts"),
                "--pt2",
                str(tmp_path / "m.pt2"),
                "--check-images",
                "32",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "model.json").read_text())
    assert all(report["check"][k]["equal"] for k in ("standalone", "torchscript", "pt2"))


def test_export_refuses_to_overwrite_and_bad_names(native_run, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    out.write_text("precious")
    assert cli(["export", str(native_run), "--subnet", "1,1,1", "--out", str(tmp_path)]) == 2
    assert out.read_text() == "precious"
    # --out names a folder (issue 16: one grammar): an existing file is refused
    assert cli(["export", str(native_run), "--subnet", "1,1,1", "--out", str(out)]) == 2
    assert cli(["export", str(native_run), "--subnet", "9,9,9", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "names a folder" in err and "3 blocks; 9 is too many" in err
    assert not (tmp_path / "x" / "model.safetensors").exists() and not (tmp_path / "x" / "model.py").exists()


def test_onnx_export_runs_and_matches(native_run, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    out = tmp_path
    assert (
        cli(
            [
                "export",
                str(native_run),
                "--subnet",
                "1,2,1",
                "--out",
                str(out),
                "--onnx",
                str(tmp_path / "m.onnx"),
                "--check-images",
                "16",
            ]
        )
        == 0
    )
    check = json.loads((tmp_path / "model.json").read_text())["check"]["onnx"]
    assert isinstance(check, dict) and check["equal"], check
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "model.json", "model.py", "model.safetensors"]


def test_adapted_run_reevaluates_and_models_shows_its_structure(timm_run, capsys):
    assert cli(["evaluate", str(timm_run), "--subnets", "1,1,1,1", "2,2,2,2", "--bn", "running", "--no-progress"]) == 0
    ev = json.loads((timm_run / "evaluation.json").read_text())
    assert [s["spec"] for s in ev["subnets"]["per_subnet"]] == ["1,1,1,1", "2,2,2,2"]
    assert cli(["models", "timm:resnet18", "--image-size", "16", "--in-chans", "1"]) == 0
    assert "stages [2, 2, 2, 2]  skippable [2, 1, 1, 1]" in capsys.readouterr().out


def test_native_export_is_readable_pytorch_with_its_preprocessing(native_run, tmp_path):
    # issue 16: registered families export their block classes' code, not a traced graph
    assert cli(["export", str(native_run), "--subnet", "1,2,1", "--out", str(tmp_path), "--check-images", "32"]) == 0
    source = (tmp_path / "model.py").read_text()
    assert "class BasicBlock(ResidualBlock):" in source and "def _graph(" not in source
    assert "stimulative" not in "\n".join(line for line in source.splitlines() if "import" in line)
    code = (
        "import sys; sys.modules['stimulative'] = None\n"
        "import torch; from model import load\n"
        "print(tuple(load()(torch.randn(3, 1, 8, 8)).shape))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(3, 10)"
    pre = json.loads((tmp_path / "model.json").read_text())["preprocessing"]
    assert pre["channels"] == 1 and pre["size"] == [8, 8] and 0.2 < pre["mean"][0] < 0.4 and pre["std"][0] > 0
