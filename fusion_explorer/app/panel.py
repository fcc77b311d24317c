"""The panel protocol: what a dashboard panel declares and how the :class:`~.app.App` wires it.

A panel is one class with

- ``name``: the attribute the App stores it under (``app.pixels``, ``app.data``, ...),
- ``title`` and ``hint``: its section heading (the App numbers sections itself, in display order),
- ``observes``: ``{handler method name: state traits}``, in the order the handlers are registered,
- ``connect_order`` (default 0): panels register their observers in ascending ``connect_order``,
  ties in display order. traitlets calls a trait's observers in registration order, so this is
  where "who reacts first" is decided (e.g. the pixel panel's spectrum goes out before the other
  panels' cursor markers: a click feels faster),
- ``__init__(state, **context)``: builds ``self.widget`` and wires its own widgets; it never observes the
  state itself (the App does that from ``observes``, see :meth:`Panel.connect`). ``context``
  is the same for every panel (today ``data_dir``, the App's extra data folder, and ``defer``, True when the
  App loads its scene after the page's first draw); take what you need,
- optionally ``refresh()``: draws the current state once after connecting (a panel added to an
  App that already shows a scene is not blank).

Handlers take one optional argument (the traitlets change). Panels never talk to each other: they
set state traits and react to them. Adding a panel is one class and one line in
:data:`fusion_explorer.app.app.PANELS` (``tests/test_app.py::test_a_toy_panel_is_one_class_and_one_line``).
"""

from __future__ import annotations

from typing import ClassVar

import ipywidgets as W

from .state import AppState


class Panel:
    """Base class of the dashboard's panels (see the module docstring)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    hint: ClassVar[str] = ""
    observes: ClassVar[dict[str, tuple[str, ...]]] = {}
    connect_order: ClassVar[int] = 0

    def __init__(self, state: AppState, **context):
        self.state = state
        self.widget: W.Widget = W.VBox()

    def connect(self) -> None:
        """Register every handler of :attr:`observes` on the state, in declaration order."""
        traits = set(self.state.trait_names())
        for method, names in self.observes.items():
            unknown = set(names) - traits
            if unknown:
                raise AttributeError(f"{type(self).__name__}.observes names unknown state traits {sorted(unknown)}")
            handler = getattr(self, method)
            self.state.observe(lambda change, h=handler: h(change), names=list(names))

    def refresh(self) -> None:
        """Draw the current state (after :meth:`connect`); panels override it when they draw from state."""
