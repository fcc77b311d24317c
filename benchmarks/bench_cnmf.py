"""CNMF on the full CAVE scenes under both named protocols: quality, time, trace memory.

Compares with the reference implementation's figures in ``../shared/reference/README.md`` (Yokoya's
code: 105 s median per scene at x32, 103 s at x8 on a 2-core CPU like this one; not re-timed here).
Like the reference runs, the SRF is estimated from the data (``estimate_srf_from_data``); the PSF
is the protocol's (``--blind-psf``: not given, so CNMF fits a Gaussian PSF to the data, its default).

    python benchmarks/bench_cnmf.py [--data-dir DIR] [--device auto] [--repeat 1] [--blind-psf]

Prints a table and writes ``benchmarks/results/cnmf.json`` (``cnmf_blind_psf.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from fusion_explorer.bench import cave_scenes, load_scene
from fusion_explorer.methods import fuse
from fusion_explorer.metrics import evaluate
from fusion_explorer.physics import simulate

# ../shared/reference/README.md, "CNMF (Yokoya's Python code, its defaults)": (PSNR, SAM, ERGAS)
REFERENCE = {
    ("balloons_ms", "mossfuse-cave-x32"): (32.459, 7.598, 0.541),
    ("thread_spools_ms", "mossfuse-cave-x32"): (30.261, 13.034, 1.234),
    ("fake_and_real_peppers_ms", "mossfuse-cave-x32"): (26.083, 17.874, 3.061),
    ("balloons_ms", "gaussian-x8"): (44.254, 2.846, 0.656),
    ("thread_spools_ms", "gaussian-x8"): (41.593, 5.005, 1.468),
    ("fake_and_real_peppers_ms", "gaussian-x8"): (43.330, 4.035, 1.801),
}
REFERENCE_SECONDS = {"mossfuse-cave-x32": 105.0, "gaussian-x8": 103.0}


def trace_mib(result) -> float:
    arrays = {id(a): a.nbytes for s in result.trace for a in s.values() if isinstance(a, np.ndarray)}
    return sum(arrays.values()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per scene (median reported)")
    ap.add_argument("--blind-psf", action="store_true", help="do not give CNMF the PSF (it fits one)")
    ap.add_argument("--scenes", help="comma-separated scene folder names (default: all)")
    args = ap.parse_args()
    scenes = cave_scenes(args.data_dir)
    if args.scenes:
        wanted = set(args.scenes.split(","))
        scenes = [s for s in scenes if Path(s).name in wanted]
    rows = []
    for spec in scenes:
        truth = load_scene(spec)
        name = Path(spec).name
        for protocol in ("mossfuse-cave-x32", "gaussian-x8"):
            problem = simulate(truth, protocol)
            if args.blind_psf:
                problem = dataclasses.replace(problem, psf=None)
            seconds, cpu, result = [], [], None
            for _ in range(args.repeat):
                start, start_cpu = time.perf_counter(), time.process_time()
                result = fuse(problem, "cnmf", device=args.device, estimate_srf_from_data=True)
                seconds.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            scores = evaluate(truth, result.fused, problem.ratio)
            row = {
                "scene": name,
                "protocol": protocol,
                "device": result.device,
                "seconds": statistics.median(seconds),
                "cpu_seconds": statistics.median(cpu),  # all threads; less sensitive to a busy machine
                "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
                "trace_mib": round(trace_mib(result), 1),
                "trace_records": len(result.trace),
                "iterations": result.extras["iterations"],
                "n_endmembers": result.params["n_endmembers"],
                **{k: round(v, 5) for k, v in scores.items()},
            }
            ref = REFERENCE.get((name, protocol))
            if ref:
                row.update(ref_psnr=ref[0], ref_sam=ref[1], ref_ergas=ref[2])
            rows.append(row)
            print(
                f"{name:28s} {protocol:18s} PSNR {row['psnr']:.3f} SAM {row['sam']:.3f} ERGAS {row['ergas']:.3f} "
                f"{row['seconds']:.1f} s (cpu {row['cpu_seconds']:.1f} s, load {row['load_average']}) "
                f"trace {row['trace_mib']} MiB",
                flush=True,
            )

    print("\n| scene | protocol | PSNR | SAM ° | ERGAS | ref PSNR | ref SAM ° | seconds | ref s / ours | trace MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref_p = f"{r['ref_psnr']:.3f}" if "ref_psnr" in r else "—"
        ref_s = f"{r['ref_sam']:.3f}" if "ref_sam" in r else "—"
        speed = REFERENCE_SECONDS[r["protocol"]] / r["seconds"]
        print(
            f"| {r['scene']} | {r['protocol']} | {r['psnr']:.3f} | {r['sam']:.3f} | {r['ergas']:.3f} | {ref_p} | "
            f"{ref_s} | {r['seconds']:.1f} | {speed:.1f}x | {r['trace_mib']} |"
        )
    for protocol in ("mossfuse-cave-x32", "gaussian-x8"):
        sub = [r for r in rows if r["protocol"] == protocol and "ref_psnr" in r]
        if sub:
            dp = statistics.mean(r["psnr"] - r["ref_psnr"] for r in sub)
            ds = statistics.mean(r["sam"] - r["ref_sam"] for r in sub)
            sec = statistics.median(r["seconds"] for r in sub)
            print(f"\n{protocol}: mean dPSNR vs reference {dp:+.3f} dB, mean dSAM {ds:+.3f} deg over {len(sub)} "
                  f"scenes; median {sec:.1f} s ({REFERENCE_SECONDS[protocol] / sec:.1f}x faster than the "
                  f"reference's {REFERENCE_SECONDS[protocol]:.0f} s)")
    name = "cnmf_blind_psf.json" if args.blind_psf else "cnmf.json"
    out = Path(__file__).parent / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nresults -> {out}")


if __name__ == "__main__":
    main()
