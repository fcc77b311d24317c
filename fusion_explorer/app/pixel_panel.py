"""Pixel spectra: the selected run (at the selected step) with SAM and error maps; click to see spectra, pin, CSV."""

from __future__ import annotations

import base64
import threading

import ipywidgets as W
import numpy as np

from .figure import PlotlyFigure
from .images import display_maps, heatmap_trace, image_layout, image_trace, line_layout, pins_layout, rgb_display
from .state import AppState, colour

#: rendered steps kept (a 512x512 step is about 0.4 MB here)
_VIEW_CACHE = 64
_FIXED = {"truth": ("#111111", "solid"), "LR-HSI": ("#888888", "dot")}


class PixelPanel:
    """Fused image + SAM map + error map (clickable) and the spectrum plot of the clicked and pinned pixels."""

    def __init__(self, state: AppState):
        self.state = state
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
        self.where = W.HTML()
        for fig in (self.image, self.sam, self.error):
            fig.on_click(self._on_click)
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
        state.observe(self._on_runs, "runs")
        state.observe(self._warm, "runs")
        state.observe(lambda _: self._sync_selected(), "selected")
        state.observe(lambda _: self.redraw(), ["selected", "step"])
        state.observe(lambda _: self.draw_spectra(), ["cursor", "pins", "step", "selected", "runs", "endmember"])
        state.observe(lambda _: self._draw_markers(), ["pins", "cursor"])
        state.observe(lambda _: self._reset(), "problem")
        self.widget = W.VBox([
            W.HBox([self.run, self.step_label], layout=W.Layout(align_items="center")),
            W.HBox([self.image, self.sam, self.error], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.spectrum, W.VBox([self.where, self.pin, self.clear, self.csv])],
                   layout=W.Layout(flex_flow="row wrap")),
        ])
        self._reset()

    # ------------------------------------------------------------------ state -> widgets
    def _reset(self) -> None:
        st = self.state
        self._views = {}
        self._on_runs()
        self.step_label.value = "<i>run a method to see its result here</i>" if st.problem is not None else ""
        if st.problem is not None:
            h, w = st.hr_size
            self.image.update([image_trace(*rgb_display(st.truth.values, st.wavelength), "truth")],
                              {**image_layout("HR truth (no run yet)", (h, w), 300), **pins_layout([], None, (h, w))},
                              replace=True)
            self.sam.clear(image_layout("SAM map (needs a run)", (h, w), 300, colorbar=True))
            self.error.clear(image_layout("error map (needs a run)", (h, w), 300, colorbar=True))
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

    def _sync_selected(self) -> None:
        if self.state.selected in self.run.options and self.run.value != self.state.selected:
            self._syncing = True
            try:
                self.run.value = self.state.selected
            finally:
                self._syncing = False

    def views(self, run, step: int) -> tuple[dict, dict, dict]:
        """The fused true colour, SAM map and error map traces of ``run`` at ``step`` (cached)."""
        key = (id(run), run.name, step if run.iterative else -1)
        if key not in self._views:
            st = self.state
            z = run.fused(step)
            sam, err = display_maps(st.truth.values, np.clip(z, 0, 1))
            self._views[key] = (image_trace(*rgb_display(z, st.wavelength), "fused"),
                                heatmap_trace(sam, "°", "SAM"), heatmap_trace(err, "RMSE", "error"))
            while len(self._views) > _VIEW_CACHE:
                self._views.pop(next(iter(self._views)))
        return self._views[key]

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

    def redraw(self) -> None:
        """The selected run at the selected step: true colour, SAM and error maps."""
        st = self.state
        run = st.run
        if run is None or st.problem is None:
            return
        h, w = st.hr_size
        label = "final"
        if run.iterative and st.step >= 0:
            s = run.trace[min(st.step, len(run.trace) - 1)]
            text = str(s.get("label", ""))
            it = "" if "iteration" in text else f" (iteration {s.get('iteration', '?')})"
            label = f"step {min(st.step, len(run.trace) - 1) + 1}/{len(run.trace)}: {text}{it}"
        self.step_label.value = f"<b>{run.name}</b> · {label}"
        pins = pins_layout(st.pins, st.cursor, (h, w))
        image, sam, err = self.views(run, min(st.step, len(run.trace) - 1) if run.iterative else -1)
        self.image.update([image], {**image_layout(f"{run.name}: fused (true colour)", (h, w), 300), **pins},
                          replace=True)
        self.sam.update([sam], {**image_layout("SAM vs truth (degrees)", (h, w), 300, colorbar=True), **pins},
                        replace=True)
        self.error.update([err], {**image_layout("per-pixel RMSE vs truth", (h, w), 300, colorbar=True), **pins},
                          replace=True)

    def _draw_markers(self) -> None:
        if self.state.problem is None:
            return
        pins = pins_layout(self.state.pins, self.state.cursor, self.state.hr_size)
        for fig in (self.image, self.sam, self.error):
            if fig.data:
                fig.update(layout=pins)

    def draw_spectra(self) -> None:
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
                label = name if name != st.selected or st.step < 0 else f"{name} (step {st.step + 1})"
                traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": spec, "name": label,
                               "line": {"color": col, "dash": dash, "width": 2.5 if name == st.selected else 1.8}})
        for k, (py, px) in enumerate(st.pins):
            spectra = st.spectra(int(py), int(px))
            traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": spectra["truth"],
                           "name": f"pin {k + 1} truth", "line": {"color": colour(k), "width": 1.5}})
            if st.selected in spectra:
                traces.append({"type": "scatter", "mode": "lines", "x": wl, "y": spectra[st.selected],
                               "name": f"pin {k + 1} {st.selected}", "line": {"color": colour(k), "dash": "dash"}})
        title = "Spectra: click any image" if st.cursor is None else f"Spectra at y={st.cursor[0]}, x={st.cursor[1]}"
        self.spectrum.update(traces, {"title": {"text": title, "font": {"size": 13}, "x": 0.02}}, replace=True)
        if not traces:
            self.csv.value = ""
        else:
            data = base64.b64encode(st.spectra_csv().encode()).decode()
            self.csv.value = (f"<a download='spectra.csv' href='data:text/csv;base64,{data}' "
                              "style='display:inline-block;padding:4px 10px;border:1px solid #888;border-radius:3px;"
                              "text-decoration:none'>⬇ Export spectra (CSV)</a>")

    # ------------------------------------------------------------------ events
    def _on_click(self, ev: dict) -> None:
        self.state.click(ev)

    def _pin(self) -> None:
        if self.state.cursor is not None:
            pins = [tuple(p) for p in self.state.pins]
            if tuple(self.state.cursor) not in pins:
                self.state.pins = [*pins, tuple(self.state.cursor)]
