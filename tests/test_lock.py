"""The lock is the install: uv.lock matches pyproject.toml, and its two exports are exactly what uv makes of it:
requirements-lock.txt (the pins with hashes, for `pip install --require-hashes`) and pylock.toml (the standard
PEP 751 lock: every file with its URL, size and sha256, for any installer that reads it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
UV = REPO_ROOT / ".tools" / "bin" / "uv"
EXPORT = ["export", "--frozen", "--extra", "dev", "--no-emit-project", "--format", "requirements-txt", "--no-header"]

pytestmark = pytest.mark.skipif(not UV.is_file(), reason="uv is installed into .tools/ by scripts/setup_env.sh")


def _uv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(UV), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_uv_lock_matches_pyproject():
    completed = _uv("lock", "--check", "--offline")
    assert completed.returncode == 0, f"uv.lock is stale; run `.tools/bin/uv lock`: {completed.stderr[-1000:]}"


def test_requirements_lock_is_the_export_of_uv_lock():
    completed = _uv(*EXPORT)
    assert completed.returncode == 0, completed.stderr[-1000:]
    committed = (REPO_ROOT / "requirements-lock.txt").read_text().splitlines()
    pins = [line for line in committed if not line.startswith("#")]
    assert pins == completed.stdout.splitlines(), "requirements-lock.txt is stale: re-export it (README, Install)"
    assert sum("==" in line for line in pins) > 100 and all(
        "--hash=sha256:" in pins[i + 1] for i, line in enumerate(pins) if "==" in line
    )


def test_pylock_is_the_export_of_uv_lock():
    completed = _uv("export", "--frozen", "--extra", "dev", "--no-emit-project", "--format", "pylock.toml",
                    "--no-header")
    assert completed.returncode == 0, completed.stderr[-1000:]
    committed = [line for line in (REPO_ROOT / "pylock.toml").read_text().splitlines() if not line.startswith("#")]
    assert committed == completed.stdout.splitlines(), "pylock.toml is stale: re-export it (README, Install)"
    import tomllib

    lock = tomllib.loads((REPO_ROOT / "pylock.toml").read_text())
    versions = {package["name"]: package["version"] for package in lock["packages"]}
    assert versions["torch"] == "2.15.0" and "transformers" in versions and len(versions) > 100
    assert all("hashes" in wheel for package in lock["packages"] for wheel in package.get("wheels", []))


def test_build_backend_is_pinned_exactly():
    """Building the project itself (uv sync, pip install -e .) fetches the build requirements from the index: a
    range there would install whatever setuptools is newest on the day, so each one is pinned with ==."""
    import tomllib

    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert requires and all("==" in r and not any(op in r for op in (">", "<", "~", "!", "*")) for r in requires), requires


def test_newest_and_oldest_environments_install_from_committed_locks():
    """CI's newest/oldest environments install exactly the committed locks/requirements-<kind>.txt (no resolution at
    install time); every direct dependency of pyproject is pinned there, inside its declared range."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    direct = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    setup = (root / "scripts" / "setup_env.sh").read_text()
    assert 'LOCK="locks/requirements-$KIND.txt"' in setup and "pip compile" not in setup
    for kind in ("newest", "oldest"):
        pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", (root / "locks" / f"requirements-{kind}.txt").read_text(),
                               re.MULTILINE))
        pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
        for requirement in direct:
            name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            assert name in pins, f"{name} is not pinned in locks/requirements-{kind}.txt: run scripts/refresh_locks.sh"
            from packaging.requirements import Requirement

            assert Requirement(requirement).specifier.contains(pins[name], prereleases=True), (kind, requirement, pins[name])


def test_transformers_test_sources_are_fetched_by_url_and_sha256_never_resolved(tmp_path, monkeypatch):
    """The common-test helper takes transformers' sdist from an index's simple page and checks its sha256: no
    `pip download` (which would install the sdist's build requirements at the day's versions), no partial file."""
    import hashlib

    import transformers_common

    index = tmp_path / "index"
    (index / "transformers").mkdir(parents=True)
    (index / "files").mkdir()
    payload = b"not really a tarball"
    (index / "files" / "transformers-9.9.9.tar.gz").write_bytes(payload)

    def publish(digest):
        (index / "transformers" / "index.html").write_text(
            f'<a href="../files/transformers-9.9.9.tar.gz#sha256={digest}">transformers-9.9.9.tar.gz</a>')

    monkeypatch.setattr(transformers_common, "_index_urls", lambda: [index.as_uri()])
    cache = tmp_path / "cache"
    cache.mkdir()
    publish("0" * 64)
    with pytest.raises(RuntimeError, match="sha256 differs"):
        transformers_common._download_sdist("9.9.9", cache)
    assert list(cache.iterdir()) == []
    publish(hashlib.sha256(payload).hexdigest())
    got = transformers_common._download_sdist("9.9.9", cache)
    assert got.read_bytes() == payload and [p.name for p in cache.iterdir()] == ["transformers-9.9.9.tar.gz"]
    assert "pip" not in open(transformers_common.__file__).read().split("def _download_sdist")[1].split('"""')[2]
