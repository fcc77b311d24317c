"""GLP-HS: hypersharpening with an MTF-matched Generalized Laplacian Pyramid (method ``glp_hs``).

Selva, Aiazzi, Butera, Chiarantini & Baronti, "Hyper-sharpening: a first approach on SIM-GA data",
IEEE JSTARS 8(6), 2015. Every HSI band ``b`` gets its own "pan", the least-squares combination of
the MSI bands that best reproduces it at the LR scale, and the pan's detail from a one-level
Generalized Laplacian Pyramid (MTF-matched low-pass, decimation, interpolation) is injected::

    α_b = argmin ||H_b - α_0 - Σ_k α_k S(M_k)||²             (at the LR scale)
    P_b = α_0 + Σ_k α_k M_k,   P_b,L = α_0 + Σ_k α_k U(S(M_k))
    Z_b = Ĥ_b + g_b (P_b - P_b,L),   g_b = cov(Ĥ_b, P_b,L) / var(P_b,L)

``S`` low-passes and decimates (the problem's PSF or the MTF-matched Gaussian), ``U`` interpolates
to the HR grid (cubic spline at the sampling phase, :func:`.gsa.upsample`), ``Ĥ = U(H)``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ProblemError
from ..problem import FusionProblem, FusionResult
from .base import ProgressCallback, register
from .gsa import (
    NYQUIST_GAIN,
    check_signal,
    gain,
    lowpass_operator,
    msi_at_lr,
    regress,
    sampling_offset,
    to_result,
    upsample,
)

INJECTIONS = ("regression", "unit", "hpm")


@register("glp_hs", "GLP hypersharpening (Selva et al. 2015): per-band regressed pan, MTF-matched pyramid")
def glp_hs(
    problem: FusionProblem,
    *,
    device: torch.device | None = None,
    progress: ProgressCallback | None = None,
    seed: int = 0,
    psf: str = "known",
    nyquist_gain: float = NYQUIST_GAIN,
    injection: str = "regression",
) -> FusionResult:
    """Fuse by GLP hypersharpening (formulas in the module docstring).

    Options:

    - ``psf``: the pyramid's low-pass. ``"known"`` (default) uses the problem's PSF and sampling
      offset when given, else a Gaussian matched to the sensor MTF; ``"mtf"`` always the Gaussian,
      whose gain at the LR Nyquist frequency is ``nyquist_gain`` (default 0.3, as in the papers).
    - ``injection``: the gain ``g_b``. ``"regression"`` (default; the projective/regression model):
      ``cov(Ĥ_b, P_b,L) / var(P_b,L)`` on the HR grid; ``"unit"``: ``g_b = 1`` (additive GLP);
      ``"hpm"``: the multiplicative high-pass modulation ``Z_b = Ĥ_b P_b / P_b,L`` (where
      ``P_b,L`` is at most 1e-6 of its maximum, the ratio is taken as 1).

    The per-band regression carries an intercept and a tiny ridge (finite on collinear MSI bands and
    on a single MSI band). Deterministic; numpy on the CPU whatever ``device`` is. Output clipped at 0.
    """
    if injection not in INJECTIONS:
        raise ProblemError(f"injection must be one of {INJECTIONS}; got {injection!r}")
    lr, msi = check_signal(problem, "GLP-HS")
    spatial, note = lowpass_operator(problem, psf, nyquist_gain)
    offset, ratio, hr = sampling_offset(problem), problem.ratio, problem.hr_size
    msi_lr = msi_at_lr(problem, spatial)  # S(M) (l, h, w)
    msi_low = upsample(msi_lr, hr, ratio, offset)  # U(S(M)) (l, H, W)
    up = upsample(lr, hr, ratio, offset)  # Ĥ (L, H, W)
    # α for every band at once: (L, l + 1), intercept first
    alpha = regress(msi_lr.reshape(msi_lr.shape[0], -1), lr.reshape(lr.shape[0], -1))
    alpha = np.atleast_2d(alpha)
    pan = alpha[:, :1, None] + np.tensordot(alpha[:, 1:], msi, axes=1)  # (L, H, W)
    pan_low = alpha[:, :1, None] + np.tensordot(alpha[:, 1:], msi_low, axes=1)
    gains = np.ones(lr.shape[0])
    if injection == "regression":
        gains = np.array([gain(up[b], pan_low[b]) for b in range(lr.shape[0])])
        fused = up + gains[:, None, None] * (pan - pan_low)
    elif injection == "unit":
        fused = up + (pan - pan_low)
    else:
        floor = 1e-6 * np.abs(pan_low).max(axis=(1, 2), keepdims=True)
        safe = np.abs(pan_low) > floor
        fused = up * np.where(safe, pan / np.where(safe, pan_low, 1.0), 1.0)
    if progress is not None:
        progress(1, 1, {})
    # how well the regressed pans reproduce the HSI at the LR scale (R² per band)
    fit = alpha[:, :1] + alpha[:, 1:] @ msi_lr.reshape(msi_lr.shape[0], -1)
    flat = lr.reshape(lr.shape[0], -1)
    ss_res = ((flat - fit) ** 2).sum(1)
    ss_tot = ((flat - flat.mean(1, keepdims=True)) ** 2).sum(1)
    r2 = 1 - ss_res / np.maximum(ss_tot, 1e-300)
    params = {"psf": psf, "nyquist_gain": nyquist_gain, "injection": injection}
    extras = {"lowpass": note, "regression_coefficients": alpha, "injection_gains": gains, "pan_r2": r2}
    return to_result(fused, problem, "glp_hs", params, extras=extras)
