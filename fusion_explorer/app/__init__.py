"""The dashboard (served by ``voila app.ipynb``). ``app.ipynb`` only calls :func:`build_app`.

One small state object (:class:`AppState`) is observed by one class per panel, each in its own
module: data (scene, degradation, true-colour views), run (methods, progress, cancel), pixels
(spectra, pins, CSV, SAM/error maps), iterations (trace stepper, metric curves), endmembers
(``W``, abundances, estimated PSF/SRF) and compare (metrics table, NetCDF export). Plots are
:class:`~.figure.PlotlyFigure` widgets, whose updates reach the page (see :mod:`.figure` for why
not plotly's ``FigureWidget``).
"""

from .app import App, build_app
from .figure import PlotlyFigure, PlotlyLoader
from .run_panel import Cancelled, method_options, score
from .state import AppState, Run

__all__ = ["App", "AppState", "Cancelled", "PlotlyFigure", "PlotlyLoader", "Run", "build_app", "method_options",
           "score"]
