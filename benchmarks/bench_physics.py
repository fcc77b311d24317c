"""The spatial degradation operator's three ways of applying a separable PSF, timed.

For 30 bands (CNMF's and SCALMU's endmember count on CAVE) of square images, forward and adjoint,
under ``gaussian-x8`` (15 taps) and ``mossfuse-cave-x32`` (31 taps): the dense 1-D matrices, the
strided taps and the strided convolutions (``SpatialDegradation.path``). ``"auto"`` picks dense up
to ``DENSE_MAX_SIDE`` pixels a side and taps above; this is the measurement behind that. Prints a
table and writes ``benchmarks/results/physics_operator.json``.

    python benchmarks/bench_physics.py [--threads N] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fusion_explorer.physics import SpatialDegradation, get_protocol

PATHS = ("dense", "taps", "conv")


def best_ms(f, repeats: int) -> float:
    for _ in range(3):
        f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--sides", type=int, nargs="+", default=[64, 128, 256, 512])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"best of {args.repeats}, ms, forward / adjoint, 30 bands, {torch.get_num_threads()} threads; "
          f"auto = dense up to {SpatialDegradation.DENSE_MAX_SIDE} px a side")
    print("| protocol | side | " + " | ".join(PATHS) + " | auto picks |")
    print("|---|---|" + "---|" * (len(PATHS) + 1))
    try:
        for name in ("gaussian-x8", "mossfuse-cave-x32"):
            op = get_protocol(name).spatial()
            for side in args.sides:
                x = torch.rand(1, 30, side, side, generator=torch.Generator().manual_seed(0))
                y = torch.rand_like(op(x))
                row = {"protocol": name, "side": side, "threads": torch.get_num_threads()}
                for path in PATHS:
                    SpatialDegradation.path = path
                    row[path] = [best_ms(lambda op=op, x=x: op(x), args.repeats),
                                 best_ms(lambda op=op, y=y: op.adjoint(y), args.repeats)]
                SpatialDegradation.path = "auto"
                row["auto"] = op._separable_path(side, side)
                rows.append(row)
                cells = " | ".join(f"{row[p][0]:.2f} / {row[p][1]:.2f}" for p in PATHS)
                print(f"| {name} | {side} | {cells} | {row['auto']} |")
    finally:
        SpatialDegradation.path = "auto"
    out = Path(__file__).resolve().parent / "results" / "physics_operator.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results -> {out}")


if __name__ == "__main__":
    main()
