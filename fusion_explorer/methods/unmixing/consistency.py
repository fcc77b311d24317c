"""The consistency stage: the optional last stage of an unmixing schedule, which moves the fused
cube ``Z = W H_m`` onto both observed images (:func:`fusion_explorer.methods.unmixing.projection.project`).

Modes (``cnmf(consistency=...)``; SCALMU's plain consistency layer is ``"guided"``):

- ``False``: none, the output is ``W H_m`` (the paper's CNMF);
- ``"projection"``: the smallest change, in the metric of the endmembers' spectral prior, with
  ``R Z = Y_m`` and ``S Z = Y_h``;
- ``"guided"`` (or ``True``): first carry the LR-HSI residual ``Y_h - S Z`` to the HR pixels of the
  same colour (:mod:`.guided`), then the projection, its MSI correction made from the MSI residual
  denoised at the noise level both images show when the data carry one (``CoupledData.msi_noise_level``;
  :func:`.projection.residual_noise`): SCALMU's consistency layer with nothing learned.

The stage is recorded as one trace step (stage ``consistency``, one iteration after the last
update) holding the output cube as ``fused`` and the per-pixel norm of the correction ``Z - W H_m``
as ``correction`` ``(Y, X)``; its ``objective`` and residuals are those of ``Z``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...errors import ProblemError
from .guided import data_neighbours
from .projection import project, residual_noise, spectral_prior
from .schedule import Schedule

#: the accepted ``consistency`` options
MODES = (False, True, "projection", "guided")


def check_mode(mode) -> str | None:
    """The mode's name (``None`` for no stage), or a one-line error."""
    if mode not in MODES:
        raise ProblemError(f"consistency must be False, 'projection' or 'guided' (True); got {mode!r}")
    if mode is False:
        return None
    return "guided" if mode is True else mode


def project_plain(schedule: Schedule, mode: str) -> torch.Tensor:
    """``Z`` ``(1, L, N)``: ``W H_m`` moved onto both images in ``mode`` (nothing learned; ``"guided"``
    denoises the MSI residual when ``data.msi_noise_level`` is set)."""
    data, state = schedule.data, schedule.state
    nb = noise = None
    if mode == "guided":
        nb = data.neighbours
        if nb is None:
            spatial = schedule.spatial
            nb = data_neighbours(data, schedule.hr_size, schedule.lr_size, spatial.ratio, spatial.offset)
        noise = residual_noise(data)
    return project(state.fused(), data, spectral_prior(state.endmembers), neighbours=nb, msi_denoise=noise)


def correction_map(z: torch.Tensor, schedule: Schedule) -> np.ndarray:
    """Per-pixel norm over bands of ``Z - W H_m`` ``(Y, X)`` float32."""
    diff = z - schedule.state.fused()
    return diff[0].square().sum(0).sqrt().float().cpu().numpy().reshape(schedule.hr_size)


def record_stage(schedule: Schedule, z: torch.Tensor, label: str, **parts) -> None:
    """Close the schedule with the consistency stage's trace step for the output ``z`` (see the
    module docstring); ``parts``: extra keys (SCALMU's ``learned``, ``plain``, ``learned_doc``)."""
    data = schedule.data
    schedule.trace.begin("consistency", schedule.iteration)
    schedule.iteration += 1
    with torch.no_grad():
        res_h = float((data.lr_hsi - data.degrade(z)).double().square().sum())
        res_m = float((data.hr_msi - data.srf @ z).double().square().sum())
        extra = {
            "fused": z[0].float().cpu().numpy().reshape(-1, *schedule.hr_size),
            "correction": correction_map(z, schedule),
            "objective": res_h + res_m,
            "residual_hsi": math.sqrt(res_h / schedule.yy_h),
            "residual_msi": math.sqrt(res_m / schedule.yy_m),
            **parts,
        }
        schedule.record(f"{label} · iteration {schedule.iteration}", schedule.state, forced=True, **extra)


def fused_bytes(schedule: Schedule) -> int:
    """Bytes of the stage's step beyond an ordinary record: the cube and the correction map."""
    big_n = schedule.big_n
    return 4 * big_n * (schedule.data.lr_hsi.shape[1] + 1)


__all__ = ["MODES", "check_mode", "project_plain", "correction_map", "record_stage", "fused_bytes"]
