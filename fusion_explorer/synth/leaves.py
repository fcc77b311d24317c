"""The dead leaves model: occluding random shapes with power-law sizes, rasterised without Python loops.

Leaves fall one after another; each is a random shape of size ``r`` (the radius of the disc of the
same area) drawn from ``p(r) ∝ r^-alpha`` on ``[r_min, r_max]`` (``alpha = 3`` is scale invariant
in 2-D and gives natural-image statistics), centred uniformly so that it meets the image. A pixel
shows the first leaf that covers it (leaves are drawn front to back), so the scene is finished as
soon as every pixel is covered.

Rasterisation is vectorised: the leaves are drawn in batches; for a batch, every (leaf, pixel of
its bounding box) pair is enumerated with ``np.repeat`` (about 1.6 x the leaves' area in all), the
shape test is evaluated on all pairs at once, and ``np.minimum.at`` keeps the front-most leaf per
pixel. A 128 x 128 map takes about 10 ms on one CPU core.

The PyPI package ``deadleaves`` (TU Darmstadt) was looked at: it needs Python >= 3.12 and
torch >= 2.8 with torchquad/torchvision/pandas (this project runs on Python 3.11), and it makes
RGB/grey images whereas we need leaf labels to attach spectral mixtures to; so the model is
written here with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Leaf shapes: a disc, an ellipse (aspect up to ``max_aspect``), a rectangle, a regular polygon (3–8 sides).
SHAPES = ("disc", "ellipse", "rectangle", "polygon")
_NO_LEAF = np.iinfo(np.int32).max


@dataclass
class Leaves:
    """A dead leaves map and the leaves drawn for it (``n`` = number of leaves drawn).

    ``labels`` ``(H, W)`` int32: the index of the front-most leaf at each pixel (``n`` where no
    leaf fell: the background, only when ``max_leaves`` stopped the process early).
    ``radius``, ``centre_y``, ``centre_x``, ``angle`` (rad), ``extent`` (circumradius, px) and
    ``shape`` (index into :data:`SHAPES`): ``(n,)`` per drawn leaf, in falling order (front first).
    """

    labels: np.ndarray
    radius: np.ndarray
    centre_y: np.ndarray
    centre_x: np.ndarray
    angle: np.ndarray
    extent: np.ndarray
    shape: np.ndarray

    @property
    def n_leaves(self) -> int:
        return int(self.radius.size)


def power_law_radii(n: int, rng: np.random.Generator, alpha: float, r_min: float, r_max: float) -> np.ndarray:
    """``n`` radii from ``p(r) ∝ r^-alpha`` on ``[r_min, r_max]`` by inverse-CDF sampling."""
    u = rng.random(n)
    if abs(alpha - 1.0) < 1e-9:
        return r_min * (r_max / r_min) ** u
    a = 1.0 - alpha
    return (r_min**a + u * (r_max**a - r_min**a)) ** (1.0 / a)


def _mean_area(alpha: float, r_min: float, r_max: float) -> float:
    """``E[π r^2]`` under the power law (numerical quadrature on a log grid)."""
    if r_max <= r_min * (1 + 1e-9):
        return float(np.pi * r_min * r_min)
    r = np.geomspace(r_min, r_max, 2048)
    p = r ** (-alpha)
    return float(np.pi * np.trapezoid(p * r * r, r) / np.trapezoid(p, r))


def _draw_batch(n, rng, h, w, alpha, r_min, r_max, shape_ids, max_aspect):
    r = power_law_radii(n, rng, alpha, r_min, r_max)
    shape = rng.choice(shape_ids, size=n)
    angle = rng.uniform(0.0, np.pi, n)
    aspect = np.exp(rng.uniform(0.0, np.log(max_aspect), n))
    sides = rng.integers(3, 9, n)
    # half axes (ellipse), half sides (rectangle), circumradius (polygon), all with area π r^2
    a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
    a = np.where(shape == 0, r, a)
    b = np.where(shape == 0, r, b)
    half_a, half_b = 0.5 * np.sqrt(np.pi) * r * np.sqrt(aspect), 0.5 * np.sqrt(np.pi) * r / np.sqrt(aspect)
    poly_r = r * np.sqrt(2 * np.pi / (sides * np.sin(2 * np.pi / sides)))
    extent = np.select([shape <= 1, shape == 2], [a, np.hypot(half_a, half_b)], poly_r)
    cy = rng.uniform(-extent, h - 1 + extent)
    cx = rng.uniform(-extent, w - 1 + extent)
    return dict(r=r, shape=shape, angle=angle, a=a, b=b, ha=half_a, hb=half_b, sides=sides, pr=poly_r,
                extent=extent, cy=cy, cx=cx)  # fmt: skip


def _rasterise(batch: dict, first_index: int, labels: np.ndarray) -> None:
    """Write the batch's leaves into ``labels`` (flat, ``_NO_LEAF`` where free) where nothing is in front."""
    h, w = labels.shape
    cy, cx, ext = batch["cy"], batch["cx"], batch["extent"]
    y0 = np.clip(np.ceil(cy - ext), 0, h).astype(np.int64)
    y1 = np.clip(np.floor(cy + ext) + 1, 0, h).astype(np.int64)
    x0 = np.clip(np.ceil(cx - ext), 0, w).astype(np.int64)
    x1 = np.clip(np.floor(cx + ext) + 1, 0, w).astype(np.int64)
    # skip leaves whose bounding box is already fully covered: free-pixel counts from a summed-area table
    free_sat = np.zeros((h + 1, w + 1), dtype=np.int32)
    np.cumsum(np.cumsum(labels == _NO_LEAF, axis=0, dtype=np.int32), axis=1, out=free_sat[1:, 1:])
    n_free = free_sat[y1, x1] - free_sat[y0, x1] - free_sat[y1, x0] + free_sat[y0, x0]
    live = np.flatnonzero((n_free > 0) & (y1 > y0) & (x1 > x0))
    if live.size == 0:
        return
    bh, bw = (y1 - y0)[live].astype(np.int32), (x1 - x0)[live].astype(np.int32)
    counts = bh * bw
    total = int(counts.sum())
    leaf = np.repeat(live.astype(np.int32), counts)
    k = np.arange(total, dtype=np.int32) - np.repeat((np.cumsum(counts) - counts).astype(np.int32), counts)
    dy_i, dx_i = np.divmod(k, np.repeat(bw, counts))
    pix = (np.repeat((y0[live] * w + x0[live]).astype(np.int32), counts) + dy_i * np.int32(w)) + dx_i
    flat = labels.reshape(-1)
    free = flat[pix] == _NO_LEAF
    leaf, pix, dy_i, dx_i = leaf[free], pix[free], dy_i[free], dx_i[free]
    # offsets from the leaf centre, in float32 (pixel coordinates are exact in float32)
    off_y = (y0 - cy).astype(np.float32)
    off_x = (x0 - cx).astype(np.float32)
    dy = dy_i.astype(np.float32) + off_y[leaf]
    dx = dx_i.astype(np.float32) + off_x[leaf]
    c = np.cos(batch["angle"]).astype(np.float32)[leaf]
    s = np.sin(batch["angle"]).astype(np.float32)[leaf]
    u, v = c * dx + s * dy, c * dy - s * dx
    shape = batch["shape"][leaf]
    inside = np.zeros(leaf.size, dtype=bool)
    m = shape <= 1
    if m.any():
        lm = leaf[m]
        inv_a, inv_b = (1 / batch["a"]).astype(np.float32), (1 / batch["b"]).astype(np.float32)
        inside[m] = (u[m] * inv_a[lm]) ** 2 + (v[m] * inv_b[lm]) ** 2 <= 1.0
    m = shape == 2
    if m.any():
        lm = leaf[m]
        inside[m] = (np.abs(u[m]) <= batch["ha"][lm]) & (np.abs(v[m]) <= batch["hb"][lm])
    m = shape == 3
    if m.any():
        lm = leaf[m]
        sector = (2 * np.pi / batch["sides"]).astype(np.float32)[lm]
        theta = np.mod(np.arctan2(v[m], u[m]), sector) - sector / 2
        # inside when the distance along theta is within the apothem / cos(theta)
        apothem = (batch["pr"] * np.cos(np.pi / batch["sides"])).astype(np.float32)[lm]
        inside[m] = np.hypot(u[m], v[m]) * np.cos(theta) <= apothem
    np.minimum.at(flat, pix[inside], (leaf[inside] + first_index).astype(np.int32))


def dead_leaves(
    size: int | tuple[int, int],
    rng: np.random.Generator,
    *,
    alpha: float = 3.0,
    r_min: float = 1.5,
    r_max: float | None = None,
    shapes: tuple[str, ...] = SHAPES,
    max_aspect: float = 3.0,
    max_leaves: int = 200_000,
) -> Leaves:
    """A dead leaves map of ``size`` (``H`` or ``(H, W)``) pixels; ``r_max`` defaults to ``max(H, W) / 2``.

    Leaves fall in batches of about 1.5 coverings of the image until every pixel is covered (or
    ``max_leaves`` were drawn; free pixels then get label ``n``).
    """
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive; got {size!r}")
    r_max = float(r_max) if r_max is not None else max(h, w) / 2.0
    if not 0 < r_min <= r_max:
        raise ValueError(f"need 0 < r_min <= r_max; got r_min {r_min}, r_max {r_max}")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        raise ValueError(f"unknown leaf shapes {unknown}; choose from {SHAPES}")
    shape_ids = np.array([SHAPES.index(s) for s in shapes])
    batch_size = int(np.clip(1.5 * h * w / _mean_area(alpha, r_min, r_max), 64, 50_000))
    labels = np.full((h, w), _NO_LEAF, dtype=np.int32)
    parts: list[dict] = []
    drawn = 0
    while drawn < max_leaves:
        n = min(batch_size, max_leaves - drawn)
        batch = _draw_batch(n, rng, h, w, alpha, r_min, r_max, shape_ids, max_aspect)
        _rasterise(batch, drawn, labels)
        parts.append(batch)
        drawn += n
        if not (labels == _NO_LEAF).any():
            break
    labels[labels == _NO_LEAF] = drawn

    def cat(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])

    return Leaves(
        labels=labels,
        radius=cat("r"),
        centre_y=cat("cy"),
        centre_x=cat("cx"),
        angle=cat("angle"),
        extent=cat("extent"),
        shape=cat("shape"),
    )
