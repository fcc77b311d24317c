"""Shared by tests/test_tiled.py and tests/test_tiled_scalmu.py: a method run whole and tiled on CAVE
crops, and the checks that the tiled run is the whole-scene one."""

from __future__ import annotations

import numpy as np

import fusion_explorer as fe
from fusion_explorer.bench import center_crop
from fusion_explorer.metrics import evaluate
from fusion_explorer.physics import SensorPair
from fusion_explorer.problem import FusionProblem
from fusion_explorer.tiled import fuse_tiled


def whole_and_tiled(truth, method: str, cases: dict, srf=None, **options) -> dict:
    """``{protocol: {truth, problem, tile, whole, small, large}}``: for each ``protocol -> (crop, small tile,
    large tile)`` of ``cases`` (with ``srf`` instead of the protocol's when given), the whole-scene result and
    the tiled ones (small tiles on 2 threads, large tiles on 1)."""
    out = {}
    for proto, (crop, small, large) in cases.items():
        scene = center_crop(truth, crop, 1)
        problem = fe.simulate(scene, proto, srf=srf)
        out[proto] = {
            "truth": scene,
            "problem": problem,
            "tile": small,
            "whole": fe.fuse(problem, method, device="cpu", **options).fused,
            "small": fuse_tiled(problem, method, tile=small, workers=2, **options),
            "large": fuse_tiled(problem, method, tile=large, workers=1, **options),
        }
    return out


def assert_matches_whole(r: dict, floor_db: float) -> None:
    """Tiled within 0.05 dB of whole (which fuses: above ``floor_db``), the same iterates up to rounding."""
    ratio = r["problem"].ratio
    psnr_whole = evaluate(r["truth"], r["whole"], ratio)["psnr"]
    psnr_tiled = evaluate(r["truth"], r["small"], ratio)["psnr"]
    assert psnr_whole > floor_db  # a real fusion, not two equal failures
    assert abs(psnr_tiled - psnr_whole) < 0.05
    diff = r["small"].values - r["whole"].values
    assert np.sqrt(np.mean(diff**2)) < 1e-3 * np.sqrt(np.mean(r["whole"].values ** 2))


def assert_no_seams(r: dict) -> None:
    """The error on 2-pixel strips along the tile borders is not above the error elsewhere, and the tiled
    cube differs from the whole-scene one no more there than elsewhere."""
    tiled, whole, truth, tile = r["small"].values, r["whole"].values, r["truth"].values, r["tile"]
    err = np.abs(tiled - truth).mean(axis=0)
    diff = np.abs(tiled - whole).mean(axis=0)
    strip = np.zeros(err.shape, bool)
    for b in range(tile, err.shape[0], tile):
        strip[b - 2 : b + 2, :] = True
        strip[:, b - 2 : b + 2] = True
    assert err[strip].mean() <= 1.05 * err[~strip].mean()
    assert diff[strip].mean() <= 1.5 * diff[~strip].mean()


def model_psf_too_wide(problem, wider: float = 1.3) -> FusionProblem:
    """``problem``'s images with, as their known PSF, a Gaussian ``wider`` times as wide as the one that made
    them: the images disagree through the model, so the projection's step 3 (the HSI correction less what
    the MSI sees of it) acts."""
    kernel = SensorPair("model", problem.ratio, sigma=wider * float(problem.sensors.sigma),
                        offset=problem.offset).spatial().kernel.numpy()
    return FusionProblem(problem.lr_hsi, problem.hr_msi, srf=problem.srf, ratio=problem.ratio, psf=kernel,
                         offset=problem.offset)
