"""The MossFuse network: two encoders, four decoders and a blind degradation estimator.

Notation: ``Y_m`` the HR-MSI ``(b, msi_bands, Y, X)``, ``Y_h`` the LR-HSI ``(b, hsi_bands, y, x)``,
``r`` the ratio. ``Y_h`` is upsampled bilinearly by ``r`` before its encoder. Each encoder gives a
modality-*shared* feature ``B`` and a modality-*complementary* feature ``D``:

    (B_m, D_m) = E_msi(Y_m),     (B_h, D_h) = E_hsi(up_r(Y_h))
    X_hat      = G(W [B_m; B_h], D_m, D_h)               fused HR-HSI (fusion decoder)

and, for self-supervised training only, ``Y_m ~ G_m(B_m, D_m)``, ``Y_h ~ G_h(B_h, D_h)``,
LR-MSI ``~ G_l(B_m, B_h)``. The degradation estimator holds a Gaussian PSF with a learned 2x2
precision ``A = L^T L`` (``L`` lower triangular) and an SRF ``R`` (rows normalised to sum 1); it
predicts the LR-MSI twice, ``clip(R Y_h)`` and ``clip(S_psf(Y_m))``, which must agree.

:meth:`MossFuseNet.forward` returns everything (:class:`MossFuseOutputs`); :meth:`MossFuseNet.fuse`
computes only what the fused image needs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import AggregationBlock, FoldedLargeKernelBlock, LargeKernelBlock, Pointwise, TransformerBlock

#: Layouts of the encoder heads: "T" transformer block, an integer a large-kernel block of that
#: kernel (0: no spatial mixer).
MSI_SHARED = (7, 0, 0, "T")
MSI_COMPLEMENTARY = (7, 0, 0)
HSI_SHARED = ("T", 7, 0, 0)
HSI_COMPLEMENTARY = ("T",)


def _stack(layout, dim: int, heads: int) -> nn.Sequential:
    return nn.Sequential(*(TransformerBlock(dim, heads) if b == "T" else LargeKernelBlock(dim, int(b)) for b in layout))


def _head(dim: int, bands: int) -> nn.Sequential:
    """``conv3x3(dim -> dim/2)``, LeakyReLU(0.01), ``conv3x3(dim/2 -> bands)``."""
    return nn.Sequential(
        nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False),
        nn.LeakyReLU(0.01),
        nn.Conv2d(dim // 2, bands, 3, padding=1, bias=False),
    )


class Encoder(nn.Module):
    """``z = trunk(conv3x3(x))``; returns ``(shared(z), complementary(z))``."""

    def __init__(self, bands: int, dim: int, num_blocks: int, shared, complementary, heads: int = 8):
        super().__init__()
        self.embed = nn.Conv2d(bands, dim, 3, padding=1, bias=False)
        self.trunk = nn.Sequential(*(TransformerBlock(dim, heads) for _ in range(num_blocks)))
        self.shared = _stack(shared, dim, heads)
        self.complementary = _stack(complementary, dim, heads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.trunk(self.embed(x))
        return self.shared(z), self.complementary(z)


class ModalityDecoder(nn.Module):
    """Self-supervised reconstruction of one input from its own features: ``head(refine(agg(B, D)))``.

    ``unused_merge`` is a 1x1 convolution that the published checkpoint holds but its forward pass
    never applies; it is kept so that every tensor of the checkpoint has a home.
    """

    def __init__(self, bands: int, dim: int, num_blocks: int, kind: str, heads: int = 8):
        super().__init__()
        self.unused_merge = Pointwise(2 * dim, dim)
        self.aggregate = AggregationBlock(dim, kind, heads)
        self.refine = nn.Sequential(*(TransformerBlock(dim, heads) for _ in range(num_blocks - 1)))
        self.head = _head(dim, bands)

    def forward(self, shared: torch.Tensor, complementary: torch.Tensor) -> torch.Tensor:
        return self.head(self.refine(self.aggregate(shared, complementary)))


class LRMSIDecoder(nn.Module):
    """The LR-MSI seen by both modalities, from the two shared features: ``head(refine(W [B_m; B_h]))``."""

    def __init__(self, bands: int, dim: int, num_blocks: int, heads: int = 8):
        super().__init__()
        self.merge = Pointwise(2 * dim, dim)
        self.refine = nn.Sequential(*(TransformerBlock(dim, heads) for _ in range(num_blocks)))
        self.head = _head(dim, bands)

    def forward(self, shared_msi: torch.Tensor, shared_hsi: torch.Tensor) -> torch.Tensor:
        return self.head(self.refine(self.merge(torch.cat((shared_msi, shared_hsi), dim=1))))


class FusionDecoder(nn.Module):
    """``X_hat = head(refine(spectral_agg(spatial_agg(W [B_m; B_h], D_m), D_h)))``."""

    def __init__(self, bands: int, dim: int, num_blocks: int, heads: int = 8):
        super().__init__()
        self.merge = Pointwise(2 * dim, dim)
        self.spatial_agg = AggregationBlock(dim, "spatial", heads)
        self.spectral_agg = AggregationBlock(dim, "spectral", heads)
        self.refine = nn.Sequential(*(TransformerBlock(dim, heads) for _ in range(num_blocks)))
        self.head = _head(dim, bands)

    def forward(self, shared_msi, shared_hsi, detail_msi, detail_hsi) -> torch.Tensor:
        z = self.merge(torch.cat((shared_msi, shared_hsi), dim=1))
        z = self.spectral_agg(self.spatial_agg(z, detail_msi), detail_hsi)
        return self.head(self.refine(z))


# --------------------------------------------------------------------------------------------
# degradation
# --------------------------------------------------------------------------------------------


def gaussian_psf(precision_param: torch.Tensor, size: int) -> torch.Tensor:
    """``k(z) ∝ exp(-z^T A z / 2)`` on a ``size x size`` grid centred at ``size // 2``, sum 1.

    ``A = L^T L`` with ``L`` the lower triangle of the ``(2, 2)`` parameter (its upper-right entry
    is ignored); ``z = (row, col) - size // 2``. Shape ``(size, size)``.
    """
    lower = torch.tril(precision_param)
    a = lower.T @ lower
    z = torch.arange(size, dtype=precision_param.dtype, device=precision_param.device) - size // 2
    zr, zc = z[:, None], z[None, :]
    quad = a[0, 0] * zr * zr + (a[0, 1] + a[1, 0]) * zr * zc + a[1, 1] * zc * zc
    k = torch.exp(-0.5 * quad)
    return k / k.sum()


def blur_decimate(x: torch.Tensor, psf: torch.Tensor, ratio: int, offset: int) -> torch.Tensor:
    """``(psf * x)[..., offset::ratio, offset::ratio]`` per band; ``psf`` ``(k, k)``, ``k`` odd or even.

    The kernel's centre (index ``k // 2``) lands on the kept samples. Only the kept samples are
    computed. Where the kernel reaches past the image, borders are reflected (reflect-101); with
    ``k = ratio - 1`` and ``offset = k // 2`` (the published set-up) no border is touched.
    """
    b, c, h, w = x.shape
    k = psf.shape[-1]
    centre = k // 2
    n_h, n_w = len(range(offset, h, ratio)), len(range(offset, w, ratio))
    lo = max(0, centre - offset)
    hi_h = max(0, offset + (n_h - 1) * ratio + (k - 1 - centre) - (h - 1))
    hi_w = max(0, offset + (n_w - 1) * ratio + (k - 1 - centre) - (w - 1))
    z = x
    if lo or hi_h or hi_w:
        if max(lo, hi_h) >= h or max(lo, hi_w) >= w:
            z = F.pad(z, (lo, hi_w, lo, hi_h), mode="replicate")
        else:
            z = F.pad(z, (lo, hi_w, lo, hi_h), mode="reflect")
    start = offset - centre + lo
    z = z[..., start:, start:]
    weight = psf.to(x.dtype).expand(c, 1, k, k)
    out = F.conv2d(z, weight, stride=ratio, groups=c)
    return out[..., :n_h, :n_w]


def apply_srf(x: torch.Tensor, srf: torch.Tensor) -> torch.Tensor:
    """``R x`` over the band axis: ``(b, hsi_bands, y, x) -> (b, msi_bands, y, x)``."""
    return torch.einsum("mb,nbyx->nmyx", srf.to(x.dtype), x)


class DegradationEstimator(nn.Module):
    """Blind PSF and SRF: a Gaussian PSF of learned 2x2 precision and a row-normalised SRF.

    Initialised as the reference: precision parameter ``5 I`` (a very narrow PSF) and a flat SRF.
    """

    def __init__(self, hsi_bands: int, msi_bands: int, psf_size: int, ratio: int, offset: int | None = None):
        super().__init__()
        self.psf_size = int(psf_size)
        self.ratio = int(ratio)
        self.offset = self.psf_size // 2 if offset is None else int(offset)
        self.srf_weights = nn.Parameter(torch.ones(msi_bands, hsi_bands, 1, 1))
        self.psf_precision = nn.Parameter(5.0 * torch.eye(2))

    def srf(self) -> torch.Tensor:
        """``(msi_bands, hsi_bands)``, rows summing to 1 (entries are not forced non-negative)."""
        w = self.srf_weights[:, :, 0, 0]
        return w / w.sum(dim=1, keepdim=True)

    def psf(self) -> torch.Tensor:
        return gaussian_psf(self.psf_precision, self.psf_size)

    def precision(self) -> torch.Tensor:
        """The PSF's 2x2 precision matrix ``A = L^T L`` (inverse covariance, in 1/pixel^2)."""
        lower = torch.tril(self.psf_precision)
        return lower.T @ lower

    def spatial(self, x: torch.Tensor, psf: torch.Tensor | None = None) -> torch.Tensor:
        return blur_decimate(x, self.psf() if psf is None else psf, self.ratio, self.offset)

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor):
        """``(R Y_h, S(Y_m), R, psf)`` with both LR-MSI estimates clipped to [0, 1]."""
        srf, psf = self.srf(), self.psf()
        from_hsi = apply_srf(lr_hsi, srf).clamp(0.0, 1.0)
        from_msi = blur_decimate(hr_msi, psf, self.ratio, self.offset).clamp(0.0, 1.0)
        return from_hsi, from_msi, srf, psf


# --------------------------------------------------------------------------------------------
# the whole network
# --------------------------------------------------------------------------------------------


@dataclass
class MossFuseConfig:
    """Architecture: feature width ``dim``, ``num_blocks`` transformer blocks per stage, band counts,
    ``ratio`` and the estimated PSF's size (default ``ratio - 1`` for even ratios, ``ratio`` for odd
    ones, as published) and sampling offset (default: the kernel centre, ``psf_size // 2``).

    ``residual=True`` is *not* in the publication: the fusion decoder then predicts a correction
    to the bilinearly upsampled LR-HSI, ``X_hat = up(Y_h) + G(...)``, with its last convolution
    starting at zero (so the untrained network outputs ``up(Y_h)``). It makes short self-supervised
    fits from scratch start from a sensible image; the published checkpoint uses ``False``."""

    dim: int = 48
    num_blocks: int = 1
    hsi_bands: int = 31
    msi_bands: int = 3
    ratio: int = 32
    heads: int = 8
    psf_size: int | None = None
    offset: int | None = None
    residual: bool = False

    def __post_init__(self) -> None:
        if self.dim % self.heads or self.dim % 8:
            raise ValueError(f"dim must be a multiple of 8 and of heads={self.heads}; got {self.dim}")
        if self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1; got {self.num_blocks}")
        if self.psf_size is None:
            self.psf_size = self.ratio - 1 + self.ratio % 2 if self.ratio > 1 else 1


@dataclass
class MossFuseOutputs:
    """All outputs of a full forward pass (the order of the reference code's 14-tuple is given)."""

    shared_msi: torch.Tensor  # 0  RGB_E0
    detail_msi: torch.Tensor  # 1  RGB_E1
    shared_hsi: torch.Tensor  # 2  HSI_E0
    detail_hsi: torch.Tensor  # 3  HSI_E1
    msi_rec: torch.Tensor | None  # 4  RGB_D
    hsi_rec: torch.Tensor | None  # 5  HSI_D
    lr_msi_from_hsi: torch.Tensor  # 6  lr_msi_fhsi
    lr_msi_from_msi: torch.Tensor  # 7  lr_msi_fmsi
    lr_msi_rec: torch.Tensor | None  # 8  LR_D
    srf: torch.Tensor  # 9
    psf: torch.Tensor  # 10
    fused: torch.Tensor  # 11 HR_HSI
    fused_lr_hsi: torch.Tensor  # 12 hsi_fhsi: S_psf(X_hat)
    fused_msi: torch.Tensor  # 13 msi_fhsi: R X_hat


class MossFuseNet(nn.Module):
    """MossFuse (Du et al., arXiv 2412.04802); see the module docstring for the data flow."""

    def __init__(self, config: MossFuseConfig | None = None, **kwargs):
        super().__init__()
        cfg = config or MossFuseConfig(**kwargs)
        self.config = cfg
        d, n, h = cfg.dim, cfg.num_blocks, cfg.heads
        self.msi_encoder = Encoder(cfg.msi_bands, d, n, MSI_SHARED, MSI_COMPLEMENTARY, h)
        self.hsi_encoder = Encoder(cfg.hsi_bands, d, n, HSI_SHARED, HSI_COMPLEMENTARY, h)
        self.msi_decoder = ModalityDecoder(cfg.msi_bands, d, n, "spatial", h)
        self.hsi_decoder = ModalityDecoder(cfg.hsi_bands, d, n, "spectral", h)
        self.lr_msi_decoder = LRMSIDecoder(cfg.msi_bands, d, n, h)
        self.fusion_decoder = FusionDecoder(cfg.hsi_bands, d, n, h)
        self.degradation = DegradationEstimator(cfg.hsi_bands, cfg.msi_bands, cfg.psf_size, cfg.ratio, cfg.offset)
        if cfg.residual:
            nn.init.zeros_(self.fusion_decoder.head[-1].weight)

    def upsample(self, lr_hsi: torch.Tensor) -> torch.Tensor:
        r = self.config.ratio
        return F.interpolate(lr_hsi, scale_factor=(r, r), mode="bilinear", align_corners=False)

    def encode(self, hr_msi: torch.Tensor, lr_hsi: torch.Tensor):
        shared_m, detail_m = self.msi_encoder(hr_msi)
        shared_h, detail_h = self.hsi_encoder(self.upsample(lr_hsi))
        return shared_m, detail_m, shared_h, detail_h

    def forward(self, hr_msi: torch.Tensor, lr_hsi: torch.Tensor, *, self_supervised: bool = True) -> MossFuseOutputs:
        """The full pass. ``self_supervised=False`` skips the three reconstruction decoders (their
        fields are then ``None``)."""
        shared_m, detail_m, shared_h, detail_h = self.encode(hr_msi, lr_hsi)
        from_hsi, from_msi, srf, psf = self.degradation(lr_hsi, hr_msi)
        fused = self.fusion_decoder(shared_m, shared_h, detail_m, detail_h)
        if self.config.residual:
            fused = fused + self.upsample(lr_hsi)
        return MossFuseOutputs(
            shared_m,
            detail_m,
            shared_h,
            detail_h,
            self.msi_decoder(shared_m, detail_m) if self_supervised else None,
            self.hsi_decoder(shared_h, detail_h) if self_supervised else None,
            from_hsi,
            from_msi,
            self.lr_msi_decoder(shared_m, shared_h) if self_supervised else None,
            srf,
            psf,
            fused,
            self.degradation.spatial(fused, psf),
            apply_srf(fused, srf),
        )

    def fuse(self, hr_msi: torch.Tensor, lr_hsi: torch.Tensor) -> torch.Tensor:
        """Only the fused HR-HSI ``(b, hsi_bands, Y, X)``: encoders and fusion decoder."""
        fused = self.fusion_decoder(*self._reorder(self.encode(hr_msi, lr_hsi)))
        if self.config.residual:
            fused = fused + self.upsample(lr_hsi)
        return fused

    @staticmethod
    def _reorder(features):
        shared_m, detail_m, shared_h, detail_h = features
        return shared_m, shared_h, detail_m, detail_h

    def inference_copy(self) -> MossFuseNet:
        """A deep copy in eval mode with each large-kernel block folded (BatchNorms and dilated
        branches merged into one convolution; same function up to float rounding) and without the
        self-supervised decoders. Use :meth:`fuse` on it."""
        net = copy.deepcopy(self).eval()
        for module in list(net.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, LargeKernelBlock):
                    setattr(module, child_name, child.folded())
        del net.msi_decoder, net.hsi_decoder, net.lr_msi_decoder
        for p in net.parameters():
            p.requires_grad_(False)
        return net


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "DegradationEstimator",
    "FoldedLargeKernelBlock",
    "MossFuseConfig",
    "MossFuseNet",
    "MossFuseOutputs",
    "apply_srf",
    "blur_decimate",
    "count_parameters",
    "gaussian_psf",
]
