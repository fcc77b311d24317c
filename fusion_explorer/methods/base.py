"""The method interface: a :class:`FusionProblem` goes in, a :class:`FusionResult` comes out.

A method is one function registered by name with :func:`register`; it appears in the CLI, the
benchmark and the app without touching them::

    @register("bicubic", "spatial upsampling of the LR-HSI")
    def bicubic(problem: FusionProblem, *, device, progress, seed, **options) -> FusionResult: ...
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import numbers
import os
import time
import types
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as _Protocol

import numpy as np
import torch
import xarray as xr

from ..cube import check_ratio, resolve_device, to_tensor, validate_cube, wavelengths
from ..errors import CubeError, ProblemError

#: ``progress(done, total, info)``: called by long methods; ``info`` may carry e.g. the objective.
ProgressCallback = Callable[[int, int, dict], None]


@dataclass
class FusionProblem:
    """The inputs of a fusion: LR-HSI ``(band, y, x)`` and HR-MSI ``(msi_band, Y, X)``.

    ``srf`` (:class:`~fusion_explorer.srf.SRF`) and ``psf`` (2-D kernel) are the known sensor
    responses, or ``None`` when a method must estimate them. ``ratio`` is inferred from the sizes
    when not given; ``offset`` is the sampling phase of the LR grid on the HR grid (``None``:
    unknown). ``truth`` is the HR-HSI when known: it is for scoring only and methods never read it.
    """

    lr_hsi: xr.DataArray
    hr_msi: xr.DataArray
    srf: Any = None
    ratio: int | None = None
    psf: np.ndarray | None = None
    offset: int | None = None
    border: str = "reflect"
    truth: xr.DataArray | None = None
    name: str = ""
    protocol: Any = None

    def __post_init__(self) -> None:
        validate_cube(self.lr_hsi, what="LR-HSI")
        validate_cube(self.hr_msi, what="HR-MSI")
        (h, w), (big_h, big_w) = self.lr_size, self.hr_size
        if self.ratio is None:
            if big_h % h or big_w % w or big_h // h != big_w // w:
                raise ProblemError(
                    f"the HR-MSI ({big_h}x{big_w}) is not an integer multiple of the LR-HSI ({h}x{w}) "
                    "with one ratio for both axes"
                )
            self.ratio = big_h // h
        check_ratio((big_h, big_w), self.ratio, what="HR-MSI")
        if (big_h // self.ratio, big_w // self.ratio) != (h, w):
            raise ProblemError(
                f"LR-HSI is {h}x{w} but the HR-MSI {big_h}x{big_w} at ratio {self.ratio} needs "
                f"{big_h // self.ratio}x{big_w // self.ratio}"
            )
        if self.offset is not None and not (int(self.offset) == self.offset and 0 <= self.offset < self.ratio):
            raise ProblemError(
                f"offset (the LR grid's sampling phase) must be an integer in 0..{self.ratio - 1} at ratio "
                f"{self.ratio}; got {self.offset!r}"
            )
        if self.srf is not None:
            if self.srf.hsi_bands != self.hsi_bands or self.srf.msi_bands != self.msi_bands:
                raise ProblemError(
                    f"SRF {self.srf.name!r} maps {self.srf.hsi_bands} to {self.srf.msi_bands} bands, but the "
                    f"LR-HSI has {self.hsi_bands} bands and the HR-MSI {self.msi_bands}"
                )
            self.srf.check_cube(self.lr_hsi)
        if self.psf is not None:
            self.psf = np.asarray(self.psf, dtype=np.float64)
            if self.psf.ndim != 2 or self.psf.size == 0 or not np.isfinite(self.psf).all():
                raise ProblemError(f"the PSF must be a finite 2-D kernel; got shape {self.psf.shape}")
            if max(self.psf.shape) > max(big_h, big_w):
                raise ProblemError(
                    f"the PSF ({self.psf.shape[0]}x{self.psf.shape[1]}) is larger than the HR image ({big_h}x{big_w})"
                )
        self._check_scales()
        if self.truth is not None:
            validate_cube(self.truth, what="ground truth")
            if self.truth.shape != (self.hsi_bands, big_h, big_w):
                raise ProblemError(
                    f"ground truth has shape {self.truth.shape}; expected {(self.hsi_bands, big_h, big_w)}"
                )

    def _check_scales(self) -> None:
        """Refuse an LR-HSI and an HR-MSI on different scales (an int16 cube x 1e4 beside reflectance).

        The spatial degradation keeps means, so the HR-MSI's band means ``m`` should be the SRF applied
        to the LR-HSI's band means ``h``: ``m ~ R h``. Without an SRF, each MSI band mean lies between
        ``min(h)`` and ``max(h)`` (an SRF row is a weighted mean). Off by a factor over 3: error;
        with an SRF, over 1.5: a warning.
        """
        h = np.asarray(self.lr_hsi.values).mean(axis=(1, 2), dtype=np.float64)
        m = np.asarray(self.hr_msi.values).mean(axis=(1, 2), dtype=np.float64)
        if self.srf is not None:
            expected = float((self.srf.matrix @ h).sum())
            what = f"the SRF applied to the LR-HSI has mean {expected / self.msi_bands:.4g}"
            factor = m.sum() / expected if expected > 0 and m.sum() > 0 else 1.0
        else:
            what = f"the LR-HSI's band means span {h.min():.4g} to {h.max():.4g}"
            factor = 1.0
            if h.max() > 0 and m.min() > h.max():
                factor = m.min() / h.max()
            elif h.min() > 0 and 0 < m.max() < h.min():
                factor = m.max() / h.min()
        off = max(factor, 1 / factor)
        if not math.isfinite(off) or off <= 1.5:
            return
        message = (
            f"the LR-HSI and the HR-MSI are on different scales: the HR-MSI's mean is {m.mean():.4g} but "
            f"{what} (a factor {factor:.3g}); put both on one scale (e.g. reflectance 0-1)"
        )
        power = round(math.log10(factor))
        if power and abs(math.log10(factor) - power) < 0.3:
            message += f", e.g. divide the {'LR-HSI' if power < 0 else 'HR-MSI'} by 1e{abs(power)}"
        if off > 3:
            raise ProblemError(message)
        if self.srf is not None:
            warnings.warn(message, UserWarning, stacklevel=4)

    @property
    def lr_size(self) -> tuple[int, int]:
        return self.lr_hsi.sizes["y"], self.lr_hsi.sizes["x"]

    @property
    def hr_size(self) -> tuple[int, int]:
        return self.hr_msi.sizes["y"], self.hr_msi.sizes["x"]

    @property
    def hsi_bands(self) -> int:
        return self.lr_hsi.sizes["band"]

    @property
    def msi_bands(self) -> int:
        return self.hr_msi.sizes["band"]

    @property
    def wavelength(self) -> np.ndarray | None:
        return wavelengths(self.lr_hsi)

    def tensors(self, device: Any = "auto", dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Y_h, Y_m)`` as tensors ``(band, y, x)`` and ``(msi_band, Y, X)`` on ``device``."""
        return to_tensor(self.lr_hsi, device, dtype), to_tensor(self.hr_msi, device, dtype)

    def spatial_operator(self):
        """The known spatial degradation (PSF + decimation), or ``None`` if the PSF is unknown."""
        from ..physics import SpatialDegradation

        if self.psf is None:
            return None
        offset = self.offset if self.offset is not None else (self.ratio - 1) // 2
        return SpatialDegradation(self.psf, self.ratio, offset, self.border)


@dataclass
class FusionResult:
    """The fused HR-HSI ``(band, y, x)`` and what the method can show of its work.

    ``trace``: recorded iterates, one dict per recorded iteration/layer, with these keys (all
    optional except ``iteration`` and ``label``):

    - ``iteration`` (int, cumulative update/layer count; 0 = initialisation), ``label`` (str),
    - ``endmembers`` ``(bands, p)`` and ``abundances`` ``(p, Y, X)`` (HR) for unmixing methods,
      ``abundances_lr`` ``(p, y, x)``; the fused cube is then ``endmembers @ abundances``,
    - ``fused`` ``(bands, Y, X)`` for methods that are not unmixings (snapshots),
    - ``objective``, ``residual_hsi``, ``residual_msi`` (floats).

    :func:`trace_fused` rebuilds the fused cube of one step either way. ``endmembers``
    ``(bands, p)`` and ``abundances`` ``(p, y, x)`` for unmixing methods; ``srf``/``psf`` the
    estimated responses for blind methods; ``extras`` anything else.
    """

    fused: xr.DataArray
    method: str
    params: dict = field(default_factory=dict)
    seconds: float = float("nan")
    device: str = "cpu"
    trace: list[dict] = field(default_factory=list)
    endmembers: np.ndarray | None = None
    abundances: np.ndarray | None = None
    srf: Any = None
    psf: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


def trace_fused(step: dict) -> np.ndarray:
    """The fused cube ``(bands, Y, X)`` (float32) at one recorded ``trace`` step."""
    if "fused" in step:
        return np.asarray(step["fused"], dtype=np.float32)
    if "endmembers" in step and "abundances" in step:
        w = np.asarray(step["endmembers"], dtype=np.float32)
        h = np.asarray(step["abundances"], dtype=np.float32)
        return np.einsum("bp,pyx->byx", w, h, optimize=True)
    raise ProblemError(f"trace step {step.get('label', '?')!r} holds neither 'fused' nor endmembers and abundances")


class Method(_Protocol):
    def __call__(
        self,
        problem: FusionProblem,
        *,
        device: torch.device,
        progress: ProgressCallback | None,
        seed: int,
        **options: Any,
    ) -> FusionResult: ...


@dataclass(frozen=True)
class MethodInfo:
    name: str
    function: Method
    description: str
    iterative: bool = False


_REGISTRY: dict[str, MethodInfo] = {}


def register(name: str, description: str = "", *, iterative: bool = False) -> Callable[[Method], Method]:
    """Decorator: make a method available by ``name`` everywhere (CLI, benchmark, app)."""

    def deco(fn: Method) -> Method:
        _REGISTRY[name] = MethodInfo(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0], iterative)
        return fn

    return deco


def available_methods() -> dict[str, MethodInfo]:
    """Registered methods by name."""
    return dict(_REGISTRY)


def get_method(name: str) -> MethodInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ProblemError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


_FUSE_ARGUMENTS = ("problem", "device", "progress", "seed")


def check_options(method: str, options: Mapping[str, Any]) -> None:
    """Raise :class:`ProblemError` for an option ``method`` does not take or a value of the wrong type.

    A method's options are the keyword parameters of its function (beyond ``problem``, ``device``,
    ``progress``, ``seed``); a value must fit the parameter's annotation (or its default's type):
    ints pass for floats, lists and tuples for sequences, paths for strings; ``True`` is not a
    number. A method that also takes ``**options`` checks the names it does not declare itself.
    """
    fn = get_method(method).function
    params = {
        n: p for n, p in inspect.signature(fn).parameters.items()
        if n not in _FUSE_ARGUMENTS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    more = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not evaluate: fall back to the defaults' types
        hints = {}
    for key, value in options.items():
        if key not in params:
            if more:
                continue
            raise ProblemError(
                f"unknown option {key!r} for method {method!r}; valid options: {', '.join(sorted(params)) or 'none'}"
            )
        default = params[key].default
        hint = hints.get(key, Any if default is None or default is inspect.Parameter.empty else type(default))
        if not _fits(value, hint):
            raise ProblemError(
                f"option {key}={value!r} of method {method!r}: expected {_type_name(hint)}, got {type(value).__name__}"
            )


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (see :func:`check_options`); unknown kinds pass."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is None or hint is type(None):
        return value is None
    cls = typing.get_origin(hint) or hint
    if not isinstance(cls, type):  # Any, Literal, TypeVar, ...: not checked
        return True
    if cls is bool:
        return isinstance(value, (bool, np.bool_))
    if isinstance(value, (bool, np.bool_)):
        return False
    if cls is int:
        return isinstance(value, numbers.Integral)
    if cls is float:
        return isinstance(value, numbers.Real)
    if cls is str:
        return isinstance(value, (str, os.PathLike))
    if cls in (list, tuple) or issubclass(cls, collections.abc.Sequence):
        return isinstance(value, (list, tuple))
    return isinstance(value, cls)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "").replace("collections.abc.", "")


def available_devices() -> list[str]:
    """Device names this machine can run on (what ``device=`` accepts)."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def _usable_device(device: Any) -> torch.device:
    """:func:`resolve_device`, refusing devices this machine has not (``mps``, ``meta``, ``cuda:7``)."""
    try:
        dev = resolve_device(device)
    except CubeError:
        dev = None
    if dev is not None and (
        dev.type == "cpu"
        or (dev.type == "mps" and "mps" in available_devices())
        or (dev.type == "cuda" and torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count())
    ):
        return dev
    raise ProblemError(f"device {str(device)!r} is not available here; available: {', '.join(available_devices())}")


def fuse(
    problem: FusionProblem,
    method: str = "bicubic",
    *,
    device: Any = "auto",
    progress: ProgressCallback | None = None,
    seed: int = 0,
    **options: Any,
) -> FusionResult:
    """Run a registered method on ``problem``; time it and stamp provenance on the fused cube."""
    info = get_method(method)
    check_options(method, options)
    dev = _usable_device(device)
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = info.function(problem, device=dev, progress=progress, seed=seed, **options)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    result.seconds = time.perf_counter() - start
    result.device = str(dev)
    fused = result.fused
    values = np.asarray(fused.values)
    if not np.isfinite(values).all():
        raise ProblemError(f"method {method!r} produced non-finite values on {problem.name or 'this problem'}")
    if fused.shape != (problem.hsi_bands, *problem.hr_size):
        raise ProblemError(
            f"method {method!r} returned shape {fused.shape}; expected {(problem.hsi_bands, *problem.hr_size)}"
        )
    attrs = {k: v for k, v in problem.lr_hsi.attrs.items() if k not in ("kind",)}
    attrs.update(
        kind="fused HR-HSI",
        method=method,
        method_params=repr(result.params),
        seconds=round(result.seconds, 4),
        device=result.device,
        ratio=problem.ratio,
        srf=problem.srf.name if problem.srf is not None else "estimated",
    )
    fused.attrs = attrs
    if "wavelength" not in fused.coords and problem.wavelength is not None:
        fused = fused.assign_coords(wavelength=("band", problem.wavelength, {"units": "nm"}))
        result.fused = fused
    return result
