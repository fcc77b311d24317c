"""Checks every reader makes before it reads data: reading stays inside the file and inside memory.

Refused, each with one :class:`~fusion_explorer.errors.ReadError` naming the file:

* **HDF5 that reaches other files** (NetCDF-4, MATLAB v7.3): a dataset with external storage
  (its bytes live in another file, e.g. ``/etc/passwd``), a virtual dataset (its bytes come from
  other files) or an external link (it opens another file), anywhere in the file.
  :func:`check_hdf5` walks the whole hierarchy with h5py without following links and without
  reading data; once external links are refused, soft links can only name objects of the file.
* **Files that resolve outside their folder** (:func:`check_inside`): a Zarr chunk, an ENVI data
  file or a CAVE band PNG that is a symlink (or a ``..`` path) leaving the store or scene folder.
* **Arrays larger than the read budget** (:func:`check_size`), judged on the declared size
  (shape x bytes per value, at least the 4 of the float32 cube it becomes) before anything is
  read, so a few-KB gzip file that unpacks to gigabytes costs nothing.

The budget is the ``max_bytes=`` argument of the readers; when that is ``None``, the environment
variable ``FUSION_EXPLORER_MAX_READ_BYTES`` (bytes); else :func:`default_max_bytes`:
``min(1 GiB, physical memory / 8)``, since a read briefly holds two or three copies of the cube
and a served dashboard holds several sessions.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import h5py

from ..errors import ReadError

ENV_MAX_BYTES = "FUSION_EXPLORER_MAX_READ_BYTES"
GiB = 1 << 30
MAX_HDF5_OBJECTS = 100_000  # a larger hierarchy is refused rather than walked
_NOT_READ = "external storage, virtual datasets and external links are not read"


class ScanResult(list):
    """A list of paths found by a bounded directory scan; ``truncated`` is True when the scan stopped
    early (``reason`` says why), so the list may miss entries."""

    def __init__(self, items=(), *, truncated: bool = False, reason: str = ""):
        super().__init__(items)
        self.truncated = truncated
        self.reason = reason


def error_reason(exc: BaseException) -> str:
    """``"ExcType: first line of the message"`` (at most 200 characters) for a ReadError reason."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = " ".join(lines[0].split()) if lines else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def format_bytes(n: float) -> str:
    """``1000 B``, ``1.9 KiB``, ``16 GiB``: binary units, at most one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f}".rstrip("0").rstrip(".") + f" {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def default_max_bytes() -> int:
    """The read budget when neither ``max_bytes=`` nor the environment sets one: ``min(1 GiB, RAM / 8)``."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows): assume 8 GiB
        ram = 8 * GiB
    return int(min(GiB, ram // 8))


def read_budget(max_bytes: float | None = None) -> int:
    """The read budget in bytes: ``max_bytes``, else ``$FUSION_EXPLORER_MAX_READ_BYTES``, else the default.

    Raises ValueError when the environment variable is not a number of bytes.
    """
    if max_bytes is None:
        text = os.environ.get(ENV_MAX_BYTES, "").strip()
        if not text:
            return default_max_bytes()
        try:
            max_bytes = float(text)
        except ValueError:
            raise ValueError(f"{ENV_MAX_BYTES}={text!r} is not a number of bytes") from None
    if not max_bytes >= 0:
        raise ValueError(f"the read budget must be a number of bytes >= 0; got {max_bytes!r}")
    return sys.maxsize if math.isinf(max_bytes) else int(max_bytes)


def cube_nbytes(shape: Sequence[int], itemsize: int) -> int:
    """Bytes a read of an array of ``shape`` needs: at least 4 per value (the float32 cube it becomes)."""
    return math.prod(int(s) for s in shape) * max(int(itemsize), 4)


def shape_text(shape: Sequence[int]) -> str:
    """``"32 x 4096 x 4096"``."""
    return " x ".join(str(int(s)) for s in shape)


def check_size(nbytes: int, path: str | os.PathLike, max_bytes: float | None = None, what: str = "") -> None:
    """Raise :class:`ReadError` when ``nbytes`` (the declared size of what is about to be read) exceeds the
    read budget (see :func:`read_budget`). ``what`` names the array in the message."""
    try:
        budget = read_budget(max_bytes)
    except ValueError as exc:
        raise ReadError(path, str(exc)) from None
    if nbytes > budget:
        detail = f" ({what})" if what else ""
        raise ReadError(
            path,
            f"refused: declares {format_bytes(nbytes)}{detail} to read, over the read budget of "
            f"{format_bytes(budget)}; raise it with max_bytes= or the environment variable {ENV_MAX_BYTES} (bytes)",
        )


def check_hdf5(path: str | os.PathLike, max_bytes: float | None = None) -> None:
    """Refuse an HDF5 file that reaches other files or declares a dataset over the read budget.

    Walks every group from the root, following hard links only (each object once), and reads
    metadata only. Refused: an external link anywhere, a dataset with external storage
    (``Dataset.external``), a virtual dataset (``Dataset.is_virtual``), a dataset whose declared
    size (:func:`cube_nbytes`) exceeds the budget, more than :data:`MAX_HDF5_OBJECTS` objects.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            _walk_hdf5(f, path, max_bytes)
    except ReadError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError, ... on bad files
        raise ReadError(path, f"not a readable HDF5 file ({error_reason(exc)})") from exc


def _walk_hdf5(f: h5py.File, path: Path, max_bytes: float | None) -> None:
    seen = {f.id}
    groups = [f]
    while groups:
        group = groups.pop()
        for name in group:  # iterating names does not resolve links
            where = f"{group.name.rstrip('/')}/{name}".lstrip("/")
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise ReadError(
                    path,
                    f"refused: '{where}' is an external link to '{link.path}' in file '{link.filename}'; {_NOT_READ}",
                )
            if isinstance(link, h5py.SoftLink):
                continue  # names an object of this file, walked through its hard link
            if not isinstance(link, h5py.HardLink):
                raise ReadError(path, f"refused: '{where}' is a {type(link).__name__} link; {_NOT_READ}")
            obj = group[name]
            if obj.id in seen:
                continue
            seen.add(obj.id)
            if len(seen) > MAX_HDF5_OBJECTS:
                raise ReadError(path, f"refused: more than {MAX_HDF5_OBJECTS} HDF5 objects")
            if isinstance(obj, h5py.Group):
                groups.append(obj)
            elif isinstance(obj, h5py.Dataset):
                _check_dataset(obj, where, path, max_bytes)


def _check_dataset(dset: h5py.Dataset, where: str, path: Path, max_bytes: float | None) -> None:
    if dset.external:
        target = dset.external[0][0]
        target = target.decode(errors="replace") if isinstance(target, bytes) else target
        raise ReadError(path, f"refused: dataset '{where}' stores its data in external file '{target}'; {_NOT_READ}")
    if dset.is_virtual:
        sources = sorted({s.file_name for s in dset.virtual_sources()})
        raise ReadError(
            path, f"refused: dataset '{where}' is a virtual dataset (its data come from {sources}); {_NOT_READ}"
        )
    if dset.shape:  # scalars and empty (null dataspace) datasets are tiny
        check_size(
            cube_nbytes(dset.shape, dset.dtype.itemsize),
            path,
            max_bytes,
            f"dataset '{where}', {shape_text(dset.shape)} {dset.dtype}",
        )


def resolves_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Does ``path``, with every symlink resolved, lie inside ``folder`` (resolved)? False for a symlink loop."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError):  # RuntimeError: symlink loop (Python < 3.13)
        return False


def check_inside(path: Path, folder: Path, *, what: str, where: str, error_path: Path | None = None) -> None:
    """Refuse ``path`` (a :class:`ReadError` on ``error_path``, default ``path``) unless it resolves inside
    ``folder``: a symlink or ``..`` leaving it, or a symlink loop."""
    if not resolves_inside(path, folder):
        try:
            shown = Path(path).relative_to(folder)
        except ValueError:
            shown = Path(path)
        raise ReadError(
            error_path or path,
            f"refused: {what} '{shown}' resolves outside {where} (to '{os.path.realpath(path)}'); "
            "files outside it are not read",
        )


def check_tree(folder: Path, *, where: str) -> None:
    """Refuse a folder holding a symlink (at any depth, not followed) that resolves outside it; see
    :func:`check_inside`. The error names ``folder``."""
    todo = [Path(folder)]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    check_inside(Path(entry.path), folder, what="symlink", where=where, error_path=folder)
                elif entry.is_dir(follow_symlinks=False):
                    todo.append(Path(entry.path))
