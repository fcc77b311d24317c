"""Tests of fusion_explorer.metrics on real CAVE data.

a) agreement with scikit-image / torchmetrics / numpy where the definitions match;
b) the README's bicubic baseline (PSNR, SAM) reproduced to 1e-3 on three whole scenes, both protocols;
c) edge cases (zero spectra, identical images, flat bands, bad input).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image
from scipy.ndimage import correlate1d
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
from torchmetrics.functional.image import spectral_angle_mapper as tm_sam
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from fusion_explorer import metrics as M
from fusion_explorer.cube import make_cube
from fusion_explorer.errors import CubeError, ProblemError

SCENES = ("balloons_ms", "thread_spools_ms", "fake_and_real_peppers_ms")
# protocol -> (ratio, kernel size, sigma, sampling offset)
PROTOCOLS = {"x32": (32, 31, 2.0, 15), "x8": (8, 15, 2.0, 3)}
# README "Bicubic baseline": (PSNR dB, SAM degrees) per scene and protocol
BICUBIC_TABLE = {
    ("balloons_ms", "x32"): (25.121, 5.969),
    ("thread_spools_ms", "x32"): (23.055, 13.316),
    ("fake_and_real_peppers_ms", "x32"): (24.073, 13.807),
    ("balloons_ms", "x8"): (34.511, 2.673),
    ("thread_spools_ms", "x8"): (29.084, 6.553),
    ("fake_and_real_peppers_ms", "x8"): (31.112, 4.732),
}
REL = 1e-6


# --------------------------------------------------------------------------- helpers


def load_cave(cave_dir: Path, scene: str) -> np.ndarray:
    """A CAVE scene as float64 ``(31, y, x)`` in [0, 1], read with Pillow (16-bit PNG / 65535)."""
    bands = []
    for i in range(1, 32):
        path = cave_dir / scene / f"{scene}_{i:02d}.png"
        if not path.exists():
            pytest.fail(f"real test data missing: {path}")
        arr = np.asarray(Image.open(path))
        if arr.ndim == 3:  # a few CAVE PNGs carry extra channels; the data are in the first
            arr = arr[..., 0]
        scale = 255.0 if arr.dtype == np.uint8 else 65535.0
        bands.append(arr.astype(np.float64) / scale)
    return np.stack(bands)


def gaussian_kernel(k: int, sigma: float) -> np.ndarray:
    i = np.arange(k, dtype=np.float64)
    g = np.exp(-((i - (k - 1) / 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


def degrade(x: np.ndarray, protocol: str) -> np.ndarray:
    """LR-HSI per the README: separable Gaussian blur (reflect-101 = scipy 'mirror'), then sampling."""
    ratio, k, sigma, offset = PROTOCOLS[protocol]
    g = gaussian_kernel(k, sigma)
    blurred = correlate1d(correlate1d(x, g, axis=1, mode="mirror"), g, axis=2, mode="mirror")
    return blurred[:, offset::ratio, offset::ratio]


def bicubic(lr: np.ndarray, ratio: int, dtype: torch.dtype) -> np.ndarray:
    t = torch.as_tensor(lr, dtype=dtype)[None]
    up = torch.nn.functional.interpolate(t, scale_factor=ratio, mode="bicubic", align_corners=False)
    return up[0].clamp(0, 1).numpy()


def rel_close(a: float, b: float, rel: float = REL) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scenes(cave_dir: Path) -> dict[str, np.ndarray]:
    return {s: load_cave(cave_dir, s) for s in SCENES}


@pytest.fixture(scope="module")
def crop_pair(scenes: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A real 128x128 crop of balloons and its x8 bicubic estimate (float64, clipped)."""
    ref = np.ascontiguousarray(scenes["balloons_ms"][:, 192:320, 192:320])
    est = bicubic(degrade(ref, "x8"), 8, torch.float64)
    return ref, est


# --------------------------------------------------------------------------- a) agreement


def test_psnr_matches_torchmetrics_and_skimage_per_band(crop_pair):
    ref, est = crop_pair
    ours = M.psnr(ref, est)
    tm = np.mean(
        [tm_psnr(torch.tensor(e), torch.tensor(r), data_range=1.0).item() for r, e in zip(ref, est, strict=True)]
    )
    sk = np.mean([sk_psnr(r, e, data_range=1.0) for r, e in zip(ref, est, strict=True)])
    assert rel_close(ours, tm) and rel_close(ours, sk), (ours, tm, sk)


def test_psnr_data_range():
    ref = np.full((2, 8, 8), 100.0)
    est = ref + 2.0
    assert M.psnr(ref, est, data_range=255.0) == pytest.approx(10 * np.log10(255.0**2 / 4.0))


def test_ssim_matches_skimage(crop_pair):
    ref, est = crop_pair
    ours = M.ssim(ref, est)
    sk = sk_ssim(ref, est, channel_axis=0, data_range=1)
    assert rel_close(ours, sk), (ours, sk)
    # a non-square crop with data_range != 1 as well
    r2, e2 = ref[:5, :40, :57] * 3, est[:5, :40, :57] * 3
    assert rel_close(M.ssim(r2, e2, data_range=3.0), sk_ssim(r2, e2, channel_axis=0, data_range=3.0))


def test_torchmetrics_ssim_is_a_different_definition(crop_pair):
    """torchmetrics' SSIM (Gaussian 11x11 by default; other borders even with 7x7 uniform) != skimage's."""
    ref, est = crop_pair
    ours = M.ssim(ref, est)
    r, e = torch.tensor(ref)[None], torch.tensor(est)[None]
    gauss = tm_ssim(e, r, data_range=1.0).item()
    uniform7 = tm_ssim(e, r, data_range=1.0, gaussian_kernel=False, kernel_size=7).item()
    assert abs(ours - gauss) > 1e-4
    assert abs(ours - uniform7) > 1e-4


def test_sam_matches_torchmetrics(crop_pair):
    ref, est = crop_pair
    ours = M.sam(ref, est)
    tm = float(np.degrees(tm_sam(torch.tensor(est)[None], torch.tensor(ref)[None]).item()))
    assert rel_close(ours, tm), (ours, tm)
    ours_map = M.sam_map(ref, est)
    tm_map = np.degrees(tm_sam(torch.tensor(est)[None], torch.tensor(ref)[None], reduction="none")[0].numpy())
    np.testing.assert_allclose(ours_map, tm_map, rtol=1e-5, atol=1e-6)


def test_sam_zero_pixel_finite_where_torchmetrics_gives_nan(crop_pair):
    ref, est = crop_pair
    # CAVE has isolated zero values but no all-zero spectrum in these scenes; make one
    assert not (ref.sum(axis=0) == 0).any()
    ref = ref.copy()
    ref[:, 10, 20] = 0.0
    tm = tm_sam(torch.tensor(est)[None], torch.tensor(ref)[None]).item()
    assert np.isnan(tm)
    ours = M.sam(ref, est)
    assert np.isfinite(ours)
    assert M.sam_map(ref, est)[10, 20] == pytest.approx(90.0)


def test_rmse_matches_numpy(crop_pair):
    ref, est = crop_pair
    assert rel_close(M.rmse(ref, est), float(np.sqrt(np.mean((ref - est) ** 2))))


def test_ergas_matches_numpy_formula(crop_pair):
    ref, est = crop_pair
    mse_b = ((ref - est) ** 2).mean(axis=(1, 2))
    expected = 100 / 8 * np.sqrt(np.mean(mse_b / ref.mean(axis=(1, 2)) ** 2))
    assert rel_close(M.ergas(ref, est, 8), float(expected))


def uiqi_loop(ref: np.ndarray, est: np.ndarray, block: int) -> float:
    """Independent per-window Wang-Bovik Q (sample moments), 0/0 factors counted as 1."""
    qs = []
    for r_band, e_band in zip(ref, est, strict=True):
        h, w = r_band.shape
        for i in range(h - block + 1):
            for j in range(w - block + 1):
                x = r_band[i : i + block, j : j + block].ravel()
                y = e_band[i : i + block, j : j + block].ravel()
                mx, my = x.mean(), y.mean()
                vx = 0.0 if x.max() == x.min() else np.var(x, ddof=1)
                vy = 0.0 if y.max() == y.min() else np.var(y, ddof=1)
                cxy = 0.0 if vx == 0 or vy == 0 else np.cov(x, y, ddof=1)[0, 1]
                s = 1.0 if vx + vy == 0 else 2 * cxy / (vx + vy)
                lum = 1.0 if mx**2 + my**2 == 0 else 2 * mx * my / (mx**2 + my**2)
                qs.append(s * lum)
    return float(np.mean(qs))


def test_uiqi_matches_loop_reference(crop_pair):
    ref, est = crop_pair
    r, e = ref[:3, 40:64, 50:70], est[:3, 40:64, 50:70]
    assert rel_close(M.uiqi(r, e), uiqi_loop(r, e, 8))
    assert rel_close(M.uiqi(r, e, block=5), uiqi_loop(r, e, 5))


def test_uiqi_direct_formula_on_one_window(crop_pair):
    ref, est = crop_pair
    x, y = ref[7, :8, :8].ravel(), est[7, :8, :8].ravel()
    sxy = np.cov(x, y)[0, 1]
    q = 4 * sxy * x.mean() * y.mean() / ((x.var(ddof=1) + y.var(ddof=1)) * (x.mean() ** 2 + y.mean() ** 2))
    assert rel_close(M.uiqi(ref[7:8, :8, :8], est[7:8, :8, :8]), float(q))


# --------------------------------------------------------------------------- b) README bicubic baseline


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["x32", "x8"])
@pytest.mark.parametrize("scene", SCENES)
def test_bicubic_baseline_reproduces_readme(scenes, scene, protocol):
    x = scenes[scene]
    ratio = PROTOCOLS[protocol][0]
    lr = degrade(x, protocol)
    want_psnr, want_sam = BICUBIC_TABLE[(scene, protocol)]
    # float32 cubes (the package's dtype, and the reference's torch dtype), then float64 throughout
    ref32 = make_cube(x)
    est32 = make_cube(bicubic(lr.astype(np.float32), ratio, torch.float32))
    got = M.evaluate(ref32, est32, ratio, metrics=("psnr", "sam"))
    print(f"{scene} {protocol}: PSNR {got['psnr']:.4f} (table {want_psnr}) SAM {got['sam']:.4f} (table {want_sam})")
    assert abs(got["psnr"] - want_psnr) <= 1e-3
    assert abs(got["sam"] - want_sam) <= 1e-3
    est64 = bicubic(lr, ratio, torch.float64)
    assert abs(M.psnr(x, est64) - want_psnr) <= 1e-3
    assert abs(M.sam(x, est64) - want_sam) <= 1e-3


# --------------------------------------------------------------------------- c) edge cases


def test_identical_images(crop_pair):
    ref, _ = crop_pair
    assert M.psnr(ref, ref) == np.inf
    assert M.rmse(ref, ref) == 0.0
    assert M.ergas(ref, ref, 8) == 0.0
    assert M.ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)
    assert M.uiqi(ref, ref) == pytest.approx(1.0, abs=1e-12)
    # SAM's eps leaves a documented residue of about 8e-5/|x| degrees per pixel
    assert 0.0 <= M.sam(ref, ref) < 1e-2
    assert float(np.max(M.error_map(ref, ref))) == 0.0


def test_psnr_one_perfect_band_is_inf(crop_pair):
    ref, est = crop_pair
    est = est.copy()
    est[4] = ref[4]
    assert M.psnr(ref, est) == np.inf


def test_sam_zero_spectra_are_90_degrees():
    ref = np.zeros((4, 3, 3))
    ref[:, 0, 0] = [0.1, 0.2, 0.3, 0.4]
    est = ref.copy()
    m = M.sam_map(ref, est)
    assert np.isfinite(m).all()
    assert m[0, 0] < 1e-2
    assert np.allclose(np.delete(m.ravel(), 0), 90.0)


def test_sam_min_brightness(crop_pair):
    ref, est = crop_pair
    bright = ref.mean(axis=0) > 0.05
    assert 0 < bright.sum() < bright.size or bright.all()
    expected = float(np.asarray(M.sam_map(ref, est))[bright].mean())
    assert rel_close(M.sam(ref, est, min_brightness=0.05), expected)
    with pytest.raises(CubeError, match="min_brightness"):
        M.sam(ref, est, min_brightness=10.0)


def test_uiqi_flat_bands(crop_pair):
    ref, est = crop_pair
    r = ref[:3, :16, :16].copy()
    e = est[:3, :16, :16].copy()
    r[0] = 0.3
    e[0] = 0.3  # equal flat bands: Q = 1
    r[1] = 0.3
    e[1] = 0.6  # flat vs flat: Q = 2 c d / (c^2 + d^2)
    r[2] = 0.0  # an all-zero reference band: left out, as by PSNR
    assert M.uiqi(r[:1], e[:1]) == 1.0
    assert M.uiqi(r[1:2], e[1:2]) == pytest.approx(2 * 0.3 * 0.6 / (0.3**2 + 0.6**2))
    with pytest.raises(CubeError, match="every band"):
        M.uiqi(r[2:3], e[2:3])
    with pytest.raises(CubeError, match="every band"):
        M.uiqi(np.zeros((1, 9, 9)), np.zeros((1, 9, 9)))
    assert rel_close(M.uiqi(r, e), uiqi_loop(r[:2], e[:2], 8))
    r[2, 3, 3] = 0.5  # one non-zero pixel: flat-zero windows against textured ones count 0 again
    assert rel_close(M.uiqi(r, e), uiqi_loop(r, e, 8))


def test_ergas_skips_zero_mean_band(crop_pair):
    ref, est = crop_pair
    r, e = ref[:4].copy(), est[:4].copy()
    r[2] = 0.0
    keep = [0, 1, 3]
    assert rel_close(M.ergas(r, e, 8), M.ergas(r[keep], e[keep], 8))
    with pytest.raises(CubeError, match="mean 0"):
        M.ergas(np.zeros((2, 8, 8)), np.ones((2, 8, 8)), 8)


def test_shape_mismatch_names_both_shapes(crop_pair):
    ref, est = crop_pair
    with pytest.raises(CubeError, match=r"\(31, 128, 128\).*\(31, 128, 127\)"):
        M.psnr(ref, est[:, :, :127])
    with pytest.raises(CubeError, match="shape"):
        M.evaluate(ref[:30], est, 8)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_raises(crop_pair, bad):
    ref, est = crop_pair
    est = est.copy()
    est[3, 5, 6] = bad
    with pytest.raises(CubeError, match="non-finite.*band 3, y 5, x 6"):
        M.rmse(ref, est)
    with pytest.raises(CubeError, match="non-finite"):
        M.evaluate(ref, est, 8)  # clipping does not hide it


def test_input_kinds_and_batch_dim(crop_pair):
    ref, est = crop_pair
    base = M.evaluate(ref, est, 8)
    cube_ref = make_cube(ref, np.linspace(400, 700, 31), dtype=np.float64)
    as_cube = M.evaluate(cube_ref, make_cube(est, dtype=np.float64), 8)
    as_tensor = M.evaluate(torch.tensor(ref)[None], torch.tensor(est, dtype=torch.float64)[None], 8)
    for k in base:
        assert rel_close(base[k], as_cube[k]) and rel_close(base[k], as_tensor[k])
    # a cube with its dims in another order is the same cube
    assert rel_close(M.rmse(cube_ref.transpose("y", "x", "band"), est), base["rmse"])
    with pytest.raises(CubeError, match="shape"):
        M.rmse(np.stack([ref, ref]), np.stack([est, est]))
    with pytest.raises(CubeError, match="dims"):
        M.rmse(xr.DataArray(ref, dims=("c", "h", "w")), est)
    with pytest.raises(CubeError, match="real numbers"):
        M.rmse(ref.astype(complex), est)


def test_maps_keep_xarray_coords(crop_pair):
    ref, est = crop_pair
    cube = make_cube(ref, np.linspace(400, 700, 31)).assign_coords(y=np.arange(128) * 2.0, x=np.arange(128) + 0.5)
    for fn in (M.sam_map, M.error_map):
        m = fn(cube, est)
        assert isinstance(m, xr.DataArray) and m.dims == ("y", "x")
        np.testing.assert_array_equal(m["x"].values, np.arange(128) + 0.5)
        assert "wavelength" not in m.coords
        plain = fn(ref, est)
        assert isinstance(plain, np.ndarray) and plain.shape == (128, 128)
    np.testing.assert_allclose(M.error_map(ref, est), np.sqrt(((ref - est) ** 2).mean(axis=0)), rtol=1e-12)


def test_evaluate_clips_estimate_only(crop_pair):
    ref, est = crop_pair
    noisy = est + np.where(np.arange(est.size).reshape(est.shape) % 7 == 0, 0.8, -0.3)
    clipped = np.clip(noisy, 0, 1)
    got = M.evaluate(ref, noisy, 8)
    assert set(got) == set(M.METRICS)
    want = {
        "psnr": M.psnr(ref, clipped),
        "rmse": M.rmse(ref, clipped),
        "sam": M.sam(ref, clipped),
        "ergas": M.ergas(ref, clipped, 8),
        "ssim": M.ssim(ref, clipped),
        "uiqi": M.uiqi(ref, clipped),
    }
    for k, v in want.items():
        assert rel_close(got[k], v), k
    assert M.evaluate(ref, noisy, 8, clip=False, metrics=("rmse",))["rmse"] > got["rmse"]
    extra = M.evaluate(ref, est, 8, metrics=("sam",), sam_min_brightness=0.05)
    assert set(extra) == {"sam", "sam_bright"}


def test_bad_options_raise(crop_pair):
    ref, est = crop_pair
    with pytest.raises(ProblemError, match="unknown metric"):
        M.evaluate(ref, est, 8, metrics=("psnr", "q2n"))
    with pytest.raises(ProblemError, match="data_range"):
        M.psnr(ref, est, data_range=0)
    with pytest.raises(CubeError, match="ratio"):
        M.ergas(ref, est, -4)
    with pytest.raises(ProblemError, match="block"):
        M.uiqi(ref, est, block=1)
    with pytest.raises(CubeError, match="7x7"):
        M.ssim(ref[:, :6, :20], est[:, :6, :20])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_cpu_numbers(crop_pair):
    ref, est = crop_pair
    cpu = M.evaluate(ref, est, 8)
    gpu = M.evaluate(torch.tensor(ref, device="cuda"), torch.tensor(est, device="cuda"), 8)
    for k in cpu:
        assert rel_close(cpu[k], gpu[k], 1e-9), k


# --------------------------------------------------------------------------- d) zeroed bands (real AVIRIS data)

AVIRIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "remote" / "aviris_santabarbara_90x90x224.mat"


@pytest.fixture(scope="module")
def aviris_bicubic():
    """A 64x64 AVIRIS crop (43 of 224 bands zeroed by the provider) scaled to [0, 1], x4 + Sentinel-2A, bicubic."""
    if not AVIRIS.exists():
        pytest.skip(f"AVIRIS cube not found at {AVIRIS}")
    from fusion_explorer.cube import wavelengths
    from fusion_explorer.io import open_cube
    from fusion_explorer.methods import fuse
    from fusion_explorer.physics import make_protocol
    from fusion_explorer.problem import simulate
    from fusion_explorer.srf import get_srf

    cube = open_cube(AVIRIS).isel(y=slice(0, 64), x=slice(0, 64))
    cube = (cube / float(cube.max())).clip(0, None)
    problem = simulate(cube, make_protocol(4, sigma=1.0), srf=get_srf("sentinel-2a", wavelengths(cube)))
    fused = fuse(problem, "bicubic", device="cpu").fused
    return np.asarray(problem.truth.values, np.float64), np.asarray(fused.values, np.float64), problem, fused


def test_aviris_metrics_are_finite_and_over_the_valid_bands(aviris_bicubic):
    ref, est, problem, fused = aviris_bicubic
    zero = ~(ref != 0).reshape(ref.shape[0], -1).any(axis=1)
    assert zero.sum() >= 40 and (~zero).sum() >= 150  # the water-absorption bands are zeroed
    got = M.evaluate(problem.truth, fused, 4)
    assert all(np.isfinite(got[k]) for k in ("psnr", "sam", "ergas", "rmse", "ssim", "uiqi")), got
    assert got["psnr_bands"] == int((~zero).sum())
    # independent numpy: the estimate clipped to [0, 1], then each metric over the valid bands only
    e = np.clip(est, 0, 1)
    r, v = ref[~zero], e[~zero]
    mse = ((r - v) ** 2).mean(axis=(1, 2))
    assert rel_close(got["psnr"], float(np.mean(10 * np.log10(1.0 / mse))))
    ergas = 100 / 4 * np.sqrt(np.mean(mse / r.mean(axis=(1, 2)) ** 2))
    assert rel_close(got["ergas"], float(ergas))
    cos = (r * v).sum(0) / (np.linalg.norm(r, axis=0) * np.linalg.norm(v, axis=0) + M.SAM_EPS)
    assert rel_close(got["sam"], float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean()))
    assert rel_close(M.psnr(ref, e), got["psnr"])
    # SSIM and UIQI leave out the same bands (scikit-image over the kept bands; a zero band would read ~1)
    assert rel_close(got["ssim"], float(sk_ssim(r, v, data_range=1.0, channel_axis=0)))
    assert got["ssim"] < float(sk_ssim(ref, e, data_range=1.0, channel_axis=0))


def test_psnr_leaves_out_all_zero_reference_bands(crop_pair):
    ref, est = crop_pair
    r, e = ref[:4].copy(), est[:4].copy()
    r[2] = 0.0
    e[2] = 0.0  # a zeroed band, reproduced exactly: no signal, not an infinite PSNR
    assert rel_close(M.psnr(r, e), M.psnr(r[[0, 1, 3]], e[[0, 1, 3]]))
    got = M.evaluate(r, e, 8, metrics=("psnr",))
    assert got["psnr_bands"] == 3 and np.isfinite(got["psnr"])
    assert "psnr_bands" not in M.evaluate(ref, est, 8, metrics=("psnr",))  # nothing left out: unchanged dict
    with pytest.raises(CubeError, match="every band"):
        M.psnr(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))
