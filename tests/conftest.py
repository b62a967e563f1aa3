"""Shared test fixtures: paths to the golden fixtures of the original implementations, seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = Path(os.environ.get("STR_SHARED_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))

torch.set_num_threads(2)


def fixture_dir(name: str) -> Path:
    """The original implementation's golden outputs for `name` ("dig" or "clip4str"), or a skip."""
    path = SHARED_FIXTURES / name
    if not path.is_dir():
        pytest.skip(f"golden fixtures not found at {path} (expected ../shared/fixtures beside the repo root)")
    return path


@pytest.fixture
def dig_fixtures() -> Path:
    return fixture_dir("dig")


@pytest.fixture
def clip4str_fixtures() -> Path:
    return fixture_dir("clip4str")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _own_datasets_cache(tmp_path_factory, monkeypatch):
    """Arrow caches and label indexes the tests make go to a temporary folder, never the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "datasets-cache")
