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
