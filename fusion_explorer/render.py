"""True-colour rendering of cubes with CIE colour matching (colour-science)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import xarray as xr

from .cube import wavelengths


@lru_cache(maxsize=8)
def _xyz_weights(wl: tuple[float, ...]) -> np.ndarray:
    """``(3, bands)`` weights: CIE 1931 2° CMFs x D65 on the band centres, Y of a perfect white = 1."""
    import colour

    w = np.asarray(wl)
    cmfs = colour.MSDS_CMFS["CIE 1931 2 Degree Standard Observer"]
    d65 = colour.SDS_ILLUMINANTS["D65"]
    xyz_bar = np.stack([np.interp(w, cmfs.wavelengths, cmfs.values[:, i], left=0, right=0) for i in range(3)])
    weights = xyz_bar * np.interp(w, d65.wavelengths, d65.values)
    return weights / weights[1].sum()


def true_colour(cube: xr.DataArray, *, exposure: float | None = None) -> np.ndarray:
    """sRGB ``(y, x, 3)`` uint8 of a reflectance cube under D65.

    Cubes without visible wavelengths fall back to a false-colour composite of three bands
    (at 1/6, 1/2 and 5/6 of the band range). ``exposure`` scales Y (default: 99th percentile -> 1).
    """
    import colour

    wl = wavelengths(cube)
    values = np.asarray(cube.values, dtype=np.float64)
    if wl is not None and wl.min() < 600 and wl.max() > 500:
        xyz = np.einsum("cb,byx->yxc", _xyz_weights(tuple(wl)), values)
        scale = exposure or 1 / max(np.percentile(xyz[..., 1], 99), 1e-6)
        rgb = colour.XYZ_to_sRGB(np.clip(xyz * scale, 0, None))
    else:
        n = values.shape[0]
        rgb = values[[5 * n // 6, n // 2, n // 6]].transpose(1, 2, 0)
        rgb = stretch(rgb, 99, gamma=2.2)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def stretch(values: np.ndarray, percentile: float = 99.0, gamma: float = 1.0) -> np.ndarray:
    """``clip(values / p, 0, 1) ** (1 / gamma)`` with ``p`` the given percentile: a display stretch."""
    v = np.asarray(values, dtype=np.float64)
    return np.clip(v / max(np.percentile(v, percentile), 1e-6), 0, 1) ** (1 / gamma)


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG-encode an ``(y, x, 3)`` or ``(y, x)`` uint8 image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
