"""Pixel spectra: the selected run (at the selected step) with SAM and error maps; click to see spectra, pin, CSV."""

from __future__ import annotations

import base64
import html
import threading

import ipywidgets as W
import numpy as np

from .figure import PlotlyFigure
from .images import display_maps, heatmap_trace, image_layout, image_trace, line_layout, pins_layout, rgb_display
from .panel import Panel
from .regions import LassoRegion, RegionError, describe, lasso_region, lasso_shapes, region_spectra
from .state import AppState, colour

#: rendered steps kept (a 512x512 step is about 0.4 MB here)
_VIEW_CACHE = 64
_FIXED = {"truth": ("#111111", "solid"), "Wald reference": ("#5a4a3a", "longdash"), "LR-HSI": ("#888888", "dot")}


class PixelPanel(Panel):
    """Fused image + SAM map + error map (clickable) and the spectrum plot of the clicked and pinned pixels."""

    name = "pixels"
    title = "Pixels"
    hint = "click any image for spectra; pin pixels to compare"
    observes = {
        "_on_runs": ("runs",),
        "_warm": ("runs",),
        "_sync_selected": ("selected",),
        "redraw": ("selected", "step"),
        "draw_spectra": ("cursor", "pins", "step", "selected", "runs", "endmember", "region"),
        "_draw_markers": ("pins", "cursor", "region"),
        "_reset": ("problem",),
    }
    #: registers first: a click's spectrum goes out before any panel moves its cursor markers
    connect_order = -1

    def __init__(self, state: AppState, **context):
        super().__init__(state)
        self.run = W.Dropdown(description="show run", layout=W.Layout(width="320px"))
        self.step_label = W.HTML()
        self.image = PlotlyFigure()
        self.sam = PlotlyFigure()
        self.error = PlotlyFigure()
        self.spectrum = PlotlyFigure(layout=line_layout("Spectra: click any image", "wavelength (nm)", "reflectance",
                                                        width=640, height=360))
        self.pin = W.Button(description="Pin pixel", icon="thumb-tack", layout=W.Layout(width="120px"))
        self.clear = W.Button(description="Clear pins", icon="trash", layout=W.Layout(width="120px"))
        self.csv = W.HTML()
        self.scale = W.ToggleButtons(options=[("fixed colour scale", "fixed"), ("per image", "auto")], value="fixed",
                                     tooltips=["the same SAM / error scale for every step and run of this scene "
                                               "(top: the LR-HSI's own maps, 99th percentile)",
                                               "each map scaled to its own 99th percentile"],
                                     style={"button_width": "140px"})
        self.scale.add_class("fe-scale")
        self.scale.observe(lambda _: self.redraw(), "value")
        self._fixed = None
        self.where = W.HTML()
        for fig in (self.image, self.sam, self.error):
            fig.on_click(self._on_click)
            fig.on_select(self._on_select)
        self.region_mode = W.ToggleButton(description="select a region", icon="square-o", value=False,
                                          tooltip="drag a box (or draw a lasso) on an image: mean ± std spectra "
                                                  "over it",
                                          layout=W.Layout(width="150px"))
        self.region_mode.add_class("fe-region-mode")
        self.region_mode.observe(lambda _: self._draw_markers(), "value")
        self.region_shape = W.ToggleButtons(options=[("box", "box"), ("lasso", "lasso")], value="box",
                                            tooltips=["drag a rectangle", "draw around the pixels freehand"],
                                            style={"button_width": "56px"})
        self.region_shape.add_class("fe-region-shape")
        self.region_shape.observe(lambda _: self._draw_markers(), "value")
        #: one line when a drawn region covers no pixel
        self.region_note = W.HTML()
        self.region_note.add_class("fe-region-note")
        self.clear_region = W.Button(description="Clear region", icon="times", layout=W.Layout(width="120px"))
        self.clear_region.on_click(lambda _: setattr(state, "region", None))
        self.clear_region.on_click(lambda _: setattr(self.region_note, "value", ""))
        for key, w in {"fe-fused": self.image, "fe-sam": self.sam, "fe-error": self.error,
                       "fe-spectrum": self.spectrum, "fe-pin": self.pin, "fe-clear": self.clear,
                       "fe-show-run": self.run, "fe-run-label": self.step_label, "fe-where": self.where,
                       "fe-csv": self.csv}.items():
            w.add_class(key)
        self.pin.on_click(lambda _: self._pin())
        self.clear.on_click(lambda _: setattr(state, "pins", []))
        # the dropdown is a view of ``state.selected``: only a user's pick writes back. Reassigning its options
        # resets ipywidgets' index to 0 (the oldest run), which used to overwrite the newest run's selection.
        self._syncing = False
        self.run.observe(lambda ch: not self._syncing and ch["new"] and setattr(state, "selected", ch["new"]), "value")
        self._views: dict = {}
        self.widget = W.VBox([
            W.HBox([self.run, self.scale, self.step_label],
                   layout=W.Layout(align_items="center", flex_flow="row wrap")),
            W.HBox([self.image, self.sam, self.error], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.spectrum, W.VBox([self.where, self.pin, self.clear, self.region_mode, self.region_shape,
                                           self.clear_region, self.region_note, self.csv])],
                   layout=W.Layout(flex_flow="row wrap")),
        ])
        self._reset()

    # ------------------------------------------------------------------ state -> widgets
    def _reset(self, _=None) -> None:
        st = self.state
        self._views = {}
        self.region_note.value = ""
        self._on_runs()
        self.step_label.value = "<i>run a method to see its result here</i>" if st.problem is not None else ""
        if st.problem is not None:
            h, w = st.hr_size
            if st.truth is not None:
                base, what = rgb_display(st.truth.values, st.wavelength), "HR truth"
            elif st.reference is not None:
                base, what = rgb_display(st.reference.values, st.wavelength), "Wald reference (not truth)"
            else:
                base, what = rgb_display(st.problem.lr_hsi.values, st.wavelength, st.problem.ratio), "LR-HSI"
            self.image.update([image_trace(*base, "truth" if st.truth is not None else "input")],
                              {**image_layout(f"{what} (no run yet)", (h, w), 300), **pins_layout([], None, (h, w))},
                              replace=True)
            first, second = ("SAM map", "error map") if st.truth is not None else ("LR-HSI residual map",
                                                                                 "HR-MSI residual map")
            self.sam.clear(image_layout(f"{first} (needs a run)", (h, w), 300, colorbar=True))
            self.error.clear(image_layout(f"{second} (needs a run)", (h, w), 300, colorbar=True))
        else:
            for fig in (self.image, self.sam, self.error):
                fig.clear()
        self.draw_spectra()

    def _on_runs(self, _=None) -> None:
        self._syncing = True
        try:
            self.run.options = list(self.state.runs)
            self.run.value = self.state.selected if self.state.selected in self.state.runs else None
        finally:
            self._syncing = False

    def _sync_selected(self, _=None) -> None:
        if self.state.selected in self.run.options and self.run.value != self.state.selected:
            self._syncing = True
            try:
                self.run.value = self.state.selected
            finally:
                self._syncing = False

    def fixed_scales(self) -> tuple[float, float]:
        """The scene's fixed colour-scale tops for SAM (degrees) and per-pixel RMSE: the 99th percentiles of the
        maps of the LR-HSI itself, each LR pixel repeated over its block (the do-nothing estimate every method
        should beat). The same for every step and every run of a scene, so maps compare by eye."""
        pb = self.state.problem
        if self._fixed is None or self._fixed[0] is not pb:
            r = pb.ratio
            lr = np.asarray(pb.lr_hsi.values, dtype=np.float32)
            h, w = pb.hr_size
            naive = np.repeat(np.repeat(lr, r, axis=1), r, axis=2)[:, :h, :w]
            if self.state.truth is None:  # a real pair: the do-nothing estimate's residual maps
                sam, err = self._residual_maps(naive)
            else:
                sam, err = display_maps(self.state.truth.values, np.clip(naive, 0, 1))
            self._fixed = (pb, (max(float(np.percentile(sam, 99)), 1e-6), max(float(np.percentile(err, 99)), 1e-9)))
        return self._fixed[1]

    def views(self, run, step: int) -> tuple[dict, dict, dict]:
        """The fused true colour, SAM map and error map traces of ``run`` at ``step`` (cached)."""
        fixed = self.scale.value == "fixed"
        key = (id(run), run.name, step if run.iterative else -1, fixed)
        if key not in self._views:
            st = self.state
            z = run.fused(step)
            sam_top, err_top = self.fixed_scales() if fixed else (None, None)
            if st.truth is None:  # a real pair: residual maps against both inputs instead of maps against truth
                hsi, msi = self._residual_maps(z)
                maps = (heatmap_trace(hsi, "RMS", "LR-HSI residual", zmax=sam_top),
                        heatmap_trace(msi, "RMS", "HR-MSI residual", zmax=err_top))
            else:
                sam, err = display_maps(st.truth.values, np.clip(z, 0, 1))
                maps = (heatmap_trace(sam, "°", "SAM", zmax=sam_top), heatmap_trace(err, "RMSE", "error", zmax=err_top))
            self._views[key] = (image_trace(*rgb_display(z, st.wavelength), "fused"), *maps)
            while len(self._views) > _VIEW_CACHE:
                self._views.pop(next(iter(self._views)))
        return self._views[key]

    def _residual_maps(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A real pair's two maps ``(Y, X)``: the LR-HSI residual (RMS over bands of ``S(z) − Y_h``, each LR pixel
        repeated over its block) and the HR-MSI residual (of ``R z − Y_m``); see :mod:`.no_reference`."""
        pb = self.state.problem
        out = self.state.diagnostics(z)
        r = pb.ratio
        h, w = pb.hr_size
        hsi = np.repeat(np.repeat(out["hsi_map"], r, axis=0), r, axis=1)[:h, :w]
        return hsi, out["msi_map"]

    def _warm(self, change) -> None:
        """Render every recorded step of a new iterative run in the background, so stepping is instant."""
        new = [r for name, r in change["new"].items() if name not in (change["old"] or {}) and r.iterative]
        if not new:
            return
        run = new[-1]

        def work() -> None:
            for step in range(min(len(run.trace), _VIEW_CACHE)):
                if self.state.runs.get(run.name) is not run:
                    return
                try:
                    self.views(run, step)
                except Exception:  # noqa: BLE001 - warming is best effort; redraw reports errors
                    return

        threading.Thread(target=work, daemon=True).start()

    def redraw(self, _=None) -> None:
        """The selected run at the selected step: true colour, SAM and error maps."""
        st = self.state
        run = st.run
        if run is None or st.problem is None:
            return
        h, w = st.hr_size
        label = "final"
        if run.iterative and st.step >= 0:  # one numbering: the trace's iteration, as the stepper shows it
            s = run.trace[min(st.step, len(run.trace) - 1)]
            stage = f" ({s['stage']})" if s.get("stage") else ""
            label = f"iteration {s.get('iteration', '?')}{stage}: {s.get('label', '')}"
        self.step_label.value = f"<b>{run.name}</b> · {label}"
        pins = self._markers()
        image, sam, err = self.views(run, min(st.step, len(run.trace) - 1) if run.iterative else -1)
        self.image.update([image], {**image_layout(f"{run.name}: fused (true colour)", (h, w), 300), **pins},
                          replace=True)
        fixed = " · fixed scale" if self.scale.value == "fixed" else ""
        first, second = ((f"SAM vs truth (degrees){fixed}", f"per-pixel RMSE vs truth{fixed}") if st.truth is not None
                         else (f"LR-HSI residual |S(Z)−Yh| (no truth){fixed}", f"HR-MSI residual |RZ−Ym|{fixed}"))
        self.sam.update([sam], {**image_layout(first, (h, w), 300, colorbar=True), **pins}, replace=True)
        self.error.update([err], {**image_layout(second, (h, w), 300, colorbar=True), **pins}, replace=True)

    def _markers(self) -> dict:
        """Pins, cursor and region markers, and the drag mode (a box in region mode, else clicks only)."""
        st = self.state
        lasso = st.region if isinstance(st.region, LassoRegion) else None
        marks = pins_layout(st.pins, st.cursor, st.hr_size, None if lasso is not None else st.region)
        if lasso is not None:  # its polygon, not its bounding box, is where the spectra were taken
            shapes, notes = lasso_shapes(lasso)
            marks = {"shapes": shapes + marks["shapes"], "annotations": notes + marks["annotations"]}
        drag = ("lasso" if self.region_shape.value == "lasso" else "select") if self.region_mode.value else False
        return {**marks, "dragmode": drag, "selections": []}

    def _draw_markers(self, _=None) -> None:
        if self.state.problem is None:
            return
        pins = self._markers()
        for fig in (self.image, self.sam, self.error):
            if fig.data:
                fig.update(layout=pins)

    def draw_spectra(self, _=None) -> None:
        """Spectra of the cursor pixel (every source) and of each pin (truth and the selected run)."""
        st = self.state
        if st.problem is None:
            self.spectrum.clear()
            self.where.value = self.csv.value = ""
            return
        wl = st.wavelength
        traces = []
        # pixel info and the CSV link describe the current cursor and pins only (cleared with them on a scene change)
        if st.cursor is None:
            self.where.value = ""
        else:
            y, x = st.cursor
            ly, lx = st.lr_pixel(y, x)
            self.where.value = (f"<b>pixel</b> y={y}, x={x}<br>LR pixel ({ly}, {lx})<br>"
                                f"<small>{len(st.pins)} pinned</small>")
            for i, (name, spec) in enumerate(st.spectra(y, x).items()):
                col, dash = _FIXED.get(name, (colour(i + 1), "solid"))
                label = name if name != st.selected or st.step < 0 else f"{name} (iteration {self._iteration()})"
                traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": spec, "name": label,
                               "line": {"color": col, "dash": dash, "width": 2.5 if name == st.selected else 1.8}})
        for k, (py, px) in enumerate(st.pins):
            spectra = st.spectra(int(py), int(px))
            base = next(b for b in ("truth", "Wald reference", "LR-HSI") if b in spectra)  # a real pair has no truth
            traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": spectra[base],
                           "name": f"pin {k + 1} {base}", "line": {"color": colour(k), "width": 1.5}})
            if st.selected in spectra:
                traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": spectra[st.selected],
                               "name": f"pin {k + 1} {st.selected}", "line": {"color": colour(k), "dash": "dash"}})
        for i, (name, (mean, std)) in enumerate(region_spectra(st).items()):
            col, dash = _FIXED.get(name, (colour(i + 1), "solid"))
            rgba = _rgba(col, 0.15)
            traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": mean + std, "line": {"width": 0},
                           "showlegend": False, "hoverinfo": "skip", "name": f"region {name} +std"})
            traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": mean - std, "fill": "tonexty",
                           "fillcolor": rgba, "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip",
                           "name": f"region {name} -std"})
            traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": mean,
                           "name": f"region {name} (mean ± std)",
                           "line": {"color": col, "dash": "dashdot" if dash == "solid" else dash, "width": 2}})
        title = "Spectra: click any image" if st.cursor is None else f"Spectra at y={st.cursor[0]}, x={st.cursor[1]}"
        if st.region is not None:
            title += f"; {describe(st.region)}"
        self.spectrum.update(traces, {"title": {"text": title, "font": {"size": 13}, "x": 0.02}}, replace=True)
        if not traces:
            self.csv.value = ""
        else:
            data = base64.b64encode(st.spectra_csv().encode()).decode()
            self.csv.value = (f"<a download='spectra.csv' href='data:text/csv;base64,{data}' "
                              "style='display:inline-block;padding:4px 10px;border:1px solid #888;border-radius:3px;"
                              "text-decoration:none'>⬇ Export spectra (CSV)</a>")

    def _iteration(self):
        run = self.state.run
        if run is None or not run.trace:
            return "?"
        return run.trace[min(self.state.step, len(run.trace) - 1)].get("iteration", "?")

    # ------------------------------------------------------------------ events
    def _on_click(self, ev: dict) -> None:
        self.state.click(ev)

    def _on_select(self, ev: dict) -> None:
        """A region drawn on an image: a box (``ev = {"x": [a, b], "y": [c, d]}``, see :meth:`AppState.select`) or
        a lasso (``ev = {"lasso": {"x": [...], "y": [...]}}``, its vertices in HR pixel coordinates). A lasso that
        holds no pixel clears the region and says why in one line."""
        st = self.state
        if st.problem is None:
            return
        self.region_note.value = ""
        lasso = ev.get("lasso")
        if lasso is None:
            st.select(ev)
            return
        try:
            st.region = lasso_region(lasso.get("x", []), lasso.get("y", []), st.hr_size)
        except RegionError as e:
            st.region = None
            self.region_note.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def select_lasso(self, xs, ys) -> None:
        """What drawing a lasso through ``(xs[i], ys[i])`` on an image does (for tests without a browser)."""
        self._on_select({"event": "select", "lasso": {"x": list(xs), "y": list(ys)}})

    def _pin(self) -> None:
        if self.state.cursor is not None:
            pins = [tuple(p) for p in self.state.pins]
            if tuple(self.state.cursor) not in pins:
                self.state.pins = [*pins, tuple(self.state.cursor)]


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"
