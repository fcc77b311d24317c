"""SCALMU vs CNMF and bicubic on real data it never saw, plus the ablation and the inference time.

Quality (default): the CAVE scenes in ``../shared/data/cave`` (central ``--crop`` crops) under
``gaussian-x8`` and ``mossfuse-cave-x32``, and two remote-sensing crops (Pavia University
48x48x103, Samson 64x64x156; scaled to max 1) at ratio 4 (Gaussian sigma 2) with the Sentinel-2A
SRF restricted to the cube's range. Rows: bicubic, cnmf (defaults), scalmu (shipped weights),
``scalmu plain`` (same layers, learned parts off), ``scalmu without its learned PART`` (one of
the learned parts off, the others on: the per-part ablation; pick rows with ``--only``) and, for the K
ablation, separately trained networks (``--ablation K=PATH ...``, e.g. ``5=/tmp/k5/scalmu.pt``).
``--full``: whole 512x512
CAVE scenes (cnmf, scalmu, and scalmu with CNMF's own full-resolution MSI stage as its start,
``msi_pyramid=None``, instead of the default coarse-to-fine one; on crops under 256x256 the two
are the same).
``--speed``: inference time on a full 512x512x31 CAVE scene, with the allocator tuned as the CLI
does (:mod:`fusion_explorer.memory`; ``--default-malloc``: glibc's defaults, written to
``scalmu_speed_default_malloc.json``). ``--noisy``: the x8 and remote
protocols with white noise at 30 dB SNR on both images (does the consistency layer, which fits the
images, copy their noise?). Rows also include ``cnmf`` with its ``consistency`` option (the
guided transfer and the exact projection, nothing learned) and SCALMU without its consistency
layer. Writes
``benchmarks/results/scalmu_{crops,full,speed}[_noisy].json``.

    .venv/bin/python benchmarks/bench_scalmu.py [--crop 128 | --full] [--checkpoint PATH]
        [--ablation 5=PATH 20=PATH] [--speed] [--noisy]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fusion_explorer.bench import cave_scenes, center_crop, load_scene, remote_crops
from fusion_explorer.memory import keep_freed_memory
from fusion_explorer.methods import fuse
from fusion_explorer.methods.scalmu.model import LEARNED_PARTS
from fusion_explorer.metrics import evaluate
from fusion_explorer.physics import get_protocol, make_protocol, simulate
from fusion_explorer.problem import FusionProblem
from fusion_explorer.srf import get_srf

SHARED = Path(__file__).resolve().parents[1].parent / "shared"




#: the noisy variant of the x8 protocol (``--noisy``): white noise at this SNR (dB) on both images
NOISY_SNR = 30.0


def hide_psf(problem: FusionProblem) -> FusionProblem:
    """The same images with only the SRF and the ratio given, as a user gives them to the CLI
    (``fusion-explorer fuse`` without ``--psf``): methods estimate the PSF and the offset."""
    return FusionProblem(lr_hsi=problem.lr_hsi, hr_msi=problem.hr_msi, srf=problem.srf, ratio=problem.ratio,
                         truth=problem.truth, name=f"{problem.name} (PSF hidden)")


def problems(crop: int | None, noisy: bool = False, blind: bool = False):
    """``crop=None``: the whole CAVE scenes, and no remote crops. ``noisy``: the x8 protocol (and the
    remote one) with noise at :data:`NOISY_SNR` dB on both images instead of the noise-free ones.
    ``blind``: the PSF hidden (:func:`hide_psf`)."""
    for group, scene, problem in _problems(crop, noisy):
        yield (f"{group} (PSF hidden)", scene, hide_psf(problem)) if blind else (group, scene, problem)


def _problems(crop: int | None, noisy: bool = False):
    x8 = get_protocol("gaussian-x8").with_(snr_db=NOISY_SNR) if noisy else "gaussian-x8"
    for proto in (x8,) if noisy else (x8, "mossfuse-cave-x32"):
        group = f"CAVE gaussian-x8 snr{NOISY_SNR:g}" if noisy else f"CAVE {proto}"
        for path in cave_scenes(SHARED / "data/cave"):
            truth = load_scene(path) if crop is None else center_crop(load_scene(path), crop, 32)
            yield group, path.name, simulate(truth, proto)
    if crop is None:
        return
    for name, truth in remote_crops(SHARED / "data").items():
        srf = get_srf("sentinel-2a", truth.coords["wavelength"].values)
        proto = make_protocol(4, snr_db=NOISY_SNR if noisy else None)
        yield f"remote x4 sentinel-2a{f' snr{NOISY_SNR:g}' if noisy else ''}", name, simulate(truth, proto, srf=srf)


def runs(checkpoint: str | None, ablation: dict[str, str]) -> dict[str, tuple[str, dict]]:
    ck = {"checkpoint": checkpoint} if checkpoint else {}
    out = {
        "bicubic": ("bicubic", {}),
        "cnmf": ("cnmf", {}),
        "cnmf + consistency (guided transfer + exact projection, nothing learned)": ("cnmf", {"consistency": True}),
        "scalmu": ("scalmu", ck),
        "scalmu, full-resolution start": ("scalmu", {**ck, "msi_pyramid": None}),
        "scalmu without its consistency layer": ("scalmu", {**ck, "consistency": False}),
        "scalmu plain (learned off: plain MU, consistency at full steps)": ("scalmu", {**ck, "learned": False}),
        "cnmf start only (K=0)": ("scalmu", {**ck, "layers": 0}),
    }
    for part in LEARNED_PARTS:  # the per-part ablation: one learned part off, the others on
        out[f"scalmu without its learned {part}"] = ("scalmu", {**ck, "ablate": part})
    for k, path in ablation.items():
        out[f"scalmu K={k} (trained)"] = ("scalmu", {"checkpoint": path})
        out[f"scalmu K={k} plain"] = ("scalmu", {"checkpoint": path, "learned": False})
        out[f"scalmu K={k} without consistency"] = ("scalmu", {"checkpoint": path, "consistency": False})
    return out


def quality(crop: int | None, checkpoint: str | None, only: list[str] | None, ablation: dict[str, str],
            noisy: bool = False, blind: bool = False) -> list[dict]:
    table: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for group, scene, problem in problems(crop, noisy, blind):
        for name, (method, opts) in runs(checkpoint, ablation).items():
            if only and name not in only:
                continue
            result = fuse(problem, method, device="cpu", trace_budget_mb=0, **opts) if method != "bicubic" else fuse(
                problem, method, device="cpu")
            s = evaluate(problem.truth, result.fused, problem.ratio)
            table.setdefault((group, name), []).append((s["psnr"], s["sam"], result.seconds))
            print(f"{group} | {scene} | {name} | {s['psnr']:.2f} | {s['sam']:.2f} | {result.seconds:.2f}",
                  file=sys.stderr, flush=True)
    print("| protocol | method | mean PSNR (dB) | mean SAM (deg) | mean seconds | scenes |")
    print("|---|---|---|---|---|---|")
    out = []
    for (group, name), rows in table.items():
        a = np.asarray(rows)
        print(f"| {group} | {name} | {a[:, 0].mean():.2f} | {a[:, 1].mean():.2f} | {a[:, 2].mean():.2f} | {len(a)} |")
        out.append({"protocol": group, "method": name, "psnr": float(a[:, 0].mean()), "sam": float(a[:, 1].mean()),
                    "seconds": float(a[:, 2].mean()), "scenes": len(a)})
    return out


def _page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def speed(checkpoint: str | None, repeats: int, allocator: str) -> list[dict]:
    truth = load_scene(cave_scenes(SHARED / "data/cave")[0])
    problem = simulate(truth, "gaussian-x8")
    ck = {"checkpoint": checkpoint} if checkpoint else {}
    rows: list[dict] = []
    for name, opts in (("scalmu", ck), ("scalmu", {**ck, "msi_pyramid": None}), ("cnmf", {})):
        times, cpu, faults = [], [], []
        for _ in range(repeats):
            c0, f0 = time.process_time(), _page_faults()
            times.append(fuse(problem, name, device="cpu", trace_budget_mb=0, **opts).seconds)
            cpu.append(time.process_time() - c0)
            faults.append(_page_faults() - f0)
        # wall time is inflated when other jobs share the CPU; process CPU time is not
        label = name + (", full-resolution start" if "msi_pyramid" in opts else "")
        print(f"{label} on 512x512x31 (gaussian-x8, {torch.get_num_threads()} threads): wall best {min(times):.2f} s, "
              f"median {float(np.median(times)):.2f} s; CPU time best {min(cpu):.2f} s over {repeats}; "
              f"{allocator} allocator, page faults per run median {int(np.median(faults))}")
        rows.append({"method": label, "threads": torch.get_num_threads(), "wall_best": min(times),
                     "wall_median": float(np.median(times)), "cpu_best": min(cpu), "repeats": repeats,
                     "allocator": allocator, "page_faults": faults,
                     "load_average": os.getloadavg()[0]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--full", action="store_true",
                    help="whole CAVE scenes (rows: cnmf, cnmf + consistency, scalmu with both starts, "
                         "without its consistency layer, plain)")
    ap.add_argument("--ablation", nargs="*", default=[], help="K=PATH: separately trained networks")
    ap.add_argument("--checkpoint")
    ap.add_argument("--only", nargs="*", help="row names to run (default: all)")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--noisy", action="store_true",
                    help=f"the x8 and remote protocols with noise at {NOISY_SNR:g} dB SNR instead (no x32)")
    ap.add_argument("--blind", action="store_true",
                    help="hide the PSF (only the SRF and the ratio given, as through the CLI): methods estimate it")
    ap.add_argument("--out", help="results file name under benchmarks/results (default scalmu_{crops,full,speed}...)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's allocator as it is (the CLI and the app tune it: fusion_explorer.memory)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = "default" if args.default_malloc or not keep_freed_memory() else "tuned"
    start = time.perf_counter()
    if args.speed:
        rows = speed(args.checkpoint, args.repeats, allocator)
        name = "scalmu_speed.json" if allocator == "tuned" else "scalmu_speed_default_malloc.json"
    else:
        ablation = dict(item.split("=", 1) for item in args.ablation)
        # below 256x256 the default start is CNMF's full-resolution one anyway
        crop_rows = [r for r in runs(args.checkpoint, ablation) if r != "scalmu, full-resolution start"]
        full_rows = ["cnmf", "cnmf + consistency (guided transfer + exact projection, nothing learned)",
                     "scalmu", "scalmu, full-resolution start", "scalmu without its consistency layer",
                     "scalmu plain (learned off: plain MU, consistency at full steps)"]
        only = args.only or (full_rows if args.full else crop_rows)
        rows = quality(None if args.full else args.crop, args.checkpoint, only, ablation, args.noisy, args.blind)
        name = f"scalmu_{'full' if args.full else 'crops'}{'_noisy' if args.noisy else ''}" \
               f"{'_blind' if args.blind else ''}.json"
    out = Path(__file__).resolve().parent / "results" / (args.out or name)
    out.write_text(json.dumps(rows, indent=2))
    print(f"results -> {out}", file=sys.stderr)
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
