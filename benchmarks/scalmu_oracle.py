"""How far can SCALMU's p x p learned parts go? An oracle bound, per scene.

A diagnostic, not a result: on each crop of ``bench_scalmu.py`` (same problems, same CNMF start as
``fuse(..., "scalmu")``) the shipped network's learned parts are fitted by Adam against *that
crop's own truth* (``--steps`` steps, ``--lr``, the training loss ``fused_loss``). No trained
model can beat, on a scene, what this per-scene fit reaches from the same start with the same
layers (up to the optimiser finding it), so the gap ``oracle - cnmf`` bounds what any training of
this architecture can give there. Every column is scored with ``metrics.evaluate`` (band-mean
PSNR of the clipped estimate, SAM); the oracle column is its best checkpoint, every 10 steps, by
PSNR. Writes ``benchmarks/results/scalmu_oracle.json``.

It scores the layers' own output ``W H_m``: the bound is that of the layers, written before SCALMU
had its consistency layer (RESULTS.md records it as such; with the current weights the numbers
differ from those recorded, which came from the previous shipped model).

    .venv/bin/python benchmarks/scalmu_oracle.py [--steps 400] [--crop 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scalmu import problems  # noqa: E402

from fusion_explorer.methods import fuse  # noqa: E402
from fusion_explorer.methods.scalmu import load_model  # noqa: E402
from fusion_explorer.methods.scalmu.model import fused_loss  # noqa: E402
from fusion_explorer.methods.scalmu.start import problem_start  # noqa: E402
from fusion_explorer.metrics import evaluate  # noqa: E402

ROWS = ("cnmf", "scalmu plain", "scalmu (shipped)", "oracle fit")


def score(problem, z: torch.Tensor) -> tuple[float, float]:
    cube = z[0].reshape(problem.truth.shape).detach().clamp_min(0).numpy()
    s = evaluate(problem.truth.values, cube, problem.ratio, metrics=("psnr", "sam"))
    return s["psnr"], s["sam"]


def oracle(problem, steps: int, lr: float) -> dict[str, tuple[float, float]]:
    cnmf = evaluate(problem.truth, fuse(problem, "cnmf", device="cpu", trace_budget_mb=0).fused, problem.ratio,
                    metrics=("psnr", "sam"))
    net, ckpt = load_model()
    state, data, _ = problem_start(problem, device=torch.device("cpu"),
                                   init_iterations=ckpt["config"]["init_iterations"],
                                   msi_pyramid=ckpt["config"]["msi_pyramid"])
    x = torch.as_tensor(problem.truth.values, dtype=state.endmembers.dtype).reshape(1, problem.truth.shape[0], -1)
    with torch.no_grad():
        plain = score(problem, net(state, data, learned=False).fused())
        shipped = score(problem, net(state, data).fused())
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    best = shipped
    for i in range(steps):
        opt.zero_grad()
        fused_loss(net(state, data).fused(), x).backward()
        opt.step()
        if i % 10 == 9 or i == steps - 1:
            with torch.no_grad():
                best = max(best, score(problem, net(state, data).fused()))
    return dict(zip(ROWS, ((cnmf["psnr"], cnmf["sam"]), plain, shipped, best), strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows, groups = [], {}
    for group, scene, problem in problems(args.crop):
        t0 = time.time()
        r = oracle(problem, args.steps, args.lr)
        rows.append({"group": group, "scene": scene, **{k: list(v) for k, v in r.items()}})
        groups.setdefault(group, []).append(r)
        print(f"{group} | {scene} | " + " | ".join(f"{r[k][0]:.2f} / {r[k][1]:.2f}" for k in ROWS)
              + f" | {time.time() - t0:.0f} s", flush=True)
    print(f"\nmean PSNR dB / SAM ° ({args.steps} oracle steps, lr {args.lr})\n")
    print("| | " + " | ".join(ROWS) + " |")
    print("|---" * (len(ROWS) + 1) + "|")
    for group, rs in groups.items():
        cells = [f"{np.mean([r[k][0] for r in rs]):.2f} / {np.mean([r[k][1] for r in rs]):.2f}" for k in ROWS]
        print(f"| {group} | " + " | ".join(cells) + " |")
    out = Path(__file__).resolve().parent / "results" / "scalmu_oracle.json"
    out.write_text(json.dumps({"steps": args.steps, "lr": args.lr, "crop": args.crop, "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
