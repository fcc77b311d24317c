"""Independent CAVE loader for tests (Pillow only), so physics/metrics tests don't lean on our reader."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image


@lru_cache(maxsize=8)
def load_cave_yxb(folder: str) -> np.ndarray:
    """A CAVE scene as float64 ``(y, x, band)`` in [0, 1] (31 PNGs / 65535)."""
    path = Path(folder)
    scene = path.name
    bands = [np.asarray(Image.open(path / f"{scene}_{i:02d}.png"), dtype=np.float64) for i in range(1, 32)]
    bands = [b[..., 0] if b.ndim == 3 else b for b in bands]
    return np.stack(bands, axis=-1) / 65535.0
