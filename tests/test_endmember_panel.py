"""The endmember panel's per-step drawings are cached (stepping back redoes no block means or PNG encoding) and
always show the selected run's own abundances, on a real CNMF run of a CAVE crop."""

from __future__ import annotations

import io

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from fusion_explorer.app import App

from ._cave import load_cave_yxb


@pytest.fixture(scope="module")
def cnmf_app(cave_dir, tmp_path_factory):
    x = load_cave_yxb(str(cave_dir / "balloons_ms"))[256:320, 256:320].transpose(2, 0, 1)
    cube = xr.DataArray(np.ascontiguousarray(x, dtype=np.float32), dims=("band", "y", "x"),
                        coords={"wavelength": ("band", np.arange(400.0, 701.0, 10.0))})
    app = App(cube, session_dir=tmp_path_factory.mktemp("em") / "s")
    app.runner.methods.value = ("cnmf",)
    app.runner.options["cnmf"]["inner_iterations"].value = 10
    app.runner.start(block=True)
    assert app.state.run is not None and app.state.run.iterative, app.runner.message.value
    return app


def _thumbs(panel) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(img.value)), dtype=np.float64) for _, img in panel._thumbs[
        :len(panel.thumbs.children)]]


def _block_mean(a: np.ndarray, side: int) -> np.ndarray:
    f = int(np.ceil(max(a.shape) / side))
    h, w = a.shape[0] // f, a.shape[1] // f
    return a[: h * f, : w * f].reshape(h, f, w, f).mean((1, 3))


def _thumb_ref(h: np.ndarray, k: int) -> np.ndarray:
    """Map ``k`` of abundances ``h`` as a thumbnail shows it: block means on one scale, the 99.5th percentile of
    all maps at the top (brighter values saturate)."""
    small = np.stack([_block_mean(np.asarray(m, dtype=np.float64), 84) for m in h])
    return np.clip(small[k] / np.percentile(small, 99.5), 0, 1)


def test_stepping_back_shows_the_same_drawings_and_they_follow_the_step(cnmf_app):
    app, panel = cnmf_app, cnmf_app.endmembers
    run = app.state.run
    a, b = 1, len(run.trace) - 1
    app.state.step = a
    first = (_thumbs(panel), panel.large.data[0]["z"])
    app.state.step = b
    second = (_thumbs(panel), panel.large.data[0]["z"])
    app.state.step = a
    again = (_thumbs(panel), panel.large.data[0]["z"])
    assert again[1] == first[1] and all(np.array_equal(x, y) for x, y in zip(again[0], first[0], strict=True))
    assert second[1] != first[1]  # the abundances changed between the steps, and so did the map
    # each thumbnail is the step's own abundance map (block-averaged), whatever was cached
    h = np.asarray(run.trace[a]["abundances"], dtype=np.float64)
    for k, thumb in enumerate(again[0]):
        grey = thumb[..., 0] if thumb.ndim == 3 else thumb
        ref = _thumb_ref(h, k)
        assert grey.shape == ref.shape
        assert np.abs(grey / 255 - ref).max() <= 1.01 / 255  # one 8-bit level


def _large(panel) -> np.ndarray:
    import base64

    z = panel.large.data[0]["z"]
    return np.frombuffer(base64.b64decode(z["bdata"]), "<f4").reshape(tuple(int(v) for v in z["shape"].split(",")))


def test_another_run_never_reuses_the_previous_runs_drawings(cnmf_app):
    """A new run (whose arrays may reuse freed ids) shows its own abundances at every step."""
    app, panel = cnmf_app, cnmf_app.endmembers
    first = app.state.selected
    for step in range(len(app.state.run.trace)):
        app.state.step = step  # fill the cache with the first run's drawings
    app.runner.options["cnmf"]["inner_iterations"].value = 4
    app.runner.start(block=True)
    assert app.state.selected != first
    for step in range(len(app.state.run.trace)):
        app.state.step = step
        h = np.asarray(app.state.run.trace[step]["abundances"], dtype=np.float32)
        np.testing.assert_array_equal(_large(panel), h[0])  # 64 x 64: shown unreduced
        thumb = _thumbs(panel)[0]
        grey = thumb[..., 0] if thumb.ndim == 3 else thumb
        assert np.abs(grey / 255 - _thumb_ref(h, 0)).max() <= 1.01 / 255
