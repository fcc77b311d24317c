"""Building blocks of the MossFuse network, written for this package.

Feature maps are ``(batch, channels, y, x)`` tensors. Two families of blocks are used:

- *Transposed-attention transformer blocks* (Restormer): self-attention across channels,
  ``softmax(t_h * q_h k_h^T / (|q_h| |k_h|)) v_h`` per head ``h`` with ``q, k, v`` of shape
  ``(channels/heads, pixels)``, so the cost is linear in the number of pixels; then a gated
  depth-wise feed-forward ``W_out (gelu(a) * b)``, ``(a, b) = dw3x3(W_in x)``.
- *Large-kernel convolution blocks* (UniRepLKNet): a depth-wise 7x7 convolution plus parallel
  dilated depth-wise branches (each with its BatchNorm), squeeze-excitation, and a pixel-wise MLP
  with global response normalisation. At inference the branches and BatchNorms are folded into one
  7x7 convolution and one linear layer (:meth:`LargeKernelBlock.folded`), which gives the same
  function up to float rounding.

The cross-modal *aggregation* blocks are transformer blocks whose queries are gated by a guide
feature map (spatially or per channel), and whose output adds the gated guide back.

When autograd is off (``torch.no_grad``/``inference_mode``) the blocks update their own temporaries
in place to save memory traffic; the arithmetic is the same.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

#: LayerNorm epsilon of the reference implementation (biased variance).
LN_EPS = 1e-5


def _no_grad() -> bool:
    """True when no autograd graph is recorded, so temporaries may be updated in place."""
    return not torch.is_grad_enabled()


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel: ``(x - mean_c) / sqrt(var_c + 1e-5) * w + b``."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (b, c, y, x) -> (b, y, x, c): a free view when x is stored channels-last
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, LN_EPS)
        return y.permute(0, 3, 1, 2)


class Pointwise(nn.Conv2d):
    """A 1x1 convolution computed as one matrix product ``W (c_in, pixels)``.

    Same parameters (and names) as ``nn.Conv2d(c_in, c_out, 1)``; on CPU the plain GEMM avoids the
    layout conversions a 1x1 oneDNN convolution does on ``(b, c, y, x)`` tensors.
    """

    def __init__(self, c_in: int, c_out: int, bias: bool = False):
        super().__init__(c_in, c_out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        y = torch.matmul(self.weight.view(self.out_channels, self.in_channels), x.reshape(b, self.in_channels, h * w))
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.view(b, self.out_channels, h, w)


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, c, h, w = t.shape
    return t.reshape(b, heads, c // heads, h * w)


def channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Transposed attention on ``(b, heads, d, pixels)`` tensors; returns ``(b, heads, d, pixels)``.

    ``q`` and ``k`` are L2-normalised along the pixels (norms floored at 1e-12); the normalisation
    is applied to the small ``d x d`` score matrix instead of to ``q`` and ``k`` themselves.
    """
    nq = torch.linalg.vector_norm(q, dim=-1).clamp_min(1e-12)
    nk = torch.linalg.vector_norm(k, dim=-1).clamp_min(1e-12)
    scores = torch.matmul(q, k.transpose(-2, -1))
    if _no_grad():
        scores.div_(nq.unsqueeze(-1) * nk.unsqueeze(-2)).mul_(temperature)
    else:
        scores = scores / (nq.unsqueeze(-1) * nk.unsqueeze(-2)) * temperature
    return torch.matmul(scores.softmax(dim=-1), v)


class ChannelSelfAttention(nn.Module):
    """Multi-head transposed self-attention with depth-wise 3x3 mixing of ``q, k, v`` (MDTA)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_qkv = Pointwise(dim, 3 * dim)
        self.qkv_depthwise = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=False)
        self.proj = Pointwise(dim, dim)

    def attend(self, x: torch.Tensor, query_gate: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_depthwise(self.to_qkv(x)).chunk(3, dim=1)
        if query_gate is not None:
            q = q.mul_(query_gate) if _no_grad() else q * query_gate
        out = channel_attention(_heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads), self.temperature)
        return out.reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(x))


class GatedFeedForward(nn.Module):
    """``W_out (gelu(a) * b)`` with ``(a, b) = dw3x3(W_in x)``; hidden width ``expansion * dim`` (GDFN)."""

    def __init__(self, dim: int, expansion: float = 2.0):
        super().__init__()
        hidden = int(dim * expansion)
        self.expand = Pointwise(dim, 2 * hidden)
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.shrink = Pointwise(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.depthwise(self.expand(x)).chunk(2, dim=1)
        return self.shrink(F.gelu(a).mul_(b) if _no_grad() else F.gelu(a) * b)


class TransformerBlock(nn.Module):
    """``x + attn(norm(x))`` then ``x + ffn(norm(x))``."""

    def __init__(self, dim: int, heads: int = 8, expansion: float = 2.0):
        super().__init__()
        self.norm_attn = ChannelNorm(dim)
        self.attn = ChannelSelfAttention(dim, heads)
        self.norm_ffn = ChannelNorm(dim)
        self.ffn = GatedFeedForward(dim, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _no_grad():  # the same sums, accumulated into the fresh branch outputs
            x = self.attn(self.norm_attn(x)).add_(x)
            return self.ffn(self.norm_ffn(x)).add_(x)
        x = x + self.attn(self.norm_attn(x))
        return x + self.ffn(self.norm_ffn(x))


# --------------------------------------------------------------------------------------------
# cross-modal aggregation
# --------------------------------------------------------------------------------------------


class PixelGate(nn.Module):
    """A ``(b, 1, y, x)`` gate in (0, 1): three 1x1 convolutions ``dim -> dim/8 -> dim/8 -> 1``."""

    def __init__(self, dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            Pointwise(dim, dim // 8),
            nn.ReLU(),
            Pointwise(dim // 8, dim // 8),
            nn.ReLU(),
            Pointwise(dim // 8, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ChannelGate(nn.Module):
    """A ``(b, dim, 1, 1)`` gate in (0, 1) from the spatial mean: MLP ``dim -> dim/8 -> dim/8 -> dim``."""

    def __init__(self, dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, dim // 8, bias=False),
            nn.GELU(),
            nn.Linear(dim // 8, dim // 8, bias=False),
            nn.GELU(),
            nn.Linear(dim // 8, dim, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.mean(dim=(2, 3)))[:, :, None, None]


class GuidedAttention(nn.Module):
    """Transposed attention on ``x`` whose queries are gated by the guide ``g``.

    ``kind="spatial"``: queries times a pixel gate of ``g``; the attention output ``o`` then gates
    ``dw3x3(g)`` per channel. ``kind="spectral"``: queries times a channel gate of ``g``; ``o`` gates
    ``W g`` (a full 1x1 convolution) per pixel. Returns ``proj(o + gated guide)``.
    """

    def __init__(self, dim: int, heads: int, kind: str):
        super().__init__()
        if kind not in ("spatial", "spectral"):
            raise ValueError(f"kind must be 'spatial' or 'spectral'; got {kind!r}")
        self.kind = kind
        self.core = ChannelSelfAttention(dim, heads)
        self.pixel_gate = PixelGate(dim)
        self.channel_gate = ChannelGate(dim)
        if kind == "spatial":
            self.guide = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        else:
            self.guide = Pointwise(dim, dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.kind == "spatial":
            o = self.core.attend(x, self.pixel_gate(g))
            gate = self.channel_gate(o)
        else:
            o = self.core.attend(x, self.channel_gate(g))
            gate = self.pixel_gate(o)
        if _no_grad():
            return self.core.proj(self.guide(g).mul_(gate).add_(o))
        return self.core.proj(o + self.guide(g) * gate)


class AggregationBlock(nn.Module):
    """``x + guided_attn(norm(x), g)`` then ``x + ffn(norm(x))`` (the guide is not normalised)."""

    def __init__(self, dim: int, kind: str, heads: int = 8, expansion: float = 2.0):
        super().__init__()
        self.norm_attn = ChannelNorm(dim)
        self.attn = GuidedAttention(dim, heads, kind)
        self.norm_ffn = ChannelNorm(dim)
        self.ffn = GatedFeedForward(dim, expansion)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if _no_grad():
            x = self.attn(self.norm_attn(x), g).add_(x)
            return self.ffn(self.norm_ffn(x)).add_(x)
        x = x + self.attn(self.norm_attn(x), g)
        return x + self.ffn(self.norm_ffn(x))


# --------------------------------------------------------------------------------------------
# large-kernel convolution blocks
# --------------------------------------------------------------------------------------------

#: Dilated branches ``(kernel, dilation)`` beside a large depth-wise kernel (UniRepLKNet defaults).
DILATED_BRANCHES = {
    5: ((3, 1), (3, 2)),
    7: ((5, 1), (3, 2), (3, 3)),
    9: ((5, 1), (5, 2), (3, 3), (3, 4)),
    11: ((5, 1), (5, 2), (3, 3), (3, 4), (3, 5)),
    13: ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5)),
}


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` with ``bn(z) = s z + t`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class DilatedDepthwise(nn.Module):
    """``BN(dw_KxK(x)) + sum_i BN_i(dw_{k_i}, dilation r_i (x))``, all depth-wise, same size out."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        if kernel not in DILATED_BRANCHES:
            raise ValueError(f"large kernel must be one of {sorted(DILATED_BRANCHES)}; got {kernel}")
        self.kernel = kernel
        self.large = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False)
        self.large_bn = nn.BatchNorm2d(dim)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, dim, k, padding=r * (k - 1) // 2, dilation=r, groups=dim, bias=False),
                nn.BatchNorm2d(dim),
            )
            for k, r in DILATED_BRANCHES[kernel]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.large_bn(self.large(x))
        for branch in self.branches:
            out = out + branch(x)
        return out

    @torch.no_grad()
    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (dim, 1, K, K), bias (dim,))`` of the single depth-wise conv equal to this (eval)."""
        s, t = _bn_scale_shift(self.large_bn)
        weight = self.large.weight * s[:, None, None, None]
        bias = t.clone()
        c = self.kernel // 2
        for (k, r), branch in zip(DILATED_BRANCHES[self.kernel], self.branches, strict=True):
            conv, bn = branch
            sb, tb = _bn_scale_shift(bn)
            half = r * (k - 1) // 2
            # a dilated k x k kernel is a (r(k-1)+1)^2 kernel with taps every r pixels
            taps = slice(c - half, c + half + 1, r)
            weight[:, :, taps, taps] += conv.weight * sb[:, None, None, None]
            bias += tb
        return weight, bias


class GlobalResponseNorm(nn.Module):
    """GRN on ``(b, y, x, c)``: ``(gamma * N + 1) * x + beta``, ``N_c = |x_c|_2 / mean_c |x_c|_2``."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        # |x_c|_2 over the pixels; a sum of squares is much faster here than vector_norm over (y, x)
        b, h, w, c = x.shape
        energy = x.reshape(b, h * w, c).square().sum(dim=1).sqrt().view(b, 1, 1, c)
        n = energy / (energy.mean(dim=-1, keepdim=True) + 1e-6)
        if inplace:
            return x.mul_(self.gamma * n + 1).add_(self.beta)
        return (self.gamma * n + 1) * x + self.beta


class SqueezeExcite(nn.Module):
    """``x * sigmoid(W_2 relu(W_1 mean_yx(x) + b_1) + b_2)``, bottleneck ``dim/4``."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduce = nn.Conv2d(dim, dim // 4, 1)
        self.expand = nn.Conv2d(dim // 4, dim, 1)

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        g = torch.sigmoid(self.expand(F.relu(self.reduce(x.mean(dim=(2, 3), keepdim=True)))))
        return x.mul_(g) if inplace else x * g


class LargeKernelBlock(nn.Module):
    """``x + s * BN(W_2 GRN(gelu(W_1 SE(BN(mixer(x))))))``, per-pixel MLP of width ``4 dim``.

    ``kernel=0``: no spatial mixer and no first BatchNorm (a pure channel block); otherwise a
    :class:`DilatedDepthwise` mixer of that kernel. ``s`` is a per-channel layer scale.
    """

    def __init__(self, dim: int, kernel: int, mlp_ratio: int = 4):
        super().__init__()
        self.layer_scale = nn.Parameter(torch.full((dim,), 1e-6))
        if kernel:
            self.mixer = DilatedDepthwise(dim, kernel)
            self.norm = nn.BatchNorm2d(dim)
        else:
            self.mixer = nn.Identity()
            self.norm = nn.Identity()
        self.se = SqueezeExcite(dim)
        self.mlp_in = nn.Linear(dim, mlp_ratio * dim)
        self.grn = GlobalResponseNorm(mlp_ratio * dim)
        self.mlp_out = nn.Linear(mlp_ratio * dim, dim, bias=False)
        self.mlp_bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        free = _no_grad()
        y = self.se(self.norm(self.mixer(x)), inplace=free and not isinstance(self.mixer, nn.Identity))
        y = self.grn(F.gelu(self.mlp_in(y.permute(0, 2, 3, 1))), inplace=free)
        y = self.mlp_bn(self.mlp_out(y).permute(0, 3, 1, 2))
        return x + self.layer_scale[:, None, None] * y

    @torch.no_grad()
    def folded(self) -> FoldedLargeKernelBlock:
        """The same function (eval mode) with every BatchNorm and branch folded away."""
        return FoldedLargeKernelBlock(self)


class FoldedLargeKernelBlock(nn.Module):
    """Inference form of :class:`LargeKernelBlock`: one biased depth-wise conv, SE, MLP with biases."""

    def __init__(self, block: LargeKernelBlock):
        super().__init__()
        dim = block.layer_scale.numel()
        if isinstance(block.mixer, DilatedDepthwise):
            weight, bias = block.mixer.equivalent_kernel()
            s, t = _bn_scale_shift(block.norm)
            k = weight.shape[-1]
            self.mixer: nn.Module = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=True)
            self.mixer.weight.copy_(weight * s[:, None, None, None])
            self.mixer.bias.copy_(bias * s + t)
        else:
            self.mixer = nn.Identity()
        self.se = copy.deepcopy(block.se)
        self.mlp_in = copy.deepcopy(block.mlp_in)
        self.grn = copy.deepcopy(block.grn)
        # layer_scale * BN(W z) = (diag(ls * s) W) z + ls * t
        s, t = _bn_scale_shift(block.mlp_bn)
        ls = block.layer_scale
        self.mlp_out = nn.Linear(block.mlp_out.in_features, dim, bias=True)
        self.mlp_out.weight.copy_(block.mlp_out.weight * (ls * s)[:, None])
        self.mlp_out.bias.copy_(ls * t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        free = _no_grad()
        y = self.se(self.mixer(x), inplace=free and not isinstance(self.mixer, nn.Identity))
        y = self.grn(F.gelu(self.mlp_in(y.permute(0, 2, 3, 1))), inplace=free)
        return x + self.mlp_out(y).permute(0, 3, 1, 2)
