"""Shared fixtures: the real data in ``../shared`` beside the project checkout.

Tests read the real files in place. A missing file is a failure naming the path, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FUSION_EXPLORER_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
REFERENCE = SHARED / "reference"


def require(path: Path) -> Path:
    """Return ``path`` or fail the test with a message that names it."""
    if not path.exists():
        pytest.fail(f"real test data missing: {path} (expected ../shared beside the project checkout)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require(DATA)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return require(REFERENCE)


@pytest.fixture(scope="session")
def cave_dir(data_dir: Path) -> Path:
    return require(data_dir / "cave")


@pytest.fixture(scope="session")
def remote_dir(data_dir: Path) -> Path:
    return require(data_dir / "remote")


@pytest.fixture(scope="session")
def srf_dir(data_dir: Path) -> Path:
    return require(data_dir / "srf")
