"""MossFuse: self-supervised modality-decoupled fusion with a blind PSF and SRF (method ``mossfuse``).

Du et al., "Unsupervised Hyperspectral and Multispectral Image Fusion via Self-Supervised Modality
Decoupling", arXiv 2412.04802. This is an independent implementation (see :mod:`.network`,
:mod:`.layers`); :mod:`.checkpoint` maps the published weights onto it, :mod:`.fitting` trains it
on one input pair.

Use::

    fuse(problem, "mossfuse", checkpoint="CAVE_32_model.pth")             # published weights
    fuse(problem, "mossfuse", fit=True, steps=300)                         # from scratch
    fuse(problem, "mossfuse", checkpoint="CAVE_32_model.pth", fit=True)    # fine-tune

The method never reads the problem's known SRF or PSF: it estimates both (``result.srf``,
``result.psf``). The fused cube is the network output as is (it may dip slightly below 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ...cube import from_tensor
from ...errors import ProblemError
from ...problem import FusionProblem, FusionResult
from ..base import ProgressCallback, register
from .checkpoint import convert_reference_state_dict, load_network, save_network
from .fitting import FitSettings, check_memory, estimate_memory
from .fitting import fit as fit_network
from .network import MossFuseConfig, MossFuseNet

#: Default PSF window when fitting from scratch: at least this many HR pixels wide.
MIN_FIT_PSF_SIZE = 15


def _estimated_srf(matrix: np.ndarray, problem: FusionProblem):
    """The estimated SRF as an :class:`~fusion_explorer.srf.SRF` when wavelengths are known."""
    from ...srf import SRF

    wl = problem.wavelength
    if wl is None:
        return matrix
    names = None
    if "band_name" in problem.hr_msi.coords:
        names = [str(v) for v in problem.hr_msi.coords["band_name"].values]
    try:
        return SRF.from_matrix(
            matrix, wl, band_names=names, name="mossfuse-estimate", provenance="estimated by MossFuse"
        )
    except Exception:  # a degenerate estimate (e.g. a row of zeros) is still returned as numbers
        return matrix


def _build_network(problem: FusionProblem, checkpoint: Any, options: dict[str, Any], fitting: bool) -> MossFuseNet:
    ratio = int(problem.ratio)
    psf_size = options.pop("psf_size", None)
    offset = problem.sensors.sample_offset
    if checkpoint:
        net = load_network(checkpoint, ratio=ratio, psf_size=psf_size, offset=offset)
        cfg = net.config
        if (cfg.hsi_bands, cfg.msi_bands) != (problem.hsi_bands, problem.msi_bands):
            raise ProblemError(
                f"checkpoint {checkpoint} is for {cfg.hsi_bands} HSI and {cfg.msi_bands} MSI bands; this problem has "
                f"{problem.hsi_bands} and {problem.msi_bands} (fit from scratch with fit=True instead)"
            )
        for key in ("dim", "num_blocks", "residual"):
            if key in options and options[key] != getattr(cfg, key):
                raise ProblemError(f"{key}={options[key]} given but the checkpoint has {key}={getattr(cfg, key)}")
            options.pop(key, None)
        return net
    if not fitting:
        raise ProblemError(
            "mossfuse needs weights: pass checkpoint=PATH (e.g. the published CAVE_32_model.pth, --checkpoint "
            "on the command line) or fit=True to train it on this pair"
        )
    if psf_size is None:
        psf_size = max(ratio - 1 + ratio % 2, MIN_FIT_PSF_SIZE)
    cfg = MossFuseConfig(
        dim=int(options.pop("dim", 48)),
        num_blocks=int(options.pop("num_blocks", 1)),
        hsi_bands=problem.hsi_bands,
        msi_bands=problem.msi_bands,
        ratio=ratio,
        psf_size=int(psf_size),
        offset=offset,
        residual=bool(options.pop("residual", True)),
    )
    net = MossFuseNet(cfg)
    # from scratch the PSF starts as a Gaussian of FWHM = ratio (the published start, precision
    # parameter 5 I, is a PSF of sigma 0.2 pixel, far from any LR footprint)
    sigma0 = ratio / (2 * math.sqrt(2 * math.log(2)))
    with torch.no_grad():
        net.degradation.psf_precision.copy_(torch.eye(2) / sigma0)
    return net


@register("mossfuse", "MossFuse: modality-decoupled network with blind PSF/SRF (checkpoint or self-supervised fit)")
def mossfuse(
    problem: FusionProblem,
    *,
    device: torch.device,
    progress: ProgressCallback | None = None,
    seed: int = 0,
    checkpoint: str | None = None,
    fit: bool = False,
    steps: int = 500,
    lr: float | None = None,
    blind_lr: float | None = None,
    patience: int | None = 200,
    min_delta: float = 1e-4,
    snapshot_every: int | None = None,
    save_to: str | None = None,
    save_every: int | None = None,
    decoupling_weight: float = 0.1,
    decoder_weight: float = 0.0,
    fast: bool = True,
    threads: int | None = None,
    **options: Any,
) -> FusionResult:
    """Fuse with MossFuse.

    Options: ``checkpoint`` (path of the published ``CAVE_32_model.pth`` or of a file written by
    fitting); ``fit`` (train on this pair first, self-supervised); ``steps``, ``lr`` (default 1e-3
    from scratch, 9e-5, the published rate, from a checkpoint), ``blind_lr`` (PSF and SRF; default
    ``20 lr``), ``patience``/``min_delta`` (early stop),
    ``snapshot_every`` (trace), ``save_to``/``save_every`` (checkpoints), loss weights
    ``decoupling_weight``/``decoder_weight``; from scratch also ``dim`` (48), ``num_blocks`` (1),
    ``psf_size`` (default ``max(ratio - 1 + ratio % 2, 15)``), ``residual`` (default True: predict a
    correction to the upsampled LR-HSI, see :class:`MossFuseConfig`; False is the published network).
    ``threads``: CPU threads while fitting (default: 1 for images of at most 128x128 pixels, where
    thread start-up costs more than it gains, else unchanged). ``fast`` (inference only): run the
    folded network without the self-supervised branches (same output up to float rounding).
    """
    torch.manual_seed(seed)
    opts = dict(options)
    net = _build_network(problem, checkpoint, opts, bool(fit))
    if opts:
        raise ProblemError(f"unknown mossfuse option(s): {', '.join(sorted(opts))}")
    lr_hsi, hr_msi = (t[None] for t in problem.tensors(device))
    net = net.to(device)
    params: dict[str, Any] = {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "dim": net.config.dim,
        "num_blocks": net.config.num_blocks,
        "psf_size": net.config.psf_size,
        "offset": net.degradation.offset,
        "residual": net.config.residual,
    }
    extras: dict[str, Any] = {}
    trace: list[dict] = []
    stages: list[dict] = []
    if fit:
        settings = FitSettings(
            steps=int(steps),
            lr=float(lr if lr is not None else (9e-5 if checkpoint else 1e-3)),
            blind_lr=blind_lr,
            patience=patience,
            min_delta=float(min_delta),
            snapshot_every=snapshot_every,
            decoupling_weight=float(decoupling_weight),
            decoder_weight=float(decoder_weight),
            save_to=save_to,
            save_every=save_every,
        )
        extras["memory_estimate_bytes"] = check_memory(
            net, problem.hr_size, device, training=True, self_supervised=bool(decoder_weight)
        )
        n_threads = threads
        if n_threads is None and device.type == "cpu" and problem.hr_size[0] * problem.hr_size[1] <= 128 * 128:
            n_threads = 1
        before = torch.get_num_threads()
        if n_threads:
            torch.set_num_threads(int(n_threads))
        try:
            log = fit_network(net, hr_msi, lr_hsi, settings, progress=progress)
        finally:
            torch.set_num_threads(before)
        trace, stages = log.trace, log.stages
        params.update(fit=True, steps=settings.steps, lr=settings.lr, seed=seed)
        extras.update(
            objective=log.objective, best_step=log.best_step, steps_run=log.steps_run, stopped_early=log.stopped_early
        )
    extras.setdefault("memory_estimate_bytes", check_memory(net, problem.hr_size, device, training=False))
    net.eval()
    with torch.inference_mode():
        runner = net.inference_copy() if fast else net
        fused = runner.fuse(hr_msi, lr_hsi) if fast else net(hr_msi, lr_hsi, self_supervised=False).fused
        from_hsi, from_msi, srf, psf = net.degradation(lr_hsi, hr_msi)
    if progress is not None and not fit:
        progress(1, 1, {})
    srf_np = srf.to("cpu", torch.float64).numpy()
    extras.update(
        srf_matrix=srf_np,
        psf_precision=net.degradation.precision().detach().cpu().numpy(),
        lr_msi_disagreement=float((from_hsi - from_msi).abs().mean()),
    )
    result = FusionResult(
        from_tensor(fused, problem.lr_hsi),
        "mossfuse",
        params=params,
        trace=trace,
        stages=stages,
        srf=_estimated_srf(srf_np, problem),
        psf=psf.to("cpu", torch.float64).numpy(),
        extras=extras,
    )
    return result


__all__ = [
    "MossFuseConfig",
    "MossFuseNet",
    "convert_reference_state_dict",
    "estimate_memory",
    "load_network",
    "mossfuse",
    "save_network",
]
