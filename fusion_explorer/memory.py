"""Let freed CPU memory be reused instead of handed back to the kernel and faulted in again.

The fusion engines on a CPU make many short-lived tensors of one image's size (30 abundance maps
of a 512x512 scene are 31 MB). glibc's ``malloc`` serves blocks that large with ``mmap`` (or
trims them off the top of the heap on ``free``), so every new temporary is fresh memory that the
kernel must fault in page by page, and zero, on first touch. On this 2-core machine one SCALMU run
on a 512x512x31 scene took 48 000 to 380 000 such faults (0.2-1.5 GB, about 1.4 µs each), and
0.2-0.4 s more than with this tuning, which brought the faults to near 0
(``benchmarks/bench_scalmu.py --speed`` against ``--default-malloc``; benchmarks/RESULTS.md).

:func:`keep_freed_memory` raises glibc's mmap threshold to its maximum (32 MiB) and its trim
threshold to :data:`TRIM_THRESHOLD`, so such blocks come from the heap and up to that much freed
memory stays there for the next one. It changes the whole process's allocator, so the package
never does it on import: the ``fusion-explorer`` command, the dashboard and ``bench_scalmu.py`` call
it. The cost is resident memory: up to :data:`TRIM_THRESHOLD` of freed memory is kept (three SCALMU
runs on a 512x512 scene peaked at 1.5 GB resident instead of 1.2). Blocks over 32 MiB (a 512x512
cube of more than 32 float32 bands, any 1024x1024 one) are still mapped fresh each time. PyTorch's
own CPU tuning guide makes the same point by recommending jemalloc or tcmalloc; this needs no
preloaded library. ``FUSION_EXPLORER_MALLOC=default`` turns it off; on anything but glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os

#: ``mallopt`` parameters (glibc's ``malloc.h``)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: the largest mmap threshold glibc accepts on 64-bit systems (half its ``HEAP_MAX_SIZE``)
MMAP_THRESHOLD = 32 * 2**20
#: freed memory at the top of the heap kept for reuse before any is returned to the kernel
TRIM_THRESHOLD = 2**30


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's allocator as the module docstring says (once per process); ``True`` if done."""
    if os.environ.get("FUSION_EXPLORER_MALLOC", "").strip().lower() in {"default", "off", "0"}:
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl's mallopt is a stub)
            return False
    except (OSError, AttributeError, TypeError):  # TypeError: CDLL(None) on Windows
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]
