"""Tiled fusion on dask (fusion_explorer.tiled) against the whole-scene methods, on real CAVE crops."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
from dask.callbacks import Callback

import fusion_explorer as fe
from fusion_explorer.bench import center_crop
from fusion_explorer.errors import CubeError, ProblemError
from fusion_explorer.io import write_zarr
from fusion_explorer.metrics import evaluate
from fusion_explorer.tiled import TiledProblem, fuse_tiled, open_lazy, validate_lazy

from ._tiled import assert_matches_whole, assert_no_seams, model_psf_too_wide, whole_and_tiled

CROP = 256
#: protocol -> (crop, two tile sizes); CNMF with 40 inner iterations (default 200), to keep this file fast
CASES = {"gaussian-x8": (128, 32, 64), "mossfuse-cave-x32": (256, 64, 128)}
OPTIONS = {"inner_iterations": 40}


@pytest.fixture(scope="module")
def truth(cave_dir):
    return center_crop(fe.open_cube(cave_dir / "balloons_ms"), CROP, 1)


@pytest.fixture(scope="module")
def runs(truth):
    """Whole-scene and tiled CNMF at x8 and x32 (two tile sizes, 2 and 1 threads)."""
    return whole_and_tiled(truth, "cnmf", CASES, **OPTIONS)


@pytest.mark.parametrize("proto", list(CASES))
def test_tiled_cnmf_matches_whole_scene(runs, proto):
    # the same iterates up to rounding (the tiled run's LR-grid stages are float64)
    assert_matches_whole(runs[proto], 35)


@pytest.mark.parametrize("proto", list(CASES))
def test_independent_of_tile_size_and_workers(runs, proto):
    r = runs[proto]
    assert np.abs(r["small"].values - r["large"].values).max() < 1e-5


def test_no_seams(runs):
    assert_no_seams(runs["gaussian-x8"])


def test_bicubic_tiled_is_whole_scene(truth):
    problem = fe.simulate(truth, "mossfuse-cave-x32")
    whole = fe.fuse(problem, "bicubic", device="cpu").fused.values
    tiled = fuse_tiled(problem, "bicubic", tile=96).values  # 96 is rounded down to 64 at x32
    assert np.abs(whole - tiled).max() < 1e-6


def test_deterministic_by_seed(runs):
    problem = runs["gaussian-x8"]["problem"]
    again = fuse_tiled(problem, "cnmf", tile=32, workers=2, seed=0, **OPTIONS)
    assert np.array_equal(again.values, runs["gaussian-x8"]["small"].values)


def test_lr_grid_stages_stream_in_blocks(runs, monkeypatch):
    """The LR-grid stages (VD, VCA, the HSI unmixing) hold the LR-HSI once and stream over pixel blocks:
    the 16x16 LR grid in blocks of 100 pixels gives what one block gives, to float64 rounding."""
    from fusion_explorer.methods.unmixing import estimate

    problem = runs["gaussian-x8"]["problem"]
    lr = problem.lr_hsi.values.reshape(problem.hsi_bands, -1)
    whole_vd, (whole_w, whole_idx) = estimate.virtual_dimensionality(lr), estimate.vca(lr, 12, seed=0)
    monkeypatch.setattr(estimate, "BLOCK_PIXELS", 100)
    assert lr.shape[1] > 2 * estimate.BLOCK_PIXELS
    assert estimate.virtual_dimensionality(lr) == whole_vd
    w, idx = estimate.vca(lr, 12, seed=0)
    assert np.array_equal(idx, whole_idx) and np.array_equal(w, whole_w)
    blocked = fuse_tiled(problem, "cnmf", tile=32, workers=2, **OPTIONS)
    assert np.abs(blocked.values - runs["gaussian-x8"]["small"].values).max() < 1e-5


@pytest.fixture(scope="module")
def four_band(truth):
    """Whole-scene and tiled CNMF at x8 with a 4-band Gaussian MSI (W_m moves in the MSI stage)."""
    from fusion_explorer.srf.library import gaussian_srf

    srf = gaussian_srf([450, 520, 590, 660], 60, truth.wavelength.values, name="4-band")
    return whole_and_tiled(truth, "cnmf", {"gaussian-x8": CASES["gaussian-x8"]}, srf=srf, **OPTIONS)["gaussian-x8"]


def test_four_band_msi_replays_the_whole_scene_w_m_path(four_band):
    """The whole-scene MSI stage updates W_m with an MSI of more than 3 bands (a scene-wide sum per update):
    the tiled run computes that path once (on the whole scene: it is below TRAJECTORY_PIXELS) and every tile
    replays it, so the result is the whole-scene one, whatever the tile size."""
    assert four_band["problem"].msi_bands == 4
    assert_matches_whole(four_band, 35)
    assert np.abs(four_band["small"].values - four_band["large"].values).max() < 1e-5


def test_four_band_msi_w_m_path_from_a_sample(four_band, monkeypatch):
    """Past TRAJECTORY_PIXELS the W_m path comes from a spread of windows: on 16 windows of 16x16 pixels
    (a quarter of the 128x128 crop) the result stays within 0.05 dB of the whole-scene run, and it is
    not the fixed-W_m result."""
    from fusion_explorer.tiled import cnmf_stages
    from fusion_explorer.tiled.engine import TileGrid

    problem = four_band["problem"]
    monkeypatch.setattr(cnmf_stages, "TRAJECTORY_PIXELS", 128 * 128 // 4)
    monkeypatch.setattr(cnmf_stages, "TRAJECTORY_WINDOW", 16)
    sample = cnmf_stages.trajectory_tiles(TileGrid.for_psf(problem.hr_size, problem.ratio, 32, problem.psf.shape))
    assert len(sample) == 16 and {t.y1 - t.y0 for t in sample} == {16}
    sampled = fuse_tiled(problem, "cnmf", tile=32, workers=2, **OPTIONS)
    ratio, truth = problem.ratio, four_band["truth"]
    psnr = {k: evaluate(truth, v, ratio)["psnr"] for k, v in (("whole", four_band["whole"]), ("sampled", sampled))}
    assert abs(psnr["sampled"] - psnr["whole"]) < 0.05
    # W_m fixed, as before the path was replayed
    monkeypatch.setattr(cnmf_stages, "msi_stage_plan", lambda loops, w_m0, *_: cnmf_stages.fixed_plan(loops, w_m0))
    fixed = fuse_tiled(problem, "cnmf", tile=32, workers=2, **OPTIONS)
    whole = four_band["whole"].values
    assert np.abs(sampled.values - whole).max() < np.abs(fixed.values - whole).max()


def test_zarr_output_has_wavelengths_and_provenance(truth, tmp_path):
    problem = fe.simulate(truth, "gaussian-x8")
    lazy = fuse_tiled(problem, "bicubic", tile=64, out=tmp_path / "f.zarr")
    assert isinstance(lazy.data, da.Array)  # returned lazily from the store
    back = fe.open_cube(tmp_path / "f.zarr")
    np.testing.assert_allclose(back["wavelength"].values, truth["wavelength"].values)
    assert back.attrs["method"] == "bicubic" and back.attrs["ratio"] == 8
    assert back.attrs["srf"] == problem.srf.name and "halo" in back.attrs["tiled"]
    assert back.attrs["scene"] == "balloons_ms"
    np.testing.assert_array_equal(back.values, lazy.values)
    with pytest.raises(fe.errors.WriteError):  # no overwrite without asking
        fuse_tiled(problem, "bicubic", tile=64, out=tmp_path / "f.zarr")


def test_lazy_validation_does_not_load_the_cube(tmp_path):
    rng = np.random.default_rng(0)
    cube = fe.cube.make_cube(rng.random((8, 512, 512), dtype=np.float32), np.linspace(400, 700, 8))
    cube.values[3, 100, 100] = np.nan
    path = write_zarr(cube.chunk({"band": -1, "y": 128, "x": 128}), tmp_path / "c.zarr")
    lazy = open_lazy(path)
    assert isinstance(lazy.data, da.Array)
    largest = [0]

    class Sizes(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            largest[0] = max(largest[0], getattr(result, "nbytes", 0))

    with Sizes(), pytest.raises(CubeError, match="1 non-finite"):
        validate_lazy(lazy, what="HR-MSI", compute=lambda *c: dask.compute(*c, scheduler="sync"))
    whole = 8 * 512 * 512 * 4
    assert 0 < largest[0] <= whole // 8  # no task held more than a few chunks


def test_lazy_inputs_from_zarr_match_in_memory(truth, tmp_path):
    problem = fe.simulate(truth, "gaussian-x8")
    lr = open_lazy(write_zarr(problem.lr_hsi, tmp_path / "lr.zarr"))
    msi = open_lazy(write_zarr(problem.hr_msi, tmp_path / "msi.zarr"))
    lazy_problem = TiledProblem(lr, msi, problem.srf, psf=problem.psf, offset=problem.offset)
    a = fuse_tiled(lazy_problem, "cnmf", tile=128, inner_iterations=20)
    b = fuse_tiled(problem, "cnmf", tile=128, inner_iterations=20)
    assert np.abs(a.values - b.values).max() < 1e-5


def test_local_cluster_matches_threads(truth):
    """Process workers (a distributed.LocalCluster) give the threaded scheduler's numbers."""
    problem = fe.simulate(center_crop(truth, 64, 1), "gaussian-x8")
    threads = fuse_tiled(problem, "cnmf", tile=32, inner_iterations=10)
    procs = fuse_tiled(problem, "cnmf", tile=32, inner_iterations=10, scheduler="processes", workers=2)
    assert np.abs(threads.values - procs.values).max() < 1e-5


def test_a_scheduler_address_and_a_client_match_threads(truth):
    """The same call on any dask cluster: by its scheduler's address (the runner connects, and disconnects at
    the end) or through a ``distributed.Client`` the caller holds (left open), with the threaded numbers."""
    from distributed import Client, LocalCluster

    problem = fe.simulate(center_crop(truth, 64, 1), "gaussian-x8")
    threads = fuse_tiled(problem, "cnmf", tile=32, inner_iterations=10)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        by_address = fuse_tiled(problem, "cnmf", tile=32, inner_iterations=10, scheduler=cluster.scheduler_address)
        with Client(cluster) as client:
            by_client = fuse_tiled(problem, "cnmf", tile=32, inner_iterations=10, scheduler=client)
            assert client.status == "running"  # the caller's client is not closed
            assert [c for c in cluster.scheduler.clients if c != "fire-and-forget"] == [client.id]  # the other left
    for cube in (by_address, by_client):
        assert np.abs(threads.values - cube.values).max() < 1e-5


def test_refusals_are_one_clear_error(truth):
    problem = fe.simulate(center_crop(truth, 128, 1), "gaussian-x8")
    with pytest.raises(ProblemError, match="no tiled version"):
        fuse_tiled(problem, "mossfuse", tile=64)
    with pytest.raises(ProblemError, match="does not take"):
        fuse_tiled(problem, "cnmf", tile=64, msi_pyramid=[[1, 2]])
    bad = problem.hr_msi.copy(data=np.where(np.arange(128)[None, None, :] < 64, -1.0, problem.hr_msi.values))
    with pytest.raises(CubeError, match="negative"):
        fuse_tiled(TiledProblem(problem.lr_hsi, xr.DataArray(bad, dims=bad.dims), problem.srf, psf=problem.psf),
                   "bicubic", tile=64)


def test_consistency_projection_tile_wise(truth):
    """CNMF's consistency projection (MSI per pixel, HSI by CG on the LR grid with S Sᵀ applied tile by
    tile) gives the whole-scene projection's cube, whatever the tile size."""
    scene = center_crop(truth, 128, 1)
    problem = fe.simulate(scene, "gaussian-x8")
    options = {"inner_iterations": 30, "consistency": "projection"}
    whole = fe.fuse(problem, "cnmf", device="cpu", **options).fused
    a = fuse_tiled(problem, "cnmf", tile=32, **options)
    b = fuse_tiled(problem, "cnmf", tile=64, workers=1, **options)
    plain = fuse_tiled(problem, "cnmf", tile=32, inner_iterations=30)
    psnr = {k: evaluate(scene, z, 8)["psnr"] for k, z in (("whole", whole), ("tiled", a), ("plain", plain))}
    assert psnr["tiled"] > psnr["plain"] + 1  # the projection does its job
    assert abs(psnr["tiled"] - psnr["whole"]) < 0.05
    assert np.abs(a.values - b.values).max() < 1e-5


@pytest.mark.parametrize("fmt", ["zarr", "netcdf", "envi"])
def test_open_lazy_reads_what_open_cube_reads(truth, tmp_path, fmt):
    from fusion_explorer.io import write_envi, write_netcdf

    cube = center_crop(truth, 64, 1)
    path = {"zarr": lambda: write_zarr(cube, tmp_path / "c.zarr"),
            "netcdf": lambda: write_netcdf(cube, tmp_path / "c.nc"),
            "envi": lambda: write_envi(cube, tmp_path / "c.hdr")}[fmt]()
    lazy = open_lazy(path, chunk=32)
    assert isinstance(lazy.data, da.Array) and lazy.data.chunksize[1] <= 64
    eager = fe.open_cube(path)
    np.testing.assert_allclose(lazy.values, eager.values, rtol=1e-6)
    np.testing.assert_allclose(lazy["wavelength"].values, eager["wavelength"].values)


def test_band_blocked_cg_matches_all_bands_at_once(truth, monkeypatch, tmp_path):
    """The consistency CG solves its per-band systems a block of bands at a time (memory: one block's
    vectors), reading r from and writing u to scratch stores on disk; on a real LR-HSI the solution is
    that of all bands in one system, to the CG's tolerance, and each band's solution does not depend
    on the block it is solved in."""
    from fusion_explorer.tiled import TileGrid
    from fusion_explorer.tiled import consistency as tc

    problem = fe.simulate(center_crop(truth, 256, 1), "gaussian-x8")
    r = problem.lr_hsi.values.astype(np.float64)
    spatial = TiledProblem.from_problem(problem).spatial_operator()
    grid = TileGrid.for_psf(problem.hr_size, 8, 64, problem.psf.shape, 3)
    r_store, u_store = tc.lr_store(tmp_path, "r", r.shape[0], grid), tc.lr_store(tmp_path, "u", r.shape[0], grid)
    assert u_store.band_chunk == tc.BAND_BLOCK < r.shape[0]
    r_store.write_box(slice(None), slice(None), r)
    stored = tc._solve_normal(r_store, grid, spatial, out=u_store).read(slice(None), slice(None))
    blocked = tc._solve_normal(r, grid, spatial)
    monkeypatch.setattr(tc, "BAND_BLOCK", r.shape[0])
    at_once = tc._solve_normal(r, grid, spatial)
    residual = tc._normal(blocked, grid, spatial, tc._shift(spatial, r.shape[1:], tc.DAMPING))
    assert np.abs(residual - r).max() < 1e-3 * np.abs(r).max()  # it solves the system
    assert np.abs(blocked - at_once).max() < 1e-12 * np.abs(at_once).max()
    np.testing.assert_array_equal(stored, blocked)


def test_tile_task_results_own_their_memory():
    """What a tile task returns holds no view of a torch tensor or of a larger array (such views kept
    gigabytes of freed task memory resident: see tiled.engine.tile_task)."""
    from fusion_explorer.tiled.engine import tile_task

    big = np.arange(1000.0)

    @tile_task
    def task():
        t = torch.arange(12.0)
        return t.numpy(), (big[:10], [t.double().numpy()]), 3.0, np.ones(3)

    a, (b, [c]), x, d = task()
    assert a.base is None and b.base is None and c.base is None and d.base is None
    np.testing.assert_array_equal(a, np.arange(12.0))
    np.testing.assert_array_equal(b, big[:10])
    assert x == 3.0


def test_consistency_projection_tile_wise_when_the_images_disagree(truth, monkeypatch):
    """With a PSF model that is not the images' (30 % too wide), the tiled projection's step 3 gives the
    whole-scene cube; step 3 is what keeps the projection from losing dB there."""
    from fusion_explorer.methods.unmixing import projection

    scene = center_crop(truth, 128, 1)
    problem = model_psf_too_wide(fe.simulate(scene, "gaussian-x8"))
    options = {"inner_iterations": 30, "consistency": "projection"}
    whole = fe.fuse(problem, "cnmf", device="cpu", **options).fused
    tiled = fuse_tiled(problem, "cnmf", tile=32, **options)
    psnr = {k: evaluate(scene, z, 8)["psnr"] for k, z in (("whole", whole), ("tiled", tiled))}
    assert abs(psnr["tiled"] - psnr["whole"]) < 0.05
    assert np.sqrt(np.mean((tiled.values - whole.values) ** 2)) < 1e-4 * np.sqrt(np.mean(whole.values**2))
    monkeypatch.setattr(projection, "MSI_LAST", False)
    assert evaluate(scene, fuse_tiled(problem, "cnmf", tile=32, **options), 8)["psnr"] < psnr["tiled"] - 1.0


def test_an_unknown_psf_is_fitted_on_a_central_window(truth, monkeypatch):
    """Without a PSF the tiled run fits the whole-scene methods' blind Gaussian on the central
    ``PSF_WINDOW`` LR pixels a side: on a scene no larger than the window it is the whole-scene run's own fit
    (so tiled = whole, as with a known PSF), on a larger one a fit of the window that finds the PSF that made
    the images; the output's attrs say what was fitted, and where."""
    from fusion_explorer.problem import FusionProblem
    from fusion_explorer.tiled import problem as tiled_problem

    given = fe.simulate(center_crop(truth, 128, 1), "gaussian-x8")
    hidden = FusionProblem(given.lr_hsi, given.hr_msi, srf=given.srf, ratio=8)
    whole = fe.fuse(hidden, "cnmf", device="cpu", inner_iterations=20)
    tiled = fuse_tiled(hidden, "cnmf", tile=64, workers=2, inner_iterations=20)
    assert whole.params["psf"].startswith("estimated Gaussian")
    assert tiled.attrs["psf"].startswith(whole.params["psf"].split(" (")[0])  # the same sigma and offset
    assert "fitted on the whole scene" in tiled.attrs["psf"]
    np.testing.assert_allclose(tiled.values, whole.fused.values, atol=1e-4)

    big = fe.simulate(truth, "gaussian-x8")  # 256² HR, 32² LR: a window of 16² LR pixels is a quarter of it
    monkeypatch.setattr(tiled_problem, "PSF_WINDOW", 16)
    fitted = TiledProblem.from_problem(FusionProblem(big.lr_hsi, big.hr_msi, srf=big.srf, ratio=8))
    fitted = fitted.with_estimated_psf()
    print("\n", fitted.attrs["psf"])
    assert "fitted on the central 128x128 HR pixels" in fitted.attrs["psf"]
    assert fitted.offset == big.offset
    true = big.sensors.spatial().kernel.numpy()
    assert fitted.psf.shape == true.shape and np.abs(fitted.psf - true).sum() < 0.1
    assert fitted.psf_misfit < 0.01
