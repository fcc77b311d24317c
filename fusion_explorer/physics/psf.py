"""Point spread functions: the Gaussian PSF of the named sensor pairs and its default size."""

from __future__ import annotations

import math

import torch

from ..errors import ProblemError


def gaussian_kernel_1d(size: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``g_i = exp(-(i - (size-1)/2)^2 / (2 sigma^2))``, normalised to sum 1; shape ``(size,)``."""
    if int(size) != size or size < 1:
        raise ProblemError(f"PSF size must be a positive integer; got {size!r}")
    if not sigma > 0:
        raise ProblemError(f"PSF sigma must be > 0; got {sigma!r}")
    i = torch.arange(int(size), dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(i**2) / (2 * float(sigma) ** 2))
    return (g / g.sum()).to(dtype)


def gaussian_kernel(size: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Separable isotropic Gaussian PSF ``outer(g, g)``, shape ``(size, size)``, sums to 1."""
    g = gaussian_kernel_1d(size, sigma, dtype)
    return torch.outer(g, g)


def default_kernel_size(sigma: float, ratio: int) -> int:
    """An odd size covering +-3 sigma and at least one LR pixel: ``max(2 ceil(3 sigma) + 1, ratio | 1)``."""
    return max(2 * math.ceil(3 * sigma) + 1, ratio + 1 - ratio % 2)
