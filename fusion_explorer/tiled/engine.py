"""Tiles aligned to the LR grid, halos, and the dask scheduler that runs them.

A scene of ``H x W`` HR pixels at ratio ``r`` is cut into tiles of ``tile x tile`` HR pixels
(``tile`` a multiple of ``r``, so each tile is exactly ``tile / r`` LR pixels a side and the LR
sampling phase is the same in every tile). A tile task reads its tile plus a halo of
``halo`` HR pixels (a multiple of ``r``, at least the PSF's half-width plus one LR pixel) on every
side that is not the scene's border, so that whatever a task computes for the pixels of its own
tile is what the whole-scene computation gives there; the halo is trimmed before writing.

:class:`Runner` computes dask collections on the threaded scheduler (``"threads"``), on a
:class:`distributed.LocalCluster` of process workers (``"processes"``) or on any scheduler
address (``"tcp://host:8786"``), with a progress callback over tiles.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np

from ..errors import ProblemError

ProgressCallback = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class Tile:
    """One tile: its HR box ``[y0, y1) x [x0, x1)`` and the box read with its halo ``[ey0, ey1) x [ex0, ex1)``."""

    index: tuple[int, int]
    y0: int
    y1: int
    x0: int
    x1: int
    ey0: int
    ey1: int
    ex0: int
    ex1: int

    def trim(self, a: np.ndarray) -> np.ndarray:
        """The tile's own pixels of an array ``(..., ey1-ey0, ex1-ex0)`` computed on the extended box."""
        return a[..., self.y0 - self.ey0 : self.y1 - self.ey0, self.x0 - self.ex0 : self.x1 - self.ex0]

    def lr_box(self, ratio: int) -> tuple[slice, slice]:
        return slice(self.y0 // ratio, self.y1 // ratio), slice(self.x0 // ratio, self.x1 // ratio)

    def lr_ext_box(self, ratio: int) -> tuple[slice, slice]:
        return slice(self.ey0 // ratio, self.ey1 // ratio), slice(self.ex0 // ratio, self.ex1 // ratio)


@dataclass(frozen=True)
class TileGrid:
    """LR-aligned tiles of an ``hr_size`` scene at ``ratio`` with a ``halo`` (HR pixels)."""

    hr_size: tuple[int, int]
    ratio: int
    tile: int
    halo: int

    def __post_init__(self) -> None:
        if self.tile < self.ratio or self.tile % self.ratio:
            raise ProblemError(f"the tile size must be a multiple of the ratio {self.ratio}; got {self.tile} "
                               f"(try {max(self.ratio, self.tile // self.ratio * self.ratio)})")
        if self.halo % self.ratio:
            raise ProblemError(f"the halo must be a multiple of the ratio {self.ratio}; got {self.halo}")
        h, w = self.hr_size
        if h % self.ratio or w % self.ratio:
            raise ProblemError(f"the HR size {h}x{w} is not a multiple of the ratio {self.ratio}")

    @classmethod
    def for_psf(cls, hr_size: tuple[int, int], ratio: int, tile: int, psf_shape: Sequence[int] = (1, 1),
                extra_lr: int = 2) -> TileGrid:
        """A grid whose halo covers the PSF's half-width plus ``extra_lr`` LR pixels (interpolation stencils)."""
        half = max(int(s) // 2 for s in psf_shape)
        halo = ratio * (math.ceil(half / ratio) + extra_lr)
        return cls(tuple(hr_size), int(ratio), int(tile), halo)

    def __iter__(self) -> Iterator[Tile]:
        h, w = self.hr_size
        for i, y0 in enumerate(range(0, h, self.tile)):
            for j, x0 in enumerate(range(0, w, self.tile)):
                y1, x1 = min(y0 + self.tile, h), min(x0 + self.tile, w)
                yield Tile((i, j), y0, y1, x0, x1, max(y0 - self.halo, 0), min(y1 + self.halo, h),
                           max(x0 - self.halo, 0), min(x1 + self.halo, w))

    def __len__(self) -> int:
        h, w = self.hr_size
        return math.ceil(h / self.tile) * math.ceil(w / self.tile)


def _threads_per_task(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def _owned(value: Any) -> Any:
    """``value`` with every NumPy array in it (in tuples and lists too) that is a view (of a torch
    tensor's storage or of a larger array) copied into memory of its own."""
    if isinstance(value, np.ndarray):
        return value.copy() if value.base is not None else value
    if isinstance(value, (tuple, list)):
        return type(value)(_owned(v) for v in value)
    return value


def tile_task(fn: Callable) -> Callable:
    """Mark a function that tile tasks run: what it returns holds only memory of its own.

    A task's result outlives the task (the scheduler keeps it until the pass ends). Returned as
    NumPy views of torch tensors, small results made the process keep the memory the tasks had freed:
    on tiled SCALMU at 2048² (64 tiles of 256 px) one pass of the layer sums (four ``p``-vectors per
    tile) peaked at 4.3 GB resident and added 3.5 GB of address space; with copies, 1.3 GB. glibc
    reported that memory free (``malloc_info``; ``malloc_trim`` returned it), so it is the allocator
    not reusing the space around the views' small blocks; the address space is what failed the 4096²
    run under ``ulimit -v 3 GiB``.
    """

    @functools.wraps(fn)
    def task(*args, **kwargs):
        return _owned(fn(*args, **kwargs))

    return task


def set_torch_threads(n: int) -> None:
    """Torch's intra-op threads in this process (tile tasks call it: ``workers x threads <= cores``)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


class Runner:
    """Where dask collections are computed: ``scheduler`` ``"threads"`` (``workers`` threads),
    ``"processes"`` (a LocalCluster of ``workers`` single-threaded process workers, started here
    and closed by :meth:`close`), a scheduler address (``"tcp://host:8786"``) or a
    ``distributed.Client``. Use as a context manager."""

    def __init__(self, scheduler: Any = "threads", workers: int | None = None, memory_limit: str | None = None):
        self.workers = int(workers or min(os.cpu_count() or 1, 4))
        if self.workers < 1:
            raise ProblemError(f"workers must be >= 1; got {workers!r}")
        self.client = None
        self.cluster = None
        self.kind = "threads"
        if scheduler is None or scheduler == "threads":
            return
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - a dependency
            raise ProblemError("scheduler 'processes' or an address needs the 'distributed' package") from None
        if scheduler == "processes":
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                        dashboard_address=":0", memory_limit=memory_limit or 0)
            self.client = Client(self.cluster)
            self.kind = "processes"
        elif isinstance(scheduler, str):
            if "://" not in scheduler and ":" not in scheduler:
                raise ProblemError(f"scheduler must be 'threads', 'processes' or a scheduler address like "
                                   f"tcp://host:8786; got {scheduler!r}")
            import logging

            quiet = logging.getLogger("distributed.client")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)  # a failed connection is our one line, not a log too
            try:
                self.client = Client(scheduler, timeout="10s")
            except OSError as exc:
                raise ProblemError(f"cannot reach the dask scheduler at {scheduler} ({exc})") from None
            finally:
                quiet.setLevel(level)
            self.kind = "address"
            self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        else:  # a Client
            self.client = scheduler
            self.kind = "client"
            self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))

    @property
    def dashboard_link(self) -> str | None:
        return None if self.client is None else self.client.dashboard_link

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.cluster is not None:
            self.client.close()
            self.cluster.close()
            self.client = self.cluster = None
        elif self.kind == "address" and self.client is not None:  # our connection: close it (not the cluster)
            self.client.close()
            self.client = None

    def compute(self, *collections: Any) -> tuple:
        """``dask.compute`` on this scheduler."""
        if self.client is not None:
            return tuple(self.client.compute(list(collections), sync=True))
        import torch

        before = torch.get_num_threads()
        set_torch_threads(_threads_per_task(self.workers))
        try:
            return dask.compute(*collections, scheduler="threads", num_workers=self.workers)
        finally:
            set_torch_threads(before)

    def run_tiles(self, tasks: Sequence[Any], progress: ProgressCallback | None = None, stage: str = "") -> list:
        """Compute ``tasks`` (one ``dask.delayed`` per tile), calling ``progress(done, total, info)`` as
        each finishes; results in the order of ``tasks``."""
        total = len(tasks)
        info = {"stage": stage}
        if progress is not None:
            progress(0, total, info)
        if self.client is not None:
            from distributed import as_completed

            futures = self.client.compute(list(tasks))
            order = {f.key: i for i, f in enumerate(futures)}
            results: list = [None] * total
            for done, fut in enumerate(as_completed(futures), start=1):
                results[order[fut.key]] = fut.result()
                fut.release()
                if progress is not None:
                    progress(done, total, info)
            return results
        from dask.callbacks import Callback

        keys = {t.key for t in tasks}
        count = [0]

        class _Ticks(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if key in keys:
                    count[0] += 1
                    if progress is not None:
                        progress(count[0], total, info)

        with _Ticks():
            return list(self.compute(*tasks))


def tile_threads(workers_hint: int | None = None) -> int:
    """Torch threads a tile task uses (tasks on process workers call it themselves)."""
    return _threads_per_task(workers_hint or 1)
