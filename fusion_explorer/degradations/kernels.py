"""The zoo's PSF families as normalised kernels, their moments, and the misregistration kernel."""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import ProblemError

PSF_FAMILIES = ("gaussian", "moffat", "airy", "kolmogorov", "box")
#: HR-pixel sub-samples per axis when integrating a continuous PSF over a pixel
SUBSAMPLES = 8
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@functools.cache
def _kolmogorov_profile() -> tuple[np.ndarray, np.ndarray, float]:
    """``(r, p(r), fwhm)`` of the radial PSF whose OTF is ``exp(-ρ^{5/3})`` (Hankel transform)."""
    from scipy.special import j0

    rho = np.linspace(0.0, 12.0, 2001)
    otf = np.exp(-(rho ** (5.0 / 3.0)))
    r = np.linspace(0.0, 40.0, 2001)
    p = np.trapezoid(otf[None, :] * j0(2 * np.pi * rho[None, :] * r[:, None]) * rho[None, :], rho, axis=1)
    p = np.clip(p / p[0], 0.0, None)
    i = int(np.argmax(p < 0.5))
    half = r[i - 1] + (p[i - 1] - 0.5) / (p[i - 1] - p[i]) * (r[i] - r[i - 1])  # linear, between samples
    return r, p, 2.0 * float(half)


def _radial(family: str, r: np.ndarray, fwhm: float, beta: float) -> np.ndarray:
    """The continuous profile of ``family`` at radius ``r`` (HR px), peak 1."""
    if family == "gaussian":
        return np.exp(-0.5 * (r / (fwhm / FWHM_PER_SIGMA)) ** 2)
    if family == "moffat":
        alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
        return (1.0 + (r / alpha) ** 2) ** (-beta)
    if family == "airy":
        from scipy.special import j1

        x = 2.0 * 1.616340 * r / fwhm  # (2 J1(x)/x)^2 = 1/2 at x = 1.61634
        safe = np.where(x > 1e-8, x, 1.0)
        return np.where(x > 1e-8, (2.0 * j1(safe) / safe) ** 2, 1.0)
    if family == "kolmogorov":
        rk, pk, fk = _kolmogorov_profile()
        return np.interp(r * fk / fwhm, rk, pk, right=0.0)
    raise ProblemError(f"unknown PSF family {family!r}; choose one of {', '.join(PSF_FAMILIES)}")


def psf_kernel(
    family: str,
    fwhm: float,
    *,
    size: int | None = None,
    shift: tuple[float, float] = (0.0, 0.0),
    ellipticity: float = 1.0,
    angle: float = 0.0,
    beta: float = 2.5,
) -> np.ndarray:
    """A normalised PSF ``(size, size)`` (odd) of ``family`` with full width at half maximum ``fwhm``.

    Its centre lies ``shift = (dy, dx)`` HR pixels from the central tap. ``ellipticity`` (minor/major
    axis, ``(0, 1]``) squeezes the profile across the major axis, which lies at ``angle`` degrees
    from +x (columns) towards +y (rows); ``fwhm`` is the major axis's. ``box``: an area average of
    side ``fwhm``, exact. Other families are integrated over each pixel except ``gaussian``, point-sampled (so it equals
    :func:`fusion_explorer.physics.gaussian_kernel` unshifted). ``size``: default covers the profile.
    """
    if family not in PSF_FAMILIES:
        raise ProblemError(f"unknown PSF family {family!r}; choose one of {', '.join(PSF_FAMILIES)}")
    if not (fwhm > 0 and math.isfinite(fwhm)):
        raise ProblemError(f"PSF fwhm must be a positive number of HR pixels; got {fwhm!r}")
    if not 0 < ellipticity <= 1:
        raise ProblemError(f"ellipticity (minor/major axis) must be in (0, 1]; got {ellipticity!r}")
    dy, dx = (float(s) for s in shift)
    if size is None:
        reach = {"gaussian": 4.0 / FWHM_PER_SIGMA, "box": 0.5}.get(family, 2.0)
        size = 2 * math.ceil(reach * fwhm + max(abs(dy), abs(dx)) + 0.5) + 1
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ProblemError(f"PSF size must be a positive odd integer; got {size!r}")
    half = int(size) // 2
    taps = np.arange(-half, half + 1, dtype=np.float64)
    if family == "box":  # exact overlap of [c - w/2, c + w/2] with each pixel [t - 1/2, t + 1/2]
        def overlap(c: float) -> np.ndarray:
            lo, hi = np.maximum(taps - 0.5, c - fwhm / 2), np.minimum(taps + 0.5, c + fwhm / 2)
            return np.clip(hi - lo, 0.0, None)

        k = np.outer(overlap(dy), overlap(dx))
    else:
        sub = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES - 0.5 if family != "gaussian" else np.zeros(1)
        y = (taps[:, None] + sub[None, :]).ravel() - dy
        x = (taps[:, None] + sub[None, :]).ravel() - dx
        yy, xx = np.meshgrid(y, x, indexing="ij")
        theta = math.radians(angle)
        u = xx * math.cos(theta) + yy * math.sin(theta)  # along the major axis
        v = (-xx * math.sin(theta) + yy * math.cos(theta)) / ellipticity
        k = _radial(family, np.hypot(u, v), fwhm, beta)
        n = sub.size
        k = k.reshape(size, n, size, n).mean(axis=(1, 3))
    if not k.sum() > 0:
        raise ProblemError(f"a {size}x{size} kernel holds none of a {family} PSF of FWHM {fwhm:g} shifted {shift}")
    return k / k.sum()


def kernel_moments(kernel: np.ndarray) -> dict[str, float]:
    """Centroid ``(cy, cx)`` (from the central tap), Gaussian-equivalent FWHMs of the major and minor
    axes (``2.3548 sqrt`` of the eigenvalues of the second-moment matrix), their geometric mean
    ``fwhm``, and the major axis's ``angle`` (degrees from +x towards +y, ``[0, 180)``)."""
    k = np.clip(np.asarray(kernel, dtype=np.float64), 0.0, None)
    k = k / k.sum()
    half_y, half_x = k.shape[0] // 2, k.shape[1] // 2
    y = np.arange(k.shape[0]) - half_y
    x = np.arange(k.shape[1]) - half_x
    cy, cx = float(k.sum(1) @ y), float(k.sum(0) @ x)
    yy, xx = np.meshgrid(y - cy, x - cx, indexing="ij")
    cov = np.array([[np.sum(k * xx * xx), np.sum(k * xx * yy)], [np.sum(k * xx * yy), np.sum(k * yy * yy)]])
    vals, vecs = np.linalg.eigh(cov)
    minor, major = (FWHM_PER_SIGMA * math.sqrt(max(v, 0.0)) for v in vals)
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1])) % 180.0
    return {"cy": cy, "cx": cx, "fwhm_major": major, "fwhm_minor": minor,
            "fwhm": math.sqrt(major * minor), "angle": angle}


def shift_kernel(dy: float, dx: float) -> np.ndarray:
    """3x3 bilinear kernel: a pixel displaced by ``(dy, dx)`` (|d| <= 1) integrating the area it covers."""
    def taps(d: float) -> np.ndarray:
        return np.array([max(-d, 0.0), 1.0 - abs(d), max(d, 0.0)])

    return np.outer(taps(dy), taps(dx))
