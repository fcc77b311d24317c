"""Where CNMF's error lies, and what the consistency layer's two steps recover: the diagnostic behind it.

For CNMF's output ``Z`` on the crops of ``bench_scalmu.py`` (CAVE x8 and x32, remote x4) the error
``E = Z - X`` is split spectrally into the part the MSI sees (``P E`` with ``P = R⁺R``, the row
space of the SRF) and the part it cannot (the null space), and spatially into low and high
frequencies (a Gaussian low-pass of sigma ``ratio / 2``). Printed per crop: each part's share of
the error energy, and the PSNR gain of removing it with the truth in hand (an oracle). The MSI part
is observable (``R E = R Z - Y_m``), so a projection can remove it exactly; the low-frequency part
is partly observable through the LR-HSI. Then the real thing, nothing from the truth:
``cnmf`` with ``consistency="projection"`` and ``"guided"``. Writes
``benchmarks/results/consistency_diagnostics.json``.

    .venv/bin/python benchmarks/consistency_diagnostics.py [--crop 128] [--full]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scalmu import problems  # noqa: E402

from fusion_explorer.methods import fuse  # noqa: E402
from fusion_explorer.metrics import psnr  # noqa: E402


def lowpass(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a cube ``(bands, y, x)``, reflected borders."""
    size = int(2 * np.ceil(2 * sigma)) + 1
    t = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-t.square() / (2 * sigma**2))
    g = g / g.sum()
    x = torch.as_tensor(a)[:, None]
    x = F.pad(x, (size // 2,) * 4, mode="reflect")
    x = F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    return x[:, 0].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--full", action="store_true", help="whole CAVE scenes instead of crops")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for group, scene, problem in problems(None if args.full else args.crop):
        x = problem.truth.values.astype(np.float64)
        z = fuse(problem, "cnmf", device="cpu", trace_budget_mb=0).fused.values.astype(np.float64)
        r = np.asarray(problem.srf.matrix)
        row_space = r.T @ np.linalg.pinv(r @ r.T) @ r
        e = z - x
        e_seen = np.einsum("ab,bhw->ahw", row_space, e)
        e_null = e - e_seen
        parts = {}
        for name, part in (("MSI-seen", e_seen), ("MSI null space", e_null)):
            low = lowpass(part, problem.ratio / 2)
            parts[f"{name}, low"] = low
            parts[f"{name}, high"] = part - low
        total = float(np.square(e).sum())
        base = psnr(x, np.clip(z, 0, 1))
        row = {"protocol": group, "scene": scene, "cnmf": base}
        for name, part in parts.items():
            row[f"share {name}"] = float(np.square(part).sum()) / total
            row[f"oracle gain {name}"] = psnr(x, np.clip(z - part, 0, 1)) - base
        row["oracle gain MSI-seen (all)"] = psnr(x, np.clip(z - e_seen, 0, 1)) - base
        for mode in ("projection", "guided"):
            fused = fuse(problem, "cnmf", device="cpu", trace_budget_mb=0, consistency=mode).fused.values
            row[f"cnmf + {mode}"] = psnr(x, np.clip(fused.astype(np.float64), 0, 1))
        rows.append(row)
        print(f"{group} | {scene} | cnmf {base:.2f} | "
              + " | ".join(f"{k.replace('share ', '')} {100 * v:.0f}%" for k, v in row.items() if k.startswith("share"))
              + f" | oracle MSI-seen {row['oracle gain MSI-seen (all)']:+.2f} | oracle null-high "
              f"{row['oracle gain MSI null space, high']:+.2f} | projection {row['cnmf + projection']:.2f} | "
              f"guided {row['cnmf + guided']:.2f}", flush=True)
    print("\n| protocol | cnmf | error in MSI-seen / null-space (low, high) | oracle: remove MSI-seen | oracle: remove "
          "null high | cnmf + projection | cnmf + guided + projection |")
    print("|---|---|---|---|---|---|---|")
    for group in dict.fromkeys(r["protocol"] for r in rows):
        g = [r for r in rows if r["protocol"] == group]

        def m(k, g=g):
            return float(np.mean([r[k] for r in g]))

        seen = 100 * (m("share MSI-seen, low") + m("share MSI-seen, high"))
        null_low, null_high = 100 * m("share MSI null space, low"), 100 * m("share MSI null space, high")
        print(f"| {group} | {m('cnmf'):.2f} | {seen:.0f}% / {null_low:.0f}%, {null_high:.0f}% | "
              f"{m('oracle gain MSI-seen (all)'):+.2f} | {m('oracle gain MSI null space, high'):+.2f} | "
              f"{m('cnmf + projection'):.2f} | {m('cnmf + guided'):.2f} |")
    out = Path(__file__).resolve().parent / "results" / f"consistency_diagnostics{'_full' if args.full else ''}.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"results -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
