"""CNMF's schedule of the shared multiplicative step: one method of :class:`Schedule` per stage.

Stages (Yokoya, Yairi & Iwasaki 2012, Fig. 2, with the defaults of the authors' released code),
each recorded as a trace stage in one iteration numbering (one count per MU iteration):

1. ``HSI init`` (:meth:`Schedule.hsi_init`): ``H_h`` alone (up to ``3 x inner`` iterations), then
   ``W`` and ``H_h`` alternately (up to ``inner``), from VCA's ``W`` and ``H_h = 1/p``.
2. ``MSI init`` (:meth:`Schedule.msi_init`): ``W_m = R W``; ``H_m`` = bilinear upsampling of
   ``H_h``; ``H_m`` alone (up to ``inner``), then ``H_m`` (and ``W_m`` when the MSI has more than 3
   bands) alternately; or coarse to fine over a pyramid of the MSI.
3. ``round k`` (:meth:`Schedule.rounds`): ``H_h = S H_m``; ``W`` alone, then ``W`` (and ``H_h``)
   alternately on ``Y_h``; ``W_m = R W``; then the MSI stage as in 2 (skipped in the last round by
   default); stop early when either cost improves by less than ``outer_threshold`` (relative).
4. ``coupled steps`` / SCALMU's ``layers`` (:meth:`Schedule.coupled_steps`): single coupled
   iterations :func:`.step.coupled_step` (``H_h ← S H_m``; one MU of ``W``; ``W_m ← R W``; one MU
   of ``H_m``), optionally re-weighted by a learned hook: what SCALMU unrolls.

Each inner loop stops when the relative decrease of its cost falls below ``threshold``; the cost
is evaluated every :data:`CHECK_EVERY` iterations from the update's own terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .setup import MIN_MSI_BANDS, Prepared
from .step import (
    CoupledState,
    Hook,
    abundance_denominator,
    abundance_numerator,
    abundance_terms,
    couple_to_hsi,
    couple_to_msi,
    coupled_step,
    endmember_terms,
    multiplicative,
    sum_to_one_rows,
    tiny,
)
from .trace import TraceRecorder, log_points

#: inner loops evaluate their cost (for the stopping rule) every this many iterations
CHECK_EVERY = 10
#: pixels per tile in the pixel-wise ``H_m`` loop (``p x 16384`` float32 abundances: ~2 MB, in
#: cache); 0 runs that loop on the whole image instead (the reference the tiled loop is tested against)
TILE_PIXELS = 16384
#: recorded iterations of the HSI initialisation (log-spaced; each holds an HR snapshot, the
#: upsampled ``H_h``, so fewer than the other stages' 24)
HSI_INIT_POINTS = 6

#: ``layer(k) -> (hook, hsi_weight, parts)`` for :meth:`Schedule.coupled_steps`: layer ``k``'s
#: hook (``None`` = plain MU), the joint update's LR-HSI weight (0 = the MSI alone, as CNMF) and a
#: function called after the step that returns extra keys for the layer's trace step
Layer = Callable[[int], tuple[Hook | None, Any, Callable[[], dict]]]


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """``<a, b>`` accumulated in float64 (costs are small differences of large sums)."""
    return float(torch.sum(a * b, dtype=torch.float64))


class Schedule:
    """The iterate of one CNMF run and the stages that move it (see the module docstring).

    ``iteration`` counts MU iterations across the whole run; ``trace`` records steps and stages
    within its budget; ``progress(done, total, info)`` is called every few iterations.
    """

    def __init__(self, prepared: Prepared, *, inner: int, threshold: float = 1e-8,
                 trace: TraceRecorder | None = None, progress=None, total: int = 0):
        self.data, self.state = prepared.data, prepared.state
        self.spatial = prepared.spatial
        self.hr_size, self.lr_size = prepared.hr_size, prepared.lr_size
        self.p = prepared.p
        self.inner, self.threshold = int(inner), float(threshold)
        self.delta = self.data.delta
        self.update_msi_side = self.data.hr_msi.shape[1] > MIN_MSI_BANDS
        self.trace = trace if trace is not None else TraceRecorder(0.0)
        self.progress, self.total = progress, int(total)
        self.iteration = 0
        self.h_version = 0  # bumped whenever H_m changes (a trace snapshot is copied only then)
        self.points = log_points(3 * self.inner)
        self.yy_h = float(self.data.lr_hsi.double().square().sum())
        self.yy_m = float(self.data.hr_msi.double().square().sum())
        self._last_h: np.ndarray | None = None
        self._last_h_version = -1
        self._coarse = False  # inside a pyramid level below full resolution

    # --- bookkeeping ----------------------------------------------------------------------------
    @property
    def big_n(self) -> int:
        return self.hr_size[0] * self.hr_size[1]

    def snapshot_bytes(self) -> int:
        """Bytes of one record with new HR abundances (float32)."""
        n = self.lr_size[0] * self.lr_size[1]
        return 4 * self.p * (self.big_n + n + self.data.lr_hsi.shape[1])

    def objective(self, st: CoupledState) -> dict:
        """The coupled objective ``||Y_h - W S(H_m)||² + ||Y_m - R W H_m||²`` and both relative residuals."""
        d = self.data
        res_h = float((d.lr_hsi - st.endmembers @ st.abundances_lr).double().square().sum())
        res_m = float((d.hr_msi - st.msi_endmembers @ st.abundances).double().square().sum())
        coupled_h = float((d.lr_hsi - st.endmembers @ d.degrade(st.abundances)).double().square().sum())
        coupled_m = float((d.hr_msi - (d.srf @ st.endmembers) @ st.abundances).double().square().sum())
        return {
            "objective": coupled_h + coupled_m,
            "residual_hsi": math.sqrt(res_h / self.yy_h),
            "residual_msi": math.sqrt(res_m / self.yy_m),
        }

    def upsampled(self, st: CoupledState) -> CoupledState:
        """``st`` with ``H_m`` = bilinear upsampling of ``H_h`` and ``W_m = R W`` (how the MSI stage starts)."""
        (h, w), size = self.lr_size, self.hr_size
        h_up = F.interpolate(st.abundances_lr.reshape(1, self.p, h, w), size=size, mode="bilinear",
                             align_corners=False).clamp_min(0)
        return replace(st, abundances=h_up.reshape(1, self.p, self.big_n), msi_endmembers=self.data.srf @ st.endmembers)

    def record(self, label: str, st: CoupledState, *, forced: bool = False, **extra: Any) -> bool:
        """Offer the iterate ``st`` to the trace (before the HR abundances exist, with ``H_m`` =
        the upsampled ``H_h``); ``extra`` keys are added to the step. Returns whether it was kept."""
        hr = st.abundances.shape[-1] == self.big_n
        new_h = not hr or self.h_version != self._last_h_version
        (h, w), (big_h, big_w) = self.lr_size, self.hr_size
        small = 4 * self.p * (self.lr_size[0] * self.lr_size[1] + self.data.lr_hsi.shape[1])
        cost = small + (4 * self.p * self.big_n if new_h else 0) + self.trace.cost(extra)
        if not self.trace.room(cost, forced=forced):
            self.trace.skip(forced=forced)
            return False
        view = st if hr else self.upsampled(st)
        if new_h:
            abundances = view.abundances[0].float().cpu().numpy().reshape(-1, big_h, big_w)
            if hr:
                self._last_h, self._last_h_version = abundances, self.h_version
        else:
            abundances = self._last_h
        step = {
            "iteration": self.iteration,
            "label": label,
            "endmembers": st.endmembers[0].float().cpu().numpy(),
            "abundances": abundances,
            "abundances_lr": st.abundances_lr[0].float().cpu().numpy().reshape(-1, h, w),
            **self.objective(view),
            **extra,
        }
        return self.trace.add(step, forced=forced)

    def tick(self, label: str, st: CoupledState, *, forced: bool = False, at: int | None = None,
             points: set[int] | None = None, report: bool = False) -> None:
        """After an update: record when forced or when ``at`` (the iteration within the loop) is one
        of ``points`` (default the log-spaced :attr:`points`); report progress every 10 iterations."""
        wanted = forced or (at is not None and at in (self.points if points is None else points))
        if wanted and not self._coarse:  # pyramid levels below full resolution are not recorded
            self.record(f"{label} · iteration {self.iteration}", st, forced=forced)
        if self.progress is not None and (forced or report or self.iteration % 10 == 0):
            self.progress(self.iteration, self.total, {"stage": label})

    # --- update functions: (state, want_cost) -> (state, cost of the iterate they started from) ----
    def w_step(self, st: CoupledState, want: bool) -> tuple[CoupledState, float | None]:
        num, den = endmember_terms(self.data.lr_hsi, st.endmembers, st.abundances_lr)
        cost = self.yy_h - 2 * _dot(st.endmembers, num) + _dot(st.endmembers, den) if want else None
        return replace(st, endmembers=multiplicative(st.endmembers, num, den)), cost

    def h_lr_step(self, st: CoupledState, want: bool) -> tuple[CoupledState, float | None]:
        num, den = abundance_terms(self.data.lr_hsi, st.endmembers, st.abundances_lr, self.delta)
        n = st.abundances_lr.shape[-1]
        cost = (self.yy_h + self.delta**2 * n - 2 * _dot(st.abundances_lr, num) + _dot(st.abundances_lr, den)
                if want else None)
        return replace(st, abundances_lr=multiplicative(st.abundances_lr, num, den)), cost

    def msi_steps(self, y: torch.Tensor):
        """The MSI-side update functions ``(w_m_step, h_m_step)`` on the MSI ``y`` ``(1, l, pixels)``
        (the full one, or a pyramid level of it)."""
        yy, pixels, delta = float(y.double().square().sum()), y.shape[-1], self.delta
        cache: dict[str, Any] = {}  # the abundance numerator, constant while W_m is

        def w_m_step(st: CoupledState, want: bool) -> tuple[CoupledState, float | None]:
            num, den = endmember_terms(y, st.msi_endmembers, st.abundances)
            cost = yy - 2 * _dot(st.msi_endmembers, num) + _dot(st.msi_endmembers, den) if want else None
            cache.pop("num", None)
            return replace(st, msi_endmembers=multiplicative(st.msi_endmembers, num, den)), cost

        def h_m_step(st: CoupledState, want: bool) -> tuple[CoupledState, float | None]:
            num, den = abundance_terms(y, st.msi_endmembers, st.abundances, delta, cache.get("num"))
            cache["num"] = num
            cost = yy + delta**2 * pixels - 2 * _dot(st.abundances, num) + _dot(st.abundances, den) if want else None
            self.h_version += 1
            # the hot loop: multiplicative() with the denominator floored in place (its own temporary)
            h_new = st.abundances.mul(num).div_(den.clamp_min_(tiny(den.dtype)))
            return replace(st, abundances=h_new), cost

        return w_m_step, h_m_step

    # --- loops ----------------------------------------------------------------------------------
    def inner_loop(self, label: str, st: CoupledState, steps, max_iter: int,
                   points: set[int] | None = None) -> tuple[CoupledState, float]:
        """Run ``steps`` until the cost stalls (relative decrease per iteration below ``threshold``,
        checked every :data:`CHECK_EVERY` iterations) or ``max_iter`` iterations."""
        cost0, cost = math.inf, math.inf
        for q in range(max_iter):
            want = q % CHECK_EVERY == 0 or q == max_iter - 1
            for step in steps:
                st, c = step(st, want)
                cost = c if c is not None else cost
            self.iteration += 1
            self.tick(label, st, at=q + 1 if points is None else self.iteration, points=points)
            if want and q > 0:
                if (cost0 - cost) / max(cost, 1e-300) < self.threshold * CHECK_EVERY:
                    break
                cost0 = cost
            elif want:
                cost0 = cost
        return st, cost

    def h_m_loop(self, label: str, st: CoupledState, y: torch.Tensor, max_iter: int) -> tuple[CoupledState, float]:
        """The ``H_m`` inner loop with ``W_m`` fixed (an RGB MSI), tile by tile.

        With ``W_m`` fixed each pixel's update reads only that pixel, so between the iterations
        where the loop must see the whole image (cost checks, trace records) each tile of
        :data:`TILE_PIXELS` pixels runs all its updates while it sits in cache (2–3x faster than the
        whole-image loop on a 512x512 scene here). Iterates and the stopping point are those of the
        whole-image loop (only the float64 cost sums are added in another order). On a GPU the
        whole image is one tile: bandwidth is plenty there, launches are not.
        """
        delta = self.delta
        w = st.msi_endmembers
        yy, pixels = float(y.double().square().sum()), y.shape[-1]
        num = abundance_numerator(y, w, delta)
        # tiles live as separate contiguous tensors for the whole loop, updated in place into
        # buffers made once (copying strided slices or allocating temporaries costs more than tiling saves)
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
            while end % CHECK_EVERY and end < max_iter - 1 and end not in self.points:
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
                stop = q > 0 and (cost0 - cost) / max(cost, 1e-300) < self.threshold * CHECK_EVERY
                if stop:  # stop after update q, as inner_loop does
                    end, tiles = q + 1, checked
                cost0 = cost
            self.iteration += end - q
            self.h_version += end - q
            if stop or end >= max_iter or end in self.points:
                st = replace(st, abundances=torch.cat(tiles, dim=-1))
            self.tick(label, st, at=end, report=True)
            if stop:
                break
            q = end
        return st, cost

    def msi_loop(self, label: str, st: CoupledState, y: torch.Tensor, max_iter: int, with_w_m: bool):
        """MU of ``H_m`` (and of ``W_m`` too when ``with_w_m``) on the MSI ``y``: pixel-wise
        (:meth:`h_m_loop`) wherever ``W_m`` stays fixed, i.e. with an RGB MSI."""
        if self.update_msi_side or not TILE_PIXELS:
            w_m_step, h_m_step = self.msi_steps(y)
            return self.inner_loop(label, st, [w_m_step, h_m_step] if with_w_m else [h_m_step], max_iter)
        return self.h_m_loop(label, st, y, max_iter)

    def msi_stage(self, st: CoupledState, label: str) -> tuple[CoupledState, float]:
        st, _ = self.msi_loop(label, st, self.data.hr_msi, self.inner, with_w_m=False)
        st, cost = self.msi_loop(label, st, self.data.hr_msi, self.inner - 1, with_w_m=self.update_msi_side)
        self.tick(label, st, forced=True)
        return st, cost

    # --- stages ---------------------------------------------------------------------------------
    def hsi_init(self) -> float:
        """Stage 1; returns the HSI cost."""
        label = "HSI unmixing (init)"
        self.trace.begin("HSI init", self.iteration)
        points = log_points(4 * self.inner, HSI_INIT_POINTS)
        self.tick(label, self.state, at=0, points={0})
        st, _ = self.inner_loop(label, self.state, [self.h_lr_step], 3 * self.inner, points=points)
        st, cost_h = self.inner_loop(label, st, [self.w_step, self.h_lr_step], self.inner - 1, points=points)
        self.state = st
        return cost_h

    def msi_init(self, levels: list[tuple[int, int]] | None = None) -> float:
        """Stage 2, at full resolution or over the pyramid ``levels`` (``[(factor, iterations), ...]``
        ending at factor 1); returns the MSI cost."""
        st = couple_to_msi(self.state, self.data)
        if levels:
            self.trace.begin("MSI init", self.iteration)
            st, cost_m = self._msi_pyramid(st, "MSI unmixing (init)", levels)
        else:
            st = replace(st, abundances=self.upsampled(st).abundances)
            self.h_version += 1
            self.tick("HSI unmixing (init)", st, forced=True)
            self.trace.begin("MSI init", self.iteration)
            st, cost_m = self.msi_stage(st, "MSI unmixing (init)")
        self.state = st
        return cost_m

    def _msi_pyramid(self, st: CoupledState, label: str, levels) -> tuple[CoupledState, float]:
        """The first MSI stage coarse to fine; ``st.abundances`` starts as ``H_h`` upsampled per level."""
        (h, w), (big_h, big_w), p = self.lr_size, self.hr_size, self.p
        msi_bands = self.data.hr_msi.shape[1]
        image = self.data.hr_msi.reshape(1, msi_bands, big_h, big_w)
        current = st.abundances_lr.reshape(1, p, h, w)
        cost = math.nan
        for factor, iterations in levels:
            size = (max(big_h // factor, 1), max(big_w // factor, 1))
            y = F.adaptive_avg_pool2d(image, size) if factor > 1 else image
            current = F.interpolate(current, size=size, mode="bilinear", align_corners=False).clamp_min(0)
            st = replace(st, abundances=current.reshape(1, p, -1))
            level = f"{label} · 1/{factor} resolution"
            self._coarse = factor > 1
            st, cost = self.msi_loop(level, st, y.reshape(1, msi_bands, -1), iterations,
                                     with_w_m=self.update_msi_side)
            self._coarse = False
            current = st.abundances.reshape(1, p, *size)
        self.tick(label, st, forced=True)
        return st, cost

    def rounds(self, outer: int, costs: list[tuple[float, float]], outer_threshold: float = 1e-2,
               final_msi_stage: bool = False) -> list[tuple[float, float]]:
        """Stage 3: up to ``outer`` coupling rounds after the initial ``costs`` ``[(HSI, MSI)]``;
        returns the costs with one pair per round run (MSI ``nan`` when its stage was skipped)."""
        st = self.state
        for k in range(outer):
            self.trace.begin(f"round {k + 1}", self.iteration)
            st = couple_to_hsi(st, self.data)
            label = f"HSI unmixing (round {k + 1})"
            st, _ = self.inner_loop(label, st, [self.w_step], self.inner)
            steps = [self.h_lr_step, self.w_step] if self.update_msi_side else [self.w_step]
            st, cost_h = self.inner_loop(label, st, steps, self.inner - 1)
            st = couple_to_msi(st, self.data)
            self.tick(label, st, forced=True)
            if k == outer - 1 and not final_msi_stage:
                costs.append((cost_h, math.nan))
                break
            st, cost_m = self.msi_stage(st, f"MSI unmixing (round {k + 1})")
            prev_h, prev_m = costs[-1]
            costs.append((cost_h, cost_m))
            if (prev_h - cost_h) / cost_h <= outer_threshold or (prev_m - cost_m) / cost_m <= outer_threshold:
                break
        self.state = st
        return costs

    def coupled_steps(self, n: int, *, stage: str = "coupled steps", layer: Layer | None = None,
                      label: Callable[[int], str] | None = None, keep: set[int] | None = None) -> None:
        """Stage 4: ``n`` single coupled iterations (:func:`.step.coupled_step`), layer ``k`` with
        ``layer(k)``'s hook and LR-HSI weight (default: plain MU on the MSI alone, as CNMF); the
        steps ``k`` (1-based) in ``keep`` are offered to the trace (default all), the last forced.
        ``W_m`` and ``H_h`` are recoupled each time (``W_m = R W``, ``H_h = S H_m``)."""
        self.trace.begin(stage, self.iteration)
        keep = set(range(1, n + 1)) if keep is None else keep
        for k in range(n):
            hook, weight, parts = layer(k) if layer is not None else (None, 0.0, dict)
            self.state = coupled_step(self.state, self.data, hook, hsi_weight=weight)
            self.iteration += 1
            self.h_version += 1
            if k + 1 in keep or k + 1 == n:
                text = label(k + 1) if label is not None else f"coupled step {k + 1}"
                with torch.no_grad():
                    self.record(f"{text} · iteration {self.iteration}", self.state, forced=k + 1 == n, **parts())
            if self.progress is not None:
                self.progress(self.iteration, self.total, {"stage": stage, "layer": k + 1})


__all__ = ["Schedule", "Layer", "CHECK_EVERY", "TILE_PIXELS", "HSI_INIT_POINTS"]
