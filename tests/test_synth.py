"""Spectral dead leaves and the training pairs made from them (fusion_explorer.synth)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from fusion_explorer.physics import simulate
from fusion_explorer.synth import (
    CAVE_WAVELENGTHS,
    SHAPES,
    WAVELENGTH_GRIDS,
    DeadLeavesDataset,
    Degradation,
    dead_leaves,
    dead_leaves_scene,
    default_scene,
    measured_reflectances,
    power_law_radii,
    random_degradation,
    random_spectra,
    random_training_problem,
    spectral_dead_leaves,
    training_batch,
    training_sample,
)
from fusion_explorer.synth.spectra import MEASURED_GRID

GRIDS = {
    "cave": CAVE_WAVELENGTHS,
    "rosis": WAVELENGTH_GRIDS["rosis"],
    "aviris": WAVELENGTH_GRIDS["aviris"],
    "nir-50": np.linspace(450.0, 950.0, 50),
    "swir-only": np.linspace(1000.0, 2400.0, 60),
}


# --- spectra ---------------------------------------------------------------------------------


def test_measured_library_holds_the_colour_science_sets():
    values, names = measured_reflectances()
    assert values.shape == (len(names), MEASURED_GRID.size) and len(names) > 300
    sets = {n.split("/")[0] for n in names}
    assert {"ColorChecker N Ohta", "RAW to ACES", "TCS CIE 2017"} <= sets
    finite = values[np.isfinite(values)]
    assert finite.min() >= 0 and finite.max() <= 1
    assert np.isfinite(values[:, (MEASURED_GRID >= 400) & (MEASURED_GRID <= 700)]).all()


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_random_spectra_are_reflectances_on_any_grid(grid):
    wl = GRIDS[grid]
    r, names = random_spectra(wl, 40, np.random.default_rng(1), measured_fraction=0.6, vegetation_fraction=0.2)
    assert r.shape == (40, wl.size) and len(names) == 40
    assert np.isfinite(r).all() and r.min() >= 0 and r.max() <= 1
    assert r.std(axis=1).max() > 0.01  # not all flat


def test_measured_spectra_are_kept_inside_and_continued_smoothly_outside():
    wl = WAVELENGTH_GRIDS["aviris"]  # ~9.4 nm steps, 400–2500 nm
    r, names = random_spectra(wl, 30, np.random.default_rng(5), measured_fraction=1.0, vegetation_fraction=0.0)
    values, all_names = measured_reflectances()
    inside = wl <= 700
    for row, name in zip(r, names, strict=True):
        ref = values[all_names.index(name)]
        ok = np.isfinite(ref)
        expected = np.interp(wl[inside], MEASURED_GRID[ok], ref[ok])
        np.testing.assert_allclose(row[inside], expected, atol=1e-6)
    # the continuation leaves the last measured value (<= 780 nm) without a jump: steps stay small
    step = np.abs(np.diff(r[:, (wl > 770) & (wl < 1000)], axis=1)).max()
    assert step < 0.1


# --- the dead leaves geometry ----------------------------------------------------------------


def _fit_power_law(radii: np.ndarray, r_min: float, r_max: float) -> float:
    """Slope of log density vs log r from a log-binned histogram."""
    edges = np.geomspace(r_min, r_max, 16)
    counts, _ = np.histogram(radii, edges)
    density = counts / np.diff(edges)
    centres = np.sqrt(edges[:-1] * edges[1:])
    keep = counts >= 20
    return float(np.polyfit(np.log(centres[keep]), np.log(density[keep]), 1)[0])


@pytest.mark.parametrize("alpha", [2.5, 3.0, 3.5])
def test_leaf_sizes_follow_the_power_law(alpha):
    rng = np.random.default_rng(0)
    radii = np.concatenate([dead_leaves(96, rng, alpha=alpha, r_min=1.0, r_max=48.0).radius for _ in range(4)])
    assert radii.min() >= 1.0 and radii.max() <= 48.0
    assert abs(_fit_power_law(radii, 1.0, 48.0) + alpha) < 0.2
    # the sampler alone, with many draws
    r = power_law_radii(200_000, rng, alpha, 2.0, 200.0)
    assert abs(_fit_power_law(r, 2.0, 200.0) + alpha) < 0.1


def test_dead_leaves_cover_the_image_front_to_back():
    leaves = dead_leaves((48, 80), np.random.default_rng(2), r_min=1.0)
    assert leaves.labels.shape == (48, 80)
    assert leaves.labels.max() < leaves.n_leaves  # every pixel covered by a drawn leaf
    # a visible leaf covers its own centre unless a leaf in front of it (smaller index) does
    for lab in np.unique(leaves.labels)[:200]:
        cy, cx = int(round(leaves.centre_y[lab])), int(round(leaves.centre_x[lab]))
        if 0 <= cy < 48 and 0 <= cx < 80 and leaves.shape[lab] == SHAPES.index("disc"):
            assert leaves.labels[cy, cx] <= lab
    # the front-most leaves take the most area: the first 10 % of leaves cover more than the last half
    visible = np.bincount(leaves.labels.ravel(), minlength=leaves.n_leaves)
    n = leaves.n_leaves
    assert visible[: n // 10].sum() > visible[n // 2 :].sum()


def test_each_shape_kind_rasterises_to_its_area():
    rng = np.random.default_rng(3)
    for shape in SHAPES:
        for _ in range(20):  # until the front leaf lies wholly inside the image
            leaves = dead_leaves(128, rng, alpha=3.0, r_min=20.0, r_max=20.0, shapes=(shape,))
            cy, cx, e = leaves.centre_y[0], leaves.centre_x[0], leaves.extent[0]
            if e < cy < 127 - e and e < cx < 127 - e:
                break
        else:
            pytest.fail(f"no {shape} leaf fell inside the image")
        area = (leaves.labels == 0).sum()  # the front leaf is seen whole
        assert abs(area / (np.pi * 20.0**2) - 1) < 0.05, shape


# --- scenes ----------------------------------------------------------------------------------


def test_same_seed_same_scene_other_seed_other_scene():
    a = spectral_dead_leaves(64, seed=11)
    b = spectral_dead_leaves(64, seed=11)
    c = spectral_dead_leaves(64, seed=12)
    assert np.array_equal(a.cube.values, b.cube.values) and np.array_equal(a.abundances, b.abundances)
    assert not np.array_equal(a.cube.values, c.cube.values)
    assert np.array_equal(spectral_dead_leaves(32, seed=(4, 2)).cube, spectral_dead_leaves(32, seed=(4, 2)).cube)


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_scene_shapes_and_range_on_any_grid(grid):
    wl = GRIDS[grid]
    scene = spectral_dead_leaves((40, 56), wl, seed=1, n_endmembers=5)
    assert scene.cube.shape == (wl.size, 40, 56) and scene.cube.dims == ("band", "y", "x")
    np.testing.assert_allclose(scene.cube.wavelength.values, wl)
    assert scene.endmembers.shape == (wl.size, 5) and scene.abundances.shape == (5, 40, 56)
    v = scene.cube.values
    assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1
    assert scene.cube.attrs["synth_n_endmembers"] == 5 and "endmember_sources" in scene.cube.attrs


def test_scene_is_a_nonnegative_mixture_of_its_endmembers():
    scene = spectral_dead_leaves(64, seed=7, n_endmembers=6, texture=0.5, abundance_variation=0.8, edge_sigma=1.0)
    a = scene.abundances
    assert a.min() >= 0 and a.sum(axis=0).max() <= 1 + 1e-5
    recon = np.einsum("bp,pyx->byx", scene.endmembers, a)
    np.testing.assert_allclose(scene.cube.values, recon, atol=1e-5)


def test_without_texture_leaves_are_flat_and_in_the_cone_of_the_endmembers():
    scene = spectral_dead_leaves(64, seed=8, n_endmembers=5, texture=0.0, abundance_variation=0.0, edge_sigma=0.0)
    x = scene.cube.values.reshape(scene.cube.shape[0], -1)
    labels = scene.leaves.labels.ravel()
    # piecewise constant: one spectrum per visible leaf
    for lab in np.unique(labels)[:50]:
        pix = x[:, labels == lab]
        assert np.abs(pix - pix[:, :1]).max() < 1e-6
    # every pixel is a convex combination of the endmembers (NNLS fits it exactly, weights sum to 1)
    e = scene.endmembers.astype(np.float64)
    for j in np.random.default_rng(0).choice(x.shape[1], 60, replace=False):
        w, resid = nnls(e, x[:, j].astype(np.float64))
        assert resid < 1e-4 * max(1.0, np.linalg.norm(x[:, j]))
    a = scene.abundances.reshape(5, -1)
    np.testing.assert_allclose(a.sum(axis=0), 1.0, atol=1e-5)
    assert (np.count_nonzero(a > 1e-7, axis=0) <= 3).all()  # at most max_mixed endmembers per leaf


def test_texture_and_soft_edges_add_spatial_detail():
    flat = spectral_dead_leaves(64, seed=9, texture=0.0, abundance_variation=0.0, edge_sigma=0.0)
    rich = spectral_dead_leaves(64, seed=9, texture=0.5, abundance_variation=0.6, edge_sigma=1.0)
    labels = flat.leaves.labels
    big = np.bincount(labels.ravel()).argmax()
    inside = labels == big
    assert np.ptp(flat.cube.values[:, inside], axis=1).max() < 1e-6
    assert rich.cube.values[:, inside].std(axis=1).max() > 1e-3
    # soft edges: the largest jump between neighbours is smaller with a blur
    jump = lambda c: np.abs(np.diff(c.values, axis=2)).max()  # noqa: E731
    assert jump(spectral_dead_leaves(64, seed=9, edge_sigma=1.5).cube) < jump(flat.cube)


def test_spectral_variability_lifts_the_scene_out_of_its_endmembers_span():
    """v > 0: the spectra drift smoothly over the image, so the cube is far from rank p (as a real scene
    is) while staying a reflectance; v = 0 (the default) is bit-identical to the scene without it."""
    plain = spectral_dead_leaves(64, seed=4, n_endmembers=4)
    assert np.array_equal(plain.cube.values, spectral_dead_leaves(64, seed=4, n_endmembers=4,
                                                                  spectral_variability=0.0).cube.values)
    drift = spectral_dead_leaves(64, seed=4, n_endmembers=4, spectral_variability=0.3)
    assert drift.cube.attrs["synth_spectral_variability"] == 0.3
    v = drift.cube.values
    assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1

    def tail_energy(cube):  # energy outside the best rank-4 subspace, relative
        s = np.linalg.svd(cube.reshape(cube.shape[0], -1).astype(np.float64), compute_uv=False)
        return (s[4:] ** 2).sum() / (s**2).sum()

    assert tail_energy(plain.cube.values) < 1e-10
    assert tail_energy(v) > 1e-4
    # smooth over the image: neighbouring pixels' drift factors differ far less than distant ones'
    ratio = v / np.maximum(plain.cube.values, 1e-6)
    near = np.nanmedian(np.abs(np.diff(np.log(np.maximum(ratio, 1e-6)), axis=2)))
    far = np.nanmedian(np.abs(np.log(np.maximum(ratio[..., :32], 1e-6)) - np.log(np.maximum(ratio[..., 32:], 1e-6))))
    assert near < 0.2 * far


def test_dead_leaves_scene_and_default_scene_keep_their_signatures():
    cube = dead_leaves_scene(48, np.linspace(420, 680, 27), seed=3, n_materials=4)
    assert cube.shape == (27, 48, 48)
    assert cube.attrs["synth_n_endmembers"] == 4
    d = default_scene(96, seed=1)
    assert d.shape == (31, 96, 96) and d.attrs["scene"] == "default (synthetic dead leaves)"
    np.testing.assert_allclose(d.wavelength.values, np.arange(400, 701, 10))
    assert np.array_equal(d.values, default_scene(96, seed=1).values)
    assert 0 <= float(d.min()) and float(d.max()) <= 1 and float(d.std()) > 0.02


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="increasing"):
        spectral_dead_leaves(16, [500.0, 400.0, 600.0])
    with pytest.raises(ValueError, match="shapes"):
        dead_leaves(16, np.random.default_rng(0), shapes=("star",))
    with pytest.raises(ValueError, match="texture"):
        spectral_dead_leaves(16, texture=1.5)
    with pytest.raises(ValueError, match="ratio"):
        random_degradation("cave", 0, size=12, ratios=(8,))


# --- degradations and training pairs ---------------------------------------------------------


def test_random_degradations_respect_size_and_range():
    seen_srfs, ratios = set(), set()
    for seed in range(40):
        deg = random_degradation("cave", seed, size=64)
        assert deg.ratio in (4, 8, 16) and 64 // deg.ratio >= 4
        assert deg.kernel_size % 2 == 1 and deg.offset == (deg.ratio - 1) // 2
        assert 0.5 <= deg.psf_sigma <= max(1.0, deg.ratio / 2)
        np.testing.assert_allclose(deg.srf.wavelength, CAVE_WAVELENGTHS)
        assert deg.srf.msi_bands >= 3
        seen_srfs.add(deg.srf.name.split("-")[0])
        ratios.add(deg.ratio)
    assert ratios == {4, 8, 16} and "gaussian" in seen_srfs and len(seen_srfs) >= 4
    big = {random_degradation("cave", s, size=128).ratio for s in range(40)}
    assert 32 in big
    # an SRF drawn for the SWIR never has a band outside the cube
    deg = random_degradation("aviris", 3, size=64, gaussian_srf_probability=0.0)
    assert deg.srf.hsi_bands == 224


def test_training_sample_is_deterministic_and_physical():
    a, b = training_sample(5, size=32), training_sample(5, size=32)
    for name in ("truth", "lr_hsi", "hr_msi", "srf", "psf", "endmembers", "abundances"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = training_sample(6, size=32)
    assert not torch.equal(a.truth, c.truth)
    for t in (a.truth, a.lr_hsi, a.hr_msi, a.abundances, a.endmembers):
        assert torch.isfinite(t).all() and t.min() >= 0
    torch.testing.assert_close(a.srf.sum(dim=1), torch.ones(a.srf.shape[0]))
    torch.testing.assert_close(a.psf.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("grid", ["cave", "rosis", "aviris"])
def test_training_sample_shapes(grid):
    s = training_sample(1, size=64, wavelength=grid)
    b = WAVELENGTH_GRIDS[grid].size
    m, p, r = s.srf.shape[0], s.endmembers.shape[1], s.ratio
    assert s.truth.shape == (b, 64, 64) and s.lr_hsi.shape == (b, 64 // r, 64 // r)
    assert s.hr_msi.shape == (m, 64, 64) and s.srf.shape == (m, b)
    assert s.endmembers.shape == (b, p) and s.abundances.shape == (p, 64, 64)
    assert s.psf.shape[0] == s.psf.shape[1] == s.degradation.kernel_size and s.wavelength.shape == (b,)


def test_random_wavelength_grids_vary_and_are_reproducible():
    sizes = {training_sample(s, size=32, wavelength="random").truth.shape[0] for s in range(8)}
    assert len(sizes) > 2
    assert torch.equal(
        training_sample(3, size=32, wavelength="random").truth, training_sample(3, size=32, wavelength="random").truth
    )


def test_degradation_matches_physics_simulate():
    s = training_sample(2, size=64, dtype=torch.float64)
    deg = s.degradation
    cube = s.problem().truth
    for snr in (None, 30.0):
        d = Degradation(deg.ratio, deg.psf_sigma, deg.kernel_size, deg.offset, deg.srf, snr, snr)
        lr, msi = d.apply(torch.as_tensor(cube.values, dtype=torch.float64), torch.Generator().manual_seed(17))
        ref = simulate(cube, d.protocol(), srf=d.srf, seed=17)
        np.testing.assert_allclose(lr.numpy(), ref.lr_hsi.values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(msi.numpy(), ref.hr_msi.values, rtol=1e-5, atol=1e-6)


def test_noiseless_problem_is_what_simulate_makes_of_its_truth():
    problem = random_training_problem(4, size=64, noiseless_probability=1.0)
    assert problem.truth is not None and problem.srf is not None and problem.psf is not None
    ref = simulate(problem.truth, problem.protocol, srf=problem.srf)
    assert ref.ratio == problem.ratio and ref.offset == problem.offset
    np.testing.assert_allclose(problem.lr_hsi.values, ref.lr_hsi.values, atol=1e-6)
    np.testing.assert_allclose(problem.hr_msi.values, ref.hr_msi.values, atol=1e-6)
    np.testing.assert_array_equal(problem.lr_hsi.y.values, ref.lr_hsi.y.values)
    np.testing.assert_allclose(problem.psf, ref.psf)


def test_noise_follows_the_requested_snr():
    s = training_sample(8, size=64, snr_hsi_db=20.0, snr_msi_db=35.0, noiseless_probability=0.0, dtype=torch.float64)
    clean_lr, clean_msi = Degradation(
        s.ratio, s.degradation.psf_sigma, s.degradation.kernel_size, s.offset, s.degradation.srf
    ).apply(s.truth)
    for noisy, clean, snr in ((s.lr_hsi, clean_lr, 20.0), (s.hr_msi, clean_msi, 35.0)):
        measured = 10 * torch.log10(clean.pow(2).mean() / (noisy - clean).pow(2).mean())
        assert abs(float(measured) - snr) < 1.5  # clipping at 0 removes a little noise


def test_training_batch_stacks_one_sensor_and_dataset_is_deterministic():
    batch = training_batch(3, 4, size=32, wavelength="rosis")
    n, b = 4, WAVELENGTH_GRIDS["rosis"].size
    m, r = batch.srf.shape[0], batch.ratio
    p = batch.endmembers.shape[-1]
    assert batch.truth.shape == (n, b, 32, 32) and batch.lr_hsi.shape == (n, b, 32 // r, 32 // r)
    assert batch.hr_msi.shape == (n, m, 32, 32) and batch.abundances.shape == (n, p, 32, 32)
    assert batch.snr_hsi_db.shape == (n,) and len(batch) == n
    one = batch.sample(2)
    assert one.truth.shape == (b, 32, 32) and one.problem().hsi_bands == b
    ds = DeadLeavesDataset(5, seed=9, batch_size=2, size=32)
    assert len(ds) == 5
    again = training_batch((9, 1), 2, size=32)
    assert torch.equal(ds[1].truth, again.truth) and torch.equal(ds[1].hr_msi, again.hr_msi)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, collate_fn=lambda x: x)
    first = next(iter(loader))
    assert torch.equal(first.lr_hsi, ds[0].lr_hsi)


def test_named_protocols_are_drawn_when_asked():
    from fusion_explorer.physics import PROTOCOLS

    named = {(p.ratio, p.sigma, p.kernel_size, p.offset) for p in PROTOCOLS.values()}
    drawn = set()
    for seed in range(12):
        d = random_degradation("cave", seed, size=128, named_protocol_probability=1.0)
        drawn.add((d.ratio, d.psf_sigma, d.kernel_size, d.offset))
    assert drawn == named
    # at 64 x 64 the x32 protocol would leave 2 x 2 LR pixels: only gaussian-x8 fits
    d = random_degradation("cave", 0, size=64, named_protocol_probability=1.0)
    assert (d.ratio, d.kernel_size, d.offset) == (8, 15, 3)


def test_training_problem_holds_the_drawn_sensor_pair():
    from fusion_explorer.physics import SensorPair

    s = training_sample(5, size=64, snr_hsi_db=20.0, snr_msi_db=35.0, noiseless_probability=0.0, dtype=torch.float64)
    pair = s.degradation.sensor_pair()
    assert isinstance(pair, SensorPair) and pair.srf is s.degradation.srf
    assert (pair.noise.snr_hsi_db, pair.noise.snr_msi_db) == (20.0, 35.0)
    problem = s.problem()
    assert problem.sensors == pair
    assert (problem.ratio, problem.offset) == (s.ratio, s.offset)
    np.testing.assert_allclose(problem.psf, s.psf.numpy(), atol=1e-12)
    clean_lr = pair.spatial()(s.truth)
    np.testing.assert_allclose(clean_lr.numpy(), s.degradation.spatial()(s.truth).numpy())
