"""benchmarks/bench_robust.py's ``mossfuse-fit`` method: MossFuse fitted per problem, on a real CAVE crop."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_robust.py"


@pytest.fixture()
def bench(monkeypatch):
    """The benchmark script as a module, with its method table restored after the test."""
    spec = importlib.util.spec_from_file_location("bench_robust_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "METHODS", dict(module.METHODS))
    return module


def test_mossfuse_fit_is_opt_in_and_its_steps_are_checked(bench):
    assert "mossfuse-fit" in bench.METHODS and "mossfuse-fit" not in bench.DEFAULT_METHODS
    name, options = bench.METHODS["mossfuse-fit"]
    assert (name, options["fit"], options["steps"]) == ("mossfuse", True, bench.MOSSFUSE_FIT_STEPS)
    bench.set_mossfuse_steps(7)
    assert bench.METHODS["mossfuse-fit"][1]["steps"] == 7
    with pytest.raises(SystemExit, match="positive number of steps"):
        bench.set_mossfuse_steps(0)


def test_mossfuse_fit_runs_in_the_zoo_and_records_its_fit(bench, data_dir, tmp_path):
    """A 15-step fit on the 64x64 centre of balloons under gaussian-x4 (about 5 s unloaded): the record says which fit
    ran, the score is a real one and not far from bicubic's on the same problem, and the markdown shows both."""
    steps = 15
    bench.set_mossfuse_steps(steps)
    out = tmp_path / "robust_mossfuse"
    args = argparse.Namespace(
        scenes="balloons_ms",
        crop=64,
        data_dir=str(data_dir),
        presets="gaussian-x4",
        sampled=0,
        seed=0,
        ratios="4",
        methods="mossfuse-fit,bicubic",
        merge=None,
        out=str(out),
        estimators=False,
        device="cpu",
        debug=False,
        command="test",
        threads=1,
    )
    records, _ = bench.run(args)
    runs = {r["method"]: r for r in records if r["kind"] == "method"}
    fit, bicubic = runs["mossfuse-fit"], runs["bicubic"]
    assert "error" not in fit, fit.get("error")
    assert fit["options"]["steps"] == steps and fit["steps_run"] == steps
    assert math.isfinite(fit["psnr"]) and math.isfinite(fit["sam"]) and fit["seconds"] > 0
    # 15 steps from scratch are a short fit, but the fused cube must be a real estimate of the scene:
    # within 2 dB of the bicubic upsampling of the same LR-HSI (balloons x4: bicubic about 38 dB)
    assert fit["psnr"] > bicubic["psnr"] - 2.0, (fit["psnr"], bicubic["psnr"])
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [r["method"] for r in saved["records"]] == ["mossfuse-fit", "bicubic"]
    md = out.with_suffix(".md").read_text()
    assert "### problem by problem" in md
    assert f"{fit['psnr']:.2f} / {fit['sam']:.2f} | {bicubic['psnr']:.2f} / {bicubic['sam']:.2f}" in md
    assert f"'steps': {steps}" in md
