"""Where data lives: ``FUSION_EXPLORER_DATA``, else ``../shared/data`` beside the project or cwd."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path | None:
    """The first existing of ``$FUSION_EXPLORER_DATA``, ``<project>/../shared/data``, ``./../shared/data``."""
    candidates = []
    if os.environ.get("FUSION_EXPLORER_DATA"):
        candidates.append(Path(os.environ["FUSION_EXPLORER_DATA"]).expanduser())
    candidates += [PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    return None
