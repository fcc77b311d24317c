"""The dashboard's logic, without a browser: it builds on the default scene and runs bicubic."""

from __future__ import annotations

import ipywidgets as W
import numpy as np

from fusion_explorer.app import build_app
from fusion_explorer.render import true_colour
from fusion_explorer.synth import default_scene

from ._cave import load_cave_yxb


def _find(widget, kind):
    if isinstance(widget, kind):
        yield widget
    for child in getattr(widget, "children", ()):
        yield from _find(child, kind)


def test_app_builds_and_runs_bicubic():
    app = build_app()
    assert isinstance(app, W.VBox)
    (button,) = [b for b in _find(app, W.Button) if "bicubic" in b.description]
    button.click()
    html = "".join(h.value for h in _find(app, W.HTML))
    assert "PSNR" in html and "SAM" in html


def test_true_colour_of_real_scene_matches_its_photo(cave_dir):
    """The CIE rendering of a CAVE cube correlates with the scene's own RGB photo."""
    from PIL import Image

    x = load_cave_yxb(str(cave_dir / "balloons_ms"))
    from fusion_explorer.cube import make_cube

    rgb = true_colour(make_cube(x.transpose(2, 0, 1), np.arange(400, 701, 10)))
    photo = np.asarray(Image.open(cave_dir / "balloons_ms" / "balloons_RGB.bmp").convert("RGB"), dtype=float)
    for c in range(3):
        r = np.corrcoef(rgb[..., c].ravel(), photo[..., c].ravel())[0, 1]
        assert r > 0.8, (c, r)


def test_default_scene_is_deterministic_and_physical():
    a, b = default_scene(64, seed=3), default_scene(64, seed=3)
    assert np.array_equal(a.values, b.values)
    assert a.shape == (31, 64, 64) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not np.array_equal(a.values, default_scene(64, seed=4).values)
