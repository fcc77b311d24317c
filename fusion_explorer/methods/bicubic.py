"""Baseline: bicubic spatial upsampling of the LR-HSI (the MSI is ignored)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cube import from_tensor
from ..problem import FusionProblem, FusionResult
from .base import register


@register("bicubic", "bicubic upsampling of the LR-HSI (ignores the MSI); the baseline")
def bicubic(problem: FusionProblem, *, device: torch.device, progress=None, seed: int = 0) -> FusionResult:
    """``interpolate(Y_h, scale_factor=ratio, mode="bicubic", align_corners=False)``, clipped at 0.

    Bicubic overshoots near edges; negative values are clipped (reflectance is non-negative).
    """
    lr, _ = problem.tensors(device)
    up = F.interpolate(lr[None], scale_factor=problem.ratio, mode="bicubic", align_corners=False)[0]
    up = up.clamp_min(0)
    if progress is not None:
        progress(1, 1, {})
    return FusionResult(from_tensor(up, problem.lr_hsi), "bicubic", params={})
