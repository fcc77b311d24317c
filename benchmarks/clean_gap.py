"""What moves the clean-protocol numbers: the start against the learned parts (issue 20's clean goal).

Issue 20 asks SCALMU to beat the same pipeline with nothing learned, ``cnmf(consistency="guided")``, by
0.5 dB on the two clean CAVE protocols with the PSF hidden (``bench_scalmu.py --full --blind``). Every
method there starts from the same VCA endmembers (seed 0, ``p`` = the authors' rule). This script asks
how much of the numbers is that start:

- ``--probe seeds``: ``cnmf-guided``, ``scalmu-plain`` (learned parts off) and ``scalmu`` from VCA seeds
  ``0..S-1`` at the default ``p``; tables: each method's mean per seed, and the *paired* differences
  (same scene, same seed, so the same start) ``scalmu − cnmf-guided`` and ``scalmu − scalmu-plain``.
- ``--probe endmembers``: the same methods at seed 0 with ``p`` = 10, 20, the default and the band
  count ``L``.
- ``--probe starts``: the same methods with ``fuse(..., starts=N)``, N = 1, 2, 4: the mean of the fused
  cubes from seeds ``0..N-1``.

Full 512x512 CAVE scenes of ``../shared/data/cave`` (the 4 shared ones), PSF hidden (only the SRF and
the ratio given). Records go to ``benchmarks/results/clean_gap_PROBE.json`` after every run; the
tables are printed (markdown).

    .venv/bin/python benchmarks/clean_gap.py --probe seeds --threads 1 [--protocols gaussian-x8]
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
from bench_scalmu import problems  # noqa: E402  (the clean protocols on the full scenes, as bench_scalmu runs them)

from fusion_explorer.methods import fuse  # noqa: E402
from fusion_explorer.metrics import evaluate  # noqa: E402

METHODS = {
    "cnmf-guided": ("cnmf", {"consistency": "guided"}),
    "scalmu-plain": ("scalmu", {"learned": False}),
    "scalmu": ("scalmu", {}),
}
RESULTS = Path(__file__).resolve().parent / "results"


def settings(probe: str, seeds: int, bands: int) -> list[dict]:
    """The starts a probe runs: ``{"seed", "n_endmembers"[, "starts"]}`` (``None``: the default rule)."""
    if probe == "seeds":
        return [{"seed": s, "n_endmembers": None} for s in range(seeds)]
    if probe == "starts":
        return [{"seed": 0, "n_endmembers": None, "starts": n} for n in (1, 2, 4)]
    return [{"seed": 0, "n_endmembers": p} for p in (10, 20, None, bands)]


def run(args) -> list[dict]:
    out = RESULTS / f"clean_gap_{args.probe}{args.suffix}.json"
    records: list[dict] = []
    for group, scene, problem in problems(None, False, True):
        protocol = group.removeprefix("CAVE ").removesuffix(" (PSF hidden)")
        if args.protocols and protocol not in args.protocols:
            continue
        for start in settings(args.probe, args.seeds, problem.lr_hsi.sizes["band"]):
            for label, (method, options) in METHODS.items():
                t = time.perf_counter()
                result = fuse(problem, method, device="cpu", **start, **options)
                s = evaluate(problem.truth, result.fused, problem.ratio, metrics=("psnr", "sam"))
                records.append({"protocol": protocol, "scene": scene, "method": label, **start,
                                "p": int(result.params["n_endmembers"]),
                                "psnr": round(float(s["psnr"]), 4), "sam": round(float(s["sam"]), 4),
                                "seconds": round(time.perf_counter() - t, 1)})
                print(json.dumps(records[-1]), file=sys.stderr, flush=True)
                out.write_text(json.dumps({"probe": args.probe, "command": " ".join(sys.argv),
                                           "records": records}, indent=1))
    return records


def _per_scene(psnr: dict, scenes: list[str], method: str, start) -> np.ndarray:
    """PSNR ``(scenes,)`` of ``method`` from ``start`` (NaN where missing)."""
    return np.array([psnr.get((s, start, method), np.nan) for s in scenes])


def tables(records: list[dict], probe: str) -> str:
    """Markdown: mean PSNR per method and start, and the paired differences (same scene and start)."""
    key = {"seeds": "seed", "endmembers": "n_endmembers", "starts": "starts"}[probe]
    label = {"seeds": "seed", "endmembers": "p (None: default)", "starts": "starts (seeds 0..N-1, mean)"}[probe]
    lines = []
    for protocol in dict.fromkeys(r["protocol"] for r in records):
        rows = [r for r in records if r["protocol"] == protocol]
        starts = list(dict.fromkeys(r[key] for r in rows))
        scenes = list(dict.fromkeys(r["scene"] for r in rows))
        psnr = {(r["scene"], r[key], r["method"]): r["psnr"] for r in rows}

        def paired(a: str, b: str, start) -> np.ndarray:
            return _per_scene(psnr, scenes, a, start) - _per_scene(psnr, scenes, b, start)  # noqa: B023 (used in the loop)

        lines += [f"\n{protocol}, mean PSNR dB over {len(scenes)} scenes\n",
                  f"| {label} | " + " | ".join(METHODS) + " | scalmu − cnmf-guided | scalmu − plain | "
                  "scalmu − cnmf-guided per scene (min / max) |",
                  "|---|" + "---|" * (len(METHODS) + 3)]
        for start in starts:
            d = paired("scalmu", "cnmf-guided", start)
            means = " | ".join(f"{_per_scene(psnr, scenes, m, start).mean():.2f}" for m in METHODS)
            learned = paired("scalmu", "scalmu-plain", start).mean()
            lines.append(f"| {start} | {means} | {d.mean():+.2f} | {learned:+.2f} | {d.min():+.2f} / {d.max():+.2f} |")
        if probe == "seeds" and len(starts) > 1:
            per_seed = np.array([paired("scalmu", "cnmf-guided", s).mean() for s in starts])
            own = np.stack([_per_scene(psnr, scenes, "scalmu", s) for s in starts], axis=1)
            lines.append(f"\nscalmu − cnmf-guided over seeds: mean {per_seed.mean():+.2f} dB "
                         f"(per seed {per_seed.min():+.2f} to {per_seed.max():+.2f}); scalmu's own range over "
                         f"seeds per scene up to {np.nanmax(own.max(1) - own.min(1)):.2f} dB")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probe", choices=("seeds", "endmembers", "starts"), required=True)
    ap.add_argument("--seeds", type=int, default=4, help="seeds 0..S-1 (--probe seeds)")
    ap.add_argument("--protocols", nargs="*", help="gaussian-x8, mossfuse-cave-x32 (default: both)")
    ap.add_argument("--suffix", default="", help="results file clean_gap_PROBE{SUFFIX}.json")
    ap.add_argument("--tables", nargs="*", help="only print the tables of these results files (merged)")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.tables:
        records = [r for f in args.tables for r in json.loads(Path(f).read_text())["records"]]
        print(tables(records, args.probe))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    print(tables(run(args), args.probe))


if __name__ == "__main__":
    main()
