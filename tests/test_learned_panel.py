"""The learned-parts view (issue 21 item 3) on a real SCALMU trace of a CAVE crop: every key drawn whatever its
name, "learned = plain" drawn as a zero map with a note (never blank axes), subplot titles that do not overlap."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import xarray as xr

from fusion_explorer.app import App
from fusion_explorer.app.learned_panel import same_as_plain

from ._cave import load_cave_yxb


@pytest.fixture(scope="module")
def balloons_64(cave_dir) -> xr.DataArray:
    x = load_cave_yxb(str(cave_dir / "balloons_ms"))[200:264, 180:244].transpose(2, 0, 1)
    return xr.DataArray(np.ascontiguousarray(x, dtype=np.float32), dims=("band", "y", "x"),
                        coords={"wavelength": ("band", np.arange(400.0, 701.0, 10.0))}, attrs={"units": "nm"})


@pytest.fixture(scope="module")
def scalmu_app(balloons_64, tmp_path_factory):
    """An App that ran the shipped SCALMU on the crop (the real trace with its learned and plain parts)."""
    app = App(balloons_64, session_dir=tmp_path_factory.mktemp("learned") / "s")
    app.runner.methods.value = ("scalmu",)
    app.runner.start(block=True)
    assert app.state.run is not None and app.state.run.name.startswith("scalmu"), app.runner.message.value
    return app


def _text_boxes(layout: dict) -> list[tuple[float, float, float, float, str]]:
    """Pixel boxes ``(x0, x1, y0, y1)`` (y down) of the figure's annotations, from their text, font, anchors:
    0.6 font px a character (a generous estimate for plotly's default sans-serif), 1.3 font px a line."""
    m = layout["margin"]
    w, h = layout["width"] - m["l"] - m["r"], layout["height"] - m["t"] - m["b"]
    boxes = []
    for a in layout["annotations"]:
        lines = [re.sub("<[^>]+>|&[a-z]+;", "x", s) for s in a["text"].split("<br>")]
        size = a["font"]["size"]
        bw, bh = 0.6 * size * max(len(s) for s in lines), 1.3 * size * len(lines)
        cx, cy = m["l"] + a["x"] * w, m["t"] + (1 - a["y"]) * h
        x0 = {"center": cx - bw / 2, "left": cx, "right": cx - bw}[a.get("xanchor", "center")]
        y0 = {"middle": cy - bh / 2, "bottom": cy - bh, "top": cy}[a.get("yanchor", "middle")]
        boxes.append((x0, x0 + bw, y0, y0 + bh, a["text"], a.get("yanchor")))
    return boxes


def _plot_boxes(layout: dict) -> list[tuple[float, float, float, float]]:
    m = layout["margin"]
    w, h = layout["width"] - m["l"] - m["r"], layout["height"] - m["t"] - m["b"]
    out = []
    for k, ax in layout.items():
        if re.fullmatch(r"xaxis\d*", k):
            ya = layout["yaxis" + k[5:]]
            (x0, x1), (y0, y1) = ax["domain"], ya["domain"]
            out.append((m["l"] + x0 * w, m["l"] + x1 * w, m["t"] + (1 - y1) * h, m["t"] + (1 - y0) * h))
    return out


def _overlap(a, b) -> bool:
    return a[0] < b[1] - 0.5 and b[0] < a[1] - 0.5 and a[2] < b[3] - 0.5 and b[2] < a[3] - 0.5


def assert_titles_apart(layout: dict) -> None:
    """No two titles overlap, no title overlaps a plot area, every title lies inside the figure."""
    # titles sit on a band above their plot (anchored at their bottom); notes are centred in a plot on purpose
    titles = [b for b in _text_boxes(layout) if b[5] == "bottom"]
    plots = _plot_boxes(layout)
    for a in layout["annotations"]:  # plotly's default "auto" anchors move text by its position: none here
        assert a.get("xanchor") in ("left", "center", "right") and a.get("yanchor") in ("top", "middle", "bottom")
    for note in _text_boxes(layout):  # a note drawn in a plot lies inside one plot
        if note[5] == "middle":
            assert any(p[0] <= note[0] and note[1] <= p[1] and p[2] <= note[2] and note[3] <= p[3] for p in plots), note
    for i, a in enumerate(titles):
        assert a[0] >= 0 and a[1] <= layout["width"] and a[2] >= 0, a
        for b in titles[i + 1:]:
            assert not _overlap(a, b), (a, b)
        for p in plots:
            assert not _overlap(a, p), (a, p)


def _bdata(z: dict) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(z["bdata"]), "<f4")


def _layer_steps(run) -> list[int]:
    return [i for i, s in enumerate(run.trace) if s.get("learned")]


def _matrix_step(run) -> int:
    """The last step that learned a matrix (a layer, not the consistency step)."""
    return [i for i in _layer_steps(run) if any(np.asarray(v).ndim == 2 for v in run.trace[i]["learned"].values())][-1]


def test_real_scalmu_layers_draw_every_part_with_titles_apart(scalmu_app):
    app, learned = scalmu_app, scalmu_app.learned
    run = app.state.run
    steps = _layer_steps(run)
    assert len(steps) >= 2
    for i in steps:
        app.state.step = i
        parts = run.trace[i]["learned"]
        mats = [k for k, v in parts.items() if np.asarray(v).ndim >= 2]
        vecs = [k for k, v in parts.items() if np.asarray(v).ndim == 1 and np.asarray(v).size > 1]
        ones = [k for k, v in parts.items() if np.asarray(v).size == 1]
        # every matrix: learned and its difference (or zero map); every vector: bars; every single value: a row
        assert len(learned.matrices.data) == 2 * len(mats)
        assert sum(t["type"] == "bar" for t in learned.vectors.data) == len(vecs)
        for k in ones:
            assert f"<td style='text-align:left'>{k}</td>" in learned.scalars.value
        for k in parts:
            assert f"<b>{k}</b>" in learned.docs.value
        for fig in (learned.matrices, learned.vectors):
            if fig.data:
                assert_titles_apart(fig.figure_layout)
                # every subplot has a trace on its axes: none is drawn empty
                used = {t.get("xaxis", "x") for t in fig.data}
                axes = {"x" + k[5:] for k in fig.figure_layout if re.fullmatch(r"xaxis\d*", k)}
                assert axes == used
        # learned minus plain is the real difference of the trace's arrays
        for j, k in enumerate(mats):
            lv = np.asarray(parts[k], np.float64)
            pv = np.asarray(run.trace[i]["plain"][k], np.float64)
            d = _bdata(learned.matrices.data[2 * j + 1]["z"])
            expect = np.zeros(lv.size) if same_as_plain(lv, pv) else (lv - pv).ravel()
            np.testing.assert_allclose(d, expect, rtol=1e-5, atol=1e-6)


def _with_trace_edit(app, name: str, edit):
    """A copy of the selected run's result with ``edit(step)`` applied to its layer steps, added as a new run."""
    from fusion_explorer.app.state import Run

    base = app.state.runs[next(k for k in app.state.runs if k.startswith("scalmu"))].result
    result = copy.deepcopy(base)
    for i in _layer_steps(app.state.runs[next(k for k in app.state.runs if k.startswith("scalmu"))]):
        edit(result.trace[i])
    app.state.add_run(Run(name, result))
    return app.state.run


def test_learned_equal_to_plain_draws_zero_maps_with_a_note(scalmu_app):
    """A layer whose learned parts equal the plain ones (exactly): zero maps, grey, no colour bar, the note."""
    def plain_is_learned(s):
        s["plain"] = {k: np.array(v, copy=True) for k, v in s["learned"].items()}

    app = scalmu_app
    run = _with_trace_edit(app, "toy-learned-is-plain", plain_is_learned)
    assert run.name.startswith("toy-learned-is-plain")
    step = _matrix_step(run)
    app.state.step = step
    learned = app.learned
    parts = run.trace[step]["learned"]
    mats = [k for k, v in parts.items() if np.asarray(v).ndim >= 2]
    assert mats and len(learned.matrices.data) == 2 * len(mats)
    notes = [a["text"].replace("<br>", " ") for a in learned.matrices.figure_layout["annotations"]]
    assert sum("learned = plain here" in t for t in notes) == len(mats)
    for j, k in enumerate(mats):
        diff = learned.matrices.data[2 * j + 1]
        z = _bdata(diff["z"])
        assert z.size == np.asarray(parts[k]).size and not z.any()  # a zero map of the matrix's shape
        assert diff["showscale"] is False and diff["colorscale"][0][1] != "#ffffff"  # visible, not white-on-white
    for a in learned.vectors.figure_layout.get("annotations", []):
        assert "learned = plain here" in a["text"].replace("<br>", " ")
    assert_titles_apart(learned.matrices.figure_layout)
    assert "+0" in learned.scalars.value or not [k for k, v in parts.items() if np.asarray(v).size == 1]


def test_unknown_new_keys_render(scalmu_app):
    """Keys the panel has never heard of: a (2,) feature vector, a scalar weight, a 3-D gate input, a very long
    name, a value that is not a number; all drawn, with their sentence, titles still apart."""
    rng = np.random.default_rng(3)
    long_name = "a_learned_gate_input_with_a_name_much_longer_than_one_subplot_is_wide"
    new = {"noise_features": rng.normal(size=2).astype(np.float32), "hsi_weight": np.float32(0.37),
           "gate_inputs": rng.random((3, 2, 2)).astype(np.float32), long_name: rng.random((4, 4)).astype(np.float32),
           "activation": "softplus"}

    def add_keys(s):
        s["learned"].update(new)
        s["plain"].update(noise_features=new["noise_features"], hsi_weight=np.float32(0.0))
        s["learned_doc"].update({k: f"the sentence on {k}." for k in new})

    app = scalmu_app
    run = _with_trace_edit(app, "toy-new-keys", add_keys)
    step = _matrix_step(run)
    app.state.step = step
    learned = app.learned
    titles = " ".join(a["text"].replace("<br>", "") for a in learned.matrices.figure_layout["annotations"])
    assert "gate_inputs" in titles and "3x4" in titles and "gate_inputs: no plain counterpart" in titles
    assert "a_learned_gate_input" in titles
    vt = " ".join(a["text"].replace("<br>", " ") for a in learned.vectors.figure_layout["annotations"])
    assert "noise_features: learned = plain here" in vt
    bars = next(t for t in learned.vectors.data if t["name"] == "noise_features learned")
    np.testing.assert_allclose(bars["y"], new["noise_features"], rtol=1e-6)
    assert "hsi_weight</td><td>0.37</td><td>0</td><td>+0.37" in learned.scalars.value
    assert "activation</td><td>softplus" in learned.scalars.value
    for k in new:
        assert f"the sentence on {k}." in learned.docs.value
    assert_titles_apart(learned.matrices.figure_layout)
    assert_titles_apart(learned.vectors.figure_layout)
