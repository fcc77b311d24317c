"""Sensor noise: white Gaussian noise at a per-band SNR (:func:`add_noise`), and the noise model of a
sensor pair (:class:`NoiseModel`: one SNR for the HSI, one for the MSI)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def add_noise(x: torch.Tensor, snr_db: float | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise at ``snr_db`` per band: ``sigma_b^2 = mean(x_b^2) / 10^(snr/10)``.

    ``None`` or ``inf`` returns ``x`` unchanged. The result is clipped at 0: sensors report
    non-negative values and every method here expects them.
    """
    if snr_db is None or math.isinf(snr_db):
        return x
    power = x.pow(2).mean(dim=(-2, -1), keepdim=True)
    sigma = (power / 10 ** (float(snr_db) / 10)).sqrt()
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    return (x + sigma * noise).clamp_min(0)

@dataclass(frozen=True)
class NoiseModel:
    """White Gaussian noise of a sensor pair: ``snr_hsi_db`` on the LR-HSI, ``snr_msi_db`` on the HR-MSI
    (``None``: noiseless), each as :func:`add_noise` adds it."""

    snr_hsi_db: float | None = None
    snr_msi_db: float | None = None

    def hsi(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return add_noise(x, self.snr_hsi_db, generator)

    def msi(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return add_noise(x, self.snr_msi_db, generator)
