"""Data consistency: the smallest change that makes a fused cube reproduce both observed images.

The forward model says ``Y_m = R Z`` (SRF, per pixel) and ``Y_h = S(Z)`` (PSF + decimation, per
band). The cubes that reproduce both images form the intersection of two affine subspaces;
:func:`project` moves a fused cube ``Z`` onto it, after an optional guided step:

0. Guided transfer (with ``neighbours``): ``Z ← Z + transfer(Y_h - S Z)``, the LR residual carried
   to the HR pixels of the same colour (:mod:`.guided`) rather than spread by ``Sᵀ`` in step 2.
   It is what the LR-HSI shows and the estimate misses (for an unmixing: the spectra outside the
   endmembers' span), put where the MSI says it belongs. Steps 1-2 then remove what it got wrong.

1. MSI: ``Z ← Z + G (Y_m - R Z)`` with ``G = C Rᵀ (R C Rᵀ)⁻¹``: the smallest change, in the metric of
   a spectral prior covariance ``C`` ``(L, L)``, that gives ``R Z = Y_m`` at every pixel. Read as a
   linear least-squares estimate of the error from its MSI projection, ``C`` says which spectra the
   error is made of: ``C = I`` adds the minimum-norm spectra (``G = R⁺``); :func:`spectral_prior`
   takes them from the endmembers' span, ``C ∝ W Wᵀ`` plus a small ridge.
2. HSI: ``Z ← Z + Sᵀ (S Sᵀ + μ I)⁻¹ (Y_h - S Z)``: the smallest change that gives ``S Z = Y_h`` in
   every band (``S Sᵀ`` is inverted by conjugate gradients on the LR grid). The damping ``μ`` (1e-4
   of ``S Sᵀ``'s largest eigenvalue) leaves alone what the PSF all but erases: a PSF much wider than
   the sampling step (say sigma 2 at ratio 2) makes ``S Sᵀ`` nearly singular (condition 1e8), and
   an undamped solve would blow float rounding and noise up there; damped, an LR residual moves the
   cube by at most ``1/(2 sqrt(μ))`` times its size. For the PSFs of the protocols here (condition 1
   at x32, 1.25 at x8, 37 at x4) the damping changes the correction by 1e-4 of itself.

3. The HSI correction without what the MSI sees of it (``msi_last``, the default): step 2 adds
   ``Δ = (I - G R) Sᵀ (S Sᵀ + μ I)⁻¹ (Y_h - S Z)`` instead. After an exact step 1, what the MSI
   sees of step 2's correction is ``R Sᵀ (S Sᵀ)⁻¹ (Y_h - S Z) = Sᵀ (S Sᵀ)⁻¹ (R Y_h - S Y_m)``:
   nothing when the two images agree, but the whole error of the PSF model where they do not (a
   Moffat or Airy PSF fitted by a Gaussian, a half-pixel offset), which then also undoes step 1. The
   MSI is the sharp image, so its view wins: ``Δ`` keeps of the HSI correction only what the MSI
   cannot see (its spectral null space, in the prior's metric), and ``R Z = Y_m`` still holds.
   With ``msi_step`` below 1 only that fraction of the visible part is removed. On 48 of
   SCALMU's zoo validation items (64x64 dead leaves, PSF estimated, CNMF's start, nothing learned) the
   exact HSI correction cost 5.5 dB on average against none (median 2.1, worst 50.7 dB: a noise-free
   Moffat PSF at x16); followed by step 3, 1.7 dB (median 0.04, worst 13.4 dB). On the noise-free
   Gaussian-PSF x8 CAVE scenes it changes PSNR by +0.01 to +0.04 dB (benchmarks/scalmu_training.md).

Noisy images (``msi_denoise``): the MSI residual ``Y_m - R Z`` of step 1 is, where ``Z`` already fits the
MSI well, mostly the MSI's own noise, and the exact step copies it into every band of the cube. With an
estimate of the noise power the residual is first passed through a local adaptive Wiener filter
(:func:`denoise_residual`, Lee's filter: each pixel keeps of its deviation from the local mean the share
of the local variance that exceeds the noise), so that step 1 corrects the structured part of the
misfit and leaves the noise. :func:`residual_noise` says which noise level to use.

``R`` acts on bands and ``S`` on pixels, so the two projectors commute: one pass of each lands on
the intersection exactly whenever the images are consistent with each other (``R Y_h = S Y_m``:
noise-free, with the true SRF and PSF), with no alternation. With noise, or an estimated SRF/PSF,
the images disagree and an exact fit copies that disagreement into the cube: ``msi_step`` and
``hsi_step`` (``t`` in [0, 1], scalars or ``(B, 1, 1)``) apply only that fraction of each
correction, and :func:`observation_features` measures the disagreement (SCALMU's last layer learns
its steps from them).

Why it matters for an unmixing method: CNMF's output ``W H_m`` pairs ``W`` from the last HSI stage
with ``H_m`` fitted under the previous ``W``, and never fits the LR-HSI at full resolution, so it
reproduces neither image exactly; what the projections (and the guided step) gain on the CAVE
scenes is measured in benchmarks/RESULTS.md (SCALMU section, "cnmf + consistency").

Tensors are flat as in :mod:`.step`: cubes ``(B, L, N)``, ``Y_m`` ``(B, l, N)``, ``Y_h``
``(B, L, n)``, the SRF ``(B or 1, l, L)``; the spatial operator and its adjoint come from
:class:`~.step.CoupledData` (``degrade`` / ``upsample``). Everything is differentiable.
:mod:`fusion_explorer.methods.consistency` re-exports this module under its former name.
"""

from __future__ import annotations

import math

import torch

from ...errors import ProblemError
from .guided import SIGMA, Neighbours, transfer
from .step import CoupledData

#: conjugate-gradient iterations at most for ``(S Sᵀ + μ I) u = r``: 2-3 at x8 and x32 (``S Sᵀ`` is
#: close to a multiple of the identity once the kernel is barely wider than the stride), ~40 for
#: sigma 2 at ratio 4 (condition 37)
CG_ITERATIONS = 60
#: ``μ`` relative to the largest eigenvalue of ``S Sᵀ`` (see the module docstring)
DAMPING = 1e-4
#: relative residual at which the CG stops
CG_TOLERANCE = 1e-6
#: step 3 (the module docstring): the HSI correction keeps only what the MSI does not see
MSI_LAST = True
#: the default ridge of :func:`spectral_prior`: the share of ``C``'s trace that is white
DEFAULT_RIDGE = 1e-2
#: :func:`denoise_residual`'s window: ``2 · half + 1`` HR pixels a side
DENOISE_HALF_WINDOW = 2


def spectral_prior(endmembers: torch.Tensor, ridge: float | torch.Tensor = DEFAULT_RIDGE,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """``C = W A Wᵀ / tr(W A Wᵀ) + ridge · I / L`` ``(B, L, L)`` from endmembers ``W`` ``(B, L, p)``.

    ``A = diag(weights)`` ``(B, p)`` (``None``: the identity). The MSI correction then adds
    spectra from the endmembers' span (the materials the scene is made of) rather than the
    minimum-norm spectra of ``C = I``, which are the SRF's rows themselves; the ridge keeps ``R C Rᵀ``
    invertible when fewer endmembers than MSI bands survive. How it compares with ``C = I`` on
    real crops: benchmarks/RESULTS.md.
    """
    w = endmembers if weights is None else endmembers * weights[..., None, :]
    c = w @ endmembers.transpose(-1, -2)
    trace = c.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(torch.finfo(c.dtype).tiny)
    bands = endmembers.shape[-2]
    eye = torch.eye(bands, dtype=c.dtype, device=c.device)
    ridge = torch.as_tensor(ridge, dtype=c.dtype, device=c.device)
    return c / trace[..., None, None] + ridge.reshape(-1, 1, 1) * eye / bands


def msi_gain(srf: torch.Tensor, prior: torch.Tensor | None = None,
             noise: float | torch.Tensor = 0.0) -> torch.Tensor:
    """``G = C Rᵀ (R C Rᵀ + ν I)⁻¹`` ``(B, L, l)`` (``prior=None``: ``C = I``, ``G = R⁺``).

    ``noise`` (scalar or ``(B,)``) sets ``ν = noise · mean diag(R C Rᵀ)``: 0 is the exact projection;
    above 0 it is the linear MMSE (Wiener) gain for MSI noise of that power relative to the prior's,
    which leaves alone the directions ``R C Rᵀ`` barely sees (an estimated SRF of near-collinear
    bands) instead of amplifying the noise along them."""
    rt = srf.transpose(-1, -2)
    crt = rt if prior is None else prior @ rt
    rcr = srf @ crt
    scale = rcr.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(torch.finfo(rcr.dtype).tiny)
    # + machine epsilon of the mean: an MSI band that sees none of the HSI's bands (a zero SRF row)
    # gets no gain instead of a singular inverse
    nu = torch.as_tensor(noise, dtype=rcr.dtype, device=rcr.device).reshape(-1) + torch.finfo(rcr.dtype).eps
    rcr = rcr + (nu * scale).reshape(-1, 1, 1) * torch.eye(rcr.shape[-1], dtype=rcr.dtype, device=rcr.device)
    return crt @ torch.linalg.inv(rcr)


def denoise_residual(e: torch.Tensor, noise: float | torch.Tensor, hr_size: tuple[int, int],
                     half_window: int = DENOISE_HALF_WINDOW) -> torch.Tensor:
    """``e`` ``(B, c, N)`` (flat images of ``hr_size``) through a local adaptive Wiener filter, band by
    band: ``μ + max(0, v - ν) / v · (e - μ)`` with ``μ, v`` the mean and variance over a window of
    ``2·half_window + 1`` pixels a side (reflected at the borders) and ``ν`` the ``noise`` power
    (scalar or ``(B,)``, in ``e``'s units squared). Where the residual varies no more than noise does it
    is replaced by its local mean; edges and structures well above the noise are kept.

    Lee's filter (J.-S. Lee, "Digital image enhancement and noise filtering by use of local
    statistics", IEEE TPAMI 1980), as ``scipy.signal.wiener`` computes it for one 2-D array; written
    here in torch because it runs on batches of flat multi-band residuals, on the GPU and under
    autograd (SCALMU trains through it)."""
    b, c, n = e.shape
    big_h, big_w = hr_size
    if big_h * big_w != n:
        raise ValueError(f"hr_size {hr_size} does not hold {n} pixels")
    img = e.reshape(b * c, 1, big_h, big_w)
    k = 2 * half_window + 1
    mode = "reflect" if min(big_h, big_w) > half_window else "replicate"
    padded = torch.nn.functional.pad(img, (half_window,) * 4, mode=mode)
    mean = torch.nn.functional.avg_pool2d(padded, k, stride=1)
    var = (torch.nn.functional.avg_pool2d(padded.square(), k, stride=1) - mean.square()).clamp_min(0)
    nu = torch.as_tensor(noise, dtype=e.dtype, device=e.device).reshape(-1, 1, 1, 1, 1)
    nu = nu.expand(b, c, 1, 1, 1).reshape(b * c, 1, 1, 1)
    share = (var - nu).clamp_min(0) / var.clamp_min(torch.finfo(e.dtype).tiny)
    return (mean + share * (img - mean)).reshape(b, c, n)


def residual_noise(data: CoupledData) -> torch.Tensor | None:
    """``(B,)``: the noise power of the MSI residual for :func:`project`'s ``msi_denoise``,
    ``10^level · mean(Y_m²)`` with ``level`` = :attr:`CoupledData.msi_noise_level`
    (:func:`common_noise_level`); ``None`` when the data carry no level or no ``hr_size``."""
    if data.msi_noise_level is None or data.hr_size is None:
        return None
    level = torch.as_tensor(data.msi_noise_level, dtype=data.hr_msi.dtype, device=data.hr_msi.device).reshape(-1)
    return 10.0 ** level * data.hr_msi.square().mean(dim=(-1, -2))


def solve_normal(data: CoupledData, r: torch.Tensor, iterations: int = CG_ITERATIONS,
                 tolerance: float = CG_TOLERANCE, damping: float | torch.Tensor = DAMPING) -> torch.Tensor:
    """``u`` with ``(S Sᵀ + μ I) u = r`` ``(B, L, n)`` by conjugate gradients, every ``(item, band)``
    its own system; ``μ = damping · λ_max(S Sᵀ)``, ``λ_max`` from the Rayleigh quotient of a
    constant image (a blur passes the mean best)."""
    if data.upsample is None:
        raise ProblemError("the HSI correction needs CoupledData.upsample (the adjoint of degrade)")
    ones = torch.ones_like(r[:1, :1])
    top = data.upsample(ones).square().sum() / ones.square().sum()
    if isinstance(damping, torch.Tensor):  # (B,): one damping per item
        mu = damping.to(r.dtype).reshape(-1, 1, 1) * top
    else:
        mu = float(damping) * float(top)

    def normal(v: torch.Tensor) -> torch.Tensor:
        return data.degrade(data.upsample(v)) + mu * v

    u = torch.zeros_like(r)
    res, direction = r, r
    rs = (res * res).sum(-1, keepdim=True)
    stop = tolerance**2 * rs.amax().clamp_min(torch.finfo(r.dtype).tiny)
    tiny = torch.finfo(r.dtype).tiny
    for _ in range(int(iterations)):
        a_dir = normal(direction)
        alpha = rs / (direction * a_dir).sum(-1, keepdim=True).clamp_min(tiny)
        u = u + alpha * direction
        res = res - alpha * a_dir
        rs_new = (res * res).sum(-1, keepdim=True)
        if bool(rs_new.amax() <= stop):
            break
        direction = res + (rs_new / rs.clamp_min(tiny)) * direction
        rs = rs_new
    return u


def project(
    z: torch.Tensor,
    data: CoupledData,
    prior: torch.Tensor | None = None,
    *,
    neighbours: Neighbours | None = None,
    guided_step: float | torch.Tensor = 1.0,
    sigma: float | torch.Tensor = SIGMA,
    msi_step: float | torch.Tensor = 1.0,
    hsi_step: float | torch.Tensor = 1.0,
    cg_iterations: int = CG_ITERATIONS,
    clamp: bool = True,
    msi_noise: float | torch.Tensor = 0.0,
    hsi_noise: float | torch.Tensor = 0.0,
    msi_last: bool | None = None,
    msi_denoise: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """``z`` ``(B, L, N)`` corrected towards both images (see the module docstring), clamped at 0
    (``clamp=False``: not, the exact affine projection).

    With ``msi_step = hsi_step = 1`` and consistent images the result reproduces both exactly
    (up to the CG tolerance and the clamp, which touches only values the correction drove
    negative: 0.1-3 % of a CNMF estimate's on dark CAVE crops); ``prior``: ``C`` ``(B or 1, L, L)``,
    ``None`` = the identity; ``neighbours``: run the guided step first (``guided_step`` of it, with
    similarity width ``sigma``). ``msi_noise``: the MSI step's Wiener term (:func:`msi_gain`);
    ``hsi_noise``: added to the HSI solve's damping (relative to ``λ_max(S Sᵀ)``, as :data:`DAMPING`),
    the same for the LR-HSI's noise. Scalars or ``(B,)``; 0, the default, is the exact projection.
    ``msi_last``: step 3 (the HSI correction less ``msi_step`` of what the MSI sees of it, mapped back
    by the MSI gain); ``None``: :data:`MSI_LAST`. ``msi_denoise``: the MSI residual's noise power (scalar
    or ``(B,)``, e.g. :func:`residual_noise`); the residual goes through :func:`denoise_residual` before
    step 1 (needs ``data.hr_size``); ``None`` or 0: not.
    """
    if neighbours is not None:
        z = z + guided_step * transfer(data.lr_hsi - data.degrade(z), neighbours, sigma)
    gain = msi_gain(data.srf, prior, msi_noise)
    residual = data.hr_msi - data.srf @ z
    if msi_denoise is not None and (isinstance(msi_denoise, torch.Tensor) or msi_denoise):
        if data.hr_size is None:
            raise ValueError("msi_denoise needs CoupledData.hr_size")
        residual = denoise_residual(residual, msi_denoise, data.hr_size)
    z = z + msi_step * (gain @ residual)
    r_h = data.lr_hsi - data.degrade(z)
    damping = DAMPING + hsi_noise if isinstance(hsi_noise, torch.Tensor) or hsi_noise else DAMPING
    correction = hsi_step * data.upsample(solve_normal(data, r_h, cg_iterations, damping=damping))
    if msi_last if msi_last is not None else MSI_LAST:  # step 3: less what the MSI sees of it
        correction = correction - msi_step * (gain @ (data.srf @ correction))
    z = z + correction
    return z.clamp_min(0) if clamp else z


def observation_features(z: torch.Tensor, data: CoupledData) -> torch.Tensor:
    """``(B, 3)`` log10 relative energies: the images' disagreement ``|S Y_m - R Y_h|² / |S Y_m|²``
    (noise, or an SRF/PSF that is not the true one; ~1e-14 for consistent float32 images), and the
    MSI and HSI residuals of ``z``; each floored at 1e-12."""
    def rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        num = a.square().mean(dim=(-1, -2))
        return torch.log10(num / b.square().mean(dim=(-1, -2)).clamp_min(1e-30) + 1e-12)

    lr_msi = data.degrade(data.hr_msi)
    return torch.stack([
        rel(lr_msi - data.srf @ data.lr_hsi, lr_msi),
        rel(data.hr_msi - data.srf @ z, data.hr_msi),
        rel(data.lr_hsi - data.degrade(z), data.lr_hsi),
    ], dim=-1)


#: floor of :func:`noise_features` (log10 noise-to-signal power): below it a band is called noiseless
NOISE_FLOOR_LOG10 = -7.0
#: :func:`noise_features` reads at most the central ``NOISE_WINDOW²`` pixels of each image (0.36 -> 0.1 s
#: on a 512x512 MSI here)
NOISE_WINDOW = 256


def noise_levels(lr_hsi, hr_msi) -> tuple[float, float]:
    """log10 noise-to-signal powers ``mean(σ²) / mean(y²)`` of the LR-HSI and the HR-MSI (``(bands, y, x)``
    cubes, arrays or tensors; the central :data:`NOISE_WINDOW` square), ``σ`` per band from
    :func:`fusion_explorer.estimate.estimate_noise`, floored at :data:`NOISE_FLOOR_LOG10`; NaN for an
    image too small for an estimate (under 5x5 pixels and 16 pixels for the band regression)."""
    import numpy as np

    from ...estimate import estimate_noise

    values: list[float] = []
    for cube in (lr_hsi, hr_msi):
        h, w = cube.shape[-2:]
        top, left = max(0, (h - NOISE_WINDOW) // 2), max(0, (w - NOISE_WINDOW) // 2)
        window = (..., slice(top, top + NOISE_WINDOW), slice(left, left + NOISE_WINDOW))  # 65k pixels are plenty
        if isinstance(cube, torch.Tensor):  # cropped first: a float64 copy of a whole large cube is gigabytes
            y = cube.detach()[window].cpu().double().numpy()
        else:  # an xarray cube or an array
            y = np.asarray(getattr(cube, "values", cube)[window], dtype=np.float64)
        try:
            sigma = estimate_noise(y)
        except ProblemError:  # too few pixels to tell noise from signal (a 2x2 LR-HSI at x32)
            values.append(math.nan)
            continue
        power = float(np.mean(np.square(y)))
        values.append(math.log10(float(np.mean(np.square(sigma))) / max(power, 1e-30) + 10.0 ** NOISE_FLOOR_LOG10))
    return values[0], values[1]


def noise_features(lr_hsi, hr_msi, levels: tuple[float, float] | None = None) -> torch.Tensor:
    """``(2,)`` :func:`noise_levels` of the LR-HSI and the HR-MSI (``levels``: already computed), an
    image too small for an estimate taken to be as noisy as the other one (both: noiseless, the
    floor). At 30 dB SNR the value is -3, noiseless float32 images give about -6 to -7 (the
    estimators' own floor on textured scenes)."""
    lr, msi = noise_levels(lr_hsi, hr_msi) if levels is None else levels
    values = [msi if math.isnan(lr) else lr, lr if math.isnan(msi) else msi]
    return torch.tensor([NOISE_FLOOR_LOG10 if math.isnan(v) else v for v in values], dtype=torch.float32)


def common_noise_level(levels: tuple[float, float]) -> float:
    """The log10 noise-to-signal power the MSI residual is denoised at (:func:`residual_noise`): the
    smaller of the two images' :func:`noise_levels`; ``-inf`` (not denoised) when either image is too
    small for an estimate.

    Why the smaller one: what the noise estimator calls noise in the MSI is partly fine texture of
    the scene (and, for a real "truth", its own sensor noise), which the fused cube must keep; the
    LR-HSI averages that away over its footprint, but not independent sensor noise. On the remote
    crops of the degradation zoo without added noise the MSI's level is 10^-3.8 to 10^-4.4 and the
    LR-HSI's 10^-5.2 to 10^-6.2; with noise added to both images the two agree (10^-3.4 at 35 dB
    SNR). Noise on the MSI alone is therefore not denoised."""
    lr, msi = levels
    return -math.inf if math.isnan(lr) or math.isnan(msi) else min(lr, msi)


#: :func:`sensor_features`' value for a PSF that was given, not fitted
KNOWN_PSF_MISFIT_LOG10 = -6.0


def sensor_features(lr_hsi, hr_msi, srf_estimated: bool, psf_misfit: float | None = None,
                    levels: tuple[float, float] | None = None) -> torch.Tensor:
    """``(4,)``: :func:`noise_features` of the two images (``levels``: their :func:`noise_levels`,
    already computed); 1 if the SRF was estimated from them (0 if given); log10 of the Gaussian PSF
    fit's relative misfit (:func:`.setup.spatial_model_fit`; :data:`KNOWN_PSF_MISFIT_LOG10` when the
    PSF was given): what a learned layer may know of the sensor pair it is fusing."""
    misfit = KNOWN_PSF_MISFIT_LOG10 if psf_misfit is None else max(math.log10(max(psf_misfit, 1e-12)),
                                                                   KNOWN_PSF_MISFIT_LOG10)
    return torch.cat([noise_features(lr_hsi, hr_msi, levels), torch.tensor([float(bool(srf_estimated)), misfit])])


__all__ = [
    "noise_features",
    "noise_levels",
    "common_noise_level",
    "sensor_features",
    "denoise_residual",
    "residual_noise",
    "DENOISE_HALF_WINDOW",
    "NOISE_FLOOR_LOG10",
    "spectral_prior",
    "msi_gain",
    "solve_normal",
    "project",
    "observation_features",
    "DEFAULT_RIDGE",
    "DAMPING",
]
