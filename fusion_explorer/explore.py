"""Inspection and teaching helpers behind ``notebooks/`` and the README figures (``docs/make_figures.py``).

* data: :func:`nominal_wavelengths`, :func:`open_scene` (published files that lack band centres),
  :func:`unmixing_ground_truth` (Samson, Jasper Ridge), :func:`value_summary`, :func:`pick_pixels`;
* noise: :func:`noise_sigma`, per band, by two standard estimators (wavelet MAD; HySime regression);
* unmixing: :func:`spectral_angles`, :func:`match_endmembers` (Hungarian matching on spectral angle),
  :func:`update_comparison` (why multiplicative updates stay non-negative), :func:`coupling_report`;
* benchmark: :func:`benchmark_registered` (every registered method, skipping those that cannot run),
  :func:`read_results_md`, :func:`rows_frame`;
* figures: ``plot_*`` functions return a :class:`matplotlib.figure.Figure` (no pyplot state, so a
  notebook shows each once and a script saves it); :func:`trace_widget` is the interactive view.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .cube import wavelengths
from .errors import FusionExplorerError

__all__ = [
    "BenchReport",
    "EndmemberMatch",
    "benchmark_registered",
    "bench_options",
    "coupling_report",
    "layer_table",
    "match_endmembers",
    "noise_sigma",
    "nominal_wavelengths",
    "open_scene",
    "pick_pixels",
    "read_results_md",
    "rows_frame",
    "scale_endmembers",
    "spectral_angles",
    "unmixing_ground_truth",
    "update_comparison",
    "value_summary",
]

#: ``Φ⁻¹(3/4)``: the median of ``|N(0, 1)|``, which turns a median absolute deviation into a sigma.
MAD_TO_SIGMA = 0.6744897501960817

# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def _hyperion_centres() -> np.ndarray:
    """Nominal centres (nm) of Hyperion's 242 bands: VNIR 1–70 from 355.6 nm and SWIR 71–242 from
    851.9 nm, both about 10.1 nm apart (USGS EO-1 Hyperion band table, rounded)."""
    return np.concatenate([355.59 + 10.175 * np.arange(70), 851.92 + 10.09 * np.arange(172)])


def nominal_wavelengths(path: str | os.PathLike) -> tuple[np.ndarray, str] | None:
    """Band centres (nm) and a note for the published files of ``../shared/data/remote`` that store none.

    Samson: 156 bands evenly spaced over 401–889 nm. Jasper Ridge: AVIRIS's 224 bands evenly spaced over
    380–2500 nm, of which the file's ``SlectBands`` (1-based) are kept. Pavia: the centres file beside it
    (``paviaU_band_centers_103.mat``). Paris Hyperion: the nominal Hyperion table at ``non_del_bands``.
    These are nominal (the files do not carry calibration); other files: ``None``.
    """
    import scipy.io

    p = Path(path)
    name = p.name.lower()
    if name.startswith("samson"):
        return np.linspace(401.0, 889.0, 156), "nominal: 156 bands evenly spaced over 401–889 nm"
    if name.startswith("jasperridge"):
        sel = scipy.io.loadmat(p, variable_names=["SlectBands"])["SlectBands"].ravel().astype(int)
        return np.linspace(380.0, 2500.0, 224)[sel - 1], "nominal: AVIRIS 224 bands over 380–2500 nm, SlectBands kept"
    if name.startswith("paviau_subimg"):
        centres = p.with_name("paviaU_band_centers_103.mat")
        if centres.is_file():
            return scipy.io.loadmat(centres)["paviaU_spec"].ravel().astype(float), f"from {centres.name}"
        return None
    if "hyperion" in name:
        sel = scipy.io.loadmat(p, variable_names=["non_del_bands"])["non_del_bands"].ravel().astype(int)
        return _hyperion_centres()[sel - 1], "nominal Hyperion band centres at non_del_bands (about ±5 nm)"
    return None


def open_scene(path: str | os.PathLike) -> xr.DataArray:
    """:func:`~fusion_explorer.io.open_cube`, adding :func:`nominal_wavelengths` when the file stores none
    (noted in ``attrs['wavelength_note']``)."""
    from .io import open_cube

    hint = nominal_wavelengths(path) if Path(path).suffix.lower() == ".mat" else None
    if hint is None:
        cube = open_cube(path)
    else:
        cube = open_cube(path, wavelength=hint[0])
        cube.attrs["wavelength_note"] = hint[1]
    cube.attrs.setdefault("scene", Path(path).name)
    return cube


def unmixing_ground_truth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(endmembers (bands, p), abundances (p, y, x), names)`` stored in Samson or Jasper Ridge.

    Samson keeps ``A`` as ``(y, x, p)``; Jasper Ridge as ``(p, pixels)`` in MATLAB column order of an
    ``nRow x nCol`` image (the same order as its ``Y``). Names come from the ``cood`` variable.
    """
    import scipy.io

    m = scipy.io.loadmat(Path(path))
    if "M" not in m or "A" not in m:
        raise FusionExplorerError(f"{path}: no unmixing ground truth (variables M and A)")
    endmembers = np.asarray(m["M"], dtype=np.float64)
    a = np.asarray(m["A"], dtype=np.float64)
    p = endmembers.shape[1]
    if a.ndim == 3:
        abundances = a.transpose(2, 0, 1) if a.shape[2] == p else a
    else:
        rows, cols = int(m["nRow"].ravel()[0]), int(m["nCol"].ravel()[0])
        abundances = a.reshape(p, cols, rows).transpose(0, 2, 1)
    names = [str(np.ravel(c)[0]).split("-", 1)[-1] for c in np.ravel(m["cood"])] if "cood" in m else []
    if len(names) != p:
        names = [f"endmember {k + 1}" for k in range(p)]
    return endmembers, np.ascontiguousarray(abundances), names


def value_summary(cubes: Mapping[str, xr.DataArray]) -> Any:
    """One row per cube: sensor, shape, wavelength range and spacing, value range and percentiles."""
    import pandas as pd

    records = []
    for name, cube in cubes.items():
        v = np.asarray(cube.values, dtype=np.float64)
        wl = wavelengths(cube)
        p1, p99 = np.percentile(v, [1, 99])
        records.append(
            {
                "scene": name,
                "sensor": cube.attrs.get("sensor", ""),
                "bands": int(cube.sizes["band"]),
                "y x": f"{cube.sizes['y']} x {cube.sizes['x']}",
                "nm from": None if wl is None else round(float(wl.min()), 1),
                "nm to": None if wl is None else round(float(wl.max()), 1),
                "median step nm": None if wl is None or wl.size < 2 else round(float(np.median(np.diff(wl))), 2),
                "min": float(v.min()),
                "p1": float(p1),
                "mean": float(v.mean()),
                "p99": float(p99),
                "max": float(v.max()),
            }
        )
    return pd.DataFrame.from_records(records).set_index("scene")


def pick_pixels(cube: xr.DataArray, n: int = 4, stride: int | None = None) -> list[tuple[int, int]]:
    """``n`` pixels ``(y, x)`` with spectra as different as possible: the brightest, then repeatedly the
    one whose smallest spectral angle to those already picked is largest (on a ``stride`` grid)."""
    v = np.asarray(cube.values, dtype=np.float64)
    _, h, w = v.shape
    s = stride or max(1, int(np.sqrt(h * w / 4096)))
    sub = v[:, ::s, ::s].reshape(v.shape[0], -1)
    norms = np.linalg.norm(sub, axis=0)
    ok = norms > np.percentile(norms, 5)
    unit = sub / np.maximum(norms, 1e-12)
    chosen = [int(np.argmax(norms))]
    for _ in range(1, n):
        cos = np.clip(unit[:, chosen].T @ unit, -1, 1).max(axis=0)
        cos[~ok] = 1.0
        chosen.append(int(np.argmin(cos)))
    ws = (w + s - 1) // s
    return [(int(i // ws) * s, int(i % ws) * s) for i in chosen]


# --------------------------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------------------------


def _wavelet_sigma(values: np.ndarray) -> np.ndarray:
    """Per band: ``median(|HH|) / Φ⁻¹(3/4)`` over the finest diagonal Haar (db1) coefficients."""
    b, h, w = values.shape
    v = values[:, : h - h % 2, : w - w % 2]
    hh = (v[:, 0::2, 0::2] - v[:, 0::2, 1::2] - v[:, 1::2, 0::2] + v[:, 1::2, 1::2]) / 2.0
    out = np.empty(b)
    for k in range(b):
        c = np.abs(hh[k][hh[k] != 0])
        out[k] = np.median(c) / MAD_TO_SIGMA if c.size else 0.0
    return out


def _regression_sigma(values: np.ndarray) -> np.ndarray:
    """Per band: the RMS residual of predicting the band from all the others by least squares."""
    b = values.shape[0]
    y = values.reshape(b, -1)
    r = y @ y.T
    ri = np.linalg.inv(r + 1e-6 * np.trace(r) / b * np.eye(b))
    out = np.empty(b)
    for i in range(b):
        xx = ri - np.outer(ri[:, i], ri[i, :]) / ri[i, i]
        ra = r[:, i].copy()
        ra[i] = 0.0
        beta = xx @ ra
        beta[i] = 0.0
        out[i] = np.sqrt(np.mean((y[i] - beta @ y) ** 2))
    return out


def noise_sigma(cube: xr.DataArray, method: str = "wavelet") -> xr.DataArray:
    """Standard deviation of the noise in each band ``(band,)``, in the cube's units.

    ``"wavelet"``: Donoho & Johnstone's robust estimator, ``σ = median(|HH₁|) / 0.6745`` over the
    finest diagonal wavelet coefficients of each band image, as ``skimage.restoration.estimate_sigma``
    computes it with its default ``db1`` (Haar) wavelet (zero coefficients ignored; an odd last row or
    column is dropped instead of padded). Spatial: edges and texture at the pixel scale raise it.

    ``"regression"``: the noise estimate of HySime (Bioucas-Dias & Nascimento, IEEE TGRS 2008; Roger &
    Arnold 1996): each band is predicted by least squares from all the other bands and ``σ`` is the RMS
    of the residual. Spectral: it needs many correlated bands and raises where a band carries signal the
    others do not.
    """
    values = np.asarray(cube.values, dtype=np.float64)
    if method == "wavelet":
        sigma = _wavelet_sigma(values)
    elif method == "regression":
        sigma = _regression_sigma(values)
    else:
        raise ValueError(f"method must be 'wavelet' or 'regression'; got {method!r}")
    coords = {"wavelength": ("band", wavelengths(cube))} if wavelengths(cube) is not None else {}
    return xr.DataArray(sigma, dims=("band",), coords=coords, name="noise_sigma", attrs={"method": method})


# --------------------------------------------------------------------------------------------
# unmixing
# --------------------------------------------------------------------------------------------


def spectral_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles in degrees ``(p, q)`` between the columns of ``a`` ``(bands, p)`` and ``b`` ``(bands, q)``.

    Scale-free: ``arccos(aᵢ·bⱼ / (|aᵢ| |bⱼ|))``, cosine clamped to [-1, 1], norms floored at 1e-12.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"need two (bands, n) matrices with the same bands; got {a.shape} and {b.shape}")
    an = a / np.maximum(np.linalg.norm(a, axis=0), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=0), 1e-12)
    return np.degrees(np.arccos(np.clip(an.T @ bn, -1.0, 1.0)))


@dataclass
class EndmemberMatch:
    """Found endmembers matched one-to-one to reference ones.

    ``order[j]`` is the found endmember matched to reference ``j``; ``angles[j]`` its spectral angle (°);
    ``unmatched`` the found endmembers left over when more were found than the reference has.
    """

    order: np.ndarray
    angles: np.ndarray
    unmatched: np.ndarray
    angle_matrix: np.ndarray

    @property
    def mean_angle(self) -> float:
        return float(np.mean(self.angles))

    @property
    def max_angle(self) -> float:
        return float(np.max(self.angles))

    def endmembers(self, found: np.ndarray) -> np.ndarray:
        """The matched found endmembers ``(bands, q)``, in the reference's order."""
        return np.asarray(found)[:, self.order]

    def abundances(self, found: np.ndarray) -> np.ndarray:
        """The matched found abundances ``(q, y, x)``, in the reference's order."""
        return np.asarray(found)[self.order]


def match_endmembers(found: np.ndarray, reference: np.ndarray) -> EndmemberMatch:
    """Pair found endmembers ``(bands, p)`` with reference ones ``(bands, q)``, ``p >= q``, one-to-one so that
    the sum of spectral angles is least (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``).

    Unmixing finds endmembers in no particular order and at no particular scale; the angle ignores scale
    and the assignment fixes the order.
    """
    from scipy.optimize import linear_sum_assignment

    angles = spectral_angles(found, reference)
    p, q = angles.shape
    if p < q:
        raise ValueError(f"{p} endmembers found but the reference has {q}; need at least as many to match")
    rows, cols = linear_sum_assignment(angles)
    order = np.empty(q, dtype=np.int64)
    order[cols] = rows
    unmatched = np.setdiff1d(np.arange(p), order)
    return EndmemberMatch(order, angles[order, np.arange(q)], unmatched, angles)


def update_comparison(
    y: np.ndarray, w: np.ndarray, h0: np.ndarray, steps: int = 30
) -> dict[str, np.ndarray]:
    """Abundances ``H`` of ``min ||Y - W H||²`` with ``W`` fixed, by two updates from the same start.

    Gradient descent ``H ← H - η Wᵀ(WH - Y)`` with the safe step ``η = 1 / ||WᵀW||₂`` (nothing keeps ``H``
    non-negative) and the multiplicative update ``H ← H ⊙ WᵀY ⊘ WᵀWH`` (a gradient step whose step size
    ``H ⊘ WᵀWH`` is per entry; the new value is a product of non-negative numbers). Returns, per step
    (``steps + 1`` values, the start included), ``cost_gd``, ``cost_mu`` (``||Y - WH||²/||Y||²``),
    ``min_gd``, ``min_mu`` (the smallest abundance) and ``negative_gd`` (the fraction of negative entries).
    """
    import torch

    from .methods.unmixing import abundance_terms, multiplicative

    yt = torch.as_tensor(np.asarray(y, np.float64))[None]
    wt = torch.as_tensor(np.asarray(w, np.float64))[None]
    h_gd = torch.as_tensor(np.asarray(h0, np.float64))[None]
    h_mu = h_gd.clone()
    eta = 1.0 / float(torch.linalg.matrix_norm(wt[0].T @ wt[0], ord=2))
    yy = float(yt.square().sum())
    out: dict[str, list[float]] = {k: [] for k in ("cost_gd", "cost_mu", "min_gd", "min_mu", "negative_gd")}

    def record() -> None:
        out["cost_gd"].append(float((yt - wt @ h_gd).square().sum()) / yy)
        out["cost_mu"].append(float((yt - wt @ h_mu).square().sum()) / yy)
        out["min_gd"].append(float(h_gd.min()))
        out["min_mu"].append(float(h_mu.min()))
        out["negative_gd"].append(float((h_gd < 0).double().mean()))

    record()
    for _ in range(steps):
        h_gd = h_gd - eta * (wt.transpose(-1, -2) @ (wt @ h_gd - yt))
        num, den = abundance_terms(yt, wt, h_mu)
        h_mu = multiplicative(h_mu, num, den)
        record()
    return {k: np.asarray(v) for k, v in out.items()}


def coupling_report(problem: Any, result: Any) -> dict[str, Any]:
    """How well CNMF's two unmixings agree through the sensor models (relative Frobenius differences).

    ``srf``: the MSI seen through the fused cube's SRF, ``R W H_m``, against the HR-MSI ``Y_m``;
    ``psf``: the HR abundances degraded by the PSF and decimation, ``S(H_m)``, against the LR abundances
    ``H_h`` of the HSI unmixing; ``hsi``: ``W S(H_m)`` against the LR-HSI ``Y_h``. Also returns the arrays
    ``msi_endmembers`` ``R W`` ``(msi_bands, p)``, ``degraded`` ``S(H_m)`` and ``abundances_lr`` ``H_h``.
    """
    import torch

    w = np.asarray(result.endmembers, np.float64)
    h = np.asarray(result.abundances, np.float64)
    srf = problem.srf.matrix if result.srf is None else result.srf.matrix
    from .methods.cnmf import spatial_model

    spatial, _ = spatial_model(problem, result.params.get("psf_option", "estimate"))
    degraded = spatial(torch.as_tensor(h)[None]).numpy()[0]
    h_lr = np.asarray(result.extras.get("abundances_lr", degraded), np.float64)
    y_h = np.asarray(problem.lr_hsi.values, np.float64)
    y_m = np.asarray(problem.hr_msi.values, np.float64)

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))

    return {
        "srf": rel(np.einsum("mb,bp,pyx->myx", srf, w, h), y_m),
        "psf": rel(degraded, h_lr),
        "hsi": rel(np.einsum("bp,pyx->byx", w, degraded), y_h),
        "msi_endmembers": srf @ w,
        "degraded": degraded,
        "abundances_lr": h_lr,
        "srf_matrix": np.asarray(srf),
    }


# --------------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------------


@dataclass
class BenchReport:
    """Rows of every method that ran, and why the others did not: ``skipped`` (method -> the package's
    message, e.g. a missing checkpoint) and ``failed`` (method -> ``"ExceptionType: message"`` of any other
    exception, i.e. a bug in the method)."""

    rows: list = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))


def bench_options(reference_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Options a method needs to run, from what is on disk: MossFuse's published CAVE checkpoint
    (``<shared>/reference/mossfuse/CAVE_32_model.pth``) when present. Methods absent here run with
    their defaults; a method that cannot (e.g. needs weights) is skipped by :func:`benchmark_registered`."""
    from .config import default_data_dir

    if reference_dir is None:
        data = default_data_dir()
        reference_dir = data.parent / "reference" if data is not None else None
    options: dict[str, dict[str, Any]] = {}
    if reference_dir is not None:
        ckpt = Path(reference_dir) / "mossfuse" / "CAVE_32_model.pth"
        if ckpt.is_file():
            options["mossfuse"] = {"checkpoint": str(ckpt)}
    return options


def benchmark_registered(
    scenes: Iterable[Any],
    protocols: Sequence[str],
    *,
    methods: Sequence[str] | None = None,
    crop: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "auto",
    progress: bool = False,
    strict: bool = False,
) -> BenchReport:
    """:func:`~fusion_explorer.bench.run_benchmark` for each method (default: every registered one).

    A method that raises one of the package's errors (e.g. MossFuse without a checkpoint or ``fit=True``)
    is skipped with the first line of its message. Any other exception is recorded in ``failed`` (so that
    one broken method does not hide the others' results) unless ``strict``, when it propagates.
    """
    from .bench import run_benchmark
    from .methods import available_methods

    scene_list = list(scenes)
    report = BenchReport()
    for method in methods or sorted(available_methods()):
        try:
            rows = run_benchmark(
                [method],
                scene_list,
                protocols,
                crop=crop,
                device=device,
                options={method: dict((options or {}).get(method, {}))},
                progress=progress,
            )
        except FusionExplorerError as exc:
            report.skipped[method] = str(exc).splitlines()[0]
            continue
        except Exception as exc:
            if strict:
                raise
            report.failed[method] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            continue
        report.rows.extend(rows)
    return report


def rows_frame(rows: Sequence[Any]) -> Any:
    """Benchmark rows as a pandas DataFrame (one row per method, scene and protocol)."""
    import pandas as pd

    return pd.DataFrame.from_records([r.as_dict() for r in rows])


def read_results_md(path: str | os.PathLike) -> Any:
    """The per-scene rows of the Markdown tables of ``benchmarks/RESULTS.md`` as a DataFrame
    (columns lower-cased; mean rows, whose scene reads ``mean of N``, left out)."""
    import pandas as pd

    records, header = [], None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        if "method" in header and "scene" in header and len(cells) == len(header):
            rec = dict(zip(header, cells, strict=True))
            if rec["scene"].startswith("mean of") or rec["method"].startswith("**"):
                continue
            for k, v in rec.items():
                if re.fullmatch(r"[-+]?\d+(\.\d+)?", v):
                    rec[k] = float(v)
            records.append(rec)
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_coverage(cubes: Mapping[str, xr.DataArray], srfs: Mapping[str, Any] | None = None):
    """Where each cube's bands lie in the spectrum (one tick per band centre), the visible range shaded,
    and the SRF bands given in ``srfs`` (name -> SRF) as their response-weighted centres."""
    items = [(n, wavelengths(c)) for n, c in cubes.items()]
    items += [(f"SRF {n}", np.asarray(s.centre_wavelength)) for n, s in (srfs or {}).items()]
    fig = _figure(9, 0.42 * len(items) + 1.2)
    ax = fig.add_subplot()
    ax.axvspan(380, 700, color="0.92", zorder=0)
    ax.text(540, len(items) - 0.45, "visible", ha="center", va="bottom", fontsize=8, color="0.4")
    for i, (name, wl) in enumerate(items):
        y = len(items) - 1 - i
        if wl is None:
            ax.text(400, y, "no wavelengths stored", va="center", fontsize=8, color="0.5")
        else:
            ax.plot(wl, np.full(wl.shape, y), "|", ms=9, color="C3" if name.startswith("SRF") else "C0")
            ax.text(float(wl.max()) + 15, y, f"{wl.size}", va="center", fontsize=8)
    ax.set_yticks(range(len(items)), [n for n, _ in items][::-1], fontsize=8)
    ax.set_xlabel("wavelength (nm)")
    ax.set_title("spectral coverage: one tick per band centre (count at the right)")
    ax.set_ylim(-0.7, len(items) - 0.1)
    return fig


def plot_overview(
    cube: xr.DataArray,
    bands_nm: Sequence[float] = (450, 550, 650),
    pixels: Sequence[tuple[int, int]] | None = None,
    title: str | None = None,
):
    """True colour with marked pixels, band images at ``bands_nm`` (nearest band), and the marked pixels'
    spectra."""
    from .render import stretch, true_colour

    wl = wavelengths(cube)
    pixels = list(pixels) if pixels is not None else pick_pixels(cube)
    n_img = 1 + len(bands_nm)
    fig = _figure(2.4 * n_img, 5.2)
    grid = fig.add_gridspec(2, n_img, height_ratios=[1.1, 1])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(true_colour(cube))
    cols = _colours(len(pixels))
    for (y, x), c in zip(pixels, cols, strict=True):
        ax.plot(x, y, "o", mfc="none", mec=c, ms=9, mew=2)
    ax.set_title("true colour (D65)" if wl is not None and wl.min() < 600 < wl.max() else "false colour", fontsize=9)
    ax.axis("off")
    for i, nm in enumerate(bands_nm):
        ax = fig.add_subplot(grid[0, i + 1])
        k = int(np.argmin(np.abs(wl - nm))) if wl is not None else int(nm)
        ax.imshow(stretch(np.asarray(cube.values[k]), 99.5), cmap="gray")
        label = f"{wl[k]:.0f} nm" if wl is not None else f"band {k}"
        ax.set_title(f"band {k}: {label}", fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    xs = wl if wl is not None else np.arange(cube.sizes["band"])
    for (y, x), c in zip(pixels, cols, strict=True):
        ax.plot(xs, cube.values[:, y, x], color=c, label=f"pixel ({y}, {x})")
    ax.set_xlabel("wavelength (nm)" if wl is not None else "band")
    ax.set_ylabel("value")
    ax.legend(fontsize=8, ncols=min(4, len(pixels)))
    fig.suptitle(title or str(cube.attrs.get("scene", cube.name or "")), fontsize=11)
    return fig


def plot_srfs(srfs: Mapping[str, Any], cube: xr.DataArray | None = None):
    """Each SRF's measured table (lines, peak scaled to 1) and its matrix rows on the cube's band centres
    (dots, same scale): the columns of ``R`` that turn an HSI pixel into an MSI pixel."""
    n = len(srfs)
    fig = _figure(9, 2.3 * n)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, (name, srf) in zip(axes, srfs.items(), strict=True):
        wl = np.asarray(srf.wavelength)
        if cube is not None and wavelengths(cube) is not None:
            cw = wavelengths(cube)
            ax.axvspan(cw.min(), cw.max(), color="0.93", zorder=0)
        for k, (band, c) in enumerate(zip(srf.band_names, _colours(srf.msi_bands), strict=True)):
            row = srf.matrix[k]
            peak = 1.0
            if srf.table is not None:
                t = srf.table[k] / max(srf.table[k].max(), 1e-12)
                ax.plot(srf.table_wavelength, t, color=c, lw=1, alpha=0.7)
                peak = float(np.interp(wl, srf.table_wavelength, t).max())
            on = row > 1e-6 * row.max()
            ax.plot(wl[on], row[on] * peak / max(row.max(), 1e-12), ".", color=c, ms=4, label=band)
        ax.set_xlim(min(wl.min(), 380) - 10, max(wl.max(), 720) + 10)
        ax.set_title(f"{name}: {srf.msi_bands} bands on {srf.hsi_bands} HSI bands", fontsize=9)
        ax.legend(fontsize=7, ncols=min(srf.msi_bands, 8), loc="upper right")
        ax.set_ylabel("relative response")
    axes[-1].set_xlabel("wavelength (nm); lines: the table, dots: the matrix rows at the cube's band centres")
    return fig


def plot_noise(noise: Mapping[str, xr.DataArray], cube: xr.DataArray | None = None):
    """Noise sigma per band for each estimate in ``noise`` (label -> :func:`noise_sigma` result); with
    ``cube``, also the per-band SNR ``20 log10(mean / σ)`` in dB."""
    fig = _figure(9, 3.2)
    axes = fig.subplots(1, 2 if cube is not None else 1, squeeze=False)[0]
    mean = None if cube is None else np.asarray(cube.mean(dim=("y", "x")).values, dtype=np.float64)
    for label, sigma in noise.items():
        x = sigma.coords["wavelength"].values if "wavelength" in sigma.coords else np.arange(sigma.size)
        s = np.where(sigma.values > 0, sigma.values, np.nan)  # all-zero (removed) bands leave a gap
        axes[0].plot(x, s, label=label)
        if mean is not None:
            axes[1].plot(x, 20 * np.log10(np.where(mean > 0, mean, np.nan) / s), label=label)
    axes[0].set_ylabel("noise σ (cube units)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    if mean is not None:
        axes[1].set_ylabel("SNR (dB) = 20 log10(band mean / σ)")
        axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("wavelength (nm)")
    return fig


def plot_benchmark(frame: Any, metrics: Sequence[str] = ("psnr", "sam")):
    """Grouped bars: one panel per metric and protocol, scenes along x, one bar per method."""
    protocols = list(dict.fromkeys(frame["protocol"]))
    methods = list(dict.fromkeys(frame["method"]))
    scenes = list(dict.fromkeys(frame["scene"]))
    fig = _figure(4.6 * len(protocols), 2.8 * len(metrics))
    axes = fig.subplots(len(metrics), len(protocols), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    cols = _colours(len(methods))
    for i, metric in enumerate(metrics):
        for j, proto in enumerate(protocols):
            ax = axes[i, j]
            for k, method in enumerate(methods):
                sub = frame[(frame["protocol"] == proto) & (frame["method"] == method)].set_index("scene")
                vals = [float(sub[metric].get(s, np.nan)) for s in scenes]
                ax.bar(np.arange(len(scenes)) + (k - (len(methods) - 1) / 2) * width, vals, width,
                       color=cols[k], label=method)
            ax.set_xticks(range(len(scenes)), [s.replace("_ms", "") for s in scenes], rotation=20, fontsize=7)
            better = "higher is better" if metric in ("psnr", "ssim", "uiqi") else "lower is better"
            ax.set_title(f"{proto}: {metric.upper()} ({better})", fontsize=9)
            if metric == "psnr":
                ax.set_ylim(bottom=max(0.0, float(np.nanmin(frame[metric])) - 5))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(methods), fontsize=8)
    return fig


def plot_endmembers(
    wavelength: np.ndarray,
    endmembers: np.ndarray,
    names: Sequence[str] | None = None,
    reference: np.ndarray | None = None,
    angles: Sequence[float] | None = None,
    title: str = "endmembers",
):
    """Endmember spectra ``(bands, p)``; with ``reference`` (same order), the reference dashed and each
    found one scaled to it by least squares (angles in the legend when given)."""
    p = endmembers.shape[1]
    names = list(names) if names is not None else [f"#{k}" for k in range(p)]
    fig = _figure(2.6 * p + 0.6, 2.8)
    axes = fig.subplots(1, p, squeeze=False)[0]
    for k, (ax, c) in enumerate(zip(axes, _colours(p), strict=True)):
        e = endmembers[:, k]
        if reference is not None:
            r = reference[:, k]
            e = e * float(e @ r) / max(float(e @ e), 1e-300)
            ax.plot(wavelength, r, "--", color="0.3", label="ground truth")
        label = "found" + (f" ({angles[k]:.1f}°)" if angles is not None else "")
        ax.plot(wavelength, e, color=c, label=label)
        ax.set_title(names[k], fontsize=9)
        ax.set_xlabel("nm")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_abundances(abundances: np.ndarray, names: Sequence[str] | None = None, title: str = "abundances",
                    reference: np.ndarray | None = None):
    """Abundance maps ``(p, y, x)`` on a common 0–1 scale; with ``reference`` a second row below."""
    p = abundances.shape[0]
    names = list(names) if names is not None else [f"#{k}" for k in range(p)]
    rows = [abundances] + ([reference] if reference is not None else [])
    fig = _figure(2.3 * p + 0.8, 2.3 * len(rows) + 0.3)
    axes = fig.subplots(len(rows), p, squeeze=False)
    im = None
    for i, maps in enumerate(rows):
        for k in range(p):
            im = axes[i, k].imshow(maps[k], vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
            axes[i, k].set_title(("ground truth: " if i else "") + names[k], fontsize=8)
            axes[i, k].axis("off")
    fig.colorbar(im, ax=axes, shrink=0.8, label="fraction")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_pixel_mixture(wavelength: np.ndarray, spectrum: np.ndarray, endmembers: np.ndarray,
                       fractions: np.ndarray, names: Sequence[str]):
    """One pixel as the linear mixing model sees it: ``x = Σ_k a_k e_k``, each term a filled band."""
    fig = _figure(7, 3)
    ax = fig.add_subplot()
    base = np.zeros_like(wavelength, dtype=np.float64)
    for k, c in enumerate(_colours(endmembers.shape[1])):
        term = fractions[k] * endmembers[:, k]
        ax.fill_between(wavelength, base, base + term, color=c, alpha=0.5, label=f"{fractions[k]:.2f} × {names[k]}")
        base = base + term
    ax.plot(wavelength, spectrum, "k", lw=1.5, label="measured pixel")
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("reflectance")
    ax.legend(fontsize=8)
    ax.set_title("linear mixing: the pixel is a weighted sum of endmember spectra", fontsize=10)
    return fig


def plot_update_comparison(demo: Mapping[str, np.ndarray]):
    """The two curves of :func:`update_comparison`: relative cost and smallest abundance per step."""
    fig = _figure(9, 3)
    a, b = fig.subplots(1, 2)
    it = np.arange(len(demo["cost_mu"]))
    a.semilogy(it, demo["cost_gd"], label="gradient step")
    a.semilogy(it, demo["cost_mu"], label="multiplicative update")
    a.set_xlabel("iteration")
    a.set_ylabel("||Y - WH||² / ||Y||²")
    a.legend(fontsize=8)
    b.plot(it, demo["min_gd"], label="gradient step")
    b.plot(it, demo["min_mu"], label="multiplicative update")
    b.axhline(0, color="k", lw=0.8)
    b.set_xlabel("iteration")
    b.set_ylabel("smallest abundance")
    b.legend(fontsize=8)
    return fig


_STAGE_COLOURS = {"HSI": "#dbe8f5", "MSI": "#f7e3d3"}


def _stages(trace: Sequence[Mapping[str, Any]]) -> list[tuple[str, float, float]]:
    """``(stage, first iteration, first iteration of the next stage)`` for each run of equal stage labels."""
    names = [str(s["label"]).split(" ·")[0] for s in trace]
    its = [float(s["iteration"]) for s in trace]
    out, first = [], 0
    for k in range(1, len(trace) + 1):
        if k == len(trace) or names[k] != names[first]:
            out.append((names[first], its[first], its[k] if k < len(trace) else its[-1]))
            first = k
    return out


def plot_convergence(trace: Sequence[Mapping[str, Any]]):
    """Objective and both relative residuals against the global iteration count, the stages shaded
    (blue: unmixing the LR-HSI, orange: the HR-MSI) and named."""
    it = np.array([s["iteration"] for s in trace], dtype=np.float64)
    fig = _figure(10, 3.4)
    a, b = fig.subplots(1, 2)
    width = max(float(it.max() - it.min()), 1.0)
    for ax in (a, b):
        for name, lo, hi in _stages(trace):
            ax.axvspan(lo, hi, color=_STAGE_COLOURS.get(name.split()[0], "0.95"), zorder=0)
            if hi - lo < 0.08 * width:
                continue
            short = name.replace(" unmixing", "").replace("(", "").replace(")", "")
            ax.text((lo + hi) / 2, 1.01, short, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=7)
        ax.set_xlabel("iteration (multiplicative updates so far)")
    a.semilogy(it, [s.get("objective", np.nan) for s in trace], ".-", ms=3)
    a.set_ylabel("coupled objective")
    b.semilogy(it, [s.get("residual_hsi", np.nan) for s in trace], ".-", ms=3, label="||Y_h - W H_h|| / ||Y_h||")
    b.semilogy(it, [s.get("residual_msi", np.nan) for s in trace], ".-", ms=3, label="||Y_m - W_m H_m|| / ||Y_m||")
    b.legend(fontsize=8)
    return fig


def snapshot_indices(trace: Sequence[Mapping[str, Any]], n: int = 4) -> list[int]:
    """``n`` trace steps spread over the run (log-spaced in iteration), first and last included."""
    its = np.array([s["iteration"] for s in trace], dtype=np.float64)
    targets = np.geomspace(max(its.min(), 1), max(its.max(), 1), n)
    idx = sorted({int(np.argmin(np.abs(its - t))) for t in targets} | {0, len(trace) - 1})
    return idx


def plot_trace_step(
    step: Mapping[str, Any],
    wavelength: np.ndarray,
    match: EndmemberMatch | None = None,
    reference: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    fig: Any = None,
):
    """One recorded CNMF iterate: its endmembers (matched to ``reference`` when given, else the first 4)
    and their HR abundance maps."""
    w = np.asarray(step["endmembers"])
    h = np.asarray(step["abundances"])
    order = match.order if match is not None else np.arange(min(4, w.shape[1]))
    q = len(order)
    names = list(names) if names is not None else [f"#{k}" for k in order]
    if fig is None:
        fig = _figure(2.3 * q + 2.8, 4.6)
    fig.clear()
    grid = fig.add_gridspec(2, q + 1, width_ratios=[1.6] + [1] * q)
    ax = fig.add_subplot(grid[:, 0])
    for k, (j, c) in enumerate(zip(order, _colours(q), strict=True)):
        e = w[:, j]
        if reference is not None:
            r = reference[:, k]
            ax.plot(wavelength, r, "--", color=c, lw=0.8)
            e = e * float(e @ r) / max(float(e @ e), 1e-300)
        ax.plot(wavelength, e, color=c, label=names[k])
    ax.set_xlabel("nm")
    ax.legend(fontsize=7)
    ax.set_title("endmembers" + (" (dashed: ground truth)" if reference is not None else ""), fontsize=8)
    for k, j in enumerate(order):
        ax = fig.add_subplot(grid[:, k + 1])
        ax.imshow(h[j], vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
        ax.set_title(names[k], fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{step['label']}  (objective {step.get('objective', float('nan')):.4g})", fontsize=9)
    return fig


def plot_trace_snapshots(trace, wavelength, match=None, reference=None, names=None, n: int = 4):
    """Static view of convergence: rows of :func:`plot_trace_step` at :func:`snapshot_indices`."""
    idx = snapshot_indices(trace, n)
    fig = _figure(12, 2.6 * len(idx))
    subs = fig.subfigures(len(idx), 1)
    for sub, i in zip(np.atleast_1d(subs), idx, strict=True):
        plot_trace_step(trace[i], wavelength, match, reference, names, fig=sub)
    return fig


def trace_widget(trace, wavelength, match=None, reference=None, names=None):
    """A slider over the recorded iterates redrawing :func:`plot_trace_step` (needs a live kernel)."""
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()
    slider = widgets.IntSlider(value=len(trace) - 1, min=0, max=len(trace) - 1, description="step",
                               continuous_update=False, layout=widgets.Layout(width="60%"))
    label = widgets.Label()

    def draw(change: Any = None) -> None:
        step = trace[slider.value]
        label.value = f"iteration {step['iteration']}: {step['label']}"
        with out:
            out.clear_output(wait=True)
            display(plot_trace_step(step, wavelength, match, reference, names))

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([slider, label]), out])


def plot_coupling(problem: Any, result: Any, report: Mapping[str, Any], names: Sequence[str] | None = None,
                  order: Sequence[int] | None = None, k: int = 0):
    """The two couplings of CNMF. Left: endmembers ``W`` (lines) and the MSI endmembers ``R W`` they imply
    (markers at each MSI band's centre wavelength). Right: for endmember ``order[k]``, its HR abundance
    ``H_m``, that map degraded by the PSF and decimation ``S(H_m)``, and the LR abundance ``H_h`` the HSI
    unmixing found."""
    w = np.asarray(result.endmembers)
    order = list(order) if order is not None else list(range(min(4, w.shape[1])))
    names = list(names) if names is not None else [f"#{j}" for j in order]
    wl = np.asarray(problem.wavelength)
    srf = report["srf_matrix"]
    centres = srf @ wl
    fig = _figure(12, 3.2)
    grid = fig.add_gridspec(1, 4, width_ratios=[1.8, 1, 1, 1])
    ax = fig.add_subplot(grid[0])
    for i, (j, c) in enumerate(zip(order, _colours(len(order)), strict=True)):
        ax.plot(wl, w[:, j], color=c, label=names[i])
        ax.plot(centres, report["msi_endmembers"][:, j], "s", color=c, mec="k", ms=5)
    ax.set_xlabel("nm")
    ax.set_title("W (lines) and R W (squares at MSI band centres)", fontsize=8)
    ax.legend(fontsize=7)
    j = order[k]
    maps = [
        (np.asarray(result.abundances)[j], f"H_m: HR abundance of {names[k]}"),
        (report["degraded"][j], f"S(H_m): blurred + decimated x{problem.ratio}"),
        (report["abundances_lr"][j], "H_h: from unmixing the LR-HSI"),
    ]
    for i, (img, title) in enumerate(maps):
        a = fig.add_subplot(grid[i + 1])
        a.imshow(img, vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
        a.set_title(title, fontsize=8)
        a.axis("off")
    fig.suptitle(
        f"coupling: ||R W H_m - Y_m|| / ||Y_m|| = {report['srf']:.3f},  "
        f"||S(H_m) - H_h|| / ||H_h|| = {report['psf']:.3f}",
        fontsize=9,
    )
    return fig


def scale_endmembers(cube: xr.DataArray, endmembers: np.ndarray, abundances: np.ndarray) -> np.ndarray:
    """Reference endmembers ``(bands, p)`` rescaled, one factor each, so that ``Σ_k s_k e_k a_k`` fits the
    cube by least squares (published ground truths often store endmembers normalised to peak 1)."""
    v = np.asarray(cube.values, dtype=np.float64).reshape(cube.sizes["band"], -1)
    a = np.asarray(abundances, dtype=np.float64).reshape(abundances.shape[0], -1)
    design = np.stack([np.outer(endmembers[:, k], a[k]).ravel() for k in range(endmembers.shape[1])], axis=1)
    s, *_ = np.linalg.lstsq(design, v.ravel(), rcond=None)
    return np.asarray(endmembers, dtype=np.float64) * s[None, :]


def plot_gallery(cubes: Mapping[str, xr.DataArray], columns: int = 5):
    """True-colour views of several cubes (false colour where a cube misses the visible range)."""
    from .render import true_colour

    n = len(cubes)
    rows = (n + columns - 1) // columns
    fig = _figure(2.3 * min(n, columns), 2.5 * rows)
    axes = fig.subplots(rows, min(n, columns), squeeze=False).ravel()
    for ax, (name, cube) in zip(axes, cubes.items(), strict=False):
        ax.imshow(true_colour(cube))
        ax.set_title(f"{name[:24]}\n{cube.sizes['band']} bands, {cube.sizes['y']}x{cube.sizes['x']}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    return fig


def plot_problem(problem: Any):
    """What a fusion method receives: the LR-HSI (true colour, nearest-neighbour enlarged) and the HR-MSI
    (three of its bands as a false-colour composite), beside the truth it never sees."""
    from .render import stretch, true_colour

    msi = np.asarray(problem.hr_msi.values, dtype=np.float64)
    centres = np.asarray(problem.srf.centre_wavelength) if problem.srf is not None else np.arange(msi.shape[0])
    pick = [int(np.argmin(np.abs(centres - nm))) for nm in (650, 550, 450)] if msi.shape[0] > 3 else [0, 1, 2]
    if msi.shape[0] == 3 and problem.srf is not None:
        pick = list(np.argsort(centres)[::-1])
    panels = [
        (np.kron(true_colour(problem.lr_hsi), np.ones((problem.ratio, problem.ratio, 1), np.uint8)),
         f"LR-HSI {problem.hsi_bands} bands, {problem.lr_size[0]}x{problem.lr_size[1]}"),
        (stretch(msi[pick].transpose(1, 2, 0), 99.5), f"HR-MSI {problem.msi_bands} bands, "
         f"{problem.hr_size[0]}x{problem.hr_size[1]} (bands {', '.join(str(i) for i in pick)} as RGB)"),
    ]
    if problem.truth is not None:
        panels.append((true_colour(problem.truth), "truth (for scoring only)"))
    fig = _figure(3.2 * len(panels), 3.4)
    for ax, (img, title) in zip(fig.subplots(1, len(panels)), panels, strict=True):
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    return fig


def layer_table(learned: Sequence[Mapping[str, Any]], plain: Sequence[Mapping[str, Any]], truth: xr.DataArray,
                reference: np.ndarray | None = None) -> Any:
    """Layer by layer, two unrolled runs from the same start (e.g. SCALMU with ``learned=True`` and
    ``learned=False``): objective, PSNR of the layer's fused cube (``W H_m``; the consistency layer's
    output for SCALMU's last step) against ``truth``, mean spectral angle of
    the matched endmembers to ``reference`` (when given), and how far the learned iterate is from the plain
    one (relative Frobenius difference of the HR abundances and of the endmembers)."""
    import pandas as pd

    from .methods.base import trace_fused
    from .metrics import psnr

    x = np.asarray(truth.values)
    plain_by_layer = {s["iteration"]: s for s in plain}
    records = []
    for s in learned:
        q = plain_by_layer.get(s["iteration"])
        if q is None:
            continue
        rec: dict[str, Any] = {"layer": int(s["iteration"]), "label": s["label"]}
        for tag, step in (("learned", s), ("plain", q)):
            rec[f"objective {tag}"] = float(step.get("objective", np.nan))
            rec[f"PSNR {tag}"] = psnr(x, np.clip(trace_fused(step), 0, 1))
            if reference is not None:
                rec[f"angle {tag} (°)"] = match_endmembers(step["endmembers"], reference).mean_angle
        for key, name in (("abundances", "ΔH"), ("endmembers", "ΔW")):
            a, b = np.asarray(s[key], np.float64), np.asarray(q[key], np.float64)
            rec[f"{name} learned vs plain"] = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))
        records.append(rec)
    return pd.DataFrame.from_records(records).set_index("layer")


def plot_layers(table: Any):
    """The columns of :func:`layer_table` against the layer: objective, PSNR, and the learned-vs-plain gap."""
    fig = _figure(11, 3)
    a, b, c = fig.subplots(1, 3)
    k = table.index.values
    for tag, style in (("plain", "--o"), ("learned", "-s")):
        a.plot(k, table[f"objective {tag}"], style, ms=3, label=f"{tag} MU")
        b.plot(k, table[f"PSNR {tag}"], style, ms=3, label=f"{tag} MU")
    a.set_ylabel("coupled objective")
    b.set_ylabel("PSNR of the layer's cube (dB)")
    c.plot(k, table["ΔH learned vs plain"], "-o", ms=3, label="abundances H_m")
    c.plot(k, table["ΔW learned vs plain"], "-s", ms=3, label="endmembers W")
    c.set_ylabel("||learned - plain|| / ||plain||")
    for ax in (a, b, c):
        ax.set_xlabel("layer (0 = the CNMF start; last = consistency)")
        ax.legend(fontsize=8)
    return fig


def learned_and_plain(problem: Any, method: str = "scalmu", **options: Any) -> tuple[Any, Any, str | None]:
    """``(learned run, plain run, None)`` of an unrolled method (``learned=True`` / ``learned=False``), or
    ``(None, None, reason)`` when it is not registered or cannot run here (the reason says why, e.g. a
    checkpoint that does not load), so that a notebook section about it can say so instead of failing."""
    from .methods import available_methods, fuse

    if method not in available_methods():
        return None, None, f"method {method!r} is not registered in this version of the package"
    try:
        learned = fuse(problem, method, learned=True, **options)
        plain = fuse(problem, method, learned=False, **options)
    except Exception as exc:  # a method under development may fail to load its weights
        return None, None, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    return learned, plain, None
