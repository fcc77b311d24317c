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
#: a real pair's columns: how well a result reproduces each input (lower is better), no truth involved
_NR_COLUMNS = (("hsi_residual", "LR-HSI residual ‖S(Z)−Y<sub>h</sub>‖/‖Y<sub>h</sub>‖", ".4f"),
               ("msi_residual", "HR-MSI residual ‖RZ−Y<sub>m</sub>‖/‖Y<sub>m</sub>‖", ".4f"))
#: why a real pair's table has no quality metrics (shown under it)
NO_TRUTH_NOTE = ("This is a real pair: there is no high-resolution hyperspectral truth, so no quality metric "
                 "against a truth is shown. Each column says how well a result reproduces one of the two inputs: "
                 "the fused cube Z taken back through the spatial degradation S (blur and decimation) should give "
                 "the LR-HSI, and through the spectral response R the HR-MSI (relative residual, lower is better; "
                 "every run goes through the same S and R, so the rows compare). Reproducing both inputs is "
                 "necessary, not sufficient: a result can fit both and still be wrong where the inputs do not "
                 "constrain it.")


def _best_values(metrics, columns=_COLUMNS) -> dict[str, float]:
    """Per column, the best finite value over the runs (higher for PSNR/SSIM, else lower); none if no finite one."""
    best: dict[str, float] = {}
    rows = list(metrics)
    for key, _, _ in columns:
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
        real = self.state.real_pair
        columns = _NR_COLUMNS if real else _COLUMNS
        best = _best_values((r.metrics for r in runs.values()), columns)
        head = "".join(f"<th>{h}</th>" for _, h, _ in columns)
        rows = []
        for name, r in runs.items():
            cells = []
            if r.score_error:
                cells.append(f"<td colspan='{len(columns)}' style='color:#b00020'>scoring failed: "
                             f"{html.escape(r.score_error)}</td>")
            elif not r.scored and not r.metrics:
                cells.append(f"<td colspan='{len(columns)}' style='text-align:center;color:#667'><i>"
                             f"{'checking…' if real else 'scoring…'}</i></td>")
            for key, _, fmt in columns if not cells else ():
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
            f"</tr>{''.join(rows)}</table>" + (self._no_truth_note(runs) if real else
            f"<small>best finite value per column in bold; metrics against the HR "
            f"truth{_bands_note(runs.values())}</small>"))

    def _no_truth_note(self, runs) -> str:
        hows = sorted({r.diagnostics_how for r in runs.values() if r.diagnostics_how})
        how = f"<br>Used: {html.escape('; '.join(hows))}." if hows else ""
        return (f"<div class='fe-no-truth' style='max-width:900px;font-size:12px;color:#334'><b>No truth.</b> "
                f"{html.escape(NO_TRUTH_NOTE)} Lowest value per column in bold.{how}</div>")

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
        source = self.state.truth if self.state.truth is not None else pb.lr_hsi
        if self.state.real_pair:
            attrs.update(no_truth="real pair: metric_* are no-reference residuals against the inputs",
                         diagnostics=run.diagnostics_how)
        attrs.update(run_name=run.name, scene=str(source.attrs.get("scene", "")),
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
