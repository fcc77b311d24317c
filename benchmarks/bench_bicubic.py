"""Bicubic baseline on the CAVE scenes in the data dir under both named protocols.

Prints a table, writes ``benchmarks/results/bicubic.json`` and the difference from the reference
figures in ``../shared/reference/README.md`` (bicubic section).

    python benchmarks/bench_bicubic.py [--data-dir DIR] [--device auto]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fusion_explorer.bench import cave_scenes, format_table, run_benchmark, write_results

# Reference figures (../shared/reference/README.md, "Bicubic baseline"): (PSNR, SAM) per protocol.
REFERENCE = {
    ("balloons_ms", "mossfuse-cave-x32"): (25.121, 5.969),
    ("thread_spools_ms", "mossfuse-cave-x32"): (23.055, 13.316),
    ("fake_and_real_peppers_ms", "mossfuse-cave-x32"): (24.073, 13.807),
    ("balloons_ms", "gaussian-x8"): (34.511, 2.673),
    ("thread_spools_ms", "gaussian-x8"): (29.084, 6.553),
    ("fake_and_real_peppers_ms", "gaussian-x8"): (31.112, 4.732),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    rows = run_benchmark(
        ["bicubic"], cave_scenes(args.data_dir), ["mossfuse-cave-x32", "gaussian-x8"], device=args.device
    )
    print(format_table(rows))
    print("\n| scene | protocol | dPSNR vs reference | dSAM vs reference |\n|---|---|---|---|")
    for r in rows:
        ref = REFERENCE.get((r.scene, r.protocol))
        if ref:
            d_psnr, d_sam = r.metrics["psnr"] - ref[0], r.metrics["sam"] - ref[1]
            print(f"| {r.scene} | {r.protocol} | {d_psnr:+.4f} | {d_sam:+.4f} |")
    out = write_results(rows, Path(__file__).parent / "results" / "bicubic.json")
    print(f"\nresults -> {out}")


if __name__ == "__main__":
    main()
