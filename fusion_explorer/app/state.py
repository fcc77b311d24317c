"""The one state object every panel observes, and the runs it holds. No widgets here.

``AppState`` (traitlets): ``truth`` and ``problem`` (the scene and its simulated sensor pair),
``runs`` (name -> :class:`Run`), ``selected`` (the run the explorer shows), ``step`` (its trace
step; -1 = the final result), ``band``, ``pins`` (pinned HR pixels ``(y, x)``), ``cursor`` (the
last clicked pixel), ``endmember`` (highlighted endmember, -1 = none), ``status`` and ``scored``
(bumped when a run's scores arrive: runs are shown first and scored in the background). Panels set
these and observe them; they never talk to each other.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import traitlets as T
import xarray as xr

#: one colour per pin / endmember, used everywhere (plotly's D3 palette)
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# ---------------------------------------------------------------------- per-session directories
def sessions_root() -> Path:
    """``<tmp>/fusion-explorer-<uid>``: the parent of every session's private directory (mode 0700).

    It is not a data root, so no session can list it. Refuses a symlink or a folder owned by another user."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    root = Path(tempfile.gettempdir()) / f"fusion-explorer-{uid if uid is not None else 'user'}"
    root.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(root)
    if not os.path.isdir(root) or os.path.islink(root) or (uid is not None and st.st_uid != uid):
        raise PermissionError(f"{root} is not a private directory of this user; remove it or set TMPDIR")
    if st.st_mode & 0o077:
        os.chmod(root, 0o700)
    return root


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def sweep_stale_sessions(root: Path | None = None) -> list[Path]:
    """Delete session directories whose process is gone (a kernel killed before its exit handlers ran)."""
    root = root or sessions_root()
    removed = []
    for d in root.glob("session-*-*"):
        try:
            pid = int(d.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def new_session_dir() -> Path:
    """A fresh private directory (mode 0700) for one dashboard session, named after this process."""
    root = sessions_root()
    sweep_stale_sessions(root)
    return Path(tempfile.mkdtemp(prefix=f"session-{os.getpid()}-", dir=root))


@dataclass
class Run:
    """One finished fusion: the result, its scores and per-step scores of its trace."""

    name: str
    result: Any  # FusionResult
    metrics: dict = field(default_factory=dict)
    step_metrics: list[dict] = field(default_factory=list)
    #: True once scoring finished (metrics and step scores filled; see ``run_panel.score``)
    scored: bool = False
    #: why scoring failed, if it did
    score_error: str = ""
    #: a real pair's run: which PSF and SRF its no-reference residuals went through
    diagnostics_how: str = ""
    _cache: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def trace(self) -> list[dict]:
        return self.result.trace or []

    @property
    def iterative(self) -> bool:
        return len(self.trace) > 1

    def fused(self, step: int = -1) -> np.ndarray:
        """The fused cube ``(bands, Y, X)`` float32 at a trace step (-1 or no trace: the final result)."""
        from ..methods import trace_fused

        if step < 0 or not self.trace:
            key = "final"
            if key not in self._cache:
                self._cache[key] = np.asarray(self.result.fused.values, dtype=np.float32)
            return self._cache[key]
        step = min(step, len(self.trace) - 1)
        key = ("step", step)
        with self._lock:  # the panels' warming thread and the widget thread share this cache
            if key not in self._cache:
                # keep at most a few reconstructed steps: a 512x512x31 cube is 32 MB
                for k in [k for k in self._cache if isinstance(k, tuple)][:-2]:
                    del self._cache[k]
                self._cache[key] = trace_fused(self.trace[step])
            return self._cache[key]

    def spectrum(self, y: int, x: int, step: int = -1) -> np.ndarray:
        """The fused spectrum at HR pixel ``(y, x)``; unmixing steps cost only ``W @ H[:, y, x]``."""
        if 0 <= step < len(self.trace) and ("step", min(step, len(self.trace) - 1)) not in self._cache:
            s = self.trace[min(step, len(self.trace) - 1)]
            if "endmembers" in s and "abundances" in s and "fused" not in s:
                return np.asarray(s["endmembers"], np.float32) @ np.asarray(s["abundances"], np.float32)[:, y, x]
            if "fused" in s:
                return np.asarray(s["fused"], np.float32)[:, y, x]
        return self.fused(step)[:, y, x]


class AppState(T.HasTraits):
    """What every panel observes (see the module docstring)."""

    truth = T.Any(None, allow_none=True)
    problem = T.Any(None, allow_none=True)
    runs = T.Dict()
    selected = T.Unicode("")
    step = T.Int(-1)
    band = T.Int(0)
    pins = T.List()
    cursor = T.Any(None, allow_none=True)
    #: a selected box of HR pixels ``(y0, y1, x0, x1)`` (end exclusive), or None
    region = T.Any(None, allow_none=True)  # a box (y0, y1, x0, x1) or a regions.LassoRegion
    endmember = T.Int(-1)
    status = T.Unicode("")
    busy = T.Bool(False)
    #: bumped whenever a run's scores arrive (they are computed after the run is shown)
    scored = T.Int(0)

    def __init__(self, session_dir: str | Path | None = None, **kwargs: Any) -> None:
        """``session_dir``: where uploads and exports go. None (the dashboard): a private directory
        (:func:`new_session_dir`, mode 0700) deleted with this state, at the kernel's exit or on a culled
        kernel's shutdown; a directory given here belongs to the caller and is kept."""
        super().__init__(**kwargs)
        if session_dir is None:
            session_dir = new_session_dir()
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(session_dir), ignore_errors=True)
        self.session_dir = Path(session_dir)
        #: ground-truth endmembers ``(bands, p)`` of the scene when its file has them (Samson, Jasper Ridge)
        self.reference_endmembers: np.ndarray | None = None
        #: the scene's unmixing ground truth (:class:`fusion_explorer.scenes.GroundTruth`: endmembers, abundances
        #: on the shown crop, names) when its file has one
        self.ground_truth: Any = None
        #: a real pair's Wald reference (the stored HSI at the MSI's resolution, not a truth), or None
        self.reference: xr.DataArray | None = None
        self._diagnostics: Any = None
        self.session_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def uploads_dir(self) -> Path:
        """This session's uploads (mode 0700), created on first use."""
        path = self.session_dir / "uploads"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    # ------------------------------------------------------------------ scene and problem
    def set_problem(self, truth: xr.DataArray | None, problem: Any, reference: xr.DataArray | None = None) -> None:
        """A new scene/degradation: forget runs, pins and selection. ``truth`` None: a real pair (no truth;
        runs get no-reference diagnostics, :attr:`diagnostics`); ``reference``: its Wald reference, if any."""
        self.reference = reference
        self._diagnostics = None
        bands = (truth if truth is not None else problem.lr_hsi).sizes["band"]
        with self.hold_trait_notifications():
            self.runs = {}
            self.selected = ""
            self.step = -1
            self.pins = []
            self.cursor = None
            self.region = None
            self.endmember = -1
            self.truth = truth
            self.band = min(self.band, bands - 1) if self.band else bands // 2
            self.problem = problem

    @property
    def real_pair(self) -> bool:
        """Whether the shown problem is a real pair without truth (no metrics against a truth)."""
        return self.problem is not None and self.truth is None

    @property
    def diagnostics(self) -> Any:
        """The no-reference diagnostics of the current problem (:class:`.no_reference.Diagnostics`), made once."""
        from .no_reference import Diagnostics

        d = self._diagnostics
        if d is None or d.problem is not self.problem:
            d = self._diagnostics = Diagnostics(self.problem)
        return d

    @property
    def wavelength(self) -> np.ndarray:
        wl = self.problem.wavelength if self.problem is not None else None
        if wl is None:
            n = self.problem.hsi_bands if self.problem is not None else (
                self.truth.sizes["band"] if self.truth is not None else 0)
            return np.arange(n, dtype=float)
        return np.asarray(wl, dtype=float)

    @property
    def hr_size(self) -> tuple[int, int]:
        return self.problem.hr_size

    # ------------------------------------------------------------------ runs
    def add_run(self, run: Run) -> None:
        runs = dict(self.runs)
        runs[run.name] = run
        with self.hold_trait_notifications():
            self.runs = runs
            self.step = -1
            self.selected = run.name

    @property
    def run(self) -> Run | None:
        return self.runs.get(self.selected)

    def click(self, event: dict) -> None:
        """Point the cursor at a clicked HR pixel (``event`` has plot coordinates ``y``, ``x``)."""
        if self.problem is None:
            return
        h, w = self.hr_size
        y, x = int(round(float(event["y"]))), int(round(float(event["x"])))
        self.cursor = (min(max(y, 0), h - 1), min(max(x, 0), w - 1))

    def lr_pixel(self, y: int, x: int) -> tuple[int, int]:
        """The LR pixel whose block holds HR pixel ``(y, x)``."""
        r = self.problem.ratio
        h, w = self.problem.lr_size
        return min(y // r, h - 1), min(x // r, w - 1)

    def spectra(self, y: int, x: int) -> dict[str, np.ndarray]:
        """Spectra at HR pixel ``(y, x)``: truth, LR-HSI (its LR pixel), every run (the selected one at ``step``)."""
        out: dict[str, np.ndarray] = {}
        if self.truth is not None:
            out["truth"] = np.asarray(self.truth.values[:, y, x], dtype=np.float32)
        if self.reference is not None:
            out["Wald reference"] = np.asarray(self.reference.values[:, y, x], dtype=np.float32)
        ly, lx = self.lr_pixel(y, x)
        out["LR-HSI"] = np.asarray(self.problem.lr_hsi.values[:, ly, lx], dtype=np.float32)
        for name, run in self.runs.items():
            step = self.step if name == self.selected else -1
            out[name] = run.spectrum(y, x, step)
        return out

    def select(self, event: dict) -> None:
        """Set :attr:`region` from a drawn box (plot coordinates ``x = [a, b]``, ``y = [c, d]``), clamped to the
        image; a box that covers no pixel centre clears it."""
        if self.problem is None:
            return
        h, w = self.hr_size
        xs = sorted(float(v) for v in event["x"])
        ys = sorted(float(v) for v in event["y"])
        x0, x1 = max(int(np.ceil(xs[0])), 0), min(int(np.floor(xs[1])) + 1, w)
        y0, y1 = max(int(np.ceil(ys[0])), 0), min(int(np.floor(ys[1])) + 1, h)
        self.region = (y0, y1, x0, x1) if x1 > x0 and y1 > y0 else None

    def region_spectra(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Mean and standard deviation over :attr:`region` (a box or a lasso) per band: truth, LR-HSI
        (the LR pixels whose blocks the region touches), every run (the selected one at ``step``);
        see :func:`.regions.region_spectra`."""
        from .regions import region_spectra

        return region_spectra(self)

    def spectra_csv(self) -> str:
        """All pinned pixels' spectra as CSV: ``pin, y, x, source, <wavelength columns in nm>``."""
        wl = self.wavelength
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["pin", "y", "x", "source", *[f"{v:g}nm" for v in wl]])
        pixels = list(self.pins) or ([tuple(self.cursor)] if self.cursor is not None else [])
        for i, (y, x) in enumerate(pixels):
            for source, spec in self.spectra(int(y), int(x)).items():
                w.writerow([i + 1, y, x, source, *[f"{v:.6g}" for v in spec]])
        return buf.getvalue()

    def toggle_pin(self, y: int, x: int) -> None:
        pins = [tuple(p) for p in self.pins]
        pins.remove((y, x)) if (y, x) in pins else pins.append((y, x))
        self.pins = pins
