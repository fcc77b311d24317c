"""Rendering helpers shared by the panels: true colour, maps and image figures (in HR pixel coordinates)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..render import stretch, true_colour
from .figure import png_uri
from .state import colour


def rgb(values: np.ndarray, wavelength: np.ndarray, exposure: float | None = None) -> np.ndarray:
    """sRGB ``(y, x, 3)`` uint8 of a cube ``(bands, y, x)`` with band centres ``wavelength`` nm."""
    cube = xr.DataArray(values, dims=("band", "y", "x"), coords={"wavelength": ("band", wavelength)})
    return true_colour(cube, exposure=exposure)


def msi_rgb(msi: xr.DataArray) -> np.ndarray:
    """A display RGB of the HR-MSI: R, G, B bands by name when present, else the first three."""
    v = np.asarray(msi.values, dtype=np.float64)
    names = [str(n).upper() for n in msi.coords["band_name"].values] if "band_name" in msi.coords else []
    if all(c in names for c in "RGB"):
        v = v[[names.index("R"), names.index("G"), names.index("B")]]
    elif v.shape[0] >= 3:
        v = v[[2, 1, 0]] if names and names[0].startswith("B") else v[:3]
    else:
        v = np.repeat(v[:1], 3, 0)
    return (stretch(v, 99, gamma=2.2).transpose(1, 2, 0) * 255).astype(np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    """PNG of a uint8 image, fast (zlib level 1): the dashboard re-encodes images on every step."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def shrink(values: np.ndarray, max_side: int) -> np.ndarray:
    """Block-mean a ``(..., y, x)`` array so its sides are at most ``max_side``."""
    h, w = values.shape[-2:]
    f = max(1, int(np.ceil(max(h, w) / max_side)))
    if f == 1:
        return values
    hh, ww = h // f, w // f
    v = values[..., : hh * f, : ww * f]
    return v.reshape(*v.shape[:-2], hh, f, ww, f).mean((-3, -1))


def display_maps(truth: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel SAM (degrees) and RMSE over bands ``(y, x)``, float32 for display.

    The formulas of :func:`fusion_explorer.metrics.sam_map` and :func:`~fusion_explorer.metrics.error_map`
    (same epsilon), computed in float32 numpy without their input checks so a 512x512x31 step stays fast.
    """
    from ..metrics import SAM_EPS

    t = np.asarray(truth, dtype=np.float32)
    z = np.asarray(estimate, dtype=np.float32)
    dot = np.einsum("byx,byx->yx", t, z)
    norms = np.sqrt(np.einsum("byx,byx->yx", t, t) * np.einsum("byx,byx->yx", z, z))
    sam = np.degrees(np.arccos(np.clip(dot / (norms + SAM_EPS), -1, 1)))
    d = t - z
    err = np.sqrt(np.einsum("byx,byx->yx", d, d) / t.shape[0])
    return sam, err


def grey(values: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    return (stretch(values, percentile) * 255).astype(np.uint8)


#: images are sent at most this many pixels a side (they are shown at about 300 px)
DISPLAY_SIDE = 320


def display_factor(size: tuple[int, int], max_side: int = DISPLAY_SIDE) -> int:
    return max(1, int(np.ceil(max(size) / max_side)))


def image_trace(img: np.ndarray, scale: float = 1.0, name: str = "image") -> dict:
    """A plotly ``image`` trace of a uint8 image, pixel centres at HR coordinates ``scale * i``.

    Clicks report HR pixel coordinates. Images come already reduced by :func:`rgb_display`; ``scale``
    is HR pixels per image pixel.
    """
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    off = (scale - 1) / 2
    return {
        "type": "image",
        "source": png_uri(png_bytes(img)),
        "x0": off,
        "y0": off,
        "dx": scale,
        "dy": scale,
        "name": name,
        "hovertemplate": "x %{x:.0f}, y %{y:.0f}<extra></extra>",
    }


def rgb_display(values: np.ndarray, wavelength: np.ndarray, scale: int = 1) -> tuple[np.ndarray, int]:
    """True colour of a cube ``(bands, y, x)`` block-averaged to about :data:`DISPLAY_SIDE`.

    Returns the image and its scale in HR pixels per image pixel (``scale`` x the block size).
    """
    f = display_factor(values.shape[-2:])
    small = shrink(np.asarray(values, dtype=np.float32), max(values.shape[-2:]) // f) if f > 1 else values
    return rgb(small, wavelength), scale * f


def grey_display(values: np.ndarray) -> tuple[np.ndarray, int]:
    f = display_factor(values.shape)
    return grey(shrink(values, max(values.shape) // f) if f > 1 else values), f


def pins_layout(pins: list, cursor=None, size: tuple[int, int] = (256, 256)) -> dict:
    """Layout shapes: colour-coded numbered circles on pinned pixels and a cross on the cursor.

    Markers live in the layout, so moving them re-sends no image data.
    """
    r = max(2.0, max(size) / 64)
    shapes, notes = [], []
    for i, (y, x) in enumerate(pins):
        c = colour(i)
        shapes.append({"type": "circle", "xref": "x", "yref": "y", "x0": x - r, "x1": x + r, "y0": y - r,
                       "y1": y + r, "line": {"color": c, "width": 2.5}})
        shapes.append({"type": "circle", "xref": "x", "yref": "y", "x0": x - r - 1, "x1": x + r + 1,
                       "y0": y - r - 1, "y1": y + r + 1, "line": {"color": "white", "width": 1}})
        notes.append({"x": x + r, "y": y - r, "xref": "x", "yref": "y", "text": f"<b>{i + 1}</b>", "showarrow": False,
                      "font": {"color": c, "size": 12}, "bgcolor": "rgba(255,255,255,0.75)", "xanchor": "left",
                      "yanchor": "bottom", "borderpad": 0})
    if cursor is not None:
        y, x = cursor
        for dx, dy in ((1, 1), (1, -1)):
            shapes.append({"type": "line", "xref": "x", "yref": "y", "x0": x - dx * r, "x1": x + dx * r,
                           "y0": y - dy * r, "y1": y + dy * r, "line": {"color": "white", "width": 3}})
            shapes.append({"type": "line", "xref": "x", "yref": "y", "x0": x - dx * r, "x1": x + dx * r,
                           "y0": y - dy * r, "y1": y + dy * r, "line": {"color": "black", "width": 1.2}})
    return {"shapes": shapes, "annotations": notes}


def image_layout(title: str, size: tuple[int, int], px: int = 300, colorbar: bool = False) -> dict:
    h, w = size
    width = px + (70 if colorbar else 0)
    height = int(px * h / w) + 40
    return {
        "title": {"text": title, "font": {"size": 13}, "x": 0.02, "y": 0.98, "yanchor": "top"},
        "width": width,
        "height": height,
        "autosize": False,
        "margin": {"l": 4, "r": 4 + (66 if colorbar else 0), "t": 30, "b": 6},
        "xaxis": {"visible": False, "range": [-0.5, w - 0.5], "constrain": "domain", "fixedrange": True},
        "yaxis": {"visible": False, "range": [h - 0.5, -0.5], "scaleanchor": "x", "constrain": "domain",
                  "fixedrange": True},
        "showlegend": False,
        "dragmode": False,
        "clickmode": "event",
        "hovermode": "closest",
        "plot_bgcolor": "white",
    }


def heatmap_trace(values: np.ndarray, unit: str, name: str, max_side: int = 128, zmax: float | None = None) -> dict:
    """A heatmap of a 2-D map (block-averaged to at most ``max_side``), in HR pixel coordinates, with a colour bar."""
    h, w = values.shape
    f = max(1, int(np.ceil(max(h, w) / max_side)))
    hh, ww = h // f, w // f
    z = shrink(values, max_side)
    xs = np.arange(ww) * f + (f - 1) / 2
    ys = np.arange(hh) * f + (f - 1) / 2
    zmax = float(np.nanpercentile(z, 99)) if zmax is None else zmax
    return {
        "type": "heatmap",
        "z": z.astype(np.float32),
        "x": xs,
        "y": ys,
        "zmin": 0,
        "zmax": max(zmax, 1e-9),
        "colorscale": "Viridis",
        "name": name,
        "colorbar": {"title": {"text": unit, "side": "right"}, "thickness": 12, "len": 0.9},
        "hovertemplate": "x %{x:.0f}, y %{y:.0f}: %{z:.3g} " + unit + "<extra></extra>",
    }


def line_layout(title: str, xtitle: str, ytitle: str, width: int = 460, height: int = 300) -> dict:
    return {
        "title": {"text": title, "font": {"size": 13}, "x": 0.02},
        "width": width,
        "height": height,
        "autosize": False,
        "margin": {"l": 55, "r": 10, "t": 34, "b": 42},
        "xaxis": {"title": {"text": xtitle}},
        "yaxis": {"title": {"text": ytitle}},
        "legend": {"font": {"size": 10}},
        "template": "plotly_white",
        "hovermode": "closest",
        "clickmode": "event",
    }
