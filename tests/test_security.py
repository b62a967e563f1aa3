"""Nothing runs from data: model folders, CLIP TorchScript archives and checkpoints are read without executing any
code they carry. Each test builds a malicious file, runs our loader, and checks that the payload's marker file does
not exist and that the error names the file."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from modeling_clip4str.clip_initialization import load_clip_state_dict
from modeling_clip4str.torchscript_weights import TorchScriptArchiveError, load_torchscript_state_dict

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 64, "heads": 1, "layers": 1},
}


class _SystemPayload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecPayload(_SystemPayload):
    """Unpickling this runs Python code that creates `marker`."""

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _payload_module(marker: Path) -> torch.nn.Module:
    """A TorchScript-able module whose `__setstate__` (run by torch.jit.load) creates `marker` (torch.from_file
    with shared=True creates the file it maps)."""

    class Payload(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.path = str(marker)
            self.mapped = torch.zeros(1, dtype=torch.uint8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        @torch.jit.export
        def __getstate__(self) -> tuple[str, bool]:
            return (self.path, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, bool]) -> None:
            self.path = state[0]
            self.training = state[1]
            self.mapped = torch.from_file(self.path, shared=True, size=1, dtype=torch.uint8)

    return Payload()


def _tiny_clip() -> torch.nn.Module:
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    return open_clip.model.CLIP(**TINY_CLIP, quick_gelu=True).eval()


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript_clip_tensors_are_read_without_running_the_archive(tmp_path, kind):
    marker = tmp_path / "pwned"
    clip = _tiny_clip()
    clip.payload = _payload_module(marker)  # a booby-trapped extra submodule, as an attacker would add
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.* is deprecated, the released CLIP files are not
        if kind == "script":
            archive = torch.jit.script(clip)
        else:
            image, text = torch.randn(1, 3, 32, 32), torch.randint(0, 100, (1, 16))
            archive = torch.jit.trace_module(clip, {"forward": (image, text)})
    path = tmp_path / "ViT-tiny.pt"
    archive.save(str(path))
    expected = archive.state_dict()

    state_dict = load_clip_state_dict(path)
    assert not marker.exists()
    assert list(state_dict) == list(expected)
    for key, tensor in expected.items():
        assert state_dict[key].dtype == tensor.dtype and torch.equal(state_dict[key], tensor), key
    assert torch.equal(state_dict["visual.conv1.weight"], clip.visual.conv1.weight)
    # The payload is live: torch.jit.load (what this loader replaced) runs it.
    torch.jit.load(str(path))
    assert marker.exists()


def _write_archive(path: Path, data_pkl: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", data_pkl)
        archive.writestr("evil/code/__torch__.py", "class M(Module):\n  __parameters__ = []\n  __buffers__ = []\n")
        archive.writestr("evil/version", "3\n")


def test_a_torchscript_archive_with_a_reduce_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    _write_archive(path, pickle.dumps(_SystemPayload(marker), protocol=2))
    with pytest.raises(ValueError, match="evil.pt.*refusing to load global"):
        load_clip_state_dict(path)
    assert not marker.exists()

    _write_archive(path, pickle.dumps(_ExecPayload(marker), protocol=2))
    with pytest.raises(TorchScriptArchiveError, match="evil.pt"):
        load_torchscript_state_dict(path)
    assert not marker.exists()


def test_a_plain_pickle_with_a_reduce_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "open_clip_model.bin"
    torch.save({"visual.conv1.weight": _SystemPayload(marker)}, path)
    with pytest.raises(ValueError, match="open_clip_model.bin"):
        load_clip_state_dict(path)
    assert not marker.exists()


def test_a_torchscript_module_that_is_not_clip_is_refused(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "linear.pt"))
    with pytest.raises(ValueError, match="linear.pt.*missing"):
        load_clip_state_dict(tmp_path / "linear.pt")
