"""Argument types and output checks shared by the commands."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import FusionExplorerError, WriteError


def _number(kind: type, positive: bool = True) -> Any:
    """An argparse type: a finite ``kind`` (int or float), above 0 if ``positive``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}; got {text!r}") from None
        if not math.isfinite(value) or (positive and value <= 0):
            raise argparse.ArgumentTypeError(f"must be a finite number{' above 0' if positive else ''}; got {text!r}")
        return value

    return parse


def _pair(text: str) -> tuple[float, float]:
    """An argparse type: ``DY,DX`` as two finite floats."""
    try:
        dy, dx = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DY,DX (two numbers); got {text!r}") from None
    if not (math.isfinite(dy) and math.isfinite(dx)):
        raise argparse.ArgumentTypeError(f"expected two finite numbers; got {text!r}")
    return dy, dx


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return Path(a).resolve() == Path(b).resolve()


def _check_outputs(targets: Sequence[Path], inputs: Mapping[str, str | None], overwrite: bool) -> None:
    """Refuse an output that is one of the ``inputs`` (``{flag: path}``), even with ``overwrite``,
    and an existing one without it; before any work is done."""
    from ..io.atomic import check_target

    for target in targets:
        if target.is_dir():
            raise WriteError(target, "is a folder; name a file to write")
        for flag, spec in inputs.items():
            if spec and Path(spec).exists() and _same_file(target, spec):
                raise WriteError(target, f"is the input {flag}; write the result to another file")
        check_target(target, overwrite=overwrite)


def _progress(desc: str):
    """A progress callback drawing a tqdm bar on stderr, opened at the first update (so an error raised
    before the method starts is the only line printed)."""
    from tqdm.auto import tqdm

    bars: list = []

    def update(done: int, total: int, info: dict) -> None:
        if not bars:
            bars.append(tqdm(desc=desc, leave=False, file=sys.stderr))
        bar = bars[0]
        bar.total = total
        bar.n = done
        if info:
            bar.set_postfix({k: f"{v:.4g}" for k, v in info.items() if isinstance(v, (int, float))})
        bar.refresh()

    update.close = lambda: bars and bars[0].close()  # type: ignore[attr-defined]
    return update


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise FusionExplorerError(f"--option expects KEY=VALUE; got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _load_truth(args: argparse.Namespace):
    from ..scenes import center_crop, load_scene

    cube = load_scene(args.scene)
    if args.clip_negative:
        cube = cube.clip(min=0)
    return center_crop(cube, args.crop, 1) if args.crop else cube


def psf_from_args(args: argparse.Namespace, msi: Any) -> tuple[Any, int | None]:
    """``(psf, offset)`` of ``fuse``'s options, for the whole-scene and the tiled path alike: the named
    ``--protocol``'s, or a Gaussian of ``--psf-sigma`` (``--psf-size`` pixels, refused before the kernel
    is allocated when larger than the HR-MSI ``msi``), else ``(None, --offset)`` (the method estimates it)."""
    from ..physics import default_kernel_size, gaussian_kernel, get_protocol

    if args.psf_size and not args.psf_sigma:
        raise FusionExplorerError("--psf-size needs --psf-sigma (the Gaussian PSF's width)")
    psf, offset = None, args.offset
    if args.protocol:
        proto = get_protocol(args.protocol)
        psf, offset = proto.psf().numpy(), proto.offset if offset is None else offset
    elif args.psf_sigma:
        size = args.psf_size or default_kernel_size(args.psf_sigma, ratio=1)
        if size > max(msi.sizes["y"], msi.sizes["x"]):
            raise FusionExplorerError(
                f"the PSF ({size}x{size} pixels, sigma {args.psf_sigma:g}) is larger than the HR-MSI "
                f"({msi.sizes['y']}x{msi.sizes['x']}); give a smaller --psf-size or --psf-sigma"
            )
        psf = gaussian_kernel(size, args.psf_sigma).numpy()
    return psf, offset
