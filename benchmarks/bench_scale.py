"""Scenes larger than memory: tiled fusion through the CLI on synthetic dead-leaves scenes (issue 23).

The scene (``S x S`` pixels, 128 bands, 420–1000 nm) is a linear mixture ``X = E A`` of 12 random
endmember spectra (:func:`fusion_explorer.synth.spectra.random_spectra`) whose abundances ``A``
are a dead-leaves image: a fixed list of random disks (power-law radii, each a Dirichlet mixture
of 1–3 endmembers, front disk first) times a smooth shading field. Any box of ``A`` is rendered on
its own from the disk list, so the scene is rendered chunk by chunk and never held whole: the
HR-MSI ``R X = (R E) A`` (4 Gaussian bands, B G R NIR) and the LR-HSI ``S(X) = E S(A)`` (Gaussian
PSF sigma 2, 15 x 15, ratio 8, offset 3, reflect borders: the gaussian-x8 protocol) are written to
Zarr stores tile by tile, and the truth is rendered again tile by tile to score the result.

Runs (each ``fusion-explorer fuse --tile`` in a subprocess; peak resident memory is the largest
sum of RSS over the whole process tree, sampled every 0.1 s with psutil, workers included)::

    .venv/bin/python benchmarks/bench_scale.py cave                 # tiled vs whole on full CAVE scenes
    .venv/bin/python benchmarks/bench_scale.py overhead --size 1024 # tiled vs whole-scene, both in memory
    .venv/bin/python benchmarks/bench_scale.py overhead --size 1024 --methods bicubic --repeats 5 \
        --out scale_overhead_1024_bicubic.json                       # bicubic only, medians of 5
    .venv/bin/python benchmarks/bench_scale.py run --size 2048 --workers 1 --scheduler processes
    .venv/bin/python benchmarks/bench_scale.py table                # benchmarks/results/scale.md

Results: ``benchmarks/results/scale_*.json``, table ``benchmarks/results/scale.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CLI = [sys.executable, "-m", "fusion_explorer.cli"]
BANDS, P, RATIO, SIGMA, KSIZE, OFFSET = 128, 12, 8, 2.0, 15, 3
WAVELENGTH = np.linspace(420.0, 1000.0, BANDS)
#: CNMF options of the big runs (documented in scale.md): fewer endmembers and iterations than the
#: defaults (30, 200), so that a 4096² run fits this shared 2-core machine's time
CNMF_OPTIONS = ["n_endmembers=12", "inner_iterations=50"]


# ---- the scene ---------------------------------------------------------------------------------------


class Scene:
    """The dead-leaves scene of side ``size``: endmembers, SRF and the disk list (seeded)."""

    def __init__(self, size: int, seed: int = 0):
        from fusion_explorer.synth.spectra import random_spectra

        rng = np.random.default_rng(seed)
        self.size = size
        spectra, _ = random_spectra(WAVELENGTH, P, rng)
        self.endmembers = np.asarray(spectra, dtype=np.float64).T  # (bands, p)
        centres = np.array([470.0, 550.0, 660.0, 850.0])
        widths = np.array([30.0, 35.0, 30.0, 60.0])
        srf = np.exp(-0.5 * ((WAVELENGTH[None, :] - centres[:, None]) / widths[:, None]) ** 2)
        self.srf = srf / srf.sum(axis=1, keepdims=True)
        r_min, r_max = 3.0, size / 8
        area = size * size
        n = int(3 * area / (np.pi * r_min * r_max))  # covers the scene several times over
        u = rng.random(n)
        self.radius = r_min * (r_max / r_min) ** u ** 2.5  # many small, few large
        self.cy, self.cx = rng.random(n) * size, rng.random(n) * size
        k = rng.integers(1, 4, n)
        mix = np.zeros((n, P))
        for i in range(n):
            members = rng.choice(P, k[i], replace=False)
            mix[i, members] = rng.dirichlet(np.ones(k[i]))
        self.mix = mix.astype(np.float32)
        self.waves = [(rng.uniform(0.5, 3) / size, rng.uniform(0.5, 3) / size, rng.uniform(0, 2 * np.pi))
                      for _ in range(4)]

    def abundances(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """``A`` on the box ``[y0, y1) x [x0, x1)``: ``(p, y1-y0, x1-x0)`` float32."""
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        label = np.full((y1 - y0, x1 - x0), -1, dtype=np.int64)
        hit = ((self.cy + self.radius > y0) & (self.cy - self.radius < y1)
               & (self.cx + self.radius > x0) & (self.cx - self.radius < x1))
        for i in np.flatnonzero(hit)[::-1]:  # back to front: the first disk ends on top
            r = self.radius[i]
            a, b = max(int(self.cy[i] - r) - y0, 0), min(int(self.cy[i] + r) + 1 - y0, y1 - y0)
            c, d = max(int(self.cx[i] - r) - x0, 0), min(int(self.cx[i] + r) + 1 - x0, x1 - x0)
            inside = (yy[a:b, c:d] - self.cy[i]) ** 2 + (xx[a:b, c:d] - self.cx[i]) ** 2 <= r * r
            label[a:b, c:d][inside] = i
        a = self.mix[np.maximum(label, 0)].transpose(2, 0, 1)
        a[:, label < 0] = 1.0 / P
        shade = np.ones_like(yy)
        for fy, fx, ph in self.waves:
            shade += 0.08 * np.sin(2 * np.pi * (fy * yy + fx * xx) + ph)
        return (a * (0.85 * shade / shade.max())[None]).astype(np.float32)

    def spatial(self):
        from fusion_explorer.physics import SpatialDegradation, gaussian_kernel

        return SpatialDegradation(gaussian_kernel(KSIZE, SIGMA), RATIO, OFFSET, "reflect")

    def truth(self, y0, y1, x0, x1) -> np.ndarray:
        return np.einsum("bp,pyx->byx", self.endmembers.astype(np.float32), self.abundances(y0, y1, x0, x1))


def make_inputs(scene: Scene, folder: Path, tile: int = 512) -> dict:
    """Write ``lr_hsi.zarr``, ``hr_msi.zarr`` and ``srf.nc`` of ``scene`` into ``folder``, tile by tile."""
    from fusion_explorer.srf import SRF
    from fusion_explorer.tiled import TileGrid, ZarrCubeWriter

    folder.mkdir(parents=True, exist_ok=True)
    size = scene.size
    grid = TileGrid.for_psf((size, size), RATIO, tile, (KSIZE, KSIZE))
    attrs = {"scene": f"dead leaves {size}", "kind": "LR-HSI", "ratio": RATIO}
    lr_w = ZarrCubeWriter(folder / "lr_hsi.zarr", (BANDS, size // RATIO, size // RATIO), (tile // RATIO,) * 2,
                          wavelength=WAVELENGTH, attrs=attrs, name="lr_hsi", overwrite=True)
    msi_w = ZarrCubeWriter(folder / "hr_msi.zarr", (4, size, size), (tile, tile), attrs={**attrs, "kind": "HR-MSI"},
                           name="hr_msi", overwrite=True)
    spatial = scene.spatial()
    rm = (scene.srf @ scene.endmembers).astype(np.float32)  # (4, p)
    start = time.perf_counter()
    for t in grid:
        a_ext = scene.abundances(t.ey0, t.ey1, t.ex0, t.ex1)
        msi_w.write(t.y0, t.x0, np.einsum("mp,pyx->myx", rm, t.trim(a_ext)))
        lr_a = spatial(torch.from_numpy(a_ext.astype(np.float64))[None])[0].numpy()
        (ly, lx), (ey, ex) = t.lr_box(RATIO), t.lr_ext_box(RATIO)
        lr_a = lr_a[:, ly.start - ey.start : ly.stop - ey.start, lx.start - ex.start : lx.stop - ex.start]
        lr_w.write(t.y0 // RATIO, t.x0 // RATIO, np.einsum("bp,pyx->byx", scene.endmembers, lr_a))
    lr_w.commit()
    msi_w.commit()
    srf = SRF.from_matrix(scene.srf, WAVELENGTH, band_names=["B", "G", "R", "NIR"], name="4-band gaussian B G R NIR")
    (folder / "srf.nc").write_bytes(srf.to_dataarray().to_netcdf(engine="h5netcdf"))
    return {"seconds_render": round(time.perf_counter() - start, 1)}


def score(scene: Scene, fused_path: Path, tile: int = 512) -> dict:
    """PSNR (mean over bands, data range 1, as :func:`fusion_explorer.metrics.psnr`) and RMSE of the
    fused store against the truth, both streamed tile by tile."""
    import zarr

    arr = zarr.open_array(str(fused_path / "fused"), mode="r")
    sse = np.zeros(BANDS)
    size = scene.size
    for y0 in range(0, size, tile):
        for x0 in range(0, size, tile):
            y1, x1 = min(y0 + tile, size), min(x0 + tile, size)
            err = arr[:, y0:y1, x0:x1].astype(np.float64) - scene.truth(y0, y1, x0, x1)
            sse += np.square(err).sum(axis=(1, 2))
    mse = sse / (size * size)
    return {"psnr": round(float(np.mean(10 * np.log10(1 / mse))), 3), "rmse": float(np.sqrt(mse.mean()))}


# ---- running and measuring ---------------------------------------------------------------------------


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; return its wall time, exit code, the peak of the summed RSS of its process tree
    (sampled every 0.1 s), the peak of its summed PSS (proportional set size: shared pages such as
    torch's libraries in every worker counted once; sampled every second, reading ``smaps`` costs),
    the peak address space (VmSize) of the command's own process (what ``ulimit -v`` bounds) and
    that limit, if any. Sizes in GiB (2^30 bytes; the issue's 3 GB is 2.79 GiB)."""
    import resource

    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak, peak_pss, peak_vms = [0], [0], [0]
    ps = psutil.Process(proc.pid)

    def sample() -> None:
        tick = 0
        while proc.poll() is None:
            try:
                tree = [ps, *ps.children(recursive=True)]
                info = ps.memory_info()
                peak[0] = max(peak[0], info.rss + sum(c.memory_info().rss for c in tree[1:]))
                peak_vms[0] = max(peak_vms[0], info.vms)
                if tick % 10 == 0:
                    peak_pss[0] = max(peak_pss[0], sum(c.memory_full_info().pss for c in tree))
            except psutil.Error:
                pass
            tick += 1
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return {"rc": proc.returncode, "seconds": round(seconds, 1), "peak_rss_gib": round(peak[0] / 2**30, 3),
            "peak_pss_gib": round(peak_pss[0] / 2**30, 3), "peak_vms_gib_cli": round(peak_vms[0] / 2**30, 3),
            "ulimit_v_gib": None if limit == resource.RLIM_INFINITY else round(limit / 2**30, 2),
            "stdout": out.strip()[-300:], "stderr_tail": err.strip()[-300:] if proc.returncode else ""}


def fuse_cmd(folder: Path, out: Path, method: str, tile: int, scheduler: str, workers: int,
             options: list[str] | None = None, blind_psf: bool = False) -> list[str]:
    """The CLI command; ``blind_psf``: without the PSF and offset (the tiled run fits them on a window)."""
    psf = [] if blind_psf else ["--psf-sigma", str(SIGMA), "--psf-size", str(KSIZE), "--offset", str(OFFSET)]
    cmd = [*CLI, "fuse", "--lr-hsi", str(folder / "lr_hsi.zarr"), "--hr-msi", str(folder / "hr_msi.zarr"),
           "--srf", str(folder / "srf.nc"), "--ratio", str(RATIO), *psf, "--method", method, "--tile", str(tile),
           "--scheduler", scheduler, "--workers", str(workers), "--quiet", "--overwrite", "--out", str(out)]
    for option in [*(CNMF_OPTIONS if method == "cnmf" else []), *(options or [])]:
        cmd += ["--option", option]
    return cmd


def cmd_run(args) -> dict:
    folder = Path(args.workdir) / f"scene{args.size}"
    scene = Scene(args.size, args.seed)
    row: dict = {"size": args.size, "bands": BANDS, "ratio": RATIO, "msi_bands": 4, "method": args.method,
                 "tile": args.tile, "scheduler": args.scheduler, "workers": args.workers}
    if args.option:
        row["options"] = list(args.option)
    if args.blind_psf:
        row["psf"] = "not given (fitted by the CLI)"
    if not (folder / "hr_msi.zarr").exists():
        row.update(make_inputs(scene, folder))
    out = folder / f"fused_{args.method}_{args.scheduler}{args.workers}.zarr"
    row.update(run_measured(fuse_cmd(folder, out, args.method, args.tile, args.scheduler, args.workers,
                                     args.option, args.blind_psf)))
    row["hr_megapixels_per_s"] = round(args.size**2 / 1e6 / row["seconds"], 3)
    if row["rc"] == 0 and not args.no_score:
        row.update(score(scene, out))
    if row["rc"] == 0 and args.blind_psf:  # what the CLI fitted (the scene's PSF: Gaussian sigma SIGMA, offset OFFSET)
        import xarray as xr

        with xr.open_dataset(out, engine="zarr", consolidated=False) as ds:
            row["psf_fitted"] = ds["fused"].attrs.get("psf")
    shutil.rmtree(out, ignore_errors=True)
    row["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(row), flush=True)
    _append(RESULTS / "scale_runs.json", row)
    return row


def cmd_overhead(args) -> dict:
    """Tiled (threads, in memory) against the whole-scene method on a scene both fit, same options."""
    import xarray as xr

    import fusion_explorer as fe
    from fusion_explorer.metrics import evaluate
    from fusion_explorer.problem import FusionProblem
    from fusion_explorer.srf import SRF
    from fusion_explorer.tiled import fuse_tiled

    load_before = round(os.getloadavg()[0], 2)
    scene = Scene(args.size, args.seed)
    size = args.size
    truth = fe.cube.make_cube(scene.truth(0, size, 0, size), WAVELENGTH)
    srf = SRF.from_matrix(scene.srf, WAVELENGTH, name="4-band")
    spatial = scene.spatial()
    x = torch.from_numpy(truth.values.astype(np.float64))
    lr = fe.cube.make_cube(spatial(x).numpy(), WAVELENGTH)
    msi = xr.DataArray(np.einsum("mb,byx->myx", scene.srf, truth.values).astype(np.float32), dims=("band", "y", "x"))
    problem = FusionProblem(lr, msi, srf=srf, ratio=RATIO, psf=spatial.kernel.numpy(), offset=OFFSET)
    options = {"n_endmembers": P, "inner_iterations": 50}
    rows = []
    for method in args.methods:
        opts = options if method == "cnmf" else {}
        seconds: dict = {"whole": [], "tiled": [], "cpu_whole": [], "cpu_tiled": []}
        for _ in range(args.repeats):  # alternated, so that both see the same load
            for kind in ("whole", "tiled"):
                gc.collect()
                c0, t0 = time.process_time(), time.perf_counter()
                if kind == "whole":
                    whole = fe.fuse(problem, method, device="cpu", **opts).fused
                else:
                    tiled = fuse_tiled(problem, method, tile=args.tile, workers=2, **opts)
                seconds[kind].append(round(time.perf_counter() - t0, 2))
                seconds[f"cpu_{kind}"].append(round(time.process_time() - c0, 2))
        t_whole, t_tiled = float(np.median(seconds["whole"])), float(np.median(seconds["tiled"]))
        row = {"size": size, "method": method, "tile": args.tile, "label": args.label,
               "load_average_1min_before": load_before, "seconds_whole": round(t_whole, 2),
               "seconds_tiled_threads2": round(t_tiled, 2), "overhead": round(t_tiled / t_whole, 3),
               "repeats": args.repeats, "runs": seconds,
               "cpu_overhead": round(float(np.median(seconds["cpu_tiled"]) / np.median(seconds["cpu_whole"])), 3),
               "psnr_whole": round(evaluate(truth, whole, RATIO)["psnr"], 3),
               "psnr_tiled": round(evaluate(truth, tiled, RATIO)["psnr"], 3),
               "max_abs_diff": float(np.abs(whole.values - tiled.values).max()),
               "load_average_1min_after": round(os.getloadavg()[0], 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    name = f"scale_overhead_{size}.json" if args.out is None else args.out
    (RESULTS / name).write_text(json.dumps(rows, indent=1))
    return rows


def cmd_cave(args) -> list[dict]:
    """Tiled against whole-scene CNMF (defaults) on full CAVE scenes at x8 and x32."""
    import fusion_explorer as fe
    from fusion_explorer.metrics import evaluate
    from fusion_explorer.tiled import fuse_tiled

    rows = []
    for name in args.scenes:
        truth = fe.open_cube(ROOT.parent / "shared" / "data" / "cave" / name)
        for proto in ("gaussian-x8", "mossfuse-cave-x32"):
            problem = fe.simulate(truth, proto)
            t0 = time.perf_counter()
            whole = fe.fuse(problem, "cnmf", device="cpu").fused
            t_whole = time.perf_counter() - t0
            t0 = time.perf_counter()
            a = fuse_tiled(problem, "cnmf", tile=128, workers=2)
            t_tiled = time.perf_counter() - t0
            b = fuse_tiled(problem, "cnmf", tile=256, workers=1)
            p_w, p_a = (evaluate(truth, z, problem.ratio)["psnr"] for z in (whole, a))
            row = {"scene": name, "protocol": proto, "psnr_whole": round(p_w, 4), "psnr_tiled": round(p_a, 4),
                   "psnr_diff_db": round(p_a - p_w, 4),
                   "max_abs_diff_vs_whole": float(np.abs(a.values - whole.values).max()),
                   "max_abs_diff_tile128x2_vs_tile256x1": float(np.abs(a.values - b.values).max()),
                   "seconds_whole": round(t_whole, 2), "seconds_tiled_128_2threads": round(t_tiled, 2)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    (RESULTS / "scale_cave.json").write_text(json.dumps(rows, indent=1))
    return rows


def _append(path: Path, row: dict) -> None:
    rows = json.loads(path.read_text()) if path.exists() else []
    rows.append(row)
    path.write_text(json.dumps(rows, indent=1))


def cmd_table(args) -> None:
    """Print the tables of the JSON results (pasted into benchmarks/results/scale.md)."""
    runs = json.loads((RESULTS / "scale_runs.json").read_text()) if (RESULTS / "scale_runs.json").exists() else []
    print("| scene | method | scheduler | workers | tile | seconds | HR MP/s | peak RSS (GiB, all processes) | "
          "peak PSS (GiB) | PSNR |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['size']}² x {r['bands']} | {r['method']} | {r['scheduler']} | {r['workers']} | {r['tile']} | "
              f"{r['seconds']} | {r['hr_megapixels_per_s']} | {r['peak_rss_gib']} | {r.get('peak_pss_gib', '—')} | "
              f"{r.get('psnr', '—')} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("run")
    s.add_argument("--size", type=int, default=2048)
    s.add_argument("--method", default="cnmf")
    s.add_argument("--tile", type=int, default=512)
    s.add_argument("--scheduler", default="processes")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-score", action="store_true")
    s.add_argument("--blind-psf", action="store_true", help="leave the PSF and offset out: the CLI fits them")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option passed to the CLI (repeatable; recorded in the row)")
    s.add_argument("--workdir", default="/tmp/fusion-explorer-scale-bench")
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("overhead")
    s.add_argument("--size", type=int, default=1024)
    s.add_argument("--tile", type=int, default=512)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--methods", nargs="+", default=["bicubic", "cnmf"], choices=["bicubic", "cnmf"])
    s.add_argument("--repeats", type=int, default=1, help="alternated whole/tiled runs; medians reported")
    s.add_argument("--label", default="", help="a tag stored in the rows (e.g. before/after)")
    s.add_argument("--out", help="file name under benchmarks/results (default scale_overhead_SIZE.json)")
    s.set_defaults(func=cmd_overhead)
    s = sub.add_parser("cave")
    s.add_argument("scenes", nargs="*", default=["balloons_ms", "thread_spools_ms"])
    s.set_defaults(func=cmd_cave)
    s = sub.add_parser("table")
    s.set_defaults(func=cmd_table)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
