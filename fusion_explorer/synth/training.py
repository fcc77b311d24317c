"""Training data for learned fusion: random scenes seen by random sensor pairs, deterministic by seed.

A sample is a :func:`~fusion_explorer.synth.scene.spectral_dead_leaves` truth ``X`` ``(B, H, W)``
and what a random sensor pair (:class:`Degradation`) sees of it, with the operators of
:mod:`fusion_explorer.physics` (the same as :func:`~fusion_explorer.problem.simulate`)::

    lr_hsi = add_noise(SpatialDegradation(psf, ratio, offset)(X), snr_hsi_db)     (B, H/ratio, W/ratio)
    hr_msi = add_noise(R X, snr_msi_db)                                            (m, H, W)

The sensor pair is drawn by :func:`random_degradation`: a Gaussian PSF of random sigma, a ratio
from ``{4, 8, 16, 32}`` (those leaving an LR image of at least ``min_lr_size`` pixels), an SRF from
the SRF library (RGB cameras, satellites; only bands inside the cube's range are kept) or random
Gaussian bands, and noise levels by SNR (dB). Entry points:

* :func:`training_sample` -> :class:`TrainingSample` (tensors, plus ``.problem()`` for a
  :class:`~fusion_explorer.problem.FusionProblem`); :func:`random_training_problem` -> ``FusionProblem``;
* :func:`training_batch` -> :class:`TrainingBatch`: ``N`` scenes through one sensor pair, stacked;
* :class:`DeadLeavesDataset`: a map-style ``torch`` dataset of batches (use ``batch_size=None``).

For a trainer::

    from torch.utils.data import DataLoader
    from fusion_explorer.synth import DeadLeavesDataset

    train = DeadLeavesDataset(2000, seed=0, batch_size=8, size=64, wavelength="cave")
    valid = DeadLeavesDataset(50, seed=1, batch_size=8, size=64, wavelength="cave")
    for batch in DataLoader(train, batch_size=None, shuffle=True, collate_fn=lambda b: b):
        y_h, y_m, x = batch.lr_hsi, batch.hr_msi, batch.truth      # (N,B,h,w), (N,m,H,W), (N,B,H,W)
        r, k = batch.srf, batch.psf                                 # (m,B), (k,k); batch.ratio, batch.offset

Seeds: ``seed`` may be an int or a tuple of ints; the scene, the sensor and the noise get
independent streams spawned from it (``numpy.random.SeedSequence``), so equal seeds give equal
samples on any machine and any number of loader workers.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..physics import (
    PROTOCOLS,
    SensorPair,
    SpatialDegradation,
    SpectralResponse,
    add_noise,
    default_kernel_size,
    make_protocol,
)
from ..srf import ROSIS_WAVELENGTHS, SRF, gaussian_srf, get_srf
from .scene import CAVE_WAVELENGTHS, spectral_dead_leaves

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
    """A sensor pair: Gaussian PSF ``psf_sigma`` (HR px) on ``kernel_size``², samples
    ``[offset::ratio]``, MSI through ``srf`` ``(m, B)``, white noise at ``snr_hsi_db`` / ``snr_msi_db``
    (``None``: noiseless) per band as in :func:`~fusion_explorer.physics.add_noise`."""

    ratio: int
    psf_sigma: float
    kernel_size: int
    offset: int
    srf: SRF
    snr_hsi_db: float | None = None
    snr_msi_db: float | None = None
    border: str = "reflect"

    def protocol(self) -> SensorPair:
        """The equivalent :class:`~fusion_explorer.physics.SensorPair` (its noise is the HSI's)."""
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
        return self.protocol().spatial()

    def apply(self, truth: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lr_hsi, hr_msi)`` of ``truth`` ``(..., B, H, W)``; HSI noise is drawn before MSI noise."""
        lr = add_noise(self.spatial()(truth), self.snr_hsi_db, generator)
        msi = add_noise(SpectralResponse(self.srf.matrix)(truth), self.snr_msi_db, generator)
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
        off = (ratio - 1) // 2
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


def random_scene_options(rng: np.random.Generator, size: int) -> dict[str, Any]:
    """Random :func:`spectral_dead_leaves` settings for training (endmember count, leaf sizes, texture...)."""
    return dict(
        n_endmembers=int(rng.integers(3, 11)),
        alpha=float(rng.uniform(2.6, 3.4)),
        r_min=float(np.exp(rng.uniform(np.log(1.0), np.log(max(1.5, size / 24))))),
        r_max=float(rng.uniform(0.3, 0.8) * size),
        max_mixed=int(rng.integers(1, 4)),
        measured_fraction=float(rng.uniform(0.3, 0.9)),
        vegetation_fraction=float(rng.uniform(0.0, 0.1)),
        texture=float(rng.uniform(0.0, 0.6)),
        abundance_variation=float(rng.uniform(0.0, 0.8)),
        edge_sigma=float(rng.uniform(0.3, 1.2)),
    )


@dataclass
class TrainingSample:
    """One training pair (tensors on CPU, ``dtype`` of the generator).

    ``truth`` ``(B, H, W)``, ``lr_hsi`` ``(B, H/ratio, W/ratio)``, ``hr_msi`` ``(m, H, W)``,
    ``srf`` ``(m, B)`` (rows sum to 1), ``psf`` ``(k, k)`` (sums to 1), ``wavelength`` ``(B,)`` nm,
    ``endmembers`` ``(B, p)`` and ``abundances`` ``(p, H, W)`` with ``truth = endmembers @ abundances``
    (before noise; the ground-truth unmixing), ``degradation`` the sensor pair, ``seed`` the seed.
    """

    truth: torch.Tensor
    lr_hsi: torch.Tensor
    hr_msi: torch.Tensor
    srf: torch.Tensor
    psf: torch.Tensor
    ratio: int
    offset: int
    wavelength: torch.Tensor
    endmembers: torch.Tensor
    abundances: torch.Tensor
    degradation: Degradation
    seed: Any = None
    attrs: dict = field(default_factory=dict)

    def problem(self) -> Any:
        """This sample as a :class:`~fusion_explorer.problem.FusionProblem` with ``truth`` set."""
        return _problem(self.truth, self.lr_hsi, self.hr_msi, self.wavelength.numpy(), self.degradation, self.attrs)


def _problem(truth, lr, msi, wl, deg: Degradation, attrs: dict):
    from ..cube import make_cube
    from ..problem import FusionProblem

    base = {k: v for k, v in attrs.items() if k in ("scene", "source", "sensor")}
    base.update(deg.as_attrs())
    truth_cube = make_cube(truth, wl, attrs=attrs)
    lr_hsi = make_cube(lr, wl, attrs={**base, "kind": "LR-HSI"})
    h, w = truth.shape[-2:]
    lr_hsi = lr_hsi.assign_coords(y=np.arange(deg.offset, h, deg.ratio), x=np.arange(deg.offset, w, deg.ratio))
    hr_msi = make_cube(msi, attrs={**base, "kind": "HR-MSI"})
    hr_msi = hr_msi.assign_coords(band_name=("band", list(deg.srf.band_names)))
    return FusionProblem(
        lr_hsi=lr_hsi,
        hr_msi=hr_msi,
        srf=deg.srf,
        ratio=deg.ratio,
        psf=deg.psf(torch.float64).numpy(),
        offset=deg.offset,
        border=deg.border,
        truth=truth_cube,
        name=f"{attrs.get('scene', 'synthetic')} / {deg.protocol().name} / {deg.srf.name}",
        protocol=deg.protocol(),
    )


def _scene_tensors(size, wl, scene_ss, randomize_scene: bool, scene_options: dict, dtype):
    rng = np.random.default_rng(scene_ss)
    opts = random_scene_options(rng, int(size if np.isscalar(size) else max(size))) if randomize_scene else {}
    opts.update(scene_options)
    scene = spectral_dead_leaves(size, wl, seed=rng, **opts)
    scene.cube.attrs["scene"] = f"dead-leaves-{scene.cube.sizes['y']}x{scene.cube.sizes['x']}"
    return (
        torch.from_numpy(np.ascontiguousarray(scene.cube.values)).to(dtype),
        torch.from_numpy(scene.endmembers).to(dtype),
        torch.from_numpy(np.ascontiguousarray(scene.abundances)).to(dtype),
        scene.cube.attrs,
    )


def training_sample(
    seed=0,
    *,
    size: int | tuple[int, int] = 64,
    wavelength="cave",
    degradation: Degradation | None = None,
    randomize_scene: bool = True,
    scene_options: dict | None = None,
    dtype: torch.dtype = torch.float32,
    **degradation_options: Any,
) -> TrainingSample:
    """One random training pair (see :class:`TrainingSample` for the shapes).

    ``wavelength``: array (nm), a :data:`WAVELENGTH_GRIDS` name or ``"random"``. ``degradation``:
    a fixed sensor pair, else one from :func:`random_degradation` (``degradation_options`` go there).
    ``randomize_scene`` draws the scene settings with :func:`random_scene_options`;
    ``scene_options`` override them (e.g. ``{"n_endmembers": 5}``).
    """
    deg_ss, scene_ss, noise_ss, wl_ss = _streams(seed, 4)
    wl = resolve_wavelength(wavelength, np.random.default_rng(wl_ss))
    deg = degradation or random_degradation(wl, deg_ss, size=size, **degradation_options)
    truth, em, ab, attrs = _scene_tensors(size, wl, scene_ss, randomize_scene, dict(scene_options or {}), dtype)
    gen = torch.Generator().manual_seed(_torch_seed(noise_ss))
    lr, msi = deg.apply(truth, gen)
    attrs = {**attrs, "seed": str(seed)}
    return TrainingSample(
        truth=truth,
        lr_hsi=lr,
        hr_msi=msi,
        srf=torch.tensor(np.array(deg.srf.matrix), dtype=dtype),
        psf=deg.psf(dtype),
        ratio=deg.ratio,
        offset=deg.offset,
        wavelength=torch.as_tensor(wl, dtype=torch.float64),
        endmembers=em,
        abundances=ab,
        degradation=deg,
        seed=seed,
        attrs=attrs,
    )


def random_training_problem(seed=0, *, size: int | tuple[int, int] = 64, wavelength="cave", **options: Any):
    """A random :class:`~fusion_explorer.problem.FusionProblem` (with ``truth``); options as :func:`training_sample`."""
    return training_sample(seed, size=size, wavelength=wavelength, dtype=torch.float64, **options).problem()


@dataclass
class TrainingBatch:
    """``N`` scenes through one sensor pair (stacked tensors, CPU).

    ``truth`` ``(N, B, H, W)``, ``lr_hsi`` ``(N, B, H/ratio, W/ratio)``, ``hr_msi`` ``(N, m, H, W)``,
    ``endmembers`` ``(N, B, p)``, ``abundances`` ``(N, p, H, W)`` (one ``p`` per batch), shared
    ``srf`` ``(m, B)``, ``psf`` ``(k, k)``, ``ratio``, ``offset``, ``wavelength`` ``(B,)``;
    ``snr_hsi_db``/``snr_msi_db`` ``(N,)`` (``inf`` = noiseless).
    """

    truth: torch.Tensor
    lr_hsi: torch.Tensor
    hr_msi: torch.Tensor
    srf: torch.Tensor
    psf: torch.Tensor
    ratio: int
    offset: int
    wavelength: torch.Tensor
    endmembers: torch.Tensor
    abundances: torch.Tensor
    snr_hsi_db: torch.Tensor
    snr_msi_db: torch.Tensor
    degradation: Degradation
    seed: Any = None

    def __len__(self) -> int:
        return int(self.truth.shape[0])

    def to(self, device: Any) -> TrainingBatch:
        """A copy with every tensor moved to ``device``."""
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return replace(self, **moved)

    def sample(self, i: int) -> TrainingSample:
        """The ``i``-th pair as a :class:`TrainingSample` (e.g. for ``.problem()``)."""
        snr_h, snr_m = float(self.snr_hsi_db[i]), float(self.snr_msi_db[i])
        deg = replace(
            self.degradation,
            snr_hsi_db=None if math.isinf(snr_h) else snr_h,
            snr_msi_db=None if math.isinf(snr_m) else snr_m,
        )
        return TrainingSample(
            truth=self.truth[i],
            lr_hsi=self.lr_hsi[i],
            hr_msi=self.hr_msi[i],
            srf=self.srf,
            psf=self.psf,
            ratio=self.ratio,
            offset=self.offset,
            wavelength=self.wavelength,
            endmembers=self.endmembers[i],
            abundances=self.abundances[i],
            degradation=deg,
            seed=(self.seed, i),
            attrs={"scene": f"dead-leaves batch {self.seed} #{i}"},
        )


def training_batch(
    seed=0,
    batch_size: int = 8,
    *,
    size: int | tuple[int, int] = 64,
    wavelength="cave",
    degradation: Degradation | None = None,
    randomize_scene: bool = True,
    scene_options: dict | None = None,
    per_sample_noise: bool = True,
    dtype: torch.dtype = torch.float32,
    **degradation_options: Any,
) -> TrainingBatch:
    """``batch_size`` scenes on one wavelength grid, seen by one random sensor pair.

    Each scene has its own random settings (but one endmember count ``p`` per batch, so that
    ``endmembers``/``abundances`` stack); with ``per_sample_noise`` each sample also draws its own
    SNRs from the ranges of :func:`random_degradation`. Options as :func:`training_sample`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    deg_ss, wl_ss, p_ss, *sample_ss = _streams(seed, 3 + batch_size)
    wl = resolve_wavelength(wavelength, np.random.default_rng(wl_ss))
    deg = degradation or random_degradation(wl, deg_ss, size=size, **degradation_options)
    p = int(np.random.default_rng(p_ss).integers(3, 11))
    opts = {"n_endmembers": p, **(scene_options or {})}
    truths, ems, abs_, lrs, msis, snr_h, snr_m = [], [], [], [], [], [], []
    for ss in sample_ss:
        scene_ss, noise_ss, snr_ss = ss.spawn(3)
        truth, em, ab, _ = _scene_tensors(size, wl, scene_ss, randomize_scene, opts, dtype)
        d = deg
        if per_sample_noise and degradation is None:
            noisy = random_degradation(wl, snr_ss, size=size, **degradation_options)
            d = replace(deg, snr_hsi_db=noisy.snr_hsi_db, snr_msi_db=noisy.snr_msi_db)
        gen = torch.Generator().manual_seed(_torch_seed(noise_ss))
        lr, msi = d.apply(truth, gen)
        truths.append(truth)
        ems.append(em)
        abs_.append(ab)
        lrs.append(lr)
        msis.append(msi)
        snr_h.append(math.inf if d.snr_hsi_db is None else d.snr_hsi_db)
        snr_m.append(math.inf if d.snr_msi_db is None else d.snr_msi_db)
    return TrainingBatch(
        truth=torch.stack(truths),
        lr_hsi=torch.stack(lrs),
        hr_msi=torch.stack(msis),
        srf=torch.tensor(np.array(deg.srf.matrix), dtype=dtype),
        psf=deg.psf(dtype),
        ratio=deg.ratio,
        offset=deg.offset,
        wavelength=torch.as_tensor(wl, dtype=torch.float64),
        endmembers=torch.stack(ems),
        abundances=torch.stack(abs_),
        snr_hsi_db=torch.tensor(snr_h, dtype=torch.float64),
        snr_msi_db=torch.tensor(snr_m, dtype=torch.float64),
        degradation=deg,
        seed=seed,
    )


class DeadLeavesDataset(torch.utils.data.Dataset):
    """A map-style dataset of :class:`TrainingBatch` es: item ``i`` is ``training_batch((seed, i), ...)``.

    Deterministic whatever the loader's workers or shuffling; use a different ``seed`` for
    validation. With a ``DataLoader``, pass ``batch_size=None`` (items are already batches) and
    ``collate_fn=lambda b: b``::

        loader = DataLoader(DeadLeavesDataset(1000, seed=0, batch_size=8), batch_size=None,
                            shuffle=True, num_workers=2, collate_fn=lambda b: b)
    """

    def __init__(self, length: int, seed: int = 0, batch_size: int = 8, **options: Any):
        self.length, self.seed, self.batch_size, self.options = int(length), int(seed), int(batch_size), options

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> TrainingBatch:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} batches")
        return training_batch((self.seed, index % self.length), self.batch_size, **self.options)
