"""What every ``stimulative`` command shares: the parser class (no abbreviations, one-line
errors with "did you mean"), the train flags grouped by the configuration's sections, the
flags a training mode ignores, the YAML keys checked all at once, and the --device and
folder checks. cli_parser.py builds the commands from these."""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import re
from dataclasses import fields

import yaml

from .training.config import FORMER_KEYS, TrainConfig, load_yaml_options

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICE_HELP = "cpu, cuda, cuda:N or auto (the GPU if there is one) (default: auto)"

# flags that only one training mode reads: given with another mode they would be silently ignored
MODE_ONLY = {
    "subnet": ("individual",),
    "drop_path_rate": ("stochastic-depth",),
    "kl_weight": ("st",),
    "temperature": ("st",),
    "subnets_per_step": ("st",),
    "kl": ("st",),
    "kl_amplitude": ("st",),
    "kl_schedule": ("st",),
    "kl_start_epoch": ("st",),
    "sandwich": ("st",),
    "subnet_resolution": ("st",),
}


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, else nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations (``--epoch 3`` is an error, not ``--epochs``) and with a
    one-line error (the full usage of `train` is a page long) that suggests the closest name."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = [c.strip(" '") for c in choice.group(2).split(",")]
            message += did_you_mean(choice.group(1), options)
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def unknown_flags(self, extras: list[str]) -> None:
        """Exit naming every unrecognised argument, each flag with its closest known flag."""
        known = [s for a in self._actions for s in a.option_strings]
        named = [f"{e}{did_you_mean(e.split('=')[0], known)}" if e.startswith("-") else e for e in extras]
        self.error(f"unrecognized arguments: {' '.join(named)}")


def config_sections(cls: type = TrainConfig) -> dict[str, str]:
    """Field name -> the section comment above it in the dataclass source (``# optimisation
    (...)`` -> ``optimisation``), so that new fields join their section without a list here."""
    section, out = "options", {}
    names = {f.name for f in fields(cls)}
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("# "):
            section = re.split(r"[(:]", text[2:])[0].strip()
        name = text.split(":")[0]
        if name in names:
            out[name] = section
    return out


class GroupedParser:
    """Stands in for a parser while the configuration's flags are added: each flag goes to
    the argument group of its field's section, so `train --help` reads by section."""

    def __init__(self, parser: argparse.ArgumentParser, cls: type = TrainConfig):
        self.parser = parser
        self.sections = config_sections(cls)
        self.groups: dict[str, argparse._ArgumentGroup] = {}

    def add_argument(self, flag: str, **kwargs):
        section = self.sections.get(kwargs.get("dest") or flag.lstrip("-").replace("-", "_"))  # an alias: its field's
        if section is None:
            return self.parser.add_argument(flag, **kwargs)
        if section not in self.groups:
            self.groups[section] = self.parser.add_argument_group(section)
        return self.groups[section].add_argument(flag, **kwargs)


def _ignored(names: list[str], mode: str, as_flags: bool = True) -> str:
    """``--mode M ignores --x (read by --mode N only), ...`` for option ``names``."""
    shown = ["--" + n.replace("_", "-") if as_flags else n for n in names]
    detail = ", ".join(f"{s} (read by --mode {MODE_ONLY[n][0]} only)" for s, n in zip(shown, names))
    return f"--mode {mode} ignores {detail}"


def check_mode_flags(args: argparse.Namespace, mode: str) -> None:
    """An error for every flag given on the command line that ``mode`` does not read."""
    ignored = [n for n, modes in MODE_ONLY.items() if getattr(args, n, None) is not None and mode not in modes]
    if ignored:
        raise ValueError(f"{_ignored(ignored, mode)}; remove {'them' if len(ignored) > 1 else 'it'}")


def check_mode_keys(path: str, mode: str, mode_from_flag: bool) -> str | None:
    """The YAML file's options that ``mode`` does not read: an error when the file's own
    mode (or the default) ignores them, the file contradicting itself; a warning, returned,
    when ``--mode`` on the command line overrides the file's (one file reused across modes)."""
    ignored = [n for n in load_yaml_options(path) if n in MODE_ONLY and mode not in MODE_ONLY[n]]
    if not ignored:
        return None
    message = f"config {path!r}: {_ignored(ignored, mode, as_flags=False)}"
    if not mode_from_flag:
        raise ValueError(f"{message}; remove {'them' if len(ignored) > 1 else 'it'} or set the mode that reads them")
    return f"warning: {message} (--mode {mode} given on the command line)"


def check_yaml_keys(path: str, cls: type = TrainConfig) -> None:
    """Every unknown key of the YAML file at once, each with its closest option; reading
    errors are left to :func:`load_yaml_options`, which words them."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return
    if not isinstance(data, dict):
        return
    known = [f.name for f in fields(cls)]
    bad = [str(k) for k in data if str(k).replace("-", "_") not in (*known, *FORMER_KEYS)]
    if bad:
        named = ", ".join(f"{k!r}{did_you_mean(k.replace('-', '_'), known)}" for k in bad)
        raise ValueError(f"config {path!r}: unknown option{'s' if len(bad) > 1 else ''} {named}")


def check_device(device: str | None) -> None:
    if device is not None and not DEVICE_PATTERN.match(device):
        raise ValueError(f"--device {device}: choose cpu, cuda, cuda:N or auto")


def check_folders(args: argparse.Namespace) -> None:
    """Run, study and sweep folders given as arguments must exist (before any loading)."""
    for name in ("run_dir", "run_dirs", "dirs"):
        value = getattr(args, name, None)
        for folder in [value] if isinstance(value, str) else value or []:
            if not os.path.exists(folder):
                raise ValueError(f"{folder!r} does not exist")
            if not os.path.isdir(folder):
                raise ValueError(f"{folder!r} is a file, not a run folder")


FILE_SUFFIXES = (".md", ".html", ".json", ".safetensors", ".png", ".pt", ".yaml")


def check_out_is_folder(args: argparse.Namespace) -> None:
    """--out names a folder for every command but bench; a file name (the grammar before
    issue 16: --out report.md, --out model.safetensors) is an error, not a folder of that name."""
    out = getattr(args, "out", "") or ""
    if args.command != "bench" and out.lower().endswith(FILE_SUFFIXES):
        raise ValueError(
            f"--out {out!r} looks like a file name; --out names a folder and `{args.command}` writes its fixed file "
            f"names inside it, e.g. --out {os.path.dirname(out) or '.'}"
        )


def out_folder(out: str, force: bool, names: list[str]) -> str:
    """Create ``out`` (with its parents) and refuse to replace any of ``names`` inside it
    without ``force``."""
    if os.path.isfile(out):
        raise ValueError(f"--out {out!r} is a file; --out names a folder")
    existing = [n for n in names if os.path.exists(os.path.join(out, n))]
    if existing and not force:
        raise ValueError(f"{os.path.join(out, existing[0])!r} already exists; pass --force to replace it")
    os.makedirs(out, exist_ok=True)
    return out


def reword(message: str) -> str:
    """Core's message for a depth past a stage's end names the first missing block index
    (``stage 0 has no block 3 (it has 3)``); for a depth spec such as 5,5,5 say it in depths."""
    found = re.search(r"sub-network ([0-9,]+): stage (\d+) has no block \d+ \(it has (\d+)\)", message)
    if not found:
        return message
    stage, size = int(found.group(2)), int(found.group(3))
    depth = found.group(1).split(",")[stage]
    said = f"sub-network {found.group(1)}: stage {stage} has {size} blocks; {depth} is too many"
    return message[: found.start()] + said
