"""Reflectance spectra for synthetic scenes, on any wavelength grid (nm).

Three kinds, all in ``[0, 1]``:

* **measured**: the reflectance sets shipped inside ``colour-science`` (no downloads): ColorChecker
  (N. Ohta, BabelColor average), the PMC chart, the CIE 1995/2024 and CIE 2017 (99 samples) colour
  rendering test samples, the NIST CQS samples and the 190 RAW to ACES training reflectances. They
  are measured on 360–830 nm at most; outside its measured range a spectrum is continued by
  ``r(λ) = r_end + s(λ) (q(λ) - r_end)``, ``s = 1 - exp(-|λ - λ_end| / L)``: it leaves the last
  measured value smoothly towards a random smooth curve ``q`` (so the SWIR is covered);
* **smooth random** curves: ``sigmoid(b + t λ' + Σ_k a_k exp(-(λ - c_k)² / 2 w_k²))``;
* **vegetation**: a parametric leaf (green peak, chlorophyll well, red edge, NIR plateau).

Beyond 900 nm a random subset of spectra gets water absorption dips (970, 1200, 1450, 1940 nm).
"""

from __future__ import annotations

import functools

import numpy as np

#: The grid (nm) the measured sets are stored on.
MEASURED_GRID = np.arange(380.0, 781.0, 5.0)
#: Water absorption features: (centre nm, width nm, relative depth).
_WATER = ((970.0, 25.0, 0.15), (1200.0, 35.0, 0.3), (1450.0, 60.0, 1.0), (1940.0, 80.0, 1.3), (2500.0, 150.0, 0.8))


def _sd_rows(sds) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [(str(k), np.asarray(sd.wavelengths, float), np.asarray(sd.values, float)) for k, sd in sds.items()]


@functools.cache
def measured_reflectances() -> tuple[np.ndarray, tuple[str, ...]]:
    """The measured reflectance sets of ``colour-science`` on :data:`MEASURED_GRID`.

    Returns ``(values, names)``: ``values`` ``(n_spectra, 81)`` in ``[0, 1]`` with NaN outside
    each spectrum's measured range; ``names`` like ``"ColorChecker N Ohta/dark skin"``.
    Exact duplicates (aliases of the same set) are dropped; spectra above 1 (fluorescent
    samples) are scaled to a maximum of 1.
    """
    import colour

    rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    for setname in ("ColorChecker N Ohta", "BabelColor Average", "PMC"):
        if setname in colour.SDS_COLOURCHECKERS:
            rows += [(f"{setname}/{n}", w, v) for n, w, v in _sd_rows(colour.SDS_COLOURCHECKERS[setname])]
    # the other sets moved between colour-science releases: take those this one ships
    try:
        import colour.quality

        for key in ("CIE 2024", "CIE 1995"):
            if key in colour.quality.SDS_TCS:
                rows += [(f"TCS {key}/{n}", w, v) for n, w, v in _sd_rows(colour.quality.SDS_TCS[key])]
        if "NIST CQS 9.0" in colour.quality.SDS_VS:
            rows += [(f"CQS 9.0/{n}", w, v) for n, w, v in _sd_rows(colour.quality.SDS_VS["NIST CQS 9.0"])]
    except (ImportError, AttributeError):
        pass
    loaders = []
    try:
        from colour.quality.cfi2017 import load_TCS_CIE2017

        shape = colour.SpectralShape(float(MEASURED_GRID[0]), float(MEASURED_GRID[-1]), 5.0)
        loaders.append(("TCS CIE 2017", lambda: load_TCS_CIE2017(shape)))
    except ImportError:
        pass
    try:
        from colour.characterisation import read_training_data_rawtoaces_v1

        loaders.append(("RAW to ACES", read_training_data_rawtoaces_v1))
    except ImportError:
        pass
    for label, load in loaders:
        msds = load()
        w = np.asarray(msds.wavelengths, float)
        vals = np.asarray(msds.values, float)
        rows += [(f"{label}/{n}", w, vals[:, i]) for i, n in enumerate(msds.labels)]

    values = np.full((len(rows), MEASURED_GRID.size), np.nan)
    for i, (_, w, v) in enumerate(rows):
        inside = (MEASURED_GRID >= w.min() - 1e-9) & (MEASURED_GRID <= w.max() + 1e-9)
        values[i, inside] = np.interp(MEASURED_GRID[inside], w, v)
    values = np.clip(values, 0.0, None)
    peak = np.nanmax(values, axis=1, keepdims=True)
    values = np.where(peak > 1.0, values / peak, values)
    ok = np.nanmax(values, axis=1) > 1e-3
    _, first = np.unique(np.round(np.nan_to_num(values, nan=-1.0), 4), axis=0, return_index=True)
    keep = np.array(sorted(i for i in first if ok[i]))
    values = values[keep]
    values.setflags(write=False)
    return values, tuple(rows[i][0] for i in keep)


@functools.lru_cache(maxsize=16)
def _measured_on(wl_key: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measured spectra linearly interpolated at ``wl_key``: ``(values (n, bands), lo (n,), hi (n,))``.

    ``values`` is NaN outside ``[lo, hi]``, each spectrum's measured range (nm).
    """
    table, _ = measured_reflectances()
    wl = np.asarray(wl_key)
    valid = np.isfinite(table)
    lo = MEASURED_GRID[np.argmax(valid, axis=1)]
    hi = MEASURED_GRID[valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)]
    # hold edge values so that interpolation never reads a NaN, then blank what lies outside
    filled = np.where(valid, table, 0.0)
    first, last = np.argmax(valid, axis=1), valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
    cols = np.arange(table.shape[1])
    filled = np.where(cols < first[:, None], filled[np.arange(len(table)), first][:, None], filled)
    filled = np.where(cols > last[:, None], filled[np.arange(len(table)), last][:, None], filled)
    pos = np.clip((wl - MEASURED_GRID[0]) / 5.0, 0.0, MEASURED_GRID.size - 1.0)
    i0 = np.minimum(pos.astype(int), MEASURED_GRID.size - 2)
    frac = pos - i0
    values = filled[:, i0] * (1 - frac) + filled[:, i0 + 1] * frac
    values[(wl[None, :] < lo[:, None] - 1e-9) | (wl[None, :] > hi[:, None] + 1e-9)] = np.nan
    for a in (values, lo, hi):
        a.setflags(write=False)
    return values, lo, hi


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _smooth_logits(wl: np.ndarray, n: int, rng: np.random.Generator, n_bumps: int = 6) -> np.ndarray:
    """``(n, bands)`` smooth random curves in logit space (trend + Gaussian bumps)."""
    lo, hi = float(wl.min()), float(wl.max())
    span = max(hi - lo, 50.0)
    x = (wl - 0.5 * (lo + hi)) / span
    base = rng.uniform(-2.5, 1.0, size=(n, 1))
    trend = rng.normal(0.0, 1.2, size=(n, 1))
    curve = rng.normal(0.0, 0.8, size=(n, 1))
    centres = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=(n, n_bumps, 1))
    widths = np.exp(rng.uniform(np.log(max(25.0, span / 40)), np.log(max(120.0, span / 3)), size=(n, n_bumps, 1)))
    amps = rng.normal(0.0, 1.3, size=(n, n_bumps, 1)) * (rng.random((n, n_bumps, 1)) < 0.6)
    bumps = (amps * np.exp(-0.5 * ((wl[None, None, :] - centres) / widths) ** 2)).sum(axis=1)
    return base + trend * x[None, :] + curve * (x[None, :] ** 2 - 1 / 12) + bumps


def smooth_random_spectra(wavelength, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` smooth random reflectances ``(n, bands)`` in ``(0, 1)`` on ``wavelength`` (nm).

    ``sigmoid(b + t λ' + c λ'^2 + Σ_k a_k exp(-(λ - c_k)^2 / 2 w_k^2))`` with ``λ'`` the wavelength
    scaled to the grid's range, bump widths 25–120 nm on a visible grid (wider on wide grids).
    """
    wl = np.asarray(wavelength, dtype=np.float64)
    return _sigmoid(_smooth_logits(wl, n, rng))


def vegetation_spectra(wavelength, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random leaf-like reflectances ``(n, bands)`` (green peak, red well, red edge, NIR plateau)."""
    wl = np.asarray(wavelength, dtype=np.float64)[None, :]
    vis = rng.uniform(0.02, 0.06, (n, 1))
    green = rng.uniform(0.03, 0.12, (n, 1))
    nir = rng.uniform(0.3, 0.6, (n, 1))
    edge = rng.uniform(700.0, 730.0, (n, 1))
    edge_w = rng.uniform(10.0, 20.0, (n, 1))
    r = vis + green * np.exp(-0.5 * ((wl - 550.0) / 30.0) ** 2)
    r = r * (1 - 0.5 * np.exp(-0.5 * ((wl - 675.0) / 20.0) ** 2))
    r = r + (nir - vis) * _sigmoid((wl - edge) / edge_w * 2.0)
    # SWIR: decreasing with moisture; the water dips are added by random_spectra
    r = r * np.where(wl > 1300.0, np.exp(-(wl - 1300.0) / rng.uniform(800.0, 2500.0, (n, 1))), 1.0)
    r = r * (1 - 0.6 * _sigmoid((400.0 - wl) / 10.0))  # strong UV/blue absorption below 400 nm
    return np.clip(r, 0.0, 1.0)


def _water_dips(wl: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, bands)`` multiplicative factors in ``(0, 1]``; 1 below ~900 nm and for about half the spectra."""
    if wl.max() < 900.0:
        return np.ones((n, wl.size))
    strength = rng.uniform(0.0, 1.0, (n, 1)) * (rng.random((n, 1)) < 0.5)
    optical = np.zeros((n, wl.size))
    for centre, width, depth in _WATER:
        optical = optical + depth * np.exp(-0.5 * ((wl[None, :] - centre) / width) ** 2)
    return np.exp(-strength * optical)


def _continue_outside(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, wl: np.ndarray, rng) -> np.ndarray:
    """Fill the NaNs of ``values`` (outside ``[lo, hi]``) by leaving the end value towards a random curve."""
    n = values.shape[0]
    q = _sigmoid(_smooth_logits(wl, n, rng))
    scale_hi = rng.uniform(80.0, 300.0, (n, 1))
    scale_lo = rng.uniform(15.0, 60.0, (n, 1))
    end_hi = np.array([row[np.isfinite(row)][-1] if np.isfinite(row).any() else 0.3 for row in values])[:, None]
    end_lo = np.array([row[np.isfinite(row)][0] if np.isfinite(row).any() else 0.3 for row in values])[:, None]
    s_hi = 1 - np.exp(-np.clip(wl[None, :] - hi[:, None], 0, None) / scale_hi)
    s_lo = 1 - np.exp(-np.clip(lo[:, None] - wl[None, :], 0, None) / scale_lo)
    above = end_hi + s_hi * (q - end_hi)
    below = end_lo + s_lo * (q - end_lo)
    out = np.where(wl[None, :] > hi[:, None], above, values)
    out = np.where(wl[None, :] < lo[:, None], below, out)
    # a grid that misses the measured range altogether: the curve q alone
    return np.where(np.isfinite(out), out, q)


def random_spectra(
    wavelength,
    n: int,
    rng: np.random.Generator,
    *,
    measured_fraction: float = 0.6,
    vegetation_fraction: float = 0.1,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``n`` reflectances ``(n, bands)`` in ``[0, 1]`` on ``wavelength`` (nm), and where each comes from.

    Each spectrum is measured (distinct ones, continued outside their range) with probability
    ``measured_fraction``, vegetation-like with ``vegetation_fraction``, else a smooth random curve.
    """
    wl = np.asarray(wavelength, dtype=np.float64).ravel()
    if wl.size < 1 or not np.all(np.isfinite(wl)) or (wl.size > 1 and not np.all(np.diff(wl) > 0)):
        raise ValueError(f"wavelength must be finite and strictly increasing (nm); got {wl[:5]}...")
    if not (0 <= measured_fraction <= 1 and 0 <= vegetation_fraction <= 1 - measured_fraction + 1e-12):
        raise ValueError(
            f"need 0 <= measured_fraction, vegetation_fraction and their sum <= 1; got {measured_fraction}, "
            f"{vegetation_fraction}"
        )
    u = rng.random(n)
    kind = np.where(u < measured_fraction, 0, np.where(u < measured_fraction + vegetation_fraction, 1, 2))
    out = np.empty((n, wl.size))
    names: list[str] = [""] * n
    idx = np.flatnonzero(kind == 0)
    if idx.size:
        table, lo, hi = _measured_on(tuple(wl.tolist()))
        _, all_names = measured_reflectances()
        pick = rng.choice(len(table), size=idx.size, replace=idx.size > len(table))
        out[idx] = _continue_outside(np.array(table[pick]), lo[pick], hi[pick], wl, rng)
        for i, p in zip(idx, pick, strict=True):
            names[i] = all_names[p]
    idx = np.flatnonzero(kind == 1)
    if idx.size:
        out[idx] = vegetation_spectra(wl, idx.size, rng)
        for i in idx:
            names[i] = "vegetation (parametric)"
    idx = np.flatnonzero(kind == 2)
    if idx.size:
        out[idx] = smooth_random_spectra(wl, idx.size, rng)
        for i in idx:
            names[i] = "smooth random"
    out = out * _water_dips(wl, n, rng)
    return np.clip(out, 0.0, 1.0), tuple(names)
