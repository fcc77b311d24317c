"""Data panel: choose a scene (default, a configured data folder, an upload) and its degradation; see
truth, LR-HSI, MSI.

Scenes come from configured roots only (:func:`fusion_explorer.config.data_roots` and the session's
own uploads): the page picks a root from a list, never types a server path, and :meth:`DataPanel.load`
refuses any path outside them. Uploads stream in chunks (:class:`Uploader`) into the session's
private directory; the page refuses files over :data:`MAX_UPLOAD_BYTES` before sending anything.
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as W
import numpy as np
import traitlets as T

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
from .state import AppState, colour, sessions_root

#: uploads larger than this (all files of one upload together) are refused, by the page before sending (bytes)
MAX_UPLOAD_BYTES = 100 * 2**20
#: the page sends an upload in messages of this size: far below tornado's 10 MiB websocket message limit
UPLOAD_CHUNK_BYTES = 4 * 2**20
UPLOAD_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".mat", ".hdr", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip")
DEFAULT = "default:"
UPLOADS = "uploads"
#: at most this many scenes of one root are listed
MAX_LISTED_SCENES = 500
_MAX_NAME_BYTES = 255


def upload_name_error(name: Any) -> str | None:
    """Why ``name`` cannot be an upload's file name (None when it can): empty, a dot-file, a path
    separator, a control character (NUL), over 255 bytes in UTF-8, or an unsupported type."""
    if not isinstance(name, str) or not name.strip():
        return "refused an upload without a file name"
    shown = repr(name if len(name) <= 60 else name[:57] + "...")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"refused file name {shown}: it contains control characters"
    if "/" in name or "\\" in name:
        return f"refused file name {shown}: it contains a path separator"
    if name.startswith("."):
        return f"refused file name {shown}: names starting with '.' are not accepted"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"refused file name {shown}: it is not valid Unicode"
    if size > _MAX_NAME_BYTES:
        return f"refused file name {shown}: it is {size} bytes long; at most {_MAX_NAME_BYTES}"
    if Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        return f"{name}: unsupported type; expected one of {', '.join(UPLOAD_SUFFIXES)}"
    return None


def _size_error(name: str, size: int) -> str:
    mb = size / 2**20
    shown = f"{mb:.1f} MB" if abs(mb - MAX_UPLOAD_BYTES / 2**20) >= 0.05 else f"{size:,} bytes"
    return (f"{name} is {shown}; the limit is {MAX_UPLOAD_BYTES >> 20} MB ({MAX_UPLOAD_BYTES:,} bytes) "
            "per upload (nothing was kept)")


def inside(path: str | os.PathLike, roots: list[Path]) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside one of ``roots``."""
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(real == r or r in real.parents for r in (Path(r).resolve() for r in roots))


_UPLOADER_ESM = r"""
function render({ model, el }) {
  const button = document.createElement("button");
  button.className = "jupyter-widgets jupyter-button widget-button fe-upload-button";
  button.style.cssText = "flex:0 0 auto;width:130px;white-space:nowrap;overflow:hidden";
  const input = document.createElement("input");
  input.type = "file";
  input.multiple = true;
  input.style.display = "none";
  const status = document.createElement("span");
  status.className = "fe-upload-status";
  status.style.cssText = "margin-left:6px;font-size:12px;color:#556;white-space:nowrap";
  el.append(button, input, status);
  el.style.display = "flex";
  el.style.alignItems = "center";
  const label = () => {
    button.textContent = "⬆ " + model.get("description");
    input.accept = model.get("accept");
    button.disabled = model.get("disabled");
  };
  label();
  model.on("change:description", label);
  model.on("change:disabled", label);
  const aborted = new Set();
  model.on("msg:custom", (msg) => { if (msg && msg.event === "abort") aborted.add(msg.id); });
  button.addEventListener("click", () => { input.value = ""; input.click(); });
  input.addEventListener("change", async () => {
    const files = Array.from(input.files || []);
    input.value = "";
    if (!files.length) return;
    const cap = model.get("max_bytes"), chunk = model.get("chunk_bytes");
    const meta = files.map((f) => ({ name: f.name, size: f.size }));
    const total = files.reduce((s, f) => s + f.size, 0);
    if (total > cap) {  // refused here: nothing is sent
      model.send({ event: "refused", files: meta });
      status.textContent = "too big, not sent";
      return;
    }
    const id = Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
    button.disabled = true;
    try {
      model.send({ event: "begin", id, files: meta });
      for (let i = 0; i < files.length; i++) {
        const f = files[i];
        for (let offset = 0; offset < f.size; offset += chunk) {
          if (aborted.has(id)) { status.textContent = ""; return; }
          const buffer = await f.slice(offset, offset + chunk).arrayBuffer();
          model.send({ event: "chunk", id, file: i, offset }, undefined, [buffer]);
          status.textContent = "sending " + f.name + ": " +
            Math.round(100 * Math.min(offset + chunk, f.size) / f.size) + "%";
        }
      }
      model.send({ event: "end", id });
      status.textContent = "";
    } catch (e) {
      status.textContent = "upload failed: " + e;
    } finally {
      button.disabled = model.get("disabled");
    }
  });
}
export default { render };
"""


class Uploader(anywidget.AnyWidget):
    """A file button that streams its files to the kernel in :data:`UPLOAD_CHUNK_BYTES` messages.

    ipywidgets' ``FileUpload`` sends every file in one websocket message, which tornado drops above
    10 MiB (silently, for the user). Here the page refuses an upload over ``max_bytes`` before
    reading it and sends the rest in small chunks; the kernel writes them straight to disk. Messages to
    the kernel: ``refused`` (too big, nothing sent), ``begin`` (names and sizes), ``chunk`` (one
    buffer at ``offset`` of file ``i``), ``end``. ``on_message(fn)`` registers ``fn(content, buffers)``.
    """

    _esm = _UPLOADER_ESM
    description = T.Unicode("Upload cube").tag(sync=True)
    accept = T.Unicode("").tag(sync=True)
    disabled = T.Bool(False).tag(sync=True)
    max_bytes = T.Int(MAX_UPLOAD_BYTES).tag(sync=True)
    chunk_bytes = T.Int(UPLOAD_CHUNK_BYTES).tag(sync=True)

    def abort(self, upload_id: str) -> None:
        """Tell the page to stop sending upload ``upload_id``."""
        self.send({"event": "abort", "id": upload_id})


class _Incoming:
    """One upload being received: its files' partial paths, open handles and byte counts."""

    def __init__(self, upload_id: str, target: Path, files: list[tuple[str, int]]):
        self.id = upload_id
        self.started = time.monotonic()
        self.names = [n for n, _ in files]
        self.sizes = [s for _, s in files]
        self.written = [0] * len(files)
        self.partial = [target / f".partial-{upload_id}-{i}" for i in range(len(files))]
        self.final = [target / n for n in self.names]
        self.handles = [open(p, "wb") for p in self.partial]  # noqa: SIM115 - closed in finish/discard

    def write(self, i: int, offset: int, data: bytes) -> str | None:
        if not 0 <= i < len(self.names):
            return "the upload named a file it did not announce"
        if offset != self.written[i] or offset + len(data) > self.sizes[i]:
            return f"{self.names[i]}: the upload's pieces arrived out of order or too long"
        self.handles[i].write(data)
        self.written[i] += len(data)
        return None

    def finish(self) -> list[Path]:
        for h in self.handles:
            h.close()
        for i, (part, final) in enumerate(zip(self.partial, self.final, strict=True)):
            if self.written[i] != self.sizes[i]:
                raise OSError(f"{self.names[i]}: received {self.written[i]} of {self.sizes[i]} bytes")
            os.replace(part, final)
        return list(self.final)

    def discard(self) -> None:
        for h in self.handles:
            h.close()
        for p in self.partial:
            p.unlink(missing_ok=True)


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
        """``data_dir``: an extra data root (for callers in Python; the page cannot add one)."""
        from ..config import data_roots
        from ..physics import PROTOCOLS
        from ..srf import available_srfs

        self.state = state
        roots = data_roots()
        if data_dir is not None and Path(data_dir).is_dir() and Path(data_dir).resolve() not in roots:
            roots.insert(0, Path(data_dir).resolve())
        #: the data folders this session may list and load from (besides its own uploads)
        self.roots: list[Path] = roots
        self.root = W.Dropdown(options=[*[(_root_label(r), str(i)) for i, r in enumerate(roots)],
                                        ("this session's uploads", UPLOADS)],
                               value="0" if roots else UPLOADS, description="data",
                               layout=W.Layout(width="390px"))
        self.rescan = W.Button(description="Rescan", icon="refresh", layout=W.Layout(width="90px"))
        self.scene = W.Dropdown(description="scene", layout=W.Layout(width="480px"))
        self.upload = Uploader(accept=",".join(UPLOAD_SUFFIXES), layout=W.Layout(min_width="150px"))
        self.upload_msg = W.HTML(f"<small>.nc, .mat or ENVI (.hdr + data), at most {MAX_UPLOAD_BYTES >> 20} MB; "
                                 "seen only by this session, deleted when it ends</small>")
        self._incoming: _Incoming | None = None
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
                       "fe-scene": self.scene, "fe-srf-plot": self.srf_plot, "fe-root": self.root,
                       "fe-rescan": self.rescan}.items():
            w.add_class(key)
        self.rescan.on_click(lambda _: self.refresh_scenes())
        self.root.observe(lambda _: self.refresh_scenes(), "value")
        self.upload.on_msg(self._on_upload_msg)
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
            W.HBox([self.root, self.rescan]),
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
    @property
    def allowed_roots(self) -> list[Path]:
        """Every folder a scene may be loaded from: the data roots and this session's uploads."""
        return [*self.roots, self.state.uploads_dir]

    def _uploaded(self) -> list[Path]:
        return [p for p in sorted(self.state.uploads_dir.iterdir())
                if not p.name.startswith(".") and p.suffix.lower() in UPLOAD_SUFFIXES
                and p.suffix.lower() not in (".img", ".dat", ".raw", ".bsq", ".bil", ".bip")]

    def refresh_scenes(self) -> None:
        """List the default scene, the chosen root's scenes (bounded) and this session's uploads."""
        from ..io import list_scenes

        options = [("default: synthetic dead leaves, 256x256x31 (offline)", DEFAULT + "256")]
        note = ""
        if self.root.value != UPLOADS:
            root = self.roots[int(self.root.value)]
            private = sessions_root()
            t0 = time.monotonic()
            try:
                found = list_scenes(root)
            except Exception as e:  # noqa: BLE001 - a bad data dir is shown, not raised
                self.message.value = _error(f"cannot list {root.name}: {e}")
                found = []
            scenes = [p for p in found if inside(p, [root]) and not inside(p, [private])]
            if getattr(found, "truncated", False) or len(scenes) > MAX_LISTED_SCENES:
                note = (f"<small>showing the first {min(len(scenes), MAX_LISTED_SCENES)} scenes of "
                        f"{html.escape(root.name)}: the folder is larger than one listing scans "
                        f"({time.monotonic() - t0:.1f} s)</small>")
            for p in scenes[:MAX_LISTED_SCENES]:
                options.append((os.path.relpath(p, root), str(p)))
        for p in self._uploaded():
            options.append((f"uploaded: {p.name}", str(p)))
        current = self.scene.value
        self.scene.options = options
        self.scene.value = current if current in [v for _, v in options] else options[0][1]
        self.upload_msg.value = self.upload_msg.value.split("<br>")[0] + (f"<br>{note}" if note else "")

    def _on_upload_msg(self, _widget, content: dict, buffers: list) -> None:
        """The page's upload protocol (see :class:`Uploader`); every outcome is a message, never an exception."""
        try:
            self.message.value = self._upload_step(content, buffers) or self.message.value
        except Exception as e:  # noqa: BLE001 - shown to the user
            if self._incoming is not None:
                self._incoming.discard()
                self.upload.abort(self._incoming.id)
                self._incoming = None
            self.message.value = _error(f"upload failed: {type(e).__name__}: {e}")

    def _upload_step(self, content: dict, buffers: list) -> str | None:
        event = content.get("event") if isinstance(content, dict) else None
        files = content.get("files") or [] if isinstance(content, dict) else []
        if event == "refused":
            name = ", ".join(str(f.get("name", "?")) for f in files[:3])
            return _error(_size_error(name, sum(int(f.get("size", 0)) for f in files)).replace(
                "(nothing was kept)", "(the page did not send it)"))
        if event == "begin":
            if self._incoming is not None:
                self._incoming.discard()
            self._incoming = None
            upload_id = str(content.get("id", ""))[:40]
            meta = [(f.get("name"), f.get("size")) for f in files if isinstance(f, dict)]
            refusal = self._check_upload(meta) if meta else "refused an empty upload"
            if refusal:
                self.upload.abort(upload_id)
                return _error(refusal)
            self._incoming = _Incoming(upload_id, self.state.uploads_dir, [(n, int(s)) for n, s in meta])
            return "<i>receiving…</i>"
        incoming = self._incoming
        if incoming is None or str(content.get("id")) != incoming.id:
            return None  # a chunk of an upload that was refused or replaced: ignore it
        if event == "chunk":
            data = bytes(buffers[0]) if buffers else b""
            problem = incoming.write(int(content.get("file", -1)), int(content.get("offset", -1)), data)
            if problem:
                incoming.discard()
                self._incoming = None
                self.upload.abort(incoming.id)
                return _error(problem)
            return None
        if event == "end":
            self._incoming = None
            try:
                saved = incoming.finish()
            except OSError as e:
                incoming.discard()
                return _error(f"upload failed: {e}")
            return self._accept(saved)
        return None

    def _check_upload(self, files: list[tuple[Any, Any]]) -> str | None:
        for name, size in files:
            problem = upload_name_error(name)
            if problem:
                return problem
            if not isinstance(size, int) or size < 0:
                return f"{name}: the page sent no valid size"
        total = sum(size for _, size in files)
        if total > MAX_UPLOAD_BYTES:
            return _size_error(", ".join(n for n, _ in files[:3]), total)
        return None

    def handle_upload(self, files: list[tuple[str, bytes]]) -> str:
        """Save uploads in the session's private uploads folder, check they read as a cube, select the
        first. Returns HTML (a message for every refusal: bad names, types, sizes, unreadable files)."""
        problem = self._check_upload([(name, len(content)) for name, content in files]) if files else (
            "refused an empty upload")
        if problem:
            return _error(problem)
        saved = []
        try:
            for name, content in files:
                path = self.state.uploads_dir / name
                path.write_bytes(content)
                saved.append(path)
        except OSError as e:
            for p in saved:
                p.unlink(missing_ok=True)
            return _error(f"could not save {name}: {e.strerror or e}")
        return self._accept(saved)

    def _accept(self, saved: list[Path]) -> str:
        from ..io import open_cube

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
        return (f"<span style='color:#2a7'>uploaded {html.escape(scene.name)}: {cube.sizes['band']} bands, "
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
        from ..physics import PROTOCOLS, make_protocol
        from ..problem import simulate

        self.message.value = "<i>loading…</i>"
        key = self.scene.value or ""
        if not key.startswith(DEFAULT) and not inside(key, self.allowed_roots):
            self.message.value = _error(f"refused {Path(key).name}: it is not inside a data folder of this "
                                        "dashboard or this session's uploads")
            return False
        try:
            cube = load_scene(key)
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


def _root_label(root: Path) -> str:
    """How a data root is shown: its last two path components (the page needs no full server path)."""
    return f"data: …/{root.parent.name}/{root.name}" if root.parent.name else f"data: {root}"


def _error(text: str) -> str:
    return f"<div style='color:#b00020;white-space:pre-wrap'>⚠ {html.escape(text)}</div>"


def _band_colour(name: str, i: int) -> str:
    key = name.strip().upper()[:1]
    return {"R": "#d62728", "G": "#2ca02c", "B": "#1f77b4"}.get(key, colour(i)) if len(name) <= 2 else colour(i)
