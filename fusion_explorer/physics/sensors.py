"""The sensor pair: one object for how an HSI and an MSI sensor see the scene ``X``.

    LR-HSI  Y_h = decimate_{ratio, offset}(PSF * X) + n_h        HR-MSI  Y_m = R X + n_m

:class:`SensorPair` holds the spatial part (PSF, ratio, sampling offset, border), the spectral part
(SRF ``R``: a built-in name, an :class:`~fusion_explorer.srf.SRF`, or ``None`` when unknown) and the
noise model. The named protocols in ``PROTOCOLS`` are presets of it; a
:class:`~fusion_explorer.problem.FusionProblem` holds one (parts a method must estimate are ``None``);
:func:`fusion_explorer.synth.random_degradation` draws one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..errors import ProblemError
from .noise import NoiseModel
from .operators import SpatialDegradation, SpectralResponse
from .psf import default_kernel_size, gaussian_kernel

#: ``snr_msi_db`` default: the MSI gets the same SNR as the HSI (``snr_db``).
SAME = "same"


def default_offset(ratio: int) -> int:
    """The sampling phase used when none is known: the middle of each ``ratio`` block, ``(ratio - 1) // 2``
    (15 at x32, 3 at x8: both named protocols)."""
    return (int(ratio) - 1) // 2


@dataclass(frozen=True)
class SensorPair:
    """An acquisition set-up of an HSI and an MSI sensor: PSF, decimation, SRF and noise.

    PSF: ``kernel`` (an explicit 2-D kernel) or a ``kernel_size`` x ``kernel_size`` Gaussian of ``sigma``
    (HR pixels); both ``None``: unknown. ``border``: how the blur extends the image. Samples
    ``[offset::ratio, offset::ratio]`` (``offset`` ``None``: unknown, :attr:`sample_offset` then uses
    :func:`default_offset`). MSI through ``srf`` (a built-in name, an :class:`~fusion_explorer.srf.SRF`,
    or ``None``: unknown). Noise: ``snr_db`` on the HSI and, unless ``snr_msi_db`` says otherwise, on the
    MSI (``None``: noiseless).
    """

    name: str
    ratio: int
    sigma: float | None = None
    kernel_size: int | None = None
    offset: int | None = None
    border: str = "reflect"
    srf: Any = "nikon-d700"
    snr_db: float | None = None
    description: str = ""
    attrs: dict = field(default_factory=dict, compare=False)
    kernel: Any = field(default=None, compare=False, repr=False)
    snr_msi_db: Any = SAME

    @classmethod
    def known(
        cls,
        ratio: int,
        *,
        psf: Any = None,
        offset: int | None = None,
        border: str = "reflect",
        srf: Any = None,
        snr_db: float | None = None,
        name: str = "",
    ) -> SensorPair:
        """The sensor pair of a problem from what is known of it (``None``: unknown, to be estimated)."""
        kernel = None
        if psf is not None:
            kernel = np.asarray(psf.detach().cpu().numpy() if isinstance(psf, torch.Tensor) else psf, dtype=np.float64)
            if kernel.ndim != 2 or kernel.size == 0 or not np.isfinite(kernel).all():
                raise ProblemError(f"the PSF must be a finite 2-D kernel; got shape {kernel.shape}")
        return cls(name, int(ratio), offset=offset, border=border, srf=srf, snr_db=snr_db, kernel=kernel)

    # -- spatial ---------------------------------------------------------------------------------
    @property
    def psf_known(self) -> bool:
        return self.kernel is not None or self.sigma is not None

    def psf(self) -> torch.Tensor | None:
        """The PSF as a float64 tensor ``(k, k)`` (sums to 1 for the Gaussian presets), or ``None``."""
        if self.kernel is not None:
            return torch.as_tensor(np.asarray(self.kernel, dtype=np.float64))
        if self.sigma is None:
            return None
        size = self.kernel_size or default_kernel_size(self.sigma, self.ratio)
        return gaussian_kernel(size, self.sigma)

    def psf_array(self) -> np.ndarray | None:
        """The PSF as a float64 array, or ``None`` when unknown."""
        if self.kernel is not None:
            return np.asarray(self.kernel, dtype=np.float64)
        k = self.psf()
        return None if k is None else k.numpy()

    @property
    def sample_offset(self) -> int:
        """The sampling phase: ``offset``, or :func:`default_offset` when it is unknown."""
        return default_offset(self.ratio) if self.offset is None else int(self.offset)

    def spatial(self) -> SpatialDegradation | None:
        """The spatial degradation ``S`` (PSF + decimation), or ``None`` when the PSF is unknown."""
        k = self.psf() if self.kernel is None else self.kernel
        if k is None:
            return None
        return SpatialDegradation(k, self.ratio, self.sample_offset, self.border)

    # -- spectral --------------------------------------------------------------------------------
    def srf_for(self, wavelength: Any = None) -> Any:
        """The SRF object (a built-in name resolved on ``wavelength``), or ``None`` when unknown."""
        if self.srf is None or not isinstance(self.srf, str):
            return self.srf
        from ..srf import get_srf

        return get_srf(self.srf, wavelength)

    def spectral(self, wavelength: Any = None) -> SpectralResponse | None:
        """The spectral response ``R`` (the SRF matrix), or ``None`` when the SRF is unknown."""
        srf = self.srf_for(wavelength)
        return None if srf is None else SpectralResponse(srf.matrix)

    # -- noise -----------------------------------------------------------------------------------
    @property
    def noise(self) -> NoiseModel:
        return NoiseModel(self.snr_db, self.snr_db if self.snr_msi_db == SAME else self.snr_msi_db)

    # -- copies and provenance -------------------------------------------------------------------
    def with_(self, **changes: Any) -> SensorPair:
        """A copy with some fields changed (its name says so)."""
        if not changes:
            return self
        desc = ", ".join(f"{k}={v}" for k, v in changes.items())
        return replace(self, name=f"{self.name}({desc})", **changes)

    def with_parts(self, **changes: Any) -> SensorPair:
        """A copy with some fields changed, same name (e.g. the SRF name resolved to its object)."""
        return replace(self, **changes) if changes else self

    def as_attrs(self) -> dict[str, Any]:
        out = {
            "protocol": self.name,
            "ratio": self.ratio,
            "psf_sigma": "unknown" if self.sigma is None else self.sigma,
            "psf_size": "unknown" if self.kernel_size is None else self.kernel_size,
            "sample_offset": "unknown" if self.offset is None else self.offset,
            "border": self.border,
            "snr_db": "none" if self.snr_db is None else self.snr_db,
        }
        if self.kernel is not None:
            out["psf_size"] = "x".join(str(s) for s in np.shape(self.kernel))
            out["psf_sigma"] = "custom"
        return out


PROTOCOLS: dict[str, SensorPair] = {
    p.name: p
    for p in (
        SensorPair(
            "mossfuse-cave-x32",
            ratio=32,
            sigma=2.0,
            kernel_size=31,
            offset=15,
            description="MossFuse CAVE test set-up: 31x31 Gaussian sigma 2, reflect-101, [15::32], Nikon D700",
        ),
        SensorPair(
            "gaussian-x8",
            ratio=8,
            sigma=2.0,
            kernel_size=15,
            offset=3,
            description="15x15 Gaussian sigma 2, reflect-101, [3::8], Nikon D700",
        ),
    )
}


def get_protocol(name: str | SensorPair) -> SensorPair:
    """A protocol by name (see ``PROTOCOLS``), or ``custom`` ones built with :func:`make_protocol`."""
    if isinstance(name, SensorPair):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ProblemError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


def make_protocol(
    ratio: int,
    sigma: float = 2.0,
    *,
    kernel_size: int | None = None,
    offset: int | None = None,
    srf: str = "nikon-d700",
    snr_db: float | None = None,
    border: str = "reflect",
) -> SensorPair:
    """A custom protocol; defaults: kernel ``default_kernel_size``, offset ``(ratio - 1) // 2``.

    The default offset puts the sample in the middle of each ``ratio`` block, as both named
    protocols do (15 for x32, 3 for x8).
    """
    ratio = int(ratio)
    if ratio < 1:
        raise ProblemError(f"ratio must be >= 1; got {ratio}")
    ks = kernel_size or default_kernel_size(sigma, ratio)
    off = default_offset(ratio) if offset is None else int(offset)
    snr = "" if snr_db is None else f"-snr{snr_db:g}"
    return SensorPair(
        f"gaussian-x{ratio}-s{sigma:g}-k{ks}-o{off}{snr}",
        ratio=ratio,
        sigma=float(sigma),
        kernel_size=ks,
        offset=off,
        border=border,
        srf=srf,
        snr_db=snr_db,
        description=f"{ks}x{ks} Gaussian sigma {sigma:g}, {border}, [{off}::{ratio}], SRF {srf}",
    )
