"""fusion_explorer.scenes: loading the shared scenes with band centres, crops, ground truth, the real pair.

Expected values come from the files themselves, read here independently with scipy.io, and from the
facts of ../shared/data/MANIFEST.md (band counts and ranges), never from the code under test.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import scipy.io

from fusion_explorer import bench, scenes
from fusion_explorer.cube import wavelengths
from fusion_explorer.problem import FusionProblem, simulate

from .conftest import require


def _mat(path, *names):
    raw = scipy.io.loadmat(require(path), variable_names=list(names) or None)
    return raw if not names else [raw[n] for n in names]


@pytest.mark.parametrize(
    ("name", "bands", "first", "last"),
    [
        ("samson_95x95x156.mat", 156, 401.0, 889.0),  # MANIFEST: 401–889 nm
        ("jasperRidge2_R198.mat", 198, 380.0, 2500.0),  # MANIFEST: 198 of 224 bands over 380–2500 nm
        ("paviaU_subimg_50x50x103.mat", 103, 430.0, 860.0),  # MANIFEST: 430–860 nm
        ("paris_hyperion_ali_hs_ms.mat", 128, 400.0, 2500.0),  # MANIFEST: Hyperion 400–2500 nm
    ],
)
def test_shared_scenes_load_with_band_centres(remote_dir, name, bands, first, last):
    cube = scenes.load_scene(require(remote_dir / name))
    wl = wavelengths(cube)
    assert wl is not None and wl.size == cube.sizes["band"] == bands
    assert np.all(np.diff(wl) > 0)
    assert first - 1 <= wl[0] and wl[-1] <= last + 1
    assert cube.attrs["scene"] == name
    if name.startswith("samson"):
        assert wl[0] == pytest.approx(401.0) and wl[-1] == pytest.approx(889.0)
    if name.startswith("paviaU"):
        (centres,) = _mat(remote_dir / "paviaU_band_centers_103.mat", "paviaU_spec")
        np.testing.assert_allclose(wl, centres.ravel())


def test_jasper_ridge_keeps_the_published_198_bands(remote_dir):
    path = remote_dir / "jasperRidge2_R198.mat"
    (sel,) = _mat(path, "SlectBands")
    wl = wavelengths(scenes.load_scene(path))
    removed = set(range(1, 225)) - set(sel.ravel().tolist())
    assert removed == {1, 2, 3, *range(108, 113), *range(154, 167), *range(220, 225)}
    aviris = np.linspace(380.0, 2500.0, 224)  # 224 channels over 380–2500 nm (MANIFEST)
    np.testing.assert_allclose(wl, aviris[sel.ravel() - 1])
    # the water vapour bands near 1400 nm and 1900 nm are gone: two gaps of 6 and 14 band steps
    step = (2500.0 - 380.0) / 223
    gaps = np.diff(wl)
    big = np.flatnonzero(gaps > 2 * step)
    assert len(big) == 2
    assert 1380 < wl[big[0]] < 1400 and gaps[big[0]] == pytest.approx(6 * step)
    assert 1800 < wl[big[1]] < 1850 and gaps[big[1]] == pytest.approx(14 * step)


def test_band_centre_data_says_where_its_numbers_come_from():
    table = json.loads(resources.files("fusion_explorer.data").joinpath("band_centres.json").read_text("utf-8"))
    for key in ("samson", "jasper_ridge", "hyperion", "ali"):
        assert len(table[key]["provenance"]) > 80
    assert len(table["hyperion"]["hyperion_242"]) == 242 and len(table["ali"]["wavelength"]) == 9


@pytest.mark.parametrize(("name", "p"), [("samson_95x95x156.mat", 3), ("jasperRidge2_R198.mat", 4)])
def test_reference_endmembers_and_abundances(remote_dir, name, p):
    path = remote_dir / name
    raw = _mat(path)
    cube = scenes.load_scene(path)
    truth = scenes.reference(cube)
    assert truth is not None and truth.endmembers.shape == (cube.sizes["band"], p)
    np.testing.assert_array_equal(truth.endmembers, raw["M"])
    assert truth.abundances.shape == (p, cube.sizes["y"], cube.sizes["x"])
    np.testing.assert_allclose(truth.abundances.sum(axis=0), 1.0, atol=1e-9)  # sum-to-one ground truth
    if name.startswith("samson"):
        np.testing.assert_array_equal(truth.abundances, raw["A"].transpose(2, 0, 1))
        assert truth.names == ["rock", "Tree", "water"]
    else:
        # Jasper Ridge stores pixels in MATLAB column order: the mixture of the truth reproduces the cube
        rec = np.einsum("bp,pyx->byx", truth.endmembers, truth.abundances)
        v = cube.values.astype(np.float64)
        assert np.linalg.norm(rec - v) / np.linalg.norm(v) < 0.25
        assert truth.names == ["tree", "water", "dirt", "road"]
    np.testing.assert_array_equal(scenes.reference_endmembers(cube), truth.endmembers)


def test_reference_follows_a_crop(remote_dir):
    path = remote_dir / "samson_95x95x156.mat"
    (a,) = _mat(path, "A")
    crop = scenes.crop_to_ratio(scenes.load_scene(path), 8, 64)
    assert crop.sizes["y"] == crop.sizes["x"] == 64
    y0 = (95 - 64) // 2
    truth = scenes.reference(crop)
    np.testing.assert_array_equal(truth.abundances, a[y0 : y0 + 64, y0 : y0 + 64].transpose(2, 0, 1))


def test_no_reference_for_a_cave_scene(cave_dir):
    assert scenes.reference(scenes.load_scene(require(cave_dir / "balloons_ms"))) is None


def test_paris_pair_is_a_problem_without_truth(remote_dir):
    path = remote_dir / "paris_hyperion_ali_hs_ms.mat"
    hs, ms = _mat(path, "HSim", "MSim")
    lr_hsi, hr_msi = pair = scenes.load_pair(path)
    np.testing.assert_allclose(lr_hsi.values, hs.transpose(2, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(hr_msi.values, ms.transpose(2, 0, 1), rtol=1e-6)
    ali = wavelengths(hr_msi)
    assert ali.size == 9 and np.all(np.diff(ali) > 0) and 400 < ali[0] < 500 and 2000 < ali[-1] < 2400
    assert list(hr_msi.band_name.values)[:2] == ["MS-1p", "MS-1"]
    assert pair.ratio == 1 and "no ground truth" in pair.note
    problem = FusionProblem(lr_hsi=lr_hsi, hr_msi=hr_msi)
    assert problem.truth is None and problem.srf is None and problem.psf is None


def test_remote_crops_are_the_documented_windows(remote_dir):
    crops = bench.remote_crops(remote_dir.parent)
    windows = {w["name"]: w for w in scenes.remote_crop_windows()}
    assert set(crops) == set(windows) == {"paviaU 48x48x103", "samson 64x64x156", "aviris 80x80x224",
                                          "jasper 96x96x198", "muufl 48x80x72"}
    for name, cube in crops.items():
        w = windows[name]
        raw = scipy.io.loadmat(remote_dir / w["file"])
        if name.startswith("jasper"):  # pixels in MATLAB column order of a 100x100 image
            image = raw["Y"].astype(np.float64).reshape(-1, 100, 100).transpose(2, 1, 0)
        else:
            (image,) = [v for k, v in raw.items() if not k.startswith("__") and np.ndim(v) == 3 and k != "A"]
        x = image[slice(*w["y"]), slice(*w["x"])].astype(np.float64).transpose(2, 0, 1)
        if "wavelengths" in raw:  # AVIRIS's spectrometers overlap: the reader sorts bands by wavelength
            x = x[np.argsort(raw["wavelengths"].ravel(), kind="stable")]
        if w.get("clip_negative"):
            x = np.maximum(x, 0)
        assert cube.shape == x.shape and name.endswith("x".join(map(str, (x.shape[1], x.shape[2], x.shape[0]))))
        np.testing.assert_allclose(cube.values, x / x.max(), atol=1e-6)
        assert wavelengths(cube) is not None and cube.values.min() >= 0


def test_bench_reexports_the_scenes_functions():
    assert bench.load_scene is scenes.load_scene and bench.center_crop is scenes.center_crop
    assert bench.cave_scenes is scenes.cave_scenes and bench.remote_crops is scenes.remote_crops


def test_default_scene_and_crop_to_ratio():
    cube = scenes.load_scene("default:64")
    assert cube.shape[1:] == (64, 64)
    crop = scenes.crop_to_ratio(cube, 32, 50)
    assert crop.shape[1:] == (32, 32)
    with pytest.raises(scenes.SceneError, match="smaller than the ratio"):
        scenes.crop_to_ratio(cube, 32, 20)


def test_prepare_scales_and_crops(remote_dir):
    cube = scenes.load_scene(require(remote_dir / "paviaU_subimg_50x50x103.mat"))  # 0–6614 as stored
    ready = scenes.prepare(cube, 8, 48)
    assert ready.shape[1:] == (48, 48) and ready.dtype == np.float32
    assert float(ready.max()) == pytest.approx(1.0) and "divided by its maximum" in ready.attrs["value_note"]
    with pytest.raises(scenes.SceneError, match="smaller than one LR pixel"):
        scenes.prepare(cube, 64)


def test_crops_keep_scene_pixel_coordinates_through_simulate_and_fuse(cave_dir):
    from fusion_explorer.methods import fuse

    truth = scenes.crop_to_ratio(scenes.load_scene(require(cave_dir / "balloons_ms")), 8, 64)
    y0 = (512 - 64) // 2
    assert truth.y.values[0] == y0 and truth.x.values[-1] == y0 + 63
    problem = simulate(truth, "gaussian-x8")
    np.testing.assert_array_equal(problem.hr_msi.y.values, truth.y.values)
    np.testing.assert_array_equal(problem.lr_hsi.y.values, truth.y.values[3::8])
    fused = fuse(problem, "bicubic", device="cpu").fused
    np.testing.assert_array_equal(fused.x.values, truth.x.values)
    # aligned on coordinates: the difference keeps every pixel
    assert (fused - truth).shape == truth.shape
