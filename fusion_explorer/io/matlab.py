"""MATLAB ``.mat`` cubes: v4/v5 files through :mod:`scipy.io`, v7.3 (HDF5) files through :mod:`h5py`.

MATLAB arrays are column-major; h5py shows a v7.3 dataset with its axes reversed, so every
array read from a v7.3 file is transposed back (``arr.T``) to the shape MATLAB shows. From
there both versions share the same rules.

Variable choice (when ``variable`` is not given): the largest numeric 3-D array; failing that,
the largest 2-D ``(bands, pixels)`` array whose pixel count is ``rows * cols`` (from
``image_shape``, from scalar ``nRow``/``nCol`` variables, or a perfect square, with more
pixels than bands).

Layout rule (when ``layout`` is not given), first that applies:

1. 2-D arrays are ``"bp"``: ``(bands, pixels)``, pixels in MATLAB column order of a
   ``rows x cols`` image (``reshape(..., order="F")``).
2. The band axis is the one axis whose length equals the length of a wavelength vector
   (the ``wavelength=`` argument or a wavelength variable of the file).
3. When exactly two axes have the same length, they are ``(y, x)``; the third is the band axis.
4. Otherwise MATLAB's ``(rows, cols, bands)`` convention: band last (``"yxb"``).

Layouts name the axes of the stored array: ``"yxb"``, ``"byx"``, ``"ybx"``, ``"bp"``.

Safety (:mod:`fusion_explorer.io.guard`): a v7.3 file is walked with h5py before anything else and
refused if it reaches other files (external storage, virtual datasets, external links) or declares
a dataset over the read budget; the variables about to be loaded are checked against the budget
from their declared shapes (``scipy.io.whosmat`` for v5), before they are read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
import xarray as xr

from ..cube import DIMS, make_cube
from ..errors import CubeError, ReadError
from .guard import check_hdf5, check_size, cube_nbytes, error_reason, shape_text

LAYOUTS = ("yxb", "byx", "ybx", "bp")
_BAND_AXIS = {"byx": 0, "ybx": 1, "yxb": 2}

_NUMERIC_CLASSES = frozenset("double single int8 uint8 int16 uint16 int32 uint32 int64 uint64".split())
_WAVELENGTH_NAME = re.compile(
    r"^(wave_?lengths?(_nm|_um)?|wls?|lambdas?|bands?_?cent(er|re)s?|.+_spec|spec_?wavelengths?)$", re.I
)
_SCALE_NAME = re.compile(r"^max_?value$", re.I)
_ROWS_NAME = re.compile(r"^(n_?rows?|rows|height)$", re.I)
_COLS_NAME = re.compile(r"^(n_?cols?|n_?columns?|cols|width)$", re.I)

# Sensors of well-known public benchmark files: (file-name fragment, variable or None, sensor).
_SENSOR_HINTS = (
    ("pavia", None, "ROSIS-03"),
    ("hyperion", "HSim", "EO-1 Hyperion"),
    ("hyperion", "MSim", "EO-1 ALI"),
    ("aviris", None, "AVIRIS"),
    ("jasper", None, "AVIRIS"),
    ("muufl", None, "CASI-1500"),
    ("samson", None, "SAMSON"),
)


@dataclass(frozen=True)
class MatVariable:
    """One variable of a .mat file: ``shape`` as MATLAB shows it, ``mclass`` its MATLAB class."""

    name: str
    shape: tuple[int, ...]
    mclass: str

    @property
    def numeric(self) -> bool:
        return self.mclass in _NUMERIC_CLASSES

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        """Bytes per stored value (8 for cells, structs and other classes)."""
        if not (self.numeric or self.mclass in ("logical", "char")):
            return 8
        return np.dtype(
            {"double": "f8", "single": "f4", "logical": "u1", "char": "u2"}.get(self.mclass, self.mclass)
        ).itemsize

    @property
    def is_vector(self) -> bool:
        return self.numeric and len(self.shape) <= 2 and sum(s > 1 for s in self.shape) == 1

    @property
    def is_scalar(self) -> bool:
        return self.numeric and self.size == 1


def to_nanometres(values: Any, units: str | None = None) -> np.ndarray:
    """Wavelengths as float64 nm: converted from ``units`` (nm, um, micrometers, ...) when given,
    else micrometres are assumed when every value is below 30."""
    wl = np.asarray(values, dtype=np.float64).ravel()
    u = (units or "").strip().lower()
    if u in {"nm", "nanometer", "nanometers", "nanometre", "nanometres"}:
        return wl
    if u in {"um", "µm", "μm", "micrometer", "micrometers", "micrometre", "micrometres", "micron", "microns"}:
        return wl * 1000.0
    if wl.size and np.nanmax(np.abs(wl)) < 30:
        return wl * 1000.0
    return wl


def check_dims(cube: Any) -> None:
    """Raise :class:`CubeError` unless ``cube`` is a DataArray with dims ``(band, y, x)`` (for writers)."""
    if not isinstance(cube, xr.DataArray) or tuple(cube.dims) != DIMS:
        got = tuple(cube.dims) if isinstance(cube, xr.DataArray) else type(cube).__name__
        raise CubeError(f"can only write a cube with dims {DIMS}; got {got}")


def mat_version(path: str | Path) -> str:
    """``"mat-v7.3"`` for an HDF5-based .mat file, else ``"mat-v5"`` (v4 files included)."""
    path = Path(path)
    if not path.is_file():
        raise ReadError(path, "no such file")
    try:
        return "mat-v7.3" if h5py.is_hdf5(str(path)) else "mat-v5"
    except OSError as exc:
        raise ReadError(path, f"cannot open the file ({exc})") from exc


def _h5_class(obj: h5py.HLObject) -> str:
    cls = obj.attrs.get("MATLAB_class", b"")
    return cls.decode() if isinstance(cls, bytes) else str(cls)


def mat_inventory(path: str | Path, max_bytes: float | None = None) -> list[MatVariable]:
    """Names, MATLAB shapes and classes of the variables of a .mat file, without loading data.

    A v7.3 (HDF5) file is first checked with :func:`~fusion_explorer.io.guard.check_hdf5` (``max_bytes``
    is its read budget).
    """
    path = Path(path)
    version = mat_version(path)
    try:
        if version == "mat-v5":
            return [MatVariable(n, tuple(int(s) for s in shape), c) for n, shape, c in scipy.io.whosmat(str(path))]
        check_hdf5(path, max_bytes)
        out = []
        with h5py.File(path, "r") as f:
            for name, obj in f.items():
                if name.startswith("#"):
                    continue  # #refs# and #subsystem# hold cell/struct contents
                if isinstance(obj, h5py.Group):
                    out.append(MatVariable(name, (1, 1), _h5_class(obj) or "struct"))
                elif "MATLAB_empty" in obj.attrs:
                    out.append(MatVariable(name, (0, 0), _h5_class(obj)))
                else:
                    kind = {"float64": "double", "float32": "single"}.get(obj.dtype.name, obj.dtype.name)
                    cls = "cell" if obj.dtype.kind == "O" else (_h5_class(obj) or kind)
                    out.append(MatVariable(name, tuple(int(s) for s in obj.shape[::-1]), cls))
        return out
    except ReadError:
        raise
    except Exception as exc:  # scipy/h5py raise many types on corrupt files
        raise ReadError(path, f"not a readable MATLAB file ({error_reason(exc)})") from exc


def wavelength_variables(inventory: Sequence[MatVariable]) -> list[MatVariable]:
    """The numeric vectors whose names say wavelength (``wavelengths``, ``wl``, ``*_spec``, ...)."""
    return [v for v in inventory if v.is_vector and _WAVELENGTH_NAME.match(v.name)]


def read_mat_variables(path: str | Path) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every variable in a .mat file (shapes as MATLAB shows them)."""
    return {v.name: v.shape for v in mat_inventory(path)}


def _load_arrays(
    path: Path, version: str, variables: Sequence[MatVariable], max_bytes: float | None = None
) -> dict[str, np.ndarray]:
    """Load ``variables`` (from :func:`mat_inventory`) as numpy arrays in MATLAB axis order, after checking
    their declared size against the read budget."""
    names = [v.name for v in variables]
    shown = "; ".join(f"variable '{v.name}', {shape_text(v.shape)} {v.mclass}" for v in variables)
    check_size(sum(cube_nbytes(v.shape, v.itemsize) for v in variables), path, max_bytes, shown)
    try:
        if version == "mat-v5":
            data = scipy.io.loadmat(str(path), variable_names=list(names))
            missing = [n for n in names if n not in data]
            if missing:
                raise ReadError(path, f"variable(s) {missing} could not be read (file truncated?)")
            return {n: np.asarray(data[n]) for n in names}
        with h5py.File(path, "r") as f:
            return {n: np.asarray(f[n][()]).T for n in names}
    except ReadError:
        raise
    except Exception as exc:
        raise ReadError(
            path, f"cannot read variable(s) {list(names)}: file truncated or corrupt? ({error_reason(exc)})"
        ) from exc


def _pick_variable(
    path: Path, inventory: list[MatVariable], variable: str | None, image_shape: tuple[int, int] | None
) -> MatVariable:
    numeric = [v for v in inventory if v.numeric and v.size > 0]
    if variable is not None:
        found = [v for v in inventory if v.name == variable]
        if not found:
            raise ReadError(path, f"no variable {variable!r}; the file has {[v.name for v in inventory]}")
        var = found[0]
        if not var.numeric or len(var.shape) not in (2, 3):
            raise ReadError(
                path, f"variable {variable!r} is {var.mclass} {var.shape}; expected a numeric 2-D or 3-D array"
            )
        return var
    cubes = [v for v in numeric if len(v.shape) == 3]
    if cubes:
        return max(cubes, key=lambda v: v.size)
    rows_cols = image_shape or _file_image_shape(path, inventory)
    flat = [
        v
        for v in numeric
        if len(v.shape) == 2
        and v.shape[1] > v.shape[0]
        and (v.shape[1] == math.prod(rows_cols) if rows_cols else math.isqrt(v.shape[1]) ** 2 == v.shape[1])
    ]
    if flat:
        return max(flat, key=lambda v: v.size)
    shapes = {v.name: v.shape for v in inventory}
    raise ReadError(
        path,
        f"no image cube found: no numeric 3-D array and no (bands, pixels) 2-D array; variables {shapes}"
        " (pass variable= and image_shape=)",
    )


def _file_image_shape(path: Path, inventory: list[MatVariable]) -> tuple[int, int] | None:
    """``(rows, cols)`` from scalar variables such as ``nRow``/``nCol``, if the file has both."""
    rows = [v for v in inventory if v.is_scalar and _ROWS_NAME.match(v.name)]
    cols = [v for v in inventory if v.is_scalar and _COLS_NAME.match(v.name)]
    if not (rows and cols):
        return None
    vals = _load_arrays(path, mat_version(path), [rows[0], cols[0]])
    return int(vals[rows[0].name].item()), int(vals[cols[0].name].item())


def band_axis(shape: Sequence[int], wavelength_lengths: Sequence[int] = ()) -> tuple[str, str]:
    """The layout of a stored array of ``shape`` and the rule that chose it (see module doc)."""
    if len(shape) == 2:
        return "bp", "2-D array: (bands, pixels) in MATLAB column order"
    matches = [ax for ax in range(3) if shape[ax] in set(wavelength_lengths)]
    if len(matches) == 1:
        ax, rule = matches[0], "band axis length matches the wavelength vector"
    elif len(set(shape)) == 2:
        ax = next(a for a in range(3) if list(shape).count(shape[a]) == 1)
        rule = "the two equal axes are (y, x); the other is the band axis"
    else:
        ax, rule = 2, "MATLAB (rows, cols, bands) convention: band axis last"
    return {0: "byx", 1: "ybx", 2: "yxb"}[ax], rule


def read_wavelength_vector(path: str | Path, variable: str | None = None) -> np.ndarray:
    """The one numeric vector of a .mat file (or ``variable``), as nm (µm converted)."""
    path = Path(path)
    inventory = mat_inventory(path)
    vectors = [v for v in inventory if v.is_vector and (variable is None or v.name == variable)]
    if len(vectors) > 1:
        named = [v for v in vectors if _WAVELENGTH_NAME.match(v.name)]
        vectors = named if len(named) == 1 else vectors
    if len(vectors) != 1:
        raise ReadError(
            path,
            f"expected exactly one numeric vector of wavelengths; found {[v.name for v in vectors]} "
            f"among {read_mat_variables(path)}",
        )
    return to_nanometres(_load_arrays(path, mat_version(path), vectors)[vectors[0].name])


def _sensor_hint(path: Path, variable: str) -> str | None:
    fname = path.name.lower()
    for fragment, var, sensor in _SENSOR_HINTS:
        if fragment in fname and (var is None or var == variable):
            return sensor
    return None


def read_mat(
    path: str | Path,
    *,
    variable: str | None = None,
    layout: str | None = None,
    image_shape: tuple[int, int] | None = None,
    wavelength: Any = None,
    max_bytes: float | None = None,
) -> xr.DataArray:
    """Read a cube ``(band, y, x)`` float32 from a MATLAB v5 or v7.3 file.

    ``variable``, ``layout`` (``"yxb"``, ``"byx"``, ``"ybx"``, ``"bp"``) and ``image_shape``
    ``(rows, cols)`` override the detection rules of the module doc. ``wavelength`` (nm, one per
    band) replaces any wavelength vector of the file. A scalar ``maxValue`` variable divides the
    values (``attrs['scale']``). Integer data keep their physical values (as float32).

    ``max_bytes`` is the read budget (default: ``$FUSION_EXPLORER_MAX_READ_BYTES``, else
    min(1 GiB, RAM / 8)); see the module doc for what is refused before reading.
    """
    path = Path(path).resolve()
    version = mat_version(path)
    inventory = mat_inventory(path, max_bytes)
    if layout is not None and layout not in LAYOUTS:
        raise ReadError(path, f"unknown layout {layout!r}; use one of {LAYOUTS}")
    if image_shape is not None:
        image_shape = (int(image_shape[0]), int(image_shape[1]))
    var = _pick_variable(path, inventory, variable, image_shape)

    wl_vars = [v for v in wavelength_variables(inventory) if v.name != var.name]
    given_wl = None if wavelength is None else to_nanometres(wavelength)
    wl_lengths = [given_wl.size] if given_wl is not None else [v.size for v in wl_vars]
    if layout is None:
        layout, rule = band_axis(var.shape, wl_lengths)
    else:
        rule = "given"
    if (layout == "bp") != (len(var.shape) == 2):
        raise ReadError(path, f"layout {layout!r} does not fit variable {var.name!r} of shape {var.shape}")

    scale_vars = [v for v in inventory if v.is_scalar and _SCALE_NAME.match(v.name)]
    arrays = _load_arrays(path, version, [var, *scale_vars], max_bytes)
    arr = arrays[var.name]
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ReadError(path, f"variable {var.name!r} holds {arr.dtype}, not real numbers")

    attrs: dict[str, Any] = {
        "variable": var.name,
        "layout": layout,
        "layout_rule": rule,
        "stored_dtype": str(arr.dtype),
    }
    if layout == "bp":
        rows_cols = image_shape or _file_image_shape(path, inventory)
        n_pix = arr.shape[1]
        if rows_cols is None:
            side = math.isqrt(n_pix)
            if side * side != n_pix:
                raise ReadError(
                    path, f"{var.name!r} has {n_pix} pixels, not a square image; pass image_shape=(rows, cols)"
                )
            rows_cols = (side, side)
        if math.prod(rows_cols) != n_pix:
            raise ReadError(path, f"image_shape {rows_cols} does not hold the {n_pix} pixels of {var.name!r}")
        data = arr.reshape((arr.shape[0], *rows_cols), order="F")
        attrs["pixel_order"] = "MATLAB column-major (reshape order='F')"
    else:
        data = np.moveaxis(arr, _BAND_AXIS[layout], 0)
    data = np.ascontiguousarray(data)

    if given_wl is not None:
        wl = given_wl
    else:
        match = [v for v in wl_vars if v.size == data.shape[0]]
        wl = to_nanometres(_load_arrays(path, version, match[:1])[match[0].name]) if match else None
        if match:
            attrs["wavelength_variable"] = match[0].name

    values = data.astype(np.float32)
    if scale_vars:
        scale = float(np.asarray(arrays[scale_vars[0].name]).item())
        if scale > 0:
            values = (data / scale).astype(np.float32)
            attrs["scale"] = scale
            attrs["scale_note"] = f"stored values divided by {scale_vars[0].name}={scale:g}"

    attrs.update(source=str(path), format=version)
    sensor = _sensor_hint(path, var.name)
    if sensor:
        attrs["sensor"] = sensor
    try:
        return make_cube(values, wl, attrs=attrs, name=var.name)
    except ValueError as exc:
        raise ReadError(path, str(exc)) from exc


def read_numeric_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every numeric (float, int, uint) variable of a MATLAB v4/v5 file, whole, by :func:`scipy.io.loadmat`:
    for the small response tables of :func:`fusion_explorer.srf.read_srf_file`. v7.3 files are refused.

    No size check: unlike :func:`read_mat`, the file is not walked against the read budget first.
    """
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
