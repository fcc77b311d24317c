"""Shared fixtures: the real data in ``../shared`` beside the project checkout.

Tests read the real files in place. A missing file is a failure naming the path, never a skip.
"""

from __future__ import annotations

import contextlib
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


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (the unrolled networks' results and times do not depend on the
    machine's core count), then the previous count back."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# ---------------------------------------------------------------------------- serving the dashboard
#: how ``make app`` serves the dashboard (with --port added); the browser tests and benchmarks use the same
VOILA_ARGS = ["--no-browser", "--Voila.ip=127.0.0.1", "--Voila.config_file_paths=voila-config"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_voila(*extra_args: str, env: dict | None = None, log: Path | None = None, timeout: float = 60):
    """Serve ``app.ipynb`` as ``make app`` does (voila-config/voila.py), on a free localhost port.

    Yields ``(url, process)``; ``extra_args`` override the configuration (e.g. short culling times)."""
    import socket
    import subprocess
    import sys
    import time

    port = free_port()
    voila = Path(sys.executable).with_name("voila")
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(voila), "app.ipynb", f"--port={port}", *VOILA_ARGS, *extra_args], cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT, env=env or os.environ.copy())
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"voila exited with {proc.returncode} before serving")
                time.sleep(0.5)
        else:
            pytest.fail(f"voila did not start within {timeout:.0f} s")
        yield f"http://127.0.0.1:{port}/", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            out.close()
