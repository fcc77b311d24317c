"""The consistency projection (exact, minimal, idempotent, damped, differentiable, and what it does on
real crops) and the colour-guided transfer it can start with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion_explorer import metrics
from fusion_explorer.bench import center_crop, load_scene
from fusion_explorer.methods import fuse
from fusion_explorer.methods.guided import BRIGHTNESS_WEIGHT, NEIGHBOURS, WINDOW, data_neighbours, transfer
from fusion_explorer.methods.unmixing import CoupledData, flat_adjoint, flat_degradation
from fusion_explorer.methods.unmixing.projection import (
    common_noise_level,
    denoise_residual,
    msi_gain,
    observation_features,
    project,
    solve_normal,
    spectral_prior,
)
from fusion_explorer.physics import add_noise, make_protocol, simulate


def _flat(problem, dtype=torch.float64) -> CoupledData:
    lr, msi = problem.tensors("cpu", dtype)
    spatial = problem.spatial_operator()
    return CoupledData(lr.flatten(1)[None], msi.flatten(1)[None],
                       torch.as_tensor(np.array(problem.srf.matrix), dtype=dtype)[None],
                       flat_degradation(spatial, problem.hr_size), 0.0, flat_adjoint(spatial, problem.lr_size))


@pytest.fixture(scope="module")
def crop_problems(cave_dir):
    """A real CAVE crop under both protocols, and CNMF's estimate to correct (a close one: the clamp
    at 0 then touches almost no pixel, so the geometry of the projection can be checked)."""
    truth = center_crop(load_scene(cave_dir / "chart_and_stuffed_toy_ms"), 128, 32)
    out = {}
    for protocol in ("gaussian-x8", "mossfuse-cave-x32"):
        problem = simulate(truth, protocol)
        z = torch.as_tensor(fuse(problem, "cnmf", device="cpu", trace_budget_mb=0).fused.values, dtype=torch.float64)
        out[protocol] = (problem, _flat(problem), z.flatten(1)[None])
    return truth, out


@pytest.mark.parametrize("protocol", ["gaussian-x8", "mossfuse-cave-x32"])
@pytest.mark.parametrize("with_prior", [False, True])
def test_projection_reproduces_both_images(crop_problems, protocol, with_prior):
    _, problems = crop_problems
    problem, data, z = problems[protocol]
    prior = spectral_prior(torch.rand(1, z.shape[1], 6, dtype=z.dtype, generator=torch.Generator().manual_seed(0)))
    out = project(z, data, prior if with_prior else None, clamp=False)
    assert float((out < 0).double().mean()) < 0.05  # what the clamp will touch
    for observed, seen in ((data.hr_msi, data.srf @ out), (data.lr_hsi, data.degrade(out))):
        before = float((observed - (data.srf @ z if observed is data.hr_msi else data.degrade(z))).norm())
        after = float((observed - seen).norm())
        assert after < 1e-3 * before  # exact up to the damping (1e-4) and the CG tolerance
    assert (project(z, data) >= 0).all()


def test_projection_is_the_nearest_consistent_cube(crop_problems):
    """With ``C = I`` the correction is orthogonal to every consistent direction: the truth (which is
    consistent, the images being noise-free) lies at a right angle, so it is never nearer."""
    truth, problems = crop_problems
    _, data, z = problems["gaussian-x8"]
    x = torch.as_tensor(truth.values, dtype=torch.float64).flatten(1)[None]
    out = project(z, data, clamp=False)
    inner = float(((z - out) * (out - x)).sum())
    assert abs(inner) < 1e-3 * float((z - out).norm() * (out - x).norm())  # up to the damping
    assert float((out - z).norm()) < float((x - z).norm())
    # one pass lands on the intersection: a second one changes nothing (the projectors commute)
    torch.testing.assert_close(project(out, data, clamp=False), out, rtol=0, atol=1e-5)


def test_damping_bounds_what_a_wide_psf_amplifies(crop_problems):
    """Sigma 2 at ratio 2: ``S Sᵀ`` is nearly singular (condition ~1e8). A noise-like LR residual
    then moves the cube by at most ``1/(2 sqrt(μ))`` times its size (100 here; 58 measured), where
    an undamped solve moved it 470 times (and more the longer CG runs)."""
    _, problems = crop_problems
    problem = simulate(problems["gaussian-x8"][0].truth[:, :32, :32], make_protocol(2))
    data = _flat(problem)
    r = 1e-3 * torch.randn(1, 31, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mu = 1e-4 * float(data.upsample(torch.ones_like(r[:, :1])).square().sum() / 256)
    moved = data.upsample(solve_normal(data, r))
    assert float(moved.norm() / r.norm()) < 1 / (2 * mu**0.5)
    undamped = data.upsample(solve_normal(data, r, damping=0.0, iterations=200))
    assert float(undamped.norm() / r.norm()) > 4 / (2 * mu**0.5)


def test_steps_scale_the_corrections(crop_problems):
    _, problems = crop_problems
    _, data, z = problems["gaussian-x8"]
    torch.testing.assert_close(project(z, data, msi_step=0.0, hsi_step=0.0), z.clamp_min(0))
    half = project(z, data, msi_step=0.5, hsi_step=0.0, clamp=False)
    full = project(z, data, msi_step=1.0, hsi_step=0.0, clamp=False)
    r_half = (data.hr_msi - data.srf @ half).norm()
    r_z = (data.hr_msi - data.srf @ z).norm()
    assert abs(float(r_half / r_z) - 0.5) < 1e-3  # half the MSI residual is left
    assert float((data.hr_msi - data.srf @ full).norm()) < 1e-8 * float(data.hr_msi.norm())


def test_gain_is_the_pseudo_inverse_without_a_prior():
    srf = torch.rand(1, 3, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(msi_gain(srf), torch.linalg.pinv(srf))
    prior = spectral_prior(torch.rand(1, 20, 5, dtype=torch.float64))
    g = msi_gain(srf, prior)
    torch.testing.assert_close(srf @ g, torch.eye(3, dtype=torch.float64)[None])  # always a right inverse
    assert torch.allclose(prior.diagonal(dim1=-2, dim2=-1).sum(-1), torch.tensor(1.01, dtype=torch.float64))


def test_conjugate_gradients_solve_the_normal_equations(crop_problems):
    """Against a dense solve of ``S Sᵀ u = r`` built column by column from the operator (ratio 4,
    where neighbouring LR pixels' kernels overlap)."""
    _, problems = crop_problems
    problem = simulate(problems["gaussian-x8"][0].truth[:, :32, :32], make_protocol(4))
    data = _flat(problem)
    n = problem.lr_size[0] * problem.lr_size[1]
    eye = torch.eye(n, dtype=torch.float64)[None]
    dense = data.degrade(data.upsample(eye))[0]  # (n, n), symmetric
    r = torch.randn(1, 2, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    u = solve_normal(data, r, tolerance=1e-10, damping=0.0)
    torch.testing.assert_close(u[0], torch.linalg.solve(dense, r[0].T).T, rtol=1e-6, atol=1e-9)
    mu = 1e-4 * float(dense.sum() / n)  # the Rayleigh quotient of a constant image
    damped = solve_normal(data, r, tolerance=1e-10)
    torch.testing.assert_close(damped[0], torch.linalg.solve(dense + mu * eye[0], r[0].T).T, rtol=1e-3, atol=1e-6)


def test_differentiable_in_the_cube_the_steps_and_the_prior():
    torch.manual_seed(0)
    problem = simulate(_tiny_truth(), make_protocol(2, sigma=0.8, kernel_size=3))
    data = _flat(problem)
    z = torch.rand(1, 6, 64, dtype=torch.float64, requires_grad=True) + 0.5
    w = torch.rand(1, 6, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    def f(z, w, t):
        return project(z, data, spectral_prior(w), msi_step=t, hsi_step=t)

    assert torch.autograd.gradcheck(f, (z.detach().requires_grad_(), w, t), eps=1e-6, atol=1e-5)


def _tiny_truth():
    import xarray as xr

    rng = np.random.default_rng(0)
    values = 0.2 + 0.6 * rng.random((6, 8, 8))
    return xr.DataArray(values, dims=("band", "y", "x"), coords={"wavelength": ("band", np.linspace(420, 680, 6))})


def test_observation_features_see_noise(crop_problems):
    _, problems = crop_problems
    problem, data, z = problems["gaussian-x8"]
    clean = observation_features(z, data)[0]
    assert clean[0] < -10  # consistent images: only float rounding
    noisy = CoupledData(add_noise(data.lr_hsi, 30.0, torch.Generator().manual_seed(0)), data.hr_msi, data.srf,
                        data.degrade, 0.0, data.upsample)
    assert -6 < float(observation_features(z, noisy)[0, 0]) < -1
    after = observation_features(project(z, data, clamp=False), data)[0]
    assert after[1] < clean[1] - 4 and after[2] < clean[2] - 4  # both residuals fall by 10^4 and more


@pytest.mark.parametrize("protocol", ["gaussian-x8", "mossfuse-cave-x32"])
def test_cnmf_with_consistency_on_real_crops(cave_dir, protocol):
    """CNMF's output moved onto both images, on a real 128x128 crop (measured here: chart_and_stuffed_toy
    44.81 -> 47.49 dB at x8 and 38.39 -> 42.24 dB at x32, with lower SAM)."""
    truth = center_crop(load_scene(cave_dir / "chart_and_stuffed_toy_ms"), 128, 32)
    problem = simulate(truth, protocol)
    base = fuse(problem, "cnmf", device="cpu", trace_budget_mb=0)
    fixed = fuse(problem, "cnmf", device="cpu", trace_budget_mb=0, consistency=True)
    a = metrics.evaluate(truth, base.fused, problem.ratio, metrics=("psnr", "sam"))
    b = metrics.evaluate(truth, fixed.fused, problem.ratio, metrics=("psnr", "sam"))
    print(f"\n{protocol}: cnmf {a['psnr']:.2f} dB / {a['sam']:.2f}°, with consistency {b['psnr']:.2f} / {b['sam']:.2f}")
    assert b["psnr"] > a["psnr"] + 2.0 and b["sam"] < a["sam"]
    assert fixed.params["consistency"] and not base.params["consistency"]
    np.testing.assert_array_equal(fixed.abundances, base.abundances)  # the unmixing is untouched


def test_cnmf_guided_denoises_the_msi_residual_of_noisy_images(cave_dir):
    """``cnmf(consistency="guided")`` makes its MSI correction from the MSI residual denoised at the level both
    images show, as SCALMU's consistency layer does (``denoise=False``: the raw residual). On a real crop with
    white noise on both images that keeps the MSI's noise out of the cube; without noise it changes little.
    Measured here (balloons 128x128, x8, 50 inner iterations): SNR 35 dB 44.99 dB against 43.18 without the
    denoising; noise-free 55.08 against 55.17 (the noise estimate reads some texture as noise)."""
    from fusion_explorer.physics import get_protocol

    truth = center_crop(load_scene(cave_dir / "balloons_ms"), 128, 32)
    gain = {}
    for name, protocol in (("clean", "gaussian-x8"), ("noisy", get_protocol("gaussian-x8").with_(snr_db=35.0))):
        problem = simulate(truth, protocol)
        run = dict(device="cpu", trace_budget_mb=0, inner_iterations=50, consistency="guided")
        on, off = fuse(problem, "cnmf", **run), fuse(problem, "cnmf", denoise=False, **run)
        assert on.params["denoise"] and not off.params["denoise"]
        np.testing.assert_array_equal(on.abundances, off.abundances)  # only the consistency stage differs
        psnr = [metrics.evaluate(truth, r.fused, 8, metrics=("psnr",))["psnr"] for r in (on, off)]
        print(f"\n{name}: denoised {psnr[0]:.2f} dB, raw residual {psnr[1]:.2f} dB")
        gain[name] = psnr[0] - psnr[1]
    assert gain["noisy"] > 1.0
    assert abs(gain["clean"]) < 0.2
    plain = fuse(simulate(truth, "gaussian-x8"), "cnmf", device="cpu", trace_budget_mb=0, inner_iterations=5)
    assert plain.params["denoise"] is False  # no consistency stage, nothing denoised


# ---- the colour-guided transfer (methods/guided.py) ----------------------------------------------


@pytest.fixture(scope="module")
def guide_problem(cave_dir):
    truth = center_crop(load_scene(cave_dir / "fake_and_real_peppers_ms"), 128, 32)
    problem = simulate(truth, "gaussian-x8")
    data = _flat(problem, torch.float32)
    nb = data_neighbours(data, problem.hr_size, problem.lr_size, 8, problem.offset)
    return problem, data, nb


def test_neighbours_are_the_nearest_in_colour_within_the_window(guide_problem):
    """Against a brute-force search for a sample of HR pixels (including the image corners)."""
    problem, data, nb = guide_problem
    (big_h, big_w), (h, w) = problem.hr_size, problem.lr_size
    hr = data.hr_msi[0].double()
    lr = data.degrade(data.hr_msi)[0].double()
    assert nb.index.shape == (1, NEIGHBOURS, big_h * big_w)
    for x in [0, big_w - 1, big_h * big_w - 1, 5000, 9000, 12345]:
        yy, xx = divmod(x, big_w)
        cy, cx = min(round((yy - problem.offset) / 8), h - 1), min(round((xx - problem.offset) / 8), w - 1)
        cy, cx = max(cy, 0), max(cx, 0)
        y0, x0 = min(max(cy - WINDOW, 0), h - 9), min(max(cx - WINDOW, 0), w - 9)
        cands = [i * w + j for i in range(y0, y0 + 9) for j in range(x0, x0 + 9)]
        m = hr[:, x]
        d = []
        for i in cands:
            c = lr[:, i]
            d.append(float((m / m.norm() - c / c.norm()).square().sum()
                           + BRIGHTNESS_WEIGHT * (m.norm().log() - c.norm().log()) ** 2))
        best = [cands[j] for j in np.argsort(d)[:NEIGHBOURS]]
        assert sorted(nb.index[0, :, x].tolist()) == sorted(best)
        np.testing.assert_allclose(nb.distance[0, :, x].numpy(), np.sort(d)[:NEIGHBOURS], rtol=1e-3, atol=1e-6)
        assert len(set(nb.index[0, :, x].tolist())) == NEIGHBOURS  # no repeats, even in the corners


def test_transfer_recovers_the_msi_better_than_interpolation(guide_problem):
    """Carried by colour from the LR grid, the MSI's own LR image lands close to the HR-MSI: closer
    than bicubic interpolation of it, since each HR pixel takes the colour of a same-coloured LR pixel
    (a real CAVE crop at x8, high contrast: measured 6.8 % against 63 % relative error here)."""
    problem, data, nb = guide_problem
    lr = data.degrade(data.hr_msi)
    carried = transfer(lr, nb)
    rel = float((carried - data.hr_msi).norm() / data.hr_msi.norm())
    interp = torch.nn.functional.interpolate(lr.reshape(1, -1, *problem.lr_size), size=problem.hr_size,
                                             mode="bicubic", align_corners=False).reshape(lr.shape[0], lr.shape[1], -1)
    rel_interp = float((interp - data.hr_msi).norm() / data.hr_msi.norm())
    print(f"\nguided {rel:.3f}, bicubic {rel_interp:.3f}")
    assert rel < 0.5 * rel_interp


def test_transfer_is_differentiable_in_values_and_sigma(guide_problem):
    _, data, nb = guide_problem
    nb64 = nb.to(dtype=torch.float64)
    values = torch.rand(1, 2, data.lr_hsi.shape[-1], dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    small = type(nb64)(nb64.index[..., :50], nb64.distance[..., :50], nb64.scale[..., :50])
    assert torch.autograd.gradcheck(lambda v, s: transfer(v, small, s), (values, sigma))


def test_old_module_name_reexports_the_projection():
    """``methods.consistency`` (the former home) still gives the engine's functions, not copies."""
    from fusion_explorer.methods import consistency
    from fusion_explorer.methods.unmixing import projection

    for name in consistency.__all__:
        assert getattr(consistency, name) is getattr(projection, name)


def test_wiener_msi_gain_damps_the_directions_the_srf_barely_sees():
    """``msi_gain`` with a noise term is the MMSE gain: 0 gives the exact projection's gain, and with
    two nearly identical SRF rows the exact gain is huge (noise amplified) while the Wiener gain stays
    bounded and still reproduces a well-seen direction."""
    import torch

    from fusion_explorer.methods.unmixing.projection import msi_gain

    bands = 31
    x = torch.linspace(0, 1, bands, dtype=torch.float64)
    rows = [torch.exp(-0.5 * ((x - c) / 0.05) ** 2) for c in (0.3, 0.301, 0.7)]
    srf = torch.stack([r / r.sum() for r in rows])[None]
    exact, wiener = msi_gain(srf), msi_gain(srf, noise=1e-3)
    torch.testing.assert_close(msi_gain(srf, noise=0.0), exact)
    assert torch.isfinite(msi_gain(torch.cat([srf, torch.zeros_like(srf[:, :1])], 1))).all()  # a blind band
    assert exact.abs().max() > 5 * wiener.abs().max()
    # R G ~ I for the exact gain; the Wiener gain still passes the well-separated third band
    assert abs(float((srf @ wiener)[0, 2, 2]) - 1) < 0.05


@pytest.mark.parametrize("wider", [1.0, 1.3])
def test_step3_keeps_of_the_hsi_correction_what_the_msi_cannot_see(crop_problems, wider):
    """Step 3 (``msi_last``) on a real crop from CNMF's start, with the endmembers' prior and the guided
    transfer: with the PSF that made the images it changes nothing; with a Gaussian 30 % too wide (the
    images disagree through the model) the HSI correction without it undoes the MSI fit and costs dB, with
    it ``R Z = Y_m`` still holds and the cube is better than with no HSI correction at all."""
    from fusion_explorer.methods.scalmu.start import schedule_start

    from ._tiled import model_psf_too_wide

    truth, problems = crop_problems
    problem = model_psf_too_wide(problems["gaussian-x8"][0], wider)
    schedule, _ = schedule_start(problem, device=torch.device("cpu"))
    state, data = schedule.state, schedule.data
    z, prior = state.fused(), spectral_prior(state.endmembers)
    out = {name: project(z, data, prior, neighbours=data.neighbours, clamp=False, **kw)
           for name, kw in (("step 3", {}), ("without", {"msi_last": False}), ("no HSI step", {"hsi_step": 0.0}))}
    x = torch.as_tensor(truth.values, dtype=torch.float32).flatten(1)[None]
    psnr = {k: float(-10 * torch.log10((v.clamp(0, 1) - x).square().mean())) for k, v in out.items()}
    before = float((data.hr_msi - data.srf @ z).norm())
    assert float((data.hr_msi - data.srf @ out["step 3"]).norm()) < 1e-3 * before  # R Z = Y_m still
    if wider == 1.0:  # consistent images: the HSI correction is invisible to the MSI already
        assert abs(psnr["step 3"] - psnr["without"]) < 0.01
        assert psnr["step 3"] > psnr["no HSI step"] + 0.1
    else:  # measured here: 44.3 dB with step 3, 37.8 without, 44.0 with no HSI step
        assert float((data.hr_msi - data.srf @ out["without"]).norm()) > 0.3 * before
        assert psnr["step 3"] > psnr["without"] + 3.0
        assert psnr["step 3"] > psnr["no HSI step"]


def test_residual_denoising_is_lees_filter(crop_problems):
    """:func:`denoise_residual` against SciPy's own local Wiener filter (``scipy.signal.wiener``, zero
    padding: compared away from the borders) on a real MSI with white noise: the same filter, and it
    brings the noisy image closer to the clean one; at noise 0 it returns its input."""
    from scipy.signal import wiener

    _, problems = crop_problems
    problem = problems["gaussian-x8"][0]
    clean = torch.as_tensor(problem.hr_msi.values, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    sigma = 0.02
    noisy = clean + sigma * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    size = tuple(clean.shape[1:])
    out = denoise_residual(noisy.flatten(1)[None], sigma**2, size, half_window=2)[0].reshape(clean.shape)
    ref = np.stack([wiener(b, mysize=5, noise=sigma**2) for b in noisy.numpy()])
    inner = (slice(None), slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(out.numpy()[inner], ref[inner], atol=1e-9)
    assert float((out - clean).square().mean()) < 0.5 * float((noisy - clean).square().mean())
    same = denoise_residual(noisy.flatten(1)[None], 0.0, size)[0].reshape(clean.shape)
    torch.testing.assert_close(same, noisy)


def test_common_noise_level_is_what_both_images_show():
    """The MSI residual is denoised at the smaller of the two images' noise levels, and not at all when
    either image is too small for an estimate (NaN)."""
    assert common_noise_level((-3.4, -3.5)) == -3.5
    assert common_noise_level((-5.9, -3.8)) == -5.9  # texture the LR-HSI averages away is not noise
    assert common_noise_level((float("nan"), -3.8)) == -float("inf")
