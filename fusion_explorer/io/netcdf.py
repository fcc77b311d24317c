"""NetCDF (engine h5netcdf; NetCDF-3 files through scipy) and Zarr cubes through xarray.

Reading accepts any dim names among ``band|wavelength|lambda``, ``y|row|lines|lat`` and
``x|col|samples|lon`` (any case, any order) and returns ``(band, y, x)``. Writing stores the
cube as float32 with a ``wavelength`` coordinate (units nm) and NetCDF-safe attrs: ``None``
dropped, bools as ints, dicts/lists/tuples as JSON strings (listed in the attribute
``fusion_explorer_json_attrs`` so that reading decodes them again).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from inspect import signature
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr
import zarr

from ..cube import DIMS, make_cube
from ..errors import ReadError, WriteError
from .atomic import atomic_target, check_target, write_bytes
from .guard import check_hdf5, check_size, check_tree, cube_nbytes, shape_text
from .matlab import check_dims, error_reason, to_nanometres

#: attrs holding JSON strings are listed under this key, so that reading decodes them again
JSON_MARK = "fusion_explorer_json_attrs"
#: the dim names read as band, y and x (any case); shared with the lazy readers of :mod:`fusion_explorer.tiled`
DIM_ROLES = {
    "band": re.compile(r"^(bands?|wavelengths?|lambdas?|wl|channels?|spectral)$", re.I),
    "y": re.compile(r"^(y|rows?|lines?|lat|latitude|height)$", re.I),
    "x": re.compile(r"^(x|cols?|columns?|samples?|lon|longitude|width)$", re.I),
}


def safe_attrs(attrs: Mapping[str, Any], *, for_zarr: bool = False) -> dict[str, Any]:
    """Attrs that NetCDF (and Zarr's JSON) can store; see the module doc."""
    out: dict[str, Any] = {}
    json_keys = []
    for key, value in attrs.items():
        if value is None or key == JSON_MARK:
            continue
        if isinstance(value, (bool, np.bool_)):
            out[key] = int(value)
        elif isinstance(value, (dict, list, tuple)):
            out[key] = json.dumps(value, default=str)
            json_keys.append(key)
        elif isinstance(value, np.ndarray):
            out[key] = value.tolist() if for_zarr else value
        elif isinstance(value, np.generic):
            out[key] = value.item()
        elif isinstance(value, (str, int, float)):
            out[key] = value
        else:
            out[key] = str(value)
    if json_keys:
        out[JSON_MARK] = ",".join(json_keys)
    return out


def restore_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The attrs :func:`safe_attrs` stored, JSON strings decoded and numpy scalars as Python ones."""
    out = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items() if k != JSON_MARK}
    for key in str(attrs.get(JSON_MARK, "")).split(","):
        if key in out:
            try:
                out[key] = json.loads(out[key])
            except (TypeError, ValueError):
                pass
    return out


def _to_dataset(cube: xr.DataArray, for_zarr: bool) -> tuple[xr.Dataset, str]:
    check_dims(cube)
    name = str(cube.name) if cube.name is not None else "cube"
    arr = xr.DataArray(
        np.asarray(cube.values, dtype=np.float32),
        dims=DIMS,
        coords={k: c for k, c in cube.coords.items() if set(c.dims) <= set(DIMS)},
        attrs=safe_attrs(cube.attrs, for_zarr=for_zarr),
        name=name,
    )
    if "wavelength" in arr.coords:
        arr = arr.assign_coords(wavelength=("band", np.asarray(arr["wavelength"].values, dtype=np.float64)))
        arr["wavelength"].attrs.update(units="nm", long_name="band centre wavelength")
    ds = arr.to_dataset()
    ds.attrs["Conventions"] = "CF-1.8"
    return ds, name


def write_netcdf(cube: xr.DataArray, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a cube ``(band, y, x)`` to NetCDF-4 (engine h5netcdf) as float32; return the path.

    The file is made in memory, then written beside ``path`` and renamed onto it
    (:func:`~.atomic.atomic_target`): a failed write leaves no partial file and any previous one
    intact. An existing ``path`` raises :class:`~fusion_explorer.errors.WriteError` unless ``overwrite``.
    """
    check_target(path, overwrite=overwrite)
    ds, name = _to_dataset(cube, for_zarr=False)
    data = ds.to_netcdf(engine="h5netcdf", encoding={name: {"dtype": "float32", "_FillValue": None}})
    return write_bytes(path, data, overwrite=overwrite)


def write_zarr(cube: xr.DataArray, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a cube ``(band, y, x)`` to a Zarr store (a directory); return the path.

    Written beside ``path`` and renamed onto it; an existing ``path`` is replaced only with ``overwrite``.
    """
    ds, name = _to_dataset(cube, for_zarr=True)
    zarr_marks = ("zarr.json", ".zgroup", ".zarray")
    if overwrite and Path(path).is_dir() and not any((Path(path) / n).exists() for n in zarr_marks):
        raise WriteError(path, "is a folder but not a Zarr store; not replaced")
    with atomic_target(path, overwrite=overwrite) as tmp:
        ds.to_zarr(tmp, mode="w-", encoding={name: {"dtype": "float32", "fill_value": None}}, consolidated=False)
    return Path(path)


def pick_variable(ds: xr.Dataset, path: Path, variable: str | None) -> xr.DataArray:
    """The cube of dataset ``ds``: ``variable``, else its one 3-D data variable; else one :class:`ReadError`."""
    if variable is not None:
        if variable not in ds.data_vars:
            raise ReadError(path, f"no variable {variable!r}; data variables are {list(ds.data_vars)}")
        return ds[variable]
    cubes = [n for n, v in ds.data_vars.items() if v.ndim == 3]
    if len(cubes) != 1:
        found = {str(n): tuple(v.dims) for n, v in ds.data_vars.items()}
        what = "no 3-D data variable" if not cubes else f"{len(cubes)} 3-D data variables"
        raise ReadError(path, f"{what} (variables {found}); pass variable=")
    return ds[cubes[0]]


def dim_roles(da: xr.DataArray, path: Path) -> dict[str, str]:
    """``{dim name: "band" | "y" | "x"}`` for a 3-D array with one dim of each role (:data:`DIM_ROLES`),
    else one :class:`ReadError`."""
    roles: dict[str, str] = {}
    for dim in da.dims:
        role = next((r for r, rx in DIM_ROLES.items() if rx.match(str(dim))), None)
        if role is None or role in roles.values():
            raise ReadError(
                path,
                f"dims {tuple(da.dims)} not understood; expected one each of band|wavelength|lambda, "
                "y|row|lines|lat and x|col|samples|lon",
            )
        roles[str(dim)] = role
    return roles


def band_wavelengths(da: xr.DataArray, band_dim: str) -> np.ndarray | None:
    """The band centres in nm: the ``wavelength`` coordinate along ``band_dim``, or the band dim's own
    values when it is named like a wavelength; converted by their ``units`` (else µm when all < 30)."""
    wl = None
    if "wavelength" in da.coords and da["wavelength"].dims == (band_dim,):
        wl = da["wavelength"]
    elif band_dim in da.coords and not re.match(r"^(bands?|channels?)$", band_dim, re.I):
        wl = da[band_dim]  # the band dim itself is named wavelength/lambda and carries the values
    if wl is None or not np.issubdtype(wl.dtype, np.number):
        return None
    return to_nanometres(wl.values, wl.attrs.get("units"))


def _standardise(da: xr.DataArray, path: Path, fmt: str, global_attrs: Mapping[str, Any]) -> xr.DataArray:
    """Rename dims to (band, y, x), transpose, and rebuild as a float32 cube with provenance."""
    roles = dim_roles(da, path)
    wl_nm = band_wavelengths(da, next(d for d, r in roles.items() if r == "band"))
    std = da.rename(roles).transpose(*DIMS)
    attrs = {**restore_attrs(global_attrs), **restore_attrs(da.attrs)}
    attrs.pop("Conventions", None)
    for key in ("source", "format"):
        if key in attrs and str(attrs[key]) != (str(path) if key == "source" else fmt):
            attrs[f"original_{key}"] = attrs[key]
    attrs.update(source=str(path), format=fmt)
    name = None if da.name == "__xarray_dataarray_variable__" else da.name
    cube = make_cube(std.values, wl_nm, attrs=attrs, name=name)
    for dim in ("y", "x"):
        if dim in std.coords and std[dim].dims == (dim,):
            cube = cube.assign_coords({dim: std[dim].values})
    return cube


# Open lazily: no coordinate is loaded to build an index before the size check (where xarray has the option;
# without it, index coordinates load at open, each one within the budget by check_hdf5).
_LAZY = {"create_default_indexes": False} if "create_default_indexes" in signature(xr.open_dataset).parameters else {}


def _load_checked(ds: xr.Dataset, path: Path, variable: str | None, fmt: str, max_bytes: float | None) -> xr.DataArray:
    """Pick the variable of a lazily opened dataset, check its declared size with its coordinates (as
    decoded), then load it alone."""
    da = pick_variable(ds, path, variable)
    nbytes = sum(cube_nbytes(v.shape, v.dtype.itemsize) for v in (da.variable, *da.coords.values()))
    check_size(nbytes, path, max_bytes, f"variable '{da.name}', {shape_text(da.shape)} {da.dtype}, with coordinates")
    return _standardise(da.load(), path, fmt, ds.attrs)


def read_netcdf(path: str | Path, *, variable: str | None = None, max_bytes: float | None = None) -> xr.DataArray:
    """Read a cube ``(band, y, x)`` float32 from a NetCDF file (one DataArray, or ``variable`` of a Dataset).

    CF packing is decoded (``scale_factor``, ``add_offset``; ``_FillValue`` becomes NaN). Refused
    before any data are read (see :mod:`fusion_explorer.io.guard`): NetCDF-4 files that reach other
    files (HDF5 external storage, virtual datasets, external links) and arrays whose declared size
    exceeds ``max_bytes`` (default: ``$FUSION_EXPLORER_MAX_READ_BYTES``, else min(1 GiB, RAM / 8)).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ReadError(path, "no such file")
    is_hdf5 = h5py.is_hdf5(str(path))
    if is_hdf5:
        check_hdf5(path, max_bytes)
    try:
        with xr.open_dataset(path, engine="h5netcdf" if is_hdf5 else "scipy", **_LAZY) as ds:
            return _load_checked(ds, path, variable, "netcdf", max_bytes)
    except ReadError:
        raise
    except Exception as exc:  # xarray/h5netcdf/scipy raise many types on bad files
        raise ReadError(path, f"not a readable NetCDF file ({error_reason(exc)})") from exc


def read_zarr(path: str | Path, *, variable: str | None = None, max_bytes: float | None = None) -> xr.DataArray:
    """Read a cube ``(band, y, x)`` float32 from a Zarr store (a directory).

    Refused before any data are read: a symlink in the store that resolves outside it, and an array
    whose declared size (Zarr metadata) exceeds ``max_bytes`` (see :func:`read_netcdf`).
    """
    path = Path(path).resolve()
    if not path.is_dir():
        raise ReadError(path, "no such Zarr store (directory)")
    try:
        check_tree(path, where="the Zarr store")
        for name, arr in zarr.open_group(str(path), mode="r").arrays():
            what = f"array '{name}', {shape_text(arr.shape)} {arr.dtype}"
            check_size(cube_nbytes(arr.shape, arr.dtype.itemsize), path, max_bytes, what)
        with warnings.catch_warnings():  # "no consolidated metadata" falls back to reading each array
            warnings.simplefilter("ignore", RuntimeWarning)
            with xr.open_dataset(path, engine="zarr", consolidated=None, **_LAZY) as ds:
                return _load_checked(ds, path, variable, "zarr", max_bytes)
    except ReadError:
        raise
    except Exception as exc:
        raise ReadError(path, f"not a readable Zarr store ({error_reason(exc)})") from exc
