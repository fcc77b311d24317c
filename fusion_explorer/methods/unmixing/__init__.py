"""One unmixing engine for CNMF and SCALMU (and the trace every iterative method records).

- :mod:`.step`: the coupled multiplicative step (:class:`CoupledState`, :class:`CoupledData`,
  :func:`coupled_step` and its parts); SCALMU's layer is this step plus a learned ``hook``.
- :mod:`.estimate`: initialisers on the LR-HSI (VD, VCA, SRF and PSF estimates).
- :mod:`.setup`: a :class:`~fusion_explorer.problem.FusionProblem` as the step's data and start.
- :mod:`.schedule`: CNMF's schedule of that step, one stage per method of :class:`.schedule.Schedule`.
- :mod:`.consistency`: the optional last stage that moves ``W H_m`` onto both images.
- :mod:`.guided`: the colour-guided transfer of an LR residual to the HR pixels (used by consistency).
- :mod:`.trace`: the one trace recorder and its memory budget (CNMF, SCALMU, MossFuse's fit).

Only :mod:`.step` and :mod:`.estimate` are imported here (their names stay importable from
``fusion_explorer.methods.unmixing``); import the others from their modules.
"""

from .estimate import estimate_gaussian_psf, estimate_srf, vca, virtual_dimensionality
from .step import (
    CoupledData,
    CoupledState,
    Hook,
    abundance_denominator,
    abundance_numerator,
    abundance_terms,
    couple_to_hsi,
    couple_to_msi,
    coupled_step,
    endmember_terms,
    flat_adjoint,
    flat_degradation,
    joint_abundance_terms,
    multiplicative,
    sum_to_one_rows,
    tiny,
    update_abundances,
    update_abundances_lr,
    update_endmembers,
    update_msi_endmembers,
)

__all__ = [
    "CoupledData", "CoupledState", "Hook", "abundance_denominator", "abundance_numerator", "abundance_terms",
    "couple_to_hsi", "couple_to_msi", "coupled_step", "endmember_terms", "flat_adjoint", "flat_degradation",
    "joint_abundance_terms", "multiplicative", "sum_to_one_rows", "tiny", "update_abundances",
    "update_abundances_lr", "update_endmembers", "update_msi_endmembers", "estimate_gaussian_psf", "estimate_srf",
    "vca", "virtual_dimensionality",
]
