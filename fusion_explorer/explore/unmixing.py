"""Unmixing seen from outside: spectral angles, Hungarian matching of found endmembers to reference ones,
scaling reference endmembers to a cube, why multiplicative updates stay non-negative
(:func:`update_comparison`), and how well CNMF's two unmixings agree (:func:`coupling_report`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr


def spectral_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles in degrees ``(p, q)`` between the columns of ``a`` ``(bands, p)`` and ``b`` ``(bands, q)``.

    Scale-free: ``arccos(aᵢ·bⱼ / (|aᵢ| |bⱼ|))``, cosine clamped to [-1, 1], norms floored at 1e-12.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"need two (bands, n) matrices with the same bands; got {a.shape} and {b.shape}")
    an = a / np.maximum(np.linalg.norm(a, axis=0), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=0), 1e-12)
    return np.degrees(np.arccos(np.clip(an.T @ bn, -1.0, 1.0)))


@dataclass
class EndmemberMatch:
    """Found endmembers matched one-to-one to reference ones.

    ``order[j]`` is the found endmember matched to reference ``j``; ``angles[j]`` its spectral angle (°);
    ``unmatched`` the found endmembers left over when more were found than the reference has.
    """

    order: np.ndarray
    angles: np.ndarray
    unmatched: np.ndarray
    angle_matrix: np.ndarray

    @property
    def mean_angle(self) -> float:
        return float(np.mean(self.angles))

    @property
    def max_angle(self) -> float:
        return float(np.max(self.angles))

    def endmembers(self, found: np.ndarray) -> np.ndarray:
        """The matched found endmembers ``(bands, q)``, in the reference's order."""
        return np.asarray(found)[:, self.order]

    def abundances(self, found: np.ndarray) -> np.ndarray:
        """The matched found abundances ``(q, y, x)``, in the reference's order."""
        return np.asarray(found)[self.order]


def match_endmembers(found: np.ndarray, reference: np.ndarray) -> EndmemberMatch:
    """Pair found endmembers ``(bands, p)`` with reference ones ``(bands, q)``, ``p >= q``, one-to-one so that
    the sum of spectral angles is least (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``).

    Unmixing finds endmembers in no particular order and at no particular scale; the angle ignores scale
    and the assignment fixes the order.
    """
    from scipy.optimize import linear_sum_assignment

    angles = spectral_angles(found, reference)
    p, q = angles.shape
    if p < q:
        raise ValueError(f"{p} endmembers found but the reference has {q}; need at least as many to match")
    rows, cols = linear_sum_assignment(angles)
    order = np.empty(q, dtype=np.int64)
    order[cols] = rows
    unmatched = np.setdiff1d(np.arange(p), order)
    return EndmemberMatch(order, angles[order, np.arange(q)], unmatched, angles)


def update_comparison(
    y: np.ndarray, w: np.ndarray, h0: np.ndarray, steps: int = 30
) -> dict[str, np.ndarray]:
    """Abundances ``H`` of ``min ||Y - W H||²`` with ``W`` fixed, by two updates from the same start.

    Gradient descent ``H ← H - η Wᵀ(WH - Y)`` with the safe step ``η = 1 / ||WᵀW||₂`` (nothing keeps ``H``
    non-negative) and the multiplicative update ``H ← H ⊙ WᵀY ⊘ WᵀWH`` (a gradient step whose step size
    ``H ⊘ WᵀWH`` is per entry; the new value is a product of non-negative numbers). Returns, per step
    (``steps + 1`` values, the start included), ``cost_gd``, ``cost_mu`` (``||Y - WH||²/||Y||²``),
    ``min_gd``, ``min_mu`` (the smallest abundance) and ``negative_gd`` (the fraction of negative entries).
    """
    import torch

    from ..methods.unmixing import abundance_terms, multiplicative

    yt = torch.as_tensor(np.asarray(y, np.float64))[None]
    wt = torch.as_tensor(np.asarray(w, np.float64))[None]
    h_gd = torch.as_tensor(np.asarray(h0, np.float64))[None]
    h_mu = h_gd.clone()
    eta = 1.0 / float(torch.linalg.matrix_norm(wt[0].T @ wt[0], ord=2))
    yy = float(yt.square().sum())
    out: dict[str, list[float]] = {k: [] for k in ("cost_gd", "cost_mu", "min_gd", "min_mu", "negative_gd")}

    def record() -> None:
        out["cost_gd"].append(float((yt - wt @ h_gd).square().sum()) / yy)
        out["cost_mu"].append(float((yt - wt @ h_mu).square().sum()) / yy)
        out["min_gd"].append(float(h_gd.min()))
        out["min_mu"].append(float(h_mu.min()))
        out["negative_gd"].append(float((h_gd < 0).double().mean()))

    record()
    for _ in range(steps):
        h_gd = h_gd - eta * (wt.transpose(-1, -2) @ (wt @ h_gd - yt))
        num, den = abundance_terms(yt, wt, h_mu)
        h_mu = multiplicative(h_mu, num, den)
        record()
    return {k: np.asarray(v) for k, v in out.items()}


def coupling_report(problem: Any, result: Any) -> dict[str, Any]:
    """How well CNMF's two unmixings agree through the sensor models (relative Frobenius differences).

    ``srf``: the MSI seen through the fused cube's SRF, ``R W H_m``, against the HR-MSI ``Y_m``;
    ``psf``: the HR abundances degraded by the PSF and decimation, ``S(H_m)``, against the LR abundances
    ``H_h`` of the HSI unmixing; ``hsi``: ``W S(H_m)`` against the LR-HSI ``Y_h``. Also returns the arrays
    ``msi_endmembers`` ``R W`` ``(msi_bands, p)``, ``degraded`` ``S(H_m)`` and ``abundances_lr`` ``H_h``.
    """
    import torch

    w = np.asarray(result.endmembers, np.float64)
    h = np.asarray(result.abundances, np.float64)
    srf = problem.srf.matrix if result.srf is None else result.srf.matrix
    from ..methods.unmixing.setup import spatial_model

    spatial, _ = spatial_model(problem, result.params.get("psf_option", "estimate"))
    degraded = spatial(torch.as_tensor(h)[None]).numpy()[0]
    h_lr = np.asarray(result.extras.get("abundances_lr", degraded), np.float64)
    y_h = np.asarray(problem.lr_hsi.values, np.float64)
    y_m = np.asarray(problem.hr_msi.values, np.float64)

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))

    return {
        "srf": rel(np.einsum("mb,bp,pyx->myx", srf, w, h), y_m),
        "psf": rel(degraded, h_lr),
        "hsi": rel(np.einsum("bp,pyx->byx", w, degraded), y_h),
        "msi_endmembers": srf @ w,
        "degraded": degraded,
        "abundances_lr": h_lr,
        "srf_matrix": np.asarray(srf),
    }


def scale_endmembers(cube: xr.DataArray, endmembers: np.ndarray, abundances: np.ndarray) -> np.ndarray:
    """Reference endmembers ``(bands, p)`` rescaled, one factor each, so that ``Σ_k s_k e_k a_k`` fits the
    cube by least squares (published ground truths often store endmembers normalised to peak 1)."""
    v = np.asarray(cube.values, dtype=np.float64).reshape(cube.sizes["band"], -1)
    a = np.asarray(abundances, dtype=np.float64).reshape(abundances.shape[0], -1)
    design = np.stack([np.outer(endmembers[:, k], a[k]).ravel() for k in range(endmembers.shape[1])], axis=1)
    s, *_ = np.linalg.lstsq(design, v.ravel(), rcond=None)
    return np.asarray(endmembers, dtype=np.float64) * s[None, :]
