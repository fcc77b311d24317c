"""Iteration stepper: a slider / play button over the recorded trace steps of an iterative run."""

from __future__ import annotations

import html
import math

import ipywidgets as W

from .figure import PlotlyFigure
from .images import line_layout
from .panel import Panel
from .state import AppState, colour


def _finite(v) -> float | None:
    """``v`` as a float for a curve, or None (a gap in the line) when missing or not finite (e.g. PSNR +inf)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _number(v) -> str:
    v = float(v)
    return format(v, ".3g") if math.isfinite(v) else ("∞" if v > 0 else "n/a" if math.isnan(v) else "−∞")


class IterationPanel(Panel):
    """Steps ``state.step`` through the selected run's trace; plots metric- and residual-vs-iteration."""

    name = "iterations"
    title = "Iterations"
    hint = "step through a recorded run"
    observes = {"_on_run": ("selected", "runs", "scored"), "_on_step": ("step",)}

    def __init__(self, state: AppState, **context):
        super().__init__(state)
        # one numbering on the page: the trace's iteration (the readout beside the slider, the labels, the curves'
        # x axis); the slider itself only moves through the recorded steps and shows no number of its own
        self.slider = W.IntSlider(value=1, min=1, max=1, description="step", continuous_update=False, readout=False,
                                  layout=W.Layout(width="360px"))
        self.readout = W.HTML(layout=W.Layout(min_width="130px"))
        self.readout.add_class("fe-step-readout")
        self.overlay = W.Checkbox(value=True, description="overlay other runs' curves", indent=False,
                                  layout=W.Layout(width="220px"))
        self.overlay.observe(lambda _: self._on_run(), "value")
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
        self.label.add_class("fe-step-label")
        self.controls = W.HBox([self.play, self.slider, self.readout, self.final, self.label],
                               layout=W.Layout(align_items="center", flex_flow="row wrap"))
        plots = W.HBox([self.metric, self.residual], layout=W.Layout(flex_flow="row wrap"))
        self.widget = W.VBox([self.controls, plots, self.overlay])
        self._on_run()

    def _set_step(self, value: int) -> None:
        run = self.state.run
        if not self._syncing and run is not None and run.iterative:
            self.state.step = int(value) - 1  # the slider counts steps from 1, like the labels

    def _on_run(self, _=None) -> None:
        run = self.state.run
        active = run is not None and run.iterative
        for w in (self.slider, self.play, self.final):
            w.disabled = not active
        if not active:
            self.label.value = ("<i>no iterations recorded for this run</i>" if run is not None
                                else "<i>run an iterative method (e.g. cnmf) to step through it</i>")
            self.readout.value = ""
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

    def _overlays(self, run, key: str, label: str) -> list[dict]:
        """Thin dotted curves of ``key`` for every other iterative run that has it."""
        traces = []
        for k, (name, other) in enumerate(self.state.runs.items()):
            om = other.step_metrics
            if other is run or not other.iterative or not om or key not in om[0]:
                continue
            traces.append({"type": "scatter", "mode": "lines", "x": [m["iteration"] for m in om],
                           "y": [_finite(m.get(key)) for m in om], "name": f"{name} {label}",
                           "line": {"color": colour(k + 2), "width": 1.3, "dash": "dot"}, "opacity": 0.8})
        return traces

    def _draw_curves(self) -> None:
        run = self.state.run
        sm = run.step_metrics
        it = [m["iteration"] for m in sm]
        traces = []
        layout: dict = {"title": {"text": f"{run.name}: quality vs iteration", "font": {"size": 13}, "x": 0.02}}
        scored = bool(sm) and "psnr" in sm[0]
        if scored:
            if self.overlay.value:  # every other scored iterative run, thin: learned vs plain vs cnmf at a glance
                traces += self._overlays(run, "psnr", "PSNR")
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
        elif sm and "nr_hsi" in sm[0]:  # a real pair: how well each step reproduces both inputs (no truth)
            layout["title"]["text"] = f"{run.name}: reproduction of the inputs vs iteration (no truth)"
            if self.overlay.value:  # every other checked iterative run's MSI residual, thin
                traces += self._overlays(run, "nr_msi", "MSI residual")
            for key, name, col in (("nr_hsi", "HSI relative residual", "#9467bd"),
                                   ("nr_msi", "MSI relative residual", "#2ca02c")):
                traces.append({"type": "scatter", "mode": "lines+markers", "x": it,
                               "y": [_finite(m.get(key)) for m in sm], "name": name, "line": {"color": col}})
            layout["yaxis"] = {"title": {"text": "relative residual"}, "rangemode": "tozero"}
        elif sm and "objective" in sm[0]:
            ys, rng = log_floor([m.get("objective") for m in sm])
            traces.append({"type": "scatter", "mode": "lines+markers", "x": it, "y": ys, "name": "objective"})
            layout["yaxis"] = {"title": {"text": "objective"}, "type": "log", **rng}
        layout["legend"] = {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"}
        # one linear iteration axis for every run: iteration 0 (the start) is drawn, stages are shaded on it
        xaxis = {"title": {"text": "iteration"}, "type": "linear", "zeroline": False}
        if it:  # the recorded span (SCALMU's layers follow 1597 unrecorded start iterations: show the layers)
            pad = max(0.5, 0.02 * (max(it) - min(it)))
            xaxis["range"] = [min(it) - pad, max(it) + pad]
        shapes, notes = stage_shapes(getattr(run.result, "stages", None) or [], xaxis.get("range"))
        layout["xaxis"] = xaxis
        self._stage_shapes, self._stage_notes = shapes, notes
        self._metric_traces = traces
        self._metric_layout = layout
        self._curves_sent = False  # the next step sends the traces; later steps move the marker only
        res = []
        rows = {}
        for key in ("residual_hsi", "residual_msi", "objective"):
            rows[key] = [m.get(key) for m in sm]
        floor_values, rng = log_floor([v for vals in rows.values() for v in vals])
        for key, name, col in (("residual_hsi", "HSI residual", "#9467bd"), ("residual_msi", "MSI residual", "#2ca02c"),
                               ("objective", "objective", "#7f7f7f")):
            ys = rows[key]
            if any(v is not None for v in ys) and not (key == "objective" and not scored):
                ys, _ = log_floor(ys, rng.get("floor"))
                res.append({"type": "scatter", "mode": "lines", "x": it, "y": ys, "name": name, "line": {"color": col}})
        self._residual_traces = res
        self._residual_layout = {"yaxis": {"title": {"text": "residual (log)"}, "type": "log",
                                           **{k: v for k, v in rng.items() if k != "floor"}},
                                 "xaxis": xaxis,
                                 "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1,
                                            "xanchor": "right"}}

    def _on_step(self, _=None) -> None:
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
        s = run.trace[step]
        x = int(s.get("iteration", m.get("iteration", step)))
        last = int(run.trace[-1].get("iteration", n - 1))
        stage = s.get("stage") or m.get("stage")
        self.readout.value = f"<b>iteration {x}</b> <span style='color:#667'>of {last}</span>"
        bits = [f"<b>{html.escape(str(s.get('label', m.get('label', ''))))}</b>"]
        if stage:
            bits.append(f"stage: {html.escape(str(stage))}")
        bits += [f"{k.upper()} {_number(m[k])}" for k in ("psnr", "sam") if k in m]
        bits += [f"{w} relative residual (common S, R) {_number(m[k])}"
                 for k, w in (("nr_hsi", "HSI"), ("nr_msi", "MSI")) if k in m]
        bits += [f"{k.replace('_', ' ')} {m[k]:.3g}" for k in ("residual_hsi", "residual_msi") if k in m]
        if run.step_metrics and not {"psnr", "nr_hsi"} & set(run.step_metrics[0]) and not run.scored:
            bits.append("<i style='color:#667'>scoring…</i>")
        final = " <span style='color:#777'>(final result shown)</span>" if self.state.step < 0 else ""
        self.label.value = " · ".join(bits) + final
        marker = {"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                  "line": {"color": "#444", "dash": "dot", "width": 1.5}}
        shapes = {"shapes": [*self._stage_shapes, marker]}
        if getattr(self, "_curves_sent", False):  # same run, same curves: only the marker moves (no traces resent)
            self.metric.update(None, shapes)
            self.residual.update(None, shapes)
            return
        self.metric.update(self._metric_traces, {**self._metric_layout, **shapes, "annotations": self._stage_notes},
                           replace=True)
        self.residual.update(self._residual_traces, {**self._residual_layout, **shapes}, replace=True)
        self._curves_sent = True


#: fill colours of the shaded stages, in turn
_STAGE_FILLS = ("rgba(31,119,180,0.07)", "rgba(255,127,14,0.09)", "rgba(44,160,44,0.08)", "rgba(148,103,189,0.08)")


def stage_shapes(stages: list[dict], span: list[float] | None = None) -> tuple[list[dict], list[dict]]:
    """Shaded bands (layout shapes) and name labels (annotations) for a run's stages on the iteration axis.

    ``stages``: :attr:`FusionResult.stages` (``name``, ``start``, ``end`` inclusive, in iterations); a stage
    ends where the next begins, so bands run from ``start`` to the next stage's ``start`` (``end + 0.5`` for
    the last). ``span``: the axis range shown; labels sit in the visible part of their band, narrow bands get
    upright labels, bands outside it none."""
    shapes, notes = [], []
    parsed = []
    for st in stages or []:
        try:
            parsed.append((float(st["start"]), float(st["end"]), str(st["name"])))
        except (KeyError, TypeError, ValueError):
            continue
    lo, hi = span if span else (min((a for a, _, _ in parsed), default=0) - 0.5,
                                max((b for _, b, _ in parsed), default=1) + 0.5)
    for k, (a, b, name) in enumerate(parsed):
        x0 = a - 0.5 if k == 0 else a
        x1 = parsed[k + 1][0] if k + 1 < len(parsed) else b + 0.5
        x1 = max(x1, x0 + 1.0) if x1 <= x0 else x1
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0, "y1": 1,
                       "fillcolor": _STAGE_FILLS[k % len(_STAGE_FILLS)], "line": {"width": 0}, "layer": "below"})
        v0, v1 = max(x0, lo), min(x1, hi)
        if v1 <= v0:
            continue
        notes.append({"x": (v0 + v1) / 2, "y": 0.0, "xref": "x", "yref": "paper", "yanchor": "bottom",
                      "text": html.escape(name), "showarrow": False, "font": {"size": 10, "color": "#556"},
                      "textangle": -90 if (v1 - v0) < 0.12 * (hi - lo) else 0})
    return shapes, notes


def log_floor(values: list, floor: float | None = None, decades: float = 6.0) -> tuple[list, dict]:
    """Values for a log axis: None stays a gap, values at or below ``floor`` (default: the largest finite
    value / 10**decades) are drawn at the floor. Returns them and ``{"range": [log10 floor, log10 top],
    "floor": floor}`` so one tiny value (SCALMU's first layer: 1e-70) cannot stretch the axis."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    if not finite:
        return [None if v is None else v for v in values], {}
    top = max(finite)
    floor = max(min(finite), top / 10**decades) if floor is None else floor
    out = [None if v is None or not math.isfinite(float(v)) else max(float(v), floor) for v in values]
    pad = 0.05 * max(math.log10(top) - math.log10(floor), 0.5)
    return out, {"range": [math.log10(floor) - pad, math.log10(top) + pad], "floor": floor}
