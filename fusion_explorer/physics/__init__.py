"""Degradation physics: how a sensor sees the high-resolution hyperspectral scene ``X``.

    LR-HSI  Y_h = S(X) + n_h,   S = decimate_{ratio, offset} ∘ blur_PSF      (spatial)
    HR-MSI  Y_m = R X + n_m,    R = SRF matrix (msi_bands, hsi_bands)        (spectral)

Each degradation is a linear :class:`Operator` on tensors ``(..., bands, y, x)`` with ``forward``
and ``adjoint`` (``<A x, y> = <x, A^T y>``), composable with ``@`` and device-agnostic (the
operator follows the input's device and dtype). A :class:`SensorPair` is one acquisition set-up
(PSF, decimation, SRF, noise); the named ones in ``PROTOCOLS`` reproduce published test set-ups
exactly. This package knows nothing of problems or methods: :func:`fusion_explorer.problem.simulate`
turns a ground truth and a sensor pair into a :class:`~fusion_explorer.problem.FusionProblem`.

Modules: :mod:`.operators` (operators), :mod:`.psf` (PSFs), :mod:`.sensors` (the sensor pair and the
named presets), :mod:`.noise` (noise).
"""

from __future__ import annotations

import warnings
from typing import Any

from .noise import NoiseModel, add_noise
from .operators import (
    BORDERS,
    Blur,
    Compose,
    Decimate,
    Operator,
    SpatialDegradation,
    SpectralResponse,
)
from .psf import default_kernel_size, gaussian_kernel, gaussian_kernel_1d
from .sensors import PROTOCOLS, SensorPair, default_offset, get_protocol, make_protocol

__all__ = [
    "BORDERS",
    "PROTOCOLS",
    "Blur",
    "Compose",
    "Decimate",
    "NoiseModel",
    "Operator",
    "SensorPair",
    "SpatialDegradation",
    "SpectralResponse",
    "add_noise",
    "default_kernel_size",
    "default_offset",
    "gaussian_kernel",
    "gaussian_kernel_1d",
    "get_protocol",
    "make_protocol",
]


def __getattr__(name: str) -> Any:
    """Old names: ``Protocol`` (now :class:`SensorPair`; it shadowed ``typing.Protocol``) and
    ``simulate`` (now :func:`fusion_explorer.problem.simulate`; physics knows no problem)."""
    if name == "Protocol":
        warnings.warn("fusion_explorer.physics.Protocol is now SensorPair", DeprecationWarning, stacklevel=2)
        return SensorPair
    if name == "simulate":
        # Known exception to "physics imports nothing from problem" (tests/test_architecture.py): an alias
        # for code outside the package (tests, benchmarks); the package imports fusion_explorer.problem.
        from ..problem import simulate

        return simulate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
