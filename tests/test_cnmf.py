"""CNMF and the shared coupled multiplicative-update step, on real and reference data."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest
import scipy.io
import torch
import xarray as xr
from scipy.optimize import linear_sum_assignment

from fusion_explorer import metrics
from fusion_explorer.bench import center_crop, load_scene
from fusion_explorer.cube import make_cube
from fusion_explorer.errors import ProblemError
from fusion_explorer.io import open_cube
from fusion_explorer.methods import FusionProblem, fuse, trace_fused
from fusion_explorer.methods.unmixing import (
    CoupledData,
    CoupledState,
    abundance_terms,
    coupled_step,
    endmember_terms,
    estimate_srf,
    multiplicative,
    vca,
    virtual_dimensionality,
)
from fusion_explorer.physics import simulate
from fusion_explorer.srf import SRF, gaussian_srf, get_srf

CAVE_WL = np.arange(400.0, 701.0, 10.0)


def spectral_angles(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Angles (degrees) between matched columns of ``found`` (bands, p) and ``true`` (bands, k),
    matched by the Hungarian algorithm on the angle; one angle per true endmember."""
    f = found / np.linalg.norm(found, axis=0, keepdims=True)
    t = true / np.linalg.norm(true, axis=0, keepdims=True)
    angle = np.degrees(np.arccos(np.clip(t.T @ f, -1, 1)))  # (k, p)
    rows, cols = linear_sum_assignment(angle)
    return angle[rows, cols]


# ---------------------------------------------------------------- the shared step


def _random_nmf(seed=0, bands=20, p=4, n=300):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(1, bands, p, generator=g, dtype=torch.float64)
    h = torch.rand(1, p, n, generator=g, dtype=torch.float64)
    h = h / h.sum(1, keepdim=True)
    return w, h, w @ h


def test_multiplicative_updates_keep_nonnegativity_and_decrease_the_objective():
    """Lee–Seung: every MU step is non-increasing on ``||Y - WH||² + δ²||1ᵀH - 1||²``."""
    w_true, h_true, y = _random_nmf()
    g = torch.Generator().manual_seed(1)
    w = torch.rand(w_true.shape, generator=g, dtype=torch.float64)
    h = torch.rand(h_true.shape, generator=g, dtype=torch.float64)
    delta = 0.3

    def objective(w, h):
        return float((y - w @ h).square().sum() + delta**2 * (h.sum(1) - 1).square().sum())

    values = [objective(w, h)]
    for _ in range(200):
        num, den = abundance_terms(y, w, h, delta)
        h = multiplicative(h, num, den)
        num, den = endmember_terms(y, w, h)
        w = multiplicative(w, num, den)
        values.append(objective(w, h))
        assert (h >= 0).all() and (w >= 0).all()
    diffs = np.diff(values)
    assert (diffs <= 1e-9 * values[0]).all(), f"objective went up: {diffs.max()}"
    assert values[-1] < 0.01 * values[0]


@pytest.mark.parametrize("bands", [20, 3])  # more rows than endmembers, and the factored RGB path
def test_abundance_terms_equal_the_augmented_matrices(bands):
    """The sum-to-one weight equals appending a row δ to Y and W (Yokoya et al.)."""
    w, h, y = _random_nmf(seed=3, bands=bands, p=6)
    delta = 0.7
    num, den = abundance_terms(y, w, h, delta)
    y_aug = torch.cat([y, torch.full((1, 1, y.shape[-1]), delta, dtype=y.dtype)], 1)
    w_aug = torch.cat([w, torch.full((1, 1, w.shape[-1]), delta, dtype=w.dtype)], 1)
    torch.testing.assert_close(num, w_aug.transpose(1, 2) @ y_aug)
    torch.testing.assert_close(den, w_aug.transpose(1, 2) @ w_aug @ h)


def test_coupled_step_is_batched_and_matches_items_one_by_one():
    g = torch.Generator().manual_seed(0)
    bands, msi_bands, p, side, ratio = 12, 3, 4, 8, 2
    n_hr = side * side

    def degrade(h):
        b, c, _ = h.shape
        return torch.nn.functional.avg_pool2d(h.reshape(b, c, side, side), ratio).reshape(b, c, -1)

    def make(batch):
        return dict(
            lr=torch.rand(batch, bands, n_hr // ratio**2, generator=g),
            msi=torch.rand(batch, msi_bands, n_hr, generator=g),
            w=torch.rand(batch, bands, p, generator=g),
            h=torch.rand(batch, p, n_hr, generator=g),
        )

    x = make(3)
    srf = torch.rand(1, msi_bands, bands, generator=g)
    data = CoupledData(x["lr"], x["msi"], srf, degrade, delta=0.1)
    state = CoupledState(x["w"], degrade(x["h"]), x["h"], srf @ x["w"])
    out = coupled_step(state, data, update_lr_abundances=True, update_msi_side_endmembers=True)
    for i in range(3):
        d_i = CoupledData(x["lr"][i : i + 1], x["msi"][i : i + 1], srf, degrade, delta=0.1)
        s_i = CoupledState(*(t[i : i + 1] for t in (x["w"], degrade(x["h"]), x["h"], srf @ x["w"])))
        o_i = coupled_step(s_i, d_i, update_lr_abundances=True, update_msi_side_endmembers=True)
        torch.testing.assert_close(out.fused()[i : i + 1], o_i.fused())
    assert all((t >= 0).all() for t in (out.endmembers, out.abundances, out.abundances_lr, out.msi_endmembers))


def test_joint_abundance_update_decreases_the_joint_objective():
    """The MU of H_m on both images (SCALMU's layers) is a descent step of
    ||Y_m - W_m H||² + δ²||1ᵀH - 1ᵀ||² + λ ||Y_h - W S(H)||², with a real PSF + decimation operator."""
    from fusion_explorer.methods.unmixing import flat_adjoint, flat_degradation, joint_abundance_terms
    from fusion_explorer.physics import SpatialDegradation, gaussian_kernel

    g = torch.Generator().manual_seed(1)
    bands, msi_bands, p, side, ratio, delta, lam = 15, 3, 5, 16, 4, 0.3, 2.5
    spatial = SpatialDegradation(gaussian_kernel(7, 1.5), ratio, 1, "reflect")
    degrade = flat_degradation(spatial, (side, side))
    upsample = flat_adjoint(spatial, (side // ratio, side // ratio))
    w_true, h_true = torch.rand(1, bands, p, generator=g, dtype=torch.float64), torch.rand(
        1, p, side * side, generator=g, dtype=torch.float64)
    srf = torch.rand(1, msi_bands, bands, generator=g, dtype=torch.float64)
    data = CoupledData(w_true @ degrade(h_true), srf @ w_true @ h_true, srf, degrade, delta, upsample)
    assert data.balance == pytest.approx(side * side * msi_bands / ((side // ratio) ** 2 * bands))
    w = w_true * (1 + 0.3 * torch.rand(w_true.shape, generator=g, dtype=torch.float64))
    state = CoupledState(w, None, torch.rand(1, p, side * side, generator=g, dtype=torch.float64), srf @ w)

    def objective(h):
        hsi = (data.lr_hsi - w @ degrade(h)).square().sum()
        msi = (data.hr_msi - state.msi_endmembers @ h).square().sum() + delta**2 * (h.sum(1) - 1).square().sum()
        return float(msi + lam * hsi)

    costs = []
    for _ in range(30):
        state = replace(state, abundances_lr=degrade(state.abundances))
        costs.append(objective(state.abundances))
        num, den = joint_abundance_terms(state, data, lam)
        state = replace(state, abundances=multiplicative(state.abundances, num, den))
    assert all(b <= a * (1 + 1e-12) for a, b in pairwise(costs))
    assert costs[-1] < 0.5 * costs[0]
    assert (state.abundances >= 0).all()
    with pytest.raises(ProblemError, match="upsample"):
        joint_abundance_terms(state, replace(data, upsample=None), lam)


# ---------------------------------------------------------------- initialisers


def test_vca_finds_pure_pixels_and_is_deterministic(remote_dir):
    """Samson's ground-truth endmembers mixed with pure pixels present: VCA returns exactly them."""
    gt = scipy.io.loadmat(remote_dir / "samson_95x95x156.mat")["M"].astype(np.float64)  # (156, 3)
    rng = np.random.default_rng(0)
    abundances = rng.dirichlet(np.ones(3), size=500).T
    abundances[:, :3] = np.eye(3)
    y = gt @ abundances
    found, idx = vca(y, 3, seed=0)
    assert sorted(idx.tolist()) == [0, 1, 2]
    assert spectral_angles(found, gt).max() < 1e-6
    again, idx2 = vca(y, 3, seed=0)
    np.testing.assert_array_equal(idx, idx2)


def test_vca_on_noise_free_data_does_not_depend_on_rounding(remote_dir, monkeypatch):
    """Noise-free mixtures leave no power outside the signal subspace: VCA's SNR estimate divides by a
    rounding residue of either sign. It must read that as an infinite SNR (the projective branch) and
    not, for a negative residue, fall to the low-SNR branch: float32 and float64 copies of the same
    data, and the data streamed in blocks, pick the same pixels."""
    from fusion_explorer.methods.unmixing import estimate

    gt = scipy.io.loadmat(remote_dir / "samson_95x95x156.mat")["M"].astype(np.float64)
    rng = np.random.default_rng(3)
    y = (gt @ rng.dirichlet(np.ones(3) * 0.3, size=4000).T).astype(np.float32)
    svd_sizes = []
    real_svd = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda a, *k, **kw: svd_sizes.append(a.shape) or real_svd(a, *k, **kw))
    _, idx32 = vca(y, 3, seed=0)
    assert len(svd_sizes) == 2  # the projective branch's second SVD ran
    _, idx64 = vca(y.astype(np.float64), 3, seed=0)
    monkeypatch.setattr(estimate, "BLOCK_PIXELS", 512)
    _, blocked = vca(y, 3, seed=0)
    np.testing.assert_array_equal(idx32, idx64)
    np.testing.assert_array_equal(idx32, blocked)


def test_virtual_dimensionality_counts_sources():
    rng = np.random.default_rng(1)
    bands, n = 60, 3000
    for k in (3, 6):
        sources = np.abs(rng.standard_normal((bands, k))) + 0.1
        a = rng.dirichlet(np.ones(k), size=n).T
        y = sources @ a + 1e-3 * rng.standard_normal((bands, n))
        vd = virtual_dimensionality(y, 5e-2)
        assert k - 1 <= vd <= k + 1, (k, vd)


def test_srf_estimation_recovers_the_nikon_response(cave_dir):
    """NNLS on a real scene recovers the true SRF from the images alone (noise-free protocol)."""
    truth = center_crop(load_scene(cave_dir / "balloons_ms"), 128)
    problem = simulate(truth, "gaussian-x8")
    lr = problem.lr_hsi.values.reshape(31, -1)
    lr_msi = problem.spatial_operator()(torch.as_tensor(problem.hr_msi.values, dtype=torch.float64))
    r, offset = estimate_srf(lr, lr_msi.numpy().reshape(3, -1))
    true = get_srf("nikon-d700", CAVE_WL).matrix
    assert np.abs(r - true).max() < 2e-3 * true.max()
    assert np.abs(offset).max() < 1e-4


# ---------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def synthetic_reference(reference_dir):
    d = np.load(reference_dir / "cnmf" / "yokoya_cnmf_synthetic128.npz")
    truth = make_cube(d["X_gt"].transpose(2, 0, 1), CAVE_WL)
    lr = make_cube(d["LR_HSI"].transpose(2, 0, 1), CAVE_WL)
    msi = xr.DataArray(d["MSI"].transpose(2, 0, 1), dims=("band", "y", "x"))
    return d, FusionProblem(lr, msi, ratio=int(d["ratio"]), truth=truth, name="yokoya synthetic 128")


def test_cnmf_beats_the_reference_on_its_own_synthetic_case(synthetic_reference):
    """Same inputs as the authors' code (SRF and PSF unknown to both): at least its 35.83 dB."""
    d, problem = synthetic_reference
    result = fuse(problem, "cnmf", device="cpu")
    scores = metrics.evaluate(problem.truth, result.fused, ratio=problem.ratio)
    reference = metrics.evaluate(problem.truth, make_cube(d["out_CNMF"].transpose(2, 0, 1), CAVE_WL), ratio=8)
    print(f"\nsynthetic128: ours {scores['psnr']:.3f} dB / SAM {scores['sam']:.3f}; "
          f"reference output {reference['psnr']:.3f} dB / {reference['sam']:.3f}")
    assert reference["psnr"] == pytest.approx(float(d["psnr_peak1"]), abs=1e-3)  # our metric = the README's
    assert scores["psnr"] >= float(d["psnr_peak1"])
    assert scores["sam"] <= float(d["sam_cnmf"])
    assert result.srf is not None and result.srf.matrix.shape == (3, 31)  # the SRF was estimated


def test_cnmf_result_is_deterministic_and_observable(cave_dir):
    truth = center_crop(load_scene(cave_dir / "fake_and_real_peppers_ms"), 64)
    problem = simulate(truth, "gaussian-x8")
    calls = []
    a = fuse(problem, "cnmf", device="cpu", seed=3, progress=lambda done, total, info: calls.append((done, total)))
    b = fuse(problem, "cnmf", device="cpu", seed=3)
    np.testing.assert_array_equal(a.fused.values, b.fused.values)
    assert calls and calls[-1][0] == calls[-1][1]
    assert all(d1 <= d2 for (d1, _), (d2, _) in zip(calls, calls[1:], strict=False))
    p = a.params["n_endmembers"]
    assert a.endmembers.shape == (31, p) and a.abundances.shape == (p, 64, 64)
    assert (a.endmembers >= 0).all() and (a.abundances >= 0).all()
    iterations = [s["iteration"] for s in a.trace]
    assert iterations == sorted(iterations) and len(a.trace) >= 10
    for step in a.trace:
        assert step["endmembers"].shape == (31, p) and step["abundances"].shape == (p, 64, 64)
        assert step["abundances_lr"].shape == (p, 8, 8)
        assert np.isfinite([step["objective"], step["residual_hsi"], step["residual_msi"]]).all()
    # the last record is the result, and the coupled objective went down over the run
    np.testing.assert_allclose(trace_fused(a.trace[-1]), np.maximum(a.fused.values, 0), atol=1e-5)
    assert a.trace[-1]["objective"] < 0.05 * a.trace[0]["objective"]
    # reconstructions along the trace get closer to the truth (PSNR from the first to the last record)
    first = metrics.psnr(truth.values, np.clip(trace_fused(a.trace[0]), 0, 1))
    last = metrics.psnr(truth.values, np.clip(trace_fused(a.trace[-1]), 0, 1))
    assert last > first + 3


def test_trace_memory_stays_within_its_budget(cave_dir):
    truth = center_crop(load_scene(cave_dir / "balloons_ms"), 256)
    problem = simulate(truth, "mossfuse-cave-x32")
    budget_mb = 100
    result = fuse(problem, "cnmf", device="cpu", trace_budget_mb=budget_mb, inner_iterations=50)
    arrays = {id(a): a.nbytes for s in result.trace for a in s.values() if isinstance(a, np.ndarray)}
    total = sum(arrays.values()) / 2**20
    print(f"\ntrace: {len(result.trace)} records, {total:.1f} MiB for a {budget_mb} MiB budget")
    assert total <= budget_mb
    assert len(result.trace) >= 5


def test_cnmf_float64_option_agrees_with_float32(cave_dir):
    truth = center_crop(load_scene(cave_dir / "thread_spools_ms"), 64)
    problem = simulate(truth, "gaussian-x8")
    single = fuse(problem, "cnmf", device="cpu", inner_iterations=60)
    double = fuse(problem, "cnmf", device="cpu", inner_iterations=60, dtype="float64")
    p32 = metrics.psnr(truth.values, np.clip(single.fused.values, 0, 1))
    p64 = metrics.psnr(truth.values, np.clip(double.fused.values, 0, 1))
    assert abs(p32 - p64) < 0.05


@pytest.mark.parametrize(
    ("name", "protocol"),
    [("balloons_ms", "gaussian-x8"), ("fake_and_real_peppers_ms", "mossfuse-cave-x32")],
)
def test_cnmf_on_real_cave_crops_beats_bicubic(cave_dir, name, protocol):
    truth = center_crop(load_scene(cave_dir / name), 128)
    problem = simulate(truth, protocol)
    ours = metrics.evaluate(truth, fuse(problem, "cnmf", device="cpu").fused, ratio=problem.ratio)
    base = metrics.evaluate(truth, fuse(problem, "bicubic", device="cpu").fused, ratio=problem.ratio)
    print(f"\n{name} {protocol} crop128: cnmf {ours['psnr']:.2f} dB SAM {ours['sam']:.2f}; "
          f"bicubic {base['psnr']:.2f} dB SAM {base['sam']:.2f}")
    assert ours["psnr"] > base["psnr"] + 5
    assert ours["sam"] < base["sam"]


def test_cnmf_msi_pyramid_is_close_to_the_full_stage_and_checked(cave_dir):
    """The coarse-to-fine first MSI stage (SCALMU's start on large images) on a real crop: about 7x
    fewer full-resolution updates, within 1 dB of the paper's stage (measured 53.04 vs 53.54 dB)."""
    truth = center_crop(load_scene(cave_dir / "balloons_ms"), 128)
    problem = simulate(truth, "gaussian-x8")
    full = fuse(problem, "cnmf", device="cpu", trace_budget_mb=0)
    fast = fuse(problem, "cnmf", device="cpu", trace_budget_mb=0, msi_pyramid=[[4, 300], [2, 60], [1, 20]])
    s_full = metrics.evaluate(truth, full.fused, ratio=8)["psnr"]
    s_fast = metrics.evaluate(truth, fast.fused, ratio=8)["psnr"]
    print(f"\nballoons crop128 x8: full MSI stage {s_full:.2f} dB, pyramid {s_fast:.2f} dB")
    assert s_full - 1.0 < s_fast
    assert fast.params["msi_pyramid"] == [[4, 300], [2, 60], [1, 20]]
    for bad in ([[2, 10]], [[1, 10], [2, 10]], [[2, 0], [1, 5]], "4:300", [[1.5, 3], [1, 2]]):
        with pytest.raises(ProblemError, match="msi_pyramid"):
            fuse(problem, "cnmf", device="cpu", msi_pyramid=bad)


@pytest.mark.parametrize(
    "options",
    [{}, {"threshold": 1e-2}, {"msi_pyramid": [[4, 30], [2, 12], [1, 7]]}],
    ids=["defaults", "early-stop", "pyramid"],
)
def test_tiled_msi_loop_equals_the_whole_image_loop(cave_dir, monkeypatch, options):
    """With an RGB MSI, ``W_m`` is fixed in the MSI stage and CNMF runs ``H_m``'s updates tile by
    tile (``TILE_PIXELS``): iterates, trace records, costs and the stopping point must be those of
    the whole-image loop (``TILE_PIXELS = 0``), also when the stopping rule fires mid-stage
    (``threshold=1e-2``) and with uneven tiles."""
    import fusion_explorer.methods.unmixing.schedule as schedule_module

    truth = center_crop(load_scene(cave_dir / "chart_and_stuffed_toy_ms"), 64)
    problem = simulate(truth, "gaussian-x8")
    runs = {}
    for tile in (0, 37, 4096):
        monkeypatch.setattr(schedule_module, "TILE_PIXELS", tile)
        runs[tile] = fuse(problem, "cnmf", device="cpu", inner_iterations=40, **options)
    ref = runs[0]
    for tile in (37, 4096):
        run = runs[tile]
        np.testing.assert_array_equal(run.fused.values, ref.fused.values)
        np.testing.assert_array_equal(run.abundances, ref.abundances)
        assert run.extras["iterations"] == ref.extras["iterations"]
        np.testing.assert_allclose(np.array(run.extras["costs"]), np.array(ref.extras["costs"]), rtol=1e-9)
        assert [s["label"] for s in run.trace] == [s["label"] for s in ref.trace]
        for a, b in zip(run.trace, ref.trace, strict=True):
            np.testing.assert_array_equal(a["abundances"], b["abundances"])
    if "threshold" in options:  # the rule fired inside the MSI stage: it ran fewer than its 40 + 39 updates
        msi = [s["iteration"] for s in ref.trace if s["label"].startswith("MSI")]
        hsi = [s["iteration"] for s in ref.trace if s["label"].startswith("HSI unmixing (init)")]
        assert max(msi) - max(hsi) < 79


def _remote_problem(cube: xr.DataArray, ratio: int) -> FusionProblem:
    """A fusion problem on a remote-sensing cube: Gaussian PSF, 6 Gaussian MSI bands over its range."""
    from fusion_explorer.physics import make_protocol

    wl = cube["wavelength"].values
    centres = np.linspace(wl.min(), wl.max(), 8)[1:-1]
    srf = gaussian_srf(centres, (wl.max() - wl.min()) / 6, wl, name="6 gaussian bands")
    protocol = make_protocol(ratio=ratio, sigma=ratio / 2.355)
    return simulate(cube, protocol, srf=srf)


@pytest.mark.parametrize(
    ("filename", "p", "ratio", "max_mean_angle"),
    [("samson_95x95x156.mat", 3, 5, 12.0), ("jasperRidge2_R198.mat", 4, 4, 15.0)],
)
def test_cnmf_endmembers_match_ground_truth(remote_dir, filename, p, ratio, max_mean_angle):
    """Samson / Jasper Ridge: CNMF's endmembers against the published ground truth, after matching."""
    path = remote_dir / filename
    raw = scipy.io.loadmat(path)
    if filename.startswith("samson"):
        cube = open_cube(path, wavelength=np.linspace(401, 889, 156))
    else:
        cube = open_cube(path, wavelength=np.linspace(380, 2500, 224)[raw["SlectBands"].ravel() - 1])
    gt = raw["M"].astype(np.float64)
    cube = cube / float(cube.max())
    problem = _remote_problem(cube, ratio)
    result = fuse(problem, "cnmf", device="cpu", n_endmembers=p)
    angles = spectral_angles(result.endmembers, gt)
    print(f"\n{filename}: endmember angles after matching {np.round(angles, 2)} deg (mean {angles.mean():.2f})")
    assert angles.mean() < max_mean_angle


# ---------------------------------------------------------------- bad input


def _tiny_problem(lr_values, msi_values, srf=None):
    lr = make_cube(lr_values, CAVE_WL)
    msi = xr.DataArray(msi_values, dims=("band", "y", "x"))
    return FusionProblem(lr, msi, srf=srf, ratio=4)


def test_bad_inputs_give_clear_errors():
    rng = np.random.default_rng(0)
    srf = get_srf("nikon-d700", CAVE_WL)
    lr = rng.random((31, 4, 4))
    msi = rng.random((3, 16, 16))
    with pytest.raises(ProblemError, match="more than the LR-HSI can support"):
        fuse(_tiny_problem(lr, msi, srf), "cnmf", device="cpu", n_endmembers=17)
    with pytest.raises(ProblemError, match="all zero"):
        fuse(_tiny_problem(np.zeros_like(lr), msi, srf), "cnmf", device="cpu")
    with pytest.raises(ProblemError, match="spatially constant"):
        fuse(_tiny_problem(np.ones_like(lr) * 0.3, msi, srf), "cnmf", device="cpu")
    with pytest.raises(ProblemError, match="n_endmembers"):
        fuse(_tiny_problem(lr, msi, srf), "cnmf", device="cpu", n_endmembers="many")
    with pytest.raises(ProblemError, match="dtype"):
        fuse(_tiny_problem(lr, msi, srf), "cnmf", device="cpu", dtype="float16")
    bad = lr.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(Exception, match="non-finite"):
        _tiny_problem(bad, msi, srf)
    with pytest.raises(ProblemError, match="SRF"):
        _tiny_problem(lr, msi, SRF.from_matrix(np.ones((4, 31)), CAVE_WL, name="4 bands"))


def test_small_but_valid_problem_runs_without_nan():
    """16 LR pixels, rank capped by the pixel count: a graceful, finite result."""
    rng = np.random.default_rng(1)
    truth = rng.random((31, 16, 16)) * 0.5 + 0.1
    problem = simulate(make_cube(truth, CAVE_WL), make_protocol_small())
    result = fuse(problem, "cnmf", device="cpu")
    assert result.params["n_endmembers"] <= 16
    assert np.isfinite(result.fused.values).all()


def make_protocol_small():
    from fusion_explorer.physics import make_protocol

    return make_protocol(ratio=4, sigma=1.0)


@pytest.mark.parametrize(("protocol", "offset"), [("gaussian-x8", 3), ("mossfuse-cave-x32", 15)])
def test_blind_gaussian_psf_estimate_finds_the_protocol(cave_dir, protocol, offset):
    """Both protocols blur with sigma 2; the estimate sees only the two images."""
    from fusion_explorer.methods.unmixing import estimate_gaussian_psf

    truth = center_crop(load_scene(cave_dir / "thread_spools_ms"), 256)
    problem = simulate(truth, protocol)
    sigma, found_offset, misfit = estimate_gaussian_psf(problem.lr_hsi.values, problem.hr_msi.values, problem.ratio)
    print(f"\n{protocol}: sigma {sigma:.3f} (true 2), offset {found_offset} (true {offset}), misfit {misfit:.2e}")
    assert abs(sigma - 2.0) < 0.2
    assert found_offset == offset
