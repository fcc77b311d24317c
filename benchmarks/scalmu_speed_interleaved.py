"""One process's share of an interleaved speed comparison: SCALMU (shipped, default start, trace
off) on balloons 512x512x31 under gaussian-x8, ``--repeats`` times; prints one JSON line.

Run it alternately from two checkouts (``git worktree add /tmp/old REV``) so that both see the
same moments of a noisy machine, e.g. for the 2026-12-01 allocator comparison::

    py=.venv/bin/python; b=benchmarks/scalmu_speed_interleaved.py
    for r in 1 2 3; do
      PYTHONPATH=/tmp/old $py $b --label old
      $py $b --label new
      $py $b --label new --tune-allocator
    done >> benchmarks/results/scalmu_speed_interleaved.jsonl

(``--tune-allocator`` needs a checkout that has :mod:`fusion_explorer.memory`.)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", required=True)
    ap.add_argument("--tune-allocator", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.tune_allocator:
        from fusion_explorer.memory import keep_freed_memory

        assert keep_freed_memory(), "allocator not tuned (not glibc?)"
    import fusion_explorer
    from fusion_explorer.bench import cave_scenes, load_scene
    from fusion_explorer.methods import fuse
    from fusion_explorer.physics import simulate

    code = Path(fusion_explorer.__file__).resolve().parents[1]
    rev = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    problem = simulate(load_scene(cave_scenes(SHARED / "data/cave")[0]), "gaussian-x8")
    seconds, faults = [], []
    for _ in range(args.repeats):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds.append(fuse(problem, "scalmu", device="cpu", trace_budget_mb=0).seconds)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(json.dumps({"label": args.label, "code": rev, "allocator": "tuned" if args.tune_allocator else "default",
                      "best": min(seconds), "median": float(np.median(seconds)), "seconds": seconds,
                      "page_faults": faults}))


if __name__ == "__main__":
    main()
