"""Classic baselines (GSA, GLP-HS, HySure) beside bicubic and CNMF on the full CAVE scenes, both protocols.

Each method runs with its defaults on the protocol's simulated pair (known SRF and PSF; CNMF with
its defaults, i.e. the known SRF rather than ``estimate_srf_from_data`` of ``bench_cnmf.py``). With
``--blind`` HySure also runs with both responses estimated from the images (``hysure-blind``), and
the relative Frobenius errors of its SRF and PSF estimates against the protocol's are recorded.

    python benchmarks/bench_baselines.py [--data-dir DIR] [--device auto] [--methods ...] [--blind] [--threads N]
    python benchmarks/bench_baselines.py --estimation     # HySure's SRF/PSF estimates alone, crops and full
    python benchmarks/bench_baselines.py --remote --blind # PaviaU 48² and Samson 64² crops, x4, Sentinel-2A

Prints a table and writes ``benchmarks/results/baselines.json`` (``--estimation``:
``baselines_hysure_estimation.json``: relative Frobenius errors of the SRF and PSF estimates that
``hysure`` computes with its default options, on central crops of 128, 256 and 512 pixels).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from fusion_explorer.bench import BenchRow, cave_scenes, format_table, load_scene
from fusion_explorer.methods import fuse
from fusion_explorer.metrics import evaluate
from fusion_explorer.physics import simulate

PROTOCOLS = ("mossfuse-cave-x32", "gaussian-x8")
METHODS = ("bicubic", "cnmf", "gsa", "glp_hs", "hysure")


def _same_support(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two centred square kernels zero-padded to the larger side (to compare them)."""
    n = max(a.shape[0], b.shape[0])
    return tuple(np.pad(k, (n - k.shape[0]) // 2) for k in (a, b))


def estimation(scenes, out: Path) -> None:
    """HySure's blind SRF and PSF estimates (its defaults) against the protocol's, per scene and crop."""
    from fusion_explorer.bench import center_crop
    from fusion_explorer.methods.hysure import MAX_DEFAULT_PSF_SIZE, psf_from_images, srf_from_images, usable_psf

    records = []
    print("| scene | protocol | crop | SRF rel. error | PSF rel. error | PSF peak / true peak |")
    print("|---|---|---|---|---|---|")
    for spec in scenes:
        cube = load_scene(spec)
        for protocol, size in [(PROTOCOLS[1], 128), (PROTOCOLS[1], 256), (PROTOCOLS[1], 512),
                               (PROTOCOLS[0], 256), (PROTOCOLS[0], 512)]:
            problem = simulate(center_crop(cube, size, 32), protocol)
            lr, msi = problem.lr_hsi.values.astype(float), problem.hr_msi.values.astype(float)
            ratio, offset = problem.ratio, problem.offset
            srf = srf_from_images(lr, msi, ratio, offset)  # hysure's defaults: blur 1, lambda_r 1e-2
            size_k = min(2 * ratio - 1, MAX_DEFAULT_PSF_SIZE)
            psf = usable_psf(psf_from_images(lr, msi, srf, ratio, offset, size_k))  # lambda_b 1e-3
            true_psf = problem.psf
            psf_n, true_n = _same_support(psf, true_psf)
            rec = {
                "scene": Path(spec).name,
                "protocol": protocol,
                "crop": size,
                "srf_rel_error": float(np.linalg.norm(srf - problem.srf.matrix) / np.linalg.norm(problem.srf.matrix)),
                "psf_rel_error": float(np.linalg.norm(psf_n - true_n) / np.linalg.norm(true_n)),
                "psf_peak_ratio": float(psf.max() / true_psf.max()),
            }
            records.append(rec)
            print(f"| {rec['scene']} | {protocol} | {size} | {rec['srf_rel_error']:.3f} | {rec['psf_rel_error']:.3f} | "
                  f"{rec['psf_peak_ratio']:.2f} |", flush=True)
    out.write_text(json.dumps(records, indent=2))
    print(f"\nresults -> {out}")


def cave_problems(scenes):
    """``(scene, protocol, truth, problem)`` for the full CAVE scenes under both named protocols."""
    for spec in scenes:
        truth = load_scene(spec)
        for protocol in PROTOCOLS:
            yield Path(spec).name, protocol, truth, simulate(truth, protocol)


def remote_problems(data_dir):
    """The two remote crops of :func:`~fusion_explorer.bench.remote_crops` at x4 (Gaussian sigma 2,
    centre sampling) through the Sentinel-2A SRF, as ``bench_scalmu.py`` simulates them."""
    from fusion_explorer.bench import remote_crops
    from fusion_explorer.physics import make_protocol
    from fusion_explorer.srf import get_srf

    proto = make_protocol(4)
    for name, truth in remote_crops(data_dir).items():
        srf = get_srf("sentinel-2a", truth.coords["wavelength"].values)
        yield name, f"{proto.name} sentinel-2a", truth, simulate(truth, proto, srf=srf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--scenes", help="comma-separated scene folder names (default: all)")
    ap.add_argument("--blind", action="store_true", help="also HySure with the SRF and PSF estimated")
    ap.add_argument("--remote", action="store_true", help="the two remote crops at x4 (Sentinel-2A) instead")
    ap.add_argument("--estimation", action="store_true", help="only HySure's SRF/PSF estimation accuracy")
    ap.add_argument("--threads", type=int, help="torch CPU threads for every method (default: torch's)")
    ap.add_argument("--out", help="JSON path (default results/baselines.json, baselines_remote.json with --remote)")
    args = ap.parse_args()
    default_out = "baselines_remote.json" if args.remote else "baselines.json"
    args.out = args.out or str(Path(__file__).parent / "results" / default_out)
    if args.threads:
        torch.set_num_threads(args.threads)
    scenes = cave_scenes(args.data_dir)
    if args.scenes:
        wanted = set(args.scenes.split(","))
        scenes = [s for s in scenes if Path(s).name in wanted]
    if args.estimation:
        estimation(scenes, Path(__file__).parent / "results" / "baselines_hysure_estimation.json")
        return
    runs = [(m, m, {}) for m in args.methods.split(",")]
    if args.blind:
        runs.append(("hysure-blind", "hysure", {"estimate_srf": True, "estimate_psf": True}))
    rows: list[BenchRow] = []
    records: list[dict] = []
    problems = remote_problems(args.data_dir) if args.remote else cave_problems(scenes)
    for name, protocol, truth, problem in problems:
        for label, method, options in runs:
            result = fuse(problem, method, device=args.device, **options)
            scores = evaluate(truth, result.fused, problem.ratio)
            size = "x".join(str(truth.sizes[d]) for d in ("y", "x", "band"))
            row = BenchRow(label, name, protocol, size, result.device, result.seconds, scores)
            rows.append(row)
            load = " ".join(f"{v:.2f}" for v in os.getloadavg())
            record = {**row.as_dict(), "threads": torch.get_num_threads(), "load_average": load}
            if label == "hysure-blind":
                srf = np.asarray(result.extras["srf_matrix"])
                record["srf_rel_error"] = float(np.linalg.norm(srf - problem.srf.matrix)
                                                / np.linalg.norm(problem.srf.matrix))
                est, true = _same_support(result.psf, problem.psf)
                record["psf_rel_error"] = float(np.linalg.norm(est - true) / np.linalg.norm(true))
            records.append(record)
            errors = " ".join(f"{k} {v:.3f}" for k, v in record.items() if k.endswith("_rel_error"))
            print(f"{label:13s} {name:26s} {protocol:18s} PSNR {scores['psnr']:.3f} SAM {scores['sam']:.3f} "
                  f"ERGAS {scores['ergas']:.3f} {result.seconds:.1f} s {errors}", flush=True)
    print()
    print(format_table(rows, columns=("psnr", "sam", "ergas")))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=2))
    print(f"\nresults -> {out}")


if __name__ == "__main__":
    main()
