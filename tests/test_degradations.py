"""The degradation zoo: PSF families, sampling phase, misregistration, noise, SRFs, cases, on real CAVE data."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from fusion_explorer import degradations as dz
from fusion_explorer.cube import make_cube
from fusion_explorer.errors import ProblemError
from fusion_explorer.problem import simulate
from fusion_explorer.srf import CAVE_WAVELENGTHS

from ._cave import load_cave_yxb


@pytest.fixture(scope="module")
def crop(cave_dir):
    """A 128x128 crop of balloons (independent reader), as a cube."""
    x = load_cave_yxb(str(cave_dir / "balloons_ms"))[192:320, 192:320].transpose(2, 0, 1)
    return make_cube(x, CAVE_WAVELENGTHS, attrs={"scene": "balloons crop"})


def half_max_width(kernel: np.ndarray) -> float:
    """FWHM of the central row, by linear interpolation of the half-maximum crossings."""
    row = kernel[kernel.shape[0] // 2]
    row = row / row.max()
    c = row.size // 2
    right = c + np.argmax(row[c:] < 0.5)
    x0 = right - 1 + (row[right - 1] - 0.5) / (row[right - 1] - row[right])
    left = c - np.argmax(row[c::-1] < 0.5)
    x1 = left + 1 - (row[left + 1] - 0.5) / (row[left + 1] - row[left])
    return float(x0 - x1)


@pytest.mark.parametrize("family", dz.PSF_FAMILIES)
def test_every_family_is_a_normalised_centred_kernel_of_the_asked_width(family):
    k = dz.psf_kernel(family, 9.0, size=61)
    assert k.shape == (61, 61) and (k >= 0).all()
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)  # point-symmetric about the central tap
    np.testing.assert_allclose(k, k.T, atol=1e-15)  # isotropic families are symmetric in x and y
    # half maximum of the central row (box: its side; pixel integration blurs edges and peaks by < 5%)
    assert half_max_width(k) == pytest.approx(9.0, rel=0.05)


def test_gaussian_is_the_protocols_discrete_gaussian():
    from fusion_explorer.physics import gaussian_kernel

    np.testing.assert_allclose(dz.psf_kernel("gaussian", 2 * dz.FWHM_PER_SIGMA, size=15), gaussian_kernel(15, 2.0),
                               atol=1e-15)


def test_airy_has_its_first_dark_ring_and_bright_ring_where_optics_puts_them():
    fwhm = 10.0
    row = dz.psf_kernel("airy", fwhm, size=71)[35, 35:]
    # intensity (2 J1(x)/x)^2: first zero at x = 3.8317, first bright ring at x = 5.1356 (1.75 % of the
    # peak), second zero at x = 7.0156; x = 1.6163 at r = fwhm / 2
    zero, ring, zero2 = (x / 1.6163 * fwhm / 2 for x in (3.8317, 5.1356, 7.0156))
    minimum = int(np.argmin(row[5:14])) + 5
    maximum = int(np.argmax(row[14:19])) + 14
    minimum2 = int(np.argmin(row[19:26])) + 19
    assert abs(minimum - zero) <= 1 and abs(maximum - ring) <= 1 and abs(minimum2 - zero2) <= 1
    assert 0.010 < row[maximum] / row[0] < 0.025  # pixel integration lowers the peak slightly
    assert row[minimum] < 0.1 * row[maximum]


def test_heavy_tailed_families_carry_more_light_far_out_than_a_gaussian():
    def far(family, **kw):
        k = dz.psf_kernel(family, 6.0, size=61, **kw)
        r = np.hypot(*np.meshgrid(np.arange(-30, 31), np.arange(-30, 31)))
        return k[r > 12].sum()  # beyond two FWHM

    gauss = far("gaussian")
    assert gauss < 1e-4
    assert far("moffat", beta=2.5) > 100 * gauss and far("kolmogorov") > 30 * gauss
    assert far("moffat", beta=1.5) > far("moffat", beta=4.5)


def test_elliptical_gaussian_is_squeezed_and_rotated_as_asked():
    k = dz.psf_kernel("gaussian", 8.0, size=51, ellipticity=0.6, angle=30.0)
    y, x = np.mgrid[-25:26, -25:26]
    cov = np.array([[np.sum(k * x * x), np.sum(k * x * y)], [np.sum(k * x * y), np.sum(k * y * y)]])
    vals, vecs = np.linalg.eigh(cov)
    assert math.sqrt(vals[0] / vals[1]) == pytest.approx(0.6, abs=0.01)
    assert math.sqrt(vals[1]) * dz.FWHM_PER_SIGMA == pytest.approx(8.0, rel=0.01)
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1])) % 180
    assert angle == pytest.approx(30.0, abs=0.5)
    m = dz.kernel_moments(k)
    assert m["angle"] == pytest.approx(30.0, abs=0.5)
    assert m["fwhm_minor"] / m["fwhm_major"] == pytest.approx(0.6, abs=0.01)


def test_box_psf_at_the_block_centre_is_the_area_mean(crop):
    """Even ratio, default phase (ratio - 1) / 2 = 3.5: half an HR pixel off, exactly block means."""
    d = dz.realise(crop, dz.DegradationCase(ratio=8, psf="box", psf_fwhm=8.0, srf="gaussian:3"))
    assert d.lr_position == 3.5
    area = crop.values.reshape(31, 16, 8, 16, 8).mean(axis=(2, 4))
    np.testing.assert_allclose(d.problem.lr_hsi.values, area, rtol=2e-6, atol=1e-7)  # float32


def test_half_pixel_gaussian_matches_a_direct_computation(crop):
    """LR pixel j samples the HR image at 3.5 + 8 j: an independent sum of Gaussian weights."""
    sigma = 2.0
    d = dz.realise(crop, dz.DegradationCase(ratio=8, psf="gaussian", psf_fwhm=sigma * dz.FWHM_PER_SIGMA,
                                            lr_offset=3.5))
    x = crop.values.astype(np.float64)
    for j, i in [(5, 7), (8, 2), (12, 12)]:  # interior LR pixels
        yy, xx = np.mgrid[0:128, 0:128]
        w = np.exp(-((yy - (3.5 + 8 * j)) ** 2 + (xx - (3.5 + 8 * i)) ** 2) / (2 * sigma**2))
        expected = np.einsum("byx,yx->b", x, w) / w.sum()  # untruncated; the kernel keeps >= 4 sigma
        np.testing.assert_allclose(d.problem.lr_hsi.values[:, j, i], expected, rtol=2e-4)


def test_zero_borders_darken_only_the_edges(crop):
    reflect = dz.realise(crop, "gaussian-x8").problem.lr_hsi.values
    zeros = dz.realise(crop, "zeros-x8").problem.lr_hsi.values
    np.testing.assert_allclose(zeros[:, 1:-1, 1:-1], reflect[:, 1:-1, 1:-1], atol=1e-6)
    assert (zeros[:, 0, :] < reflect[:, 0, :] - 1e-4).mean() > 0.9  # [3::8] with a 15-tap kernel reaches 4 pixels out


def test_msi_misregistration_integrates_the_covered_area(crop):
    base = dz.DegradationCase(ratio=8, srf="gaussian:1")
    still = dz.realise(crop, base).problem.hr_msi.values[0].astype(np.float64)
    half = dz.realise(crop, base.with_(msi_shift=(0.5, 0.0))).problem.hr_msi.values[0]
    np.testing.assert_allclose(half[:-1], 0.5 * (still[:-1] + still[1:]), atol=1e-6)
    whole = dz.realise(crop, base.with_(msi_shift=(0.0, -1.0))).problem.hr_msi.values[0]
    np.testing.assert_allclose(whole[:, 1:], still[:, :-1], atol=1e-6)
    d = dz.realise(crop, base.with_(msi_shift=(0.3, -0.4), lr_offset=3.0))
    assert d.relative_position == pytest.approx((2.7, 3.4))


@pytest.mark.parametrize("kind", dz.NOISE_KINDS)
@pytest.mark.parametrize("snr", [25.0, 40.0])
def test_noise_hits_the_requested_snr_on_real_data(crop, kind, snr):
    import torch

    clean = torch.as_tensor(crop.values, dtype=torch.float64)
    noisy, sigma = dz.add_band_noise(clean, snr, kind, torch.Generator().manual_seed(3))
    noise = (noisy - clean).numpy()
    measured = 10 * np.log10((clean.numpy() ** 2).mean(axis=(1, 2)) / (noise**2).mean(axis=(1, 2)))
    np.testing.assert_allclose(measured, snr, atol=0.25)  # 16384 samples a band
    np.testing.assert_allclose(noise.std(axis=(1, 2)), sigma, rtol=0.03)
    band = int(np.argmax(clean.numpy().mean(axis=(1, 2))))
    bright = clean[band].numpy() > np.quantile(clean[band].numpy(), 0.8)
    dark = clean[band].numpy() < np.quantile(clean[band].numpy(), 0.2)
    ratio = noise[band][bright].std() / noise[band][dark].std()
    assert (ratio > 1.5) if kind == "poisson" else (0.9 < ratio < 1.1)


def test_recorded_noise_is_the_noise_added(crop):
    case = dz.PRESETS["snr25-x8"]
    noisy, clean = dz.realise(crop, case), dz.realise(crop, case.with_(snr_lr_db=None, snr_msi_db=None))
    diff = noisy.problem.hr_msi.values.astype(np.float64) - clean.problem.hr_msi.values
    np.testing.assert_allclose(diff.std(axis=(1, 2)), noisy.noise_msi, rtol=0.05)
    assert clean.noise_lr.max() == 0 and noisy.noise_lr.min() > 0


def test_cases_are_seeded_and_methods_see_no_truth_psf_or_offset(crop):
    a, b = dz.realise(crop, "poisson30-x8"), dz.realise(crop, "poisson30-x8")
    np.testing.assert_array_equal(a.problem.lr_hsi.values, b.problem.lr_hsi.values)
    other = dz.realise(crop, dz.PRESETS["poisson30-x8"].with_(seed=1))
    assert not np.array_equal(a.problem.lr_hsi.values, other.problem.lr_hsi.values)
    assert dz.sample_cases(12, 5) == dz.sample_cases(12, 5) != dz.sample_cases(12, 6)
    p = a.problem
    assert p.psf is None and p.offset is None and p.truth is None and p.srf is not None
    assert dz.degrade(crop, "blind-srf-x8").srf is None


def test_sampled_cases_cover_every_axis():
    cases = dz.sample_cases(200, 0)
    assert {c.psf for c in cases} == set(dz.PSF_FAMILIES)
    assert {c.ratio for c in cases} == set(dz.ZOO_RATIOS)
    assert {c.border for c in cases} == {"reflect", "zeros"} and {c.noise for c in cases} == set(dz.NOISE_KINDS)
    assert any(c.lr_offset is None for c in cases) and any(c.lr_offset is not None for c in cases)
    assert any(c.msi_shift != (0.0, 0.0) for c in cases) and any(not c.srf_known for c in cases)
    snrs = [s for c in cases for s in (c.snr_lr_db, c.snr_msi_db) if s is not None]
    assert min(snrs) >= 25 and max(snrs) <= 40 and any(c.snr_lr_db is None for c in cases)


def test_cases_round_trip_through_json():
    for case in [*dz.PRESETS.values(), *dz.sample_cases(20, 1)]:
        text = case.to_json()
        assert dz.DegradationCase.from_json(text) == case
        assert dz.get_case(text) == case
        json.loads(text)  # plain JSON
    with pytest.raises(ProblemError, match="unknown degradation case keys"):
        dz.DegradationCase.from_dict({"ratio": 8, "psf_sigma": 2})
    with pytest.raises(ProblemError, match="JSON"):
        dz.get_case("{not json")
    with pytest.raises(ProblemError, match="unknown degradation preset"):
        dz.get_case("nope")


@pytest.mark.parametrize(
    "changes, match",
    [({"psf": "lorentz"}, "unknown PSF family"), ({"psf_fwhm": 0}, "psf_fwhm"), ({"lr_offset": 8}, "lr_offset"),
     ({"msi_shift": (0, 1.5)}, "msi_shift"), ({"snr_lr_db": -3}, "snr_lr_db"), ({"noise": "pink"}, "unknown noise"),
     ({"srf": "gaussian:0"}, "gaussian:N"), ({"border": "wrap"}, "unknown border"),
     ({"ellipticity": 1.2}, "ellipticity")],
)
def test_bad_cases_are_refused_in_one_line(changes, match):
    with pytest.raises(ProblemError, match=match):
        dz.DegradationCase(**changes)


def test_presets_reproduce_the_published_protocols(crop):
    for name in ("gaussian-x8", "mossfuse-cave-x32"):
        d, p = dz.realise(crop, name), simulate(crop, name)
        np.testing.assert_array_equal(d.problem.lr_hsi.values, p.lr_hsi.values)
        np.testing.assert_array_equal(d.problem.hr_msi.values, p.hr_msi.values)
        assert d.offset == p.offset


@pytest.mark.parametrize("srf, bands", [("gaussian:1", 1), ("gaussian:4", 4), ("gaussian:16", 16), ("nikon-d700", 3)])
def test_band_counts_from_gaussian_and_real_srfs(crop, srf, bands):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = dz.degrade(crop, dz.DegradationCase(srf=srf))
    assert p.msi_bands == bands
    assert p.srf.matrix.sum(axis=1) == pytest.approx(np.ones(bands))
    landsat = dz.degrade(crop, dz.DegradationCase(srf="landsat-8"))
    assert 3 <= landsat.msi_bands <= 5


def test_a_psf_too_wide_for_the_image_is_an_error(crop):
    small = crop.isel(y=slice(0, 16), x=slice(0, 16))
    with pytest.raises(ProblemError, match="larger crop"):
        dz.realise(small, dz.DegradationCase(ratio=8, psf="moffat", psf_fwhm=8.0))
