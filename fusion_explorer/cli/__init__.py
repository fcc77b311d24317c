"""``fusion-explorer``: inspect files, simulate sensor pairs, fuse, score and benchmark.

Every failure exits with code 2 and one line saying what is wrong (Ctrl-C: code 130, one line);
an unexpected error says so in that line, and ``FUSION_EXPLORER_DEBUG=1`` shows its traceback.
Outputs are written beside their target and renamed onto it (:mod:`fusion_explorer.io.atomic`):
an existing output is replaced only with ``--overwrite``, never an input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from ..errors import FusionExplorerError, ProblemError, WriteError
from ..memory import keep_freed_memory
from .common import _check_outputs, _load_truth, _number, _pair, _parse_options, _progress, psf_from_args
from .tiled import fuse_tiled_command
from .zoo import simulate_zoo, zoo_case


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def cmd_info(args: argparse.Namespace) -> int:
    from ..io import describe

    info = describe(args.path)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], float):
            value = " – ".join(f"{v:.1f}" for v in value) + " nm"
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ..cube import check_ratio
    from ..io import write_netcdf
    from ..io.atomic import atomic_target, write_bytes
    from ..physics import get_protocol, make_protocol
    from ..problem import simulate
    from ..srf import srf_from_name_or_path

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise WriteError(out, "is a file; --out names the folder for lr_hsi.nc, hr_msi.nc and srf.nc")
    case = zoo_case(args)
    if case is not None:
        return simulate_zoo(args, case, out)
    names = ["lr_hsi.nc", "hr_msi.nc", "srf.nc"] + (["hr_hsi.nc"] if args.save_truth else [])
    _check_outputs([out / n for n in names], {"scene": args.scene, "--srf": args.srf}, args.overwrite)
    if args.ratio:
        proto = make_protocol(args.ratio, 2.0 if args.sigma is None else args.sigma, snr_db=args.snr)
    else:
        proto = get_protocol(args.protocol)
        if args.snr is not None:
            proto = proto.with_(snr_db=args.snr)
    truth = _load_truth(args)
    size = (truth.sizes["y"], truth.sizes["x"])
    check_ratio(size, proto.ratio, what="scene")
    if proto.kernel_size > max(size):
        raise FusionExplorerError(
            f"the PSF of {proto.name} ({proto.kernel_size}x{proto.kernel_size} pixels) is larger than the "
            f"{size[0]}x{size[1]} scene; use a smaller --sigma or a larger --crop"
        )
    srf = srf_from_name_or_path(args.srf, truth) if args.srf else None
    problem = simulate(truth, proto, srf=srf, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:  # all files or none: each is renamed into place only when all are written
        tmp = {n: stack.enter_context(atomic_target(out / n, overwrite=args.overwrite)) for n in names}
        write_netcdf(problem.lr_hsi, tmp["lr_hsi.nc"])
        write_netcdf(problem.hr_msi, tmp["hr_msi.nc"])
        write_bytes(tmp["srf.nc"], problem.srf.to_dataarray().to_netcdf(engine="h5netcdf"))
        if args.save_truth:
            write_netcdf(truth, tmp["hr_hsi.nc"])
    print(
        f"{problem.name}: LR-HSI {problem.lr_hsi.shape}, HR-MSI {problem.hr_msi.shape}, SRF {problem.srf.name} "
        f"({problem.msi_bands}x{problem.hsi_bands}) -> {out}"
    )
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from ..io import open_cube, write_netcdf
    from ..methods import fuse
    from ..problem import FusionProblem
    from ..srf import srf_from_name_or_path

    inputs = {"--lr-hsi": args.lr_hsi, "--hr-msi": args.hr_msi, "--srf": args.srf, "--checkpoint": args.checkpoint}
    if args.tile is None and (args.scheduler is not None or args.workers is not None):
        raise FusionExplorerError("--scheduler and --workers need --tile N (tiled fusion)")
    if args.tile is not None:
        return fuse_tiled_command(args, inputs)
    _check_outputs([Path(args.out)], inputs, args.overwrite)
    lr = open_cube(args.lr_hsi)
    msi = open_cube(args.hr_msi)
    srf = srf_from_name_or_path(args.srf, lr) if args.srf else None
    psf, offset = psf_from_args(args, msi)
    problem = FusionProblem(lr, msi, srf=srf, ratio=args.ratio, psf=psf, offset=offset)
    options = _parse_options(args.option)
    if args.checkpoint:
        options["checkpoint"] = args.checkpoint
    bar = _progress(args.method) if not args.quiet else None
    try:
        result = fuse(problem, args.method, device=args.device, progress=bar, seed=args.seed, **options)
    finally:
        if bar is not None:
            bar.close()
    write_netcdf(result.fused, args.out, overwrite=args.overwrite)
    print(f"{args.method}: {result.fused.shape} in {result.seconds:.2f} s on {result.device} -> {args.out}")
    return 0


def score_ratio(ratio: float | None, estimate, path: str) -> float:
    """ERGAS's ratio: ``ratio`` when given, else the one the estimate records (``simulate`` writes it on the
    LR-HSI and ``fuse`` carries the LR-HSI's attributes over)."""
    if ratio is not None:
        return ratio
    recorded = estimate.attrs.get("ratio")
    try:
        value = float(recorded)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        why = "records none" if recorded is None else f"records {recorded!r}, not a ratio"
        raise ProblemError(f"give --ratio (the HR/LR size ratio, for ERGAS): {path} {why}")
    return value


def cmd_score(args: argparse.Namespace) -> int:
    from ..io import open_cube
    from ..metrics import evaluate
    from ..problem import FUSED_KIND

    truth, est = open_cube(args.truth), open_cube(args.estimate)
    if truth.attrs.get("kind") == FUSED_KIND and est.attrs.get("kind") != FUSED_KIND:
        raise ProblemError(f"{args.truth} is a fused cube (method {truth.attrs.get('method', '?')}) and "
                           f"{args.estimate} is not: the truth comes first (score TRUTH ESTIMATE)")
    scores = evaluate(truth, est, score_ratio(args.ratio, est, args.estimate))
    print(
        json.dumps({k: round(v, 6) for k, v in scores.items()})
        if args.json
        else "  ".join(f"{k.upper()} {v:.4f}" for k, v in scores.items())
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import cave_scenes, format_table, run_benchmark, write_results

    scenes = args.scenes or cave_scenes(args.data_dir)
    rows = run_benchmark(
        args.methods.split(","), scenes, args.protocols.split(","), crop=args.crop, device=args.device, seed=args.seed
    )
    print(format_table(rows))
    if args.out:
        print(f"results -> {write_results(rows, args.out)}")
    return 0


# ---- train (learned methods) ---------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from ..methods.scalmu.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: getattr(args, k) for k in ("epochs", "layers", "train_batches", "val_batches", "batch_size",
                                               "size", "init_iterations", "lr", "seed", "max_log_exponent", "data",
                                               "spectral_variability", "large_every", "max_endmembers")
                 if getattr(args, k) is not None}
    if args.noise_aware is not None:
        overrides["noise_aware"] = args.noise_aware
    for flag in ("smooth_gate", "fixed_steps", "abundance_prior", "prior_ratio"):  # store_true: on when given
        if getattr(args, flag):
            overrides[flag] = True
    cfg = TrainConfig(**overrides)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise WriteError(out, "is a file; --out names the folder for checkpoints and log.jsonl")
    previous = [n for n in _RUN_FILES if (out / n).exists()]
    if previous and not (args.resume or args.overwrite):
        raise WriteError(out, f"holds a previous run ({', '.join(previous)}); pass --resume to continue it or "
                              "--overwrite to start over")
    if args.overwrite:
        for name in previous:
            (out / name).unlink()
    summary = train(args.out, cfg, resume=args.resume, show=not args.quiet, log=lambda m: print(m, flush=True))
    print(f"{args.method}: {len(summary['history'])} epochs, best validation loss {summary['best_val_loss']:.4f}, "
          f"{summary['seconds']:.0f} s -> {Path(args.out) / 'scalmu.pt'}")
    return 0


#: what a training run writes into its --out folder (scalmu.train.train)
_RUN_FILES = ("last.pt", "best.pt", "scalmu.pt", "log.jsonl", "summary.json")


def _add_train_parser(sub) -> None:
    s = sub.add_parser("train", help="train a learned method on synthetic dead leaves (never real images)")
    s.add_argument("method", choices=["scalmu"])
    s.add_argument("--out", required=True, help="folder for checkpoints (last.pt, best.pt, scalmu.pt) and log.jsonl")
    again = s.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    again.add_argument("--overwrite", action="store_true", help="start over in a folder that holds a previous run")
    s.add_argument("--epochs", type=_number(int))
    s.add_argument("--layers", type=_number(int), help="K, the number of unrolled layers")
    s.add_argument("--train-batches", type=_number(int),
                   help="training items (each: batch-size scenes, one sensor pair)")
    s.add_argument("--val-batches", type=_number(int), help="held-back validation items (another seed)")
    s.add_argument("--batch-size", type=_number(int))
    s.add_argument("--size", type=_number(int), help="scene size (pixels)")
    s.add_argument("--init-iterations", type=_number(int), help="CNMF start: inner iterations")
    s.add_argument("--lr", type=_number(float))
    s.add_argument("--seed", type=int)
    s.add_argument("--max-log-exponent", type=_number(float), help="learned MU exponents are at most exp(this)")
    s.add_argument("--data", choices=["protocol", "zoo"],
                   help="training items: 'protocol' (batch-size scenes through one Gaussian-PSF sensor pair, true "
                        "PSF and SRF given) or 'zoo' (one scene per item through a degradation-zoo case, PSF "
                        "estimated as for a user's problem)")
    s.add_argument("--spectral-variability", type=_number(float, positive=False),
                   help="zoo items: a scene's spectra drift smoothly over the image by up to this (log) amount, "
                        "drawn per item in [0, this] (0: every scene is exactly endmembers x abundances)")
    s.add_argument("--smooth-gate", action="store_true",
                   help="the consistency gate's outputs squashed without flat regions (the clamps saturate)")
    s.add_argument("--fixed-steps", action="store_true",
                   help="the consistency layer's steps fixed at 1 (its ridge and width at their defaults): "
                        "the gate learns only the Wiener gains (needs --noise-aware, the default)")
    s.add_argument("--abundance-prior", action="store_true",
                   help="every layer's abundance update also pulls H_m towards the colour-guided transfer of its "
                        "LR abundances, with learned weights (scalmu.model.AbundancePrior)")
    s.add_argument("--prior-ratio", action="store_true",
                   help="the abundance prior's weights also read the ratio (with --abundance-prior)")
    s.add_argument("--large-every", type=_number(int, positive=False),
                   help="zoo items: every N-th is a 128-px scene at x32 (0: none; 64-px items cannot hold x32)")
    s.add_argument("--max-endmembers", type=_number(int),
                   help="zoo items: materials per scene drawn in 3..N (default 10)")
    s.add_argument("--noise-aware", action=argparse.BooleanOptionalAction, default=None,
                   help="learned steps and HSI weights read the images' estimated noise")
    s.add_argument("--threads", type=_number(int), help="torch CPU threads")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_train)


# ---- end train -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = _Parser(prog="fusion-explorer", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("info", help="what a file or scene holds (dims, bands, wavelengths, values)")
    s.add_argument("path")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("simulate", help="make LR-HSI, HR-MSI and SRF of a scene under a protocol")
    s.add_argument("scene", help="a scene path (CAVE folder, .mat, ENVI, .nc, .zarr) or 'default'")
    s.add_argument("--protocol", default="mossfuse-cave-x32", help="mossfuse-cave-x32 | gaussian-x8")
    s.add_argument("--ratio", type=_number(int), help="custom protocol: ratio (with --sigma)")
    s.add_argument("--sigma", type=_number(float), help="custom protocol: PSF sigma in HR pixels (default 2)")
    s.add_argument("--srf", help="SRF: built-in name or table file (default: the protocol's); with a degradation "
                   "also 'gaussian:N'")
    s.add_argument("--snr", type=_number(float, positive=False), help="add Gaussian noise at this SNR (dB)")
    z = s.add_argument_group("degradation zoo (any of these instead of --protocol; see fusion_explorer.degradations)")
    z.add_argument("--degradation", metavar="PRESET|JSON|FILE.json",
                   help="a preset (default gaussian-x8 when only overrides are given), a JSON case or a .json file")
    z.add_argument("--psf", choices=("gaussian", "moffat", "airy", "kolmogorov", "box"), help="PSF family")
    z.add_argument("--psf-fwhm", type=_number(float), help="PSF full width at half maximum (HR pixels)")
    z.add_argument("--border", choices=("reflect", "zeros", "replicate", "circular"), help="how the blur extends")
    z.add_argument("--lr-offset", type=_number(float, positive=False),
                   help="HR coordinate of the first LR sample (fractional allowed; default the block centre)")
    z.add_argument("--msi-shift", type=_pair, metavar="DY,DX", help="MSI misregistration in HR pixels (|d| <= 1)")
    z.add_argument("--snr-lr", type=_number(float), help="noise on the LR-HSI (dB SNR)")
    z.add_argument("--snr-msi", type=_number(float), help="noise on the HR-MSI (dB SNR)")
    z.add_argument("--noise", choices=("white", "poisson"), help="noise kind (poisson: signal-dependent)")
    z.add_argument("--hide-srf", action="store_true", help="do not write srf.nc: methods must estimate it")
    s.add_argument("--crop", type=_number(int), help="central crop size (rounded to the ratio)")
    s.add_argument("--clip-negative", action="store_true", help="clip negative values of the scene to 0")
    s.add_argument("--save-truth", action="store_true", help="also write hr_hsi.nc (the ground truth)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="folder for lr_hsi.nc, hr_msi.nc, srf.nc (and hr_hsi.nc)")
    s.add_argument("--overwrite", action="store_true", help="replace those files if they exist")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("fuse", help="fuse an LR-HSI and an HR-MSI with a method")
    s.add_argument("--lr-hsi", required=True)
    s.add_argument("--hr-msi", required=True)
    s.add_argument("--srf", help="NetCDF (msi_band, band), table file or built-in name; omit to estimate")
    s.add_argument("--ratio", type=_number(int), help="default: inferred from the sizes")
    s.add_argument("--method", default="bicubic")
    s.add_argument("--protocol", help="take the known PSF and offset from this protocol")
    s.add_argument("--psf-sigma", type=_number(float), help="known Gaussian PSF sigma (HR pixels)")
    s.add_argument("--psf-size", type=_number(int), help="its size (default: covers +-3 sigma)")
    s.add_argument("--offset", type=int, help="sampling offset of the LR grid")
    s.add_argument("--device", default="auto")
    s.add_argument("--checkpoint")
    s.add_argument("--option", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--out", required=True)
    s.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (never an input)")
    s.add_argument("--tile", type=_number(int), help="fuse tile by tile (HR pixels a side, a multiple of the "
                   "ratio) on dask, lazily; --out must then be a .zarr store (methods: bicubic, cnmf)")
    s.add_argument("--scheduler", help="with --tile: 'threads' (default), 'processes' (a local cluster) or a "
                   "dask scheduler address (tcp://host:8786)")
    s.add_argument("--workers", type=_number(int), help="with --tile: threads or local processes (default: cores, "
                   "at most 4)")
    s.set_defaults(func=cmd_fuse)

    s = sub.add_parser("score", help="metrics of an estimate against the truth")
    s.add_argument("truth")
    s.add_argument("estimate")
    s.add_argument("--ratio", type=_number(float),
                   help="HR/LR size ratio for ERGAS (default: the one the estimate records, as fuse writes it)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("bench", help="methods x scenes x protocols table")
    s.add_argument("--methods", default="bicubic")
    s.add_argument("--scenes", nargs="*", help="scene paths or 'default' (default: CAVE scenes in the data dir)")
    s.add_argument("--data-dir")
    s.add_argument("--protocols", default="mossfuse-cave-x32,gaussian-x8")
    s.add_argument("--crop", type=_number(int))
    s.add_argument("--device", default="auto")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="write rows to .csv or .json")
    s.set_defaults(func=cmd_bench)

    _add_train_parser(sub)  # train: see the "train" block above
    return p


def _fail(command: str, message: object) -> int:
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"fusion-explorer {command}: error: {text}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit then fails the write (EFBIG) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"fusion-explorer {args.command}: warning: {message}\n"
    try:
        keep_freed_memory()  # big temporaries reuse freed memory instead of faulting in fresh pages
        return args.func(args)
    except KeyboardInterrupt:
        print(f"fusion-explorer {args.command}: interrupted", file=sys.stderr)
        return 130
    except FusionExplorerError as exc:
        return _fail(args.command, exc)
    except MemoryError as exc:
        return _fail(args.command, f"out of memory ({exc or 'an allocation failed'})")
    except OSError as exc:  # disk full, file too large, read-only file system, permission denied, ...
        return _fail(args.command, f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror or exc)
    except Exception as exc:
        if os.environ.get("FUSION_EXPLORER_DEBUG", "") not in ("", "0"):
            raise
        return _fail(args.command, f"unexpected {type(exc).__name__}: {exc} (a bug? run with FUSION_EXPLORER_DEBUG=1 "
                                   "for the traceback)")
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
