"""A :class:`~fusion_explorer.problem.FusionProblem` as the coupled step's data and starting iterate.

:func:`prepare` checks the images, picks the spatial degradation (the problem's PSF, or a Gaussian
fitted to the data), the SRF (the problem's, or an NNLS estimate with the MSI offset removed), the
number of endmembers and the sum-to-one weight, and starts ``W`` by VCA with ``H_h = 1/p``, as in
Yokoya's CNMF; CNMF's schedule (:mod:`.schedule`) and SCALMU's start run from what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import ProblemError
from ...physics import SensorPair, SpatialDegradation
from ...problem import FusionProblem
from .estimate import estimate_gaussian_psf, estimate_srf, vca, virtual_dimensionality
from .step import CoupledData, CoupledState, flat_adjoint, flat_degradation

#: the sum-to-one weight of the released code: ``2 sqrt(mean(Y_m) / 0.7455) / l^3``
SUM_TO_ONE_SCALE = 0.7455
#: MSI band count above which the MSI-side endmembers (and, in the outer loop, ``H_h``) are updated
MIN_MSI_BANDS = 3


def default_spatial_operator(ratio: int) -> SpatialDegradation:
    """The paper's PSF when none is known: a Gaussian of FWHM = ``ratio`` HR pixels."""
    sigma = ratio / (2 * math.sqrt(2 * math.log(2)))
    # a Gaussian preset of the default size, sampled at physics.default_offset(ratio), reflect border
    return SensorPair("paper PSF", int(ratio), sigma=sigma).spatial()


def spatial_model(problem: FusionProblem, psf: str = "estimate") -> tuple[SpatialDegradation, str]:
    """The spatial degradation CNMF couples with, and how it was obtained: the problem's PSF when
    known, else a Gaussian fitted to the data (``psf="estimate"``) or the paper's (``"paper"``)."""
    spatial, note, _ = spatial_model_fit(problem, psf)
    return spatial, note


def spatial_model_fit(problem: FusionProblem, psf: str = "estimate") -> tuple[SpatialDegradation, str, float | None]:
    """:func:`spatial_model` and the Gaussian fit's relative misfit (``None`` when nothing was fitted):
    large when the PSF is not a Gaussian, the images are noisy or misregistered."""
    spatial = problem.spatial_operator()
    if spatial is not None:
        return spatial, "known", None
    if psf == "paper":
        return default_spatial_operator(problem.ratio), "Gaussian, FWHM = ratio (paper default)", None
    return gaussian_psf_fit(problem.lr_hsi.values, problem.hr_msi.values, problem.ratio)


def gaussian_psf_fit(lr_hsi: np.ndarray, hr_msi: np.ndarray, ratio: int,
                     where: str | None = None) -> tuple[SpatialDegradation, str, float]:
    """The blind Gaussian PSF (:func:`estimate_gaussian_psf`) as ``(operator, note, relative misfit)``;
    ``where``: what the images are, said in the note (e.g. a window of a larger scene)."""
    sigma, offset, misfit = estimate_gaussian_psf(lr_hsi, hr_msi, ratio)
    fitted = f"; fitted on {where}" if where else ""
    note = f"estimated Gaussian, sigma {sigma:.3f}, offset {offset} (relative misfit {misfit:.2e}{fitted})"
    # the operator the fit scored (estimate_gaussian_psf): default kernel size, reflect border
    return SensorPair("estimated PSF", ratio, sigma=sigma, offset=offset).spatial(), note, float(misfit)


def flat_images(problem: FusionProblem, device, dtype: torch.dtype):
    """The problem's images as batch-of-one flat tensors for the step:
    ``(Y_h (1, L, n), Y_m (1, l, N), (h, w), (H, W))``."""
    lr, msi = problem.tensors(device, dtype)
    return lr.flatten(1)[None], msi.flatten(1)[None], tuple(lr.shape[1:]), tuple(msi.shape[1:])


def default_n_endmembers(lr_hsi: np.ndarray) -> int:
    """``max(min(30, L), VD)`` as in the authors' code (VD at false-alarm 0.05), at most ``min(L, n)``."""
    bands, n = lr_hsi.shape
    return max(1, min(max(min(30, bands), virtual_dimensionality(lr_hsi, 5e-2)), bands, n))


def n_endmembers_for(y_h: np.ndarray, n_endmembers: int | str | None) -> int:
    """``p`` from the option: ``None`` = :func:`default_n_endmembers`, ``"vd"`` = the VD estimate,
    else a positive integer the LR-HSI ``(L, n)`` supports."""
    bands, n = y_h.shape
    if n_endmembers is None:
        return default_n_endmembers(y_h)
    if n_endmembers == "vd":
        return max(1, min(virtual_dimensionality(y_h, 5e-2), bands, n))
    if isinstance(n_endmembers, str) or int(n_endmembers) != n_endmembers or n_endmembers < 1:
        raise ProblemError(f"n_endmembers must be a positive integer, 'vd' or None; got {n_endmembers!r}")
    p = int(n_endmembers)
    if p > min(bands, n):
        raise ProblemError(
            f"n_endmembers = {p} is more than the LR-HSI can support: it has {bands} bands and {n} pixels "
            f"(at most {min(bands, n)} endmembers)"
        )
    return p


@dataclass
class Prepared:
    """The step's ``data`` and starting ``state`` (``H_m`` not set yet: the MSI stage starts it),
    with what was chosen on the way: the ``spatial`` operator and its ``psf_note``, whether the
    SRF was ``srf_estimated`` (and the MSI ``offset`` then removed), ``p``, ``vca_pixels``,
    the PSF fit's ``psf_misfit`` (``None``: the PSF was not fitted)."""

    data: CoupledData
    state: CoupledState
    spatial: SpatialDegradation
    psf_note: str
    srf_estimated: bool
    offset: np.ndarray | None
    vca_pixels: np.ndarray
    hr_size: tuple[int, int]
    lr_size: tuple[int, int]
    psf_misfit: float | None = None

    @property
    def p(self) -> int:
        return self.state.endmembers.shape[-1]


def prepare(
    problem: FusionProblem,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    n_endmembers: int | str | None = None,
    sum_to_one: float | None = None,
    estimate_srf_from_data: bool = False,
    psf: str = "estimate",
) -> Prepared:
    """The problem's coupled data and CNMF's start (VCA endmembers, ``H_h = 1/p``); see the module
    docstring. Options as :func:`~fusion_explorer.methods.cnmf.cnmf`'s."""
    if psf not in ("estimate", "paper"):
        raise ProblemError(f"psf must be 'estimate' or 'paper' (used when the problem has no PSF); got {psf!r}")
    y_h, y_m, (h, w), (big_h, big_w) = flat_images(problem, device, dtype)
    msi_bands = y_m.shape[1]
    n = h * w
    if float(y_h.amax()) <= 0 or float(y_m.amax()) <= 0:
        raise ProblemError("CNMF needs signal: the LR-HSI or the HR-MSI is all zero")
    if float((y_h - y_h.mean(dim=-1, keepdim=True)).abs().amax()) <= 1e-6 * float(y_h.amax()):
        raise ProblemError("the LR-HSI is spatially constant: there is nothing to unmix (CNMF needs >= 2 spectra)")

    spatial, psf_note, psf_misfit = spatial_model_fit(problem, psf)
    degrade = flat_degradation(spatial, (big_h, big_w))

    # the SRF: known, or estimated by NNLS (and the MSI offset removed)
    srf_estimated = problem.srf is None or estimate_srf_from_data
    offset = None
    if srf_estimated:
        r, offset = estimate_srf(y_h[0].double().cpu().numpy(), degrade(y_m)[0].double().cpu().numpy())
        y_m = (y_m - torch.as_tensor(offset, dtype=dtype, device=device).view(1, -1, 1)).clamp_min(0)
        srf = torch.as_tensor(r, dtype=dtype, device=device)[None]
    else:
        srf = torch.tensor(np.asarray(problem.srf.matrix), dtype=dtype, device=device)[None]

    y_h_np = y_h[0].double().cpu().numpy()
    p = n_endmembers_for(y_h_np, n_endmembers)
    w0, vca_pixels = vca(y_h_np, p, seed)
    w0 = np.maximum(w0, 1e-6 * max(float(w0.max()), 1e-12))
    delta = (
        float(sum_to_one)
        if sum_to_one is not None
        else 2 * math.sqrt(float(y_m.mean()) / SUM_TO_ONE_SCALE) / msi_bands**3
    )
    data = CoupledData(y_h, y_m, srf, degrade, delta, flat_adjoint(spatial, (h, w)), hr_size=(big_h, big_w))
    endmembers = torch.as_tensor(w0, dtype=dtype, device=device)[None]
    state = CoupledState(
        endmembers=endmembers,
        abundances_lr=torch.full((1, p, n), 1.0 / p, dtype=dtype, device=device),
        abundances=torch.zeros((1, p, 1), dtype=dtype, device=device),  # set by the MSI stage
        msi_endmembers=srf @ endmembers,
    )
    return Prepared(data, state, spatial, psf_note, srf_estimated, offset, vca_pixels, (big_h, big_w), (h, w),
                    psf_misfit)


__all__ = ["Prepared", "prepare", "spatial_model", "gaussian_psf_fit", "default_spatial_operator", "flat_images",
           "default_n_endmembers", "n_endmembers_for", "SUM_TO_ONE_SCALE", "MIN_MSI_BANDS"]
