"""Benchmarks from a notebook: :func:`benchmark_registered` runs every registered method (skipping those
that cannot run here), :func:`rows_frame` tabulates rows, :func:`read_results_md` parses
``benchmarks/RESULTS.md``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FusionExplorerError


@dataclass
class BenchReport:
    """Rows of every method that ran, and why the others did not: ``skipped`` (method -> the package's
    message, e.g. a missing checkpoint) and ``failed`` (method -> ``"ExceptionType: message"`` of any other
    exception, i.e. a bug in the method)."""

    rows: list = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))


def bench_options(reference_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Options a method needs to run, from what is on disk: MossFuse's published CAVE checkpoint
    (``<shared>/reference/mossfuse/CAVE_32_model.pth``) when present. Methods absent here run with
    their defaults; a method that cannot (e.g. needs weights) is skipped by :func:`benchmark_registered`."""
    from ..config import default_data_dir

    if reference_dir is None:
        data = default_data_dir()
        reference_dir = data.parent / "reference" if data is not None else None
    options: dict[str, dict[str, Any]] = {}
    if reference_dir is not None:
        ckpt = Path(reference_dir) / "mossfuse" / "CAVE_32_model.pth"
        if ckpt.is_file():
            options["mossfuse"] = {"checkpoint": str(ckpt)}
    return options


def benchmark_registered(
    scenes: Iterable[Any],
    protocols: Sequence[str],
    *,
    methods: Sequence[str] | None = None,
    crop: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "auto",
    progress: bool = False,
    strict: bool = False,
) -> BenchReport:
    """:func:`~fusion_explorer.bench.run_benchmark` for each method (default: every registered one).

    A method that raises one of the package's errors (e.g. MossFuse without a checkpoint or ``fit=True``)
    is skipped with the first line of its message. Any other exception is recorded in ``failed`` (so that
    one broken method does not hide the others' results) unless ``strict``, when it propagates.
    """
    from ..bench import run_benchmark
    from ..methods import available_methods

    scene_list = list(scenes)
    report = BenchReport()
    for method in methods or sorted(available_methods()):
        try:
            rows = run_benchmark(
                [method],
                scene_list,
                protocols,
                crop=crop,
                device=device,
                options={method: dict((options or {}).get(method, {}))},
                progress=progress,
            )
        except FusionExplorerError as exc:
            report.skipped[method] = str(exc).splitlines()[0]
            continue
        except Exception as exc:
            if strict:
                raise
            report.failed[method] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            continue
        report.rows.extend(rows)
    return report


def rows_frame(rows: Sequence[Any]) -> Any:
    """Benchmark rows as a pandas DataFrame (one row per method, scene and protocol)."""
    import pandas as pd

    return pd.DataFrame.from_records([r.as_dict() for r in rows])


def read_results_md(path: str | os.PathLike) -> Any:
    """The per-scene rows of the Markdown tables of ``benchmarks/RESULTS.md`` as a DataFrame
    (columns lower-cased; mean rows, whose scene reads ``mean of N``, left out)."""
    import pandas as pd

    records, header = [], None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        if "method" in header and "scene" in header and len(cells) == len(header):
            rec = dict(zip(header, cells, strict=True))
            if rec["scene"].startswith("mean of") or rec["method"].startswith("**"):
                continue
            for k, v in rec.items():
                if re.fullmatch(r"[-+]?\d+(\.\d+)?", v):
                    rec[k] = float(v)
            records.append(rec)
    return pd.DataFrame.from_records(records)
