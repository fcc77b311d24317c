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
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from ..cube import DIMS, make_cube
from ..errors import ReadError
from .matlab import check_dims, error_reason, to_nanometres

_JSON_MARK = "fusion_explorer_json_attrs"
_ROLES = {
    "band": re.compile(r"^(bands?|wavelengths?|lambdas?|wl|channels?|spectral)$", re.I),
    "y": re.compile(r"^(y|rows?|lines?|lat|latitude|height)$", re.I),
    "x": re.compile(r"^(x|cols?|columns?|samples?|lon|longitude|width)$", re.I),
}


def _safe_attrs(attrs: Mapping[str, Any], *, for_zarr: bool = False) -> dict[str, Any]:
    """Attrs that NetCDF (and Zarr's JSON) can store; see the module doc."""
    out: dict[str, Any] = {}
    json_keys = []
    for key, value in attrs.items():
        if value is None or key == _JSON_MARK:
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
        out[_JSON_MARK] = ",".join(json_keys)
    return out


def _restore_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items() if k != _JSON_MARK}
    for key in str(attrs.get(_JSON_MARK, "")).split(","):
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
        attrs=_safe_attrs(cube.attrs, for_zarr=for_zarr),
        name=name,
    )
    if "wavelength" in arr.coords:
        arr = arr.assign_coords(wavelength=("band", np.asarray(arr["wavelength"].values, dtype=np.float64)))
        arr["wavelength"].attrs.update(units="nm", long_name="band centre wavelength")
    ds = arr.to_dataset()
    ds.attrs["Conventions"] = "CF-1.8"
    return ds, name


def write_netcdf(cube: xr.DataArray, path: str | Path) -> Path:
    """Write a cube ``(band, y, x)`` to NetCDF-4 (engine h5netcdf) as float32; return the path."""
    ds, name = _to_dataset(cube, for_zarr=False)
    path = Path(path)
    ds.to_netcdf(path, engine="h5netcdf", encoding={name: {"dtype": "float32", "_FillValue": None}})
    return path


def write_zarr(cube: xr.DataArray, path: str | Path) -> Path:
    """Write a cube ``(band, y, x)`` to a Zarr store (a directory, replaced if present); return the path."""
    ds, name = _to_dataset(cube, for_zarr=True)
    path = Path(path)
    ds.to_zarr(path, mode="w", encoding={name: {"dtype": "float32", "fill_value": None}}, consolidated=False)
    return path


def _pick_variable(ds: xr.Dataset, path: Path, variable: str | None) -> xr.DataArray:
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


def _standardise(da: xr.DataArray, path: Path, fmt: str, global_attrs: Mapping[str, Any]) -> xr.DataArray:
    """Rename dims to (band, y, x), transpose, and rebuild as a float32 cube with provenance."""
    roles: dict[str, str] = {}
    for dim in da.dims:
        role = next((r for r, rx in _ROLES.items() if rx.match(str(dim))), None)
        if role is None or role in roles.values():
            raise ReadError(
                path,
                f"dims {tuple(da.dims)} not understood; expected one each of band|wavelength|lambda, "
                "y|row|lines|lat and x|col|samples|lon",
            )
        roles[str(dim)] = role
    band_dim = next(d for d, r in roles.items() if r == "band")
    wl = None
    if "wavelength" in da.coords and da["wavelength"].dims == (band_dim,):
        wl = da["wavelength"]
    elif band_dim in da.coords and not re.match(r"^(bands?|channels?)$", band_dim, re.I):
        wl = da[band_dim]  # the band dim itself is named wavelength/lambda and carries the values
    wl_nm = None
    if wl is not None and np.issubdtype(wl.dtype, np.number):
        wl_nm = to_nanometres(wl.values, wl.attrs.get("units"))
    std = da.rename(roles).transpose(*DIMS)
    attrs = {**_restore_attrs(global_attrs), **_restore_attrs(da.attrs)}
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


def read_netcdf(path: str | Path, *, variable: str | None = None) -> xr.DataArray:
    """Read a cube ``(band, y, x)`` float32 from a NetCDF file (one DataArray, or ``variable`` of a Dataset)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ReadError(path, "no such file")
    try:
        engine = "h5netcdf" if h5py.is_hdf5(str(path)) else "scipy"
        with xr.open_dataset(path, engine=engine) as ds:
            ds.load()
    except Exception as exc:  # xarray/h5netcdf/scipy raise many types on bad files
        raise ReadError(path, f"not a readable NetCDF file ({error_reason(exc)})") from exc
    return _standardise(_pick_variable(ds, path, variable), path, "netcdf", ds.attrs)


def read_zarr(path: str | Path, *, variable: str | None = None) -> xr.DataArray:
    """Read a cube ``(band, y, x)`` float32 from a Zarr store (a directory)."""
    path = Path(path).resolve()
    if not path.is_dir():
        raise ReadError(path, "no such Zarr store (directory)")
    try:
        with warnings.catch_warnings():  # "no consolidated metadata" falls back to reading each array
            warnings.simplefilter("ignore", RuntimeWarning)
            with xr.open_dataset(path, engine="zarr", consolidated=None) as ds:
                ds.load()
    except Exception as exc:
        raise ReadError(path, f"not a readable Zarr store ({error_reason(exc)})") from exc
    return _standardise(_pick_variable(ds, path, variable), path, "zarr", ds.attrs)
