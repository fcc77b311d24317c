"""Figure helpers shared by the ``plot_*`` modules: a constrained-layout :class:`~matplotlib.figure.Figure`
(no pyplot state) and the tab10 colours."""

from __future__ import annotations


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]
