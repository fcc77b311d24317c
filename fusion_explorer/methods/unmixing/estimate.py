"""Initialisers of an unmixing, on the small LR-HSI (plain numpy/scipy): the number of endmembers
(:func:`virtual_dimensionality`), the endmembers themselves (:func:`vca`), and, when the problem
does not know them, the SRF (:func:`estimate_srf`) and a Gaussian PSF (:func:`estimate_gaussian_psf`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import erfinv

from ...errors import ProblemError


#: pixels per float64 block when the initialisers stream over the LR-HSI: a large scene's LR grid
#: (1024² pixels x 128 bands at 8192² and ratio 8) is held once, in its own dtype, never as a whole
#: float64 copy or a centred copy (tiled fusion under a 3 GB limit). Below this many pixels the
#: block is the whole array and the numbers are those of the unblocked formulas.
BLOCK_PIXELS = 1 << 16


def _blocks(y: np.ndarray):
    """``(start, stop, block as float64)`` over ``y`` ``(bands, pixels)``'s columns."""
    n = y.shape[1]
    for start in range(0, n, BLOCK_PIXELS):
        stop = min(start + BLOCK_PIXELS, n)
        yield start, stop, np.asarray(y[:, start:stop], dtype=np.float64)


def _band_mean(y: np.ndarray) -> np.ndarray:
    """Mean over pixels ``(bands, 1)`` in float64."""
    total = sum(b.sum(axis=1, keepdims=True) for _, _, b in _blocks(y))
    return total / y.shape[1]


def _gram(y: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """``Σ (y - mean)(y - mean)ᵀ`` over pixels (``mean`` None: of ``y`` itself), block by block."""
    gram = np.zeros((y.shape[0], y.shape[0]))
    for _, _, b in _blocks(y):
        if mean is not None:
            b = b - mean
        gram += b @ b.T
    return gram


def _project(u: np.ndarray, y: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """``uᵀ (y - mean)`` ``(k, pixels)`` in float64, block by block."""
    out = np.empty((u.shape[1], y.shape[1]))
    for start, stop, b in _blocks(y):
        out[:, start:stop] = u.T @ (b - mean if mean is not None else b)
    return out


def virtual_dimensionality(y: np.ndarray, false_alarm: float = 5e-2) -> int:
    """Number of distinct signal sources in ``y`` ``(bands, pixels)`` by the Harsanyi–Farrand–Chang
    test (Chang & Du 2004): count eigenvalue pairs where the correlation matrix's exceeds the
    covariance matrix's by more than the Neyman–Pearson threshold at ``false_alarm``. Float64,
    streamed over pixel blocks (``y`` may be float32 and large)."""
    n = y.shape[1]
    corr = _gram(y) / n
    cov = _gram(y, _band_mean(y)) / n
    lam_r = np.sort(np.linalg.eigvalsh(corr))[::-1]
    lam_k = np.sort(np.linalg.eigvalsh(cov))[::-1]
    sigma = np.sqrt(2 * (lam_r**2 + lam_k**2) / n)
    tau = np.sqrt(2) * sigma * erfinv(1 - 2 * false_alarm)
    return int(np.sum(lam_r - lam_k > tau))


def vca(y: np.ndarray, p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vertex component analysis (Nascimento & Bioucas-Dias, IEEE TGRS 2005).

    ``y`` ``(bands, pixels)``; returns ``(endmembers (bands, p), pixel indices (p,))``. The data
    are projected on a ``p``-dimensional subspace (projective projection when the estimated SNR is
    high, PCA plus a constant otherwise); ``p`` times, the pixel with the largest projection on a
    random direction orthogonal to the vertices found so far becomes a vertex. Unlike the paper's
    code we return the *measured* spectra of those pixels, not their noise-reduced projections,
    so that endmembers are non-negative as multiplicative updates need.
    """
    bands, n = y.shape
    if not 1 <= p <= min(bands, n):
        raise ProblemError(f"VCA needs 1 <= p <= min(bands, pixels) = {min(bands, n)}; got p = {p}")
    rng = np.random.default_rng(seed)
    # float64, streamed over pixel blocks: only p x pixels arrays are made (y may be float32 and large)
    mean = _band_mean(y)
    gram = _gram(y)
    u_c = np.linalg.svd(_gram(y, mean) / n)[0][:, :p]
    proj = _project(u_c, y, mean)
    power_y = np.trace(gram) / n
    power_x = np.sum(proj**2) / n + float(np.sum(mean**2))
    signal, noise = power_x - p / bands * power_y, power_y - power_x
    # noise-free data (a simulation with at most p endmembers) leave no power outside the subspace: the
    # difference is then rounding, of either sign; that is an infinite SNR, not an undefined one
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.inf if noise <= 1e-12 * power_y and signal > 0 else 10 * np.log10(signal / noise)
    if snr > 15 + 10 * np.log10(p):  # False for nan (no signal power above the noise)
        u = np.linalg.svd(gram / n)[0][:, :p]
        x = _project(u, y)
        scale = np.mean(x, axis=1, keepdims=True).T @ x
        scale[np.abs(scale) < 1e-12] = 1e-12
        z = x / scale
    else:
        x = proj[: p - 1]
        c = np.sqrt(np.max(np.sum(x**2, axis=0))) if p > 1 else 1.0
        z = np.vstack([x, np.full((1, n), c)])
    vertices = np.zeros((p, p))
    vertices[-1, 0] = 1.0
    idx = np.zeros(p, dtype=np.int64)
    for i in range(p):
        f = rng.standard_normal(p)
        f = f - vertices @ (np.linalg.pinv(vertices) @ f)
        f /= max(np.linalg.norm(f), 1e-300)
        idx[i] = int(np.argmax(np.abs(f @ z)))
        vertices[:, i] = z[:, idx[i]]
    return np.array(y[:, idx], dtype=np.float64, order="C"), idx


def estimate_srf(lr_hsi: np.ndarray, lr_msi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative SRF by non-negative least squares, as in Yokoya's CNMF.

    ``lr_hsi`` ``(L, n)`` and ``lr_msi`` ``(l, n)`` (the MSI degraded to the HSI's grid) →
    ``(R (l, L), offset (l,))`` with ``lr_msi[b] ≈ R[b] @ lr_hsi + offset[b]``, ``R, offset >= 0``.
    """
    from scipy.optimize import nnls

    a = np.vstack([np.asarray(lr_hsi, np.float64), np.ones((1, lr_hsi.shape[1]))]).T
    rows = [nnls(a, np.asarray(band, np.float64), maxiter=50 * a.shape[1])[0] for band in lr_msi]
    r = np.asarray(rows)
    return r[:, :-1], r[:, -1]


def estimate_gaussian_psf(
    lr_hsi: np.ndarray, hr_msi: np.ndarray, ratio: int, sigmas: np.ndarray | None = None
) -> tuple[float, int, float]:
    """Blind Gaussian PSF: the ``(sigma, offset)`` whose degradation of the HR-MSI best matches
    the LR-HSI seen through an NNLS-fitted SRF, i.e. ``min ||S(Y_m) - R Y_h - c||`` over a grid.

    Both images share the spatial degradation up to the SRF (``S(R X) = R S(X)``), so the right
    PSF makes the relation exactly linear. ``lr_hsi`` ``(L, h, w)``, ``hr_msi`` ``(l, H, W)``;
    returns ``(sigma, offset, relative residual)``. Searches offsets with a mid sigma first, then
    sigma on a log grid at the best offset.
    """
    from ...physics import SensorPair

    bands, h, w = lr_hsi.shape
    a = lr_hsi.reshape(bands, -1)
    msi = torch.as_tensor(np.asarray(hr_msi, dtype=np.float64))
    norm = float(np.sum(msi.numpy() ** 2)) / ratio**2

    def misfit(sigma: float, offset: int) -> float:
        op = SensorPair("candidate PSF", ratio, sigma=sigma, offset=offset).spatial()
        try:
            lr_msi = op(msi).numpy().reshape(msi.shape[0], -1)
        except ProblemError:  # a kernel wider than a small image: not a candidate
            return math.inf
        r, c = estimate_srf(a, lr_msi)
        return float(np.sum((lr_msi - r @ a - c[:, None]) ** 2))

    sigmas = np.geomspace(0.25, max(ratio, 2.0), 25) if sigmas is None else np.asarray(sigmas)
    mid = float(np.sqrt(sigmas[0] * sigmas[-1]))
    offset = min(range(ratio), key=lambda o: misfit(mid, o))
    errors = [misfit(float(s), offset) for s in sigmas]
    best = int(np.argmin(errors))
    # refine between the neighbours of the best grid point
    fine = np.geomspace(sigmas[max(best - 1, 0)], sigmas[min(best + 1, len(sigmas) - 1)], 9)
    fine_errors = [misfit(float(s), offset) for s in fine]
    k = int(np.argmin(fine_errors))
    return float(fine[k]), offset, float(np.sqrt(fine_errors[k] / max(norm, 1e-300)))
