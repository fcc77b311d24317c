"""``fuse --tile N``: tiled fusion on dask (:mod:`fusion_explorer.tiled`)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from ..errors import FusionExplorerError, WriteError
from .common import _parse_options, _progress, _same_file, psf_from_args


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


#: glibc ``mallopt`` parameter: the most malloc arenas (each thread that allocates may get its own)
M_ARENA_MAX = -8
#: glibc ``mallopt`` parameter, and the value set: allocations from 1 MiB up get pages of their own,
#: returned when freed. glibc's default threshold rises with the largest block freed (up to 32 MiB),
#: after which a tile task's many-megabyte temporaries come from the arenas and, freed in another
#: order than taken, leave them fragmented: in tiled SCALMU at 4096² one layer's update pass (512-px
#: tiles, 2 workers) added 0.6 GiB of address space that stayed.
M_MMAP_THRESHOLD, MMAP_THRESHOLD = -3, 1 << 20


def limit_malloc_arenas(workers: int | None) -> int | None:
    """Cap glibc's malloc arenas at ``max(2, workers)`` in this process and in the process workers it
    starts (``MALLOC_ARENA_MAX``), unless the user set ``MALLOC_ARENA_MAX``, and give allocations from
    :data:`MMAP_THRESHOLD` up their own pages (``MALLOC_MMAP_THRESHOLD_``, unless set); returns the
    arena cap or None.

    By default glibc gives each allocating thread its own arena, up to 8 per core, each a 64 MiB
    reservation of address space that keeps freed memory for reuse: with dask's and torch's threads a
    2048² tiled CNMF run reached 2.54 GiB of virtual memory (1.60 GiB resident) against 1.95 GiB
    (1.27 GiB) with 2 arenas, at the same speed (benchmarks/results/scale.md). A ``ulimit -v`` limit
    counts the reservations, so the cap is what lets a run fit under one.
    """
    import ctypes

    if os.environ.get("MALLOC_ARENA_MAX"):
        return None
    cap = max(2, int(workers or 0))
    os.environ["MALLOC_ARENA_MAX"] = str(cap)  # for process workers started from here
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):
            return None
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
            os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        return cap if libc.mallopt(M_ARENA_MAX, cap) == 1 else None
    except (OSError, AttributeError, TypeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def out_of_memory_message(exc: BaseException) -> str | None:
    """One line for an allocation that failed (``MemoryError``, torch's "can't allocate memory", a thread
    that could not start), saying whether a virtual-memory limit (``ulimit -v``) is what ran out; None for
    any other error."""
    import resource

    text = " ".join(str(exc).split())
    if isinstance(exc, MemoryError):
        what = f"an allocation failed ({text})" if text else "an allocation failed"
    elif isinstance(exc, RuntimeError) and "can't allocate memory" in text:
        size = re.search(r"allocate (\d+) bytes", text)
        what = f"an allocation of {_gib(int(size.group(1)))} failed" if size else "an allocation failed"
    elif isinstance(exc, RuntimeError) and "can't start new thread" in text:
        what = "a new thread could not get its stack"
    else:
        return None
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft == resource.RLIM_INFINITY:
        return (f"out of memory: {what}; try --workers 1 or a smaller --tile (each tile task holds its tile's "
                f"cube and abundances)")
    used = ""
    try:
        with open("/proc/self/status") as fh:
            vm = re.search(r"^VmSize:\s+(\d+) kB", fh.read(), re.M)
        used = f" with {_gib(int(vm.group(1)) * 1024)} of it in use" if vm else ""
    except OSError:
        pass
    return (f"out of memory: {what} under the virtual-memory limit of {_gib(soft)} (ulimit -v){used}; that limit "
            f"counts address space that torch, thread stacks and malloc arenas reserve, not only memory in use: "
            f"raise it, or use --workers 1 or a smaller --tile")


def fuse_tiled_command(args: argparse.Namespace, inputs: dict) -> int:
    """``fuse --tile N``: lazy inputs, tiles on dask, the fused cube written to a Zarr store tile by tile."""
    from ..srf import srf_from_name_or_path
    from ..tiled import TiledProblem, fuse_tiled

    out = Path(args.out)
    if out.suffix.lower() != ".zarr":
        raise FusionExplorerError(f"--tile writes a Zarr store: name --out like OUT.zarr; got {args.out!r}")
    if args.tile < 1:
        raise FusionExplorerError(f"--tile must be a positive number of pixels; got {args.tile}")
    if args.device not in ("auto", "cpu"):
        raise FusionExplorerError("tiled fusion runs on the CPU workers of the dask scheduler; drop --device")
    if args.checkpoint and args.method != "scalmu":
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
    limit_malloc_arenas(args.workers or min(os.cpu_count() or 1, 4))
    lr = _open_lazy_input(args.lr_hsi)
    msi = _open_lazy_input(args.hr_msi)
    srf = srf_from_name_or_path(args.srf, lr)
    psf, offset = psf_from_args(args, msi)
    problem = TiledProblem(lr, msi, srf, ratio=args.ratio, psf=psf, offset=offset)
    options = _parse_options(args.option)
    if args.checkpoint:
        options["checkpoint"] = args.checkpoint
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
    except (MemoryError, RuntimeError) as exc:
        message = out_of_memory_message(exc)
        if message is None:
            raise
        raise FusionExplorerError(message) from None
    finally:
        if bar is not None:
            bar.close()
    print(f"{args.method} (tiled, {args.tile} px tiles, {args.scheduler or 'threads'}): {fused.shape} in "
          f"{time.perf_counter() - start:.2f} s -> {out}")
    return 0
