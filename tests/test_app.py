"""The dashboard's logic, without a browser: state, panels, runs, spectra, stepping, export, upload."""

from __future__ import annotations

import ipywidgets as W
import numpy as np
import pytest
import xarray as xr

from fusion_explorer.app import App, AppState, PlotlyFigure, build_app, method_options
from fusion_explorer.methods import FusionResult, available_methods, register
from fusion_explorer.methods.base import _REGISTRY
from fusion_explorer.render import true_colour
from fusion_explorer.synth import default_scene

from ._cave import load_cave_yxb
from .conftest import require


def _find(widget, kind):
    if isinstance(widget, kind):
        yield widget
    for child in getattr(widget, "children", ()):
        yield from _find(child, kind)


@pytest.fixture
def toy_iterative():
    """A tiny iterative unmixing method honouring the trace contract (removed after the test)."""

    def toy(problem, *, device, progress=None, seed=0, steps: int = 4):
        lr = np.asarray(problem.lr_hsi.values, dtype=np.float32)
        bands = lr.shape[0]
        big_h, big_w = problem.hr_size
        rng = np.random.default_rng(seed)
        ramp = np.linspace(0, 1, bands, dtype=np.float32)
        w = np.stack([ramp, 1 - ramp, np.abs(rng.normal(0.4, 0.1, bands))], 1).astype(np.float32)
        trace = []
        for i in range(steps):
            a = (i + 1) / steps * np.linspace(0, 1, big_w, dtype=np.float32)[None, :].repeat(big_h, 0)
            h = np.stack([a, 1 - a, np.full_like(a, 0.2)])
            trace.append({"iteration": i * 10, "label": f"toy {i}", "endmembers": w, "abundances": h,
                          "abundances_lr": h[:, ::problem.ratio, ::problem.ratio], "objective": 1.0 / (i + 1),
                          "residual_hsi": 0.5 / (i + 1), "residual_msi": 0.2 / (i + 1)})
            if progress:
                progress(i + 1, steps, {"stage": "toy"})
        fused = xr.DataArray(np.einsum("bp,pyx->byx", w, h), dims=("band", "y", "x"))
        return FusionResult(fused, "toy-iterative", trace=trace, endmembers=w, abundances=h)

    register("toy-iterative", "test-only iterative unmixing", iterative=True)(toy)
    yield "toy-iterative"
    _REGISTRY.pop("toy-iterative", None)


@pytest.fixture
def app(tmp_path):
    return App(default_scene(64), "gaussian-x8", session_dir=tmp_path / "session")


def test_app_builds_and_runs_bicubic():
    widget = build_app(default_scene(64))
    assert isinstance(widget, W.VBox)
    app = widget.app
    assert "bicubic" in app.runner.methods.options
    app.runner.start(block=True)
    assert "bicubic" in app.state.runs and app.state.selected == "bicubic"
    html = app.compare.table.value
    assert "PSNR" in html and "SAM" in html and "ERGAS" in html and "SSIM" in html


def test_lists_every_registered_method(app, toy_iterative):
    fresh = App(default_scene(64), session_dir=app.state.session_dir)
    assert set(fresh.runner.methods.options) == set(available_methods())
    assert "steps" in method_options(available_methods()[toy_iterative].function)


def test_band_slider_is_labelled_in_nm(app):
    labels = [label for label, _ in app.data.band.options]
    assert labels[0] == "400 nm" and labels[-1] == "700 nm"
    app.data.band.value = 15
    assert app.state.band == 15 and "550 nm" in app.data.views["band"].figure_layout["title"]["text"]


def test_click_spectra_pins_and_csv(app):
    app.runner.start(block=True)
    rev = app.pixels.spectrum.revision
    app.pixels.image.click(x=10, y=20)
    assert app.state.cursor == (20, 10)
    assert app.pixels.spectrum.revision > rev
    names = [t["name"] for t in app.pixels.spectrum.data]
    assert names[:3] == ["truth", "LR-HSI", "bicubic"]
    truth = app.pixels.spectrum.data[0]["y"]
    np.testing.assert_allclose(truth, app.state.truth.values[:, 20, 10], rtol=1e-6)
    lr = app.pixels.spectrum.data[1]["y"]
    np.testing.assert_allclose(lr, app.state.problem.lr_hsi.values[:, 2, 1], rtol=1e-6)
    app.data.views["lr"].click(x=33, y=47)  # a click on the LR view lands on HR coordinates
    assert app.state.cursor == (47, 33)
    app.pixels.pin.click()
    app.pixels.image.click(x=3, y=4)
    app.pixels.pin.click()
    assert app.state.pins == [(47, 33), (4, 3)]
    assert len(app.pixels.image.figure_layout["annotations"]) == 2
    csv = app.state.spectra_csv().splitlines()
    assert csv[0].startswith("pin,y,x,source,400nm") and len(csv) == 1 + 2 * 3
    assert "data:text/csv;base64," in app.pixels.csv.value
    app.pixels.clear.click()
    assert app.state.pins == []


def test_run_off_the_widget_thread_and_cancel(app, toy_iterative):
    import threading

    gate = threading.Event()
    info = available_methods()[toy_iterative]
    original = info.function

    def slow(problem, *, progress=None, **kw):
        def wrapped(done, total, extra):
            gate.wait(5)
            progress(done, total, extra)

        return original(problem, progress=wrapped, **kw)

    register(toy_iterative, "slow", iterative=True)(slow)
    app2 = App(default_scene(64), session_dir=app.state.session_dir)
    app2.runner.methods.value = (toy_iterative,)
    app2.runner.start()
    assert app2.state.busy and not app2.runner.cancel_button.disabled and app2.runner.run_button.disabled
    app2.runner.cancel()
    gate.set()
    app2.runner.thread.join(10)
    assert not app2.state.busy and toy_iterative not in app2.state.runs
    assert "cancelled" in app2.runner.log.value
    assert "cancelled" in app2.runner.progress_label.value and "done" not in app2.runner.progress_label.value
    assert app2.runner.progress.bar_style == "warning" and app2.runner.progress.value < 1


def _run(app, *methods, **options):
    """Run ``methods`` (one Run click) with option widget values ``{"method-option": value}``."""
    app.runner.methods.value = methods
    for key, value in options.items():
        name, opt = key.rsplit("-", 1)
        app.runner.options[name][opt].value = value
    app.runner.start(block=True)


def test_newest_run_is_selected_and_a_failed_run_says_so(app, toy_iterative):
    """Issue 21 defect 1: the third run used to jump back to the first (reassigning the "show run" options
    reset ipywidgets' index to 0, and the dropdown wrote that back to the state); a failed run said "done"."""

    def broken(problem, *, device, progress=None, seed=0):
        raise RuntimeError("pass checkpoint=PATH")

    register("toy-broken", "test-only failing method")(broken)
    app = App(default_scene(64), session_dir=app.state.session_dir)  # lists the test-only methods
    shown = []
    app.state.observe(lambda ch: shown.append(ch["new"]), "selected")
    _run(app, "bicubic")
    _run(app, toy_iterative)
    _run(app, toy_iterative, **{f"{toy_iterative}-steps": 3})  # the third run: it used to show bicubic
    _run(app, "bicubic", toy_iterative, **{f"{toy_iterative}-steps": 5})  # several methods in one Run
    newest = f"{toy_iterative} steps=5"
    assert list(app.state.runs) == ["bicubic", toy_iterative, f"{toy_iterative} steps=3", newest]
    assert shown == ["bicubic", toy_iterative, f"{toy_iterative} steps=3", "bicubic", newest]  # never an older one
    assert app.state.selected == newest and app.pixels.run.value == newest and app.state.step == -1
    assert f"<b>{newest}</b> · final" in app.pixels.step_label.value
    assert app.pixels.image.figure_layout["title"]["text"].startswith(newest)
    assert app.iterations.metric.figure_layout["title"]["text"] == f"{newest}: quality vs iteration"
    assert newest in app.endmembers.note.value and app.compare.export_run.value == newest
    assert app.runner.progress_label.value == "done (2 of 2)" and app.runner.progress.bar_style == "success"
    try:
        app.runner.progress.value = 0
        _run(app, "toy-broken")
        label = app.runner.progress_label.value
        assert "failed" in label and "toy-broken" in label and "done" not in label
        assert app.runner.progress.bar_style == "danger" and app.runner.progress.value < 1
        assert "pass checkpoint=PATH" in app.runner.log.value
        assert app.state.selected == newest  # the last good run stays shown
        _run(app, "toy-broken", "bicubic")  # one of two failed: still not "done"
        assert "failed" in app.runner.progress_label.value and "1 of 2 done" in app.runner.progress_label.value
    finally:
        _REGISTRY.pop("toy-broken", None)


def test_iteration_stepper_and_endmembers(app, toy_iterative):
    app = App(default_scene(64), session_dir=app.state.session_dir)
    app.runner.methods.value = ("bicubic", toy_iterative)
    app.runner.start(block=True)
    assert app.state.selected == toy_iterative
    run = app.state.run
    assert len(run.step_metrics) == 4 and "psnr" in run.step_metrics[0]
    assert app.iterations.slider.max == 4 and not app.iterations.slider.disabled
    app.pixels.image.click(x=5, y=6)

    def toy_spectrum():
        (trace,) = [t for t in app.pixels.spectrum.data if t["name"].startswith(toy_iterative)]
        return trace["y"]

    image_src = app.pixels.image.data[0]["source"]
    spec = toy_spectrum()
    w_rev = app.endmembers.endmembers.revision
    app.iterations.slider.value = 1
    assert app.state.step == 0
    assert app.pixels.image.data[0]["source"] != image_src
    assert toy_spectrum() != spec
    assert app.endmembers.endmembers.revision > w_rev
    assert app.iterations.metric.figure_layout["shapes"][0]["x0"] == 0
    assert len(app.endmembers.endmembers.data) == 3 and len(app.endmembers.thumbs.children) == 3
    app.endmembers.endmembers.click(x=500, y=0.4, curve=1)
    assert app.state.endmember == 1
    assert app.endmembers.endmembers.data[1]["line"]["width"] > app.endmembers.endmembers.data[0]["line"]["width"]
    assert "e2" in app.endmembers.large.figure_layout["title"]["text"]
    app.endmembers.which.value = "lr"
    assert "LR" in app.endmembers.large.figure_layout["title"]["text"]


def test_clearing_a_plot_resets_its_title_markers_and_axes(app, toy_iterative):
    """Issue 21 defect 2: an empty plot kept the previous run's title, step marker and log x axis."""
    app = App(default_scene(64), session_dir=app.state.session_dir)
    _run(app, toy_iterative, **{f"{toy_iterative}-steps": 20})  # iterations 0..190, PSNR and SAM (second y axis)
    long_run = app.state.selected
    metric = app.iterations.metric
    assert "yaxis2" in metric.figure_layout and metric.figure_layout["shapes"]
    assert app.iterations.residual.figure_layout["yaxis"]["type"] == "log"
    assert app.endmembers.endmembers.figure_layout["title"]["text"].startswith("Endmembers W (toy")
    _run(app, "bicubic")
    for fig in (app.iterations.metric, app.iterations.residual, app.endmembers.endmembers, app.endmembers.large):
        assert fig.data == [] and fig.figure_layout == fig.base_layout, fig.figure_layout
        assert "shapes" not in fig.figure_layout and fig.figure_layout.get("xaxis", {}).get("type") != "log"
    assert app.iterations.metric.figure_layout["title"]["text"] == "Quality vs iteration"
    assert app.endmembers.endmembers.figure_layout["title"]["text"] == "Endmembers W"
    # one iterative run after another: the short run's axis is linear and has no second y axis left over
    app.runner.options.clear()
    _run(app, toy_iterative)
    assert app.state.selected == toy_iterative != long_run
    assert metric.figure_layout["xaxis"].get("type") != "log" and len(metric.figure_layout["shapes"]) == 1
    app.state.selected = long_run
    assert metric.figure_layout["xaxis"]["type"] == "linear" and metric.data[-1]["x"][-1] == 190
    # the figure itself: clear() keeps nothing but the layout it was made with
    fig = PlotlyFigure(layout={"title": {"text": "empty"}})
    fig.update([{"type": "scatter", "y": [1, 2]}], {"title": {"text": "run"}, "shapes": [{"type": "line"}],
                                                    "xaxis": {"type": "log"}})
    fig.clear()
    assert fig.data == [] and fig.figure_layout == {"title": {"text": "empty"}}


def test_scene_change_clears_pixel_info_pins_csv_and_export_links(app):
    """Issue 21 defect 3: after a scene change the pixel text, the CSV and the NetCDF link described the old scene."""
    _run(app, "bicubic")
    app.pixels.image.click(x=60, y=50)
    app.pixels.pin.click()
    app.compare.export()
    assert "y=50, x=60" in app.pixels.where.value and "data:text/csv" in app.pixels.csv.value
    assert "download bicubic.nc" in app.compare.export_msg.value and app.runner.log.value
    app.use_scene(default_scene(32, seed=5))
    st = app.state
    assert st.runs == {} and st.pins == [] and st.cursor is None and st.selected == ""
    assert app.pixels.where.value == "" and app.pixels.csv.value == "" and app.compare.export_msg.value == ""
    assert app.pixels.run.options == () and app.pixels.run.value is None
    assert app.pixels.spectrum.data == []
    assert app.pixels.spectrum.figure_layout["title"]["text"] == "Spectra: click any image"
    for fig in (app.pixels.image, app.pixels.sam, app.pixels.error):
        assert not fig.figure_layout.get("shapes") and not fig.figure_layout.get("annotations")
    assert app.pixels.image.figure_layout["title"]["text"] == "HR truth (no run yet)"
    assert app.runner.progress_label.value == "idle" and app.runner.log.value == ""
    assert "no runs yet" in app.compare.table.value
    # the new scene's pixels work and the CSV describes them
    app.pixels.image.click(x=40, y=40)  # clamped into the new 32x32 scene
    assert st.cursor == (31, 31) and "y=31, x=31" in app.pixels.where.value
    csv = st.spectra_csv().splitlines()
    assert len(csv) == 1 + 2 and csv[1].startswith("1,31,31,truth")


def test_export_netcdf_with_provenance(app):
    from fusion_explorer.io import open_cube

    app.runner.start(block=True)
    path = app.compare.export()
    assert path.parent == app.state.session_dir / "exports"
    cube = open_cube(path)
    assert cube.shape == app.state.truth.shape
    assert cube.attrs["method"] == "bicubic" and "metric_psnr" in cube.attrs and cube.attrs["protocol_ratio"] == 8
    assert "download" in app.compare.export_msg.value


def test_upload_errors_and_session_dir(app, tmp_path):
    msg = app.data.handle_upload([("broken.nc", b"this is not netcdf")])
    assert "could not read broken.nc" in msg and "⚠" in msg
    assert not (app.state.session_dir / "uploads" / "broken.nc").exists()
    assert "unsupported type" in app.data.handle_upload([("notes.txt", b"x")])
    assert "refused" in app.data.handle_upload([("..", b"x")]) or "unsupported" in app.data.handle_upload(
        [("..", b"x")])
    from fusion_explorer.app import data_panel

    big = b"0" * (data_panel.MAX_UPLOAD_BYTES + 1)
    assert "limit" in app.data.handle_upload([("big.nc", big)])
    from fusion_explorer.io import write_netcdf

    good = tmp_path / "good.nc"
    write_netcdf(default_scene(32), good)
    assert "path separator" in app.data.handle_upload([("../../good.nc", good.read_bytes())])
    assert not (app.state.session_dir / "good.nc").exists()
    msg = app.data.handle_upload([("good.nc", good.read_bytes())])
    saved = app.state.session_dir / "uploads" / "good.nc"
    assert saved.exists() and "uploaded good.nc" in msg and app.data.scene.value == str(saved)
    app.data.crop.value = 0
    assert app.data.load() and app.state.truth.shape == (31, 32, 32)


def test_custom_degradation_and_srf_plot(app):
    app.data.protocol.value = "custom"
    app.data.ratio.value = 4
    app.data.sigma.value = 1.5
    app.data.srf.value = "sentinel-2a"
    app.data.snr.value = 30
    assert app.data.load(), app.data.message.value
    pb = app.state.problem
    assert pb.ratio == 4 and pb.srf.name.lower().startswith("sentinel") and pb.protocol.snr_db == 30
    assert len(app.data.srf_plot.data) == pb.msi_bands
    assert app.state.runs == {}


def test_figure_update_is_one_revision():
    fig = PlotlyFigure([{"type": "scatter", "y": np.arange(3.0)}], {"title": {"text": "t"}})
    rev = fig.revision
    fig.update(layout={"width": 100})
    assert fig.revision == rev + 1 and fig.figure_layout["title"]["text"] == "t" and fig.data[0]["y"] == [0.0, 1.0, 2.0]
    fig.update([{"type": "scatter", "y": np.array([np.nan, 1.0])}])
    assert fig.data[0]["y"] == [None, 1.0]
    import base64

    fig.update([{"type": "heatmap", "z": np.arange(6.0).reshape(2, 3)}])
    z = fig.data[0]["z"]
    assert z["dtype"] == "f4" and z["shape"] == "2,3"
    assert np.frombuffer(base64.b64decode(z["bdata"]), "<f4").tolist() == [0, 1, 2, 3, 4, 5]


def test_state_is_widget_free():
    st = AppState()
    assert st.session_dir.is_dir() and st.runs == {} and st.step == -1


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


def test_display_maps_match_the_metrics():
    from fusion_explorer.app.images import display_maps
    from fusion_explorer.metrics import error_map, sam_map

    rng = np.random.default_rng(0)
    truth = rng.random((31, 16, 16)).astype(np.float32)
    est = np.clip(truth + rng.normal(0, 0.05, truth.shape), 0, 1).astype(np.float32)
    sam, err = display_maps(truth, est)
    np.testing.assert_allclose(sam, sam_map(truth, est), atol=2e-3)
    np.testing.assert_allclose(err, error_map(truth, est), rtol=1e-4, atol=1e-6)


def test_scalmu_run_steps_through_its_layers_and_consistency_layer(app):
    """SCALMU's trace ends with the consistency layer's cube (a ``fused`` step whose endmembers and
    abundances are the last layer's): the stepper, the images and the endmember panel take it."""
    app = App(default_scene(64), session_dir=app.state.session_dir)
    app.runner.methods.value = ("scalmu",)
    app.runner.start(block=True)
    run = app.state.run
    assert run.result.trace[-1]["label"].startswith("consistency layer")
    n = len(run.result.trace)
    assert len(run.step_metrics) == n and app.iterations.slider.max == n
    psnrs = [m["psnr"] for m in run.step_metrics]
    assert psnrs[-1] > psnrs[-2] + 1  # the consistency layer (measured: 42.18 -> 45.17 dB on this scene)
    app.iterations.slider.value = n - 1  # the last layer, before the consistency layer
    image_src = app.pixels.image.data[0]["source"]
    w_rev = app.endmembers.endmembers.revision
    app.iterations.slider.value = n
    assert app.pixels.image.data[0]["source"] != image_src
    assert "consistency" in app.endmembers.endmembers.figure_layout["title"]["text"]
    assert app.endmembers.endmembers.revision > w_rev
    # its learned parts (must-deliver 3): P and Q with learned minus plain, the steps, the consistency correction
    learned = app.learned
    assert learned.correction.data and "Z − W H" in learned.docs.value and "msi_step" in learned.scalars.value
    app.iterations.slider.value = n - 1  # the last layer: its learned matrices and steps
    titles = [a["text"] for a in learned.matrices.figure_layout["annotations"]]
    assert "endmember_matrix (learned)" in titles and "endmember_matrix − plain" in titles, titles
    assert len(learned.vectors.data) == 4 and learned.correction.data == []


def test_compare_table_never_bolds_or_shows_a_non_finite_value():
    from fusion_explorer.app.compare_panel import _best_values, _format_value

    runs = [{"psnr": float("inf"), "sam": float("nan")}, {"psnr": 31.5, "sam": 4.0}, {"psnr": 29.0, "sam": 5.0}]
    best = _best_values(runs)
    assert best["psnr"] == 31.5 and best["sam"] == 4.0
    assert _format_value(float("inf"), ".2f") == "∞" and _format_value(float("nan"), ".3f") == "n/a"
    assert "psnr" not in _best_values([{"psnr": float("inf")}])  # nothing finite: nothing bold


@pytest.mark.filterwarnings("ignore:SRF .nikon-d700. covers")
def test_aviris_with_zeroed_bands_gives_finite_table_and_curve(tmp_path, toy_iterative):
    from pathlib import Path

    from fusion_explorer.io import open_cube

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "remote" / "aviris_santabarbara_90x90x224.mat"
    if not path.exists():
        pytest.skip(f"AVIRIS cube not found at {path}")
    cube = open_cube(path).isel(y=slice(0, 64), x=slice(0, 64))
    cube = (cube / float(cube.max())).clip(0, None)
    app = App(cube, "gaussian-x8", session_dir=tmp_path / "session")
    _run(app, "bicubic", toy_iterative)
    table = app.compare.table.value
    assert "inf" not in table.lower() and "∞" not in table
    for run in app.state.runs.values():
        assert np.isfinite(run.metrics["psnr"]) and run.metrics["psnr_bands"] < cube.sizes["band"]
    best = max(r.metrics["psnr"] for r in app.state.runs.values())
    assert f"<b>{best:.2f}</b>" in table  # the finite best PSNR is bold
    assert "bands whose truth is not all zero" in table
    app.state.selected = toy_iterative
    psnr_curve = next(t for t in app.iterations._metric_traces if t["name"] == "PSNR (dB)")
    assert psnr_curve["y"] and all(y is not None and np.isfinite(y) for y in psnr_curve["y"])


def test_a_toy_panel_is_one_class_and_one_line(tmp_path):
    """Issue 19 item 4: a panel declares its title, hint and observed traits; adding one is one class and one
    line in the panel list. Sections are numbered by the App; observers follow ``connect_order``."""
    import re

    from fusion_explorer.app import PANELS, Panel

    class RunCounter(Panel):
        name = "counter"
        title = "Run counter"
        hint = "how many runs this scene has"
        observes = {"count": ("runs",)}

        def __init__(self, state, **context):
            super().__init__(state)
            self.widget = W.HTML("no runs")

        def count(self, _=None):
            self.widget.value = f"{len(self.state.runs)} runs: {', '.join(self.state.runs)}"

    app = App(default_scene(64), session_dir=tmp_path / "s", panels=[*PANELS, RunCounter])
    heads = [box.children[0].value for box in app.widget.children if "fe-section" in box._dom_classes]
    titles = [re.sub(r"<[^>]+>.*", "", h.removeprefix("<h3>")).strip() for h in heads]
    assert titles == ["1 · Data", "2 · Run", "3 · Pixels", "4 · Iterations", "5 · Learned parts",
                      "6 · Endmembers and abundances", "7 · Compare and export", "8 · Run counter"]
    assert "how many runs this scene has" in heads[-1]
    assert app.counter is app.panels["counter"] and app.counter.widget.value == "no runs"
    _run(app, "bicubic")
    assert app.counter.widget.value == "1 runs: bicubic"
    app.use_scene(default_scene(32, seed=2))
    assert app.counter.widget.value == "0 runs: "
    # the cursor's observers, in the order traitlets calls them: the pixel panel's spectrum goes out first
    owners = [o.__defaults__[0].__self__.name for o in app.state._trait_notifiers["cursor"]["change"]]
    assert owners[0] == "pixels" and owners.count("pixels") == 2 and "data" in owners
    assert owners.index("data") > max(i for i, n in enumerate(owners) if n == "pixels")

    class Broken(Panel):  # a panel observing a trait the state does not have is refused by name
        name, title, observes = "broken", "Broken", {"count": ("nonsense",)}

        def count(self, _=None):
            pass

    with pytest.raises(AttributeError, match="nonsense"):
        App(default_scene(32), session_dir=tmp_path / "s3", panels=[*PANELS, Broken])


def test_step_scores_match_evaluate_on_a_real_crop(cave_dir):
    """Issue 21 defect 8: the fast per-step scorer gives evaluate's PSNR (valid bands) and SAM (clipped)."""
    from fusion_explorer.app.scoring import StepScorer
    from fusion_explorer.metrics import evaluate

    truth = np.ascontiguousarray(load_cave_yxb(str(cave_dir / "balloons_ms"))[200:296, 180:276].transpose(2, 0, 1),
                                 dtype=np.float32)
    truth[3] = 0  # an all-zero band is left out of PSNR, as evaluate does
    rng = np.random.default_rng(1)
    scorer = StepScorer(truth)
    for noise in (0.002, 0.03):
        est = (truth * rng.uniform(0.9, 1.1, (truth.shape[0], 1, 1)) + rng.normal(0, noise, truth.shape)).astype(
            np.float32)
        est[:, :4, :4] = 1.3  # out of range: clipped as in evaluate
        before = est.copy()
        fast = scorer(est)
        ref = evaluate(truth, est, 8, metrics=("psnr", "sam"))
        assert abs(fast["psnr"] - ref["psnr"]) < 1e-3 and abs(fast["sam"] - ref["sam"]) < 1e-3, (fast, ref)
        assert np.array_equal(est, before)


def test_a_run_is_shown_before_it_is_scored(app, toy_iterative):
    """Issue 21 defect 8: the run is selected and drawn while scoring is still running; the table says
    "scoring…" until its scores arrive, then the curves fill in."""
    import threading

    from fusion_explorer.app import run_panel

    gate, entered = threading.Event(), threading.Event()
    original = run_panel.score

    def slow_score(run, problem, on_metrics=None):
        entered.set()
        gate.wait(10)
        original(run, problem, on_metrics)

    app = App(default_scene(64), session_dir=app.state.session_dir)
    app.runner.methods.value = (toy_iterative,)
    run_panel.score = slow_score
    try:
        app.runner.start()
        app.runner.thread.join(10)
        assert entered.wait(10)
        assert app.state.selected == toy_iterative and not app.state.busy
        assert app.pixels.image.figure_layout["title"]["text"].startswith(toy_iterative)
        assert "scoring…" in app.compare.table.value
        assert app.iterations.slider.max == 4 and "toy 3" in app.iterations.label.value
        gate.set()
        app.runner.wait()
    finally:
        run_panel.score = original
        gate.set()
    assert "scoring…" not in app.compare.table.value and app.state.run.scored
    psnr = next(t for t in app.iterations._metric_traces if t["name"] == "PSNR (dB)")
    assert len(psnr["y"]) == 4 and all(np.isfinite(v) for v in psnr["y"])


def test_mossfuse_offers_the_shared_checkpoint_or_a_sized_fit(tmp_path, reference_dir):
    """Issue 21 defect 6: with the dashboard's defaults MossFuse used to fail ("pass checkpoint=PATH") and
    offer 500 fitting steps (hours on a CPU). A scene the published weights fit runs them; another scene is
    offered a fit with a time estimate and a step count sized to a few minutes."""
    from fusion_explorer.app.mossfuse_plan import BUDGET_S, MAX_STEPS, SECONDS_PER_PIXEL_STEP

    app = App(default_scene(64), "gaussian-x8", session_dir=tmp_path / "s")
    app.runner.methods.value = ("mossfuse",)
    weights = app.runner.options["mossfuse"]["weights"]
    assert weights.value == "checkpoint" and weights.options[0][0] == "published (CAVE_32_model.pth)"
    assert app.runner.mossfuse.checkpoint == reference_dir / "mossfuse" / "CAVE_32_model.pth"
    assert "published weights" in app.runner.describe.value and "≈" in app.runner.describe.value
    app.runner.start(block=True)
    assert app.runner.progress_label.value == "done", app.runner.log.value
    run = app.state.run
    assert run.name == "mossfuse checkpoint=CAVE_32_model.pth" and run.result.params["checkpoint"].endswith(".pth")
    assert run.metrics["psnr"] > 25  # the published weights on a synthetic 64x64 scene at ratio 8
    sensor = app.endmembers._sensor_figs  # its estimated PSF and SRF are shown
    assert app.endmembers.sensor.layout.display == "" and sensor["psf"].data and sensor["srf"].data
    # 4 MSI bands (Sentinel-2 over 400-700 nm): the weights do not fit; a fit sized to the budget is offered
    app.data.protocol.value = "custom"
    app.data.srf.value = "sentinel-2a"
    app.data.crop.value = 128
    app.data.scene.value = app.data.scene.options[0][1]
    assert app.data.load(), app.data.message.value
    assert [v for _, v in weights.options] == ["fit"] and weights.value == "fit"
    steps = app.runner.options["mossfuse"]["steps"].value
    assert app.state.hr_size == (128, 128) and 10 <= steps < MAX_STEPS
    assert steps * SECONDS_PER_PIXEL_STEP * 128 * 128 <= BUDGET_S and "min" in app.runner.describe.value
    assert app.runner.options["mossfuse"]["fit"].value and "need 31 HSI and 3 MSI bands" in app.runner.describe.value


def test_an_upload_without_wavelengths_is_refused_at_upload(app, tmp_path):
    """Issue 21 defect 9: a cube without band centres was accepted and failed later, at Load."""
    from fusion_explorer.io import write_netcdf

    cube = default_scene(32).drop_vars("wavelength")
    path = tmp_path / "nowl.nc"
    write_netcdf(cube, path)
    msg = app.data.handle_upload([("nowl.nc", path.read_bytes())])
    assert "could not use nowl.nc" in msg and "no centre wavelengths" in msg and "--srf" in msg
    assert not (app.state.session_dir / "uploads" / "nowl.nc").exists()
    assert all("nowl" not in v for _, v in app.data.scene.options)


@pytest.fixture
def toy_staged():
    """A test-only unmixing whose trace has stages (FusionResult.stages, each step's ``stage``), iteration 0
    recorded, and a first-layer residual of 1e-70 (what SCALMU's first layer recorded)."""

    def staged(problem, *, device, progress=None, seed=0, quality: float = 1.0):
        bands = problem.lr_hsi.sizes["band"]
        big_h, big_w = problem.hr_size
        truth = np.asarray(problem.truth.values, dtype=np.float32)
        mean = truth.mean(axis=(1, 2))
        w = np.stack([mean, np.linspace(0, 1, bands, dtype=np.float32) * mean.max()], 1).astype(np.float32)
        trace = []
        plan = [(0, "start"), (1, "layers"), (2, "layers"), (3, "layers"), (4, "consistency")]
        for k, (it, stage) in enumerate(plan):
            a = np.clip(truth.mean(0) / max(float(truth.mean(0).max()), 1e-6), 0, 1) * (0.6 + 0.1 * k * quality)
            h = np.stack([a, 1 - a]).astype(np.float32)
            trace.append({"iteration": it, "label": f"{stage} {it}", "stage": stage, "endmembers": w, "abundances": h,
                          "residual_hsi": 1e-70 if it == 1 else 0.1 / (k + 1), "residual_msi": 0.05 / (k + 1)})
        stages = [{"name": "start", "start": 0, "end": 0}, {"name": "layers", "start": 1, "end": 3},
                  {"name": "consistency", "start": 4, "end": 4}]
        fused = xr.DataArray(np.einsum("bp,pyx->byx", w, h), dims=("band", "y", "x"))
        return FusionResult(fused, "toy-staged", trace=trace, stages=stages, endmembers=w, abundances=h)

    register("toy-staged", "test-only staged unmixing", iterative=True)(staged)
    yield "toy-staged"
    _REGISTRY.pop("toy-staged", None)


def test_iterations_teach_stages_one_numbering_floor_fixed_scales_overlay(tmp_path, toy_staged, toy_iterative):
    """Issue 21 must-deliver 2 / defect 4 and 9: shaded stages on one iteration axis with iteration 0 drawn,
    the iteration as the one number shown, a log floor against SCALMU's 1e-70, SAM/error colour scales fixed
    across steps and runs (with a toggle), and other runs' quality curves overlaid."""
    app = App(default_scene(64), session_dir=tmp_path / "s")
    _run(app, toy_iterative)
    _run(app, toy_staged)
    it = app.iterations
    rects = [sh for sh in it.metric.figure_layout["shapes"] if sh["type"] == "rect"]
    assert [(r["x0"], r["x1"]) for r in rects] == [(-0.5, 1), (1, 4), (4, 4.5)]  # each to the next stage's start
    assert [a["text"] for a in it.metric.figure_layout["annotations"]] == ["start", "layers", "consistency"]
    psnr = next(t for t in it.metric.data if t["name"] == "PSNR (dB)")
    assert psnr["x"] == [0, 1, 2, 3, 4] and psnr["y"][0] is not None  # iteration 0 is drawn
    assert it.metric.figure_layout["xaxis"]["type"] == "linear"
    overlay = [t for t in it.metric.data if t["name"] == f"{toy_iterative} PSNR"]
    assert len(overlay) == 1 and overlay[0]["x"] == [0, 10, 20, 30]
    it.overlay.value = False
    assert not [t for t in it.metric.data if t["name"].endswith(" PSNR")]
    # the 1e-70 residual is drawn at a floor; the axis spans a few decades, not seventy
    low, high = it.residual.figure_layout["yaxis"]["range"]
    assert high - low < 8 and low > -10
    hsi = next(t for t in it.residual.data if t["name"] == "HSI residual")
    assert min(hsi["y"]) >= 10**low
    # one numbering: the readout, the label above the images and the marker all say iteration 2
    it.slider.value = 3
    assert "iteration 2" in it.readout.value and "stage: layers" in it.label.value
    assert "iteration 2 (layers)" in app.pixels.step_label.value and "step" not in app.pixels.step_label.value
    assert it.metric.figure_layout["shapes"][-1]["x0"] == 2
    # fixed colour scales: the same top for every step and run of the scene; per image on request
    tops = set()
    for step in (1, 3, 5):
        it.slider.value = step
        tops.add((app.pixels.sam.data[0]["zmax"], app.pixels.error.data[0]["zmax"]))
    app.state.selected = toy_iterative
    tops.add((app.pixels.sam.data[0]["zmax"], app.pixels.error.data[0]["zmax"]))
    assert len(tops) == 1 and "fixed scale" in app.pixels.sam.figure_layout["title"]["text"]
    sam_top = tops.pop()[0]
    assert sam_top == pytest.approx(app.pixels.fixed_scales()[0])
    app.pixels.scale.value = "auto"
    assert app.pixels.sam.data[0]["zmax"] != sam_top and "fixed" not in app.pixels.sam.figure_layout["title"]["text"]


def test_learned_parts_per_layer_and_an_empty_state(tmp_path, toy_staged):
    """Issue 21 must-deliver 3 with hand-built trace keys (``learned``, ``plain``, ``learned_doc``, ``correction``):
    matrices as heatmaps with learned minus plain, vectors against plain, scalars, the correction map, a sentence
    each; a run without learned parts says so and shows no axes."""
    from fusion_explorer.methods import available_methods

    info = available_methods()[toy_staged]
    original = info.function
    rng = np.random.default_rng(0)
    q = np.eye(2) + 0.1 * rng.random((2, 2))

    def with_parts(problem, **kw):
        res = original(problem, **kw)
        for s in res.trace:
            if s["stage"] != "start":
                s["learned"] = {"Q": q * s["iteration"], "eta": np.array([1.2, 0.8]), "lam": np.float64(0.3)}
                s["plain"] = {"Q": np.eye(2), "eta": np.ones(2), "lam": np.float64(0.0)}
                s["learned_doc"] = {"Q": "mixes the W update across endmembers.", "eta": "powers of the step.",
                                    "lam": "weights the HSI term."}
        res.trace[-1]["correction"] = np.full(problem.hr_size, 0.01, np.float32)
        return res

    register(toy_staged, "staged with learned parts", iterative=True)(with_parts)
    app = App(default_scene(64), session_dir=tmp_path / "s")
    learned = app.learned
    assert "no learned parts" in learned.note.value and learned.body.layout.display == "none"
    _run(app, "bicubic")
    assert "no learned parts" in learned.note.value and learned.matrices.data == []
    _run(app, toy_staged)
    assert learned.body.layout.display == ""
    app.iterations.slider.value = 3  # iteration 2: a layer
    assert "iteration 2" in learned.note.value
    (lq, dq) = learned.matrices.data
    import base64

    def values(z):
        return np.frombuffer(base64.b64decode(z["bdata"]), "<f4").reshape(2, 2)

    np.testing.assert_allclose(values(lq["z"]), q * 2, rtol=1e-6)
    np.testing.assert_allclose(values(dq["z"]), q * 2 - np.eye(2), rtol=1e-5, atol=1e-6)
    assert dq["zmid"] == 0 and dq["zmin"] == -dq["zmax"]
    bars, line = learned.vectors.data
    assert bars["y"] == [1.2, 0.8] and line["y"] == [1.0, 1.0]
    assert "0.3" in learned.scalars.value and "+0.3" in learned.scalars.value
    assert "mixes the W update" in learned.docs.value and "weights the HSI term" in learned.docs.value
    assert learned.correction.data == []  # no correction at a layer
    app.iterations.slider.value = 1  # the start applies nothing learned
    assert "applies no learned part" in learned.note.value and learned.matrices.data == []
    app.state.step = -1  # the final result: its last step, the consistency stage, with its correction map
    assert "iteration 4" in learned.note.value and learned.correction.data
    assert "Z − W H" in learned.docs.value


@pytest.mark.filterwarnings("ignore:SRF sentinel-2a")
def test_msi_bands_coloured_by_wavelength_and_false_colour_labelled(app):
    """Issue 21 defect 9: Sentinel-2's bands were all drawn blue (their names start with B) and a B3/B2/B1
    composite carried no "false colour" label."""
    from fusion_explorer.app.images import wavelength_colour

    title = app.data.views["msi"].figure_layout["title"]["text"]
    assert "true colour (R/G/B)" in title, title  # the Nikon D700's R, G, B
    app.data.protocol.value = "custom"
    app.data.srf.value = "sentinel-2a"
    assert app.data.load(), app.data.message.value
    colours = [t["line"]["color"] for t in app.data.srf_plot.data]
    names = [t["name"] for t in app.data.srf_plot.data]
    assert len(set(colours)) == len(colours) == 4, (names, colours)
    blue, green, red = (wavelength_colour(nm) for nm in (490, 560, 665))
    assert colours[1] == wavelength_colour(float(names[1].split("(")[1].split()[0]))
    assert blue != green != red
    title = app.data.views["msi"].figure_layout["title"]["text"]
    assert "true colour (B4/B3/B2)" in title or "false colour" in title, title
    # a sensor whose bands miss red, green or blue says "false colour"
    from fusion_explorer.app.images import msi_rgb

    msi = xr.DataArray(np.random.default_rng(0).random((3, 8, 8)), dims=("band", "y", "x"),
                       coords={"band_name": ("band", ["B1", "B2", "B3"])})
    img, what = msi_rgb(msi, np.array([443.0, 490.0, 560.0]))
    assert img.shape == (8, 8, 3) and what == "false colour: B3/B2/B1 as RGB"


def test_a_region_gives_mean_and_std_spectra_for_truth_inputs_and_runs(app, toy_iterative):
    """Issue 21 must-deliver 6: a box gives its mean ± std spectrum for truth, LR-HSI and every run; the box is
    drawn on every image (where the spectra were taken); a scene change clears it."""
    app = App(default_scene(64), session_dir=app.state.session_dir)  # lists the test-only method
    _run(app, "bicubic")
    _run(app, toy_iterative)
    app.pixels.region_mode.value = True
    assert app.pixels.image.figure_layout["dragmode"] == "select"
    app.pixels.image.select(x=(9.6, 20.2), y=(4.7, 12.4))  # pixel centres 10..20 x 5..12
    st = app.state
    assert st.region == (5, 13, 10, 21)
    truth = st.truth.values[:, 5:13, 10:21]
    means = {t["name"]: t for t in app.pixels.spectrum.data if t["name"].startswith("region ")}
    assert set(means) >= {"region truth (mean ± std)", "region LR-HSI (mean ± std)",
                          "region bicubic (mean ± std)", f"region {toy_iterative} (mean ± std)"}
    np.testing.assert_allclose(means["region truth (mean ± std)"]["y"], truth.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(means["region truth +std"]["y"], truth.mean(axis=(1, 2)) + truth.std(axis=(1, 2)),
                               rtol=1e-5)
    lr = st.problem.lr_hsi.values[:, 0:2, 1:3]  # LR pixels (ratio 8) whose blocks the box touches
    np.testing.assert_allclose(means["region LR-HSI (mean ± std)"]["y"], lr.mean(axis=(1, 2)), rtol=1e-5)
    bic = st.runs["bicubic"].fused()[:, 5:13, 10:21]
    np.testing.assert_allclose(means["region bicubic (mean ± std)"]["y"], bic.mean(axis=(1, 2)), rtol=1e-5)
    assert "region y 5–12, x 10–20 (88 px)" in app.pixels.spectrum.figure_layout["title"]["text"]
    for fig in (app.pixels.image, app.pixels.sam, app.data.views["truth"], app.data.views["lr"]):
        rects = [s for s in fig.figure_layout["shapes"] if s["type"] == "rect"]
        assert rects and rects[0]["x0"] == 9.5 and rects[0]["y1"] == 12.5
    app.pixels.clear_region.click()
    assert st.region is None and not any(t["name"].startswith("region") for t in app.pixels.spectrum.data)
    app.pixels.image.select(x=(1, 3), y=(1, 3))
    app.use_scene(default_scene(32, seed=3))
    assert st.region is None


def test_samson_ground_truth_matched_to_found_endmembers(tmp_path, remote_dir):
    """Issue 21 must-deliver 4: Samson loads from the scene list (its band centres come with the scenes module);
    each true endmember is matched to a found one with its SAM, and the true abundances sit beside the found."""
    from fusion_explorer.app.endmember_panel import match_endmembers

    app = App(session_dir=tmp_path / "s", data_dir=remote_dir.parent, load=False)
    path = str(remote_dir / "samson_95x95x156.mat")
    app.data.root.value = next(v for label, v in app.data.root.options if v != "uploads")
    app.data.scene.options = [*app.data.scene.options, ("samson", path)] if path not in [
        v for _, v in app.data.scene.options] else app.data.scene.options
    app.data.scene.value = path
    app.data.crop.value = 64
    assert app.data.load(), app.data.message.value
    gt = app.state.ground_truth
    assert gt.names == ["rock", "Tree", "water"] and gt.abundances.shape == (3, 64, 64)
    _run(app, "cnmf", **{"cnmf-inner_iterations": 40, "cnmf-n_endmembers": "3"})
    match = app.endmembers.match.value
    assert match.count("<tr>") == 4 and "rock" in match and "water" in match and "true abundance" in match
    w = np.asarray(app.endmembers._step()["endmembers"], np.float32).astype(np.float64)  # as the panel shows
    pairs = match_endmembers(w, gt.endmembers)
    assert sorted(g for _, g, _ in pairs) == [0, 1, 2] and len({f for f, _, _ in pairs}) == 3
    for f, g, angle in pairs:  # the SAM shown is the angle between the two spectra
        cos = gt.endmembers[:, g] @ w[:, f] / np.linalg.norm(gt.endmembers[:, g]) / np.linalg.norm(w[:, f])
        assert angle == pytest.approx(np.degrees(np.arccos(np.clip(cos, -1, 1))), abs=1e-6)
        assert f"{angle:.2f}°" in match
    names = [t["name"] for t in app.endmembers.endmembers.data if t["name"].startswith("ground truth")]
    assert [n.split(" ↔ ")[0] for n in names] == ["ground truth rock", "ground truth Tree", "ground truth water"]


# ---------------------------------------------------------------------- real pairs without truth (issue 21 item 5)
def _paris_app(tmp_path, remote_dir, ratio=4, sigma=1.7):
    path = require(remote_dir / "paris_hyperion_ali_hs_ms.mat")
    app = App(session_dir=tmp_path / "s", data_dir=remote_dir.parent, load=False)
    app.data.root.value = next(v for _, v in app.data.root.options if v != "uploads")
    assert str(path) in [v for _, v in app.data.scene.options]  # listed in the scene list of the data root
    app.data.scene.value = str(path)
    app.data.protocol.value = "custom"
    app.data.ratio.value, app.data.sigma.value = ratio, sigma
    assert app.data.load(), app.data.message.value
    return app, path


def test_paris_pair_loads_in_the_wald_view_without_truth(tmp_path, remote_dir):
    """The Paris Hyperion/ALI pair is stored at one resolution (both 72x72 at 30 m): it loads as a real pair
    with no truth, in the Wald view: LR-HSI = the stored HSI blurred by the PSF and decimated (checked against
    scipy's Gaussian filter), HR-MSI = the stored ALI image untouched, the stored HSI kept as a labelled
    reference; the SRF estimated from the two inputs puts most ALI bands near their nominal centres."""
    from scipy import ndimage

    from fusion_explorer.app.images import band_centres
    from fusion_explorer.scenes import load_pair

    app, path = _paris_app(tmp_path, remote_dir)
    st, pb = app.state, app.state.problem
    pair = load_pair(path)
    assert st.truth is None and st.real_pair and pb.truth is None and pb.srf is None
    assert pb.hr_size == (72, 72) and pb.lr_size == (18, 18) and pb.ratio == 4
    np.testing.assert_array_equal(pb.hr_msi.values, pair.hr_msi.values)
    np.testing.assert_array_equal(st.reference.values, pair.lr_hsi.values)
    blurred = ndimage.gaussian_filter(pair.lr_hsi.values.astype(np.float64), sigma=(0, 1.7, 1.7), mode="mirror",
                                      truncate=6 / 1.7)  # a 13x13 kernel, mirrored borders
    np.testing.assert_allclose(pb.lr_hsi.values, blurred[:, 1::4, 1::4], atol=1e-6)
    summary = app.data.summary.value
    assert "no ground truth" in summary and "Wald view" in summary and "not a ground truth" in summary
    assert "not truth" in app.data.views["truth"].figure_layout["title"]["text"]
    r, _, how = st.diagnostics.srf()
    assert r.shape == (9, 128) and "estimated" in how
    off = np.abs(band_centres(r, pb.wavelength) - pair.hr_msi.coords["wavelength"].values)
    assert np.median(off) < 50, off
    # the reference reproduces the LR-HSI exactly (it made it) and the MSI through the estimated SRF closely
    ref = st.diagnostics(st.reference.values)
    assert ref["hsi_residual"] < 1e-6 and ref["msi_residual"] < 0.15
    assert ref["hsi_map"].shape == (18, 18) and ref["msi_map"].shape == (72, 72)


def test_paris_pair_runs_with_no_reference_diagnostics_and_every_tool(tmp_path, remote_dir):
    """Methods run on the real pair; the compare table has no metric against a truth and says why, but the
    relative residual against each input per run; the two maps are the residual maps; spectra, pins, CSV,
    region, iterations, endmembers and export keep working."""
    import xarray as xr
    from scipy import ndimage

    app, path = _paris_app(tmp_path, remote_dir)
    st = app.state
    _run(app, "bicubic", "cnmf")
    assert app.runner.progress_label.value.startswith("done"), app.runner.log.value
    bic, cnmf = st.runs["bicubic"], st.runs["cnmf"]
    assert bic.scored and cnmf.scored and not bic.score_error and not cnmf.score_error
    # bicubic ignores the MSI, CNMF fits both: CNMF must reproduce the MSI far better, and the HSI better too
    assert cnmf.metrics["msi_residual"] < bic.metrics["msi_residual"] / 3
    assert cnmf.metrics["hsi_residual"] < bic.metrics["hsi_residual"]
    # the HSI residual recomputed independently: blur + decimate bicubic's cube with scipy, compare with Y_h
    z = bic.result.fused.values.astype(np.float64)
    sz = ndimage.gaussian_filter(z, sigma=(0, 1.7, 1.7), mode="mirror", truncate=6 / 1.7)[:, 1::4, 1::4]
    y_h = st.problem.lr_hsi.values
    assert bic.metrics["hsi_residual"] == pytest.approx(np.linalg.norm(sz - y_h) / np.linalg.norm(y_h), rel=1e-6)
    table = app.compare.table.value
    for word in ("PSNR", "SSIM", "SAM", "ERGAS"):
        assert word not in table
    assert "no quality metric against a truth" in table and "LR-HSI residual" in table and "HR-MSI residual" in table
    for run in (bic, cnmf):
        assert f"{run.metrics['hsi_residual']:.4f}" in table and f"{run.metrics['msi_residual']:.4f}" in table
    # the two maps: residuals against each input, drawn for the selected run
    st.selected = "bicubic"
    assert "LR-HSI residual" in app.pixels.sam.figure_layout["title"]["text"]
    assert "HR-MSI residual" in app.pixels.error.figure_layout["title"]["text"]
    assert app.pixels.error.data and app.pixels.sam.data
    maps = {name: [np.asarray(t["z"], np.float64) for t in app.pixels.views(st.runs[name], -1)[1:]]
            for name in ("bicubic", "cnmf")}
    for hsi_map, msi_map in maps.values():
        assert hsi_map.shape == msi_map.shape == (72, 72) and np.isfinite(msi_map).all() and msi_map.max() > 0
    assert maps["cnmf"][1].mean() < maps["bicubic"][1].mean() / 3  # the maps agree with the table's numbers
    # spectra, pins, CSV, region
    st.click({"y": 30, "x": 41})
    spectra = st.spectra(30, 41)
    assert list(spectra)[:2] == ["Wald reference", "LR-HSI"] and {"bicubic", "cnmf"} <= set(spectra)
    np.testing.assert_allclose(spectra["Wald reference"], xr.DataArray(st.reference).values[:, 30, 41], rtol=1e-6)
    st.toggle_pin(30, 41)
    assert "pin 1 Wald reference" in [t["name"] for t in app.pixels.spectrum.data]
    assert "Export spectra (CSV)" in app.pixels.csv.value and st.spectra_csv().count("\n") == 1 + len(spectra)
    st.region = (8, 24, 8, 24)
    assert set(st.region_spectra()) == {"Wald reference", "LR-HSI", "bicubic", "cnmf"}
    # iterations: CNMF's steps each carry both residuals; the curve is theirs, not a truth's
    st.selected = "cnmf"
    st.step = 2
    assert all("nr_hsi" in m and "nr_msi" in m for m in cnmf.step_metrics)
    curve = app.iterations.metric
    assert "no truth" in curve.figure_layout["title"]["text"]
    assert {t["name"] for t in curve.data} >= {"HSI relative residual", "MSI relative residual"}
    assert "HSI relative residual" in app.iterations.label.value
    assert app.endmembers.endmembers.data  # the endmember plot draws the found spectra
    # export with provenance that says there was no truth
    app.compare.export_run.value = "cnmf"
    out = xr.open_dataarray(app.compare.export())
    assert out.attrs["no_truth"].startswith("real pair") and out.attrs["metric_msi_residual"] == pytest.approx(
        cnmf.metrics["msi_residual"])
    out.close()


def test_two_uploads_make_a_real_pair(tmp_path, remote_dir):
    """Two uploads, an LR-HSI and an HR-MSI at three times its resolution (block means of the Paris HSI, and
    the ALI image), load as a real pair: PSF and SRF unknown (the HSI check uses a box average and says so)."""
    from fusion_explorer.io import write_netcdf
    from fusion_explorer.scenes import load_pair

    pair = load_pair(require(remote_dir / "paris_hyperion_ali_hs_ms.mat"))
    lr = pair.lr_hsi.coarsen(y=3, x=3).mean()
    lr.attrs = {k: v for k, v in pair.lr_hsi.attrs.items() if isinstance(v, str | int | float)}
    msi = pair.hr_msi.drop_vars("band_name")
    msi.attrs = {}
    files = {}
    for name, cube in (("paris_lr.nc", lr), ("paris_msi.nc", msi)):
        p = write_netcdf(cube, tmp_path / name)
        files[name] = p.read_bytes()
    app = App(session_dir=tmp_path / "s", load=False)
    assert "uploaded" in app.data.handle_upload([("paris_msi.nc", files["paris_msi.nc"])])
    assert "uploaded" in app.data.handle_upload([("paris_lr.nc", files["paris_lr.nc"])])
    app.data.pair_msi.value = str(app.state.uploads_dir / "paris_msi.nc")
    assert app.data.scene.value.endswith("paris_lr.nc")
    assert app.data.load(), app.data.message.value
    pb = app.state.problem
    assert app.state.real_pair and app.state.reference is None and pb.ratio == 3 and pb.lr_size == (24, 24)
    assert "box average" in app.state.diagnostics.psf_how
    _run(app, "bicubic")
    run = app.state.runs["bicubic"]
    # the box average of the block means' bicubic upsampling comes back close to the block means
    assert 0 < run.metrics["hsi_residual"] < 0.1 and "PSNR" not in app.compare.table.value
    assert "no ground truth" in app.data.views["truth"].figure_layout["title"]["text"]


def test_a_simulated_scene_after_the_real_pair_shows_nothing_of_it(tmp_path, remote_dir):
    """From the Paris pair back to a simulated scene: the truth is back, the Wald reference, the residual
    columns and titles and the estimated-SRF title are gone."""
    app, _ = _paris_app(tmp_path, remote_dir)
    _run(app, "bicubic")
    assert "estimated from the two inputs" in app.data.srf_plot.figure_layout["title"]["text"]
    app.data.scene.value = next(v for _, v in app.data.scene.options if v.startswith("default:"))
    app.data.protocol.value = "gaussian-x8"
    app.data.crop.value = 64
    assert app.data.load(), app.data.message.value
    st = app.state
    assert st.truth is not None and st.reference is None and not st.real_pair
    assert app.data.srf_plot.figure_layout["title"]["text"] == "SRF over the cube's bands"
    assert app.data.views["truth"].figure_layout["title"]["text"].startswith("HR truth")
    _run(app, "bicubic")
    assert "PSNR" in app.compare.table.value and "residual" not in app.compare.table.value
    assert app.pixels.sam.figure_layout["title"]["text"].startswith("SAM vs truth")
    st.click({"y": 3, "x": 4})
    assert list(st.spectra(3, 4))[:2] == ["truth", "LR-HSI"]


# ---------------------------------------------------------------------------- first page (issue 21 item 9)
def test_page_app_loads_its_scene_after_the_first_draw(tmp_path):
    """``build_app()`` as the page calls it: the cell returns without the scene (the page starts loading at once);
    the scene is read ahead in a thread and published only once the page says it has drawn (a page still setting
    up its widgets could miss the change); the SRF list then gains colour-science's cameras, the choice kept."""
    from fusion_explorer.srf import available_srfs

    app = build_app(session_dir=tmp_path / "s").app
    assert app.state.problem is None and "loading" in app.data.message.value
    short = list(app.data.srf.options)
    assert "nikon-d700" in short and not any(o.startswith("colour:") for o in short)
    app._prefetch_thread.join(60)
    assert app.state.problem is None, "published before any page drew"
    app.data.views["truth"]._on_custom_msg(None, {"event": "drawn"}, [])
    assert app.state.problem is not None and app.state.truth.sizes["y"] == 256 and app.data.message.value == ""
    assert set(available_srfs()) <= set(app.data.srf.options) and app.data.srf.value == "nikon-d700"
    # the scene is the one a plain load reads: the default synthetic scene, every pixel
    plain = App(session_dir=tmp_path / "p")
    np.testing.assert_array_equal(app.state.truth.values, plain.state.truth.values)
    # a second page of the same App (or the timeout) publishes nothing again
    app.state.pins = [(5, 7)]  # a new scene would clear them
    app.data.views["lr"]._on_custom_msg(None, {"event": "drawn"}, [])
    app.data.views["truth"]._on_custom_msg(None, {"event": "drawn"}, [])
    assert app.state.pins == [(5, 7)]


def test_a_scene_loaded_before_the_first_draw_is_kept(tmp_path):
    app = App(session_dir=tmp_path / "s", load="after_first_draw", first_draw_timeout=0.5)
    app.data.crop.value = 64
    assert app.data.load()  # the user pressed "Load scene" while the page was still loading
    mine = app.state.problem
    app._prefetch_thread.join(60)
    import time

    time.sleep(1.0)  # past the timeout, which counts as a draw
    assert app.state.problem is mine and app.state.truth.sizes["y"] == 64
    with pytest.raises(ValueError, match="after_first_draw"):
        App(session_dir=tmp_path / "t", load="later")


def test_plotly_js_is_not_part_of_the_widget_state():
    """plotly.js comes from the voila template's static files; the loader sends it only to a page that asks."""
    from fusion_explorer.app.figure import PlotlyLoader, _plotly_js

    loader = PlotlyLoader()
    assert len(str(loader.get_state())) < 10_000
    sent = []
    loader.send = lambda content, buffers=None: sent.append(content)
    loader._on_request(loader, {"event": "plotly_source"}, [])
    assert loader.sent == 1 and sent[0]["plotly_source"] == _plotly_js() and len(_plotly_js()) > 1_000_000
    assert "Plotly" in _plotly_js()[:5000] or "plotly" in _plotly_js()[:5000].lower()
