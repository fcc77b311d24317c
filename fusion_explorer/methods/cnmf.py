"""CNMF: coupled non-negative matrix factorisation (Yokoya, Yairi & Iwasaki, IEEE TGRS 50(2), 2012).

The LR-HSI is unmixed as ``Y_h ≈ W H_h`` and the HR-MSI as ``Y_m ≈ (R W) H_m`` by alternating
multiplicative updates (the shared step in :mod:`.unmixing.step`); the two unmixings are coupled
through the SRF ``R`` (``W_m = R W``) and the spatial degradation ``S`` (``H_h = S H_m``). The
fused cube is ``Z = W H_m``.

Schedule (the paper's Fig. 2, with the defaults of the authors' released code):

1. *HSI initialisation*: ``W`` by VCA on ``Y_h``; ``H_h = 1/p``; ``H_h`` alone is updated (up to
   ``3 x inner`` iterations), then ``W`` and ``H_h`` alternately (up to ``inner``).
2. *MSI initialisation*: ``W_m = R W``; ``H_m`` = bilinear upsampling of ``H_h``; ``H_m`` alone
   (up to ``inner``), then ``H_m`` (and ``W_m`` when the MSI has more than 3 bands) alternately.
3. ``outer`` times: ``H_h = S H_m``; ``W`` alone, then ``W`` (and ``H_h`` when the MSI has more than 3
   bands) alternately on ``Y_h``; ``W_m = R W``; then the MSI stage as in 2 (skipped in the last
   round by default: see ``final_msi_stage``). The outer loop stops early when either unmixing's
   cost improves by less than ``outer_threshold`` (relative).

Each inner loop stops when the relative decrease of its cost falls below ``threshold``.

Two optional stages follow (not in the paper): ``coupled_steps`` single coupled iterations (what
SCALMU unrolls: its layers with their learned parts off are exactly these), and the consistency
stage (:mod:`.unmixing.consistency`). The stages are methods of :class:`.unmixing.schedule.Schedule`;
the step is :mod:`.unmixing.step`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

from ..cube import from_tensor
from ..errors import ProblemError
from ..problem import FusionProblem, FusionResult
from .base import ProgressCallback, register
from .unmixing import consistency as consistency_stage
from .unmixing.projection import common_noise_level, noise_levels
from .unmixing.schedule import CHECK_EVERY, TILE_PIXELS, Schedule  # noqa: F401  (importable from here)
from .unmixing.setup import (  # noqa: F401  (importable from here, as before the engine moved)
    MIN_MSI_BANDS,
    SUM_TO_ONE_SCALE,
    Prepared,
    default_n_endmembers,
    default_spatial_operator,
    flat_images,
    prepare,
    spatial_model,
)
from .unmixing.trace import DEFAULT_BUDGET_MB, TraceRecorder


def start_schedule(
    problem: FusionProblem,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    n_endmembers: int | str | None = None,
    inner_iterations: int = 200,
    outer_iterations: int = 1,
    threshold: float = 1e-8,
    outer_threshold: float = 1e-2,
    sum_to_one: float | None = None,
    estimate_srf_from_data: bool = False,
    final_msi_stage: bool = False,
    psf: str = "estimate",
    msi_pyramid: Sequence[Sequence[int]] | None = None,
    trace: TraceRecorder | None = None,
    progress: ProgressCallback | None = None,
    extra_iterations: int = 0,
    final_records: int = 0,
    consistency_record: bool = False,
) -> tuple[Schedule, Prepared, list]:
    """CNMF's stages 1-3 on ``problem`` (options as :func:`cnmf`'s): ``(schedule, prepared, costs)``,
    the schedule's ``state`` the iterate after the last round. SCALMU starts from here.
    ``extra_iterations``: stages the caller will run after (for the progress total);
    ``final_records`` / ``consistency_record``: reserve trace room for that many forced records
    of later stages / for a consistency stage's step at the end."""
    for name, value in (("inner_iterations", inner_iterations), ("outer_iterations", outer_iterations)):
        if int(value) != value or value < (1 if name == "inner_iterations" else 0):
            raise ProblemError(f"{name} must be a {'positive' if name == 'inner_iterations' else 'non-negative'} "
                               f"integer; got {value!r}")
    inner, outer = int(inner_iterations), int(outer_iterations)
    levels = _pyramid_levels(msi_pyramid)
    prepared = prepare(problem, device=device, dtype=dtype, seed=seed, n_endmembers=n_endmembers,
                       sum_to_one=sum_to_one, estimate_srf_from_data=estimate_srf_from_data, psf=psf)
    msi_init_iterations = sum(n for _, n in levels) if levels else 2 * inner
    total = (3 * inner + inner) + msi_init_iterations + outer * 4 * inner + extra_iterations
    schedule = Schedule(prepared, inner=inner, threshold=threshold, trace=trace, progress=progress, total=total)
    # records at stage ends and after the H_m initialisation
    schedule.trace.reserve(2 + 2 * outer + final_records, schedule.snapshot_bytes())
    if consistency_record:
        schedule.trace.reserve(1, schedule.snapshot_bytes() + consistency_stage.fused_bytes(schedule))
    cost_h = schedule.hsi_init()
    cost_m = schedule.msi_init(levels)
    costs = schedule.rounds(outer, [(cost_h, cost_m)], outer_threshold, final_msi_stage)
    return schedule, prepared, costs


@register("cnmf", "coupled NMF unmixing (Yokoya et al. 2012): interpretable endmembers and abundances", iterative=True,
          random_start=True)
def cnmf(
    problem: FusionProblem,
    *,
    device: torch.device,
    progress: ProgressCallback | None = None,
    seed: int = 0,
    n_endmembers: int | str | None = None,
    inner_iterations: int = 200,
    outer_iterations: int = 1,
    threshold: float = 1e-8,
    outer_threshold: float = 1e-2,
    sum_to_one: float | None = None,
    estimate_srf_from_data: bool = False,
    dtype: str = "float32",
    trace_budget_mb: float = DEFAULT_BUDGET_MB,
    final_msi_stage: bool = False,
    psf: str = "estimate",
    msi_pyramid: Sequence[Sequence[int]] | None = None,
    coupled_steps: int = 0,
    consistency: bool | str = False,
    denoise: bool = True,
) -> FusionResult:
    """Fuse by coupled NMF.

    Options (defaults follow the paper and the authors' released code; measured effects of the
    choices are in benchmarks/RESULTS.md):

    - ``n_endmembers``: ``p``; ``None`` = ``max(min(30, L), VD)`` capped at the band and LR pixel
      counts; ``"vd"`` = the virtual-dimensionality estimate alone (HFC, false alarm 0.05).
    - ``inner_iterations`` (200) and ``outer_iterations`` (1): maximum MU iterations per inner
      loop and number of outer coupling rounds; ``threshold`` (1e-8) and ``outer_threshold`` (1e-2)
      their relative-cost-decrease stopping rules.
    - ``sum_to_one``: the weight ``δ`` of the appended sum-to-one row; ``None`` =
      ``2 sqrt(mean(Y_m) / 0.7455) / l^3`` as in the released code.
    - The SRF is the problem's when known; with none, or ``estimate_srf_from_data=True``, it is
      estimated by NNLS of the spatially degraded MSI on the HSI bands plus an offset (which is
      then subtracted from the MSI), as in the released code.
    - The PSF is the problem's when known. Otherwise ``psf="estimate"`` (default) fits a Gaussian
      (sigma and sampling offset) to the data (:func:`.unmixing.estimate_gaussian_psf`), and
      ``psf="paper"`` takes the paper's Gaussian of FWHM = ``ratio`` (far too wide for the CAVE
      x32 protocol's sigma 2).
    - ``dtype``: ``"float32"`` (default) or ``"float64"``; ``seed`` drives VCA.
    - ``trace_budget_mb``: memory for the recorded iterates (:class:`.unmixing.trace.TraceRecorder`).
    - ``final_msi_stage``: whether the last outer round ends with an MSI unmixing stage. The
      released code (one outer round) returns ``W`` of that round's HSI stage times ``H_m`` of the
      stage before, so its last MSI stage never reaches the output; ``False`` (default) does the
      same without computing it. ``True`` follows the paper's diagram literally (it scored lower
      on the full CAVE scenes at x8).
    - ``msi_pyramid``: ``None`` (default) runs the first MSI stage at full resolution as in the
      paper (``2·inner - 1`` updates of ``H_m``). A list of ``(factor, iterations)`` pairs, the last
      factor 1, runs it coarse to fine instead: on the MSI averaged over ``factor x factor``
      blocks, from the upsampled ``H_h`` for the first level and the previous level's ``H_m``
      after. Each pixel's MSI problem is its own, so a coarse solution is a close start for its
      neighbours: ``[[4, 300], [2, 60], [1, 20]]`` costs about 54 full-resolution updates instead
      of 399, at some cost in quality (more on small crops). SCALMU's start uses
      ``[[4, 200], [2, 100], [1, 40]]`` on images from 256x256 pixels up.
    - ``coupled_steps`` (0): after the rounds, this many single coupled iterations (``H_h ← S H_m``;
      one MU of ``W`` on ``Y_h``; ``W_m ← R W``; one MU of ``H_m`` on ``Y_m``), the stage
      ``coupled steps``: what SCALMU unrolls, so that its layers with the learned parts off can be
      compared with (and are equal to) these iterations.
    - ``consistency``: the last stage (:mod:`.unmixing.consistency`). ``False`` (default) returns
      the paper's output ``W H_m``; ``"projection"`` moves it onto both images (the smallest change
      with ``R Z = Y_m`` and ``S Z = Y_h`` in the endmembers' spectral prior); ``"guided"`` (or
      ``True``) first carries the LR-HSI residual to the HR pixels of the same colour. Neither is
      in the paper: ``"guided"`` is SCALMU's last layer without its learned steps, the baseline
      with nothing learned. The output is then no longer ``W H_m``: ``endmembers`` and
      ``abundances`` stay those of the unmixing; the trace's last step holds the output and the
      correction map.
    - ``denoise`` (``"guided"`` only): its MSI correction is made from the MSI residual denoised at the
      noise level both images show (a local Wiener filter, :func:`.unmixing.projection.denoise_residual`;
      hand-built, as in SCALMU's consistency layer with or without its learned parts), so that the
      correction does not copy the MSI's noise into every band; ``False``: from the raw residual.

    ``progress(done, total, info)`` is called every few iterations; raising from it cancels.
    ``stages``: ``HSI init``, ``MSI init``, ``round k``, then ``coupled steps`` and ``consistency``
    when run. ``extras``: ``vca_pixels`` (the LR pixels VCA picked), ``iterations`` (MU iterations
    run), ``costs`` (``(HSI, MSI)`` per stage pair), ``abundances_lr`` ``(p, y, x)``, ``srf_matrix``
    (the SRF coupled with) and ``msi_offset`` (what was subtracted from the MSI with an estimated
    SRF, else ``None``).
    """
    mode = consistency_stage.check_mode(consistency)
    if dtype not in ("float32", "float64"):
        raise ProblemError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    if int(coupled_steps) != coupled_steps or coupled_steps < 0:
        raise ProblemError(f"coupled_steps must be a non-negative integer; got {coupled_steps!r}")
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    trace = TraceRecorder(trace_budget_mb)
    schedule, prepared, costs = start_schedule(
        problem, device=device, dtype=tdtype, seed=seed, n_endmembers=n_endmembers,
        inner_iterations=inner_iterations, outer_iterations=outer_iterations, threshold=threshold,
        outer_threshold=outer_threshold, sum_to_one=sum_to_one, estimate_srf_from_data=estimate_srf_from_data,
        final_msi_stage=final_msi_stage, psf=psf, msi_pyramid=msi_pyramid, trace=trace, progress=progress,
        extra_iterations=int(coupled_steps), final_records=int(coupled_steps > 0),
        consistency_record=mode is not None,
    )
    if coupled_steps:
        schedule.coupled_steps(int(coupled_steps))
    state, data = schedule.state, schedule.data
    if mode == "guided" and denoise:  # the level the MSI residual is denoised at (as SCALMU's start sets it)
        levels = noise_levels(problem.lr_hsi, problem.hr_msi)
        data.msi_noise_level = torch.tensor([common_noise_level(levels)], dtype=tdtype, device=device)
    if mode is not None:
        z = consistency_stage.project_plain(schedule, mode)
        consistency_stage.record_stage(schedule, z, f"consistency ({mode})")
    else:
        z = state.fused()
    if progress is not None:
        progress(schedule.total, schedule.total, {"stage": "done"})
    (big_h, big_w), (h, w), p = prepared.hr_size, prepared.lr_size, prepared.p
    z = z[0].reshape(-1, big_h, big_w).clamp_min(0)
    params = {
        "n_endmembers": p,
        "inner_iterations": schedule.inner,
        "outer_iterations": int(outer_iterations),
        "threshold": threshold,
        "sum_to_one": data.delta,
        "srf": "estimated (NNLS)" if prepared.srf_estimated else problem.srf.name,
        "psf": prepared.psf_note,
        "psf_option": psf,
        "msi_pyramid": [list(level) for level in _pyramid_levels(msi_pyramid)] or None,
        "coupled_steps": int(coupled_steps),
        "consistency": mode or False,
        "denoise": bool(denoise) and mode == "guided",
        "dtype": dtype,
        "seed": seed,
    }
    from ..srf import SRF

    result_srf = None
    if prepared.srf_estimated:
        result_srf = SRF.from_matrix(data.srf[0].double().cpu().numpy(), problem.wavelength,
                                     name="estimated by CNMF (NNLS)")
    return FusionResult(
        from_tensor(z, problem.lr_hsi),
        "cnmf",
        params=params,
        psf=prepared.spatial.kernel.numpy() if prepared.psf_note != "known" else None,
        trace=trace.steps,
        stages=trace.finish(schedule.iteration),
        endmembers=state.endmembers[0].float().cpu().numpy(),
        abundances=state.abundances[0].float().cpu().numpy().reshape(p, big_h, big_w),
        srf=result_srf,
        extras={
            "vca_pixels": prepared.vca_pixels,
            "iterations": schedule.iteration,
            "costs": costs,
            "abundances_lr": state.abundances_lr[0].float().cpu().numpy().reshape(p, h, w),
            "srf_matrix": data.srf[0].double().cpu().numpy(),
            "msi_offset": prepared.offset,
        },
    )


def _pyramid_levels(pyramid) -> list[tuple[int, int]]:
    """Validated ``msi_pyramid``: ``[(factor, iterations), ...]``, factors decreasing to 1."""
    if pyramid is None:
        return []
    try:
        levels = [(int(f), int(n)) for f, n in pyramid]
        ok = all(int(f) == f and int(n) == n for f, n in pyramid)
    except (TypeError, ValueError):
        levels, ok = [], False
    ok = ok and bool(levels) and levels[-1][0] == 1 and all(n >= 1 for _, n in levels)
    ok = ok and all(a[0] > b[0] for a, b in pairwise(levels))
    if not ok:
        raise ProblemError(
            "msi_pyramid must be a list of [factor, iterations] pairs with decreasing factors ending at 1 and "
            f"iterations >= 1, e.g. [[4, 300], [2, 60], [1, 20]]; got {pyramid!r}")
    return levels
