"""Linear degradation operators on tensors ``(..., bands, y, x)``: :class:`Operator` (``forward``,
``adjoint``, composition with ``@``), the spatial degradation (PSF blur + decimation, with fast
separable paths), :class:`Decimate`, :func:`Blur` and the spectral response :class:`SpectralResponse`.

    S(X) = decimate_{ratio, offset}(PSF * X)        R X = SRF matrix (msi_bands, hsi_bands) @ X
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ProblemError

#: Border modes: names used here -> ``torch.nn.functional.pad`` modes. "reflect" is reflect-101
#: (``dcb|abcd|cba``), OpenCV's default border and scipy.ndimage's ``mirror``.
BORDERS = {"reflect": "reflect", "replicate": "replicate", "circular": "circular", "zeros": "constant"}


class Operator:
    """A linear map on tensors ``(..., bands, y, x)``.

    Subclasses implement :meth:`forward`; :meth:`adjoint` defaults to the exact adjoint obtained
    by differentiating ``<A x, y>`` (valid because ``A`` is linear) and is overridden where a
    closed form is cheaper. ``A @ B`` composes (``B`` applied first).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def input_shape(self, y: torch.Tensor) -> tuple[int, ...]:
        """Shape of the input that maps to an output shaped like ``y`` (needed by the adjoint)."""
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = torch.zeros(self.input_shape(y), dtype=y.dtype, device=y.device, requires_grad=True)
            (grad,) = torch.autograd.grad(self.forward(x), x, grad_outputs=y)
        return grad

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def __matmul__(self, other: Operator) -> Compose:
        return Compose(other, self)


class Compose(Operator):
    """``ops[-1] ∘ ... ∘ ops[0]``: the operators applied in the order given."""

    def __init__(self, *ops: Operator):
        flat: list[Operator] = []
        for op in ops:
            flat.extend(op.ops if isinstance(op, Compose) else [op])
        self.ops = tuple(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op.forward(x)
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        # the chain rule: (B_n ... B_0)^T = B_0^T ... B_n^T
        for op in reversed(self.ops):
            y = op.adjoint(y)
        return y

    def input_shape(self, y: torch.Tensor) -> tuple[int, ...]:
        shape = y.shape
        for op in reversed(self.ops):
            shape = op.input_shape(torch.empty(shape, device="meta"))
        return tuple(shape)

    def __repr__(self) -> str:
        return " -> ".join(repr(op) for op in self.ops)


def _as_kernel(kernel: Any) -> torch.Tensor:
    k = torch.as_tensor(np.array(kernel, dtype=np.float64) if not isinstance(kernel, torch.Tensor) else kernel)
    k = k.detach().to(torch.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ProblemError(f"a PSF must be a 2-D kernel with odd sizes; got shape {tuple(k.shape)}")
    if not torch.isfinite(k).all() or (k < 0).any():
        raise ProblemError("a PSF must be finite and non-negative")
    if not k.sum() > 0:
        raise ProblemError("a PSF must have a positive sum")
    return k


def _rank_one_factors(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(col, row)`` with ``k = outer(col, row)`` when ``k`` is separable (to 1e-12), else None."""
    u, s, vh = torch.linalg.svd(k)
    if s.numel() > 1 and s[1] > 1e-12 * s[0]:
        return None
    col, row = u[:, 0] * s[0].sqrt(), vh[0] * s[0].sqrt()
    if col.sum() < 0:
        col, row = -col, -row
    return col, row


class SpatialDegradation(Operator):
    """PSF blur then decimation: ``(k * X)[..., offset::ratio, offset::ratio]``.

    The blur is a correlation with ``kernel`` (``(kh, kw)``, odd sizes; a Gaussian is symmetric
    so correlation = convolution) with borders extended by ``border``. Only the kept samples are
    computed (a strided convolution), and a separable kernel is applied as two 1-D passes.
    ``ratio=1, offset=0`` gives a plain blur.

    A separable kernel is applied by :attr:`path` ``"auto"``: on images up to
    :attr:`DENSE_MAX_SIDE` a side as two small dense matrices, ``Y = A_v X A_hᵀ`` (borders and
    decimation folded in); on larger ones as strided taps (:class:`_AxisPlan`: each kept output
    row is ``Σ_t g_t x[offset + ratio·j + t - p]``, a handful of strided multiply-adds over views,
    with the few border rows as small dense blocks). The dense matrices cost ``side / ratio``
    multiply-adds per pixel and axis, the taps ``kernel / ratio`` in more, smaller operations;
    PyTorch's CPU convolution of single-channel images with a stride is slower than both. For 30
    bands, forward/adjoint, best of 20, 2 threads here (``benchmarks/bench_physics.py``): 64x64
    at x8, dense 0.05/0.07 ms, taps 0.39/0.43, convolutions 1.0/1.1; 256x256, 1.0/1.2, 1.1/1.3,
    7.4/8.8; 512x512, 8.9/10.0, 4.9/5.4, 41/36 (x32 with its 31-tap kernel at 512x512: 3.1/4.1,
    2.4/2.8, 25/43). Unrolled methods apply this operator and its adjoint at every layer.
    """

    #: separable kernels: ``"auto"`` (dense up to :attr:`DENSE_MAX_SIDE`, then taps), or one of
    #: ``"dense"``, ``"taps"``, ``"conv"`` (tests compare them)
    path = "auto"
    #: largest image side of the dense 1-D matrices under ``path="auto"``
    DENSE_MAX_SIDE = 256

    def __init__(self, kernel: Any, ratio: int = 1, offset: int = 0, border: str = "reflect"):
        self.kernel = _as_kernel(kernel)
        self.ratio = int(ratio)
        self.offset = int(offset)
        if self.ratio < 1 or not 0 <= self.offset < self.ratio:
            raise ProblemError(f"need ratio >= 1 and 0 <= offset < ratio; got ratio {ratio}, offset {offset}")
        if border not in BORDERS:
            raise ProblemError(f"unknown border {border!r}; choose one of {sorted(BORDERS)}")
        self.border = border
        self._factors = _rank_one_factors(self.kernel)
        self._axis_plans: dict[tuple, tuple[_AxisPlan, _AxisPlan]] = {}
        self._matrices: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        kh, kw = self.kernel.shape
        return f"SpatialDegradation(psf {kh}x{kw}, ratio {self.ratio}, offset {self.offset}, border {self.border})"

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        return len(range(self.offset, h, self.ratio)), len(range(self.offset, w, self.ratio))

    def input_shape(self, y: torch.Tensor) -> tuple[int, ...]:
        *lead, h, w = y.shape
        return (*lead, h * self.ratio, w * self.ratio)

    def _plans(self, h: int, w: int) -> tuple[_AxisPlan, _AxisPlan]:
        """The 1-D passes (rows, then columns) of the separable kernel on an ``h x w`` image."""
        key = (h, w)
        if key not in self._axis_plans:
            col, row = self._factors
            self._axis_plans[key] = (_AxisPlan.build(h, col, self.ratio, self.offset, self.border),
                                     _AxisPlan.build(w, row, self.ratio, self.offset, self.border))
        return self._axis_plans[key]

    def _separable_path(self, h: int, w: int) -> str | None:
        """How a separable kernel is applied on an ``h x w`` image (``None``: not separable)."""
        if self._factors is None:
            return None
        if self.path != "auto":
            return self.path
        return "dense" if max(h, w) <= self.DENSE_MAX_SIDE else "taps"

    def _dense(self, h: int, w: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A_v, A_h)``, the two passes as dense matrices, cached per size, dtype and device."""
        key = (h, w, dtype, str(device))
        if key not in self._matrices:
            self._matrices[key] = tuple(plan.matrix(dtype, device) for plan in self._plans(h, w))
        return self._matrices[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, c, h, w = x.shape
        kh, kw = self.kernel.shape
        ph, pw = kh // 2, kw // 2
        if self.border == "reflect" and (ph >= h or pw >= w):
            raise ProblemError(
                f"a {kh}x{kw} PSF with reflect borders needs an image larger than {ph}x{pw}; got {h}x{w}"
            )
        path = self._separable_path(h, w)
        if path == "dense":
            a_v, a_h = self._dense(h, w, x.dtype, x.device)
            return a_v @ x @ a_h.T
        if path == "taps":
            rows, cols = self._plans(h, w)
            return cols.apply(rows.apply(x, -2), -1)
        z = _pad(x.reshape(-1, 1, h, w), (pw, pw, ph, ph), self.border)
        # output sample j sits at input row offset + j*ratio, i.e. padded rows offset .. offset+kh-1
        z = z[..., self.offset :, self.offset :]
        kernel = self.kernel.to(dtype=x.dtype, device=x.device)
        if path is not None:  # "conv"
            col, row = (f.to(dtype=x.dtype, device=x.device) for f in self._factors)
            z = F.conv2d(z, col.view(1, 1, kh, 1), stride=(self.ratio, 1))
            z = F.conv2d(z, row.view(1, 1, 1, kw), stride=(1, self.ratio))
        else:
            z = F.conv2d(z, kernel.view(1, 1, kh, kw), stride=self.ratio)
        ho, wo = self.output_size(h, w)
        return z[..., :ho, :wo].reshape(*lead, c, ho, wo)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """The exact adjoint in closed form: transposed strided convolutions, then the padding
        folded back. Autograd's generic adjoint gives the same numbers, but costs about twice as
        much and is not itself differentiable, which unrolled networks built on it need."""
        *lead, c, ho, wo = y.shape
        h, w = ho * self.ratio, wo * self.ratio
        path = self._separable_path(h, w)
        if path == "dense":
            a_v, a_h = self._dense(h, w, y.dtype, y.device)
            return a_v.T @ y @ a_h
        if path == "taps":
            rows, cols = self._plans(h, w)
            return rows.adjoint(cols.adjoint(y, -1), -2)
        kh, kw = self.kernel.shape
        ph, pw = kh // 2, kw // 2
        rows, cols = h + 2 * ph - self.offset, w + 2 * pw - self.offset  # the convolutions' input
        full_h, full_w = (rows - kh) // self.ratio + 1, (cols - kw) // self.ratio + 1
        z = F.pad(y.reshape(-1, 1, ho, wo), (0, full_w - wo, 0, full_h - ho))
        kernel = self.kernel.to(dtype=y.dtype, device=y.device)
        if path is not None:  # "conv"
            col, row = (f.to(dtype=y.dtype, device=y.device) for f in self._factors)
            z = F.conv_transpose2d(z, row.view(1, 1, 1, kw), stride=(1, self.ratio))
            z = F.conv_transpose2d(z, col.view(1, 1, kh, 1), stride=(self.ratio, 1))
        else:
            z = F.conv_transpose2d(z, kernel.view(1, 1, kh, kw), stride=self.ratio)
        z = F.pad(z, (self.offset, cols - z.shape[-1], self.offset, rows - z.shape[-2]))
        z = _unpad(_unpad(z, ph, -2, self.border), pw, -1, self.border)
        return z.reshape(*lead, c, h, w)


def _strided(x: torch.Tensor, dim: int, start: int, step: int, count: int) -> torch.Tensor:
    """The view ``x[start : start + step·count : step]`` along ``dim`` (negative)."""
    v = x.narrow(dim, start, step * (count - 1) + 1)
    return v[(Ellipsis, slice(None, None, step)) + (slice(None),) * (-dim - 1)]


def _along(m: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """``m`` ``(rows, n)`` applied along ``dim`` (-2 or -1) of ``x``."""
    return m @ x if dim == -2 else x @ m.T


@dataclass(frozen=True)
class _AxisPlan:
    """One 1-D pass of a separable PSF along an axis of ``n`` samples, ``n_out`` kept:
    ``out[j] = Σ_t taps[t] · padded[offset + ratio·j + t]``.

    Outputs ``j0 <= j < j1`` read only samples inside the axis: one strided multiply-add of a view
    per tap (``first``: the sample tap 0 reads for ``j0``). The few others, within half a kernel
    of a border where the padding folds back, are small dense blocks ``(out start, count, in
    start, matrix)``."""

    n: int
    n_out: int
    ratio: int
    taps: tuple[float, ...]
    first: int
    j0: int
    j1: int
    edges: tuple[tuple[int, int, int, np.ndarray], ...]
    # the edge blocks as tensors, per (dtype, device, transposed): made once, not at every call
    # (on a GPU each would be a host-to-device copy)
    _tensors: dict = field(default_factory=dict, compare=False, repr=False)

    def _blocks(self, dtype: torch.dtype, device, transposed: bool) -> list[torch.Tensor]:
        key = (dtype, str(device), transposed)
        if key not in self._tensors:
            self._tensors[key] = [torch.as_tensor(block.T if transposed else block, dtype=dtype, device=device)
                                  for *_, block in self.edges]
        return self._tensors[key]

    @classmethod
    def build(cls, n: int, taps: torch.Tensor, ratio: int, offset: int, border: str) -> _AxisPlan:
        g = taps.double().numpy()
        k, half = g.size, g.size // 2
        n_out = len(range(offset, n, ratio))
        idx = offset + ratio * np.arange(n_out)[:, None] + np.arange(k)[None, :] - half  # (n_out, k)
        inside = np.flatnonzero(((idx >= 0) & (idx < n)).all(axis=1))  # one contiguous run
        j0, j1 = (int(inside[0]), int(inside[-1]) + 1) if inside.size else (n_out, n_out)
        # the sample each padded position reads, from _pad itself (so the border rules live in one
        # place): pad the 1-based positions, 0 (-1 after the shift) where the border pads zeros
        positions = torch.arange(1, n + 1, dtype=torch.float64).view(1, 1, n, 1)
        source = _pad(positions, (0, 0, half, half), border).view(-1).long().numpy() - 1
        edges = []
        for a, b in ((0, j0), (j1, n_out)):
            if b <= a:
                continue
            src = source[idx[a:b] + half]
            ok = src >= 0
            lo, hi = int(src[ok].min()), int(src[ok].max()) + 1
            m = np.zeros((b - a, hi - lo))
            rows = np.broadcast_to(np.arange(b - a)[:, None], src.shape)
            np.add.at(m, (rows[ok], src[ok] - lo), np.broadcast_to(g, src.shape)[ok])
            edges.append((a, b - a, lo, m))
        return cls(n, n_out, ratio, tuple(g.tolist()), offset + ratio * j0 - half, j0, j1, tuple(edges))

    def matrix(self, dtype: torch.dtype, device) -> torch.Tensor:
        """The pass as a dense ``(n_out, n)`` matrix."""
        m = np.zeros((self.n_out, self.n))
        for j in range(self.j0, self.j1):
            m[j, self.first + self.ratio * (j - self.j0) + np.arange(len(self.taps))] = self.taps
        for a, count, lo, block in self.edges:
            m[a : a + count, lo : lo + block.shape[1]] = block
        return torch.as_tensor(m, dtype=dtype, device=device)

    def apply(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The pass along ``dim`` (-2 or -1) of ``x`` (differentiable)."""
        parts = []  # (first output sample, values)
        count = self.j1 - self.j0
        if count:
            core = _strided(x, dim, self.first, self.ratio, count) * self.taps[0]
            for t, c in enumerate(self.taps[1:], start=1):
                core.add_(_strided(x, dim, self.first + t, self.ratio, count), alpha=c)
            parts.append((self.j0, core))
        for (a, _, lo, block), m in zip(self.edges, self._blocks(x.dtype, x.device, False), strict=True):
            parts.append((a, _along(m, x.narrow(dim, lo, block.shape[1]), dim)))
        parts.sort(key=lambda part: part[0])
        return torch.cat([values for _, values in parts], dim=dim)

    def adjoint(self, y: torch.Tensor, dim: int) -> torch.Tensor:
        """The adjoint of :meth:`apply` along ``dim``."""
        shape = list(y.shape)
        shape[dim] = self.n
        x = y.new_zeros(shape)
        count = self.j1 - self.j0
        if count:
            core = y.narrow(dim, self.j0, count)
            for t, c in enumerate(self.taps):
                _strided(x, dim, self.first + t, self.ratio, count).add_(core, alpha=c)
        for (a, rows, lo, block), m in zip(self.edges, self._blocks(y.dtype, y.device, True), strict=True):
            x.narrow(dim, lo, block.shape[1]).add_(_along(m, y.narrow(dim, a, rows), dim))
        return x


def _pad(z: torch.Tensor, pads: tuple[int, int, int, int], border: str) -> torch.Tensor:
    """``F.pad`` of ``(N, C, H, W)`` images with the borders of :data:`BORDERS` (zeros: constant 0)."""
    mode = BORDERS[border]
    return F.pad(z, pads, mode=mode) if mode != "constant" else F.pad(z, pads)


def _unpad(z: torch.Tensor, p: int, dim: int, border: str) -> torch.Tensor:
    """Adjoint of padding ``p`` samples on both ends of ``dim`` with ``border``'s rule: the padded
    samples are added back onto the ones they copied."""
    if p == 0:
        return z
    n = z.shape[dim] - 2 * p
    x = z.narrow(dim, p, n).clone()
    left, right = z.narrow(dim, 0, p), z.narrow(dim, p + n, p)
    if border == "reflect":  # padded[i] = x[p - i], padded[p + n + j] = x[n - 2 - j]
        x.narrow(dim, 1, p).add_(left.flip(dim))
        x.narrow(dim, n - 1 - p, p).add_(right.flip(dim))
    elif border == "replicate":
        x.narrow(dim, 0, 1).add_(left.sum(dim, keepdim=True))
        x.narrow(dim, n - 1, 1).add_(right.sum(dim, keepdim=True))
    elif border == "circular":  # padded[i] = x[n - p + i], padded[p + n + j] = x[j]
        x.narrow(dim, n - p, p).add_(left)
        x.narrow(dim, 0, p).add_(right)
    return x


class Decimate(Operator):
    """``x[..., offset::ratio, offset::ratio]``; adjoint puts samples back and zeros elsewhere."""

    def __init__(self, ratio: int, offset: int = 0):
        self.ratio, self.offset = int(ratio), int(offset)
        if self.ratio < 1 or not 0 <= self.offset < self.ratio:
            raise ProblemError(f"need ratio >= 1 and 0 <= offset < ratio; got ratio {ratio}, offset {offset}")

    def __repr__(self) -> str:
        return f"Decimate(ratio {self.ratio}, offset {self.offset})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.offset :: self.ratio, self.offset :: self.ratio]

    def input_shape(self, y: torch.Tensor) -> tuple[int, ...]:
        *lead, h, w = y.shape
        return (*lead, h * self.ratio, w * self.ratio)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        x = y.new_zeros(self.input_shape(y))
        x[..., self.offset :: self.ratio, self.offset :: self.ratio] = y
        return x


def Blur(kernel: Any, border: str = "reflect") -> SpatialDegradation:
    """A PSF blur alone (same size in and out)."""
    return SpatialDegradation(kernel, ratio=1, offset=0, border=border)


class SpectralResponse(Operator):
    """``Y_m[m] = sum_b R[m, b] X[b]`` with ``R`` = SRF matrix ``(msi_bands, hsi_bands)``."""

    def __init__(self, matrix: Any):
        m = torch.as_tensor(np.array(matrix, dtype=np.float64) if not isinstance(matrix, torch.Tensor) else matrix)
        if m.ndim != 2:
            raise ProblemError(f"an SRF matrix must be 2-D (msi_bands, hsi_bands); got shape {tuple(m.shape)}")
        self.matrix = m.detach().to(torch.float64)

    def __repr__(self) -> str:
        return f"SpectralResponse({self.matrix.shape[1]} -> {self.matrix.shape[0]} bands)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3] != self.matrix.shape[1]:
            raise ProblemError(f"SRF expects {self.matrix.shape[1]} bands; the cube has {x.shape[-3]}")
        return torch.einsum("mb,...byx->...myx", self.matrix.to(dtype=x.dtype, device=x.device), x)

    def input_shape(self, y: torch.Tensor) -> tuple[int, ...]:
        return (*y.shape[:-3], self.matrix.shape[1], *y.shape[-2:])

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("mb,...myx->...byx", self.matrix.to(dtype=y.dtype, device=y.device), y)
