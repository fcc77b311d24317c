"""Iteration stepper: a slider / play button over the recorded trace steps of an iterative run."""

from __future__ import annotations

import math

import ipywidgets as W

from .figure import PlotlyFigure
from .images import line_layout
from .state import AppState


def _finite(v) -> float | None:
    """``v`` as a float for a curve, or None (a gap in the line) when missing or not finite (e.g. PSNR +inf)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _number(v) -> str:
    v = float(v)
    return format(v, ".3g") if math.isfinite(v) else ("∞" if v > 0 else "n/a" if math.isnan(v) else "−∞")


class IterationPanel:
    """Steps ``state.step`` through the selected run's trace; plots metric- and residual-vs-iteration."""

    def __init__(self, state: AppState):
        self.state = state
        self.slider = W.IntSlider(value=1, min=1, max=1, description="step", continuous_update=False,
                                  layout=W.Layout(width="420px"))
        self.play = W.Play(value=1, min=1, max=1, interval=700, show_repeat=False,
                           layout=W.Layout(width="100px"))
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.slider.add_class("fe-step")
        self.play.add_class("fe-play")
        self.final = W.Button(description="Final result", icon="flag-checkered", layout=W.Layout(width="130px"))
        self.label = W.HTML()
        self.metric = PlotlyFigure(layout=line_layout("Quality vs iteration", "iteration", "PSNR (dB)",
                                                      width=520, height=300))
        self.residual = PlotlyFigure(layout=line_layout("Residuals vs iteration", "iteration", "residual",
                                                        width=460, height=300))
        self._syncing = False  # True while the panel itself moves the slider (state -> widget): not a user step
        self.metric.add_class("fe-metric")
        self.residual.add_class("fe-residual")
        self.slider.observe(lambda ch: self._set_step(ch["new"]), "value")
        self.final.on_click(lambda _: setattr(state, "step", -1))
        state.observe(lambda _: self._on_run(), ["selected", "runs"])
        state.observe(lambda _: self._on_step(), "step")
        self.controls = W.HBox([self.play, self.slider, self.final, self.label], layout=W.Layout(align_items="center"))
        plots = W.HBox([self.metric, self.residual], layout=W.Layout(flex_flow="row wrap"))
        self.widget = W.VBox([self.controls, plots])
        self._on_run()

    def _set_step(self, value: int) -> None:
        run = self.state.run
        if not self._syncing and run is not None and run.iterative:
            self.state.step = int(value) - 1  # the slider counts steps from 1, like the labels

    def _on_run(self) -> None:
        run = self.state.run
        active = run is not None and run.iterative
        for w in (self.slider, self.play, self.final):
            w.disabled = not active
        if not active:
            self.label.value = ("<i>no iterations recorded for this run</i>" if run is not None
                                else "<i>run an iterative method (e.g. cnmf) to step through it</i>")
            # back to the empty plots' own layout: no title, marker or log axis of the previous run survives
            self.metric.clear()
            self.residual.clear()
            return
        n = len(run.trace)
        self._syncing = True
        try:
            self.slider.max = self.play.max = n
        finally:
            self._syncing = False
        self._draw_curves()
        self._on_step()

    def _draw_curves(self) -> None:
        run = self.state.run
        sm = run.step_metrics
        it = [m["iteration"] for m in sm]
        traces = []
        layout: dict = {"title": {"text": f"{run.name}: quality vs iteration", "font": {"size": 13}, "x": 0.02}}
        if sm and "psnr" in sm[0]:
            traces.append({"type": "scatter", "mode": "lines+markers", "x": it,
                           "y": [_finite(m.get("psnr")) for m in sm], "name": "PSNR (dB)",
                           "line": {"color": "#1f77b4"}})
            traces.append({"type": "scatter", "mode": "lines+markers", "x": it,
                           "y": [_finite(m.get("sam")) for m in sm], "name": "SAM (°)", "yaxis": "y2",
                           "line": {"color": "#d62728"}})
            layout["yaxis"] = {"title": {"text": "PSNR (dB)", "font": {"color": "#1f77b4"}}}
            layout["yaxis2"] = {"title": {"text": "SAM (°)", "font": {"color": "#d62728"}}, "overlaying": "y",
                                "side": "right", "showgrid": False}
            layout["margin"] = {"l": 55, "r": 55, "t": 34, "b": 42}
        elif sm and "objective" in sm[0]:
            traces.append({"type": "scatter", "mode": "lines+markers", "x": it, "y": [m.get("objective") for m in sm],
                           "name": "objective"})
            layout["yaxis"] = {"title": {"text": "objective"}, "type": "log"}
        layout["legend"] = {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"}
        if len(it) > 2 and it[-1] > 10 * max(it[1], 1):
            layout["xaxis"] = {"title": {"text": "iteration (log scale)"}, "type": "log"}
        self._metric_traces = traces
        self._metric_layout = layout
        res = []
        for key, name, col in (("residual_hsi", "HSI residual", "#9467bd"), ("residual_msi", "MSI residual", "#2ca02c"),
                               ("objective", "objective", "#7f7f7f")):
            ys = [m.get(key) for m in sm]
            if any(v is not None for v in ys) and not (key == "objective" and "psnr" not in (sm[0] if sm else {})):
                res.append({"type": "scatter", "mode": "lines", "x": it, "y": ys, "name": name, "line": {"color": col}})
        self._residual_traces = res
        self._residual_layout = {"yaxis": {"title": {"text": "residual (log)"}, "type": "log"},
                                 "xaxis": layout.get("xaxis", {"title": {"text": "iteration"}}),
                                 "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1,
                                            "xanchor": "right"}}

    def _on_step(self) -> None:
        run = self.state.run
        if run is None or not run.iterative:
            return
        n = len(run.trace)
        step = n - 1 if self.state.step < 0 else min(self.state.step, n - 1)
        if self.slider.value != step + 1:
            self._syncing = True  # showing the final result moves the slider to the last step; the state keeps -1
            try:
                self.slider.value = step + 1
            finally:
                self._syncing = False
        m = run.step_metrics[step] if step < len(run.step_metrics) else {}
        text = str(m.get("label", ""))
        bits = [f"<b>{text}</b>"] + ([] if "iteration" in text else [f"iteration {m.get('iteration', '?')}"])
        bits += [f"{k.upper()} {_number(m[k])}" for k in ("psnr", "sam") if k in m]
        bits += [f"{k.replace('_', ' ')} {m[k]:.3g}" for k in ("residual_hsi", "residual_msi") if k in m]
        final = " <span style='color:#777'>(final result shown)</span>" if self.state.step < 0 else ""
        self.label.value = " · ".join(bits) + final
        x = m.get("iteration", step)
        marker = {"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                  "line": {"color": "#444", "dash": "dot", "width": 1.5}}
        self.metric.update(self._metric_traces, {**self._metric_layout, "shapes": [marker]}, replace=True)
        self.residual.update(self._residual_traces, {**self._residual_layout, "shapes": [marker]}, replace=True)
