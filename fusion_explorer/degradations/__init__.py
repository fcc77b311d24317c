"""The degradation zoo: the ways real sensor pairs see a scene, as seeded, serialisable cases.

A :class:`DegradationCase` describes one acquisition (all lengths in HR pixels)::

    LR-HSI  Y_h[j] = Σ_t k[t] X[P_j + t] + n_h,   P_j = lr_offset + ratio·j     (PSF k, sampling phase)
    HR-MSI  Y_m[i] = R X(i + d) + n_m,            d = msi_shift                  (SRF R, misregistration)

- PSF families (:data:`PSF_FAMILIES`), each a normalised kernel of full width at half maximum
  ``psf_fwhm``: ``gaussian`` (point-sampled, the literature's discrete Gaussian; with
  ``ellipticity < 1`` and ``angle`` a slightly elliptical, rotated one), ``moffat`` (``beta``),
  ``airy`` (a diffraction-limited circular aperture), ``kolmogorov`` (long-exposure turbulence,
  OTF ``exp(-(f/f0)^{5/3})``) and ``box`` (area average of width ``psf_fwhm``; ``psf_fwhm = ratio``
  is the sensor integrating each LR pixel's area). The continuous families are integrated over each
  HR pixel (8x8 sub-samples; the box exactly).
- Borders ``reflect`` or ``zeros``; the LR sampling phase ``lr_offset`` may be fractional: with
  the default (block centre, ``(ratio - 1) / 2``) an even ratio puts the LR samples half an HR pixel
  off the HR grid, as area averaging does. The fractional part is realised by shifting the kernel.
- The MSI may be misregistered by ``msi_shift = (dy, dx)`` (|d| <= 1): each MSI pixel integrates
  the HR pixel area it covers (bilinear weights).
- Noise on each image at ``snr_lr_db`` / ``snr_msi_db`` per band (``None``: none), ``white`` or
  signal-dependent ``poisson`` (Poisson-Gaussian: variance ``a x + b``, 80 % of the power
  signal-dependent). Values are not clipped here: :class:`~fusion_explorer.problem.FusionProblem`
  clips small negatives and records how many.
- SRF ``srf``: a built-in name (:func:`~fusion_explorer.srf.available_srfs`) or ``"gaussian:N"``
  (``N`` evenly spaced Gaussian bands over the cube's range); ``srf_known=False`` hides it from
  methods, which must estimate it.

:func:`degrade` makes the :class:`~fusion_explorer.problem.FusionProblem` a method sees (never the
PSF, the offset or the truth); :func:`realise` returns it with the truth and the true responses, for
scoring estimators. :func:`sample_cases` draws cases over all axes; :data:`PRESETS` are named ones.
Modules: :mod:`.kernels` (PSF families), :mod:`.cases` (cases, presets, sampler), :mod:`.realise`
(noise, degrading). The package imports physics, srf, cube and problem only.
"""


from .cases import NOISE_KINDS, PRESETS, SAMPLED_SRFS, ZOO_RATIOS, DegradationCase, get_case, sample_cases
from .kernels import FWHM_PER_SIGMA, PSF_FAMILIES, SUBSAMPLES, kernel_moments, psf_kernel, shift_kernel
from .realise import POISSON_SHARE, Degraded, add_band_noise, degrade, realise

__all__ = [
    "FWHM_PER_SIGMA",
    "NOISE_KINDS",
    "POISSON_SHARE",
    "PRESETS",
    "PSF_FAMILIES",
    "SAMPLED_SRFS",
    "SUBSAMPLES",
    "ZOO_RATIOS",
    "DegradationCase",
    "Degraded",
    "add_band_noise",
    "degrade",
    "get_case",
    "kernel_moments",
    "psf_kernel",
    "realise",
    "sample_cases",
    "shift_kernel",
]
