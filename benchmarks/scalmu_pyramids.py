"""SCALMU on the full CAVE scenes with different coarse-to-fine starts (``msi_pyramid``).

How much does the start's first MSI stage matter once the consistency layer follows the layers?
Runs the shipped model on the 4 full 512x512 scenes in ``../shared/data/cave`` under
``gaussian-x8`` and ``mossfuse-cave-x32`` with CNMF's own full-resolution stage (``None``) and 7
pyramids, and prints mean PSNR / SAM, the stage's cost in full-resolution updates and the mean
seconds. Writes ``benchmarks/results/scalmu_pyramids.json``. These are the scenes the default
was chosen on: not a held-out figure.

    .venv/bin/python benchmarks/scalmu_pyramids.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fusion_explorer.bench import cave_scenes, load_scene
from fusion_explorer.methods import fuse
from fusion_explorer.metrics import evaluate
from fusion_explorer.physics import simulate

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PROTOCOLS = ("gaussian-x8", "mossfuse-cave-x32")
PYRAMIDS = {
    "none (CNMF's own, 399 at full resolution)": None,
    "2x200, 1x80 (the previous default)": [[2, 200], [1, 80]],
    "2x200, 1x40": [[2, 200], [1, 40]],
    "2x120, 1x60": [[2, 120], [1, 60]],
    "2x200, 1x20": [[2, 200], [1, 20]],
    "4x200, 2x100, 1x40 (default)": [[4, 200], [2, 100], [1, 40]],
    "4x200, 2x60, 1x20": [[4, 200], [2, 60], [1, 20]],
    "4x300, 2x60, 1x20": [[4, 300], [2, 60], [1, 20]],
}


def cost(pyramid) -> float:
    """The stage's updates in full-resolution equivalents (pixel count / factor²)."""
    return 399.0 if pyramid is None else sum(iters / factor**2 for factor, iters in pyramid)


def main() -> None:
    rows = []
    for scene in cave_scenes(SHARED / "data/cave"):
        truth = load_scene(scene)
        for protocol in PROTOCOLS:
            problem = simulate(truth, protocol)
            for name, pyramid in PYRAMIDS.items():
                r = fuse(problem, "scalmu", device="cpu", trace_budget_mb=0, msi_pyramid=pyramid)
                m = evaluate(truth, r.fused, problem.ratio, metrics=("psnr", "sam"))
                rows.append({"scene": scene.name, "protocol": protocol, "pyramid": name, "psnr": m["psnr"],
                             "sam": m["sam"], "seconds": r.seconds})
                print(f"{scene.name} {protocol} {name}: {m['psnr']:.2f} dB {m['sam']:.2f} deg {r.seconds:.1f} s",
                      flush=True)
    print("\n| start | full-res updates | " + " | ".join(f"{p} PSNR / SAM" for p in PROTOCOLS) + " | mean s |")
    print("|---|---|" + "---|" * (len(PROTOCOLS) + 1))
    for name, pyramid in PYRAMIDS.items():
        cells = []
        for protocol in PROTOCOLS:
            a = np.array([(r["psnr"], r["sam"]) for r in rows if r["pyramid"] == name and r["protocol"] == protocol])
            cells.append(f"{a[:, 0].mean():.2f} / {a[:, 1].mean():.2f}")
        secs = np.mean([r["seconds"] for r in rows if r["pyramid"] == name])
        print(f"| {name} | {cost(pyramid):.0f} | " + " | ".join(cells) + f" | {secs:.1f} |")
    out = Path(__file__).resolve().parent / "results" / "scalmu_pyramids.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results -> {out}")


if __name__ == "__main__":
    main()
