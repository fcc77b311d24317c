"""Endmembers and abundances at the selected step; click an endmember to highlight it and see its map large.

Also the estimated sensor responses of blind methods (MossFuse: PSF and SRF against the true ones).
"""

from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

from .figure import PlotlyFigure, png_uri
from .images import heatmap_trace, image_layout, line_layout, png_bytes, shrink
from .panel import Panel
from .state import AppState, colour

_MAX_THUMBS = 30
#: cached per-step drawings (large map, thumbnails) of the selected run
_VIEW_CACHE = 80


def _thumbnails(h: np.ndarray) -> list[bytes]:
    """PNG thumbnails (about 84 px) of abundance maps ``(p, y, x)``, on one scale (the 99.5th percentile)."""
    small = shrink(np.asarray(h, dtype=np.float32), 84)
    vmax = max(float(np.percentile(small, 99.5)), 1e-9)
    return [png_bytes((np.clip(m / vmax, 0, 1) * 255).astype(np.uint8)) for m in small]


class EndmemberPanel(Panel):
    """``W`` (one colour per endmember), abundance thumbnails (HR or LR), the highlighted map large."""

    name = "endmembers"
    title = "Endmembers and abundances"
    hint = "unmixing methods"
    observes = {"draw": ("selected", "step", "runs", "endmember")}

    def __init__(self, state: AppState, **context):
        super().__init__(state)
        self.endmembers = PlotlyFigure(layout=line_layout("Endmembers W", "wavelength (nm)", "reflectance",
                                                          width=560, height=340))
        self.large = PlotlyFigure()
        self.which = W.ToggleButtons(options=[("HR abundances H", "hr"), ("LR abundances H_h", "lr")], value="hr",
                                     style={"button_width": "150px"})
        self.pick = W.Dropdown(description="endmember", layout=W.Layout(width="220px"))
        self.thumbs = W.Box(layout=W.Layout(flex_flow="row wrap", width="100%"))
        self._thumbs: list[tuple[W.VBox, W.Image]] = []
        self._thumbs_key: tuple | None = None
        #: per trace step (keyed by the id of its abundance array, which the trace holds alive): the large
        #: abundance heatmap and the thumbnails' PNGs, so stepping back and forth redoes no block means or encoding
        self._views: dict[tuple, object] = {}
        self._views_of: object = None
        self._sensor_figs = {
            "psf": PlotlyFigure(), "true_psf": PlotlyFigure(),
            "srf": PlotlyFigure(layout=line_layout("SRF: estimated (dashed) vs true", "wavelength (nm)", "response",
                                                   width=460, height=280))}
        self.sensor = W.VBox([W.HTML("<b>Estimated sensor responses</b>"),
                              W.HBox(list(self._sensor_figs.values()), layout=W.Layout(flex_flow="row wrap"))],
                             layout=W.Layout(display="none"))
        self.note = W.HTML()
        self.match = W.HTML()
        self.match.add_class("fe-gt-match")
        self.endmembers.add_class("fe-endmembers")
        self.large.add_class("fe-abundance")
        self.endmembers.on_click(self._on_click)
        self.pick.observe(lambda ch: ch["new"] is not None and setattr(state, "endmember", int(ch["new"])), "value")
        self.which.observe(lambda _: self.draw(), "value")
        self.widget = W.VBox([
            self.note,
            W.HBox([self.endmembers, self.large], layout=W.Layout(flex_flow="row wrap")),
            self.match,
            W.HBox([self.which, self.pick]),
            self.thumbs,
            self.sensor,
        ])
        self.draw()

    def _cached(self, key: tuple, make):
        """``make()`` once per ``key`` and selected run (at most :data:`_VIEW_CACHE` entries, oldest dropped)."""
        run = self.state.run
        if self._views_of is not run:  # another run: ids of its arrays may repeat those of a freed one
            self._views, self._views_of = {}, run
        if key not in self._views:
            self._views[key] = make()
            while len(self._views) > _VIEW_CACHE:
                self._views.pop(next(iter(self._views)))
        return self._views[key]

    def _step(self) -> dict | None:
        run = self.state.run
        if run is None:
            return None
        if run.trace:
            n = len(run.trace)
            s = run.trace[n - 1 if self.state.step < 0 else min(self.state.step, n - 1)]
            if "endmembers" in s:
                return s
        if run.result.endmembers is not None and run.result.abundances is not None:
            return {"endmembers": run.result.endmembers, "abundances": run.result.abundances, "label": "final"}
        return None

    def draw(self, _=None) -> None:
        st = self.state
        self._draw_sensor()
        s = self._step()
        if s is None:
            self.note.value = "<i>the selected run is not an unmixing (no endmembers); run cnmf to see them</i>"
            self.endmembers.clear()
            self.large.clear()
            self.thumbs.children = []
            self._thumbs_key = None
            self.pick.options = []
            self.match.value = ""
            return
        w = np.asarray(s["endmembers"], dtype=np.float32)
        h_key = "abundances" if self.which.value == "hr" or "abundances_lr" not in s else "abundances_lr"
        h = np.asarray(s[h_key], dtype=np.float32)
        p = w.shape[1]
        sel = st.endmember if 0 <= st.endmember < p else -1
        wl = st.wavelength if len(st.wavelength) == w.shape[0] else np.arange(w.shape[0])
        self.note.value = (f"<b>{st.selected}</b> · {s.get('label', '')}: {p} endmembers; "
                           "click a curve (or pick below) to highlight it")
        traces = []
        for k in range(p):
            on = sel < 0 or k == sel
            traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": w[:, k], "name": f"e{k + 1}",
                           "line": {"color": colour(k), "width": 3.5 if k == sel else 1.6},
                           "opacity": 1.0 if on else 0.25})
        ref = st.reference_endmembers
        gt = st.ground_truth
        self.match.value = ""
        if ref is not None and ref.shape[0] == w.shape[0]:
            names = list(gt.names) if gt is not None and len(gt.names) == ref.shape[1] else [
                str(k + 1) for k in range(ref.shape[1])]
            pairs = match_endmembers(w, ref)
            found_for = {g: (f, sam) for f, g, sam in pairs}
            for k in range(ref.shape[1]):
                f = found_for.get(k)
                col = colour(f[0]) if f else "#222"
                traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": ref[:, k],
                               "name": f"ground truth {names[k]}" + (f" ↔ e{f[0] + 1}" if f else ""),
                               "line": {"color": col, "dash": "dash", "width": 2}})
            self.match.value = self._match_table(pairs, names, gt, h if h_key == "abundances" else None)
        self.endmembers.update(traces, {"title": {"text": f"Endmembers W ({s.get('label', '')})", "x": 0.02,
                                                  "font": {"size": 13}}, "showlegend": p <= 12}, replace=True)
        opts = [("all", -1), *[(f"e{k + 1}", k) for k in range(p)]]
        if list(self.pick.options) != opts:
            self.pick.options = opts
        if self.pick.value != sel:
            self.pick.value = sel
        k = max(sel, 0)
        size = h.shape[1:]
        large = self._cached(("large", id(s[h_key]), k), lambda: {
            **heatmap_trace(h[k], "abundance", f"e{k + 1}", max_side=160, zmax=float(h[k].max())),
            "colorscale": "Cividis"})
        self.large.update([large], image_layout(f"abundance of e{k + 1} ({'HR' if h_key == 'abundances' else 'LR'})",
                                                size, 300, colorbar=True), replace=True)
        key = (id(s[h_key]), sel, p)
        if key == self._thumbs_key:  # same abundances (unmixings keep H between some steps): nothing to redraw
            return
        self._thumbs_key = key
        n = min(p, _MAX_THUMBS)
        pngs = self._cached(("thumbs", id(s[h_key])), lambda: _thumbnails(h[:n]))
        while len(self._thumbs) < n:  # thumbnail widgets are made once and then only updated
            j = len(self._thumbs)
            label = W.HTML(f"<span style='color:{colour(j)};font-weight:bold'>e{j + 1}</span>")
            image = W.Image(format="png", layout=W.Layout(width="84px", height="84px"))
            self._thumbs.append((W.VBox([label, image]), image))
        for j in range(n):
            box, image = self._thumbs[j]
            image.value = pngs[j]
            image.layout.border = f"3px solid {colour(j)}" if j == sel else f"1px solid {colour(j)}"
        if len(self.thumbs.children) != n:
            self.thumbs.children = [box for box, _ in self._thumbs[:n]]

    def _match_table(self, pairs, names, gt, h_hr) -> str:
        """Per ground-truth endmember: the found one matched to it, their SAM, and both abundance maps side by side."""
        rows = []
        for f, g, sam in sorted(pairs, key=lambda t: t[1]):
            cells = [f"<td style='text-align:left'><b>{html.escape(names[g])}</b></td>",
                     f"<td style='color:{colour(f)};font-weight:bold'>e{f + 1}</td>", f"<td>{sam:.2f}°</td>"]
            if gt is not None and h_hr is not None and gt.abundances.shape[1:] == h_hr.shape[1:]:
                a_true = shrink(np.asarray(gt.abundances[g], np.float32), 64)
                a_found = shrink(np.asarray(h_hr[f], np.float32), 64)
                err = float(np.sqrt(np.mean((gt.abundances[g] - h_hr[f]) ** 2)))
                cells += [f"<td><img src='{png_uri(png_bytes(_grey01(a_true)))}' width=64 height=64></td>",
                          f"<td><img src='{png_uri(png_bytes(_grey01(a_found)))}' width=64 height=64></td>",
                          f"<td>{err:.3f}</td>"]
            rows.append(f"<tr>{''.join(cells)}</tr>")
        abund = "<th>true abundance</th><th>found</th><th>RMSE</th>" if gt is not None and h_hr is not None else ""
        mean = np.mean([p[2] for p in pairs]) if pairs else float("nan")
        return ("<b>Ground truth</b>: each true endmember matched to one found endmember (least total SAM); "
                f"mean SAM {mean:.2f}°<table class='fe-table fe-match'><tr><th style='text-align:left'>true</th>"
                f"<th>found</th><th>SAM</th>{abund}</tr>{''.join(rows)}</table>")

    def _draw_sensor(self) -> None:
        """The estimated PSF and SRF of a blind method beside the true ones. The three figures are made once and
        only updated: a figure made per draw and dropped at the next one (draws come in bursts: a new run, its
        scores) was closed before the page had built it ("[anywidget] Failed to initialize model")."""
        run = self.state.run
        pb = self.state.problem
        if run is None or pb is None or (run.result.psf is None and run.result.srf is None):
            self.sensor.layout.display = "none"
            for fig in self._sensor_figs.values():
                fig.clear()
            return
        self.sensor.layout.display = ""
        figs = self._sensor_figs
        shown = []
        if run.result.psf is not None:
            est = np.asarray(run.result.psf, dtype=np.float64)
            figs["psf"].update([heatmap_trace(est, "", "estimated PSF", max_side=64)],
                               image_layout("estimated PSF", est.shape, 220, colorbar=True), replace=True)
            shown.append(figs["psf"])
            if pb.psf is not None:
                tru = np.asarray(pb.psf)
                figs["true_psf"].update([heatmap_trace(tru, "", "true PSF", max_side=64)],
                                        image_layout("true PSF", tru.shape, 220, colorbar=True), replace=True)
                shown.append(figs["true_psf"])
        if run.result.srf is not None:
            wl = self.state.wavelength
            est = np.asarray(getattr(run.result.srf, "matrix", run.result.srf), dtype=np.float64)
            traces = [{"type": "scatter", "mode": "lines", "x": wl, "y": est[i], "name": f"estimated {i + 1}",
                       "line": {"color": colour(i), "dash": "dash"}} for i in range(est.shape[0])]
            if pb.srf is not None:
                m = np.asarray(pb.srf.matrix)
                traces += [{"type": "scatter", "mode": "lines", "x": wl, "y": m[i], "name": f"true {i + 1}",
                            "line": {"color": colour(i)}} for i in range(m.shape[0])]
            title = ("SRF: estimated (dashed) vs true" if pb.srf is not None
                     else "SRF: this method's estimate (no true SRF: a real pair)")
            figs["srf"].update(traces, {"title": {"text": title, "font": {"size": 13}, "x": 0.02}}, replace=True)
            shown.append(figs["srf"])
        for fig in figs.values():
            fig.layout.display = "" if fig in shown else "none"

    def _on_click(self, ev: dict) -> None:
        k = int(ev.get("curve", -1))
        self.state.endmember = -1 if k == self.state.endmember else k


def _grey01(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0, 1) * 255).astype(np.uint8)


def match_endmembers(found: np.ndarray, truth: np.ndarray) -> list[tuple[int, int, float]]:
    """Pairs ``(found index, true index, SAM in degrees)`` matching each true endmember ``(bands, q)`` to a
    distinct found one ``(bands, p)`` with the least total spectral angle (Hungarian assignment)."""
    from scipy.optimize import linear_sum_assignment

    f = np.asarray(found, np.float64)
    t = np.asarray(truth, np.float64)
    cos = (t.T @ f) / (np.linalg.norm(t, axis=0)[:, None] * np.linalg.norm(f, axis=0)[None, :] + 1e-12)
    sam = np.degrees(np.arccos(np.clip(cos, -1, 1)))  # (q, p)
    rows, cols = linear_sum_assignment(sam)
    return [(int(c), int(r), float(sam[r, c])) for r, c in zip(rows, cols, strict=True)]
