"""SCALMU: unrolled CNMF with learned adaptive multiplicative updates, trained only on spectral dead leaves.

After Xu, Gousseau, Kervazo & Ladjal (2026), built from the description in issue 4. ``K``
layers, each one coupled CNMF step (the shared
:func:`~fusion_explorer.methods.unmixing.coupled_step`) whose updates are re-weighted by learned
non-negative ``p x p`` matrices computed from the iterate, and whose abundance update fits both
images (see :mod:`.model`), started from CNMF (:mod:`.start`; coarse to fine on large images);
then a consistency layer moves ``W H_m`` onto both images by learned fractions of the exact
correction (:class:`.model.ConsistencyLayer`): that is the fused cube.
Training: :mod:`.train` (``fusion-explorer train scalmu``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ...cube import from_tensor
from ...errors import ProblemError
from ...problem import FusionProblem, FusionResult
from ..base import ProgressCallback, register
from .model import SCALMUNet, n_parameters
from .start import problem_start

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
)
def scalmu(
    problem: FusionProblem,
    *,
    device: torch.device,
    progress: ProgressCallback | None = None,
    seed: int = 0,
    checkpoint: str | None = None,
    learned: bool = True,
    layers: int | None = None,
    init_iterations: int | None = None,
    msi_pyramid: list | str | None = "auto",
    n_endmembers: int | str | None = None,
    dtype: str = "float32",
    trace_budget_mb: float = 256.0,
    consistency: bool = True,
) -> FusionResult:
    """Fuse with SCALMU.

    Options: ``checkpoint`` (path; default the shipped ``scalmu_default.pt``); ``learned=False``
    runs the same layers as plain coupled MU (the ablation); ``layers`` overrides ``K`` (extra
    layers repeat the last one); ``init_iterations`` the CNMF start's inner iterations (default:
    the checkpoint's training value); ``msi_pyramid`` the start's coarse-to-fine MSI stage (CNMF's
    option; ``"auto"``, the default, = ``[[4, 200], [2, 100], [1, 40]]`` from 256x256 pixels up and
    CNMF's own full-resolution stage below, where the network was trained; ``None`` = always
    CNMF's own). On the 4 full CAVE scenes ``"auto"`` was about 0.3 dB above CNMF's own stage at
    x8 and 0.07 dB at x32, at a sixth of the cost of its MSI stage (benchmarks/RESULTS.md; chosen on
    those scenes); ``n_endmembers`` as
    CNMF's; ``dtype`` float32/float64;
    ``trace_budget_mb`` memory for the per-layer trace (layers are thinned evenly past it);
    ``consistency=False`` skips the consistency layer (output ``W H_m`` of the last layer, the
    ablation; with ``learned=False`` the layer is the exact projection).

    ``trace``: the CNMF start, the layers, and (with the consistency layer) a last step whose
    ``fused`` cube is the output while its endmembers and abundances are the last layer's.
    """
    if dtype not in ("float32", "float64"):
        raise ProblemError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    net, ckpt = load_model(checkpoint, map_location=device)
    net = net.to(device=device, dtype=tdtype)
    k_layers = net.layers if layers is None else int(layers)
    if k_layers < 0:
        raise ProblemError(f"layers must be >= 0; got {layers!r}")
    init_iters = int(init_iterations or ckpt["config"].get("init_iterations", 200))
    pyramid = msi_pyramid
    if progress is not None:
        progress(0, k_layers + 1, {"stage": "CNMF start"})
    state, data, info = problem_start(
        problem, device=device, dtype=tdtype, seed=seed, n_endmembers=n_endmembers, init_iterations=init_iters,
        msi_pyramid=pyramid,
    )
    bands, big_h, big_w = problem.hsi_bands, *problem.hr_size
    h, w = problem.lr_size
    p = state.endmembers.shape[-1]
    yy_h = float(data.lr_hsi.double().square().sum())
    yy_m = float(data.hr_msi.double().square().sum())
    snap = p * big_h * big_w * 4
    n_keep = int(max(2, trace_budget_mb * 2**20 // max(snap, 1)))
    keep = set(np.unique(np.round(np.linspace(0, k_layers, min(n_keep, k_layers + 1))).astype(int)).tolist())
    trace: list[dict] = []

    def record(k: int, st) -> None:
        if progress is not None:
            progress(k + 1, k_layers + 1, {"layer": k})
        if k not in keep:
            return
        with torch.no_grad():
            res_h = float((data.lr_hsi - st.endmembers @ data.degrade(st.abundances)).double().square().sum())
            res_m = float((data.hr_msi - (data.srf @ st.endmembers) @ st.abundances).double().square().sum())
        kind = "learned" if learned else "plain"
        label = "CNMF start (VCA + HSI/MSI unmixing)" if k == 0 else f"layer {k} ({kind} MU)"
        trace.append({
            "iteration": k,
            "label": label,
            "endmembers": st.endmembers[0].float().cpu().numpy(),
            "abundances": st.abundances[0].float().cpu().numpy().reshape(p, big_h, big_w),
            "abundances_lr": st.abundances_lr[0].float().cpu().numpy().reshape(p, h, w),
            "objective": res_h + res_m,
            "residual_hsi": float(np.sqrt(res_h / yy_h)),
            "residual_msi": float(np.sqrt(res_m / yy_m)),
        })

    record(0, state)
    with torch.no_grad():
        state = net(state, data, learned=learned, layers=k_layers, callback=record)
        consistent = consistency and net.consistency is not None
        z = net.finish(state, data, learned, consistency)
        if consistent:
            res_h = float((data.lr_hsi - data.degrade(z)).double().square().sum())
            res_m = float((data.hr_msi - data.srf @ z).double().square().sum())
            trace.append({**trace[-1], "iteration": k_layers + 1,
                          "label": f"consistency layer ({'learned steps' if learned else 'exact'})",
                          "fused": z[0].float().cpu().numpy().reshape(bands, big_h, big_w),
                          "objective": res_h + res_m, "residual_hsi": float(np.sqrt(res_h / yy_h)),
                          "residual_msi": float(np.sqrt(res_m / yy_m))})
    z = z[0].reshape(bands, big_h, big_w)
    params = {
        "checkpoint": str(checkpoint) if checkpoint is not None else f"shipped ({DEFAULT_CHECKPOINT})",
        "layers": k_layers,
        "learned": bool(learned),
        "consistency": bool(consistent),
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
        trace=trace,
        endmembers=state.endmembers[0].float().cpu().numpy(),
        abundances=state.abundances[0].float().cpu().numpy().reshape(p, big_h, big_w),
        extras={
            "abundances_lr": state.abundances_lr[0].float().cpu().numpy().reshape(p, h, w),
            "vca_pixels": info["vca_pixels"],
        },
    )


__all__ = ["SCALMUNet", "DEFAULT_CHECKPOINT", "default_checkpoint_path", "load_model", "read_checkpoint", "scalmu"]
