"""Moved to :mod:`fusion_explorer.methods.unmixing.projection` (the engine's consistency projection);
this name stays importable."""

from .unmixing.projection import (  # noqa: F401
    CG_ITERATIONS,
    CG_TOLERANCE,
    DAMPING,
    DEFAULT_RIDGE,
    msi_gain,
    observation_features,
    project,
    solve_normal,
    spectral_prior,
)

__all__ = ["spectral_prior", "msi_gain", "solve_normal", "project", "observation_features", "DEFAULT_RIDGE",
           "DAMPING", "CG_ITERATIONS", "CG_TOLERANCE"]
