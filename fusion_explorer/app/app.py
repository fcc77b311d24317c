"""The explorer: one :class:`~.state.AppState` observed by one panel per concern."""

from __future__ import annotations

import html
import threading
from pathlib import Path

import ipywidgets as W
import xarray as xr

from ..memory import keep_freed_memory
from .compare_panel import ComparePanel
from .data_panel import DataPanel
from .endmember_panel import EndmemberPanel
from .figure import PlotlyLoader
from .iteration_panel import IterationPanel
from .learned_panel import LearnedPanel
from .panel import Panel
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


def _section(number: int, panel: Panel) -> W.VBox:
    """A panel's section: a generated number, its title and hint, then its widget."""
    hint = f" <span style='font-weight:normal;font-size:12px;color:#667'>{html.escape(panel.hint)}</span>" \
        if panel.hint else ""
    head = W.HTML(f"<h3>{number} · {html.escape(panel.title)}{hint}</h3>")
    box = W.VBox([head, panel.widget])
    box.add_class("fe-section")
    box.add_class(f"fe-section-{panel.name}")
    return box


#: the dashboard's panels, in display order (sections are numbered in this order). Observers are
#: registered in ascending ``connect_order`` (ties in this order): see :mod:`.panel`.
PANELS: tuple[type[Panel], ...] = (DataPanel, RunPanel, PixelPanel, IterationPanel, LearnedPanel, EndmemberPanel,
                                   ComparePanel)


class App:
    """Builds the state, the panels and the page. ``App().widget`` is what voila shows.

    ``panels``: the panel classes in display order (default :data:`PANELS`). Each is stored as
    ``app.<name>`` and in ``app.panels`` (display order).

    ``load``: without ``scene``, load the data panel's chosen scene (True), or not (False), or
    ``"after_first_draw"`` (what :func:`build_app`, the page, uses): the notebook cell returns without it, so the
    page starts loading its scripts and widgets at once; meanwhile a thread reads the scene and the full SRF list
    (:meth:`.DataPanel.prefetch`: colour-science's import and the synthetic scene, a second or more), and the
    scene is published once that is done and the page has drawn its first figure (not before: a page still
    setting up its widgets can miss changes), or after ``first_draw_timeout`` seconds without a page."""

    def __init__(self, scene: xr.DataArray | None = None, protocol: str = "gaussian-x8",
                 data_dir: str | Path | None = None, session_dir: str | Path | None = None,
                 load: bool | str = True, panels: tuple[type[Panel], ...] | list[type[Panel]] = PANELS,
                 first_draw_timeout: float = 60.0):
        if load not in (True, False, "after_first_draw"):
            raise ValueError(f"load must be True, False or 'after_first_draw', not {load!r}")
        self.state = AppState(session_dir=session_dir)
        self.loader = PlotlyLoader()
        self.panels: dict[str, Panel] = {}
        defer = load == "after_first_draw" and scene is None and any(cls.name == "data" for cls in panels)
        for cls in panels:
            if not cls.name or cls.name in self.panels or hasattr(self, cls.name):
                raise ValueError(f"panel {cls.__name__}: its name {cls.name!r} is empty or taken")
            panel = cls(self.state, data_dir=data_dir, defer=defer)
            self.panels[cls.name] = panel
            setattr(self, cls.name, panel)
        # observers in ascending connect_order; sorted() is stable, so ties keep the display order
        for panel in sorted(self.panels.values(), key=lambda p: p.connect_order):
            panel.connect()
        for panel in self.panels.values():
            panel.refresh()
        self.status = W.HTML()
        self.widget = W.VBox([
            W.HTML(_CSS + "<h2 style='margin:4px 0'>fusion-explorer</h2><div style='color:#445'>Hyperspectral–"
                   "multispectral fusion you can see into: simulate a sensor pair, run methods, click pixels, "
                   "step through iterations.</div>"),
            self.loader,
            *[_section(i + 1, p) for i, p in enumerate(self.panels.values())],
        ], layout=W.Layout(padding="8px 14px"))
        self.widget.add_class("fe-app")
        if scene is not None:
            self.use_scene(scene, protocol)
        elif load and "data" in self.panels:
            self.data.protocol.value = protocol
            if defer:
                self._load_after_first_draw(first_draw_timeout)
            else:
                self.data.load()

    def _load_after_first_draw(self, timeout: float) -> None:
        """``load="after_first_draw"`` (see the class): prefetch in a thread; load once that is done and a page
        has drawn its first figure (or ``timeout`` seconds passed), unless a scene was loaded meanwhile."""
        data = self.data
        data.message.value = "<i>loading the scene…</i>"
        lock = threading.Lock()
        ready: set[str] = set()

        def arrive(what: str) -> None:
            with lock:
                if "published" in ready:
                    return
                ready.add(what)
                if not {"prefetched", "drawn"} <= ready:
                    return
                ready.add("published")
            if self.state.problem is None:  # the user may have loaded a scene already
                data.load()

        def prefetch() -> None:
            try:
                data.prefetch()
            except Exception:  # noqa: BLE001 - load() reads again and says what went wrong
                pass
            arrive("prefetched")

        data.views["truth"].on_drawn(lambda _event: arrive("drawn"))
        timer = threading.Timer(timeout, arrive, args=("drawn",))
        timer.daemon = True
        timer.start()
        self._prefetch_thread = threading.Thread(target=prefetch, daemon=True, name="fe-prefetch")
        self._prefetch_thread.start()

    def use_scene(self, scene: xr.DataArray, protocol: str = "gaussian-x8") -> None:
        """Show ``scene`` (band, y, x) under a named protocol (bypassing the data panel's scene list)."""
        from ..physics import get_protocol
        from ..problem import simulate
        from ..scenes import prepare

        proto = get_protocol(protocol)
        truth = prepare(scene, proto.ratio, None)
        self.state.ground_truth = self.state.reference_endmembers = None
        self.state.set_problem(truth, simulate(truth, proto))


def build_app(scene: xr.DataArray | None = None, protocol: str = "gaussian-x8", **kwargs) -> W.VBox:
    """The dashboard's widget tree (``app.ipynb`` displays it). The :class:`App` is ``widget.app``; without a
    ``scene`` it loads the chosen one after the page's first draw (``load="after_first_draw"``, see :class:`App`).
    Tunes the kernel's allocator for the engines' big temporaries
    (:func:`~fusion_explorer.memory.keep_freed_memory`)."""
    keep_freed_memory()
    kwargs.setdefault("load", "after_first_draw")
    app = App(scene, protocol, **kwargs)
    app.widget.app = app
    return app.widget
