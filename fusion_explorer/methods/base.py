"""The method registry: a :class:`FusionProblem` goes in, a :class:`FusionResult` comes out.

Both live in :mod:`fusion_explorer.problem` (re-exported here for old imports).

A method is one function registered by name with :func:`register`; it appears in the CLI, the
benchmark and the app without touching them::

    @register("bicubic", "spatial upsampling of the LR-HSI")
    def bicubic(problem: FusionProblem, *, device, progress, seed, **options) -> FusionResult: ...
"""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import os
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from typing import Protocol as _Protocol

import numpy as np
import torch

from ..cube import resolve_device, with_pixel_coords
from ..errors import CubeError, ProblemError
from ..problem import FUSED_KIND
from ..problem import FusionProblem as FusionProblem
from ..problem import FusionResult as FusionResult

#: ``progress(done, total, info)``: called by long methods; ``info`` may carry e.g. the objective.
ProgressCallback = Callable[[int, int, dict], None]


def trace_fused(step: dict) -> np.ndarray:
    """The fused cube ``(bands, Y, X)`` (float32) at one recorded ``trace`` step."""
    if "fused" in step:
        return np.asarray(step["fused"], dtype=np.float32)
    if "endmembers" in step and "abundances" in step:
        w = np.asarray(step["endmembers"], dtype=np.float32)
        h = np.asarray(step["abundances"], dtype=np.float32)
        return (w @ h.reshape(h.shape[0], -1)).reshape(w.shape[0], *h.shape[1:])  # one BLAS call, ~2x einsum
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
    #: the result depends on ``seed`` through a random start (VCA's endmembers): ``fuse(..., starts=N)``
    #: may average N runs from seeds ``seed .. seed + N - 1``
    random_start: bool = False


_REGISTRY: dict[str, MethodInfo] = {}


def register(name: str, description: str = "", *, iterative: bool = False,
             random_start: bool = False) -> Callable[[Method], Method]:
    """Decorator: make a method available by ``name`` everywhere (CLI, benchmark, app). ``random_start``:
    the method starts from a seeded random draw (see :attr:`MethodInfo.random_start`)."""

    def deco(fn: Method) -> Method:
        _REGISTRY[name] = MethodInfo(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0], iterative,
                                     random_start)
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
    starts: int = 1,
    **options: Any,
) -> FusionResult:
    """Run a registered method on ``problem``; time it and stamp provenance on the fused cube.

    ``starts``: for a method with a random start (``cnmf``, ``scalmu``: VCA picks the endmembers' pixels
    along random directions), the fused cube is the mean of ``starts`` runs from seeds ``seed, seed + 1,
    ...``; the result's endmembers, abundances and trace are the first run's. One start's luck moves a
    full CAVE scene by up to 3.5 dB (benchmarks/RESULTS.md, "What moves the clean-protocol numbers"):
    the runs put what the MSI cannot see in different places, and their mean cancels part of it. Costs
    ``starts`` times the time."""
    info = get_method(method)
    check_options(method, options)
    if isinstance(starts, bool) or not isinstance(starts, int | np.integer) or starts < 1:
        raise ProblemError(f"starts must be a positive integer; got {starts!r}")
    if starts > 1 and not info.random_start:
        seeded = ", ".join(n for n, m in sorted(_REGISTRY.items()) if m.random_start)
        raise ProblemError(f"method {method!r} has no random start: starts={starts} would repeat one result "
                           f"(methods with one: {seeded})")
    dev = _usable_device(device)
    start = time.perf_counter()
    result = _run_starts(info, problem, dev, progress, int(seed), int(starts), options)
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
        kind=FUSED_KIND,
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
    # the fused cube lies on the HR-MSI's pixels: give it their y/x coordinates (so it aligns with the truth)
    result.fused = with_pixel_coords(result.fused, problem.hr_msi)
    return result


def _run_starts(info: MethodInfo, problem: FusionProblem, device: torch.device, progress: ProgressCallback | None,
                seed: int, starts: int, options: dict) -> FusionResult:
    """``info``'s method from ``starts`` seeds; the first run's result with the mean fused cube
    (summed in float64, one cube at a time)."""
    def run(i: int) -> FusionResult:
        torch.manual_seed(seed + i)
        report = progress
        if progress is not None and starts > 1:  # one bar over all runs
            def report(done: int, total: int, extra: dict, i: int = i) -> None:
                progress(i * total + done, starts * total, {**extra, "start": f"{i + 1}/{starts}"})
        return info.function(problem, device=device, progress=report, seed=seed + i, **options)

    first = run(0)
    if starts == 1:
        return first
    total = np.asarray(first.fused.values, dtype=np.float64).copy()
    for i in range(1, starts):
        total += np.asarray(run(i).fused.values, dtype=np.float64)
    first.fused = first.fused.copy(data=(total / starts).astype(first.fused.dtype))
    first.params = {**first.params, "starts": starts, "seeds": list(range(seed, seed + starts)),
                    "fused": f"mean of {starts} runs; endmembers, abundances and trace are seed {seed}'s"}
    return first
