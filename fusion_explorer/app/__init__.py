"""The dashboard (served by ``voila app.ipynb``). ``app.ipynb`` only calls :func:`build_app`.

This first version shows the embedded default scene, its simulated sensor pair under a
protocol, and the bicubic baseline with its metrics. The full explorer (pixel spectra,
iteration stepper, endmembers) builds on the same state object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ipywidgets as W
import numpy as np
import xarray as xr

from ..render import png_bytes, stretch, true_colour


def _image(cube: xr.DataArray, size: int = 256) -> W.Image:
    rgb = true_colour(cube)
    return W.Image(value=png_bytes(rgb), format="png", layout=W.Layout(width=f"{size}px", height=f"{size}px"))


def _band_image(cube: xr.DataArray, band: int) -> bytes:
    v = stretch(cube.isel(band=band).values, 99.5)
    return png_bytes((v * 255).astype(np.uint8))


@dataclass
class AppState:
    """What every panel observes: the scene, the simulated problem and the runs."""

    truth: xr.DataArray
    protocol: str = "gaussian-x8"
    runs: dict = field(default_factory=dict)

    def problem(self):
        from ..physics import simulate

        return simulate(self.truth, self.protocol)


def build_app(scene: xr.DataArray | None = None, protocol: str = "gaussian-x8") -> W.VBox:
    """Construct the dashboard widget tree on ``scene`` (default: the embedded synthetic scene)."""
    from ..methods import fuse
    from ..metrics import evaluate
    from ..synth import default_scene

    state = AppState(scene if scene is not None else default_scene(), protocol)
    problem = state.problem()
    wl = problem.wavelength
    title = W.HTML(
        "<h2 style='margin:4px 0'>fusion-explorer</h2>"
        f"<div>Scene: <b>{state.truth.attrs.get('scene', 'scene')}</b> &middot; protocol <b>{protocol}</b> "
        f"&middot; LR-HSI {problem.lr_hsi.shape[1]}x{problem.lr_hsi.shape[2]}x{problem.hsi_bands}, "
        f"HR-MSI {problem.hr_size[0]}x{problem.hr_size[1]}x{problem.msi_bands} ({problem.srf.name})</div>"
    )
    views = W.HBox(
        [
            W.VBox([W.HTML("<b>HR truth (true colour)</b>"), _image(state.truth)]),
            W.VBox([W.HTML("<b>LR-HSI (true colour)</b>"), _image(problem.lr_hsi)]),
            W.VBox(
                [
                    W.HTML("<b>HR-MSI (RGB)</b>"),
                    W.Image(
                        value=png_bytes(_msi_rgb(problem.hr_msi)),
                        format="png",
                        layout=W.Layout(width="256px", height="256px"),
                    ),
                ]
            ),
        ]
    )
    band = W.IntSlider(
        value=len(wl) // 2, min=0, max=len(wl) - 1, description="band", readout_format="d", continuous_update=False
    )
    band_label = W.Label()
    band_img = W.Image(format="png", layout=W.Layout(width="256px", height="256px"))

    def show_band(_=None) -> None:
        band_img.value = _band_image(state.truth, band.value)
        band_label.value = f"{wl[band.value]:.0f} nm"

    band.observe(show_band, "value")
    show_band()
    run = W.Button(description="Run bicubic", button_style="primary", icon="play")
    out = W.HTML()

    def on_run(_=None) -> None:
        result = fuse(problem, "bicubic")
        state.runs["bicubic"] = result
        s = evaluate(state.truth, result.fused, problem.ratio)
        out.value = (
            "<table><tr>"
            + "".join(f"<th style='padding:0 8px'>{k.upper()}</th>" for k in s)
            + "<th>seconds</th></tr><tr>"
            + "".join(f"<td style='padding:0 8px'>{v:.4f}</td>" for v in s.values())
            + f"<td>{result.seconds:.3f}</td></tr></table>"
        )

    run.on_click(on_run)
    return W.VBox(
        [title, views, W.HBox([band, band_label]), band_img, W.HBox([run]), out], layout=W.Layout(padding="8px")
    )


def _msi_rgb(msi: xr.DataArray) -> np.ndarray:
    v = np.asarray(msi.values, dtype=np.float64)
    if v.shape[0] >= 3:
        v = v[:3]
        names = [str(n) for n in msi.coords["band_name"].values[:3]] if "band_name" in msi.coords else []
        if names and names[0].upper().startswith("B"):
            v = v[::-1]
    else:
        v = np.repeat(v[:1], 3, 0)
    v = stretch(v, 99, gamma=2.2)
    return (v.transpose(1, 2, 0) * 255).astype(np.uint8)
