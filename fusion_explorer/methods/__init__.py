"""Fusion methods, found by name: ``fuse(problem, "bicubic")``; ``available_methods()``."""

from . import bicubic, cnmf, glp_hs, gsa, hysure, mossfuse, scalmu  # noqa: F401  (registers the methods)
from .base import (
    FusionProblem,
    FusionResult,
    MethodInfo,
    ProgressCallback,
    available_methods,
    fuse,
    get_method,
    register,
    trace_fused,
)

__all__ = [
    "FusionProblem",
    "FusionResult",
    "MethodInfo",
    "ProgressCallback",
    "available_methods",
    "fuse",
    "get_method",
    "register",
    "trace_fused",
]
