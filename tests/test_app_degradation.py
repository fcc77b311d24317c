"""The data panel's degradation section (issue 20, item 6): zoo presets and custom cases, without a browser."""

from __future__ import annotations

import numpy as np
import pytest

from fusion_explorer.app import App
from fusion_explorer.app.degradation_controls import CLASSIC, CUSTOM, GAUSSIAN_SRF
from fusion_explorer.degradations import PRESETS
from fusion_explorer.srf import get_srf
from fusion_explorer.synth import default_scene


@pytest.fixture
def app(tmp_path):
    return App(default_scene(64), "gaussian-x8", session_dir=tmp_path / "session")


@pytest.fixture
def cave_app(tmp_path, cave_dir):
    """The dashboard with a real CAVE scene (balloons) chosen in the scene list, 64-px crop."""
    app = App(session_dir=tmp_path / "s", data_dir=cave_dir, load=False)
    path = str(cave_dir / "balloons_ms")
    if path not in [v for _, v in app.data.scene.options]:
        app.data.scene.options = [*app.data.scene.options, ("balloons", path)]
    app.data.scene.value = path
    app.data.crop.value = 64
    return app


def _shown(w) -> bool:
    return w.layout.display != "none"


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Mean over bands of 10 log10(mean(clean²) / mean((noisy - clean)²))."""
    num = np.mean(clean**2, axis=(1, 2))
    den = np.mean((noisy - clean) ** 2, axis=(1, 2))
    return float(np.mean(10 * np.log10(num / den)))


def test_preset_fills_controls_and_an_edit_makes_it_custom(app):
    deg = app.data.degradation
    assert deg.preset.value == CLASSIC and not _shown(deg.zoo_box) and _shown(app.data.protocol)
    deg.preset.value = "hard-x4"
    case = PRESETS["hard-x4"]
    assert deg.preset.value == "hard-x4" and _shown(deg.zoo_box) and not _shown(app.data.protocol)
    assert app.data.ratio.value == 4 and deg.psf.value == "kolmogorov" and deg.fwhm.value == pytest.approx(3.0)
    assert deg.border.value == "zeros" and (deg.shift_y.value, deg.shift_x.value) == (0.25, 0.25)
    assert (deg.snr_lr.value, deg.snr_msi.value, deg.noise.value) == (30, 35, "poisson")
    assert app.data.srf.value == GAUSSIAN_SRF and deg.srf_bands.value == 4 and _shown(deg.srf_bands)
    assert deg.case() == case
    deg.preset.value = "misregistered-x8"
    assert (deg.shift_y.value, deg.shift_x.value) == (0.3, -0.4) and deg.lr_offset.value == "3"
    assert app.data.srf.value == "nikon-d700" and not _shown(deg.srf_bands)
    deg.snr_msi.value = 40  # an edit: the dropdown says custom, the case keeps every other field of the preset
    assert deg.preset.value == CUSTOM
    got = deg.case()
    assert got.snr_msi_db == 40 and got.msi_shift == (0.3, -0.4) and got.lr_offset == 3 and got.ratio == 8
    deg.preset.value = CLASSIC
    assert not _shown(deg.zoo_box) and _shown(app.data.protocol) and app.data.ratio.disabled


def test_beta_shown_for_moffat_only(app):
    deg = app.data.degradation
    deg.preset.value = "gaussian-x8"
    assert not _shown(deg.beta)
    deg.psf.value = "moffat"
    assert _shown(deg.beta) and deg.preset.value == CUSTOM
    deg.psf.value = "airy"
    assert not _shown(deg.beta)


def test_custom_moffat_with_noise_on_a_cave_crop(cave_app):
    app = cave_app
    deg = app.data.degradation
    deg.preset.value = CUSTOM
    app.data.ratio.value = 4
    deg.psf.value, deg.fwhm.value, deg.beta.value = "moffat", 4.7, 2.5
    deg.snr_lr.value, deg.snr_msi.value, deg.noise.value = 30, 35, "poisson"
    deg.border.value = "reflect"
    assert app.data.load(), app.data.message.value
    pb, truth = app.state.problem, app.state.truth
    assert truth.shape == (31, 64, 64) and pb.truth is truth  # scored against the truth as before
    assert pb.psf is None and pb.offset is None  # the methods never see the PSF or the sampling phase
    assert pb.sensors.sigma is None and pb.sensors.kernel_size is None
    # MSI noise against the noiseless MSI computed here: R X (no misregistration)
    r = get_srf("nikon-d700", truth.coords["wavelength"].values).matrix
    clean_msi = np.einsum("mb,byx->myx", r, truth.values.astype(np.float64))
    assert _snr_db(clean_msi, pb.hr_msi.values.astype(np.float64)) == pytest.approx(35, abs=1.0)
    # LR noise against the same case without noise
    from fusion_explorer.degradations import realise

    clean_lr = realise(truth, deg.case().with_(snr_lr_db=None, snr_msi_db=None)).problem.lr_hsi.values
    assert _snr_db(clean_lr.astype(np.float64), pb.lr_hsi.values.astype(np.float64)) == pytest.approx(30, abs=1.0)
    info = app.data.summary.value
    assert "moffat FWHM 4.7 px, β 2.5, reflect" in info and "half-pixel offset" in info
    assert "SNR 30/35 dB poisson" in info and "SRF nikon-d700" in info


def test_hidden_srf_is_drawn_but_not_given(app):
    deg = app.data.degradation
    deg.preset.value = "blind-srf-x8"
    assert not deg.srf_known.value
    assert app.data.load(), app.data.message.value
    assert app.state.problem.srf is None and "(hidden)" in app.data.summary.value
    assert len(app.data.srf_plot.data) == 3  # the true SRF, drawn for the user


def test_estimate_button_fills_the_table(cave_app):
    app = cave_app
    deg = app.data.degradation
    deg.preset.value = "gaussian-x4"
    assert app.data.load(), app.data.message.value
    assert deg.estimate_table.value == ""
    deg.estimate()  # in the background: the button says so until the table is filled
    assert deg.estimate_button.description == "estimating…" and deg.estimate_button.disabled
    deg.thread.join(timeout=60)
    table = deg.estimate_table.value
    assert table.count("<tr>") == 6 and "estimated" in table and "true" in table, deg.estimate_status.value
    assert deg.estimate_button.description == "estimate degradation" and not deg.estimate_button.disabled
    est = deg.estimate_result
    true_pos = deg.degraded.relative_position
    assert abs(est.psf.position[0] - true_pos[0]) < 0.5 and abs(est.psf.position[1] - true_pos[1]) < 0.5
    assert deg.psf_plot.data and _shown(deg.psf_plot)
    assert app.data.load()  # a new pair forgets the old estimate
    assert deg.estimate_table.value == "" and not _shown(deg.psf_plot)


def test_real_pair_hides_simulation_controls(app):
    app.data.pair_msi.options = [*app.data.pair_msi.options, ("msi", "/nonexistent/msi.nc")]
    app.data.pair_msi.value = "/nonexistent/msi.nc"
    assert not _shown(app.data.degradation.widget) and not _shown(app.data.srf) and not _shown(app.data.snr)
    assert _shown(app.data.ratio) and _shown(app.data.sigma) and _shown(app.data.protocol)  # for the Wald view
    app.data.pair_msi.value = ""
    assert _shown(app.data.degradation.widget) and _shown(app.data.protocol)


def test_classic_protocol_takes_gaussian_bands(app):
    app.data.srf.value = GAUSSIAN_SRF
    assert app.data.degradation.preset.value == CLASSIC and _shown(app.data.degradation.srf_bands)
    app.data.degradation.srf_bands.value = 5
    assert app.data.load(), app.data.message.value
    pb = app.state.problem
    assert pb.msi_bands == 5 and pb.srf.name == "gaussian:5" and pb.psf is not None  # classic: PSF known
    assert "PSF σ 2 px" in app.data.summary.value
