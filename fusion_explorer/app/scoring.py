"""Scores of a run against the truth: the table's metrics and the per-step quality curves, fast.

Where scoring's time went (issue 21 defect 8; CNMF on a 256x256x31 CAVE crop, 68 trace steps, 2-core
CPU, ``python /tmp/prof.py`` with cProfile): 13.4 s of scoring after 1.4 s of method. Each trace step
called :func:`fusion_explorer.metrics.evaluate` on float64 tensors: converting and validating both cubes
(``isfinite`` over truth and step, 4.1 s: the truth was re-checked 68 times), SAM in float64 (3.9 s),
per-band MSE in float64 (4.0 s), rebuilding ``W @ H`` (0.9 s). :class:`StepScorer` prepares the truth
once (float32, its per-pixel norms and its signal bands) and scores a step in one float32 pass with
float64 sums: the same definitions as :func:`~fusion_explorer.metrics.psnr` (over bands whose truth is
not all zero) and :func:`~fusion_explorer.metrics.sam` (estimate clipped to [0, 1], as ``evaluate``
does), to about 1e-4 dB / 1e-4 degrees (``tests/test_app.py::test_step_scores_match_evaluate``). The
table's metrics still come from ``evaluate`` (checked, float64): once per run.
"""

from __future__ import annotations

import numpy as np

from ..metrics import SAM_EPS


class StepScorer:
    """PSNR (dB) and mean SAM (degrees) of many estimates against one truth ``(bands, y, x)``."""

    def __init__(self, truth: np.ndarray, data_range: float = 1.0):
        t = np.asarray(truth, dtype=np.float32)
        self.shape = t.shape
        self.t = np.ascontiguousarray(t.reshape(t.shape[0], -1))
        self.keep = (self.t != 0).any(axis=1)
        self.tnorm = np.sqrt(np.einsum("bn,bn->n", self.t, self.t, dtype=np.float64)).astype(np.float32)
        self.data_range = float(data_range)

    def __call__(self, estimate: np.ndarray) -> dict[str, float]:
        z = np.asarray(estimate, dtype=np.float32).reshape(self.t.shape)
        z = np.clip(z, 0.0, 1.0)  # a new array: the caller's cube is never changed
        n = z.shape[1]
        dot = np.einsum("bn,bn->n", self.t, z)
        znorm = np.sqrt(np.einsum("bn,bn->n", z, z))
        sam = np.degrees(np.arccos(np.clip(dot / (self.tnorm * znorm + SAM_EPS), -1.0, 1.0)))
        d = np.subtract(self.t, z, out=z)
        np.square(d, out=d)
        mse = d.sum(axis=1, dtype=np.float64) / n
        with np.errstate(divide="ignore"):
            psnr = 10.0 * np.log10(self.data_range**2 / mse[self.keep])
        return {"psnr": float(psnr.mean()) if self.keep.any() else float("nan"),
                "sam": float(sam.mean(dtype=np.float64))}
