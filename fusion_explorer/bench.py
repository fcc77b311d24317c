"""Benchmark API: methods x scenes x protocols -> a table of metrics and seconds.

Used by ``fusion-explorer bench``, ``benchmarks/`` scripts and ``notebooks/benchmark.ipynb``. Scenes
(:func:`load_scene`, :func:`center_crop`, :func:`cave_scenes`, :func:`remote_crops`) come from
:mod:`fusion_explorer.scenes` and are re-exported here for old imports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from .scenes import cave_scenes, center_crop, load_scene, remote_crops

__all__ = [
    "METRIC_COLUMNS",
    "BenchRow",
    "cave_scenes",
    "center_crop",
    "format_table",
    "load_scene",
    "remote_crops",
    "run_benchmark",
    "write_results",
]

METRIC_COLUMNS = ("psnr", "sam", "ergas", "rmse", "ssim", "uiqi")


@dataclass
class BenchRow:
    method: str
    scene: str
    protocol: str
    size: str
    device: str
    seconds: float
    metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scene": self.scene,
            "protocol": self.protocol,
            "size": self.size,
            "device": self.device,
            "seconds": round(self.seconds, 4),
            **{k: round(v, 6) for k, v in self.metrics.items()},
        }


def run_benchmark(
    methods: Sequence[str],
    scenes: Iterable[str | Path | xr.DataArray],
    protocols: Sequence[str],
    *,
    crop: int | None = None,
    device: str = "auto",
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
) -> list[BenchRow]:
    """Simulate each scene under each protocol, run each method, score against the truth.

    Metrics follow :func:`fusion_explorer.metrics.evaluate` (output clipped to [0, 1]).
    ``options`` maps a method name to its keyword options.
    """
    from tqdm.auto import tqdm

    from .methods import fuse, get_method
    from .metrics import evaluate
    from .physics import get_protocol
    from .problem import simulate

    for m in methods:
        get_method(m)  # fail fast on a typo, before any work
    protos = [get_protocol(p) for p in protocols]
    scene_list = list(scenes)
    rows: list[BenchRow] = []
    total = len(scene_list) * len(protos) * len(methods)
    bar = tqdm(total=total, desc="bench", disable=not progress, leave=False)
    for spec in scene_list:
        cube = spec if isinstance(spec, xr.DataArray) else load_scene(spec)
        name = str(cube.attrs.get("scene", getattr(cube, "name", None) or "scene"))
        for proto in protos:
            truth = center_crop(cube, crop, proto.ratio)
            problem = simulate(truth, proto)
            for method in methods:
                bar.set_postfix_str(f"{method} on {name} / {proto.name}")
                result = fuse(problem, method, device=device, seed=seed, **(options or {}).get(method, {}))
                scores = evaluate(truth, result.fused, proto.ratio)
                rows.append(
                    BenchRow(
                        method,
                        name,
                        proto.name,
                        f"{truth.sizes['y']}x{truth.sizes['x']}x{truth.sizes['band']}",
                        result.device,
                        result.seconds,
                        scores,
                    )
                )
                bar.update(1)
    bar.close()
    return rows


def format_table(rows: Sequence[BenchRow], columns: Sequence[str] = METRIC_COLUMNS) -> str:
    """A plain-text (Markdown) table of the rows plus per method/protocol means."""
    cols = [c for c in columns if rows and c in rows[0].metrics]
    head = ["method", "scene", "protocol", "size", *[c.upper() for c in cols], "seconds", "device"]

    def fmt(v: float) -> str:
        return "inf" if math.isinf(v) else f"{v:.4f}" if abs(v) < 10 else f"{v:.3f}"

    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = [row(head), "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            row(
                [
                    r.method,
                    r.scene,
                    r.protocol,
                    r.size,
                    *[fmt(r.metrics[c]) for c in cols],
                    f"{r.seconds:.2f}",
                    r.device,
                ]
            )
        )
    groups: dict[tuple[str, str], list[BenchRow]] = {}
    for r in rows:
        groups.setdefault((r.method, r.protocol), []).append(r)
    if any(len(g) > 1 for g in groups.values()):
        for (method, proto), g in groups.items():
            means = [sum(r.metrics[c] for r in g) / len(g) for c in cols]
            secs = sum(r.seconds for r in g) / len(g)
            lines.append(
                row([f"**{method}**", f"mean of {len(g)}", proto, "", *map(fmt, means), f"{secs:.2f}", g[0].device])
            )
    return "\n".join(lines)


def write_results(rows: Sequence[BenchRow], path: str | Path) -> Path:
    """Write rows as JSON (``.json``) or CSV (anything else)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [r.as_dict() for r in rows]
    if path.suffix == ".json":
        path.write_text(json.dumps(records, indent=2))
    else:
        import pandas as pd

        pd.DataFrame.from_records(records).to_csv(path, index=False)
    return path
