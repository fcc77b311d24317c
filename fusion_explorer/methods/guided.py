"""Moved to :mod:`fusion_explorer.methods.unmixing.guided`; this name stays importable."""

from .unmixing.guided import (  # noqa: F401
    BRIGHTNESS_WEIGHT,
    NEIGHBOURS,
    SIGMA,
    WINDOW,
    Neighbours,
    colour_neighbours,
    data_neighbours,
    transfer,
)

__all__ = ["Neighbours", "colour_neighbours", "data_neighbours", "transfer", "WINDOW", "NEIGHBOURS", "SIGMA",
           "BRIGHTNESS_WEIGHT"]
