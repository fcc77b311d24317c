"""Tiled bicubic's in-place, band-grouped tiles, the in-memory validation path, and the CLI's line for
an allocation that fails under a virtual-memory limit (issue 23)."""

from __future__ import annotations

import re
import subprocess
import sys

import dask.array as da
import numpy as np
import pytest

import fusion_explorer as fe
from fusion_explorer.bench import center_crop
from fusion_explorer.errors import CubeError
from fusion_explorer.tiled import fuse_tiled, validate_lazy
from fusion_explorer.tiled import methods as tiled_methods


@pytest.fixture(scope="module")
def problem(cave_dir):
    return fe.simulate(center_crop(fe.open_cube(cave_dir / "balloons_ms"), 128, 1), "gaussian-x8")


@pytest.mark.parametrize("group_bytes", [1, 7 * 40 * 40 * 4, 1 << 30])
def test_bicubic_band_groups_give_the_whole_scene_result(problem, monkeypatch, tmp_path, group_bytes):
    """One band, 3 or 7 bands (interior boxes of 56 px, border ones of 40: short last groups of 31) or
    all bands per group; in memory (tiles fill one array in place) and through a Zarr store: the
    whole-scene bicubic's numbers."""
    monkeypatch.setattr(tiled_methods, "BICUBIC_GROUP_BYTES", group_bytes)
    whole = fe.fuse(problem, "bicubic", device="cpu").fused.values
    assert whole.shape[0] == 31 and whole.max() > 0.1
    in_memory = fuse_tiled(problem, "bicubic", tile=24, workers=2).values  # 24 px tiles: 40 px boxes
    np.testing.assert_array_equal(in_memory, whole)
    stored = fuse_tiled(problem, "bicubic", tile=64, workers=1, out=tmp_path / "f.zarr").values
    np.testing.assert_array_equal(stored, whole)


def test_validation_in_memory_equals_the_dask_pass(problem):
    msi = problem.hr_msi.copy(data=problem.hr_msi.values.copy())
    msi.values[1, 5:9, 7] = -1e-3  # a few small negatives: kept (noise around 0)
    lazy = msi.copy(data=da.from_array(msi.values, chunks=(-1, 32, 32)))
    a, b = validate_lazy(msi), validate_lazy(lazy)
    assert a["negative"] == b["negative"] == 4
    assert a["min"] == pytest.approx(b["min"]) and a["max"] == pytest.approx(b["max"])
    np.testing.assert_allclose(a["band_means"], b["band_means"], rtol=1e-12)
    msi.values[2, 3, 3] = np.nan
    with pytest.raises(CubeError, match="1 non-finite"):
        validate_lazy(msi)
    msi.values[2, 3, 3] = -0.5 * float(np.nanmax(msi.values))
    with pytest.raises(CubeError, match="negative values"):
        validate_lazy(msi)


def _in_fresh_process(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_out_of_memory_under_ulimit_v_says_so():
    """A real allocation failure under RLIMIT_AS (what ``ulimit -v`` sets), in a fresh process: the
    message names the limit and what counts against it, on one line."""
    line = _in_fresh_process(
        "import resource, re, numpy as np\n"
        "from fusion_explorer.cli.tiled import out_of_memory_message\n"
        "vm = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 256 * 2**20, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    np.ones(2**31 // 8)\n"
        "except MemoryError as exc:\n"
        "    print(out_of_memory_message(exc))\n"
    )
    assert "\n" not in line
    assert line.startswith("out of memory: an allocation failed")
    assert "under the virtual-memory limit of" in line and "(ulimit -v)" in line and "--workers 1" in line
    limit = float(re.search(r"limit of ([\d.]+) GiB", line).group(1))
    in_use = float(re.search(r"with ([\d.]+) GiB of it in use", line).group(1))
    assert 0 < in_use <= limit


def test_other_errors_are_not_called_out_of_memory():
    from fusion_explorer.cli.tiled import out_of_memory_message

    assert out_of_memory_message(RuntimeError("shape mismatch")) is None
    assert out_of_memory_message(ValueError("x")) is None
    torch_text = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 2147483648 bytes. Error code 12 (Cannot allocate memory)")
    assert out_of_memory_message(RuntimeError(torch_text)).startswith("out of memory: an allocation of 2.00 GiB failed")


def test_malloc_arenas_capped_and_mmap_threshold_fixed_unless_the_user_chose():
    out = _in_fresh_process(
        "import os\n"
        "os.environ.pop('MALLOC_ARENA_MAX', None)\n"
        "os.environ.pop('MALLOC_MMAP_THRESHOLD_', None)\n"
        "from fusion_explorer.cli.tiled import limit_malloc_arenas\n"
        "print(limit_malloc_arenas(3), os.environ['MALLOC_ARENA_MAX'], os.environ['MALLOC_MMAP_THRESHOLD_'])\n"
        "os.environ['MALLOC_ARENA_MAX'] = '8'\n"
        "print(limit_malloc_arenas(3), os.environ['MALLOC_ARENA_MAX'])\n"
    )
    # process workers started afterwards inherit both settings
    assert out.splitlines() == ["3 3 1048576", "None 8"]
