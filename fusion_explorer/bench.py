"""Benchmark API: methods x scenes x protocols -> a table of metrics and seconds.

Used by ``fusion-explorer bench``, ``benchmarks/`` scripts and ``notebooks/benchmark.ipynb``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from .config import default_data_dir
from .errors import FusionExplorerError

METRIC_COLUMNS = ("psnr", "sam", "ergas", "rmse", "ssim", "uiqi")


def load_scene(spec: str | Path) -> xr.DataArray:
    """A scene by path (any format :func:`~fusion_explorer.io.open_cube` reads) or ``"default"``."""
    if str(spec) == "default":
        from .synth import default_scene

        return default_scene()
    from .io import open_cube

    cube = open_cube(spec)
    cube.attrs.setdefault("scene", Path(str(spec)).name)
    return cube


def center_crop(cube: xr.DataArray, size: int | None, multiple: int = 1) -> xr.DataArray:
    """The central ``size`` x ``size`` window, shrunk to a multiple of ``multiple`` (None: whole cube
    shrunk to that multiple)."""
    from .cube import crop

    h, w = cube.sizes["y"], cube.sizes["x"]
    sh = min(size or h, h) // multiple * multiple
    sw = min(size or w, w) // multiple * multiple
    if sh == 0 or sw == 0:
        raise FusionExplorerError(f"crop {size} is smaller than the ratio {multiple}")
    if (sh, sw) == (h, w):
        return cube
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    return crop(cube, (y0, y0 + sh), (x0, x0 + sw))


def cave_scenes(data_dir: str | Path | None = None) -> list[Path]:
    """CAVE scene folders under ``<data_dir>/cave`` (default data dir: see ``config``)."""
    root = Path(data_dir) if data_dir else default_data_dir()
    if root is None:
        raise FusionExplorerError("no data directory: set FUSION_EXPLORER_DATA or pass --scenes")
    base = root / "cave" if (root / "cave").is_dir() else root
    from .io.cave import is_cave_scene

    scenes = sorted(p for p in base.iterdir() if is_cave_scene(p))
    if not scenes:
        raise FusionExplorerError(f"{base}: no CAVE scene folders found")
    return scenes


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


def remote_crops(data_dir: str | Path | None = None) -> dict[str, xr.DataArray]:
    """Two small airborne crops for quick remote-sensing benchmarks, scaled to a peak of 1.

    ``paviaU 48x48x103`` (ROSIS, band centres from ``paviaU_band_centers_103.mat``) and
    ``samson 64x64x156`` (401–889 nm, evenly spaced), from ``data_dir/remote``.
    """
    import numpy as np
    import scipy.io

    from .cube import make_cube

    remote = (Path(data_dir) if data_dir else default_data_dir()) / "remote"
    pavia = scipy.io.loadmat(remote / "paviaU_subimg_50x50x103.mat")["paviaU_subimg"].astype(np.float64)
    pavia_wl = scipy.io.loadmat(remote / "paviaU_band_centers_103.mat")["paviaU_spec"].ravel()
    samson = scipy.io.loadmat(remote / "samson_95x95x156.mat")["SamSon"].astype(np.float64)
    crops = {
        "paviaU 48x48x103": (pavia[1:49, 1:49], pavia_wl),
        "samson 64x64x156": (samson[15:79, 15:79], np.linspace(401, 889, samson.shape[2])),
    }
    out = {}
    for name, (x, wl) in crops.items():
        x = x.transpose(2, 0, 1)
        out[name] = make_cube(x / x.max(), wl, attrs={"scene": name})
    return out
