"""Checkpoints of learned methods, read as weights only: a file never runs code when it is loaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ProblemError


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """What a PyTorch checkpoint file holds, loaded with ``torch.load(weights_only=True)``.

    Only tensors, numbers, strings, lists, tuples and dicts are rebuilt; a pickle asking for anything
    else (it could run code) is refused, as are random bytes and files torch cannot read, each with one
    :class:`~fusion_explorer.errors.ProblemError` line naming the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ProblemError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds on a bad file; its messages run over many lines
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [""]
        if "Weights only load failed" in lines[0]:
            why = next((ln for ln in lines if "nsupported" in ln), lines[0])
            raise ProblemError(
                f"{path}: refused: not a weights-only checkpoint ({why}); pickled objects are never loaded"
            ) from None
        raise ProblemError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {lines[0]})") from None
