"""Regions of HR pixels for mean ± std spectra: a drawn box or a lasso polygon.

A box is the plain tuple ``(y0, y1, x0, x1)`` (end exclusive) that :attr:`AppState.region` has always held. A lasso
is a :class:`LassoRegion`: the same tuple (its bounding box, so code that draws or slices a box keeps working) that
also carries the polygon and the boolean ``mask (y, x)`` of the pixels whose centres lie inside it. Statistics go
through :func:`region_mask`, so a lasso's spectra use exactly its pixels, never its bounding box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import FusionExplorerError


class RegionError(FusionExplorerError, ValueError):
    """A drawn region covers no pixel (too few points, no area, or outside the image)."""


class LassoRegion(tuple):
    """A lasso region: the tuple ``(y0, y1, x0, x1)`` of its bounding box (end exclusive), plus ``polygon``
    (``(n, 2)`` vertices as ``(x, y)`` in HR pixel coordinates) and ``mask`` (bool ``(h, w)``: pixel centres
    inside the polygon)."""

    polygon: np.ndarray
    mask: np.ndarray

    def __new__(cls, polygon: np.ndarray, mask: np.ndarray) -> LassoRegion:
        ys, xs = np.nonzero(mask)
        self = super().__new__(cls, (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1))
        self.polygon = np.asarray(polygon, dtype=np.float64)
        self.mask = mask
        return self

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())

    def __eq__(self, other: object) -> bool:  # two lassos with the same bounding box are still different regions
        if isinstance(other, LassoRegion):
            return self.polygon.shape == other.polygon.shape and bool(np.all(self.polygon == other.polygon))
        return False

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return f"LassoRegion({len(self.polygon)} vertices, {self.pixels} px, box {tuple(self)})"


def polygon_mask(xs: Sequence[float], ys: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """Bool ``(h, w)``: the pixels whose centres (integer ``(x, y)`` in HR pixel coordinates) lie inside the
    polygon with vertices ``(xs[i], ys[i])`` (closed automatically; even-odd rule of :class:`matplotlib.path.Path`).

    Raises :class:`RegionError` when the polygon has fewer than 3 distinct vertices, no area, or holds no pixel
    centre of the ``size = (h, w)`` image."""
    h, w = size
    try:
        x = np.asarray(xs, dtype=np.float64).ravel()
        y = np.asarray(ys, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise RegionError("lasso: its points are not numbers; draw the lasso again") from None
    if x.shape != y.shape:
        raise RegionError(f"lasso: {x.size} x but {y.size} y coordinates; draw the lasso again")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    vertices = np.stack([x, y], axis=1)
    if len(np.unique(vertices, axis=0)) < 3:
        raise RegionError(f"lasso: {len(np.unique(vertices, axis=0))} distinct point(s); "
                          "draw around at least 3 points to select a region")
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    if area < 1e-9:
        raise RegionError("lasso: the points lie on a line (no area); draw around the pixels to select")
    mask = np.zeros((h, w), dtype=bool)
    # only the pixels of the polygon's bounding box can be inside
    x0, x1 = max(int(np.ceil(x.min())), 0), min(int(np.floor(x.max())), w - 1)
    y0, y1 = max(int(np.ceil(y.min())), 0), min(int(np.floor(y.max())), h - 1)
    if x1 >= x0 and y1 >= y0:
        gy, gx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
        from matplotlib.path import Path  # here, not at import: matplotlib costs the page's first load 0.2-0.4 s

        inside = Path(vertices).contains_points(np.stack([gx.ravel(), gy.ravel()], axis=1))
        mask[y0 : y1 + 1, x0 : x1 + 1] = inside.reshape(gy.shape)
    if not mask.any():
        raise RegionError(f"lasso: no pixel centre of the {h}x{w} image lies inside it; draw around the pixels "
                          "to select")
    return mask


def lasso_region(xs: Sequence[float], ys: Sequence[float], size: tuple[int, int]) -> LassoRegion:
    """The :class:`LassoRegion` of a lasso drawn through ``(xs[i], ys[i])`` on an image of ``size = (h, w)``."""
    mask = polygon_mask(xs, ys, size)
    return LassoRegion(np.stack([np.asarray(xs, float).ravel(), np.asarray(ys, float).ravel()], axis=1), mask)


def region_mask(region, size: tuple[int, int]) -> np.ndarray:
    """Bool ``(h, w)`` of a region: a lasso's own mask, or a box ``(y0, y1, x0, x1)`` filled."""
    if isinstance(region, LassoRegion):
        return region.mask
    y0, y1, x0, x1 = region
    mask = np.zeros(size, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def lr_mask(mask: np.ndarray, ratio: int, lr_size: tuple[int, int]) -> np.ndarray:
    """Bool ``lr_size``: the LR pixels whose ``ratio x ratio`` block holds at least one pixel of the HR ``mask``
    (HR pixels past the last full block belong to the last LR pixel, as :meth:`AppState.lr_pixel` has it)."""
    lh, lw = lr_size
    ys, xs = np.nonzero(mask)
    out = np.zeros(lr_size, dtype=bool)
    out[np.minimum(ys // ratio, lh - 1), np.minimum(xs // ratio, lw - 1)] = True
    return out


def masked_stats(cube: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and (population) standard deviation of ``cube (bands, y, x)`` over the pixels of ``mask``,
    float32 (accumulated in float64)."""
    flat = np.asarray(cube)[:, mask].astype(np.float64)
    return flat.mean(axis=1).astype(np.float32), flat.std(axis=1).astype(np.float32)


def region_spectra(state, region=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and standard deviation per band over ``region`` (default: ``state.region``), box or lasso: truth,
    Wald reference, LR-HSI (the LR pixels whose blocks the region touches) and every run (the selected one at
    ``state.step``). Empty when there is no region or no problem."""
    region = state.region if region is None else region
    pb = state.problem
    if region is None or pb is None:
        return {}
    mask = region_mask(region, pb.hr_size)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if state.truth is not None:
        out["truth"] = masked_stats(state.truth.values, mask)
    if state.reference is not None:
        out["Wald reference"] = masked_stats(state.reference.values, mask)
    out["LR-HSI"] = masked_stats(pb.lr_hsi.values, lr_mask(mask, pb.ratio, pb.lr_size))
    for name, run in state.runs.items():
        step = state.step if name == state.selected else -1
        out[name] = masked_stats(run.fused(step), mask)
    return out


def describe(region) -> str:
    """One phrase for a title: ``"region y 5–12, x 10–20 (88 px)"`` or ``"lasso region, 57 px in y 3–12, x 4–15"``."""
    y0, y1, x0, x1 = region
    if isinstance(region, LassoRegion):
        return f"lasso region, {region.pixels} px in y {y0}–{y1 - 1}, x {x0}–{x1 - 1}"
    return f"region y {y0}–{y1 - 1}, x {x0}–{x1 - 1} ({(y1 - y0) * (x1 - x0)} px)"


def lasso_shapes(region: LassoRegion) -> tuple[list[dict], list[dict]]:
    """Plotly layout shapes and annotations marking a lasso where its spectra were taken: its polygon as a closed
    path (white under a dashed dark line, like the box marker) and a "region" label at its top-left vertex."""
    pts = region.polygon
    path = "M " + " L ".join(f"{x:.2f},{y:.2f}" for x, y in pts) + " Z"
    shapes = [{"type": "path", "xref": "x", "yref": "y", "path": path,
               "line": {"color": c, "width": wd, "dash": d}}
              for c, wd, d in (("white", 3, "solid"), ("#111", 1.5, "dash"))]
    top = pts[int(np.argmin(pts[:, 1] + 1e-6 * pts[:, 0]))]
    notes = [{"x": float(top[0]), "y": float(top[1]), "xref": "x", "yref": "y", "text": "<b>region</b>",
              "showarrow": False, "font": {"size": 11, "color": "#111"}, "bgcolor": "rgba(255,255,255,0.75)",
              "xanchor": "left", "yanchor": "bottom"}]
    return shapes, notes
