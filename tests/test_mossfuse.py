"""MossFuse: the published checkpoint through our converter, against the reference code's outputs.

Reference numbers come from ``../shared/reference`` (the npz of the reference code's outputs on a
real CAVE crop, and the per-scene table of ``README.md``); inputs of the full-scene test are made
here independently (Pillow, scipy.ndimage, the published ``resp.mat``), not by the package.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.io
import torch
from scipy import ndimage

from fusion_explorer.cube import make_cube
from fusion_explorer.errors import ProblemError
from fusion_explorer.methods import FusionProblem, fuse, trace_fused
from fusion_explorer.methods.mossfuse import MossFuseNet, convert_reference_state_dict, load_network
from fusion_explorer.methods.mossfuse.checkpoint import config_from_reference_state
from fusion_explorer.methods.mossfuse.fitting import check_memory
from fusion_explorer.physics import gaussian_kernel, make_protocol, simulate
from fusion_explorer.srf import get_srf

from ._cave import load_cave_yxb
from .conftest import require

WL = np.arange(400, 701, 10.0)
CKPT = "mossfuse/CAVE_32_model.pth"
NPZ = "mossfuse/mossfuse_ref_balloons_crop256.npz"

# ../shared/reference/README.md, MossFuse section
README_PSNR_X32 = {"balloons_ms": 41.642, "thread_spools_ms": 41.090, "fake_and_real_peppers_ms": 41.843}
README_CROP_PSNR = 41.976
README_PARAMS = {"total": 585_485, "msi_encoder": 185_800, "hsi_encoder": 158_172, "degradation": 97}
README_PARAMS["fusion_decoder"] = 105_084


@pytest.fixture(scope="module")
def checkpoint(reference_dir):
    return require(reference_dir / CKPT)


@pytest.fixture(scope="module")
def ref(reference_dir):
    return dict(np.load(require(reference_dir / NPZ)))


@pytest.fixture(scope="module")
def net(checkpoint):
    return load_network(checkpoint)


def psnr_clipped(truth_byx: np.ndarray, est_byx: np.ndarray) -> float:
    """Mean over bands of 10 log10(1 / MSE_b), estimate clipped to [0, 1] (README definition)."""
    est = np.clip(est_byx.astype(np.float64), 0, 1)
    mse = ((truth_byx.astype(np.float64) - est) ** 2).reshape(truth_byx.shape[0], -1).mean(axis=1)
    return float(np.mean(10 * np.log10(1 / mse)))


# --------------------------------------------------------------------------------------------
# checkpoint
# --------------------------------------------------------------------------------------------


def test_converter_accounts_for_every_tensor(checkpoint, reference_dir):
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)["Model_stage1"]
    listed = [line.split("\t")[0] for line in (reference_dir / "mossfuse/state_dict_keys.txt").read_text().splitlines()]
    listed = [k for k in listed if k and not k.startswith("#")]
    assert [k.removeprefix("module.") for k in raw] == listed
    assert len(raw) == 387
    converted = convert_reference_state_dict(raw)
    assert len(converted) == len(raw)
    model = MossFuseNet(config_from_reference_state(raw))
    model.load_state_dict(converted, strict=True)  # raises on any missing or unexpected key
    sd = model.state_dict()
    assert len(sd) == 387
    buffers = [k for k in sd if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(buffers) == 72  # 24 BatchNorms
    # every loaded tensor is the checkpoint's tensor, bit for bit
    by_value = {k: v for k, v in converted.items()}
    for new_name, value in by_value.items():
        assert torch.equal(sd[new_name], value)
    assert sum(p.numel() for p in model.parameters()) == README_PARAMS["total"]
    for name in ("msi_encoder", "hsi_encoder", "degradation", "fusion_decoder"):
        assert sum(p.numel() for p in getattr(model, name).parameters()) == README_PARAMS[name], name
    # README: the learned PSF parameter is about diag(0.4995, 0.4998)
    p = model.degradation.psf_precision.detach()
    assert abs(p[0, 0] - 0.4995) < 2e-4 and abs(p[1, 1] - 0.4998) < 2e-4


def test_converter_rejects_unknown_keys(checkpoint):
    raw = dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["Model_stage1"])
    raw["module.extra_head.weight"] = torch.zeros(1)
    with pytest.raises(ProblemError, match="extra_head"):
        convert_reference_state_dict(raw)


def test_loaded_network_is_in_eval_mode(net):
    assert not net.training
    assert all(not m.training for m in net.modules())
    cfg = net.config
    assert (cfg.dim, cfg.num_blocks, cfg.hsi_bands, cfg.msi_bands, cfg.ratio, cfg.psf_size) == (48, 1, 31, 3, 32, 31)


# --------------------------------------------------------------------------------------------
# numerical fidelity on the reference crop
# --------------------------------------------------------------------------------------------


def test_full_forward_matches_reference_outputs(net, ref):
    msi, lr = torch.from_numpy(ref["MSI"]), torch.from_numpy(ref["LR_HSI"])
    with torch.inference_mode():
        out = net(msi, lr)
    pairs = {
        "HR_HSI": out.fused,
        "RGB_D": out.msi_rec,
        "LR_D": out.lr_msi_rec,
        "lr_msi_fhsi": out.lr_msi_from_hsi,
        "lr_msi_fmsi": out.lr_msi_from_msi,
        "hsi_fhsi": out.fused_lr_hsi,
        "msi_fhsi": out.fused_msi,
    }
    errors = {k: float(np.abs(v.numpy() - ref[f"out_{k}"]).max()) for k, v in pairs.items()}
    print("max abs error vs reference:", {k: f"{v:.2e}" for k, v in errors.items()})
    assert all(e < 1e-4 for e in errors.values()), errors
    assert np.abs(out.srf.numpy() - ref["out_srf"]).max() < 1e-5
    assert np.abs(out.psf.numpy() - ref["out_psf"]).max() < 1e-5
    feats = {"RGB_E0": out.shared_msi, "RGB_E1": out.detail_msi, "HSI_E0": out.shared_hsi, "HSI_E1": out.detail_hsi}
    for name, t in feats.items():
        mean, std = ref[f"out_{name}_mean_std"]
        assert abs(t.mean().item() - mean) < 1e-4 and abs(t.std().item() - std) < 1e-4, name


def test_method_matches_reference_crop(checkpoint, ref, cave_dir):
    lr = make_cube(ref["LR_HSI"][0], WL)
    msi = make_cube(ref["MSI"][0])
    problem = FusionProblem(lr, msi, ratio=32, offset=15)
    res = fuse(problem, "mossfuse", device="cpu", checkpoint=str(checkpoint))
    fused = res.fused.values
    err = float(np.abs(fused - ref["out_HR_HSI"][0]).max())
    srf_err = float(np.abs(res.extras["srf_matrix"] - ref["out_srf"]).max())
    psf_err = float(np.abs(res.psf - ref["out_psf"]).max())
    print(f"method: HR_HSI max abs {err:.2e}, SRF {srf_err:.2e}, PSF {psf_err:.2e}, {res.seconds:.1f} s")
    assert err < 1e-4 and srf_err < 1e-5 and psf_err < 1e-5
    assert res.fused.dtype == np.float32 and res.fused.sizes["band"] == 31
    np.testing.assert_allclose(res.fused.coords["wavelength"].values, WL)
    # the estimated SRF is an SRF object on the cube's wavelengths
    assert res.srf.matrix.shape == (3, 31)
    # README: the estimated PSF matches the true 31x31 sigma-2 kernel to 6e-5, the SRF resp.mat to 3e-3
    i = np.arange(31) - 15
    g = np.exp(-(i**2) / 8.0)
    true_psf = np.outer(g, g) / np.outer(g, g).sum()
    assert np.abs(res.psf - true_psf).max() < 1e-4
    resp = scipy.io.loadmat(require(cave_dir.parent / "srf/mossfuse_resp_nikon_d700_3x31.mat"))["resp"]
    assert np.abs(res.extras["srf_matrix"] - resp).max() < 3.5e-3
    truth = load_cave_yxb(str(cave_dir / "balloons_ms"))[192:448, 192:448].transpose(2, 0, 1)
    score = psnr_clipped(truth, fused)
    print(f"crop PSNR {score:.3f} dB (reference code {README_CROP_PSNR})")
    assert abs(score - README_CROP_PSNR) < 0.01


def test_slow_path_equals_fast_path(checkpoint, ref):
    lr = make_cube(ref["LR_HSI"][0][:, :4, :4], WL)
    msi = make_cube(ref["MSI"][0][:, :128, :128])
    problem = FusionProblem(lr, msi, ratio=32, offset=15)
    a = fuse(problem, "mossfuse", device="cpu", checkpoint=str(checkpoint)).fused.values
    b = fuse(problem, "mossfuse", device="cpu", checkpoint=str(checkpoint), fast=False).fused.values
    assert np.abs(a - b).max() < 1e-5


def test_errors_without_weights_or_with_wrong_bands(checkpoint, ref):
    lr = make_cube(ref["LR_HSI"][0], WL)
    msi = make_cube(ref["MSI"][0])
    problem = FusionProblem(lr, msi)
    with pytest.raises(ProblemError, match="checkpoint"):
        fuse(problem, "mossfuse", device="cpu")
    with pytest.raises(ProblemError, match="not found"):
        fuse(problem, "mossfuse", device="cpu", checkpoint="/nonexistent/model.pth")
    six = FusionProblem(make_cube(ref["LR_HSI"][0][:30], WL[:30]), msi)
    with pytest.raises(ProblemError, match="31 HSI and 3 MSI bands"):
        fuse(six, "mossfuse", device="cpu", checkpoint=str(checkpoint))
    with pytest.raises(ProblemError, match="unknown mossfuse option"):
        fuse(problem, "mossfuse", device="cpu", checkpoint=str(checkpoint), stepz=3)


def test_memory_estimate_refuses_an_obvious_out_of_memory(net):
    with pytest.raises(ProblemError, match="GiB"):
        check_memory(net, (60_000, 60_000), torch.device("cpu"), training=True)
    assert check_memory(net, (64, 64), torch.device("cpu"), training=False) > 0


# --------------------------------------------------------------------------------------------
# whole CAVE scenes, protocol mossfuse-cave-x32, made independently of the package
# --------------------------------------------------------------------------------------------


def _independent_x32_inputs(x_yxb: np.ndarray, resp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """31x31 Gaussian sigma 2 (truncate 7.5 -> radius 15), mirror borders, [15::32]; MSI = X resp^T."""
    blurred = ndimage.gaussian_filter(x_yxb, sigma=2.0, mode="mirror", truncate=7.5, axes=(0, 1))
    lr = blurred[15::32, 15::32].transpose(2, 0, 1)
    msi = (x_yxb @ resp.T).transpose(2, 0, 1)
    return lr, msi


@pytest.mark.slow
@pytest.mark.parametrize("scene", sorted(README_PSNR_X32))
def test_full_scene_psnr_matches_reference_table(scene, checkpoint, cave_dir, srf_dir):
    x = load_cave_yxb(str(require(cave_dir / scene)))
    resp = scipy.io.loadmat(require(srf_dir / "mossfuse_resp_nikon_d700_3x31.mat"))["resp"].astype(np.float64)
    lr, msi = _independent_x32_inputs(x, resp)
    problem = FusionProblem(make_cube(lr, WL), make_cube(msi), ratio=32, offset=15)
    start = time.perf_counter()
    res = fuse(problem, "mossfuse", device="cpu", checkpoint=str(checkpoint))
    seconds = time.perf_counter() - start
    score = psnr_clipped(x.transpose(2, 0, 1), res.fused.values)
    print(f"{scene}: PSNR {score:.3f} dB (reference {README_PSNR_X32[scene]}), {seconds:.1f} s")
    assert abs(score - README_PSNR_X32[scene]) < 0.05


# --------------------------------------------------------------------------------------------
# self-supervised fitting
# --------------------------------------------------------------------------------------------


def _pavia_crop(remote_dir) -> tuple[np.ndarray, np.ndarray]:
    """ROSIS Pavia University, 48x48 crop, 103 bands scaled by the crop's maximum to [0, 1]."""
    img = scipy.io.loadmat(require(remote_dir / "paviaU_subimg_50x50x103.mat"))["paviaU_subimg"].astype(np.float64)
    wl = scipy.io.loadmat(require(remote_dir / "paviaU_band_centers_103.mat"))["paviaU_spec"].ravel()
    x = img[1:49, 1:49].transpose(2, 0, 1)
    return x / x.max(), wl.astype(np.float64)


def _spectral_angles(est: np.ndarray, true: np.ndarray) -> np.ndarray:
    cos = (est * true).sum(1) / (np.linalg.norm(est, axis=1) * np.linalg.norm(true, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_fit_from_scratch_beats_bicubic_on_a_real_remote_sensing_crop(remote_dir):
    """Pavia (ROSIS, 103 bands) at ratio 4, Sentinel-2A SRF, Gaussian PSF sigma 2 (13x13).

    Budget: 80 Adam steps, dim 16, lr 2e-3 (about 15-40 s on one CPU core).
    """
    x, wl = _pavia_crop(remote_dir)
    truth = make_cube(x, wl, attrs={"scene": "paviaU crop"})
    with pytest.warns(UserWarning):  # B8A, B9, ... lie outside 430-858 nm and are dropped
        srf = get_srf("sentinel-2a", wl)
    problem = simulate(truth, make_protocol(4), srf=srf)
    calls: list[int] = []
    steps = 80
    res = fuse(
        problem,
        "mossfuse",
        device="cpu",
        fit=True,
        steps=steps,
        lr=2e-3,
        dim=16,
        snapshot_every=20,
        patience=None,
        progress=lambda done, total, info: calls.append(done),
    )
    assert calls == list(range(1, steps + 1))
    assert [t["iteration"] for t in res.trace] == [0, 20, 40, 60, 80]
    for t in res.trace:
        assert set(t) >= {"iteration", "label", "fused", "objective"}
        assert trace_fused(t).shape == (103, 48, 48)
    assert res.trace[-1]["objective"] < 0.5 * res.trace[0]["objective"]

    # bicubic, computed here as the README defines it
    lr = torch.from_numpy(problem.lr_hsi.values)[None]
    bic = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)[0].numpy()
    p_bic, p_fit = psnr_clipped(x, bic), psnr_clipped(x, res.fused.values)
    start = psnr_clipped(x, res.trace[0]["fused"])
    print(f"PSNR: bicubic {p_bic:.2f} dB, MossFuse start {start:.2f} dB, fitted {p_fit:.2f} dB in {res.seconds:.1f} s")
    assert p_fit > p_bic + 0.5

    # the blind estimates, against the true responses
    true_psf = np.zeros((15, 15))
    true_psf[1:14, 1:14] = gaussian_kernel(13, 2.0).numpy()
    assert res.psf.shape == (15, 15) and abs(res.psf.sum() - 1) < 1e-5
    sigma0 = 4 / (2 * np.sqrt(2 * np.log(2)))  # the starting PSF: FWHM = ratio
    z = np.arange(15) - 7
    start_psf = np.exp(-(z[:, None] ** 2 + z[None, :] ** 2) / (2 * sigma0**2))
    start_psf /= start_psf.sum()
    err_psf, err_start = np.abs(res.psf - true_psf).max(), np.abs(start_psf - true_psf).max()
    print(f"PSF max abs error: estimated {err_psf:.2e}, at start {err_start:.2e}")
    assert err_psf < 0.5 * err_start
    est_srf = res.extras["srf_matrix"]
    angles = _spectral_angles(est_srf, problem.srf.matrix)
    flat = _spectral_angles(np.full_like(est_srf, 1 / est_srf.shape[1]), problem.srf.matrix)
    print("SRF spectral angle per MSI band (deg), estimate vs true:")
    for name, a, f in zip(problem.srf.band_names, angles, flat, strict=True):
        print(f"  {name}: {a:6.2f}  (flat start {f:6.2f})")
    assert est_srf.shape == (8, 103)
    assert np.mean(angles) < np.mean(flat)


def test_fit_from_checkpoint_saves_a_loadable_checkpoint(checkpoint, cave_dir, srf_dir, tmp_path):
    x = load_cave_yxb(str(require(cave_dir / "balloons_ms")))[192:256, 192:256]
    resp = scipy.io.loadmat(require(srf_dir / "mossfuse_resp_nikon_d700_3x31.mat"))["resp"].astype(np.float64)
    blurred = ndimage.gaussian_filter(x, sigma=2.0, mode="mirror", truncate=7.5, axes=(0, 1))
    lr = blurred[15::32, 15::32].transpose(2, 0, 1)
    msi = (x @ resp.T).transpose(2, 0, 1)
    problem = FusionProblem(make_cube(lr, WL), make_cube(msi), ratio=32, offset=15)
    out = tmp_path / "fitted.pth"
    res = fuse(problem, "mossfuse", device="cpu", checkpoint=str(checkpoint), fit=True, steps=2, save_to=str(out))
    assert res.params["lr"] == pytest.approx(9e-5) and res.extras["steps_run"] == 2
    reloaded = load_network(out)
    assert reloaded.config.dim == 48 and not reloaded.config.residual
    again = fuse(problem, "mossfuse", device="cpu", checkpoint=str(out))
    assert np.abs(again.fused.values - res.fused.values).max() < 1e-4


@pytest.mark.parametrize(("ratio", "size"), [(3, 45), (5, 40)])
def test_fit_runs_for_odd_ratios_and_other_band_counts(remote_dir, ratio, size):
    x, wl = _pavia_crop(remote_dir)
    truth = make_cube(x[:, :size, :size], wl)
    with pytest.warns(UserWarning):
        srf = get_srf("landsat-8", wl)
    problem = simulate(truth, make_protocol(ratio, 1.0), srf=srf)
    res = fuse(problem, "mossfuse", device="cpu", fit=True, steps=2, dim=8, snapshot_every=1)
    assert res.fused.shape == (103, size, size)
    assert [t["iteration"] for t in res.trace] == [0, 1, 2]
    assert res.psf.shape == (15, 15) and res.extras["srf_matrix"].shape == (problem.msi_bands, 103)
    assert np.isfinite(res.fused.values).all()
