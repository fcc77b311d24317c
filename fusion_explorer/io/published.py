"""What the published benchmark files of ``../shared/data/remote`` do not say in a form :func:`open_cube`
reads: their nominal band centres and the unmixing ground truth some of them store.

* :func:`nominal_wavelengths`: band centres (nm) for files that store none (Samson, Jasper Ridge, the
  Pavia University crop, Paris Hyperion), from the package data file ``data/band_centres.json`` (each
  entry with its provenance) and the files' own band-selection variables;
* :func:`ali_band_centres`: the EO-1 ALI multispectral bands of the Paris pair (same data file);
* :func:`read_small_variables`: a few small variables of a MATLAB v5 file (selections, centres);
* :func:`unmixing_ground_truth`: the endmembers and abundances stored in Samson and Jasper Ridge.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FusionExplorerError, ReadError


@lru_cache(maxsize=1)
def band_centre_table() -> dict[str, Any]:
    """``data/band_centres.json``: per published scene, its band centres (nm) and their provenance."""
    return json.loads(resources.files("fusion_explorer.data").joinpath("band_centres.json").read_text("utf-8"))


def read_small_variables(path: str | os.PathLike, names: list[str]) -> dict[str, np.ndarray]:
    """The variables ``names`` of a MATLAB v5 file (those present), as arrays; one :class:`ReadError` if unreadable."""
    import scipy.io

    try:
        raw = scipy.io.loadmat(str(path), variable_names=list(names))
    except (OSError, ValueError, NotImplementedError) as exc:
        raise ReadError(path, f"not a readable MATLAB v5 file ({exc})") from None
    return {k: v for k, v in raw.items() if not k.startswith("__")}


def _selection(path: Path, variable: str, total: int) -> np.ndarray:
    sel = read_small_variables(path, [variable]).get(variable)
    if sel is None:
        raise ReadError(path, f"no {variable!r} variable (the band selection of the published file)")
    sel = np.asarray(sel).ravel().astype(int)
    if sel.min() < 1 or sel.max() > total:
        raise ReadError(path, f"{variable} lists bands outside 1..{total}")
    return sel


def nominal_wavelengths(path: str | os.PathLike) -> tuple[np.ndarray, str] | None:
    """Band centres (nm) and a note for the published files of ``../shared/data/remote`` that store none.

    Samson: 156 bands evenly spaced over 401–889 nm. Jasper Ridge: AVIRIS's 224 bands evenly spaced over
    380–2500 nm, of which the file's ``SlectBands`` (1-based) are kept. Pavia: the centres file beside it
    (``paviaU_band_centers_103.mat``). Paris Hyperion: the nominal Hyperion table at ``non_del_bands``.
    Numbers and their provenance: ``fusion_explorer/data/band_centres.json``. Other files: ``None``.
    """
    p = Path(path)
    name = p.name.lower()
    table = band_centre_table()
    if name.startswith("samson"):
        e = table["samson"]
        return np.asarray(e["wavelength"], dtype=np.float64), "nominal: 156 bands evenly spaced over 401–889 nm"
    if name.startswith("jasperridge"):
        e = table["jasper_ridge"]
        sel = _selection(p, e["selection_variable"], len(e["aviris_224"]))
        kept = sorted(set(range(1, 225)) - set(e["removed_bands"]))
        if sel.tolist() != kept:
            raise ReadError(p, "SlectBands does not keep the published 198 of 224 AVIRIS bands")
        return np.asarray(e["aviris_224"], dtype=np.float64)[sel - 1], (
            "nominal: AVIRIS 224 bands over 380–2500 nm, SlectBands kept"
        )
    if name.startswith("paviau_subimg"):
        centres = p.with_name("paviaU_band_centers_103.mat")
        if centres.is_file():
            wl = read_small_variables(centres, ["paviaU_spec"]).get("paviaU_spec")
            if wl is not None:
                return np.asarray(wl, dtype=np.float64).ravel(), f"from {centres.name}"
        return None
    if "hyperion" in name:
        e = table["hyperion"]
        sel = _selection(p, e["selection_variable"], len(e["hyperion_242"]))
        return np.asarray(e["hyperion_242"], dtype=np.float64)[sel - 1], (
            "nominal Hyperion band centres at non_del_bands (about ±5 nm)"
        )
    return None


def ali_band_centres() -> tuple[np.ndarray, list[str], str]:
    """``(centres nm, band names, provenance)`` of the 9 EO-1 ALI multispectral bands (the Paris pair's MSI)."""
    e = band_centre_table()["ali"]
    return np.asarray(e["wavelength"], dtype=np.float64), list(e["band_names"]), e["provenance"]


def unmixing_ground_truth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(endmembers (bands, p), abundances (p, y, x), names)`` stored in Samson or Jasper Ridge.

    Samson keeps ``A`` as ``(y, x, p)``; Jasper Ridge as ``(p, pixels)`` in MATLAB column order of an
    ``nRow x nCol`` image (the same order as its ``Y``). Names come from the ``cood`` variable.
    """
    import scipy.io

    m = scipy.io.loadmat(Path(path))
    if "M" not in m or "A" not in m:
        raise FusionExplorerError(f"{path}: no unmixing ground truth (variables M and A)")
    endmembers = np.asarray(m["M"], dtype=np.float64)
    a = np.asarray(m["A"], dtype=np.float64)
    p = endmembers.shape[1]
    if a.ndim == 3:
        abundances = a.transpose(2, 0, 1) if a.shape[2] == p else a
    else:
        rows, cols = int(m["nRow"].ravel()[0]), int(m["nCol"].ravel()[0])
        abundances = a.reshape(p, cols, rows).transpose(0, 2, 1)
    names = [str(np.ravel(c)[0]).split("-", 1)[-1] for c in np.ravel(m["cood"])] if "cood" in m else []
    if len(names) != p:
        names = [f"endmember {k + 1}" for k in range(p)]
    return endmembers, np.ascontiguousarray(abundances), names
