"""The grammar every command shares (issue 16): no abbreviations, "did you mean", --version,
all bad YAML keys at once, errors for flags (and YAML options) the mode ignores, --device, missing folders,
`models` with several names, train --help grouped by section."""

from __future__ import annotations

import pytest

from stimulative import __version__
from stimulative.cli import main


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    return capsys.readouterr().err


def _fails(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_abbreviations_are_errors_with_a_suggestion(capsys):
    err = _error(capsys, ["train", "--epoch", "3"])
    assert "unrecognized arguments: --epoch (did you mean --epochs?)" in err


def test_unknown_command_suggests_the_closest(capsys):
    assert "(did you mean train?)" in _error(capsys, ["tran"])


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"stimulative {__version__}"


def test_every_bad_yaml_key_is_named_at_once(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epoch: 3\nlrr: 0.1\nmode: st\n")
    err = _fails(capsys, ["train", "--config", str(path)])
    assert "'epoch' (did you mean epochs?)" in err and "'lrr' (did you mean lr?)" in err


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--subnet", "1,1,1"], "--subnet (read by --mode individual only)"),
        (["--mode", "ct", "--kl-weight", "2"], "--kl-weight (read by --mode st only)"),
        (["--mode", "ct", "--temperature", "2"], "--temperature"),
        (["--mode", "ct", "--subnets-per-step", "2"], "--subnets-per-step"),
        (["--drop-path-rate", "0.2"], "--drop-path-rate (read by --mode stochastic-depth only)"),
    ],
)
def test_flags_the_mode_ignores_are_errors(capsys, tmp_path, flags, named):
    err = _fails(capsys, ["train", *flags, "--out", str(tmp_path / "r")])
    assert named in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "text, named",
    [
        ("mode: ct\nkl_weight: 2\n", "--mode ct ignores kl_weight (read by --mode st only)"),
        ("drop_path_rate: 0.2\n", "--mode st ignores drop_path_rate (read by --mode stochastic-depth only)"),
    ],
)
def test_yaml_options_its_own_mode_ignores_are_errors(capsys, tmp_path, text, named):
    """A file whose mode (given or the default, st) does not read one of its options."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    err = _fails(capsys, ["train", "--config", str(path), "--out", str(tmp_path / "r")])
    assert f"config {str(path)!r}: {named}; remove it or set the mode that reads them" in err
    assert not (tmp_path / "r").exists()


def test_yaml_options_a_command_line_mode_ignores_are_a_warning(capsys, tmp_path):
    """--mode on the command line over a file written for another mode: the file is reused
    on purpose, so training goes on and the options left unread are named."""
    from stimulative.cli_grammar import check_mode_keys

    path = tmp_path / "c.yaml"
    tiny = "epochs: 1\ntrain_fraction: 0.05\nbatch_size: 16\neval_subnets: 2\ncalib_images: 32\nprogress: false\n"
    path.write_text(f"mode: st\nkl_weight: 2\ntemperature: 2\n{tiny}workers: 0\ndevice: cpu\n")
    warning = (f"warning: config {str(path)!r}: --mode ct ignores kl_weight (read by --mode st only), "
               "temperature (read by --mode st only) (--mode ct given on the command line)")  # fmt: skip
    assert main(["train", "--config", str(path), "--mode", "ct", "--out", str(tmp_path / "r")]) == 0
    assert warning in capsys.readouterr().err.splitlines()
    assert (tmp_path / "r" / "results.json").exists()
    assert check_mode_keys(str(path), "st", mode_from_flag=True) is None
    with pytest.raises(ValueError, match="remove them or set the mode"):
        check_mode_keys(str(path), "ct", mode_from_flag=False)


def test_device_names_the_choices(capsys, tmp_path):
    assert "choose cpu, cuda, cuda:N or auto" in _fails(capsys, ["train", "--device", "gpu"])


def test_missing_run_folder(capsys):
    assert "'/no/such/dir' does not exist" in _fails(capsys, ["evaluate", "/no/such/dir"])


def test_models_shows_every_name_then_fails(capsys):
    assert main(["models", "nope", "resnet20"]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith("model")  # a header line
    assert "resnet20" in captured.out and "nope" in captured.err and "1 of the models failed" in captured.err


def test_train_help_is_grouped_by_section(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    out = out[out.index("\noptions:") :]  # past the usage line, which names every flag
    sections = ["what to train:", "optimisation:", "stimulative training:", "evaluation:", "running:"]
    positions = [out.index(s) for s in sections]
    assert positions == sorted(positions)
    assert out.index("  --kl-weight") > out.index("stimulative training:") > out.index("  --lr ")


def test_out_given_as_a_file_name_is_an_error(capsys, tmp_path):
    # the grammar before issue 16 took report --out report.md; now --out is the folder
    err = _fails(capsys, ["report", str(tmp_path), "--out", str(tmp_path / "x" / "report.md")])
    assert "looks like a file name; --out names a folder" in err
    assert not (tmp_path / "x").exists()
