"""Training SCALMU on spectral dead leaves only (never real images): ``fusion-explorer train scalmu``.

Each training item is a :func:`~fusion_explorer.synth.training_batch` (``batch_size`` scenes seen
by one random sensor pair; even items on the CAVE grid, odd ones on a random grid of 31–224
bands) with its CNMF start and colour neighbours (:func:`.start.batch_start`), made once and kept
in memory; an epoch runs the unrolled layers and the consistency layer with gradients on every
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
    """Defaults: 33 min on this 2-core CPU with one thread, next to another training run (see
    benchmarks/scalmu_training.md). 96 items, not 48: with 48 the network fitted its training
    sensors and lost validation PSNR from the second epoch on. ``consistency``: end with the
    consistency layer and train through it."""

    layers: int = 10
    hidden: int = 16
    init_iterations: int = 200
    epochs: int = 8
    train_batches: int = 96
    val_batches: int = 8
    batch_size: int = 4
    size: int = 64
    lr: float = 5e-3
    sam_weight: float = 0.1
    seed: int = 0
    max_log_exponent: float = 1.5
    joint: bool = True
    consistency: bool = True
    # the start's (see start.resolve_pyramid); 64-px items never reach "auto"'s size
    msi_pyramid: str | tuple | None = None

    def model_config(self) -> dict[str, Any]:
        return {"layers": self.layers, "hidden": self.hidden, "max_log_exponent": self.max_log_exponent,
                "joint": self.joint, "consistency": self.consistency}


def _save(checkpoint: dict, path: Path) -> None:
    """``torch.save`` beside ``path``, then rename onto it: an interrupted save keeps the previous file.
    Checkpoints hold only tensors, numbers, strings, lists and dicts (they load with ``weights_only``)."""
    with atomic_target(path, overwrite=True) as tmp:
        torch.save(checkpoint, tmp)


def _wavelength(index: int) -> str:
    return "cave" if index % 2 == 0 else "random"


def make_items(seed: int, count: int, cfg: TrainConfig, desc: str, show: bool) -> list[tuple]:
    """``count`` (state, data, truth) training items from seed ``seed`` (deterministic)."""
    from tqdm.auto import tqdm

    from ...synth import training_batch

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
        saved = TrainConfig(**ckpt["config"]["train"])
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
