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
    assert app.state.band == 15 and "550 nm" in app.data.views["band"].layout["title"]["text"]


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
    assert len(app.pixels.image.layout["annotations"]) == 2
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
    assert app.pixels.image.layout["title"]["text"].startswith(newest)
    assert app.iterations.metric.layout["title"]["text"] == f"{newest}: quality vs iteration"
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
    assert app.iterations.metric.layout["shapes"][0]["x0"] == 0
    assert len(app.endmembers.endmembers.data) == 3 and len(app.endmembers.thumbs.children) == 3
    app.endmembers.endmembers.click(x=500, y=0.4, curve=1)
    assert app.state.endmember == 1
    assert app.endmembers.endmembers.data[1]["line"]["width"] > app.endmembers.endmembers.data[0]["line"]["width"]
    assert "e2" in app.endmembers.large.layout["title"]["text"]
    app.endmembers.which.value = "lr"
    assert "LR" in app.endmembers.large.layout["title"]["text"]


def test_clearing_a_plot_resets_its_title_markers_and_axes(app, toy_iterative):
    """Issue 21 defect 2: an empty plot kept the previous run's title, step marker and log x axis."""
    app = App(default_scene(64), session_dir=app.state.session_dir)
    _run(app, toy_iterative, **{f"{toy_iterative}-steps": 20})  # iterations 0..190: a log iteration axis
    long_run = app.state.selected
    metric = app.iterations.metric
    assert metric.layout["xaxis"]["type"] == "log" and metric.layout["shapes"]
    assert app.endmembers.endmembers.layout["title"]["text"].startswith("Endmembers W (toy")
    _run(app, "bicubic")
    for fig in (app.iterations.metric, app.iterations.residual, app.endmembers.endmembers, app.endmembers.large):
        assert fig.data == [] and fig.layout == fig.base_layout, fig.layout
        assert "shapes" not in fig.layout and fig.layout.get("xaxis", {}).get("type") != "log"
    assert app.iterations.metric.layout["title"]["text"] == "Quality vs iteration"
    assert app.endmembers.endmembers.layout["title"]["text"] == "Endmembers W"
    # one iterative run after another: the short run's axis is linear and has no second y axis left over
    app.runner.options.clear()
    _run(app, toy_iterative)
    assert app.state.selected == toy_iterative != long_run
    assert metric.layout["xaxis"].get("type") != "log" and len(metric.layout["shapes"]) == 1
    app.state.selected = long_run
    assert metric.layout["xaxis"]["type"] == "log"
    # the figure itself: clear() keeps nothing but the layout it was made with
    fig = PlotlyFigure(layout={"title": {"text": "empty"}})
    fig.update([{"type": "scatter", "y": [1, 2]}], {"title": {"text": "run"}, "shapes": [{"type": "line"}],
                                                    "xaxis": {"type": "log"}})
    fig.clear()
    assert fig.data == [] and fig.layout == {"title": {"text": "empty"}}


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
    assert app.pixels.spectrum.data == [] and app.pixels.spectrum.layout["title"]["text"] == "Spectra: click any image"
    for fig in (app.pixels.image, app.pixels.sam, app.pixels.error):
        assert not fig.layout.get("shapes") and not fig.layout.get("annotations")
    assert app.pixels.image.layout["title"]["text"] == "HR truth (no run yet)"
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
    assert fig.revision == rev + 1 and fig.layout["title"]["text"] == "t" and fig.data[0]["y"] == [0.0, 1.0, 2.0]
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
    assert "consistency" in app.endmembers.endmembers.layout["title"]["text"]
    assert app.endmembers.endmembers.revision > w_rev


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
