"""The fusion problem, the hinge of the data flow: what a method takes and what it returns.

    cube -> physics (degradation operators, sensor pairs) -> FusionProblem -> method -> FusionResult

:class:`FusionProblem` holds the LR-HSI, the HR-MSI and the known sensor responses; :func:`simulate`
makes one from a ground-truth cube through a :class:`~fusion_explorer.physics.SensorPair`;
:class:`FusionResult` is what every registered method returns. This module knows physics, cubes and
SRFs, and nothing of methods (the registry is :mod:`fusion_explorer.methods.base`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from .cube import (
    check_ratio,
    clip_small_negatives,
    from_tensor,
    to_tensor,
    validate_cube,
    wavelengths,
    with_pixel_coords,
)
from .errors import ProblemError
from .physics import SensorPair, SpatialDegradation, get_protocol
from .srf import SRF, get_srf

#: Default of :class:`FusionProblem`'s loose sensor keywords: "take it from ``sensors``" (else unknown).
_FROM_SENSORS: Any = type("_FromSensors", (), {"__repr__": lambda self: "<from sensors>"})()


class PairShape:
    """Sizes of an ``lr_hsi`` / ``hr_msi`` pair of ``(band, y, x)`` cubes, in memory or lazy
    (:class:`FusionProblem`, :class:`fusion_explorer.tiled.TiledProblem`)."""

    lr_hsi: xr.DataArray
    hr_msi: xr.DataArray

    @property
    def lr_size(self) -> tuple[int, int]:
        return self.lr_hsi.sizes["y"], self.lr_hsi.sizes["x"]

    @property
    def hr_size(self) -> tuple[int, int]:
        return self.hr_msi.sizes["y"], self.hr_msi.sizes["x"]

    @property
    def hsi_bands(self) -> int:
        return self.lr_hsi.sizes["band"]

    @property
    def msi_bands(self) -> int:
        return self.hr_msi.sizes["band"]

    @property
    def wavelength(self) -> np.ndarray | None:
        return wavelengths(self.lr_hsi)


@dataclass(init=False, eq=False)
class FusionProblem(PairShape):
    """The inputs of a fusion: LR-HSI ``(band, y, x)`` and HR-MSI ``(msi_band, Y, X)`` and their sensor pair.

    ``sensors`` (:class:`~fusion_explorer.physics.SensorPair`) is how the two images were acquired: the
    spatial operator (PSF, ``ratio``, sampling ``offset``, ``border``), the SRF and the noise model;
    parts a method must estimate are ``None``. It can be given whole (``sensors=``) or by the loose
    keywords of old (``srf``, ``ratio``, ``psf``, ``offset``, ``border``), which override its parts;
    ``problem.srf/.ratio/.psf/.offset/.border`` read them back (read-only). ``ratio`` is inferred from
    the sizes when not given; ``offset`` is the sampling phase of the LR grid on the HR grid (``None``:
    unknown). ``truth`` is the HR-HSI when known: it is for scoring only and methods never read it.
    ``protocol`` is the named preset the inputs were simulated with (provenance), if any.

    Small negative values in the LR-HSI or the HR-MSI (noise around 0, dark-subtracted or
    atmospherically corrected data) are clipped to 0 for the non-negative model
    (:func:`~fusion_explorer.cube.clip_small_negatives`), with one ``UserWarning`` and the counts in
    ``attrs`` and the LR-HSI's attrs (so in the fused cube's): ``negative_clipped_lr_hsi``,
    ``negative_clipped_hr_msi``. Strongly negative data raise :class:`~fusion_explorer.errors.CubeError`.
    """

    lr_hsi: xr.DataArray
    hr_msi: xr.DataArray
    sensors: SensorPair
    truth: xr.DataArray | None = None
    name: str = ""
    protocol: Any = None
    attrs: dict = field(default_factory=dict)

    def __init__(
        self,
        lr_hsi: xr.DataArray,
        hr_msi: xr.DataArray,
        srf: Any = _FROM_SENSORS,
        ratio: int | None = _FROM_SENSORS,
        psf: np.ndarray | None = _FROM_SENSORS,
        offset: int | None = _FROM_SENSORS,
        border: str = _FROM_SENSORS,
        truth: xr.DataArray | None = None,
        name: str = "",
        protocol: Any = None,
        attrs: dict | None = None,
        *,
        sensors: SensorPair | None = None,
    ) -> None:
        self.lr_hsi, self.hr_msi = lr_hsi, hr_msi
        self.truth, self.name, self.protocol = truth, name, protocol
        self.attrs = {} if attrs is None else attrs
        validate_cube(self.lr_hsi, what="LR-HSI", allow_negative=True)
        validate_cube(self.hr_msi, what="HR-MSI", allow_negative=True)
        self._clip_negatives()
        self.sensors = self._make_sensors(sensors, srf=srf, ratio=ratio, psf=psf, offset=offset, border=border)
        self._check_scales()
        if self.truth is not None:
            validate_cube(self.truth, what="ground truth")
            if self.truth.shape != (self.hsi_bands, *self.hr_size):
                raise ProblemError(
                    f"ground truth has shape {self.truth.shape}; expected {(self.hsi_bands, *self.hr_size)}"
                )

    def _make_sensors(self, sensors: SensorPair | None, **loose: Any) -> SensorPair:
        """The sensor pair from ``sensors`` and the loose keywords (which win), checked against the images."""
        given = {k: v for k, v in loose.items() if v is not _FROM_SENSORS}
        if sensors is None:
            sensors = SensorPair.known(
                given.get("ratio") or 1,
                psf=given.get("psf"),
                offset=given.get("offset"),
                border=given.get("border") or "reflect",
                srf=given.get("srf"),
            )
            ratio = given.get("ratio")
        else:
            changes = {k: v for k, v in given.items() if k in ("srf", "ratio", "offset", "border")}
            if "psf" in given:
                psf = SensorPair.known(1, psf=given["psf"]).kernel
                changes.update(kernel=psf, sigma=None, kernel_size=None)
            sensors = sensors.with_parts(**changes)
            ratio = sensors.ratio
        (h, w), (big_h, big_w) = self.lr_size, self.hr_size
        if ratio is None:
            if big_h % h or big_w % w or big_h // h != big_w // w:
                raise ProblemError(
                    f"the HR-MSI ({big_h}x{big_w}) is not an integer multiple of the LR-HSI ({h}x{w}) "
                    "with one ratio for both axes"
                )
            ratio = big_h // h
        check_ratio((big_h, big_w), ratio, what="HR-MSI")
        if (big_h // ratio, big_w // ratio) != (h, w):
            raise ProblemError(
                f"LR-HSI is {h}x{w} but the HR-MSI {big_h}x{big_w} at ratio {ratio} needs "
                f"{big_h // ratio}x{big_w // ratio}"
            )
        offset = sensors.offset
        if offset is not None and not (int(offset) == offset and 0 <= offset < ratio):
            raise ProblemError(
                f"offset (the LR grid's sampling phase) must be an integer in 0..{ratio - 1} at ratio "
                f"{ratio}; got {offset!r}"
            )
        srf = sensors.srf_for(wavelengths(self.lr_hsi)) if isinstance(sensors.srf, str) else sensors.srf
        if srf is not None:
            if srf.hsi_bands != self.hsi_bands or srf.msi_bands != self.msi_bands:
                raise ProblemError(
                    f"SRF {srf.name!r} maps {srf.hsi_bands} to {srf.msi_bands} bands, but the "
                    f"LR-HSI has {self.hsi_bands} bands and the HR-MSI {self.msi_bands}"
                )
            srf.check_cube(self.lr_hsi)
        sensors = sensors.with_parts(ratio=int(ratio), srf=srf) if (ratio != sensors.ratio or srf is not sensors.srf) \
            else sensors
        psf = sensors.psf_array()
        if psf is not None and max(psf.shape) > max(big_h, big_w):
            raise ProblemError(
                f"the PSF ({psf.shape[0]}x{psf.shape[1]}) is larger than the HR image ({big_h}x{big_w})"
            )
        return sensors

    # The sensor pair's parts, read-only (give a new problem, or sensors=, to change them).
    @property
    def srf(self) -> Any:
        """The known SRF (:class:`~fusion_explorer.srf.SRF`), or ``None``."""
        return self.sensors.srf

    @property
    def ratio(self) -> int:
        return self.sensors.ratio

    @property
    def psf(self) -> np.ndarray | None:
        """The known PSF (2-D float64 array), or ``None``."""
        return self.sensors.psf_array()

    @property
    def offset(self) -> int | None:
        """The LR grid's sampling phase on the HR grid, or ``None`` when unknown."""
        return self.sensors.offset

    @property
    def border(self) -> str:
        return self.sensors.border

    @property
    def sample_offset(self) -> int:
        """``offset``, or :func:`~fusion_explorer.physics.default_offset` when it is unknown."""
        return self.sensors.sample_offset

    def _clip_negatives(self) -> None:
        """Clip small negative values of both images to 0 (methods never see negatives); record and warn once."""
        lr, n_lr, min_lr = clip_small_negatives(self.lr_hsi, what="LR-HSI")
        msi, n_msi, min_msi = clip_small_negatives(self.hr_msi, what="HR-MSI")
        if not (n_lr or n_msi):
            return
        lr, msi = lr.copy(deep=False), msi.copy(deep=False)  # never the caller's attrs
        lr.attrs, msi.attrs = dict(lr.attrs), dict(msi.attrs)
        counts = {"negative_clipped_lr_hsi": n_lr, "negative_clipped_hr_msi": n_msi}
        self.attrs.update(counts)
        lr.attrs.update(counts)
        msi.attrs["negative_clipped_hr_msi"] = n_msi
        for cube, n, vmin in ((lr, n_lr, min_lr), (msi, n_msi, min_msi)):
            if n:  # replaces io's "kept as stored"
                cube.attrs["value_note"] = (
                    f"{n} negative values (min {vmin:.4g}) clipped to 0 for the non-negative model"
                )
        self.lr_hsi, self.hr_msi = lr, msi
        found = ((n_lr, min_lr, "LR-HSI"), (n_msi, min_msi, "HR-MSI"))
        parts = " and ".join(f"{n} in the {what} (min {v:.3g})" for n, v, what in found if n)
        warnings.warn(
            f"clipped small negative values to 0 for the non-negative model: {parts}; counts recorded in "
            "attrs negative_clipped_lr_hsi/_hr_msi",
            UserWarning,
            stacklevel=3,
        )

    def _check_scales(self) -> None:
        """Refuse an LR-HSI and an HR-MSI on different scales (an int16 cube x 1e4 beside reflectance).

        The spatial degradation keeps means, so the HR-MSI's band means ``m`` should be the SRF applied
        to the LR-HSI's band means ``h``: ``m ~ R h``. Without an SRF, each MSI band mean lies between
        ``min(h)`` and ``max(h)`` (an SRF row is a weighted mean). Off by a factor over 3: error;
        with an SRF, over 1.5: a warning.
        """
        h = np.asarray(self.lr_hsi.values).mean(axis=(1, 2), dtype=np.float64)
        m = np.asarray(self.hr_msi.values).mean(axis=(1, 2), dtype=np.float64)
        if self.srf is not None:
            expected = float((self.srf.matrix @ h).sum())
            what = f"the SRF applied to the LR-HSI has mean {expected / self.msi_bands:.4g}"
            factor = m.sum() / expected if expected > 0 and m.sum() > 0 else 1.0
        else:
            what = f"the LR-HSI's band means span {h.min():.4g} to {h.max():.4g}"
            factor = 1.0
            if h.max() > 0 and m.min() > h.max():
                factor = m.min() / h.max()
            elif h.min() > 0 and 0 < m.max() < h.min():
                factor = m.max() / h.min()
        off = max(factor, 1 / factor)
        if not math.isfinite(off) or off <= 1.5:
            return
        message = (
            f"the LR-HSI and the HR-MSI are on different scales: the HR-MSI's mean is {m.mean():.4g} but "
            f"{what} (a factor {factor:.3g}); put both on one scale (e.g. reflectance 0-1)"
        )
        power = round(math.log10(factor))
        if power and abs(math.log10(factor) - power) < 0.3:
            message += f", e.g. divide the {'LR-HSI' if power < 0 else 'HR-MSI'} by 1e{abs(power)}"
        if off > 3:
            raise ProblemError(message)
        if self.srf is not None:
            warnings.warn(message, UserWarning, stacklevel=3)

    def tensors(self, device: Any = "auto", dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Y_h, Y_m)`` as tensors ``(band, y, x)`` and ``(msi_band, Y, X)`` on ``device``."""
        return to_tensor(self.lr_hsi, device, dtype), to_tensor(self.hr_msi, device, dtype)

    def spatial_operator(self) -> SpatialDegradation | None:
        """The known spatial degradation (PSF + decimation), or ``None`` if the PSF is unknown; an unknown
        offset is taken as :func:`~fusion_explorer.physics.default_offset`."""
        return self.sensors.spatial()


#: the ``kind`` attribute of a fused cube (what ``fuse`` writes; ``score`` checks it)
FUSED_KIND = "fused HR-HSI"


@dataclass
class FusionResult:
    """The fused HR-HSI ``(band, y, x)`` and what the method can show of its work.

    ``trace``: recorded iterates, one dict per recorded iteration/layer, with these keys (all
    optional except ``iteration`` and ``label``):

    - ``iteration`` (int, cumulative update/layer count; 0 = initialisation), ``label`` (str),
    - ``endmembers`` ``(bands, p)`` and ``abundances`` ``(p, Y, X)`` (HR) for unmixing methods,
      ``abundances_lr`` ``(p, y, x)``; the fused cube is then ``endmembers @ abundances``,
    - ``fused`` ``(bands, Y, X)`` for methods that are not unmixings (snapshots),
    - ``objective``, ``residual_hsi``, ``residual_msi`` (floats),
    - ``stage`` (str): the name of the stage the step belongs to (one of ``stages``' names),
    - ``learned`` (dict name -> ndarray): what a learned layer applied at this step (SCALMU: its
      preconditioning matrices, exponents, steps), ``plain`` (dict, same keys): what the plain
      multiplicative update applies in their place (so ``learned - plain`` is what learning changed),
      ``learned_doc`` (dict name -> one sentence on what the part does),
    - ``correction`` ``(Y, X)``: per-pixel norm over bands of a consistency stage's correction ``Z - W H``.

    ``stages``: the run's stages in order, each ``{"name": str, "start": int, "end": int}`` in the
    trace's one ``iteration`` numbering (end inclusive), e.g. CNMF's HSI init, MSI init, rounds;
    SCALMU's start, layers, consistency. Empty for methods without stages.

    :func:`~fusion_explorer.methods.trace_fused` rebuilds the fused cube of one step either way. ``endmembers``
    ``(bands, p)`` and ``abundances`` ``(p, y, x)`` for unmixing methods; ``srf``/``psf`` the
    estimated responses for blind methods; ``extras`` anything else.
    """

    fused: xr.DataArray
    method: str
    params: dict = field(default_factory=dict)
    seconds: float = float("nan")
    device: str = "cpu"
    trace: list[dict] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    endmembers: np.ndarray | None = None
    abundances: np.ndarray | None = None
    srf: Any = None
    psf: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


def simulate(
    truth: xr.DataArray,
    protocol: str | SensorPair = "mossfuse-cave-x32",
    *,
    srf: Any = None,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
) -> FusionProblem:
    """Make the fusion inputs a sensor pair would see of ``truth`` (band, y, x).

    ``srf`` overrides the protocol's SRF (an :class:`~fusion_explorer.srf.SRF` or a built-in
    name). Returns a :class:`FusionProblem` whose ``truth`` is the input
    (for scoring only), with the true sensor pair attached (the protocol with its SRF resolved) and
    provenance in the cubes' attrs. All cubes share the truth's ``y``/``x`` pixel coordinates.
    """
    proto = get_protocol(protocol)
    validate_cube(truth, what="ground-truth cube", need_wavelength=srf is None or isinstance(srf, str))
    check_ratio((truth.sizes["y"], truth.sizes["x"]), proto.ratio, what="ground-truth image")
    spec = srf if srf is not None else proto.srf
    the_srf = spec if isinstance(spec, SRF) else get_srf(spec, wavelengths(truth))
    the_srf.check_cube(truth)

    sensors = proto.with_parts(srf=the_srf)
    x = to_tensor(truth, device, torch.float64)
    gen = torch.Generator().manual_seed(int(seed))
    lr = sensors.noise.hsi(sensors.spatial()(x), gen)
    msi = sensors.noise.msi(sensors.spectral()(x), gen)

    base = {k: v for k, v in truth.attrs.items() if k in ("scene", "source", "sensor", "format", "crop")}
    base.update(proto.as_attrs(), srf=the_srf.name)
    lr_hsi = from_tensor(lr, truth, attrs={**base, "kind": "LR-HSI"})
    # the LR pixels carry the truth's (HR) pixel coordinates of their samples; the HR-MSI the truth's own
    ys, xs = (truth.coords[d].values if d in truth.coords else np.arange(truth.sizes[d]) for d in ("y", "x"))
    lr_hsi = lr_hsi.assign_coords(y=ys[proto.offset :: proto.ratio], x=xs[proto.offset :: proto.ratio])
    hr_msi = with_pixel_coords(from_tensor(msi, attrs={**base, "kind": "HR-MSI"}), truth)
    hr_msi = hr_msi.assign_coords(band_name=("band", list(the_srf.band_names)))
    return FusionProblem(
        lr_hsi=lr_hsi,
        hr_msi=hr_msi,
        truth=truth,
        name=f"{truth.attrs.get('scene', truth.name or 'scene')} / {proto.name}",
        protocol=proto,
        sensors=sensors,
    )
