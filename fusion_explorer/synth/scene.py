"""Spectral dead leaves scenes: a non-negative linear mixture ``X = E A`` with dead-leaves geometry.

    X[b, y, x] = sum_k E[b, k] A[k, y, x],   E in [0, 1]^(bands x p),  A >= 0,  sum_k A[k] <= 1

* ``E`` (endmembers): ``p`` spectra from :func:`~fusion_explorer.synth.spectra.random_spectra`;
* each visible leaf mixes 1 to ``max_mixed`` endmembers (Dirichlet weights) and varies inside:
  a linear ramp between two mixtures across the leaf plus smooth multiplicative noise per
  endmember (``abundance_variation``);
* shading ``S`` in ``[1 - texture, 1]`` multiplies the abundances: a smooth 1/f field over the
  image, a brightness per leaf and a dome (darker towards a leaf's rim);
* soft edges: the abundances are blurred by a Gaussian of ``edge_sigma`` pixels (an optical PSF).

Every step keeps ``A`` non-negative with columns summing to at most 1, so the cube lies in the cone
of the endmembers and in ``[0, 1]``; no clipping is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from scipy import ndimage

from ..cube import make_cube
from ..io.cave import CAVE_WAVELENGTHS
from .leaves import SHAPES, Leaves, dead_leaves
from .spectra import random_spectra


def as_generator(seed) -> np.random.Generator:
    """A numpy Generator from an int, a tuple of ints, a ``SeedSequence`` or a Generator (passed through)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, (tuple, list)):
        return np.random.default_rng(np.random.SeedSequence([int(s) for s in seed]))
    return np.random.default_rng(int(seed))


def fractal_noise(shape: tuple[int, ...], rng: np.random.Generator, beta: float = 2.5) -> np.ndarray:
    """Zero-mean, unit-std periodic noise ``(..., H, W)`` with power spectrum ``∝ 1/f^beta``."""
    *lead, h, w = shape
    white = rng.standard_normal((*lead, h, w), dtype=np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = np.inf
    spec = np.fft.rfft2(white) * (f ** (-beta / 2)).astype(np.float32)
    out = np.fft.irfft2(spec, s=(h, w)).astype(np.float32, copy=False)
    out -= out.mean(axis=(-2, -1), keepdims=True)
    return out / (out.std(axis=(-2, -1), keepdims=True) + 1e-12)


def _spectral_modulation(wl: np.ndarray, shape: tuple[int, int], strength: float,
                         rng: np.random.Generator) -> np.ndarray:
    """``(bands, H, W)`` factors ``exp(strength · g(λ, y, x))``: ``g`` a sum of the first four cosines over
    the wavelength range (amplitudes ``∝ 1/j``: smooth in λ, as reflectance differences are) whose
    weights are smooth random fields over the image (``1/f⁴`` fractal noise: they change over tens of
    pixels, the scale a low-resolution HSI still resolves), scaled to unit RMS."""
    t = (wl - wl.min()) / max(float(np.ptp(wl)), 1e-9)
    j = np.arange(1, 5)
    weights = fractal_noise((j.size, *shape), rng, beta=4.0) / j[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, j.size)
    g = np.einsum("jyx,bj->byx", weights, np.cos(np.pi * j[None] * t[:, None] + phase[None]))
    g /= np.sqrt((g**2).mean()) + 1e-12
    return np.exp(strength * g)


@dataclass
class SyntheticScene:
    """A synthetic scene and its ground-truth unmixing (``cube = endmembers @ abundances``).

    ``cube`` ``(band, y, x)`` reflectance in ``[0, 1]`` with ``wavelength`` (nm) and provenance in
    ``attrs``; ``endmembers`` ``(bands, p)``; ``abundances`` ``(p, y, x)`` (non-negative, sum <= 1);
    ``leaves`` the dead-leaves map (``labels`` ``(y, x)`` and every drawn leaf's ``radius``);
    ``sources`` where each endmember comes from.
    """

    cube: xr.DataArray
    endmembers: np.ndarray
    abundances: np.ndarray
    leaves: Leaves
    sources: tuple[str, ...]
    params: dict = field(default_factory=dict)


def _mixtures(n: int, p: int, max_mixed: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two Dirichlet mixtures ``(n, p)`` per leaf on the same support of 1..max_mixed endmembers."""
    k = np.minimum(rng.geometric(0.55, n), min(max_mixed, p))
    ranks = np.argsort(np.argsort(rng.random((n, p)), axis=1), axis=1)
    support = ranks < k[:, None]
    m1 = rng.gamma(1.0, size=(n, p)) * support
    m2 = rng.gamma(1.0, size=(n, p)) * support
    return m1 / m1.sum(axis=1, keepdims=True), m2 / m2.sum(axis=1, keepdims=True)


def spectral_dead_leaves(
    size: int | tuple[int, int] = 128,
    wavelength=None,
    *,
    seed=0,
    n_endmembers: int = 6,
    alpha: float = 3.0,
    r_min: float = 1.5,
    r_max: float | None = None,
    shapes: tuple[str, ...] = SHAPES,
    max_mixed: int = 3,
    measured_fraction: float = 0.6,
    vegetation_fraction: float = 0.1,
    texture: float = 0.3,
    abundance_variation: float = 0.5,
    edge_sigma: float = 0.7,
    spectral_variability: float = 0.0,
    dtype=np.float32,
) -> SyntheticScene:
    """A spectral dead leaves scene ``(bands, H, W)`` on ``wavelength`` (nm; default CAVE 400–700/10).

    Args:
        size: ``H`` (square) or ``(H, W)`` pixels.
        seed: int, tuple of ints, ``SeedSequence`` or ``Generator``; same seed, same scene.
        n_endmembers: ``p``, the number of spectra the scene mixes.
        alpha, r_min, r_max, shapes: the dead leaves (see :func:`~fusion_explorer.synth.leaves.dead_leaves`).
        max_mixed: at most this many endmembers per leaf (1 = pure leaves).
        measured_fraction, vegetation_fraction: spectra kinds (see :func:`random_spectra`).
        texture: shading depth in ``[0, 1)``; 0 = flat leaves.
        abundance_variation: within-leaf mixture variation in ``[0, 1]``; 0 = constant per leaf.
        edge_sigma: Gaussian blur (px) of the abundances; 0 = hard edges.
        spectral_variability: the cube is multiplied by ``exp(v · g(λ, y, x))``, ``g`` smooth in
            wavelength and over the image, of unit RMS (:func:`_spectral_modulation`; ``v`` about
            0.1–0.3: one material's spectrum drifts across a real scene). With ``v > 0`` the cube is no
            longer ``endmembers @ abundances`` (its rank is far above ``p``, as real scenes' is); 0 =
            exactly that product.

    ``texture = abundance_variation = edge_sigma = 0`` gives piecewise constant leaves.
    """
    wl = CAVE_WAVELENGTHS if wavelength is None else np.asarray(wavelength, dtype=np.float64).ravel()
    if not 0 <= texture < 1:
        raise ValueError(f"texture must be in [0, 1); got {texture}")
    if not 0 <= abundance_variation <= 1:
        raise ValueError(f"abundance_variation must be in [0, 1]; got {abundance_variation}")
    if n_endmembers < 1 or max_mixed < 1:
        raise ValueError(f"need n_endmembers >= 1 and max_mixed >= 1; got {n_endmembers}, {max_mixed}")
    rng = as_generator(seed)
    spectra, sources = random_spectra(
        wl, n_endmembers, rng, measured_fraction=measured_fraction, vegetation_fraction=vegetation_fraction
    )
    leaves = dead_leaves(size, rng, alpha=alpha, r_min=r_min, r_max=r_max, shapes=shapes)
    h, w = leaves.labels.shape
    p = n_endmembers

    # only the visible leaves get attributes; the background label (if any) gets the last slot
    visible, lab = np.unique(leaves.labels, return_inverse=True)
    lab = lab.reshape(h, w)
    nv = visible.size
    m1, m2 = _mixtures(nv, p, max_mixed, rng)
    idx = np.minimum(visible, leaves.n_leaves - 1)
    cy, cx = leaves.centre_y[idx], leaves.centre_x[idx]
    inv_ext = 1.0 / np.maximum(leaves.extent[idx], 0.5)
    phi = rng.uniform(0, 2 * np.pi, nv)
    gain = abundance_variation * rng.random(nv)
    f32 = np.float32
    yy, xx = np.arange(h, dtype=f32)[:, None], np.arange(w, dtype=f32)[None, :]
    # within-leaf ramp between the two mixtures: t = 0.5 + gain (cos phi, sin phi) . (p - centre) / extent
    ax, ay = (gain * np.cos(phi) * inv_ext).astype(f32), (gain * np.sin(phi) * inv_ext).astype(f32)
    a0 = (0.5 - ax * cx - ay * cy).astype(f32)
    ramp = np.clip(a0[lab] + ax[lab] * xx + ay[lab] * yy, 0.0, 1.0)
    m1t, dmt = m1.T.astype(f32), (m2 - m1).T.astype(f32)
    ab = m1t[:, lab] + dmt[:, lab] * ramp[None]
    if abundance_variation > 0:
        ab *= np.exp(f32(0.5 * abundance_variation) * fractal_noise((p, h, w), rng, beta=3.0))
        ab /= np.maximum(ab.sum(axis=0, keepdims=True), f32(1e-12))

    if texture > 0:
        smooth = fractal_noise((h, w), rng, beta=2.5)
        smooth = (smooth - smooth.min()) / max(float(np.ptp(smooth)), 1e-12)
        brightness = (1 - texture * 0.6 * rng.random(nv)).astype(f32)
        dome = (texture * rng.random(nv)).astype(f32)
        iy, ix = (inv_ext * cy).astype(f32), (inv_ext * cx).astype(f32)
        ie = inv_ext.astype(f32)
        rho2 = np.minimum((ie[lab] * yy - iy[lab]) ** 2 + (ie[lab] * xx - ix[lab]) ** 2, 1.0)
        shade = (1 - f32(texture) * smooth) * brightness[lab] * (1 - dome[lab] * rho2)
        ab *= shade[None]
    if edge_sigma > 0:
        ab = ndimage.gaussian_filter(ab, (0, edge_sigma, edge_sigma), mode="reflect")
    ab = ab.astype(dtype, copy=False)
    endmembers = spectra.T.astype(dtype)
    cube = (endmembers @ ab.reshape(p, -1)).reshape(wl.size, h, w)
    if spectral_variability > 0:  # drawn last: scenes without it stay bit-identical
        cube *= _spectral_modulation(wl, (h, w), float(spectral_variability), rng).astype(dtype)
    np.clip(cube, 0.0, 1.0, out=cube)  # rounding only without variability: the mixture is in [0, 1]
    params = dict(
        seed=int(seed)
        if isinstance(seed, (int, np.integer))
        else "generator"
        if isinstance(seed, np.random.Generator)
        else str(seed),
        n_endmembers=p,
        alpha=alpha,
        r_min=r_min,
        r_max=r_max if r_max is not None else max(h, w) / 2,
        shapes=",".join(shapes),
        max_mixed=max_mixed,
        texture=texture,
        abundance_variation=abundance_variation,
        edge_sigma=edge_sigma,
        spectral_variability=spectral_variability,
        n_leaves_drawn=leaves.n_leaves,
        n_leaves_visible=int(nv),
    )
    attrs = {
        "scene": f"dead-leaves-{h}x{w}-seed{params['seed']}",
        "source": "fusion_explorer.synth.spectral_dead_leaves",
        "sensor": "synthetic (spectral dead leaves; colour-science reflectances and random curves)",
        "endmember_sources": "; ".join(sources),
        **{f"synth_{k}": v for k, v in params.items()},
    }
    return SyntheticScene(
        cube=make_cube(cube, wl, attrs=attrs, dtype=dtype),
        endmembers=endmembers,
        abundances=ab,
        leaves=leaves,
        sources=sources,
        params=params,
    )


def dead_leaves_scene(
    size: int = 256,
    wavelength=None,
    *,
    seed=0,
    n_materials: int = 8,
    texture: float = 0.3,
    edge_sigma: float = 0.7,
    **options,
) -> xr.DataArray:
    """The cube ``(bands, size, size)`` of :func:`spectral_dead_leaves` with ``n_materials`` endmembers."""
    return spectral_dead_leaves(
        size, wavelength, seed=seed, n_endmembers=n_materials, texture=texture, edge_sigma=edge_sigma, **options
    ).cube


def default_scene(size: int = 256, seed: int = 0) -> xr.DataArray:
    """The app's embedded default scene ``(31, size, size)``: 400–700 nm, measured reflectances only
    (like a CAVE scene of painted objects), large shaded leaves with soft edges."""
    cube = spectral_dead_leaves(
        size,
        CAVE_WAVELENGTHS,
        seed=seed,
        n_endmembers=12,
        measured_fraction=1.0,
        vegetation_fraction=0.0,
        max_mixed=2,
        r_min=max(1.5, 5.0 * size / 256),
        r_max=0.8 * size,
        texture=0.55,
        abundance_variation=0.5,
        edge_sigma=1.0,
    ).cube
    cube.attrs["scene"] = "default (synthetic dead leaves)"
    cube.attrs["source"] = "fusion_explorer.synth.default_scene"
    return cube
