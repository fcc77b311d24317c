"""SRF table files: :func:`read_srf_file` and the readers behind it (MATLAB tables of fusion papers,
CSV/text tables, NetCDF files written from :meth:`SRF.to_dataarray`, spreadsheets).

The ``.mat`` variables are loaded by :func:`fusion_explorer.io.matlab.read_numeric_arrays`; this module
only recognises the published layouts in them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from ..errors import ReadError, SRFError
from .model import (
    CAVE_WAVELENGTHS,
    ROSIS_WAVELENGTHS,
    SRF,
    WAVELENGTH_TOLERANCE_NM,
    _as_wavelength,
    _check_cut_off,
    _default_band_names,
    _fmt_range,
)

_NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf", ".h5")
_TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
_FILE_SUFFIXES = (".mat", ".xls", ".xlsx") + _TEXT_SUFFIXES + _NETCDF_SUFFIXES


class _Table(NamedTuple):
    """A response table: ``wavelength`` ``(n,)`` nm, ``responses`` ``(bands, n)``."""

    wavelength: np.ndarray
    responses: np.ndarray
    band_names: tuple[str, ...]
    name: str
    provenance: str


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
    from ..io.matlab import read_numeric_arrays

    arrays = read_numeric_arrays(path)
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
    * ``.nc``: a NetCDF written from :meth:`SRF.to_dataarray` (resampled if its wavelengths differ;
      when ``wavelength`` is a cube without a ``wavelength`` coordinate, used as is if it has one
      column per band of the cube).
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
    unlabelled = isinstance(wavelength, xr.DataArray) and wavelength.ndim > 1 and "wavelength" not in wavelength.coords
    if unlabelled and suffix not in _NETCDF_SUFFIXES:
        raise SRFError(
            f"{p}: the HSI has no 'wavelength' coordinate, so a response table cannot be resampled to its bands; "
            "give the SRF as a (msi_band, band) matrix NetCDF (SRF.to_dataarray) or add the band centres (nm)"
        )
    if unlabelled:  # a matrix on the cube's bands, matched by count (nothing to resample to)
        srf = _read_netcdf(p)
        srf = dataclasses.replace(srf, name=name) if name else srf
        n = int(wavelength.sizes.get("band", wavelength.shape[0]))
        if srf.hsi_bands != n:
            raise SRFError(
                f"{p}: the SRF matrix is defined on {srf.hsi_bands} bands but the HSI has {n} bands and no "
                "'wavelength' coordinate to resample it to; give a matrix with one column per HSI band"
            )
        return srf
    wl = _as_wavelength(wavelength, "HSI wavelength")
    if suffix in _NETCDF_SUFFIXES:
        srf = _read_netcdf(p)
        srf = dataclasses.replace(srf, name=name) if name else srf
        if srf.hsi_bands == wl.size and np.max(np.abs(srf.wavelength - wl)) <= WAVELENGTH_TOLERANCE_NM:
            return srf
        _check_cut_off(srf.wavelength, srf.matrix, wl, srf.band_names, srf.name, strict=True)
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
    from ..io.guard import check_hdf5

    check_hdf5(path)  # no external storage, virtual datasets or links; declared size within the read budget
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

