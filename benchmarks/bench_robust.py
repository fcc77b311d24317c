"""The degradation zoo as a benchmark: methods and blind estimators on CAVE scenes and remote crops.

Each scene is degraded by each case of :mod:`fusion_explorer.degradations` (named presets that change
one axis of ``gaussian-x8`` at a time, and/or cases drawn by :func:`~fusion_explorer.degradations.sample_cases`);
each method gets only what :func:`~fusion_explorer.degradations.degrade` gives it (LR-HSI, HR-MSI, the
SRF when the case makes it known; never the truth, the PSF or the offset) through
:func:`fusion_explorer.methods.fuse`, and is scored against the truth. The estimators of
:mod:`fusion_explorer.estimate` run on the same inputs and are compared with the true responses.

    python benchmarks/bench_robust.py --quick                  # 128x128 CAVE crop + Samson 64x64, 8 cases
    python benchmarks/bench_robust.py --crop 256 --sampled 12 --presets all --scenes all

Writes ``benchmarks/results/robust[_quick].json`` (one record per scene, case and method, and one
per scene and case for the estimators; rewritten after every problem, so a cut run keeps what it
did) and ``benchmarks/results/robust[_quick].md`` (a table per axis: PSF family, border, offset, noise,
MSI bands, SRF known, ratio; means over the cases in each row).

``--methods ...,mossfuse-fit`` adds MossFuse fitted from scratch on each problem, self-supervised
(``fuse(problem, "mossfuse", fit=True, steps=MOSSFUSE_FIT_STEPS, dim=MOSSFUSE_FIT_DIM)``: 120 Adam
steps, width 24; ``--mossfuse-steps N`` changes the step count). It sees what the other methods
see (never the truth, PSF or SRF: it estimates both). It costs about 1-2 minutes per 128x128 CAVE
crop on one thread, so it is never in the default methods; its records keep the options and the
steps run, and the markdown adds a per-problem table::

    python benchmarks/bench_robust.py --scenes balloons_ms,samson --crop 128 --threads 1 --no-estimators \
        --presets gaussian-x8,snr25-x8,poisson30-x8,kolmogorov-x8,area-x8,misregistered-x8,bands8-x8,hard-x4 \
        --methods mossfuse-fit,cnmf,scalmu,bicubic --out benchmarks/results/robust_mossfuse
"""

from __future__ import annotations

import argparse
import json
import math
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from fusion_explorer import degradations as dz
from fusion_explorer import estimate as es
from fusion_explorer.bench import cave_scenes, center_crop, load_scene, remote_crops
from fusion_explorer.methods import fuse
from fusion_explorer.methods.scalmu.model import LEARNED_PARTS
from fusion_explorer.metrics import evaluate

RESULTS = Path(__file__).resolve().parent / "results"
#: label -> (registered method, options)
METHODS = {
    "bicubic": ("bicubic", {}),
    "cnmf": ("cnmf", {}),
    "cnmf-guided": ("cnmf", {"consistency": "guided"}),
    "scalmu": ("scalmu", {}),
    "scalmu-plain": ("scalmu", {"learned": False}),
    # the per-part ablation: one learned part off, the others on
    **{f"scalmu-no-{part}": ("scalmu", {"ablate": part}) for part in LEARNED_PARTS},
    # the consistency layer's MSI residual not denoised (hand-built, not learned; on in every variant above)
    "scalmu-no-denoise": ("scalmu", {"denoise": False}),
    # the learned Wiener gains against hand-set ones: only the gains learned (the layers plain), and the plain
    # pipeline with the gains fixed at kappa (1: the textbook linear-MMSE gain for the estimated noise)
    "scalmu-wiener-only": ("scalmu", {"ablate": "preconditioners,hsi_weights"}),
    **{f"scalmu-plain-wiener{k:g}": ("scalmu", {"learned": False, "wiener": float(k)}) for k in (1, 100)},
    # the mean of the fused cubes from VCA seeds 0-3 (fuse(..., starts=4): the start's luck averaged out)
    "scalmu-starts4": ("scalmu", {"starts": 4}),
    "cnmf-guided-starts4": ("cnmf", {"consistency": "guided", "starts": 4}),
}
#: MossFuse's self-supervised fit per problem (issue 20: "report MossFuse's self-supervised fit on the crops
#: where it is affordable"): from scratch, this many Adam steps (``--mossfuse-steps``) at this network width.
#: Timed on one thread of this 2-core CPU (load 2.4-2.9): 0.86 s/step on a 128x128x31 CAVE crop, 0.27 s/step
#: on Samson 64x64x156; 120 steps took 103-153 s per balloons 128x128 problem and 35-46 s per Samson problem
#: at load 4-5.6 (benchmarks/results/robust_mossfuse.md)
MOSSFUSE_FIT_STEPS = 120
MOSSFUSE_FIT_DIM = 24
METHODS["mossfuse-fit"] = ("mossfuse", {"fit": True, "steps": MOSSFUSE_FIT_STEPS, "dim": MOSSFUSE_FIT_DIM})
#: what runs without --methods (the ablation variants are named explicitly)
DEFAULT_METHODS = ("bicubic", "cnmf", "cnmf-guided", "scalmu", "scalmu-plain")
QUICK_PRESETS = ("gaussian-x8", "kolmogorov-x8", "area-x8", "misregistered-x8", "poisson30-x8", "bands8-x8",
                 "blind-srf-x8", "hard-x4")


def axes(case: dz.DegradationCase) -> dict[str, str]:
    """The row each case falls in, per axis table."""
    snr = [s for s in (case.snr_lr_db, case.snr_msi_db) if s is not None]
    if not snr:
        noise = "none"
    else:
        worst = min(snr)
        band = "25-30 dB" if worst < 30 else "30-35 dB" if worst < 35 else "35-40 dB"
        noise = f"{band} {case.noise}"
    pos = case.sampling_position
    offset = "integer" if pos == int(pos) else "half-pixel" if (pos * 2) == int(pos * 2) else "fractional"
    if case.msi_shift != (0.0, 0.0):
        offset += " + MSI misregistered"
    psf = case.psf + (" (elliptical)" if case.ellipticity < 1 else "")
    psf += f", {'width' if case.psf == 'box' else 'FWHM'}/ratio {case.psf_fwhm / case.ratio:.2f}"
    return {
        "PSF family": psf,
        "border": case.border,
        "offset": offset,
        "noise": noise,
        "MSI SRF": case.srf,
        "SRF known": str(case.srf_known),
        "ratio": f"x{case.ratio}",
    }


#: the remote crops' short names (fusion_explorer.scenes.remote_crops)
REMOTE = ("paviaU", "samson", "aviris", "jasper", "muufl")


def load_scenes(spec: str, crop: int, data_dir: str | None) -> dict:
    """``{name: cube}``: CAVE scenes (central ``crop`` crops) and the remote crops of ``fusion_explorer.bench``."""
    out = {}
    cave = cave_scenes(data_dir)
    wanted = spec.split(",")
    if "all" in wanted or "cave" in wanted:
        chosen = cave
    else:
        chosen = [p for p in cave if p.name in wanted or p.name.removesuffix("_ms") in wanted]
    for path in chosen:
        cube = center_crop(load_scene(path), crop, 32)
        out[f"{path.name} {cube.sizes['y']}x{cube.sizes['x']}"] = cube
    if "all" in wanted or "remote" in wanted or any(w in REMOTE for w in wanted):
        for name, cube in remote_crops(data_dir).items():
            if "all" in wanted or "remote" in wanted or name.split()[0] in wanted:
                out[name] = cube
    if not out:
        raise SystemExit(f"no scenes match {spec!r}")
    return out


def estimator_record(d: dz.Degraded) -> dict:
    """The estimators on the problem, against the true responses."""
    rec: dict = {}
    start = time.perf_counter()
    try:
        est = es.estimate_degradation(d.problem)
    except Exception as exc:  # a refusal is a result: say which
        rec["error"] = f"{type(exc).__name__}: {exc}"
        return rec
    p = est.psf
    true = d.relation_kernel(p.kernel.shape[0], p.base_offset)
    tm = dz.kernel_moments(true)
    rec.update(
        seconds=round(time.perf_counter() - start, 2),
        position_true=list(d.relative_position),
        position_est=[round(v, 3) for v in p.position],
        position_error=round(float(np.hypot(*np.subtract(p.position, d.relative_position))), 3),
        fwhm_true=round(tm["fwhm"], 3),
        fwhm_est=round(p.fwhm, 3),
        ellipticity_true=round(tm["fwhm_minor"] / tm["fwhm_major"], 3),
        ellipticity_est=round(p.fwhm_minor / p.fwhm_major, 3),
        kernel_l1=round(float(np.abs(true - p.kernel).sum()), 3),
        misfit=round(p.misfit, 4),
        srf_estimated=est.srf_estimated,
        srf_l1=round(float(np.abs(est.srf - d.srf.matrix).sum() / np.abs(d.srf.matrix).sum()), 3),
    )
    for which, e, t, img in (("lr", est.noise_lr, d.noise_lr, d.problem.lr_hsi), ("msi", est.noise_msi, d.noise_msi,
                                                                                  d.problem.hr_msi)):
        if t.max() > 0:
            ratio = e / t
            rec[f"noise_{which}_ratio_median"] = round(float(np.median(ratio)), 3)
            rec[f"noise_{which}_ratio_range"] = [round(float(ratio.min()), 3), round(float(ratio.max()), 3)]
        else:  # noise-free: the estimate relative to the band's RMS
            rms = np.sqrt((np.asarray(img.values, dtype=np.float64) ** 2).mean(axis=(1, 2)))
            rec[f"noise_{which}_over_rms_max"] = round(float(np.max(e / rms)), 5)
    return rec


def run(args) -> tuple[list[dict], Path]:
    scenes = load_scenes(args.scenes, args.crop, args.data_dir)
    if args.presets == "all":
        cases = list(dz.PRESETS.values())
    elif args.presets:
        cases = [dz.get_case(n) for n in args.presets.split(",")]
    else:
        cases = []
    cases += dz.sample_cases(args.sampled, args.seed, ratios=tuple(int(r) for r in args.ratios.split(",")))
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    out = Path(args.out)
    records: list[dict] = []
    merged = merge_records(args.merge)
    merged_keys = {(r["scene"], r["case"], r.get("method", r["kind"])) for r in merged}
    for scene, truth in scenes.items():
        for case in cases:
            base = {"scene": scene, "case": case.name, "case_json": case.to_dict(), "axes": axes(case)}
            records += [r for r in merged if (r["scene"], r["case"]) == (scene, case.name)]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # clipped negatives under noise, SRF bands dropped
                    d = dz.realise(truth, case)
            except Exception as exc:
                records.append({**base, "kind": "skipped", "error": f"{type(exc).__name__}: {exc}"})
                print(f"{scene} / {case.name}: skipped ({exc})", flush=True)
                continue
            base["clipped"] = {k: d.problem.attrs.get(k, 0) for k in ("negative_clipped_lr_hsi",
                                                                      "negative_clipped_hr_msi")}
            if args.estimators and (scene, case.name, "estimate") not in merged_keys:
                rec = estimator_record(d)
                records.append({**base, "kind": "estimate", **rec})
                print(f"{scene} / {case.name}: estimate {rec}", flush=True)
            for label in methods:
                if (scene, case.name, label) in merged_keys:
                    continue
                name, options = METHODS[label]
                rec = {**base, "kind": "method", "method": label}
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        result = fuse(d.problem, name, device=args.device, seed=0, **options)
                    scores = evaluate(d.truth, result.fused, case.ratio, metrics=("psnr", "sam", "ergas"))
                    rec.update({k: round(float(v), 4) for k, v in scores.items()}, seconds=round(result.seconds, 2))
                    if name == "mossfuse":  # which fit: options and how many steps ran (seconds include the fit)
                        rec.update(options=dict(options), steps_run=result.extras.get("steps_run"))
                except Exception as exc:
                    rec["error"] = f"{type(exc).__name__}: {exc}"
                    if args.debug:
                        traceback.print_exc()
                records.append(rec)
                shown = rec.get("error") or f"{rec['psnr']:.2f} dB / {rec['sam']:.2f} deg, {rec['seconds']:.1f} s"
                print(f"{scene} / {case.name}: {label} {shown}", flush=True)
            write(records, out, args)
    write(records, out, args)
    return records, out


def merge_records(paths: list[str] | None) -> list[dict]:
    """Method and estimator records of earlier runs (``--merge``; the first file that has a scene, case and
    method wins): the same scene and case give the same problem (cases are seeded), so a run only computes
    what they lack: a new method, or the methods on new scenes."""
    out, seen = [], set()
    for path in paths or []:
        for r in json.loads(Path(path).read_text())["records"]:
            key = (r.get("scene"), r.get("case"), r.get("method", r["kind"]))
            if r["kind"] in ("method", "estimate") and key not in seen:
                seen.add(key)
                out.append({**r, "merged_from": r.get("merged_from", str(path))})
    return out


def add_checkpoints(specs: list[str] | None) -> list[str]:
    """``LABEL=PATH`` -> methods ``LABEL`` (scalmu with that checkpoint), ``LABEL-plain`` (its learned parts
    off) and ``LABEL-no-PART`` (one learned part off, :data:`LEARNED_PARTS`)."""
    labels = []
    for spec in specs or []:
        label, _, path = spec.partition("=")
        if not label or not path:
            raise SystemExit(f"--checkpoint wants LABEL=PATH; got {spec!r}")
        METHODS[label] = ("scalmu", {"checkpoint": path})
        METHODS[f"{label}-plain"] = ("scalmu", {"checkpoint": path, "learned": False})
        labels += [label, f"{label}-plain"]
        for part in LEARNED_PARTS:
            METHODS[f"{label}-no-{part}"] = ("scalmu", {"checkpoint": path, "ablate": part})
            labels.append(f"{label}-no-{part}")
    return labels


def scored_runs(records: list[dict]) -> dict[tuple[str, str, str], dict]:
    """The method records that have scores, by ``(scene, case, method)``."""
    return {(r["scene"], r["case"], r["method"]): r for r in records if r["kind"] == "method" and "psnr" in r}


def against(records: list[dict], methods: list[str], reference: str = "cnmf") -> list[str]:
    """Markdown lines: each method's per-problem PSNR difference to ``reference`` (mean, worst, and how
    many problems lie more than 0.3 dB below it: issue 20's "no case more than 0.3 dB below cnmf")."""
    runs = scored_runs(records)
    keys = {(s, c) for s, c, m in runs if m == reference}
    lines = [f"### against {reference}, problem by problem", "",
             "| method | n | mean ΔPSNR dB | worst ΔPSNR dB (problem) | problems > 0.3 dB below | mean ΔSAM ° |",
             "|---|---|---|---|---|---|"]
    for m in methods:
        if m == reference:
            continue
        pairs = [(k, runs[(*k, m)]["psnr"] - runs[(*k, reference)]["psnr"],
                  runs[(*k, m)]["sam"] - runs[(*k, reference)]["sam"]) for k in sorted(keys) if (*k, m) in runs]
        if not pairs:
            continue
        worst = min(pairs, key=lambda t: t[1])
        lines.append(f"| {m} | {len(pairs)} | {np.mean([d for _, d, _ in pairs]):+.2f} | {worst[1]:+.2f} "
                     f"({worst[0][0]} / {worst[0][1]}) | {sum(d < -0.3 for _, d, _ in pairs)} | "
                     f"{np.mean([a for _, _, a in pairs]):+.2f} |")
    return lines + [""]


#: the axes of the per-part ablation (issue 20: noise, PSF family, offset, band count), with the key of
#: each case's row (the PSF family without its width)
ABLATION_AXES = {"noise": lambda v: v, "PSF family": lambda v: v.split(",")[0], "offset": lambda v: v,
                 "MSI SRF": lambda v: v}


def ablation(records: list[dict], methods: list[str]) -> list[str]:
    """Markdown: for each scalmu label ``L`` run with its ``L-no-PART`` variants, what each learned part
    brings per axis row: mean PSNR of ``L`` minus that of ``L`` with the part off (and minus ``L-plain``,
    all parts off), over the problems where all of them ran."""
    runs = scored_runs(records)
    lines = []
    for base in methods:
        variants = [f"{base}-no-{p}" for p in (*LEARNED_PARTS, "denoise") if f"{base}-no-{p}" in methods]
        if not variants:
            continue
        variants += [f"{base}-plain"] if f"{base}-plain" in methods else []
        keys = sorted({(s, c) for s, c, m in runs if m == base and all((s, c, v) in runs for v in variants)})
        if not keys:
            continue
        heads = [v.removeprefix(f"{base}-").replace("no-", "") + (" (all)" if v.endswith("-plain") else "")
                 for v in variants]
        lines += [f"### what each learned part of {base} brings", "",
                  f"Mean PSNR (dB) of {base} minus the same network with one learned part off (the others on); "
                  "'plain (all)': every part off; 'denoise': the hand-built denoising of the MSI residual off "
                  "(it is on in every other variant, plain included). Positive: the part helps. Over the problems "
                  "where every variant ran.", "", "| axis | row | n | " + " | ".join(heads) + " |",
                  "|---|---|---|" + "---|" * len(heads)]
        rows: dict[tuple[str, str], list] = {("all", "all"): keys}
        for axis, key in ABLATION_AXES.items():
            for k in keys:
                rows.setdefault((axis, key(runs[(*k, base)]["axes"][axis])), []).append(k)
        for (axis, row), group in rows.items():
            cells = [f"{np.mean([runs[(*k, base)]['psnr'] - runs[(*k, v)]['psnr'] for k in group]):+.2f}"
                     for v in variants]
            lines.append(f"| {axis} | {row} | {len(group)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def hand_set_wiener(records: list[dict], methods: list[str]) -> list[str]:
    """Markdown: the learned Wiener gains (``scalmu-wiener-only``: the layers plain) against the plain pipeline
    with no Wiener term and with hand-set gains (``scalmu-plain-wienerK``), per noise row: mean PSNR / SAM and
    the problems more than 0.3 dB below cnmf, over the problems where all of them ran."""
    hand = [m for m in methods if m.startswith("scalmu-plain-wiener")]
    if "scalmu-wiener-only" not in methods or not hand or "cnmf" not in methods:
        return []
    compared = ["scalmu-plain", *hand, "scalmu-wiener-only"]
    runs = scored_runs(records)
    keys = sorted({(s, c) for s, c, m in runs if all((s, c, v) in runs for v in (*compared, "cnmf"))})
    if not keys:
        return []
    noisy = [k for k in keys if runs[(*k, "cnmf")]["axes"]["noise"] != "none"]
    rows: dict[str, list] = {"all": keys, "noisy (any)": noisy}
    for k in keys:
        rows.setdefault(runs[(*k, "cnmf")]["axes"]["noise"], []).append(k)
    lines = ["### learned Wiener gains against hand-set ones", "",
             "The consistency layer's Wiener gains learned (scalmu-wiener-only: every other learned part off) against "
             "the same plain pipeline with none (scalmu-plain, the exact projection) and with gains fixed by hand "
             "(scalmu-plain-wienerK: `fuse(..., 'scalmu', learned=False, wiener=K)`; K = 1 is the textbook "
             "linear-MMSE gain for the estimated noise). Cells: PSNR dB / SAM ° / problems more than 0.3 dB below "
             "cnmf.", "", "| noise | n | " + " | ".join(compared) + " |", "|---|---|" + "---|" * len(compared)]
    for row, group in rows.items():
        cells = [f"{np.mean([runs[(*k, m)]['psnr'] for k in group]):.2f} / "
                 f"{np.mean([runs[(*k, m)]['sam'] for k in group]):.2f} / "
                 f"{sum(runs[(*k, m)]['psnr'] < runs[(*k, 'cnmf')]['psnr'] - 0.3 for k in group)}" for m in compared]
        lines.append(f"| {row} | {len(group)} | " + " | ".join(cells) + " |")
    return lines + [""]


def set_mossfuse_steps(steps: int | None) -> None:
    """``--mossfuse-steps``: the Adam steps of method ``mossfuse-fit`` (default :data:`MOSSFUSE_FIT_STEPS`)."""
    if steps is None:
        return
    if steps < 1:
        raise SystemExit(f"--mossfuse-steps wants a positive number of steps; got {steps}")
    name, options = METHODS["mossfuse-fit"]
    METHODS["mossfuse-fit"] = (name, {**options, "steps": int(steps)})


def per_problem(records: list[dict], methods: list[str]) -> list[str]:
    """Markdown: PSNR / SAM of every method on every scene and case, then the means over the problems where
    all of them ran (written when ``mossfuse-fit`` ran: a small run, read problem by problem)."""
    runs = scored_runs(records)
    keys = list(dict.fromkeys((r["scene"], r["case"]) for r in records if r["kind"] == "method"))
    lines = ["### problem by problem", "", "Cells: PSNR dB / SAM °; '—': failed or not run.", "",
             "| scene | case | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for k in keys:
        cells = [f"{runs[(*k, m)]['psnr']:.2f} / {runs[(*k, m)]['sam']:.2f}" if (*k, m) in runs else "—"
                 for m in methods]
        lines.append(f"| {k[0]} | {k[1]} | " + " | ".join(cells) + " |")
    common = [k for k in keys if all((*k, m) in runs for m in methods)]
    if common:
        cells = [f"{np.mean([runs[(*k, m)]['psnr'] for k in common]):.2f} / "
                 f"{np.mean([runs[(*k, m)]['sam'] for k in common]):.2f}" for m in methods]
        lines.append(f"| **mean of {len(common)}** | | " + " | ".join(cells) + " |")
    fits = [r for r in records if r["kind"] == "method" and r.get("method") == "mossfuse-fit" and "psnr" in r]
    if fits:
        secs = [r["seconds"] for r in fits]
        steps = sorted({r["options"]["steps"] for r in fits})
        lines += ["", f"mossfuse-fit: fitted from scratch on each problem, options {fits[0]['options']} "
                  f"(steps {steps}); {np.mean(secs):.1f} s per fit on average ({min(secs):.1f}–{max(secs):.1f} s)."]
    return lines + [""]


def _fmt(v: float) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.2f}"


def tables(records: list[dict], methods: list[str]) -> str:
    """Markdown: one table per axis (mean PSNR / SAM per method over the cases of each row), then the
    estimators' table (one row per scene and case)."""
    runs = [r for r in records if r["kind"] == "method" and "psnr" in r]
    lines = []
    if runs:
        n_cases = len({(r["scene"], r["case"]) for r in runs})
        lines.append(f"Means over {n_cases} scene x case problems. Cells: PSNR dB / SAM °; (n) problems per row.\n")
        for axis in runs[0]["axes"]:
            values = sorted({r["axes"][axis] for r in runs})
            lines += [f"### {axis}", "", "| " + axis + " | n | " + " | ".join(methods) + " |",
                      "|---|---|" + "---|" * len(methods)]
            for value in values:
                cells = []
                group = [r for r in runs if r["axes"][axis] == value]
                for m in methods:
                    g = [r for r in group if r["method"] == m]
                    if g:
                        cells.append(f"{np.mean([r['psnr'] for r in g]):.2f} / {np.mean([r['sam'] for r in g]):.2f}")
                    else:
                        cells.append("—")
                n = len({(r["scene"], r["case"]) for r in group})
                lines.append(f"| {value} | {n} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["### all cases", "", "| method | PSNR dB | SAM ° | ERGAS | seconds | failures |",
                  "|---|---|---|---|---|---|"]
        for m in methods:
            g = [r for r in runs if r["method"] == m]
            fails = sum(1 for r in records if r["kind"] == "method" and r.get("method") == m and "error" in r)
            if g:
                lines.append(f"| {m} | {np.mean([r['psnr'] for r in g]):.2f} | {np.mean([r['sam'] for r in g]):.2f} | "
                             f"{np.mean([r['ergas'] for r in g]):.2f} | {np.mean([r['seconds'] for r in g]):.1f} | "
                             f"{fails} |")
        lines.append("")
        if "cnmf" in methods:
            lines += against(records, methods)
        lines += ablation(records, methods)
        lines += hand_set_wiener(records, methods)
        if "mossfuse-fit" in methods:
            lines += per_problem(records, methods)
    ests = [r for r in records if r["kind"] == "estimate"]
    if ests:
        lines += ["### blind estimation: estimated against true", "",
                  "Position: where LR pixel 0 samples on the MSI grid (HR px, y, x); FWHM: Gaussian-equivalent "
                  "(kernel second moments); L1: |k_est - k_true| summed (2 = disjoint); noise: estimated / true "
                  "sigma per band, median [min–max] (noise-free images: max estimate / band RMS); SRF L1: relative, "
                  "when estimated.", "",
                  "| scene | case | position true → est | FWHM true → est | ellipticity true → est | kernel L1 | "
                  "LR noise | MSI noise | SRF L1 | s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in ests:
            if "error" in r:
                lines.append(f"| {r['scene']} | {r['case']} | refused: {r['error']} | | | | | | | |")
                continue

            def noise(which: str, r: dict = r) -> str:
                if f"noise_{which}_ratio_median" in r:
                    lo, hi = r[f"noise_{which}_ratio_range"]
                    return f"{r[f'noise_{which}_ratio_median']:.2f} [{lo:.2f}–{hi:.2f}]"
                return f"none: {r[f'noise_{which}_over_rms_max']:.4f}"

            pt, pe = r["position_true"], r["position_est"]
            lines.append(
                f"| {r['scene']} | {r['case']} | ({pt[0]:.2f}, {pt[1]:.2f}) → ({pe[0]:.2f}, {pe[1]:.2f}) | "
                f"{r['fwhm_true']:.2f} → {r['fwhm_est']:.2f} | "
                f"{r['ellipticity_true']:.2f} → {r['ellipticity_est']:.2f} | "
                f"{r['kernel_l1']:.2f} | {noise('lr')} | {noise('msi')} | "
                f"{_fmt(r['srf_l1']) if r['srf_estimated'] else 'given'} | {r['seconds']:.1f} |"
            )
        ok = [r for r in ests if "error" not in r]
        if ok:
            errors = [r["position_error"] for r in ok]
            lines += ["", f"Over {len(ok)} problems ({len(ests) - len(ok)} refused): median position error "
                      f"{np.median(errors):.3f} px (max {max(errors):.3f}); "
                      f"median |FWHM error| {np.median([abs(r['fwhm_est'] / r['fwhm_true'] - 1) for r in ok]):.1%}; "
                      f"median kernel L1 {np.median([r['kernel_l1'] for r in ok]):.2f}."]
    return "\n".join(lines) + "\n"


def write(records: list[dict], out: Path, args) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": args.command, "torch_threads": torch.get_num_threads(), "device": args.device,
            "crop": args.crop, "note": "methods never see the truth, the PSF or the offset; the SRF only when "
            "the case's srf_known"}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    methods = list(dict.fromkeys(r["method"] for r in records if r["kind"] == "method")) or \
        [m for m in args.methods.split(",") if m]
    header = (f"# Degradation zoo (`{args.command}`)\n\n{torch.get_num_threads()} torch threads, device "
              f"{args.device}, crops of {args.crop} px (remote crops as `fusion_explorer.bench.remote_crops`).\n\n")
    out.with_suffix(".md").write_text(header + tables(records, methods))


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128x128 crop of balloons + Samson, 8 presets")
    parser.add_argument("--scenes", default="balloons_ms,samson",
                        help="CAVE scene names, 'cave', 'remote', a remote crop's short name (" + ", ".join(REMOTE) +
                             ") or 'all' (comma-separated)")
    parser.add_argument("--crop", type=int, default=256, help="central crop of the CAVE scenes (px)")
    parser.add_argument("--presets", default=",".join(QUICK_PRESETS), help="comma-separated preset names, or 'all'")
    parser.add_argument("--sampled", type=int, default=0, help="also this many cases from sample_cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratios", default="4,8,16,32", help="ratios sampled cases draw from")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, of {', '.join(METHODS)} (and the --checkpoint labels)")
    parser.add_argument("--no-estimators", dest="estimators", action="store_false")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="output path without suffix (default results/robust[_quick])")
    parser.add_argument("--checkpoint", action="append", metavar="LABEL=PATH",
                        help="also scalmu with this checkpoint (method LABEL) and its learned parts off (LABEL-plain); "
                             "repeatable")
    parser.add_argument("--merge", action="append", metavar="JSON",
                        help="take the records of this earlier results file (same cases; repeatable) and run only what "
                             "they lack")
    parser.add_argument("--mossfuse-steps", type=int, default=None,
                        help=f"Adam steps of method mossfuse-fit (default {MOSSFUSE_FIT_STEPS})")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    set_mossfuse_steps(args.mossfuse_steps)
    add_checkpoints(args.checkpoint)  # name them in --methods (e.g. --methods z1,z1-plain --merge old.json)
    args.command = "python benchmarks/bench_robust.py " + " ".join(sys.argv[1:])
    if args.quick:
        args.crop = 128
    if args.out is None:
        args.out = str(RESULTS / ("robust_quick" if args.quick else "robust"))
    if args.threads:
        torch.set_num_threads(args.threads)
    records, out = run(args)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
