"""HySure: subspace-regularised convex fusion with blind SRF and PSF estimation (method ``hysure``).

Simões, Bioucas-Dias, Almeida & Chanussot, "A convex formulation for hyperspectral image
superresolution via subspace-based regularization", IEEE TGRS 53(6), 2015. With images as matrices
(bands x pixels), the HR-HSI is ``Z = E X``, ``E`` ``(L, p)`` the first ``p`` left singular vectors
of the LR-HSI, and ``X`` ``(p, N)`` solves::

    min_X  ½ ||Y_h - E X B M||²  +  λ_m/2 ||Y_m - R E X||²  +  λ_φ Σ_j sqrt(Σ_i (X D_h)_ij² + (X D_v)_ij²)

``B``: the PSF as a circular (FFT) blur on the HR grid; ``M``: the decimation, a mask keeping the
pixels ``offset + ratio j``; ``R``: the SRF; ``D_h, D_v``: circular horizontal/vertical differences;
the last term is the vector total variation of the ``p`` coefficient images. ADMM (SALSA) with the
splittings ``V_1 = X B``, ``V_2 = X``, ``V_3 = X D_h``, ``V_4 = X D_v`` (penalty ``μ``)::

    X   ← [Σ_i (V_i + D_i) H_iᵀ] (Σ_i H_i H_iᵀ)⁻¹                (diagonal in Fourier: FFTs)
    V_1 ← XB - D_1, and on the mask (Eᵀ Y_h + μ (XB - D_1)) / (1 + μ)
    V_2 ← (λ_m (RE)ᵀ RE + μ I)⁻¹ (λ_m (RE)ᵀ Y_m + μ (X - D_2))   (per pixel)
    V_3, V_4 ← vector soft threshold of (X D_h - D_3, X D_v - D_4) at λ_φ / μ
    D_i ← D_i - (X H_i - V_i)

Blind estimation (the paper's Section on "Estimation of R and B"), both quadratic problems:

- ``R``: ``R Y_h = R Z B M`` and ``Y_m B M = R Z B M``; the unknown ``B`` is made negligible by a
  stronger common blur (the relative-blur trick): the LR-HSI is blurred by a Gaussian of
  ``srf_blur`` LR pixels, the HR-MSI by the same Gaussian on the HR grid (``ratio x srf_blur`` HR
  pixels) and decimated; then, per MSI band, ``min_r ||rᵀ Ỹ_h - ỹ_m||² + λ_R ||D r||²`` (``D``:
  first differences along wavelength: a smooth response), optionally with ``r ≥ 0``.
- ``B``: with ``R`` known, ``min_k ||R Y_h - (Y_m ⋆ k) M||² + λ_B (||D_h k||² + ||D_v k||²)`` over
  a ``psf_size x psf_size`` kernel ``k`` (correlation, reflect-101 borders), solved by its normal
  equations. The kernel used is then clipped at 0 and normalised to sum 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import nnls

from ..cube import make_cube
from ..errors import ProblemError
from ..estimate import difference_gram
from ..physics import SpatialDegradation
from ..problem import FusionProblem, FusionResult
from .base import ProgressCallback, register
from .gsa import check_signal, sampling_offset, upsample

#: the estimated PSF's largest default side (its normal matrix has side² rows)
MAX_DEFAULT_PSF_SIZE = 31
#: HR images up to this many pixels run the ADMM on one CPU thread by default
SMALL_IMAGE_PIXELS = 128 * 128


# ------------------------------------------------------------------------------ estimation


def subspace(lr: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """``(E (L, p), singular values (min(L, n),))``: the first ``p`` left singular vectors of
    the LR-HSI ``(L, n)`` (not centred: the mean spectrum lies in the subspace)."""
    u, s, _ = np.linalg.svd(lr, full_matrices=False)
    return u[:, :p], s


def srf_from_images(
    lr: np.ndarray,
    msi: np.ndarray,
    ratio: int,
    offset: int,
    *,
    blur: float = 1.0,
    weight: float = 1e-2,
    nonnegative: bool = True,
) -> np.ndarray:
    """The SRF ``(msi_bands, hsi_bands)`` from the two images (module docstring, relative blur).

    ``lr`` ``(L, h, w)``, ``msi`` ``(l, H, W)``; ``blur``: the common Gaussian's sigma in LR pixels;
    ``weight``: ``λ_R`` relative to the mean diagonal of ``Ỹ_h Ỹ_hᵀ``.
    """
    y_h = ndimage.gaussian_filter(lr, sigma=(0, blur, blur), mode="mirror") if blur > 0 else lr
    y_m = ndimage.gaussian_filter(msi, sigma=(0, ratio * blur, ratio * blur), mode="mirror") if blur > 0 else msi
    y_m = y_m[:, offset::ratio, offset::ratio][:, : lr.shape[1], : lr.shape[2]]
    return srf_regression(y_h, y_m, weight=weight, nonnegative=nonnegative)


def srf_regression(y_h: np.ndarray, y_m: np.ndarray, *, weight: float, nonnegative: bool) -> np.ndarray:
    """``R`` ``(l, L)`` minimising ``||R y_h - y_m||² + λ_R ||R Dᵀ||²`` (``y_h`` ``(L, h, w)``, ``y_m``
    ``(l, h, w)`` on the same grid; ``λ_R = weight x`` mean diagonal of ``y_h y_hᵀ``), with
    ``R ≥ 0`` when ``nonnegative``."""
    bands = y_h.shape[0]
    a = y_h.reshape(bands, -1)
    gram = a @ a.T
    lam = weight * float(np.trace(gram)) / bands
    d = np.diff(np.eye(bands), axis=0)  # (L-1, L) first differences
    out = np.empty((y_m.shape[0], bands))
    for m in range(y_m.shape[0]):
        target = y_m[m].ravel()
        if nonnegative:
            stacked = np.concatenate([a.T, np.sqrt(lam) * d], axis=0)
            out[m] = nnls(stacked, np.concatenate([target, np.zeros(d.shape[0])]), maxiter=50 * bands)[0]
        else:
            out[m] = np.linalg.solve(gram + lam * d.T @ d + 1e-12 * np.eye(bands) * max(lam, 1e-300), a @ target)
    return out


def psf_from_images(
    lr: np.ndarray, msi: np.ndarray, srf: np.ndarray, ratio: int, offset: int, size: int, *, weight: float = 1e-3
) -> np.ndarray:
    """The raw PSF estimate ``(size, size)`` (module docstring): least squares of
    ``(Y_m ⋆ k) M`` on ``R Y_h`` with a smoothness penalty ``weight`` (relative to the mean
    diagonal of the normal matrix)."""
    half = size // 2
    if half >= min(msi.shape[1:]):
        raise ProblemError(f"a {size}x{size} PSF needs an HR-MSI larger than {half}x{half}; got {msi.shape[1:]}")
    target = np.einsum("mb,byx->myx", srf, lr)  # (l, h, w)
    padded = np.pad(msi, ((0, 0), (half, half), (half, half)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
    rows = offset + ratio * np.arange(lr.shape[1])
    cols = offset + ratio * np.arange(lr.shape[2])
    phi = windows[:, rows][:, :, cols].reshape(-1, size * size)  # (l h w, size²)
    gram = phi.T @ phi
    lam = weight * float(np.trace(gram)) / gram.shape[0]
    k = np.linalg.solve(gram + lam * difference_gram(size), phi.T @ target.ravel())
    return k.reshape(size, size)


def usable_psf(raw: np.ndarray) -> np.ndarray:
    """A raw estimate as a PSF: negative values clipped, normalised to sum 1."""
    k = np.clip(raw, 0, None)
    if not k.sum() > 0:
        raise ProblemError("the PSF estimate has no positive value; give the PSF or check the images' registration")
    return k / k.sum()


# ------------------------------------------------------------------------------ ADMM


def correlation_transfer(kernel: np.ndarray, hr_size: tuple[int, int], device, dtype) -> torch.Tensor:
    """``T`` with ``rfft2(x ⋆ k) = T rfft2(x)`` for a circular correlation with the centred ``kernel``."""
    big_h, big_w = hr_size
    kh, kw = kernel.shape
    if kh > big_h or kw > big_w:
        raise ProblemError(f"a {kh}x{kw} PSF does not fit the {big_h}x{big_w} HR grid")
    k0 = np.zeros((big_h, big_w))
    for u in range(kh):
        for v in range(kw):
            k0[(u - kh // 2) % big_h, (v - kw // 2) % big_w] += kernel[u, v]
    t = np.conj(np.fft.rfft2(k0))
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    return torch.as_tensor(t, dtype=cdtype, device=device)


def _difference_transfers(hr_size, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    dh = np.zeros((1, 3))
    dh[0, 1], dh[0, 2] = -1.0, 1.0  # x[.., j+1] - x[.., j]
    return (correlation_transfer(dh, hr_size, device, dtype), correlation_transfer(dh.T, hr_size, device, dtype))


def _check_positive(name: str, value: Any, integer: bool = False) -> None:
    bad = not (value > 0) if not integer else (int(value) != value or value < 1)
    if bad:
        raise ProblemError(f"{name} must be a positive {'integer' if integer else 'number'}; got {value!r}")


@register("hysure", "HySure (Simoes et al. 2015): subspace + vector TV by ADMM, blind SRF/PSF", iterative=True)
def hysure(
    problem: FusionProblem,
    *,
    device: torch.device,
    progress: ProgressCallback | None = None,
    seed: int = 0,
    estimate_srf: bool | None = None,
    estimate_psf: bool | None = None,
    iterations: int = 200,
    p: int = 10,
    lambda_phi: float = 1e-3,
    lambda_m: float = 1.0,
    mu: float = 5e-2,
    psf_size: int | None = None,
    srf_blur: float = 1.0,
    lambda_r: float = 1e-2,
    srf_nonnegative: bool = True,
    lambda_b: float = 1e-3,
    estimation_rounds: int = 1,
    dtype: str = "float32",
    snapshot_every: int | None = None,
    threads: int | None = None,
) -> FusionResult:
    """Fuse with HySure (formulas in the module docstring).

    Options (defaults chosen on CAVE crops in this project, not the paper's own values):

    - ``p`` (10): subspace size, capped at the HSI band count and the LR pixel count.
    - ``lambda_phi`` (1e-3): weight of the vector TV; ``lambda_m`` (1): weight of the MSI term;
      ``mu`` (5e-2): the ADMM penalty; ``iterations`` (200): ADMM iterations.
    - ``estimate_srf`` / ``estimate_psf``: ``None`` (default) estimates a response only when the
      problem lacks it; ``True`` estimates it even when known; ``False`` requires it.
    - ``psf_size``: side of the estimated PSF (odd); default ``min(2 ratio - 1, 31)``.
    - ``srf_blur`` (1.0): sigma, in LR pixels, of the common blur of the relative-blur trick (0: no
      blur; on the full CAVE scenes at x32, where the PSF is narrow and the LR-HSI aliased,
      ``srf_blur=0, lambda_r=0.1`` estimated the SRF better than the defaults, at x8 the defaults
      were better; the estimation errors of the defaults are in benchmarks/RESULTS.md);
      ``lambda_r`` (1e-2): spectral smoothness weight of the SRF estimate; ``srf_nonnegative``
      (True): solve it with ``r ≥ 0`` (NNLS; the paper's problem is unconstrained).
    - ``lambda_b`` (1e-3): spatial smoothness weight of the PSF estimate.
    - ``estimation_rounds`` (1, the paper's procedure): with both responses estimated, rounds
      after the first re-estimate ``R`` from the exact relation ``R Y_h = (Y_m ⋆ k) M`` with the
      current PSF, then the PSF again (an addition of ours; it helped on 256x256 CAVE crops at x8
      and hurt on 128x128 ones, see benchmarks/RESULTS.md).
    - ``dtype``: ``"float32"`` (default) or ``"float64"`` for the ADMM (estimation is float64).
    - ``snapshot_every``: record the fused cube every this many iterations in ``trace``.
    - ``threads``: CPU threads for the ADMM (default: 1 for images of at most 128x128 pixels, as
      for MossFuse, else torch's setting; on a shared 2-core machine under load, 2 threads were
      slower than 1).

    ``result.psf`` and ``result.srf`` hold the *estimated* responses, as MossFuse's do (``None``
    for a response taken from the problem): the PSF ``(size, size)`` summing to 1, the SRF as an
    :class:`~fusion_explorer.srf.SRF` (rows normalised) when wavelengths are known.
    ``extras["srf_matrix"]`` (raw, not normalised) and ``extras["psf_used"]`` are the responses the
    ADMM used either way; ``extras["srf_source"]`` and ``extras["psf_source"]`` say where each came
    from (``"known ..."`` or ``"estimated ..."``).

    ``progress(done, total, info)`` is called every 10 iterations with the relative primal residual
    ``||X - V_2|| / ||X||``; raising from it cancels. The output is ``E X`` clipped at 0.
    Deterministic (no randomness).
    """
    for name, value in (("lambda_phi", lambda_phi), ("lambda_m", lambda_m), ("mu", mu)):
        _check_positive(name, value)
    _check_positive("iterations", iterations, integer=True)
    _check_positive("p", p, integer=True)
    if dtype not in ("float32", "float64"):
        raise ProblemError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    lr, msi = check_signal(problem, "HySure")
    ratio, offset, (big_h, big_w) = problem.ratio, sampling_offset(problem), problem.hr_size
    bands, (h, w) = lr.shape[0], lr.shape[1:]
    extras: dict[str, Any] = {}

    # --- the SRF ------------------------------------------------------------------------------
    if estimate_srf is False and problem.srf is None:
        raise ProblemError("estimate_srf=False but the problem has no SRF; give one or let HySure estimate it")
    if estimate_srf or problem.srf is None:
        srf = srf_from_images(
            lr, msi, ratio, offset, blur=srf_blur, weight=lambda_r, nonnegative=srf_nonnegative
        )
        extras["srf_source"] = f"estimated (relative blur {srf_blur:g} LR px, lambda_r {lambda_r:g})"
        if not np.abs(srf).sum() > 0:
            raise ProblemError("the SRF estimate is all zero: the images share no linear spectral relation")
    else:
        srf = np.asarray(problem.srf.matrix, dtype=np.float64)
        extras["srf_source"] = f"known ({problem.srf.name})"
    srf_known = not extras["srf_source"].startswith("estimated")

    # --- the PSF ------------------------------------------------------------------------------
    if estimate_psf is False and problem.psf is None:
        raise ProblemError("estimate_psf=False but the problem has no PSF; give one or let HySure estimate it")
    _check_positive("estimation_rounds", estimation_rounds, integer=True)
    if estimate_psf or problem.psf is None:
        size = int(psf_size) if psf_size is not None else min(2 * ratio - 1, MAX_DEFAULT_PSF_SIZE)
        if size < 1 or size % 2 == 0:
            raise ProblemError(f"psf_size must be a positive odd integer; got {psf_size!r}")
        raw = psf_from_images(lr, msi, srf, ratio, offset, size, weight=lambda_b)
        psf = usable_psf(raw)
        for _ in range(int(estimation_rounds) - 1 if not srf_known else 0):
            seen = SpatialDegradation(psf, ratio, offset, problem.border)(torch.as_tensor(msi)).numpy()
            srf = srf_regression(lr, seen, weight=lambda_r, nonnegative=srf_nonnegative)
            raw = psf_from_images(lr, msi, srf, ratio, offset, size, weight=lambda_b)
            psf = usable_psf(raw)
        extras.update(psf_source=f"estimated ({size}x{size}, lambda_b {lambda_b:g})", psf_raw_sum=float(raw.sum()))
    else:
        psf = np.asarray(problem.psf, dtype=np.float64)
        extras["psf_source"] = "known"

    # --- subspace and ADMM -------------------------------------------------------------------
    n_lr = h * w
    p_used = int(min(p, bands, n_lr))
    e, singular = subspace(lr.reshape(bands, -1), p_used)
    dev = device if device is not None else torch.device("cpu")
    before = torch.get_num_threads()
    if threads is None and dev.type == "cpu" and big_h * big_w <= SMALL_IMAGE_PIXELS:
        threads = 1
    if threads:
        torch.set_num_threads(int(threads))
    try:
        data = _AdmmData.build(e, lr, msi, srf, psf, ratio, offset, lambda_m, mu, (big_h, big_w), dev, tdtype)
        x0 = np.einsum("bp,byx->pyx", e, upsample(lr, (big_h, big_w), ratio, offset))
        x, trace, residual = _admm(data, x0, lambda_phi / mu, int(iterations), progress, snapshot_every)
    finally:
        torch.set_num_threads(before)
    for step in trace:
        step["fused"] = np.einsum("bp,pyx->byx", e, step.pop("x")).astype(np.float32)
    z = np.einsum("bp,pyx->byx", e, x)
    cube = make_cube(np.clip(z, 0, None), problem.wavelength, attrs=dict(problem.lr_hsi.attrs))
    extras.update(
        srf_matrix=srf,
        singular_values=singular,
        subspace=e,
        primal_residual=residual,
    )
    params = {
        "p": p_used,
        "lambda_phi": lambda_phi,
        "lambda_m": lambda_m,
        "mu": mu,
        "iterations": int(iterations),
        "estimate_srf": estimate_srf,
        "estimate_psf": estimate_psf,
        "dtype": dtype,
        "estimation_rounds": int(estimation_rounds),
    }
    # like MossFuse's, ``result.srf``/``result.psf`` are estimates (the app shows them as such); a
    # known response is not repeated there, and the ones used are always in extras
    srf_out = None if srf_known else _as_srf(srf, problem)
    psf_out = None if extras["psf_source"] == "known" else psf
    extras["psf_used"] = psf
    return FusionResult(cube, "hysure", params=params, trace=trace, srf=srf_out, psf=psf_out, extras=extras)


def _as_srf(matrix: np.ndarray, problem: FusionProblem):
    """The SRF used, as an :class:`~fusion_explorer.srf.SRF` when wavelengths are known (the known
    one as is), else the matrix."""
    from ..srf import SRF

    wl = problem.wavelength
    if wl is None:
        return matrix
    names = None
    if "band_name" in problem.hr_msi.coords:
        names = [str(v) for v in problem.hr_msi.coords["band_name"].values]
    try:
        return SRF.from_matrix(matrix, wl, band_names=names, name="hysure-estimate", provenance="estimated by HySure")
    except Exception:  # a degenerate estimate (e.g. a row of zeros) is still returned as numbers
        return matrix


@dataclass
class _AdmmData:
    """The fixed parts of the ADMM, on the device: transfer functions ``(H, W // 2 + 1)`` of the blur
    (``tb``) and of the two differences (``td``, stacked ``(2, 1, ...)``), the X-update denominator,
    the mask, ``Eᵀ Y_h`` on the mask (``ety``), ``(λ_m (RE)ᵀRE + μI)⁻¹`` and the spectrum of
    ``λ_m (RE)ᵀ Y_m``."""

    tb: torch.Tensor
    td: torch.Tensor
    denom: torch.Tensor
    mask: torch.Tensor
    ety: torch.Tensor
    a_inv: torch.Tensor
    f_rety: torch.Tensor
    mu: float
    shape: tuple[int, int]

    @classmethod
    def build(cls, e, lr, msi, srf, psf, ratio, offset, lambda_m, mu, shape, dev, tdtype) -> _AdmmData:
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=tdtype, device=dev)

        p, (h, w) = e.shape[1], lr.shape[1:]
        tb = correlation_transfer(psf, shape, dev, tdtype)
        td = torch.stack(_difference_transfers(shape, dev, tdtype))[:, None]
        denom = tb.abs().square() + 1 + td.abs().square().sum(0)
        mask = torch.zeros(shape, dtype=tdtype, device=dev)
        rows, cols = offset + ratio * np.arange(h), offset + ratio * np.arange(w)
        mask[np.ix_(rows, cols)] = 1.0
        ety = torch.zeros((p, *shape), dtype=tdtype, device=dev)
        ety[:, rows[:, None], cols[None, :]] = t(np.einsum("bp,byx->pyx", e, lr))
        re = srf @ e  # (l, p)
        a_inv = t(np.linalg.inv(lambda_m * re.T @ re + mu * np.eye(p))).to(tb.dtype)
        f_rety = torch.fft.rfft2(t(lambda_m * np.einsum("mp,myx->pyx", re, msi)))
        return cls(tb, td, denom, mask, ety, a_inv, f_rety, mu, shape)


def _admm(data: _AdmmData, x0: np.ndarray, threshold: float, iterations: int, progress, snapshot_every):
    """The ADMM of the module docstring; returns ``(X (p, H, W) float64, trace, primal residual)``.

    Each variable is kept where its update is cheap: ``V_2, D_2`` (a per-pixel linear map of ``X``)
    in the Fourier domain, ``D_1`` (non-zero on the mask only) and ``V_3, V_4, D_3, D_4`` in the
    image domain, and for the X-update only the spectra ``G_i = F(V_i + D_i)``. With the
    D-updates folded in (``V_1 + D_1' = ν_1 + 2 D_1'``, ``D_1' = mask (Eᵀ Y_h - ν_1) / (1 + μ)``;
    ``V_j + D_j' = 2 V_j - ν_j`` for the TV terms), an iteration costs 3 inverse and 3 forward FFTs.
    """
    shape, mu = data.shape, data.mu
    fx = torch.fft.rfft2(torch.as_tensor(x0, dtype=data.mask.dtype, device=data.mask.device))
    # start: V_i = X H_i, D_i = 0
    g1 = fx * data.tb
    g2 = fx.clone()
    g34 = fx * data.td.abs().square().sum(0)
    d1 = torch.zeros_like(data.ety)
    fd2 = torch.zeros_like(fx)
    d34 = torch.zeros((2, *data.ety.shape), dtype=data.ety.dtype, device=data.ety.device)
    trace: list[dict] = []
    residual = float("nan")
    for it in range(1, iterations + 1):
        fx = (g1 * data.tb.conj() + g2 + g34) / data.denom
        # V_1 / D_1: the LR-HSI term on the mask
        nu1 = torch.fft.irfft2(fx * data.tb, s=shape) - d1
        d1 = data.mask * (data.ety - nu1) / (1 + mu)
        g1 = torch.fft.rfft2(nu1 + 2 * d1)
        # V_2 / D_2: the HR-MSI term, per pixel, in the Fourier domain
        fv2 = torch.einsum("pq,qyx->pyx", data.a_inv, data.f_rety + mu * (fx - fd2))
        fd2 = fd2 - fx + fv2
        g2 = fv2 + fd2
        # V_3, V_4 / D_3, D_4: vector soft threshold over the p coefficients and both directions
        nu = torch.fft.irfft2(fx[None] * data.td, s=shape) - d34
        norm = nu.square().sum((0, 1), keepdim=True).sqrt()
        v = (1 - threshold / norm.clamp_min(1e-30)).clamp_min(0) * nu
        d34 = v - nu
        g34 = (torch.fft.rfft2(2 * v - nu) * data.td.conj()).sum(0)
        if it % 10 == 0 or it == iterations:
            x = torch.fft.irfft2(fx, s=shape)
            residual = float(torch.fft.irfft2(fx - fv2, s=shape).norm() / x.norm().clamp_min(1e-30))
            if progress is not None:
                progress(it, iterations, {"stage": "admm", "primal_residual": residual})
        if snapshot_every and (it % int(snapshot_every) == 0 or it == iterations):
            x = torch.fft.irfft2(fx, s=shape).cpu().double().numpy()
            trace.append({"iteration": it, "label": f"ADMM {it}", "x": x})
    return torch.fft.irfft2(fx, s=shape).cpu().double().numpy(), trace, residual
