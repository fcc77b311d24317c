"""docs/architecture.md is true: its picture is current and its "how to add" examples run.

The toy method and the toy panel are the doc's own code blocks, executed as a newcomer would paste
them; the test then uses them through the public entry points (``fuse``, ``App(panels=...)``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
CAVE = ROOT.parent / "shared" / "data" / "cave" / "balloons_ms"


def _blocks(heading: str) -> str:
    """The python code blocks of the doc's section ``heading`` (a ``###`` title), joined."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def test_picture_is_current():
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "make_architecture.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "flowchart BT" in DOC.read_text(encoding="utf-8")


def test_toy_method_from_the_doc_runs_through_fuse():
    from fusion_explorer.io import open_cube
    from fusion_explorer.methods import base, fuse
    from fusion_explorer.problem import simulate

    code = _blocks("a method")
    assert "@register" in code
    try:
        exec(compile(code, str(DOC), "exec"), {})
        truth = open_cube(CAVE).isel(y=slice(0, 64), x=slice(0, 64))
        problem = simulate(truth, "gaussian-x8")
        result = fuse(problem, "nearest", device="cpu", gain=0.5)
        assert result.fused.shape == truth.shape
        lr = problem.lr_hsi.values
        np.testing.assert_allclose(result.fused.values[:, ::8, ::8], 0.5 * lr, rtol=1e-6)
        with pytest.raises(Exception, match="gain"):
            fuse(problem, "nearest", device="cpu", gain="loud")  # options are checked against the signature
    finally:
        base._REGISTRY.pop("nearest", None)


def test_toy_panel_from_the_doc_is_one_class_and_one_line():
    from fusion_explorer.app.app import PANELS, App

    namespace: dict = {}
    exec(compile(_blocks("a panel"), str(DOC), "exec"), namespace)
    app = App(load=False, panels=(*PANELS, namespace["NotesPanel"]))
    assert app.notes.text.value == ""
    assert "Notes" in str([getattr(c, "value", "") for c in app.widget.children[-1].children])
