"""Noise per band, by two standard estimators: wavelet MAD (spatial) and HySime's regression (spectral)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..cube import wavelengths

#: ``Φ⁻¹(3/4)``: the median of ``|N(0, 1)|``, which turns a median absolute deviation into a sigma.
MAD_TO_SIGMA = 0.6744897501960817


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
