"""The coupled non-negative unmixing step shared by CNMF and SCALMU (one MU iteration and its parts).

Linear mixing: the LR-HSI ``Y_h ≈ W H_h`` and the HR-MSI ``Y_m ≈ W_m H_m`` with endmembers
``W`` ``(L, p)``, ``W_m = R W`` ``(l, p)`` through the SRF ``R`` ``(l, L)``, abundances
``H_m`` ``(p, N)`` at high resolution and ``H_h = S(H_m)`` ``(p, n)`` through the spatial
degradation ``S`` (PSF blur + decimation). Every tensor here is batched: ``(batch, rows, cols)``.

Multiplicative updates (Lee & Seung) for ``min ||Y - W H||²`` with the soft sum-to-one term
``δ² ||1ᵀH - 1ᵀ||²`` (Yokoya et al. 2012 append a row ``δ`` to ``Y`` and ``W``)::

    H ← H ⊙ (Wᵀ Y + δ²) ⊘ (Wᵀ W H + δ² 1 1ᵀ H)        W ← W ⊙ (Y Hᵀ) ⊘ (W H Hᵀ)

Both factors only ever get multiplied by non-negative ratios, so non-negativity is kept for
free. :func:`abundance_terms` / :func:`endmember_terms` return the numerator and denominator
separately, so that SCALMU can re-weight them with learned non-negative matrices (``hook``)
before the same multiplicative step: the unrolled network *is* this step plus learned parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ...errors import ProblemError

#: ``hook(which, num, den, state) -> (num, den)``; ``which`` is one of "endmembers",
#: "abundances_lr", "abundances", "msi_endmembers". Identity (``None``) = plain CNMF.
Hook = Callable[[str, torch.Tensor, torch.Tensor, "CoupledState"], tuple[torch.Tensor, torch.Tensor]]


def tiny(dtype: torch.dtype) -> float:
    """Smallest safe denominator for ``dtype`` (avoids 0/0 when a factor column dies)."""
    return 1e-30 if dtype == torch.float64 else 1e-20


def multiplicative(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``x ⊙ num ⊘ den`` with the denominator floored at a tiny positive number.

    The division is done in place on the product (one ``x``-sized temporary fewer: on a 512x512
    scene each is 31 MB, and this machine's memory moves ~4 GB/s; autograd-safe, since neither
    product nor quotient saves its output)."""
    return torch.mul(x, num).div_(den.clamp_min(tiny(den.dtype)))


def abundance_terms(
    y: torch.Tensor, w: torch.Tensor, h: torch.Tensor, delta: float = 0.0, num: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator ``Wᵀ Y + δ²`` and denominator ``(Wᵀ W + δ² 1 1ᵀ) H`` of the abundance update.

    ``y`` ``(B, L, n)``, ``w`` ``(B, L, p)``, ``h`` ``(B, p, n)``; ``num``: the numerator when the
    caller has it cached (it is constant while ``W`` is).
    """
    if num is None:
        num = abundance_numerator(y, w, delta)
    return num, abundance_denominator(sum_to_one_rows(w, delta), h)


def abundance_numerator(y: torch.Tensor, w: torch.Tensor, delta: float = 0.0) -> torch.Tensor:
    """``Wᵀ Y + δ²`` (the sum-to-one row's share): the numerator of the abundance update."""
    num = w.transpose(-1, -2) @ y
    return num.add_(delta * delta) if delta else num  # in place on the product: it saves no output


def sum_to_one_rows(w: torch.Tensor, delta: float) -> torch.Tensor:
    """``W`` ``(B, L, p)`` with the sum-to-one row ``δ 1ᵀ`` appended (``W`` itself when ``δ = 0``)."""
    if not delta:
        return w
    return torch.cat([w, w.new_full((*w.shape[:-2], 1, w.shape[-1]), delta)], dim=-2)


def abundance_denominator(
    w: torch.Tensor, h: torch.Tensor, out: torch.Tensor | None = None, mid: torch.Tensor | None = None
) -> torch.Tensor:
    """``Wᵀ W H`` for ``w`` from :func:`sum_to_one_rows` (callers looping over a fixed ``W`` build it
    once); ``out`` (like ``h``) and ``mid`` (``(B, rows, n)``): buffers to write into, for hot loops."""
    wt = w.transpose(-1, -2)
    if w.shape[-2] < w.shape[-1]:
        # fewer rows than endmembers (an RGB MSI): Wᵀ W has rank <= rows, so Wᵀ (W H) costs
        # 2 rows·p·n instead of p²·n — 4x fewer operations for 3 bands and 30 endmembers
        return torch.matmul(wt, torch.matmul(w, h, out=mid), out=out)
    return torch.matmul(wt @ w, h, out=out)


def endmember_terms(y: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator ``Y Hᵀ`` and denominator ``W (H Hᵀ)`` of the endmember update."""
    ht = h.transpose(-1, -2)
    return y @ ht, w @ (h @ ht)


@dataclass
class CoupledData:
    """What the coupled step reads and never changes.

    ``lr_hsi`` ``(B, L, n)``, ``hr_msi`` ``(B, l, N)``, ``srf`` ``(B or 1, l, L)``;
    ``degrade`` maps HR abundances ``(B, p, N)`` to LR ones ``(B, p, n)`` (the PSF + decimation
    of the physics, applied to abundance maps); ``delta`` the sum-to-one weight; ``upsample`` the
    adjoint of ``degrade`` (needed only by :func:`joint_abundance_terms` and the consistency
    projection); ``neighbours`` the HR pixels' colour neighbours on the LR grid
    (:func:`.guided.data_neighbours`, for the guided transfer of
    :func:`fusion_explorer.methods.unmixing.projection.project`); ``sensor_features`` ``(B, 4)``
    what is known of the sensor pair (:func:`.projection.sensor_features`: the estimated noise of
    the LR-HSI and the MSI, whether the SRF was estimated, how well a Gaussian PSF fits), read by
    learned layers that adapt to it; ``hr_size`` ``(Y, X)`` the HR image the flat pixels come from and
    ``msi_noise_level`` ``(B,)`` the log10 noise-to-signal power at which the consistency projection
    denoises the MSI residual (:func:`.projection.common_noise_level`; ``None``: not denoised).
    """

    lr_hsi: torch.Tensor
    hr_msi: torch.Tensor
    srf: torch.Tensor
    degrade: Callable[[torch.Tensor], torch.Tensor]
    delta: float = 0.0
    upsample: Callable[[torch.Tensor], torch.Tensor] | None = None
    neighbours: Any = None
    sensor_features: torch.Tensor | None = None
    hr_size: tuple[int, int] | None = None
    msi_noise_level: torch.Tensor | None = None

    @property
    def balance(self) -> float:
        """``N l / (n L)``: the weight that gives the LR-HSI term of a joint update the same
        per-sample weight as the HR-MSI term (it has ``ratio²`` fewer pixels, ``L / l`` more bands)."""
        (_, bands, n), (_, msi_bands, big_n) = self.lr_hsi.shape, self.hr_msi.shape
        return big_n * msi_bands / (n * bands)


def flat_degradation(spatial: Callable[[torch.Tensor], torch.Tensor], hr_size: tuple[int, int]):
    """``spatial`` (an operator on images ``(B, c, Y, X)``) as :attr:`CoupledData.degrade`: flattened
    HR abundances ``(B, p, Y·X)`` → flattened LR ones ``(B, p, y·x)``."""
    big_h, big_w = hr_size

    def degrade(x: torch.Tensor) -> torch.Tensor:
        b, c, _ = x.shape
        return spatial(x.reshape(b, c, big_h, big_w)).reshape(b, c, -1)

    return degrade


def flat_adjoint(spatial, lr_size: tuple[int, int]):
    """The adjoint of :func:`flat_degradation`'s operator (:attr:`CoupledData.upsample`): flattened
    LR maps ``(B, c, y·x)`` → flattened HR ones. ``spatial`` needs an ``adjoint`` method."""
    h, w = lr_size

    def upsample(x: torch.Tensor) -> torch.Tensor:
        b, c, _ = x.shape
        return spatial.adjoint(x.reshape(b, c, h, w)).reshape(b, c, -1)

    return upsample


@dataclass
class CoupledState:
    """The iterate: ``endmembers`` ``W`` ``(B, L, p)``, ``abundances_lr`` ``H_h`` ``(B, p, n)``,
    ``abundances`` ``H_m`` ``(B, p, N)``, ``msi_endmembers`` ``W_m`` ``(B, l, p)``."""

    endmembers: torch.Tensor
    abundances_lr: torch.Tensor
    abundances: torch.Tensor
    msi_endmembers: torch.Tensor

    def fused(self) -> torch.Tensor:
        """``Z = W H_m`` ``(B, L, N)``."""
        return self.endmembers @ self.abundances


def joint_abundance_terms(
    state: CoupledState, data: CoupledData, hsi_weight: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator and denominator of the MU of ``H_m`` on *both* images,
    ``min ||Y_m - W_m H_m||² + δ²||1ᵀH_m - 1ᵀ||² + λ ||Y_h - W S(H_m)||²`` with ``λ = hsi_weight``::

        num = W_mᵀ Y_m + δ² + λ Sᵀ(Wᵀ Y_h)        den = (W_mᵀ W_m + δ² 1 1ᵀ) H_m + λ Sᵀ(Wᵀ W S(H_m))

    ``S`` and its adjoint ``Sᵀ`` have non-negative entries, so the update stays multiplicative.
    CNMF fits ``H_m`` to the MSI alone (the HSI reaches it only through ``W`` and the start);
    here every update also pulls ``S(H_m)`` towards the LR-HSI. Uses ``state.abundances_lr``
    as ``S(H_m)`` (the coupled step sets it just before). ``hsi_weight`` may be ``(B, 1, 1)``.
    """
    if data.upsample is None:
        raise ProblemError("a joint abundance update needs CoupledData.upsample (the adjoint of degrade)")
    num, den = abundance_terms(data.hr_msi, state.msi_endmembers, state.abundances, data.delta)
    w, wt = state.endmembers, state.endmembers.transpose(-1, -2)
    # λ Sᵀ(a) = Sᵀ(λ a): weighted on the LR grid, ratio² fewer pixels than the HR one
    num_h = data.upsample(hsi_weight * (wt @ data.lr_hsi))
    den_h = data.upsample(hsi_weight * ((wt @ w) @ state.abundances_lr))  # (Wᵀ W) first: no L x n product
    # in place: num and den are fresh products that autograd does not keep (see multiplicative)
    return num.add_(num_h), den.add_(den_h)


def _apply(which: str, x, num, den, state, hook: Hook | None) -> torch.Tensor:
    if hook is not None:
        num, den = hook(which, num, den, state)
    return multiplicative(x, num, den)


def update_endmembers(state: CoupledState, data: CoupledData, hook: Hook | None = None) -> CoupledState:
    """One MU of ``W`` on the HSI side, ``H_h`` fixed."""
    num, den = endmember_terms(data.lr_hsi, state.endmembers, state.abundances_lr)
    return replace(state, endmembers=_apply("endmembers", state.endmembers, num, den, state, hook))


def update_abundances_lr(state: CoupledState, data: CoupledData, hook: Hook | None = None) -> CoupledState:
    """One MU of ``H_h`` on the HSI side, ``W`` fixed."""
    num, den = abundance_terms(data.lr_hsi, state.endmembers, state.abundances_lr, data.delta)
    return replace(state, abundances_lr=_apply("abundances_lr", state.abundances_lr, num, den, state, hook))


def update_msi_endmembers(state: CoupledState, data: CoupledData, hook: Hook | None = None) -> CoupledState:
    """One MU of ``W_m`` on the MSI side, ``H_m`` fixed."""
    num, den = endmember_terms(data.hr_msi, state.msi_endmembers, state.abundances)
    return replace(state, msi_endmembers=_apply("msi_endmembers", state.msi_endmembers, num, den, state, hook))


def update_abundances(
    state: CoupledState, data: CoupledData, hook: Hook | None = None, wty: torch.Tensor | None = None
) -> CoupledState:
    """One MU of the HR abundances ``H_m`` on the MSI side, ``W_m`` fixed."""
    num, den = abundance_terms(data.hr_msi, state.msi_endmembers, state.abundances, data.delta, wty)
    return replace(state, abundances=_apply("abundances", state.abundances, num, den, state, hook))


def couple_to_hsi(state: CoupledState, data: CoupledData) -> CoupledState:
    """``H_h ← S(H_m)``: the LR abundances are the degraded HR ones."""
    return replace(state, abundances_lr=data.degrade(state.abundances).clamp_min(0))


def couple_to_msi(state: CoupledState, data: CoupledData) -> CoupledState:
    """``W_m ← R W``: the MSI endmembers are the HSI ones seen through the SRF."""
    return replace(state, msi_endmembers=data.srf @ state.endmembers)


def coupled_step(
    state: CoupledState,
    data: CoupledData,
    hook: Hook | None = None,
    *,
    update_lr_abundances: bool = False,
    update_msi_side_endmembers: bool = False,
    hsi_weight: float | torch.Tensor = 0.0,
) -> CoupledState:
    """One coupled iteration: ``H_h ← S H_m``; MU of ``W`` (and ``H_h``) on ``Y_h``;
    ``W_m ← R W``; MU of ``H_m`` (and ``W_m``) on ``Y_m`` — or, with ``hsi_weight`` λ > 0, on
    both images (:func:`joint_abundance_terms`). SCALMU's layer is this plus ``hook``."""
    state = couple_to_hsi(state, data)
    if update_lr_abundances:
        state = update_abundances_lr(state, data, hook)
    state = update_endmembers(state, data, hook)
    state = couple_to_msi(state, data)
    if update_msi_side_endmembers:
        state = update_msi_endmembers(state, data, hook)
    if isinstance(hsi_weight, torch.Tensor) or hsi_weight > 0:
        if update_lr_abundances:  # H_h moved away from S(H_m): the joint term needs S(H_m) itself
            state = couple_to_hsi(state, data)
        num, den = joint_abundance_terms(state, data, hsi_weight)
        return replace(state, abundances=_apply("abundances", state.abundances, num, den, state, hook))
    return update_abundances(state, data, hook)
