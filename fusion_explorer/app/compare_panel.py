"""Compare and export: a metrics table of every run; export a run as NetCDF with provenance attrs."""

from __future__ import annotations

import base64
import html
import math
import re

import ipywidgets as W

from .panel import Panel
from .state import AppState

_COLUMNS = (("psnr", "PSNR (dB)", ".2f"), ("ssim", "SSIM", ".4f"), ("sam", "SAM (°)", ".3f"),
            ("ergas", "ERGAS", ".3f"), ("rmse", "RMSE", ".4f"))
_LINK_LIMIT = 64 * 2**20


def _best_values(metrics) -> dict[str, float]:
    """Per column, the best finite value over the runs (higher for PSNR/SSIM, else lower); none if no finite one."""
    best: dict[str, float] = {}
    rows = list(metrics)
    for key, _, _ in _COLUMNS:
        vals = [float(m[key]) for m in rows if m.get(key) is not None and math.isfinite(float(m[key]))]
        if vals:
            best[key] = max(vals) if key in ("psnr", "ssim") else min(vals)
    return best


def _format_value(v, fmt: str) -> str:
    """A table cell: '—' when missing, '∞' / 'n/a' when not finite, else the number in ``fmt``."""
    if v is None:
        return "—"
    v = float(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return format(v, fmt)


def _bands_note(runs) -> str:
    """Says over how many bands PSNR was averaged when all-zero truth bands were left out."""
    used = sorted({int(r.metrics["psnr_bands"]) for r in runs if "psnr_bands" in r.metrics})
    if not used:
        return ""
    n = ", ".join(str(u) for u in used)
    return f"; PSNR over the {n} bands whose truth is not all zero (zeroed bands left out)"


class ComparePanel(Panel):
    """A metrics table of every run (best finite value bold) and NetCDF export of one run."""

    name = "compare"
    title = "Compare and export"
    observes = {"draw": ("runs", "selected", "scored"), "_clear_export": ("problem",)}

    def __init__(self, state: AppState, **context):
        super().__init__(state)
        self.table = W.HTML("<i>no runs yet</i>")
        self.export_run = W.Dropdown(description="export", layout=W.Layout(width="300px"))
        self.export_button = W.Button(description="Export NetCDF", icon="download", layout=W.Layout(width="140px"))
        self.export_msg = W.HTML()
        self.table.add_class("fe-compare")
        self.export_button.add_class("fe-export")
        self.export_msg.add_class("fe-export-msg")
        self.export_button.on_click(lambda _: self.export())
        self.widget = W.VBox([self.table, W.HBox([self.export_run, self.export_button]), self.export_msg])

    def _clear_export(self, _=None) -> None:
        """A new scene: no link to a previous scene's run."""
        self.export_msg.value = ""

    def draw(self, _=None) -> None:
        runs = self.state.runs
        self.export_run.options = list(runs)
        if runs and self.state.selected in runs:
            self.export_run.value = self.state.selected
        if not runs:
            self.table.value = "<i>no runs yet</i>"
            return
        best = _best_values(r.metrics for r in runs.values())
        head = "".join(f"<th>{h}</th>" for _, h, _ in _COLUMNS)
        rows = []
        for name, r in runs.items():
            cells = []
            if r.score_error:
                cells.append(f"<td colspan='{len(_COLUMNS)}' style='color:#b00020'>scoring failed: "
                             f"{html.escape(r.score_error)}</td>")
            elif not r.scored and not r.metrics:
                cells.append(f"<td colspan='{len(_COLUMNS)}' style='text-align:center;color:#667'><i>scoring…</i></td>")
            for key, _, fmt in _COLUMNS if not cells else ():
                v = r.metrics.get(key)
                txt = _format_value(v, fmt)
                cells.append(f"<td><b>{txt}</b></td>" if v is not None and v == best.get(key) else f"<td>{txt}</td>")
            sel = " style='background:#eef5ff'" if name == self.state.selected else ""
            rows.append(f"<tr{sel}><td style='text-align:left'>{html.escape(name)}</td>{''.join(cells)}"
                        f"<td>{r.result.seconds:.2f}</td><td>{html.escape(r.result.device)}</td></tr>")
        self.table.value = (
            "<style>.fe-table td,.fe-table th{padding:3px 10px;text-align:right;border-bottom:1px solid #ddd}"
            ".fe-table th{background:#f4f4f4}</style>"
            f"<table class='fe-table'><tr><th style='text-align:left'>run</th>{head}<th>seconds</th><th>device</th>"
            f"</tr>{''.join(rows)}</table><small>best finite value per column in bold; metrics against the HR "
            f"truth{_bands_note(runs.values())}</small>")

    def export(self):
        """Write the chosen run's fused cube as NetCDF (provenance in attrs) under the session dir; offer a link."""
        from ..io import write_netcdf

        run = self.state.runs.get(self.export_run.value)
        if run is None:
            self.export_msg.value = "<i>nothing to export yet</i>"
            return None
        pb = self.state.problem
        cube = run.result.fused.copy()
        attrs = dict(cube.attrs)
        attrs.update({f"metric_{k}": float(v) for k, v in run.metrics.items()})
        attrs.update(run_name=run.name, scene=str(self.state.truth.attrs.get("scene", "")),
                     problem=pb.name, created_by="fusion-explorer app")
        if pb.protocol is not None:
            attrs.update({f"protocol_{k}": v for k, v in pb.protocol.as_attrs().items()})
        cube.attrs = {k: (v if isinstance(v, int | float | str) else repr(v)) for k, v in attrs.items()}
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run.name).strip("_") or "run"
        out = self.state.session_dir / "exports"
        out.mkdir(parents=True, exist_ok=True)
        path = write_netcdf(cube, out / f"{safe}.nc", overwrite=True)  # the session's own export of this run
        size = path.stat().st_size
        link = ""
        if size <= _LINK_LIMIT:
            data = base64.b64encode(path.read_bytes()).decode()
            link = (f" <a download='{path.name}' href='data:application/x-netcdf;base64,{data}'>⬇ download "
                    f"{path.name}</a>")
        self.export_msg.value = f"wrote {path.name} ({size / 2**20:.1f} MB){link}"
        return path
