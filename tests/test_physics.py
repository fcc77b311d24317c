"""Degradation physics against independent computations (scipy.ndimage, the reference code's inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch
from scipy import ndimage

from fusion_explorer.cube import make_cube
from fusion_explorer.errors import CubeError, ProblemError
from fusion_explorer.physics import (
    PROTOCOLS,
    Blur,
    Decimate,
    SpatialDegradation,
    SpectralResponse,
    add_noise,
    gaussian_kernel,
    get_protocol,
    make_protocol,
    simulate,
)

from ._cave import load_cave_yxb

WL = np.arange(400, 701, 10.0)


def scipy_degrade(x_yxb: np.ndarray, size: int, sigma: float, ratio: int, offset: int) -> np.ndarray:
    """Independent: separable correlate1d with mirror (= reflect-101) borders, then sampling."""
    i = np.arange(size) - (size - 1) / 2
    g = np.exp(-(i**2) / (2 * sigma**2))
    g /= g.sum()
    blurred = ndimage.correlate1d(x_yxb, g, axis=0, mode="mirror")
    blurred = ndimage.correlate1d(blurred, g, axis=1, mode="mirror")
    return blurred[offset::ratio, offset::ratio].transpose(2, 0, 1)


@pytest.fixture(scope="module")
def balloons(cave_dir):
    return load_cave_yxb(str(cave_dir / "balloons_ms"))


@pytest.fixture(params=["dense", "taps", "conv"])
def path(request, monkeypatch):
    """Runs a test on each implementation of a separable SpatialDegradation: the dense 1-D
    matrices (small images), the strided taps (large ones) and the convolutions."""
    monkeypatch.setattr(SpatialDegradation, "path", request.param)
    return request.param


@pytest.mark.parametrize("name", ["mossfuse-cave-x32", "gaussian-x8"])
def test_protocol_matches_scipy_on_real_scene(balloons, name, path):
    p = get_protocol(name)
    x = torch.from_numpy(balloons.transpose(2, 0, 1).copy())
    ours = p.spatial()(x).numpy()
    ref = scipy_degrade(balloons, p.kernel_size, p.sigma, p.ratio, p.offset)
    assert ours.shape == ref.shape == (31, 512 // p.ratio, 512 // p.ratio)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
    assert np.abs(ours - ref).max() < 1e-12  # float64 throughout: agreement to rounding


def test_simulate_reproduces_reference_inputs(balloons, reference_dir, srf_dir):
    """The MossFuse reference code's own LR-HSI and MSI (cv2 blur on a crop) are reproduced."""
    ref = np.load(reference_dir / "mossfuse" / "mossfuse_ref_balloons_crop256.npz")
    crop = balloons[192:448, 192:448]
    truth = make_cube(crop.transpose(2, 0, 1), WL, attrs={"scene": "balloons_ms"}, dtype=np.float64)
    problem = simulate(truth, "mossfuse-cave-x32")
    np.testing.assert_allclose(problem.lr_hsi.values, ref["LR_HSI"][0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(problem.hr_msi.values, ref["MSI"][0], atol=1e-6, rtol=0)
    resp = scipy.io.loadmat(srf_dir / "mossfuse_resp_nikon_d700_3x31.mat")["resp"]
    np.testing.assert_allclose(problem.srf.matrix, resp, atol=1e-12)
    assert problem.ratio == 32 and problem.lr_hsi.attrs["protocol"] == "mossfuse-cave-x32"
    assert problem.psf.shape == (31, 31) and abs(problem.psf.sum() - 1) < 1e-12


def test_gaussian_x8_lr_size_and_sampling(balloons):
    crop = balloons[:128, :64]
    truth = make_cube(crop.transpose(2, 0, 1), WL, dtype=np.float64)
    problem = simulate(truth, "gaussian-x8")
    assert problem.lr_hsi.shape == (31, 16, 8)
    assert list(problem.lr_hsi.x.values) == list(range(3, 64, 8))
    ref = scipy_degrade(crop, 15, 2.0, 8, 3)
    np.testing.assert_allclose(problem.lr_hsi.values, ref, atol=1e-6)


def test_any_kernel_and_borders_match_scipy(balloons):
    rng = np.random.default_rng(0)
    k = rng.random((5, 7))  # not separable, not symmetric
    x = balloons[:40, :48, :4]
    scipy_modes = {"reflect": "mirror", "replicate": "nearest", "circular": "wrap", "zeros": "constant"}
    for border, mode in scipy_modes.items():
        op = SpatialDegradation(k, ratio=4, offset=1, border=border)
        ours = op(torch.from_numpy(x.transpose(2, 0, 1).copy())).numpy()
        ref = np.stack([ndimage.correlate(x[..., b], k, mode=mode) for b in range(4)])[:, 1::4, 1::4]
        np.testing.assert_allclose(ours, ref, atol=1e-12, err_msg=border)


@pytest.mark.parametrize("border", ["reflect", "zeros", "circular", "replicate"])
def test_adjoints_pass_dot_product_test(border, path):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 6, 32, 32, generator=gen, dtype=torch.float64)
    srf = torch.rand(3, 6, generator=gen, dtype=torch.float64)
    spatial = SpatialDegradation(gaussian_kernel(9, 1.5), ratio=4, offset=2, border=border)
    for op in (
        spatial,
        Decimate(4, 1),
        Blur(gaussian_kernel(5, 1.0), border),
        SpectralResponse(srf),
        SpectralResponse(srf) @ spatial,
    ):
        y = torch.rand(op(x).shape, generator=gen, dtype=torch.float64)
        lhs = (op(x) * y).sum()
        rhs = (x * op.adjoint(y)).sum()
        assert abs(lhs - rhs) < 1e-10 * abs(lhs), (op, border)


def test_composition_order_and_device_dtype_follow_input():
    x = torch.rand(1, 31, 64, 64)
    srf = torch.full((3, 31), 1 / 31)
    op = SpectralResponse(srf) @ PROTOCOLS["gaussian-x8"].spatial()
    y = op(x)
    assert y.shape == (1, 3, 8, 8) and y.dtype == torch.float32
    assert torch.allclose(y, PROTOCOLS["gaussian-x8"].spatial()(SpectralResponse(srf)(x)), atol=1e-6)
    if torch.cuda.is_available():  # pragma: no cover - exercised on the GPU machine
        assert op(x.cuda()).device.type == "cuda"


def test_noise_hits_requested_snr():
    x = torch.rand(4, 128, 128, dtype=torch.float64) + 0.5
    noisy = add_noise(x, 30.0, torch.Generator().manual_seed(0))
    snr = 10 * torch.log10(x.pow(2).mean((1, 2)) / (noisy - x).pow(2).mean((1, 2)))
    assert torch.allclose(snr, torch.full((4,), 30.0, dtype=torch.float64), atol=0.1)
    again = add_noise(x, 30.0, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    assert add_noise(x, None) is x


def test_make_protocol_defaults():
    p = make_protocol(8)
    assert (p.kernel_size, p.offset, p.sigma) == (13, 3, 2.0)
    assert make_protocol(32).offset == 15
    with pytest.raises(ProblemError, match="unknown protocol"):
        get_protocol("nope")


def test_bad_inputs_raise_clear_errors(balloons):
    good = make_cube(balloons[:64, :64].transpose(2, 0, 1), WL)
    with pytest.raises(CubeError, match="ratio 32 does not divide"):
        simulate(good.isel(y=slice(0, 60)), "mossfuse-cave-x32")
    bad = good.copy()
    bad.values[3, 4, 5] = np.nan
    with pytest.raises(CubeError, match="non-finite"):
        simulate(bad, "gaussian-x8")
    with pytest.raises(CubeError, match="negative"):
        simulate(good - 0.5, "gaussian-x8")
    with pytest.raises(ProblemError, match="odd sizes"):
        SpatialDegradation(np.ones((4, 4)))
    with pytest.raises(CubeError, match="dims"):
        simulate(good.transpose("y", "x", "band"), "gaussian-x8")


@pytest.mark.parametrize("border", ["reflect", "zeros", "circular", "replicate"])
@pytest.mark.parametrize("separable", [True, False])
def test_closed_form_adjoint_equals_autograd_and_is_differentiable(border, separable, path):
    """SpatialDegradation's own adjoint equals the generic (autograd) one and has gradients."""
    from fusion_explorer.physics import Operator

    gen = torch.Generator().manual_seed(2)
    kernel = gaussian_kernel(7, 1.2)
    if not separable:
        kernel = kernel + 0.05 * torch.rand(7, 7, generator=gen, dtype=torch.float64)
    op = SpatialDegradation(kernel, ratio=3, offset=2, border=border)
    y = torch.rand(2, 3, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    ours = op.adjoint(y)
    generic = Operator.adjoint(op, y.detach())
    torch.testing.assert_close(ours, generic, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: op.adjoint(t), (y[:1, :1],))


@pytest.mark.parametrize("border", ["reflect", "zeros", "circular", "replicate"])
def test_dense_taps_and_convolution_paths_agree_on_a_real_crop(balloons, border, monkeypatch):
    """The dense matrices and the strided taps (each picked by ``path="auto"`` on its own image
    size) equal the strided convolutions, forward and adjoint, on real crops with an offset and a
    non-square size, at x8 and at x32 with the 31-tap MossFuse kernel."""
    for (rows, cols), ratio, offset, size, auto in (((96, 120), 8, 3, 15, "dense"), ((320, 264), 8, 3, 15, "taps"),
                                                    ((288, 320), 32, 15, 31, "taps")):
        x = torch.from_numpy(balloons[:rows, :cols, :5].transpose(2, 0, 1).copy())
        op = SpatialDegradation(gaussian_kernel(size, 2.0), ratio=ratio, offset=offset, border=border)
        monkeypatch.setattr(SpatialDegradation, "path", "auto")
        assert op._separable_path(rows, cols) == auto
        y = torch.rand(op(x).shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        results = {}
        for path in ("dense", "taps", "conv"):
            monkeypatch.setattr(SpatialDegradation, "path", path)
            results[path] = op(x), op.adjoint(y)
        assert results["conv"][0].shape == (5, rows // ratio, cols // ratio)
        for path in ("dense", "taps"):
            for a, b in zip(results[path], results["conv"], strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=f"{path} {border} x{ratio}")


def test_problem_holds_one_sensor_pair_and_old_keywords_still_work(balloons):
    import dataclasses

    from fusion_explorer.physics import SensorPair, default_offset
    from fusion_explorer.problem import FusionProblem

    truth = make_cube(balloons[:64, :64].transpose(2, 0, 1), WL)
    problem = simulate(truth, "gaussian-x8")
    pair = problem.sensors
    assert isinstance(pair, SensorPair) and pair.name == "gaussian-x8"
    # the problem's parts are the pair's, read-only
    assert (problem.ratio, problem.offset, problem.border) == (8, 3, "reflect")
    assert problem.srf is pair.srf and problem.srf.name == "nikon-d700"
    np.testing.assert_array_equal(problem.psf, gaussian_kernel(15, 2.0).numpy())
    with pytest.raises(AttributeError):
        problem.psf = None
    # the pair's operators reproduce the images (noiseless protocol), independently of simulate's code path
    x = torch.as_tensor(truth.values, dtype=torch.float64)
    np.testing.assert_allclose(pair.spatial()(x).numpy(), problem.lr_hsi.values, atol=1e-6)
    np.testing.assert_allclose(pair.spectral()(x).numpy(), problem.hr_msi.values, atol=1e-6)
    expected_lr = scipy_degrade(balloons[:64, :64], 15, 2.0, 8, 3)
    np.testing.assert_allclose(problem.spatial_operator()(x).numpy(), expected_lr, atol=1e-6)
    # today's keywords, by name or position, build the same pair
    loose = FusionProblem(problem.lr_hsi, problem.hr_msi, problem.srf, 8, problem.psf, 3, "reflect")
    np.testing.assert_array_equal(loose.psf, problem.psf)
    assert (loose.ratio, loose.offset, loose.srf.name) == (8, 3, "nikon-d700")
    # dataclasses.replace (used by methods) changes parts of the pair; None means unknown
    blind = dataclasses.replace(problem, psf=None, offset=None)
    assert blind.psf is None and blind.offset is None and blind.spatial_operator() is None
    assert blind.sample_offset == default_offset(8) == 3 and blind.srf is problem.srf
    # a named preset given whole: its SRF name is resolved on the LR-HSI's wavelengths
    preset = FusionProblem(problem.lr_hsi, problem.hr_msi, sensors=PROTOCOLS["gaussian-x8"])
    np.testing.assert_allclose(preset.srf.matrix, problem.srf.matrix)
    with pytest.raises(ProblemError, match="ratio 32 needs"):
        FusionProblem(problem.lr_hsi, problem.hr_msi, sensors=PROTOCOLS["mossfuse-cave-x32"])


def test_default_offset_is_the_block_centre_of_both_presets():
    from fusion_explorer.physics import default_offset

    for proto in PROTOCOLS.values():
        assert proto.offset == default_offset(proto.ratio)
    assert [default_offset(r) for r in (1, 2, 3, 4, 8)] == [0, 0, 1, 1, 3]


def test_noise_model_of_a_pair_uses_its_two_snrs():
    from fusion_explorer.physics import NoiseModel

    pair = make_protocol(8, snr_db=30.0)
    assert pair.noise == NoiseModel(30.0, 30.0)
    assert pair.with_parts(snr_msi_db=None).noise == NoiseModel(30.0, None)
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    assert torch.equal(NoiseModel(30.0, None).msi(x), x)
    noisy = NoiseModel(30.0, None).hsi(x, torch.Generator().manual_seed(1))
    measured = 10 * torch.log10(x.pow(2).mean() / (noisy - x).pow(2).mean())
    assert abs(float(measured) - 30.0) < 0.5
