"""Tiled fusion: the same methods, tile by tile on dask, for scenes larger than memory.

``bicubic``: each tile upsamples its LR box plus 2 LR pixels of halo (the cubic stencil) and
keeps its own pixels: identical to the whole-scene result.

``cnmf`` (Yokoya et al. 2012, the schedule of :mod:`fusion_explorer.methods.cnmf` with its
defaults: one outer round, no final MSI stage). Every stage is either global on the LR grid,
where everything is small, or pixel-wise / PSF-local on the HR grid:

1. *global*: VCA and the HSI unmixing (``W``, ``H_h``) on the whole LR-HSI, in memory;
2. *tiles*: ``H_m`` starts as the bilinear upsampling of ``H_h`` (halo: 2 LR pixels) and runs
   the MSI-side multiplicative updates with ``W_m = R W``. Given ``W_m`` each HR pixel's update
   reads only that pixel, so a tile's iterates are exactly the whole scene's. With an MSI of more
   than 3 bands the whole-scene run also updates ``W_m`` (a scene-wide sum per update): that path
   is computed first, in memory, on the whole scene up to ``TRAJECTORY_PIXELS`` HR pixels (else on
   a spread of windows), and every tile replays it (:func:`.cnmf_stages.msi_stage_plan`).
   ``H_m`` goes to a scratch Zarr store (``p x H x W`` float32, on disk);
3. *tiles*: ``H_h = S(H_m)`` on each LR-aligned tile read with a halo of the PSF's half-width
   (the degradation is PSF-local), trimmed and gathered (``p x h x w``: small);
4. *global*: the outer round's HSI unmixing updates ``W`` (and ``H_h`` with a >3-band MSI);
5. *tiles*: ``Z = W H_m`` written to the output Zarr store tile by tile.

With ``consistency="projection"`` step 5 becomes CNMF's consistency projection, tile-wise: a tile
pass computes ``S(Z1)`` with ``Z1 = Z + G (Y_m - R Z)`` (per pixel), the HSI residual
``Y_h - S(Z1)`` is gathered on the LR grid, ``(S Sᵀ + μ I) u = r`` is solved there by conjugate
gradients with ``S Sᵀ`` applied tile by tile (its reach is twice the PSF's half-width: the halo
covers it), and a last pass writes ``Z1 + Sᵀ u``. (The ``"guided"`` variant is not tiled.)

The LR-grid stages run in float64 (the LR-HSI held once, in float32, and streamed over in float64
blocks): their stopping rules then cannot flip with the rounding of another tiling, and the result
does not depend on the tile size or the number of workers.

Where it differs from the whole-scene run: with an RGB MSI the MSI stage's stopping rule (a cost
summed over the scene, checked every 10 updates) is replaced by the full iteration count (with more
bands the ``W_m`` path's computation applies it); on scenes above ``TRAJECTORY_PIXELS`` the ``W_m``
path is that of a sample. Both are measured in ``tests/test_tiled.py`` and
``benchmarks/results/scale.md``.

``scalmu``: the shipped network run as map-reduce passes over the tiles (the CNMF start's stages
above, then per layer a pass that sums the features of its learned preconditioner over the scene and
a pass that applies the update, then the consistency layer with its guided transfer tile-wise); see
:mod:`.scalmu`. MossFuse is not tiled (see ``benchmarks/results/scale.md``).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import dask
import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from ..cube import DIMS
from ..errors import ProblemError
from ..problem import FUSED_KIND
from .cnmf_stages import (
    THRESHOLD,
    cnmf_degrade_tile,
    cnmf_fuse_tile,
    lr_grid_start,
    msi_box,
    outer_round,
    run_msi_stage,
)
from .consistency import projection, stored_lr
from .engine import ProgressCallback, Runner, Tile, TileGrid, set_torch_threads, tile_task
from .io import ScratchStore, ZarrCubeWriter, as_lazy
from .problem import TiledProblem

TILED_METHODS = ("bicubic", "cnmf", "scalmu")
#: bytes of upsampled values per band group of a bicubic tile (cache-sized; see :func:`_bicubic_tile`)
BICUBIC_GROUP_BYTES = 8 << 20


# ---- bicubic --------------------------------------------------------------------------------------------


@tile_task
def _bicubic_tile(lr_ext: np.ndarray, t: Tile, ratio: int, writer: ZarrCubeWriter | None, threads: int | None,
                  out: np.ndarray | None = None):
    """Upsample a tile's LR box (with its halo), keep the tile's own pixels, clip at 0.

    Bands go through ``F.interpolate`` a few at a time (about :data:`BICUBIC_GROUP_BYTES` of
    upsampled values each): each group's result stays in cache and is clipped straight into the
    tile's destination, so no full-size upsampled copy of the extended box is allocated, faulted in
    and copied again. The destination is ``out``'s box (the whole scene's array, on the threaded
    scheduler) or a tile buffer that is written to ``writer`` (or returned). Per band this is the
    same ``F.interpolate`` call on the same LR values as the whole-scene bicubic: the same numbers.
    """
    if threads:
        set_torch_threads(threads)
    lr = torch.from_numpy(np.maximum(np.asarray(lr_ext, dtype=np.float32), 0))
    bands, eh, ew = lr.shape[0], lr.shape[1] * ratio, lr.shape[2] * ratio
    if out is not None:
        dest = out[:, t.y0 : t.y1, t.x0 : t.x1]
    else:
        dest = np.empty((bands, t.y1 - t.y0, t.x1 - t.x0), dtype=np.float32)
    target = torch.from_numpy(dest)
    group = max(1, BICUBIC_GROUP_BYTES // (eh * ew * 4))
    for b in range(0, bands, group):
        up = F.interpolate(lr[None, b : b + group], scale_factor=ratio, mode="bicubic", align_corners=False)[0]
        torch.clamp_min(t.trim(up), 0, out=target[b : b + group])
    if writer is not None:
        writer.write(t.y0, t.x0, dest)
        return None
    return None if out is not None else dest


def _check_cnmf_options(options: dict) -> dict:
    known = {"n_endmembers": None, "inner_iterations": 200, "outer_iterations": 1, "threshold": THRESHOLD,
             "sum_to_one": None, "final_msi_stage": False, "consistency": False, "dtype": "float32"}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ProblemError(f"tiled cnmf does not take option(s) {', '.join(unknown)}; it takes "
                           f"{', '.join(sorted(known))}")
    opts = {**known, **options}
    if opts["outer_iterations"] != 1 or opts["final_msi_stage"] or opts["dtype"] != "float32":
        raise ProblemError("tiled cnmf runs CNMF's default schedule (outer_iterations=1, final_msi_stage=False, "
                           "dtype='float32')")
    if opts["consistency"] not in (False, "projection"):
        raise ProblemError(f"tiled cnmf takes consistency=False or 'projection' (the guided step is not tiled); "
                           f"got {opts['consistency']!r}")
    inner = opts["inner_iterations"]
    if isinstance(inner, bool) or int(inner) != inner or inner < 1:
        raise ProblemError(f"inner_iterations must be a positive integer; got {inner!r}")
    opts["inner_iterations"] = int(inner)
    return opts


# ---- the entry point -------------------------------------------------------------------------------------


def fuse_tiled(
    problem: TiledProblem | Any,
    method: str = "bicubic",
    *,
    tile: int = 512,
    scheduler: Any = "threads",
    workers: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    on_start: Any = None,
    workdir: str | Path | None = None,
    **options: Any,
) -> xr.DataArray:
    """Fuse ``problem`` (a :class:`TiledProblem`, or a :class:`~fusion_explorer.problem.FusionProblem`)
    tile by tile with ``method`` (``"bicubic"``, ``"cnmf"`` or ``"scalmu"``); return the fused cube ``(band, y, x)``.

    ``tile``: tile side in HR pixels (rounded down to a multiple of the ratio); ``scheduler``:
    ``"threads"``, ``"processes"`` (a LocalCluster of ``workers`` processes) or a scheduler address
    / ``distributed.Client``. With ``out`` (a ``.zarr`` path) the cube is written there tile by tile
    and returned lazily (dask-backed, opened from the store); without it, it is returned in memory
    (small scenes only). ``progress(done, total, info)`` is called as tiles finish; ``on_start(runner)``
    once the scheduler is up (the CLI prints the dashboard link). ``workdir``: where scratch stores
    go (default: a temporary folder beside ``out``, or the system's). ``options``: the method's.
    """
    from ..problem import FusionProblem
    from .io import open_lazy

    if method not in TILED_METHODS:
        why = " (see fusion_explorer.tiled.methods)" if method == "mossfuse" else ""
        raise ProblemError(f"method {method!r} has no tiled version{why}; tiled methods: {', '.join(TILED_METHODS)}")
    if isinstance(problem, FusionProblem):
        problem = TiledProblem.from_problem(problem)
    if method != "bicubic" and problem.psf is None:  # fitted on a central window (bicubic reads no PSF)
        problem = problem.with_estimated_psf()
    if method == "bicubic" and options:
        raise ProblemError(f"tiled bicubic takes no options; got {', '.join(sorted(options))}")
    if method == "scalmu":
        from . import scalmu as tiled_scalmu

        opts = tiled_scalmu.check_options(options, problem)
    else:
        opts = _check_cnmf_options(options) if method == "cnmf" else {}
    ratio = problem.ratio
    tile = max(ratio, int(tile) // ratio * ratio)
    psf_shape = problem.psf.shape if (method != "bicubic" and problem.psf is not None) else (1, 1)
    # the consistency projection applies S Sᵀ tile by tile: twice the PSF's reach in the halo
    reach = math.ceil(max(psf_shape) // 2 / ratio)
    extra_lr = tiled_scalmu.extra_halo(problem, opts) if method == "scalmu" else 2 + (
        reach if opts.get("consistency") else 0)
    grid = TileGrid.for_psf(problem.hr_size, ratio, tile, psf_shape, extra_lr=extra_lr)
    bands = problem.hsi_bands
    attrs = {k: v for k, v in problem.lr_hsi.attrs.items() if k not in ("kind",)}
    params = {k: v for k, v in opts.items() if k != "levels"}
    attrs.update(kind=FUSED_KIND, method=method, method_params=repr({**params, "seed": seed}), ratio=ratio,
                 srf=problem.srf.name, tiled=f"tiles of {tile} px, halo {grid.halo} px", tile=tile)
    if "psf" in problem.attrs and method != "bicubic":
        attrs["psf"] = problem.attrs["psf"]
    scratch_root = Path(workdir) if workdir is not None else (Path(out).resolve().parent if out else None)
    folder = Path(tempfile.mkdtemp(prefix=".fusion-explorer-tiles-", dir=scratch_root))
    writer = None
    filled = None  # the in-memory result, filled in place by bicubic tiles on the threaded scheduler
    try:
        with Runner(scheduler, workers) as runner:
            if on_start is not None:
                on_start(runner)
            threads = 1 if runner.client is not None else None
            stats = problem.validate(runner.compute)
            if out is not None:
                writer = ZarrCubeWriter(out, (bands, *problem.hr_size), (tile, tile), wavelength=problem.wavelength,
                                        attrs=attrs, overwrite=overwrite)
            if method == "bicubic":  # the LR-HSI stays lazy too: each task reads its own box
                lazy_lr = as_lazy(problem.lr_hsi, max(tile // ratio, 1))
                # in memory on the threaded scheduler: tiles fill one array in place (no gather, no copy)
                if writer is None and runner.client is None:
                    filled = np.empty((bands, *problem.hr_size), dtype=np.float32)
                tasks = []
                for t in grid:
                    ly, lx = t.lr_ext_box(ratio)
                    tasks.append(dask.delayed(_bicubic_tile, pure=False)(msi_box(lazy_lr, ly, lx), t, ratio, writer,
                                                                         threads, filled))
                tiles = runner.run_tiles(tasks, progress, "bicubic")
            elif method == "scalmu":
                msi = as_lazy(problem.hr_msi, tile).chunk({"band": -1, "y": tile, "x": tile})
                tiles = tiled_scalmu.run_scalmu(problem, grid, msi, stats, opts, seed, runner, folder, writer,
                                                threads, progress)
            else:
                msi = as_lazy(problem.hr_msi, tile).chunk({"band": -1, "y": tile, "x": tile})
                tiles = _run_cnmf(problem, grid, msi, stats, opts, seed, runner, folder, writer, threads, progress)
        if writer is not None:
            path = writer.commit()
            writer = None
            return open_lazy(path)
        return _assemble(tiles, grid, bands, problem, attrs, filled)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_cnmf(problem: TiledProblem, grid: TileGrid, msi: xr.DataArray, stats: dict, opts: dict, seed: int,
              runner: Runner, folder: Path, writer, threads, progress) -> list:
    """Tiled CNMF's stages (the module docstring). The LR-HSI (``1/ratio²`` of the scene, 0.5 GB at
    8192² x 128 bands and ratio 8) is in memory for the LR-grid stages only, read again for the
    second: the tile passes between and after them run without it."""
    ratio, inner, threshold = problem.ratio, opts["inner_iterations"], opts["threshold"]
    spatial = problem.spatial_operator()
    (h, w), (big_h, big_w) = problem.lr_size, problem.hr_size
    bands, msi_bands = problem.hsi_bands, problem.msi_bands
    # the global stages run in float64 on the LR grid (small): rounding then cannot move their
    # stopping points, so the result does not depend on the tile size or the number of workers
    srf = np.array(problem.srf.matrix, dtype=np.float64)
    if progress is not None:
        progress(0, 1, {"stage": "HSI unmixing (global, LR grid)"})
    hsi, p, delta, w_m, h_lr = lr_grid_start(problem.lr_values(), srf, float(np.mean(stats["band_means"])),
                                             opts["n_endmembers"], seed, inner, threshold, opts["sum_to_one"], "CNMF")
    hsi.y = hsi.h = None  # not read again until the outer round
    scratch = ScratchStore(folder, "abundances", (p, big_h, big_w), grid.tile)

    def ext_box(t: Tile):
        return msi_box(msi, slice(t.ey0, t.ey1), slice(t.ex0, t.ex1))

    # the MSI stage: inner + (inner - 1) updates of H_m
    run_msi_stage(runner, grid, None, inner, w_m, delta, threshold, ext_box, h_lr, scratch, threads, progress,
                  "MSI unmixing")
    del h_lr
    tasks = [dask.delayed(cnmf_degrade_tile, pure=False)(scratch, t, spatial, ratio, threads) for t in grid]
    pieces = runner.run_tiles(tasks, progress, "S(H_m) (tiles)")
    h_lr_new = np.zeros((p, h, w), dtype=np.float64)
    for t, piece in zip(grid, pieces, strict=True):
        h_lr_new[(slice(None), *t.lr_box(ratio))] = piece
    del pieces
    lr = problem.lr_values()
    hsi.y = torch.from_numpy(lr.reshape(1, bands, -1))
    outer_round(hsi, h_lr_new, msi_bands, inner, threshold)
    w_final = hsi.w[0].numpy()
    del hsi, h_lr_new
    if opts["consistency"] == "projection":
        lr_hsi = stored_lr(folder, lr, grid)
        del lr
        return projection(problem, grid, lr_hsi, msi, srf, w_final, scratch, runner, writer, threads, progress,
                          folder)
    del lr
    tasks = [dask.delayed(cnmf_fuse_tile, pure=False)(scratch, t, w_final, writer, threads) for t in grid]
    return runner.run_tiles(tasks, progress, "fused cube (tiles)")


def _assemble(tiles: list, grid: TileGrid, bands: int, problem: TiledProblem, attrs: dict,
              filled: np.ndarray | None = None) -> xr.DataArray:
    if filled is not None:  # the tiles wrote their pixels into it
        out = filled
    else:
        out = np.empty((bands, *grid.hr_size), dtype=np.float32)
        for t, values in zip(grid, tiles, strict=True):
            out[:, t.y0 : t.y1, t.x0 : t.x1] = values
    coords = {}
    if problem.wavelength is not None:
        coords["wavelength"] = ("band", problem.wavelength, {"units": "nm"})
    return xr.DataArray(out, dims=DIMS, coords=coords, attrs=attrs, name="fused")
