"""Plotly figures whose every update reaches the page: a state-based anywidget around plotly.js.

Why not ``plotly.graph_objects.FigureWidget``: in plotly >= 6 it is an anywidget that ships
Python-side *deltas* (``_py2js_restyle`` set to a message and immediately back to ``None``) and
trusts the page to apply each one exactly once. Measured with plotly 7.1.0 / anywidget 0.11.0 in
voila: its view never resizes (the Lumino ``resize`` hook of the old DOMWidgetView is dead code
under anywidget, so autosized plots keep plotly's 700 px default and overflow their boxes; after a
viewport change clicks land on the neighbouring plot), its layout-delta reply is sent on a trait
that does not exist (``_js2py_widget_layoutDelta``, so ``_layout_edit_in_process`` stays set after
the first edit) and in some fresh sessions the restyle messages were never applied at all while
the Python callback ran. A page that misses one delta never catches up.

:class:`PlotlyFigure` instead syncs the *whole* figure (``data``, ``layout``) and the page calls
``Plotly.react`` with the latest state on every change, in every view, after every re-render:
there is no message to miss. A ``ResizeObserver`` keeps autosized plots inside their box. After
each draw the plot ``div`` carries ``data-revision`` (the model's ``revision``), which the browser
tests and the benchmark use to prove an update reached the DOM. plotly.js itself (4.8 MB) comes from
the voila template's static files (``voila-config``), else once per page from :class:`PlotlyLoader`.

Clicks: plotly.js reports the point of its last hover, and hover is throttled (50 ms); a click
that arrives with no mouse movement before it can report the previously hovered point. A hand
always moves first; the browser tests dwell 120 ms on the target before clicking.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as T

_FIGURE_ESM = r"""
function plotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  return new Promise((resolve) => {
    const t = setInterval(() => { if (window.Plotly) { clearInterval(t); resolve(window.Plotly); } }, 25);
  });
}
function render({ model, el }) {
  const div = document.createElement("div");
  div.className = "fe-plot";
  div.style.width = "100%";
  el.appendChild(div);
  let alive = true, busy = false, again = false, Plotly = null;
  // the model's data object last drawn and the copy handed to plotly (plotly keeps it as div.data): an update that
  // changes only the layout (a step marker on a curve, pins on an image) leaves the model's data object as it was,
  // and handing plotly its own traces back makes Plotly.react redo the layout only, not every trace
  let lastData = null, lastCopy = null, told = false;
  async function draw() {
    if (!alive || !Plotly) return;
    if (busy) { again = true; return; }
    busy = true;
    // one figure draws at a time, in the order the updates arrived (the kernel sends the fused image first):
    // interleaved, every figure of a step waited for the others' work; a draw waits at most 250 ms for the one before
    const before = window.__feDrawTail || Promise.resolve();
    let release = null;
    window.__feDrawTail = new Promise((r) => { release = r; });
    try {
      await Promise.race([before, new Promise((r) => setTimeout(r, 250))]);
      if (!alive) return;
      const rev = model.get("revision");
      // plotly writes computed ranges back into the objects it is given: hand it copies, never the model's state
      const src = model.get("data");
      const data = src === lastData && lastCopy && div.data === lastCopy ? lastCopy : structuredClone(src);
      const layout = structuredClone(model.get("figure_layout"));
      if (!data.length) {  // an empty plot shows its title (why it is empty), not axes with meaningless ticks
        for (const k of ["xaxis", "yaxis", ...Object.keys(layout).filter((k) => /^[xy]axis\d+$/.test(k))]) {
          layout[k] = Object.assign({}, layout[k], { visible: false });
        }
      }
      await Plotly.react(div, data, layout, structuredClone(model.get("config")));
      lastData = src;
      lastCopy = data;
      div.dataset.revision = String(rev);
      el.dataset.revision = String(rev);
      if (!told) { told = true; model.send({ event: "drawn" }); }  // this page has its widgets: see App
    } catch (e) { console.error("fusion-explorer figure", e); lastData = lastCopy = null; } finally {
      busy = false;
      release();
    }
    if (again) { again = false; draw(); }
  }
  const onChange = () => draw();
  model.on("change:revision", onChange);
  let ro = null;
  plotly().then((P) => {
    Plotly = P;
    draw().then(() => {
      div.on("plotly_selected", (ev) => {  // a lasso: its points; a box: its range (data coordinates)
        if (ev && ev.lassoPoints) {
          model.send({ event: "select", lasso: { x: ev.lassoPoints.x, y: ev.lassoPoints.y } });
          return;
        }
        if (!ev || !ev.range || !ev.range.x || !ev.range.y) return;
        model.send({ event: "select", x: ev.range.x, y: ev.range.y });
      });
      div.on("plotly_click", (ev) => {
        if (!ev || !ev.points || !ev.points.length) return;
        const p = ev.points[0];
        model.send({ event: "click", x: p.x, y: p.y, curve: p.curveNumber, name: (p.data && p.data.name) || "",
                     index: p.pointIndex === undefined ? null : p.pointIndex });
      });
      ro = new ResizeObserver(() => {
        if (!alive || !div._fullLayout || model.get("figure_layout").autosize !== true || !div.offsetWidth) return;
        try { Promise.resolve(Plotly.Plots.resize(div)).catch(() => {}); } catch (e) { /* detached */ }
      });
      ro.observe(el);
    });
  });
  return () => { alive = false; model.off("change:revision", onChange); if (ro) ro.disconnect();
                 if (Plotly) Plotly.purge(div); };
}
export default { render };
"""


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


_LOADER_ESM = r"""
function fromSource(source) {
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  import(url).catch((e) => console.error("fusion-explorer: plotly.js failed to load", e))
    .finally(() => URL.revokeObjectURL(url));
}
function load(model) {
  if (window.Plotly || window.__fePlotlyLoading) return;
  window.__fePlotlyLoading = true;
  // ask the kernel for plotly.js (one message), evaluated when the page is idle: evaluating it blocks the page
  // for a second or more, and anywidget gives every model 2 s to initialise
  const ask = () => {
    if (window.Plotly || window.__fePlotlyAsked) return;
    window.__fePlotlyAsked = true;
    model.on("msg:custom", (msg) => {
      if (!msg || typeof msg.plotly_source !== "string" || window.Plotly) return;
      const go = () => fromSource(msg.plotly_source);
      if (window.requestIdleCallback) window.requestIdleCallback(go, { timeout: 2500 }); else setTimeout(go, 500);
    });
    model.send({ event: "plotly_source" });
  };
  // the dashboard's voila template requests static/plotly.min.js from the page's <head> (voila-config): use it
  // unless that request failed; anywhere else (JupyterLab, another template) ask the kernel
  if (!document.getElementById("fe-plotly-js") || window.__fePlotlyFailed) ask();
  else window.addEventListener("fe-plotly-failed", ask);
}
export default {
  initialize({ model }) { load(model); },
  render({ el }) { el.style.display = "none"; },
};
"""


class PlotlyLoader(anywidget.AnyWidget):
    """Puts ``window.Plotly`` on the page (once); it shows nothing.

    Served as ``make app`` serves the dashboard, the page already loads plotly.js (4.8 MB) itself: the
    template in ``voila-config`` requests it as a static file from the page's ``<head>`` while the kernel starts,
    and this widget does nothing. Elsewhere (JupyterLab, another template, or when that request failed) it asks
    the kernel for the source (one custom message, sent only on request: it is not part of the widget state every
    page receives) and imports it from the page when it is idle, not as this widget's own module: anywidget
    rejects a model whose module takes over 2 s to initialise. Figures wait for ``window.Plotly``."""

    _esm = _LOADER_ESM

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layout.display = "none"
        #: how many pages asked for plotly.js (0 where the template served it)
        self.sent = 0
        self.on_msg(self._on_request)

    def _on_request(self, _widget: Any, content: dict, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "plotly_source":
            self.sent += 1
            self.send({"plotly_source": _plotly_js()})


class PlotlyFigure(anywidget.AnyWidget):
    """A plotly figure as plain JSON state; ``update(data=..., layout=...)`` redraws it in the page.

    ``data``: list of trace dicts (numpy arrays are converted), ``figure_layout``: plotly's layout dict.
    (Not ``layout``: that name is every DOM widget's ipywidgets ``Layout``, and a plain dict under it
    made ipywidgets' page code try to build a child view of the dict on every render: one uncaught
    ``TypeError: Cannot read properties of undefined (reading 'then')`` from ``create_view`` via
    ``create_child_view`` per figure, issue 21 defect 10.) ``on_click(fn)``
    registers ``fn(event)`` with ``event = {"x", "y", "curve", "name", "index"}``.
    """

    _esm = _FIGURE_ESM
    data = T.List().tag(sync=True)
    figure_layout = T.Dict().tag(sync=True)
    config = T.Dict({"displaylogo": False, "responsive": False}).tag(sync=True)
    revision = T.Int(0).tag(sync=True)

    def __init__(self, data: list | None = None, layout: dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._click_handlers: list[Callable[[dict], None]] = []
        self._select_handlers: list[Callable[[dict], None]] = []
        self._drawn_handlers: list[Callable[[dict], None]] = []
        #: the layout this figure was made with: what :meth:`clear` and ``update(replace=True)`` start from
        self.base_layout: dict = jsonable(layout or {})
        self.on_msg(self._on_custom_msg)
        self.update(data or [], layout or {})

    def update(self, data: list | None = None, layout: dict | None = None, replace: bool = False) -> None:
        """Replace the traces and merge ``layout`` into the current one; one message, one redraw.

        ``replace``: the layout becomes :attr:`base_layout` updated with ``layout``, so nothing of an
        earlier draw (a title, ``shapes`` markers, a log axis, a second y axis) survives. Draws of a
        new run or step use it; only marker moves (pins, cursor) merge."""
        with self.hold_sync():
            if data is not None:
                self.data = jsonable(data)
            if replace:
                self.figure_layout = {**self.base_layout, **jsonable(layout or {})}
            elif layout is not None:
                self.figure_layout = {**self.figure_layout, **jsonable(layout)}
            self.revision += 1

    def clear(self, layout: dict | None = None) -> None:
        """No traces, and the layout back to :attr:`base_layout` (updated with ``layout``, e.g. a title
        saying why the plot is empty). A plot already in that state is left alone: no message, no
        redraw (panels clear their empty plots on every step; the page redraws only what changed)."""
        target = {**self.base_layout, **jsonable(layout or {})}
        if not self.data and self.figure_layout == target:
            return
        self.update([], layout, replace=True)

    def on_click(self, fn: Callable[[dict], None]) -> None:
        self._click_handlers.append(fn)

    def on_select(self, fn: Callable[[dict], None]) -> None:
        """``fn(event)`` when a region is drawn: ``{"x": [x0, x1], "y": [y0, y1]}`` for a box,
        ``{"lasso": {"x": [...], "y": [...]}}`` for a lasso (its vertices, data coordinates)."""
        self._select_handlers.append(fn)

    def on_drawn(self, fn: Callable[[dict], None]) -> None:
        """``fn(event)`` when a view of this figure in a page has drawn for the first time (each view says so once).
        By then the page has set up every widget of the dashboard, so later changes reach it."""
        self._drawn_handlers.append(fn)

    def select(self, x: tuple[float, float], y: tuple[float, float]) -> None:
        """What drawing a box in the page does (for tests without a browser)."""
        self._on_custom_msg(self, {"event": "select", "x": list(x), "y": list(y)}, [])

    def click(self, x: float, y: float, curve: int = 0, name: str = "") -> None:
        """What a click in the page does (for tests without a browser)."""
        self._on_custom_msg(self, {"event": "click", "x": x, "y": y, "curve": curve, "name": name, "index": None}, [])

    def _on_custom_msg(self, _widget: Any, content: dict, _buffers: Any) -> None:
        if content.get("event") == "click":
            for fn in self._click_handlers:
                fn(content)
        elif content.get("event") == "select":
            for fn in self._select_handlers:
                fn(content)
        elif content.get("event") == "drawn":
            for fn in self._drawn_handlers:
                fn(content)


def jsonable(obj: Any) -> Any:
    """numpy -> JSON: 1-D arrays as lists (non-finite -> None; JSON has no NaN), 2-D arrays as plotly.js
    typed-array specs ``{"dtype": "f4", "bdata": <base64>, "shape": "h,w"}``."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fiu" and obj.ndim == 2:
            # plotly.js typed-array spec: 4 bytes a value, no JSON number parsing (maps, abundances)
            a = np.ascontiguousarray(obj, dtype="<f4")
            return {"dtype": "f4", "bdata": base64.b64encode(a.tobytes()).decode("ascii"),
                    "shape": f"{a.shape[0]},{a.shape[1]}"}
        if obj.dtype.kind == "f":
            a = obj.astype(np.float64)
            if np.isfinite(a).all():
                return a.tolist()
            return jsonable(a.tolist())
        return obj.tolist()
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
