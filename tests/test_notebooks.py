"""The notebooks in ``notebooks/`` run top to bottom and compute what they say; and the helpers of
:mod:`fusion_explorer.explore` behind them.

Each notebook is executed once per session (nbclient, kernel ``python3`` pinned to this interpreter:
the venv's ipykernel) with one torch thread, as a shared 2-core CPU is fastest with, and must finish
in under 3 minutes. Its last cell (tag ``checks``) prints a JSON summary that the tests read; the
notebooks also assert on their own results.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from .conftest import DATA, ROOT, require

NOTEBOOKS = ROOT / "notebooks"
TIME_LIMIT_S = 180


def _kernel_manager(tmp: Path):
    """A kernel manager whose ``python3`` kernel is this interpreter, whatever other kernelspecs exist."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (fusion-explorer venv)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def execute_notebook(name: str, tmp: Path) -> tuple[object, dict, float]:
    """Run ``notebooks/<name>`` and return ``(executed notebook, its checks dict, seconds)``."""
    import nbformat
    from nbclient import NotebookClient

    require(DATA)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    km = _kernel_manager(tmp)
    client = NotebookClient(
        nb, km=km, timeout=TIME_LIMIT_S, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    start = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - start
    out_dir = ROOT / "test-artifacts"
    out_dir.mkdir(exist_ok=True)
    nbformat.write(nb, out_dir / name)  # executed copy, for a look when a check fails
    cells = [c for c in nb.cells if "checks" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{name}: expected one cell tagged 'checks'"
    text = "".join(o.get("text", "") for o in cells[0].outputs if o.output_type == "stream")
    return nb, json.loads(text.strip().splitlines()[-1]), seconds


@pytest.fixture(scope="module")
def dataset_run(tmp_path_factory):
    return execute_notebook("dataset_inspection.ipynb", tmp_path_factory.mktemp("kernel"))


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory):
    return execute_notebook("benchmark.ipynb", tmp_path_factory.mktemp("kernel"))


@pytest.fixture(scope="module")
def cnmf_run(tmp_path_factory):
    return execute_notebook("cnmf_interpretability.ipynb", tmp_path_factory.mktemp("kernel"))


@pytest.fixture(scope="module")
def large_run(tmp_path_factory):
    return execute_notebook("large_scenes.ipynb", tmp_path_factory.mktemp("kernel"))


# ----------------------------------------------------------------------------------------------
# the notebooks


@pytest.mark.parametrize(
    "name", ["dataset_inspection.ipynb", "benchmark.ipynb", "cnmf_interpretability.ipynb", "large_scenes.ipynb"]
)
def test_notebooks_are_stored_without_outputs(name):
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name}: clear the outputs"
    teaching = [c for c in code if "checks" not in c.metadata.get("tags", [])]
    longest = max(len(c.source.splitlines()) for c in teaching)
    assert longest <= 20, f"{name}: a code cell of {longest} lines; long code belongs in the package"


def test_dataset_notebook(dataset_run):
    from fusion_explorer.io import list_scenes

    _, checks, seconds = dataset_run
    assert seconds < TIME_LIMIT_S
    assert Path(checks["python"]).resolve() == Path(sys.executable).resolve(), "the venv's kernel ran it"
    assert checks["n_scenes"] == len(list_scenes(DATA)) >= 10
    cubes = checks["cubes"]
    assert cubes["balloons_ms"] == [31, 512, 512]
    assert cubes["synthetic (embedded)"][0] == 31
    assert cubes["samson_95x95x156.mat"] == [156, 95, 95]
    assert checks["wavelength_range"]["samson_95x95x156.mat"] == [401.0, 889.0]
    assert np.allclose(checks["recovered_sigma"], 0.02, rtol=0.05)
    assert 0 < checks["balloons_median_sigma"] < 0.01
    assert checks["aviris_dead_bands"] > 20
    assert checks["nikon_tables_max_diff"] < 0.1


def test_benchmark_notebook(benchmark_run):
    from fusion_explorer.bench import cave_scenes, center_crop, load_scene, run_benchmark
    from fusion_explorer.methods import available_methods

    _, checks, seconds = benchmark_run
    assert seconds < TIME_LIMIT_S
    assert Path(checks["python"]).resolve() == Path(sys.executable).resolve()
    assert {"bicubic", "cnmf"} <= set(checks["ran"])
    assert set(checks["ran"]) | set(checks["skipped"]) | set(checks["failed"]) == set(available_methods())
    for method, error in checks["failed"].items():  # a method under development may be broken for a while
        warnings.warn(f"benchmark notebook: method {method} failed: {error}", stacklevel=1)
    rows = checks["rows"]
    assert len(rows) == len(checks["ran"]) * len(cave_scenes()) * len(checks["protocols"])
    # the table's bicubic PSNRs are those of a separate bench run on the same crops
    cubes = [center_crop(load_scene(p), checks["crop"], 32) for p in cave_scenes()]
    again = run_benchmark(["bicubic"], cubes, checks["protocols"], crop=checks["crop"], device="cpu", progress=False)
    table = {(r["scene"], r["protocol"]): r for r in rows if r["method"] == "bicubic"}
    assert len(table) == len(again)
    for r in again:
        assert table[r.scene, r.protocol]["psnr"] == pytest.approx(r.metrics["psnr"], abs=1e-5)
        assert table[r.scene, r.protocol]["sam"] == pytest.approx(r.metrics["sam"], abs=1e-4)


def test_cnmf_notebook(cnmf_run):
    _, checks, seconds = cnmf_run
    assert seconds < TIME_LIMIT_S
    assert Path(checks["python"]).resolve() == Path(sys.executable).resolve()
    assert checks["names"] == ["rock", "Tree", "water"]
    assert max(checks["angles"]) < 10 and np.mean(checks["angles"]) < 6, checks["angles"]
    assert checks["psnr"] > checks["psnr_bicubic"] + 3
    assert checks["fit_cnmf"] < checks["fit_ground_truth_factors"] / 3
    assert checks["coupling"]["srf"] < 0.1 and checks["coupling"]["psf"] < 0.15
    assert checks["min_mu"] >= 0 > checks["min_gd"]
    first, last = checks["objective_first_last"]
    assert last < first and checks["trace_steps"] > 10
    if checks["scalmu_error"]:  # the section says why; SCALMU's own tests cover the method
        warnings.warn(f"cnmf notebook: the SCALMU section could not run: {checks['scalmu_error']}", stacklevel=1)
    else:
        assert checks["scalmu_layers"] > 0 and checks["scalmu_gap_abundances"] >= 0
        noisy = checks["scalmu_under_noise"]["25 dB"]  # what the section says SCALMU learned to do
        assert noisy["PSNR scalmu"] > noisy["PSNR scalmu plain"]
        assert noisy["noise_level"][0] > checks["scalmu_under_noise"]["noise-free"]["noise_level"][0] + 1


def test_large_scenes_notebook(large_run):
    _, checks, seconds = large_run
    assert seconds < TIME_LIMIT_S
    assert checks["lazy_output"] == "Array"  # the fused cube comes back as a dask array, read tile by tile
    assert checks["tiles"] > 1
    assert abs(checks["psnr_tiled"] - checks["psnr_whole"]) < 0.05 and checks["max_abs_diff"] < 1e-4
    assert checks["psnr_tiled"] > 35


# ----------------------------------------------------------------------------------------------
# the helpers in fusion_explorer.explore


def test_spectral_angles_and_matching():
    from fusion_explorer.explore import match_endmembers, spectral_angles

    rng = np.random.default_rng(1)
    reference = rng.random((50, 3))
    assert np.allclose(np.diag(spectral_angles(reference, 2.5 * reference)), 0, atol=1e-5)
    assert spectral_angles(np.eye(2), np.eye(2))[0, 1] == pytest.approx(90)
    found = np.concatenate([reference[:, [2, 0, 1]] * [3.0, 0.5, 7.0], rng.random((50, 1))], axis=1)
    match = match_endmembers(found, reference)
    assert match.order.tolist() == [1, 2, 0]
    assert match.unmatched.tolist() == [3]
    assert match.max_angle < 1e-5
    assert np.allclose(match.endmembers(found) / reference, [[0.5, 7.0, 3.0]])
    with pytest.raises(ValueError, match="at least as many"):
        match_endmembers(reference[:, :2], reference)


def test_noise_sigma_estimators():
    import fusion_explorer as fe
    from fusion_explorer.explore import noise_sigma

    rng = np.random.default_rng(0)
    wl = np.linspace(400, 700, 20)
    # smooth low-rank signal (2 spectra mixed smoothly in space) plus white noise of known sigma
    yy, xx = np.mgrid[0:128, 0:128] / 128
    spectra = np.stack([np.exp(-((wl - 500) / 80) ** 2), np.exp(-((wl - 650) / 60) ** 2)], axis=1)
    signal = np.einsum("bp,pyx->byx", spectra, np.stack([yy, 1 - xx]))
    cube = fe.make_cube(signal + rng.normal(0, 0.01, signal.shape), wl)
    for method in ("wavelet", "regression"):
        sigma = noise_sigma(cube, method)
        assert sigma.dims == ("band",) and np.allclose(sigma.wavelength, wl)
        assert np.allclose(sigma.values, 0.01, rtol=0.15), (method, sigma.values)
    with pytest.raises(ValueError, match="wavelet"):
        noise_sigma(cube, "fft")


def test_ground_truth_readers_match_their_cubes():
    from fusion_explorer.explore import open_scene, scale_endmembers, unmixing_ground_truth

    for name, p, max_error in (("jasperRidge2_R198.mat", 4, 0.25), ("samson_95x95x156.mat", 3, 0.35)):
        path = require(DATA / "remote" / name)
        cube = open_scene(path)
        endmembers, abundances, names = unmixing_ground_truth(path)
        assert endmembers.shape == (cube.sizes["band"], p) and abundances.shape == (p, *cube.shape[1:])
        assert len(names) == p and cube.attrs["wavelength_note"].startswith("nominal")
        model = np.einsum("bp,pyx->byx", scale_endmembers(cube, endmembers, abundances), abundances)
        assert np.linalg.norm(model - cube.values) / np.linalg.norm(cube.values) < max_error, name


def test_read_results_md_and_skipping(tmp_path):
    import fusion_explorer as fe
    from fusion_explorer.errors import ProblemError
    from fusion_explorer.explore import benchmark_registered, read_results_md
    from fusion_explorer.methods import base

    table = read_results_md(ROOT / "benchmarks" / "RESULTS.md")
    bicubic = table[(table["method"] == "bicubic") & (table["scene"] == "balloons_ms")]
    assert set(bicubic["protocol"]) == {"mossfuse-cave-x32", "gaussian-x8"}
    assert float(bicubic[bicubic["protocol"] == "gaussian-x8"]["psnr"].iloc[0]) == pytest.approx(34.511)

    def needs_weights(problem, **_):
        raise ProblemError("needs weights: pass checkpoint=PATH")

    def broken(problem, **_):
        raise RuntimeError("size mismatch\nmore lines")

    base.register("test-needs-weights")(needs_weights)
    base.register("test-broken")(broken)
    try:
        scene = fe.default_scene().isel(y=slice(0, 64), x=slice(0, 64))
        methods = ["bicubic", "test-needs-weights", "test-broken"]
        report = benchmark_registered([scene], ["gaussian-x8"], methods=methods, device="cpu")
        with pytest.raises(RuntimeError, match="size mismatch"):
            benchmark_registered([scene], ["gaussian-x8"], methods=["test-broken"], device="cpu", strict=True)
    finally:
        base._REGISTRY.pop("test-needs-weights", None)
        base._REGISTRY.pop("test-broken", None)
    assert report.methods == ["bicubic"] and len(report.rows) == 1
    assert report.skipped == {"test-needs-weights": "needs weights: pass checkpoint=PATH"}
    assert report.failed == {"test-broken": "RuntimeError: size mismatch"}
