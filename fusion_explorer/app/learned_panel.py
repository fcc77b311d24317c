"""Learned parts: what a learned layer applied at the selected step, beside what the plain update applies.

Reads the trace keys documented on :class:`~fusion_explorer.problem.FusionResult`: ``learned`` and
``plain`` (dicts name -> array, same keys), ``learned_doc`` (name -> one sentence) and ``correction``
(``(Y, X)``: per-pixel norm over bands of a consistency stage's correction ``Z - W H``). SCALMU fills
them per layer; runs without them get a one-line empty state and no axes.

Shown per step, for whatever keys ``learned`` holds (no list of names: a new learned part of a layer
appears without a change here): every 2-D array (higher ranks folded to ``(first axis, rest)``) as a
row of two heatmaps (learned; learned minus plain on a symmetric diverging scale, white = no change,
or a grey zero map saying "learned = plain here" when they agree: never blank axes), every 1-D
array as bars (learned) over a dashed line (plain), single values (and anything that is not a
number) in a table beside their plain value, the correction as a map, each with its sentence.
Subplot titles sit in their own band above each cell, wrapped to its width (:func:`grid_layout`).
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
#: one light grey: a difference that is zero everywhere is drawn as a visible zero map, not as blank axes
_SAME = [[0.0, "#e6e6e6"], [1.0, "#e6e6e6"]]


def _axis_names(i: int) -> tuple[str, str, str, str]:
    s = "" if i == 0 else str(i + 1)
    return f"xaxis{s}", f"yaxis{s}", f"x{s}", f"y{s}"


def _parts_of(step: dict) -> tuple[dict, dict, dict, list]:
    """The step's learned parts sorted by how they are drawn, whatever their names: ``(matrices, vectors, scalars,
    others)``; matrices are 2-D (higher ranks folded to ``(first axis, rest)``), vectors 1-D with more than one
    value, scalars the rest of the numbers; ``others`` are ``(name, text)`` of values that are not numbers."""
    mats, vecs, scalars, others = {}, {}, {}, []
    for k, v in (step.get("learned") or {}).items():
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            others.append((str(k), str(v)))
            continue
        if a.size == 0:
            others.append((str(k), "(empty)"))
        elif a.size == 1:
            scalars[str(k)] = a.reshape(())
        elif a.ndim == 1:
            vecs[str(k)] = a
        else:
            mats[str(k)] = a.reshape(a.shape[0], -1) if a.ndim > 2 else a
    return mats, vecs, scalars, others


def _plain_of(step: dict, key: str, like: np.ndarray) -> np.ndarray | None:
    """The plain counterpart of ``key`` shaped like the learned one, or None when there is none (or it differs)."""
    v = (step.get("plain") or {}).get(key)
    if v is None:
        return None
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if a.size != like.size:
        return None
    return a.reshape(like.shape)


def same_as_plain(learned: np.ndarray, plain: np.ndarray) -> bool:
    """True when learned and plain agree to float32 rounding (relative to the larger of them)."""
    scale = max(float(np.abs(learned).max(initial=0.0)), float(np.abs(plain).max(initial=0.0)), 1e-30)
    return float(np.abs(learned - plain).max(initial=0.0)) <= 1e-6 * scale


#: pixel size of one subplot cell of the learned-parts grids and of the title band above it
_CELL_W, _CELL_H, _TITLE_H, _FONT = 300, 230, 40, 12


def _wrap(text: str, width_px: int, font: int = _FONT) -> str:
    """``text`` broken into lines (``<br>``) that fit ``width_px`` at about 0.6 ``font`` px a character."""
    per_line = max(8, int(width_px / (0.6 * font)))
    lines, line = [], ""
    for word in text.split(" "):
        while len(word) > per_line:  # a long name without spaces (endmember_matrix_...): cut it
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:per_line])
            word = word[per_line:]
        if line and len(line) + 1 + len(word) > per_line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "<br>".join(html.escape(x) for x in lines if x)


def grid_layout(n: int, cols: int, cell_w: int = _CELL_W, cell_h: int = _CELL_H,
                title_h: int = _TITLE_H) -> tuple[dict, list[dict]]:
    """A figure of ``n`` subplots in rows of ``cols``, each in a ``cell_w`` x ``cell_h`` px cell with a ``title_h`` px
    band above it for its title. Returns the base layout and, per subplot, ``{"x": (x0, x1), "y": (y0, y1),
    "centre": cx, "top": yt}`` in paper coordinates: its plot domain (room for a colour bar on its right), the
    cell's centre and the title band's bottom. Titles live in their own band and are wrapped to the cell's width
    (:func:`_wrap`), so they overlap neither a plot nor each other."""
    rows = max(1, -(-n // cols))
    used = max(1, min(n, cols))
    width, height = used * cell_w, rows * (cell_h + title_h)
    cells = []
    for i in range(n):
        r, c = divmod(i, cols)
        top = 1 - r / rows
        y1 = top - title_h / height
        y0 = top - (cell_h + title_h) / height + 8 / height
        cells.append({"x": ((c + 0.03) / used, (c + 0.78) / used), "y": (y0, y1), "centre": (c + 0.5) / used,
                      "top": y1})
    layout = {"height": height + 20, "width": width + 20, "autosize": False, "showlegend": False,
              "margin": {"l": 10, "r": 10, "t": 10, "b": 10}, "annotations": [], "template": "plotly_white"}
    return layout, cells


def _title(text: str, cell: dict, cell_w: int = _CELL_W) -> dict:
    """The annotation of a subplot's title: centred over its cell, in the title band, wrapped to 90 % of the cell."""
    return {"text": _wrap(text, int(cell_w * 0.9)), "x": cell["centre"], "y": cell["top"] + 0.002, "xref": "paper",
            "yref": "paper", "xanchor": "center", "yanchor": "bottom", "showarrow": False,
            "font": {"size": _FONT}, "align": "center"}


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
        mats, vecs, scalars, others = _parts_of(s)
        docs = {str(k): v for k, v in (s.get("learned_doc") or {}).items()}
        self._draw_matrices(s, mats)
        self._draw_vectors(s, vecs)
        rows = []
        for k, v in scalars.items():
            p = _plain_of(s, k, v)
            rows.append((k, format(float(v), ".4g"), "—" if p is None else format(float(p), ".4g"),
                         "—" if p is None else format(float(v - p), "+.3g")))
        rows += [(k, text, "—", "—") for k, text in others]
        self.scalars.value = "" if not rows else (
            "<table class='fe-table'><tr><th style='text-align:left'>scalar</th><th>learned</th><th>plain</th>"
            "<th>learned − plain</th></tr>" + "".join(
                f"<tr><td style='text-align:left'>{html.escape(k)}</td><td>{html.escape(v)}</td>"
                f"<td>{html.escape(p)}</td><td>{html.escape(d)}</td></tr>" for k, v, p, d in rows) + "</table>")
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

    def _draw_matrices(self, s: dict, mats: dict) -> None:
        """Per matrix, one row: the learned matrix; learned minus plain on a symmetric scale (white = no change),
        or, when they agree, a grey zero map that says so (never empty axes)."""
        if not mats:
            self.matrices.clear()
            return
        panels = []  # (title, z, colour scale, symmetric top or None, note in the plot or None)
        for k, v in mats.items():
            shape = "x".join(str(d) for d in v.shape)
            panels.append((f"{k} ({shape}, learned)" if "x" in shape and v.shape[0] != v.shape[1] else f"{k} (learned)",
                           v, "Viridis", None, None))
            p = _plain_of(s, k, v)
            if p is None:
                panels.append((f"{k}: no plain counterpart", np.zeros_like(v), _SAME, 1.0,
                               "the plain update has no such part"))
            elif same_as_plain(v, p):
                panels.append((f"{k} − plain", np.zeros_like(v), _SAME, 1.0, "learned = plain here (difference 0)"))
            else:
                d = v - p
                panels.append((f"{k} − plain", d, _DIVERGING, float(np.abs(d).max()), None))
        layout, cells = grid_layout(len(panels), 2)
        data = []
        for i, ((title, z, scale, top, note), cell) in enumerate(zip(panels, cells, strict=True)):
            xa, ya, xr, yr = _axis_names(i)
            (x0, x1), (y0, y1) = cell["x"], cell["y"]
            trace = {"type": "heatmap", "z": z.astype(np.float32), "xaxis": xr, "yaxis": yr, "colorscale": scale,
                     "colorbar": {"x": x1 + 0.01, "xanchor": "left", "y": (y0 + y1) / 2, "yanchor": "middle",
                                  "len": (y1 - y0) * 0.95, "thickness": 8},
                     "hovertemplate": "row %{y}, col %{x}: %{z:.3g}<extra>" + html.escape(title) + "</extra>"}
            if top is not None:
                trace.update(zmin=-top, zmax=top, zmid=0)
            if note is not None:
                trace["showscale"] = False
            data.append(trace)
            frame = {"showticklabels": False, "showgrid": False, "zeroline": False, "showline": True,
                     "linecolor": "#999", "mirror": True}
            layout[xa] = {"domain": [x0, x1], "anchor": yr, "constrain": "domain", **frame}
            layout[ya] = {"domain": [y0, y1], "anchor": xr, "autorange": "reversed", "scaleanchor": xr,
                          "constrain": "domain", **frame}
            layout["annotations"].append(_title(title, cell))
            if note is not None:
                layout["annotations"].append({"text": _wrap(note, int(_CELL_W * 0.6), 11), "x": (x0 + x1) / 2,
                                              "y": (y0 + y1) / 2, "xref": "paper", "yref": "paper",
                                              "xanchor": "center", "yanchor": "middle",
                                              "showarrow": False, "font": {"size": 11, "color": "#333"},
                                              "bgcolor": "rgba(255,255,255,0.85)"})
        self.matrices.update(data, layout, replace=True)

    def _draw_vectors(self, s: dict, vecs: dict) -> None:
        """Per vector, bars of the learned values over a dashed line of the plain ones; "(= plain)" when they agree."""
        if not vecs:
            self.vectors.clear()
            return
        layout, cells = grid_layout(len(vecs), 2, cell_h=200)
        data = []
        for i, ((k, v), cell) in enumerate(zip(vecs.items(), cells, strict=True)):
            xa, ya, xr, yr = _axis_names(i)
            idx = np.arange(1, v.size + 1)
            data.append({"type": "bar", "x": idx, "y": v, "xaxis": xr, "yaxis": yr, "name": f"{k} learned",
                         "marker": {"color": "#1f77b4"}})
            p = _plain_of(s, k, v)
            if p is not None:
                data.append({"type": "scatter", "mode": "lines+markers", "x": idx, "y": p, "xaxis": xr, "yaxis": yr,
                             "name": f"{k} plain", "line": {"color": "#d62728", "dash": "dash"}})
            what = ("learned = plain here" if p is not None and same_as_plain(v, p) else
                    "learned (bars) vs plain (dashed)" if p is not None else "learned (no plain counterpart)")
            (x0, _), (y0, y1) = cell["x"], cell["y"]
            layout[xa] = {"domain": [x0, cell["centre"] * 2 - x0], "anchor": yr, "dtick": 1}
            layout[ya] = {"domain": [y0 + 0.06 * (y1 - y0), y1], "anchor": xr}
            layout["annotations"].append(_title(f"{k}: {what}", cell))
        self.vectors.update(data, layout, replace=True)
