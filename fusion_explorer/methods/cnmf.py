"""CNMF: coupled non-negative matrix factorisation (Yokoya, Yairi & Iwasaki, IEEE TGRS 50(2), 2012).

The LR-HSI is unmixed as ``Y_h ≈ W H_h`` and the HR-MSI as ``Y_m ≈ (R W) H_m`` by alternating
multiplicative updates (the shared step in :mod:`.unmixing`); the two unmixings are coupled
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..cube import from_tensor
from ..errors import ProblemError
from ..physics import SpatialDegradation, default_kernel_size, gaussian_kernel
from ..problem import FusionProblem, FusionResult
from .base import ProgressCallback, register
from .consistency import project, spectral_prior
from .guided import data_neighbours
from .unmixing import (
    CoupledData,
    CoupledState,
    abundance_denominator,
    abundance_numerator,
    abundance_terms,
    couple_to_hsi,
    couple_to_msi,
    endmember_terms,
    estimate_gaussian_psf,
    estimate_srf,
    flat_adjoint,
    flat_degradation,
    multiplicative,
    sum_to_one_rows,
    tiny,
    vca,
    virtual_dimensionality,
)

#: the sum-to-one weight of the released code: ``2 sqrt(mean(Y_m) / 0.7455) / l^3``
SUM_TO_ONE_SCALE = 0.7455
#: MSI band count above which the MSI-side endmembers (and, in the outer loop, ``H_h``) are updated
MIN_MSI_BANDS = 3
#: inner loops evaluate their cost (for the stopping rule) every this many iterations
CHECK_EVERY = 10
#: pixels per tile in the pixel-wise ``H_m`` loop (``p x 16384`` float32 abundances: ~2 MB, in
#: cache); 0 runs that loop on the whole image instead (the reference the tiled loop is tested against)
TILE_PIXELS = 16384


def default_spatial_operator(ratio: int) -> SpatialDegradation:
    """The paper's PSF when none is known: a Gaussian of FWHM = ``ratio`` HR pixels."""
    sigma = ratio / (2 * math.sqrt(2 * math.log(2)))
    size = default_kernel_size(sigma, ratio)
    return SpatialDegradation(gaussian_kernel(size, sigma), ratio, (ratio - 1) // 2, "reflect")


def spatial_model(problem: FusionProblem, psf: str = "estimate") -> tuple[SpatialDegradation, str]:
    """The spatial degradation CNMF couples with, and how it was obtained: the problem's PSF when
    known, else a Gaussian fitted to the data (``psf="estimate"``) or the paper's (``"paper"``)."""
    spatial = problem.spatial_operator()
    if spatial is not None:
        return spatial, "known"
    if psf == "paper":
        return default_spatial_operator(problem.ratio), "Gaussian, FWHM = ratio (paper default)"
    sigma, offset, misfit = estimate_gaussian_psf(problem.lr_hsi.values, problem.hr_msi.values, problem.ratio)
    kernel = gaussian_kernel(default_kernel_size(sigma, problem.ratio), sigma)
    note = f"estimated Gaussian, sigma {sigma:.3f}, offset {offset} (relative misfit {misfit:.2e})"
    return SpatialDegradation(kernel, problem.ratio, offset, "reflect"), note


def flat_images(problem: FusionProblem, device, dtype: torch.dtype):
    """The problem's images as batch-of-one flat tensors for :mod:`.unmixing`:
    ``(Y_h (1, L, n), Y_m (1, l, N), (h, w), (H, W))``."""
    lr, msi = problem.tensors(device, dtype)
    return lr.flatten(1)[None], msi.flatten(1)[None], tuple(lr.shape[1:]), tuple(msi.shape[1:])


def default_n_endmembers(lr_hsi: np.ndarray) -> int:
    """``max(min(30, L), VD)`` as in the authors' code (VD at false-alarm 0.05), at most ``min(L, n)``."""
    bands, n = lr_hsi.shape
    return max(1, min(max(min(30, bands), virtual_dimensionality(lr_hsi, 5e-2)), bands, n))


class _Trace:
    """Records iterates at log-spaced iterations of every stage, within a memory budget.

    HR abundances are the big item (``p x N`` floats). A snapshot is copied only when they changed
    since the last record (the HSI stages leave them alone, so those records are nearly free), and
    only while the budget lasts; stage ends are always recorded (room for them is reserved).
    """

    def __init__(self, budget_bytes: float, shape, p: int, stage_length: int, n_forced: int):
        (big_h, big_w), (h, w) = shape
        self.points = set(np.unique(np.round(np.geomspace(1, max(stage_length, 1), 24)).astype(int)).tolist())
        self.budget = budget_bytes
        self.snapshot_bytes = p * big_h * big_w * 4  # HR abundances, float32
        self.small_bytes = 0  # endmembers + LR abundances, set on the first record
        self.n_forced = n_forced  # forced records still to come (each may need a snapshot)
        self.used = 0
        self.steps: list[dict] = []
        self.shape = shape  # (Y, X), (y, x)
        self._last_h = None
        self._last_h_version = -1

    def wants(self, stage_iteration: int) -> bool:
        return stage_iteration in self.points

    def record(self, iteration: int, label: str, state: CoupledState, h_version: int, info, force: bool) -> None:
        (big_h, big_w), (h, w) = self.shape
        self.small_bytes = (state.endmembers[0].numel() + state.abundances_lr[0].numel()) * 4
        new_h = h_version != self._last_h_version
        cost = self.small_bytes + (self.snapshot_bytes if new_h else 0)
        if force:
            self.n_forced = max(self.n_forced - 1, 0)
        reserve = self.n_forced * (self.snapshot_bytes + self.small_bytes)
        if self.used + cost + reserve > self.budget:
            return
        self.used += cost
        if new_h:
            self._last_h = state.abundances[0].float().cpu().numpy().reshape(-1, big_h, big_w)
            self._last_h_version = h_version
        self.steps.append(
            {
                "iteration": iteration,
                "label": label,
                "endmembers": state.endmembers[0].float().cpu().numpy(),
                "abundances": self._last_h,
                "abundances_lr": state.abundances_lr[0].float().cpu().numpy().reshape(-1, h, w),
                **info(state),
            }
        )


@register("cnmf", "coupled NMF unmixing (Yokoya et al. 2012): interpretable endmembers and abundances", iterative=True)
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
    trace_budget_mb: float = 256.0,
    final_msi_stage: bool = False,
    psf: str = "estimate",
    msi_pyramid: Sequence[Sequence[int]] | None = None,
    consistency: bool | str = False,
) -> FusionResult:
    """Fuse by coupled NMF.

    Options (defaults follow the paper and the authors' released code):

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
      ``psf="paper"`` takes the paper's Gaussian of FWHM = ``ratio``. The estimate matters: on the
      CAVE x32 protocol (sigma 2) the paper's FWHM-32 Gaussian costs about 13 dB.
    - ``dtype``: ``"float32"`` (default) or ``"float64"``; ``seed`` drives VCA.
    - ``trace_budget_mb``: memory for the recorded iterates (HR abundances dominate).
    - ``final_msi_stage``: whether the last outer round ends with an MSI unmixing stage. The
      released code (one outer round) returns ``W`` of that round's HSI stage times ``H_m`` of the
      stage before, so its last MSI stage never reaches the output; ``False`` (default) does the
      same without computing it. ``True`` follows the paper's diagram literally; on the full CAVE
      scenes it scored 0.0–1.4 dB lower at x8 (see benchmarks/RESULTS.md).
    - ``msi_pyramid``: ``None`` (default) runs the first MSI stage at full resolution as in the
      paper (``2·inner - 1`` updates of ``H_m``). A list of ``(factor, iterations)`` pairs, the last
      factor 1, runs it coarse to fine instead: on the MSI averaged over ``factor x factor``
      blocks, from the upsampled ``H_h`` for the first level and the previous level's ``H_m``
      after. Each pixel's MSI problem is its own, so a coarse solution is a close start for its
      neighbours: ``[[4, 300], [2, 60], [1, 20]]`` costs about 54 full-resolution updates instead
      of 399 (0.5–0.8 s instead of 3.9–6.3 s for the stage on a 512x512 scene here). It costs
      quality: on full CAVE scenes 0.1 dB at x8 (balloons) and 0.35–1.2 dB at x32 (balloons,
      chart_and_stuffed_toy); on 128x128 crops 0.4–2.2 dB, and more on the small remote crops.
      SCALMU's start uses ``[[4, 200], [2, 100], [1, 40]]`` on images from 256x256 pixels up.
    - ``consistency``: ``False`` (default) returns the paper's output ``W H_m``. ``"projection"``
      moves it onto both images afterwards (:func:`.consistency.project` with the endmembers'
      spectral prior: the smallest change with ``R Z = Y_m`` and ``S Z = Y_h``); ``"guided"`` (or
      ``True``) first carries the LR-HSI residual to the HR pixels of the same colour
      (:mod:`.guided`). Neither is part of the paper: they are SCALMU's last layer without its
      learned steps, here to compare with (full CAVE scenes: 42.4 → 46.1 / 49.0 dB at x8, 43.5 →
      44.5 / 45.0 dB at x32, benchmarks/RESULTS.md). The output is then no longer ``W H_m``:
      ``endmembers`` and ``abundances`` stay those of the unmixing.

    ``progress(done, total, info)`` is called every few iterations; raising from it cancels.
    """
    if consistency not in (False, True, "projection", "guided"):
        raise ProblemError(f"consistency must be False, 'projection' or 'guided' (True); got {consistency!r}")
    if psf not in ("estimate", "paper"):
        raise ProblemError(f"psf must be 'estimate' or 'paper' (used when the problem has no PSF); got {psf!r}")
    if dtype not in ("float32", "float64"):
        raise ProblemError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    for name, value in (("inner_iterations", inner_iterations), ("outer_iterations", outer_iterations)):
        if int(value) != value or value < (1 if name == "inner_iterations" else 0):
            raise ProblemError(f"{name} must be a {'positive' if name == 'inner_iterations' else 'non-negative'} "
                               f"integer; got {value!r}")
    inner, outer = int(inner_iterations), int(outer_iterations)
    levels = _pyramid_levels(msi_pyramid)

    y_h, y_m, (h, w), (big_h, big_w) = flat_images(problem, device, tdtype)
    bands, msi_bands = y_h.shape[1], y_m.shape[1]
    n, big_n = h * w, big_h * big_w
    if float(y_h.amax()) <= 0 or float(y_m.amax()) <= 0:
        raise ProblemError("CNMF needs signal: the LR-HSI or the HR-MSI is all zero")
    if float((y_h - y_h.mean(dim=-1, keepdim=True)).abs().amax()) <= 1e-6 * float(y_h.amax()):
        raise ProblemError("the LR-HSI is spatially constant: there is nothing to unmix (CNMF needs >= 2 spectra)")

    spatial, psf_note = spatial_model(problem, psf)
    degrade = flat_degradation(spatial, (big_h, big_w))

    # --- the SRF: known, or estimated by NNLS (and the MSI offset removed) -------------------
    srf_estimated = problem.srf is None or estimate_srf_from_data
    offset = None
    if srf_estimated:
        r, offset = estimate_srf(y_h[0].double().cpu().numpy(), degrade(y_m)[0].double().cpu().numpy())
        y_m = (y_m - torch.as_tensor(offset, dtype=tdtype, device=device).view(1, -1, 1)).clamp_min(0)
        srf = torch.as_tensor(r, dtype=tdtype, device=device)[None]
    else:
        srf = torch.tensor(np.asarray(problem.srf.matrix), dtype=tdtype, device=device)[None]

    # --- number of endmembers and VCA ----------------------------------------------------------
    y_h_np = y_h[0].double().cpu().numpy()
    if n_endmembers is None:
        p = default_n_endmembers(y_h_np)
    elif n_endmembers == "vd":
        p = max(1, min(virtual_dimensionality(y_h_np, 5e-2), bands, n))
    else:
        if isinstance(n_endmembers, str) or int(n_endmembers) != n_endmembers or n_endmembers < 1:
            raise ProblemError(f"n_endmembers must be a positive integer, 'vd' or None; got {n_endmembers!r}")
        p = int(n_endmembers)
        if p > min(bands, n):
            raise ProblemError(
                f"n_endmembers = {p} is more than the LR-HSI can support: it has {bands} bands and {n} pixels "
                f"(at most {min(bands, n)} endmembers)"
            )
    w0, vca_pixels = vca(y_h_np, p, seed)
    w0 = np.maximum(w0, 1e-6 * max(float(w0.max()), 1e-12))
    delta = (
        float(sum_to_one)
        if sum_to_one is not None
        else 2 * math.sqrt(float(y_m.mean()) / SUM_TO_ONE_SCALE) / msi_bands**3
    )
    data = CoupledData(y_h, y_m, srf, degrade, delta, flat_adjoint(spatial, (h, w)))
    W = torch.as_tensor(w0, dtype=tdtype, device=device)[None]
    state = CoupledState(
        endmembers=W,
        abundances_lr=torch.full((1, p, n), 1.0 / p, dtype=tdtype, device=device),
        abundances=torch.zeros((1, p, 1), dtype=tdtype, device=device),  # set in the MSI stage
        msi_endmembers=srf @ W,
    )
    update_msi_side = msi_bands > MIN_MSI_BANDS

    # --- bookkeeping: progress, trace ----------------------------------------------------------
    msi_init_iterations = sum(n for _, n in levels) if levels else 2 * inner
    max_iterations = (3 * inner + inner) + msi_init_iterations + outer * 4 * inner
    n_forced = 2 + 2 * outer  # records at stage ends and after the H_m initialisation
    trace = _Trace(trace_budget_mb * 2**20, ((big_h, big_w), (h, w)), p, 3 * inner, n_forced)
    counter = {"iteration": 0, "h_version": 0}
    yy_h = float(y_h.double().square().sum())
    yy_m = float(y_m.double().square().sum())

    def objective(st: CoupledState) -> dict:
        """The coupled objective ``||Y_h - W S(H_m)||² + ||Y_m - R W H_m||²`` and both relative residuals."""
        res_h = float((y_h - st.endmembers @ st.abundances_lr).double().square().sum())
        res_m = float((y_m - st.msi_endmembers @ st.abundances).double().square().sum())
        coupled_h = float((y_h - st.endmembers @ degrade(st.abundances)).double().square().sum())
        coupled_m = float((y_m - (srf @ st.endmembers) @ st.abundances).double().square().sum())
        return {
            "objective": coupled_h + coupled_m,
            "residual_hsi": math.sqrt(res_h / yy_h),
            "residual_msi": math.sqrt(res_m / yy_m),
        }

    def tick(stage: str, st: CoupledState, force: bool = False, stage_iteration: int = 0, report: bool = False) -> None:
        it = counter["iteration"]
        if (force or trace.wants(stage_iteration)) and st.abundances.shape[-1] == big_n:
            trace.record(it, f"{stage} · iteration {it}", st, counter["h_version"], objective, force)
        if progress is not None and (force or report or it % 10 == 0):
            progress(it, max_iterations, {"stage": stage})

    def inner_loop(stage: str, st: CoupledState, steps, max_iter: int) -> tuple[CoupledState, float]:
        """Run ``steps`` (update functions ``(state, want_cost) -> (state, cost)``) until the cost stalls.

        The cost is evaluated every ``CHECK_EVERY`` iterations (from the update's own terms) and
        the loop stops when its relative decrease per iteration falls below ``threshold``.
        """
        cost0, cost = math.inf, math.inf
        for q in range(max_iter):
            want = q % CHECK_EVERY == 0 or q == max_iter - 1
            for step in steps:
                st, c = step(st, want)
                cost = c if c is not None else cost
            counter["iteration"] += 1
            tick(stage, st, stage_iteration=q + 1)
            if want and q > 0:
                if (cost0 - cost) / max(cost, 1e-300) < threshold * CHECK_EVERY:
                    break
                cost0 = cost
            elif want:
                cost0 = cost
        return st, cost

    # Update functions return the new state and, when asked, the cost *of the iterate they started
    # from*, computed from the update's own terms (no extra pass over the data).
    def w_step(st: CoupledState, want: bool) -> tuple[CoupledState, float | None]:
        num, den = endmember_terms(y_h, st.endmembers, st.abundances_lr)
        cost = yy_h - 2 * _dot(st.endmembers, num) + _dot(st.endmembers, den) if want else None
        return replace(st, endmembers=multiplicative(st.endmembers, num, den)), cost

    def h_lr_step(st: CoupledState, want: bool) -> tuple[CoupledState, float | None]:
        num, den = abundance_terms(y_h, st.endmembers, st.abundances_lr, delta)
        cost = yy_h + delta**2 * n - 2 * _dot(st.abundances_lr, num) + _dot(st.abundances_lr, den) if want else None
        return replace(st, abundances_lr=multiplicative(st.abundances_lr, num, den)), cost

    def msi_steps(y: torch.Tensor):
        """The MSI-side update functions ``(w_m_step, h_m_step)`` on the MSI ``y`` ``(1, l, pixels)``
        (the full one, or a pyramid level of it)."""
        yy = float(y.double().square().sum())
        pixels = y.shape[-1]
        cache: dict[str, Any] = {}

        def w_m_step(st: CoupledState, want: bool) -> tuple[CoupledState, float | None]:
            num, den = endmember_terms(y, st.msi_endmembers, st.abundances)
            cost = yy - 2 * _dot(st.msi_endmembers, num) + _dot(st.msi_endmembers, den) if want else None
            cache.pop("num", None)
            return replace(st, msi_endmembers=multiplicative(st.msi_endmembers, num, den)), cost

        def h_m_step(st: CoupledState, want: bool) -> tuple[CoupledState, float | None]:
            num, den = abundance_terms(y, st.msi_endmembers, st.abundances, delta, cache.get("num"))
            cache["num"] = num  # constant while W_m is
            cost = yy + delta**2 * pixels - 2 * _dot(st.abundances, num) + _dot(st.abundances, den) if want else None
            counter["h_version"] += 1
            # the hot loop: same as multiplicative(), with the denominator floored in place (it is
            # this step's own temporary) to spare a p x pixels allocation per iteration
            h_new = st.abundances.mul(num).div_(den.clamp_min_(tiny(den.dtype)))
            return replace(st, abundances=h_new), cost

        return w_m_step, h_m_step

    def h_m_loop(stage: str, st: CoupledState, y: torch.Tensor, max_iter: int) -> tuple[CoupledState, float]:
        """``inner_loop(stage, st, [h_m_step], max_iter)`` with ``W_m`` fixed (an RGB MSI), tile by tile.

        With ``W_m`` fixed each pixel's update reads only that pixel, so between the iterations
        where the loop must see the whole image (the stopping rule's cost checks, trace records)
        each tile of :data:`TILE_PIXELS` pixels runs all its updates while it sits in cache,
        adding its share of the check's cost on the way. The whole-image loop streams ``p x N``
        floats through memory several times per update; tiled, the same updates ran 2–3x faster
        on a 512x512 scene here. Iterates and the stopping point are those of the whole-image loop
        (the per-pixel arithmetic is the same; only the float64 cost sums are added in another
        order). On a GPU the whole image is one tile: bandwidth is plenty there, launches are not.
        """
        w = st.msi_endmembers
        yy, pixels = float(y.double().square().sum()), y.shape[-1]
        num = abundance_numerator(y, w, delta)
        # The tiles live as separate contiguous tensors for the whole loop, updated in place into
        # buffers made once: copying strided slices at every check, or allocating p x tile
        # temporaries at every update (each a fresh mmap and page faults for glibc), cost more
        # than the tiling saves.
        tile = TILE_PIXELS if st.abundances.device.type == "cpu" else pixels
        tiles = [t.clone(memory_format=torch.contiguous_format) for t in st.abundances.split(tile, dim=-1)]
        nums = [t.contiguous() for t in num.split(tile, dim=-1)]
        w_aug = sum_to_one_rows(w, delta)
        dens = [torch.empty_like(t) for t in tiles]
        mids = [t.new_empty((*t.shape[:-2], w_aug.shape[-2], t.shape[-1])) for t in tiles]
        checked = [torch.empty_like(t) for t in tiles]  # the tiles after a check's update
        floor = tiny(w.dtype)
        cost0, cost, q = math.inf, math.inf, 0
        while q < max_iter:
            check = q % CHECK_EVERY == 0 or q == max_iter - 1
            end = q + 1  # updates q .. end-1, up to the next check or trace record
            while end % CHECK_EVERY and end < max_iter - 1 and not trace.wants(end):
                end += 1
            dots = [0.0, 0.0]  # <H, num>, <H, den> of the iterate update q starts from
            for h_t, num_t, den_t, mid_t, check_t in zip(tiles, nums, dens, mids, checked, strict=True):
                for k in range(end - q):
                    abundance_denominator(w_aug, h_t, out=den_t, mid=mid_t)
                    if check and k == 0:
                        dots[0] += _dot(h_t, num_t)
                        dots[1] += _dot(h_t, den_t)
                    h_t.mul_(num_t).div_(den_t.clamp_min_(floor))  # = multiplicative(h_t, num_t, den_t)
                    if check and k == 0:
                        check_t.copy_(h_t)
            stop = False
            if check:
                cost = yy + delta**2 * pixels - 2 * dots[0] + dots[1]
                stop = q > 0 and (cost0 - cost) / max(cost, 1e-300) < threshold * CHECK_EVERY
                if stop:  # stop after update q, as inner_loop does
                    end, tiles = q + 1, checked
                cost0 = cost
            counter["iteration"] += end - q
            counter["h_version"] += end - q
            if stop or end >= max_iter or trace.wants(end):
                st = replace(st, abundances=torch.cat(tiles, dim=-1))
            tick(stage, st, stage_iteration=end, report=True)
            if stop:
                break
            q = end
        return st, cost

    def msi_loop(stage: str, st: CoupledState, y: torch.Tensor, max_iter: int, with_w_m: bool):
        """MU of ``H_m`` (and of ``W_m`` too when ``with_w_m``) on the MSI ``y``: pixel-wise
        (:func:`h_m_loop`) wherever ``W_m`` stays fixed, i.e. with an RGB MSI."""
        if update_msi_side or not TILE_PIXELS:
            w_m_step, h_m_step = msi_steps(y)
            return inner_loop(stage, st, [w_m_step, h_m_step] if with_w_m else [h_m_step], max_iter)
        return h_m_loop(stage, st, y, max_iter)

    def msi_stage(st: CoupledState, label: str) -> tuple[CoupledState, float]:
        st, _ = msi_loop(label, st, y_m, inner, with_w_m=False)
        st, cost = msi_loop(label, st, y_m, inner - 1, with_w_m=update_msi_side)
        tick(label, st, force=True)
        return st, cost

    def msi_pyramid_stage(st: CoupledState, label: str) -> tuple[CoupledState, float]:
        """The first MSI stage coarse to fine (``msi_pyramid``); ``st.abundances`` is ``H_h``."""
        image = y_m.reshape(1, msi_bands, big_h, big_w)
        current, size = st.abundances_lr.reshape(1, p, h, w), (h, w)
        cost = math.nan
        for factor, iterations in levels:
            size = (max(big_h // factor, 1), max(big_w // factor, 1))
            y = F.adaptive_avg_pool2d(image, size) if factor > 1 else image
            current = F.interpolate(current, size=size, mode="bilinear", align_corners=False).clamp_min(0)
            st = replace(st, abundances=current.reshape(1, p, -1))
            level = f"{label} · 1/{factor} resolution"
            st, cost = msi_loop(level, st, y.reshape(1, msi_bands, -1), iterations, with_w_m=update_msi_side)
            current = st.abundances.reshape(1, p, *size)
        tick(label, st, force=True)
        return st, cost

    # 1. HSI initialisation
    state, _ = inner_loop("HSI unmixing (init)", state, [h_lr_step], 3 * inner)
    state, cost_h = inner_loop("HSI unmixing (init)", state, [w_step, h_lr_step], inner - 1)
    # 2. MSI initialisation: W_m = R W, H_m from the upsampled H_h
    state = couple_to_msi(state, data)
    if levels:
        state, cost_m = msi_pyramid_stage(state, "MSI unmixing (init)")
    else:
        h_up = F.interpolate(state.abundances_lr.reshape(1, p, h, w), size=(big_h, big_w), mode="bilinear",
                             align_corners=False).clamp_min(0)
        state = replace(state, abundances=h_up.reshape(1, p, big_n))
        counter["h_version"] += 1
        tick("HSI unmixing (init)", state, force=True)
        state, cost_m = msi_stage(state, "MSI unmixing (init)")
    costs = [(cost_h, cost_m)]
    # 3. outer coupling rounds
    for k in range(outer):
        state = couple_to_hsi(state, data)
        label = f"HSI unmixing (round {k + 1})"
        state, _ = inner_loop(label, state, [w_step], inner)
        state, cost_h = inner_loop(label, state, [h_lr_step, w_step] if update_msi_side else [w_step], inner - 1)
        state = couple_to_msi(state, data)
        tick(label, state, force=True)
        if k == outer - 1 and not final_msi_stage:
            costs.append((cost_h, math.nan))
            break
        state, cost_m = msi_stage(state, f"MSI unmixing (round {k + 1})")
        prev_h, prev_m = costs[-1]
        costs.append((cost_h, cost_m))
        if (prev_h - cost_h) / cost_h <= outer_threshold or (prev_m - cost_m) / cost_m <= outer_threshold:
            break
    if progress is not None:
        progress(max_iterations, max_iterations, {"stage": "done"})

    z = state.fused()
    if consistency:
        nb = None
        if consistency is True or consistency == "guided":
            nb = data_neighbours(data, (big_h, big_w), (h, w), spatial.ratio, spatial.offset)
        z = project(z, data, spectral_prior(state.endmembers), neighbours=nb)
    z = z[0].reshape(bands, big_h, big_w).clamp_min(0)
    endmembers = state.endmembers[0].float().cpu().numpy()
    abundances = state.abundances[0].float().cpu().numpy().reshape(p, big_h, big_w)
    params = {
        "n_endmembers": p,
        "inner_iterations": inner,
        "outer_iterations": outer,
        "threshold": threshold,
        "sum_to_one": delta,
        "srf": "estimated (NNLS)" if srf_estimated else problem.srf.name,
        "psf": psf_note,
        "psf_option": psf,
        "msi_pyramid": [list(level) for level in levels] or None,
        "consistency": "guided" if consistency is True else consistency,
        "dtype": dtype,
        "seed": seed,
    }
    from ..srf import SRF

    result_srf = None
    if srf_estimated:
        result_srf = SRF.from_matrix(srf[0].double().cpu().numpy(), problem.wavelength, name="estimated by CNMF (NNLS)")
    return FusionResult(
        from_tensor(z, problem.lr_hsi),
        "cnmf",
        params=params,
        psf=spatial.kernel.numpy() if psf_note != "known" else None,
        trace=trace.steps,
        endmembers=endmembers,
        abundances=abundances,
        srf=result_srf,
        extras={
            "vca_pixels": vca_pixels,
            "iterations": counter["iteration"],
            "costs": costs,
            "abundances_lr": state.abundances_lr[0].float().cpu().numpy().reshape(p, h, w),
            # the coupling actually used, for methods that start from CNMF (SCALMU)
            "srf_matrix": srf[0].double().cpu().numpy(),
            "msi_offset": offset,
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


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """``<a, b>`` accumulated in float64 (costs are small differences of large sums)."""
    return float(torch.sum(a * b, dtype=torch.float64))
