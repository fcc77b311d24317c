"""Endmembers and abundances at the selected step; click an endmember to highlight it and see its map large.

Also the estimated sensor responses of blind methods (MossFuse: PSF and SRF against the true ones).
"""

from __future__ import annotations

import ipywidgets as W
import numpy as np

from .figure import PlotlyFigure
from .images import heatmap_trace, image_layout, line_layout, png_bytes, shrink
from .state import AppState, colour

_MAX_THUMBS = 30


class EndmemberPanel:
    """``W`` (one colour per endmember), abundance thumbnails (HR or LR), the highlighted map large."""

    def __init__(self, state: AppState):
        self.state = state
        self.endmembers = PlotlyFigure(layout=line_layout("Endmembers W", "wavelength (nm)", "reflectance",
                                                          width=560, height=340))
        self.large = PlotlyFigure()
        self.which = W.ToggleButtons(options=[("HR abundances H", "hr"), ("LR abundances H_h", "lr")], value="hr",
                                     style={"button_width": "150px"})
        self.pick = W.Dropdown(description="endmember", layout=W.Layout(width="220px"))
        self.thumbs = W.Box(layout=W.Layout(flex_flow="row wrap", width="100%"))
        self._thumbs: list[tuple[W.VBox, W.Image]] = []
        self._thumbs_key: tuple | None = None
        self.sensor = W.VBox()
        self.note = W.HTML()
        self.endmembers.add_class("fe-endmembers")
        self.large.add_class("fe-abundance")
        self.endmembers.on_click(self._on_click)
        self.pick.observe(lambda ch: ch["new"] is not None and setattr(state, "endmember", int(ch["new"])), "value")
        self.which.observe(lambda _: self.draw(), "value")
        state.observe(lambda _: self.draw(), ["selected", "step", "runs", "endmember"])
        self.widget = W.VBox([
            self.note,
            W.HBox([self.endmembers, self.large], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.which, self.pick]),
            self.thumbs,
            self.sensor,
        ])
        self.draw()

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

    def draw(self) -> None:
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
        if ref is not None and ref.shape[0] == w.shape[0]:
            for k in range(ref.shape[1]):
                traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": ref[:, k],
                               "name": f"ground truth {k + 1}", "line": {"color": "#222", "dash": "dash", "width": 2}})
        self.endmembers.update(traces, {"title": {"text": f"Endmembers W ({s.get('label', '')})", "x": 0.02,
                                                  "font": {"size": 13}}, "showlegend": p <= 12}, replace=True)
        opts = [("all", -1), *[(f"e{k + 1}", k) for k in range(p)]]
        if list(self.pick.options) != opts:
            self.pick.options = opts
        if self.pick.value != sel:
            self.pick.value = sel
        k = max(sel, 0)
        size = h.shape[1:]
        self.large.update([{**heatmap_trace(h[k], "abundance", f"e{k + 1}", max_side=160, zmax=float(h[k].max())),
                            "colorscale": "Cividis"}],
                          image_layout(f"abundance of e{k + 1} ({'HR' if h_key == 'abundances' else 'LR'})",
                                       size, 300, colorbar=True), replace=True)
        key = (id(s[h_key]), sel, p)
        if key == self._thumbs_key:  # same abundances (unmixings keep H between some steps): nothing to redraw
            return
        self._thumbs_key = key
        small = shrink(h[:_MAX_THUMBS], 84)
        vmax = max(float(np.percentile(small, 99.5)), 1e-9)
        n = min(p, _MAX_THUMBS)
        while len(self._thumbs) < n:  # thumbnail widgets are made once and then only updated
            j = len(self._thumbs)
            label = W.HTML(f"<span style='color:{colour(j)};font-weight:bold'>e{j + 1}</span>")
            image = W.Image(format="png", layout=W.Layout(width="84px", height="84px"))
            self._thumbs.append((W.VBox([label, image]), image))
        for j in range(n):
            box, image = self._thumbs[j]
            image.value = png_bytes((np.clip(small[j] / vmax, 0, 1) * 255).astype(np.uint8))
            image.layout.border = f"3px solid {colour(j)}" if j == sel else f"1px solid {colour(j)}"
        if len(self.thumbs.children) != n:
            self.thumbs.children = [box for box, _ in self._thumbs[:n]]

    def _draw_sensor(self) -> None:
        run = self.state.run
        pb = self.state.problem
        if run is None or pb is None or (run.result.psf is None and run.result.srf is None):
            self.sensor.children = []
            return
        figs = []
        if run.result.psf is not None:
            est = np.asarray(run.result.psf, dtype=np.float64)
            fig = PlotlyFigure([heatmap_trace(est, "", "estimated PSF", max_side=64)],
                               image_layout("estimated PSF", est.shape, 220, colorbar=True))
            figs.append(fig)
            if pb.psf is not None:
                tru = np.asarray(pb.psf)
                figs.append(PlotlyFigure([heatmap_trace(tru, "", "true PSF", max_side=64)],
                                         image_layout("true PSF", tru.shape, 220, colorbar=True)))
        if run.result.srf is not None:
            wl = self.state.wavelength
            est = np.asarray(getattr(run.result.srf, "matrix", run.result.srf), dtype=np.float64)
            traces = [{"type": "scatter", "mode": "lines", "x": wl, "y": est[i], "name": f"estimated {i + 1}",
                       "line": {"color": colour(i), "dash": "dash"}} for i in range(est.shape[0])]
            if pb.srf is not None:
                m = np.asarray(pb.srf.matrix)
                traces += [{"type": "scatter", "mode": "lines", "x": wl, "y": m[i], "name": f"true {i + 1}",
                            "line": {"color": colour(i)}} for i in range(m.shape[0])]
            figs.append(PlotlyFigure(traces, line_layout("SRF: estimated (dashed) vs true", "wavelength (nm)",
                                                         "response", width=460, height=280)))
        self.sensor.children = [W.HTML("<b>Estimated sensor responses</b>"),
                                W.HBox(figs, layout=W.Layout(flex_flow="row wrap"))]

    def _on_click(self, ev: dict) -> None:
        k = int(ev.get("curve", -1))
        self.state.endmember = -1 if k == self.state.endmember else k
