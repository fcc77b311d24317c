"""Spectral response functions (SRFs): how each multispectral band integrates the HSI bands.

An SRF is a non-negative matrix ``R`` of shape ``(msi_bands, hsi_bands)`` whose rows sum to 1,
defined on the HSI band centres ``wavelength`` (nm). The MSI of a hyperspectral cube ``X``
``(hsi_bands, y, x)`` is, per pixel::

    msi[m, y, x] = sum_b R[m, b] * X[b, y, x]        (MSI = R @ X)

Measured responses come as tables on their own wavelength grid; :meth:`SRF.from_table`
resamples them to the cube's band centres by linear interpolation (zero outside the table),
drops bands that mostly fall outside the cube's wavelength range, and normalises each row.

Sources:

* built-ins, by name, through :func:`get_srf` (see :func:`available_srfs`; :func:`srf_names` lists
  them without importing their sources): the Nikon D700 of the MossFuse CAVE protocol (shipped as
  ``data/nikon_d700.csv``), the cameras and CIE colour matching functions of ``colour-science``,
  and the satellite sensors of ``pyrsr``;
* Gaussian bands, :func:`gaussian_srf`;
* files, :func:`read_srf_file`: the MATLAB tables published with fusion papers, CSV/text tables
  (first column nm) and NetCDF files written from :meth:`SRF.to_dataarray`;
* :func:`srf_from_name_or_path` picks one of the above from a string (the CLI's ``--srf``).

Modules: :mod:`~fusion_explorer.srf.model` (the :class:`SRF` object), :mod:`~fusion_explorer.srf.library`
(built-in names, Gaussian bands, :func:`srf_from_name_or_path`), :mod:`~fusion_explorer.srf.files`
(:func:`read_srf_file`).
"""

from .files import read_srf_file
from .library import available_srfs, gaussian_srf, get_srf, srf_from_name_or_path, srf_names
from .model import CAVE_WAVELENGTHS, ROSIS_WAVELENGTHS, SRF
from .model import CUT_OFF_RESPONSE as CUT_OFF_RESPONSE
from .model import WAVELENGTH_TOLERANCE_NM as WAVELENGTH_TOLERANCE_NM

__all__ = [
    "CAVE_WAVELENGTHS",
    "ROSIS_WAVELENGTHS",
    "SRF",
    "available_srfs",
    "gaussian_srf",
    "get_srf",
    "read_srf_file",
    "srf_from_name_or_path",
    "srf_names",
]
