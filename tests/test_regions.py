"""Lasso regions (issue 21 must-deliver 6): a polygon drawn on the images gives the mean ± std spectra of the pixels
inside it, for truth, inputs and every run, checked against numpy on a real CAVE crop with an independent
point-in-polygon test and the test suite's own CAVE loader."""

from __future__ import annotations

import numpy as np
import pytest

import fusion_explorer as fe
from fusion_explorer.app import App
from fusion_explorer.app.regions import LassoRegion, RegionError, polygon_mask
from fusion_explorer.cube import crop
from fusion_explorer.errors import FusionExplorerError

from ._cave import load_cave_yxb

Y0, X0, SIZE = 200, 180, 64  # a 64x64 crop of balloons_ms with balloons and background


def inside_by_rays(xs, ys, h: int, w: int) -> np.ndarray:
    """Even-odd ray casting in plain numpy (a horizontal ray to +x from each pixel centre), for reference."""
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    inside = np.zeros((h, w), dtype=bool)
    n = len(xs)
    for i in range(n):
        xa, ya, xb, yb = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
        straddles = (ya > gy) != (yb > gy)
        with np.errstate(divide="ignore", invalid="ignore"):
            cross_x = xa + (gy - ya) * (xb - xa) / (yb - ya)
        inside ^= straddles & (gx < cross_x)
    return inside


@pytest.fixture(scope="module")
def cave_app(tmp_path_factory, cave_dir):
    folder = cave_dir / "balloons_ms"
    truth = crop(fe.open_cube(folder), (Y0, Y0 + SIZE), (X0, X0 + SIZE))
    app = App(truth, "gaussian-x8", session_dir=tmp_path_factory.mktemp("session"))
    app.runner.methods.value = ("bicubic",)
    app.runner.start(block=True)
    assert "bicubic" in app.state.runs
    app.pixels.region_mode.value = True
    app.pixels.region_shape.value = "lasso"
    return app, folder


def _region_traces(app) -> dict:
    return {t["name"]: np.asarray(t["y"], dtype=np.float64) for t in app.pixels.spectrum.data
            if t["name"].startswith("region ")}


@pytest.mark.parametrize("polygon", [
    # a triangle and a concave "C" whose bounding box holds many pixels it does not (vertices off the pixel grid)
    ([10.3, 50.7, 22.1], [5.2, 12.9, 55.4]),
    ([8.4, 48.6, 48.6, 20.3, 20.3, 48.6, 48.6, 8.4], [6.3, 6.3, 16.7, 16.7, 40.2, 40.2, 50.8, 50.8]),
])
def test_a_lasso_gives_the_mean_and_std_of_the_pixels_inside_it(cave_app, polygon):
    app, folder = cave_app
    st = app.state
    xs, ys = polygon
    assert app.pixels.image.figure_layout["dragmode"] == "lasso"
    app.pixels.select_lasso(xs, ys)
    region = st.region
    assert isinstance(region, LassoRegion)

    mask = inside_by_rays(xs, ys, SIZE, SIZE)
    np.testing.assert_array_equal(region.mask, mask)
    y0, y1, x0, x1 = region
    if len(xs) > 3:  # the concave lasso is not its bounding box
        assert mask.sum() < 0.75 * (y1 - y0) * (x1 - x0)

    truth = load_cave_yxb(str(folder))[Y0 : Y0 + SIZE, X0 : X0 + SIZE][mask]  # (pixels, bands), own loader
    traces = _region_traces(app)
    assert {"region truth (mean ± std)", "region LR-HSI (mean ± std)", "region bicubic (mean ± std)"} <= set(traces)
    np.testing.assert_allclose(traces["region truth (mean ± std)"], truth.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(traces["region truth +std"], truth.mean(axis=0) + truth.std(axis=0), rtol=1e-5,
                               atol=1e-7)
    box = load_cave_yxb(str(folder))[Y0 + y0 : Y0 + y1, X0 + x0 : X0 + x1].reshape(-1, 31)
    if len(xs) > 3:  # and its spectrum is not the bounding box's
        assert np.abs(box.mean(axis=0) - truth.mean(axis=0)).max() > 1e-3

    # LR-HSI: the LR pixels (ratio 8) whose 8x8 blocks hold a pixel of the lasso
    lr = np.asarray(st.problem.lr_hsi.values, dtype=np.float64)
    touched = mask.reshape(SIZE // 8, 8, SIZE // 8, 8).any(axis=(1, 3))
    np.testing.assert_allclose(traces["region LR-HSI (mean ± std)"], lr[:, touched].mean(axis=1), rtol=1e-5)
    fused = np.asarray(st.runs["bicubic"].fused(), dtype=np.float64)
    np.testing.assert_allclose(traces["region bicubic (mean ± std)"], fused[:, mask].mean(axis=1), rtol=1e-5)

    # the markers show the polygon (not a box) where the spectra were taken, and the title says how many pixels
    for fig in (app.pixels.image, app.pixels.sam, app.pixels.error):
        paths = [s for s in fig.figure_layout["shapes"] if s["type"] == "path"]
        assert paths and paths[0]["path"].startswith(f"M {xs[0]:.2f},{ys[0]:.2f}") and paths[0]["path"].endswith("Z")
        assert not [s for s in fig.figure_layout["shapes"] if s["type"] == "rect"]
    assert f"lasso region, {int(mask.sum())} px" in app.pixels.spectrum.figure_layout["title"]["text"]


@pytest.mark.parametrize("xs, ys, why", [
    ([5.0, 20.0], [5.0, 30.0], "distinct point"),  # two points
    ([5.0, 10.0, 15.0, 20.0], [5.0, 10.0, 15.0, 20.0], "no area"),  # on a line
    ([3.2, 3.8, 3.5], [3.2, 3.2, 3.8], "no pixel centre"),  # between pixel centres
    ([80.0, 120.0, 100.0], [80.0, 80.0, 120.0], "no pixel centre"),  # outside the 64x64 image
    ([], [], "distinct point"),
])
def test_an_empty_or_degenerate_lasso_says_why_in_one_line(cave_app, xs, ys, why):
    app, _ = cave_app
    st = app.state
    app.pixels.select_lasso([10.3, 50.7, 22.1], [5.2, 12.9, 55.4])
    assert st.region is not None
    app.pixels.select_lasso(xs, ys)
    assert st.region is None
    note = app.pixels.region_note.value
    assert why in note and "\n" not in note and "Traceback" not in note
    assert not any(t["name"].startswith("region") for t in app.pixels.spectrum.data)
    with pytest.raises(FusionExplorerError, match=why):
        polygon_mask(xs, ys, (SIZE, SIZE))
    assert issubclass(RegionError, FusionExplorerError)
    # a good lasso afterwards clears the message
    app.pixels.select_lasso([10.3, 50.7, 22.1], [5.2, 12.9, 55.4])
    assert st.region is not None and app.pixels.region_note.value == ""


def test_box_mode_still_selects_boxes(cave_app):
    """The box stays a plain ``(y0, y1, x0, x1)``; switching the shape switches plotly's drag mode."""
    app, _ = cave_app
    app.pixels.region_shape.value = "box"
    try:
        assert app.pixels.image.figure_layout["dragmode"] == "select"
        app.pixels.image.select(x=(9.6, 20.2), y=(4.7, 12.4))
        assert app.state.region == (5, 13, 10, 21) and not isinstance(app.state.region, LassoRegion)
        assert "region y 5–12, x 10–20 (88 px)" in app.pixels.spectrum.figure_layout["title"]["text"]
    finally:
        app.pixels.region_shape.value = "lasso"
