"""SCALMU's starting point: CNMF's schedule (VCA, then its HSI and MSI unmixing stages); on large
images its first MSI stage runs coarse to fine (:func:`resolve_pyramid`, about 7x fewer
full-resolution updates).

:func:`schedule_start` runs :func:`~fusion_explorer.methods.cnmf.start_schedule` on one
:class:`FusionProblem` and hands over the schedule itself (its ``state``, ``data`` and iteration
count), so SCALMU's layers continue the very iterate and coupling CNMF ends with;
:func:`problem_start` returns just the batched ``(CoupledState, CoupledData)`` (batch of 1);
:func:`batch_start` stacks the starts of a synthetic :class:`~fusion_explorer.synth.TrainingBatch`
(one sensor pair, ``N`` scenes, one ``p``). All attach the HR pixels' colour neighbours
(:func:`..unmixing.guided.data_neighbours`) for the consistency layer.
"""

from __future__ import annotations

import math

import torch

from ...physics import SpatialDegradation
from ...problem import FusionProblem
from ..cnmf import start_schedule
from ..unmixing import CoupledData, CoupledState, flat_adjoint, flat_degradation
from ..unmixing.guided import data_neighbours
from ..unmixing.projection import common_noise_level, noise_levels, sensor_features
from ..unmixing.schedule import Schedule
from ..unmixing.setup import SUM_TO_ONE_SCALE, default_n_endmembers
from ..unmixing.trace import TraceRecorder

#: the coarse-to-fine first MSI stage of SCALMU's default start on large images (``cnmf``'s ``msi_pyramid``)
DEFAULT_PYRAMID = ((4, 200), (2, 100), (1, 40))
#: HR pixel count from which ``msi_pyramid="auto"`` uses :data:`DEFAULT_PYRAMID`
PYRAMID_FROM_PIXELS = 256 * 256


def resolve_pyramid(msi_pyramid, hr_size: tuple[int, int]):
    """``"auto"``: :data:`DEFAULT_PYRAMID` on images of at least :data:`PYRAMID_FROM_PIXELS` pixels,
    where the full-resolution MSI stage dominates the run time (399 updates of ``p x N``
    abundances, against the cost of 78 here: 200 at quarter resolution, 100 at half and 40 at
    full), else ``None`` (CNMF's own stage: on small images it is cheap, and with few pixels per
    level the coarse levels are no closer start). With the consistency layer the start matters
    little; this pyramid was chosen on the 4 full CAVE scenes among 7 of similar cost (the
    comparison is in benchmarks/RESULTS.md)."""
    if msi_pyramid == "auto":
        return DEFAULT_PYRAMID if hr_size[0] * hr_size[1] >= PYRAMID_FROM_PIXELS else None
    return msi_pyramid or None


def schedule_start(
    problem: FusionProblem,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    n_endmembers=None,
    init_iterations: int = 200,
    msi_pyramid=None,
    sum_to_one: float | None = None,
    progress=None,
    extra_iterations: int = 0,
) -> tuple[Schedule, dict]:
    """CNMF's stages with ``inner_iterations = init_iterations`` and ``msi_pyramid`` (see
    :func:`resolve_pyramid`) on ``problem``: ``(schedule, info)``; the schedule's data carry the
    colour neighbours. Nothing of the start is traced (its recorder has no budget); the caller
    swaps in its own ``schedule.trace``."""
    pyramid = resolve_pyramid(msi_pyramid, problem.hr_size)
    schedule, prepared, _ = start_schedule(
        problem, device=device, dtype=dtype, seed=seed, n_endmembers=n_endmembers,
        inner_iterations=init_iterations, sum_to_one=sum_to_one,
        msi_pyramid=[list(x) for x in pyramid] if pyramid else None, trace=TraceRecorder(0.0),
        progress=progress, extra_iterations=extra_iterations,
    )
    spatial, data = prepared.spatial, schedule.data
    data.neighbours = data_neighbours(data, prepared.hr_size, prepared.lr_size, spatial.ratio, spatial.offset)
    levels = noise_levels(problem.lr_hsi, problem.hr_msi)
    features = sensor_features(problem.lr_hsi, problem.hr_msi, prepared.srf_estimated, prepared.psf_misfit, levels)
    data.sensor_features = features[None].to(device)
    data.msi_noise_level = torch.tensor([common_noise_level(levels)], dtype=dtype, device=device)
    info = {"msi_pyramid": pyramid, "psf": prepared.psf_note, "n_endmembers": prepared.p,
            "sum_to_one": data.delta, "srf_estimated": prepared.srf_estimated, "vca_pixels": prepared.vca_pixels}
    return schedule, info


def problem_start(
    problem: FusionProblem,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    n_endmembers=None,
    init_iterations: int = 200,
    msi_pyramid=None,
) -> tuple[CoupledState, CoupledData, dict]:
    """:func:`schedule_start`'s iterate and data, as a batch-of-one ``(state, data, info)``."""
    schedule, info = schedule_start(problem, device=device, dtype=dtype, seed=seed, n_endmembers=n_endmembers,
                                    init_iterations=init_iterations, msi_pyramid=msi_pyramid)
    return schedule.state, schedule.data, info


def batch_delta(hr_msi: torch.Tensor) -> float:
    """CNMF's sum-to-one weight ``2 sqrt(mean(Y_m) / 0.7455) / l^3`` from the whole batch ``(N, l, ...)``."""
    return 2 * math.sqrt(float(hr_msi.mean()) / SUM_TO_ONE_SCALE) / hr_msi.shape[1] ** 3


def batch_start(
    batch, *, init_iterations: int = 200, seed: int = 0, msi_pyramid=None
) -> tuple[CoupledState, CoupledData, torch.Tensor]:
    """CNMF start of every scene of a :class:`~fusion_explorer.synth.TrainingBatch` (CPU, float32), stacked.

    One ``p`` (CNMF's default for the first scene) and one ``δ`` (from the batch's MSI) for all
    scenes. Returns ``(state, data, truth (N, bands, pixels))``.
    """
    n_items, bands, big_h, big_w = batch.truth.shape
    h, w = batch.lr_hsi.shape[-2:]
    n, big_n = h * w, big_h * big_w
    y_h = batch.lr_hsi.reshape(n_items, bands, n).float()
    y_m = batch.hr_msi.reshape(n_items, -1, big_n).float()
    p = default_n_endmembers(y_h[0].double().numpy())
    delta = batch_delta(y_m)
    states = []
    for i in range(n_items):
        problem = batch.sample(i).problem()
        pyramid = resolve_pyramid(msi_pyramid, (big_h, big_w))
        schedule, _, _ = start_schedule(
            problem, device=torch.device("cpu"), dtype=torch.float32, seed=seed, n_endmembers=p,
            inner_iterations=init_iterations, sum_to_one=delta, msi_pyramid=[list(x) for x in pyramid] if pyramid
            else None)
        states.append(schedule.state)
    srf = batch.srf.float()[None]
    w0 = torch.cat([st.endmembers for st in states])
    state = CoupledState(
        endmembers=w0,
        abundances_lr=torch.cat([st.abundances_lr for st in states]).reshape(n_items, p, n),
        abundances=torch.cat([st.abundances for st in states]).reshape(n_items, p, big_n),
        msi_endmembers=srf @ w0,
    )
    # the batch's stored PSF (in the batch's dtype), not batch.degradation.spatial(): that one rebuilds the
    # Gaussian in float64, so the operator (and the training start) would not stay bit-identical
    spatial = SpatialDegradation(batch.psf.double(), batch.ratio, batch.offset, batch.degradation.border)
    data = CoupledData(y_h, y_m, srf, flat_degradation(spatial, (big_h, big_w)), delta,
                       flat_adjoint(spatial, (h, w)), hr_size=(big_h, big_w))
    data.neighbours = data_neighbours(data, (big_h, big_w), (h, w), spatial.ratio, spatial.offset)
    levels = [noise_levels(batch.lr_hsi[i], batch.hr_msi[i]) for i in range(n_items)]
    data.sensor_features = torch.stack([sensor_features(batch.lr_hsi[i], batch.hr_msi[i], False, levels=lv)
                                        for i, lv in enumerate(levels)])  # the SRF and the PSF are given
    data.msi_noise_level = torch.tensor([common_noise_level(lv) for lv in levels])
    return state, data, batch.truth.reshape(n_items, bands, big_n).float()
