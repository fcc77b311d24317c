"""Spectral response functions (SRFs): how each multispectral band integrates the HSI bands.

An SRF is a non-negative matrix ``R`` of shape ``(msi_bands, hsi_bands)`` whose rows sum to 1,
defined on the HSI band centres ``wavelength`` (nm). The MSI of a hyperspectral cube ``X``
``(hsi_bands, y, x)`` is, per pixel::

    msi[m, y, x] = sum_b R[m, b] * X[b, y, x]        (MSI = R @ X)

Measured responses come as tables on their own wavelength grid; :meth:`SRF.from_table`
resamples them to the cube's band centres by linear interpolation (zero outside the table),
drops bands that mostly fall outside the cube's wavelength range, and normalises each row.

Sources:

* built-ins, by name, through :func:`get_srf` (see :func:`available_srfs`): the Nikon D700 of
  the MossFuse CAVE protocol (shipped as ``data/nikon_d700.csv``), the cameras and CIE colour
  matching functions of ``colour-science``, and the satellite sensors of ``pyrsr``;
* Gaussian bands, :func:`gaussian_srf`;
* files, :func:`read_srf_file`: the MATLAB tables published with fusion papers, CSV/text tables
  (first column nm) and NetCDF files written from :meth:`SRF.to_dataarray`;
* :func:`srf_from_name_or_path` picks one of the above from a string (the CLI's ``--srf``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import xarray as xr

from .cube import resolve_device
from .errors import ReadError, SRFError

__all__ = [
    "CAVE_WAVELENGTHS",
    "ROSIS_WAVELENGTHS",
    "SRF",
    "available_srfs",
    "gaussian_srf",
    "get_srf",
    "read_srf_file",
    "srf_from_name_or_path",
]

#: Tolerance (nm) when comparing an SRF's wavelengths with a cube's.
WAVELENGTH_TOLERANCE_NM = 0.5
#: Band centres of CAVE (and of SRF tables made for it): 400–700 nm in 10 nm steps, shape (31,).
CAVE_WAVELENGTHS = np.arange(400.0, 701.0, 10.0)
#: Band centres of the ROSIS-03 Pavia University crop: 430–858.4 nm in 4.2 nm steps, shape (103,).
ROSIS_WAVELENGTHS = 430.0 + 4.2 * np.arange(103)

_DATA_DIR = Path(__file__).resolve().parent / "data"
_NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf", ".h5")
_TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
_FILE_SUFFIXES = (".mat", ".xls", ".xlsx") + _TEXT_SUFFIXES + _NETCDF_SUFFIXES


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _as_wavelength(wavelength: Any, what: str = "wavelength") -> np.ndarray:
    """Band centres (nm) as a finite, positive float64 vector ``(bands,)``.

    Accepts an array-like, a ``wavelength`` coordinate, or a cube that carries one.
    """
    if isinstance(wavelength, xr.DataArray) and wavelength.ndim > 1:
        if "wavelength" not in wavelength.coords:
            raise SRFError(f"{what}: the cube has no 'wavelength' coordinate (nm) on its band dim")
        wavelength = wavelength.coords["wavelength"]
    if isinstance(wavelength, torch.Tensor):
        wavelength = wavelength.detach().cpu().numpy()
    try:
        wl = np.asarray(wavelength, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SRFError(f"{what} must be numbers (nm); got {type(wavelength).__name__}") from exc
    if wl.ndim > 1 and sum(s > 1 for s in wl.shape) <= 1:
        wl = wl.ravel()  # (n, 1) / (1, n) columns as stored in .mat files
    if wl.ndim != 1 or wl.size == 0:
        raise SRFError(f"{what} must be a non-empty vector of band centres (nm); got shape {wl.shape}")
    if not np.all(np.isfinite(wl)) or wl.min() <= 0:
        raise SRFError(f"{what} must be finite and positive (nm); got range {wl.min()}–{wl.max()}")
    return wl


def _fmt_range(wl: np.ndarray) -> str:
    """``'400–700 nm'``."""
    return f"{float(np.min(wl)):.6g}–{float(np.max(wl)):.6g} nm"


def _cube_range(wl: np.ndarray) -> tuple[float, float]:
    """The cube's wavelength range: its lowest and highest band centre (nm)."""
    return float(np.min(wl)), float(np.max(wl))


def _warn(message: str) -> None:
    """``warnings.warn`` attributed to the first caller outside this module."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _integral(x: np.ndarray, y: np.ndarray, lo: float | None = None, hi: float | None = None) -> float:
    """Trapezoidal integral of the piecewise-linear ``y(x)`` (zero outside ``x``) over ``[lo, hi]``."""
    if lo is None or hi is None:
        return float(np.trapezoid(y, x))
    inside = x[(x > lo) & (x < hi)]
    grid = np.concatenate(([lo], inside, [hi]))
    return float(np.trapezoid(np.interp(grid, x, y, left=0.0, right=0.0), grid))


def _normalise_rows(matrix: np.ndarray, band_names: Sequence[str], name: str) -> np.ndarray:
    sums = matrix.sum(axis=1, keepdims=True)
    empty = [band_names[i] for i in np.flatnonzero(sums.ravel() <= 0)]
    if empty:
        raise SRFError(f"SRF {name!r}: band(s) {', '.join(empty)} have no positive response; cannot normalise")
    return matrix / sums


def _default_band_names(n: int) -> tuple[str, ...]:
    return tuple(f"band{i + 1}" for i in range(n))


# --------------------------------------------------------------------------------------------
# the SRF object
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SRF:
    """A spectral response function sampled on HSI band centres.

    Attributes:
        matrix: ``(msi_bands, hsi_bands)`` float64, non-negative, each row sums to 1.
        wavelength: ``(hsi_bands,)`` HSI band centres in nm the matrix is defined on.
        band_names: one name per MSI band (``("R", "G", "B")``, ``("B2", "B3", "B4")``, ...).
        name: short identifier (``"nikon-d700"``), recorded in the MSI's ``attrs['srf']``.
        provenance: where the response comes from (instrument, source, file).
        table_wavelength: ``(n,)`` nm, the grid of the measured table, when known.
        table: ``(msi_bands, n)`` the measured responses on ``table_wavelength`` (any scale),
            when known; :meth:`resample` uses it instead of re-interpolating ``matrix``.

    Arrays are stored as read-only float64 copies.
    """

    matrix: np.ndarray
    wavelength: np.ndarray
    band_names: tuple[str, ...]
    name: str = "srf"
    provenance: str = ""
    table_wavelength: np.ndarray | None = None
    table: np.ndarray | None = None

    def __post_init__(self) -> None:
        matrix = np.array(self.matrix, dtype=np.float64)
        if matrix.ndim != 2 or 0 in matrix.shape:
            raise SRFError(f"SRF {self.name!r}: matrix must be 2-D (msi_bands, hsi_bands); got shape {matrix.shape}")
        wl = _as_wavelength(self.wavelength, f"SRF {self.name!r} wavelength").copy()
        if wl.size != matrix.shape[1]:
            raise SRFError(f"SRF {self.name!r}: {wl.size} wavelengths for a matrix of {matrix.shape[1]} HSI bands")
        names = tuple(str(b) for b in self.band_names)
        if len(names) != matrix.shape[0]:
            raise SRFError(f"SRF {self.name!r}: {len(names)} band names for {matrix.shape[0]} MSI bands")
        if not np.all(np.isfinite(matrix)) or matrix.min() < 0:
            raise SRFError(f"SRF {self.name!r}: matrix must be finite and non-negative")
        sums = matrix.sum(axis=1)
        if not np.allclose(sums, 1.0, rtol=0, atol=1e-6):
            raise SRFError(
                f"SRF {self.name!r}: each row must sum to 1; got sums {np.round(sums, 6).tolist()} "
                "(use SRF.from_matrix or SRF.from_table, which normalise)"
            )
        table_wl, table = self.table_wavelength, self.table
        if (table_wl is None) != (table is None):
            raise SRFError(f"SRF {self.name!r}: give both table_wavelength and table, or neither")
        if table is not None:
            table_wl = _as_wavelength(table_wl, f"SRF {self.name!r} table_wavelength").copy()
            table = np.array(table, dtype=np.float64)
            if table.shape != (matrix.shape[0], table_wl.size):
                raise SRFError(
                    f"SRF {self.name!r}: table must have shape (msi_bands, table wavelengths) = "
                    f"{(matrix.shape[0], table_wl.size)}; got {table.shape}"
                )
            table_wl.setflags(write=False)
            table.setflags(write=False)
        matrix.setflags(write=False)
        wl.setflags(write=False)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "wavelength", wl)
        object.__setattr__(self, "band_names", names)
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "provenance", str(self.provenance))
        object.__setattr__(self, "table_wavelength", table_wl)
        object.__setattr__(self, "table", table)

    def __repr__(self) -> str:
        return (
            f"SRF({self.name!r}: {self.msi_bands} bands {', '.join(self.band_names)} "
            f"on {self.hsi_bands} HSI bands {_fmt_range(self.wavelength)})"
        )

    # --- shape -------------------------------------------------------------------------------

    @property
    def msi_bands(self) -> int:
        """Number of MSI bands (rows)."""
        return int(self.matrix.shape[0])

    @property
    def hsi_bands(self) -> int:
        """Number of HSI bands (columns)."""
        return int(self.matrix.shape[1])

    @property
    def centre_wavelength(self) -> np.ndarray:
        """``(msi_bands,)`` response-weighted mean wavelength of each MSI band (nm)."""
        return self.matrix @ self.wavelength

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_matrix(
        cls,
        matrix: Any,
        wavelength: Any,
        *,
        band_names: Sequence[str] | None = None,
        name: str = "srf",
        provenance: str = "",
    ) -> SRF:
        """An SRF from a ready ``(msi_bands, hsi_bands)`` matrix on ``wavelength`` (nm).

        Negative values are clipped to 0 and each row is normalised to sum 1.
        :meth:`resample` of the result interpolates the matrix itself.
        """
        m = np.array(matrix, dtype=np.float64)
        if m.ndim == 1:
            m = m[None, :]
        if m.ndim != 2:
            raise SRFError(f"SRF {name!r}: matrix must be 2-D (msi_bands, hsi_bands); got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise SRFError(f"SRF {name!r}: matrix has NaN or Inf values")
        names = tuple(band_names) if band_names is not None else _default_band_names(m.shape[0])
        if len(names) != m.shape[0]:
            raise SRFError(f"SRF {name!r}: {len(names)} band names for {m.shape[0]} MSI bands")
        m = _normalise_rows(np.clip(m, 0.0, None), names, name)
        return cls(m, wavelength, names, name=name, provenance=provenance)

    @classmethod
    def from_table(
        cls,
        table_wavelength: Any,
        responses: Any,
        wavelength: Any,
        *,
        band_names: Sequence[str] | None = None,
        name: str = "srf",
        provenance: str = "",
        min_coverage: float = 0.5,
    ) -> SRF:
        """Resample measured responses to the HSI band centres.

        Args:
            table_wavelength: ``(n,)`` nm, the table's grid (any order, no repeats).
            responses: ``(msi_bands, n)`` responses on that grid (any scale).
            wavelength: ``(hsi_bands,)`` HSI band centres in nm (or a cube with that coordinate).
            band_names: one per MSI band; default ``band1``, ``band2``, ...
            name, provenance: recorded on the SRF.
            min_coverage: a band is kept only if at least this fraction of its response integral
                (over its own table) lies inside the cube's range (first/last centre +- half a
                band spacing). Dropped bands are named in one ``warnings.warn``.

        Each kept row is the table linearly interpolated at the band centres (zero outside the
        table), negative values clipped to 0, normalised to sum 1.

        Raises:
            SRFError: bad shapes, or no band left.
        """
        tw = _as_wavelength(table_wavelength, f"SRF {name!r} table wavelength")
        resp = np.array(responses, dtype=np.float64)
        if resp.ndim == 1:
            resp = resp[None, :]
        if resp.ndim != 2 or resp.shape[1] != tw.size:
            raise SRFError(
                f"SRF {name!r}: responses must have shape (msi_bands, {tw.size}) to match the table "
                f"wavelengths; got {resp.shape}"
            )
        if not np.all(np.isfinite(resp)):
            raise SRFError(f"SRF {name!r}: the response table has NaN or Inf values")
        names = tuple(str(b) for b in band_names) if band_names is not None else _default_band_names(resp.shape[0])
        if len(names) != resp.shape[0]:
            raise SRFError(f"SRF {name!r}: {len(names)} band names for {resp.shape[0]} bands in the table")
        if not 0.0 <= min_coverage <= 1.0:
            raise SRFError(f"min_coverage must be in [0, 1]; got {min_coverage}")
        order = np.argsort(tw, kind="stable")
        tw, resp = tw[order], np.clip(resp[:, order], 0.0, None)
        if np.any(np.diff(tw) == 0):
            raise SRFError(f"SRF {name!r}: the table wavelengths repeat a value; they must be distinct")
        wl = _as_wavelength(wavelength, "HSI wavelength")
        lo, hi = _cube_range(wl)

        kept: list[int] = []
        rows: list[np.ndarray] = []
        dropped: list[str] = []
        for i, band in enumerate(names):
            total = _integral(tw, resp[i])
            if total <= 0:
                dropped.append(f"{band} (no positive response)")
                continue
            coverage = _integral(tw, resp[i], lo, hi) / total
            if coverage < min_coverage:
                dropped.append(f"{band} ({coverage:.0%} inside)")
                continue
            row = np.interp(wl, tw, resp[i], left=0.0, right=0.0)
            if row.sum() <= 0:
                dropped.append(f"{band} (falls between the band centres)")
                continue
            kept.append(i)
            rows.append(row / row.sum())
        cube_range = f"{lo:.6g}–{hi:.6g} nm"
        if not kept:
            raise SRFError(
                f"none of the bands of {name} overlaps the cube's {cube_range} "
                f"({wl.size} bands, centres {_fmt_range(wl)}) by at least {min_coverage:.0%} of its "
                f"response: {'; '.join(dropped)}. Use an SRF made for this spectral range."
            )
        if dropped:
            _warn(
                f"SRF {name}: dropped {len(dropped)} band(s) that lie mostly outside the cube's "
                f"{cube_range} (kept {', '.join(names[i] for i in kept)}): {', '.join(dropped)}",
            )
        return cls(
            np.vstack(rows),
            wl,
            tuple(names[i] for i in kept),
            name=name,
            provenance=provenance,
            table_wavelength=tw,
            table=resp[kept],
        )

    def resample(self, wavelength: Any, *, min_coverage: float = 0.5) -> SRF:
        """The same SRF on other band centres ``wavelength`` ``(hsi_bands',)`` nm.

        Re-samples the measured table when the SRF has one, else interpolates ``matrix`` along
        its own wavelengths (zero outside). Bands are dropped as in :meth:`from_table`.
        """
        if self.table is not None and self.table_wavelength is not None:
            tw, table = self.table_wavelength, self.table
        else:
            tw, table = self.wavelength, self.matrix
        return type(self).from_table(
            tw,
            table,
            wavelength,
            band_names=self.band_names,
            name=self.name,
            provenance=self.provenance,
            min_coverage=min_coverage,
        )

    # --- checks and use ----------------------------------------------------------------------

    def check_cube(self, cube: xr.DataArray) -> None:
        """Raise :class:`SRFError` unless ``cube`` has this SRF's bands (count, and wavelengths
        to within 0.5 nm when the cube has a ``wavelength`` coordinate)."""
        if not isinstance(cube, xr.DataArray) or "band" not in cube.dims:
            raise SRFError(f"SRF {self.name!r} needs a cube with a 'band' dim; got {type(cube).__name__}")
        n = int(cube.sizes["band"])
        cube_wl = np.asarray(cube.coords["wavelength"].values, np.float64) if "wavelength" in cube.coords else None
        if n != self.hsi_bands:
            got = f" ({_fmt_range(cube_wl)})" if cube_wl is not None and cube_wl.size else ""
            raise SRFError(
                f"SRF {self.name!r} is defined on {self.hsi_bands} bands ({_fmt_range(self.wavelength)}) "
                f"but the HSI has {n} bands{got}; resample the SRF to the cube's wavelengths with "
                "srf.resample(cube.wavelength)"
            )
        if cube_wl is not None:
            diff = np.abs(cube_wl - self.wavelength)
            if diff.max() > WAVELENGTH_TOLERANCE_NM:
                k = int(np.argmax(diff > WAVELENGTH_TOLERANCE_NM))
                raise SRFError(
                    f"SRF {self.name!r} is defined on wavelengths that differ from the HSI's by up to "
                    f"{diff.max():.4g} nm (first at band {k}: {self.wavelength[k]:.6g} vs {cube_wl[k]:.6g} nm); "
                    "resample the SRF to the cube's wavelengths with srf.resample(cube.wavelength)"
                )

    def apply(self, hsi: xr.DataArray | np.ndarray | torch.Tensor) -> xr.DataArray | np.ndarray | torch.Tensor:
        """The MSI seen through this SRF: ``msi[m, y, x] = sum_b matrix[m, b] * hsi[b, y, x]``.

        * cube ``(band, y, x)`` -> cube ``(band, y, x)`` with ``msi_bands`` bands, coordinates
          ``band_name`` and ``centre_wavelength`` (nm) on ``band``, the cube's ``y``/``x``
          coordinates and attrs, plus ``attrs['srf']`` and ``attrs['srf_provenance']``. The cube's
          wavelengths are checked (:meth:`check_cube`).
        * array or tensor ``(..., band, y, x)`` -> same type ``(..., msi_bands, y, x)`` (only the band
          count is checked). Tensors stay on their device.
        """
        if isinstance(hsi, xr.DataArray):
            if tuple(hsi.dims) != ("band", "y", "x"):
                raise SRFError(f"SRF.apply needs a cube with dims ('band', 'y', 'x'); got {tuple(hsi.dims)}")
            self.check_cube(hsi)
            values = np.asarray(hsi.values)
            out_dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float32
            out = np.einsum("mb,byx->myx", self.matrix, values.astype(np.float64, copy=False))
            coords: dict[str, Any] = {
                "band_name": ("band", list(self.band_names)),
                "centre_wavelength": (
                    "band",
                    self.centre_wavelength,
                    {"units": "nm", "long_name": "SRF-weighted mean wavelength"},
                ),
            }
            for cname, coord in hsi.coords.items():
                if "band" not in coord.dims:
                    coords[str(cname)] = coord
            attrs = dict(hsi.attrs)
            attrs["srf"] = self.name
            attrs["srf_provenance"] = self.provenance
            return xr.DataArray(
                out.astype(out_dtype), dims=("band", "y", "x"), coords=coords, attrs=attrs, name=hsi.name
            )
        if isinstance(hsi, torch.Tensor):
            self._check_band_axis(tuple(hsi.shape))
            dtype = hsi.dtype if hsi.is_floating_point() else torch.float32
            return torch.einsum("mb,...byx->...myx", self.to_tensor(hsi.device, dtype), hsi.to(dtype))
        arr = np.asarray(hsi)
        self._check_band_axis(arr.shape)
        out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
        return np.einsum("mb,...byx->...myx", self.matrix, arr.astype(np.float64, copy=False)).astype(out_dtype)

    def _check_band_axis(self, shape: tuple[int, ...]) -> None:
        if len(shape) < 3:
            raise SRFError(f"SRF.apply needs an array (..., band, y, x); got shape {shape}")
        if shape[-3] != self.hsi_bands:
            raise SRFError(
                f"SRF {self.name!r} is defined on {self.hsi_bands} bands ({_fmt_range(self.wavelength)}) "
                f"but the HSI has {shape[-3]} bands; resample the SRF to the cube's wavelengths with "
                "srf.resample(cube.wavelength)"
            )

    def to_tensor(self, device: str | torch.device | None = "auto", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``matrix`` as a ``(msi_bands, hsi_bands)`` tensor on ``device``."""
        return torch.as_tensor(np.array(self.matrix), dtype=dtype, device=resolve_device(device))

    # --- xarray / NetCDF ---------------------------------------------------------------------

    def to_dataarray(self) -> xr.DataArray:
        """The matrix as a DataArray ``(msi_band, band)`` with ``msi_band`` names, ``wavelength`` (nm)
        on ``band`` and ``name``/``provenance`` in attrs; save it with ``.to_netcdf``."""
        return xr.DataArray(
            np.array(self.matrix),
            dims=("msi_band", "band"),
            coords={
                "msi_band": list(self.band_names),
                "wavelength": ("band", np.array(self.wavelength), {"units": "nm", "long_name": "HSI band centre"}),
            },
            name="srf",
            attrs={
                "name": self.name,
                "provenance": self.provenance,
                "long_name": "spectral response function",
                "convention": "msi[m] = sum_b srf[m, b] * hsi[b]; rows sum to 1",
            },
        )

    @classmethod
    def from_dataarray(cls, da: xr.DataArray) -> SRF:
        """Inverse of :meth:`to_dataarray` (rows are re-normalised; the measured table is not kept)."""
        if not isinstance(da, xr.DataArray):
            raise SRFError(f"SRF.from_dataarray needs an xarray.DataArray; got {type(da).__name__}")
        if set(da.dims) != {"msi_band", "band"}:
            raise SRFError(f"an SRF DataArray must have dims ('msi_band', 'band'); got {tuple(da.dims)}")
        da = da.transpose("msi_band", "band")
        if "wavelength" not in da.coords:
            raise SRFError("an SRF DataArray needs a 'wavelength' coordinate (nm) on 'band'")
        names = (
            [str(v) for v in da.coords["msi_band"].values]
            if "msi_band" in da.coords
            else list(_default_band_names(da.sizes["msi_band"]))
        )
        return cls.from_matrix(
            np.asarray(da.values),
            np.asarray(da.coords["wavelength"].values),
            band_names=names,
            name=str(da.attrs.get("name", da.name or "srf")),
            provenance=str(da.attrs.get("provenance", "")),
        )


# --------------------------------------------------------------------------------------------
# built-ins
# --------------------------------------------------------------------------------------------


class _Table(NamedTuple):
    """A response table: ``wavelength`` ``(n,)`` nm, ``responses`` ``(bands, n)``."""

    wavelength: np.ndarray
    responses: np.ndarray
    band_names: tuple[str, ...]
    name: str
    provenance: str


#: pyrsr sensors: built-in name -> (satellite, sensor, bands to keep or None for all
#: non-thermal, non-panchromatic bands). SPOT satellites carry twin instruments; the first is used.
_PYRSR_SENSORS: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "sentinel-2a": ("Sentinel-2A", "MSI", None),
    "sentinel-2b": ("Sentinel-2B", "MSI", None),
    "landsat-4": ("Landsat-4", "TM", None),
    "landsat-5": ("Landsat-5", "TM", None),
    "landsat-7": ("Landsat-7", "ETM+", None),
    "landsat-8": ("Landsat-8", "OLI_TIRS", None),
    "landsat-9": ("Landsat-9", "OLI_TIRS", None),
    "rapideye": ("RapidEye-5", "MSI", None),
    "spot-1": ("SPOT-1", "HRV1", None),
    "spot-2": ("SPOT-2", "HRV1", None),
    "spot-3": ("SPOT-3", "HRV1", None),
    "spot-4": ("SPOT-4", "HRVIR1", None),
    "spot-5": ("SPOT-5", "HRG1", None),
    "terra-modis": ("Terra", "MODIS", None),
    "aqua-modis": ("Aqua", "MODIS", None),
    # 3B is the backward-looking copy of 3N (same band); VNIR + SWIR only.
    "terra-aster": ("Terra", "ASTER", ("1", "2", "3N", "4", "5", "6", "7", "8", "9")),
}

_CIE_OBSERVERS = {
    "cie-1931": "CIE 1931 2 Degree Standard Observer",
    "cie-1964": "CIE 1964 10 Degree Standard Observer",
}
_COLOUR_PREFIX = "colour:"


@functools.cache
def _nikon_d700_table() -> _Table:
    path = _DATA_DIR / "nikon_d700.csv"
    wl, resp, names, header = _read_text_table(path)
    provenance = " ".join(line.lstrip("# ").strip() for line in header[:6])
    return _Table(wl, resp, names, "nikon-d700", f"{provenance} [package data: fusion_explorer/data/nikon_d700.csv]")


@functools.cache
def _pyrsr_table(key: str) -> _Table:
    satellite, sensor, bands = _PYRSR_SENSORS[key]
    import pyrsr  # slow-ish import: only when a satellite SRF is asked for

    rsr = pyrsr.RSR(
        satellite,
        sensor,
        LayerBandsAssignment=list(bands) if bands else None,
        sort_by_cwl=bands is None,
        no_thermal=True,
        no_pan=True,
    )
    responses = np.vstack([np.asarray(rsr.rsrs[b], dtype=np.float64) for b in rsr.bands])
    names = tuple(f"B{b}" for b in rsr.bands)
    provenance = (
        f"{satellite} {sensor} relative spectral responses from pyrsr {pyrsr.__version__} "
        f"(bands {', '.join(names)}; 1 nm table {_fmt_range(rsr.rsrs_wvl)})"
    )
    return _Table(np.asarray(rsr.rsrs_wvl, dtype=np.float64), responses, names, key, provenance)


def _colour_cameras() -> dict[str, str]:
    """Lower-cased camera name -> colour-science camera name."""
    import colour

    return {k.lower(): k for k in colour.MSDS_CAMERA_SENSITIVITIES.keys()}


@functools.cache
def _colour_table(key: str) -> _Table:
    import colour

    if key in _CIE_OBSERVERS:
        msds = colour.MSDS_CMFS[_CIE_OBSERVERS[key]]
        names: tuple[str, ...] = ("X", "Y", "Z")
        what = f"{_CIE_OBSERVERS[key]} colour matching functions (x̄, ȳ, z̄)"
        source = f"colour.MSDS_CMFS[{_CIE_OBSERVERS[key]!r}]"
        name = key
    else:
        camera = _colour_cameras()[key[len(_COLOUR_PREFIX) :].lower()]
        msds = colour.MSDS_CAMERA_SENSITIVITIES[camera]
        names = tuple({"red": "R", "green": "G", "blue": "B"}.get(str(lbl).lower(), str(lbl)) for lbl in msds.labels)
        what = f"{camera} camera spectral sensitivities"
        source = f"colour.MSDS_CAMERA_SENSITIVITIES[{camera!r}]"
        name = _COLOUR_PREFIX + camera
    wl = np.asarray(msds.wavelengths, dtype=np.float64)
    provenance = f"{what}, colour-science {colour.__version__} {source} ({_fmt_range(wl)})"
    return _Table(wl, np.asarray(msds.values, dtype=np.float64).T, names, name, provenance)


def _builtin_table(name: str) -> _Table | None:
    key = name.strip().lower()
    if key == "nikon-d700":
        return _nikon_d700_table()
    if key in _PYRSR_SENSORS:
        return _pyrsr_table(key)
    if key in _CIE_OBSERVERS:
        return _colour_table(key)
    if key.startswith(_COLOUR_PREFIX) and key[len(_COLOUR_PREFIX) :].strip() in _colour_cameras():
        return _colour_table(_COLOUR_PREFIX + key[len(_COLOUR_PREFIX) :].strip())
    return None


def available_srfs() -> list[str]:
    """Names :func:`get_srf` accepts (``colour:<camera>`` names list colour-science's cameras)."""
    import colour

    cameras = [_COLOUR_PREFIX + k for k in colour.MSDS_CAMERA_SENSITIVITIES.keys()]
    return ["nikon-d700", *_CIE_OBSERVERS, *_PYRSR_SENSORS, *cameras]


def get_srf(name: str, wavelength: Any, *, min_coverage: float = 0.5) -> SRF:
    """A built-in SRF resampled to the band centres ``wavelength`` ``(hsi_bands,)`` nm.

    ``name`` is one of :func:`available_srfs` (case-insensitive): ``"nikon-d700"`` (the MossFuse
    CAVE protocol's SRF), ``"cie-1931"``/``"cie-1964"``, ``"colour:<camera>"``, or a satellite
    sensor (``"sentinel-2a"``, ``"landsat-8"``, ...). Bands mostly outside the cube's range are
    dropped with a warning (see :meth:`SRF.from_table`).
    """
    table = _builtin_table(str(name))
    if table is None:
        raise SRFError(
            f"unknown SRF {name!r}; built-ins: {', '.join(available_srfs())}. "
            "Tables in files are read with read_srf_file(path, wavelength)"
        )
    return SRF.from_table(
        table.wavelength,
        table.responses,
        wavelength,
        band_names=table.band_names,
        name=table.name,
        provenance=table.provenance,
        min_coverage=min_coverage,
    )


def gaussian_srf(
    centres: Any,
    fwhm: Any,
    wavelength: Any,
    *,
    name: str = "gaussian",
    band_names: Sequence[str] | None = None,
    min_coverage: float = 0.5,
) -> SRF:
    """Gaussian bands ``exp(-(λ - c)^2 / (2 σ^2))``, ``σ = fwhm / (2 sqrt(2 ln 2))``.

    Args:
        centres: ``(msi_bands,)`` band centres in nm.
        fwhm: full width at half maximum in nm, a scalar or one per band.
        wavelength: ``(hsi_bands,)`` HSI band centres in nm.
        band_names: default ``"<centre>nm"``.

    The matrix is the Gaussian evaluated exactly at ``wavelength``, each row normalised to 1;
    a fine table (FWHM/20 steps, +-4 FWHM) is kept for :meth:`SRF.resample`. Bands are dropped
    as in :meth:`SRF.from_table`.
    """
    c = np.atleast_1d(np.asarray(centres, dtype=np.float64)).ravel()
    f = np.asarray(fwhm, dtype=np.float64).ravel()
    if f.size == 1:
        f = np.full(c.shape, f[0])
    if c.size == 0 or f.shape != c.shape:
        raise SRFError(
            f"gaussian_srf: give one FWHM or one per centre; got {c.size} centres, fwhm shape {np.shape(fwhm)}"
        )
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(f)) and np.all(f > 0) and np.all(c > 0)):
        raise SRFError("gaussian_srf: centres and FWHM must be finite and positive (nm)")
    names = tuple(band_names) if band_names is not None else tuple(f"{v:g}nm" for v in c)
    sigma = f / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    step = max(float(f.min()) / 20.0, float((c + 4 * f).max() - (c - 4 * f).min()) / 200_000)
    grid = np.arange(max(float((c - 4 * f).min()), step), float((c + 4 * f).max()) + step, step)
    table = np.exp(-0.5 * ((grid[None, :] - c[:, None]) / sigma[:, None]) ** 2)
    provenance = f"Gaussian bands, centres {np.round(c, 3).tolist()} nm, FWHM {np.round(f, 3).tolist()} nm"
    srf = SRF.from_table(
        grid, table, wavelength, band_names=names, name=name, provenance=provenance, min_coverage=min_coverage
    )
    idx = [names.index(b) for b in srf.band_names]
    exact = np.exp(-0.5 * ((srf.wavelength[None, :] - c[idx, None]) / sigma[idx, None]) ** 2)
    return dataclasses.replace(srf, matrix=_normalise_rows(exact, srf.band_names, name))


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _read_text_table(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[str]]:
    """A CSV/text table: first column nm (µm if all < 30), other columns bands.

    ``#`` lines are comments (returned as the header); an optional first row of names.
    Returns ``(wavelength (n,), responses (bands, n), band names, comment lines)``.
    """
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except FileNotFoundError:
        raise ReadError(path, "no such file") from None
    except OSError as exc:
        raise ReadError(path, f"cannot read: {exc.strerror or exc}") from exc
    comments: list[str] = []
    rows: list[list[float]] = []
    header: list[str] | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            comments.append(line)
            continue
        sep = next((d for d in (",", ";", "\t") if d in line), None)
        fields = [t.strip() for t in line.split(sep)] if sep else line.split()
        while fields and not fields[-1]:  # trailing delimiter
            fields.pop()
        try:
            rows.append([float(t) for t in fields])
        except ValueError:
            if header is None and not rows:
                header = fields
                continue
            raise ReadError(path, f"line {lineno}: not numbers: {line[:80]!r}") from None
    if not rows:
        raise ReadError(path, "no numeric rows found (expected: wavelength_nm, band1, band2, ...)")
    widths = {len(r) for r in rows}
    if len(widths) != 1 or widths.pop() < 2:
        raise ReadError(path, "rows have different numbers of columns or fewer than 2 (wavelength, band...)")
    arr = np.asarray(rows, dtype=np.float64)
    wl = arr[:, 0] * (1000.0 if arr[:, 0].max() < 30 else 1.0)
    n_bands = arr.shape[1] - 1
    names = tuple(header[1:]) if header is not None and len(header) == n_bands + 1 else _default_band_names(n_bands)
    return wl, arr[:, 1:].T.copy(), names, comments


def _load_mat(path: Path) -> dict[str, np.ndarray]:
    import scipy.io

    try:
        raw = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise ReadError(path, "no such file") from None
    except NotImplementedError as exc:  # scipy: MATLAB v7.3 files are HDF5
        raise ReadError(path, f"MATLAB v7.3 (HDF5) files are not supported; save with -v7 ({exc})") from exc
    except Exception as exc:  # scipy raises OSError, ValueError, IndexError, MatReadError ... on bad files
        raise ReadError(path, f"not a readable MATLAB v5 file ({type(exc).__name__}: {exc})") from exc
    return {
        k: np.asarray(v)
        for k, v in raw.items()
        if not k.startswith("__") and isinstance(v, np.ndarray) and v.dtype.kind in "fiu"
    }


def _is_wavelength_vector(v: np.ndarray) -> bool:
    v = np.asarray(v, dtype=np.float64).ravel()
    return v.size >= 2 and bool(np.all(np.diff(v) > 0)) and 300 <= v[0] and v[-1] <= 2600


def _rgb_names_by_centre(wl: np.ndarray, responses: np.ndarray) -> tuple[str, ...] | None:
    """``R``/``G``/``B`` by the order of the bands' centre wavelengths, for 3 visible bands."""
    if responses.shape[0] != 3:
        return None
    weights = responses.sum(axis=1)
    if np.any(weights <= 0):
        return None
    centres = responses @ wl / weights
    if not np.all((centres > 380) & (centres < 780)):
        return None
    names = ["", "", ""]
    for rank, i in enumerate(np.argsort(centres)):
        names[i] = "BGR"[rank]
    return tuple(names)


def _generic_mat_table(path: Path, arrays: dict[str, np.ndarray]) -> _Table:
    """The generic rules for an unknown .mat file (see :func:`read_srf_file`)."""
    vectors = {k: v for k, v in arrays.items() if sum(s > 1 for s in v.shape) == 1 and _is_wavelength_vector(v)}
    matrices = {k: v for k, v in arrays.items() if v.ndim == 2 and min(v.shape) > 1}
    for wk, wv in vectors.items():
        wl = wv.astype(np.float64).ravel()
        for k, m in matrices.items():
            if m.shape[1] == wl.size:
                return _Table(
                    wl, m.astype(np.float64), _default_band_names(m.shape[0]), path.stem, f"{path}: {k} on {wk}"
                )
            if m.shape[0] == wl.size:
                return _Table(
                    wl, m.astype(np.float64).T, _default_band_names(m.shape[1]), path.stem, f"{path}: {k}.T on {wk}"
                )
    for k, m in matrices.items():
        m = m.astype(np.float64)
        for col in range(m.shape[1]):
            if _is_wavelength_vector(m[:, col]):
                resp = np.delete(m, col, axis=1).T
                return _Table(
                    m[:, col], resp, _default_band_names(resp.shape[0]), path.stem, f"{path}: {k}, column {col} nm"
                )
        for row in range(m.shape[0]):
            if _is_wavelength_vector(m[row]):
                resp = np.delete(m, row, axis=0)
                return _Table(m[row], resp, _default_band_names(resp.shape[0]), path.stem, f"{path}: {k}, row {row} nm")
    for k, m in matrices.items():
        if 31 in m.shape:
            resp = m.astype(np.float64) if m.shape[1] == 31 else m.astype(np.float64).T
            return _Table(
                CAVE_WAVELENGTHS,
                resp,
                _default_band_names(resp.shape[0]),
                path.stem,
                f"{path}: {k} ({resp.shape[0]}x31, taken to be on the CAVE grid 400–700/10 nm)",
            )
    listing = ", ".join(f"{k} {v.shape}" for k, v in arrays.items()) or "no numeric variables"
    raise SRFError(
        f"{path}: cannot tell which variable holds the spectral responses ({listing}); expected a table "
        "with one column of increasing wavelengths in 300–2600 nm and one column per band, a wavelength "
        "vector beside a matrix, or a (bands, 31) matrix on 400–700/10 nm"
    )


def _mat_table(path: Path, *, index: int, include_pan: bool) -> _Table | tuple[np.ndarray, tuple[str, ...], str]:
    """The response table in a .mat file; or, for a ready matrix on the ROSIS bands,
    ``(matrix (bands, 103), band names, provenance)``."""
    arrays = _load_mat(path)
    a = arrays.get
    src = f"file {path}"
    resp = a("resp")
    if resp is not None and resp.ndim == 2 and 31 in resp.shape:
        resp = resp if resp.shape[1] == 31 else resp.T
        names = ("R", "G", "B") if resp.shape[0] == 3 else _default_band_names(resp.shape[0])
        return _Table(
            CAVE_WAVELENGTHS,
            resp.astype(np.float64),
            names,
            "nikon-d700-mossfuse",
            f"Nikon D700 R,G,B on 400–700/10 nm, MossFuse resp.mat (variable resp {resp.shape}); {src}",
        )
    nikon = a("Nikon_responses")
    if nikon is not None and nikon.ndim == 2 and nikon.shape[1] == 3:
        wl = a("wavelengths")
        wl = wl.astype(np.float64).ravel() if wl is not None and wl.size == nikon.shape[0] else None
        if wl is None and nikon.shape[0] == 76:
            wl = np.arange(400.0, 701.0, 4.0)
        if wl is not None:
            return _Table(
                wl,
                nikon.T.astype(np.float64),
                ("R", "G", "B"),
                "nikon-d700-76",
                f"Nikon D700 R,G,B on {_fmt_range(wl)} ({wl.size} samples), variable Nikon_responses; {src}",
            )
    spec = a("spec_resp")
    if spec is not None and spec.ndim == 2 and spec.shape[1] == 4 and _is_wavelength_vector(spec[:, 0]):
        return _Table(
            spec[:, 0].astype(np.float64),
            spec[:, 1:].T.astype(np.float64),
            ("B", "G", "R"),
            "nikon-d700-spfnet",
            f"Nikon D700 B,G,R on {_fmt_range(spec[:, 0])}, variable spec_resp (SpfNet); {src}",
        )
    r = a("R")
    if r is not None and r.ndim == 3 and r.shape[:2] == (3, 31):
        if not -r.shape[2] <= index < r.shape[2]:
            raise SRFError(f"{path}: index {index} out of range; the file holds {r.shape[2]} camera response sets")
        k = index % r.shape[2]
        return _Table(
            CAVE_WAVELENGTHS,
            r[:, :, k].astype(np.float64),
            ("R", "G", "B"),
            f"mhfnet-camera-{k}",
            f"RGB camera response set {k} of {r.shape[2]} on 400–700/10 nm, variable R (MHF-Net); {src}",
        )
    ik = a("ikonos_sp")
    if ik is not None and ik.ndim == 2 and ik.shape[1] == 6 and _is_wavelength_vector(ik[:, 0]):
        names = ("PAN", "B", "G", "R", "NIR")
        cols = slice(1, 6) if include_pan else slice(2, 6)
        return _Table(
            ik[:, 0].astype(np.float64),
            ik[:, cols].T.astype(np.float64),
            names[cols.start - 1 :],
            "ikonos",
            f"IKONOS spectral responses ({'PAN, ' if include_pan else ''}B, G, R, NIR) on {_fmt_range(ik[:, 0])}, "
            f"variable ikonos_sp (HySure); {src}",
        )
    oli = a("srf")
    if oli is not None and oli.ndim == 2 and oli.shape[1] == 8 and _is_wavelength_vector(oli[:, 0]):
        return _Table(
            oli[:, 0].astype(np.float64),
            oli[:, 1:].T.astype(np.float64),
            ("B2", "B3", "B4", "B5", "B9", "B6", "B7"),
            "landsat8-oli-table",
            f"Landsat 8 OLI bands 2,3,4,5,9,6,7 on {_fmt_range(oli[:, 0])}, variable srf; {src}",
        )
    if r is not None and r.ndim == 2 and r.shape[1] == ROSIS_WAVELENGTHS.size:
        names = ("B", "G", "R", "NIR") if r.shape[0] == 4 else _default_band_names(r.shape[0])
        return (
            r.astype(np.float64),
            names,
            f"{r.shape[0]}-band IKONOS-like MS from the 103 ROSIS-03 bands (Pavia, {_fmt_range(ROSIS_WAVELENGTHS)}), "
            f"variable R (CSTF); {src}",
        )
    return _generic_mat_table(path, arrays)


def read_srf_file(
    path: str | os.PathLike[str],
    wavelength: Any,
    *,
    name: str | None = None,
    index: int = 0,
    include_pan: bool = False,
    min_coverage: float = 0.5,
) -> SRF:
    """An SRF from a table file, resampled to the band centres ``wavelength`` ``(hsi_bands,)`` nm.

    Formats (detected from the suffix, then the variable names and shapes):

    * ``.mat`` (MATLAB v5), the published layouts: ``resp`` ``(3, 31)`` R,G,B on 400–700/10 nm
      (MossFuse); ``Nikon_responses`` ``(76, 3)`` R,G,B with ``wavelengths`` (400:4:700);
      ``spec_resp`` ``(n, 4)`` nm then B,G,R (SpfNet); ``R`` ``(3, 31, k)`` k RGB cameras on
      400–700/10 nm, ``index`` picks one (MHF-Net; sets 0–27 are real cameras, the rest synthetic);
      ``ikonos_sp`` ``(n, 6)`` nm then PAN,B,G,R,NIR (PAN only with ``include_pan``); ``srf``
      ``(n, 8)`` nm then Landsat 8 OLI 2,3,4,5,9,6,7; ``R`` ``(bands, 103)`` a ready matrix on the
      ROSIS-03 Pavia bands (430–858.4 nm, 4.2 nm steps; used as is when ``wavelength`` has 103
      values, resampled from that grid otherwise). Other files: a matrix with one column (or row)
      of increasing wavelengths in 300–2600 nm and one column per band, a wavelength vector
      beside a matrix, or a ``(bands, 31)`` matrix taken to be on 400–700/10 nm.
    * ``.csv``/``.txt``/``.tsv``/``.dat``: first column nm (µm when all values < 30), one column per
      band, optional header row of names, ``#`` comments.
    * ``.nc``: a NetCDF written from :meth:`SRF.to_dataarray` (resampled if its wavelengths differ).
    * ``.xls``/``.xlsx``: only if ``pandas`` can read it here (needs ``xlrd``/``openpyxl``); first
      column nm.

    Raises:
        ReadError: the file is missing or corrupt.
        SRFError: the content is not understood or no band fits the cube.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ReadError(p, "no such file")
    suffix = p.suffix.lower()
    wl = _as_wavelength(wavelength, "HSI wavelength")
    if suffix in _NETCDF_SUFFIXES:
        srf = _read_netcdf(p)
        srf = dataclasses.replace(srf, name=name) if name else srf
        if srf.hsi_bands == wl.size and np.max(np.abs(srf.wavelength - wl)) <= WAVELENGTH_TOLERANCE_NM:
            return srf
        return srf.resample(wl, min_coverage=min_coverage)
    if suffix == ".mat":
        found = _mat_table(p, index=index, include_pan=include_pan)
        if not isinstance(found, _Table):
            matrix, names, provenance = found
            label = name or "cstf-rosis-4band"
            if wl.size == matrix.shape[1]:
                srf = SRF.from_matrix(matrix, wl, band_names=names, name=label, provenance=provenance)
                return dataclasses.replace(srf, table_wavelength=ROSIS_WAVELENGTHS, table=srf.matrix)
            return SRF.from_table(
                ROSIS_WAVELENGTHS,
                matrix,
                wl,
                band_names=names,
                name=label,
                provenance=provenance,
                min_coverage=min_coverage,
            )
        table = found
    elif suffix in _TEXT_SUFFIXES:
        twl, resp, names, _ = _read_text_table(p)
        names = names if not names[0].startswith("band") else (_rgb_names_by_centre(twl, resp) or names)
        table = _Table(twl, resp, names, p.stem, f"table file {p}")
    elif suffix in (".xls", ".xlsx"):
        table = _read_excel(p)
    else:
        raise SRFError(
            f"{p}: unknown SRF file type {suffix!r}; use .mat, .csv/.txt (first column nm) or .nc "
            "(from SRF.to_dataarray().to_netcdf)"
        )
    return SRF.from_table(
        table.wavelength,
        table.responses,
        wl,
        band_names=table.band_names,
        name=name or table.name,
        provenance=table.provenance,
        min_coverage=min_coverage,
    )


def _read_netcdf(path: Path) -> SRF:
    try:
        with xr.open_dataarray(path, engine="h5netcdf") as da:
            da = da.load()
    except Exception as exc:  # h5py/h5netcdf/xarray raise many kinds of errors on bad files
        raise ReadError(path, f"not a readable NetCDF SRF ({type(exc).__name__}: {exc})") from exc
    return SRF.from_dataarray(da)


def _read_excel(path: Path) -> _Table:
    import pandas as pd

    try:
        df = pd.read_excel(path, header=None)
    except ImportError as exc:
        raise SRFError(
            f"{path}: reading Excel files needs an optional package not installed here ({exc}); "
            "save the sheet as CSV (first column nm, one column per band) and read that"
        ) from exc
    except Exception as exc:
        raise ReadError(path, f"not a readable spreadsheet ({type(exc).__name__}: {exc})") from exc
    arr = df.apply(pd.to_numeric, errors="coerce").dropna(how="any").to_numpy(dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2 or not _is_wavelength_vector(arr[:, 0]):
        raise SRFError(f"{path}: expected a first column of increasing wavelengths (nm) and one column per band")
    resp = arr[:, 1:].T
    names = _rgb_names_by_centre(arr[:, 0], resp) or _default_band_names(resp.shape[0])
    return _Table(arr[:, 0], resp, names, path.stem, f"spreadsheet {path}")


def srf_from_name_or_path(spec: str | os.PathLike[str], wavelength: Any, *, min_coverage: float = 0.5) -> SRF:
    """An SRF from a built-in name (:func:`available_srfs`), a table file (:func:`read_srf_file`)
    or a NetCDF written from :meth:`SRF.to_dataarray`, on the band centres ``wavelength`` nm.

    This is what the CLI's ``--srf`` accepts.
    """
    text = os.fspath(spec).strip() if isinstance(spec, (str, os.PathLike)) else None
    if not text:
        raise SRFError(f"--srf needs a built-in SRF name or a file path; got {spec!r}")
    if _builtin_table(text) is not None:
        return get_srf(text, wavelength, min_coverage=min_coverage)
    path = Path(text).expanduser()
    if path.is_file():
        return read_srf_file(path, wavelength, min_coverage=min_coverage)
    if path.suffix.lower() in _FILE_SUFFIXES or os.sep in text:
        raise ReadError(path, "no such file")
    raise SRFError(
        f"unknown SRF {text!r}: neither a built-in name nor an existing file; built-ins: {', '.join(available_srfs())}"
    )
