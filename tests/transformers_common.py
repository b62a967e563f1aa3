"""transformers' own common model tests (ModelTesterMixin, ConfigTester, ...) for the installed transformers version.

They are not in the wheel; the source distribution of the same version carries `tests/*.py`. This helper downloads
it once by its URL on the index's simple page (sha256 checked; nothing resolved or built), extracts the top-level
test modules into a cache as the package `transformers_tests`, and puts the cache on `sys.path`:

    from transformers_common import load_common_tests
    common = load_common_tests()            # skips the calling module when they cannot be had
    common.ModelTesterMixin, common.ConfigTester, common.floats_tensor, common.ids_tensor, ...

Cache: `$HF_SCENE_TEXT_TESTS_CACHE` or `~/.cache/hf-scene-text/transformers-tests/<version>/`. An sdist already
downloaded can be put there by hand (`transformers-<version>.tar.gz`).

The sdist lacks three helper modules that `test_modeling_common.py` / `test_configuration_common.py` import
(`tests/utils/test_configuration_utils.py`, `tests/generation/test_utils.py`, `tests/exporters/test_export.py`);
when absent they are replaced by minimal stand-ins written here (an empty dict of common config kwargs, which only
non-composite configs use, and empty mixin classes: generation and export are tested by our own test modules).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import transformers

PACKAGE = "transformers_tests"
# the sdist's top-level test modules we import, plus what they import relatively
NEEDED_MODULES = ("test_modeling_common.py", "test_configuration_common.py", "test_pipeline_mixin.py")
STAND_INS = {
    "utils/test_configuration_utils.py": (
        '"""Stand-in (not in the sdist): only non-composite configs read these; ours are composite."""\n\n'
        "config_common_kwargs = {}\n"
    ),
    "generation/test_utils.py": (
        '"""Stand-in (not in the sdist): generation is tested by this project\'s own test modules."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "exporters/test_export.py": (
        '"""Stand-in (not in the sdist): torch.export is tested by this project\'s own test modules."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
}


def cache_dir(version: str = transformers.__version__) -> Path:
    root = os.environ.get("HF_SCENE_TEXT_TESTS_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "hf-scene-text" / "transformers-tests"
    return base / version


def _index_urls() -> list[str]:
    """Simple-API indexes to look in: the ones the environment names for pip/uv, then PyPI."""
    urls = []
    for name in ("PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX",
                 "UV_EXTRA_INDEX_URL"):
        urls += os.environ.get(name, "").split()
    urls.append("https://pypi.org/simple")
    return list(dict.fromkeys(url.rstrip("/") for url in urls))


def _download_sdist(version: str, into: Path) -> Path:
    """The sdist `transformers-<version>.tar.gz` in `into`, fetched from an index's simple page when absent.

    The file is downloaded by its URL and checked against the sha256 the index publishes. Nothing is resolved or
    built: `pip download --no-binary` would prepare the sdist's metadata, which installs transformers' build
    requirements at whatever versions the index serves that day."""
    import hashlib
    import re
    import urllib.parse
    import urllib.request

    sdist = into / f"transformers-{version}.tar.gz"
    if sdist.is_file():
        return sdist
    link = re.compile(r'href="([^"]*/' + re.escape(sdist.name) + r'#sha256=([0-9a-f]{64})[^"]*)"')
    errors = []
    for index in _index_urls():
        page_url = f"{index}/transformers/"
        try:  # a file:// index is a folder tree whose pages are index.html files
            fetch = page_url + "index.html" if page_url.startswith("file:") else page_url
            request = urllib.request.Request(fetch, headers={"Accept": "text/html"})
            with urllib.request.urlopen(request, timeout=60) as response:
                page = response.read().decode("utf-8", "replace")
            found = link.search(page)
            if found is None:
                errors.append(f"{page_url}: no {sdist.name} with a sha256")
                continue
            url = urllib.parse.urljoin(page_url, found.group(1).split("#")[0])
            with urllib.request.urlopen(url, timeout=600) as response:
                data = response.read()
        except OSError as error:
            errors.append(f"{page_url}: {error}")
            continue
        if hashlib.sha256(data).hexdigest() != found.group(2):
            errors.append(f"{url}: sha256 differs from the index's")
            continue
        with tempfile.NamedTemporaryFile(dir=into, suffix=".part", delete=False) as part:
            part.write(data)
        os.chmod(part.name, 0o644)
        os.replace(part.name, sdist)  # visible only when complete
        return sdist
    raise RuntimeError("; ".join(errors))


def _extract(sdist: Path, version: str, target: Path) -> None:
    """Extract `tests/*.py` (top level) into `target/transformers_tests/`, atomically, plus the stand-ins."""
    prefix = f"transformers-{version}/tests/"
    staging = Path(tempfile.mkdtemp(dir=target, prefix=".extract-"))
    try:
        package = staging / PACKAGE
        package.mkdir()
        with tarfile.open(sdist, "r:gz") as archive:
            for member in archive.getmembers():
                relative = member.name[len(prefix) :] if member.name.startswith(prefix) else None
                if not relative or not member.isfile() or not relative.endswith(".py"):
                    continue
                if ".." in Path(relative).parts:
                    continue
                destination = package / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                destination.write_bytes(source.read())
        for name in NEEDED_MODULES:
            if not (package / name).is_file():
                raise RuntimeError(f"{sdist.name} has no tests/{name}")
        for relative, text in STAND_INS.items():
            path = package / relative
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        for folder in [package, *(p for p in package.rglob("*") if p.is_dir())]:
            init_file = folder / "__init__.py"
            if not init_file.exists():
                init_file.write_text("")
        final = target / PACKAGE
        if not final.exists():  # else another process finished first: keep its copy, in use maybe
            os.replace(package, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_common_tests(version: str = transformers.__version__) -> Path:
    """The cache folder holding the package `transformers_tests` for `version` (downloaded/extracted if needed)."""
    target = cache_dir(version)
    if (target / PACKAGE / "test_modeling_common.py").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    sdist = _download_sdist(version, target)
    _extract(sdist, version, target)
    return target


def load_common_tests() -> SimpleNamespace:
    """Import transformers' common test modules, or skip the calling test module with the reason."""
    try:
        target = ensure_common_tests()
    except Exception as error:  # noqa: BLE001 - any failure to obtain them is a skip with its reason
        pytest.skip(
            f"transformers {transformers.__version__}'s common tests are not available (sdist download/extract "
            f"failed: {error}); put transformers-{transformers.__version__}.tar.gz in {cache_dir()}",
            allow_module_level=True,
        )
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    try:
        modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
        configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    except ModuleNotFoundError as error:  # a test-only dependency of transformers' suite (e.g. parameterized)
        pytest.skip(
            f"transformers' common tests need the package {error.name!r}: pip install {error.name}",
            allow_module_level=True,
        )
    return SimpleNamespace(
        ModelTesterMixin=modeling.ModelTesterMixin,
        floats_tensor=modeling.floats_tensor,
        ids_tensor=modeling.ids_tensor,
        random_attention_mask=modeling.random_attention_mask,
        _config_zero_init=modeling._config_zero_init,
        ConfigTester=configuration.ConfigTester,
    )


__all__ = ["cache_dir", "ensure_common_tests", "load_common_tests"]
