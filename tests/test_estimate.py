"""Blind degradation estimation on a real CAVE crop degraded by the zoo: PSF width and shape, sampling
position, SRF and noise recovered within stated tolerances; impossible inputs refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fusion_explorer import degradations as dz
from fusion_explorer import estimate as es
from fusion_explorer.cube import make_cube
from fusion_explorer.errors import ProblemError
from fusion_explorer.srf import CAVE_WAVELENGTHS

from ._cave import load_cave_yxb


@pytest.fixture(scope="module")
def crop(cave_dir):
    x = load_cave_yxb(str(cave_dir / "balloons_ms"))[192:320, 192:320].transpose(2, 0, 1)
    return make_cube(x, CAVE_WAVELENGTHS, attrs={"scene": "balloons crop"})


def realise(crop, case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clipped negatives under noise
        return dz.realise(crop, case)


def psf_of(d):
    p = d.problem
    return es.estimate_psf(p.lr_hsi.values, p.hr_msi.values, p.ratio, d.srf)


@pytest.mark.parametrize("name", ["gaussian-s1-x8", "gaussian-x8", "gaussian-s4-x8", "moffat-x8", "area-x8"])
def test_psf_width_and_shape_are_recovered(crop, name):
    """Width (Gaussian-equivalent FWHM of the kernel's second moments) within 25 % or 0.6 px of the
    true kernel's, and the whole kernel within 0.5 in L1 (2 = disjoint)."""
    d = realise(crop, name)
    est = psf_of(d)
    true = d.relation_kernel(est.kernel.shape[0], est.base_offset)
    true_fwhm = dz.kernel_moments(true)["fwhm"]
    assert abs(est.fwhm - true_fwhm) <= max(0.25 * true_fwhm, 0.6)
    assert np.abs(est.kernel - true).sum() < 0.5
    assert est.kernel.min() >= 0 and est.kernel.sum() == pytest.approx(1.0)
    assert est.misfit < 0.05


def test_psf_estimate_sees_an_elliptical_rotated_psf(crop):
    est = psf_of(realise(crop, "elliptical-x8"))  # ellipticity 0.7 at 30 degrees
    assert est.fwhm_minor / est.fwhm_major == pytest.approx(0.7, abs=0.1)
    assert abs((est.angle - 30 + 90) % 180 - 90) < 10


@pytest.mark.parametrize("name", ["offset0-x8", "gaussian-x8", "half-pixel-x8", "area-x8", "misregistered-x8"])
def test_sampling_position_is_recovered_to_a_tenth_of_a_pixel(crop, name):
    """Integer, half-pixel (area averaging) and misregistered (0.3, -0.4) positions on the MSI's grid."""
    d = realise(crop, name)
    est = psf_of(d)
    np.testing.assert_allclose(est.position, d.relative_position, atol=0.1)
    assert abs(est.offset - float(np.mean(d.relative_position))) <= 0.6  # the nearest integer (3.5: either)


def test_blind_srf_and_psf_together(crop):
    d = realise(crop, "blind-srf-x8")
    assert d.problem.srf is None
    est = es.estimate_degradation(d.problem)
    assert est.srf_estimated
    assert np.abs(est.srf - d.srf.matrix).sum() / np.abs(d.srf.matrix).sum() < 0.3
    np.testing.assert_allclose(est.psf.position, d.relative_position, atol=0.15)
    true_fwhm = dz.kernel_moments(d.relation_kernel(est.psf.kernel.shape[0], est.psf.base_offset))["fwhm"]
    assert abs(est.psf.fwhm - true_fwhm) <= 0.25 * true_fwhm


@pytest.mark.parametrize("name", ["snr25-x8", "poisson30-x8"])
def test_noise_levels_of_both_images_are_recovered(crop, name):
    """Per band: LR-HSI (31 bands, band regression) within 40 %, median within 15 %; HR-MSI (3 bands,
    high-pass MAD) within 15 % for white noise and 30 % for signal-dependent noise (documented bias)."""
    d = realise(crop, name)
    est = es.estimate_degradation(d.problem)
    lr, msi = est.noise_lr / d.noise_lr, est.noise_msi / d.noise_msi
    assert 0.6 < lr.min() and lr.max() < 1.4 and 0.85 < np.median(lr) < 1.15
    tol = 0.15 if d.case.noise == "white" else 0.3
    assert np.all(np.abs(msi - 1) < tol)


def test_noise_free_images_give_small_noise(crop):
    d = realise(crop, "gaussian-x8")
    lr, msi = d.problem.lr_hsi.values, d.problem.hr_msi.values
    rms = lambda v: np.sqrt((v.astype(np.float64) ** 2).mean(axis=(1, 2)))  # noqa: E731
    assert np.all(es.estimate_noise(lr) < 0.01 * rms(lr))
    assert np.all(es.estimate_noise(msi) < 0.01 * rms(msi))


def test_unrelated_images_are_refused(crop):
    d = realise(crop, "gaussian-x8")
    lr = d.problem.lr_hsi.values
    other = np.ascontiguousarray(d.problem.hr_msi.values[:, ::-1, ::-1])  # the scene turned round
    with pytest.raises(ProblemError, match="misfit"):
        es.estimate_psf(lr, other, 8, d.srf)
    with pytest.raises(ProblemError, match="not a non-negative combination"):
        es.estimate_srf(lr, other, 8)


def test_impossible_inputs_fail_loudly(crop):
    d = realise(crop, "gaussian-x8")
    lr, msi = d.problem.lr_hsi.values, d.problem.hr_msi.values
    with pytest.raises(ProblemError, match="ratio"):
        es.estimate_psf(lr, msi, 4, d.srf)  # wrong ratio: sizes do not fit
    with pytest.raises(ProblemError, match="flat"):
        es.estimate_psf(np.ones_like(lr), np.ones_like(msi), 8, d.srf)
    small = realise(crop, "mossfuse-cave-x32")  # 4x4 LR pixels for a 97x97 kernel
    with pytest.raises(ProblemError, match="too small"):
        psf_of(small)
    with pytest.raises(ProblemError, match="SRF"):
        es.estimate_psf(lr, msi, 8, d.srf.matrix[:, :30])
    with pytest.raises(ProblemError, match="band regression"):
        es.noise_regression(msi[:2])
    with pytest.raises(ProblemError, match="5x5"):
        es.noise_highpass(lr[:, :3, :3])
    with pytest.raises(ProblemError, match="non-finite"):
        es.estimate_noise(np.full((3, 8, 8), np.nan))


def test_estimated_psf_plugs_into_the_problem(crop):
    """The estimate as a known PSF reproduces the LR-HSI from the MSI's scene: S_k(truth) ≈ LR-HSI."""
    d = realise(crop, "half-pixel-x8")
    est = es.estimate_degradation(d.problem)
    p = est.problem_with(d.problem)
    assert p.offset == est.psf.base_offset and p.psf.shape == est.psf.kernel.shape
    import torch

    seen = p.spatial_operator()(torch.as_tensor(d.truth.values, dtype=torch.float64)).numpy()
    lr = d.problem.lr_hsi.values
    assert np.linalg.norm(seen - lr) / np.linalg.norm(lr - lr.mean()) < 0.05
