"""``fuse(..., starts=N)``: the mean of N runs from consecutive seeds, for methods with a random start."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from fusion_explorer import fuse
from fusion_explorer.cli import main
from fusion_explorer.errors import ProblemError
from fusion_explorer.physics import simulate
from fusion_explorer.problem import FusionProblem
from fusion_explorer.scenes import center_crop, load_scene


@pytest.fixture(scope="module")
def problem(cave_dir):
    """A 96x96 chart crop at x8, PSF hidden as through the CLI (a scene where the start matters)."""
    truth = center_crop(load_scene(cave_dir / "chart_and_stuffed_toy_ms"), 96, 32)
    p = simulate(truth, "gaussian-x8")
    return FusionProblem(lr_hsi=p.lr_hsi, hr_msi=p.hr_msi, srf=p.srf, ratio=p.ratio, truth=p.truth)


def test_starts_average_the_runs_of_consecutive_seeds(problem):
    opts = {"inner_iterations": 40}
    singles = [fuse(problem, "cnmf", seed=s, **opts) for s in (3, 4, 5)]
    mean = fuse(problem, "cnmf", seed=3, starts=3, **opts)
    expected = np.mean([r.fused.values.astype(np.float64) for r in singles], axis=0)
    np.testing.assert_allclose(mean.fused.values, expected, atol=1e-6)
    # the starts differ (else the option would be pointless), and the interpretable parts are the first run's
    assert np.abs(singles[0].fused.values - singles[1].fused.values).max() > 1e-3
    np.testing.assert_array_equal(mean.endmembers, singles[0].endmembers)
    assert mean.params["starts"] == 3 and mean.params["seeds"] == [3, 4, 5]
    assert "'starts': 3" in mean.fused.attrs["method_params"]


def test_scalmu_starts_report_one_progress_bar(problem):
    seen = []
    fuse(problem, "scalmu", starts=2, progress=lambda done, total, info: seen.append((done, total, info.get("start"))))
    totals = {t for _, t, _ in seen}
    assert len(totals) == 1 and seen[-1][0] == seen[-1][1]  # one total for both runs, ending full
    assert {s for *_, s in seen} >= {"1/2", "2/2"}
    assert [d for d, *_ in seen] == sorted(d for d, *_ in seen)


@pytest.mark.parametrize("method, starts, needle", [
    ("bicubic", 2, "no random start"), ("cnmf", 0, "positive integer"), ("cnmf", True, "positive integer"),
    ("cnmf", 1.5, "positive integer"),
])
def test_bad_starts_are_refused(problem, method, starts, needle):
    with pytest.raises(ProblemError, match=needle):
        fuse(problem, method, starts=starts)


def test_cli_option_starts(problem, tmp_path):
    for name in ("lr_hsi", "hr_msi"):
        getattr(problem, name).to_netcdf(tmp_path / f"{name}.nc", engine="h5netcdf")
    problem.srf.to_dataarray().to_netcdf(tmp_path / "srf.nc", engine="h5netcdf")
    out = tmp_path / "fused.nc"
    assert main(["fuse", "--lr-hsi", str(tmp_path / "lr_hsi.nc"), "--hr-msi", str(tmp_path / "hr_msi.nc"),
                 "--srf", str(tmp_path / "srf.nc"), "--ratio", "8", "--method", "cnmf", "--option", "starts=2",
                 "--option", "inner_iterations=20", "--out", str(out), "--quiet"]) == 0
    assert "'starts': 2" in xr.open_dataarray(out, engine="h5netcdf").attrs["method_params"]
