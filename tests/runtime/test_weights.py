"""Reading a weights file: safetensors or a weights-only torch.save state dict, with one-line
errors that say whether the file could not be read or is unusable."""

from __future__ import annotations

import collections
import pickle

import pytest
import torch
from safetensors.torch import save_file

from stimulative.runtime.weights import WeightsFileError, read_weights

STATE = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}


def _same(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) and x[k].dtype == y[k].dtype for k in x)


def test_both_formats_give_the_saved_tensors(tmp_path):
    save_file(STATE, str(tmp_path / "w.safetensors"))
    torch.save(STATE, tmp_path / "w.pt")
    assert _same(read_weights(str(tmp_path / "w.safetensors")), STATE)
    assert _same(read_weights(str(tmp_path / "w.pt")), STATE)


def test_unusable_files_are_named_in_one_line(tmp_path):
    with pytest.raises(WeightsFileError) as missing:
        read_weights(str(tmp_path / "missing.safetensors"))
    assert not missing.value.damaged and str(missing.value) == "No such file or directory"
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 100)
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with open(tmp_path / "object.pt", "wb") as fh:  # not tensors and plain data: never unpickled
        pickle.dump(collections.Counter(a=1), fh)
    for name in ("garbage.safetensors", "list.pt", "object.pt"):
        with pytest.raises(WeightsFileError) as bad:
            read_weights(str(tmp_path / name))
        assert bad.value.damaged and "\n" not in str(bad.value), name
    with pytest.raises(WeightsFileError, match="holds a list, not a state dict"):
        read_weights(str(tmp_path / "list.pt"))
