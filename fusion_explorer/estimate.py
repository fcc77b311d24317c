"""Blind degradation estimation: the SRF, the PSF (non-parametric), the sampling offset and the
per-band noise of both images, from the LR-HSI and the HR-MSI alone.

Both images see one scene ``X``: ``Y_h = S_k(X) + n_h`` and ``Y_m = R X + n_m`` (with ``S_k`` blur by
the PSF ``k`` then decimation at sampling phase ``P``). The spatial and spectral responses commute,
so ``R Y_h ≈ S_k(Y_m)``: the LR-HSI seen through the SRF is the HR-MSI blurred and decimated. Every
estimator here fits that relation (as HySure does); none needs the truth.

- :func:`estimate_srf`: ``R`` (and an intercept) by non-negative least squares after a strong common
  blur makes the unknown PSF and offset negligible (HySure's relative-blur trick).
- :func:`estimate_psf`: a non-parametric kernel on the HR grid, fitted by least squares with a
  smoothness penalty under ``k >= 0, Σ k = 1`` (accelerated projected gradient onto the simplex);
  its centroid is the sub-pixel sampling position, its second moments the width, ellipticity and
  orientation.
- :func:`estimate_noise`: per-band noise sigma, by HySime-style band regression (many bands) or by a
  robust MAD of a Laplacian high-pass (few bands).
- :func:`estimate_degradation`: all of them on a :class:`~fusion_explorer.problem.FusionProblem`.

This module imports degradations, physics and problem only (not methods), so methods may use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from scipy import ndimage
from scipy.optimize import nnls
from threadpoolctl import threadpool_limits

from .degradations import kernel_moments
from .errors import ProblemError
from .physics import SpatialDegradation, default_offset
from .problem import FusionProblem

#: the most nodes per side of the estimated kernel (its normal matrix has nodes⁴ entries)
MAX_KERNEL_NODES = 33
#: relative misfit (residual / centred target) above which the PSF estimate is refused
MAX_PSF_MISFIT = 0.7
#: 1 / Φ⁻¹(3/4): MAD of a standard normal -> sigma
MAD_TO_SIGMA = 1.4826


def _values(cube: Any, what: str) -> np.ndarray:
    a = np.asarray(cube.values if isinstance(cube, xr.DataArray) else cube, dtype=np.float64)
    if a.ndim != 3 or min(a.shape) < 1:
        raise ProblemError(f"{what} must be (bands, y, x); got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ProblemError(f"{what} has non-finite values")
    return a


# ------------------------------------------------------------------------------ noise


def noise_regression(cube: Any, neighbours: int | None = None) -> np.ndarray:
    """Per-band noise sigma ``(bands,)`` by HySime's regression (Bioucas-Dias & Nascimento 2008).

    Model: every band is a linear combination of the others plus white noise independent across
    bands, so the residual of regressing band ``i`` (with an intercept) on the others is its noise;
    the residual variance is corrected for the ``k`` fitted coefficients (``n / (n - k - 1)``). With
    ``n >= 4 L`` pixels the regressors are all other bands; with fewer (a small LR-HSI of many
    bands), or when ``neighbours`` is given, the ``k = neighbours`` (default ``n // 4``) bands
    nearest in index. Fails (over-estimates) where a band holds signal the others do not (few or
    very different bands, spectral features narrower than the band spacing); needs 3 bands and 16
    pixels.
    """
    y = _values(cube, "cube")
    bands = y.shape[0]
    a = y.reshape(bands, -1)
    n = a.shape[1]
    if bands < 3 or n < 16:
        raise ProblemError(f"band regression needs >= 3 bands and 16 pixels; got {bands} bands and {n} pixels "
                           "(use method='highpass')")
    if neighbours is None and n >= 4 * bands:
        design = np.concatenate([a, np.ones((1, n))], axis=0)
        gram = design @ design.T
        gram[np.diag_indices_from(gram)] += 1e-10 * np.trace(gram) / gram.shape[0]
        inv = np.linalg.inv(gram)
        # leave-one-band-out regressions at once: residual_i = (G⁻¹ A)_i / (G⁻¹)_ii for band i
        resid = (inv[:bands] @ design) / np.diag(inv)[:bands, None]
        return np.sqrt(np.mean(resid**2, axis=1) * n / (n - bands - 1))
    k = int(neighbours) if neighbours is not None else max(2, n // 4)
    k = max(1, min(k, bands - 1, n - 2))
    out = np.empty(bands)
    # one BLAS thread: hundreds of small solves on a multi-threaded BLAS spin-wait for each other on a
    # busy machine (224 AVIRIS bands of 20x20 pixels took 6-480 s there, 0.5 s on one thread)
    with threadpool_limits(limits=1, user_api="blas"):
        for i in range(bands):
            others = np.argsort(np.abs(np.arange(bands) - i), kind="stable")[1 : k + 1]
            design = np.concatenate([a[others], np.ones((1, n))], axis=0).T
            coef = np.linalg.lstsq(design, a[i], rcond=None)[0]
            out[i] = np.sqrt(np.mean((a[i] - design @ coef) ** 2) * n / (n - k - 1))
    return out


_LAPLACIAN = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def noise_highpass(cube: Any, keep: float = 0.5) -> np.ndarray:
    """Per-band noise sigma ``(bands,)`` by a robust MAD of a high-pass (Immerkær 1996).

    The 3x3 mask ``[1 -2 1; -2 4 -2; 1 -2 1]`` (norm 6) cancels locally linear images, so on white
    noise of sigma σ it returns samples of sigma 6σ; the median absolute value over the ``keep``
    share of pixels with the smallest image gradient (texture and edges left out) gives σ. Fails
    (over-estimates) on images textured at the pixel scale everywhere (aliased LR images at large
    ratios), and under-estimates signal-dependent noise in dark areas.
    """
    y = _values(cube, "cube")
    if min(y.shape[1:]) < 5:
        raise ProblemError(f"a high-pass noise estimate needs images of at least 5x5 pixels; got {y.shape[1:]}")
    out = np.empty(y.shape[0])
    for b, band in enumerate(y):
        e = ndimage.correlate(band, _LAPLACIAN, mode="mirror")[1:-1, 1:-1]
        g = np.hypot(ndimage.sobel(band, 0, mode="mirror"), ndimage.sobel(band, 1, mode="mirror"))[1:-1, 1:-1]
        flat = g <= np.quantile(g, keep)
        # the selection (low gradient) also prefers low noise; this factor calibrates it on white noise
        out[b] = np.median(np.abs(e[flat])) * MAD_TO_SIGMA / 6.0
    return out * _highpass_calibration(keep)


_CALIBRATION: dict[float, float] = {}


def _highpass_calibration(keep: float) -> float:
    """Ratio true/estimated sigma of :func:`noise_highpass`'s selection on pure white noise (cached)."""
    if keep not in _CALIBRATION:
        z = np.random.default_rng(0).standard_normal((1, 256, 256))
        _CALIBRATION[keep] = 1.0
        _CALIBRATION[keep] = 1.0 / float(noise_highpass(z, keep)[0])
    return _CALIBRATION[keep]


def estimate_noise(cube: Any, method: str = "auto") -> np.ndarray:
    """Per-band noise sigma ``(bands,)`` of ``cube`` ``(bands, y, x)``.

    ``method``: ``"regression"`` (:func:`noise_regression`), ``"highpass"`` (:func:`noise_highpass`),
    or ``"auto"``: with at least 8 bands and 16 pixels the smaller of regression and high-pass per
    band (each over-estimates on its own failure case: texture for the high-pass, spectral detail
    for the regression), else the high-pass.
    For signal-dependent noise, the value is an RMS over the band.
    """
    y = _values(cube, "cube")
    bands, n = y.shape[0], y.shape[1] * y.shape[2]
    if method == "regression":
        return noise_regression(y)
    if method == "highpass":
        return noise_highpass(y)
    if method != "auto":
        raise ProblemError(f"unknown noise method {method!r}; choose 'auto', 'regression' or 'highpass'")
    if bands >= 8 and n >= 16:
        reg = noise_regression(y)
        if min(y.shape[1:]) >= 5:
            return np.minimum(reg, noise_highpass(y))
        return reg
    return noise_highpass(y)


# ------------------------------------------------------------------------------ SRF


@dataclass
class SRFEstimate:
    """``matrix`` ``(msi_bands, hsi_bands)`` and ``intercept`` ``(msi_bands,)`` with
    ``Y_m ≈ matrix Y_h + intercept`` on a common (blurred) grid; ``r2`` per MSI band."""

    matrix: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray


def _block_mean(msi: np.ndarray, ratio: int) -> np.ndarray:
    l_, big_h, big_w = msi.shape
    return msi.reshape(l_, big_h // ratio, ratio, big_w // ratio, ratio).mean(axis=(2, 4))


def estimate_srf(
    lr_hsi: Any,
    hr_msi: Any,
    ratio: int,
    *,
    blur: float = 1.0,
    smoothness: float = 1e-2,
    min_r2: float = 0.5,
    psf: PSFEstimate | None = None,
) -> SRFEstimate:
    """The SRF by NNLS with an intercept, ``min ||Ỹ_m - R Ỹ_h - c||² + λ ||R Dᵀ||²``, ``R, c >= 0``.

    ``Ỹ_m``: the HR-MSI averaged over each LR block then blurred by a Gaussian of ``blur`` LR pixels;
    ``Ỹ_h``: the LR-HSI blurred the same. The common blur is wider than the PSF's and offset's
    effect, so the relation is spectral only (HySure's relative-blur trick). ``D``: first differences
    along wavelength (a smooth response; ``λ = smoothness x`` the mean squared norm of an HSI band),
    which picks one of the many fits that correlated bands allow. With a ``psf`` estimate, the exact
    relation ``R Y_h + c ≈ S_k(Y_m)`` is used instead (no common blur: a refinement). Fails where the MSI
    sees light the HSI does not (bands outside its range: low ``r2``, refused below ``min_r2`` when
    the MSI band varies) and with fewer LR pixels than HSI bands (underdetermined; ``R`` is then
    only one of many fits).
    """
    lr, msi = _values(lr_hsi, "LR-HSI"), _values(hr_msi, "HR-MSI")
    _check_sizes(lr, msi, ratio)
    if psf is not None:
        y_h = lr
        y_m = SpatialDegradation(psf.kernel, ratio, psf.base_offset)(torch.as_tensor(msi)).numpy()
    else:
        y_h = ndimage.gaussian_filter(lr, (0, blur, blur), mode="mirror") if blur > 0 else lr
        y_m = _block_mean(msi, ratio)
        y_m = ndimage.gaussian_filter(y_m, (0, blur, blur), mode="mirror") if blur > 0 else y_m
    bands = lr.shape[0]
    a = np.concatenate([y_h.reshape(bands, -1), np.ones((1, y_h[0].size))], axis=0).T
    gram_diag = float(np.mean(np.sum(a[:, :-1] ** 2, axis=0)))
    d = np.diff(np.eye(bands), axis=0)  # first differences along wavelength; the intercept is free
    penalty = math.sqrt(smoothness * gram_diag) * np.concatenate([d, np.zeros((bands - 1, 1))], axis=1)
    stacked = np.concatenate([a, penalty], axis=0)
    rows, r2 = [], []
    for band in y_m.reshape(msi.shape[0], -1):
        coef = nnls(stacked, np.concatenate([band, np.zeros(bands - 1)]), maxiter=50 * a.shape[1])[0]
        resid = band - a @ coef
        var = float(np.var(band))
        r2.append(1.0 - float(np.mean(resid**2)) / var if var > 0 else 1.0)
        rows.append(coef)
    coef, r2 = np.asarray(rows), np.asarray(r2)
    bad = np.flatnonzero(r2 < min_r2)
    if bad.size:
        raise ProblemError(
            f"the HR-MSI band(s) {bad.tolist()} are not a non-negative combination of the LR-HSI's bands "
            f"(R² {np.round(r2[bad], 2).tolist()}); is the MSI outside the HSI's wavelength range or the pair "
            "not registered?"
        )
    return SRFEstimate(coef[:, :-1], coef[:, -1], r2)


# ------------------------------------------------------------------------------ PSF


@dataclass
class PSFEstimate:
    """A PSF fitted to the two images.

    ``kernel`` ``(K, K)``: non-negative, sums to 1, for ``SpatialDegradation(kernel, ratio,
    base_offset)`` (LR pixel ``j`` reads the MSI around ``base_offset + ratio j``; the kernel's
    off-centre mass carries the rest of the offset). ``position`` ``(y, x)``: where LR pixel 0
    samples on the MSI's grid, ``base_offset + centroid`` (sub-pixel); ``offset``: its rounding, the
    integer a :class:`~fusion_explorer.problem.FusionProblem` takes. ``fwhm`` (geometric mean),
    ``fwhm_major``/``fwhm_minor``/``angle``: Gaussian-equivalent widths from the kernel's second
    moments (``2.3548 σ``; a box of side ``w`` gives ``0.68 w``). ``misfit``: ``||R Y_h + c - S_k(Y_m)||
    / ||centred R Y_h||``. ``rows``: equations used.
    """

    kernel: np.ndarray
    base_offset: int
    position: tuple[float, float]
    offset: int
    fwhm: float
    fwhm_major: float
    fwhm_minor: float
    angle: float
    misfit: float
    rows: int
    extras: dict = field(default_factory=dict)


def _check_sizes(lr: np.ndarray, msi: np.ndarray, ratio: int) -> None:
    if isinstance(ratio, bool) or int(ratio) != ratio or ratio < 1:
        raise ProblemError(f"ratio must be a positive integer; got {ratio!r}")
    if (msi.shape[1], msi.shape[2]) != (lr.shape[1] * ratio, lr.shape[2] * ratio):
        raise ProblemError(f"the HR-MSI {msi.shape[1]}x{msi.shape[2]} is not the LR-HSI {lr.shape[1]}x"
                           f"{lr.shape[2]} times the ratio {ratio}")


def _project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto ``{k >= 0, Σ k = 1}`` (Duchi et al. 2008)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    idx = np.arange(1, v.size + 1)
    rho = np.flatnonzero(u - css / idx > 0)[-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def _simplex_qp(gram: np.ndarray, rhs: np.ndarray, start: int, iterations: int, tol: float = 1e-9) -> np.ndarray:
    """``argmin ½ kᵀ G k - rhsᵀ k`` over the simplex: FISTA with adaptive restart (O'Donoghue &
    Candès 2015), from the unit vector at ``start``; stops when an iteration moves ``k`` by less than
    ``tol`` (L1)."""
    v = np.ones(gram.shape[0]) / gram.shape[0]
    for _ in range(50):  # Lipschitz constant by power iteration
        v = gram @ v
        v /= np.linalg.norm(v)
    lip = 1.05 * float(v @ gram @ v)
    k = np.zeros(gram.shape[0])
    k[start] = 1.0
    z, step = k.copy(), 1.0
    for _ in range(iterations):
        k_new = _project_simplex(z - (gram @ z - rhs) / lip)
        if (z - k_new) @ (k_new - k) > 0:  # momentum points uphill: restart
            step = 1.0
        step_new = (1 + math.sqrt(1 + 4 * step * step)) / 2
        z = k_new + (step - 1) / step_new * (k_new - k)
        moved = float(np.abs(k_new - k).sum())
        k, step = k_new, step_new
        if moved < tol:
            break
    return k


def _tent_basis(half: int, step: int) -> np.ndarray:
    """``(size², nodes²)``: bilinear tents on nodes every ``step`` taps of a ``2 half + 1`` kernel,
    each column summing to 1 (so non-negative node weights summing to 1 give a PSF)."""
    taps = np.arange(-half, half + 1, dtype=np.float64)
    nodes = np.arange(-half, half + 1, step, dtype=np.float64)
    b = np.clip(1.0 - np.abs(taps[:, None] - nodes[None, :]) / step, 0.0, None)
    basis = np.kron(b, b)
    return basis / basis.sum(axis=0)


def difference_gram(size: int) -> np.ndarray:
    """``D_hᵀ D_h + D_vᵀ D_v`` on a ``size x size`` kernel (non-circular first differences): the
    smoothness penalty of a kernel estimate (here and in HySure's PSF step)."""
    d = np.diff(np.eye(size), axis=0)
    eye = np.eye(size)
    dh, dv = np.kron(eye, d), np.kron(d, eye)
    return dh.T @ dh + dv.T @ dv


def estimate_psf(
    lr_hsi: Any,
    hr_msi: Any,
    ratio: int,
    srf: Any = None,
    *,
    intercept: Any = None,
    radius: int | None = None,
    smoothness: float = 3e-3,
    iterations: int = 5000,
    msi_noise: Any = "estimate",
) -> PSFEstimate:
    """The PSF and sampling position from ``R Y_h + c ≈ S_k(Y_m)`` (module docstring).

    ``srf``: the ``(msi_bands, hsi_bands)`` matrix (an :class:`~fusion_explorer.srf.SRF` or array;
    ``None``: :func:`estimate_srf`, whose intercept is then used). The kernel spans
    ``K = 2 (ceil(ratio / 2) + radius) + 1`` HR pixels (``radius`` default ``ratio``), centred on the
    phase ``(ratio - 1) // 2``, so any sampling phase and a PSF up to about ``2 radius`` wide fit.
    Above x8 it is a bilinear interpolation of nodes every ``ceil(ratio / 8)`` pixels (at most
    :data:`MAX_KERNEL_NODES` a side), which keeps the unknowns under about 1000. Solved as
    ``min ½||Φ k - t||² + ½ λ ||D k||²`` over the simplex by FISTA with restarts, ``λ = smoothness x``
    the mean diagonal of ``ΦᵀΦ`` (``D``: first differences of the nodes). The HR-MSI's noise would
    act as a ridge (``ΦᵀΦ`` gains ``n σ²`` on its diagonal) and widen the kernel: ``msi_noise``
    (sigma per band; ``"estimate"``: :func:`noise_highpass`; ``None``: no correction) is taken off
    the diagonal (the errors-in-variables correction). Only LR pixels whose window lies inside the
    image are used when there are enough (so the border rule does not matter).

    Fails loudly (:class:`~fusion_explorer.errors.ProblemError`): images of the wrong sizes, flat
    images, fewer equations than a quarter of the nodes, or a misfit over :data:`MAX_PSF_MISFIT` (the images are
    not a blurred, decimated view of each other: misregistered by more than the window, wrong
    ratio, unrelated). Quietly biased: PSFs wider than the window (truncated: the width is under-
    estimated, e.g. at x32 where the window is capped), and under strong MSI noise (the fitted
    kernel is then narrower, the noise being averaged by the true one).
    """
    lr, msi = _values(lr_hsi, "LR-HSI"), _values(hr_msi, "HR-MSI")
    _check_sizes(lr, msi, ratio)
    ratio = int(ratio)
    if srf is None:
        est = estimate_srf(lr, msi, ratio)
        matrix, c = est.matrix, est.intercept
    else:
        matrix = np.asarray(getattr(srf, "matrix", srf), dtype=np.float64)
        c = np.zeros(matrix.shape[0]) if intercept is None else np.asarray(intercept, dtype=np.float64)
    if matrix.shape != (msi.shape[0], lr.shape[0]):
        raise ProblemError(
            f"the SRF is {matrix.shape}; expected (msi_bands, hsi_bands) = {(msi.shape[0], lr.shape[0])}"
        )
    radius = ratio if radius is None else int(radius)
    step = max(1, math.ceil(ratio / 8))  # the kernel's node spacing (HR px)
    nodes_half = min(math.ceil((math.ceil(ratio / 2) + radius) / step), MAX_KERNEL_NODES // 2)
    half = step * nodes_half
    size = 2 * half + 1
    base = default_offset(ratio)
    if half >= min(msi.shape[1:]):
        raise ProblemError(f"a {size}x{size} PSF window needs an HR-MSI larger than {half}x{half}; got {msi.shape[1:]}")
    target = np.einsum("mb,byx->myx", matrix, lr) + c[:, None, None]
    rows = base + ratio * np.arange(lr.shape[1])
    cols = base + ratio * np.arange(lr.shape[2])
    inside_r = (rows - half >= 0) & (rows + half < msi.shape[1])
    inside_c = (cols - half >= 0) & (cols + half < msi.shape[2])
    n_inside = int(inside_r.sum() * inside_c.sum() * msi.shape[0])
    padded = np.pad(msi, ((0, 0), (half, half), (half, half)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
    if n_inside >= max(size * size // 2, 64):
        sel_r, sel_c = np.flatnonzero(inside_r), np.flatnonzero(inside_c)
    else:
        sel_r, sel_c = np.arange(rows.size), np.arange(cols.size)
    phi = windows[:, rows[sel_r]][:, :, cols[sel_c]].reshape(-1, size * size)
    t = target[:, sel_r][:, :, sel_c].reshape(-1)
    m_side = 2 * nodes_half + 1
    if phi.shape[0] < m_side * m_side / 4:
        raise ProblemError(
            f"{phi.shape[0]} equations for a {size}x{size} PSF of {m_side}x{m_side} nodes: the images are too "
            f"small at ratio {ratio} (need at least {math.ceil(m_side * m_side / 4)}; use a larger crop)"
        )
    per_band = t.reshape(msi.shape[0], -1)
    scale = float(np.linalg.norm(per_band - per_band.mean(axis=1, keepdims=True)))
    if not scale > 1e-12 * max(float(np.linalg.norm(t)), 1e-300):
        raise ProblemError("the LR-HSI seen through the SRF is flat: no spatial structure to fit a PSF to")
    n = phi.shape[0]
    basis = _tent_basis(half, step)
    phi_c = phi @ basis
    gram = phi_c.T @ phi_c / n
    if msi_noise is not None:  # errors in variables: the MSI's noise adds σ² to ΦᵀΦ's diagonal
        sig = noise_highpass(msi) if isinstance(msi_noise, str) else np.broadcast_to(msi_noise, (msi.shape[0],))
        gram -= float(np.mean(np.square(sig))) * (basis.T @ basis)
    lam = smoothness * float(np.trace(gram)) / gram.shape[0]
    gram += lam * difference_gram(m_side)
    rhs = phi_c.T @ t / n
    k = basis @ _simplex_qp(gram, rhs, nodes_half * m_side + nodes_half, int(iterations))
    misfit = float(np.linalg.norm(t - phi @ k)) / scale
    if not misfit <= MAX_PSF_MISFIT:
        raise ProblemError(
            f"no non-negative PSF makes the HR-MSI look like the LR-HSI (relative misfit {misfit:.2f} > "
            f"{MAX_PSF_MISFIT}): check the ratio, the registration and the SRF"
        )
    kernel = k.reshape(size, size)
    m = kernel_moments(kernel)
    position = (base + m["cy"], base + m["cx"])
    offset = int(np.clip(round(float(np.mean(position))), 0, ratio - 1))
    return PSFEstimate(kernel, base, position, offset, m["fwhm"], m["fwhm_major"], m["fwhm_minor"], m["angle"],
                       misfit, n, extras={"smoothness": smoothness, "lambda": lam, "srf_matrix": matrix})


# ------------------------------------------------------------------------------ all at once


@dataclass
class DegradationEstimate:
    """What :func:`estimate_degradation` found: ``srf`` (matrix, ``srf_estimated`` says whether it
    came from the data), ``psf`` (:class:`PSFEstimate`), ``noise_lr`` ``(hsi_bands,)`` and
    ``noise_msi`` ``(msi_bands,)`` sigmas."""

    srf: np.ndarray
    srf_estimated: bool
    psf: PSFEstimate
    noise_lr: np.ndarray
    noise_msi: np.ndarray

    def problem_with(self, problem: FusionProblem) -> FusionProblem:
        """``problem`` with the estimated PSF and integer offset attached (a method then uses them as
        known; the kernel's off-centre mass carries the sub-pixel rest of the position)."""
        return FusionProblem(problem.lr_hsi, problem.hr_msi, srf=problem.srf, ratio=problem.ratio,
                             psf=self.psf.kernel, offset=self.psf.base_offset, name=problem.name,
                             attrs=dict(problem.attrs))


def estimate_degradation(problem: FusionProblem, *, rounds: int = 3, **psf_options: Any) -> DegradationEstimate:
    """SRF (the problem's when known), PSF and offset, and noise of both images of ``problem``.

    With the SRF unknown, ``rounds`` alternate the two: SRF by the relative blur, PSF; then SRF from
    the exact relation with that PSF, PSF again (each later round likewise)."""
    lr, msi = _values(problem.lr_hsi, "LR-HSI"), _values(problem.hr_msi, "HR-MSI")
    if problem.srf is not None:
        matrix, intercept, estimated = np.asarray(problem.srf.matrix, dtype=np.float64), None, False
    else:
        est = estimate_srf(lr, msi, problem.ratio)
        matrix, intercept, estimated = est.matrix, est.intercept, True
    psf = estimate_psf(lr, msi, problem.ratio, matrix, intercept=intercept, **psf_options)
    for _ in range(int(rounds) - 1 if estimated else 0):
        est = estimate_srf(lr, msi, problem.ratio, psf=psf)
        matrix, intercept = est.matrix, est.intercept
        psf = estimate_psf(lr, msi, problem.ratio, matrix, intercept=intercept, **psf_options)
    return DegradationEstimate(matrix, estimated, psf, estimate_noise(lr), estimate_noise(msi))
