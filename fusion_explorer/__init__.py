"""fusion-explorer: hyperspectral–multispectral image fusion you can see into.

Data flow::

    open_cube(path) -> cube (xarray, band/y/x, wavelength nm)
        -> simulate(cube, "mossfuse-cave-x32") -> FusionProblem
        -> fuse(problem, "bicubic") -> FusionResult (+ trace)
        -> evaluate(truth, result.fused, ratio)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Lazy attributes keep `import fusion_explorer` (and the CLI's start) fast: torch, xarray and the
# readers load only when first used.
_LAZY = {
    "open_cube": "io",
    "write_netcdf": "io",
    "describe": "io",
    "make_cube": "cube",
    "validate_cube": "cube",
    "to_tensor": "cube",
    "from_tensor": "cube",
    "resolve_device": "cube",
    "SRF": "srf",
    "get_srf": "srf",
    "available_srfs": "srf",
    "gaussian_srf": "srf",
    "simulate": "problem",
    "get_protocol": "physics",
    "make_protocol": "physics",
    "PROTOCOLS": "physics",
    "FusionProblem": "problem",
    "FusionResult": "problem",
    "fuse": "methods",
    "available_methods": "methods",
    "evaluate": "metrics",
    "default_scene": "synth",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fusion_explorer' has no attribute {name!r}")
