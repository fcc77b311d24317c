"""Data panel: choose a scene (default, data directory, upload) and its degradation; see truth, LR-HSI, MSI."""

from __future__ import annotations

import os
from pathlib import Path

import ipywidgets as W
import numpy as np

from .figure import PlotlyFigure
from .images import (
    display_factor,
    grey_display,
    image_layout,
    image_trace,
    line_layout,
    msi_rgb,
    pins_layout,
    rgb_display,
)
from .state import AppState, colour

#: uploads larger than this are refused (bytes)
MAX_UPLOAD_BYTES = 256 * 2**20
UPLOAD_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".mat", ".hdr", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip")
DEFAULT = "default:"


def load_scene(key: str, size: int = 256):
    """The cube a scene key names: ``default:<size>`` (embedded synthetic scene) or a path."""
    if key.startswith(DEFAULT):
        from ..synth import default_scene

        return default_scene(int(key[len(DEFAULT) :] or size))
    from ..io import open_cube

    return open_cube(key, clip_negative=True)


def prepare(cube, ratio: int, crop: int | None):
    """Centre-crop to ``crop`` (if smaller) and to a multiple of ``ratio``; scale to [0, 1] if needed."""
    from ..cube import crop as crop_cube

    h, w = cube.sizes["y"], cube.sizes["x"]
    th, tw = min(h, crop or h), min(w, crop or w)
    th, tw = th - th % ratio, tw - tw % ratio
    if th < ratio or tw < ratio:
        raise ValueError(f"the scene ({h}x{w}) is smaller than one LR pixel at ratio {ratio}")
    if (th, tw) != (h, w):
        y0, x0 = (h - th) // 2, (w - tw) // 2
        cube = crop_cube(cube, (y0, y0 + th), (x0, x0 + tw))
    vmax = float(np.nanmax(cube.values))
    if vmax > 1.0:
        cube = (cube / vmax).assign_attrs(cube.attrs, value_note=f"divided by its maximum {vmax:.4g} for display")
    return cube.astype(np.float32)


def reference_endmembers(cube) -> np.ndarray | None:
    """Ground-truth endmembers ``(bands, p)`` stored beside a .mat scene (Samson's / Jasper Ridge's ``M``), or None."""
    source = cube.attrs.get("source")
    if not source or not str(cube.attrs.get("format", "")).startswith("mat-v5"):
        return None
    try:
        import scipy.io

        from ..io import read_mat_variables

        names = [n for n, shape in read_mat_variables(source).items()
                 if n in ("M", "endmembers", "E") and len(shape) == 2]
        if not names:
            return None
        m = np.asarray(scipy.io.loadmat(source, variable_names=names[:1])[names[0]], dtype=np.float64)
    except Exception:  # noqa: BLE001 - optional extra; the scene itself loaded
        return None
    bands = cube.sizes["band"]
    if m.shape[0] != bands and m.shape[1] == bands:
        m = m.T
    if m.shape[0] != bands:
        return None
    if cube.attrs.get("band_order") is not None:  # the reader reordered the bands: M's rows no longer match
        return None
    return m


class DataPanel:
    """Scene + degradation controls and the three true-colour views with a band slider in nm."""

    def __init__(self, state: AppState, data_dir: str | Path | None = None):
        from ..config import default_data_dir
        from ..physics import PROTOCOLS
        from ..srf import available_srfs

        self.state = state
        self.data_dir = W.Text(str(data_dir or default_data_dir() or ""), description="data dir",
                               layout=W.Layout(width="330px"))
        self.rescan = W.Button(description="Rescan", icon="refresh", layout=W.Layout(width="90px"))
        self.scene = W.Dropdown(description="scene", layout=W.Layout(width="480px"))
        self.upload = W.FileUpload(accept=",".join(UPLOAD_SUFFIXES), multiple=True, description="Upload cube",
                                   layout=W.Layout(width="140px"))
        self.upload_msg = W.HTML(f"<small>.nc, .mat or ENVI (.hdr + data), at most {MAX_UPLOAD_BYTES >> 20} MB</small>")
        self.crop = W.Dropdown(options=[("full", 0), ("512", 512), ("256", 256), ("128", 128), ("64", 64)], value=256,
                               description="crop", layout=W.Layout(width="170px"))
        self.protocol = W.Dropdown(options=[*PROTOCOLS, "custom"], value="gaussian-x8", description="protocol",
                                   layout=W.Layout(width="300px"))
        self.ratio = W.Dropdown(options=[2, 4, 8, 16, 32], value=8, description="ratio", layout=W.Layout(width="170px"))
        self.sigma = W.BoundedFloatText(value=2.0, min=0.1, max=20, step=0.1, description="PSF σ (px)",
                                        layout=W.Layout(width="170px"))
        self.srf = W.Dropdown(options=available_srfs(), value="nikon-d700", description="SRF",
                              layout=W.Layout(width="300px"))
        self.snr = W.BoundedFloatText(value=0, min=0, max=100, step=5, description="SNR (dB)",
                                      tooltip="signal-to-noise ratio of both images; 0 = no noise",
                                      layout=W.Layout(width="170px"))
        self.apply = W.Button(description="Load scene", button_style="primary", icon="check",
                              layout=W.Layout(width="140px"))
        self.message = W.HTML()
        self.summary = W.HTML()
        self.srf_plot = PlotlyFigure(layout=line_layout("SRF over the cube's bands", "wavelength (nm)", "response",
                                                         width=420, height=230))
        self.views = {k: PlotlyFigure() for k in ("truth", "lr", "msi", "band")}
        wl0 = [("—", 0)]
        self.band = W.SelectionSlider(options=wl0, description="band", continuous_update=False,
                                      layout=W.Layout(width="300px"))
        for fig in self.views.values():
            fig.on_click(self._on_click)
        for key, w in {**{f"fe-{k}": v for k, v in self.views.items()}, "fe-upload": self.upload,
                       "fe-crop": self.crop, "fe-load": self.apply, "fe-data-message": self.message,
                       "fe-scene": self.scene, "fe-srf-plot": self.srf_plot}.items():
            w.add_class(key)
        self.rescan.on_click(lambda _: self.refresh_scenes())
        self.upload.observe(self._on_upload, "value")
        self.protocol.observe(self._on_protocol, "value")
        self.apply.on_click(lambda _: self.load())
        self.band.observe(lambda ch: setattr(state, "band", int(ch["new"])), "value")
        state.observe(self._on_problem, "problem")
        state.observe(lambda _: self._draw_band(), "band")
        state.observe(lambda _: self._draw_pins(), ["pins", "cursor"])
        self._on_protocol()
        self.refresh_scenes()
        controls = W.VBox([
            self.scene,
            W.HBox([self.data_dir, self.rescan]),
            W.HBox([self.upload, self.upload_msg], layout=W.Layout(align_items="center")),
            W.HBox([self.protocol, self.crop]),
            W.HBox([self.srf, self.ratio]),
            W.HBox([self.snr, self.sigma], layout=W.Layout(margin="0 0 0 130px")),
            W.HBox([self.apply], layout=W.Layout(margin="4px 0 0 90px")),
            self.message,
        ], layout=W.Layout(width="500px", margin="0 16px 0 0"))
        views = W.HBox([self.views["truth"], self.views["lr"], self.views["msi"],
                        W.VBox([self.views["band"], self.band])], layout=W.Layout(flex_flow="row wrap"))
        self.widget = W.VBox([
            W.HBox([controls, W.VBox([self.summary, self.srf_plot])], layout=W.Layout(flex_flow="row wrap")),
            views,
        ])

    # ------------------------------------------------------------------ scene list and upload
    def refresh_scenes(self) -> None:
        from ..io import list_scenes

        options = [("default: synthetic dead leaves, 256x256x31 (offline)", DEFAULT + "256")]
        root = self.data_dir.value.strip()
        if root and Path(root).is_dir():
            try:
                for p in list_scenes(root):
                    options.append((os.path.relpath(p, root), str(p)))
            except Exception as e:  # noqa: BLE001 - a bad data dir is shown, not raised
                self.message.value = _error(f"cannot list {root}: {e}")
        for p in sorted((self.state.session_dir / "uploads").glob("*")):
            if p.suffix.lower() in UPLOAD_SUFFIXES and p.suffix.lower() not in (".img", ".dat", ".raw"):
                options.append((f"uploaded: {p.name}", str(p)))
        current = self.scene.value
        self.scene.options = options
        self.scene.value = current if current in [v for _, v in options] else options[0][1]

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        self.message.value = self.handle_upload([(f["name"], bytes(f["content"])) for f in files])

    def handle_upload(self, files: list[tuple[str, bytes]]) -> str:
        """Save uploads under the session's temp dir, check they read as a cube, select the first. Returns HTML."""
        from ..io import open_cube

        target = self.state.session_dir / "uploads"
        target.mkdir(parents=True, exist_ok=True)
        saved = []
        for name, content in files:
            safe = Path(name).name.replace(os.sep, "_")
            if not safe or safe.startswith("."):
                return _error(f"refused file name {name!r}")
            if Path(safe).suffix.lower() not in UPLOAD_SUFFIXES:
                return _error(f"{safe}: unsupported type; expected one of {', '.join(UPLOAD_SUFFIXES)}")
            if len(content) > MAX_UPLOAD_BYTES:
                return _error(f"{safe} is {len(content) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES >> 20} MB")
            path = target / safe
            path.write_bytes(content)
            saved.append(path)
        scene = next((p for p in saved if p.suffix.lower() not in (".img", ".dat", ".raw", ".bsq", ".bil", ".bip")),
                     saved[0])
        try:
            cube = open_cube(scene, clip_negative=True)
        except Exception as e:  # noqa: BLE001 - shown to the user
            for p in saved:
                p.unlink(missing_ok=True)
            reason = str(e).replace(f"{scene}: ", "").replace(str(scene), scene.name)
            return _error(f"could not read {scene.name}: {reason}")
        self.refresh_scenes()
        self.scene.value = str(scene)
        return (f"<span style='color:#2a7'>uploaded {scene.name}: {cube.sizes['band']} bands, "
                f"{cube.sizes['y']}x{cube.sizes['x']}</span> — press <b>Load scene</b>")

    def _on_protocol(self, _=None) -> None:
        from ..physics import PROTOCOLS

        custom = self.protocol.value == "custom"
        for w in (self.ratio, self.sigma, self.snr):
            w.disabled = not custom
        if not custom:
            p = PROTOCOLS[self.protocol.value]
            self.ratio.value, self.sigma.value, self.snr.value = p.ratio, p.sigma, p.snr_db or 0

    # ------------------------------------------------------------------ load
    def load(self) -> bool:
        """Read the chosen scene, simulate the sensor pair and publish it on the state."""
        from ..physics import PROTOCOLS, make_protocol, simulate

        self.message.value = "<i>loading…</i>"
        try:
            cube = load_scene(self.scene.value)
            if self.protocol.value == "custom":
                proto = make_protocol(self.ratio.value, self.sigma.value, srf=self.srf.value,
                                      snr_db=self.snr.value or None)
            else:
                proto = PROTOCOLS[self.protocol.value]
            truth = prepare(cube, proto.ratio, self.crop.value or None)
            problem = simulate(truth, proto, srf=self.srf.value)
            reference = reference_endmembers(cube)
            if reference is not None and float(np.nanmax(cube.values)) > 1.0 and reference.max() > 1.0:
                reference = reference / float(np.nanmax(cube.values))
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.message.value = _error(f"{type(e).__name__}: {e}")
            return False
        self.message.value = ""
        self.state.reference_endmembers = reference
        self.state.set_problem(truth, problem)
        return True

    # ------------------------------------------------------------------ drawing
    def _on_problem(self, _=None) -> None:
        st = self.state
        pb, truth = st.problem, st.truth
        if pb is None:
            return
        wl = st.wavelength
        (h, w), (lh, lw) = pb.hr_size, pb.lr_size
        self.summary.value = (
            f"<div style='line-height:1.5'><b>{truth.attrs.get('scene', 'scene')}</b><br>"
            f"HR truth {h}x{w}x{pb.hsi_bands}, {wl.min():.0f}–{wl.max():.0f} nm<br>"
            f"LR-HSI {lh}x{lw}x{pb.hsi_bands} (ratio {pb.ratio}, PSF σ {pb.protocol.sigma:g} px, "
            f"SNR {pb.protocol.snr_db or '∞'} dB)<br>"
            f"HR-MSI {h}x{w}x{pb.msi_bands} through <b>{pb.srf.name}</b></div>")
        m = np.asarray(pb.srf.matrix)
        names = list(pb.srf.band_names)
        self.srf_plot.update(
            [{"type": "scatter", "mode": "lines+markers", "x": wl, "y": m[i], "name": names[i],
              "line": {"color": _band_colour(names[i], i)}, "marker": {"size": 4}} for i in range(m.shape[0])])
        px = 300
        pins = pins_layout(st.pins, st.cursor, (h, w))
        self.views["truth"].update([image_trace(*rgb_display(truth.values, wl), "truth")],
                                   {**image_layout("HR truth (true colour, CIE D65)", (h, w), px), **pins})
        self.views["lr"].update(
            [image_trace(*rgb_display(pb.lr_hsi.values, wl, pb.ratio), "LR-HSI")],
            {**image_layout(f"LR-HSI {lh}x{lw} (true colour)", (h, w), px), **pins})
        f = display_factor((h, w))
        msi = pb.hr_msi if f == 1 else pb.hr_msi.coarsen(y=f, x=f, boundary="trim").mean()
        self.views["msi"].update([image_trace(msi_rgb(msi), f, "HR-MSI")],
                                 {**image_layout(f"HR-MSI ({pb.srf.name})", (h, w), px), **pins})
        opts = [(f"{v:.0f} nm", i) for i, v in enumerate(wl)]
        self.band.options = opts
        self.band.value = min(st.band, len(opts) - 1)
        self._draw_band()

    def _draw_band(self) -> None:
        st = self.state
        if st.problem is None:
            return
        b = min(st.band, st.truth.sizes["band"] - 1)
        wl = st.wavelength[b]
        h, w = st.hr_size
        self.views["band"].update([image_trace(*grey_display(st.truth.values[b]), "band")],
                                  {**image_layout(f"HR truth, band {b + 1} at {wl:.0f} nm", (h, w), 300),
                                   **pins_layout(st.pins, st.cursor, (h, w))})

    def _draw_pins(self) -> None:
        if self.state.problem is None:
            return
        pins = pins_layout(self.state.pins, self.state.cursor, self.state.hr_size)
        for fig in self.views.values():
            if fig.data:
                fig.update(layout=pins)

    def _on_click(self, ev: dict) -> None:
        self.state.click(ev)


def _error(text: str) -> str:
    import html

    return f"<div style='color:#b00020;white-space:pre-wrap'>⚠ {html.escape(text)}</div>"


def _band_colour(name: str, i: int) -> str:
    key = name.strip().upper()[:1]
    return {"R": "#d62728", "G": "#2ca02c", "B": "#1f77b4"}.get(key, colour(i)) if len(name) <= 2 else colour(i)
