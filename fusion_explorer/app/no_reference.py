"""Real pairs without truth: the Wald view of a same-resolution pair, and no-reference diagnostics.

A real pair (the Paris Hyperion/ALI file, or an uploaded LR-HSI with an uploaded HR-MSI) has no HR
hyperspectral truth, so nothing is scored against one. What can be checked is consistency: a fused
cube ``Z`` ``(bands, Y, X)`` should reproduce both inputs through the two sensors,

- HSI: ``S(Z) ≈ Y_h`` with ``S`` the PSF blur and decimation of the problem,
- MSI: ``R Z ≈ Y_m`` with ``R`` the SRF ``(msi_bands, hsi_bands)``.

:class:`Diagnostics` computes, per input, the relative residual ``‖S(Z) − Y_h‖_F / ‖Y_h‖_F`` (and the
same for the MSI) and the per-pixel residual maps (norm over bands). Which ``S`` and ``R`` are used is
said in the ``how`` entry: the known ones where the problem has them; else, for the SRF, one estimated once
from the inputs (non-negative least squares of the spatially degraded MSI on the LR-HSI, per MSI band with
an offset: ``S(Y_m) ≈ R Y_h + c``) and for the PSF a box average over each ``ratio`` block (a stated
guess). Every run of a problem is checked through the same ``S`` and ``R``, so the rows compare: a blind
method's own SRF estimate is not used (on the Paris Wald view CNMF's and HySure's own SRFs are on another
scale and give MSI residuals near 0.74 for cubes that reproduce the MSI to 0.016 and 0.024 through the common one).

A pair stored at one resolution (Paris: both 30 m, ratio 1) is not a fusion problem as it stands. The
dashboard then shows the **Wald view** (:func:`wald_problem`): the LR-HSI is the stored HSI blurred by a
Gaussian PSF and decimated by ``r``; the HR-MSI is the stored MSI, untouched. The stored HSI becomes a
*reference* at the MSI's resolution: shown as an image and a spectrum, labelled "Wald reference", never
used as a truth for metrics (it is the same sensor's image, not the HR truth a fusion aims at).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..errors import FusionExplorerError


class PairError(FusionExplorerError):
    """A real pair that cannot be shown (sizes, bands, a ratio the images do not allow)."""


@dataclass
class RealPair:
    """What the data panel publishes for a real pair: the problem, the Wald reference (or None) and a note."""

    problem: Any  # FusionProblem (truth None)
    reference: xr.DataArray | None = None
    note: str = ""
    wald_ratio: int | None = None


def _as_matrix(srf: Any) -> np.ndarray | None:
    if srf is None:
        return None
    m = getattr(srf, "matrix", srf)
    if isinstance(m, torch.Tensor):
        m = m.detach().cpu().numpy()
    m = np.asarray(m, dtype=np.float64)
    return m if m.ndim == 2 else None


def wald_problem(lr_hsi: xr.DataArray, hr_msi: xr.DataArray, ratio: int, sigma: float, note: str = "") -> RealPair:
    """The Wald view of a same-resolution pair: HSI blurred (Gaussian ``sigma`` HR pixels) and decimated by
    ``ratio``, MSI as stored, both cut to the central multiple of ``ratio``; the stored HSI is the reference."""
    from ..cube import from_tensor, to_tensor
    from ..physics import make_protocol
    from ..problem import FusionProblem
    from ..scenes import center_crop

    ratio = int(ratio)
    if lr_hsi.sizes["y"] != hr_msi.sizes["y"] or lr_hsi.sizes["x"] != hr_msi.sizes["x"]:
        raise PairError(f"the Wald view needs both images on one grid; the HSI is {lr_hsi.sizes['y']}x"
                        f"{lr_hsi.sizes['x']}, the MSI {hr_msi.sizes['y']}x{hr_msi.sizes['x']}")
    if min(lr_hsi.sizes["y"], lr_hsi.sizes["x"]) < 2 * ratio:
        raise PairError(f"the images ({lr_hsi.sizes['y']}x{lr_hsi.sizes['x']}) are too small for a Wald view at "
                        f"ratio {ratio}; pick a smaller ratio")
    ref = center_crop(lr_hsi, None, ratio)
    msi = center_crop(hr_msi, None, ratio)
    proto = make_protocol(ratio, float(sigma), srf=None)
    low = proto.spatial()(to_tensor(ref, "cpu", torch.float64))
    lr = from_tensor(low, ref, attrs={**ref.attrs, "kind": "LR-HSI (Wald view)", "wald_ratio": ratio,
                                      "wald_sigma": float(sigma)})
    ys, xs = (ref.coords[d].values if d in ref.coords else np.arange(ref.sizes[d]) for d in ("y", "x"))
    lr = lr.assign_coords(y=ys[proto.offset::ratio], x=xs[proto.offset::ratio])
    ref = ref.copy()
    ref.attrs = {**ref.attrs, "kind": "Wald reference (the stored HSI at the MSI's resolution; not ground truth)"}
    name = f"{ref.attrs.get('scene', 'pair')} / Wald view x{ratio}"
    problem = FusionProblem(lr_hsi=lr, hr_msi=msi, sensors=proto.with_parts(srf=None), name=name,
                            attrs={"real_pair": True, "wald_ratio": ratio})
    return RealPair(problem, ref, note, ratio)


def pair_problem(lr_hsi: xr.DataArray, hr_msi: xr.DataArray, note: str = "") -> RealPair:
    """A real pair at different resolutions as it is (ratio from the sizes, PSF and SRF unknown)."""
    from ..problem import FusionProblem

    h, w = lr_hsi.sizes["y"], lr_hsi.sizes["x"]
    big_h, big_w = hr_msi.sizes["y"], hr_msi.sizes["x"]
    if big_h < h or big_w < w or big_h % h or big_w % w or big_h // h != big_w // w:
        raise PairError(f"the HR-MSI ({big_h}x{big_w}) must be a whole multiple of the LR-HSI ({h}x{w}), the same on "
                        "both axes")
    problem = FusionProblem(lr_hsi=lr_hsi, hr_msi=hr_msi, name=f"{lr_hsi.attrs.get('scene', 'pair')} / real pair",
                            attrs={"real_pair": True})
    return RealPair(problem, None, note, None)


@dataclass
class Diagnostics:
    """No-reference diagnostics of fused cubes on one problem (see the module docstring)."""

    problem: Any
    _srf: np.ndarray | None = field(default=None, repr=False)
    _srf_how: str = ""

    def __post_init__(self) -> None:
        pb = self.problem
        self.lr = np.asarray(pb.lr_hsi.values, dtype=np.float64)
        self.msi = np.asarray(pb.hr_msi.values, dtype=np.float64)
        self.ratio = int(pb.ratio)
        op = pb.spatial_operator() if pb.psf is not None or getattr(pb.sensors, "sigma", None) else None
        self._spatial = op
        box = f"a {self.ratio}x{self.ratio} box average (PSF unknown)"
        self.psf_how = "the problem's PSF" if op is not None else box

    # -------------------------------------------------------------- operators
    def degrade(self, z: np.ndarray) -> np.ndarray:
        """``S(z)``: ``(bands, Y, X)`` -> ``(bands, y, x)`` with the known PSF, else a box average."""
        z = np.asarray(z, dtype=np.float64)
        if self._spatial is not None:
            return self._spatial(torch.from_numpy(np.ascontiguousarray(z))).numpy()
        r = self.ratio
        b, hh, ww = z.shape
        h, w = hh // r, ww // r
        return z[:, : h * r, : w * r].reshape(b, h, r, w, r).mean(axis=(2, 4))

    def srf(self, result: Any = None) -> tuple[np.ndarray, np.ndarray, str]:
        """``(R, c, how)``: the SRF matrix, a per-band offset and where they came from."""
        known = _as_matrix(self.problem.srf)
        if known is not None:
            return known, np.zeros(known.shape[0]), "the problem's SRF"
        if self._srf is None:
            self._srf = self._estimate_srf()
        return self._srf[0], self._srf[1], "an SRF estimated from the two inputs (NNLS, with offset)"

    def _estimate_srf(self) -> tuple[np.ndarray, np.ndarray]:
        from scipy.optimize import nnls

        target = self.degrade(self.msi).reshape(self.msi.shape[0], -1)  # S(Y_m) (m, n)
        a = self.lr.reshape(self.lr.shape[0], -1).T  # (n, b)
        scale = np.maximum(np.linalg.norm(a, axis=0), 1e-12)
        design = np.hstack([a / scale, np.ones((a.shape[0], 1)), -np.ones((a.shape[0], 1))])
        rows, offsets = [], []
        for j in range(target.shape[0]):
            coef, _ = nnls(design, target[j], maxiter=50 * design.shape[1])
            rows.append(coef[:-2] / scale)
            offsets.append(coef[-2] - coef[-1])
        return np.array(rows), np.array(offsets)

    # -------------------------------------------------------------- diagnostics
    def __call__(self, fused: np.ndarray, result: Any = None, maps: bool = True) -> dict[str, Any]:
        """Relative residuals ``hsi_residual`` and ``msi_residual`` of a fused cube, the maps (``maps``) and
        ``how`` (which PSF and SRF were used)."""
        z = np.asarray(fused, dtype=np.float64)
        if z.shape[1:] != self.msi.shape[1:] or z.shape[0] != self.lr.shape[0]:
            raise PairError(f"the fused cube {z.shape} does not match the problem's HR grid and HSI bands")
        r_h = self.degrade(z) - self.lr
        m, c, srf_how = self.srf(result)
        r_m = np.einsum("mb,byx->myx", m, z) + c[:, None, None] - self.msi
        out: dict[str, Any] = {
            "hsi_residual": float(np.linalg.norm(r_h) / max(np.linalg.norm(self.lr), 1e-12)),
            "msi_residual": float(np.linalg.norm(r_m) / max(np.linalg.norm(self.msi), 1e-12)),
            "how": f"HSI through {self.psf_how}; MSI through {srf_how}",
        }
        if maps:
            out["hsi_map"] = np.sqrt((r_h**2).mean(axis=0)).astype(np.float32)  # (y, x) LR pixels
            out["msi_map"] = np.sqrt((r_m**2).mean(axis=0)).astype(np.float32)  # (Y, X)
        return out
