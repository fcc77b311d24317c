"""The inputs of a tiled fusion, checked without loading the HR-MSI whole.

:class:`TiledProblem` is :class:`~fusion_explorer.problem.FusionProblem`'s lazy sibling: the
same fields, but the HR-MSI (and the LR-HSI) may be dask-backed DataArrays, and the value checks
(finite, non-negative up to noise, both images on one scale) run as one streaming dask pass
(:func:`~fusion_explorer.tiled.io.validate_lazy`) on the scheduler that fuses. The LR-HSI is
``1/ratio²`` of the HR pixels and is loaded whole (the global spectral factors come from it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..cube import DIMS
from ..errors import CubeError, ProblemError
from ..physics import SpatialDegradation, default_offset
from ..problem import PairShape
from .io import as_lazy, validate_lazy

#: LR pixels a side of the central window a tiled run fits an unknown PSF on (1024² HR pixels at x8):
#: the PSF is the same everywhere in the scene, and the fit reads both images whole
PSF_WINDOW = 128


@dataclass
class TiledProblem(PairShape):
    """LR-HSI ``(band, y, x)`` and HR-MSI ``(msi_band, Y, X)`` (either may be lazy), known SRF and PSF."""

    lr_hsi: xr.DataArray
    hr_msi: xr.DataArray
    srf: Any
    ratio: int | None = None
    psf: np.ndarray | None = None
    offset: int | None = None
    border: str = "reflect"
    attrs: dict = field(default_factory=dict)

    @classmethod
    def from_problem(cls, problem) -> TiledProblem:
        """The tiled view of a :class:`~fusion_explorer.problem.FusionProblem` (in memory)."""
        return cls(problem.lr_hsi, problem.hr_msi, problem.srf, problem.ratio, problem.psf, problem.offset,
                   problem.border, dict(problem.attrs))

    def __post_init__(self) -> None:
        for cube, what in ((self.lr_hsi, "LR-HSI"), (self.hr_msi, "HR-MSI")):
            if not isinstance(cube, xr.DataArray) or tuple(cube.dims) != DIMS:
                raise CubeError(f"the {what} must be an xarray.DataArray with dims {DIMS}")
            if min(cube.shape) < 1:
                raise CubeError(f"the {what} is empty: shape {cube.shape}")
        (h, w), (big_h, big_w) = self.lr_size, self.hr_size
        if self.ratio is None:
            if big_h % h or big_w % w or big_h // h != big_w // w:
                raise ProblemError(f"the HR-MSI ({big_h}x{big_w}) is not an integer multiple of the LR-HSI ({h}x{w})")
            self.ratio = big_h // h
        self.ratio = int(self.ratio)
        if (big_h, big_w) != (h * self.ratio, w * self.ratio):
            raise ProblemError(f"LR-HSI is {h}x{w} but the HR-MSI {big_h}x{big_w} at ratio {self.ratio} needs "
                               f"{h * self.ratio}x{w * self.ratio}")
        if self.srf is None:
            raise ProblemError("tiled fusion needs a known SRF (--srf): estimating it needs the whole scene")
        if self.srf.hsi_bands != self.hsi_bands or self.srf.msi_bands != self.msi_bands:
            raise ProblemError(f"SRF {self.srf.name!r} maps {self.srf.hsi_bands} to {self.srf.msi_bands} bands, but "
                               f"the LR-HSI has {self.hsi_bands} bands and the HR-MSI {self.msi_bands}")
        if self.psf is not None:
            self.psf = np.asarray(self.psf, dtype=np.float64)
            if self.psf.ndim != 2 or not np.isfinite(self.psf).all():
                raise ProblemError(f"the PSF must be a finite 2-D kernel; got shape {self.psf.shape}")
        if self.offset is not None and not (int(self.offset) == self.offset and 0 <= self.offset < self.ratio):
            raise ProblemError(f"offset must be an integer in 0..{self.ratio - 1}; got {self.offset!r}")

    def with_estimated_psf(self) -> TiledProblem:
        """The problem with its unknown PSF fitted on the central :data:`PSF_WINDOW` square of LR pixels
        (and the HR pixels they cover): the blind Gaussian fit the whole-scene methods run on the whole
        images (:func:`~fusion_explorer.methods.unmixing.setup.spatial_model_fit`; on a scene no larger
        than the window, the same fit). ``attrs`` gain ``psf`` (what was fitted, where) and ``psf_misfit``
        (the fit's relative misfit, which SCALMU's learned parts read). A known PSF is kept as it is."""
        from ..methods.unmixing.setup import gaussian_psf_fit

        if self.psf is not None:
            return self
        (h, w), r = self.lr_size, self.ratio
        ly0, lx0 = max(0, (h - PSF_WINDOW) // 2), max(0, (w - PSF_WINDOW) // 2)
        ly1, lx1 = min(h, ly0 + PSF_WINDOW), min(w, lx0 + PSF_WINDOW)
        lr = _window(self.lr_hsi, ly0, ly1, lx0, lx1)
        msi = _window(self.hr_msi, ly0 * r, ly1 * r, lx0 * r, lx1 * r)
        where = "the whole scene" if (ly1 - ly0, lx1 - lx0) == (h, w) else (
            f"the central {(ly1 - ly0) * r}x{(lx1 - lx0) * r} HR pixels")
        op, note, misfit = gaussian_psf_fit(lr, msi, r, where)
        attrs = {**self.attrs, "psf": note, "psf_misfit": misfit}
        return TiledProblem(self.lr_hsi, self.hr_msi, self.srf, r, op.kernel.numpy(), op.offset, op.border, attrs)

    def spatial_operator(self) -> SpatialDegradation:
        if self.psf is None:
            raise ProblemError("tiled cnmf needs a PSF: a known one (--protocol or --psf-sigma) or one fitted "
                               "first (TiledProblem.with_estimated_psf, which fuse_tiled runs)")
        offset = self.offset if self.offset is not None else default_offset(self.ratio)
        return SpatialDegradation(self.psf, self.ratio, offset, self.border)

    @property
    def psf_misfit(self) -> float | None:
        """The relative misfit of the PSF fitted by :meth:`with_estimated_psf` (``None``: the PSF was given)."""
        return self.attrs.get("psf_misfit")

    def lr_values(self) -> np.ndarray:
        """The LR-HSI ``(L, h, w)`` float32 in memory, negatives clipped to 0.

        A lazy cube is read a row of chunks at a time into one array (``compute()`` of the whole
        would hold the chunks and their concatenation at once: twice the LR grid, 1 GB at 8192²)."""
        data = self.lr_hsi.data
        out = np.empty(data.shape, dtype=np.float32)
        step = data.chunks[1][0] if hasattr(data, "chunks") and data.chunks is not None else max(1, data.shape[1])
        for y0 in range(0, data.shape[1], step):
            rows = data[:, y0 : y0 + step]
            part = out[:, y0 : y0 + step]
            part[...] = rows.compute() if hasattr(rows, "compute") else np.asarray(rows)
            if not np.isfinite(part).all():
                raise CubeError("the LR-HSI has non-finite values (NaN or Inf)")
            np.maximum(part, 0, out=part)
        return out

    def validate(self, compute=None) -> dict:
        """Check the values chunk by chunk (:func:`validate_lazy`) and the scales of both images;
        returns the HR-MSI's statistics (``band_means`` for the sum-to-one weight)."""
        msi_stats = validate_lazy(as_lazy(self.hr_msi), what="HR-MSI", compute=compute)
        lr_stats = validate_lazy(as_lazy(self.lr_hsi), what="LR-HSI", compute=compute)
        expected = float((np.asarray(self.srf.matrix) @ lr_stats["band_means"]).sum())
        got = float(msi_stats["band_means"].sum())
        if expected > 0 and got > 0:
            factor = got / expected
            if max(factor, 1 / factor) > 3 and math.isfinite(factor):
                raise ProblemError(f"the LR-HSI and the HR-MSI are on different scales (the HR-MSI's mean is "
                                   f"{factor:.3g} times the SRF applied to the LR-HSI); put both on one scale")
        return msi_stats


def _window(cube: xr.DataArray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``cube[:, y0:y1, x0:x1]`` in memory, float64, negatives set to 0 (as the fused inputs are clipped)."""
    data = cube.data[:, y0:y1, x0:x1]
    out = np.asarray(data.compute() if hasattr(data, "compute") else data, dtype=np.float64)
    if not np.isfinite(out).all():
        raise CubeError("the images have non-finite values (NaN or Inf) where the PSF is fitted")
    return np.maximum(out, 0)
