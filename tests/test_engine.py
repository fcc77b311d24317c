"""The one unmixing engine (methods/unmixing/): CNMF is a schedule of the shared step, SCALMU is that
step plus its learned hook from the schedule's own state, and one trace recorder with one budget."""

from __future__ import annotations

import numpy as np
import pytest

from fusion_explorer import metrics
from fusion_explorer.cube import make_cube
from fusion_explorer.methods import fuse, trace_fused
from fusion_explorer.methods.unmixing.trace import TraceRecorder, evenly
from fusion_explorer.problem import simulate

from ._cave import load_cave_yxb

CAVE_WL = np.arange(400.0, 701.0, 10.0)
K = 4  # layers / coupled steps
INIT = 40  # CNMF inner iterations of the start (small: the test is about the layers)


@pytest.fixture(scope="module")
def crop(cave_dir):
    """A real 64x64 CAVE crop under the x8 protocol, and its truth."""
    x = load_cave_yxb(str(cave_dir / "balloons_ms"))[224:288, 224:288]
    truth = make_cube(np.ascontiguousarray(x.transpose(2, 0, 1)), CAVE_WL)
    return simulate(truth, "gaussian-x8"), truth


def _arrays_bytes(trace: list[dict]) -> int:
    seen: dict[int, int] = {}

    def walk(v):
        if isinstance(v, np.ndarray):
            seen[id(v)] = v.nbytes
        elif isinstance(v, dict):
            for u in v.values():
                walk(u)

    for step in trace:
        walk(step)
    return sum(seen.values())


@pytest.mark.parametrize("consistency", [False, True], ids=["no-consistency", "consistency"])
def test_plain_scalmu_layers_are_cnmf_coupled_iterations(crop, consistency):
    """SCALMU with its learned parts off and K layers equals CNMF's schedule followed by K coupled
    iterations (and, with the consistency layer, CNMF's nothing-learned ``consistency="guided"``, both
    denoising the MSI residual at the level both images show, the default of each)."""
    problem, truth = crop
    plain = fuse(problem, "scalmu", device="cpu", learned=False, layers=K, init_iterations=INIT,
                 consistency=consistency)
    cnmf = fuse(problem, "cnmf", device="cpu", inner_iterations=INIT, coupled_steps=K,
                consistency="guided" if consistency else False)
    assert plain.params["denoise"] == cnmf.params["denoise"] == consistency
    assert plain.params["n_endmembers"] == cnmf.params["n_endmembers"]
    np.testing.assert_allclose(plain.fused.values, cnmf.fused.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(plain.endmembers, cnmf.endmembers, rtol=0, atol=1e-6)
    np.testing.assert_allclose(plain.abundances, cnmf.abundances, rtol=0, atol=1e-6)
    # the K layers did move the start (CNMF's output, SCALMU's first trace step)
    start = plain.trace[0]
    assert start["stage"] == "start" and start["iteration"] == plain.stages[0]["end"]
    assert np.abs(plain.abundances - start["abundances"]).max() > 1e-3
    # one numbering: the layers continue CNMF's iteration count
    layers = [s for s in plain.trace if s["stage"] == "layers"]
    steps = [s for s in cnmf.trace if s["stage"] == "coupled steps"]
    assert [s["iteration"] for s in layers] == [s["iteration"] for s in steps]
    assert [s["iteration"] for s in layers] == list(range(start["iteration"] + 1, start["iteration"] + K + 1))
    if consistency:  # learned parts on: a different update (the shipped weights do act)
        learned = fuse(problem, "scalmu", device="cpu", layers=K, init_iterations=INIT)
        assert np.abs(learned.fused.values - plain.fused.values).max() > 1e-4
        score = {name: metrics.psnr(truth.values, np.clip(cube, 0, 1)) for name, cube in
                 (("plain", plain.fused.values), ("learned", learned.fused.values),
                  ("cnmf start", trace_fused(start)))}
        print(f"\nballoons 64x64 x8, K={K}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in score.items()))
        assert score["plain"] > score["cnmf start"]


def test_cnmf_trace_has_stages_one_numbering_and_its_first_unmixing(crop):
    problem, _ = crop
    result = fuse(problem, "cnmf", device="cpu", inner_iterations=INIT, consistency="projection")
    names = [s["name"] for s in result.stages]
    assert names == ["HSI init", "MSI init", "round 1", "consistency"]
    for a, b in zip(result.stages, result.stages[1:], strict=False):
        assert a["start"] <= a["end"] == b["start"]
    iterations = [s["iteration"] for s in result.trace]
    assert iterations == sorted(iterations) and iterations[0] == 0
    by_name = {s["name"]: s for s in result.stages}
    for step in result.trace:
        assert {"iteration", "label", "stage"} <= step.keys()
        stage = by_name[step["stage"]]
        assert stage["start"] <= step["iteration"] <= stage["end"]
    # the first unmixing (before H_m exists) is recorded, its cube the upsampled LR fit W H_h
    first = [s for s in result.trace if s["stage"] == "HSI init"]
    assert len(first) >= 4 and first[0]["iteration"] == 0
    assert first[-1]["abundances"].shape == (result.params["n_endmembers"], 64, 64)
    # the consistency step: the output, and the correction map = |Z - W H_m| per pixel
    last = result.trace[-1]
    assert last["stage"] == "consistency" and last["iteration"] == result.stages[-1]["end"]
    np.testing.assert_allclose(last["fused"], result.fused.values, atol=1e-6)
    wh = trace_fused({"endmembers": last["endmembers"], "abundances": last["abundances"]})
    np.testing.assert_allclose(last["correction"], np.sqrt(((last["fused"] - wh) ** 2).sum(0)), rtol=1e-3,
                               atol=1e-5)
    assert last["correction"].max() > 0


def test_scalmu_trace_stores_the_learned_parts_per_layer(crop):
    problem, _ = crop
    result = fuse(problem, "scalmu", device="cpu", layers=K, init_iterations=INIT)
    assert [s["name"] for s in result.stages] == ["start", "layers", "consistency"]
    p = result.params["n_endmembers"]
    assert [s["stage"] for s in result.trace] == ["start"] + ["layers"] * K + ["consistency"]
    moved = 0.0
    for step in result.trace[1:-1]:
        learned, plain, doc = step["learned"], step["plain"], step["learned_doc"]
        assert learned.keys() == plain.keys() == doc.keys()
        assert learned["abundance_matrix"].shape == (p, p) and learned["endmember_exponent"].shape == (p,)
        np.testing.assert_array_equal(plain["abundance_matrix"], np.eye(p))
        assert (plain["abundance_exponent"] == 1).all() and float(plain["hsi_weight"]) == 0.0
        assert (learned["abundance_matrix"] >= 0).all() and (learned["abundance_exponent"] > 0).all()
        assert float(learned["hsi_weight"]) > 0  # the LR-HSI joins the abundance update
        assert all(isinstance(v, str) and v.endswith(".") for v in doc.values())
        moved = max(moved, float(np.abs(learned["abundance_exponent"] - 1).max()))
    assert moved > 1e-3  # the shipped weights' exponents differ from plain MU's
    last = result.trace[-1]
    assert set(last["learned"]) == {"guided_step", "msi_step", "hsi_step", "ridge", "sigma",  # the gate's steps
                                    "msi_wiener", "hsi_wiener",  # its Wiener gains, and what it read:
                                    "noise_level", "srf_estimated", "psf_misfit",
                                    "msi_residual_noise"}  # and the level its MSI residual is denoised at
    assert float(last["plain"]["msi_wiener"]) == 0.0 and float(last["learned"]["msi_wiener"]) >= 0.0
    assert last["learned"]["noise_level"].shape == (2,)
    assert 0 < float(last["learned"]["msi_step"]) <= 1
    assert last["correction"].shape == (64, 64)


def test_one_budget_rule_for_every_trace(crop):
    problem, _ = crop
    p_bytes = 4 * 31 * 64 * 64  # about one HR snapshot
    budget_mb = 10 * p_bytes / 2**20
    scalmu = fuse(problem, "scalmu", device="cpu", layers=20, init_iterations=INIT, trace_budget_mb=budget_mb)
    cnmf = fuse(problem, "cnmf", device="cpu", inner_iterations=INIT, trace_budget_mb=budget_mb)
    for result in (scalmu, cnmf):
        assert _arrays_bytes(result.trace) <= budget_mb * 2**20
    # SCALMU: the start, the last layer and the consistency step are always kept; layers thinned
    kept = [s["stage"] for s in scalmu.trace]
    assert kept[0] == "start" and kept[-1] == "consistency" and 2 <= kept.count("layers") < 20
    assert scalmu.trace[-2]["iteration"] == scalmu.stages[1]["end"]
    # the recorder itself: shared arrays count once, reserved records always fit
    rec = TraceRecorder(1.0)
    big = np.zeros(2**18, np.float32)  # 1 MB
    rec.reserve(1, big.nbytes)
    assert not rec.add({"iteration": 1, "label": "a", "x": np.zeros(10, np.float32)})  # the reserve is full
    assert rec.add({"iteration": 2, "label": "b", "x": big}, forced=True)
    assert rec.add({"iteration": 3, "label": "c", "x": big})  # the same array: free
    assert not rec.add({"iteration": 4, "label": "d", "x": big.copy()})
    assert evenly(1, 20, 4) == {1, 7, 14, 20}


def test_mossfuse_fit_records_through_the_same_recorder(crop):
    problem, _ = crop
    result = fuse(problem, "mossfuse", device="cpu", fit=True, steps=2, snapshot_every=1)
    assert [s["iteration"] for s in result.trace] == [0, 1, 2]
    assert all(s["stage"] == "fit" for s in result.trace)
