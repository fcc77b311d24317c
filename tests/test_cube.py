"""The cube model and the method interface's validation, on a real CAVE crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion_explorer.cube import check_ratio, from_tensor, make_cube, resolve_device, to_tensor, validate_cube
from fusion_explorer.errors import CubeError, ProblemError
from fusion_explorer.io import open_cube
from fusion_explorer.methods import FusionProblem, available_methods, fuse
from fusion_explorer.physics import simulate
from fusion_explorer.srf import get_srf


@pytest.fixture(scope="module")
def crop(cave_dir):
    return open_cube(cave_dir / "fake_and_real_peppers_ms").isel(y=slice(0, 64), x=slice(0, 64))


def test_tensor_round_trip_keeps_wavelengths_and_attrs(crop):
    t = to_tensor(crop, "cpu")
    assert t.shape == (31, 64, 64) and t.dtype == torch.float32 and t.device.type == "cpu"
    back = from_tensor(t * 1, crop, attrs={"method": "x"})
    np.testing.assert_array_equal(back.values, crop.values)
    np.testing.assert_array_equal(back.wavelength.values, np.arange(400, 701, 10))
    assert back.attrs["scene"] == crop.attrs["scene"] and back.attrs["method"] == "x"
    assert back.sel(wavelength=551, method="nearest").shape == (64, 64)
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(CubeError, match="unknown device"):
        resolve_device("warp-drive")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda v: v.__setitem__((0, 0, 0), np.inf), "non-finite"),
        (lambda v: v.__setitem__((2, 5, 5), -0.1), "negative"),
    ],
)
def test_validation_errors(crop, mutate, message):
    bad = crop.copy(deep=True)
    mutate(bad.values)
    with pytest.raises(CubeError, match=message):
        validate_cube(bad)


def test_shape_errors(crop):
    with pytest.raises(CubeError, match="dims"):
        validate_cube(crop.transpose("y", "x", "band"))
    with pytest.raises(CubeError, match="3 dims"):
        make_cube(np.zeros((4, 4)))
    with pytest.raises(CubeError, match="wavelengths given"):
        make_cube(np.zeros((3, 4, 4)), [400, 500])
    with pytest.raises(CubeError, match="does not divide"):
        check_ratio((64, 60), 8)


def test_problem_checks_srf_and_sizes(crop):
    problem = simulate(crop, "gaussian-x8")
    with pytest.raises(ProblemError, match="maps 31 to 3 bands"):
        FusionProblem(problem.lr_hsi.isel(band=slice(0, 30)), problem.hr_msi, srf=problem.srf)
    with pytest.raises(ProblemError, match="not an integer multiple"):
        FusionProblem(problem.lr_hsi.isel(x=slice(0, 7)), problem.hr_msi)
    inferred = FusionProblem(problem.lr_hsi, problem.hr_msi, srf=get_srf("nikon-d700", crop))
    assert inferred.ratio == 8 and inferred.truth is None


def test_registry_and_bicubic_provenance(crop):
    assert "bicubic" in available_methods()
    result = fuse(simulate(crop, "gaussian-x8"), "bicubic", device="cpu")
    assert result.fused.shape == crop.shape and result.device == "cpu"
    assert result.fused.attrs["method"] == "bicubic" and result.fused.attrs["protocol"] == "gaussian-x8"
    with pytest.raises(ProblemError, match="unknown method"):
        fuse(simulate(crop, "gaussian-x8"), "magic")


class _CountingArray:
    """A read-only array that records every region dask asks of it (to prove nothing loads it whole)."""

    def __init__(self, values: np.ndarray):
        self.values = values
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim
        self.reads: list[int] = []

    def __getitem__(self, key):
        out = self.values[key]
        if out.size:  # dask probes with empty slices for the meta; those read nothing
            self.reads.append(out.size)
        return out


def _lazy(values: np.ndarray, chunks=(8, 32, 32)):
    import dask.array as da
    import xarray as xr

    source = _CountingArray(values)
    data = da.from_array(source, chunks=chunks, asarray=False)
    cube = xr.DataArray(data, dims=("band", "y", "x"), coords={"wavelength": ("band", np.arange(400, 701, 10.0))})
    return cube, source


def test_validation_of_a_dask_cube_reads_each_chunk_once_and_stays_lazy(crop):
    values = np.ascontiguousarray(crop.values)
    cube, source = _lazy(values)
    n_chunks = 4 * 2 * 2  # 31 bands in chunks of 8, 64x64 in 32x32
    assert validate_cube(cube, need_wavelength=True) is cube
    assert cube.chunks is not None  # still lazy
    assert len(source.reads) == n_chunks and sum(source.reads) == values.size  # one pass, chunk by chunk
    assert max(source.reads) == 8 * 32 * 32  # never more than one chunk at a time


def test_dask_cube_errors_name_the_first_bad_value_without_a_full_load(crop):
    values = np.ascontiguousarray(crop.values).copy()
    values[20, 40, 7] = np.nan
    values[30, 1, 1] = np.inf
    cube, source = _lazy(values)
    with pytest.raises(CubeError, match=r"2 non-finite values .*first at band 20, y 40, x 7"):
        validate_cube(cube)
    assert max(source.reads) <= 64 * 64 * 8  # chunks and then one band, never the whole cube
    values = np.ascontiguousarray(crop.values).copy()
    values[3, 2, 1] = -0.5
    cube, _ = _lazy(values)
    with pytest.raises(CubeError, match="1 negative values"):
        validate_cube(cube)
    validate_cube(cube, allow_negative=True)


def test_hr_cubes_carry_pixel_coordinates_like_the_lr_ones(crop):
    assert list(crop.y.values) == list(range(64)) and list(crop.x.values) == list(range(64))
    problem = simulate(crop, "gaussian-x8")
    np.testing.assert_array_equal(problem.hr_msi.y.values, crop.y.values)
    np.testing.assert_array_equal(problem.lr_hsi.x.values, crop.x.values[3::8])
    fused = fuse(problem, "bicubic", device="cpu").fused
    np.testing.assert_array_equal(fused.y.values, crop.y.values)
    assert from_tensor(to_tensor(crop, "cpu"), crop).y.equals(crop.y)


def test_validation_of_a_large_dask_cube_never_holds_it_in_memory():
    import tracemalloc

    import dask.array as da
    import xarray as xr

    shape = (31, 1024, 2048)  # 260 MB as float32, made chunk by chunk on demand (2 MB each)
    data = da.random.default_rng(0).random(shape, chunks=(8, 256, 256), dtype=np.float32)
    cube = xr.DataArray(data, dims=("band", "y", "x"))
    full = int(np.prod(shape)) * 4
    tracemalloc.start()
    try:
        validate_cube(cube)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < full / 5, f"validation held {peak / 2**20:.0f} MiB of a {full / 2**20:.0f} MiB cube"
    assert cube.chunks is not None
