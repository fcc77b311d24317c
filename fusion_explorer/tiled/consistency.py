"""CNMF's consistency projection, tile-wise (:func:`fusion_explorer.methods.unmixing.projection.project`
without its guided step).

``Z1 = Z + G (Y_m - R Z)`` per pixel (``G = C Rᵀ (R C Rᵀ)⁻¹`` with the endmembers' spectral prior
``C``), then ``Z1 + Sᵀ u`` with ``(S Sᵀ + μ I) u = Y_h - S(Z1)`` solved by conjugate gradients on the
LR grid. A tile pass computes ``S(Z1)`` on each LR tile from its extended box (a group of bands at
a time) and writes the residual ``r`` on its LR box to a scratch store; the CG reads ``r`` a block of
bands at a time (:func:`cg_block`), applies ``S Sᵀ`` tile by tile (it reaches twice the PSF's
half-width, which the grid's halo covers) and writes ``u`` to another store; a last tile pass reads
``u`` on its extended LR box and writes ``Z1 + (I - G R) Sᵀ u`` (the HSI correction less what the MSI
sees of it), clipped at 0. The client holds no array
that is band-deep on the whole LR grid.
"""

from __future__ import annotations

import dask
import numpy as np
import torch

from ..methods.unmixing import projection as _projection
from .engine import Tile, TileGrid, set_torch_threads, tile_task
from .io import CHUNK_BYTES, ScratchStore, ZarrCubeWriter


def _msi_box(msi, y: slice, x: slice):
    """The HR-MSI's box as a lazy piece (a dask slice) to hand to a tile task."""
    return msi.data[:, y, x]


# (fusion_explorer.methods.unmixing.projection.project without the guided step: Z1 = Z + G (Y_m - R Z) per pixel,
# then Z1 + (I - G R) Sᵀ (S Sᵀ + μ I)⁻¹ (Y_h - S Z1), the normal equations solved by CG on the LR grid)

#: CG settings and the spectral prior's ridge, as fusion_explorer.methods.unmixing.projection
CG_ITERATIONS, CG_TOLERANCE, DAMPING, RIDGE = 60, 1e-6, 1e-4, 1e-2
#: bands per block when S Sᵀ is applied on the LR grid (bounds the HR temporaries)
BAND_BLOCK = 16
#: bytes of one CG vector of a block of bands at most (the CG holds about six)
CG_BLOCK_BYTES = 32 << 20


def msi_gain(srf: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``G = C Rᵀ (R C Rᵀ)⁻¹`` ``(L, l)`` with the endmembers' prior ``C = W Wᵀ / tr + ridge I / L``."""
    c = w @ w.T
    c = c / max(np.trace(c), 1e-300) + RIDGE * np.eye(w.shape[0]) / w.shape[0]
    crt = c @ srf.T
    return crt @ np.linalg.inv(srf @ crt)


def _msi_residual(msi: np.ndarray, h: np.ndarray, w: np.ndarray, srf: np.ndarray) -> np.ndarray:
    """``Y_m - R W H`` on a box ``(l, y, x)`` float64, as ``(R W) H``: no band-deep array is needed."""
    return np.maximum(np.asarray(msi, dtype=np.float64), 0) - np.einsum("mp,pyx->myx", srf @ w,
                                                                        h.astype(np.float64))


def _msi_corrected(h: np.ndarray, w: np.ndarray, gain: np.ndarray, d: np.ndarray, bands: slice) -> np.ndarray:
    """The rows ``bands`` of ``Z1 = W H + G d`` on a box ``(b, y, x)`` float64, ``d`` the box's
    :func:`_msi_residual` (computed once per task, not per group of bands)."""
    z = np.einsum("bp,pyx->byx", w[bands].astype(np.float32), h).astype(np.float64)
    return z + np.einsum("bm,myx->byx", gain[bands], d)


# ---- the LR grid on disk -------------------------------------------------------------------------------
# What the CG needs grows with the scene (at 8192² x 128 bands and ratio 8 the LR-HSI is 0.5 GB in float32
# and r and u 1.1 GB each in float64): it lives in scratch stores chunked by LR tile and by CG block, the
# tile tasks write r on their LR boxes, the CG reads and writes one block of bands at a time, the last
# pass reads u on its boxes. The client holds one block's vectors.


def lr_store(folder, name: str, rows: int, grid: TileGrid, dtype: str = "float64") -> ScratchStore:
    """A scratch store ``(rows, h, w)`` on the LR grid, chunked by LR tile and :func:`cg_block` rows."""
    r = grid.ratio
    size = (grid.hr_size[0] // r, grid.hr_size[1] // r)
    return ScratchStore(folder, name, (rows, *size), grid.tile // r, dtype=dtype, rows_per_chunk=cg_block(size))


def cg_block(lr_size: tuple[int, int]) -> int:
    """Bands per CG block: at most :data:`BAND_BLOCK`, and one block's vector at most ``CG_BLOCK_BYTES``."""
    return max(1, min(BAND_BLOCK, CG_BLOCK_BYTES // (8 * lr_size[0] * lr_size[1])))


def store_residual(r_store: ScratchStore, lr: ScratchStore, t: Tile, ratio: int, s_z1: np.ndarray,
                   band: int = 0) -> np.ndarray:
    """Write ``r = Y_h - S(Z1)`` on the tile's LR box for the rows ``band, ...`` of ``s_z1`` (float64);
    return each row's ``Σ r²``."""
    ly, lx = t.lr_box(ratio)
    r = lr.read(ly, lx, slice(band, band + s_z1.shape[0])).astype(np.float64) - s_z1
    r_store.write_box(ly, lx, r, band)
    return np.einsum("byx,byx->b", r, r)


@tile_task
def _residual_tile(msi_ext, scratch: ScratchStore, lr: ScratchStore, r_store: ScratchStore, t: Tile, w, srf, gain,
                   spatial, ratio: int, threads) -> np.ndarray:
    """``r = Y_h - S(Z1)`` on the tile's LR box (``Z1`` on the extended box, a group of bands at a time),
    written to ``r_store``; returns each band's ``Σ r²`` over the box."""
    if threads:
        set_torch_threads(threads)
    h = scratch.read(slice(t.ey0, t.ey1), slice(t.ex0, t.ex1))
    (ly, lx), (ey, ex) = t.lr_box(ratio), t.lr_ext_box(ratio)
    sums, step = [], max(1, CHUNK_BYTES // (8 * h.shape[1] * h.shape[2]))
    d = _msi_residual(msi_ext, h, w, srf)
    for b in range(0, w.shape[0], step):
        z1 = _msi_corrected(h, w, gain, d, slice(b, b + step))
        lr_z = spatial(torch.from_numpy(z1)[None])[0].numpy()
        own = lr_z[:, ly.start - ey.start : ly.stop - ey.start, lx.start - ex.start : lx.stop - ex.start]
        sums.append(store_residual(r_store, lr, t, ratio, own, b))
    return np.concatenate(sums)


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


def _cg(r: np.ndarray, rs: np.ndarray, stop: float, grid: TileGrid, spatial, mu: float) -> np.ndarray:
    """CG on the systems ``(S Sᵀ + μ I) u_b = r_b`` of a block of bands; a band stops (its ``u`` and
    residual are kept) once its residual's square is at most ``stop``: each band's solution is the same
    whatever block it is solved in."""
    u, res, direction = np.zeros_like(r), r.copy(), r.copy()
    active = rs > stop
    for _ in range(CG_ITERATIONS):
        if not active.any():
            break
        a_dir = _normal(direction, grid, spatial, mu)
        alpha = np.where(active, rs / np.maximum(np.einsum("byx,byx->b", direction, a_dir), 1e-300), 0.0)
        u += alpha[:, None, None] * direction
        res -= alpha[:, None, None] * a_dir
        rs_new = np.where(active, np.einsum("byx,byx->b", res, res), rs)
        active &= rs_new > stop
        direction *= (rs_new / np.maximum(rs, 1e-300))[:, None, None]
        direction += res
        rs = rs_new
    return u


def _solve_normal(r, grid: TileGrid, spatial, damping: float = DAMPING, rs_all: np.ndarray | None = None,
                  out=None):
    """``u`` with ``(S Sᵀ + μ I) u = r`` by conjugate gradients, one system per band; ``μ = damping ·
    λ_max(S Sᵀ)`` (the Rayleigh quotient of a constant image, as the whole-scene solve).

    ``r`` and ``out`` are arrays ``(L, h, w)`` or LR scratch stores (:func:`lr_store`; ``out`` is
    then returned); ``rs_all``: each band's ``Σ r²`` (computed here if not given). The bands' systems
    are independent, so they are solved :func:`cg_block` at a time: the client holds one block's
    vectors (at 4096² x 128 bands and ratio 8, 33 MB each instead of 268 MB). Every band stops once its
    residual is below the whole-scene threshold (``CG_TOLERANCE²`` times the largest band's initial
    residual); the whole-scene solve runs the bands that converged first until the last does, a
    difference below that tolerance."""
    stored = isinstance(r, ScratchStore)
    bands, size = (r.shape[0], r.shape[1:])
    whole = (slice(None), slice(None))

    def rows(src, block):
        return src.read(*whole, block) if isinstance(src, ScratchStore) else src[block]

    step = r.band_chunk if stored else cg_block(size)
    if rs_all is None:
        rs_all = np.concatenate([np.einsum("byx,byx->b", v, v)
                                 for v in (rows(r, slice(b, b + step)) for b in range(0, bands, step))])
    mu = _shift(spatial, size, damping)
    stop = CG_TOLERANCE**2 * max(float(np.max(rs_all, initial=0.0)), 1e-300)
    if out is None:
        out = np.empty((bands, *size), dtype=np.float64)
    for b0 in range(0, bands, step):
        block = slice(b0, b0 + step)
        u = _cg(np.asarray(rows(r, block), dtype=np.float64), rs_all[block], stop, grid, spatial, mu)
        if isinstance(out, ScratchStore):
            out.write_box(*whole, u, b0)
        else:
            out[block] = u
    return out


@tile_task
def _projected_tile(msi_ext, u_store: ScratchStore, scratch: ScratchStore, t: Tile, w, srf, gain, spatial,
                    ratio: int, writer: ZarrCubeWriter | None, threads):
    """``Z1 + (I - G R) Sᵀ u`` on the tile, clipped at 0: the HSI correction less what the MSI sees of it
    (:func:`~fusion_explorer.methods.unmixing.projection.project`'s step 3); a group of bands at a time,
    ``u`` read on the tile's extended LR box. ``R Sᵀ u = Sᵀ (R u)``: ``R`` acts on bands and ``Sᵀ`` on
    pixels, so no band-deep array is needed."""
    if threads:
        set_torch_threads(threads)
    h = scratch.read(slice(t.y0, t.y1), slice(t.x0, t.x1))
    d = _msi_residual(t.trim(msi_ext), h, w, srf)
    ey, ex = t.lr_ext_box(ratio)
    step = writer.band_chunk if writer is not None else max(1, CHUNK_BYTES // (8 * h.shape[1] * h.shape[2]))
    bands = w.shape[0]

    def up_of(v: np.ndarray) -> np.ndarray:  # Sᵀ of LR maps on the extended box, on the tile
        return t.trim(spatial.adjoint(torch.from_numpy(np.ascontiguousarray(v))[None])[0].numpy())

    msi_last = _projection.MSI_LAST
    if msi_last:
        ru = sum(np.einsum("mb,byx->myx", srf[:, b : b + step], u_store.read(ey, ex, slice(b, b + step)))
                 for b in range(0, bands, step))
        seen = up_of(ru)  # what the MSI sees of the HSI correction, R Sᵀ u = Sᵀ (R u)
    out = []
    for b in range(0, bands, step):
        c = slice(b, b + step)
        z = _msi_corrected(h, w, gain, d, c) + up_of(u_store.read(ey, ex, c))
        if msi_last:
            z -= np.einsum("bm,myx->byx", gain[c], seen)
        z = np.maximum(z, 0).astype(np.float32)
        if writer is not None:
            writer.write(t.y0, t.x0, z, band=b)
        else:
            out.append(z)
    return None if writer is not None else np.concatenate(out)


def stored_lr(folder, lr: np.ndarray, grid: TileGrid) -> ScratchStore:
    """The LR-HSI ``lr`` (clipped, float32) in an LR scratch store, for the consistency passes to read
    (the caller then drops its copy)."""
    store = lr_store(folder, "lr_hsi", lr.shape[0], grid, "float32")
    store.write_box(slice(None), slice(None), lr)
    return store


def projection(problem, grid, lr_hsi: ScratchStore, msi, srf, w, scratch, runner, writer, threads, progress,
               folder) -> list:
    """Tiled cnmf's consistency projection (the module docstring); ``lr_hsi`` from :func:`stored_lr`."""
    ratio, spatial = problem.ratio, problem.spatial_operator()
    gain = msi_gain(srf, w.astype(np.float64))
    w64 = w.astype(np.float64)
    bands = lr_hsi.shape[0]
    r_store, u_store = lr_store(folder, "residual", bands, grid), lr_store(folder, "solution", bands, grid)
    tasks = [dask.delayed(_residual_tile, pure=False)(
        _msi_box(msi, slice(t.ey0, t.ey1), slice(t.ex0, t.ex1)), scratch, lr_hsi, r_store, t, w64, srf, gain, spatial,
        ratio, threads) for t in grid]
    rs_all = np.sum(runner.run_tiles(tasks, progress, "consistency: S(Z) (tiles)"), axis=0)
    if progress is not None:
        progress(0, 1, {"stage": "consistency: CG on the LR grid"})
    _solve_normal(r_store, grid, spatial, rs_all=rs_all, out=u_store)
    tasks = [dask.delayed(_projected_tile, pure=False)(
        _msi_box(msi, slice(t.ey0, t.ey1), slice(t.ex0, t.ex1)), u_store, scratch, t, w64, srf, gain, spatial, ratio,
        writer, threads) for t in grid]
    return runner.run_tiles(tasks, progress, "fused cube (tiles)")
