"""The cube model: hyperspectral and multispectral images as labelled arrays.

A cube is an :class:`xarray.DataArray` with dims ``("band", "y", "x")``, a ``wavelength``
coordinate (nm) on ``band`` where known, and provenance in ``attrs`` (sensor, source file,
SRF, ratio, method, ...). Tensors appear only inside the engine: :func:`to_tensor` and
:func:`from_tensor` convert at the boundary, on any device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr

from .errors import CubeError

DIMS = ("band", "y", "x")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or ``None``) picks CUDA, then MPS, then CPU; anything else is passed to torch."""
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise CubeError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CubeError(f"device {device!r} asked for but CUDA is not available here; use 'auto' or 'cpu'")
    return dev


def make_cube(
    data: Any,
    wavelength: Any = None,
    *,
    attrs: Mapping[str, Any] | None = None,
    name: str | None = None,
    dtype: Any = np.float32,
) -> xr.DataArray:
    """Wrap an array of shape ``(band, y, x)`` as a cube.

    ``wavelength`` (nm), if given, must have one value per band. ``attrs`` are copied
    (provenance: ``sensor``, ``source``, ...). Values are converted to ``dtype``. ``y`` and ``x``
    carry pixel indices ``0..n-1`` (a :func:`crop` keeps them, so a crop knows where it lies in its
    scene; an LR cube made from an HR one carries the HR pixel indices it samples).
    """
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise CubeError(f"a cube needs 3 dims (band, y, x); got an array of shape {arr.shape}")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    coords: dict[str, Any] = {"y": np.arange(arr.shape[1]), "x": np.arange(arr.shape[2])}
    if wavelength is not None:
        wl = np.asarray(wavelength, dtype=np.float64).ravel()
        if wl.size != arr.shape[0]:
            raise CubeError(f"{wl.size} wavelengths given for a cube of {arr.shape[0]} bands; give one per band")
        coords["wavelength"] = ("band", wl, {"units": "nm", "long_name": "band centre wavelength"})
    cube = xr.DataArray(arr, dims=DIMS, coords=coords, name=name, attrs=dict(attrs or {}))
    return cube


def wavelengths(cube: xr.DataArray) -> np.ndarray | None:
    """The band centres in nm, or ``None`` when the cube has no ``wavelength`` coordinate."""
    if "wavelength" in cube.coords:
        return np.asarray(cube.coords["wavelength"].values, dtype=np.float64)
    return None


def is_lazy(cube: xr.DataArray) -> bool:
    """Whether the cube's values are a dask array (computed on demand, chunk by chunk)."""
    return cube.chunks is not None


def _finite_and_min(cube: xr.DataArray) -> tuple[int, float]:
    """``(number of non-finite values, minimum of the finite ones)``; one chunked pass for a dask cube."""
    if is_lazy(cube):
        import dask
        import dask.array as da

        data = cube.data
        n_bad, vmin = dask.compute((~da.isfinite(data)).sum(), da.nanmin(da.where(da.isfinite(data), data, np.inf)))
        return int(n_bad), float(vmin)
    values = np.asarray(cube.values)
    finite = np.isfinite(values)
    if finite.all():
        return 0, float(values.min())
    return int((~finite).sum()), float(values[finite].min()) if finite.any() else float("nan")


def _first_nonfinite(cube: xr.DataArray) -> tuple[int, int, int]:
    """``(band, y, x)`` of the first non-finite value (for a dask cube: finds the band first, loads that band)."""
    if is_lazy(cube):
        import dask.array as da

        per_band = np.asarray((~da.isfinite(cube.data)).any(axis=(1, 2)).compute())
        b = int(np.argmax(per_band))
        plane = ~np.isfinite(np.asarray(cube.data[b].compute()))
        y, x = np.argwhere(plane)[0]
        return b, int(y), int(x)
    bad = np.argwhere(~np.isfinite(np.asarray(cube.values)))[0]
    return int(bad[0]), int(bad[1]), int(bad[2])


def _count_negative(cube: xr.DataArray) -> int:
    if is_lazy(cube):
        return int((cube.data < 0).sum().compute())
    return int((np.asarray(cube.values) < 0).sum())


def validate_cube(
    cube: Any,
    *,
    what: str = "cube",
    allow_negative: bool = False,
    need_wavelength: bool = False,
) -> xr.DataArray:
    """Check that ``cube`` is a finite, non-negative ``(band, y, x)`` DataArray; return it.

    Raises :class:`~fusion_explorer.errors.CubeError` naming ``what`` and the first problem found.
    A dask-backed cube is checked by chunked reductions (one pass over its chunks; never loaded
    whole) and returned still lazy.
    """
    if not isinstance(cube, xr.DataArray):
        raise CubeError(f"{what} must be an xarray.DataArray with dims {DIMS}; got {type(cube).__name__}")
    if tuple(cube.dims) != DIMS:
        raise CubeError(f"{what} must have dims {DIMS}; got {tuple(cube.dims)}")
    if min(cube.shape) < 1:
        raise CubeError(f"{what} is empty: shape {dict(zip(cube.dims, cube.shape, strict=True))}")
    if not np.issubdtype(cube.dtype, np.number) or np.issubdtype(cube.dtype, np.complexfloating):
        raise CubeError(f"{what} must hold real numbers; got dtype {cube.dtype}")
    n_bad, vmin = _finite_and_min(cube)
    if n_bad:
        bad = _first_nonfinite(cube)
        raise CubeError(
            f"{what} has {n_bad} non-finite values (NaN or Inf), first at band {bad[0]}, y {bad[1]}, x {bad[2]}"
        )
    if not allow_negative and vmin < 0:
        n_neg = _count_negative(cube)
        raise CubeError(
            f"{what} has {n_neg} negative values (min {vmin:.4g}); reflectance/radiance must be >= 0 "
            "(clip or offset the data first)"
        )
    wl = wavelengths(cube)
    if need_wavelength and wl is None:
        raise CubeError(f"{what} has no 'wavelength' coordinate (nm) on its band dim")
    if wl is not None and wl.size > 1 and not (np.all(np.diff(wl) > 0)):
        raise CubeError(f"{what}: wavelengths must increase strictly along 'band'")
    return cube


#: Negative values count as noise around 0 (and are clipped) when the 0.1th percentile is at least
#: ``-NEGATIVE_TOLERANCE`` times the 99.9th percentile; deeper ones mean an offset or a signed scale.
NEGATIVE_TOLERANCE = 0.2


def clip_small_negatives(
    cube: xr.DataArray, *, what: str = "cube", tolerance: float = NEGATIVE_TOLERANCE
) -> tuple[xr.DataArray, int, float]:
    """``(cube with negatives set to 0, how many were clipped, their minimum)`` for a non-negative model.

    Real data come with small negative values (sensor noise around a dark level, dark-subtracted or
    atmospherically corrected reflectance); they are clipped when they are small against the signal:
    ``q_0.1% >= -tolerance * q_99.9%`` (robust low and high percentiles, so a few outliers neither
    refuse nor excuse a cube). At 25 dB SNR the low percentile is under 0.15x the high one even for
    a flat scene. Data offset below 0 or on a signed scale raise :class:`CubeError`. A cube without
    negative values is returned as it is, with ``(cube, 0, min)``.
    """
    if is_lazy(cube):
        import dask

        n_neg, vmin = dask.compute((cube.data < 0).sum(), cube.data.min())
        if not int(n_neg):
            return cube, 0, float(vmin)
    values = np.asarray(cube.values)
    n_neg = int(np.count_nonzero(values < 0))
    vmin = float(values.min())
    if not n_neg:
        return cube, 0, vmin
    low, high = (float(q) for q in np.percentile(values, [0.1, 99.9]))
    if high <= 0 or low < -tolerance * high:
        scale = f"its 99.9th percentile is {high:.4g}" if high > 0 else "it is mostly <= 0"
        raise CubeError(
            f"{what} has {n_neg} negative values ({n_neg / values.size:.1%}, min {vmin:.4g}, 0.1th percentile "
            f"{low:.4g}) but {scale}: more than noise around 0 (up to {tolerance:g}x the high percentile is "
            "clipped); is it offset or on a signed scale? add the offset back or rescale to reflectance 0-1"
        )
    clipped = cube.copy(data=np.maximum(values, 0))
    clipped.attrs = dict(cube.attrs)
    return clipped, n_neg, vmin


def check_ratio(hr_shape: tuple[int, int], ratio: int, what: str = "HR image") -> None:
    """Raise unless ``ratio`` is a positive integer that divides both HR sizes."""
    if isinstance(ratio, bool) or int(ratio) != ratio or ratio < 1:
        raise CubeError(f"ratio must be a positive integer; got {ratio!r}")
    ratio = int(ratio)
    h, w = hr_shape
    if h % ratio or w % ratio:
        raise CubeError(
            f"ratio {ratio} does not divide the {what} size {h}x{w}; crop to a multiple of {ratio} "
            f"(e.g. {h - h % ratio}x{w - w % ratio})"
        )


def to_tensor(
    cube: xr.DataArray | np.ndarray,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The cube's values as a ``(band, y, x)`` tensor on ``device``."""
    values = cube.values if isinstance(cube, xr.DataArray) else np.asarray(cube)
    return torch.as_tensor(np.ascontiguousarray(values), dtype=dtype, device=resolve_device(device))


def from_tensor(
    tensor: torch.Tensor,
    like: xr.DataArray | None = None,
    *,
    wavelength: Any = None,
    attrs: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> xr.DataArray:
    """A ``(band, y, x)`` tensor (a leading batch dim of 1 is dropped) back to a cube.

    Wavelengths come from ``wavelength``, else from ``like`` (when its band count matches); ``y``/``x``
    coordinates from ``like`` when its spatial size matches (else pixel indices); attrs are
    ``like.attrs`` updated with ``attrs``.
    """
    t = tensor.detach()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    arr = t.to("cpu", torch.float32).numpy()
    if wavelength is None and like is not None and like.sizes.get("band") == arr.shape[0]:
        wavelength = wavelengths(like)
    merged = dict(like.attrs) if like is not None else {}
    merged.update(attrs or {})
    cube = make_cube(arr, wavelength, attrs=merged, name=name if name is not None else getattr(like, "name", None))
    return with_pixel_coords(cube, like)


def with_pixel_coords(cube: xr.DataArray, like: xr.DataArray | None) -> xr.DataArray:
    """``cube`` with the ``y``/``x`` coordinates of ``like`` when both have the same spatial size."""
    if like is None or (like.sizes.get("y"), like.sizes.get("x")) != (cube.sizes["y"], cube.sizes["x"]):
        return cube
    coords = {d: like.coords[d].values for d in ("y", "x") if d in like.coords}
    return cube.assign_coords(coords) if coords else cube


def crop(cube: xr.DataArray, y: slice | tuple[int, int], x: slice | tuple[int, int]) -> xr.DataArray:
    """Spatial crop by index ranges, recording it in ``attrs['crop']``; ``y``/``x`` coordinates are kept
    (the crop's pixels keep their indices in the scene)."""
    ys = y if isinstance(y, slice) else slice(*y)
    xs = x if isinstance(x, slice) else slice(*x)
    out = cube.isel(y=ys, x=xs)
    out.attrs = dict(cube.attrs)
    out.attrs["crop"] = f"y {ys.start}:{ys.stop}, x {xs.start}:{xs.stop}"
    return out
