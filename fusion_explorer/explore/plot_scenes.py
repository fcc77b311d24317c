"""Figures of data: spectral coverage, a scene's overview, SRFs, noise, a gallery, a fusion problem and
benchmark bars. Each returns a :class:`matplotlib.figure.Figure`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..cube import wavelengths
from ._mpl import _colours, _figure
from .scenes import pick_pixels


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
    from ..render import stretch, true_colour

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


def plot_gallery(cubes: Mapping[str, xr.DataArray], columns: int = 5):
    """True-colour views of several cubes (false colour where a cube misses the visible range)."""
    from ..render import true_colour

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
    from ..render import stretch, true_colour

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
