"""Image-quality metrics for a fused cube against its ground truth.

Each metric is a small pure function of ``reference`` (the ground truth ``X``) and ``estimate``
(the fused image), both of shape ``(bands, y, x)``: xarray cubes, numpy arrays or torch tensors
(a leading batch dim of 1 is accepted). Values are used as given (no rescaling, no clipping) and
computed in float64 torch, on the input tensor's device (CPU for numpy/xarray, and for devices
without float64 such as MPS). The definitions are those of ``shared/reference/README.md``
("Metric definitions used for every figure here"); :func:`evaluate` adds the convention that the
estimate is clipped to ``[0, 1]`` first.

Errors: shapes that differ, non-finite values, empty or non-real arrays raise
:class:`~fusion_explorer.errors.CubeError`; bad options (unknown metric, ``data_range <= 0``, ...)
raise :class:`~fusion_explorer.errors.ProblemError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from .cube import DIMS
from .errors import CubeError, ProblemError

__all__ = [
    "METRICS",
    "SAM_EPS",
    "ergas",
    "error_map",
    "evaluate",
    "psnr",
    "rmse",
    "sam",
    "sam_map",
    "ssim",
    "uiqi",
]

ArrayLike: TypeAlias = xr.DataArray | np.ndarray | torch.Tensor
Map: TypeAlias = xr.DataArray | np.ndarray

#: Added to the product of the two spectral norms in SAM's cosine.
SAM_EPS = 1e-12
#: The metric names :func:`evaluate` knows, in its default order.
METRICS = ("psnr", "rmse", "sam", "ergas", "ssim", "uiqi")

_SSIM_WIN = 7
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


# --------------------------------------------------------------------------- input handling


def _to_tensor(a: Any, what: str) -> tuple[torch.Tensor, xr.DataArray | None]:
    """``a`` as a float64 ``(bands, y, x)`` tensor (and the DataArray it came from, if any)."""
    da = None
    if isinstance(a, xr.DataArray):
        if set(a.dims) != set(DIMS) or a.ndim != 3:
            raise CubeError(f"{what} must be a cube with dims {DIMS}; got dims {tuple(a.dims)}")
        da = a.transpose(*DIMS)
        values: Any = np.asarray(da.values)
    elif isinstance(a, torch.Tensor):
        values = a.detach()
    else:
        try:
            values = np.asarray(a)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise CubeError(f"{what} could not be read as an array: {exc}") from exc
    if isinstance(values, np.ndarray):
        if values.dtype == bool or not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
            raise CubeError(f"{what} must hold real numbers; got dtype {values.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    else:
        if values.is_complex() or values.dtype == torch.bool:
            raise CubeError(f"{what} must hold real numbers; got dtype {values.dtype}")
        dev = values.device if values.device.type != "mps" else torch.device("cpu")
        t = values.to(device=dev, dtype=torch.float64)
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise CubeError(f"{what} must have shape (bands, y, x) (or (1, bands, y, x)); got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise CubeError(f"{what} is empty: shape {tuple(t.shape)}")
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        b, y, x = (int(v) for v in torch.nonzero(~finite)[0])
        raise CubeError(f"{what} has {n_bad} non-finite values (NaN or Inf), first at band {b}, y {y}, x {x}")
    return t, da


def _pair(reference: ArrayLike, estimate: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, xr.DataArray | None]:
    """Both inputs as float64 tensors of equal shape on one device, plus a DataArray for maps."""
    ref, ref_da = _to_tensor(reference, "reference")
    est, est_da = _to_tensor(estimate, "estimate")
    if ref.shape != est.shape:
        raise CubeError(
            f"reference has shape {tuple(ref.shape)} but estimate has shape {tuple(est.shape)} "
            "(bands, y, x); they must match"
        )
    device = ref.device if isinstance(reference, torch.Tensor) else est.device
    return ref.to(device), est.to(device), ref_da if ref_da is not None else est_da


def _check_positive(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ProblemError(f"{name} must be a positive number; got {value!r}") from exc
    if not math.isfinite(v) or v <= 0:
        raise ProblemError(f"{name} must be a positive number; got {value!r}")
    return v


def _check_window(shape: torch.Size, win: int, metric: str) -> None:
    if shape[1] < win or shape[2] < win:
        raise CubeError(f"{metric} needs an image of at least {win}x{win} pixels; got {shape[1]}x{shape[2]} (y, x)")


def _as_map(values: torch.Tensor, like: xr.DataArray | None, name: str, attrs: dict[str, str]) -> Map:
    """A ``(y, x)`` result as numpy, or as a DataArray with ``like``'s y/x coords."""
    arr = values.detach().to("cpu").numpy()
    if like is None:
        return arr
    coords = {k: c for k, c in like.coords.items() if set(c.dims) <= {"y", "x"}}
    return xr.DataArray(arr, dims=("y", "x"), coords=coords, name=name, attrs=attrs)


# --------------------------------------------------------------------------- tensor kernels


def _mse_per_band(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    return ((ref - est) ** 2).mean(dim=(1, 2))


def _signal_bands(ref: torch.Tensor) -> torch.Tensor:
    """``(bands,)`` bool: the bands of the reference that are not zero at every pixel."""
    return (ref != 0).flatten(1).any(dim=1)


def _psnr(ref: torch.Tensor, est: torch.Tensor, data_range: float) -> tuple[float, int]:
    """PSNR over the signal bands, and how many bands that is."""
    keep = _signal_bands(ref)
    n = int(keep.sum())
    if n == 0:
        raise CubeError("PSNR is undefined: every band of the reference is zero at every pixel")
    mse = _mse_per_band(ref[keep], est[keep])
    per_band = 10.0 * torch.log10(data_range**2 / mse)  # mse 0 -> +inf (IEEE division)
    return float(per_band.mean()), n


def _rmse(ref: torch.Tensor, est: torch.Tensor) -> float:
    return float(torch.sqrt(((ref - est) ** 2).mean()))


def _sam_map(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    dot = (ref * est).sum(dim=0)
    norms = torch.linalg.vector_norm(ref, dim=0) * torch.linalg.vector_norm(est, dim=0)
    cos = (dot / (norms + SAM_EPS)).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def _sam(ref: torch.Tensor, est: torch.Tensor, min_brightness: float | None) -> float:
    angles = _sam_map(ref, est)
    if min_brightness is None:
        return float(angles.mean())
    keep = ref.mean(dim=0) > float(min_brightness)
    n = int(keep.sum())
    if n == 0:
        raise CubeError(
            f"no pixel of the reference has a mean over bands above min_brightness={min_brightness} "
            f"(largest pixel mean {float(ref.mean(dim=0).max()):.4g}); lower it or pass None"
        )
    return float(angles[keep].mean())


def _ergas(ref: torch.Tensor, est: torch.Tensor, ratio: float) -> float:
    mse = _mse_per_band(ref, est)
    mean_sq = ref.mean(dim=(1, 2)) ** 2
    keep = mean_sq > 0
    if not bool(keep.any()):
        raise CubeError("ERGAS is undefined: every band of the reference has mean 0")
    return float((100.0 / ratio) * torch.sqrt((mse[keep] / mean_sq[keep]).mean()))


def _box_mean(t: torch.Tensor, win: int) -> torch.Tensor:
    """Mean over every ``win x win`` window fully inside each band: ``(b, y, x) -> (b, y-win+1, x-win+1)``."""
    return F.avg_pool2d(t[:, None], kernel_size=win, stride=1)[:, 0]


def _signal(ref: torch.Tensor, est: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The bands of both where the reference is not all zero (as :func:`psnr`): an all-zero band
    (a water-vapour band set to 0, a dead detector) would otherwise count as a near-perfect 1."""
    keep = _signal_bands(ref)
    if not bool(keep.any()):
        raise CubeError(f"{metric} is undefined: every band of the reference is zero at every pixel")
    return (ref, est) if bool(keep.all()) else (ref[keep], est[keep])


def _ssim(ref: torch.Tensor, est: torch.Tensor, data_range: float) -> float:
    ref, est = _signal(ref, est, "SSIM")
    win = _SSIM_WIN
    cov_norm = win * win / (win * win - 1.0)  # sample covariance, as scikit-image
    mu_x, mu_y = _box_mean(ref, win), _box_mean(est, win)
    var_x = cov_norm * (_box_mean(ref * ref, win) - mu_x * mu_x)
    var_y = cov_norm * (_box_mean(est * est, win) - mu_y * mu_y)
    cov = cov_norm * (_box_mean(ref * est, win) - mu_x * mu_y)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    # scikit-image: mean over the pixels at least (win-1)/2 from every border (= the valid windows),
    # per band, then over bands; all bands have the same number of windows, so one mean does it.
    return float(s.mean())


def _uiqi(ref: torch.Tensor, est: torch.Tensor, block: int) -> float:
    ref, est = _signal(ref, est, "UIQI")
    mu_x, mu_y = _box_mean(ref, block), _box_mean(est, block)
    var_x = (_box_mean(ref * ref, block) - mu_x * mu_x).clamp_min(0.0)
    var_y = (_box_mean(est * est, block) - mu_y * mu_y).clamp_min(0.0)
    cov = _box_mean(ref * est, block) - mu_x * mu_y
    # Exactly flat windows (max == min) have variance 0; say so exactly, not up to rounding.
    flat_x = _box_max(ref, block) == -_box_max(-ref, block)
    flat_y = _box_max(est, block) == -_box_max(-est, block)
    var_x = torch.where(flat_x, torch.zeros_like(var_x), var_x)
    var_y = torch.where(flat_y, torch.zeros_like(var_y), var_y)
    cov = torch.where(flat_x | flat_y, torch.zeros_like(cov), cov)
    one = torch.ones_like(cov)
    den_s = var_x + var_y
    den_l = mu_x**2 + mu_y**2
    structure = torch.where(den_s > 0, 2 * cov / torch.where(den_s > 0, den_s, one), one)
    luminance = torch.where(den_l > 0, 2 * mu_x * mu_y / torch.where(den_l > 0, den_l, one), one)
    return float((structure * luminance).mean())


def _box_max(t: torch.Tensor, win: int) -> torch.Tensor:
    return F.max_pool2d(t[:, None], kernel_size=win, stride=1)[:, 0]


# --------------------------------------------------------------------------- public metrics


def psnr(reference: ArrayLike, estimate: ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: ``mean_b 10 log10(data_range^2 / MSE_b)`` over the valid bands.

    ``MSE_b`` is the mean squared error of band ``b`` over all pixels. Valid bands are those whose
    reference is not zero at every pixel: a band the provider zeroed (AVIRIS water-absorption and
    dead bands) carries no signal, and its PSNR would be ``+inf`` for any method that also outputs
    zeros there, making the mean ``+inf``; such bands are left out of the band mean, as fusion
    studies drop water-absorption bands before scoring. On data without all-zero bands this is the plain
    per-band mean. :func:`evaluate` reports how many bands were used as ``psnr_bands`` when some
    were left out. Edge cases: a valid band reconstructed exactly (``MSE_b = 0``) has PSNR ``+inf``,
    so the mean is ``+inf`` too (as scikit-image and torchmetrics; no cap: a cap would shift the
    mean by an arbitrary amount); a reference that is zero everywhere raises CubeError.
    ``data_range`` must be > 0 (ProblemError).
    """
    data_range = _check_positive(data_range, "data_range")
    ref, est, _ = _pair(reference, estimate)
    return _psnr(ref, est, data_range)[0]


def rmse(reference: ArrayLike, estimate: ArrayLike) -> float:
    """Global root mean squared error: ``sqrt(mean_{b,y,x} (X - Y)^2)``.

    Edge cases: identical inputs give 0; no division, so no undefined case.
    """
    ref, est, _ = _pair(reference, estimate)
    return _rmse(ref, est)


def sam_map(reference: ArrayLike, estimate: ArrayLike) -> Map:
    """Spectral angle per pixel in degrees, ``(y, x)``: ``acos(clamp(<x,y> / (|x||y| + 1e-12), -1, 1))``.

    ``x`` and ``y`` are the reference and estimate spectra of one pixel; ``1e-12``
    (:data:`SAM_EPS`) is added once, to the product of the two norms. Edge cases: a pixel where
    either spectrum is all zero has cosine 0, so 90 degrees (also when both are zero), never
    NaN; identical non-zero spectra give ``acos(1 - 1e-12/|x|^2)``, about ``8e-5/|x|`` degrees,
    not exactly 0. Returns a DataArray (dims ``y, x``, the input's y/x coords) for xarray input,
    else a numpy array.
    """
    ref, est, like = _pair(reference, estimate)
    return _as_map(_sam_map(ref, est), like, "sam", {"units": "degree", "long_name": "spectral angle"})


def sam(reference: ArrayLike, estimate: ArrayLike, *, min_brightness: float | None = None) -> float:
    """Spectral angle mapper in degrees: the mean over pixels of :func:`sam_map`.

    With ``min_brightness``, the mean is over the pixels whose reference mean over bands is
    strictly greater than it (the README reports 0.05 beside the all-pixel figure); if no pixel
    qualifies, CubeError. Edge cases as :func:`sam_map` (zero spectra count as 90 degrees).
    """
    ref, est, _ = _pair(reference, estimate)
    return _sam(ref, est, min_brightness)


def ergas(reference: ArrayLike, estimate: ArrayLike, ratio: float) -> float:
    """ERGAS: ``(100 / ratio) sqrt(mean_b(MSE_b / mean(X_b)^2))``, ``X`` the reference.

    ``ratio`` is the HR/LR pixel-size ratio (e.g. 32), any positive number. Edge cases: a band
    whose reference mean is 0 has no relative error and is left out of the band mean (the mean
    is over the remaining bands); if every band has mean 0, CubeError. For non-negative data these
    are exactly the all-zero bands that :func:`psnr` leaves out (zeroed water-absorption bands),
    so ERGAS stays finite on such cubes. Identical inputs give 0.
    """
    ratio = _check_ratio(ratio)
    ref, est, _ = _pair(reference, estimate)
    return _ergas(ref, est, ratio)


def ssim(reference: ArrayLike, estimate: ArrayLike, data_range: float = 1.0) -> float:
    """Mean SSIM, as scikit-image ``structural_similarity(X, Y, data_range=..., channel_axis=0)``.

    Per window: ``((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with a 7x7 uniform window, sample (co)variances (``N / (N - 1)``), ``C1 = (0.01 R)^2``,
    ``C2 = (0.03 R)^2``, ``R = data_range``; averaged over the windows lying fully inside the
    image (scikit-image's 3-pixel border crop) and over the bands where the reference is not all
    zero (as :func:`psnr`; scikit-image would count such a band as about 1). Not torchmetrics' SSIM (Gaussian
    11x11 window by default, and a different border handling even with a 7x7 uniform window).
    Edge cases: identical inputs give 1; images smaller than 7x7 raise CubeError.
    """
    data_range = _check_positive(data_range, "data_range")
    ref, est, _ = _pair(reference, estimate)
    _check_window(ref.shape, _SSIM_WIN, "SSIM")
    return _ssim(ref, est, data_range)


def uiqi(reference: ArrayLike, estimate: ArrayLike, block: int = 8) -> float:
    """Wang-Bovik universal image quality index: ``Q = 4 s_xy mu_x mu_y / ((s_x^2 + s_y^2)(mu_x^2 + mu_y^2))``.

    Computed on every ``block x block`` window fully inside the image (sliding, stride 1; Wang &
    Bovik 2002 use 8x8), averaged over windows and over the bands where the reference is not all
    zero (as :func:`psnr`). The variance normalisation cancels.
    Edge cases: ``Q`` is the product of a structure factor ``2 s_xy / (s_x^2 + s_y^2)`` and a
    luminance factor ``2 mu_x mu_y / (mu_x^2 + mu_y^2)``; a factor that is ``0/0`` counts as 1.
    So two flat windows give the luminance factor (1 if equal), two all-zero windows give 1, and
    a flat window against a textured one gives 0 (flat = max equals min, tested exactly). This is
    Wang's reference implementation's rule for non-negative data. Not sewar's ``uqi``. Images
    smaller than ``block`` raise CubeError.
    """
    if isinstance(block, bool) or int(block) != block or block < 2:
        raise ProblemError(f"block must be an integer >= 2; got {block!r}")
    ref, est, _ = _pair(reference, estimate)
    _check_window(ref.shape, int(block), "UIQI")
    return _uiqi(ref, est, int(block))


def error_map(reference: ArrayLike, estimate: ArrayLike) -> Map:
    """Per-pixel RMSE over bands, ``(y, x)``: ``sqrt(mean_b (X_b - Y_b)^2)``.

    Returns a DataArray (dims ``y, x``, the input's y/x coords) for xarray input, else numpy.
    Edge cases: none (0 where the spectra are equal).
    """
    ref, est, like = _pair(reference, estimate)
    err = torch.sqrt(((ref - est) ** 2).mean(dim=0))
    return _as_map(err, like, "error", {"long_name": "per-pixel RMSE over bands"})


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool):
        raise CubeError(f"ratio must be a positive number; got {ratio!r}")
    try:
        r = float(ratio)
    except (TypeError, ValueError) as exc:
        raise CubeError(f"ratio must be a positive number; got {ratio!r}") from exc
    if not math.isfinite(r) or r <= 0:
        raise CubeError(f"ratio must be a positive number; got {ratio!r}")
    return r


def evaluate(
    reference: ArrayLike,
    estimate: ArrayLike,
    ratio: float,
    *,
    clip: bool = True,
    metrics: Iterable[str] = METRICS,
    data_range: float = 1.0,
    sam_min_brightness: float | None = None,
) -> dict[str, float]:
    """The named metrics of ``estimate`` against ``reference``, as ``{name: value}``.

    With ``clip`` (the convention for every reported figure) the estimate is clipped to
    ``[0, 1]`` first; the reference never is. Names: ``psnr`` (dB), ``rmse``, ``sam`` (degrees),
    ``ergas`` (uses ``ratio``), ``ssim``, ``uiqi`` (8x8 windows). With ``sam_min_brightness``
    the dict also holds ``sam_bright``: SAM over pixels whose reference mean exceeds it. When the
    reference has all-zero bands (which :func:`psnr` leaves out), the dict also holds
    ``psnr_bands``: the number of bands the PSNR was averaged over.
    Inputs are checked and converted once. Edge cases are those of each metric.
    """
    names = list(metrics)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ProblemError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    data_range = _check_positive(data_range, "data_range")
    ratio = _check_ratio(ratio)
    ref, est, _ = _pair(reference, estimate)
    if clip:
        est = est.clamp(0.0, 1.0)
    if "ssim" in names:
        _check_window(ref.shape, _SSIM_WIN, "SSIM")
    if "uiqi" in names:
        _check_window(ref.shape, 8, "UIQI")
    compute = {
        "rmse": lambda: _rmse(ref, est),
        "sam": lambda: _sam(ref, est, None),
        "ergas": lambda: _ergas(ref, est, ratio),
        "ssim": lambda: _ssim(ref, est, data_range),
        "uiqi": lambda: _uiqi(ref, est, 8),
    }
    out: dict[str, float] = {}
    for name in names:
        if name == "psnr":
            out["psnr"], n_bands = _psnr(ref, est, data_range)
            if n_bands < ref.shape[0]:
                out["psnr_bands"] = n_bands
        else:
            out[name] = compute[name]()  # psnr is handled above
    if sam_min_brightness is not None:
        out["sam_bright"] = _sam(ref, est, sam_min_brightness)
    return out
