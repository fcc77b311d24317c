"""Figures of unmixing: endmembers, abundances, a pixel's mixture, the two updates, CNMF's convergence and
recorded iterates, its couplings, and an unrolled method layer by layer. Each returns a
:class:`matplotlib.figure.Figure`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._mpl import _colours, _figure
from .unmixing import EndmemberMatch


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
