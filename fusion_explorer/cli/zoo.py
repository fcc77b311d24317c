"""``simulate`` under a degradation of the zoo (:mod:`fusion_explorer.degradations`)."""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path

from ..errors import FusionExplorerError, ReadError
from .common import _check_outputs, _load_truth

#: ``simulate`` flags that describe a zoo degradation (``--degradation`` and its overrides), by case field
_ZOO_FLAGS = {"psf": "psf", "psf_fwhm": "psf_fwhm", "border": "border", "lr_offset": "lr_offset",
              "msi_shift": "msi_shift", "snr_lr": "snr_lr_db", "snr_msi": "snr_msi_db", "noise": "noise"}


def zoo_case(args: argparse.Namespace):
    """The degradation case ``simulate`` was asked for, or ``None`` for a named/custom protocol."""
    overrides = {field: getattr(args, flag) for flag, field in _ZOO_FLAGS.items() if getattr(args, flag) is not None}
    if args.hide_srf:
        overrides["srf_known"] = False
    if args.degradation is None and not overrides:
        return None
    from ..degradations import get_case

    if args.sigma is not None or args.snr is not None:
        raise FusionExplorerError("with a zoo degradation, give the PSF width as --psf-fwhm and the noise as "
                                  "--snr-lr / --snr-msi (not --sigma / --snr)")
    spec = args.degradation or "gaussian-x8"
    if spec.lower().endswith(".json"):
        path = Path(spec)
        if not path.is_file():
            raise ReadError(path, "no such degradation file")
        if path.stat().st_size > 2**20:
            raise ReadError(path, "a degradation case is a small JSON object; this file is over 1 MiB")
        spec = path.read_text(encoding="utf-8")
    case = get_case(spec)
    if args.ratio:
        overrides["ratio"] = args.ratio
        overrides.setdefault("lr_offset", None)  # a preset's pinned phase belongs to its ratio: block centre
    if "ratio" in overrides or "psf_fwhm" in overrides or "psf" in overrides:
        overrides["psf_size"] = None  # a preset's pinned kernel size belongs to its PSF: sized to the new one
    if args.srf:
        overrides["srf"] = args.srf
    if not overrides:
        return case.with_(seed=args.seed) if args.seed else case
    changed = ", ".join(f"{k}={v}" for k, v in overrides.items() if k not in ("psf_size",) and v is not None)
    return case.with_(name=f"{case.name} with {changed}", seed=args.seed, **overrides)


def simulate_zoo(args: argparse.Namespace, case, out: Path) -> int:
    """``simulate`` under a degradation of the zoo: the images a method sees; the SRF only when known;
    with ``--save-truth`` also the truth and ``degradation.json`` (the case, the true PSF and where the
    LR samples fall), which no method is given."""
    import numpy as np

    from ..degradations import realise
    from ..io import write_netcdf
    from ..io.atomic import atomic_target, write_bytes
    from ..scenes import crop_to_ratio

    names = ["lr_hsi.nc", "hr_msi.nc"] + (["srf.nc"] if case.srf_known else [])
    names += ["hr_hsi.nc", "degradation.json"] if args.save_truth else []
    _check_outputs([out / n for n in names], {"scene": args.scene}, args.overwrite)
    truth = crop_to_ratio(_load_truth(args), case.ratio)
    deg = realise(truth, case)
    problem = deg.problem
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        tmp = {n: stack.enter_context(atomic_target(out / n, overwrite=args.overwrite)) for n in names}
        write_netcdf(problem.lr_hsi, tmp["lr_hsi.nc"])
        write_netcdf(problem.hr_msi, tmp["hr_msi.nc"])
        if case.srf_known:
            write_bytes(tmp["srf.nc"], problem.srf.to_dataarray().to_netcdf(engine="h5netcdf"))
        if args.save_truth:
            write_netcdf(deg.truth, tmp["hr_hsi.nc"])
            record = {"case": case.to_dict(), "psf": np.asarray(deg.psf).tolist(), "offset": int(deg.offset),
                      "lr_position": float(deg.lr_position),
                      "relative_position": np.asarray(deg.relative_position).tolist()}
            write_bytes(tmp["degradation.json"], json.dumps(record, indent=1).encode())
    srf_note = f"SRF {case.srf} ({problem.msi_bands} bands)" + ("" if case.srf_known else ", not written (hidden)")
    print(f"{case.name}: LR-HSI {problem.lr_hsi.shape}, HR-MSI {problem.hr_msi.shape}, {srf_note} -> {out}")
    return 0
