"""SCALMU, tile by tile: the shipped network (:func:`fusion_explorer.methods.scalmu.load_model`) run as
a sequence of map-reduce passes over LR-aligned tiles, with the HR abundances ``H_m`` in a scratch
Zarr store (two, written in turn: a pass reads one and writes the other).

What is global is small: every factor but ``H_m`` lives on the LR grid (``1/ratio²`` of the HR
pixels) or is a ``p``-vector / ``p x p`` matrix summed over the scene. So:

1. *start* (SCALMU's own, :mod:`fusion_explorer.methods.scalmu.start`: CNMF's schedule with
   ``init_iterations``): VCA and the HSI unmixing on the LR grid (float64, the stages of tiled
   cnmf); the first MSI stage per tile (:func:`~.cnmf_stages.msi_stage_tile`), coarse to fine on
   images from 256x256 pixels up (``msi_pyramid="auto"``: each tile average-pools its MSI and
   upsamples its abundances level by level, each level on the tile plus two pixels of every coarser
   level's grid, :func:`~.cnmf_stages.pyramid_margins`, the first from the LR abundances over the
   tile's halo; every factor must divide the ratio), else CNMF's full-resolution stage, with
   ``W_m = R W`` or, with an MSI of more than 3 bands, replaying the ``W_m`` path the whole-scene
   stage takes (:func:`~.cnmf_stages.msi_stage_plan`, as tiled cnmf); a tile pass gathers ``S(H_m)``, ``S(Y_m)``
   (the MSI on the LR grid: the colour neighbours' candidates) and ``Σ Y_m²``; the outer round's
   ``W`` update on the LR grid. The sensor features read the LR-HSI and the MSI's central
   256x256 window (what the whole-scene run reads).
2. *layers* ``k = 1..K``: the ``W`` update with its learned ``Q_k, η_k`` runs on the LR grid
   (features from ``W``, ``W_m`` and ``H_h = S(H_m)``: all small). The ``H_m`` update's learned
   ``P_k, γ_k`` come from features that are scene-wide sums (``Σ num``, ``Σ den``, ``Σ H_m`` per
   endmember and the Gram ``H_m H_mᵀ``): a *reduce* pass returns each tile's sums, the client
   evaluates the layer's MLP on their total, and an *apply* pass updates each tile (the joint
   update's ``Sᵀ`` terms from LR maps with a margin, exact in the tile), writes it to the other
   store and returns ``S(H_m)`` on its LR box (for the next layer) and ``Σ |Y_m - R W H_m|²``.
3. *consistency layer* (tile-wise like tiled cnmf's ``consistency="projection"``, plus the guided
   transfer): its gate reads three scene-wide energies (the images' disagreement from ``S(Y_m)``
   and ``Y_h``, the MSI residual from the last apply pass, the HSI residual ``Y_h - W S(H_m)`` on
   the LR grid). A tile pass computes each tile's colour neighbours (from the MSI over the tile's
   box plus :data:`~fusion_explorer.methods.unmixing.guided.WINDOW` + 1 LR pixels: the search
   window, with windows clamped at the scene's border exactly as the whole-scene search), the
   guided transfer of the LR residual (computed on the search box from the LR-HSI and ``S(H_m)``, both in
   scratch stores on the LR grid), the MSI correction ``G (Y_m - R Z)``, stores ``Z1`` (a scratch cube
   the size of the output, on disk: tiled scalmu needs free disk for about twice the output) and writes
   ``r = Y_h - S(Z1)`` on its LR box to an LR scratch store; ``(S Sᵀ + μ I) u = r`` is solved by CG a
   block of bands at a time with ``S Sᵀ`` applied tile by tile (:mod:`.consistency`), ``u`` written to
   another store; a last pass writes ``Z1 + t_h Sᵀ u``. The client holds no band-deep array of the LR
   grid after the layers.

Exact where the whole-scene run is: every tile computes what the whole-scene run computes on its
pixels (halos cover every local operator), and every scene-wide quantity is the sum of the tiles'
parts. What differs, as in tiled cnmf: with an RGB MSI the start's MSI-stage stopping rules (a cost
summed over the scene, checked every 10 updates) are replaced by their iteration caps; on scenes above
``TRAJECTORY_PIXELS`` the ``W_m`` path of a >3-band MSI's start is that of a sample of windows. With a
4-band Gaussian MSI on a 256² balloons crop at x32 (pyramid start), keeping ``W_m = R W`` had put the
tiled result 1.16 dB off; replaying the path it is the whole-scene result to 2e-6. The
LR-grid start runs in float64 (the whole scene in float32), sums are
accumulated in float64, everything per pixel in float32 as the whole-scene run. On the full balloons
scene (defaults, tiles of 128 px) the tiled PSNR is the whole-scene one to 0.0000 dB at x8 and x32; the
largest difference, 4.3e-4 at x8, is on 5 of 262144 pixels whose colour-neighbour search breaks a near-tie
the other way (``tests/test_tiled_scalmu.py``, ``benchmarks/results/scale.md`` section 5).

The consistency layer's step sizes, ridge, width and Wiener terms come from
:meth:`~fusion_explorer.methods.scalmu.model.ConsistencyLayer.parameters_for`, given the observation
features summed over the tiles.
"""

from __future__ import annotations

import math

import dask
import numpy as np
import torch

from ..errors import ProblemError
from ..methods.base import check_options as check_method_options
from ..methods.cnmf import _pyramid_levels
from ..methods.scalmu import load_model
from ..methods.scalmu.model import (
    _mix,
    _node_features,
    _pair_features,
    _relaxed_numerator,
    prior_scale,
    prior_terms,
)
from ..methods.scalmu.start import resolve_pyramid
from ..methods.unmixing import (
    CoupledData,
    CoupledState,
    abundance_terms,
    multiplicative,
    update_endmembers,
)
from ..methods.unmixing import projection as _projection
from ..methods.unmixing.guided import WINDOW, Neighbours, colour_neighbours, transfer
from ..methods.unmixing.projection import (
    DAMPING,
    DENOISE_HALF_WINDOW,
    NOISE_WINDOW,
    common_noise_level,
    denoise_residual,
    noise_levels,
    sensor_features,
    spectral_prior,
)
from ..methods.unmixing.projection import msi_gain as projection_gain
from .cnmf_stages import (
    THRESHOLD,
    _msi,
    cnmf_fuse_tile,
    lr_grid_start,
    msi_box,
    outer_round,
    pyramid_margins,
    run_msi_stage,
)
from .consistency import _solve_normal, lr_store, store_residual, stored_lr
from .engine import Runner, Tile, TileGrid, set_torch_threads, tile_task
from .io import CHUNK_BYTES, ScratchStore

#: the options tiled scalmu takes, with the whole-scene defaults
DEFAULTS = {"checkpoint": None, "learned": True, "layers": None, "init_iterations": None, "msi_pyramid": "auto",
            "n_endmembers": None, "consistency": True, "dtype": "float32", "denoise": True}


def check_options(options: dict, problem) -> dict:
    """The options with their defaults, the pyramid resolved to ``levels``; one clear error otherwise."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ProblemError(f"tiled scalmu does not take option(s) {', '.join(unknown)}; it takes "
                           f"{', '.join(sorted(DEFAULTS))}")
    check_method_options("scalmu", options)  # the values' types, as the whole-scene method checks them
    opts = {**DEFAULTS, **options}
    if opts["dtype"] != "float32":
        raise ProblemError("tiled scalmu runs in float32 (the LR-grid start in float64); got dtype "
                           f"{opts['dtype']!r}")
    for name in ("layers", "init_iterations"):
        v = opts[name]
        if v is not None and (isinstance(v, bool) or int(v) != v or v < (0 if name == "layers" else 1)):
            raise ProblemError(f"{name} must be a {'non-negative' if name == 'layers' else 'positive'} integer; "
                               f"got {v!r}")
    if problem.psf is None:  # (fuse_tiled fits it first: TiledProblem.with_estimated_psf)
        raise ProblemError("tiled scalmu needs a known PSF (--protocol or --psf-sigma) or one fitted first "
                           "(TiledProblem.with_estimated_psf, which fuse_tiled runs)")
    pyramid = resolve_pyramid(opts["msi_pyramid"], problem.hr_size)
    levels = _pyramid_levels([list(x) for x in pyramid] if pyramid else None)
    bad = [f for f, _ in levels if problem.ratio % f]
    if bad:
        raise ProblemError(f"tiled scalmu pools the MSI by factors that divide the ratio {problem.ratio}; the "
                           f"msi_pyramid has {', '.join(map(str, bad))} (pass msi_pyramid=None for CNMF's "
                           f"full-resolution stage)")
    opts["levels"] = levels
    return opts


def reach(problem) -> int:
    """LR pixels the PSF reaches beyond an LR sample's own block (``⌈half width / ratio⌉``)."""
    return math.ceil(max(problem.psf.shape) // 2 / problem.ratio)


def footprint_margin(problem) -> int:
    """LR pixels around an LR box whose HR pixels hold the PSF footprints of the box's samples (sample
    ``j`` reads HR pixels ``offset + ratio·j ± half``): 0 at x32 with its 31-pixel PSF and offset 15,
    1 at x8 with 15 pixels and offset 3. ``S`` of a region that wide is exact on the box."""
    half, ratio, off = max(problem.psf.shape) // 2, problem.ratio, spatial_offset(problem)
    return max(0, math.ceil((half - off) / ratio), math.ceil((off + half - ratio + 1) / ratio))


def extra_halo(problem, opts: dict) -> int:
    """LR pixels of halo beyond the PSF's reach (:meth:`TileGrid.for_psf`'s ``extra_lr``): ``S Sᵀ``
    of the CG reaches ``⌈2 half / ratio⌉ + 1`` LR pixels (taken as twice the reach plus one); the
    start's MSI stage reads the upsampled LR abundances two LR pixels beyond its first level's
    margin (:func:`~.cnmf_stages.pyramid_margins`)."""
    r, ratio = reach(problem), problem.ratio
    extra = r + 1
    levels = opts["levels"]
    need = 2 * ratio + (pyramid_margins(f for f, _ in levels)[0] if levels else 0)
    while ratio * (r + extra) < need:
        extra += 1
    return extra


# ---- boxes -----------------------------------------------------------------------------------------------


def _grow(lo: int, hi: int, margin: int, size: int) -> tuple[int, int]:
    return max(lo - margin, 0), min(hi + margin, size)


def _neighbour_box(lo: int, hi: int, size: int) -> tuple[int, int]:
    """The LR range ``[a, b)`` the colour search of the HR pixels of LR range ``[lo, hi)`` needs: every
    window (:data:`WINDOW` each side of a pixel's own LR pixel, which may be one beyond ``[lo, hi)``)
    inside it or clamped at the scene's border as in the whole-scene search; ``a`` even, so that the
    search's rounding of HR to LR positions (half to even) is the whole scene's."""
    a, b = _grow(lo, hi, WINDOW + 1, size)
    need = min(2 * WINDOW + 1, size)
    if b - a < need:
        a, b = (0, need) if a == 0 else (b - need, b)
    return a - a % 2, b


def _crop_lr(values: np.ndarray, box: tuple[int, int, int, int], want: tuple[int, int, int, int]) -> np.ndarray:
    """The LR box ``want`` of ``values`` computed on the LR box ``box`` (``(y0, y1, x0, x1)`` each)."""
    return values[..., want[0] - box[0] : want[1] - box[0], want[2] - box[2] : want[3] - box[2]]


def _lr_box(t: Tile, ratio: int) -> tuple[int, int, int, int]:
    return t.y0 // ratio, t.y1 // ratio, t.x0 // ratio, t.x1 // ratio


def _around(box: tuple[int, int, int, int], margin: int, lr_size: tuple[int, int]) -> tuple[int, int, int, int]:
    (ay, by), (ax, bx) = _grow(box[0], box[1], margin, lr_size[0]), _grow(box[2], box[3], margin, lr_size[1])
    return ay, by, ax, bx


def _hr(box: tuple[int, int, int, int], ratio: int) -> tuple[slice, slice]:
    return slice(box[0] * ratio, box[1] * ratio), slice(box[2] * ratio, box[3] * ratio)


def _adjoint_on(spatial, lr_values: np.ndarray, lr_box, region, ratio: int) -> torch.Tensor:
    """``Sᵀ`` of LR maps given on ``lr_box``, on the HR pixels of the LR box ``region`` (inside it, and
    at least the PSF's reach from its edges unless they are the scene's: then exact)."""
    up = spatial.adjoint(torch.from_numpy(np.ascontiguousarray(lr_values))[None])[0]
    return up[:, (region[0] - lr_box[0]) * ratio : (region[1] - lr_box[0]) * ratio,
              (region[2] - lr_box[2]) * ratio : (region[3] - lr_box[2]) * ratio]


#: bytes of float64 copies a tile task makes at a time (of maps to degrade, of pixels to sum): with the
#: 50 endmembers VD finds on a 128-band scene, a 512-px tile's region is 56 MB of float32 per copy of H_m
F64_BLOCK_BYTES = 8 << 20


def _degrade_on(spatial, values: torch.Tensor, region, want, ratio: int) -> np.ndarray:
    """``S`` of HR maps ``values`` ``(c, Y, X)`` on the LR box ``region``, kept on the LR box ``want``
    (float64: the same numbers whatever the tile size; a few maps at a time, each on its own)."""
    step = max(1, F64_BLOCK_BYTES // (8 * values[0].numel()))
    return np.concatenate([_crop_lr(spatial(values[c : c + step].double()[None])[0].numpy(), region, want)
                           for c in range(0, values.shape[0], step)])


def _pixel_sums(x: torch.Tensor, gram: bool = False):
    """``Σ`` over the pixels of ``x`` ``(c, n)`` in float64 (and ``x xᵀ`` with ``gram``), a block of pixels at
    a time (no float64 copy of ``x``)."""
    c = x.shape[0]
    step = max(1, F64_BLOCK_BYTES // (8 * c))
    total = torch.zeros(c, dtype=torch.float64)
    product = torch.zeros((c, c), dtype=torch.float64) if gram else None
    for i in range(0, x.shape[1], step):
        block = x[:, i : i + step].double()
        total += block.sum(-1)
        if gram:
            product += block @ block.T
    return (total.numpy(), product.numpy()) if gram else total.numpy()


# ---- tile tasks ------------------------------------------------------------------------------------------


@tile_task
def _start_degrade_tile(scratch: ScratchStore, msi_region, region, t: Tile, spatial, ratio: int, threads):
    """``(S(H_m), S(Y_m))`` on the tile's LR box (from the LR box ``region`` around it) and ``Σ Y_m²``
    over the tile."""
    if threads:
        set_torch_threads(threads)
    own = _lr_box(t, ratio)
    ys, xs = _hr(region, ratio)
    h = torch.from_numpy(scratch.read(ys, xs))
    y = _msi(msi_region)
    oy, ox = t.y0 - ys.start, t.x0 - xs.start
    yy = float(y[:, oy : oy + t.y1 - t.y0, ox : ox + t.x1 - t.x0].double().square().sum())
    return _degrade_on(spatial, h, region, own, ratio), _degrade_on(spatial, y, region, own, ratio), yy


def _terms(h: torch.Tensor, y: torch.Tensor, w_m: np.ndarray, delta: float, joint, region, spatial, ratio: int,
           prior=None):
    """The ``H_m`` update's numerator and denominator ``(1, p, pixels)`` on the HR pixels of the LR box
    ``region``: CNMF's MSI terms, plus (a joint layer) ``Sᵀ(λ Wᵀ Y_h)`` and ``Sᵀ(λ Wᵀ W H_h)`` from the
    LR maps ``a, b`` read on the LR box ``cover`` from ``joint = (store, cover)`` (rows ``a`` then ``b``;
    :func:`~fusion_explorer.methods.unmixing.joint_abundance_terms`), plus (a network with an abundance
    prior) the prior's terms (:func:`_prior_on`)."""
    p, l = h.shape[0], y.shape[0]
    num, den = abundance_terms(y.reshape(1, l, -1), torch.from_numpy(w_m)[None], h.reshape(1, p, -1), delta)
    if joint is not None:
        store, box = joint
        cover = (slice(box[0], box[1]), slice(box[2], box[3]))
        num.add_(_adjoint_on(spatial, store.read(*cover, slice(0, p)), box, region, ratio).reshape(1, p, -1))
        den.add_(_adjoint_on(spatial, store.read(*cover, slice(p, 2 * p)), box, region, ratio).reshape(1, p, -1))
    if prior is not None:
        num, den = _prior_on(prior, num, den, h.reshape(1, p, -1), region, ratio)
    return num, den


def _prior_on(prior, num: torch.Tensor, den: torch.Tensor, h: torch.Tensor, region, ratio: int):
    """The abundance prior's terms (:func:`~fusion_explorer.methods.scalmu.model.prior_terms`) on the HR pixels
    of the LR box ``region``: ``A`` the guided transfer of ``S(H_m)`` (read from ``store`` on the neighbour box)
    by the colour neighbours of those pixels, searched on the neighbour box as the consistency pass searches
    them. ``prior = (store, msi, lr_msi, nb_box, offset, scale, weight, tau)``: ``msi`` and ``lr_msi`` over
    ``nb_box`` (:func:`_neighbour_box` of ``region``), ``scale, weight, tau`` the layer's (global)."""
    store, msi_nb, lr_msi_nb, nb_box, offset, scale, weight, tau = prior
    nb = _neighbours_on(msi_nb, lr_msi_nb, nb_box, region, ratio, offset)
    s_h = torch.from_numpy(store.read(slice(nb_box[0], nb_box[1]), slice(nb_box[2], nb_box[3])))
    target = transfer(s_h.reshape(1, h.shape[1], -1), nb).clamp_min(0)
    return prior_terms(num, den, h, target, torch.tensor(scale).reshape(1, 1, 1), torch.from_numpy(weight)[None],
                       torch.tensor(tau))


@tile_task
def _layer_sums_tile(scratch: ScratchStore, msi_own, joint, t: Tile, w_m, delta, spatial, ratio: int, threads,
                     prior=None):
    """The tile's parts of the scene-wide sums the layer's ``H_m`` preconditioner reads: ``Σ num``,
    ``Σ den``, ``Σ H_m`` ``(p,)`` and ``H_m H_mᵀ`` ``(p, p)``, float64."""
    if threads:
        set_torch_threads(threads)
    own = _lr_box(t, ratio)
    h = torch.from_numpy(scratch.read(slice(t.y0, t.y1), slice(t.x0, t.x1)))
    with torch.no_grad():
        num, den = _terms(h, _msi(msi_own), w_m, delta, joint, own, spatial, ratio, prior)
    return (_pixel_sums(num[0]), _pixel_sums(den[0]), *_pixel_sums(h.reshape(h.shape[0], -1), gram=True))


@tile_task
def _layer_apply_tile(src: ScratchStore, dst: ScratchStore, msi_region, joint, region, t: Tile, w_m, delta,
                      mat, exponent, spatial, ratio: int, threads, prior=None):
    """One layer's ``H_m`` update on ``region`` (the tile plus the PSF's reach), re-weighted by the
    layer's ``P, γ`` when learned; writes the tile's pixels to ``dst``; returns ``S(H_m)`` on the tile's
    LR box (float32: what the layers read; the client gathers a whole LR grid of them) and the tile's
    ``Σ |Y_m - W_m H_m|²``."""
    if threads:
        set_torch_threads(threads)
    own = _lr_box(t, ratio)
    ys, xs = _hr(region, ratio)
    h = torch.from_numpy(src.read(ys, xs))
    p, big_y, big_x = h.shape
    y = _msi(msi_region)
    with torch.no_grad():
        num, den = _terms(h, y, w_m, delta, joint, region, spatial, ratio, prior)
        if mat is not None:  # the learned hook's arithmetic (fusion_explorer.methods.scalmu.model._reweight)
            mat_t, exp_t = torch.from_numpy(mat)[None], torch.from_numpy(exponent)[None]
            num = _mix(mat_t, num, True)
            den = _mix(mat_t, den, True)
            num = _relaxed_numerator(num, den, exp_t[..., :, None])
        new = multiplicative(h.reshape(1, p, -1), num, den).reshape(p, big_y, big_x)
        del h, num, den  # (p-deep maps of the region: at 50 endmembers and 528² pixels, 56 MB each)
    oy, ox = t.y0 - ys.start, t.x0 - xs.start
    mine = new[:, oy : oy + t.y1 - t.y0, ox : ox + t.x1 - t.x0]
    dst.write(t, np.ascontiguousarray(mine.numpy()))
    y_own = y[:, oy : oy + t.y1 - t.y0, ox : ox + t.x1 - t.x0].reshape(y.shape[0], -1)
    res = y_own - torch.from_numpy(w_m) @ mine.reshape(p, -1)
    return _degrade_on(spatial, new, region, own, ratio).astype(np.float32), float(res.double().square().sum())


@tile_task
def _msi_residual_tile(scratch: ScratchStore, msi_own, t: Tile, w_m, threads) -> float:
    """``Σ |Y_m - W_m H_m|²`` over the tile (when no layer ran)."""
    if threads:
        set_torch_threads(threads)
    h = torch.from_numpy(scratch.read(slice(t.y0, t.y1), slice(t.x0, t.x1)))
    y = _msi(msi_own)
    res = y.reshape(y.shape[0], -1) - torch.from_numpy(w_m) @ h.reshape(h.shape[0], -1)
    return float(res.double().square().sum())


def _neighbours_on(msi_nb, lr_msi_nb: np.ndarray, nb_box, region, ratio: int, offset: int) -> Neighbours:
    """The colour neighbours of the HR pixels of LR box ``region``, searched on the LR box ``nb_box``
    (:func:`_neighbour_box`) with the MSI over it (indices into that box)."""
    nb = colour_neighbours(_msi(msi_nb)[None], torch.from_numpy(np.ascontiguousarray(lr_msi_nb))[None], ratio,
                           offset)
    k = nb.index.shape[1]
    big_y, big_x = (nb_box[1] - nb_box[0]) * ratio, (nb_box[3] - nb_box[2]) * ratio
    ys = slice((region[0] - nb_box[0]) * ratio, (region[1] - nb_box[0]) * ratio)
    xs = slice((region[2] - nb_box[2]) * ratio, (region[3] - nb_box[2]) * ratio)

    def cut(a: torch.Tensor) -> torch.Tensor:
        return a.reshape(1, k, big_y, big_x)[:, :, ys, xs].reshape(1, k, -1)

    return Neighbours(cut(nb.index), cut(nb.distance), cut(nb.scale))


@tile_task
def _corrected_tile(scratch: ScratchStore, corrected: ScratchStore, lr_hsi: ScratchStore, lr_abund: ScratchStore,
                    r_store: ScratchStore, msi_nb, lr_msi_nb, nb_box, region, t: Tile, w, srf, gain, steps, sigma,
                    ratio: int, offset: int, spatial, threads, msi_denoise: float = 0.0) -> np.ndarray:
    """The consistency layer up to its HSI step on ``region``: ``Z = W H_m``, the guided transfer of the LR
    residual ``Y_h - W S(H_m)`` (``t_g`` of it; computed on the neighbour box from the stored LR-HSI and
    ``S(H_m)``), the MSI correction ``t_m G (Y_m - R Z)``; writes the tile's ``Z1`` to ``corrected`` and
    ``r = Y_h - S(Z1)`` on its LR box to ``r_store``; returns each band's ``Σ r²`` there.

    Computed :attr:`~.io.ScratchStore.band_chunk` bands at a time (a 512-px tile's 128 bands and
    the transfer's temporaries took about 0.7 GB per task). The MSI residual needs ``R Z`` over
    all bands: the transfer weighs every band alike, so ``R·transfer(res) = transfer(R·res)``, and
    ``R Z = (R W) H_m + t_g transfer(R res)`` needs no band-deep array. ``msi_denoise``: the noise power
    the MSI residual is denoised at first (0: not); ``region`` then reaches
    :data:`~fusion_explorer.methods.unmixing.projection.DENOISE_HALF_WINDOW` HR pixels beyond the pixels whose
    values count, so the filter's windows there are the whole scene's."""
    if threads:
        set_torch_threads(threads)
    nb = _neighbours_on(msi_nb, lr_msi_nb, nb_box, region, ratio, offset)
    ys, xs = _hr(region, ratio)
    h = torch.from_numpy(scratch.read(ys, xs))
    p, big_y, big_x = h.shape
    sy, sx = slice(ys.start - nb_box[0] * ratio, ys.stop - nb_box[0] * ratio), \
        slice(xs.start - nb_box[2] * ratio, xs.stop - nb_box[2] * ratio)
    y = _msi(msi_nb)[:, sy, sx].reshape(1, -1, big_y * big_x)
    w_t, srf_t, gain_t = (torch.from_numpy(a)[None] for a in (w, srf, gain))
    h = h.reshape(1, p, -1)
    ny, nx = slice(nb_box[0], nb_box[1]), slice(nb_box[2], nb_box[3])
    # Y_h - S(W H_m) = Y_h - W S(H_m) on the neighbour box (float32, as the whole-scene run)
    s_h = torch.from_numpy(lr_abund.read(ny, nx)).reshape(1, p, -1)
    res = torch.from_numpy(lr_hsi.read(ny, nx)).reshape(1, w.shape[0], -1) - w_t @ s_h
    guided, msi_step = float(steps[0]), float(steps[1])
    oy, ox, own = t.y0 - ys.start, t.x0 - xs.start, _lr_box(t, ratio)
    sums = []
    with torch.no_grad():
        d = y - (srf_t @ w_t) @ h - guided * transfer(srf_t @ res, nb, sigma)  # Y_m - R Z
        if msi_denoise > 0:
            d = denoise_residual(d, msi_denoise, (big_y, big_x))
        for b in range(0, w.shape[0], corrected.band_chunk):
            c = slice(b, b + corrected.band_chunk)
            z = w_t[:, c] @ h + guided * transfer(res[:, c], nb, sigma) + msi_step * (gain_t[:, c] @ d)
            z = z.reshape(-1, big_y, big_x)
            corrected.write(t, np.ascontiguousarray(z[:, oy : oy + t.y1 - t.y0, ox : ox + t.x1 - t.x0].numpy()), band=b)
            sums.append(store_residual(r_store, lr_hsi, t, ratio, _degrade_on(spatial, z, region, own, ratio), b))
    return np.concatenate(sums)


@tile_task
def _projected_tile(corrected: ScratchStore, u_store: ScratchStore, box, t: Tile, srf, gain, steps, spatial,
                    ratio: int, writer, threads):
    """The fused cube on the tile, clipped at 0: ``Z1 + (I - t_m G R) t_h Sᵀ u`` (``u`` read on the LR box
    ``box``): the HSI correction less what the MSI sees of it, as
    :func:`~fusion_explorer.methods.unmixing.projection.project` (its step 3). ``R Sᵀ u = Sᵀ (R u)`` (``R``
    acts on bands, ``Sᵀ`` on pixels) needs no band-deep array; the bands are computed (and written, with
    ``writer``) a chunk at a time."""
    if threads:
        set_torch_threads(threads)
    step = corrected.band_chunk if writer is None else writer.band_chunk
    uy, ux = slice(box[0], box[1]), slice(box[2], box[3])
    ys, xs = slice(t.y0, t.y1), slice(t.x0, t.x1)
    hsi_step, msi_step = float(steps[2]), float(steps[1])
    srf64, gain64 = srf.astype(np.float64), gain.astype(np.float64)
    bands = corrected.shape[0]
    msi_last = _projection.MSI_LAST and msi_step != 0
    if msi_last:  # the part of the HSI correction the MSI sees, R t_h Sᵀ u = t_h Sᵀ (R u), on the tile
        ru = sum(np.einsum("mb,byx->myx", srf64[:, b : b + step], u_store.read(uy, ux, slice(b, b + step)))
                 for b in range(0, bands, step))
        seen = hsi_step * _adjoint_on(spatial, ru, box, _lr_box(t, ratio), ratio).double().numpy()
    out = []
    for b in range(0, bands, step):
        c = slice(b, b + step)
        z1 = torch.from_numpy(corrected.read(ys, xs, c))
        up = _adjoint_on(spatial, u_store.read(uy, ux, c), box, _lr_box(t, ratio), ratio)
        z = z1.double() + hsi_step * up
        if msi_last:
            z -= msi_step * torch.from_numpy(np.einsum("bm,myx->byx", gain64[c], seen))
        z = z.clamp_min(0).float().numpy()
        if writer is None:
            out.append(z)
        else:
            writer.write(t.y0, t.x0, z, band=b)
    return np.concatenate(out) if writer is None else None


# ---- the client side -------------------------------------------------------------------------------------


def _joint_boxes(store, box, margin: int, lr_size: tuple[int, int]):
    """A tile's ``(store, cover)``: the store of the joint update's LR maps and the LR box ``box`` plus
    ``margin`` LR pixels to read them on (``None`` when the layer is not joint)."""
    return None if store is None else (store, _around(box, margin, lr_size))


#: tiles per batch of a pass whose results the client places into LR-grid arrays: it then holds one batch of
#: results beside the arrays instead of the whole pass's (at 8192² the start's float64 S(H_m) pieces are a
#: second (p, 1024, 1024) float64 array, 0.3 GB at p ≈ 38, and the first 8192² runs failed under ulimit -v
#: 3 GiB right after that pass, on an allocation of that size)
PLACE_BATCH = 32


def _run_placed(runner: Runner, tasks: list, grid: TileGrid, place, progress, stage: str) -> None:
    """Run ``tasks`` (one per tile of ``grid``, in its order) :data:`PLACE_BATCH` at a time, calling
    ``place(tile, result)`` for each result as its batch ends (in tile order, whatever the batch size)."""
    tiles, total = list(grid), len(tasks)
    for b in range(0, total, PLACE_BATCH):
        def ticks(done: int, _total: int, info: dict, b: int = b) -> None:
            if progress is not None:
                progress(b + done, total, info)

        for t, result in zip(tiles[b : b + PLACE_BATCH], runner.run_tiles(tasks[b : b + PLACE_BATCH], ticks, stage),
                             strict=True):
            place(t, result)


def _abundance_parameters(net, sums, n_pixels: int, w: torch.Tensor, w_m: torch.Tensor, h_h: torch.Tensor):
    """The layer's ``(P, γ)`` from the scene-wide sums, through the model's own feature functions: the
    means as one-pixel maps, the abundance Gram through a square root ``R Rᵀ = H_m H_mᵀ`` (the
    abundances' cosines are the Gram's)."""
    num, den, h_sum, gram = sums
    p = num.shape[0]

    def col(v):
        return torch.from_numpy(np.asarray(v / n_pixels, dtype=np.float32)).reshape(1, p, 1)

    values, vectors = np.linalg.eigh(gram)
    root = torch.from_numpy((vectors * np.sqrt(np.clip(values, 0, None))).astype(np.float32))[None]
    with torch.no_grad():
        node = _node_features(col(h_sum), col(num), col(den), -1, w_m)
        state = CoupledState(w, h_h, torch.zeros((1, p, 1)), w_m)
        pair = _pair_features(state, root)
        mat, exponent = net(node, pair)
    return mat[0].numpy().astype(np.float32), exponent[0].numpy().astype(np.float32)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`~fusion_explorer.methods.unmixing.projection.observation_features`' relative energy."""
    return math.log10(float(np.mean(np.square(a))) / max(float(np.mean(np.square(b))), 1e-30) + 1e-12)


def _hsi_residual_energy(y_lr: np.ndarray, endmembers: torch.Tensor, s_hm: torch.Tensor) -> float:
    """:func:`_rel` of ``Y_h - W S(H_m)`` against ``Y_h`` on the LR grid, a group of bands at a time (the
    whole residual is a second LR-HSI: 0.5 GB at 8192² x 128 bands, ratio 8)."""
    w, s = endmembers[0].numpy(), s_hm[0].numpy()
    step = max(1, CHUNK_BYTES // (4 * y_lr.shape[1]))
    num = den = 0.0
    for b in range(0, y_lr.shape[0], step):
        part = y_lr[b : b + step]
        num += float(np.square(part - w[b : b + step] @ s, dtype=np.float64).sum())
        den += float(np.square(part, dtype=np.float64).sum())
    return _rel_sums(num, den, y_lr.size)


def _rel_sums(num: float, den: float, count: int) -> float:
    return math.log10(num / count / max(den / count, 1e-30) + 1e-12)


def run_scalmu(problem, grid: TileGrid, msi, stats: dict, opts: dict, seed: int, runner: Runner, folder, writer,
               threads, progress) -> list:
    """Tiled SCALMU (see the module docstring); returns the tiles' cubes (``None`` each with ``writer``)."""

    ratio, spatial, offset = problem.ratio, problem.spatial_operator(), spatial_offset(problem)
    (h, w), (big_h, big_w) = problem.lr_size, problem.hr_size
    bands, msi_bands, n_pixels = problem.hsi_bands, problem.msi_bands, big_h * big_w
    # LR pixels around a tile: HR regions whose S is exact on the tile, LR boxes whose Sᵀ is exact on a region
    margin_s, margin = footprint_margin(problem), reach(problem) + 1
    net, ckpt = load_model(opts["checkpoint"])
    net = net.float()
    learned = bool(opts["learned"])
    k_layers = net.layers if opts["layers"] is None else int(opts["layers"])
    init = int(opts["init_iterations"] or ckpt["config"].get("init_iterations", 200))
    consistent = bool(opts["consistency"]) and net.consistency is not None
    lr = problem.lr_values()
    # (the noise estimate reads the central NOISE_WINDOW square of the unclipped LR-HSI: only that is read)
    ly0, lx0 = max(0, (h - NOISE_WINDOW) // 2), max(0, (w - NOISE_WINDOW) // 2)
    raw = problem.lr_hsi.data[:, ly0 : ly0 + NOISE_WINDOW, lx0 : lx0 + NOISE_WINDOW]
    raw = np.asarray(raw.compute() if hasattr(raw, "compute") else raw, dtype=np.float32)
    # the sensor features: the LR-HSI and the MSI's central window, as the whole-scene start reads them
    top, left = max(0, (big_h - NOISE_WINDOW) // 2), max(0, (big_w - NOISE_WINDOW) // 2)
    centre = runner.compute(msi.data[:, top : top + NOISE_WINDOW, left : left + NOISE_WINDOW])[0]
    levels = noise_levels(raw, np.asarray(centre))
    sensor = sensor_features(raw, np.asarray(centre), False, problem.psf_misfit, levels)[None]
    # the level the consistency layer denoises the MSI residual at (as the whole-scene start sets it)
    denoise_level = common_noise_level(levels) if opts["denoise"] else -math.inf
    del raw

    def stage(text: str) -> None:
        if progress is not None:
            progress(0, 1, {"stage": text})

    def ext_box(t: Tile):
        return msi_box(msi, slice(t.ey0, t.ey1), slice(t.ex0, t.ex1))

    # 1. the start: HSI unmixing (LR grid), the first MSI stage (tiles), S(H_m), the outer round's W (LR grid)
    stage("SCALMU start: HSI unmixing (global, LR grid)")
    srf64 = np.array(problem.srf.matrix, dtype=np.float64)
    hsi, p, delta, w_m0, h_lr = lr_grid_start(lr.reshape(bands, h, w), srf64, float(np.mean(stats["band_means"])),
                                              opts["n_endmembers"], seed, init, THRESHOLD, None, "SCALMU")
    # the tile passes of the start read neither the LR-HSI nor the float64 H_h (at 8192² and ratio 8 they are
    # 0.5 GB and 0.3 GB of the LR grid): both go, as in tiled cnmf, and the LR-HSI is read again for the outer round
    hsi.y = hsi.h = None
    del lr
    stores = [ScratchStore(folder, name, (p, big_h, big_w), grid.tile) for name in ("abundances_a", "abundances_b")]
    run_msi_stage(runner, grid, opts["levels"], init, w_m0, delta, THRESHOLD, ext_box, h_lr, stores[0], threads,
                  progress, "SCALMU start: MSI unmixing")
    del h_lr
    tasks = []
    for t in grid:
        region = _around(_lr_box(t, ratio), margin_s, (h, w))
        tasks.append(dask.delayed(_start_degrade_tile, pure=False)(
            stores[0], msi_box(msi, *_hr(region, ratio)), region, t, spatial, ratio, threads))
    s_h, lr_msi, yy = np.zeros((p, h, w)), np.zeros((msi_bands, h, w), np.float32), []

    def place_start(t: Tile, q, s_h=s_h, lr_msi=lr_msi, yy=yy) -> None:
        box = (slice(None), *t.lr_box(ratio))
        s_h[box], lr_msi[box] = q[0], q[1]
        yy.append(q[2])

    _run_placed(runner, tasks, grid, place_start, progress, "SCALMU start: S(H_m) (tiles)")
    yy_m = math.fsum(yy)
    s_hm = torch.from_numpy(s_h.astype(np.float32)).reshape(1, p, -1)  # (the outer round takes s_h over)
    hsi.y = torch.from_numpy(problem.lr_values().reshape(1, bands, -1))
    outer_round(hsi, s_h, msi_bands, init, THRESHOLD)

    # 2. the layers (float32, as the whole-scene run)
    srf = torch.as_tensor(srf64, dtype=torch.float32)[None]
    endmembers = hsi.w.float()
    w_m = srf @ endmembers

    def lr_data(y_h: torch.Tensor | None = None, sensor=sensor):
        """The LR-HSI ``(1, L, n)`` (read again unless given) and the LR side of the data: the layers' ``W``
        update and HSI weight read it, the HR-MSI only by its shape. The layers' tile passes read neither,
        so each layer reads the LR-HSI again (0.5 GB at 8192²) instead of holding it through its passes."""
        y_h = torch.from_numpy(problem.lr_values().reshape(1, bands, -1)) if y_h is None else y_h
        return y_h, CoupledData(lr_hsi=y_h, hr_msi=torch.zeros((1, msi_bands, 1)).expand(1, msi_bands, n_pixels),
                                srf=srf, degrade=None, delta=delta, sensor_features=sensor)

    y_h32, data = lr_data(hsi.y)
    del hsi, s_h  # the start's float64 H_h (0.3 GB at 8192² and p ≈ 38) is not read again
    # the joint layers' LR maps (λ Wᵀ Y_h, λ Wᵀ W S(H_m)) for the tiles to read their boxes from, not copies
    # of the boxes in every task (they overlap, and the tasks of a pass are all built before it runs)
    joint_store = lr_store(folder, "joint_maps", 2 * p, grid, "float32")
    # S(H_m) on the LR grid, for the tiles to read their boxes from: each layer's for the abundance prior
    # (networks with one), then the last one for the consistency layer's residual
    use_prior = learned and net.prior is not None
    lr_abund = lr_store(folder, "lr_abundances", p, grid, "float32")

    def prior_for(region, scale, weight, tau):
        """A task's ``prior`` argument (:func:`_prior_on`) for the HR pixels of the LR box ``region``."""
        ny, nx = _neighbour_box(region[0], region[1], h), _neighbour_box(region[2], region[3], w)
        return (lr_abund, msi_box(msi, *_hr((*ny, *nx), ratio)), lr_msi[:, slice(*ny), slice(*nx)].copy(),
                (*ny, *nx), offset, scale, weight, tau)

    cur, msi_sum = 0, None
    for k in range(k_layers):
        if data is None:
            y_h32, data = lr_data()
        with torch.no_grad():
            hook, weight, _ = net.layer(k, data, learned)
            # H_h = S(H_m)₊, clamped in place: this s_hm is replaced by the layer's own before anything else reads it
            state = CoupledState(endmembers, s_hm.clamp_min_(0), torch.zeros((1, p, 1)), w_m)
            state = update_endmembers(state, data, hook)
            endmembers, h_h = state.endmembers, state.abundances_lr
            w_m = srf @ endmembers
            joint = isinstance(weight, torch.Tensor) or weight > 0
            prior_args = None
            if use_prior:  # the layer's weights (scene-wide) and the S(H_m) its tiles pull towards
                prior_weight, tau = net.prior.weights(k, data)
                prior_args = (float(prior_scale(w_m)), np.ascontiguousarray(prior_weight[0].numpy()), float(tau))
                lr_abund.write_box(slice(None), slice(None), h_h.reshape(p, h, w).numpy())
            if joint:  # λ Wᵀ Y_h and λ Wᵀ W H_h on the LR grid (joint_abundance_terms): tiles take Sᵀ of boxes
                wt = endmembers.transpose(-1, -2)
                whole = (slice(None), slice(None))
                # (scaled in place: one (p, n) map at a time, 0.15 GB at 8192²)
                joint_store.write_box(*whole, (wt @ y_h32).mul_(weight).reshape(p, h, w).numpy(), 0)
                joint_store.write_box(*whole, ((wt @ endmembers) @ h_h).mul_(weight).reshape(p, h, w).numpy(), p)
        w_m_np = np.ascontiguousarray(w_m[0].numpy())
        y_h32 = data = state = None  # (read again by the next layer)

        def joint_for(box, store=joint_store if joint else None):
            return _joint_boxes(store, box, margin, (h, w))

        mat = exponent = None
        if hook is not None:
            tasks = [dask.delayed(_layer_sums_tile, pure=False)(
                stores[cur], msi_box(msi, slice(t.y0, t.y1), slice(t.x0, t.x1)), joint_for(_lr_box(t, ratio)), t,
                w_m_np, delta, spatial, ratio, threads,
                prior_for(_lr_box(t, ratio), *prior_args) if prior_args else None) for t in grid]
            parts = runner.run_tiles(tasks, progress, f"SCALMU layer {k + 1}: features (tiles)")
            sums = [np.sum([q[i] for q in parts], axis=0) for i in range(4)]
            mat, exponent = _abundance_parameters(net.abundance_nets[k], sums, n_pixels, endmembers, w_m, h_h)
        del h_h  # (this layer's s_hm, replaced below)
        tasks = []
        for t in grid:
            region = _around(_lr_box(t, ratio), margin_s, (h, w))
            ys, xs = _hr(region, ratio)
            tasks.append(dask.delayed(_layer_apply_tile, pure=False)(
                stores[cur], stores[1 - cur], msi_box(msi, ys, xs), joint_for(region), region, t, w_m_np, delta,
                mat, exponent, spatial, ratio, threads, prior_for(region, *prior_args) if prior_args else None))
        s_new, msi_sums = np.zeros((p, h, w), np.float32), []

        def place_layer(t: Tile, q, s_new=s_new, msi_sums=msi_sums) -> None:
            s_new[(slice(None), *t.lr_box(ratio))] = q[0]
            msi_sums.append(q[1])

        _run_placed(runner, tasks, grid, place_layer, progress, f"SCALMU layer {k + 1}: update (tiles)")
        cur = 1 - cur
        s_hm = torch.from_numpy(s_new).reshape(1, p, -1)
        msi_sum = math.fsum(msi_sums)

    w_final = np.ascontiguousarray(endmembers[0].numpy())
    if not consistent:
        tasks = [dask.delayed(cnmf_fuse_tile, pure=False)(stores[cur], t, w_final, writer, threads) for t in grid]
        return runner.run_tiles(tasks, progress, "fused cube (tiles)")

    # 3. the consistency layer
    w_m_np = np.ascontiguousarray(w_m[0].numpy())
    if msi_sum is None:
        tasks = [dask.delayed(_msi_residual_tile, pure=False)(
            stores[cur], msi_box(msi, slice(t.y0, t.y1), slice(t.x0, t.x1)), t, w_m_np, threads) for t in grid]
        msi_sum = math.fsum(runner.run_tiles(tasks, progress, "consistency: MSI residual (tiles)"))
    srf_np = np.ascontiguousarray(srf[0].numpy())
    if data is None:
        y_h32, data = lr_data()
    lr = y_h32.reshape(bands, h, w).numpy()
    y_lr = lr.reshape(bands, -1)
    lr_msi_flat = lr_msi.reshape(msi_bands, -1)
    features = torch.tensor([[_rel(lr_msi_flat - srf_np @ y_lr, lr_msi_flat),
                              _rel_sums(msi_sum, yy_m, msi_bands * n_pixels), _hsi_residual_energy(y_lr, endmembers,
                                                                                                   s_hm)]],
                            dtype=torch.float32)
    with torch.no_grad():
        steps, ridge, sigma, _, msi_noise, hsi_noise = net.consistency.parameters_for(features, data, learned)
    steps, sigma = steps[0].numpy(), float(sigma)
    with torch.no_grad():
        prior = spectral_prior(endmembers, ridge)
        gain = np.ascontiguousarray(projection_gain(srf, prior, msi_noise)[0].numpy())
    damping = DAMPING + float(hsi_noise.reshape(-1)[0]) if isinstance(hsi_noise, torch.Tensor) else DAMPING + hsi_noise
    # the MSI residual's noise power (projection.residual_noise) and the LR pixels its filter reaches
    msi_denoise = 10.0**denoise_level * yy_m / (msi_bands * n_pixels)
    margin_c = margin_s + (math.ceil(DENOISE_HALF_WINDOW / ratio) if msi_denoise > 0 else 0)
    # from here on the LR grid's band-deep arrays live on disk (tiled.consistency): the LR-HSI and S(H_m)
    # for the tasks' residual boxes, r and u for the CG
    lr_hsi = stored_lr(folder, lr, grid)
    lr_abund.write_box(slice(None), slice(None), s_hm.reshape(p, h, w).numpy())
    del lr, y_lr, y_h32, data, s_hm, sensor
    r_store, u_store = lr_store(folder, "residual", bands, grid), lr_store(folder, "solution", bands, grid)
    corrected = ScratchStore(folder, "corrected", (bands, big_h, big_w), grid.tile)
    tasks = []
    for t in grid:
        region = _around(_lr_box(t, ratio), margin_c, (h, w))
        ny, nx = _neighbour_box(region[0], region[1], h), _neighbour_box(region[2], region[3], w)
        nb_box = (*ny, *nx)
        my, mx = _hr(nb_box, ratio)
        lr_cut = (slice(None), slice(*ny), slice(*nx))
        tasks.append(dask.delayed(_corrected_tile, pure=False)(
            stores[cur], corrected, lr_hsi, lr_abund, r_store, msi_box(msi, my, mx), lr_msi[lr_cut].copy(), nb_box,
            region, t, w_final, srf_np, gain, steps, sigma, ratio, offset, spatial, threads, msi_denoise))
    rs_all = np.sum(runner.run_tiles(tasks, progress, "consistency: guided + MSI step, S(Z) (tiles)"), axis=0)
    # H_m is not read again: its two stores (p bands over the HR grid, 15 GB at 8192² and p ≈ 38) go before
    # the last pass writes the output beside Z1
    for store in (*stores, lr_abund):
        store.remove()
    stage("consistency: CG on the LR grid")
    _solve_normal(r_store, grid, spatial, damping, rs_all=rs_all, out=u_store)
    tasks = [dask.delayed(_projected_tile, pure=False)(
        corrected, u_store, _around(_lr_box(t, ratio), margin, (h, w)), t, srf_np, gain, steps, spatial, ratio, writer,
        threads) for t in grid]
    return runner.run_tiles(tasks, progress, "fused cube (tiles)")


def spatial_offset(problem) -> int:
    """The LR sampling phase (the problem's, or :func:`~fusion_explorer.physics.default_offset`)."""
    from ..physics import default_offset

    return int(problem.offset) if problem.offset is not None else default_offset(problem.ratio)


__all__ = ["DEFAULTS", "check_options", "extra_halo", "run_scalmu"]
