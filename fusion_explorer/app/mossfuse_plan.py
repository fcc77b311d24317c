"""How the dashboard offers MossFuse on a CPU: the shared published checkpoint when the scene fits it,
otherwise a self-supervised fit with a time estimate and a number of steps that fits a time budget.

With the method's own defaults (no checkpoint, no fit) MossFuse refuses to run, and its default of
500 fitting steps takes hours on a 2-core CPU (issue 21 defect 6). The checkpoint is the published
``CAVE_32_model.pth`` under ``<shared>/reference/mossfuse/`` (the folder beside a data root, see
``../shared/reference/README.md``): 31 HSI bands and 3 MSI bands, trained at ratio 32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHECKPOINT = Path("mossfuse") / "CAVE_32_model.pth"
#: seconds of one fitting step per HR pixel, measured on this project's 2-core CPU (128x128 default scene,
#: gaussian-x8: 3.4 to 7 s a step, depending on the load; issue 21 reports 12-17 s at 256x256)
SECONDS_PER_PIXEL_STEP = 2.5e-4
#: a fit offered by default should finish in about this many seconds
BUDGET_S = 180.0
MIN_STEPS, MAX_STEPS = 10, 500


def find_checkpoint() -> Path | None:
    """The shared published checkpoint (``<root>/../reference/mossfuse/CAVE_32_model.pth`` for a data root)."""
    from ..config import data_roots

    for root in data_roots():
        path = Path(root).parent / "reference" / CHECKPOINT
        if path.is_file():
            return path
    return None


@dataclass
class Plan:
    """What the run panel offers for MossFuse on one problem."""

    checkpoint: Path | None  # the shared checkpoint when the problem fits it, else None
    why: str  # why not (or a caveat) in one sentence
    steps: int  # default fitting steps within :data:`BUDGET_S`
    step_seconds: float  # estimated seconds per fitting step

    def html(self) -> str:
        fit = (f"a fit on this pair takes about {self.step_seconds:.1f} s a step here: {self.steps} steps "
               f"≈ {_duration(self.steps * self.step_seconds)}")
        if self.checkpoint is not None:
            return f"<small><b>mossfuse</b>: published weights ({self.checkpoint.name}){self.why}; or {fit}</small>"
        return f"<small><b>mossfuse</b>: {self.why}; {fit}</small>"


def plan(problem) -> Plan:
    """The checkpoint if ``problem`` fits it (31 HSI bands, 3 MSI bands), and a fit sized to :data:`BUDGET_S`."""
    h, w = problem.hr_size
    step_s = SECONDS_PER_PIXEL_STEP * h * w
    steps = int(min(MAX_STEPS, max(MIN_STEPS, BUDGET_S // max(step_s, 1e-9))))
    path = find_checkpoint()
    if path is None:
        return Plan(None, "the shared checkpoint (reference/mossfuse/CAVE_32_model.pth) was not found", steps, step_s)
    if (problem.hsi_bands, problem.msi_bands) != (31, 3):
        return Plan(None, f"the published weights need 31 HSI and 3 MSI bands; this scene has {problem.hsi_bands} "
                          f"and {problem.msi_bands}", steps, step_s)
    note = "" if problem.ratio == 32 else f", trained at ratio 32 (this scene: {problem.ratio})"
    return Plan(path, note, steps, step_s)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"
