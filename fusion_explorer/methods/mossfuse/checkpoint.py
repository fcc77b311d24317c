"""Reading the published MossFuse checkpoint (and this package's own ones).

The published file (``CAVE_32_model.pth``) is a dict ``{"Model_stage1": state_dict}`` saved from
``DataParallel`` (every key starts with ``module.``), for ``dim=48, num_blocks=1, ratio=32``:
387 tensors, 315 parameters and 72 BatchNorm buffers. :func:`convert_reference_state_dict`
renames every key to this package's module names; nothing is dropped, so the result loads into
:class:`~.network.MossFuseNet` with ``strict=True``. The renaming, applied in this order:

==========================================  ==============================================
reference name (after ``module.``)           name here
==========================================  ==============================================
``modelE_MSI`` / ``modelE_HSI``              ``msi_encoder`` / ``hsi_encoder``
``modelD_MSI`` / ``modelD_HSI``              ``msi_decoder`` / ``hsi_decoder``
``modelD_LR`` / ``modelD_HR``                ``lr_msi_decoder`` / ``fusion_decoder``
``blind.srf``                                ``degradation.srf_weights``
``blind.blur_down.KernelParam``              ``degradation.psf_precision``
encoder ``patch_embed.proj``                 ``embed``
encoder ``encoder_level1`` / ``baseFeature`` ``trunk`` / ``shared``
encoder ``detailFeature``                    ``complementary`` (the HSI one, a single block, as ``complementary.0``)
decoder ``encoder_level2`` / ``output``      ``refine`` / ``head``
HSI/MSI decoder ``fuse`` / ``reduce_channel`` ``aggregate`` / ``unused_merge``
LR decoder ``reduce_channel``                ``merge``
HR decoder ``fuse`` / ``fuse1`` / ``fuse2``  ``merge`` / ``spatial_agg`` / ``spectral_agg``
transformer ``norm1.body`` / ``norm2.body``  ``norm_attn`` / ``norm_ffn``
attention ``qkv`` / ``qkv_dwconv`` / ``project_out`` ``to_qkv`` / ``qkv_depthwise`` / ``proj``
cross attention (the above)                  ``attn.core.<the above>``, ``temperature`` too
cross attention ``Spatial_Att.spatial_atten`` ``attn.pixel_gate.layers``
cross attention ``Spectral_Att.spectral_atten`` ``attn.channel_gate.layers``
cross attention ``DWConv``                   ``attn.guide``
feed-forward ``project_in`` / ``dwconv`` / ``project_out`` ``expand`` / ``depthwise`` / ``shrink``
large-kernel ``gamma``                       ``layer_scale``
large-kernel ``dwconv.lk_origin`` / ``dwconv.origin_bn`` ``mixer.large`` / ``mixer.large_bn``
large-kernel ``dwconv.dil_conv_k{k}_{r}``   ``mixer.branches.{i}.0`` (i: position of (k, r) in the 7x7 list)
large-kernel ``dwconv.dil_bn_k{k}_{r}``     ``mixer.branches.{i}.1``
large-kernel ``se.down`` / ``se.up``         ``se.reduce`` / ``se.expand``
large-kernel ``pwconv1.1`` / ``act.1``       ``mlp_in`` / ``grn``
large-kernel ``pwconv2.0`` / ``pwconv2.2``   ``mlp_out`` / ``mlp_bn``
==========================================  ==============================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...errors import ProblemError
from .layers import DILATED_BRANCHES
from .network import MossFuseConfig, MossFuseNet

#: Key under which the published file stores the network.
REFERENCE_KEY = "Model_stage1"
#: Key under which this package stores a network (with ``"config"`` beside it).
OWN_KEY = "mossfuse_state"

_TOP = {
    "modelE_MSI": "msi_encoder",
    "modelE_HSI": "hsi_encoder",
    "modelD_MSI": "msi_decoder",
    "modelD_HSI": "hsi_decoder",
    "modelD_LR": "lr_msi_decoder",
    "modelD_HR": "fusion_decoder",
}

# (pattern, replacement) applied in order to the part of the key after the top-level module.
_RULES: list[tuple[str, str]] = [
    # encoders
    (r"^patch_embed\.proj\.", "embed."),
    (r"^encoder_level1\.", "trunk."),
    (r"^baseFeature\.", "shared."),
    (r"^detailFeature\.(?=\d)", "complementary."),
    (r"^detailFeature\.(?!\d)", "complementary.0."),
    # decoders
    (r"^encoder_level2\.", "refine."),
    (r"^output\.", "head."),
    (r"^fuse1\.", "spatial_agg."),
    (r"^fuse2\.", "spectral_agg."),
    # cross attention (before the plain attention rules)
    (r"\.attn\.Spatial_Att\.spatial_atten\.", ".attn.pixel_gate.layers."),
    (r"\.attn\.Spectral_Att\.spectral_atten\.", ".attn.channel_gate.layers."),
    (r"\.attn\.DWConv\.", ".attn.guide."),
    # transformer blocks
    (r"\.norm1\.body\.", ".norm_attn."),
    (r"\.norm2\.body\.", ".norm_ffn."),
    (r"\.attn\.qkv\.", ".attn.to_qkv."),
    (r"\.attn\.qkv_dwconv\.", ".attn.qkv_depthwise."),
    (r"\.attn\.project_out\.", ".attn.proj."),
    (r"\.ffn\.project_in\.", ".ffn.expand."),
    (r"\.ffn\.dwconv\.", ".ffn.depthwise."),
    (r"\.ffn\.project_out\.", ".ffn.shrink."),
    # large-kernel blocks
    (r"^(\.(?:shared|complementary)\.\d+)\.gamma$", r"\1.layer_scale"),
    (r"\.dwconv\.lk_origin\.", ".mixer.large."),
    (r"\.dwconv\.origin_bn\.", ".mixer.large_bn."),
    (r"\.se\.down\.", ".se.reduce."),
    (r"\.se\.up\.", ".se.expand."),
    (r"\.pwconv1\.1\.", ".mlp_in."),
    (r"\.act\.1\.", ".grn."),
    (r"\.pwconv2\.0\.", ".mlp_out."),
    (r"\.pwconv2\.2\.", ".mlp_bn."),
]

_CROSS_ATTN_CORE = ("temperature", "to_qkv.", "qkv_depthwise.", "proj.")


def _rename_tail(top: str, tail: str) -> str:
    # the decoders' own "fuse" and "reduce_channel" mean different things per decoder
    if top == "modelD_HR":
        tail = re.sub(r"^fuse\.", "merge.", tail)
    elif top in ("modelD_MSI", "modelD_HSI"):
        tail = re.sub(r"^fuse\.", "aggregate.", tail)
        tail = re.sub(r"^reduce_channel\.", "unused_merge.", tail)
    elif top == "modelD_LR":
        tail = re.sub(r"^reduce_channel\.", "merge.", tail)
    tail = "." + tail
    for pattern, repl in _RULES[:9]:
        tail = re.sub(pattern, repl, tail[1:])
        tail = "." + tail
    for pattern, repl in _RULES[9:]:
        tail = re.sub(pattern, repl, tail)
    dil = re.search(r"\.dwconv\.dil_(conv|bn)_k(\d+)_(\d+)\.", tail)
    if dil:
        kind, k, r = dil.group(1), int(dil.group(2)), int(dil.group(3))
        index = next(
            (i for ks in DILATED_BRANCHES.values() for i, kr in enumerate(ks) if kr == (k, r) and len(ks) == 3), None
        )
        if index is None:
            raise ProblemError(f"checkpoint key {top}{tail}: no dilated branch k={k}, r={r} in a 7x7 block")
        tail = tail.replace(dil.group(0), f".mixer.branches.{index}.{0 if kind == 'conv' else 1}.")
    # aggregation blocks: the attention's own q/k/v weights live in attn.core
    if top in ("modelD_HR", "modelD_MSI", "modelD_HSI"):
        m = re.match(r"^\.(aggregate|spatial_agg|spectral_agg)\.attn\.(.*)$", tail)
        if m and m.group(2).startswith(_CROSS_ATTN_CORE):
            tail = f".{m.group(1)}.attn.core.{m.group(2)}"
    return tail[1:]


def convert_reference_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published state dict (with or without ``module.`` prefixes) under this package's names.

    Raises :class:`ProblemError` on a key that no rule knows, so that nothing is silently lost.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name == "blind.srf":
            out["degradation.srf_weights"] = value
            continue
        if name == "blind.blur_down.KernelParam":
            out["degradation.psf_precision"] = value
            continue
        top, _, tail = name.partition(".")
        if top not in _TOP:
            raise ProblemError(f"unknown key {key!r} in the MossFuse checkpoint (top-level module {top!r})")
        new = f"{_TOP[top]}.{_rename_tail(top, tail)}"
        if new in out:
            raise ProblemError(f"two checkpoint keys map to {new!r}")
        out[new] = value
    return out


def config_from_reference_state(state: Mapping[str, torch.Tensor], ratio: int = 32) -> MossFuseConfig:
    """Architecture read off the published state dict's shapes (the ratio is not stored in it)."""
    strip = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        embed_msi = strip["modelE_MSI.patch_embed.proj.weight"]
        embed_hsi = strip["modelE_HSI.patch_embed.proj.weight"]
    except KeyError as exc:
        raise ProblemError(f"not a MossFuse state dict: no {exc.args[0]!r}") from None
    blocks = len({k.split(".")[2] for k in strip if k.startswith("modelE_MSI.encoder_level1.")})
    heads = int(strip["modelE_MSI.encoder_level1.0.attn.temperature"].shape[0])
    return MossFuseConfig(
        dim=int(embed_msi.shape[0]),
        num_blocks=blocks,
        hsi_bands=int(embed_hsi.shape[1]),
        msi_bands=int(embed_msi.shape[1]),
        ratio=ratio,
        heads=heads,
    )


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, bool]:
    """``(state_dict, config or None, is_reference)`` of a published or own checkpoint file."""
    from ...io.weights import load_weights

    p = Path(path).expanduser()
    blob = load_weights(p)
    if isinstance(blob, dict) and REFERENCE_KEY in blob:
        return dict(blob[REFERENCE_KEY]), None, True
    if isinstance(blob, dict) and OWN_KEY in blob:
        return dict(blob[OWN_KEY]), dict(blob.get("config") or {}), False
    keys = list(blob)[:5] if isinstance(blob, dict) else type(blob).__name__
    raise ProblemError(f"{p}: expected a dict with {REFERENCE_KEY!r} or {OWN_KEY!r}; got {keys}")


def load_network(path: str | Path, ratio: int | None = None, **overrides: Any) -> MossFuseNet:
    """A :class:`MossFuseNet` in eval mode with the weights of ``path`` (strict load).

    The architecture is read off the tensor shapes (published file) or the stored config (own
    file); ``ratio`` is the ratio of the images it will see (the published file was trained for 32).
    ``overrides`` change config fields that hold no weights (``psf_size``, ``offset``); ``None``
    values are ignored.
    """
    state, config, is_reference = read_checkpoint(path)
    if ratio is None:
        ratio = 32 if is_reference else int(config.get("ratio", 32))
    if is_reference:
        cfg = config_from_reference_state(state, ratio)
        state = convert_reference_state_dict(state)
    else:
        cfg = MossFuseConfig(**config)
        if cfg.ratio != ratio and overrides.get("psf_size") is None:
            cfg.psf_size = None  # recomputed for the new ratio below
        cfg.ratio = int(ratio)
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    if cfg.psf_size is None:
        cfg.psf_size = cfg.ratio - 1 + cfg.ratio % 2 if cfg.ratio > 1 else 1
    net = MossFuseNet(cfg)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ProblemError(f"{path}: weights do not fit the MossFuse network: {exc}") from None
    return net.eval()


def save_network(net: MossFuseNet, path: str | Path, **extra: Any) -> Path:
    """Write ``{"mossfuse_state": state_dict, "config": {...}, **extra}`` (readable by :func:`load_network`)."""
    from dataclasses import asdict

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({OWN_KEY: net.state_dict(), "config": asdict(net.config), **extra}, p)
    return p
