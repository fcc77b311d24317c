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
    abundance_terms,
    endmember_terms,
    multiplicative,
    sum_to_one_rows,
    tiny,
    vca,
    virtual_dimensionality,
)
from .engine import Tile, set_torch_threads
from .io import ScratchStore, ZarrCubeWriter

#: CNMF's constants (fusion_explorer.methods.cnmf): sum-to-one scale, MSI bands above which W_m moves,
#: cost checks every this many iterations, the inner loops' default stopping threshold
SUM_TO_ONE_SCALE = 0.7455
MIN_MSI_BANDS = 3
CHECK_EVERY = 10
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
    """The LR-grid factors ``W`` ``(1, L, p)`` and ``H_h`` ``(1, p, n)`` with CNMF's update steps."""

    def __init__(self, y_h: torch.Tensor, w: torch.Tensor, h: torch.Tensor, delta: float):
        self.y, self.w, self.h, self.delta = y_h, w, h, delta
        self.yy = float(y_h.double().square().sum())
        self.n = y_h.shape[-1]

    def w_step(self, want: bool) -> float | None:
        num, den = endmember_terms(self.y, self.w, self.h)
        cost = self.yy - 2 * dot(self.w, num) + dot(self.w, den) if want else None
        self.w = multiplicative(self.w, num, den)
        return cost

    def h_step(self, want: bool) -> float | None:
        num, den = abundance_terms(self.y, self.w, self.h, self.delta)
        cost = self.yy + self.delta**2 * self.n - 2 * dot(self.h, num) + dot(self.h, den) if want else None
        self.h = multiplicative(self.h, num, den)
        return cost


def cnmf_msi_tile(msi_ext: np.ndarray, h_lr_ext: np.ndarray, t: Tile, ratio: int, w_m: np.ndarray, delta: float,
                   iterations: int, scratch: ScratchStore, threads: int | None) -> None:
    """Stage 2 on one tile: ``H_m`` from the upsampled ``H_h``, ``iterations`` MU with ``W_m`` fixed."""
    if threads:
        set_torch_threads(threads)
    p = h_lr_ext.shape[0]
    eh, ew = h_lr_ext.shape[1] * ratio, h_lr_ext.shape[2] * ratio
    up = F.interpolate(torch.from_numpy(np.ascontiguousarray(h_lr_ext))[None], size=(eh, ew), mode="bilinear",
                       align_corners=False).clamp_min(0)[0]
    h = torch.from_numpy(np.ascontiguousarray(t.trim(up.numpy()))).reshape(1, p, -1)
    y = torch.from_numpy(np.ascontiguousarray(t.trim(np.asarray(msi_ext, dtype=np.float32)))).clamp_min(0)
    y = y.reshape(1, y.shape[0], -1)
    h = pixel_updates(h, y, w_m, delta, iterations)
    scratch.write(t, h.reshape(p, t.y1 - t.y0, t.x1 - t.x0).numpy())


def pixel_updates(h: torch.Tensor, y: torch.Tensor, w_m: np.ndarray, delta: float, iterations: int) -> torch.Tensor:
    """``iterations`` MU of the abundances ``h`` ``(1, p, pixels)`` on the MSI ``y`` ``(1, l, pixels)``
    with ``W_m`` fixed (each pixel its own problem), in cache-sized blocks of :data:`BLOCK_PIXELS`."""
    w = torch.from_numpy(np.asarray(w_m, dtype=np.float32))[None]
    w_aug = sum_to_one_rows(w, delta)
    floor = tiny(w.dtype)
    blocks = []
    for h_b, y_b in zip(h.split(BLOCK_PIXELS, dim=-1), y.split(BLOCK_PIXELS, dim=-1), strict=True):
        h_b = h_b.contiguous()
        num = abundance_numerator(y_b.contiguous(), w, delta)
        den = torch.empty_like(h_b)
        mid = h_b.new_empty((1, w_aug.shape[-2], h_b.shape[-1]))
        for _ in range(iterations):
            abundance_denominator(w_aug, h_b, out=den, mid=mid)
            h_b.mul_(num).div_(den.clamp_min_(floor))
        blocks.append(h_b)
    return torch.cat(blocks, dim=-1)


def cnmf_degrade_tile(scratch: ScratchStore, t: Tile, spatial, ratio: int, threads: int | None) -> np.ndarray:
    """Stage 3 on one tile: ``S(H_m)`` on the tile's LR box, from ``H_m`` read with its halo."""
    if threads:
        set_torch_threads(threads)
    ext = torch.from_numpy(scratch.read(slice(t.ey0, t.ey1), slice(t.ex0, t.ex1))).double()
    lr = spatial(ext[None])[0].numpy()  # float64: the same numbers whatever the tile's size
    (ly, lx), (ey, ex) = t.lr_box(ratio), t.lr_ext_box(ratio)
    return lr[:, ly.start - ey.start : ly.stop - ey.start, lx.start - ex.start : lx.stop - ex.start]


def cnmf_fuse_tile(scratch: ScratchStore, t: Tile, w: np.ndarray, writer: ZarrCubeWriter | None,
                    threads: int | None):
    """Stage 5 on one tile: ``Z = W H_m``, clipped at 0."""
    if threads:
        set_torch_threads(threads)
    h = torch.from_numpy(scratch.read(slice(t.y0, t.y1), slice(t.x0, t.x1)))
    z = torch.einsum("bp,pyx->byx", torch.from_numpy(np.asarray(w, dtype=np.float32)), h).clamp_min_(0).numpy()
    if writer is not None:
        writer.write(t.y0, t.x0, z)
        return None
    return z


def cnmf_global_start(y_h: torch.Tensor, srf: np.ndarray, msi_mean: float, n_endmembers, seed: int,
                       inner: int, threshold: float, sum_to_one: float | None):
    bands, n = y_h.shape[-2:]
    msi_bands = srf.shape[0]
    y_np = y_h[0].double().numpy()
    if n_endmembers is None:
        p = max(1, min(max(min(30, bands), virtual_dimensionality(y_np, 5e-2)), bands, n))
    elif n_endmembers == "vd":
        p = max(1, min(virtual_dimensionality(y_np, 5e-2), bands, n))
    else:
        if isinstance(n_endmembers, str) or int(n_endmembers) != n_endmembers or not 1 <= n_endmembers <= min(bands, n):
            raise ProblemError(f"n_endmembers must be an integer in 1..{min(bands, n)}, 'vd' or None; got "
                               f"{n_endmembers!r}")
        p = int(n_endmembers)
    w0, _ = vca(y_np, p, seed)
    w0 = np.maximum(w0, 1e-6 * max(float(w0.max()), 1e-12))
    delta = float(sum_to_one) if sum_to_one is not None else 2 * math.sqrt(msi_mean / SUM_TO_ONE_SCALE) / msi_bands**3
    hsi = HsiSide(y_h, torch.as_tensor(w0, dtype=y_h.dtype)[None], torch.full((1, p, n), 1.0 / p, dtype=y_h.dtype),
                   delta)
    inner_loop([hsi.h_step], 3 * inner, threshold)
    inner_loop([hsi.w_step, hsi.h_step], inner - 1, threshold)
    return hsi, p, delta


def lr_grid_start(lr: np.ndarray, srf: np.ndarray, msi_mean: float, n_endmembers, seed: int, inner: int,
                  threshold: float, sum_to_one: float | None, method: str):
    """Stage 1 on the whole LR-HSI ``lr`` ``(bands, h, w)``, in float64: VCA and the HSI unmixing
    (:func:`cnmf_global_start`). Returns ``(hsi, p, delta, w_m, h_lr)``: the HSI side, the endmember
    count, the sum-to-one weight, ``W_m = R W`` and the LR abundances ``(p, h, w)`` (both float32) that
    start the tiles' MSI stage."""
    bands, h, w = lr.shape
    y_h = torch.from_numpy(lr.reshape(1, bands, -1).astype(np.float64))
    if float(y_h.amax()) <= 0:
        raise ProblemError(f"{method} needs signal: the LR-HSI is all zero")
    hsi, p, delta = cnmf_global_start(y_h, srf, msi_mean, n_endmembers, seed, inner, threshold, sum_to_one)
    w_m = (torch.as_tensor(srf) @ hsi.w[0]).numpy().astype(np.float32)
    h_lr = hsi.h[0].reshape(p, h, w).numpy().astype(np.float32)
    return hsi, p, delta, w_m, h_lr


def outer_round(hsi, s_h: np.ndarray, msi_bands: int, inner: int, threshold: float) -> None:
    """Stage 4 on the LR grid: ``H_h = S(H_m)`` (``s_h`` ``(p, h, w)``, gathered from the tiles), then the
    HSI unmixing's ``W`` update (and ``H_h``'s too with an MSI of more than :data:`MIN_MSI_BANDS` bands)."""
    hsi.h = torch.from_numpy(s_h).reshape(1, s_h.shape[0], -1).clamp_min(0)
    inner_loop([hsi.w_step], inner, threshold)
    inner_loop([hsi.h_step, hsi.w_step] if msi_bands > MIN_MSI_BANDS else [hsi.w_step], inner - 1, threshold)
