"""Scenes: load a scene by name or path, crop it to a ratio, and what is known about it.

One place for what the CLI, the benchmarks, the app and the notebooks do with a scene before it
becomes a :class:`~fusion_explorer.problem.FusionProblem`:

* :func:`load_scene` — a cube ``(band, y, x)`` from ``"default"`` (the embedded synthetic scene) or a
  path in any format :func:`~fusion_explorer.io.open_cube` reads (CAVE folder, ``.mat``, NetCDF, ENVI,
  Zarr), with band centres added for the published files that store none
  (:func:`~fusion_explorer.io.published.nominal_wavelengths`, numbers and provenance in
  ``fusion_explorer/data/band_centres.json``);
* :func:`center_crop` / :func:`crop_to_ratio` — the central window, a multiple of the ratio;
  :func:`prepare` — that plus scaling to [0, 1] (what the app shows);
* :func:`reference` — the unmixing ground truth (endmembers ``(bands, p)``, abundances ``(p, y, x)``) of
  Samson and Jasper Ridge, cropped like the cube; :func:`reference_endmembers` — the endmembers only;
* :func:`load_pair` — a real LR-HSI / HR-MSI pair without truth (the Paris Hyperion / ALI pair);
* :func:`remote_crops` — small airborne crops for quick benchmarks, windows from
  ``fusion_explorer/data/remote_crops.json``; :func:`cave_scenes` — the CAVE folders of a data dir.

Every ``.mat`` read goes through :mod:`fusion_explorer.io`; this module knows cubes and readers, not
problems or methods.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .config import default_data_dir
from .cube import crop as crop_cube
from .cube import make_cube, wavelengths
from .errors import FusionExplorerError

__all__ = [
    "DEFAULT",
    "GroundTruth",
    "ScenePair",
    "cave_scenes",
    "center_crop",
    "crop_to_ratio",
    "load_pair",
    "load_scene",
    "prepare",
    "reference",
    "reference_endmembers",
    "remote_crop_windows",
    "remote_crops",
]

#: The scene key of the embedded synthetic scene; ``"default:<size>"`` picks its size.
DEFAULT = "default"


class SceneError(FusionExplorerError, ValueError):
    """A scene cannot be cropped or paired as asked (too small, no ground truth, not a pair)."""


def load_scene(spec: str | os.PathLike, *, clip_negative: bool = False, size: int = 256) -> xr.DataArray:
    """The cube ``(band, y, x)`` float32 that ``spec`` names.

    ``"default"`` / ``"default:<size>"``: the embedded synthetic scene (``size`` x ``size``, default
    ``size``). Otherwise a path read by :func:`~fusion_explorer.io.open_cube`; published ``.mat`` files
    without band centres get their nominal ones (``attrs['wavelength_note']`` says which).
    ``clip_negative`` is passed to the reader (the app clips; the CLI and benchmarks keep values as
    stored and let :class:`~fusion_explorer.problem.FusionProblem` clip small negatives).
    ``attrs['scene']`` is set to the file or folder name when the reader gave none.
    """
    key = os.fspath(spec)
    if key == DEFAULT or key.startswith(DEFAULT + ":"):
        from .synth import default_scene

        if key == DEFAULT:
            return default_scene()
        return default_scene(int(key[len(DEFAULT) + 1 :] or size))
    from .io import open_cube
    from .io.published import nominal_wavelengths

    hint = nominal_wavelengths(key) if Path(key).suffix.lower() == ".mat" else None
    if hint is None:
        cube = open_cube(key, clip_negative=clip_negative)
    else:
        cube = open_cube(key, wavelength=hint[0], clip_negative=clip_negative)
        cube.attrs["wavelength_note"] = hint[1]
    cube.attrs.setdefault("scene", Path(key).name)
    return cube


def center_crop(cube: xr.DataArray, size: int | None, multiple: int = 1) -> xr.DataArray:
    """The central ``size`` x ``size`` window (``None``: the whole cube), shrunk to a multiple of
    ``multiple``; the cube itself when nothing is cut."""
    h, w = cube.sizes["y"], cube.sizes["x"]
    sh = min(size or h, h) // multiple * multiple
    sw = min(size or w, w) // multiple * multiple
    if sh == 0 or sw == 0:
        raise SceneError(f"crop {size} is smaller than the ratio {multiple}")
    if (sh, sw) == (h, w):
        return cube
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    return crop_cube(cube, (y0, y0 + sh), (x0, x0 + sw))


def crop_to_ratio(cube: xr.DataArray, ratio: int, size: int | None = None) -> xr.DataArray:
    """The central window of at most ``size`` pixels a side whose sides are multiples of ``ratio``."""
    return center_crop(cube, size, int(ratio))


def prepare(cube: xr.DataArray, ratio: int, crop: int | None = None, *, scale: bool = True) -> xr.DataArray:
    """:func:`crop_to_ratio`, then (``scale``) divide by the maximum when it exceeds 1 (noted in
    ``attrs['value_note']``); float32. What the app shows and simulates from."""
    h, w = cube.sizes["y"], cube.sizes["x"]
    if min(h, crop or h) < ratio or min(w, crop or w) < ratio:
        raise SceneError(f"the scene ({h}x{w}) is smaller than one LR pixel at ratio {ratio}")
    cube = crop_to_ratio(cube, ratio, crop)
    if scale:
        vmax = float(np.nanmax(cube.values))
        if vmax > 1.0:
            cube = (cube / vmax).assign_attrs(cube.attrs, value_note=f"divided by its maximum {vmax:.4g} for display")
    return cube.astype(np.float32)


def cave_scenes(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """CAVE scene folders under ``<data_dir>/cave`` (default data dir: see :mod:`fusion_explorer.config`)."""
    root = Path(data_dir) if data_dir else default_data_dir()
    if root is None:
        raise FusionExplorerError("no data directory: set FUSION_EXPLORER_DATA or pass --scenes")
    base = root / "cave" if (root / "cave").is_dir() else root
    from .io.cave import is_cave_scene

    scenes = sorted(p for p in base.iterdir() if is_cave_scene(p))
    if not scenes:
        raise FusionExplorerError(f"{base}: no CAVE scene folders found")
    return scenes


# ---------------------------------------------------------------------------------------------------
# ground truth


@dataclass
class GroundTruth:
    """Unmixing ground truth of a scene: ``endmembers`` ``(bands, p)``, ``abundances`` ``(p, y, x)`` on the
    cube's pixels, endmember ``names``, and ``source`` (the file)."""

    endmembers: np.ndarray
    abundances: np.ndarray
    names: list[str] = field(default_factory=list)
    source: str = ""


def _crop_window(cube: xr.DataArray, full: tuple[int, int]) -> tuple[slice, slice]:
    """The cube's window in the stored image's pixels: its ``y``/``x`` coordinates when they are pixel
    indices of that image, else the whole image (which must then be the cube's size)."""
    h, w = cube.sizes["y"], cube.sizes["x"]
    if "y" in cube.coords and "x" in cube.coords:
        y = np.asarray(cube.coords["y"].values)
        x = np.asarray(cube.coords["x"].values)
        if np.issubdtype(y.dtype, np.integer) and np.issubdtype(x.dtype, np.integer) and y.size and x.size:
            if (np.diff(y) == 1).all() and (np.diff(x) == 1).all() and y[-1] < full[0] and x[-1] < full[1]:
                return slice(int(y[0]), int(y[-1]) + 1), slice(int(x[0]), int(x[-1]) + 1)
    if (h, w) != full:
        raise SceneError(f"the cube ({h}x{w}) is a crop of a {full[0]}x{full[1]} scene with no pixel coordinates")
    return slice(0, h), slice(0, w)


def reference(cube_or_path: xr.DataArray | str | os.PathLike) -> GroundTruth | None:
    """The unmixing ground truth stored with a scene (Samson's and Jasper Ridge's ``M`` and ``A``), or ``None``.

    For a cube, the file is ``attrs['source']`` and the abundances are cut to the cube's window (its
    ``y``/``x`` pixel coordinates); the endmembers' rows follow the cube's bands (``None`` when the
    reader reordered them). For a path, the whole scene.
    """
    from .io.published import unmixing_ground_truth

    cube = cube_or_path if isinstance(cube_or_path, xr.DataArray) else None
    source = cube.attrs.get("source") if cube is not None else os.fspath(cube_or_path)
    if not source or Path(source).suffix.lower() != ".mat":
        return None
    from .io import read_mat_variables

    try:
        names = read_mat_variables(source)
    except FusionExplorerError:
        return None
    if "M" not in names or "A" not in names:
        return None
    endmembers, abundances, labels = unmixing_ground_truth(source)
    if cube is not None:
        bands = cube.sizes["band"]
        if endmembers.shape[0] != bands or cube.attrs.get("band_order") is not None:
            return None
        ys, xs = _crop_window(cube, abundances.shape[1:])
        abundances = np.ascontiguousarray(abundances[:, ys, xs])
    return GroundTruth(endmembers, abundances, labels, str(source))


def reference_endmembers(cube: xr.DataArray) -> np.ndarray | None:
    """Ground-truth endmembers ``(bands, p)`` of the scene ``cube`` was read from, or ``None``."""
    truth = reference(cube)
    return None if truth is None else truth.endmembers


# ---------------------------------------------------------------------------------------------------
# real pairs


@dataclass
class ScenePair:
    """A real LR-HSI ``(band, y, x)`` and HR-MSI ``(msi_band, Y, X)`` of one place, without ground truth.

    ``FusionProblem(lr_hsi=pair.lr_hsi, hr_msi=pair.hr_msi)`` makes the problem (SRF and PSF unknown:
    blind methods estimate them). ``ratio`` is the size ratio as stored; ``note`` says what the pair is.
    """

    lr_hsi: xr.DataArray
    hr_msi: xr.DataArray
    ratio: int
    note: str = ""

    def __iter__(self):  # ``lr_hsi, hr_msi = load_pair(path)``
        return iter((self.lr_hsi, self.hr_msi))


def load_pair(path: str | os.PathLike) -> ScenePair:
    """The real pair a file holds: the Paris EO-1 Hyperion (``HSim``, 128 of 242 bands) / ALI (``MSim``,
    9 bands) file of the HySure paper, both 72 x 72 at 30 m (ratio 1 as stored: a method that needs a
    ratio above 1 is for a spatially degraded copy), with nominal band centres for both
    (``fusion_explorer/data/band_centres.json``). There is no truth: score with no-reference diagnostics.
    """
    from .io import open_cube
    from .io.published import ali_band_centres, nominal_wavelengths

    p = Path(path)
    hint = nominal_wavelengths(p)
    if hint is None or "hyperion" not in p.name.lower():
        raise SceneError(f"{p}: not a known real pair (the Paris Hyperion/ALI file)")
    lr = open_cube(p, variable="HSim", wavelength=hint[0])
    lr.attrs.update(wavelength_note=hint[1], scene=p.name, kind="LR-HSI", sensor="EO-1 Hyperion")
    centres, band_names, provenance = ali_band_centres()
    msi = open_cube(p, variable="MSim", wavelength=centres)
    msi.attrs.update(wavelength_note="nominal EO-1 ALI band centres (middles of the band edges)", scene=p.name,
                     kind="HR-MSI", sensor="EO-1 ALI")
    msi = msi.assign_coords(band_name=("band", band_names))
    ratio = msi.sizes["y"] // lr.sizes["y"]
    note = ("EO-1 Hyperion (LR-HSI) and EO-1 ALI (HR-MSI) over Paris, co-registered, both 30 m; no ground truth. "
            + provenance)
    return ScenePair(lr, msi, ratio, note)


# ---------------------------------------------------------------------------------------------------
# remote crops


@lru_cache(maxsize=1)
def remote_crop_windows() -> list[dict[str, Any]]:
    """The windows of :func:`remote_crops`, from ``fusion_explorer/data/remote_crops.json``: dicts with
    ``name``, ``file`` (under ``<data_dir>/remote``), ``y`` and ``x`` (``[start, stop)`` pixels)."""
    text = resources.files("fusion_explorer.data").joinpath("remote_crops.json").read_text("utf-8")
    return list(json.loads(text)["crops"])


def remote_crops(data_dir: str | os.PathLike | None = None) -> dict[str, xr.DataArray]:
    """Small airborne crops for quick remote-sensing benchmarks, each scaled to a peak of 1.

    ``paviaU 48x48x103`` (ROSIS, band centres from ``paviaU_band_centers_103.mat``),
    ``samson 64x64x156`` (401–889 nm), ``aviris 80x80x224`` (Santa Barbara, 366–2496 nm, water
    bands zero), ``jasper 96x96x198`` (Jasper Ridge, 380–2500 nm) and ``muufl 48x80x72`` (CASI,
    368–1043 nm): windows in :func:`remote_crop_windows` (AVIRIS and MUUFL with their negative
    values set to 0), files under ``<data_dir>/remote`` (default data dir: see :mod:`fusion_explorer.config`).
    """
    root = Path(data_dir) if data_dir else default_data_dir()
    if root is None:
        raise FusionExplorerError("no data directory: set FUSION_EXPLORER_DATA or pass data_dir")
    out = {}
    for window in remote_crop_windows():
        cube = load_scene(root / "remote" / window["file"])
        wl = wavelengths(cube)
        x = np.asarray(cube.values[:, slice(*window["y"]), slice(*window["x"])], dtype=np.float64)
        if window.get("clip_negative"):
            x = np.maximum(x, 0.0)
        out[window["name"]] = make_cube(x / x.max(), wl, attrs={"scene": window["name"]})
    return out
