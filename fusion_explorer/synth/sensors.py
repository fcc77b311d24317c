"""Random sensor pairs for training data: the wavelength grids, the SRF pool and :func:`random_degradation`,
which draws a :class:`Degradation` (a :class:`~fusion_explorer.physics.SensorPair` with the training
generator's names: a Gaussian PSF of random sigma, a ratio, an SRF from the library or random Gaussian
bands, SNRs). Used by :mod:`.training`; deterministic by seed.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..physics import (
    PROTOCOLS,
    SensorPair,
    SpatialDegradation,
    default_kernel_size,
    default_offset,
    make_protocol,
)
from ..srf import ROSIS_WAVELENGTHS, SRF, gaussian_srf, get_srf
from .scene import CAVE_WAVELENGTHS

#: Named wavelength grids (nm) for ``wavelength=`` arguments.
WAVELENGTH_GRIDS: dict[str, np.ndarray] = {
    "cave": CAVE_WAVELENGTHS,  # 31 bands, 400–700 nm (CAVE, Harvard, ICVL-like)
    "rosis": ROSIS_WAVELENGTHS,  # 103 bands, 430–858 nm (Pavia University)
    "aviris": np.linspace(400.0, 2500.0, 224),  # 224 bands, 400–2500 nm (AVIRIS-like)
    "hydice": np.linspace(400.0, 2500.0, 191),  # 191 bands (Washington DC Mall-like)
}

#: Built-in SRFs the sampler picks from (each used only where it keeps ``min_msi_bands`` bands).
SRF_POOL: tuple[str, ...] = (
    "nikon-d700",
    "colour:Nikon 5100 (NPL)",
    "colour:Sigma SDMerill (NPL)",
    "cie-1931",
    "sentinel-2a",
    "sentinel-2b",
    "landsat-7",
    "landsat-8",
    "landsat-9",
    "rapideye",
    "spot-5",
    "terra-modis",
    "terra-aster",
)


def _streams(seed, n: int) -> list[np.random.SeedSequence]:
    if isinstance(seed, np.random.SeedSequence):
        ss = seed
    elif isinstance(seed, (tuple, list)):
        ss = np.random.SeedSequence([int(s) for s in seed])
    else:
        ss = np.random.SeedSequence(int(seed))
    return ss.spawn(n)


def _torch_seed(ss: np.random.SeedSequence) -> int:
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def resolve_wavelength(wavelength, rng: np.random.Generator | None = None) -> np.ndarray:
    """Band centres (nm) from an array, a name of :data:`WAVELENGTH_GRIDS`, ``None`` (CAVE) or
    ``"random"`` (a named grid, or a random range and band count; needs ``rng``)."""
    if wavelength is None:
        return CAVE_WAVELENGTHS
    if isinstance(wavelength, str):
        key = wavelength.lower()
        if key == "random":
            if rng is None:
                raise ValueError("wavelength='random' needs a random generator")
            if rng.random() < 0.5:
                return WAVELENGTH_GRIDS[str(rng.choice(sorted(WAVELENGTH_GRIDS)))]
            lo = rng.uniform(380.0, 450.0)
            hi = rng.choice([rng.uniform(680.0, 1000.0), rng.uniform(1000.0, 2500.0)])
            n = int(rng.integers(31, 225))
            return np.linspace(lo, hi, n)
        if key not in WAVELENGTH_GRIDS:
            raise ValueError(f"unknown wavelength grid {wavelength!r}; known: {', '.join(WAVELENGTH_GRIDS)}, random")
        return WAVELENGTH_GRIDS[key]
    wl = np.asarray(wavelength, dtype=np.float64).ravel()
    if wl.size < 2 or not np.all(np.diff(wl) > 0):
        raise ValueError(f"wavelength must hold at least 2 strictly increasing band centres (nm); got {wl[:5]}")
    return wl


@functools.lru_cache(maxsize=64)
def _library_srf(name: str, wl_key: tuple[float, ...]) -> SRF | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return get_srf(name, np.asarray(wl_key))
        except Exception:  # no band of this sensor inside the cube's range, or a missing optional package
            return None


def usable_srfs(wavelength, pool: Sequence[str] = SRF_POOL, min_msi_bands: int = 3) -> list[str]:
    """The names in ``pool`` that keep at least ``min_msi_bands`` bands on ``wavelength`` (nm)."""
    key = tuple(np.asarray(wavelength, dtype=np.float64).tolist())
    return [n for n in pool if (s := _library_srf(n, key)) is not None and s.msi_bands >= min_msi_bands]


def random_gaussian_srf(
    wavelength, rng: np.random.Generator, n_bands: int | tuple[int, int] = (3, 8), fwhm_range=(0.5, 1.5)
) -> SRF:
    """Random Gaussian bands spread over ``wavelength``'s range: ``m`` centres at jittered even
    spacing ``d``, FWHM ``U(fwhm_range) * d`` each (overlapping, like real MSI bands)."""
    wl = np.asarray(wavelength, dtype=np.float64)
    m = int(rng.integers(n_bands[0], n_bands[1] + 1)) if isinstance(n_bands, tuple) else int(n_bands)
    lo, hi = float(wl[0]), float(wl[-1])
    d = (hi - lo) / m
    centres = lo + d * (np.arange(m) + 0.5 + rng.uniform(-0.3, 0.3, m))
    fwhm = np.maximum(d * rng.uniform(*fwhm_range, m), 2.5 * float(np.median(np.diff(wl))))
    srf = gaussian_srf(centres, fwhm, wl, name=f"gaussian-{m}band", min_coverage=0.0)
    return srf


@dataclass(frozen=True)
class Degradation:
    """A random draw of a sensor pair: Gaussian PSF ``psf_sigma`` (HR px) on ``kernel_size``², samples
    ``[offset::ratio]``, MSI through ``srf`` ``(m, B)``, white noise at ``snr_hsi_db`` / ``snr_msi_db``
    (``None``: noiseless) per band as in :func:`~fusion_explorer.physics.add_noise`.

    The physics is the one :class:`~fusion_explorer.physics.SensorPair` :meth:`sensor_pair` returns (the
    object a :class:`~fusion_explorer.problem.FusionProblem` holds); this class keeps the names of the
    training generator (``psf_sigma``, ``snr_hsi_db``) and delegates to it."""

    ratio: int
    psf_sigma: float
    kernel_size: int
    offset: int
    srf: SRF
    snr_hsi_db: float | None = None
    snr_msi_db: float | None = None
    border: str = "reflect"

    def sensor_pair(self) -> SensorPair:
        """This draw as a :class:`~fusion_explorer.physics.SensorPair`: PSF, sampling, the SRF object and
        both SNRs (named like :meth:`protocol`)."""
        return self.protocol().with_parts(srf=self.srf, snr_msi_db=self.snr_msi_db)

    def protocol(self) -> SensorPair:
        """The equivalent named :class:`~fusion_explorer.physics.SensorPair` (SRF by name; its noise is the HSI's)."""
        return make_protocol(
            self.ratio,
            self.psf_sigma,
            kernel_size=self.kernel_size,
            offset=self.offset,
            srf=self.srf.name,
            snr_db=self.snr_hsi_db,
            border=self.border,
        )

    def psf(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(kernel_size, kernel_size)``, sums to 1."""
        return self.protocol().psf().to(dtype)

    def spatial(self) -> SpatialDegradation:
        return self.sensor_pair().spatial()

    def apply(self, truth: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lr_hsi, hr_msi)`` of ``truth`` ``(..., B, H, W)``; HSI noise is drawn before MSI noise."""
        pair = self.sensor_pair()
        lr = pair.noise.hsi(pair.spatial()(truth), generator)
        msi = pair.noise.msi(pair.spectral()(truth), generator)
        return lr, msi

    def as_attrs(self) -> dict[str, Any]:
        return {
            **self.protocol().as_attrs(),
            "srf": self.srf.name,
            "snr_hsi_db": "none" if self.snr_hsi_db is None else self.snr_hsi_db,
            "snr_msi_db": "none" if self.snr_msi_db is None else self.snr_msi_db,
        }


def random_degradation(
    wavelength,
    seed=0,
    *,
    size: int | tuple[int, int] = 128,
    ratios: Sequence[int] = (4, 8, 16, 32),
    min_lr_size: int = 4,
    sigma_range: tuple[float, float] | None = None,
    srf_pool: Sequence[str] = SRF_POOL,
    gaussian_srf_probability: float = 0.35,
    min_msi_bands: int = 3,
    snr_hsi_db: tuple[float, float] | float | None = (25.0, 45.0),
    snr_msi_db: tuple[float, float] | float | None = (30.0, 50.0),
    noiseless_probability: float = 0.25,
    offset: str | int = "centre",
    named_protocol_probability: float = 0.2,
) -> Degradation:
    """A random sensor pair for a ``size`` image on ``wavelength`` (nm).

    * ``ratio`` uniform over ``ratios`` that divide ``size`` and leave ``>= min_lr_size`` LR pixels;
    * ``psf_sigma`` log-uniform on ``sigma_range`` (default ``(0.5, max(1, 0.5 ratio))`` HR px;
      this covers both protocols' sigma 2 at x8 and x32), kernel ``default_kernel_size``;
    * ``offset``: ``"centre"`` (``(ratio-1)//2``, as the named protocols), ``"random"`` or an int;
    * with probability ``named_protocol_probability``, ratio, PSF and offset are instead those of a
      named protocol (``gaussian-x8``, ``mossfuse-cave-x32``) whose ratio fits, the test set-ups;
    * SRF: with probability ``gaussian_srf_probability`` (or when no library SRF fits) random
      Gaussian bands, else one of ``srf_pool`` that keeps ``>= min_msi_bands`` bands;
    * noise: with probability ``noiseless_probability`` none, else SNRs uniform on the ranges
      (a float fixes it, ``None`` turns that image's noise off).
    """
    rng = np.random.default_rng(_streams(seed, 1)[0])
    wl = resolve_wavelength(wavelength, rng)
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    ok = [int(r) for r in ratios if h % r == 0 and w % r == 0 and min(h, w) // r >= min_lr_size]
    if not ok:
        raise ValueError(f"no ratio in {list(ratios)} divides {h}x{w} and leaves {min_lr_size} LR pixels")
    ratio = int(rng.choice(ok))
    lo, hi = sigma_range if sigma_range is not None else (0.5, max(1.0, 0.5 * ratio))
    sigma = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    ks = min(default_kernel_size(sigma, ratio), 2 * min(h, w) - 1)  # reflect padding: radius < image size
    if offset == "centre":
        off = default_offset(ratio)
    elif offset == "random":
        off = int(rng.integers(0, ratio))
    else:
        off = int(offset)
    named = [p for p in PROTOCOLS.values() if p.ratio in ok and p.kernel_size // 2 < min(h, w)]
    if named and rng.random() < named_protocol_probability:
        proto = named[int(rng.integers(len(named)))]
        ratio, sigma, ks, off = proto.ratio, proto.sigma, proto.kernel_size, proto.offset
    srf = None
    if rng.random() >= gaussian_srf_probability:
        # library SRFs in random order until one keeps enough bands (only those tried are computed)
        key = tuple(wl.tolist())
        for name in rng.permutation(np.asarray(srf_pool, dtype=object)):
            found = _library_srf(str(name), key)
            if found is not None and found.msi_bands >= min_msi_bands:
                srf = found
                break
    if srf is None:
        srf = random_gaussian_srf(wl, rng, (max(3, min_msi_bands), max(8, min_msi_bands)))

    def snr(spec) -> float | None:
        if spec is None:
            return None
        return float(spec) if np.isscalar(spec) else float(rng.uniform(*spec))

    noiseless = rng.random() < noiseless_probability
    s_h, s_m = snr(snr_hsi_db), snr(snr_msi_db)
    return Degradation(
        ratio=ratio,
        psf_sigma=sigma,
        kernel_size=ks,
        offset=off,
        srf=srf,
        snr_hsi_db=None if noiseless else s_h,
        snr_msi_db=None if noiseless else s_m,
    )
