"""The command line as a user runs it: real scenes in, NetCDF out, independent scoring."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from fusion_explorer.cli import main

from ._cave import load_cave_yxb


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fusion_explorer.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_info_on_real_files(cave_dir, remote_dir, capsys):
    assert main(["info", str(cave_dir / "balloons_ms")]) == 0
    out = capsys.readouterr().out
    assert "[31, 512, 512]" in out and "400.0 – 700.0 nm" in out
    assert main(["info", str(remote_dir / "aviris_santabarbara_90x90x224.mat"), "--json"]) == 0
    assert '"n_bands": 224' in capsys.readouterr().out


def test_simulate_fuse_score_matches_independent_computation(cave_dir, tmp_path):
    scene = cave_dir / "thread_spools_ms"
    out = tmp_path / "sim"
    r = run("simulate", str(scene), "--protocol", "gaussian-x8", "--crop", "256", "--out", str(out))
    assert r.returncode == 0, r.stderr
    lr = xr.open_dataarray(out / "lr_hsi.nc", engine="h5netcdf")
    msi = xr.open_dataarray(out / "hr_msi.nc", engine="h5netcdf")
    assert lr.dims == ("band", "y", "x") and lr.shape == (31, 32, 32) and msi.shape == (3, 256, 256)
    np.testing.assert_allclose(lr.wavelength.values, np.arange(400, 701, 10))
    # independent degradation of the same central crop
    x = load_cave_yxb(str(scene))[128:384, 128:384]
    g = np.exp(-((np.arange(15) - 7) ** 2) / 8.0)
    g /= g.sum()
    ref = ndimage.correlate1d(ndimage.correlate1d(x, g, 0, mode="mirror"), g, 1, mode="mirror")[3::8, 3::8]
    np.testing.assert_allclose(lr.values, ref.transpose(2, 0, 1), atol=1e-6)

    fused = tmp_path / "fused.nc"
    r = run(
        "fuse",
        "--lr-hsi",
        str(out / "lr_hsi.nc"),
        "--hr-msi",
        str(out / "hr_msi.nc"),
        "--srf",
        str(out / "srf.nc"),
        "--ratio",
        "8",
        "--method",
        "bicubic",
        "--out",
        str(fused),
    )
    assert r.returncode == 0, r.stderr
    z = xr.open_dataarray(fused, engine="h5netcdf")
    assert z.dims == ("band", "y", "x") and z.shape == (31, 256, 256)
    assert z.attrs["method"] == "bicubic" and "wavelength" in z.coords
    est = np.clip(z.values.astype(np.float64), 0, 1).transpose(1, 2, 0)
    mse = ((est - x) ** 2).mean(axis=(0, 1))
    psnr = np.mean(10 * np.log10(1 / mse))
    assert 25 < psnr < 40  # bicubic on a textured x8 crop: far from perfect, far from noise


def test_score_takes_the_ratio_the_estimate_records_and_refuses_swapped_arguments(cave_dir, tmp_path, capsys):
    sim, fused = tmp_path / "sim", tmp_path / "fused.nc"
    assert main(["simulate", str(cave_dir / "balloons_ms"), "--protocol", "gaussian-x8", "--crop", "64",
                 "--save-truth", "--out", str(sim)]) == 0
    assert main(["fuse", "--lr-hsi", str(sim / "lr_hsi.nc"), "--hr-msi", str(sim / "hr_msi.nc"), "--srf",
                 str(sim / "srf.nc"), "--method", "bicubic", "--quiet", "--out", str(fused)]) == 0
    capsys.readouterr()
    truth = str(sim / "hr_hsi.nc")

    def score(*args: str) -> dict:
        assert main(["score", *args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    recorded, given8, given4 = score(truth, str(fused)), score(truth, str(fused), "--ratio", "8"), \
        score(truth, str(fused), "--ratio", "4")
    assert recorded == given8
    # ERGAS = 100 / ratio · sqrt(mean_b RMSE_b² / μ_b²): the ratio really enters, and the recorded one is 8
    assert given4["ergas"] == pytest.approx(2 * given8["ergas"], rel=1e-4)
    assert given4["psnr"] == given8["psnr"]

    # the fused cube first: one line, naming the order
    assert main(["score", str(fused), truth]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the truth comes first" in err[0] and "bicubic" in err[0]
    # nothing records a ratio: ask for it
    assert main(["score", truth, truth]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give --ratio" in err[0] and "records none" in err[0]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["info", "/nonexistent/scene.mat"], "scene.mat"),
        (["simulate", "default", "--protocol", "nope", "--out", "x"], "unknown protocol"),
        (["fuse", "--lr-hsi", "a.nc"], "required"),
        (["bench", "--methods", "nosuch", "--scenes", "default"], "unknown method"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, needle):
    r = run(*args)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_broken_file_is_one_line(tmp_path):
    bad = tmp_path / "broken.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(100))
    r = run("info", str(bad))
    assert r.returncode == 2 and "broken.mat" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bench_prints_table(cave_dir, capsys, tmp_path):
    code = main(
        [
            "bench",
            "--scenes",
            str(cave_dir / "balloons_ms"),
            "--protocols",
            "gaussian-x8",
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| bicubic | balloons_ms | gaussian-x8 | 512x512x31 | 34.511" in out
    assert (tmp_path / "r.json").exists()


def test_fuse_tiled_round_trip(cave_dir, tmp_path, capsys):
    """``fuse --tile`` writes a Zarr store with wavelengths and provenance whose numbers are the
    whole-scene ``fuse``'s; a non-Zarr --out or a method without a tiled version is one line."""
    out = tmp_path / "sim"
    assert main(["simulate", str(cave_dir / "balloons_ms"), "--protocol", "gaussian-x8", "--crop", "128",
                 "--out", str(out)]) == 0
    common = ["fuse", "--lr-hsi", str(out / "lr_hsi.nc"), "--hr-msi", str(out / "hr_msi.nc"), "--srf",
              str(out / "srf.nc"), "--protocol", "gaussian-x8", "--method", "cnmf", "--option", "inner_iterations=30"]
    assert main([*common, "--out", str(tmp_path / "whole.nc")]) == 0
    capsys.readouterr()
    assert main([*common, "--tile", "64", "--workers", "2", "--out", str(tmp_path / "tiled.zarr")]) == 0
    assert "tiles" in capsys.readouterr().err  # the progress bar over tiles
    whole = xr.open_dataarray(tmp_path / "whole.nc", engine="h5netcdf")
    tiled = xr.open_dataset(tmp_path / "tiled.zarr", engine="zarr", consolidated=False)["fused"]
    np.testing.assert_allclose(tiled["wavelength"].values, np.arange(400, 701, 10))
    assert tiled.attrs["method"] == "cnmf" and tiled.attrs["ratio"] == 8 and tiled.attrs["tile"] == 64
    diff = tiled.values - whole.values
    assert np.sqrt(np.mean(diff**2)) < 1e-3 * np.sqrt(np.mean(whole.values**2))
    for extra, needle in ((["--tile", "64", "--out", str(tmp_path / "x.nc")], ".zarr"),
                          (["--tile", "64", "--out", str(tmp_path / "tiled.zarr")], "exists"),
                          (["--scheduler", "processes", "--out", str(tmp_path / "y.nc")], "need --tile"),
                          (["--method", "mossfuse", "--tile", "64", "--out", str(tmp_path / "s.zarr")], "no tiled")):
        assert main([*common, *extra]) == 2
        lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0], lines
    # the PSF not given: fitted as the whole-scene run fits it (here on the whole scene), said in the provenance
    blind = [*common[:7], *common[9:]]
    assert main([*blind, "--tile", "64", "--out", str(tmp_path / "blind.zarr")]) == 0
    fitted = xr.open_dataset(tmp_path / "blind.zarr", engine="zarr", consolidated=False)["fused"]
    assert fitted.attrs["psf"].startswith("estimated Gaussian") and "offset 3" in fitted.attrs["psf"]
    diff = fitted.values - whole.values
    assert np.sqrt(np.mean(diff**2)) < 0.05 * np.sqrt(np.mean(whole.values**2))  # a fit close to the true PSF


def test_simulate_with_a_zoo_degradation(cave_dir, tmp_path):
    """`simulate --psf box --psf-fwhm 8` at x8 is area averaging: each LR pixel is the mean of its 8x8 block
    (checked by reshaping the crop, not by the package); the MSI noise hits the asked SNR; --hide-srf
    writes no SRF, and fuse then estimates it."""
    scene = cave_dir / "balloons_ms"
    out = tmp_path / "zoo"
    r = run("simulate", str(scene), "--crop", "128", "--psf", "box", "--psf-fwhm", "8", "--lr-offset", "3.5",
            "--snr-msi", "30", "--hide-srf", "--save-truth", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["degradation.json", "hr_hsi.nc", "hr_msi.nc", "lr_hsi.nc"]
    lr = xr.open_dataarray(out / "lr_hsi.nc", engine="h5netcdf").values
    x = load_cave_yxb(str(scene))[192:320, 192:320]
    blocks = x.reshape(16, 8, 16, 8, 31).mean(axis=(1, 3)).transpose(2, 0, 1)
    np.testing.assert_allclose(lr, blocks, atol=1e-5)
    msi = xr.open_dataarray(out / "hr_msi.nc", engine="h5netcdf").values
    resp = np.asarray(xr.open_dataarray(out / "hr_hsi.nc", engine="h5netcdf").values)
    import json

    record = json.loads((out / "degradation.json").read_text())
    assert record["case"]["psf"] == "box" and record["case"]["srf_known"] is False
    from fusion_explorer.srf import get_srf

    clean = np.einsum("mb,byx->myx", get_srf("nikon-d700", np.arange(400, 701, 10)).matrix, resp)
    snr = 10 * np.log10((clean**2).mean(axis=(1, 2)) / ((msi - clean) ** 2).mean(axis=(1, 2)))
    assert np.all(np.abs(snr - 30) < 0.5), snr
    r = run("fuse", "--lr-hsi", str(out / "lr_hsi.nc"), "--hr-msi", str(out / "hr_msi.nc"), "--method", "bicubic",
            "--out", str(tmp_path / "f.nc"), "--quiet")
    assert r.returncode == 0, r.stderr
    r = run("simulate", str(scene), "--crop", "64", "--psf", "airy", "--sigma", "2", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "--psf-fwhm" in r.stderr and "Traceback" not in r.stderr
