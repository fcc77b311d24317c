"""Training data for learned fusion: random scenes seen by random sensor pairs, deterministic by seed.

A sample is a :func:`~fusion_explorer.synth.scene.spectral_dead_leaves` truth ``X`` ``(B, H, W)``
and what a random sensor pair (:class:`Degradation`) sees of it, with the operators of
:mod:`fusion_explorer.physics` (the same as :func:`~fusion_explorer.problem.simulate`)::

    lr_hsi = add_noise(SpatialDegradation(psf, ratio, offset)(X), snr_hsi_db)     (B, H/ratio, W/ratio)
    hr_msi = add_noise(R X, snr_msi_db)                                            (m, H, W)

The sensor pair is drawn by :func:`random_degradation` (in :mod:`.sensors`): a Gaussian PSF of random sigma, a ratio
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

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .scene import spectral_dead_leaves
from .sensors import (  # noqa: F401 - re-exported (old imports from synth.training)
    SRF_POOL,
    WAVELENGTH_GRIDS,
    Degradation,
    _streams,
    _torch_seed,
    random_degradation,
    random_gaussian_srf,
    resolve_wavelength,
    usable_srfs,
)


def random_scene_options(rng: np.random.Generator, size: int, max_endmembers: int = 10) -> dict[str, Any]:
    """Random :func:`spectral_dead_leaves` settings for training (endmember count in ``3..max_endmembers``,
    leaf sizes, texture...)."""
    return dict(
        n_endmembers=int(rng.integers(3, int(max_endmembers) + 1)),
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
        truth=truth_cube,
        name=f"{attrs.get('scene', 'synthetic')} / {deg.protocol().name} / {deg.srf.name}",
        protocol=deg.protocol(),
        sensors=deg.sensor_pair(),
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
