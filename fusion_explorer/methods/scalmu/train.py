"""Training SCALMU on spectral dead leaves only (never real images): ``fusion-explorer train scalmu``.

Each training item (``data="zoo"``, the default) is one spectral dead-leaves scene (even items on
the CAVE grid, odd ones on a random grid of 31–224 bands) degraded by a case of the degradation
zoo (:func:`zoo_item`: PSF families, borders, offsets, misregistration, noise, SRFs given or not)
and started as a user's problem is, PSF estimated; with ``data="protocol"`` (the earlier models) a
:func:`~fusion_explorer.synth.training_batch` (``batch_size`` scenes seen by one random
Gaussian-PSF sensor pair, whose PSF and SRF the start is given, :func:`.start.batch_start`). Items
are made once, with their CNMF start and colour neighbours, and kept in memory; an epoch runs the
unrolled layers and the consistency layer with gradients on every
item in a shuffled order and minimises :func:`.model.fused_loss` (log of relative L1 + 0.1 SAM,
per scene) of the consistency layer's output with Adam. Validation items come from a
different seed. Every epoch writes ``last.pt`` (resumable), ``best.pt`` (lowest validation
loss) and a line of ``log.jsonl``; the end writes ``scalmu.pt``, the small file to ship.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ...io.atomic import atomic_target
from . import read_checkpoint
from .model import SCALMUNet, fused_loss, n_parameters, psnr_db
from .start import batch_start


@dataclass
class TrainConfig:
    """Defaults: the shipped model's run (benchmarks/scalmu_training.md) but for ``fixed_steps``, which
    it set (``train scalmu --fixed-steps``): 384 zoo items of one 64x64 scene each, 48 validation items,
    10 epochs; about 12 min on this 2-core CPU with one thread next to another training.
    ``data="protocol"`` with ``train_batches=96, val_batches=8, batch_size=4, epochs=8,
    noise_aware=False`` is the earlier models' run. ``consistency``: end with the
    consistency layer and train through it."""

    layers: int = 10
    hidden: int = 16
    init_iterations: int = 200
    epochs: int = 10
    train_batches: int = 384
    val_batches: int = 48
    batch_size: int = 1
    size: int = 64
    lr: float = 5e-3
    sam_weight: float = 0.1
    seed: int = 0
    max_log_exponent: float = 1.5
    joint: bool = True
    consistency: bool = True
    # the start's (see start.resolve_pyramid); 64-px items never reach "auto"'s size
    msi_pyramid: str | tuple | None = None
    # "protocol": items of batch_size scenes through one random Gaussian-PSF sensor pair whose true PSF
    # and SRF the start is given (the earlier models); "zoo": one scene per item through a case of the
    # degradation zoo (degradations.sample_cases), started as a user's problem is: PSF (and, for a
    # quarter of the cases, the SRF) estimated, small negatives clipped
    data: str = "zoo"
    zoo_ratios: tuple = (4, 8, 16)
    # every clean_every-th zoo item is noise-free on both images (the clean protocols must not lose)
    clean_every: int = 3
    # read the sensor features (estimated noise, SRF estimated or not, PSF misfit): learned steps,
    # Wiener gains and HSI weights that adapt to them
    noise_aware: bool = True
    # zoo items: the scene's spectra drift smoothly over the image by exp(v g(λ, y, x)), v drawn in
    # [0, spectral_variability] per item (synth.spectral_dead_leaves). Without it a scene is exactly
    # endmembers x abundances, which CNMF's W H nearly reproduces, so the exact HSI correction (about
    # 1 dB on real CAVE scenes) barely helps in training. Runs z6/z7 (0.3) did not change what the gate
    # learned (benchmarks/scalmu_training.md); 0 = the shipped run
    spectral_variability: float = 0.0
    # the consistency gate's outputs squashed without flat regions (model.ConsistencyLayer)
    smooth_gate: bool = False
    # the consistency layer's steps, ridge and width fixed at their plain values; only the Wiener gains learned
    fixed_steps: bool = False
    # every layer's H_m update also pulls it towards the colour-guided transfer of its LR abundances, with
    # learned weights (model.AbundancePrior)
    abundance_prior: bool = False
    # the prior's weights also read the ratio (model.AbundancePrior)
    prior_ratio: bool = False
    # every large_every-th zoo item (0: none) is a large_size scene at one of large_ratios: the 64-px items
    # cannot hold the x32 protocol (2x2 LR pixels)
    large_every: int = 0
    large_size: int = 128
    large_ratios: tuple = (32,)
    # zoo items: materials per scene drawn in 3..max_endmembers (real scenes hold more, and more of them
    # share a colour the MSI sees)
    max_endmembers: int = 10

    def __post_init__(self) -> None:
        if not self.spectral_variability >= 0:
            raise ValueError(f"spectral_variability must be >= 0; got {self.spectral_variability!r}")
        if not self.large_every >= 0:
            raise ValueError(f"large_every must be >= 0; got {self.large_every!r}")
        if not self.max_endmembers >= 3:
            raise ValueError(f"max_endmembers must be >= 3; got {self.max_endmembers!r}")

    def model_config(self) -> dict[str, Any]:
        return {"layers": self.layers, "hidden": self.hidden, "max_log_exponent": self.max_log_exponent,
                "joint": self.joint, "consistency": self.consistency, "noise_aware": self.noise_aware,
                "smooth_gate": self.smooth_gate, "fixed_steps": self.fixed_steps,
                "abundance_prior": self.abundance_prior, "prior_ratio": self.prior_ratio}


def _save(checkpoint: dict, path: Path) -> None:
    """``torch.save`` beside ``path``, then rename onto it: an interrupted save keeps the previous file.
    Checkpoints hold only tensors, numbers, strings, lists and dicts (they load with ``weights_only``)."""
    with atomic_target(path, overwrite=True) as tmp:
        torch.save(checkpoint, tmp)


def _wavelength(index: int) -> str:
    return "cave" if index % 2 == 0 else "random"


def zoo_item(seed: int, index: int, cfg: TrainConfig) -> tuple:
    """One zoo training item ``(state, data, truth (1, bands, pixels))`` (deterministic in ``seed, index``):
    a random spectral dead-leaves scene (the CAVE grid for even ``index``, a random one of 31–224 bands
    otherwise), degraded by a :func:`~fusion_explorer.degradations.sample_cases` case (noise removed
    on every ``cfg.clean_every``-th item), then SCALMU's own start on the problem a method sees."""
    import warnings

    import numpy as np

    from ...degradations import degrade, sample_cases
    from ...errors import FusionExplorerError
    from ...synth.scene import spectral_dead_leaves
    from ...synth.training import random_scene_options, resolve_wavelength
    from .start import schedule_start

    for attempt in range(20):  # a case may not fit the scene (e.g. no SRF band in a SWIR-only grid): redraw
        ss = np.random.SeedSequence([int(seed), int(index), attempt])
        rng = np.random.default_rng(ss)
        wl = resolve_wavelength(_wavelength(index), rng)
        large = bool(cfg.large_every) and index % cfg.large_every == cfg.large_every - 1
        size, ratios = (cfg.large_size, cfg.large_ratios) if large else (cfg.size, cfg.zoo_ratios)
        case = sample_cases(1, int(rng.integers(2**31 - 1)), ratios=tuple(ratios))[0]
        if cfg.clean_every and index % cfg.clean_every == 0:
            case = case.with_(snr_lr_db=None, snr_msi_db=None)
        options = random_scene_options(rng, size, cfg.max_endmembers)
        if cfg.spectral_variability > 0:
            options["spectral_variability"] = float(rng.uniform(0, cfg.spectral_variability))
        scene = spectral_dead_leaves(size, wl, seed=rng, **options)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                problem = degrade(scene.cube, case)
                schedule, _ = schedule_start(problem, device=torch.device("cpu"), dtype=torch.float32, seed=seed,
                                             init_iterations=cfg.init_iterations, msi_pyramid=cfg.msi_pyramid)
        except (FusionExplorerError, ValueError):
            continue
        truth = torch.from_numpy(np.ascontiguousarray(scene.cube.values, dtype=np.float32))
        return schedule.state, schedule.data, truth.reshape(1, truth.shape[0], -1)
    raise RuntimeError(f"no usable zoo case for item {index} of seed {seed}")


def make_items(seed: int, count: int, cfg: TrainConfig, desc: str, show: bool) -> list[tuple]:
    """``count`` (state, data, truth) training items from seed ``seed`` (deterministic)."""
    from tqdm.auto import tqdm

    from ...synth import training_batch

    if cfg.data == "zoo":
        return [zoo_item(seed, i, cfg) for i in tqdm(range(count), desc=desc, disable=not show, leave=False)]
    if cfg.data != "protocol":
        raise ValueError(f"data must be 'protocol' or 'zoo'; got {cfg.data!r}")
    items = []
    for i in tqdm(range(count), desc=desc, disable=not show, leave=False):
        batch = training_batch((seed, i), cfg.batch_size, size=cfg.size, wavelength=_wavelength(i))
        items.append(batch_start(batch, init_iterations=cfg.init_iterations, seed=seed,
                                 msi_pyramid=cfg.msi_pyramid))
    return items


def evaluate(net: SCALMUNet, items: list[tuple], cfg: TrainConfig, learned: bool = True) -> dict[str, float]:
    """Mean validation loss and PSNR (dB) of the network (or plain MU, or the CNMF start with layers=0)."""
    losses, psnrs = [], []
    with torch.no_grad():
        for state, data, truth in items:
            z = net.finish(net(state, data, learned=learned), data, learned)
            losses.append(float(fused_loss(z, truth, cfg.sam_weight)))
            psnrs.extend(psnr_db(z, truth).tolist())
    return {"loss": sum(losses) / len(losses), "psnr": sum(psnrs) / len(psnrs)}


def _start_metrics(items: list[tuple], cfg: TrainConfig) -> dict[str, float]:
    losses, psnrs = [], []
    for state, _, truth in items:
        z = state.fused()
        losses.append(float(fused_loss(z, truth, cfg.sam_weight)))
        psnrs.extend(psnr_db(z, truth).tolist())
    return {"loss": sum(losses) / len(losses), "psnr": sum(psnrs) / len(psnrs)}


def train(out: str | Path, cfg: TrainConfig | None = None, *, resume: bool = False, show: bool = True,
          log=print) -> dict[str, Any]:
    """Train into folder ``out``; with ``resume`` continue from ``out/last.pt`` (same config)."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    ckpt = None
    if resume:
        if not last.is_file():
            raise FileNotFoundError(2, "no checkpoint to resume from", str(last))
        ckpt = read_checkpoint(last)
        # runs saved before the zoo: their items were the protocol ones, their networks not noise-aware
        saved = TrainConfig(**{"data": "protocol", "noise_aware": False, "spectral_variability": 0.0,
                                 **ckpt["config"]["train"]})
        if cfg is not None and cfg.epochs > saved.epochs:
            saved.epochs = cfg.epochs  # resuming may extend the run
        cfg = saved
    cfg = cfg or TrainConfig()
    torch.manual_seed(cfg.seed)
    net = SCALMUNet(**cfg.model_config())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    history: list[dict] = []
    start_epoch = 0
    best = float("inf")
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        history = ckpt["history"]
        start_epoch = ckpt["epoch"] + 1
        best = min((h["val_loss"] for h in history), default=float("inf"))
        log(f"resuming from {last} at epoch {start_epoch + 1}")
    config = {"model": cfg.model_config(), "init_iterations": cfg.init_iterations,
              "msi_pyramid": cfg.msi_pyramid, "train": asdict(cfg)}

    t0 = time.perf_counter()
    train_items = make_items(cfg.seed, cfg.train_batches, cfg, "train scenes + CNMF start", show)
    val_items = make_items(cfg.seed + 10_000, cfg.val_batches, cfg, "validation scenes", show)
    prep = time.perf_counter() - t0
    base = {"cnmf_start": _start_metrics(val_items, cfg), "plain_mu": evaluate(net.eval(), val_items, cfg, False)}
    then = ", then the consistency layer at full steps" if cfg.consistency else ""
    plain = f"plain unrolled MU (K={cfg.layers}{then})"
    log(f"data + CNMF starts: {prep:.0f} s; validation: CNMF start {base['cnmf_start']['psnr']:.2f} dB, "
        f"{plain} {base['plain_mu']['psnr']:.2f} dB; {n_parameters(net)} parameters")

    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(start_epoch):  # the same shuffles as an uninterrupted run
        torch.randperm(len(train_items), generator=gen)
    for epoch in range(start_epoch, cfg.epochs):
        te = time.perf_counter()
        net.train()
        order = torch.randperm(len(train_items), generator=gen).tolist()
        total, done, skipped = 0.0, 0, 0
        bar = tqdm(order, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False)
        for i in bar:
            state, data, truth = train_items[i]
            loss = fused_loss(net.finish(net(state, data), data), truth, cfg.sam_weight)
            opt.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            if not (torch.isfinite(loss) and torch.isfinite(norm)):  # a degenerate scene: skip, never poison
                opt.zero_grad()
                skipped += 1
                continue
            opt.step()
            total += float(loss.detach())
            done += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        net.eval()
        val = evaluate(net, val_items, cfg)
        row = {"epoch": epoch + 1, "train_loss": total / max(done, 1), "val_loss": val["loss"], "val_psnr": val["psnr"],
               "skipped": skipped, "seconds": time.perf_counter() - te}
        history.append(row)
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        log(f"epoch {epoch + 1}: train {row['train_loss']:.4f}  val {val['loss']:.4f}  val PSNR {val['psnr']:.2f} dB "
            f"({row['seconds']:.0f} s)")
        state_dict = {k: v.detach().clone() for k, v in net.state_dict().items()}
        _save({"config": config, "model": state_dict, "optimizer": opt.state_dict(), "epoch": epoch,
               "history": history, "baselines": base}, last)
        if val["loss"] < best:
            best = val["loss"]
            _save({"config": config, "model": state_dict, "epoch": epoch, "history": history,
                   "baselines": base}, out / "best.pt")
    final = read_checkpoint(out / "best.pt") if (out / "best.pt").exists() else None
    if final is not None:
        final["history"] = history
        _save(final, out / "scalmu.pt")
    summary = {"out": str(out), "epochs": cfg.epochs, "seconds": time.perf_counter() - t0, "baselines": base,
               "history": history, "best_val_loss": best}
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    return summary
