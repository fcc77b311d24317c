"""How much of the unmixing should the guided step keep? A measured lead, not a method option.

SCALMU's consistency layer (at full steps) outputs ``project(z + T(Y_h - S z))`` with ``z = W H_m``
the last layer's cube and ``T`` the colour-guided transfer (:mod:`fusion_explorer.methods.guided`).
Since ``T`` is linear, ``z + T(Y_h - S z) = T(Y_h) + D`` with ``D = z - T(S z)``: the transfer of the
LR-HSI itself plus the detail of ``z`` that the transfer of its own LR image does not explain.
This script scores ``project(T(Y_h) + α D)`` (the exact projections, the spectral prior of the
last layer's endmembers) for α = 0 (pure colour-guided upsampling of the LR-HSI, then the
projections), 0.5 and 1 (SCALMU's layer at full steps), next to the shipped SCALMU, on the full
CAVE scenes under both protocols; and a leave-one-out choice of α: the least-squares α that best
predicts each LR pixel from the transfer *without* that pixel (``exclude_own``), through the MSI
projection. Writes ``benchmarks/results/guided_blend.json``.

    .venv/bin/python benchmarks/guided_blend.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fusion_explorer.bench import cave_scenes, load_scene
from fusion_explorer.memory import keep_freed_memory
from fusion_explorer.methods.consistency import msi_gain, project, spectral_prior
from fusion_explorer.methods.scalmu import load_model
from fusion_explorer.methods.scalmu.start import problem_start
from fusion_explorer.methods.unmixing.guided import Neighbours, data_neighbours, transfer
from fusion_explorer.metrics import psnr
from fusion_explorer.physics import simulate

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ALPHAS = (0.0, 0.5, 1.0)


def leave_one_out(data, problem, spatial) -> Neighbours:
    """Every HR pixel's nearest LR pixels in colour but for the one it sits in: the ``k + 1``
    nearest with that one dropped (or the farthest, when it is not among them)."""
    k = data.neighbours.index.shape[1]
    nb = data_neighbours(data, problem.hr_size, problem.lr_size, spatial.ratio, spatial.offset, k=k + 1)
    (big_h, big_w), (h, w) = problem.hr_size, problem.lr_size
    ys, xs = torch.meshgrid(torch.arange(big_h), torch.arange(big_w), indexing="ij")
    cell = lambda v, n: ((v - spatial.offset).double() / spatial.ratio).round().long().clamp(0, n - 1)  # noqa: E731
    own = (cell(ys, h) * w + cell(xs, w)).reshape(1, 1, -1)
    keep = nb.index != own
    keep[:, -1] &= ~keep[:, :-1].all(dim=1)  # own not among them: drop the farthest instead
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :k]
    return Neighbours(*(t.gather(1, order) for t in (nb.index, nb.distance, nb.scale)))


def band_psnr(z: torch.Tensor, x: torch.Tensor) -> float:
    """:func:`fusion_explorer.metrics.psnr` of a flat cube ``z`` ``(1, bands, pixels)`` clipped to
    [0, 1] against ``x`` (same shape), as one ``(bands, 1, pixels)`` image."""
    return psnr(x[0, :, None], z[0, :, None].clamp(0, 1))


def off_msi(v: torch.Tensor, gain: torch.Tensor, srf: torch.Tensor) -> torch.Tensor:
    """``(I - G R) v``: the part of the MSI projection that is linear in the cube."""
    return v - gain @ (srf @ v)


def main() -> None:
    keep_freed_memory()
    net, _ = load_model()
    rows = []
    for protocol in ("mossfuse-cave-x32", "gaussian-x8"):
        for path in cave_scenes(SHARED / "data/cave"):
            truth = load_scene(path)
            problem = simulate(truth, protocol)
            x = torch.as_tensor(truth.values, dtype=torch.float32).reshape(1, truth.shape[0], -1)
            with torch.no_grad():
                state, data, _ = problem_start(problem, device=torch.device("cpu"), msi_pyramid="auto")
                last = net(state, data)
                z = last.fused()
                prior = spectral_prior(last.endmembers)
                row = {"protocol": protocol, "scene": path.name, "scalmu": band_psnr(net.finish(last, data), x)}
                t_y = transfer(data.lr_hsi, data.neighbours)
                detail = z - transfer(data.degrade(z), data.neighbours)
                for alpha in ALPHAS:
                    row[f"alpha={alpha:g}"] = band_psnr(project(t_y + alpha * detail, data, prior), x)
                # leave-one-out α: predict every LR pixel from neighbours that exclude it
                spatial = problem.spatial_operator()
                loo = leave_one_out(data, problem, spatial)
                gain = msi_gain(data.srf, prior)
                a = data.degrade(off_msi(transfer(data.lr_hsi, loo), gain, data.srf) + gain @ data.hr_msi)
                b = data.degrade(off_msi(z - transfer(data.degrade(z), loo), gain, data.srf))
                alpha_loo = float(((data.lr_hsi - a) * b).sum() / (b * b).sum())
                row["alpha_loo"] = alpha_loo
                row["alpha=loo"] = band_psnr(project(t_y + min(max(alpha_loo, 0.0), 1.0) * detail, data, prior), x)
            rows.append(row)
            print(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else str(v) for k, v in row.items()), flush=True)
    out = Path(__file__).resolve().parent / "results" / "guided_blend.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"results -> {out}")


if __name__ == "__main__":
    main()
