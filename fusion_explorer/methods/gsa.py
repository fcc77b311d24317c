"""GSA: adaptive Gram–Schmidt component substitution, band-grouped for HSI–MSI fusion (method ``gsa``).

Aiazzi, Baronti & Selva, "Improving component substitution pansharpening through multivariate
regression of MS+Pan data", IEEE TGRS 45(10), 2007, applied to hyperspectral–multispectral fusion as
in the reviews (Loncan et al., IEEE GRSM 2015; Yokoya, Grohnfeldt & Chanussot, IEEE GRSM 2017): the
HSI bands are split into groups, one per MSI band, and each group is pansharpened by GSA with that
MSI band as its "pan". For a group ``G`` with pan ``P`` (HR) and its low-pass version ``P_L`` (``P``
degraded to the LR grid and interpolated back)::

    I   = w_0 + Σ_{b∈G} w_b Ĥ_b          w = argmin ||P_L - w_0 - Σ w_b Ĥ_b||²   (the regression)
    g_b = cov(Ĥ_b, I) / var(I)                                                (injection gains)
    Z_b = Ĥ_b + g_b (P - I)

``Ĥ`` is the LR-HSI interpolated to the HR grid (:func:`upsample`). This module also holds the
helpers :mod:`.glp_hs` shares: the interpolation aware of the sampling phase, the MTF-matched
Gaussian, and the MSI seen at the LR scale.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..cube import make_cube
from ..errors import ProblemError
from ..physics import SpatialDegradation, default_kernel_size, gaussian_kernel
from ..problem import FusionProblem, FusionResult
from .base import ProgressCallback, register

#: gain of the sensor MTF at the LR Nyquist frequency assumed when no PSF is known (the papers' ~0.3)
NYQUIST_GAIN = 0.3
#: ridge weight of the regressions, relative to the mean diagonal of the normal matrix
RIDGE = 1e-6


# ------------------------------------------------------------------------------ shared helpers


def mtf_sigma(ratio: int, nyquist_gain: float = NYQUIST_GAIN) -> float:
    """Sigma (HR pixels) of the Gaussian whose gain at the LR Nyquist frequency ``1/(2 ratio)`` is
    ``nyquist_gain``: ``exp(-2 π² σ² f²) = G`` gives ``σ = ratio sqrt(-2 ln G) / π``."""
    if not 0 < nyquist_gain < 1:
        raise ProblemError(f"nyquist_gain must be in (0, 1); got {nyquist_gain!r}")
    return ratio * math.sqrt(-2 * math.log(nyquist_gain)) / math.pi


def lowpass_operator(problem: FusionProblem, psf: str = "known", nyquist_gain: float = NYQUIST_GAIN):
    """``(S, note)``: the spatial degradation used to bring the MSI to the LR scale.

    ``psf="known"`` takes the problem's PSF when it has one and falls back to the MTF-matched
    Gaussian otherwise; ``psf="mtf"`` always takes the Gaussian (sigma :func:`mtf_sigma`, kernel
    ``default_kernel_size``, reflect borders, the problem's sampling offset or the block centre).
    """
    if psf not in ("known", "mtf"):
        raise ProblemError(f"psf must be 'known' or 'mtf'; got {psf!r}")
    if psf == "known" and problem.psf is not None:
        return problem.spatial_operator(), "problem's PSF"
    sigma = mtf_sigma(problem.ratio, nyquist_gain)
    offset = problem.sensors.sample_offset
    kernel = gaussian_kernel(default_kernel_size(sigma, problem.ratio), sigma)
    note = f"MTF-matched Gaussian, sigma {sigma:.3f} HR px (Nyquist gain {nyquist_gain:g})"
    return SpatialDegradation(kernel, problem.ratio, offset, "reflect"), note


def interpolation_matrix(n_lr: int, n_hr: int, ratio: int, offset: int) -> np.ndarray:
    """``(n_hr, n_lr)`` cubic-spline interpolation along one axis: LR sample ``j`` sits at HR
    position ``offset + ratio j``; outside the samples the signal is mirrored (reflect-101)."""
    if n_lr == 1:
        return np.ones((n_hr, 1))
    coords = (np.arange(n_hr, dtype=np.float64) - offset) / ratio
    eye = np.eye(n_lr)
    cols = [ndimage.map_coordinates(eye[j], coords[None], order=3, mode="mirror") for j in range(n_lr)]
    return np.stack(cols, axis=1)


def upsample(lr: np.ndarray, hr_size: tuple[int, int], ratio: int, offset: int) -> np.ndarray:
    """``(bands, h, w)`` → ``(bands, H, W)`` by separable cubic-spline interpolation that respects
    the sampling phase (bicubic ``interpolate`` assumes samples at block centres)."""
    a_y = interpolation_matrix(lr.shape[-2], hr_size[0], ratio, offset)
    a_x = interpolation_matrix(lr.shape[-1], hr_size[1], ratio, offset)
    return np.einsum("Yy,byx,Xx->bYX", a_y, lr, a_x, optimize=True)


def sampling_offset(problem: FusionProblem) -> int:
    """The LR grid's sampling phase: the problem's, or :func:`~fusion_explorer.physics.default_offset`."""
    return problem.sensors.sample_offset


def msi_at_lr(problem: FusionProblem, spatial: SpatialDegradation) -> np.ndarray:
    """The HR-MSI degraded to the LR grid, ``(msi_bands, h, w)`` float64."""
    msi = torch.as_tensor(np.asarray(problem.hr_msi.values, dtype=np.float64))
    return spatial(msi).numpy()


def regress(features: np.ndarray, target: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """Least squares with an intercept: ``c`` with ``target ≈ c_0 + Σ_k c_k features_k``.

    ``features`` ``(k, n)``, ``target`` ``(n,)`` or ``(m, n)`` (one regression per row). A ridge of
    ``ridge x mean diagonal`` keeps collinear features (rank-deficient data) finite. Returns
    ``(k + 1,)`` or ``(m, k + 1)``, intercept first.
    """
    a = np.concatenate([np.ones((1, features.shape[-1])), features], axis=0)
    gram = a @ a.T
    lam = ridge * max(float(np.trace(gram)) / gram.shape[0], 1e-300)
    gram[np.diag_indices_from(gram)] += lam
    rhs = a @ np.atleast_2d(target).T
    coef = np.linalg.lstsq(gram, rhs, rcond=None)[0].T
    return coef[0] if np.ndim(target) == 1 else coef


def gain(x: np.ndarray, i: np.ndarray) -> float:
    """``cov(x, i) / var(i)`` (0 when ``i`` is constant)."""
    ic = i - i.mean()
    var = float(np.mean(ic * ic))
    if var <= 1e-20 * max(float(np.mean(i * i)), 1e-300):
        return 0.0
    return float(np.mean((x - x.mean()) * ic)) / var


def to_result(fused: np.ndarray, problem: FusionProblem, method: str, params: dict, **kwargs: Any) -> FusionResult:
    """Clip at 0 (reflectance) and wrap as a cube like the LR-HSI."""
    cube = make_cube(np.clip(fused, 0, None), problem.wavelength, attrs=dict(problem.lr_hsi.attrs))
    return FusionResult(cube, method, params=params, **kwargs)


def check_signal(problem: FusionProblem, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The LR-HSI and HR-MSI as float64 arrays, or a ProblemError when either is all zero."""
    lr = np.asarray(problem.lr_hsi.values, dtype=np.float64)
    msi = np.asarray(problem.hr_msi.values, dtype=np.float64)
    if not lr.any() or not msi.any():
        raise ProblemError(f"{what} needs signal: the LR-HSI or the HR-MSI is all zero")
    return lr, msi


# ------------------------------------------------------------------------------ GSA


def band_groups(
    problem: FusionProblem, lr: np.ndarray, msi_lr: np.ndarray, coverage: float
) -> tuple[np.ndarray, str]:
    """The MSI band each HSI band is sharpened with, ``(hsi_bands,)`` int, ``-1`` for none.

    With an SRF: the MSI band whose response, relative to that band's peak, is largest at the HSI
    band; bands where every relative response is below ``coverage`` get ``-1``. Without one: the
    MSI band (degraded to the LR grid) most correlated with the HSI band.
    """
    if problem.srf is not None:
        r = np.asarray(problem.srf.matrix, dtype=np.float64)
        rel = r / np.maximum(r.max(axis=1, keepdims=True), 1e-300)
        groups = rel.argmax(axis=0)
        groups[rel.max(axis=0) < coverage] = -1
        return groups, "SRF"
    a = lr.reshape(lr.shape[0], -1)
    b = msi_lr.reshape(msi_lr.shape[0], -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    corr = (a @ b.T) / np.maximum(np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)), 1e-300)
    return corr.argmax(axis=1), "correlation"


@register("gsa", "adaptive Gram-Schmidt (GSA, Aiazzi et al. 2007), HSI bands grouped by MSI band")
def gsa(
    problem: FusionProblem,
    *,
    device: torch.device | None = None,
    progress: ProgressCallback | None = None,
    seed: int = 0,
    psf: str = "known",
    nyquist_gain: float = NYQUIST_GAIN,
    coverage: float = 0.05,
) -> FusionResult:
    """Fuse by band-grouped adaptive Gram–Schmidt (see the module docstring for the formulas).

    Options:

    - ``psf``: how the pan is low-passed to the LR scale (for the regression weights): ``"known"``
      (default) uses the problem's PSF and sampling offset when given, else the MTF-matched
      Gaussian; ``"mtf"`` always the Gaussian with gain ``nyquist_gain`` (0.3) at the LR Nyquist
      frequency, as the pansharpening papers do.
    - ``coverage`` (0.05): an HSI band belongs to the MSI band whose SRF, relative to its own peak,
      is largest there; bands where every MSI band's relative response is below ``coverage`` are
      "uncovered". Without an SRF the groups come from the correlation of each LR-HSI band with the
      MSI bands degraded to the LR grid (no band is then uncovered).
    - Uncovered bands form one extra group whose pan is the least-squares combination of *all* MSI
      bands (plus an offset) that best reproduces the group's mean band on the interpolated grid
      (``P = a_0 + Σ_k a_k M_k``, ``a`` regressed on the low-passed MSI); they are then sharpened by
      GSA with that pan like the other groups.

    The regression weights ``w`` are fitted between the interpolated HSI bands and the low-passed
    pan on the HR grid (both carry only LR detail), with an intercept and a tiny ridge so collinear
    bands (a rank-deficient HSI) stay finite. The pan is not further histogram-matched: the
    regression with intercept already gives ``I`` the low-passed pan's mean. Deterministic; numpy on
    the CPU whatever ``device`` is. The output is clipped at 0.
    """
    lr, msi = check_signal(problem, "GSA")
    spatial, note = lowpass_operator(problem, psf, nyquist_gain)
    offset, ratio, hr = sampling_offset(problem), problem.ratio, problem.hr_size
    msi_lr = msi_at_lr(problem, spatial)
    up = upsample(lr, hr, ratio, offset)  # Ĥ (L, H, W)
    msi_low = upsample(msi_lr, hr, ratio, offset)  # P_L of each MSI band (l, H, W)
    groups, grouping = band_groups(problem, lr, msi_lr, coverage)
    fused = np.empty_like(up)
    flat_up = up.reshape(up.shape[0], -1)
    labels = sorted(set(groups.tolist()))
    weights: dict[str, list[float]] = {}
    gains = np.zeros(up.shape[0])
    for n_done, k in enumerate(labels):
        members = np.flatnonzero(groups == k)
        if k >= 0:
            pan, pan_low = msi[k], msi_low[k]
        else:  # uncovered bands: a pan from all MSI bands, regressed on the group's mean band
            a = regress(msi_low.reshape(msi_low.shape[0], -1), flat_up[members].mean(0))
            pan = a[0] + np.tensordot(a[1:], msi, axes=1)
            pan_low = a[0] + np.tensordot(a[1:], msi_low, axes=1)
        w = regress(flat_up[members], pan_low.ravel())
        intensity = w[0] + np.tensordot(w[1:], up[members], axes=1)
        detail = pan - intensity
        for b in members:
            gains[b] = gain(up[b], intensity)
            fused[b] = up[b] + gains[b] * detail
        weights[str(k)] = w.tolist()
        if progress is not None:
            progress(n_done + 1, len(labels), {"group": int(k), "bands": len(members)})
    params = {"psf": psf, "nyquist_gain": nyquist_gain, "coverage": coverage}
    extras = {
        "lowpass": note,
        "grouping": grouping,
        "groups": groups,
        "uncovered_bands": np.flatnonzero(groups < 0),
        "regression_weights": weights,
        "injection_gains": gains,
    }
    return to_result(fused, problem, "gsa", params, extras=extras)
