"""Inputs as real data come: small negative values (noise around 0) and an LR-HSI without wavelengths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import fusion_explorer as fe
from fusion_explorer.errors import CubeError
from fusion_explorer.problem import FusionProblem
from fusion_explorer.srf import SRF, read_srf_file


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fusion_explorer.cli", *args], capture_output=True, text=True, timeout=300
    )


def _open(path: Path) -> xr.DataArray:
    with xr.open_dataarray(path, engine="h5netcdf") as da:
        return da.load()


@pytest.fixture(scope="module")
def sim(cave_dir, tmp_path_factory) -> Path:
    """A real 64x64 crop through gaussian-x8, then white noise at 30 dB SNR on both images, unclipped
    (``simulate`` clips its own noise at 0; a sensor's dark-subtracted data does not)."""
    out = tmp_path_factory.mktemp("real") / "sim"
    r = run("simulate", str(cave_dir / "balloons_ms"), "--protocol", "gaussian-x8", "--crop", "64", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(0)
    for name in ("lr_hsi", "hr_msi"):
        cube = _open(out / f"{name}.nc")
        rms = np.sqrt((cube.values.astype(np.float64) ** 2).mean(axis=(1, 2), keepdims=True))
        noisy = cube.copy(data=(cube.values + rms / 10**1.5 * rng.standard_normal(cube.shape)).astype(np.float32))
        assert (noisy.values < 0).sum() > 0
        noisy.to_netcdf(out / f"noisy_{name}.nc", engine="h5netcdf")
        (noisy - 0.5).assign_attrs(noisy.attrs).to_netcdf(out / f"shifted_{name}.nc", engine="h5netcdf")
    _open(out / "lr_hsi.nc").drop_vars("wavelength").to_netcdf(out / "lr_hsi_no_wavelength.nc", engine="h5netcdf")
    return out


def test_noisy_pair_is_clipped_with_one_warning_and_counts_in_the_output(sim, tmp_path):
    counts = {n: int((_open(sim / f"noisy_{n}.nc").values < 0).sum()) for n in ("lr_hsi", "hr_msi")}
    out = tmp_path / "fused.nc"
    r = run("fuse", "--lr-hsi", str(sim / "noisy_lr_hsi.nc"), "--hr-msi", str(sim / "noisy_hr_msi.nc"),
            "--srf", str(sim / "srf.nc"), "--method", "cnmf", "--quiet", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "warning:" in line]
    assert len(warned) == 1 and "negative" in warned[0], r.stderr
    fused = _open(out)
    assert fused.attrs["negative_clipped_lr_hsi"] == counts["lr_hsi"]
    assert fused.attrs["negative_clipped_hr_msi"] == counts["hr_msi"]
    assert float(fused.min()) >= 0


def test_strongly_negative_input_is_one_line_error(sim, tmp_path):
    r = run("fuse", "--lr-hsi", str(sim / "shifted_lr_hsi.nc"), "--hr-msi", str(sim / "noisy_hr_msi.nc"),
            "--srf", str(sim / "srf.nc"), "--method", "cnmf", "--quiet", "--out", str(tmp_path / "f.nc"))  # fmt: skip
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "negative" in r.stderr and "offset" in r.stderr, r.stderr
    assert not (tmp_path / "f.nc").exists()


def test_api_clips_small_negatives_and_refuses_shifted_data(sim):
    lr, msi = _open(sim / "noisy_lr_hsi.nc"), _open(sim / "noisy_hr_msi.nc")
    srf = SRF.from_dataarray(_open(sim / "srf.nc"))
    with pytest.warns(UserWarning, match="negative"):
        problem = FusionProblem(lr, msi, srf=srf)
    assert problem.attrs["negative_clipped_lr_hsi"] == int((lr.values < 0).sum()) > 0
    assert float(problem.lr_hsi.min()) >= 0 and float(problem.hr_msi.min()) >= 0
    assert float(lr.min()) < 0  # the caller's cube is not modified
    result = fe.fuse(problem, "cnmf")
    assert np.isfinite(result.fused.values).all() and float(result.fused.min()) >= 0
    assert result.fused.attrs["negative_clipped_hr_msi"] == int((msi.values < 0).sum())
    with pytest.raises(CubeError, match="negative"):
        FusionProblem(_open(sim / "shifted_lr_hsi.nc"), msi, srf=srf)


@pytest.mark.parametrize("method", ["bicubic", "cnmf"])
def test_lr_hsi_without_wavelength_works_with_an_srf_matrix(sim, tmp_path, method):
    out = tmp_path / "fused.nc"
    r = run("fuse", "--lr-hsi", str(sim / "lr_hsi_no_wavelength.nc"), "--hr-msi", str(sim / "hr_msi.nc"),
            "--srf", str(sim / "srf.nc"), "--method", method, "--quiet", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _open(out).shape == (31, 64, 64)


def test_api_srf_matrix_for_an_lr_hsi_without_wavelength(sim):
    lr = _open(sim / "lr_hsi_no_wavelength.nc")
    assert "wavelength" not in lr.coords
    srf = read_srf_file(sim / "srf.nc", lr)  # matched by band count: nothing to resample to
    assert srf.hsi_bands == 31
    result = fe.fuse(FusionProblem(lr, _open(sim / "hr_msi.nc"), srf=srf), "cnmf")
    assert result.fused.shape == (31, 64, 64) and np.isfinite(result.fused.values).all()
    with pytest.raises(fe.errors.SRFError, match="wavelength"):
        read_srf_file(sim / "srf.nc", lr.isel(band=slice(0, 30)))
