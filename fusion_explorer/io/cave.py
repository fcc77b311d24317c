"""CAVE multispectral scenes: a folder of 31 16-bit greyscale PNGs ``<scene>_01.png`` … ``_31.png``.

Band ``k`` (1-based) is at ``400 + 10 (k - 1)`` nm; values are divided by 65535. The official
CAVE zip nests the PNGs one level down (``balloons_ms/balloons_ms/*.png``); both are accepted.
Every PNG is checked before it is decoded (signature, IHDR bit depth and colour type, the IEND
chunk at the end of the file), so a truncated, 8-bit or colour file is a :class:`ReadError`
naming it. Before any PNG is decoded (:mod:`fusion_explorer.io.guard`): a band file that resolves
outside the scene folder (a symlink leaving it) is refused, and the size the PNG headers declare
(as float32) is checked against the read budget.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr
from PIL import Image

from ..cube import make_cube
from ..errors import ReadError
from .guard import check_inside, check_size, cube_nbytes

N_BANDS = 31
#: Band centres of CAVE (and of SRF tables made for it): 400–700 nm in 10 nm steps, shape (31,). The one
#: definition: :mod:`fusion_explorer.srf` and :mod:`fusion_explorer.synth` re-export it.
CAVE_WAVELENGTHS = np.arange(400.0, 701.0, 10.0)
WAVELENGTHS = CAVE_WAVELENGTHS
_BAND_FILE = re.compile(r"^(?P<scene>.+)_(?P<num>\d{1,3})\.png$", re.I)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}


def band_files(directory: Path) -> dict[int, Path]:
    """``{band number: path}`` of the ``<scene>_NN.png`` files directly in ``directory``."""
    out: dict[int, Path] = {}
    try:
        entries = list(directory.iterdir())
    except OSError:
        return out
    for p in entries:
        m = _BAND_FILE.match(p.name)
        if m and p.is_file():
            out.setdefault(int(m["num"]), p)
    return out


def find_scene_dir(path: str | Path) -> Path | None:
    """The folder holding the band PNGs: ``path`` itself, or its single subfolder (CAVE zip layout)."""
    path = Path(path)
    if not path.is_dir():
        return None
    if band_files(path):
        return path
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and band_files(subdirs[0]):
        return subdirs[0]
    return None


def holds_all_bands(names: Iterable[str]) -> bool:
    """Do these file names hold exactly the band files ``_01`` … ``_31`` (of any scene name)?"""
    numbers = {int(m["num"]) for m in map(_BAND_FILE.match, names) if m}
    return sorted(numbers) == list(range(1, N_BANDS + 1))


def is_cave_scene(path: str | Path) -> bool:
    """Cheap check (names only): ``path`` holds exactly the band files ``_01`` … ``_31``."""
    scene = find_scene_dir(path)
    return scene is not None and sorted(band_files(scene)) == list(range(1, N_BANDS + 1))


def _png_header(path: Path) -> tuple[int, int, int, int]:
    """``(width, height, bit depth, colour type)`` from the IHDR chunk; checks the file ends with IEND."""
    try:
        with open(path, "rb") as f:
            head = f.read(33)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - 12, 0))
            tail = f.read(12)
    except OSError as exc:
        raise ReadError(path, f"cannot read the file ({exc.strerror or exc})") from exc
    if len(head) < 33 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise ReadError(path, "not a PNG file (bad signature or IHDR chunk)")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if tail != _IEND:
        raise ReadError(path, f"truncated or corrupt PNG: the file ({size} bytes) does not end with an IEND chunk")
    return width, height, depth, colour


def _read_band(path: Path, allow_8bit: bool) -> np.ndarray:
    """One band ``(y, x)`` as float32 in [0, 1]."""
    width, height, depth, colour = _png_header(path)
    kind = f"{depth}-bit {_COLOUR_TYPES.get(colour, f'colour type {colour}')}"
    if (depth, colour) != (16, 0):
        if not allow_8bit:
            raise ReadError(
                path, f"{kind} PNG; a CAVE band must be 16-bit greyscale (allow_8bit=True reads 8-bit bands / 255)"
            )
        if depth != 8 or colour == 3:
            raise ReadError(path, f"{kind} PNG; expected 16-bit greyscale (or, with allow_8bit, 8-bit grey/RGB/RGBA)")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, zlib.error, ...
        raise ReadError(path, f"cannot decode the PNG ({type(exc).__name__}: {exc})") from exc
    if arr.shape[:2] != (height, width):
        raise ReadError(path, f"decoded shape {arr.shape} differs from the header's {height}x{width}")
    if depth == 16:
        return (arr.astype(np.uint16) / 65535.0).astype(np.float32)
    if arr.ndim == 3:  # 8-bit RGB(A) oddity: accept only when the colour channels are equal
        grey = np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
        if colour in (2, 6) and not grey:
            raise ReadError(path, f"{kind} PNG with different colour channels; expected a greyscale band")
        arr = arr[..., 0]
    return (arr / 255.0).astype(np.float32)


def read_cave(path: str | Path, *, allow_8bit: bool = False, max_bytes: float | None = None) -> xr.DataArray:
    """Read a CAVE scene folder as a cube ``(31, y, x)`` float32 in [0, 1], 400–700 nm.

    ``allow_8bit`` accepts 8-bit bands (scaled by 1/255, noted in ``attrs['value_note']``).
    Refused before decoding: band files resolving outside the scene folder (copy linked scenes
    into it), and a declared size (31 PNG headers, as float32) over ``max_bytes`` (default:
    ``$FUSION_EXPLORER_MAX_READ_BYTES``, else min(1 GiB, RAM / 8)).
    """
    path = Path(path).resolve()
    if not path.exists():
        raise ReadError(path, "no such file or directory")
    scene_dir = find_scene_dir(path)
    if scene_dir is None:
        raise ReadError(
            path, "no CAVE band PNGs (<scene>_01.png … <scene>_31.png) in this folder or its single subfolder"
        )
    files = band_files(scene_dir)
    numbers = sorted(files)
    if numbers != list(range(1, N_BANDS + 1)):
        raise ReadError(
            scene_dir,
            f"found {len(numbers)} band PNGs numbered {numbers[0]}..{numbers[-1]}; a CAVE scene has "
            f"{N_BANDS} (<scene>_01.png … <scene>_31.png)",
        )
    ordered = [files[n] for n in numbers]
    scenes = {_BAND_FILE.match(p.name)["scene"] for p in ordered}  # type: ignore[index]
    if len(scenes) != 1:
        raise ReadError(scene_dir, f"band PNGs of several scenes in one folder: {sorted(scenes)}")
    for p in ordered:
        check_inside(p, scene_dir, what="band file", where="the scene folder", error_path=scene_dir)
    headers = [_png_header(p) for p in ordered]  # (width, height, bit depth, colour type)
    pixels = sum(w * h for w, h, _, _ in headers)
    check_size(cube_nbytes([pixels], 4), scene_dir, max_bytes, f"{N_BANDS} PNG bands, {pixels} pixels in all")
    with ThreadPoolExecutor(max_workers=8) as pool:  # Pillow's decoder releases the GIL
        bands = list(pool.map(lambda p: _read_band(p, allow_8bit), ordered))
    (h0, w0) = bands[0].shape
    for p, band in zip(ordered, bands, strict=True):
        if band.shape != (h0, w0):
            raise ReadError(p, f"size {band.shape[1]}x{band.shape[0]} differs from band 1 ({w0}x{h0})")
    attrs = {
        "source": str(scene_dir),
        "format": "cave",
        "sensor": "CAVE",
        "scene": scenes.pop(),
        "scale": 65535.0,
        "scale_note": "16-bit PNG values divided by 65535",
    }
    if {depth for _, _, depth, _ in headers} != {16}:
        attrs["value_note"] = "some bands were 8-bit PNGs, divided by 255"
    return make_cube(np.stack(bands), WAVELENGTHS, attrs=attrs, name=attrs["scene"])
