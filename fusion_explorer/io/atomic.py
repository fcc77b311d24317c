"""Writes that never leave a partial file and never replace one by surprise.

``with atomic_target(path) as tmp:`` gives a fresh hidden path beside ``path`` (same folder, so the
final rename is atomic; the name keeps ``path``'s suffix: ``.<stem>.<token>.tmp<suffix>``). The body
writes ``tmp``, a file or a folder; on success ``tmp`` is renamed onto ``path``. On any failure (an
exception, Ctrl-C, a full disk) ``tmp`` is removed and ``path`` is left as it was. An existing
``path`` is refused unless ``overwrite``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import FusionExplorerError, WriteError


def check_target(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """``path``; raise :class:`WriteError` if something is there and ``overwrite`` is false."""
    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise WriteError(path, "exists; pass --overwrite to replace it")
    return path


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass  # best effort: never hide the error that brought us here


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path``; a folder on either side is first moved aside, then deleted.
    A folder is replaced only by a folder (a Zarr store by a Zarr store), never by a file."""
    folder = path.is_dir() and not path.is_symlink()
    if folder and not tmp.is_dir():
        raise WriteError(path, "is a folder; not replaced by a file")
    if not (folder or tmp.is_dir()) or not path.exists():
        os.replace(tmp, path)
        return
    aside = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
    os.replace(path, aside)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(aside, path)
        raise
    _remove(aside)


@contextmanager
def atomic_target(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write instead of ``path``; see the module doc. The folder of
    ``path`` is created if missing. An ``OSError`` of the write (disk full, file too large,
    read-only file system) becomes a :class:`WriteError` naming ``path``."""
    path = check_target(path, overwrite=overwrite)
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        check_target(path, overwrite=overwrite)  # something may have appeared meanwhile
        _replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FusionExplorerError):
            kept = "the existing file is unchanged" if existed else "nothing was written"
            raise WriteError(path, f"write failed ({exc.strerror or exc}); {kept}") from exc
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes | memoryview, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_target`); return the path."""
    with atomic_target(path, overwrite=overwrite) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
