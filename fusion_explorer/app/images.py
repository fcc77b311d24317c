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


#: display primaries (nm) and how far a band centre may lie from one for a composite to count as true colour
_PRIMARIES = {"R": 640.0, "G": 550.0, "B": 475.0}
_PRIMARY_TOLERANCE = 45.0


def band_centres(srf_matrix: np.ndarray, wavelength: np.ndarray) -> np.ndarray:
    """Each MSI band's centre (nm): its response-weighted mean wavelength over the cube's bands."""
    m = np.clip(np.asarray(srf_matrix, dtype=np.float64), 0, None)
    wl = np.asarray(wavelength, dtype=np.float64)
    return (m @ wl) / np.maximum(m.sum(axis=1), 1e-12)


def msi_rgb(msi: xr.DataArray, centres: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """A display RGB of the HR-MSI and what it is: ``"true colour (B4/B3/B2)"`` when the bands nearest to red,
    green and blue lie within 45 nm of them (by ``centres``, nm), else ``"false colour: B3/B2/B1 as RGB"``
    (the three longest-wavelength bands, or the first three / one band in grey when centres are unknown)."""
    v = np.asarray(msi.values, dtype=np.float64)
    n = v.shape[0]
    names = [str(x) for x in msi.coords["band_name"].values] if "band_name" in msi.coords else [
        f"band {i + 1}" for i in range(n)]
    if n < 3:
        pick, kind = [0, 0, 0], "false colour"
    elif centres is not None and len(centres) == n:
        c = np.asarray(centres, dtype=np.float64)
        pick = [int(np.argmin(np.abs(c - _PRIMARIES[k]))) for k in "RGB"]
        true = len(set(pick)) == 3 and all(abs(c[i] - _PRIMARIES[k]) <= _PRIMARY_TOLERANCE
                                           for i, k in zip(pick, "RGB", strict=True))
        if not true:
            pick = [int(i) for i in np.argsort(c)[::-1][:3]]
        kind = "true colour" if true else "false colour"
    else:
        upper = [x.upper() for x in names]
        if all(k in upper for k in "RGB"):
            pick, kind = [upper.index("R"), upper.index("G"), upper.index("B")], "true colour"
        else:
            pick, kind = [0, 1, 2], "false colour"
    img = (stretch(v[pick], 99, gamma=2.2).transpose(1, 2, 0) * 255).astype(np.uint8)
    bands = "/".join(names[i] for i in pick) if n >= 3 else names[0]
    text = f"true colour ({bands})" if kind == "true colour" else (
        f"false colour: {bands} as RGB" if n >= 3 else f"false colour: {bands} in grey")
    return img, text


def wavelength_colour(nm: float) -> str:
    """A colour for a band centred at ``nm``: its spectral hue in the visible, dark reds in the near infrared,
    browns and greys beyond (so Sentinel-2's and Landsat's bands are told apart by wavelength, not name)."""
    nm = float(nm)
    if nm < 380:
        return "#6a3d9a"
    if nm > 1000:
        return "#8c564b" if nm < 1800 else "#555555"
    if nm > 720:
        t = min((nm - 720) / 280, 1.0)
        return f"#{int(178 - 90 * t):02x}{int(24 + 10 * t):02x}{int(43 + 10 * t):02x}"
    # piecewise-linear visible spectrum (after Bruton's approximation), slightly darkened for white paper
    r = g = b = 0.0
    if nm < 440:
        r, b = (440 - nm) / 60, 1.0
    elif nm < 490:
        g, b = (nm - 440) / 50, 1.0
    elif nm < 510:
        g, b = 1.0, (510 - nm) / 20
    elif nm < 580:
        r, g = (nm - 510) / 70, 1.0
    elif nm < 645:
        r, g = 1.0, (645 - nm) / 65
    else:
        r = 1.0
    k = 0.8
    return f"#{int(255 * k * r):02x}{int(255 * k * g):02x}{int(255 * k * b):02x}"


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


def pins_layout(pins: list, cursor=None, size: tuple[int, int] = (256, 256), region=None) -> dict:
    """Layout shapes: colour-coded numbered circles on pinned pixels, a cross on the cursor and a dashed box
    on the selected region ``(y0, y1, x0, x1)`` (end exclusive).

    Markers live in the layout, so moving them re-sends no image data.
    """
    r = max(2.0, max(size) / 64)
    shapes, notes = [], []
    from .regions import LassoRegion, lasso_shapes

    if isinstance(region, LassoRegion):  # its polygon, not its bounding box
        lasso, labels = lasso_shapes(region)
        shapes += lasso
        notes += labels
    elif region is not None:
        y0, y1, x0, x1 = region
        for colour_, width in (("white", 3), ("#111", 1.5)):
            shapes.append({"type": "rect", "xref": "x", "yref": "y", "x0": x0 - 0.5, "x1": x1 - 0.5, "y0": y0 - 0.5,
                           "y1": y1 - 0.5, "line": {"color": colour_, "width": width,
                                                    "dash": "solid" if colour_ == "white" else "dash"}})
        notes.append({"x": x0 - 0.5, "y": y0 - 0.5, "xref": "x", "yref": "y", "text": "<b>region</b>",
                      "showarrow": False, "font": {"size": 11, "color": "#111"}, "bgcolor": "rgba(255,255,255,0.75)",
                      "xanchor": "left", "yanchor": "bottom"})
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
