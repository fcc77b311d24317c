"""The classic baselines GSA, GLP-HS and HySure on real CAVE crops under both named protocols."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from fusion_explorer.bench import center_crop, load_scene
from fusion_explorer.cli import main
from fusion_explorer.errors import ProblemError
from fusion_explorer.methods import FusionProblem, available_methods, fuse
from fusion_explorer.methods.gsa import interpolation_matrix, mtf_sigma
from fusion_explorer.metrics import evaluate
from fusion_explorer.physics import get_protocol, simulate
from fusion_explorer.srf import SRF, gaussian_srf

METHODS = ("gsa", "glp_hs", "hysure")
PROTOCOLS = ("gaussian-x8", "mossfuse-cave-x32")
SCENES = ("balloons_ms", "fake_and_real_peppers_ms")


@pytest.fixture(scope="module")
def crops(cave_dir):
    """128x128 central crops (x32: a 4x4 LR-HSI) of two scenes."""
    return {s: center_crop(load_scene(cave_dir / s), 128, 32) for s in SCENES}


@pytest.fixture(scope="module")
def problems(crops):
    return {(s, p): simulate(crops[s], p) for s in SCENES for p in PROTOCOLS}


def psnr(problem: FusionProblem, result) -> float:
    return evaluate(problem.truth, result.fused, problem.ratio, metrics=["psnr"])["psnr"]


def test_registered_with_documented_options():
    methods = available_methods()
    for name in METHODS:
        assert name in methods
        doc = methods[name].function.__doc__
        assert "Options" in doc
    assert methods["hysure"].iterative
    for option in ("lambda_phi", "lambda_m", "mu", "iterations", "estimate_srf", "estimate_psf", "psf_size"):
        assert f"``{option}``" in methods["hysure"].function.__doc__


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("scene", SCENES)
@pytest.mark.parametrize("method", METHODS)
def test_beats_bicubic(problems, method, scene, protocol):
    problem = problems[(scene, protocol)]
    base = psnr(problem, fuse(problem, "bicubic", device="cpu"))
    result = fuse(problem, method, device="cpu")
    assert result.fused.shape == problem.truth.shape
    assert result.fused.attrs["method"] == method and "wavelength" in result.fused.coords
    assert psnr(problem, result) > base + 3.0, (method, scene, protocol, base)


@pytest.mark.parametrize("method", ["gsa", "glp_hs"])
def test_without_srf_and_psf(problems, method):
    """Unknown responses: GSA groups bands by correlation; both low-pass with the MTF Gaussian."""
    problem = problems[("balloons_ms", "gaussian-x8")]
    blind = FusionProblem(problem.lr_hsi, problem.hr_msi, ratio=problem.ratio, truth=problem.truth)
    base = psnr(blind, fuse(blind, "bicubic", device="cpu"))
    result = fuse(blind, method, device="cpu")
    assert "MTF-matched Gaussian" in result.extras["lowpass"]
    assert psnr(blind, result) > base + 3.0
    if method == "gsa":
        assert result.extras["grouping"] == "correlation"


def test_gsa_groups_follow_the_srf(problems):
    problem = problems[("balloons_ms", "gaussian-x8")]
    result = fuse(problem, "gsa", device="cpu")
    groups = result.extras["groups"]
    assert groups[0] == 2 and groups[-1] == 0  # 400 nm -> blue (B is the third band), 700 nm -> red
    assert list(groups) == sorted(groups, reverse=True)  # contiguous wavelength ranges


def test_gsa_uncovered_bands_use_all_msi_bands(crops):
    """Two Gaussian MSI bands (450, 550 nm): 600-700 nm is covered by neither; those bands are
    sharpened with a pan regressed from both MSI bands (measured: 45.5 dB on them, bicubic 37.8)."""
    truth = crops["balloons_ms"]
    problem = simulate(truth, "gaussian-x8", srf=gaussian_srf([450, 550], [40, 40], truth.wavelength.values))
    result = fuse(problem, "gsa", device="cpu")
    uncovered = result.extras["uncovered_bands"]
    assert set(range(22, 31)) <= set(uncovered.tolist())
    assert "-1" in result.extras["regression_weights"]
    base = fuse(problem, "bicubic", device="cpu")
    sub = {"band": uncovered}
    psnr_sub = evaluate(truth.isel(sub), result.fused.isel(sub), 8, metrics=["psnr"])["psnr"]
    assert psnr_sub > evaluate(truth.isel(sub), base.fused.isel(sub), 8, metrics=["psnr"])["psnr"] + 3


def test_interpolation_respects_the_sampling_phase():
    a = interpolation_matrix(4, 32, 8, 3)
    np.testing.assert_allclose(a[3 + 8 * np.arange(4)], np.eye(4), atol=1e-12)  # the samples are kept
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-12)
    # MTF-matched Gaussian: gain exp(-2 pi^2 sigma^2 f^2) = 0.3 at f = 1 / (2 ratio)
    s = mtf_sigma(8, 0.3)
    assert np.exp(-2 * np.pi**2 * s**2 / 16**2) == pytest.approx(0.3)


def test_hysure_blind_estimates_close_to_truth(cave_dir):
    """Balloons 256x256 at x8 (a 32x32 LR-HSI), both responses estimated (the paper's procedure)."""
    truth = center_crop(load_scene(cave_dir / "balloons_ms"), 256, 8)
    problem = simulate(truth, "gaussian-x8")
    calls = []
    result = fuse(
        problem,
        "hysure",
        device="cpu",
        estimate_srf=True,
        estimate_psf=True,
        threads=1,  # on this shared 2-core machine two threads ran several times slower under load
        progress=lambda *a: calls.append(a),
    )
    srf_true, psf_true = problem.srf.matrix, problem.psf
    srf_err = np.linalg.norm(result.extras["srf_matrix"] - srf_true) / np.linalg.norm(srf_true)
    assert result.psf.shape == psf_true.shape
    psf_err = np.linalg.norm(result.psf - psf_true) / np.linalg.norm(psf_true)
    # measured: SRF 0.12, PSF 0.075 (relative Frobenius errors); peak of the PSF within 10 %
    assert srf_err < 0.2, srf_err
    assert psf_err < 0.12, psf_err
    assert result.psf.max() == pytest.approx(psf_true.max(), rel=0.1)
    assert isinstance(result.srf, SRF) and result.srf.name == "hysure-estimate"
    assert result.extras["srf_source"].startswith("estimated") and result.extras["psf_source"].startswith("estimated")
    assert calls and calls[-1][0] == calls[-1][1] == 200 and "primal_residual" in calls[-1][2]
    base = psnr(problem, fuse(problem, "bicubic", device="cpu"))
    assert psnr(problem, result) > base + 5.0


def test_hysure_uses_the_known_responses_and_is_deterministic(problems):
    problem = problems[("balloons_ms", "mossfuse-cave-x32")]
    a = fuse(problem, "hysure", device="cpu", iterations=20, snapshot_every=10)
    b = fuse(problem, "hysure", device="cpu", iterations=20)
    np.testing.assert_array_equal(a.fused.values, b.fused.values)
    assert a.srf is None and a.psf is None  # nothing estimated
    assert a.extras["psf_source"] == "known" and a.extras["srf_source"] == "known (nikon-d700)"
    np.testing.assert_array_equal(a.extras["psf_used"], problem.psf)
    np.testing.assert_array_equal(a.extras["srf_matrix"], problem.srf.matrix)
    assert [s["iteration"] for s in a.trace] == [10, 20] and a.trace[-1]["fused"].shape == problem.truth.shape
    with pytest.raises(ProblemError, match="no SRF"):
        fuse(FusionProblem(problem.lr_hsi, problem.hr_msi, psf=problem.psf), "hysure", estimate_srf=False)


@pytest.mark.parametrize("method", METHODS)
def test_degenerate_inputs(crops, method):
    """One MSI band, a rank-2 LR-HSI and 25 dB noise: finite results (or a ProblemError)."""
    truth = crops["balloons_ms"]
    problem = simulate(truth, "gaussian-x8")
    # one MSI band (the green one)
    one = FusionProblem(
        problem.lr_hsi,
        problem.hr_msi.isel(band=[1]),
        srf=SRF.from_matrix(problem.srf.matrix[1:2], problem.srf.wavelength, band_names=["G"]),
        ratio=8,
        psf=problem.psf,
        offset=problem.offset,
        truth=truth,
    )
    r = fuse(one, method, device="cpu")
    assert np.isfinite(r.fused.values).all()
    assert psnr(one, r) > 25
    # rank-deficient: two distinct spectra mixed by a smooth map
    v = truth.values.astype(np.float64)
    s1, s2 = v[:, :8, :8].mean((1, 2)), v[:, -8:, -8:].mean((1, 2))
    t = np.linspace(0, 1, 128)
    a = 0.5 + 0.5 * np.sin(6 * t)[:, None] * np.cos(4 * t)[None, :]
    rank2 = xr.DataArray(s1[:, None, None] * a + s2[:, None, None] * (1 - a), dims=truth.dims, coords=truth.coords)
    p2 = simulate(rank2.astype(np.float32), "gaussian-x8")
    try:
        r = fuse(p2, method, device="cpu")
    except ProblemError as exc:  # allowed: a clear one-line error
        assert "\n" not in str(exc)
    else:
        assert np.isfinite(r.fused.values).all()
        assert psnr(p2, r) > 30
    # 25 dB SNR on both images: the MSI noise is injected too (measured here: gsa +0.6 dB over
    # bicubic, glp_hs +0.0 dB, hysure +3.3 dB), so only "not worse than bicubic by 0.5 dB" is asked
    noisy = simulate(truth, get_protocol("gaussian-x8").with_(snr_db=25.0))
    r = fuse(noisy, method, device="cpu")
    assert np.isfinite(r.fused.values).all()
    assert psnr(noisy, r) > psnr(noisy, fuse(noisy, "bicubic", device="cpu")) - 0.5


def test_bad_options_are_one_line_errors(problems):
    problem = problems[("balloons_ms", "gaussian-x8")]
    with pytest.raises(ProblemError, match="injection"):
        fuse(problem, "glp_hs", injection="nope")
    with pytest.raises(ProblemError, match="psf"):
        fuse(problem, "gsa", psf="nope")
    with pytest.raises(ProblemError, match="lambda_phi"):
        fuse(problem, "hysure", lambda_phi=-1)
    with pytest.raises(ProblemError, match="psf_size"):
        fuse(problem, "hysure", estimate_psf=True, psf_size=4)


@pytest.mark.parametrize("method", METHODS)
def test_cli_fuse(cave_dir, tmp_path, method, capsys):
    sim = tmp_path / "sim"
    args = ["simulate", str(cave_dir / "balloons_ms"), "--protocol", "gaussian-x8", "--crop", "64", "--out", str(sim)]
    assert main(args) == 0
    out = tmp_path / f"{method}.nc"
    args = ["fuse", "--lr-hsi", str(sim / "lr_hsi.nc"), "--hr-msi", str(sim / "hr_msi.nc"), "--srf",
            str(sim / "srf.nc"), "--ratio", "8", "--method", method, "--out", str(out), "--quiet"]
    if method == "hysure":
        args += ["--option", "iterations=30"]
    assert main(args) == 0, capsys.readouterr()
    z = xr.open_dataarray(out, engine="h5netcdf")
    assert z.shape == (31, 64, 64) and z.attrs["method"] == method


def test_dashboard_shows_hysure_estimated_responses(tmp_path):
    """HySure's blind estimates reach the dashboard as MossFuse's do: its estimate options are offered
    first (auto / yes / no), and a run with them on draws the estimated PSF and SRF beside the true ones."""
    import ipywidgets as W

    from fusion_explorer.app import App
    from fusion_explorer.synth import default_scene

    app = App(default_scene(128), "gaussian-x8", session_dir=tmp_path / "session")
    app.runner.methods.value = ("hysure",)
    widgets = app.runner.options["hysure"]
    assert list(widgets)[:3] == ["estimate_srf", "estimate_psf", "iterations"]
    assert isinstance(widgets["estimate_srf"], W.Dropdown) and widgets["estimate_srf"].value is None
    widgets["estimate_srf"].value = True
    widgets["estimate_psf"].value = True
    widgets["iterations"].value = 20
    app.runner.start(block=True)
    run = app.state.run
    assert run is not None and run.name.startswith("hysure")
    assert run.result.psf is not None and run.result.srf is not None
    assert app.endmembers.sensor.layout.display == ""  # the sensor-response box is shown
    figs = app.endmembers._sensor_figs  # estimated PSF, true PSF, SRF estimated vs true: each drawn
    assert all(len(figs[k].data) > 0 for k in ("psf", "true_psf", "srf"))
