"""benchmarks/clean_gap.py's tables: paired differences over the committed records of the full CAVE scenes."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("clean_gap_under_test", ROOT / "benchmarks" / "clean_gap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_seed_table_pairs_each_scene_with_itself():
    path = ROOT / "benchmarks" / "results" / "clean_gap_seeds_gaussian-x8.json"
    records = json.loads(path.read_text())["records"]
    text = _module().tables(records, "seeds")
    for seed in sorted({r["seed"] for r in records}):
        by = {(r["scene"], r["method"]): r["psnr"] for r in records if r["seed"] == seed}
        scenes = sorted({s for s, _ in by})
        gap = np.mean([by[(s, "scalmu")] - by[(s, "cnmf-guided")] for s in scenes])
        learned = np.mean([by[(s, "scalmu")] - by[(s, "scalmu-plain")] for s in scenes])
        row = re.search(rf"^\| {seed} \|.*$", text, re.M).group(0).split("|")
        assert float(row[5]) == round(gap, 2) and float(row[6]) == round(learned, 2)
    # 4 scenes x 4 seeds x 3 methods; the summary line over seeds is there
    assert len(records) == 48
    assert re.search(r"over seeds: mean \+0\.\d\d dB", text)
