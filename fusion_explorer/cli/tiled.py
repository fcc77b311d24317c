"""``fuse --tile N``: tiled fusion on dask (:mod:`fusion_explorer.tiled`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import FusionExplorerError, WriteError
from .common import _parse_options, _progress, _same_file


def _open_lazy_input(spec: str):
    """An input for tiled fusion: lazily (Zarr, NetCDF, ENVI), else read whole by :func:`open_cube`."""
    from ..io import is_zarr_store, open_cube
    from ..tiled import as_lazy, open_lazy

    path = Path(spec)
    if path.is_dir() and not is_zarr_store(path):
        return as_lazy(open_cube(spec))  # a CAVE folder
    if path.suffix.lower() == ".mat":
        return as_lazy(open_cube(spec))
    return open_lazy(spec)


def fuse_tiled_command(args: argparse.Namespace, inputs: dict) -> int:
    """``fuse --tile N``: lazy inputs, tiles on dask, the fused cube written to a Zarr store tile by tile."""
    from ..physics import default_kernel_size, gaussian_kernel, get_protocol
    from ..srf import srf_from_name_or_path
    from ..tiled import TiledProblem, fuse_tiled

    out = Path(args.out)
    if out.suffix.lower() != ".zarr":
        raise FusionExplorerError(f"--tile writes a Zarr store: name --out like OUT.zarr; got {args.out!r}")
    if args.tile < 1:
        raise FusionExplorerError(f"--tile must be a positive number of pixels; got {args.tile}")
    if args.device not in ("auto", "cpu"):
        raise FusionExplorerError("tiled fusion runs on the CPU workers of the dask scheduler; drop --device")
    if args.checkpoint:
        raise FusionExplorerError(f"--checkpoint: method {args.method!r} has no tiled version with weights")
    if out.exists() and not out.is_dir():
        raise WriteError(out, "is a file; --out names a Zarr store (a folder) to write")
    for flag, spec in inputs.items():
        if spec and Path(spec).exists() and _same_file(out, spec):
            raise WriteError(out, f"is the input {flag}; write the result to another store")
    if out.exists() and not args.overwrite:
        raise WriteError(out, "exists; pass --overwrite to replace it")
    if not args.srf:
        raise FusionExplorerError("tiled fusion needs --srf (estimating the SRF needs the whole scene)")
    lr = _open_lazy_input(args.lr_hsi)
    msi = _open_lazy_input(args.hr_msi)
    srf = srf_from_name_or_path(args.srf, lr)
    psf, offset = None, args.offset
    if args.protocol:
        proto = get_protocol(args.protocol)
        psf, offset = proto.psf().numpy(), proto.offset if offset is None else offset
    elif args.psf_sigma:
        size = args.psf_size or default_kernel_size(args.psf_sigma, ratio=1)
        psf = gaussian_kernel(size, args.psf_sigma).numpy()
    problem = TiledProblem(lr, msi, srf, ratio=args.ratio, psf=psf, offset=offset)
    options = _parse_options(args.option)
    bar = _progress(f"{args.method} tiles") if not args.quiet else None

    def started(runner) -> None:
        if runner.dashboard_link:
            print(f"dask dashboard: {runner.dashboard_link}", file=sys.stderr, flush=True)

    import time

    start = time.perf_counter()
    try:
        fused = fuse_tiled(problem, args.method, tile=args.tile, scheduler=args.scheduler or "threads",
                           workers=args.workers, out=out, overwrite=args.overwrite, seed=args.seed, progress=bar,
                           on_start=started, **options)
    finally:
        if bar is not None:
            bar.close()
    print(f"{args.method} (tiled, {args.tile} px tiles, {args.scheduler or 'threads'}): {fused.shape} in "
          f"{time.perf_counter() - start:.2f} s -> {out}")
    return 0
