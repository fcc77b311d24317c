"""The explorer: one :class:`~.state.AppState` observed by one panel per concern."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as W
import xarray as xr

from ..memory import keep_freed_memory
from .compare_panel import ComparePanel
from .data_panel import DataPanel
from .endmember_panel import EndmemberPanel
from .figure import PlotlyLoader
from .iteration_panel import IterationPanel
from .pixel_panel import PixelPanel
from .run_panel import RunPanel
from .state import AppState

_CSS = """
<style>
.fe-section > .widget-html:first-child h3 {margin: 14px 0 4px 0; padding-bottom: 3px; border-bottom: 2px solid #2a6fdb;
  font-size: 16px; color: #223;}
.fe-app {max-width: 1500px;}
.fe-app .widget-label, .fe-app .widget-html {font-size: 13px;}
</style>
"""


def _section(title: str, hint: str, body: W.Widget) -> W.VBox:
    head = W.HTML(f"<h3>{title} <span style='font-weight:normal;font-size:12px;color:#667'>{hint}</span></h3>")
    box = W.VBox([head, body])
    box.add_class("fe-section")
    return box


class App:
    """Builds the state, the panels and the page. ``App().widget`` is what voila shows."""

    def __init__(self, scene: xr.DataArray | None = None, protocol: str = "gaussian-x8",
                 data_dir: str | Path | None = None, session_dir: str | Path | None = None, load: bool = True):
        self.state = AppState(session_dir=session_dir)
        self.loader = PlotlyLoader()
        # the pixel panel observes the state first, so a click's spectrum goes out before the marker updates
        self.pixels = PixelPanel(self.state)
        self.data = DataPanel(self.state, data_dir)
        self.runner = RunPanel(self.state)
        self.iterations = IterationPanel(self.state)
        self.endmembers = EndmemberPanel(self.state)
        self.compare = ComparePanel(self.state)
        self.status = W.HTML()
        self.widget = W.VBox([
            W.HTML(_CSS + "<h2 style='margin:4px 0'>fusion-explorer</h2><div style='color:#445'>Hyperspectral–"
                   "multispectral fusion you can see into: simulate a sensor pair, run methods, click pixels, "
                   "step through iterations.</div>"),
            self.loader,
            _section("1 · Data", "scene and degradation", self.data.widget),
            _section("2 · Run", "methods run in the background; the page stays usable", self.runner.widget),
            _section("3 · Pixels", "click any image for spectra; pin pixels to compare", self.pixels.widget),
            _section("4 · Iterations", "step through a recorded run", self.iterations.widget),
            _section("5 · Endmembers and abundances", "unmixing methods", self.endmembers.widget),
            _section("6 · Compare and export", "", self.compare.widget),
        ], layout=W.Layout(padding="8px 14px"))
        self.widget.add_class("fe-app")
        if scene is not None:
            self.use_scene(scene, protocol)
        elif load:
            self.data.protocol.value = protocol
            self.data.load()

    def use_scene(self, scene: xr.DataArray, protocol: str = "gaussian-x8") -> None:
        """Show ``scene`` (band, y, x) under a named protocol (bypassing the data panel's scene list)."""
        from ..physics import get_protocol
        from ..problem import simulate
        from .data_panel import prepare

        proto = get_protocol(protocol)
        truth = prepare(scene, proto.ratio, None)
        self.state.set_problem(truth, simulate(truth, proto))


def build_app(scene: xr.DataArray | None = None, protocol: str = "gaussian-x8", **kwargs) -> W.VBox:
    """The dashboard's widget tree (``app.ipynb`` displays it). The :class:`App` is ``widget.app``.
    Tunes the kernel's allocator for the engines' big temporaries
    (:func:`~fusion_explorer.memory.keep_freed_memory`)."""
    keep_freed_memory()
    app = App(scene, protocol, **kwargs)
    app.widget.app = app
    return app.widget
