"""The SCALMU network: ``K`` coupled CNMF steps whose multiplicative updates are re-weighted by
learned, adaptive, non-negative ``p x p`` matrices that live in endmember space.

Layer ``k`` is :func:`~fusion_explorer.methods.unmixing.coupled_step` with a hook that, from the
current iterate, builds ``P_k, Q_k >= 0`` ``(p, p)`` and exponents ``γ_k, η_k > 0`` ``(p,)``::

    H_m ← H_m ⊙ [(P_k num_H) ⊘ (P_k den_H)]^γ_k        W ← W ⊙ [(num_W Q_kᵀ) ⊘ (den_W Q_kᵀ)]^η_k

where ``num_H, den_H`` are those of the *joint* abundance update
(:func:`~fusion_explorer.methods.unmixing.joint_abundance_terms`): unlike CNMF, whose ``H_m`` only
ever sees the MSI, every learned layer also pulls ``S(H_m)`` towards the LR-HSI, with a learned
weight ``λ_k = balance · exp(a_k)`` per layer.

The learned parts are ``P_k, Q_k, γ_k, η_k, λ_k``; with them off (``learned=False``: ``P = Q = I``,
``γ = η = 1``, ``λ = 0``) a layer is exactly one CNMF coupled iteration
(:meth:`~fusion_explorer.methods.unmixing.schedule.Schedule.coupled_steps`). Each layer's applied
parts go to the trace (:meth:`SCALMUNet.layer`, :data:`LAYER_DOC`).

``P = I + max(0, f(pair features)) / (p - 1)`` off the diagonal, ``γ = exp(e(endmember features))``;
the last layers of ``f`` and ``e`` and ``a_k`` start at zero, so an untrained network is unrolled
joint MU with ``λ = balance`` (the plain step plus the LR-HSI term). Features are per endmember (log
mean numerator/denominator ratio, abundance share, relative norm) and per pair (cosines of the HSI
and MSI endmembers, abundance correlation); the same small MLP is applied to every endmember and
every pair, so the layer is permutation equivariant (``P(Π·) = Π P Πᵀ``), works for any ``p``, and
never sees the band count or the sensor: one trained model serves 31-band and 224-band cubes alike.

A *noise-aware* network (``noise_aware=True``, the shipped one) also reads the sensor features of
:attr:`~fusion_explorer.methods.unmixing.CoupledData.sensor_features` (:func:`sensor_input`: the
estimated noise of each image, whether the SRF was estimated, how badly a Gaussian PSF fits): each
layer's HSI weight becomes ``λ_k = balance · exp(a_k + b_k · s)``, and the consistency layer's gate
reads them beside its observation features and also returns two Wiener gains (below). Their weights
start at zero, so an untrained noise-aware network computes what the plain one does.

After the ``K`` layers, a *consistency layer* (:class:`ConsistencyLayer`) carries the LR-HSI's
residual to the HR pixels of the same colour (:mod:`~fusion_explorer.methods.unmixing.guided`: what the
endmembers do not span) and moves the result onto both images
(:func:`~fusion_explorer.methods.unmixing.projection.project`: the smallest change, in the metric of the
endmembers' spectral prior, with ``R Z = Y_m`` and ``S Z = Y_h``), each by a learned fraction of
the full correction computed from how much the two images disagree (noise) and how far the
iterate is from them; at initialisation every fraction is 1, the exact projection. Noise-aware, the
MSI correction uses the Wiener gain ``C Rᵀ (R C Rᵀ + κ_m n_m I)⁻¹`` and the HSI solve adds
``κ_h n_h`` to its damping (``n`` the estimated noise-to-signal powers, ``κ >= 0`` learned per scene,
0 at initialisation). The fused cube is its output (clamped at 0); the layers are trained through it.

A network may also carry an :class:`AbundancePrior` (``abundance_prior=True``, learned part ``prior``): each
layer's ``H_m`` update is pulled towards the colour-guided transfer of its LR abundances with learned weights.
The shipped network has none: trained on dead leaves, the prior did not transfer to real scenes at x32
(benchmarks/scalmu_training.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from ...errors import ProblemError
from ..unmixing import CoupledData, CoupledState, coupled_step, tiny
from ..unmixing.guided import SIGMA, transfer
from ..unmixing.projection import DEFAULT_RIDGE, observation_features, project, residual_noise, spectral_prior

#: features per endmember and per pair of endmembers
N_NODE, N_PAIR = 3, 3
#: the hooked updates: the HR abundances (MSI side) and the endmembers (HSI side)
HOOKED = ("abundances", "endmembers")


def _cosines(a: torch.Tensor) -> torch.Tensor:
    """Cosines between the columns of ``a`` ``(B, rows, p)`` -> ``(B, p, p)``."""
    g = a.transpose(-1, -2) @ a
    d = g.diagonal(dim1=-2, dim2=-1).clamp_min(tiny(a.dtype)).sqrt()
    return g / (d[..., :, None] * d[..., None, :])


def _pair_features(state: CoupledState, abundances: torch.Tensor) -> torch.Tensor:
    """Pairwise endmember features ``(B, p, p, 3)``: cosines of the HSI endmembers, of the MSI
    endmembers and of the abundance maps ``abundances`` ``(B, p, pixels)``."""
    cosines = [_cosines(state.endmembers), _cosines(state.msi_endmembers), _cosines(abundances.transpose(-1, -2))]
    return torch.stack(cosines, dim=-1)


def _node_features(x_rows: torch.Tensor, num: torch.Tensor, den: torch.Tensor, axis: int, w: torch.Tensor):
    """Per-endmember features ``(B, p, 3)``: log mean-ratio of the update, log abundance share,
    log relative endmember norm. ``axis``: the dimension of ``num``/``den`` that runs over pixels or bands."""
    eps = tiny(num.dtype)
    ratio = (num.mean(dim=axis) + eps).log() - (den.mean(dim=axis) + eps).log()
    share = x_rows.mean(dim=-1)
    share = (share * share.shape[-1] / share.sum(dim=-1, keepdim=True).clamp_min(eps) + 1e-6).log()
    norm = w.norm(dim=-2)
    norm = (norm / norm.mean(dim=-1, keepdim=True).clamp_min(eps) + 1e-6).log()
    return torch.stack([ratio.clamp(-5, 5), share.clamp(-8, 8), norm.clamp(-8, 8)], dim=-1)


def _relaxed_numerator(num: torch.Tensor, den: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """``num · (num/den)^(exponent-1)`` with the second factor computed in log space and bounded to
    ``e^±5`` (exactly 1 where ``exponent == 1``), so that ``numerator / den = (num/den)^exponent``:
    the learned part of a step may at most scale plain MU's step ``num/den`` by 148 either way,
    never overflows, and one bad pixel cannot blow up (a bound of ``e^±20`` let training diverge
    once the LR-HSI joined the abundance update).

    Without autograd the same operations run in place: on a 512x512 scene each ``(p, pixels)``
    temporary is 31 MB and the chain of seven is memory-bound (37 -> 25 ms per call here, the
    result bit for bit the same)."""
    t = tiny(den.dtype)
    ratio = num.clamp_min(t).div_(den.clamp_min(t))
    if torch.is_grad_enabled():  # log and exp keep their input / output for the backward pass
        return num * torch.exp(((exponent - 1) * ratio.log()).clamp(-5, 5))
    return ratio.log_().mul_(exponent - 1).clamp_(-5, 5).exp_().mul_(num)


def _mix(mat: torch.Tensor, x: torch.Tensor, left: bool) -> torch.Tensor:
    """``mat @ x`` (``left``) or ``x @ matᵀ``, skipped when ``mat`` is the identity (trained
    networks leave most pairs unmixed, and on a 512x512 scene each product costs ~50 ms)."""
    eye = torch.eye(mat.shape[-1], dtype=mat.dtype, device=mat.device)
    if not torch.is_grad_enabled() and bool((mat == eye).all()):
        return x
    return mat @ x if left else x @ mat.transpose(-1, -2)


def _reweight(net: PairPreconditioner, num, den, state: CoupledState, abundances, endmembers, left: bool):
    """One learned re-weighting of an MU: ``P, exponent = net(features)``, then
    ``(P num, P den)`` raised to the exponent (``left``: endmembers along rows, as in the abundance
    update) or ``(num Pᵀ, den Pᵀ)`` (endmembers along columns, as in the endmember update).
    Returns ``(num', den', P, exponent)``."""
    with torch.no_grad():
        node = _node_features(abundances, num, den, -1 if left else -2, endmembers)
        pair = _pair_features(state, abundances)
    mat, exponent = net(node, pair)
    num2, den2 = _mix(mat, num, left), _mix(mat, den, left)
    shaped = exponent[..., :, None] if left else exponent[..., None, :]
    return _relaxed_numerator(num2, den2, shaped), den2, mat, exponent


class PairPreconditioner(nn.Module):
    """One learned update re-weighting: ``(P (B, p, p) >= 0, exponent (B, p) > 0)`` from features."""

    def __init__(self, hidden: int = 16, max_log_exponent: float = 1.5):
        super().__init__()
        self.max_log_exponent = float(max_log_exponent)
        self.pair = nn.Sequential(
            nn.Linear(N_PAIR + 2 * N_NODE, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 1),
        )
        self.node = nn.Sequential(nn.Linear(N_NODE, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        # zero last layers: P = I and exponent 1 (plain MU) at initialisation. The off-diagonal is
        # clamp_min(0) of the pair MLP, whose gradient passes at exactly 0 (relu's does not), so every
        # pair can start mixing on its own instead of one global gate deciding for all.
        for last in (self.pair[-1], self.node[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, node: torch.Tensor, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, p, _ = node.shape
        x = torch.cat([pair, node[:, :, None, :].expand(b, p, p, N_NODE), node[:, None, :, :].expand(b, p, p, N_NODE)],
                      dim=-1)
        off = self.pair(x).squeeze(-1).clamp_min(0) / max(p - 1, 1)
        eye = torch.eye(p, dtype=node.dtype, device=node.device)
        mat = eye + off * (1 - eye)
        exponent = self.node(node).squeeze(-1).clamp(-1.5, self.max_log_exponent).exp()
        return mat, exponent


#: one sentence per learned part of a layer (the trace's ``learned_doc``)
LAYER_DOC = {
    "abundance_matrix": "P (p x p, >= 0, identity when plain) mixes the numerator and denominator of the "
                        "H_m update across endmembers before the multiplicative step.",
    "abundance_exponent": "gamma (p,) raises each endmember's H_m step ratio to a power (1 when plain): "
                          "larger steps where it is above 1, damped ones below.",
    "endmember_matrix": "Q (p x p, >= 0, identity when plain) mixes the numerator and denominator of the "
                        "W update across endmembers.",
    "endmember_exponent": "eta (p,) raises each endmember's W step ratio to a power (1 when plain).",
    "hsi_weight": "lambda weights the LR-HSI term added to the H_m update (0 when plain: CNMF fits H_m "
                  "to the MSI alone); a noise-aware network computes it from the estimated noise of both images.",
    "prior_weight": "mu = (mu_all, mu_above) >= 0, relative to the MSI endmembers' mean squared norm: the weight "
                    "of the pull of H_m towards A, the colour-guided transfer of its own LR abundances, on every "
                    "abundance and, added, on those more than tau times above A (0 when plain: no prior).",
    "prior_threshold": "tau: how many times above A an abundance must be for the second weight to act on it "
                       "(a soft threshold; the blow-ups the MSI cannot see).",
}
#: the trace's sentences for the sensor features noise-aware networks read (inputs, not learned)
INPUT_DOC = {
    "noise_level": "estimated noise-to-signal power (log10) of the LR-HSI and the MSI, which the learned steps, "
                   "Wiener gains and HSI weights adapt to (an input, not learned; -7 = noiseless, -3 = 30 dB SNR).",
    "srf_estimated": "1 when the SRF was estimated from the images (not given), else 0 (an input, not learned).",
    "psf_misfit": "log10 relative misfit of the Gaussian PSF fitted to the images (-6 when the PSF was given): high "
                  "when the PSF is not Gaussian, or the images are noisy or misregistered (an input, not learned).",
    "msi_residual_noise": "log10 of the noise power relative to the MSI's power with which the MSI residual is "
                          "denoised (a local Wiener filter) before the MSI correction: the smaller of the two "
                          "images' estimated noise levels (hand-built, not learned; -12: not denoised).",
}
#: one sentence per learned part of the consistency layer
CONSISTENCY_DOC = {
    "guided_step": "t_g in (0, 1]: the fraction of the colour-guided transfer of the LR-HSI residual applied "
                   "(1 when plain).",
    "msi_step": "t_m in (0, 1]: the fraction of the correction towards R Z = Y_m applied, and of what the MSI "
                "sees of the HSI correction removed from it (1 when plain).",
    "hsi_step": "t_h in (0, 1]: the fraction of the correction towards S Z = Y_h applied (1 when plain).",
    "ridge": "rho: the white share of the spectral prior C = W Wt/tr + rho I/L that shapes the MSI "
             "correction (default 0.01 when plain).",
    "sigma": "sigma: the colour-similarity width of the guided transfer (default 0.05 when plain).",
    "msi_wiener": "kappa_m >= 0: the MSI correction's gain is C Rt (R C Rt + kappa_m n_m tr/l I)^-1, n_m the "
                  "estimated MSI noise-to-signal power: a Wiener gain that damps what the SRF barely sees "
                  "instead of amplifying noise there (0 when plain: the exact projection).",
    "hsi_wiener": "kappa_h >= 0: adds kappa_h n_h (the LR-HSI's noise-to-signal power) to the damping of the "
                  "HSI correction's solve (0 when plain).",
}


def _arr(v) -> np.ndarray:
    return np.asarray(v.detach().float().cpu().numpy() if isinstance(v, torch.Tensor) else v, np.float32)


def _parts(learned: dict, plain: dict, doc: dict) -> dict:
    """``{"learned", "plain", "learned_doc"}`` of a trace step: float32 arrays of item 0."""
    return {"learned": {k: _arr(v) for k, v in learned.items()}, "plain": {k: _arr(v) for k, v in plain.items()},
            "learned_doc": {k: doc[k] for k in learned}}


#: observation features (:func:`~fusion_explorer.methods.unmixing.projection.observation_features`) are
#: log10 energies, -12 to 0; divided by this before the gate's MLP
FEATURE_SCALE = 4.0


#: the sensor features (:attr:`CoupledData.sensor_features`) and how a network reads them: log10
#: values divided by :data:`FEATURE_SCALE`, the flag as it is
N_SENSOR = 4


def sensor_input(data: CoupledData, batch: int) -> torch.Tensor:
    """``(B, 4)``: :attr:`CoupledData.sensor_features` as the network reads them: the estimated
    noise of the LR-HSI and the MSI (log10 noise-to-signal power, -7 to about -2), whether the SRF
    was estimated (0 or 1), the PSF fit's log10 relative misfit; the logs divided by
    :data:`FEATURE_SCALE`. A noise-aware network needs them: the starts (:mod:`.start`) set them."""
    if data.sensor_features is None:
        raise ValueError("this SCALMU network adapts to the sensor pair: data.sensor_features must be set "
                         "(methods.unmixing.projection.sensor_features)")
    f = data.sensor_features.to(dtype=data.hr_msi.dtype, device=data.hr_msi.device).reshape(-1, N_SENSOR)
    return torch.cat([f[:, :2] / FEATURE_SCALE, f[:, 2:3], f[:, 3:] / FEATURE_SCALE], dim=-1).expand(batch, N_SENSOR)


def _record_inputs(record: dict, data: CoupledData) -> None:
    """What the learned parts read of the sensor pair (inputs: ``plain`` shows the same values)."""
    f = data.sensor_features.reshape(-1, N_SENSOR)[0].float().cpu().numpy()
    for key, value in (("noise_level", f[:2]), ("srf_estimated", f[2]), ("psf_misfit", f[3])):
        record.setdefault("learned", {})[key] = np.asarray(value, np.float32)
        record.setdefault("plain", {})[key] = np.asarray(value, np.float32)
        record.setdefault("learned_doc", {})[key] = INPUT_DOC[key]


#: SCALMU's learned parts, each of which can be switched off alone (the per-part ablation):
#: the layers' re-weighting matrices and exponents, the layers' LR-HSI weights ``λ_k``, the
#: consistency layer's steps (with its ridge and similarity width) and its Wiener gains, and the
#: layers' abundance prior (networks trained with one, :class:`AbundancePrior`)
LEARNED_PARTS = ("preconditioners", "hsi_weights", "steps", "wiener", "prior")


def learned_parts(learned: bool | str | Iterable[str] = True, off: str | Iterable[str] | None = None) -> frozenset:
    """The learned parts a run uses: ``learned`` (True, False or parts to keep on) minus ``off``
    (parts, or a comma-separated string of them); unknown names are a :class:`ProblemError`."""
    def names(x) -> frozenset:
        items = x.split(",") if isinstance(x, str) else list(x)
        parts = frozenset(i.strip() for i in items if i.strip())
        unknown = sorted(parts - set(LEARNED_PARTS))
        if unknown:
            raise ProblemError(f"unknown SCALMU learned part(s) {', '.join(unknown)}; "
                               f"known: {', '.join(LEARNED_PARTS)}")
        return parts
    on = frozenset(LEARNED_PARTS) if learned is True else frozenset() if learned is False else names(learned)
    return on - (names(off) if off else frozenset())


def _uses(learned, part: str) -> bool:
    """Whether ``learned`` (True, False or a set of :data:`LEARNED_PARTS`) switches ``part`` on."""
    return learned if isinstance(learned, bool) else part in learned


#: the Wiener gains ``κ = expm1(WIENER_SCALE · max(0, g))``: 0 (the exact projection) at ``g <= 0``,
#: ~1000 at ``g = 1``, with a gradient at 0
WIENER_SCALE = 3 * math.log(10)


class ConsistencyLayer(nn.Module):
    """SCALMU's last layer: ``Z = project(W H_m)`` (:func:`~fusion_explorer.methods.unmixing.projection.project`)
    with the guided transfer of the LR residual (when the data carry colour neighbours), the prior
    ``C = W Wᵀ/tr + ρ I/L``, and steps ``t_g, t_m, t_h = exp(min(0, g(f)))`` in (0, 1] for the
    guided, MSI and HSI corrections, ``f`` the :func:`observation_features` of ``W H_m``.

    ``g`` (a small MLP, its last layer zero at initialisation: full steps, the exact projection)
    can learn to trust noisy images less: with consistent images the exact projection is right,
    with noisy ones it copies their noise into the cube. The ridge ``ρ = exp(log_ridge)`` and the
    guided transfer's similarity width ``σ = exp(log_sigma)`` are learned too. ``noise_aware``: ``g``
    also reads :func:`sensor_input` and returns the Wiener gains ``κ_m, κ_h``
    (``expm1(WIENER_SCALE · clamp(g, 0, 1.5))``, 0 at initialisation). ``learned=False``
    runs full steps with the default ``ρ`` and ``σ`` and no Wiener terms (the ablation)."""

    def __init__(self, hidden: int = 16, noise_aware: bool = False, smooth_gate: bool = False,
                 fixed_steps: bool = False):
        super().__init__()
        self.noise_aware = bool(noise_aware)
        # fixed_steps: full steps, the default ridge and width, nothing of them learned; the gate returns only
        # the Wiener gains (the per-part ablation found the learned steps worth -0.05 dB on the zoo once the
        # projection has its step 3, and 0.6 dB less on clean CAVE scenes: benchmarks/scalmu_training.md)
        self.fixed_steps = bool(fixed_steps)
        if self.fixed_steps and not self.noise_aware:
            raise ValueError("fixed_steps leaves the gate only the Wiener gains: the network must be noise_aware")
        n_steps = 0 if self.fixed_steps else 3
        # smooth_gate: squash the gate's outputs without flat regions where training can reach them
        # (steps σ(g + 5)/σ(5), Wiener exponent 1.5 tanh(g / 1.5)); the clamps of the first networks
        # saturate (benchmarks/scalmu_training.md). Both forms give full steps and no Wiener term at g = 0
        self.smooth_gate = bool(smooth_gate)
        # noise-aware: N_SENSOR more inputs (sensor_input) and 2 more outputs (the Wiener gains)
        self.gate = nn.Sequential(nn.Linear(3 + N_SENSOR * self.noise_aware, hidden), nn.SiLU(),
                                  nn.Linear(hidden, n_steps + 2 * self.noise_aware))
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.zeros_(self.gate[-1].bias)
        if not self.fixed_steps:
            self.log_ridge = nn.Parameter(torch.tensor(math.log(DEFAULT_RIDGE)))
            self.log_sigma = nn.Parameter(torch.tensor(math.log(SIGMA)))

    def _learns_steps(self, learned: bool | frozenset) -> bool:
        """Whether the steps (with the ridge and width) come from the gate: ``"steps"`` on, and not fixed."""
        return _uses(learned, "steps") and not self.fixed_steps

    def outputs(self, z: torch.Tensor, data: CoupledData) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(steps (B, 3), wiener (B, 2) or None)``: the fractions ``t_g, t_m, t_h`` of the guided, MSI
        and HSI corrections, and (noise-aware) the Wiener gains ``κ_m, κ_h``."""
        with torch.no_grad():
            features = observation_features(z, data)
        return self.gate_outputs(features, data)

    def gate_outputs(self, features: torch.Tensor, data: CoupledData) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`outputs` from the observation features ``(B, 3)`` themselves (a tiled run sums them
        over tiles)."""
        with torch.no_grad():
            features = features / FEATURE_SCALE
            if self.noise_aware:
                features = torch.cat([features, sensor_input(data, features.shape[0])], dim=-1)
        g = self.gate(features)
        if self.fixed_steps:  # (the constructor made the network noise-aware)
            exponent = 1.5 * torch.tanh(g / 1.5).clamp_min(0) if self.smooth_gate else g.clamp(0, 1.5)
            return torch.ones(g.shape[0], 3, dtype=g.dtype, device=g.device), torch.expm1(WIENER_SCALE * exponent)
        if self.smooth_gate:
            steps = torch.sigmoid(g[:, :3] + 5.0) / torch.sigmoid(torch.tensor(5.0, dtype=g.dtype))
            exponent = 1.5 * torch.tanh(g[:, 3:] / 1.5).clamp_min(0)
        else:
            steps, exponent = torch.exp(g[:, :3].clamp(max=0)), g[:, 3:].clamp(0, 1.5)
        if not self.noise_aware:
            return steps, None
        return steps, torch.expm1(WIENER_SCALE * exponent)

    def steps(self, z: torch.Tensor, data: CoupledData) -> torch.Tensor:
        """``(B, 3)``: the fractions ``t_g, t_m, t_h`` of the guided, MSI and HSI corrections."""
        return self.outputs(z, data)[0]

    def parameters_for(self, features: torch.Tensor, data: CoupledData, learned: bool | frozenset = True,
                       fixed_wiener: float | None = None) -> tuple:
        """What the projection applies, from the observation ``features`` ``(B, 3)``: ``(steps (B, 3),
        ridge, sigma, wiener, msi_noise, hsi_noise)``: ``wiener`` the gains ``κ_m, κ_h`` ``(B, 2)`` (None
        when off or not noise-aware), the noise terms ``κ`` times the estimated noise-to-signal power of
        each image, ``(B,)``, or 0. ``learned``: True, False, or the :data:`LEARNED_PARTS` on (``"steps"``
        and ``"wiener"`` act here); off, a part is its plain value (full steps, the default ridge and
        width; no Wiener terms). ``fixed_wiener``: ``κ_m = κ_h`` = this number in place of the gains
        (learned or off): the hand-set Wiener gain the learned ones are compared with (1: the textbook
        linear MMSE gain for the estimated noise, if the prior had the signal's power)."""
        steps_on, wiener_on = self._learns_steps(learned), _uses(learned, "wiener")
        ones = torch.ones(features.shape[0], 3, dtype=features.dtype, device=features.device)
        plain = (ones, torch.tensor(DEFAULT_RIDGE).to(features), torch.tensor(SIGMA).to(features))
        fixed = None if fixed_wiener is None else torch.full((features.shape[0], 2), float(fixed_wiener)).to(features)
        if fixed is not None and data.sensor_features is None:
            raise ValueError("a fixed Wiener gain needs the noise estimates: data.sensor_features must be set")
        if not (steps_on or wiener_on):
            t, ridge, sigma, wiener = *plain, fixed
        else:
            t, wiener = self.gate_outputs(features, data)
            if steps_on:
                ridge, sigma = self.log_ridge.clamp(-12, 2).exp(), self.log_sigma.clamp(-6, 0).exp()
            else:
                t, ridge, sigma = plain
            wiener = fixed if fixed is not None else wiener if wiener_on else None
        msi_noise = hsi_noise = 0.0
        if wiener is not None:  # κ times the estimated noise-to-signal power of each image
            power = 10.0 ** data.sensor_features.reshape(-1, N_SENSOR)[:, :2].to(wiener)
            msi_noise, hsi_noise = wiener[:, 0] * power[:, 1], wiener[:, 1] * power[:, 0]
        return t, ridge, sigma, wiener, msi_noise, hsi_noise

    def forward(self, state: CoupledState, data: CoupledData, learned: bool | frozenset = True,
                record: dict | None = None, denoise: bool = True, fixed_wiener: float | None = None) -> torch.Tensor:
        """``Z`` ``(B, L, N)``; ``record``: a dict that receives the parts applied (item 0) under
        ``learned``, ``plain`` and ``learned_doc`` (see :data:`CONSISTENCY_DOC`). ``learned``: True,
        False, or the :data:`LEARNED_PARTS` on (``"steps"``, ``"wiener"`` act here). ``denoise``: the
        MSI residual is denoised at :func:`~fusion_explorer.methods.unmixing.projection.residual_noise`'s
        level before the MSI correction (hand-built: with the learned parts on and off alike).
        ``fixed_wiener``: a hand-set Wiener gain in place of the learned ones (:meth:`parameters_for`)."""
        z = state.fused()
        noise = residual_noise(data) if denoise else None
        if not (self._learns_steps(learned) or _uses(learned, "wiener")) and fixed_wiener is None:
            return project(z, data, spectral_prior(state.endmembers, DEFAULT_RIDGE), neighbours=data.neighbours,
                           msi_denoise=noise)
        with torch.no_grad():
            features = observation_features(z, data)
        t, ridge, sigma, wiener, msi_noise, hsi_noise = self.parameters_for(features, data, learned, fixed_wiener)
        t = t[..., None, None]
        if record is not None:
            record.update(_parts(
                {"guided_step": t[0, 0, 0, 0], "msi_step": t[0, 1, 0, 0], "hsi_step": t[0, 2, 0, 0], "ridge": ridge,
                 "sigma": sigma},
                {"guided_step": 1.0, "msi_step": 1.0, "hsi_step": 1.0, "ridge": DEFAULT_RIDGE, "sigma": SIGMA},
                CONSISTENCY_DOC))
            if self.fixed_steps:
                for key in ("guided_step", "msi_step", "hsi_step", "ridge", "sigma"):
                    record["learned_doc"][key] += " Not learned by this network: fixed at the plain value."
            if wiener is not None:
                record["learned"].update(msi_wiener=_arr(wiener[0, 0]), hsi_wiener=_arr(wiener[0, 1]))
                record["plain"].update(msi_wiener=np.float32(0), hsi_wiener=np.float32(0))
                record["learned_doc"].update(msi_wiener=CONSISTENCY_DOC["msi_wiener"],
                                             hsi_wiener=CONSISTENCY_DOC["hsi_wiener"])
                if fixed_wiener is not None:
                    for key in ("msi_wiener", "hsi_wiener"):
                        record["learned_doc"][key] += f" Not learned in this run: fixed at {float(fixed_wiener):g}."
                _record_inputs(record, data)
            # the level residual_noise applied (-12, the floor of observation_features' logs: none)
            relative = -12.0 if noise is None else max(float(data.msi_noise_level.reshape(-1)[0]), -12.0)
            for key in ("learned", "plain"):
                record[key]["msi_residual_noise"] = np.float32(relative)
            record["learned_doc"]["msi_residual_noise"] = INPUT_DOC["msi_residual_noise"]
        prior = spectral_prior(state.endmembers, ridge)
        return project(z, data, prior, neighbours=data.neighbours, guided_step=t[:, 0], sigma=sigma,
                       msi_step=t[:, 1], hsi_step=t[:, 2], msi_noise=msi_noise, hsi_noise=hsi_noise,
                       msi_denoise=noise)


#: initial weights ``(μ_all, μ_above)`` and threshold ``τ`` of the abundance prior (generic small values:
#: training sets them)
PRIOR_INIT = (0.1, 0.1, 2.0)


class AbundancePrior(nn.Module):
    """A learned abundance-space regulariser for the ``H_m`` update of every layer: the term
    ``½ Σ μ ⊙ (H_m - A)²`` joins the update's objective (``num += μ A``, ``den += μ H_m``: still
    multiplicative and non-negative), with ``A = transfer(S(H_m))`` the colour-guided transfer
    (:func:`~fusion_explorer.methods.unmixing.guided.transfer`) of the layer's own LR abundances.

    Why: with 3 MSI bands and ``p ≈ 30`` endmembers the MSI fit leaves most abundance directions free,
    and the LR-HSI constrains only their block means; MU then settles them wherever its start points, and
    one bad start blows up a few abundances (thread_spools x32: 71 % of the squared error in 1 % of the
    pixels, benchmarks/RESULTS.md). ``A`` gives each HR pixel the abundances of the LR pixels of its
    colour: where the MSI sees a direction the MSI term dominates, where it does not the prior does.

    ``μ = s · (e^{a_k} + e^{b_k} · sigmoid(4 (log(H_m/A) - log τ_k)))``, ``s`` the mean squared norm of the
    MSI endmembers (so ``μ`` is relative to the MSI term's curvature): a weight on every abundance and one
    that acts only on abundances well above ``A``. Noise-aware networks add ``c_k · sensor features`` to
    ``a_k`` and ``b_k``, ratio-aware ones ``r_k log2(ratio) / 5``. Learned: ``a, b, log τ`` (and ``c``,
    ``r``) per layer, about 15 numbers a layer."""

    def __init__(self, layers: int, noise_aware: bool, ratio_aware: bool = False):
        super().__init__()
        mu_all, mu_above, tau = PRIOR_INIT
        self.log_weight = nn.Parameter(torch.tensor([[math.log(mu_all), math.log(mu_above)]] * layers))
        self.log_threshold = nn.Parameter(torch.full((layers,), math.log(tau)))
        self.noise = nn.Parameter(torch.zeros(layers, 2, N_SENSOR)) if noise_aware else None
        # the target A is the transfer of LR abundances: how far it can be trusted depends on how many HR
        # pixels an LR pixel mixes, so the weights may also read log2(ratio) / 5 (0 at initialisation)
        self.ratio = nn.Parameter(torch.zeros(layers, 2)) if ratio_aware else None

    def weights(self, k: int, data: CoupledData) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ_all, μ_above)`` ``(B, 2)`` (before the scale ``s``) and ``τ`` ``()`` of layer ``k``."""
        log_w = self.log_weight[k].expand(data.hr_msi.shape[0], 2)
        if self.noise is not None:
            log_w = log_w + sensor_input(data, data.hr_msi.shape[0]) @ self.noise[k].transpose(0, 1)
        if self.ratio is not None:
            ratio_feature = math.log2(data.hr_msi.shape[-1] / data.lr_hsi.shape[-1]) / 10  # = log2(ratio) / 5
            log_w = log_w + self.ratio[k] * ratio_feature
        return log_w.clamp(-10, 4).exp(), self.log_threshold[k].clamp(-1, 3).exp()

    def terms(self, k: int, num: torch.Tensor, den: torch.Tensor, state: CoupledState,
              data: CoupledData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(num + μ A, den + μ H_m, (μ_all, μ_above) (B, 2), τ (B,))``; unchanged without colour neighbours."""
        weight, tau = self.weights(k, data)
        tau_items = tau.expand(weight.shape[0])  # one τ for every item, per item as the other recorded parts
        if data.neighbours is None:
            return num, den, weight, tau_items
        with torch.no_grad():  # the prior's target and scale: features, as the other layers' are
            target = transfer(state.abundances_lr, data.neighbours).clamp_min(0)
            scale = prior_scale(state.msi_endmembers)
        num, den = prior_terms(num, den, state.abundances, target, scale, weight, tau)
        return num, den, weight, tau_items


def prior_scale(msi_endmembers: torch.Tensor) -> torch.Tensor:
    """``s`` ``(B, 1, 1)``: the mean squared norm of the MSI endmembers ``W_m`` ``(B, l, p)`` (the scale of
    the MSI term's curvature in the ``H_m`` update), which the prior's weights are relative to."""
    return msi_endmembers.square().sum(dim=-2).mean(dim=-1)[:, None, None]


def prior_terms(num: torch.Tensor, den: torch.Tensor, h: torch.Tensor, target: torch.Tensor, scale: torch.Tensor,
                weight: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The abundance prior added to an ``H_m`` update's ``num, den`` ``(B, p, pixels)``: ``(num + μ A,
    den + μ H_m)`` with ``μ = s (μ_all + μ_above sigmoid(4 (log(H_m / A) - log τ)))``, ``A = target``,
    ``s = scale`` ``(B, 1, 1)``, ``weight`` ``(B, 2)`` the two weights (:class:`AbundancePrior`). Also what
    tiled SCALMU applies tile by tile (:mod:`fusion_explorer.tiled.scalmu`)."""
    with torch.no_grad():
        t = tiny(h.dtype)
        log_ratio = (h + t).log() - (target + t).log()
    above = torch.sigmoid(4 * (log_ratio - tau.log()))
    mu = scale * (weight[:, 0, None, None] + weight[:, 1, None, None] * above)
    return num + mu * target, den + mu * h


class SCALMUNet(nn.Module):
    """``layers`` learned coupled steps; ``hidden`` the MLP width; exponents in
    ``[exp(-1.5), exp(max_log_exponent)]``. Parameters: ~1k per layer.

    ``joint=True``: each layer's ``H_m`` update fits both images
    (:func:`~fusion_explorer.methods.unmixing.joint_abundance_terms`) with the LR-HSI weighted by
    ``λ_k = balance · exp(a_k)``, ``a_k`` learned per layer (0 at initialisation, so the untrained
    network is unrolled joint MU); ``joint=False``: the MSI alone, as in CNMF. With ``learned=False``
    every layer is the MSI-only CNMF step either way.
    ``consistency=True``: :meth:`finish` ends with the :class:`ConsistencyLayer`; ``False``: the
    output is ``W H_m`` (networks trained before the layer existed).
    """

    def __init__(self, layers: int = 10, hidden: int = 16, max_log_exponent: float = 1.5, joint: bool = True,
                 consistency: bool = True, noise_aware: bool = False, smooth_gate: bool = False,
                 fixed_steps: bool = False, abundance_prior: bool = False, prior_ratio: bool = False):
        super().__init__()
        self.config = {"layers": int(layers), "hidden": int(hidden), "max_log_exponent": float(max_log_exponent),
                       "joint": bool(joint), "consistency": bool(consistency), "noise_aware": bool(noise_aware),
                       "smooth_gate": bool(smooth_gate), "fixed_steps": bool(fixed_steps),
                       "abundance_prior": bool(abundance_prior), "prior_ratio": bool(prior_ratio)}
        self.abundance_nets = nn.ModuleList(PairPreconditioner(hidden, max_log_exponent) for _ in range(layers))
        self.endmember_nets = nn.ModuleList(PairPreconditioner(hidden, max_log_exponent) for _ in range(layers))
        self.log_hsi_weight = nn.Parameter(torch.zeros(layers))
        if noise_aware:  # log λ_k = a_k + b_k · sensor features (zero at initialisation: λ_k = balance)
            self.hsi_weight_noise = nn.Parameter(torch.zeros(layers, N_SENSOR))
        self.consistency = ConsistencyLayer(hidden, noise_aware, smooth_gate, fixed_steps) if consistency else None
        self.prior = AbundancePrior(layers, noise_aware, prior_ratio) if abundance_prior else None

    def finish(self, state: CoupledState, data: CoupledData, learned: bool | frozenset = True,
               consistency: bool = True, record: dict | None = None, denoise: bool = True,
               fixed_wiener: float | None = None) -> torch.Tensor:
        """The fused cube ``(B, L, N)`` from the last layer's iterate: through the consistency layer
        when the network has one (and ``consistency``), else ``W H_m``; non-negative either way.
        ``record``: receives the consistency layer's learned parts; ``denoise``: its MSI-residual
        denoising (see :meth:`ConsistencyLayer.forward`); ``fixed_wiener``: a hand-set Wiener gain in place
        of the learned ones (:meth:`ConsistencyLayer.parameters_for`)."""
        if self.consistency is not None and consistency:
            return self.consistency(state, data, learned, record, denoise, fixed_wiener)
        return state.fused().clamp_min(0)

    def hsi_weight(self, k: int, data: CoupledData, learned: bool | frozenset = True) -> torch.Tensor | float:
        """``λ_k`` of layer ``k``: 0 when not joint or not ``learned`` (the plain step fits ``H_m`` to
        the MSI alone, as CNMF's), else ``balance · exp(a_k)``."""
        if not self.config["joint"] or not _uses(learned, "hsi_weights"):
            return 0.0
        log_weight = self.log_hsi_weight[k]
        if self.config.get("noise_aware"):  # (B,) then (B, 1, 1) to weigh each scene's HSI term
            sensor = sensor_input(data, data.hr_msi.shape[0])
            log_weight = (log_weight + sensor @ self.hsi_weight_noise[k])[:, None, None]
        return data.balance * log_weight.clamp(-3, 3).exp()

    @property
    def layers(self) -> int:
        return self.config["layers"]

    @property
    def parts(self) -> tuple[str, ...]:
        """The :data:`LEARNED_PARTS` this network has (``prior`` only when trained with one)."""
        return tuple(part for part in LEARNED_PARTS if part != "prior" or self.prior is not None)

    def hook(self, k: int, learned: bool | frozenset = True, record: dict | None = None,
             data: CoupledData | None = None) -> Callable | None:
        """The :data:`~fusion_explorer.methods.unmixing.Hook` of layer ``k`` (``None`` = plain MU);
        ``record``: a dict that receives the matrices, exponents and prior weights it applies (tensors).
        ``data``: the layer's data, which the abundance prior (:class:`AbundancePrior`) reads."""
        precondition = _uses(learned, "preconditioners")
        prior = self.prior if self.prior is not None and data is not None and _uses(learned, "prior") else None
        if not (precondition or prior is not None):
            return None

        def hook(which: str, num: torch.Tensor, den: torch.Tensor, state: CoupledState):
            if which == "abundances" and prior is not None:  # the prior is part of the objective: before P
                num, den, weight, tau = prior.terms(k, num, den, state, data)
                if record is not None:
                    record["prior_weight"], record["prior_threshold"] = weight, tau
            if not precondition:
                return num, den
            if which == "abundances":  # rows of num/den are endmembers: P acts from the left
                num, den, mat, exponent = _reweight(self.abundance_nets[k], num, den, state, state.abundances,
                                                    state.msi_endmembers, True)
            elif which == "endmembers":  # columns are endmembers: Q acts from the right
                num, den, mat, exponent = _reweight(self.endmember_nets[k], num, den, state, state.abundances_lr,
                                                    state.endmembers, False)
            else:
                return num, den
            if record is not None:
                name = "abundance" if which == "abundances" else "endmember"
                record[f"{name}_matrix"], record[f"{name}_exponent"] = mat, exponent
            return num, den

        return hook

    def layer(self, k: int, data: CoupledData, learned: bool | frozenset = True):
        """Layer ``k``'s ``(hook, hsi_weight, parts)`` (:data:`~fusion_explorer.methods.unmixing.schedule.Layer`):
        layers past the trained count are CNMF's plain coupled MU step; ``parts()``, called after the step,
        gives the trace keys ``learned`` / ``plain`` / ``learned_doc`` (none when not ``learned``).

        Why plain past the trained count: training shaped each learned layer for its place in a
        ``K``-step schedule, and a learned step repeated outside it is unchecked. Its exponents may
        over-relax the MU (up to ``e^1.5``): repeated ten times, the last layer of one trained network
        (z12 in benchmarks/scalmu_training.md) drove a 64x64 CAVE crop to non-finite values. The plain
        MU step never increases CNMF's cost, so extra layers are safe to ask for."""
        if k >= self.layers:
            return None, 0.0, dict
        weight = self.hsi_weight(k, data, learned)
        applied: dict = {}
        return self.hook(k, learned, applied, data), weight, lambda: _layer_parts(applied, weight)

    def forward(
        self,
        state: CoupledState,
        data: CoupledData,
        *,
        learned: bool | frozenset = True,
        layers: int | None = None,
        callback: Callable[[int, CoupledState], None] | None = None,
    ) -> CoupledState:
        """Run the unrolled layers from ``state``; ``callback(k, state)`` after each (1-based).

        ``learned=False`` runs the same number of plain coupled MU steps (the ablation; a set of
        :data:`LEARNED_PARTS` keeps those on);
        ``layers`` beyond the trained count are plain coupled MU steps (:meth:`layer`).
        """
        for k in range(self.layers if layers is None else int(layers)):
            hook, weight, _ = self.layer(k, data, learned)
            state = coupled_step(state, data, hook, hsi_weight=weight)
            if callback is not None:
                callback(k + 1, state)
        return state


def _layer_parts(applied: dict, weight) -> dict:
    """The trace keys ``learned`` / ``plain`` / ``learned_doc`` of one layer from what its hook applied."""
    if not applied:
        return {}
    learned = {k: v[0] for k, v in applied.items()}
    learned["hsi_weight"] = weight.reshape(-1)[0] if isinstance(weight, torch.Tensor) else weight  # item 0
    plain = {"hsi_weight": 0.0}
    if "abundance_matrix" in applied:
        p = applied["abundance_matrix"].shape[-1]
        eye, ones = np.eye(p, dtype=np.float32), np.ones(p, dtype=np.float32)
        plain.update(abundance_matrix=eye, abundance_exponent=ones, endmember_matrix=eye, endmember_exponent=ones)
    if "prior_weight" in applied:
        plain.update(prior_weight=np.zeros(2, np.float32), prior_threshold=learned["prior_threshold"])
    return _parts(learned, plain, LAYER_DOC)


def n_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def fused_loss(z: torch.Tensor, x: torch.Tensor, sam_weight: float = 0.1) -> torch.Tensor:
    """Training loss of fused ``z`` vs truth ``x`` ``(B, bands, pixels)``: the mean over the batch of
    ``log(relative L1 + sam_weight x mean spectral angle in radians)``.

    The log makes every scene count by its *relative* improvement: without it, one ill-posed scene
    (say 216 bands seen through 8x8 LR pixels, whose start sits at 24 dB) carried a loss ten
    times the others' and steered training towards it.
    """
    l1 = (z - x).abs().mean(dim=(-1, -2)) / x.abs().mean(dim=(-1, -2)).clamp_min(1e-12)
    dot = (z * x).sum(dim=-2)
    # sqrt(sum + eps), not norm(): the gradient of a norm is 0/0 at a zero spectrum (a dead pixel)
    nz, nx = (z.square().sum(dim=-2) + 1e-12).sqrt(), (x.square().sum(dim=-2) + 1e-12).sqrt()
    cos = (dot / (nz * nx)).clamp(-1 + 1e-6, 1 - 1e-6)
    angle = torch.where(nx > 1e-5, torch.acos(cos), torch.zeros_like(cos)).mean(dim=-1)
    return (l1 + sam_weight * angle).clamp_min(1e-12).log().mean()


def psnr_db(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, peak 1, clipped estimate) per batch item ``(B,)`` of ``(B, bands, pixels)`` tensors."""
    mse = (z.clamp(0, 1) - x).square().mean(dim=(-1, -2)).clamp_min(1e-20)
    return -10 * torch.log10(mse)


__all__ = ["LEARNED_PARTS", "learned_parts", "SCALMUNet", "AbundancePrior", "prior_scale", "prior_terms",
           "PairPreconditioner", "ConsistencyLayer", "fused_loss", "psnr_db", "n_parameters", "HOOKED"]
