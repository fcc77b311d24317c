"""Scenes larger than memory: lazy cubes, tiled fusion on dask, chunked Zarr output.

::

    from fusion_explorer.tiled import TiledProblem, fuse_tiled, open_lazy

    problem = TiledProblem(open_lazy("lr_hsi.zarr"), open_lazy("hr_msi.zarr"), srf, ratio=8, psf=psf, offset=3)
    fused = fuse_tiled(problem, "cnmf", tile=512, scheduler="processes", workers=2, out="fused.zarr")

The same call runs on dask's threaded scheduler (``scheduler="threads"``), on a LocalCluster of
process workers (``"processes"``) and on any dask scheduler (``"tcp://host:8786"`` or a
``distributed.Client``, e.g. from dask-jobqueue or dask-kubernetes). See :mod:`.methods` for how
each method is cut into global (LR grid) and per-tile (HR grid, with a halo) stages.
"""

from .engine import Runner, Tile, TileGrid
from .io import ZarrCubeWriter, as_lazy, open_lazy, validate_lazy
from .methods import TILED_METHODS, fuse_tiled
from .problem import TiledProblem

__all__ = [
    "TILED_METHODS",
    "Runner",
    "Tile",
    "TileGrid",
    "TiledProblem",
    "ZarrCubeWriter",
    "as_lazy",
    "fuse_tiled",
    "open_lazy",
    "validate_lazy",
]
