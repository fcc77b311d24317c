"""Fusion methods, found by name: ``fuse(problem, "bicubic")``; ``available_methods()``."""

from .base import (
    FusionProblem,
    FusionResult,
    MethodInfo,
    ProgressCallback,
    available_methods,
    fuse,
    get_method,
    register,
)
from . import bicubic  # noqa: F401  (registers the method)

__all__ = [
    "FusionProblem",
    "FusionResult",
    "MethodInfo",
    "ProgressCallback",
    "available_methods",
    "fuse",
    "get_method",
    "register",
]
