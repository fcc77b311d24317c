"""Scenes for inspection: :func:`open_scene` (a file, with nominal band centres when it stores none),
:func:`value_summary` of several cubes, :func:`pick_pixels` with spectra as different as possible."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from ..cube import wavelengths
from ..io.published import nominal_wavelengths as nominal_wavelengths  # re-exported


def open_scene(path: str | os.PathLike) -> xr.DataArray:
    """:func:`fusion_explorer.scenes.load_scene`: :func:`~fusion_explorer.io.open_cube`, adding
    :func:`nominal_wavelengths` when the file stores none (noted in ``attrs['wavelength_note']``)."""
    from ..scenes import load_scene

    return load_scene(path)


def value_summary(cubes: Mapping[str, xr.DataArray]) -> Any:
    """One row per cube: sensor, shape, wavelength range and spacing, value range and percentiles."""
    import pandas as pd

    records = []
    for name, cube in cubes.items():
        v = np.asarray(cube.values, dtype=np.float64)
        wl = wavelengths(cube)
        p1, p99 = np.percentile(v, [1, 99])
        records.append(
            {
                "scene": name,
                "sensor": cube.attrs.get("sensor", ""),
                "bands": int(cube.sizes["band"]),
                "y x": f"{cube.sizes['y']} x {cube.sizes['x']}",
                "nm from": None if wl is None else round(float(wl.min()), 1),
                "nm to": None if wl is None else round(float(wl.max()), 1),
                "median step nm": None if wl is None or wl.size < 2 else round(float(np.median(np.diff(wl))), 2),
                "min": float(v.min()),
                "p1": float(p1),
                "mean": float(v.mean()),
                "p99": float(p99),
                "max": float(v.max()),
            }
        )
    return pd.DataFrame.from_records(records).set_index("scene")


def pick_pixels(cube: xr.DataArray, n: int = 4, stride: int | None = None) -> list[tuple[int, int]]:
    """``n`` pixels ``(y, x)`` with spectra as different as possible: the brightest, then repeatedly the
    one whose smallest spectral angle to those already picked is largest (on a ``stride`` grid)."""
    v = np.asarray(cube.values, dtype=np.float64)
    _, h, w = v.shape
    s = stride or max(1, int(np.sqrt(h * w / 4096)))
    sub = v[:, ::s, ::s].reshape(v.shape[0], -1)
    norms = np.linalg.norm(sub, axis=0)
    ok = norms > np.percentile(norms, 5)
    unit = sub / np.maximum(norms, 1e-12)
    chosen = [int(np.argmax(norms))]
    for _ in range(1, n):
        cos = np.clip(unit[:, chosen].T @ unit, -1, 1).max(axis=0)
        cos[~ok] = 1.0
        chosen.append(int(np.argmin(cos)))
    ws = (w + s - 1) // s
    return [(int(i // ws) * s, int(i % ws) * s) for i in chosen]
