"""ENVI cubes (a text ``.hdr`` header beside a raw data file) through the :mod:`spectral` package.

Interleave (BSQ, BIL, BIP), data type, byte order and header offset are handled by spectral;
wavelengths come from the header's ``wavelength`` field, converted to nm by ``wavelength units``.
A ``reflectance scale factor`` divides the values (``attrs['scale']``).

Safety (:mod:`fusion_explorer.io.guard`): the data file must resolve inside the header's folder (a
symlink leaving it is refused), and the size the header declares is checked against the read
budget before the data are read.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import spectral.io.envi as envi
import xarray as xr

from ..cube import make_cube, wavelengths
from ..errors import ReadError
from .atomic import atomic_target, check_target
from .guard import check_inside, check_size, cube_nbytes
from .matlab import check_dims, error_reason, to_nanometres

_DATA_EXTS = ("", ".img", ".dat", ".raw", ".bin", ".bsq", ".bil", ".bip", ".sli", ".hyspex")


def find_envi_pair(path: str | Path) -> tuple[Path, Path]:
    """``(header, data file)`` for ``path`` given as either the ``.hdr`` or the data file."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ReadError(path, "no such file")
    if path.suffix.lower() == ".hdr":
        stem = path.with_suffix("")
        for ext in _DATA_EXTS:
            for cand in {Path(f"{stem}{ext}"), Path(f"{stem}{ext.upper()}")}:
                if cand.is_file() and cand != path:
                    return path, cand
        raise ReadError(path, f"no ENVI data file beside the header (looked for {stem.name} + {list(_DATA_EXTS)})")
    for hdr in (Path(f"{path}.hdr"), path.with_suffix(".hdr"), Path(f"{path}.HDR"), path.with_suffix(".HDR")):
        if hdr.is_file() and hdr != path:
            return hdr, path
    raise ReadError(path, "no ENVI header (.hdr) beside this data file")


def read_envi(path: str | Path, *, max_bytes: float | None = None) -> xr.DataArray:
    """Read an ENVI image (``path``: the ``.hdr`` or the data file) as a cube ``(band, y, x)`` float32.

    Refused before reading: a data file resolving outside the header's folder, and a declared size
    (lines x samples x bands) over ``max_bytes`` (default: ``$FUSION_EXPLORER_MAX_READ_BYTES``, else
    min(1 GiB, RAM / 8)).
    """
    hdr, data_file = find_envi_pair(path)
    check_inside(data_file, hdr.parent, what="data file", where="the header's folder", error_path=hdr)
    try:
        img = envi.open(str(hdr), image=str(data_file))
    except Exception as exc:  # spectral raises its own errors, ValueError, KeyError, ...
        raise ReadError(hdr, f"not a readable ENVI header ({error_reason(exc)})") from exc
    try:
        check_size(
            cube_nbytes(img.shape, img.sample_size),
            hdr,
            max_bytes,
            f"{img.nrows} lines x {img.ncols} samples x {img.nbands} bands of {np.dtype(img.dtype)}",
        )
        need = img.offset + math.prod(img.shape) * img.sample_size
        have = data_file.stat().st_size
        if have < need:
            raise ReadError(
                data_file,
                f"data file is {have} bytes but the header ({hdr.name}) describes {need} "
                f"({img.nrows} lines x {img.ncols} samples x {img.nbands} bands x {img.sample_size} bytes"
                f" + offset {img.offset}); file truncated?",
            )
        try:
            arr = np.asarray(img.load(dtype=np.float32, scale=False))  # (y, x, band)
        except Exception as exc:
            raise ReadError(data_file, f"cannot read the ENVI data ({error_reason(exc)})") from exc
    finally:
        img.fid.close()
    meta = img.metadata
    attrs: dict[str, Any] = {
        "source": str(hdr),
        "format": "envi",
        "data_file": str(data_file),
        "interleave": str(meta.get("interleave", "")).lower(),
        "stored_dtype": str(np.dtype(img.dtype)),
    }
    if meta.get("sensor type"):
        attrs["sensor"] = str(meta["sensor type"])
    if meta.get("description"):
        attrs["description"] = str(meta["description"]).strip()
    values = np.ascontiguousarray(arr.transpose(2, 0, 1))
    if img.scale_factor not in (0, 1):
        values = (values / img.scale_factor).astype(np.float32)
        attrs["scale"] = float(img.scale_factor)
        attrs["scale_note"] = f"stored values divided by the reflectance scale factor {img.scale_factor:g}"
    wl = None
    if "wavelength" in meta:
        try:
            wl = to_nanometres([float(w) for w in meta["wavelength"]], meta.get("wavelength units"))
        except (TypeError, ValueError) as exc:
            raise ReadError(hdr, f"unreadable 'wavelength' field ({exc})") from exc
        if wl.size != values.shape[0]:
            raise ReadError(hdr, f"header lists {wl.size} wavelengths for {values.shape[0]} bands")
    return make_cube(values, wl, attrs=attrs, name=hdr.stem)


def write_envi(cube: xr.DataArray, path_hdr: str | Path, *, interleave: str = "bsq", overwrite: bool = False) -> Path:
    """Write a cube ``(band, y, x)`` as ENVI float32 (``path_hdr`` + a ``.img`` data file); return the header path.

    Wavelengths (nm) and ``attrs['sensor']`` go into the header. Each file is written beside its
    target and renamed onto it (the data file first); existing files are replaced only with ``overwrite``.
    """
    check_dims(cube)
    if interleave.lower() not in ("bsq", "bil", "bip"):
        raise ValueError(f"interleave must be 'bsq', 'bil' or 'bip'; got {interleave!r}")
    path_hdr = Path(path_hdr)
    if path_hdr.suffix.lower() != ".hdr":
        path_hdr = path_hdr.with_suffix(".hdr")
    meta: dict[str, Any] = {"description": str(cube.name or "fusion_explorer cube")}
    wl = wavelengths(cube)
    if wl is not None:
        meta["wavelength"] = [repr(float(w)) for w in wl]
        meta["wavelength units"] = "nm"
    if cube.attrs.get("sensor"):
        meta["sensor type"] = str(cube.attrs["sensor"])
    data = np.ascontiguousarray(np.asarray(cube.values, dtype=np.float32).transpose(1, 2, 0))
    check_target(path_hdr.with_suffix(".img"), overwrite=overwrite)
    with (
        atomic_target(path_hdr, overwrite=overwrite) as tmp_hdr,
        atomic_target(path_hdr.with_suffix(".img"), overwrite=overwrite) as tmp_img,
    ):
        try:  # spectral names the data file after the header: move it to the data file's temporary name
            envi.save_image(
                str(tmp_hdr),
                data,
                dtype=np.float32,
                interleave=interleave.lower(),
                metadata=meta,
                force=True,
                ext=".img",
            )
        finally:
            if tmp_hdr.with_suffix(".img").exists():
                os.replace(tmp_hdr.with_suffix(".img"), tmp_img)
    return path_hdr
