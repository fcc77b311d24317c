"""CNMF's stages for tiled fusion (:mod:`fusion_explorer.tiled.methods` runs them; tiled SCALMU's start,
:mod:`fusion_explorer.tiled.scalmu`, reuses them): the LR-grid start (VCA and the HSI unmixing), the
per-pixel MSI-side updates of a tile, ``S(H_m)`` of a tile and ``Z = W H_m`` of a tile."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from ..errors import ProblemError
from ..methods.unmixing import (
    abundance_denominator,
    abundance_numerator,
    estimate,
    multiplicative,
    sum_to_one_rows,
    tiny,
    vca,
)
from ..methods.unmixing.schedule import CHECK_EVERY
from ..methods.unmixing.setup import MIN_MSI_BANDS, SUM_TO_ONE_SCALE, n_endmembers_for
from .engine import Tile, TileGrid, set_torch_threads, tile_task
from .io import ScratchStore, ZarrCubeWriter

#: the inner loops' default stopping threshold (:func:`fusion_explorer.methods.cnmf.cnmf`'s ``threshold``)
THRESHOLD = 1e-8
#: pixels per block of the per-pixel H_m loop inside a tile (cache-sized, as the whole-scene loop)
BLOCK_PIXELS = 16384


def msi_box(msi: xr.DataArray, y: slice, x: slice):
    """A lazy cube's box (a dask slice) to hand to a tile task: the task's worker reads it."""
    return msi.data[:, y, x]


# ---- CNMF ------------------------------------------------------------------------------------------------


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.sum(a * b, dtype=torch.float64))


def inner_loop(steps, max_iter: int, threshold: float) -> float:
    """CNMF's inner loop on the LR grid (as :mod:`fusion_explorer.methods.cnmf`): run ``steps``
    (``want_cost -> cost``) until the relative decrease of the cost per check falls below
    ``threshold x CHECK_EVERY``."""
    cost0, cost = math.inf, math.inf
    for q in range(max_iter):
        want = q % CHECK_EVERY == 0 or q == max_iter - 1
        for step in steps:
            c = step(want)
            cost = c if c is not None else cost
        if want and q > 0:
            if (cost0 - cost) / max(cost, 1e-300) < threshold * CHECK_EVERY:
                break
            cost0 = cost
        elif want:
            cost0 = cost
    return cost


class HsiSide:
    """The LR-grid factors ``W`` ``(1, L, p)`` and ``H_h`` ``(1, p, n)`` with CNMF's update steps.

    The factors are float64; the LR-HSI ``y_h`` ``(1, L, n)`` is kept as given (float32: a large
    scene's LR grid, 1024² x 128 bands at 8192² and ratio 8, is 0.5 GB so, 1 GB in float64) and the
    steps stream over blocks of :data:`~fusion_explorer.methods.unmixing.estimate.BLOCK_PIXELS`
    pixels, each converted to float64 in turn. Below that many pixels one block is the whole grid."""

    def __init__(self, y_h: torch.Tensor, w: torch.Tensor, h: torch.Tensor, delta: float):
        self.y, self.w, self.h, self.delta = y_h, w.double(), h.double(), delta
        self.n = y_h.shape[-1]
        self.yy = math.fsum(float(b.square().sum()) for _, b in self._blocks())

    def _blocks(self):
        """``(pixel slice, LR-HSI block in float64)``."""
        block = estimate.BLOCK_PIXELS
        for start in range(0, self.n, block):
            cut = slice(start, min(start + block, self.n))
            yield cut, self.y[..., cut].double()

    def w_step(self, want: bool) -> float | None:
        num = torch.zeros_like(self.w)
        for cut, y in self._blocks():
            num += y @ self.h[..., cut].transpose(-1, -2)
        den = self.w @ (self.h @ self.h.transpose(-1, -2))
        cost = self.yy - 2 * dot(self.w, num) + dot(self.w, den) if want else None
        self.w = multiplicative(self.w, num, den)
        return cost

    def h_step(self, want: bool) -> float | None:
        """One MU of ``H_h``, block by block in place (each pixel's update reads only that pixel)."""
        w_aug = sum_to_one_rows(self.w, self.delta)
        floor = tiny(self.h.dtype)
        dots = [0.0, 0.0]
        for cut, y in self._blocks():
            h = self.h[..., cut]
            num = abundance_numerator(y, self.w, self.delta)
            den = abundance_denominator(w_aug, h)
            if want:
                dots[0] += dot(h, num)
                dots[1] += dot(h, den)
            h.mul_(num).div_(den.clamp_min_(floor))  # = multiplicative(h, num, den), in place
        return self.yy + self.delta**2 * self.n - 2 * dots[0] + dots[1] if want else None


# ---- the MSI stage: per tile, with W_m fixed or replayed from a trajectory --------------------------------

#: HR pixels the MSI stage's ``W_m`` trajectory is computed on (an MSI of more than
#: :data:`MIN_MSI_BANDS` bands, :func:`msi_stage_plan`): the whole scene up to this many, else a spread of
#: :data:`TRAJECTORY_WINDOW`-pixel windows holding about as many
TRAJECTORY_PIXELS = 1 << 18
#: side of those windows (HR pixels; rounded up to a multiple of the ratio)
TRAJECTORY_WINDOW = 64

#: ``W_m`` ``(l, p)`` and how many updates of ``H_m`` use it, in order
Segments = list[tuple[np.ndarray, int]]
#: the MSI stage, level by level (coarse to fine; one level of factor 1 without a pyramid):
#: ``(factor, segments)``
Plan = list[tuple[int, Segments]]
#: the whole-scene stage's inner loops per level: ``(factor, [(max updates, with W_m updates), ...])``
Loops = list[tuple[int, list[tuple[int, bool]]]]


def stage_loops(levels, inner: int) -> Loops:
    """The whole-scene MSI stage's loops (:meth:`~fusion_explorer.methods.unmixing.schedule.Schedule.msi_init`):
    over a pyramid ``levels`` (``[(factor, iterations), ...]``) one loop per level, ``W_m`` updated
    throughout; at full resolution ``inner`` updates of ``H_m`` alone, then ``inner - 1`` of both."""
    if levels:
        return [(int(f), [(int(n), True)]) for f, n in levels]
    return [(1, [(inner, False), (inner - 1, True)])]


def fixed_plan(loops: Loops, w_m: np.ndarray) -> Plan:
    """``W_m`` fixed (an MSI of at most :data:`MIN_MSI_BANDS` bands): every loop runs to its cap."""
    return [(f, [(w_m, sum(n for n, _ in loop))]) for f, loop in loops]


def pyramid_margins(factors) -> list[int]:
    """HR pixels around the tile each level of the MSI stage is computed on: two pixels of the grid of
    every level before the next ones (the bilinear stencil of the next upsampling, and one for
    safety), rounded up to a multiple of every level's factor (boxes then sit on every level's grid)."""
    factors = list(factors)
    grid = math.lcm(*factors)
    return [-(-sum(2 * f for f in factors[i:-1]) // grid) * grid for i in range(len(factors))]


def _msi(msi_box) -> torch.Tensor:
    """An MSI box ``(l, Y, X)`` as float32, negatives clipped (as every tile task)."""
    return torch.from_numpy(np.ascontiguousarray(np.maximum(np.asarray(msi_box, dtype=np.float32), 0)))


def _level_input(current: torch.Tensor, box, image: torch.Tensor, t: Tile, factor: int, margin: int):
    """One level's start on the tile plus ``margin``: the previous level's abundances ``current``
    (on the HR box ``box``, at its factor) upsampled bilinearly and cut, and the MSI averaged over
    ``factor x factor`` blocks. Returns ``(abundances (1, p, Y, X), MSI (1, l, Y, X), new box)``."""
    new = (max(t.y0 - margin, t.ey0), min(t.y1 + margin, t.ey1), max(t.x0 - margin, t.ex0),
           min(t.x1 + margin, t.ex1))
    up = F.interpolate(current, size=((box[1] - box[0]) // factor, (box[3] - box[2]) // factor), mode="bilinear",
                       align_corners=False).clamp_min(0)
    cut = up[..., (new[0] - box[0]) // factor : (new[1] - box[0]) // factor,
             (new[2] - box[2]) // factor : (new[3] - box[2]) // factor]
    size = ((new[1] - new[0]) // factor, (new[3] - new[2]) // factor)
    y = image[..., new[0] - t.ey0 : new[1] - t.ey0, new[2] - t.ex0 : new[3] - t.ex0]
    y = F.adaptive_avg_pool2d(y, size) if factor > 1 else y
    return cut.contiguous(), y.contiguous(), new


@tile_task
def msi_stage_tile(msi_ext, h_lr_ext: np.ndarray, t: Tile, plan: Plan, delta: float, scratch: ScratchStore,
                   threads: int | None) -> None:
    """The MSI stage on one tile's extended box, level by level (:func:`_level_input`, the first from
    the LR abundances ``h_lr_ext`` over the box), each level's updates with the plan's ``W_m``
    segments (:func:`pixel_updates`); the tile's own pixels go to ``scratch``. A one-level plan of
    factor 1 is CNMF's full-resolution stage from the bilinearly upsampled ``H_h``."""
    if threads:
        set_torch_threads(threads)
    p = h_lr_ext.shape[0]
    image = _msi(msi_ext)[None]
    current = torch.from_numpy(np.ascontiguousarray(h_lr_ext, dtype=np.float32))[None]
    box = (t.ey0, t.ey1, t.ex0, t.ex1)  # HR box of `current`
    for (factor, segments), margin in zip(plan, pyramid_margins(f for f, _ in plan), strict=True):
        cut, y, box = _level_input(current, box, image, t, factor, margin)
        h = pixel_updates(cut.reshape(1, p, -1), y.reshape(1, y.shape[1], -1), segments, delta)
        current = h.reshape(1, p, *cut.shape[-2:])
    assert box == (t.y0, t.y1, t.x0, t.x1)  # the last level's factor is 1 and its margin 0
    scratch.write(t, np.ascontiguousarray(current[0].numpy()))


def pixel_updates(h: torch.Tensor, y: torch.Tensor, segments: Segments, delta: float) -> torch.Tensor:
    """MU of the abundances ``h`` ``(1, p, pixels)`` on the MSI ``y`` ``(1, l, pixels)``, ``n`` of them
    with ``W_m`` for each ``(W_m, n)`` of ``segments`` in turn (each pixel its own problem), in
    cache-sized blocks of :data:`BLOCK_PIXELS`."""
    steps = []
    for w_m, n in segments:
        w = torch.from_numpy(np.asarray(w_m, dtype=np.float32))[None]
        steps.append((w, sum_to_one_rows(w, delta), int(n)))
    floor = tiny(torch.float32)
    blocks = []
    for h_b, y_b in zip(h.split(BLOCK_PIXELS, dim=-1), y.split(BLOCK_PIXELS, dim=-1), strict=True):
        h_b, y_b = h_b.contiguous(), y_b.contiguous()
        den = torch.empty_like(h_b)
        mid = None
        for w, w_aug, n in steps:
            num = abundance_numerator(y_b, w, delta)
            if mid is None:
                mid = h_b.new_empty((1, w_aug.shape[-2], h_b.shape[-1]))
            for _ in range(n):
                abundance_denominator(w_aug, h_b, out=den, mid=mid)
                h_b.mul_(num).div_(den.clamp_min_(floor))
        blocks.append(h_b)
    return torch.cat(blocks, dim=-1)


def trajectory_tiles(grid: TileGrid) -> list[Tile]:
    """Where :func:`msi_stage_plan` computes the ``W_m`` trajectory: every tile of ``grid`` when the
    scene has at most :data:`TRAJECTORY_PIXELS` pixels (then the plan is the whole-scene run's), else
    windows of :data:`TRAJECTORY_WINDOW` pixels (with ``grid``'s halo) on a regular spread of rows and
    columns, about as many pixels in all."""
    h, w = grid.hr_size
    if h * w <= TRAJECTORY_PIXELS:
        return list(grid)
    side = grid.ratio * max(1, -(-TRAJECTORY_WINDOW // grid.ratio))
    small = TileGrid(grid.hr_size, grid.ratio, side, grid.halo)
    per_side = max(1, math.isqrt(TRAJECTORY_PIXELS // side**2))
    rows = set(np.linspace(0, math.ceil(h / side) - 1, per_side).round().astype(int).tolist())
    cols = set(np.linspace(0, math.ceil(w / side) - 1, per_side).round().astype(int).tolist())
    return [t for t in small if t.index[0] in rows and t.index[1] in cols]


def msi_stage_plan(loops: Loops, w_m0: np.ndarray, delta: float, threshold: float, tiles: list[Tile],
                   read_msi, h_lr: np.ndarray, ratio: int) -> Plan:
    """The MSI stage's plan with an MSI of more than :data:`MIN_MSI_BANDS` bands, where the whole-scene
    run also updates ``W_m`` (one scene-wide sum per update: one pass over the tiles each, hundreds of
    passes). Instead the stage runs here, in memory, on ``tiles`` (:func:`trajectory_tiles`; their
    MSI boxes from ``read_msi(tile)``, their LR abundances from ``h_lr`` ``(p, h, w)``): ``W_m``'s
    updates from the sums over the tiles' own pixels, ``H_m``'s per pixel, and the whole-scene
    loops' stopping rules on the tiles' costs. The plan it returns holds each update's ``W_m``
    and each loop's count; every tile of the scene then replays it (:func:`msi_stage_tile`). When
    ``tiles`` cover the scene the plan is the whole-scene run's up to rounding, and so is every tile's
    ``H_m``; otherwise the ``W_m`` path is estimated from that sample of the scene."""
    w_m = torch.from_numpy(np.asarray(w_m0, dtype=np.float32))
    p = h_lr.shape[0]
    samples = []  # [tile, MSI (1, l, EY, EX), abundances (1, p, ., .) at the last level, their HR box]
    for t in tiles:
        ly, lx = t.lr_ext_box(ratio)
        samples.append([t, _msi(read_msi(t))[None],
                        torch.from_numpy(np.ascontiguousarray(h_lr[:, ly, lx], dtype=np.float32))[None],
                        (t.ey0, t.ey1, t.ex0, t.ex1)])
    floor = tiny(torch.float32)
    plan: Plan = []
    for (factor, loop), margin in zip(loops, pyramid_margins(f for f, _ in loops), strict=True):
        level = []  # [h (1, p, Y, X), y (1, l, Y, X), own rows, own columns]
        for s in samples:
            t = s[0]
            cut, y, box = _level_input(s[2], s[3], s[1], t, factor, margin)
            own = (slice((t.y0 - box[0]) // factor, (t.y1 - box[0]) // factor),
                   slice((t.x0 - box[2]) // factor, (t.x1 - box[2]) // factor))
            level.append([cut, y, own])
            s[3] = box
        yy = math.fsum(float(y[..., r, c].double().square().sum()) for _, y, (r, c) in level)
        pixels = sum(h[..., r, c].shape[-1] * h[..., r, c].shape[-2] for h, _, (r, c) in level)
        segments: Segments = []
        for max_iter, with_w_m in loop:
            cost0, cost = math.inf, math.inf
            for q in range(max_iter):
                want = q % CHECK_EVERY == 0 or q == max_iter - 1
                if with_w_m:  # W_m ← W_m ⊙ Y Hᵀ ⊘ W_m H Hᵀ, the sums over the tiles' own pixels
                    num = torch.zeros((w_m.shape[0], p), dtype=torch.float64)
                    gram = torch.zeros((p, p), dtype=torch.float64)
                    for h, y, (r, c) in level:
                        h_own = h[0][:, r, c].reshape(p, -1).double()
                        num += y[0][:, r, c].reshape(y.shape[1], -1).double() @ h_own.T
                        gram += h_own @ h_own.T
                    w_m = multiplicative(w_m, num.float(), (w_m.double() @ gram).float())
                w, dots = w_m[None], [0.0, 0.0]
                w_aug = sum_to_one_rows(w, delta)
                for item in level:
                    h, y, (r, c) = item
                    flat_h, flat_y = h.reshape(1, p, -1), y.reshape(1, y.shape[1], -1)
                    num = abundance_numerator(flat_y, w, delta)
                    den = abundance_denominator(w_aug, flat_h)
                    if want:
                        dots[0] += dot(h[..., r, c], num.reshape(h.shape)[..., r, c])
                        dots[1] += dot(h[..., r, c], den.reshape(h.shape)[..., r, c])
                    item[0] = flat_h.mul(num).div_(den.clamp_min_(floor)).reshape(h.shape)
                if segments and not with_w_m and segments[-1][0] is w_m:
                    segments[-1] = (w_m, segments[-1][1] + 1)
                else:
                    segments.append((w_m, 1))
                if want:  # the whole-scene inner loop's stopping rule, on the H_m step's cost
                    cost = yy + delta**2 * pixels - 2 * dots[0] + dots[1]
                    if q > 0 and (cost0 - cost) / max(cost, 1e-300) < threshold * CHECK_EVERY:
                        break
                    cost0 = cost
        plan.append((factor, [(m.numpy(), n) for m, n in segments]))
        for s, (h, _, _) in zip(samples, level, strict=True):
            s[2] = h
    return plan


def run_msi_stage(runner, grid: TileGrid, levels, inner: int, w_m0: np.ndarray, delta: float, threshold: float,
                  read_msi, h_lr: np.ndarray, scratch: ScratchStore, threads: int | None, progress, label: str) -> None:
    """The MSI stage over ``grid`` (``levels``: a pyramid, or ``None`` for the full-resolution stage of
    ``inner``): with ``W_m = R W`` fixed, or, with an MSI of more than :data:`MIN_MSI_BANDS` bands, the
    whole-scene ``W_m`` path (:func:`msi_stage_plan`) replayed in every tile; ``H_m`` to ``scratch``."""
    import dask

    ratio = grid.ratio
    loops = stage_loops(levels, inner)
    if w_m0.shape[0] > MIN_MSI_BANDS:
        if progress is not None:
            progress(0, 1, {"stage": f"{label}: W_m path"})
        plan = msi_stage_plan(loops, w_m0, delta, threshold, trajectory_tiles(grid), read_msi, h_lr, ratio)
    else:
        plan = fixed_plan(loops, w_m0)
    tasks = []
    for t in grid:
        ly, lx = t.lr_ext_box(ratio)
        tasks.append(dask.delayed(msi_stage_tile, pure=False)(read_msi(t), h_lr[:, ly, lx], t, plan, delta, scratch,
                                                              threads))
    runner.run_tiles(tasks, progress, f"{label} (tiles)")


@tile_task
def cnmf_degrade_tile(scratch: ScratchStore, t: Tile, spatial, ratio: int, threads: int | None) -> np.ndarray:
    """Stage 3 on one tile: ``S(H_m)`` on the tile's LR box, from ``H_m`` read with its halo."""
    if threads:
        set_torch_threads(threads)
    ext = torch.from_numpy(scratch.read(slice(t.ey0, t.ey1), slice(t.ex0, t.ex1))).double()
    lr = spatial(ext[None])[0].numpy()  # float64: the same numbers whatever the tile's size
    (ly, lx), (ey, ex) = t.lr_box(ratio), t.lr_ext_box(ratio)
    return lr[:, ly.start - ey.start : ly.stop - ey.start, lx.start - ex.start : lx.stop - ex.start]


@tile_task
def cnmf_fuse_tile(scratch: ScratchStore, t: Tile, w: np.ndarray, writer: ZarrCubeWriter | None,
                    threads: int | None):
    """Stage 5 on one tile: ``Z = W H_m``, clipped at 0; with ``writer``, computed and written a chunk's
    bands at a time (:attr:`~.io.ZarrCubeWriter.band_chunk`)."""
    if threads:
        set_torch_threads(threads)
    h = torch.from_numpy(scratch.read(slice(t.y0, t.y1), slice(t.x0, t.x1)))
    w = torch.from_numpy(np.asarray(w, dtype=np.float32))
    if writer is None:
        return torch.einsum("bp,pyx->byx", w, h).clamp_min_(0).numpy()
    for b in range(0, w.shape[0], writer.band_chunk):
        writer.write(t.y0, t.x0, torch.einsum("bp,pyx->byx", w[b : b + writer.band_chunk], h).clamp_min_(0).numpy(),
                     band=b)
    return None


def cnmf_global_start(y_h: torch.Tensor, srf: np.ndarray, msi_mean: float, n_endmembers, seed: int,
                       inner: int, threshold: float, sum_to_one: float | None):
    n = y_h.shape[-1]
    msi_bands = srf.shape[0]
    y_np = y_h[0].numpy()  # as given (float32): the estimators stream over it in float64 blocks
    p = n_endmembers_for(y_np, n_endmembers)
    w0, _ = vca(y_np, p, seed)
    w0 = np.maximum(w0, 1e-6 * max(float(w0.max()), 1e-12))
    delta = float(sum_to_one) if sum_to_one is not None else 2 * math.sqrt(msi_mean / SUM_TO_ONE_SCALE) / msi_bands**3
    hsi = HsiSide(y_h, torch.as_tensor(w0, dtype=torch.float64)[None],
                  torch.full((1, p, n), 1.0 / p, dtype=torch.float64), delta)
    inner_loop([hsi.h_step], 3 * inner, threshold)
    inner_loop([hsi.w_step, hsi.h_step], inner - 1, threshold)
    return hsi, p, delta


def lr_grid_start(lr: np.ndarray, srf: np.ndarray, msi_mean: float, n_endmembers, seed: int, inner: int,
                  threshold: float, sum_to_one: float | None, method: str):
    """Stage 1 on the whole LR-HSI ``lr`` ``(bands, h, w)`` (float32, held once), in float64: VCA and
    the HSI unmixing (:func:`cnmf_global_start`). Returns ``(hsi, p, delta, w_m, h_lr)``: the HSI side, the endmember
    count, the sum-to-one weight, ``W_m = R W`` and the LR abundances ``(p, h, w)`` (both float32) that
    start the tiles' MSI stage."""
    bands, h, w = lr.shape
    y_h = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32).reshape(1, bands, -1))
    if float(y_h.amax()) <= 0:
        raise ProblemError(f"{method} needs signal: the LR-HSI is all zero")
    hsi, p, delta = cnmf_global_start(y_h, srf, msi_mean, n_endmembers, seed, inner, threshold, sum_to_one)
    w_m = (torch.as_tensor(srf) @ hsi.w[0]).numpy().astype(np.float32)
    h_lr = hsi.h[0].reshape(p, h, w).numpy().astype(np.float32)
    return hsi, p, delta, w_m, h_lr


def outer_round(hsi, s_h: np.ndarray, msi_bands: int, inner: int, threshold: float) -> None:
    """Stage 4 on the LR grid: ``H_h = S(H_m)`` (``s_h`` ``(p, h, w)`` float64, gathered from the tiles), then
    the HSI unmixing's ``W`` update (and ``H_h``'s too with an MSI of more than :data:`MIN_MSI_BANDS` bands).
    ``s_h`` is taken over, not copied (0.3 GB at 8192², ratio 8 and p ≈ 38): clamped at 0 and updated in place."""
    np.maximum(s_h, 0, out=s_h)
    hsi.h = torch.from_numpy(s_h).reshape(1, s_h.shape[0], -1)
    inner_loop([hsi.w_step], inner, threshold)
    inner_loop([hsi.h_step, hsi.w_step] if msi_bands > MIN_MSI_BANDS else [hsi.w_step], inner - 1, threshold)
