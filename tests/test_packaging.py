"""What `pip install .` puts into site-packages: the design card's packages and nothing with a generic name.

The wheel is built from a copy of the tracked files (so the checkout gets no build/ folder) with the pinned uv from
`scripts/setup_env.sh`; the build backend comes from the package index, like every install.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UV = REPO / ".tools" / "bin" / "uv"
INSTALLED_NAMES = {"modeling_dig", "modeling_clip4str", "processing", "scene_text_training", "train_ocr.py"}


def _tracked_copy(target: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.skipif(not UV.is_file() or shutil.which("git") is None, reason="needs .tools/bin/uv (setup_env.sh) and git")
def test_wheel_installs_no_generic_top_level_names(tmp_path):
    source = _tracked_copy(tmp_path / "src")
    subprocess.run([str(UV), "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(source)], check=True,
                   capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top_level = {name.split("/")[0] for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}
        names = archive.namelist()
    assert top_level == INSTALLED_NAMES
    assert not any(name.startswith(("training/", "benchmarks/", "tests/")) for name in names)
    # the saved-folder assets the models need at run time travel with them
    assert "processing/wordlist.txt" in names
    assert any(name.startswith("processing/metrics/scene_text_accuracy/") for name in names)
