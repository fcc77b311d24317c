"""Realising a case on a scene: noise (:func:`add_band_noise`), :func:`realise` and :func:`degrade`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from ..cube import check_ratio, from_tensor, to_tensor, validate_cube, wavelengths
from ..errors import ProblemError
from ..physics import SpatialDegradation, SpectralResponse
from ..problem import FusionProblem
from ..srf import SRF
from .cases import NOISE_KINDS, DegradationCase, get_case
from .kernels import psf_kernel, shift_kernel

#: share of the noise power that is signal-dependent in ``noise="poisson"``
POISSON_SHARE = 0.8


# ------------------------------------------------------------------------------ noise


def add_band_noise(
    clean: torch.Tensor, snr_db: float | None, kind: str = "white", generator: torch.Generator | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """``(noisy, sigma per band)``: noise of power ``mean(x_b²) / 10^(snr/10)`` on each band of
    ``clean`` ``(bands, y, x)``, not clipped. ``white``: Gaussian ``σ_b``; ``poisson``: variance
    ``a_b x + b_b`` with :data:`POISSON_SHARE` of the power signal-dependent. ``sigma`` is the RMS
    standard deviation per band (0 without noise)."""
    bands = clean.shape[-3]
    if snr_db is None:
        return clean, np.zeros(bands)
    power = clean.pow(2).mean(dim=(-2, -1), keepdim=True) / 10 ** (float(snr_db) / 10)
    z = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device="cpu").to(clean.device)
    if kind == "white":
        std = power.sqrt()
    elif kind == "poisson":
        signal = clean.clamp_min(0)
        mean = signal.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
        std = (POISSON_SHARE * power / mean * signal + (1 - POISSON_SHARE) * power).sqrt()
    else:
        raise ProblemError(f"unknown noise {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    return clean + std * z, power.sqrt().reshape(-1).cpu().numpy()


# ------------------------------------------------------------------------------ degrading


@dataclass
class Degraded:
    """A case realised on a scene: ``problem`` (what methods see: no truth, PSF or offset; the SRF
    only when ``case.srf_known``) and, for scoring, the truth and the true responses.

    ``psf``: the kernel applied with integer ``offset`` (its centre shifted by the fractional
    sampling phase); ``lr_position``: the LR samples' HR coordinate ``P_0`` (both axes);
    ``relative_position``: where LR pixel 0 samples on the *MSI's* grid, ``P_0 - msi_shift``
    (what an estimator from the two images can find); ``noise_lr``/``noise_msi``: RMS noise sigma per
    band before clipping.
    """

    problem: FusionProblem
    truth: xr.DataArray
    case: DegradationCase
    psf: np.ndarray
    offset: int
    srf: SRF
    lr_position: float
    relative_position: tuple[float, float]
    noise_lr: np.ndarray
    noise_msi: np.ndarray
    extras: dict = field(default_factory=dict)

    def relation_kernel(self, size: int, base_offset: int) -> np.ndarray:
        """The true PSF as a kernel on the MSI grid relative to sampling phase ``base_offset``
        (:func:`fusion_explorer.estimate.estimate_psf`'s frame), ignoring the misregistration's
        sub-pixel area blur."""
        c = self.case
        dy, dx = (p - base_offset for p in self.relative_position)
        return psf_kernel(c.psf, c.psf_fwhm, size=size, shift=(dy, dx), ellipticity=c.ellipticity,
                          angle=c.angle, beta=c.beta)


def realise(truth: xr.DataArray, case: str | DegradationCase) -> Degraded:
    """Degrade ``truth`` ``(band, y, x)`` by ``case``; the inputs a method sees plus the true responses."""
    case = get_case(case)
    validate_cube(truth, what="ground-truth cube", need_wavelength=True)
    big_h, big_w = truth.sizes["y"], truth.sizes["x"]
    check_ratio((big_h, big_w), case.ratio, what="ground-truth image")
    kernel, offset = case.kernel()
    half = max(kernel.shape) // 2
    if half >= min(big_h, big_w):
        raise ProblemError(
            f"case {case.name!r}: its {kernel.shape[0]}x{kernel.shape[1]} PSF needs an image larger than "
            f"{half}x{half}; got {big_h}x{big_w} (use a larger crop or a narrower PSF)"
        )
    srf = case.make_srf(wavelengths(truth))
    x = to_tensor(truth, "cpu", torch.float64)
    lr = SpatialDegradation(kernel, case.ratio, offset, case.border)(x)
    seen = x if case.msi_shift == (0.0, 0.0) else SpatialDegradation(shift_kernel(*case.msi_shift))(x)
    msi = SpectralResponse(srf.matrix)(seen)
    gen = torch.Generator().manual_seed(int(case.seed))
    lr, noise_lr = add_band_noise(lr, case.snr_lr_db, case.noise, gen)
    msi, noise_msi = add_band_noise(msi, case.snr_msi_db, case.noise, gen)

    base = {k: v for k, v in truth.attrs.items() if k in ("scene", "source", "sensor", "format", "crop")}
    base.update(degradation=case.name, ratio=case.ratio)
    lr_hsi = from_tensor(lr, truth, attrs={**base, "kind": "LR-HSI"})
    hr_msi = from_tensor(msi, attrs={**base, "kind": "HR-MSI", "srf": srf.name})
    hr_msi = hr_msi.assign_coords(band_name=("band", list(srf.band_names)))
    problem = FusionProblem(
        lr_hsi=lr_hsi,
        hr_msi=hr_msi,
        srf=srf if case.srf_known else None,
        ratio=case.ratio,
        name=f"{truth.attrs.get('scene', truth.name or 'scene')} / {case.name}",
    )
    pos = case.sampling_position
    return Degraded(problem, truth, case, kernel, offset, srf, pos,
                    (pos - case.msi_shift[0], pos - case.msi_shift[1]), noise_lr, noise_msi)


def degrade(truth: xr.DataArray, case: str | DegradationCase) -> FusionProblem:
    """The :class:`~fusion_explorer.problem.FusionProblem` a sensor pair of ``case`` makes of ``truth``
    (no truth, PSF or offset attached; the SRF only when ``case.srf_known``). :func:`realise` also
    returns the truth and the true responses."""
    return realise(truth, case).problem
