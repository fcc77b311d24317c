"""The dashboard (served by ``voila app.ipynb``). ``app.ipynb`` only calls :func:`build_app`.

One small state object (:class:`AppState`) is observed by one class per panel (the protocol in
:mod:`.panel`; the list in :data:`.app.PANELS`), each in its own module: data (scene, degradation,
true-colour views; uploads in :mod:`.upload`), run (methods, progress, cancel; MossFuse's weights in
:mod:`.mossfuse_plan`; scoring after the result is shown, :mod:`.scoring`), pixels (spectra, pins,
regions, CSV, SAM/error maps on fixed scales), iterations (stepper, stages, quality curves), learned
parts (SCALMU's per-layer learned matrices and steps, the consistency correction), endmembers (``W``,
abundances, ground-truth matching, estimated PSF/SRF) and compare (metrics table, NetCDF export).
A real pair without truth (the Paris Hyperion/ALI file, or an uploaded LR-HSI with an uploaded HR-MSI;
the Wald view of a same-resolution pair) gets no-reference diagnostics instead of metrics
(:mod:`.no_reference`): how well each result reproduces each input, as numbers and maps.
Plots are :class:`~.figure.PlotlyFigure` widgets, whose updates reach the page (see :mod:`.figure`
for why not plotly's ``FigureWidget``).
"""

from .app import PANELS, App, build_app
from .figure import PlotlyFigure, PlotlyLoader
from .panel import Panel
from .run_panel import Cancelled, method_options, score
from .state import AppState, Run

__all__ = ["PANELS", "App", "AppState", "Cancelled", "Panel", "PlotlyFigure", "PlotlyLoader", "Run", "build_app",
           "method_options", "score"]
