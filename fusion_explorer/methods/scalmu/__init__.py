"""SCALMU: unrolled CNMF with learned adaptive multiplicative updates, trained only on spectral dead leaves.

After Xu, Gousseau, Kervazo & Ladjal (2026), built from the description in issue 4. SCALMU runs
CNMF's schedule (:mod:`..unmixing.schedule`; coarse to fine on large images, :mod:`.start`) and
continues its iterate with ``K`` layers, each the shared coupled step
(:func:`~fusion_explorer.methods.unmixing.coupled_step`) plus a learned hook: non-negative
``p x p`` matrices and exponents computed from the iterate re-weight its updates, and a learned
weight adds the LR-HSI to the abundance update (see :mod:`.model`). With the learned parts off a
layer is exactly one CNMF coupled iteration (``cnmf(coupled_steps=K)``). Then a consistency layer
moves ``W H_m`` onto both images by learned fractions of the exact correction
(:class:`.model.ConsistencyLayer`; off, it is ``cnmf(consistency="guided")``): that is the fused cube.
Training: :mod:`.train` (``fusion-explorer train scalmu``).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import torch

from ...cube import from_tensor
from ...errors import ProblemError
from ...problem import FusionProblem, FusionResult
from ..base import ProgressCallback, register
from ..unmixing.consistency import fused_bytes, record_stage
from ..unmixing.trace import TraceRecorder, evenly
from .model import SCALMUNet, learned_parts, n_parameters
from .start import schedule_start

#: the shipped weights (``fusion_explorer/data/scalmu_default.pt``)
DEFAULT_CHECKPOINT = "scalmu_default.pt"


def default_checkpoint_path() -> Path:
    return Path(str(resources.files("fusion_explorer") / "data" / DEFAULT_CHECKPOINT))


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The dict of a SCALMU checkpoint file (``config``, ``model``, ...), loaded as weights only.

    ``torch.load(weights_only=True)``: tensors, numbers, strings, lists, tuples and dicts; a pickle
    that asks for anything else (it could run code) is refused, as is a file torch cannot read.
    """
    from ...io.weights import load_weights

    ckpt = load_weights(path, map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ProblemError(f"{path} is not a SCALMU checkpoint (expected a dict with 'config' and 'model')")
    return ckpt


def load_model(
    checkpoint: str | Path | None = None, map_location: str | torch.device = "cpu"
) -> tuple[SCALMUNet, dict]:
    """``(network, checkpoint dict)`` from ``checkpoint`` (a path; ``None`` = the shipped weights),
    read as weights only (:func:`read_checkpoint`)."""
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint_path()
    ckpt = read_checkpoint(path, map_location)
    try:
        config = dict(ckpt["config"]["model"])
        state = dict(ckpt["model"])
        if "log_hsi_weight" not in state:  # trained before the joint layers: MSI-only updates, as it was trained
            config.setdefault("joint", False)
            state["log_hsi_weight"] = torch.zeros(int(config["layers"]))
        config.setdefault("consistency", False)  # trained before the consistency layer: output W H_m
        net = SCALMUNet(**config)
        net.load_state_dict(state)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        why = (str(exc).splitlines() or [""])[0]
        raise ProblemError(f"{path}: not the weights of a SCALMU network ({type(exc).__name__}: {why})") from None
    net.eval()
    return net, ckpt


@register(
    "scalmu",
    "unrolled CNMF with learned adaptive multiplicative updates, trained on synthetic dead leaves",
    iterative=True,
    random_start=True,
)
def scalmu(
    problem: FusionProblem,
    *,
    device: torch.device,
    progress: ProgressCallback | None = None,
    seed: int = 0,
    checkpoint: str | None = None,
    learned: bool = True,
    ablate: str | None = None,
    layers: int | None = None,
    init_iterations: int | None = None,
    msi_pyramid: list | str | None = "auto",
    n_endmembers: int | str | None = None,
    dtype: str = "float32",
    trace_budget_mb: float = 256.0,
    consistency: bool = True,
    denoise: bool = True,
    wiener: float | None = None,
) -> FusionResult:
    """Fuse with SCALMU.

    Options: ``checkpoint`` (path; default the shipped ``scalmu_default.pt``); ``learned=False``
    runs the same layers as plain coupled MU, i.e. CNMF's coupled iterations, and the consistency
    layer at full steps (the ablation); ``ablate``: learned parts to switch off alone, a
    comma-separated list of ``preconditioners`` (the layers' matrices and exponents),
    ``hsi_weights`` (the layers' LR-HSI weights), ``steps`` (the consistency layer's steps, ridge
    and width), ``wiener`` (its Wiener gains) and ``prior`` (the layers' abundance prior, in networks
    trained with one) (the per-part ablation); ``layers`` overrides ``K`` (extra
    layers are CNMF's plain coupled MU step: a learned layer is not repeated outside its schedule);
    ``init_iterations`` the CNMF start's inner iterations (default:
    the checkpoint's training value); ``msi_pyramid`` the start's coarse-to-fine MSI stage (CNMF's
    option; ``"auto"``, the default, = ``[[4, 200], [2, 100], [1, 40]]`` from 256x256 pixels up and
    CNMF's own full-resolution stage below, where the network was trained; ``None`` = always
    CNMF's own; chosen on the full CAVE scenes, see benchmarks/RESULTS.md); ``n_endmembers`` as
    CNMF's; ``dtype`` float32/float64;
    ``trace_budget_mb`` memory for the trace (:class:`..unmixing.trace.TraceRecorder`; layers are
    thinned evenly past it);
    ``consistency=False`` skips the consistency layer (output ``W H_m`` of the last layer, the
    ablation; with ``learned=False`` the layer is the exact projection); ``denoise=False`` applies the
    consistency layer's MSI correction to the raw MSI residual instead of the residual denoised at the
    two images' common estimated noise level (:func:`..unmixing.projection.residual_noise`; hand-built,
    on with the learned parts on or off); ``wiener``: a hand-set Wiener gain ``κ >= 0`` for both images'
    corrections in place of the learned gains (nothing learned: ``learned=False, wiener=1`` is the plain
    pipeline with the textbook linear-MMSE gain at the estimated noise, the baseline the learned gains are
    measured against in benchmarks/RESULTS.md; ``0`` is the exact projection).

    ``trace``: the CNMF start (its last iterate), the layers, and (with the consistency layer) a
    last step whose ``fused`` cube is the output while its endmembers and abundances are the last
    layer's; one ``iteration`` numbering (the start's MU iterations, then one per layer, then one
    for the consistency layer). With ``learned``, layer steps and the consistency step hold
    ``learned`` (what was applied), ``plain`` (what the plain step uses instead) and
    ``learned_doc``; the consistency step holds the ``correction`` map. ``stages``: ``start``,
    ``layers``, ``consistency``.
    """
    if dtype not in ("float32", "float64"):
        raise ProblemError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    if wiener is not None and not (math.isfinite(float(wiener)) and float(wiener) >= 0):
        raise ProblemError(f"wiener must be a finite number >= 0 (a fixed Wiener gain); got {wiener!r}")
    net, ckpt = load_model(checkpoint, map_location=device)
    net = net.to(device=device, dtype=tdtype)
    k_layers = net.layers if layers is None else int(layers)
    if k_layers < 0:
        raise ProblemError(f"layers must be >= 0; got {layers!r}")
    init_iters = int(init_iterations or ckpt["config"].get("init_iterations", 200))
    consistent = bool(consistency) and net.consistency is not None
    schedule, info = schedule_start(
        problem, device=device, dtype=tdtype, seed=seed, n_endmembers=n_endmembers, init_iterations=init_iters,
        msi_pyramid=msi_pyramid, progress=progress, extra_iterations=k_layers + int(consistent),
    )
    # the trace: the start's end, the layers (thinned evenly within the budget), the consistency stage
    trace = schedule.trace = TraceRecorder(trace_budget_mb)
    snap = schedule.snapshot_bytes()
    trace.reserve(2, snap)  # the start and the last layer
    if consistent:
        trace.reserve(1, snap + fused_bytes(schedule))
    trace.begin("start", 0)
    schedule.record(f"CNMF start (VCA + HSI/MSI unmixing) · iteration {schedule.iteration}", schedule.state,
                    forced=True)
    use = learned_parts(learned, ablate) & frozenset(net.parts)
    kind = "plain" if not use else "learned" if len(use) == len(net.parts) else "partly learned"
    data = schedule.data
    with torch.no_grad():
        schedule.coupled_steps(
            k_layers, stage="layers", layer=lambda k: net.layer(k, data, use),
            label=lambda k: f"layer {k} ({kind} MU)", keep=evenly(1, k_layers, trace.capacity(snap) + 1),
        )
        state = schedule.state
        if consistent:
            parts: dict = {}
            z = net.finish(state, data, use, True, record=parts, denoise=bool(denoise), fixed_wiener=wiener)
            how = "learned steps" if use else "exact" if wiener is None else f"Wiener gain {float(wiener):g}"
            record_stage(schedule, z, f"consistency layer ({how})", **parts)
        else:
            z = net.finish(state, data, use, False)
    if progress is not None:
        progress(schedule.total, schedule.total, {"stage": "done"})
    bands, (big_h, big_w), (h, w) = problem.hsi_bands, problem.hr_size, problem.lr_size
    p = state.endmembers.shape[-1]
    z = z[0].reshape(bands, big_h, big_w)
    params = {
        "checkpoint": str(checkpoint) if checkpoint is not None else f"shipped ({DEFAULT_CHECKPOINT})",
        "layers": k_layers,
        "learned": bool(use),
        "learned_parts": [part for part in net.parts if part in use],
        "consistency": consistent,
        "denoise": bool(denoise) and consistent,
        "wiener": None if wiener is None or not consistent else float(wiener),
        "init_iterations": init_iters,
        "msi_pyramid": [list(x) for x in info["msi_pyramid"]] if info["msi_pyramid"] else None,
        "n_endmembers": p,
        "sum_to_one": info["sum_to_one"],
        "srf": "estimated (NNLS)" if info["srf_estimated"] else problem.srf.name,
        "psf": info["psf"],
        "parameters": n_parameters(net),
        "dtype": dtype,
        "seed": seed,
    }
    return FusionResult(
        from_tensor(z, problem.lr_hsi),
        "scalmu",
        params=params,
        trace=trace.steps,
        stages=trace.finish(schedule.iteration),
        endmembers=state.endmembers[0].float().cpu().numpy(),
        abundances=state.abundances[0].float().cpu().numpy().reshape(p, big_h, big_w),
        extras={
            "abundances_lr": state.abundances_lr[0].float().cpu().numpy().reshape(p, h, w),
            "vca_pixels": info["vca_pixels"],
        },
    )


__all__ = ["SCALMUNet", "DEFAULT_CHECKPOINT", "default_checkpoint_path", "load_model", "read_checkpoint", "scalmu"]
