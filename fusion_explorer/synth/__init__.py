"""Synthetic scenes made on the fly (no downloads): spectral dead leaves and training pairs.

* :func:`spectral_dead_leaves` -> :class:`SyntheticScene`: occluding random shapes with power-law
  sizes whose pixels are non-negative mixtures ``X = E A`` of a few reflectance spectra (measured
  ones from ``colour-science``, smooth random curves, vegetation), with shading, within-leaf
  mixture variation and soft edges, on any wavelength grid;
* :func:`dead_leaves_scene` (its cube) and :func:`default_scene` (the app's embedded scene:
  31 bands, 400–700 nm, 256 x 256);
* :func:`random_degradation`, :func:`training_sample`, :func:`random_training_problem`,
  :func:`training_batch`, :class:`DeadLeavesDataset`: random sensor pairs and the (truth, LR-HSI,
  HR-MSI, SRF, PSF) pairs a learned method trains on, deterministic by seed.

Modules: :mod:`.spectra` (reflectances), :mod:`.leaves` (the dead leaves geometry), :mod:`.scene`
(mixing, texture), :mod:`.sensors` (random sensor pairs: :class:`~fusion_explorer.physics.SensorPair`
draws), :mod:`.training` (samples, batches and datasets; imports torch).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .leaves import SHAPES, Leaves, dead_leaves, power_law_radii
from .scene import CAVE_WAVELENGTHS, SyntheticScene, dead_leaves_scene, default_scene, spectral_dead_leaves
from .spectra import measured_reflectances, random_spectra, smooth_random_spectra, vegetation_spectra

_TRAINING = (
    "WAVELENGTH_GRIDS",
    "SRF_POOL",
    "Degradation",
    "DeadLeavesDataset",
    "TrainingBatch",
    "TrainingSample",
    "random_degradation",
    "random_gaussian_srf",
    "random_scene_options",
    "random_training_problem",
    "resolve_wavelength",
    "training_batch",
    "training_sample",
    "usable_srfs",
)

__all__ = [
    "CAVE_WAVELENGTHS",
    "SHAPES",
    "Leaves",
    "SyntheticScene",
    "dead_leaves",
    "dead_leaves_scene",
    "default_scene",
    "measured_reflectances",
    "power_law_radii",
    "random_spectra",
    "smooth_random_spectra",
    "spectral_dead_leaves",
    "vegetation_spectra",
    *_TRAINING,
]


def __getattr__(name: str) -> Any:
    # the training helpers need torch and the physics: load them only when asked for
    if name in _TRAINING:
        return getattr(import_module(".training", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
