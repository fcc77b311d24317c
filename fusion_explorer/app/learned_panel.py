"""Learned parts: what a learned layer applied at the selected step, beside what the plain update applies.

Reads the trace keys documented on :class:`~fusion_explorer.problem.FusionResult`: ``learned`` and
``plain`` (dicts name -> array, same keys), ``learned_doc`` (name -> one sentence) and ``correction``
(``(Y, X)``: per-pixel norm over bands of a consistency stage's correction ``Z - W H``). SCALMU fills
them per layer; runs without them get a one-line empty state and no axes.

Shown per step: every matrix as two heatmaps (learned; learned minus plain, on a symmetric diverging
scale so "no change" is white), every vector as bars (learned) over a line (plain), scalars in a
table, the correction as a map, each with its sentence.
"""

from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

from .figure import PlotlyFigure
from .images import heatmap_trace, image_layout
from .panel import Panel
from .state import AppState

_EMPTY = ("<i>the selected run has no learned parts: SCALMU records, for each layer, what it learned and "
          "what the plain CNMF update would apply instead; CNMF and the baselines learn nothing</i>")
_CORRECTION_DOC = ("the consistency stage's correction: per pixel, the norm over bands of Z − W H, the change it "
                   "made to the last layer's cube so that the result reproduces both inputs")


#: blue - white - red: zero (learned = plain) is white
_DIVERGING = [[0.0, "#2166ac"], [0.5, "#ffffff"], [1.0, "#b2182b"]]


def _grid(n: int, gap: float = 0.06) -> list[tuple[float, float]]:
    w = 1.0 / max(n, 1)
    return [(i * w + (gap / 2 if i else 0), (i + 1) * w - gap / 2) for i in range(n)]


def _axis_names(i: int) -> tuple[str, str, str, str]:
    s = "" if i == 0 else str(i + 1)
    return f"xaxis{s}", f"yaxis{s}", f"x{s}", f"y{s}"


class LearnedPanel(Panel):
    """Heatmaps of the learned matrices and steps of the selected step, learned minus plain, the correction map."""

    name = "learned"
    title = "Learned parts"
    hint = "what a learned layer changed, per layer (SCALMU)"
    observes = {"draw": ("selected", "step", "runs")}

    def __init__(self, state: AppState, **context):
        super().__init__(state)
        self.note = W.HTML()
        self.matrices = PlotlyFigure()
        self.vectors = PlotlyFigure()
        self.correction = PlotlyFigure()
        self.scalars = W.HTML()
        self.docs = W.HTML()
        for key, w in {"fe-learned-note": self.note, "fe-learned-matrices": self.matrices,
                       "fe-learned-vectors": self.vectors, "fe-learned-correction": self.correction,
                       "fe-learned-scalars": self.scalars, "fe-learned-docs": self.docs}.items():
            w.add_class(key)
        self.body = W.VBox([self.matrices, W.HBox([self.vectors, W.VBox([self.scalars, self.correction])],
                                                  layout=W.Layout(flex_flow="row wrap")), self.docs])
        self.widget = W.VBox([self.note, self.body])
        self.draw()

    def _step(self) -> dict | None:
        """The selected step when it has learned parts or a correction; for the final result, the last such step."""
        run = self.state.run
        if run is None or not run.trace:
            return None
        n = len(run.trace)
        if self.state.step >= 0:
            s = run.trace[min(self.state.step, n - 1)]
            return s if ("learned" in s or "correction" in s) else None
        return next((s for s in reversed(run.trace) if "learned" in s or "correction" in s), None)

    def _has_parts(self) -> bool:
        run = self.state.run
        return run is not None and any("learned" in s or "correction" in s for s in run.trace)

    def draw(self, _=None) -> None:
        if not self._has_parts():
            self.note.value = _EMPTY
            self.body.layout.display = "none"
            for fig in (self.matrices, self.vectors, self.correction):
                fig.clear()
            self.scalars.value = self.docs.value = ""
            return
        self.body.layout.display = ""
        s = self._step()
        run = self.state.run
        if s is None:
            self.note.value = (f"<b>{html.escape(run.name)}</b>: this step ({html.escape(str(self._label()))}) "
                               "applies no learned part; step to a layer to see what it learned")
            for fig in (self.matrices, self.vectors, self.correction):
                fig.clear()
            self.scalars.value = self.docs.value = ""
            return
        self.note.value = (f"<b>{html.escape(run.name)}</b> · iteration {s.get('iteration', '?')}: "
                           f"{html.escape(str(s.get('label', '')))}")
        learned = {k: np.asarray(v, dtype=np.float64) for k, v in (s.get("learned") or {}).items()}
        plain = {k: np.asarray(v, dtype=np.float64) for k, v in (s.get("plain") or {}).items()}
        docs = dict(s.get("learned_doc") or {})
        self._draw_matrices({k: v for k, v in learned.items() if v.ndim == 2}, plain)
        self._draw_vectors({k: v for k, v in learned.items() if v.ndim == 1}, plain)
        rows = [(k, float(v), float(plain[k]) if k in plain else None) for k, v in learned.items() if v.ndim == 0]
        self.scalars.value = "" if not rows else (
            "<table class='fe-table'><tr><th style='text-align:left'>scalar</th><th>learned</th><th>plain</th>"
            "<th>learned − plain</th></tr>" + "".join(
                f"<tr><td style='text-align:left'>{html.escape(k)}</td><td>{v:.4g}</td>"
                f"<td>{'—' if p is None else format(p, '.4g')}</td><td>{'—' if p is None else format(v - p, '+.3g')}"
                "</td></tr>" for k, v, p in rows) + "</table>")
        corr = s.get("correction")
        if corr is not None:
            c = np.asarray(corr, dtype=np.float32)
            self.correction.update([{**heatmap_trace(c, "‖Z − WH‖", "correction"), "colorscale": "Magma"}],
                                   image_layout("consistency correction ‖Z − W H‖ per pixel", c.shape, 300,
                                                colorbar=True), replace=True)
            docs.setdefault("correction", _CORRECTION_DOC)
        else:
            self.correction.clear()
        self.docs.value = "<ul style='margin:4px 0;padding-left:18px'>" + "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in docs.items()) + "</ul>"

    def _label(self) -> str:
        run = self.state.run
        return run.trace[min(self.state.step, len(run.trace) - 1)].get("label", "")

    def _draw_matrices(self, mats: dict, plain: dict) -> None:
        if not mats:
            self.matrices.clear()
            return
        panels = []
        for k, v in mats.items():
            panels.append((f"{k} (learned)", v, "Viridis", None))
            if k in plain and plain[k].shape == v.shape:
                d = v - plain[k]
                # a floor relative to the matrix: float noise of an unchanged matrix is not drawn as full scale
                top = max(float(np.abs(d).max()), 1e-6 * max(float(np.abs(v).max()), 1e-12))
                same = float(np.abs(d).max()) <= 1e-6 * max(float(np.abs(v).max()), 1e-12)
                panels.append((f"{k} − plain" + (" (= plain)" if same else ""), d, _DIVERGING, top))
        data, layout = [], {"height": 300, "width": max(320, 260 * len(panels)), "autosize": False,
                            "margin": {"l": 30, "r": 10, "t": 40, "b": 30}, "showlegend": False, "annotations": []}
        for i, ((title, z, scale, top), (x0, x1)) in enumerate(zip(panels, _grid(len(panels)), strict=True)):
            xa, ya, xr, yr = _axis_names(i)
            trace = {"type": "heatmap", "z": z.astype(np.float32), "xaxis": xr, "yaxis": yr, "colorscale": scale,
                     "colorbar": {"x": x1 + 0.005, "thickness": 8, "len": 0.85},
                     "hovertemplate": "row %{y}, col %{x}: %{z:.3g}<extra>" + html.escape(title) + "</extra>"}
            if top is not None:
                trace.update(zmin=-top, zmax=top, zmid=0)
            data.append(trace)
            layout[xa] = {"domain": [x0, x1 - 0.03], "anchor": yr, "showticklabels": False}
            layout[ya] = {"domain": [0, 0.9], "anchor": xr, "autorange": "reversed", "showticklabels": False,
                          "scaleanchor": xr}
            layout["annotations"].append({"text": html.escape(title), "x": (x0 + x1 - 0.03) / 2, "y": 0.97,
                                          "xref": "paper", "yref": "paper", "showarrow": False, "font": {"size": 12}})
        self.matrices.update(data, layout, replace=True)

    def _draw_vectors(self, vecs: dict, plain: dict) -> None:
        if not vecs:
            self.vectors.clear()
            return
        data, layout = [], {"height": 280, "width": max(320, 300 * len(vecs)), "autosize": False,
                            "margin": {"l": 40, "r": 10, "t": 40, "b": 36}, "showlegend": False, "annotations": [],
                            "template": "plotly_white"}
        for i, ((k, v), (x0, x1)) in enumerate(zip(vecs.items(), _grid(len(vecs), 0.1), strict=True)):
            xa, ya, xr, yr = _axis_names(i)
            idx = np.arange(1, v.size + 1)
            data.append({"type": "bar", "x": idx, "y": v, "xaxis": xr, "yaxis": yr, "name": f"{k} learned",
                         "marker": {"color": "#1f77b4"}})
            if k in plain and plain[k].shape == v.shape:
                data.append({"type": "scatter", "mode": "lines", "x": idx, "y": plain[k], "xaxis": xr, "yaxis": yr,
                             "name": f"{k} plain", "line": {"color": "#d62728", "dash": "dash"}})
            layout[xa] = {"domain": [x0, x1], "anchor": yr, "title": {"text": "endmember", "font": {"size": 10}}}
            layout[ya] = {"domain": [0, 0.88], "anchor": xr}
            layout["annotations"].append({"text": f"{html.escape(k)}: learned (bars) vs plain (dashed)",
                                          "x": (x0 + x1) / 2, "y": 0.97, "xref": "paper", "yref": "paper",
                                          "showarrow": False, "font": {"size": 12}})
        self.vectors.update(data, layout, replace=True)
