"""Unrolled methods layer by layer: :func:`learned_and_plain` runs one with its learned parts on and off,
:func:`layer_table` compares the two runs' traces."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .unmixing import match_endmembers


def layer_table(learned: Sequence[Mapping[str, Any]], plain: Sequence[Mapping[str, Any]], truth: xr.DataArray,
                reference: np.ndarray | None = None) -> Any:
    """Layer by layer, two unrolled runs from the same start (e.g. SCALMU with ``learned=True`` and
    ``learned=False``): objective, PSNR of the layer's fused cube (``W H_m``; the consistency layer's
    output for SCALMU's last step) against ``truth``, mean spectral angle of
    the matched endmembers to ``reference`` (when given), and how far the learned iterate is from the plain
    one (relative Frobenius difference of the HR abundances and of the endmembers)."""
    import pandas as pd

    from ..methods.base import trace_fused
    from ..metrics import psnr

    x = np.asarray(truth.values)
    plain_by_layer = {s["iteration"]: s for s in plain}
    records = []
    for s in learned:
        q = plain_by_layer.get(s["iteration"])
        if q is None:
            continue
        rec: dict[str, Any] = {"layer": int(s["iteration"]), "label": s["label"]}
        for tag, step in (("learned", s), ("plain", q)):
            rec[f"objective {tag}"] = float(step.get("objective", np.nan))
            rec[f"PSNR {tag}"] = psnr(x, np.clip(trace_fused(step), 0, 1))
            if reference is not None:
                rec[f"angle {tag} (°)"] = match_endmembers(step["endmembers"], reference).mean_angle
        for key, name in (("abundances", "ΔH"), ("endmembers", "ΔW")):
            a, b = np.asarray(s[key], np.float64), np.asarray(q[key], np.float64)
            rec[f"{name} learned vs plain"] = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))
        records.append(rec)
    return pd.DataFrame.from_records(records).set_index("layer")


def learned_and_plain(problem: Any, method: str = "scalmu", **options: Any) -> tuple[Any, Any, str | None]:
    """``(learned run, plain run, None)`` of an unrolled method (``learned=True`` / ``learned=False``), or
    ``(None, None, reason)`` when it is not registered or cannot run here (the reason says why, e.g. a
    checkpoint that does not load), so that a notebook section about it can say so instead of failing."""
    from ..methods import available_methods, fuse

    if method not in available_methods():
        return None, None, f"method {method!r} is not registered in this version of the package"
    try:
        learned = fuse(problem, method, learned=True, **options)
        plain = fuse(problem, method, learned=False, **options)
    except Exception as exc:  # a method under development may fail to load its weights
        return None, None, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    return learned, plain, None
