"""Data panel: choose a scene (default, a configured data folder, an upload) and its degradation; see
truth, LR-HSI, MSI. Reading, cropping and ground truth are :mod:`fusion_explorer.scenes`'; this panel
holds widgets, the upload protocol and the drawing.

Scenes come from configured roots only (:func:`fusion_explorer.config.data_roots` and the session's
own uploads): the page picks a root from a list, never types a server path, and :meth:`DataPanel.load`
refuses any path outside them. Uploads stream in chunks (:class:`Uploader`) into the session's
private directory; the page refuses files over :data:`MAX_UPLOAD_BYTES` before sending anything.
"""

from __future__ import annotations

import html
import os
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from ..srf import srf_names
from .degradation_controls import DegradationControls, describe, make_srf, realise_with_truth
from .figure import PlotlyFigure
from .images import (
    band_centres,
    display_factor,
    grey_display,
    image_layout,
    image_trace,
    line_layout,
    msi_rgb,
    pins_layout,
    rgb_display,
    wavelength_colour,
)
from .panel import Panel
from .state import AppState, sessions_root
from .upload import (  # noqa: F401 - re-exported: the upload limits are documented as the data panel's
    MAX_UPLOAD_BYTES,
    UPLOAD_CHUNK_BYTES,
    UPLOAD_SUFFIXES,
    Uploader,
    _Incoming,
    _size_error,
    upload_name_error,
)

NO_PAIR_LABEL = "none: simulate the MSI from the scene (a real pair file carries its own)"
DEFAULT = "default:"  # scene keys of the embedded synthetic scene (fusion_explorer.scenes.load_scene)
UPLOADS = "uploads"
#: at most this many scenes of one root are listed
MAX_LISTED_SCENES = 500


def inside(path: str | os.PathLike, roots: list[Path]) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside one of ``roots``."""
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(real == r or r in real.parents for r in (Path(r).resolve() for r in roots))


class DataPanel(Panel):
    """Scene + degradation controls and the three true-colour views with a band slider in nm."""

    name = "data"
    title = "Data"
    hint = "scene and degradation"
    observes = {"_on_problem": ("problem",), "_draw_band": ("band",), "_draw_pins": ("pins", "cursor", "region")}

    def __init__(self, state: AppState, data_dir: str | Path | None = None, defer: bool = False, **context):
        """``data_dir``: an extra data root (for callers in Python; the page cannot add one). ``defer``: list the
        SRFs without colour-science's cameras until the first :meth:`load` (the App loads its scene after the
        page's first draw); their names are a constant (:func:`~fusion_explorer.srf.srf_names`), free to list."""
        from ..config import data_roots
        from ..physics import PROTOCOLS

        super().__init__(state)
        self._load_lock = threading.RLock()
        #: ``(scene key, cube)`` read ahead by :meth:`prefetch`, used once by :meth:`load`
        self._prefetched: tuple[str, Any] | None = None
        #: the dropdown still lacks the cameras (``defer``): :meth:`load` adds them
        self._srf_short = defer
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
        self.srf = W.Dropdown(options=srf_names(cameras=not defer), value="nikon-d700", description="SRF",
                              layout=W.Layout(width="300px"))
        self.snr = W.BoundedFloatText(value=0, min=0, max=100, step=5, description="SNR (dB)",
                                      tooltip="signal-to-noise ratio of both images; 0 = no noise",
                                      layout=W.Layout(width="170px"))
        self.pair_msi = W.Dropdown(options=[(NO_PAIR_LABEL, "")], value="", description="HR-MSI",
                                   tooltip="a real pair: the scene above is the LR-HSI and this file its HR-MSI",
                                   layout=W.Layout(width="480px"))
        self.pair_msi.add_class("fe-pair-msi")
        self.apply = W.Button(description="Load scene", button_style="primary", icon="check",
                              layout=W.Layout(width="140px"))
        self.message = W.HTML()
        self.summary = W.HTML()
        #: the degradation section: classic protocols or a zoo case, and the blind estimate
        self.degradation = DegradationControls(self.ratio, self.srf, [self.protocol, self.sigma, self.snr],
                                               problem=lambda: state.problem)
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
        self.degradation.preset.observe(self._on_protocol, "value")
        self.scene.observe(self._on_pair_choice, "value")
        self.pair_msi.observe(self._on_pair_choice, "value")
        self.apply.on_click(lambda _: self.load())
        self.band.observe(lambda ch: setattr(state, "band", int(ch["new"])), "value")
        self._on_protocol()
        self.refresh_scenes()
        self._on_pair_choice()
        controls = W.VBox([
            self.scene,
            W.HBox([self.root, self.rescan]),
            W.HBox([self.upload, self.upload_msg], layout=W.Layout(align_items="center")),
            self.pair_msi,
            W.HBox([self.protocol, self.crop]),
            self.degradation.widget,
            W.HBox([self.srf, self.ratio]),
            W.HBox([self.snr, self.sigma], layout=W.Layout(margin="0 0 0 130px")),
            W.HBox([self.apply], layout=W.Layout(margin="4px 0 0 90px")),
            self.message,
        ], layout=W.Layout(width="500px", margin="0 16px 0 0"))
        views = W.HBox([self.views["truth"], self.views["lr"], self.views["msi"],
                        W.VBox([self.views["band"], self.band])], layout=W.Layout(flex_flow="row wrap"))
        self.widget = W.VBox([
            W.HBox([controls, W.VBox([self.summary, self.srf_plot, self.degradation.estimate_box])],
                   layout=W.Layout(flex_flow="row wrap")),
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
        msi_options = [(NO_PAIR_LABEL, ""), *[(f"uploaded: {p.name}", str(p)) for p in self._uploaded()]]
        if getattr(self, "pair_msi", None) is not None:
            kept = self.pair_msi.value
            self.pair_msi.options = msi_options
            self.pair_msi.value = kept if kept in [v for _, v in msi_options] else ""
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
        """Keep an upload that reads as a cube with band centres; refuse (and delete) anything else, in one line."""
        from ..scenes import load_scene

        scene = next((p for p in saved if p.suffix.lower() not in (".img", ".dat", ".raw", ".bsq", ".bil", ".bip")),
                     saved[0])
        try:
            cube = load_scene(scene, clip_negative=True)
            reason = None if "wavelength" in cube.coords else (
                f"its {cube.sizes['band']} bands have no centre wavelengths, which the dashboard needs to draw true "
                "colour and to simulate the MSI through a sensor response; add a 'wavelength' coordinate in nm "
                "(NetCDF), 'wavelength = {...}' in the ENVI header, or fuse it with the command line and an SRF "
                "matrix (fusion-explorer fuse --srf SRF.nc)")
        except Exception as e:  # noqa: BLE001 - shown to the user
            reason = str(e).replace(f"{scene}: ", "").replace(str(scene), scene.name)
        if reason is not None:
            for p in saved:
                p.unlink(missing_ok=True)
            return _error(f"could not use {scene.name}: {reason}" if "centre wavelengths" in reason
                          else f"could not read {scene.name}: {reason}")
        self.refresh_scenes()
        self.scene.value = str(scene)
        return (f"<span style='color:#2a7'>uploaded {html.escape(scene.name)}: {cube.sizes['band']} bands, "
                f"{cube.sizes['y']}x{cube.sizes['x']}</span> — press <b>Load scene</b>")

    def _on_protocol(self, _=None) -> None:
        from ..physics import PROTOCOLS

        if self.degradation.zoo and not self._real_choice():  # the zoo's controls set the ratio
            self.ratio.disabled = False
            return
        custom = self.protocol.value == "custom"
        for w in (self.ratio, self.sigma, self.snr):
            w.disabled = not custom
        if not custom:
            p = PROTOCOLS[self.protocol.value]
            self.ratio.value, self.sigma.value, self.snr.value = p.ratio, p.sigma, p.snr_db or 0

    def _on_pair_choice(self, _=None) -> None:
        """A real pair carries its own MSI: hide the simulation controls (the protocol's ratio and PSF σ stay: they
        make the Wald view of a same-resolution pair)."""
        real = self._real_choice()
        self.degradation.set_pair(real)
        for w in (self.protocol, self.sigma):
            w.layout.display = None if real or not self.degradation.zoo else "none"
        self.snr.layout.display = "none" if real or self.degradation.zoo else None
        self._on_protocol()

    def _real_choice(self) -> bool:
        """Whether the chosen scene is a real pair (an HR-MSI chosen, or a known real-pair file)."""
        return bool(self.pair_msi.value) or _is_real_pair(self.scene.value or "")

    # ------------------------------------------------------------------ load
    def prefetch(self) -> None:
        """The slow reads of a first page, done ahead (the App runs this in a thread while the page loads): the
        chosen scene's cube (the synthetic scene imports colour-science for its reflectances), kept for
        :meth:`load`, which puts it on the page. No widget changes here: a page still setting up its widgets
        could miss them."""
        from ..scenes import load_scene

        key = self.scene.value or ""
        if key.startswith(DEFAULT) and not self.pair_msi.value:
            self._prefetched = (key, load_scene(key, clip_negative=True))

    def _list_all_srfs(self) -> None:
        """Give the SRF dropdown colour-science's cameras too (once; see ``defer``), keeping its choice."""
        if not self._srf_short:
            return
        full = srf_names()
        names = [*full, *(o for o in self.srf.options if o not in full)]  # + the Gaussian-bands choice
        self._srf_short = False
        if list(self.srf.options) != names:
            with self.srf.hold_sync():
                value = self.srf.value
                self.srf.options = names
                self.srf.value = value

    def _read(self, key: str) -> Any:
        """The cube of ``key``: the one :meth:`prefetch` read for it (once), else read now."""
        from ..scenes import load_scene

        ahead, self._prefetched = self._prefetched, None
        if ahead is not None and ahead[0] == key:
            return ahead[1]
        return load_scene(key, clip_negative=True)

    def load(self) -> bool:
        """Read the chosen scene, simulate the sensor pair and publish it on the state."""
        with self._load_lock:
            self._list_all_srfs()
            return self._load()

    def _load(self) -> bool:
        from ..physics import PROTOCOLS, make_protocol
        from ..problem import simulate
        from ..scenes import crop_to_ratio, prepare, reference

        self.message.value = "<i>loading…</i>"
        key = self.scene.value or ""
        if not key.startswith(DEFAULT) and not inside(key, self.allowed_roots):
            self.message.value = _error(f"refused {Path(key).name}: it is not inside a data folder of this "
                                        "dashboard or this session's uploads")
            return False
        msi_key = self.pair_msi.value or ""
        if msi_key or _is_real_pair(key):
            return self._load_pair(key, msi_key)
        try:
            cube = self._read(key)
            deg, degraded = self.degradation, None
            if deg.zoo:
                proto = deg.case()  # only its ratio is read below
                truth = prepare(cube, proto.ratio, self.crop.value or None)
                degraded, problem = realise_with_truth(truth, proto)
            else:
                srf = deg.srf_choice()
                if self.protocol.value == "custom":
                    proto = make_protocol(self.ratio.value, self.sigma.value, snr_db=self.snr.value or None,
                                          srf="nikon-d700" if srf.startswith("gaussian:") else srf)
                else:
                    proto = PROTOCOLS[self.protocol.value]
                truth = prepare(cube, proto.ratio, self.crop.value or None)
                problem = simulate(truth, proto, srf=make_srf(srf, truth.coords["wavelength"].values)
                                   if srf.startswith("gaussian:") else srf)
            ground = reference(truth)  # Samson's / Jasper Ridge's endmembers and abundances, cut to the crop
            if ground is not None:
                vmax = float(np.nanmax(crop_to_ratio(cube, proto.ratio, self.crop.value or None).values))
                if vmax > 1.0 and ground.endmembers.max() > 1.0:  # scaled as prepare() scaled the cube
                    ground.endmembers = ground.endmembers / vmax
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.message.value = _error(f"{type(e).__name__}: {e}")
            return False
        self.message.value = ""
        deg.degraded = degraded
        self.state.ground_truth = ground
        self.state.reference_endmembers = None if ground is None else ground.endmembers
        self.state.set_problem(truth, problem)
        return True

    def _load_pair(self, key: str, msi_key: str) -> bool:
        """A real pair: the Paris Hyperion/ALI file, or the chosen scene (LR-HSI) with an uploaded HR-MSI.
        No truth. A pair stored at one resolution is shown in the Wald view (:mod:`.no_reference`): the HSI
        blurred (the protocol's PSF σ) and decimated by the ratio of the controls, the MSI as stored, the stored
        HSI kept as a reference that is never scored against."""
        from ..scenes import load_pair, load_scene
        from .no_reference import pair_problem, wald_problem

        if msi_key and not inside(msi_key, self.allowed_roots):
            self.message.value = _error(f"refused {Path(msi_key).name}: it is not inside a data folder of this "
                                        "dashboard or this session's uploads")
            return False
        try:
            if msi_key:
                if key.startswith(DEFAULT):
                    raise ValueError("pick the LR-HSI of the pair as the scene (the default scene is synthetic)")
                lr, msi = load_scene(key), load_scene(msi_key)
                lr.attrs.setdefault("scene", Path(key).name)
                note = f"uploaded pair: LR-HSI {Path(key).name}, HR-MSI {Path(msi_key).name}; no ground truth."
                same = (lr.sizes["y"], lr.sizes["x"]) == (msi.sizes["y"], msi.sizes["x"])
            else:
                pair = load_pair(key)
                lr, msi, note, same = pair.lr_hsi, pair.hr_msi, pair.note, pair.ratio == 1
            real = (wald_problem(lr, msi, self.ratio.value, self.sigma.value, note) if same
                    else pair_problem(lr, msi, note))
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.message.value = _error(f"{type(e).__name__}: {e}")
            return False
        self.message.value = ""
        self.degradation.degraded = None
        self.state.ground_truth = self.state.reference_endmembers = None
        self.pair_note = real.note
        self.state.set_problem(None, real.problem, reference=real.reference)
        return True

    # ------------------------------------------------------------------ drawing
    def _on_problem(self, _=None) -> None:
        st = self.state
        pb, truth = st.problem, st.truth
        if pb is None:
            return
        self.degradation.clear_estimate()
        if truth is None:
            self._draw_pair()
            return
        wl = st.wavelength
        (h, w), (lh, lw) = pb.hr_size, pb.lr_size
        d = self.degradation.degraded
        d = d if d is not None and d.extras.get("shown") is pb else None
        srf = pb.srf if d is None else d.srf  # a hidden SRF is drawn (the methods do not get it)
        how = (f"{html.escape(d.case.name)}: {html.escape(describe(d.case))}" if d is not None
               else f"PSF σ {pb.protocol.sigma:g} px, SNR {pb.protocol.snr_db or '∞'} dB" if pb.protocol is not None
               else "")
        self.summary.value = (
            f"<div style='line-height:1.5;max-width:560px'><b>{truth.attrs.get('scene', 'scene')}</b><br>"
            f"HR truth {h}x{w}x{pb.hsi_bands}, {wl.min():.0f}–{wl.max():.0f} nm<br>"
            f"LR-HSI {lh}x{lw}x{pb.hsi_bands} (ratio {pb.ratio}{', ' if how else ''}"
            f"<span class='fe-case'>{how}</span>)<br>"
            f"HR-MSI {h}x{w}x{pb.msi_bands} through <b>{srf.name}</b>"
            f"{'' if pb.srf is not None else ' (hidden from methods)'}</div>")
        m = np.asarray(srf.matrix)
        names = list(srf.band_names)
        centres = band_centres(m, wl)  # each band drawn in the colour of its wavelength, not of its name
        self.srf_plot.update(
            [{"type": "scatter", "mode": "lines+markers", "x": wl, "y": m[i],
              "name": f"{names[i]} ({centres[i]:.0f} nm)",
              "line": {"color": wavelength_colour(centres[i])}, "marker": {"size": 4}} for i in range(m.shape[0])],
            replace=True)  # a real pair's title ("estimated from the two inputs") must not stay
        px = 300
        pins = pins_layout(st.pins, st.cursor, (h, w), st.region)
        self.views["truth"].update([image_trace(*rgb_display(truth.values, wl), "truth")],
                                   {**image_layout("HR truth (true colour, CIE D65)", (h, w), px), **pins})
        self._draw_inputs(centres, f"HR-MSI ({srf.name})", pins, px)

    def _draw_pair(self) -> None:
        """A real pair: what it is, why there is no truth, the Wald view when the pair is same-resolution, the SRF
        estimated from the inputs, and the reference (labelled as such), LR-HSI and HR-MSI."""
        st = self.state
        pb, ref = st.problem, st.reference
        wl = st.wavelength
        (h, w), (lh, lw) = pb.hr_size, pb.lr_size
        wald = pb.attrs.get("wald_ratio")
        how = (f"<b>Same resolution as stored</b> (both {h if ref is None else ref.sizes['y']} px a side), so not a "
               f"fusion problem as it is. Shown in the <b>Wald view</b>: the LR-HSI is the stored HSI blurred "
               f"(Gaussian PSF σ {pb.sensors.sigma:g} px) and decimated by {wald} (the ratio control); the HR-MSI is "
               "the stored MSI, untouched. The stored HSI is shown as the <b>Wald reference</b>: the same sensor's "
               "image at the MSI's resolution, not a ground truth, so nothing is scored against it."
               if wald else f"Ratio {pb.ratio} from the sizes; PSF and SRF unknown (blind methods estimate them).")
        self.summary.value = (
            f"<div class='fe-pair-summary' style='line-height:1.5;max-width:560px'><b>Real pair, no ground truth: "
            f"{html.escape(str(pb.name))}</b><br>LR-HSI {lh}x{lw}x{pb.hsi_bands}, {wl.min():.0f}–{wl.max():.0f} nm"
            f"<br>HR-MSI {h}x{w}x{pb.msi_bands}<br><small>{how}<br>{html.escape(getattr(self, 'pair_note', ''))}"
            "</small></div>")
        m, _, srf_how = st.diagnostics.srf()
        if "wavelength" in pb.hr_msi.coords:  # the MSI's nominal band centres (ALI's), else the estimated SRF's
            centres = np.asarray(pb.hr_msi.coords["wavelength"].values, dtype=float)
        else:
            centres = band_centres(m, wl) if np.any(m > 0) else np.full(m.shape[0], float(wl.mean()))
        names = [str(v) for v in pb.hr_msi.coords["band_name"].values] if "band_name" in pb.hr_msi.coords else [
            f"MSI {i + 1}" for i in range(m.shape[0])]
        self.srf_plot.update(
            [{"type": "scatter", "mode": "lines+markers", "x": wl, "y": m[i],
              "name": f"{names[i]} ({centres[i]:.0f} nm)",
              "line": {"color": wavelength_colour(centres[i])}, "marker": {"size": 4}} for i in range(m.shape[0])],
            {"title": {"text": f"SRF: {srf_how}", "font": {"size": 12}, "x": 0.02}}, replace=True)
        px = 300
        pins = pins_layout(st.pins, st.cursor, (h, w), st.region)
        if ref is not None:
            self.views["truth"].update([image_trace(*rgb_display(ref.values, wl), "Wald reference")],
                                       {**image_layout("Wald reference: stored HSI (not truth)", (h, w), px), **pins})
        else:
            self.views["truth"].clear(image_layout("no ground truth (a real pair)", (h, w), px))
        self._draw_inputs(centres, "HR-MSI", pins, px)

    def _draw_inputs(self, centres: np.ndarray, msi_title: str, pins: dict, px: int) -> None:
        """The LR-HSI and HR-MSI views and the band list, for a simulated scene and a real pair alike."""
        st = self.state
        pb, wl = st.problem, st.wavelength
        (h, w), (lh, lw) = pb.hr_size, pb.lr_size
        self.views["lr"].update(
            [image_trace(*rgb_display(pb.lr_hsi.values, wl, pb.ratio), "LR-HSI")],
            {**image_layout(f"LR-HSI {lh}x{lw} (true colour)", (h, w), px), **pins})
        f = display_factor((h, w))
        msi = pb.hr_msi if f == 1 else pb.hr_msi.coarsen(y=f, x=f, boundary="trim").mean()
        img, what = msi_rgb(msi, centres)
        self.views["msi"].update([image_trace(img, f, "HR-MSI")],
                                 {**image_layout(f"{msi_title}, {what}", (h, w), px), **pins})
        opts = [(f"{v:.0f} nm", i) for i, v in enumerate(wl)]
        self.band.options = opts
        self.band.value = min(st.band, len(opts) - 1)
        self._draw_band()

    def _draw_band(self, _=None) -> None:
        st = self.state
        if st.problem is None:
            return
        b = min(st.band, st.problem.hsi_bands - 1)
        wl = st.wavelength[b]
        h, w = st.hr_size
        if st.truth is not None:
            img, what = grey_display(st.truth.values[b]), "HR truth"
        elif st.reference is not None:
            img, what = grey_display(st.reference.values[b]), "Wald reference"
        else:
            r = st.problem.ratio
            lr = np.asarray(st.problem.lr_hsi.values[b])
            img, what = grey_display(np.repeat(np.repeat(lr, r, axis=0), r, axis=1)[:h, :w]), "LR-HSI"
        self.views["band"].update([image_trace(*img, "band")],
                                  {**image_layout(f"{what}, band {b + 1} at {wl:.0f} nm", (h, w), 300),
                                   **pins_layout(st.pins, st.cursor, (h, w), st.region)})

    def _draw_pins(self, _=None) -> None:
        if self.state.problem is None:
            return
        pins = pins_layout(self.state.pins, self.state.cursor, self.state.hr_size, self.state.region)
        for fig in self.views.values():
            if fig.data:
                fig.update(layout=pins)

    def _on_click(self, ev: dict) -> None:
        self.state.click(ev)


def _is_real_pair(key: str) -> bool:
    """Whether a scene key is a known real-pair file (:func:`fusion_explorer.scenes.load_pair` reads it)."""
    name = Path(key).name.lower()
    return not key.startswith(DEFAULT) and name.endswith(".mat") and "hyperion" in name


def _root_label(root: Path) -> str:
    """How a data root is shown: its last two path components (the page needs no full server path)."""
    return f"data: …/{root.parent.name}/{root.name}" if root.parent.name else f"data: {root}"


def _error(text: str) -> str:
    return f"<div style='color:#b00020;white-space:pre-wrap'>⚠ {html.escape(text)}</div>"
