"""Inspection and teaching helpers behind ``notebooks/`` and the README figures (``docs/make_figures.py``).

* data (:mod:`.scenes`, readers in :mod:`fusion_explorer.io.published`): :func:`nominal_wavelengths`,
  :func:`open_scene` (published files that lack band centres), :func:`unmixing_ground_truth` (Samson,
  Jasper Ridge), :func:`value_summary`, :func:`pick_pixels`;
* noise (:mod:`.noise`): :func:`noise_sigma`, per band, by two standard estimators (wavelet MAD; HySime
  regression);
* unmixing (:mod:`.unmixing`): :func:`spectral_angles`, :func:`match_endmembers` (Hungarian matching on
  spectral angle), :func:`scale_endmembers`, :func:`update_comparison` (why multiplicative updates stay
  non-negative), :func:`coupling_report`;
* unrolled methods (:mod:`.unrolled`): :func:`learned_and_plain`, :func:`layer_table`;
* benchmark (:mod:`.benchmark`): :func:`benchmark_registered` (every registered method, skipping those that
  cannot run), :func:`read_results_md`, :func:`rows_frame`;
* figures (:mod:`.plot_scenes`, :mod:`.plot_unmixing`): ``plot_*`` functions return a
  :class:`matplotlib.figure.Figure` (no pyplot state, so a notebook shows each once and a script saves it);
  :func:`trace_widget` (:mod:`.widgets`) is the interactive view.
"""

from ..io.published import nominal_wavelengths, unmixing_ground_truth
from .benchmark import BenchReport, bench_options, benchmark_registered, read_results_md, rows_frame
from .noise import MAD_TO_SIGMA, noise_sigma
from .plot_scenes import (
    plot_benchmark,
    plot_coverage,
    plot_gallery,
    plot_noise,
    plot_overview,
    plot_problem,
    plot_srfs,
)
from .plot_unmixing import (
    plot_abundances,
    plot_convergence,
    plot_coupling,
    plot_endmembers,
    plot_layers,
    plot_pixel_mixture,
    plot_trace_snapshots,
    plot_trace_step,
    plot_update_comparison,
    snapshot_indices,
)
from .scenes import open_scene, pick_pixels, value_summary
from .unmixing import (
    EndmemberMatch,
    coupling_report,
    match_endmembers,
    scale_endmembers,
    spectral_angles,
    update_comparison,
)
from .unrolled import layer_table, learned_and_plain
from .widgets import trace_widget

__all__ = [
    "MAD_TO_SIGMA",
    "BenchReport",
    "EndmemberMatch",
    "bench_options",
    "benchmark_registered",
    "coupling_report",
    "layer_table",
    "learned_and_plain",
    "match_endmembers",
    "noise_sigma",
    "nominal_wavelengths",
    "open_scene",
    "pick_pixels",
    "plot_abundances",
    "plot_benchmark",
    "plot_convergence",
    "plot_coupling",
    "plot_coverage",
    "plot_endmembers",
    "plot_gallery",
    "plot_layers",
    "plot_noise",
    "plot_overview",
    "plot_pixel_mixture",
    "plot_problem",
    "plot_srfs",
    "plot_trace_snapshots",
    "plot_trace_step",
    "plot_update_comparison",
    "read_results_md",
    "rows_frame",
    "scale_endmembers",
    "snapshot_indices",
    "spectral_angles",
    "trace_widget",
    "unmixing_ground_truth",
    "update_comparison",
    "value_summary",
]
