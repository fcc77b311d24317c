"""Degradation cases: :class:`DegradationCase` (one seeded, JSON-serialisable acquisition), the named
:data:`PRESETS` and :func:`sample_cases`."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from ..errors import ProblemError
from ..physics import BORDERS
from ..srf import SRF, gaussian_srf, get_srf
from .kernels import FWHM_PER_SIGMA, PSF_FAMILIES, psf_kernel

NOISE_KINDS = ("white", "poisson")
ZOO_RATIOS = (4, 8, 16, 32)


@dataclass(frozen=True)
class DegradationCase:
    """One acquisition of the zoo (module docstring); seeded, JSON-serialisable (:meth:`to_json`)."""

    name: str = "custom"
    ratio: int = 8
    psf: str = "gaussian"
    psf_fwhm: float = 2.0 * FWHM_PER_SIGMA
    psf_size: int | None = None
    ellipticity: float = 1.0
    angle: float = 0.0
    beta: float = 2.5
    border: str = "reflect"
    lr_offset: float | None = None
    msi_shift: tuple[float, float] = (0.0, 0.0)
    snr_lr_db: float | None = None
    snr_msi_db: float | None = None
    noise: str = "white"
    srf: str = "nikon-d700"
    srf_known: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        shift = tuple(float(s) for s in np.ravel(self.msi_shift))
        object.__setattr__(self, "msi_shift", shift)
        if isinstance(self.ratio, bool) or int(self.ratio) != self.ratio or self.ratio < 1:
            raise ProblemError(f"ratio must be a positive integer; got {self.ratio!r}")
        object.__setattr__(self, "ratio", int(self.ratio))
        if self.psf not in PSF_FAMILIES:
            raise ProblemError(f"unknown PSF family {self.psf!r}; choose one of {', '.join(PSF_FAMILIES)}")
        if not (self.psf_fwhm > 0 and math.isfinite(self.psf_fwhm)):
            raise ProblemError(f"psf_fwhm must be a positive number of HR pixels; got {self.psf_fwhm!r}")
        if not 0 < self.ellipticity <= 1:
            raise ProblemError(f"ellipticity must be in (0, 1]; got {self.ellipticity!r}")
        if self.psf == "moffat" and not self.beta > 1:
            raise ProblemError(f"Moffat beta must be > 1; got {self.beta!r}")
        if self.border not in BORDERS:
            raise ProblemError(f"unknown border {self.border!r}; choose one of {', '.join(BORDERS)}")
        if self.lr_offset is not None and not 0 <= self.lr_offset < self.ratio:
            raise ProblemError(f"lr_offset must be in [0, ratio = {self.ratio}); got {self.lr_offset!r}")
        if len(shift) != 2 or not all(abs(s) <= 1 for s in shift):
            raise ProblemError(f"msi_shift must be (dy, dx) with |d| <= 1 HR pixel; got {self.msi_shift!r}")
        for what in ("snr_lr_db", "snr_msi_db"):
            v = getattr(self, what)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ProblemError(f"{what} must be a positive number of dB or None (no noise); got {v!r}")
        if self.noise not in NOISE_KINDS:
            raise ProblemError(f"unknown noise {self.noise!r}; choose one of {', '.join(NOISE_KINDS)}")
        if not isinstance(self.srf, str) or not self.srf:
            raise ProblemError(f"srf must be a built-in SRF name or 'gaussian:N'; got {self.srf!r}")
        if self.srf.startswith("gaussian:"):
            n = self.srf.split(":", 1)[1]
            if not n.isdigit() or not 1 <= int(n) <= 64:
                raise ProblemError(f"srf 'gaussian:N' needs N in 1..64 bands; got {self.srf!r}")

    @property
    def sampling_position(self) -> float:
        """HR coordinate of LR pixel 0's sample (both axes): ``lr_offset`` or the block centre."""
        return (self.ratio - 1) / 2 if self.lr_offset is None else float(self.lr_offset)

    def kernel(self, extra_shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, int]:
        """``(kernel, integer offset)`` for :class:`~fusion_explorer.physics.SpatialDegradation`: the
        fractional part of the sampling position is a shift of the kernel."""
        pos = self.sampling_position
        base = int(math.floor(pos))
        frac = pos - base
        shift = (frac + extra_shift[0], frac + extra_shift[1])
        k = psf_kernel(self.psf, self.psf_fwhm, size=self.psf_size, shift=shift,
                       ellipticity=self.ellipticity, angle=self.angle, beta=self.beta)
        return k, base

    def make_srf(self, wavelength: Any) -> SRF:
        """The case's SRF on the band centres ``wavelength`` (nm)."""
        if self.srf.startswith("gaussian:"):
            n = int(self.srf.split(":", 1)[1])
            wl = np.asarray(wavelength, dtype=np.float64)
            lo, hi = float(wl.min()), float(wl.max())
            step = (hi - lo) / n
            centres = lo + step * (np.arange(n) + 0.5)
            fwhm = max(1.2 * step, 2.0 * float(np.median(np.diff(wl))) if wl.size > 1 else 1.0)
            return gaussian_srf(centres, fwhm, wl, name=self.srf)
        return get_srf(self.srf, wavelength)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["msi_shift"] = list(self.msi_shift)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DegradationCase:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ProblemError(f"unknown degradation case keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> DegradationCase:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProblemError(f"a degradation case must be a JSON object: {exc}") from None
        if not isinstance(d, dict):
            raise ProblemError("a degradation case must be a JSON object")
        return cls.from_dict(d)

    def with_(self, **changes: Any) -> DegradationCase:
        return replace(self, **changes)


def _g(sigma: float) -> float:
    return sigma * FWHM_PER_SIGMA


_X8 = DegradationCase("gaussian-x8", 8, "gaussian", _g(2.0), psf_size=15, lr_offset=3)


def _x8(name: str, **changes: Any) -> DegradationCase:
    """``gaussian-x8`` with one axis changed (a new PSF gets its own default kernel size)."""
    if any(k in changes for k in ("psf", "psf_fwhm", "ellipticity")):
        changes.setdefault("psf_size", None)
    return replace(_X8, name=name, **changes)


#: Named cases. The ``x8`` ones are ``gaussian-x8`` with one axis changed (for the per-axis tables).
PRESETS: dict[str, DegradationCase] = {
    c.name: c
    for c in (
        # the two published protocols, exactly (tests check them against problem.simulate)
        DegradationCase("mossfuse-cave-x32", 32, "gaussian", _g(2.0), psf_size=31, lr_offset=15),
        _X8,
        # PSF family and width
        _x8("gaussian-s1-x8", psf_fwhm=_g(1.0)),
        _x8("gaussian-s4-x8", psf_fwhm=_g(4.0)),
        _x8("elliptical-x8", psf_fwhm=_g(3.0), ellipticity=0.7, angle=30.0),
        _x8("moffat-x8", psf="moffat", beta=2.5),
        _x8("airy-x8", psf="airy"),
        _x8("kolmogorov-x8", psf="kolmogorov"),
        _x8("area-x8", psf="box", psf_fwhm=8.0, lr_offset=None),  # block centre 3.5: half a pixel off
        # border, sampling phase, misregistration
        _x8("zeros-x8", border="zeros"),
        _x8("offset0-x8", lr_offset=0),
        _x8("half-pixel-x8", lr_offset=3.5),
        _x8("misregistered-x8", msi_shift=(0.3, -0.4)),
        # noise
        _x8("snr35-x8", snr_lr_db=35, snr_msi_db=35),
        _x8("snr25-x8", snr_lr_db=25, snr_msi_db=25),
        _x8("poisson30-x8", snr_lr_db=30, snr_msi_db=30, noise="poisson"),
        # MSI bands and SRF knowledge
        _x8("pan-x8", srf="gaussian:1"),
        _x8("bands8-x8", srf="gaussian:8"),
        _x8("bands16-x8", srf="gaussian:16"),
        _x8("landsat8-x8", srf="landsat-8"),
        _x8("blind-srf-x8", srf_known=False),
        # ratios
        DegradationCase("gaussian-x4", 4, "gaussian", _g(1.0), lr_offset=1),
        DegradationCase("area-x16", 16, "box", 16.0),
        # everything at once, as the harness does
        DegradationCase("hard-x4", 4, "kolmogorov", 3.0, border="zeros", msi_shift=(0.25, 0.25),
                        snr_lr_db=30, snr_msi_db=35, noise="poisson", srf="gaussian:4"),
    )
}


def get_case(spec: str | DegradationCase) -> DegradationCase:
    """A case by preset name, a JSON object string, or the case itself."""
    if isinstance(spec, DegradationCase):
        return spec
    text = str(spec).strip()
    if text.startswith("{"):
        return DegradationCase.from_json(text)
    try:
        return PRESETS[text]
    except KeyError:
        raise ProblemError(f"unknown degradation preset {text!r}; known: {', '.join(PRESETS)}") from None


#: SRFs :func:`sample_cases` draws from (real ones, and Gaussian bands for 1-16 bands)
SAMPLED_SRFS = ("nikon-d700", "landsat-8", "sentinel-2a", "gaussian:1", "gaussian:3", "gaussian:4",
                "gaussian:8", "gaussian:16")


def sample_cases(
    n: int,
    seed: int = 0,
    *,
    ratios: tuple[int, ...] = ZOO_RATIOS,
    srfs: tuple[str, ...] = SAMPLED_SRFS,
    p_clean: float = 0.25,
) -> list[DegradationCase]:
    """``n`` cases drawn over every axis of the zoo, deterministic given ``seed``.

    Ratio uniform in ``ratios``; PSF family uniform, FWHM ``U(0.25, 1) ratio`` (box: ``ratio``, the
    area average, half the time, else ``U(0.5, 1.5) ratio``), ellipticity 1 or ``U(0.6, 0.95)``
    with a random angle, Moffat beta ``U(1.5, 4.5)``; border reflect/zeros; sampling phase the block
    centre (half a pixel off for even ratios) or a random integer; MSI misregistration none or
    ``U(-0.5, 0.5)`` per axis; each image noise-free with probability ``p_clean``, else at
    ``U(25, 40)`` dB, white or Poisson-Gaussian; SRF uniform in ``srfs``, hidden from methods
    with probability 1/4.
    """
    if int(n) != n or n < 0:
        raise ProblemError(f"n must be a non-negative integer; got {n!r}")
    rng = np.random.default_rng(int(seed))
    cases = []
    for i in range(int(n)):
        r = int(rng.choice(ratios))
        family = str(rng.choice(PSF_FAMILIES))
        if family == "box":
            fwhm = float(r) if rng.random() < 0.5 else float(r * rng.uniform(0.5, 1.5))
        else:
            fwhm = float(r * rng.uniform(0.25, 1.0))
        elliptical = family != "box" and rng.random() < 0.5
        offset = None if rng.random() < 0.5 else float(rng.integers(0, r))
        shift = (0.0, 0.0) if rng.random() < 0.5 else tuple(float(v) for v in rng.uniform(-0.5, 0.5, 2))
        snr = [None if rng.random() < p_clean else float(rng.uniform(25, 40)) for _ in range(2)]
        case = DegradationCase(
            name=f"zoo-s{seed}-{i}",
            ratio=r,
            psf=family,
            psf_fwhm=round(fwhm, 3),
            ellipticity=round(float(rng.uniform(0.6, 0.95)), 3) if elliptical else 1.0,
            angle=round(float(rng.uniform(0, 180)), 1) if elliptical else 0.0,
            beta=round(float(rng.uniform(1.5, 4.5)), 2),
            border=str(rng.choice(["reflect", "zeros"])),
            lr_offset=offset,
            msi_shift=tuple(round(v, 3) for v in shift),
            snr_lr_db=None if snr[0] is None else round(snr[0], 1),
            snr_msi_db=None if snr[1] is None else round(snr[1], 1),
            noise=str(rng.choice(NOISE_KINDS)),
            srf=str(rng.choice(srfs)),
            srf_known=bool(rng.random() >= 0.25),
            seed=int(rng.integers(0, 2**31 - 1)),
        )
        cases.append(case)
    return cases
