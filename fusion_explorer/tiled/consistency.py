"""CNMF's consistency projection, tile-wise (:func:`fusion_explorer.methods.unmixing.projection.project`
without its guided step).

``Z1 = Z + G (Y_m - R Z)`` per pixel (``G = C Rᵀ (R C Rᵀ)⁻¹`` with the endmembers' spectral prior
``C``), then ``Z1 + Sᵀ u`` with ``(S Sᵀ + μ I) u = Y_h - S(Z1)`` solved by conjugate gradients on the
LR grid. A tile pass computes ``S(Z1)`` on each LR tile from its extended box; the residual is
gathered on the LR grid (``1/ratio²`` of the HR pixels); ``S Sᵀ`` is applied tile by tile (it
reaches twice the PSF's half-width, which the grid's halo covers); a last tile pass writes
``Z1 + Sᵀ u``, clipped at 0.
"""

from __future__ import annotations

import dask
import numpy as np
import torch

from .engine import Tile, TileGrid, set_torch_threads, tile_task
from .io import ScratchStore, ZarrCubeWriter


def _msi_box(msi, y: slice, x: slice):
    """The HR-MSI's box as a lazy piece (a dask slice) to hand to a tile task."""
    return msi.data[:, y, x]


# (fusion_explorer.methods.unmixing.projection.project without the guided step: Z1 = Z + G (Y_m - R Z) per pixel,
# then Z1 + Sᵀ (S Sᵀ + μ I)⁻¹ (Y_h - S Z1), the normal equations solved by CG on the LR grid)

#: CG settings and the spectral prior's ridge, as fusion_explorer.methods.unmixing.projection
CG_ITERATIONS, CG_TOLERANCE, DAMPING, RIDGE = 60, 1e-6, 1e-4, 1e-2
#: bands per block when S Sᵀ is applied on the LR grid (bounds the HR temporaries)
BAND_BLOCK = 16


def msi_gain(srf: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``G = C Rᵀ (R C Rᵀ)⁻¹`` ``(L, l)`` with the endmembers' prior ``C = W Wᵀ / tr + ridge I / L``."""
    c = w @ w.T
    c = c / max(np.trace(c), 1e-300) + RIDGE * np.eye(w.shape[0]) / w.shape[0]
    crt = c @ srf.T
    return crt @ np.linalg.inv(srf @ crt)


def _msi_corrected(msi_ext: np.ndarray, h: np.ndarray, w: np.ndarray, srf: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``Z1 = W H + G (Y_m - R W H)`` on a box ``(L, y, x)`` float64."""
    z = np.einsum("bp,pyx->byx", w.astype(np.float32), h).astype(np.float64)
    d = np.maximum(np.asarray(msi_ext, dtype=np.float64), 0) - np.einsum("mb,byx->myx", srf, z)
    return z + np.einsum("bm,myx->byx", gain, d)


@tile_task
def _residual_tile(msi_ext, scratch: ScratchStore, t: Tile, w, srf, gain, spatial, ratio: int, threads) -> np.ndarray:
    """``S(Z1)`` on the tile's LR box (``Z1`` on the extended box)."""
    if threads:
        set_torch_threads(threads)
    z1 = _msi_corrected(msi_ext, scratch.read(slice(t.ey0, t.ey1), slice(t.ex0, t.ex1)), w, srf, gain)
    lr = spatial(torch.from_numpy(z1)[None])[0].numpy()
    (ly, lx), (ey, ex) = t.lr_box(ratio), t.lr_ext_box(ratio)
    return lr[:, ly.start - ey.start : ly.stop - ey.start, lx.start - ex.start : lx.stop - ex.start]


def _normal(v: np.ndarray, grid: TileGrid, spatial, mu: float) -> np.ndarray:
    """``(S Sᵀ + μ I) v`` for LR images ``v`` ``(L, h, w)``, tile by tile (each LR tile from its
    extended box: ``S Sᵀ`` reaches twice the PSF's half-width, within the halo)."""
    r = grid.ratio
    out = np.empty_like(v)
    for t in grid:
        (ly, lx), (ey, ex) = t.lr_box(r), t.lr_ext_box(r)
        for b in range(0, v.shape[0], BAND_BLOCK):
            ext = torch.from_numpy(np.ascontiguousarray(v[b : b + BAND_BLOCK, ey, ex]))[None]
            back = spatial(spatial.adjoint(ext))[0].numpy()
            out[b : b + BAND_BLOCK, ly, lx] = back[:, ly.start - ey.start : ly.stop - ey.start,
                                                   lx.start - ex.start : lx.stop - ex.start]
    out += mu * v
    return out


def _shift(spatial, lr_size: tuple[int, int], damping: float) -> float:
    """``μ = damping · λ_max(S Sᵀ)`` on an LR grid of ``lr_size``, ``λ_max`` from the Rayleigh quotient of
    a constant image (as :func:`fusion_explorer.methods.unmixing.projection.solve_normal`)."""
    ones = torch.ones((1, 1, *lr_size), dtype=torch.float64)
    return float(damping) * float(spatial.adjoint(ones).square().sum() / ones.square().sum())


def lr_residual(lr: np.ndarray, pieces: list, grid: TileGrid, ratio: int) -> np.ndarray:
    """``Y_h - S(Z1)`` (float64) on the LR grid from the tiles' ``S(Z1)`` on their LR boxes (``pieces``,
    in the grid's order; each is released from the list once subtracted)."""
    r = lr.astype(np.float64)
    for i, t in enumerate(grid):
        r[(slice(None), *t.lr_box(ratio))] -= pieces[i]
        pieces[i] = None
    return r


def _solve_normal(r: np.ndarray, grid: TileGrid, spatial, damping: float = DAMPING) -> np.ndarray:
    """``u`` with ``(S Sᵀ + μ I) u = r`` by conjugate gradients, one system per band; ``μ = damping ·
    λ_max(S Sᵀ)`` (the Rayleigh quotient of a constant image, as the whole-scene solve).

    The bands' systems are independent, so they are solved :data:`BAND_BLOCK` at a time: the CG
    vectors of one block, not of all bands, are held (at 4096² x 128 bands, ratio 8, 33 MB each
    instead of 268 MB). Every band stops once its residual is below the whole-scene threshold
    (``CG_TOLERANCE²`` times the largest band's initial residual); the whole-scene solve also runs
    the bands that converged first until the last does, a difference below that tolerance."""
    mu = _shift(spatial, r.shape[1:], damping)
    rs_all = np.einsum("byx,byx->b", r, r)
    stop = CG_TOLERANCE**2 * max(float(rs_all.max(initial=0.0)), 1e-300)
    u = np.zeros_like(r)
    for b0 in range(0, r.shape[0], BAND_BLOCK):
        block = slice(b0, b0 + BAND_BLOCK)
        u_b, res, rs = u[block], r[block].copy(), rs_all[block]
        direction = res.copy()
        for _ in range(CG_ITERATIONS):
            a_dir = _normal(direction, grid, spatial, mu)
            alpha = rs / np.maximum(np.einsum("byx,byx->b", direction, a_dir), 1e-300)
            u_b += alpha[:, None, None] * direction
            res -= alpha[:, None, None] * a_dir
            rs_new = np.einsum("byx,byx->b", res, res)
            if rs_new.max() <= stop:
                break
            direction *= (rs_new / np.maximum(rs, 1e-300))[:, None, None]
            direction += res
            rs = rs_new
    return u


@tile_task
def _projected_tile(msi_ext, u_ext: np.ndarray, scratch: ScratchStore, t: Tile, w, srf, gain, spatial,
                    writer: ZarrCubeWriter | None, threads):
    """``Z1 + Sᵀ u`` on the tile, clipped at 0."""
    if threads:
        set_torch_threads(threads)
    z1 = _msi_corrected(t.trim(msi_ext), scratch.read(slice(t.y0, t.y1), slice(t.x0, t.x1)), w, srf, gain)
    up = t.trim(spatial.adjoint(torch.from_numpy(np.ascontiguousarray(u_ext))[None])[0].numpy())
    z = np.maximum(z1 + up, 0).astype(np.float32)
    if writer is not None:
        writer.write(t.y0, t.x0, z)
        return None
    return z


def projection(problem, grid, lr, msi, srf, w, scratch, runner, writer, threads, progress) -> list:
    ratio, spatial = problem.ratio, problem.spatial_operator()
    gain = msi_gain(srf, w.astype(np.float64))
    tasks = [dask.delayed(_residual_tile, pure=False)(
        _msi_box(msi, slice(t.ey0, t.ey1), slice(t.ex0, t.ex1)), scratch, t, w, srf, gain, spatial, ratio, threads)
        for t in grid]
    pieces = runner.run_tiles(tasks, progress, "consistency: S(Z) (tiles)")
    r = lr_residual(lr, pieces, grid, ratio)
    if progress is not None:
        progress(0, 1, {"stage": "consistency: CG on the LR grid"})
    u = _solve_normal(r, grid, spatial)
    tasks = []
    for t in grid:
        ly, lx = t.lr_ext_box(ratio)
        tasks.append(dask.delayed(_projected_tile, pure=False)(
            _msi_box(msi, slice(t.ey0, t.ey1), slice(t.ex0, t.ex1)), u[:, ly, lx], scratch, t, w, srf, gain,
            spatial, writer, threads))
    return runner.run_tiles(tasks, progress, "fused cube (tiles)")
