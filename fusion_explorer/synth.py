"""Synthetic scenes: spectral "dead leaves" made on the fly (no downloads).

The dead leaves model stacks occluding random shapes whose sizes follow a power law
(``p(r) ∝ r^-alpha`` between ``r_min`` and ``r_max``), which gives natural-image statistics.
Here each leaf carries a mixture of measured reflectances (the ColorChecker spectra shipped by
``colour-science``) with a smooth texture, and leaf edges are softened by a small blur, so the
scene is a non-negative linear mixture with realistic spatial detail.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import xarray as xr
from scipy import ndimage

from .cube import make_cube


@lru_cache(maxsize=4)
def reflectance_library(wavelength: tuple[float, ...]) -> np.ndarray:
    """Measured reflectances ``(n_spectra, bands)`` resampled to ``wavelength`` (nm).

    The 24 ColorChecker patches (N. Ohta's measurements) and the BabelColor averages, from
    ``colour-science``; outside 380–780 nm the end values are held.
    """
    import colour

    wl = np.asarray(wavelength, dtype=np.float64)
    spectra = []
    for name in ("ColorChecker N Ohta", "BabelColor Average"):
        for sd in colour.SDS_COLOURCHECKERS[name].values():
            spectra.append(np.interp(wl, sd.wavelengths, sd.values))
    return np.clip(np.asarray(spectra), 0.0, 1.0)


def dead_leaves_labels(
    size: int,
    rng: np.random.Generator,
    *,
    alpha: float = 3.0,
    r_min: float = 2.0,
    r_max: float | None = None,
    max_leaves: int = 4000,
) -> np.ndarray:
    """A ``(size, size)`` map of leaf indices; discs fall front to back until the plane is covered."""
    r_max = r_max or size / 3
    labels = -np.ones((size, size), dtype=np.int32)
    yy, xx = np.mgrid[0:size, 0:size]
    # inverse-CDF sampling of p(r) ∝ r^-alpha on [r_min, r_max]
    a = 1 - alpha
    for leaf in range(max_leaves):
        u = rng.random()
        r = (r_min**a + u * (r_max**a - r_min**a)) ** (1 / a)
        cy, cx = rng.uniform(-r, size + r, 2)
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, size)
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, size)
        if y0 >= y1 or x0 >= x1:
            continue
        win = labels[y0:y1, x0:x1]
        inside = ((yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r) & (win < 0)
        win[inside] = leaf  # front-to-back: a leaf only fills what no earlier leaf covers
        if leaf % 64 == 0 and (labels >= 0).all():
            break
    labels[labels < 0] = leaf + 1
    return labels


def dead_leaves_scene(
    size: int = 256,
    wavelength=None,
    *,
    seed: int = 0,
    n_materials: int = 8,
    texture: float = 0.15,
    edge_sigma: float = 0.7,
) -> xr.DataArray:
    """A ``(bands, size, size)`` reflectance cube in [0, 1] made of dead leaves.

    ``n_materials`` spectra are drawn from :func:`reflectance_library`; each leaf mixes two of
    them with a random weight, then a smooth multiplicative texture (``texture`` = relative
    amplitude) and a Gaussian edge blur (``edge_sigma`` pixels) are applied.
    """
    wl = np.arange(400.0, 701.0, 10.0) if wavelength is None else np.asarray(wavelength, dtype=np.float64)
    rng = np.random.default_rng(seed)
    library = reflectance_library(tuple(wl))
    materials = library[rng.choice(len(library), size=n_materials, replace=False)]
    labels = dead_leaves_labels(size, rng)
    n_leaves = int(labels.max()) + 1
    pair = rng.integers(0, n_materials, size=(n_leaves, 2))
    weight = rng.uniform(0.0, 1.0, size=n_leaves)
    abundances = np.zeros((n_materials, size, size))
    for k in range(n_materials):
        abundances[k] = np.where(pair[labels, 0] == k, weight[labels], 0.0) + np.where(
            pair[labels, 1] == k, 1 - weight[labels], 0.0
        )
    shade = 1 + texture * ndimage.gaussian_filter(rng.standard_normal((size, size)), 3) / 0.1
    shade = np.clip(shade, 0.3, 1.5)
    if edge_sigma > 0:
        abundances = ndimage.gaussian_filter(abundances, (0, edge_sigma, edge_sigma))
    cube = np.einsum("kb,kyx->byx", materials, abundances) * shade
    cube = np.clip(cube, 0.0, 1.0)
    return make_cube(
        cube,
        wl,
        attrs={
            "scene": f"dead-leaves-{size}-seed{seed}",
            "source": "fusion_explorer.synth.dead_leaves_scene",
            "sensor": "synthetic (ColorChecker reflectances, colour-science)",
            "seed": seed,
        },
    )


def default_scene(size: int = 256, seed: int = 0) -> xr.DataArray:
    """The app's embedded default scene: 31 bands, 400–700 nm, like a CAVE scene."""
    cube = dead_leaves_scene(size, seed=seed)
    cube.attrs["scene"] = "default (synthetic dead leaves)"
    return cube
