"""Built-in SRFs by name: the Nikon D700 of the MossFuse CAVE protocol (package data), the cameras and
CIE observers of ``colour-science``, the satellite sensors of ``pyrsr``; Gaussian bands; and
:func:`srf_from_name_or_path`, which takes a built-in name or a file path (the CLI's ``--srf``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReadError, SRFError
from .files import _FILE_SUFFIXES, _read_text_table, _Table, read_srf_file
from .model import SRF, _fmt_range, _normalise_rows

_DATA_DIR = Path(__file__).resolve().parent.parent / "data"

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
#: colour-science's cameras (the keys of ``colour.MSDS_CAMERA_SENSITIVITIES``, colour-science 0.4.x), written
#: out so that listing the built-ins does not import colour-science (a second or more);
#: ``tests/test_srf.py`` compares it with the installed colour-science.
COLOUR_CAMERAS: tuple[str, ...] = ("Nikon 5100 (NPL)", "Sigma SDMerill (NPL)")


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


def srf_names(*, cameras: bool = True) -> list[str]:
    """The built-in SRF names, listed without importing colour-science or pyrsr: ``"nikon-d700"``, the CIE
    observers, the satellite sensors and, with ``cameras``, ``"colour:<camera>"`` for :data:`COLOUR_CAMERAS`."""
    names = ["nikon-d700", *_CIE_OBSERVERS, *_PYRSR_SENSORS]
    return [*names, *(_COLOUR_PREFIX + c for c in COLOUR_CAMERAS)] if cameras else names


def available_srfs() -> list[str]:
    """Names :func:`get_srf` accepts: :func:`srf_names` (``colour:<camera>`` names list colour-science's cameras)."""
    return srf_names()


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
