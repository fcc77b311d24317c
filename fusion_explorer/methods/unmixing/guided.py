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
across every edge; transferred by colour it lands on the HR pixels of the same material, before
the exact projections of :func:`fusion_explorer.methods.unmixing.projection.project`. What it gains, and
how little the results moved over windows of 2-8, ``k`` of 4-16, ``σ`` of 0.02-0.1 and ``β`` of
0.005-0.08 (the defaults are not tuned to the benchmark scenes), is in benchmarks/RESULTS.md.

This is joint-bilateral / non-local-means upsampling (Kopf et al. 2007; Buades et al. 2005) with
the MSI as the guide; no library does it on a (bands, pixels) residual with an LR-grid footprint
and brightness scaling, so it is written here (top-k over a sliding window, one row of LR pixels'
blocks at a time to bound memory).
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


@dataclass
class _AxisGroups:
    """The HR positions along one axis grouped by the LR pixel they sit in (runs of equal cell,
    since the cells never decrease; all of a cell's positions search the same window): ``start``
    ``(m,)`` each group's window start, ``counts`` its size, ``members`` ``(m, G)`` its HR
    positions (padded by repeating the last one), and for every HR position its ``group`` and
    ``slot`` in it."""

    start: torch.Tensor
    counts: torch.Tensor
    members: torch.Tensor
    group: torch.Tensor
    slot: torch.Tensor
    cell: torch.Tensor

    @classmethod
    def build(cls, n_hr: int, n_lr: int, ratio: int, offset: int, span: int, device=None) -> _AxisGroups:
        cells = ((torch.arange(n_hr) - offset).double() / ratio).round().long().clamp(0, n_lr - 1)
        cell, counts = torch.unique_consecutive(cells, return_counts=True)
        first = torch.cumsum(counts, 0) - counts
        members = first[:, None] + torch.minimum(torch.arange(int(counts.max()))[None, :], counts[:, None] - 1)
        group = torch.repeat_interleave(torch.arange(cell.numel()), counts)
        fields = (_window_starts(cell, n_lr, span), counts, members, group, torch.arange(n_hr) - first[group], cell)
        return cls(*(f.to(device) for f in fields))


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
    ``offset + ratio · i`` on each axis. ``k`` is capped at the window's pixel count.

    The HR pixels of one LR pixel (a block of about ``ratio x ratio``) search the same window, so
    they are taken together: with features ``f`` (the brightness one scaled by ``√β``),
    ``d² = |f_i|² + |f_x|² - 2 f_i·f_x`` is a batched matrix product over a row of blocks, in
    float64 (the expansion cancels), instead of a difference gathered as ``(features, window,
    pixels)``: about half the time on a 512x512 scene here. The neighbour sets are the same (at x8
    two of 262144 pixels differ, ties broken the other way)."""
    b, l, big_h, big_w = hr_msi.shape
    _, _, h, w = lr_msi.shape
    span_y, span_x = min(2 * window + 1, h), min(2 * window + 1, w)
    k = min(int(k), span_y * span_x)
    device, dtype = hr_msi.device, hr_msi.dtype
    rows = _AxisGroups.build(big_h, h, ratio, offset, span_y, device)
    cols = _AxisGroups.build(big_w, w, ratio, offset, span_x, device)
    mx, gy, gx = cols.members.shape[0], rows.members.shape[1], cols.members.shape[1]
    dy, dx = (t.reshape(-1).to(device) for t in torch.meshgrid(torch.arange(span_y), torch.arange(span_x),
                                                                 indexing="ij"))
    # a row of blocks' answers are (mx, gy·gx, k); HR column x of slot-s rows sits at x_slot[x] + s·gx
    x_slot = cols.group * (gy * gx) + cols.slot
    n_hr = big_h * big_w
    index = torch.empty((b, k, n_hr), dtype=torch.long, device=device)
    distance = torch.empty((b, k, n_hr), dtype=dtype, device=device)
    scale = torch.empty((b, k, n_hr), dtype=dtype, device=device)
    weights = torch.ones(l + 1, dtype=torch.float64, device=device)
    weights[-1] = brightness_weight**0.5
    for item in range(b):
        f_hr, n_hr_norm = _features(hr_msi[item].reshape(l, -1).double())
        f_lr, n_lr_norm = _features(lr_msi[item].reshape(l, -1).double())
        f_hr = (f_hr * weights[:, None]).reshape(l + 1, big_h, big_w)
        f_lr = (f_lr * weights[:, None]).T.contiguous()  # (h·w, l + 1)
        sq_lr, sq_hr = f_lr.square().sum(-1), f_hr.square().sum(0)
        n_hr_norm, n_lr_norm = n_hr_norm.to(dtype), n_lr_norm.to(dtype)
        for g, (count, y0) in enumerate(zip(rows.counts.tolist(), rows.members[:, 0].tolist(), strict=True)):
            cand = (rows.start[g] + dy)[None, :] * w + (cols.start[:, None] + dx[None, :])  # (mx, window)
            hr_rows = rows.members[g]
            block = f_hr[:, hr_rows][:, :, cols.members].permute(2, 1, 3, 0).reshape(mx, gy * gx, l + 1)
            d2 = torch.bmm(block, f_lr[cand].transpose(1, 2)).mul_(-2)  # (mx, gy·gx, window)
            d2.add_(sq_lr[cand][:, None, :]).add_(sq_hr[hr_rows][:, cols.members].permute(1, 0, 2).reshape(mx, -1, 1))
            dk, ik = torch.topk(d2.clamp_min_(0).to(dtype), k, dim=-1, largest=False)  # (mx, gy·gx, k)
            chosen = torch.gather(cand[:, None, :].expand(-1, gy * gx, -1), -1, ik)
            # back to HR pixel order: the group's rows (consecutive; not its padding) x every column
            at = (x_slot[None, :] + (torch.arange(count, device=device) * gx)[:, None]).reshape(-1)
            sl = slice(y0 * big_w, (y0 + count) * big_w)
            index[item, :, sl] = chosen.reshape(-1, k)[at].T
            distance[item, :, sl] = dk.reshape(-1, k)[at].T
            scale[item, :, sl] = n_hr_norm[sl][None] / n_lr_norm[index[item, :, sl]]
    return Neighbours(index, distance, scale)


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
    """:func:`colour_neighbours` for a :class:`~.step.CoupledData`: its HR-MSI against the same
    MSI degraded by the data's own spatial operator (``degrade``)."""
    b, l, _ = data.hr_msi.shape
    lr_msi = data.degrade(data.hr_msi)
    return colour_neighbours(data.hr_msi.reshape(b, l, *hr_size), lr_msi.reshape(b, l, *lr_size), ratio, offset,
                             **options)


__all__ = ["Neighbours", "colour_neighbours", "data_neighbours", "transfer", "WINDOW", "NEIGHBOURS", "SIGMA",
           "BRIGHTNESS_WEIGHT"]
