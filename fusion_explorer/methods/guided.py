"""Colour-guided transfer from the LR grid to the HR grid: each HR pixel borrows from the LR pixels
near it whose colour, as the MSI sees it, is most like its own.

For an HR pixel ``x`` with MSI colour ``m(x)`` and an LR pixel ``i`` with colour ``m̄_i = (S Y_m)_i``
(the HR-MSI seen through the PSF and the sampling, i.e. what the MSI would read over that LR
pixel's footprint), the colour distance is

    d²(x, i) = |m(x)/|m(x)| - m̄_i/|m̄_i||² + β (log|m(x)| - log|m̄_i|)²

(chromaticity, plus a little of the brightness, ``β`` = :data:`BRIGHTNESS_WEIGHT`). Among the LR
pixels in a window of ``2·window + 1`` LR pixels a side around ``x``, the ``k`` nearest in colour
are its :class:`Neighbours`; :func:`transfer` gives ``x`` their values weighted by
``exp(-(d² - d²_min) / σ²)`` and scaled by the brightness ratio ``|m(x)| / |m̄_i|``.

Why: what the LR-HSI holds and an unmixing cannot represent (the part of each LR spectrum outside
the endmembers' span, a few % of its energy on CAVE) has no HR counterpart in ``W H_m``. The
spatial adjoint ``Sᵀ`` would spread such an LR residual as a blur over the LR pixel's footprint,
across every edge; transferred by colour it lands on the HR pixels of the same material. On the
full CAVE scenes, ``Z + transfer(Y_h - S Z)`` before the exact projections of
:func:`.consistency.project` raised CNMF's output from 46.1 to 49.0 dB at x8 and from 44.5 to
45.0 dB at x32 (the projections alone: from 42.4 and 43.5; benchmarks/RESULTS.md). The results
moved by at most 0.2 dB over windows of 2-8, ``k`` of 4-16, ``σ`` of 0.02-0.1 and ``β`` of
0.005-0.08, so the defaults are not tuned to those scenes.

This is joint-bilateral / non-local-means upsampling (Kopf et al. 2007; Buades et al. 2005) with
the MSI as the guide; no library does it on a (bands, pixels) residual with an LR-grid footprint
and brightness scaling, so it is written here (top-k over a sliding window, tiled to bound memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: LR pixels a side of the search window around an HR pixel's own LR pixel
WINDOW = 4
#: neighbours kept per HR pixel
NEIGHBOURS = 8
#: weight of the squared log-brightness difference in the colour distance
BRIGHTNESS_WEIGHT = 0.02
#: ``σ`` of the similarity weights, in units of the chromaticity distance
SIGMA = 0.05
#: HR pixels per tile of the neighbour search
TILE = 16384


@dataclass
class Neighbours:
    """For every HR pixel, its ``k`` nearest LR pixels in colour: ``index`` into the flat LR grid,
    squared colour ``distance`` (ascending) and brightness ``scale`` ``|m(x)| / |m̄_i|``; each
    ``(B, k, N)``."""

    index: torch.Tensor
    distance: torch.Tensor
    scale: torch.Tensor

    def to(self, device=None, dtype=None) -> Neighbours:
        return Neighbours(self.index.to(device), self.distance.to(device, dtype), self.scale.to(device, dtype))


def _features(msi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chromaticity and log-brightness features ``(l + 1, pixels)`` and brightness ``(pixels,)`` of
    an MSI ``(l, pixels)``."""
    norm = msi.norm(dim=0).clamp_min(1e-9)
    return torch.cat([msi / norm, norm.log()[None]], dim=0), norm


def _window_starts(cells: torch.Tensor, size: int, span: int) -> torch.Tensor:
    """First LR index of each window of ``span`` pixels centred on ``cells``, shifted to lie inside
    ``[0, size)`` (so that near the borders the window holds ``span`` distinct pixels, not repeats)."""
    return (cells - span // 2).clamp(0, max(size - span, 0))


def colour_neighbours(
    hr_msi: torch.Tensor,
    lr_msi: torch.Tensor,
    ratio: int,
    offset: int,
    *,
    window: int = WINDOW,
    k: int = NEIGHBOURS,
    brightness_weight: float = BRIGHTNESS_WEIGHT,
) -> Neighbours:
    """:class:`Neighbours` of every pixel of ``hr_msi`` ``(B, l, H, W)`` among those of ``lr_msi``
    ``(B, l, h, w)`` (the MSI degraded to the LR grid); the LR pixel ``i`` sits over HR pixel
    ``offset + ratio · i`` on each axis. ``k`` is capped at the window's pixel count."""
    b, l, big_h, big_w = hr_msi.shape
    _, _, h, w = lr_msi.shape
    span_y, span_x = min(2 * window + 1, h), min(2 * window + 1, w)
    k = min(int(k), span_y * span_x)
    dy, dx = torch.meshgrid(torch.arange(span_y), torch.arange(span_x), indexing="ij")
    dy, dx = dy.reshape(-1, 1), dx.reshape(-1, 1)
    cy = ((torch.arange(big_h) - offset).double() / ratio).round().long().clamp(0, h - 1)
    cx = ((torch.arange(big_w) - offset).double() / ratio).round().long().clamp(0, w - 1)
    y0 = _window_starts(cy, h, span_y)[:, None].expand(big_h, big_w).reshape(-1)
    x0 = _window_starts(cx, w, span_x)[None, :].expand(big_h, big_w).reshape(-1)
    n_hr = big_h * big_w
    index = torch.empty((b, k, n_hr), dtype=torch.long)
    distance = torch.empty((b, k, n_hr), dtype=hr_msi.dtype)
    scale = torch.empty((b, k, n_hr), dtype=hr_msi.dtype)
    for item in range(b):
        f_hr, n_hr_norm = _features(hr_msi[item].reshape(l, -1))
        f_lr, n_lr_norm = _features(lr_msi[item].reshape(l, -1))
        for s0 in range(0, n_hr, TILE):
            sl = slice(s0, s0 + TILE)
            cand = (y0[sl][None] + dy) * w + (x0[sl][None] + dx)  # (window pixels, tile)
            diff = f_lr[:, cand] - f_hr[:, None, sl]
            d2 = diff[:-1].square().sum(0) + brightness_weight * diff[-1].square()
            dk, ik = torch.topk(d2, k, dim=0, largest=False)
            chosen = torch.gather(cand, 0, ik)
            index[item, :, sl] = chosen
            distance[item, :, sl] = dk
            scale[item, :, sl] = n_hr_norm[sl][None] / n_lr_norm[chosen]
    return Neighbours(index.to(hr_msi.device), distance, scale)


def transfer(values: torch.Tensor, nb: Neighbours, sigma: float | torch.Tensor = SIGMA) -> torch.Tensor:
    """LR ``values`` ``(B, c, n)`` carried to the HR grid ``(B, c, N)``: for each HR pixel the
    brightness-scaled mean of its neighbours' values, weighted by ``exp(-(d² - d²_min) / σ²)``
    (differentiable in ``values`` and ``σ``, which may be ``(B, 1)``)."""
    sigma = torch.as_tensor(sigma, dtype=nb.distance.dtype, device=nb.distance.device).reshape(-1, 1, 1)
    logits = -(nb.distance - nb.distance[:, :1]) / sigma.square()
    weights = torch.softmax(logits, dim=1) * nb.scale  # (B, k, N)
    b, c, _ = values.shape
    out = None
    for j in range(nb.index.shape[1]):
        picked = values.gather(-1, nb.index[:, j : j + 1].expand(b, c, -1))
        term = picked * weights[:, j : j + 1].to(values.dtype)
        out = term if out is None else out + term
    return out


def data_neighbours(data, hr_size: tuple[int, int], lr_size: tuple[int, int], ratio: int, offset: int,
                    **options) -> Neighbours:
    """:func:`colour_neighbours` for a :class:`~.unmixing.CoupledData`: its HR-MSI against the same
    MSI degraded by the data's own spatial operator (``degrade``)."""
    b, l, _ = data.hr_msi.shape
    lr_msi = data.degrade(data.hr_msi)
    return colour_neighbours(data.hr_msi.reshape(b, l, *hr_size), lr_msi.reshape(b, l, *lr_size), ratio, offset,
                             **options)


__all__ = ["Neighbours", "colour_neighbours", "data_neighbours", "transfer", "WINDOW", "NEIGHBOURS", "SIGMA",
           "BRIGHTNESS_WEIGHT"]
