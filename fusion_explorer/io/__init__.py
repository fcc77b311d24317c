"""Readers and writers: every supported file becomes a cube ``(band, y, x)`` float32.

:func:`open_cube` dispatches on what the path is (CAVE folder, ``.mat``, ENVI, NetCDF, Zarr).
Every cube it returns carries ``attrs['source']`` (absolute path), ``attrs['format']`` (one of
:data:`FORMATS`), ``attrs['sensor']`` when known and a ``wavelength`` coordinate (nm) when
known, in strictly increasing order (bands are reordered when a file lists them otherwise,
e.g. AVIRIS's overlapping spectrometers; ``attrs['band_order']`` keeps the file's indices).
Every failure to read is one :class:`~fusion_explorer.errors.ReadError` naming the file.

Reading stays inside the file and inside memory (:mod:`fusion_explorer.io.guard`): HDF5 external
storage, virtual datasets and external links are refused, so are symlinks leaving a Zarr store or
scene folder, and every read checks the declared size against a budget (``max_bytes=``, else
``$FUSION_EXPLORER_MAX_READ_BYTES``, else min(1 GiB, RAM / 8)) before it reads data.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..cube import make_cube, wavelengths
from ..errors import ReadError
from .cave import find_scene_dir, holds_all_bands, read_cave
from .envi import find_envi_pair, read_envi, write_envi
from .guard import ENV_MAX_BYTES, ScanResult, default_max_bytes, read_budget, resolves_inside
from .matlab import (
    band_axis,
    error_reason,
    mat_inventory,
    read_mat,
    read_mat_variables,
    read_wavelength_vector,
    to_nanometres,
    wavelength_variables,
)
from .netcdf import read_netcdf, read_zarr, write_netcdf, write_zarr

__all__ = [
    "ENV_MAX_BYTES",
    "FORMATS",
    "is_zarr_store",
    "ScanResult",
    "default_max_bytes",
    "describe",
    "list_scenes",
    "load_wavelength",
    "open_cube",
    "read_cave",
    "read_envi",
    "read_mat",
    "read_mat_variables",
    "read_budget",
    "read_netcdf",
    "read_zarr",
    "write_envi",
    "write_netcdf",
    "write_zarr",
]

FORMATS = ("cave", "mat-v5", "mat-v7.3", "envi", "netcdf", "zarr")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
_MIN_SIDE = 20  # list_scenes: smaller spatial sides are tables (SRFs), not images


def is_zarr_store(path: Path) -> bool:
    """A folder holding a Zarr store (named ``.zarr``, or with Zarr v2/v3 metadata)."""
    return path.is_dir() and (
        path.suffix.lower() == ".zarr" or any((path / m).is_file() for m in ("zarr.json", ".zgroup", ".zarray"))
    )


def load_wavelength(spec: Any) -> np.ndarray:
    """Wavelengths (nm) from an array-like, or from a file path: ``.mat`` with one vector, ``.npy``, or text.

    Values all below 30 are taken as micrometres and converted to nm.
    """
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).resolve()
        if not path.is_file():
            raise ReadError(path, "no such wavelength file")
        if path.suffix.lower() == ".mat":
            return read_wavelength_vector(path)
        try:
            values = np.load(path) if path.suffix.lower() == ".npy" else np.loadtxt(path, delimiter=None, ndmin=1)
        except Exception as exc:
            raise ReadError(path, f"cannot read wavelengths ({error_reason(exc)})") from exc
        return to_nanometres(values)
    return to_nanometres(spec)


def _finish(cube: xr.DataArray, clip_negative: bool) -> xr.DataArray:
    """Sort bands by wavelength when needed, note or clip negative values."""
    wl = wavelengths(cube)
    if wl is not None and wl.size > 1 and not np.all(np.diff(wl) > 0):
        order = np.argsort(wl, kind="stable")
        if np.all(np.diff(wl[order]) > 0):
            attrs = dict(cube.attrs)
            moved = np.flatnonzero(order != np.arange(order.size))
            attrs["band_order"] = order.tolist()
            attrs["wavelength_note"] = (
                f"bands reordered by wavelength: the file lists {moved.size} bands out of order "
                "(band_order gives each band's index in the file)"
            )
            cube = make_cube(cube.values[order], wl[order], attrs=attrs, name=cube.name)
        else:
            cube.attrs["wavelength_note"] = "the file repeats wavelengths; bands kept in file order"
    values = cube.values
    n_neg = int(np.count_nonzero(values < 0))
    if n_neg:
        vmin = float(np.nanmin(values))
        if clip_negative:
            np.maximum(values, 0, out=values)
            cube.attrs["value_note"] = f"{n_neg} negative values (min {vmin:.4g}) clipped to 0"
        else:
            cube.attrs["value_note"] = f"{n_neg} negative values (min {vmin:.4g}) kept as stored"
    return cube


def open_cube(
    path: str | os.PathLike,
    *,
    variable: str | None = None,
    layout: str | None = None,
    image_shape: tuple[int, int] | None = None,
    wavelength: Any = None,
    clip_negative: bool = False,
    max_bytes: float | None = None,
) -> xr.DataArray:
    """Read the cube ``(band, y, x)`` float32 that ``path`` holds, whatever its format.

    ``path``: a CAVE scene folder (or its parent in the CAVE zip layout), ``.mat``, ENVI
    ``.hdr`` or data file, ``.nc``/``.nc4``/``.netcdf``, or ``.zarr`` store. ``variable`` picks
    the array of a .mat/NetCDF/Zarr file; ``layout`` and ``image_shape`` apply to .mat files
    (see :mod:`fusion_explorer.io.matlab`). ``wavelength`` (nm; array, or path of a .mat/.npy/
    text file with one vector) sets the band centres. ``clip_negative`` clips values below 0.

    ``max_bytes`` is the read budget: the declared size of the array to read (shape x bytes per
    value, at least 4 as the float32 cube) must not exceed it. Default: the environment variable
    ``FUSION_EXPLORER_MAX_READ_BYTES`` (bytes), else ``min(1 GiB, physical memory / 8)``. Refused
    before any data are read, as one :class:`ReadError`: a larger array; HDF5 (NetCDF-4, MATLAB
    v7.3) external storage, virtual datasets and external links; Zarr chunks, ENVI data files and
    CAVE band PNGs that resolve outside their store or folder (see :mod:`fusion_explorer.io.guard`).
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise ReadError(path, "no such file or directory")
    wl = None if wavelength is None else load_wavelength(wavelength)
    suffix = path.suffix.lower()
    is_mat = path.is_file() and suffix == ".mat"
    if not is_mat and (layout is not None or image_shape is not None):
        raise ReadError(path, "layout= and image_shape= apply only to MATLAB .mat files")
    if path.is_dir():
        if is_zarr_store(path):
            cube = read_zarr(path, variable=variable, max_bytes=max_bytes)
        elif find_scene_dir(path) is not None:
            cube = read_cave(path, max_bytes=max_bytes)
        else:
            raise ReadError(path, "no scene here: not a Zarr store and no CAVE band PNGs (<scene>_01.png … _31.png)")
    elif is_mat:
        cube = read_mat(
            path, variable=variable, layout=layout, image_shape=image_shape, wavelength=wl, max_bytes=max_bytes
        )
    elif suffix in NETCDF_SUFFIXES:
        cube = read_netcdf(path, variable=variable, max_bytes=max_bytes)
    elif suffix == ".hdr":
        cube = read_envi(path, max_bytes=max_bytes)
    else:
        try:
            find_envi_pair(path)
        except ReadError:
            raise ReadError(
                path, "unrecognised file: expected a CAVE folder, .mat, ENVI (.hdr + data), .nc or .zarr"
            ) from None
        cube = read_envi(path, max_bytes=max_bytes)
    if wl is not None and not is_mat:
        if wl.size != cube.sizes["band"]:
            raise ReadError(path, f"{wl.size} wavelengths given for a cube of {cube.sizes['band']} bands")
        cube = cube.assign_coords(wavelength=("band", wl, {"units": "nm", "long_name": "band centre wavelength"}))
    return _finish(cube, clip_negative)


def describe(path_or_cube: str | os.PathLike | xr.DataArray, *, max_bytes: float | None = None) -> dict[str, Any]:
    """A JSON-friendly summary: format, source, dims, shape, bands, wavelength range, value stats, attrs.

    A path is read with :func:`open_cube` (``max_bytes``: its read budget)."""
    if isinstance(path_or_cube, xr.DataArray):
        cube, extra = path_or_cube, {}
    else:
        cube = open_cube(path_or_cube, max_bytes=max_bytes)
        extra = {}
        if cube.attrs.get("format", "").startswith("mat"):
            inventory = mat_inventory(cube.attrs["source"], max_bytes)
            extra["variables"] = {v.name: list(v.shape) for v in inventory}
    values = np.asarray(cube.values)
    finite = values[np.isfinite(values)]
    wl = wavelengths(cube)
    keys = (
        "sensor",
        "scene",
        "variable",
        "layout",
        "layout_rule",
        "scale",
        "scale_note",
        "value_note",
        "wavelength_note",
        "stored_dtype",
        "interleave",
        "crop",
    )
    info: dict[str, Any] = {
        "format": cube.attrs.get("format"),
        "source": cube.attrs.get("source"),
        "name": None if cube.name is None else str(cube.name),
        "dims": list(map(str, cube.dims)),
        "shape": [int(s) for s in cube.shape],
        "n_bands": int(cube.sizes.get("band", cube.shape[0])),
        "wavelength_range": None if wl is None else [float(wl.min()), float(wl.max())],
        "dtype": str(cube.dtype),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "mean": float(finite.mean(dtype=np.float64)) if finite.size else None,
        "n_nonfinite": int(values.size - finite.size),
        "attrs": {k: cube.attrs[k] for k in keys if k in cube.attrs},
    }
    info.update(extra)
    return info


def _mat_is_scene(path: Path) -> bool:
    """Cheap (shapes only): does this .mat hold an image cube with spatial sides >= 20?"""
    try:
        inventory = mat_inventory(path)
    except ReadError:
        return False
    wl_lengths = [v.size for v in wavelength_variables(inventory)]
    for v in inventory:
        if not v.numeric:
            continue
        if len(v.shape) == 3:
            layout, _ = band_axis(v.shape, wl_lengths)
            spatial = [s for ax, s in enumerate(v.shape) if ax != {"byx": 0, "ybx": 1, "yxb": 2}[layout]]
            if min(spatial) >= _MIN_SIDE:
                return True
        elif len(v.shape) == 2 and v.shape[1] > v.shape[0]:
            side = int(np.sqrt(v.shape[1]))
            if side >= _MIN_SIDE and side * side == v.shape[1]:
                return True
    return False


def _is_scene_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in NETCDF_SUFFIXES:
        return True
    if suffix == ".mat":
        return _mat_is_scene(path)
    if suffix == ".hdr":
        try:
            find_envi_pair(path)
        except ReadError:
            return False
        return True
    return False


def list_scenes(data_dir: str | os.PathLike, *, max_entries: int = 20_000, max_seconds: float = 2.0) -> ScanResult:
    """Loadable scenes under ``data_dir`` (recursive, sorted): CAVE folders, image .mat files, ENVI
    headers, NetCDF files and Zarr stores. Spectral-response tables are skipped.

    The scan is bounded: it stops after visiting ``max_entries`` directory entries or after
    ``max_seconds``, and returns what it found so far as a :class:`ScanResult` (a list) whose
    ``truncated`` is True and ``reason`` says which limit was hit. It never leaves ``data_dir``:
    symlinked folders are not descended, and symlinks resolving outside ``data_dir`` are skipped.
    Hidden folders (``.name``) are skipped.
    """
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise ReadError(root, "not a directory")
    deadline = time.monotonic() + max_seconds
    found: list[Path] = []
    visited = 0
    todo = [root]
    while todo:
        here = todo.pop()
        names, subdirs = [], []
        try:
            with os.scandir(here) as entries:
                for entry in entries:
                    visited += 1
                    if visited > max_entries or time.monotonic() > deadline:
                        limit = f"{max_entries} entries" if visited > max_entries else f"{max_seconds:g} s"
                        reason = f"scan of {root} stopped after {limit}; the list may be incomplete"
                        return ScanResult(sorted(found), truncated=True, reason=reason)
                    p = Path(entry.path)
                    if entry.is_symlink() and not resolves_inside(p, root):
                        continue
                    if entry.is_dir():
                        if entry.name.startswith("."):
                            continue
                        if is_zarr_store(p):
                            found.append(p)
                        elif not entry.is_symlink():
                            subdirs.append(p)
                    elif entry.is_file():
                        names.append(entry.name)
                        if _is_scene_file(p):
                            found.append(p)
        except OSError:
            continue  # an unreadable folder has nothing to list
        if holds_all_bands(names):
            found.append(here)
        todo.extend(sorted(subdirs, reverse=True))
    return ScanResult(sorted(found))
