"""Self-supervised fitting of MossFuse on one input pair, and memory estimates.

Objective (as in the published training script; ``sg`` stops gradients):

    L_fusion = |Y_h - S_sg(psf)(X_hat)|_1 + |Y_m - sg(R) X_hat|_1 + w_dec * L_dec        (network)
    L_blind  = |clip(R Y_h) - clip(S_psf(Y_m))|_1                                     (PSF and SRF)

with ``|.|_1`` the mean absolute error and the decoupling loss

    L_dec = -log(e^{c(B_m, B_h)} / (e^{c(B_m, B_h)} + e^{c(B_m, D_m)} + e^{c(B_h, D_h)} + e^{c(D_m, D_h)}))

where ``c`` is the cosine similarity of two whole feature maps: shared features of both modalities
are pulled together, everything else pushed apart. The network gets the gradient of ``L_fusion``
only and the degradation estimator that of ``L_blind`` only. Optional reconstruction terms of the
self-supervised decoders (``decoder_weight``, off in the published script):
``|Y_m - G_m|_1 + |Y_h - G_h[grid]|_1 + |up(R Y_h) - G_l|_1 + |up(S(Y_m)) - G_l|_1``.

Optimiser: Adam (betas 0.9, 0.999), cosine annealing of the learning rate from ``lr`` to ``lr / 90``
over the step budget (the published run: ``lr = 9e-5``, floor ``1e-6``, over hundreds of epochs of
a training set). The PSF and SRF parameters get their own rate ``blind_lr`` (default ``20 lr``):
the PSF's precision moves by about one learning rate per Adam step, so with the network's rate a
short fit on one image would leave it where it started.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ProblemError
from ..unmixing.trace import DEFAULT_BUDGET_MB, TraceRecorder
from .network import MossFuseNet, MossFuseOutputs

GiB = 1024**3


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of two tensors taken as flat vectors."""
    return F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1), dim=1)[0]


def decoupling_loss(shared_msi, detail_msi, shared_hsi, detail_hsi) -> torch.Tensor:
    """``-log(e^{c(B_m,B_h)} / (e^{c(B_m,B_h)} + e^{c(B_m,D_m)} + e^{c(B_h,D_h)} + e^{c(D_m,D_h)}))``."""
    pos = torch.exp(cosine(shared_msi, shared_hsi))
    neg = (
        torch.exp(cosine(shared_msi, detail_msi))
        + torch.exp(cosine(shared_hsi, detail_hsi))
        + torch.exp(cosine(detail_msi, detail_hsi))
    )
    return -torch.log(pos / (pos + neg))


def objective(
    net: MossFuseNet,
    out: MossFuseOutputs,
    hr_msi: torch.Tensor,
    lr_hsi: torch.Tensor,
    decoupling_weight: float = 0.1,
    decoder_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``L_fusion + L_blind`` (gradients routed as in the module docstring) and its parts."""
    deg = net.degradation
    psf, srf = out.psf.detach(), out.srf.detach()
    fused_lr = deg.spatial(out.fused, psf)
    fused_msi = torch.einsum("mb,nbyx->nmyx", srf, out.fused)
    l_hsi = F.l1_loss(fused_lr, lr_hsi)
    l_msi = F.l1_loss(fused_msi, hr_msi)
    l_dec = decoupling_loss(out.shared_msi, out.detail_msi, out.shared_hsi, out.detail_hsi)
    fusion = l_hsi + l_msi + decoupling_weight * l_dec
    blind = F.l1_loss(out.lr_msi_from_hsi, out.lr_msi_from_msi)
    parts = {k: v.item() for k, v in (("hsi", l_hsi), ("msi", l_msi), ("decoupling", l_dec), ("blind", blind))}
    if decoder_weight and out.msi_rec is not None:
        r = net.config.ratio
        grid = deg.offset
        up = lambda t: F.interpolate(t.detach(), scale_factor=(r, r), mode="bilinear", align_corners=False)  # noqa: E731
        rec = (
            F.l1_loss(out.msi_rec, hr_msi)
            + F.l1_loss(out.hsi_rec[..., grid::r, grid::r], lr_hsi)
            + F.l1_loss(out.lr_msi_rec, up(out.lr_msi_from_hsi))
            + F.l1_loss(out.lr_msi_rec, up(out.lr_msi_from_msi))
        )
        fusion = fusion + decoder_weight * rec
        parts["decoders"] = rec.item()
    return fusion + blind, parts


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (CUDA: free device memory; CPU: MemAvailable), or None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def _training_bytes_per_pixel(net: MossFuseNet, self_supervised: bool) -> float:
    """Bytes of tensors autograd keeps for one HR pixel, measured on a small probe pass (CPU)."""
    cfg = net.config
    r = cfg.ratio
    side = r * max(1, math.ceil(32 / r))
    probe = copy.deepcopy(net).to("cpu").train()
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    msi = torch.rand(1, cfg.msi_bands, side, side)
    lr = torch.rand(1, cfg.hsi_bands, side // r, side // r)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = probe(msi, lr, self_supervised=self_supervised)
        objective(probe, out, msi, lr)
    return sum(seen.values()) / (side * side)


def estimate_memory(
    net: MossFuseNet, hr_size: tuple[int, int], *, training: bool, self_supervised: bool = False
) -> int:
    """Rough peak bytes of a pass on an HR image of ``hr_size``.

    Training: the tensors autograd keeps (measured per pixel on a small probe) times the pixels,
    plus 50 % for the backward's temporaries, plus weights, gradients and Adam moments.
    Inference: about ``16 dim + 2 hsi_bands + 2 msi_bands`` float32 maps live at once.
    """
    cfg = net.config
    pixels = hr_size[0] * hr_size[1]
    params = sum(p.numel() for p in net.parameters()) * 4
    if training:
        return int(_training_bytes_per_pixel(net, self_supervised) * pixels * 1.5 + 4 * params)
    return int((16 * cfg.dim + 2 * cfg.hsi_bands + 2 * cfg.msi_bands) * 4 * pixels + params)


def check_memory(net: MossFuseNet, hr_size: tuple[int, int], device: torch.device, *, training: bool, **kw) -> int:
    """Raise :class:`ProblemError` when the estimate exceeds 90 % of the free memory; return the estimate."""
    need = estimate_memory(net, hr_size, training=training, **kw)
    free = available_memory(device)
    if free is not None and need > 0.9 * free:
        what = "fitting" if training else "inference"
        raise ProblemError(
            f"MossFuse {what} on a {hr_size[0]}x{hr_size[1]} image needs about {need / GiB:.1f} GiB but only "
            f"{free / GiB:.1f} GiB is free on {device}; crop the scene, use a smaller dim, or a larger device"
        )
    return need


# --------------------------------------------------------------------------------------------
# the fitting loop
# --------------------------------------------------------------------------------------------


@dataclass
class FitSettings:
    """``steps`` updates of Adam at learning rate ``lr`` (``blind_lr`` for the PSF and SRF; both
    cosine-annealed to 1/90 of their start); stop
    early when the objective has not dropped below ``(1 - min_delta)`` times its best for
    ``patience`` steps (``None``: never). A snapshot of the fused cube every ``snapshot_every``
    steps, kept within ``trace_budget_mb`` (:class:`~fusion_explorer.methods.unmixing.trace.TraceRecorder`:
    the start and the last step are reserved); a checkpoint to ``save_to`` every ``save_every``
    steps and at the end (``None``: no file)."""

    steps: int = 500
    lr: float = 1e-3
    blind_lr: float | None = None
    patience: int | None = 200
    min_delta: float = 1e-4
    snapshot_every: int | None = None
    decoupling_weight: float = 0.1
    decoder_weight: float = 0.0
    save_to: str | None = None
    save_every: int | None = None
    restore_best: bool = True
    trace_budget_mb: float = DEFAULT_BUDGET_MB


@dataclass
class FitLog:
    """What a fit did: ``trace`` steps (stage ``fit``) and ``stages`` (one, ``fit``, in step numbers)."""

    trace: list[dict] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    best_step: int = 0
    steps_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def _recalibrate_batchnorm(net: nn.Module, run: Callable[[], object]) -> None:
    """Set BatchNorm running statistics to those of one pass (``run``), so eval mode equals train mode."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass gives that pass's statistics
    net.train()
    with torch.no_grad():
        run()
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    net.eval()


def fit(
    net: MossFuseNet,
    hr_msi: torch.Tensor,
    lr_hsi: torch.Tensor,
    settings: FitSettings,
    *,
    progress: Callable[[int, int, dict], None] | None = None,
) -> FitLog:
    """Fit ``net`` in place on one pair ``(1, msi_bands, Y, X)``, ``(1, hsi_bands, y, x)``.

    Leaves ``net`` in eval mode with the best (or last) weights and BatchNorm statistics of this
    image. Trace entries: ``{"iteration", "label", "stage", "fused" (bands, Y, X) float32,
    "objective"}``; iteration 0 is the starting network; the start and the last step are always
    kept (room reserved), the others while the trace budget lasts.
    """
    s = settings
    if s.steps < 1:
        raise ProblemError(f"steps must be >= 1; got {s.steps}")
    every = s.snapshot_every or max(1, s.steps // 10)
    log = FitLog()
    self_sup = bool(s.decoder_weight)
    blind = list(net.degradation.parameters())
    blind_ids = {id(p) for p in blind}
    groups = [
        {"params": [p for p in net.parameters() if id(p) not in blind_ids], "lr": s.lr},
        {"params": blind, "lr": s.blind_lr if s.blind_lr is not None else 20 * s.lr},
    ]
    opt = torch.optim.Adam(groups, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 1 / 90 + (1 - 1 / 90) * 0.5 * (1 + math.cos(math.pi * i / s.steps))
    )
    best, best_state, since_best = math.inf, None, 0
    start = time.perf_counter()

    recorder = TraceRecorder(s.trace_budget_mb)
    recorder.reserve(2, 4 * lr_hsi.shape[1] * hr_msi.shape[-2] * hr_msi.shape[-1])
    recorder.begin("fit", 0)

    def snapshot(step: int, fused: torch.Tensor, value: float, label: str, forced: bool) -> None:
        if not recorder.room(4 * fused[0].numel(), forced=forced):
            recorder.skip(forced=forced)
            return
        recorder.add({
            "iteration": step,
            "label": label,
            "fused": fused.detach()[0].to("cpu", torch.float32).numpy().copy(),
            "objective": value,
        }, forced=forced)

    net.train()
    for step in range(s.steps + 1):
        out = net(hr_msi, lr_hsi, self_supervised=self_sup)
        loss, parts = objective(net, out, hr_msi, lr_hsi, s.decoupling_weight, s.decoder_weight)
        value = loss.item()
        if not math.isfinite(value):
            raise ProblemError(f"MossFuse fitting diverged at step {step} (objective {value}); lower lr")
        log.objective.append(value)
        if value < best * (1 - s.min_delta):
            best, since_best, log.best_step = value, 0, step
            if s.restore_best:
                best_state = copy.deepcopy(net.state_dict())
        else:
            since_best += 1
        last = step == s.steps or (s.patience is not None and since_best >= s.patience)
        if step == 0 or step % every == 0 or last:
            snapshot(step, out.fused, value, "start" if step == 0 else f"step {step}", forced=step == 0 or last)
        if last:
            log.stopped_early = step < s.steps
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        log.steps_run = step + 1
        if progress is not None:
            progress(step + 1, s.steps, {"objective": value, **parts, "lr": sched.get_last_lr()[0]})
        if s.save_to and s.save_every and (step + 1) % s.save_every == 0:
            from .checkpoint import save_network

            save_network(net, s.save_to, step=step + 1, objective=value)
    if best_state is not None:
        net.load_state_dict(best_state)
    _recalibrate_batchnorm(net, lambda: net(hr_msi, lr_hsi, self_supervised=False))
    log.trace, log.stages = recorder.steps, recorder.finish(log.steps_run)
    log.seconds = time.perf_counter() - start
    if s.save_to:
        from .checkpoint import save_network

        save_network(net, s.save_to, step=log.steps_run, objective=best)
    return log


def kernel_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()
