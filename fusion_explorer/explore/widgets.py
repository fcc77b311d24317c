"""The interactive view: a slider over CNMF's recorded iterates (needs a live kernel)."""

from __future__ import annotations

from typing import Any

from .plot_unmixing import plot_trace_step


def trace_widget(trace, wavelength, match=None, reference=None, names=None):
    """A slider over the recorded iterates redrawing :func:`plot_trace_step` (needs a live kernel)."""
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()
    slider = widgets.IntSlider(value=len(trace) - 1, min=0, max=len(trace) - 1, description="step",
                               continuous_update=False, layout=widgets.Layout(width="60%"))
    label = widgets.Label()

    def draw(change: Any = None) -> None:
        step = trace[slider.value]
        label.value = f"iteration {step['iteration']}: {step['label']}"
        with out:
            out.clear_output(wait=True)
            display(plot_trace_step(step, wavelength, match, reference, names))

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([slider, label]), out])
