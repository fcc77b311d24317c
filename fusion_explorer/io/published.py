"""What the published benchmark files of ``../shared/data/remote`` do not say in a form :func:`open_cube`
reads: their nominal band centres and the unmixing ground truth some of them store.

* :func:`nominal_wavelengths`: band centres (nm) for files that store none (Samson, Jasper Ridge, the
  Pavia University crop, Paris Hyperion);
* :func:`unmixing_ground_truth`: the endmembers and abundances stored in Samson and Jasper Ridge.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FusionExplorerError


def _hyperion_centres() -> np.ndarray:
    """Nominal centres (nm) of Hyperion's 242 bands: VNIR 1–70 from 355.6 nm and SWIR 71–242 from
    851.9 nm, both about 10.1 nm apart (USGS EO-1 Hyperion band table, rounded)."""
    return np.concatenate([355.59 + 10.175 * np.arange(70), 851.92 + 10.09 * np.arange(172)])


def nominal_wavelengths(path: str | os.PathLike) -> tuple[np.ndarray, str] | None:
    """Band centres (nm) and a note for the published files of ``../shared/data/remote`` that store none.

    Samson: 156 bands evenly spaced over 401–889 nm. Jasper Ridge: AVIRIS's 224 bands evenly spaced over
    380–2500 nm, of which the file's ``SlectBands`` (1-based) are kept. Pavia: the centres file beside it
    (``paviaU_band_centers_103.mat``). Paris Hyperion: the nominal Hyperion table at ``non_del_bands``.
    These are nominal (the files do not carry calibration); other files: ``None``.
    """
    import scipy.io

    p = Path(path)
    name = p.name.lower()
    if name.startswith("samson"):
        return np.linspace(401.0, 889.0, 156), "nominal: 156 bands evenly spaced over 401–889 nm"
    if name.startswith("jasperridge"):
        sel = scipy.io.loadmat(p, variable_names=["SlectBands"])["SlectBands"].ravel().astype(int)
        return np.linspace(380.0, 2500.0, 224)[sel - 1], "nominal: AVIRIS 224 bands over 380–2500 nm, SlectBands kept"
    if name.startswith("paviau_subimg"):
        centres = p.with_name("paviaU_band_centers_103.mat")
        if centres.is_file():
            return scipy.io.loadmat(centres)["paviaU_spec"].ravel().astype(float), f"from {centres.name}"
        return None
    if "hyperion" in name:
        sel = scipy.io.loadmat(p, variable_names=["non_del_bands"])["non_del_bands"].ravel().astype(int)
        return _hyperion_centres()[sel - 1], "nominal Hyperion band centres at non_del_bands (about ±5 nm)"
    return None


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
