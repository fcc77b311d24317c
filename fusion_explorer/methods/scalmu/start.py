"""SCALMU's starting point: CNMF (VCA, then its HSI and MSI unmixing stages); on large images its
first MSI stage runs coarse to fine (:func:`resolve_pyramid`, about 7x fewer full-resolution updates).

:func:`problem_start` turns one :class:`FusionProblem` into the batched ``(CoupledState, CoupledData)``
of :mod:`..unmixing` (batch of 1); :func:`batch_start` does the same for a synthetic
:class:`~fusion_explorer.synth.TrainingBatch` (one sensor pair, ``N`` scenes, one ``p``).
Both call the registered ``cnmf`` method itself, so the start is exactly CNMF's iterate, and both
attach the HR pixels' colour neighbours (:func:`..guided.data_neighbours`) for the consistency layer.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ...physics import SpatialDegradation
from ...problem import FusionProblem
from ..cnmf import SUM_TO_ONE_SCALE, cnmf, default_n_endmembers, flat_images, spatial_model
from ..guided import data_neighbours
from ..unmixing import CoupledData, CoupledState, flat_adjoint, flat_degradation

#: the coarse-to-fine first MSI stage of SCALMU's default start on large images (``cnmf``'s ``msi_pyramid``)
DEFAULT_PYRAMID = ((4, 200), (2, 100), (1, 40))
#: HR pixel count from which ``msi_pyramid="auto"`` uses :data:`DEFAULT_PYRAMID`
PYRAMID_FROM_PIXELS = 256 * 256


def resolve_pyramid(msi_pyramid, hr_size: tuple[int, int]):
    """``"auto"``: :data:`DEFAULT_PYRAMID` on images of at least :data:`PYRAMID_FROM_PIXELS` pixels,
    where the full-resolution MSI stage dominates the run time (399 updates of ``p x N``
    abundances, against the cost of 78 here: 200 at quarter resolution, 100 at half and 40 at
    full), else ``None`` (CNMF's own stage: on small images it is cheap, and with few pixels
    per level the coarse levels are no closer start: -0.4 to -5 dB on 48–128 px crops). With the
    consistency layer the start matters little: on the 4 full CAVE scenes, 7 pyramids costing 48
    to 130 full-resolution updates scored within 0.18 dB of each other at x8 and 0.06 dB at x32
    (CNMF's own stage about 0.3 dB lower at x8, 0.07 at x32); this one, no lower than the previous
    ``((2, 200), (1, 80))`` on either protocol (49.04 / 45.07 dB against 49.02 / 45.07), does 40 %
    fewer pixel updates than it (benchmarks/RESULTS.md). Chosen on those scenes."""
    if msi_pyramid == "auto":
        return DEFAULT_PYRAMID if hr_size[0] * hr_size[1] >= PYRAMID_FROM_PIXELS else None
    return msi_pyramid or None


def _cnmf_state(problem: FusionProblem, device, dtype: str, seed: int, p, iterations: int, delta, pyramid):
    return cnmf(
        problem, device=device, seed=seed, n_endmembers=p, inner_iterations=iterations, sum_to_one=delta,
        dtype=dtype, trace_budget_mb=0.0, msi_pyramid=[list(x) for x in pyramid] if pyramid else None,
    )


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
    """CNMF with ``inner_iterations = init_iterations`` and ``msi_pyramid`` on ``problem``, as a
    batch-of-one state and data.

    With no known PSF, the one CNMF estimates is fixed on the problem first, so that the start and
    the layers couple through the same degradation.
    """
    psf_note = "known"
    if problem.psf is None:
        spatial, psf_note = spatial_model(problem)
        problem = dataclasses.replace(problem, psf=spatial.kernel.numpy(), offset=spatial.offset)
    y_h, y_m, (h, w), (big_h, big_w) = flat_images(problem, device, dtype)
    n, big_n = h * w, big_h * big_w
    spatial = problem.spatial_operator()
    degrade, upsample = flat_degradation(spatial, (big_h, big_w)), flat_adjoint(spatial, (h, w))
    tname = "float64" if dtype == torch.float64 else "float32"
    pyramid = resolve_pyramid(msi_pyramid, (big_h, big_w))
    result = _cnmf_state(problem, device, tname, seed, n_endmembers, init_iterations, None, pyramid)
    # the SRF CNMF coupled with (the problem's, or its NNLS estimate with the MSI offset removed)
    srf = torch.as_tensor(result.extras["srf_matrix"], dtype=dtype, device=device)[None]
    srf_estimated = result.extras["msi_offset"] is not None
    if srf_estimated:
        offset = torch.as_tensor(result.extras["msi_offset"], dtype=dtype, device=device)
        y_m = (y_m - offset.view(1, -1, 1)).clamp_min(0)
    delta = float(result.params["sum_to_one"])
    w0 = torch.as_tensor(result.endmembers, dtype=dtype, device=device)[None]
    p = w0.shape[-1]
    state = CoupledState(
        endmembers=w0,
        abundances_lr=torch.as_tensor(result.extras["abundances_lr"], dtype=dtype, device=device).reshape(1, p, n),
        abundances=torch.as_tensor(result.abundances, dtype=dtype, device=device).reshape(1, p, big_n),
        msi_endmembers=srf @ w0,
    )
    info = {"msi_pyramid": pyramid, "psf": psf_note, "n_endmembers": p, "sum_to_one": delta,
            "srf_estimated": srf_estimated, "vca_pixels": result.extras.get("vca_pixels")}
    data = CoupledData(y_h, y_m, srf, degrade, delta, upsample)
    data.neighbours = data_neighbours(data, (big_h, big_w), (h, w), spatial.ratio, spatial.offset)
    return state, data, info


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
        states.append(
            _cnmf_state(problem, torch.device("cpu"), "float32", seed, p, init_iterations, delta,
                        resolve_pyramid(msi_pyramid, (big_h, big_w))))
    srf = batch.srf.float()[None]
    w0 = torch.stack([torch.as_tensor(r.endmembers) for r in states]).float()
    state = CoupledState(
        endmembers=w0,
        abundances_lr=torch.stack([torch.as_tensor(r.extras["abundances_lr"]) for r in states]).float().reshape(
            n_items, p, n),
        abundances=torch.stack([torch.as_tensor(r.abundances) for r in states]).float().reshape(n_items, p, big_n),
        msi_endmembers=srf @ w0,
    )
    spatial = SpatialDegradation(batch.psf.double(), batch.ratio, batch.offset, batch.degradation.border)
    data = CoupledData(y_h, y_m, srf, flat_degradation(spatial, (big_h, big_w)), delta,
                       flat_adjoint(spatial, (h, w)))
    data.neighbours = data_neighbours(data, (big_h, big_w), (h, w), spatial.ratio, spatial.offset)
    return state, data, batch.truth.reshape(n_items, bands, big_n).float()
