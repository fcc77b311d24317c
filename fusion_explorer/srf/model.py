"""The SRF object: a ``(msi_bands, hsi_bands)`` matrix on HSI band centres, built from a matrix or a
measured table, resampled to other band centres, checked against a cube and applied to it.

``MSI = R @ X`` per pixel; see :mod:`fusion_explorer.srf` for the sources of SRFs.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..cube import resolve_device
from ..errors import SRFError
from ..io.cave import CAVE_WAVELENGTHS as CAVE_WAVELENGTHS  # noqa: F401 - re-exported (one definition)

#: Tolerance (nm) when comparing an SRF's wavelengths with a cube's.
WAVELENGTH_TOLERANCE_NM = 0.5
#: Band centres of the ROSIS-03 Pavia University crop: 430–858.4 nm in 4.2 nm steps, shape (103,).
ROSIS_WAVELENGTHS = 430.0 + 4.2 * np.arange(103)

#: frames of this package are skipped when a warning is attributed to its caller
_PACKAGE_DIR = os.path.dirname(__file__)

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
    """``warnings.warn`` attributed to the first caller outside this package."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and os.path.dirname(frame.f_code.co_filename) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _integral(x: np.ndarray, y: np.ndarray, lo: float | None = None, hi: float | None = None) -> float:
    """Trapezoidal integral of the piecewise-linear ``y(x)`` (zero outside ``x``) over ``[lo, hi]``."""
    if lo is None or hi is None:
        return float(np.trapezoid(y, x))
    inside = x[(x > lo) & (x < hi)]
    grid = np.concatenate(([lo], inside, [hi]))
    return float(np.trapezoid(np.interp(grid, x, y, left=0.0, right=0.0), grid))


#: a band whose response at the end of its table is at least this fraction of its peak is cut off there
CUT_OFF_RESPONSE = 0.05


def _check_cut_off(tw: Any, resp: Any, wl: np.ndarray, names: Sequence[str], name: str, *, strict: bool) -> None:
    """Bands that still respond where their table ends, while the HSI has bands beyond that end.

    Resampling would give those HSI bands weight 0 (zero padding) although the MSI band's response
    there is unknown. ``strict``: raise :class:`SRFError` (an SRF matrix made for other band centres,
    e.g. a NetCDF from :meth:`SRF.to_dataarray` covering fewer bands); else warn (a measured table:
    the resampling is logged).
    """
    tw, resp = np.asarray(tw, dtype=np.float64).ravel(), np.atleast_2d(np.asarray(resp, dtype=np.float64))
    if tw.size == 0 or resp.shape != (len(names), tw.size):
        return  # malformed: SRF.from_table says what is wrong
    order = np.argsort(tw, kind="stable")
    tw, resp = tw[order], np.clip(resp[:, order], 0.0, None)
    peak = np.where(resp.max(axis=1) > 0, resp.max(axis=1), 1.0)
    found = []
    for end, level, beyond in ((tw[0], resp[:, 0] / peak, wl < tw[0] - WAVELENGTH_TOLERANCE_NM),
                               (tw[-1], resp[:, -1] / peak, wl > tw[-1] + WAVELENGTH_TOLERANCE_NM)):
        cut = [f"{names[i]} ({level[i]:.0%} of its peak)" for i in np.flatnonzero(level >= CUT_OFF_RESPONSE)]
        if cut and beyond.any():
            found.append(f"at {end:.6g} nm {', '.join(cut)} still respond, and the HSI has {int(beyond.sum())} "
                         f"band(s) beyond ({_fmt_range(wl[beyond])})")
    if not found:
        return
    message = (f"SRF {name!r} covers {_fmt_range(tw)} but the HSI {_fmt_range(wl)}: {'; '.join(found)}")
    if strict:
        raise SRFError(f"{message}; its response there is unknown, and zero padding would give wrong numbers. "
                       "Use an SRF that covers the cube's range, or keep only the cube's bands inside the SRF's")
    _warn(f"{message}; its response there is taken as 0")


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
        _check_cut_off(tw, resp, wl, names, name, strict=False)

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

