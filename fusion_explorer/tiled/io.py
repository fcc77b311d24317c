"""Lazy cubes in, a chunked Zarr cube out: the file side of tiled fusion.

:func:`open_lazy` opens a Zarr store, a NetCDF file or an ENVI image as a ``(band, y, x)``
DataArray backed by a dask array: nothing but metadata is read until a chunk is computed.
:func:`validate_lazy` checks such a cube chunk by chunk (finite, not strongly negative) without
ever holding it whole. :class:`ZarrCubeWriter` creates a Zarr store with the layout
:func:`fusion_explorer.io.write_zarr` writes (float32 variable, ``wavelength`` coordinate in nm,
attrs made JSON-safe and marked so that :func:`fusion_explorer.io.open_cube` restores them) and
lets tile tasks (threads or processes on other machines sharing the disk) write their own
regions; it is renamed into place only when every tile is written.
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from ..cube import DIMS
from ..errors import CubeError, ReadError, WriteError
from ..io import is_zarr_store
from ..io.atomic import check_target
from ..io.netcdf import DIM_ROLES, band_wavelengths, dim_roles, pick_variable, restore_attrs, safe_attrs

#: default spatial chunk (pixels) of lazily opened files without chunks of their own
DEFAULT_CHUNK = 512


def _standardise_lazy(arr: xr.DataArray, path: Path, fmt: str, global_attrs: Mapping[str, Any]) -> xr.DataArray:
    """As the eager readers' standardising (same dim roles, wavelengths and attrs), keeping the dask array."""
    roles = dim_roles(arr, path)
    wl = band_wavelengths(arr, next(d for d, r in roles.items() if r == "band"))
    data = arr.data if isinstance(arr.data, da.Array) else da.from_array(arr.data)
    order = [next(d for d, r in roles.items() if r == want) for want in DIMS]
    data = data.transpose([list(arr.dims).index(d) for d in order]).astype(np.float32)
    attrs = {**restore_attrs(global_attrs), **restore_attrs(arr.attrs)}
    attrs.pop("Conventions", None)
    attrs.update(source=str(path), format=fmt)
    coords = {}
    if wl is not None:
        coords["wavelength"] = ("band", wl, {"units": "nm", "long_name": "band centre wavelength"})
    return xr.DataArray(data, dims=DIMS, coords=coords, attrs=attrs, name=arr.name)


def open_lazy(path: str | os.PathLike, *, variable: str | None = None, chunk: int = DEFAULT_CHUNK) -> xr.DataArray:
    """A cube ``(band, y, x)`` float32 backed by dask, from a Zarr store, a NetCDF file or an ENVI image.

    Only metadata are read here. Zarr keeps its own chunks; NetCDF and ENVI (a memory map of the
    data file) get ``(bands, chunk, chunk)`` chunks. Every failure is one :class:`ReadError`.
    """
    path = Path(path).resolve()
    if not path.exists():
        raise ReadError(path, "no such file or Zarr store")
    try:
        if is_zarr_store(path):
            from ..io.guard import check_tree

            check_tree(path, where="the Zarr store")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ds = xr.open_dataset(path, engine="zarr", consolidated=None, chunks={})
            return _standardise_lazy(pick_variable(ds, path, variable), path, "zarr", ds.attrs)
        if path.suffix.lower() in (".nc", ".nc4", ".netcdf", ".cdf", ".h5"):
            import h5py

            from ..io.guard import check_hdf5

            if h5py.is_hdf5(str(path)):
                check_hdf5(path, max_bytes=float("inf"))  # no external storage or links; size is no issue here
            ds = xr.open_dataset(path, engine="h5netcdf" if h5py.is_hdf5(str(path)) else "scipy", chunks={})
            cube = pick_variable(ds, path, variable)
            cube = cube.chunk({d: chunk for d in cube.dims if not DIM_ROLES["band"].match(str(d))})
            return _standardise_lazy(cube, path, "netcdf", ds.attrs)
        return _open_envi_lazy(path, chunk)
    except (ReadError, CubeError):
        raise
    except Exception as exc:
        raise ReadError(path, f"cannot open lazily ({type(exc).__name__}: {exc})") from exc


def _open_envi_lazy(path: Path, chunk: int) -> xr.DataArray:
    import spectral.io.envi as envi

    from ..io.envi import find_envi_pair
    from ..io.guard import check_inside

    hdr, data_file = find_envi_pair(path)
    check_inside(data_file, hdr.parent, what="data file", where="the header's folder", error_path=hdr)
    img = envi.open(str(hdr), image=str(data_file))
    mm = img.open_memmap(interleave="bip", writable=False)  # (rows, cols, bands) view of the file
    arr = da.from_array(mm, chunks=(chunk, chunk, -1)).transpose(2, 0, 1).astype(np.float32)
    scale = img.metadata.get("reflectance scale factor")
    attrs: dict[str, Any] = {"source": str(hdr), "format": "envi"}
    if scale is not None and float(scale) not in (0.0, 1.0):
        arr = arr / np.float32(float(scale))
        attrs["scale"] = float(scale)
    coords = {}
    if "wavelength" in img.metadata:
        wl = np.asarray([float(v) for v in img.metadata["wavelength"]])
        units = str(img.metadata.get("wavelength units", "nm")).lower()
        if units.startswith(("micro", "um", "µm")) or (units not in ("nm", "nanometers") and wl.max() < 30):
            wl = wl * 1000.0
        coords["wavelength"] = ("band", wl, {"units": "nm"})
    return xr.DataArray(arr, dims=DIMS, coords=coords, attrs=attrs)


def as_lazy(cube: xr.DataArray, chunk: int = DEFAULT_CHUNK) -> xr.DataArray:
    """``cube`` backed by dask (chunked ``(bands, chunk, chunk)`` if it was in memory)."""
    if tuple(cube.dims) != DIMS:
        raise CubeError(f"a cube must have dims {DIMS}; got {tuple(cube.dims)}")
    if isinstance(cube.data, da.Array):
        return cube
    return cube.copy(data=da.from_array(np.asarray(cube.values), chunks=(-1, chunk, chunk)))


def validate_lazy(cube: xr.DataArray, *, what: str = "cube", tolerance: float = 0.2, compute=None) -> dict:
    """Check a lazy cube chunk by chunk: finite everywhere, and no negative values beyond noise.

    One dask pass computes per band the count of non-finite and negative values, the minimum and
    the maximum; chunks are reduced as they come, never gathered. Negative values are refused when
    the most negative is below ``-tolerance`` times the maximum (the whole-scene rule compares
    percentiles, which a streaming pass cannot). Returns ``{"min", "max", "negative", "mean"}``
    for the caller (negatives are clipped to 0 by the tile tasks). ``compute``: the scheduler's
    compute function (default ``dask.compute``).
    """
    import dask

    if isinstance(cube.data, da.Array):
        data = cube.data
        finite = da.isfinite(data)
        stats = (
            (~finite).sum(),
            (data < 0).sum(),
            da.where(finite, data, np.inf).min(),
            da.where(finite, data, -np.inf).max(),
            da.where(finite, data, 0).astype(np.float64).mean(axis=(1, 2)),
        )
        bad, negative, vmin, vmax, band_means = (compute or dask.compute)(*stats)
    else:  # already in memory: the same statistics without hashing it into a dask graph
        data = np.asarray(cube.values)
        finite = np.isfinite(data)
        bad = int(data.size - np.count_nonzero(finite))
        clean = data if not bad else np.where(finite, data, 0)
        negative = int(np.count_nonzero(clean < 0))
        vmin = float(clean.min()) if not bad else float(np.where(finite, data, np.inf).min())
        vmax = float(clean.max()) if not bad else float(np.where(finite, data, -np.inf).max())
        band_means = clean.reshape(clean.shape[0], -1).mean(axis=1, dtype=np.float64)
    if bad:
        raise CubeError(f"{what} has {int(bad)} non-finite values (NaN or Inf)")
    if negative and float(vmin) < -tolerance * max(float(vmax), 0.0):
        raise CubeError(f"{what} has {int(negative)} negative values (min {float(vmin):.4g}) beyond noise around 0 "
                        f"(max {float(vmax):.4g}); offset or rescale the data first")
    return {"min": float(vmin), "max": float(vmax), "negative": int(negative), "band_means": np.asarray(band_means)}


#: bytes of one chunk of a fused cube at most: a tile's bands are stored in groups of
#: :attr:`ZarrCubeWriter.band_chunk` (a whole 512² x 128-band tile is 134 MB, and zarr's codec pipeline
#: holds several copies of a chunk while it writes it: 2 workers writing whole tiles took 1 GB)
CHUNK_BYTES = 32 << 20


class ZarrCubeWriter:
    """A Zarr store for a ``(bands, height, width)`` float32 cube, written region by region.

    ``chunks`` ``(tile, tile)`` spatial chunks, each split into :attr:`band_chunk` bands (at most
    :data:`CHUNK_BYTES`): each tile task writes whole chunks only, so tasks never touch the same file.
    Written into a temporary store beside ``path``; :meth:`commit`
    renames it into place (an existing store is replaced only with ``overwrite``), :meth:`abort`
    removes it. Picklable: process workers open the store by path.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], chunks: tuple[int, int], *,
                 wavelength: np.ndarray | None = None, attrs: Mapping[str, Any] | None = None,
                 name: str = "fused", overwrite: bool = False):
        self.path = Path(path)
        check_target(self.path, overwrite=overwrite)
        if self.path.exists() and not is_zarr_store(self.path):
            raise WriteError(self.path, "is not a Zarr store; not replaced")
        self.overwrite = overwrite
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        bands, h, w = self.shape
        self.band_chunk = band_chunk(bands, chunks)
        template = xr.DataArray(
            da.zeros(self.shape, chunks=(self.band_chunk, *chunks), dtype=np.float32), dims=DIMS, name=name,
            attrs=safe_attrs(dict(attrs or {}), for_zarr=True),
        )
        if wavelength is not None:
            template = template.assign_coords(
                wavelength=("band", np.asarray(wavelength, dtype=np.float64), {"units": "nm",
                                                                                "long_name": "band centre wavelength"}))
        ds = template.to_dataset()
        ds.attrs["Conventions"] = "CF-1.8"
        try:
            ds.to_zarr(self.tmp, mode="w-", compute=False, consolidated=False,
                       encoding={name: {"dtype": "float32", "fill_value": None}})
        except OSError as exc:
            self.abort()
            raise WriteError(self.path, f"cannot create the Zarr store ({exc.strerror or exc})") from exc

    def write(self, y0: int, x0: int, tile: np.ndarray, band: int = 0) -> None:
        """Write ``tile`` ``(bands, th, tw)`` at HR position ``(y0, x0)``, its first band at ``band`` (a
        multiple of :attr:`band_chunk`)."""
        arr = zarr.open_array(str(self.tmp / self.name), mode="r+")
        arr[band : band + tile.shape[0], y0 : y0 + tile.shape[1], x0 : x0 + tile.shape[2]] = np.asarray(
            tile, dtype=np.float32)

    def commit(self) -> Path:
        check_target(self.path, overwrite=self.overwrite)
        if self.path.exists():
            aside = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.old")
            os.replace(self.path, aside)
            os.replace(self.tmp, self.path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def band_chunk(bands: int, tile: tuple[int, int]) -> int:
    """Bands per chunk of a ``bands``-deep cube chunked ``tile`` in space: at most :data:`CHUNK_BYTES`."""
    return max(1, min(int(bands), CHUNK_BYTES // (4 * int(tile[0]) * int(tile[1]))))


class ScratchStore:
    """A Zarr array ``(rows, H, W)`` on disk (float32 unless ``dtype``), chunked by tile and by groups of
    :attr:`band_chunk` rows (as :class:`ZarrCubeWriter`, or ``rows_per_chunk``): tile tasks write and
    read it. On the LR grid (``tile`` the LR tile side) each tile's LR box is whole chunks too."""

    def __init__(self, folder: Path, name: str, shape: tuple[int, ...], tile: int, *, dtype: str = "float32",
                 rows_per_chunk: int | None = None):
        self.path = str(folder / name)
        self.shape = tuple(int(s) for s in shape)
        self.band_chunk = int(rows_per_chunk) if rows_per_chunk else band_chunk(shape[0], (tile, tile))
        zarr.open_array(self.path, mode="w", shape=shape, chunks=(self.band_chunk, tile, tile), dtype=dtype,
                        fill_value=0.0)

    def write(self, t, values: np.ndarray, band: int = 0) -> None:
        """The tile's pixels of rows ``band, band + 1, ...`` (``band`` a multiple of :attr:`band_chunk`)."""
        self.write_box(slice(t.y0, t.y1), slice(t.x0, t.x1), values, band)

    def write_box(self, y: slice, x: slice, values: np.ndarray, band: int = 0) -> None:
        """``values`` ``(rows, y, x)`` into the box ``y, x`` from row ``band`` on (a box of whole chunks,
        or one that only this task writes)."""
        zarr.open_array(self.path, mode="r+")[band : band + values.shape[0], y, x] = values

    def read(self, y: slice, x: slice, rows: slice = slice(None)) -> np.ndarray:
        return zarr.open_array(self.path, mode="r")[rows, y, x]

    def remove(self) -> None:
        """Delete the store from disk once no pass reads it again (frees its space before the run ends)."""
        shutil.rmtree(self.path, ignore_errors=True)
