"""The data panel's degradation section: the classic protocols or a case of the degradation zoo
(:mod:`fusion_explorer.degradations`), and a blind estimate of the current pair's degradation.

:class:`DegradationControls` holds the widgets; the data panel embeds its :attr:`~DegradationControls.widget`
and asks it for the case (:meth:`~DegradationControls.case`) and, after loading, for the estimate. A preset
fills the controls; editing a control switches the preset to ``custom``. A zoo case is realised with
:func:`fusion_explorer.degradations.realise`, so methods see the images (and the SRF when known), never the
PSF or the sampling offset; the truth rides along for scoring only, as with the classic protocols.
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as W
import numpy as np

from ..degradations import NOISE_KINDS, PRESETS, PSF_FAMILIES, DegradationCase, kernel_moments
from .figure import PlotlyFigure
from .images import heatmap_trace

#: the preset that keeps the classic protocol controls (protocol / ratio / PSF σ / one SNR)
CLASSIC = "protocol (classic)"
CUSTOM = "custom"
#: the SRF dropdown's value for Gaussian bands (their number in :attr:`DegradationControls.srf_bands`)
GAUSSIAN_SRF = "gaussian:N"
CENTRE = "centre"


def srf_spec(choice: str, bands: int) -> str:
    """The SRF a case names: a built-in name, or ``gaussian:N`` for the Gaussian-bands choice."""
    return f"gaussian:{int(bands)}" if choice == GAUSSIAN_SRF else choice


def make_srf(spec: str, wavelength: Any):
    """The SRF ``spec`` (a built-in name or ``gaussian:N``) on the band centres ``wavelength``."""
    return DegradationCase(srf=spec).make_srf(wavelength)


def realise_with_truth(truth: Any, case: DegradationCase) -> tuple[Any, Any]:
    """``(degraded, problem)``: ``case`` realised on ``truth`` by :func:`fusion_explorer.degradations.realise`
    (methods see no PSF or offset; the SRF only when known) and its problem with the truth attached, for
    scoring only (as :func:`fusion_explorer.problem.simulate` attaches it)."""
    from ..degradations import realise
    from ..problem import FusionProblem

    d = realise(truth, case)
    seen = d.problem
    problem = FusionProblem(seen.lr_hsi, seen.hr_msi, sensors=seen.sensors, truth=truth, name=seen.name,
                            attrs={**seen.attrs, "degradation": case.to_json()})
    d.extras["shown"] = problem
    return d, problem


def describe(case: DegradationCase) -> str:
    """One line saying what ``case`` does, e.g. ``moffat FWHM 4.7 px, β 2.5, reflect, half-pixel offset,
    SNR 30/35 dB poisson, SRF gaussian:8 (hidden)``."""
    parts = [f"{case.psf} FWHM {case.psf_fwhm:.3g} px"]
    if case.psf == "moffat":
        parts.append(f"β {case.beta:g}")
    if case.ellipticity < 1:
        parts.append(f"ellipticity {case.ellipticity:g} at {case.angle:g}°")
    parts.append(case.border)
    pos = case.sampling_position
    frac = pos - math.floor(pos)
    where = "block-centre" if case.lr_offset is None else f"{pos:g} px"
    if abs(frac - 0.5) < 1e-9:
        parts.append(f"half-pixel offset ({where})" if case.lr_offset is None else "half-pixel offset")
    elif frac == 0:
        parts.append(f"integer offset {pos:g}")
    else:
        parts.append(f"offset {pos:g} px")
    if case.msi_shift != (0.0, 0.0):
        parts.append(f"MSI shifted ({case.msi_shift[0]:g}, {case.msi_shift[1]:g}) px")
    lr, msi = case.snr_lr_db, case.snr_msi_db
    if lr is None and msi is None:
        parts.append("no noise")
    else:
        parts.append(f"SNR {'∞' if lr is None else f'{lr:g}'}/{'∞' if msi is None else f'{msi:g}'} dB {case.noise}")
    parts.append(f"SRF {case.srf}" + ("" if case.srf_known else " (hidden)"))
    return ", ".join(parts)


def _snr_db(cube: np.ndarray, sigma: np.ndarray) -> float:
    """Mean over bands of ``10 log10(mean(x_b²) / σ_b²)`` (∞ without noise)."""
    power = np.mean(np.asarray(cube, dtype=np.float64) ** 2, axis=(1, 2))
    s2 = np.asarray(sigma, dtype=np.float64) ** 2
    if not np.any(s2 > 0):
        return math.inf
    return float(np.mean(10 * np.log10(power / np.maximum(s2, 1e-30))))


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "—"
    return "∞ (none)" if math.isinf(v) else f"{v:.{digits}f}"


class DegradationControls:
    """Preset dropdown and the zoo's controls, plus the estimate button and its table.

    ``ratio`` and ``srf`` are the data panel's own dropdowns (shared with the classic protocols); the
    SRF dropdown gains a ``gaussian:N`` choice with :attr:`srf_bands`. ``classic`` are the widgets of
    the classic protocols (shown only under :data:`CLASSIC`); ``problem`` returns the pair to estimate.
    """

    def __init__(self, ratio: W.Dropdown, srf: W.Dropdown, classic: list[W.Widget],
                 problem: Callable[[], Any] | None = None) -> None:
        self.ratio, self.srf, self.classic = ratio, srf, list(classic)
        self._problem = problem or (lambda: None)
        #: what the last zoo load realised (:class:`fusion_explorer.degradations.Degraded`), else None
        self.degraded: Any = None
        self.estimate_result: Any = None
        self.thread: threading.Thread | None = None
        self._filling = False

        def lay() -> W.Layout:  # one Layout per widget: a shared one would hide them all together
            return W.Layout(width="230px")

        self.preset = W.Dropdown(options=[CLASSIC, *PRESETS, CUSTOM], value=CLASSIC, description="degradation",
                                 layout=W.Layout(width="300px"))
        self.psf = W.Dropdown(options=list(PSF_FAMILIES), value="gaussian", description="PSF", layout=lay())
        self.fwhm = W.BoundedFloatText(value=4.71, min=0.1, max=200, step=0.1, description="FWHM (px)", layout=lay())
        self.ellipticity = W.BoundedFloatText(value=1.0, min=0.05, max=1.0, step=0.05, description="ellipticity",
                                              tooltip="minor / major axis; 1 = round", layout=lay())
        self.angle = W.BoundedFloatText(value=0.0, min=0, max=180, step=5, description="angle (°)", layout=lay())
        self.beta = W.BoundedFloatText(value=2.5, min=1.05, max=20, step=0.1, description="Moffat β", layout=lay())
        self.border = W.Dropdown(options=["reflect", "zeros"], value="reflect", description="border", layout=lay())
        self.lr_offset = W.Dropdown(options=self._offset_options(None), value=CENTRE, description="LR offset",
                                    tooltip="HR coordinate of LR pixel 0's sample", layout=lay())
        self.shift_y = W.BoundedFloatText(value=0.0, min=-1, max=1, step=0.05, description="MSI dy", layout=lay())
        self.shift_x = W.BoundedFloatText(value=0.0, min=-1, max=1, step=0.05, description="MSI dx", layout=lay())
        self.snr_lr = W.BoundedFloatText(value=0, min=0, max=100, step=5, description="SNR LR (dB)",
                                         tooltip="LR-HSI signal-to-noise ratio; 0 = no noise", layout=lay())
        self.snr_msi = W.BoundedFloatText(value=0, min=0, max=100, step=5, description="SNR MSI (dB)",
                                          tooltip="HR-MSI signal-to-noise ratio; 0 = no noise", layout=lay())
        self.noise = W.Dropdown(options=list(NOISE_KINDS), value="white", description="noise", layout=lay())
        self.srf_bands = W.BoundedIntText(value=8, min=1, max=64, description="N bands", layout=lay())
        self.srf_known = W.Checkbox(value=True, description="SRF known (given to methods)", indent=False,
                                    layout=W.Layout(width="240px"))
        if GAUSSIAN_SRF not in srf.options:
            srf.options = [*srf.options, GAUSSIAN_SRF]
        self.estimate_button = W.Button(description="estimate degradation", icon="search",
                                        tooltip="blind estimate of PSF, offset and noise from the two images",
                                        layout=W.Layout(width="200px"))
        self.estimate_status = W.HTML()
        self.estimate_table = W.HTML()
        self.psf_plot = PlotlyFigure(layout={
            "width": 240, "height": 220, "margin": {"l": 30, "r": 10, "t": 30, "b": 25},
            "title": {"text": "estimated PSF", "font": {"size": 12}},
            "yaxis": {"autorange": "reversed", "scaleanchor": "x"}})
        self.psf_plot.layout.display = "none"
        for key, w in {"fe-degradation": self.preset, "fe-estimate": self.estimate_button,
                       "fe-estimate-table": self.estimate_table}.items():
            w.add_class(key)
        self.zoo_box = W.VBox([
            W.HBox([self.psf, self.fwhm]), W.HBox([self.ellipticity, self.angle]), W.HBox([self.beta]),
            W.HBox([self.border, self.lr_offset]), W.HBox([self.shift_y, self.shift_x]),
            W.HBox([self.snr_lr, self.snr_msi]), W.HBox([self.noise]), self.srf_known,
        ])
        self.zoo_controls = [self.psf, self.fwhm, self.ellipticity, self.angle, self.beta, self.border, self.lr_offset,
                             self.shift_y, self.shift_x, self.snr_lr, self.snr_msi, self.noise, self.srf_bands,
                             self.srf_known]
        for w in self.zoo_controls:
            w.observe(self._on_edit, "value")
            if w is not self.srf_known:
                w.style.description_width = "92px"
        for w in (self.ratio, self.srf):
            w.observe(self._on_edit, "value")
        self.preset.observe(self._on_preset, "value")
        self.estimate_button.on_click(lambda _: self.estimate())
        self.estimate_box = W.VBox([W.HBox([self.estimate_button, self.estimate_status],
                                           layout=W.Layout(align_items="center")),
                                    W.HBox([self.estimate_table, self.psf_plot])])
        self.widget = W.VBox([self.preset, self.zoo_box, self.srf_bands])  # N bands: classic protocols too
        self._show()

    # ------------------------------------------------------------------ state of the controls
    @property
    def zoo(self) -> bool:
        """Whether a zoo case (a preset or ``custom``) is chosen rather than the classic protocols."""
        return self.preset.value != CLASSIC

    @staticmethod
    def _offset_options(value: float | None) -> list[tuple[str, str]]:
        options = [("block centre", CENTRE), ("integer 0", "0")]
        if value is not None and value != 0:
            options.append((f"{value:g} px", f"{value:g}"))
        return options

    def _show(self) -> None:
        zoo = self.zoo
        self.zoo_box.layout.display = None if zoo else "none"
        for w in self.classic:
            w.layout.display = "none" if zoo else None
        self.beta.layout.display = None if self.psf.value == "moffat" else "none"
        self.srf_bands.layout.display = None if self.srf.value == GAUSSIAN_SRF else "none"
        angle = self.ellipticity.value < 1
        self.angle.disabled = not angle
        if zoo:
            self.ratio.disabled = False

    def set_pair(self, real_pair: bool) -> None:
        """Hide every simulation control for a real pair (it carries its own MSI)."""
        self.widget.layout.display = "none" if real_pair else None
        self.srf.layout.display = "none" if real_pair else None
        if not real_pair:
            self._show()

    def _on_preset(self, change: dict) -> None:
        name = change["new"]
        if name in PRESETS:
            self.fill(PRESETS[name])
        self._show()

    def fill(self, case: DegradationCase) -> None:
        """Set every control to ``case`` (without switching the preset to ``custom``)."""
        self._filling = True
        try:
            if case.ratio in self.ratio.options:
                self.ratio.value = case.ratio
            self.psf.value = case.psf
            self.fwhm.value = round(case.psf_fwhm, 3)
            self.ellipticity.value = case.ellipticity
            self.angle.value = case.angle
            self.beta.value = case.beta
            self.border.value = case.border
            self.lr_offset.options = self._offset_options(case.lr_offset)
            self.lr_offset.value = CENTRE if case.lr_offset is None else f"{case.lr_offset:g}"
            self.shift_y.value, self.shift_x.value = case.msi_shift
            self.snr_lr.value = case.snr_lr_db or 0
            self.snr_msi.value = case.snr_msi_db or 0
            self.noise.value = case.noise
            if case.srf.startswith("gaussian:"):
                self.srf_bands.value = int(case.srf.split(":", 1)[1])
                self.srf.value = GAUSSIAN_SRF
            else:
                self.srf.value = case.srf
            self.srf_known.value = case.srf_known
        finally:
            self._filling = False
        self._show()

    def _on_edit(self, change: dict) -> None:
        if self._filling:
            return
        if self.zoo and self.preset.value != CUSTOM:
            self.preset.value = CUSTOM
        self._show()

    def srf_choice(self) -> str:
        """The SRF the dropdown names: a built-in name or ``gaussian:N``."""
        return srf_spec(self.srf.value, self.srf_bands.value)

    def case(self) -> DegradationCase:
        """The zoo case the controls describe (a preset itself while unedited). Raises
        :class:`~fusion_explorer.errors.ProblemError` for values no case takes."""
        if self.preset.value in PRESETS:
            return PRESETS[self.preset.value]
        off = None if self.lr_offset.value == CENTRE else float(self.lr_offset.value)
        return DegradationCase(
            name=CUSTOM, ratio=int(self.ratio.value), psf=self.psf.value, psf_fwhm=float(self.fwhm.value),
            ellipticity=float(self.ellipticity.value), angle=float(self.angle.value), beta=float(self.beta.value),
            border=self.border.value, lr_offset=off, msi_shift=(float(self.shift_y.value), float(self.shift_x.value)),
            snr_lr_db=float(self.snr_lr.value) or None, snr_msi_db=float(self.snr_msi.value) or None,
            noise=self.noise.value, srf=self.srf_choice(), srf_known=bool(self.srf_known.value))

    # ------------------------------------------------------------------ estimate
    def clear_estimate(self) -> None:
        self.estimate_result = None
        self.estimate_status.value = self.estimate_table.value = ""
        self.psf_plot.layout.display = "none"

    def estimate(self, block: bool = False) -> None:
        """Run :func:`fusion_explorer.estimate.estimate_degradation` on the current pair in a thread (``block``:
        wait for it); the button reads "estimating…" meanwhile, the table shows estimated against true."""
        problem = self._problem()
        if problem is None:
            self.estimate_status.value = "<small>load a scene first</small>"
            return
        if self.thread is not None and self.thread.is_alive():
            return
        self.estimate_button.disabled = True
        self.estimate_button.description = "estimating…"
        self.estimate_status.value = "<i>estimating…</i>"
        self.thread = threading.Thread(target=self._estimate, args=(problem, self.degraded), daemon=True)
        self.thread.start()
        if block:
            self.thread.join()

    def _estimate(self, problem: Any, degraded: Any) -> None:
        from ..estimate import estimate_degradation

        try:
            est = estimate_degradation(problem)
        except Exception as e:  # noqa: BLE001 - shown to the user
            if problem is self._problem():
                self.estimate_status.value = (f"<span style='color:#b00020'>⚠ could not estimate: "
                                              f"{html.escape(str(e))}</span>")
        else:
            if problem is self._problem():  # a newer scene replaced it meanwhile: drop the stale answer
                self.estimate_result = est
                self.estimate_table.value = self.table(problem, est, degraded)
                k = np.asarray(est.psf.kernel)
                self.psf_plot.update([heatmap_trace(k, "", "estimated PSF", max_side=64)], replace=True)
                self.psf_plot.layout.display = None
                self.estimate_status.value = ""
        finally:
            self.estimate_button.disabled = False
            self.estimate_button.description = "estimate degradation"

    @staticmethod
    def table(problem: Any, est: Any, degraded: Any) -> str:
        """Estimated against true (when known) as a small HTML table."""
        lr, msi = np.asarray(problem.lr_hsi.values), np.asarray(problem.hr_msi.values)
        rows = [("PSF FWHM (Gaussian-equivalent, px)", est.psf.fwhm, None),
                ("LR sample position y (MSI px)", est.psf.position[0], None),
                ("LR sample position x (MSI px)", est.psf.position[1], None),
                ("LR-HSI SNR (dB)", _snr_db(lr, est.noise_lr), None),
                ("HR-MSI SNR (dB)", _snr_db(msi, est.noise_msi), None)]
        if degraded is not None and degraded.extras.get("shown") is problem:
            truth = [kernel_moments(degraded.psf)["fwhm"], *degraded.relative_position,
                     _snr_db(lr, degraded.noise_lr), _snr_db(msi, degraded.noise_msi)]
            rows = [(a, b, t) for (a, b, _), t in zip(rows, truth, strict=True)]
        elif problem.psf is not None and problem.offset is not None:  # a classic protocol: PSF and offset known
            m = kernel_moments(np.asarray(problem.psf))
            rows[0] = (rows[0][0], rows[0][1], m["fwhm"])
            rows[1] = (rows[1][0], rows[1][1], problem.offset + m["cy"])
            rows[2] = (rows[2][0], rows[2][1], problem.offset + m["cx"])
        body = "".join(f"<tr><td>{html.escape(a)}</td><td style='text-align:right'>{_fmt(b)}</td>"
                       f"<td style='text-align:right'>{_fmt(t)}</td></tr>" for a, b, t in rows)
        srf = "estimated from the inputs" if est.srf_estimated else "given"
        return ("<table class='fe-estimate' style='font-size:12px;border-collapse:collapse'>"
                "<tr><th style='text-align:left'>degradation</th><th>estimated</th><th>true</th></tr>"
                f"{body}</table><small>SRF {srf}; PSF misfit {est.psf.misfit:.3f}</small>")
