"""Spectral response functions: built-ins, the shared SRF tables, resampling and application.

Every test reads the real files in ``../shared/data`` in place.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import xarray as xr
from PIL import Image

from fusion_explorer.cube import make_cube
from fusion_explorer.errors import ReadError, SRFError
from fusion_explorer.srf import (
    CAVE_WAVELENGTHS,
    ROSIS_WAVELENGTHS,
    SRF,
    available_srfs,
    gaussian_srf,
    get_srf,
    read_srf_file,
    srf_from_name_or_path,
    srf_names,
)

from .conftest import require

CAVE_WL = np.arange(400.0, 701.0, 10.0)  # band k of CAVE is 400 + 10 (k - 1) nm


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mossfuse_resp(srf_dir: Path) -> np.ndarray:
    return scipy.io.loadmat(require(srf_dir / "mossfuse_resp_nikon_d700_3x31.mat"))["resp"]


@pytest.fixture(scope="module")
def aviris_wl(remote_dir: Path) -> np.ndarray:
    path = require(remote_dir / "aviris_santabarbara_90x90x224.mat")
    return scipy.io.loadmat(path, variable_names=["wavelengths"])["wavelengths"].ravel().astype(np.float64)


@pytest.fixture(scope="module")
def pavia_wl(remote_dir: Path) -> np.ndarray:
    path = require(remote_dir / "paviaU_band_centers_103.mat")
    return scipy.io.loadmat(path)["paviaU_spec"].ravel().astype(np.float64)


@pytest.fixture(scope="module")
def cave_crop(cave_dir: Path) -> np.ndarray:
    """balloons_ms rows 192:256, cols 192:256, all 31 bands: (31, 64, 64) in [0, 1]."""
    scene = cave_dir / "balloons_ms"
    bands = []
    for k in range(1, 32):
        with Image.open(require(scene / f"balloons_ms_{k:02d}.png")) as im:
            bands.append(np.asarray(im, dtype=np.float64)[192:256, 192:256] / 65535.0)
    return np.stack(bands)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def _assert_valid(srf: SRF, hsi_bands: int) -> None:
    assert srf.matrix.shape == (srf.msi_bands, hsi_bands)
    assert srf.matrix.dtype == np.float64
    assert np.all(srf.matrix >= 0)
    np.testing.assert_allclose(srf.matrix.sum(axis=1), 1.0, atol=1e-12)
    assert len(srf.band_names) == srf.msi_bands


def _peak(srf: SRF, band: str) -> float:
    return float(srf.wavelength[np.argmax(srf.matrix[srf.band_names.index(band)])])


# --------------------------------------------------------------------------------------------
# the Nikon D700 of the MossFuse CAVE protocol
# --------------------------------------------------------------------------------------------


def test_nikon_d700_builtin_equals_mossfuse_resp(mossfuse_resp: np.ndarray, srf_dir: Path) -> None:
    np.testing.assert_array_equal(CAVE_WAVELENGTHS, CAVE_WL)
    srf = get_srf("nikon-d700", CAVE_WL)
    assert srf.band_names == ("R", "G", "B")
    assert srf.name == "nikon-d700"
    assert "MossFuse" in srf.provenance
    np.testing.assert_allclose(srf.matrix, mossfuse_resp, rtol=0, atol=1e-12)
    from_file = read_srf_file(srf_dir / "mossfuse_resp_nikon_d700_3x31.mat", CAVE_WL)
    np.testing.assert_allclose(from_file.matrix, mossfuse_resp, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# every shared table on the CAVE wavelengths
# --------------------------------------------------------------------------------------------

# file -> (band names kept on 400–700 nm, bands in increasing wavelength order, band dropped or None)
SHARED_TABLES = {
    "mossfuse_resp_nikon_d700_3x31.mat": (("R", "G", "B"), ("B", "G", "R"), None),
    "nikon_d700_76x3_400-700nm.mat": (("R", "G", "B"), ("B", "G", "R"), None),
    # SpfNet's red channel keeps a flat response out to 948 nm: only 44% of it lies in 400–700 nm
    "spfnet_D700_spec_resp_377-948nm.mat": (("B", "G"), ("B", "G"), "R"),
    "mhfnet_AllR_52rgb_3x31.mat": (("R", "G", "B"), ("B", "G", "R"), None),
    "ikonos_spec_resp.mat": (("B", "G", "R"), ("B", "G", "R"), "NIR"),
    "landsat8_oli_srf_7band.mat": (("B2", "B3", "B4"), ("B2", "B3", "B4"), "B5"),
    "cstf_R_rosis103_to_4band.mat": (("B", "G", "R"), ("B", "G", "R"), "NIR"),
}


@pytest.mark.parametrize("filename", sorted(SHARED_TABLES))
def test_shared_table_loads_on_cave_wavelengths(filename: str, srf_dir: Path) -> None:
    kept, spectral_order, dropped = SHARED_TABLES[filename]
    path = require(srf_dir / filename)
    if dropped is None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            srf = read_srf_file(path, CAVE_WL)
    else:
        with pytest.warns(UserWarning, match=rf"\b{dropped}\b"):
            srf = read_srf_file(path, CAVE_WL)
    _assert_valid(srf, 31)
    assert srf.band_names == kept
    np.testing.assert_array_equal(srf.wavelength, CAVE_WL)
    peaks = [_peak(srf, b) for b in spectral_order]
    assert peaks == sorted(peaks) and len(set(peaks)) == len(peaks), dict(zip(spectral_order, peaks, strict=True))
    centres = dict(zip(srf.band_names, srf.centre_wavelength, strict=True))
    assert all(400 <= c <= 700 for c in centres.values())
    if "B" in centres:
        assert 430 <= _peak(srf, "B") <= 500 and 500 <= _peak(srf, "G") <= 570


def test_nikon_d700_sources_agree(srf_dir: Path) -> None:
    """The three Nikon D700 tables, resampled to CAVE: MossFuse's resp and SpfNet's table agree on all
    channels (> 0.99); the older 76-sample table agrees on G and B (> 0.95) but its red channel falls
    off above 610 nm where the other two stay flat to 700 nm, so R agrees less (about 0.76)."""
    mossfuse = read_srf_file(srf_dir / "mossfuse_resp_nikon_d700_3x31.mat", CAVE_WL)
    nikon76 = read_srf_file(srf_dir / "nikon_d700_76x3_400-700nm.mat", CAVE_WL)
    spfnet = read_srf_file(srf_dir / "spfnet_D700_spec_resp_377-948nm.mat", CAVE_WL, min_coverage=0.3)

    def corr(a: SRF, b: SRF, band: str) -> float:
        return float(np.corrcoef(a.matrix[a.band_names.index(band)], b.matrix[b.band_names.index(band)])[0, 1])

    for band in "RGB":
        assert corr(mossfuse, spfnet, band) > 0.99, band
    for band in "GB":
        assert corr(mossfuse, nikon76, band) > 0.95, band
        assert corr(spfnet, nikon76, band) > 0.95, band
    assert 0.7 < corr(mossfuse, nikon76, "R") < 0.95
    for band in "RGB":  # peaks within 20 nm of each other
        peaks = [_peak(s, band) for s in (mossfuse, nikon76, spfnet)]
        assert max(peaks) - min(peaks) <= 20, (band, peaks)


def test_mhfnet_camera_sets(srf_dir: Path) -> None:
    path = srf_dir / "mhfnet_AllR_52rgb_3x31.mat"
    raw = scipy.io.loadmat(path)["R"]
    for index in range(28):  # sets 0–27 are real cameras
        srf = read_srf_file(path, CAVE_WL, index=index)
        assert srf.name == f"mhfnet-camera-{index}"
        assert _peak(srf, "B") < _peak(srf, "G") < _peak(srf, "R")
        np.testing.assert_allclose(srf.matrix, raw[:, :, index] / raw[:, :, index].sum(1, keepdims=True), atol=1e-12)
    _assert_valid(read_srf_file(path, CAVE_WL, index=51), 31)
    with pytest.raises(SRFError, match="52 camera response sets"):
        read_srf_file(path, CAVE_WL, index=52)


def test_excel_table_is_optional(srf_dir: Path) -> None:
    path = require(srf_dir / "Nikon_D700_Qu.xls")
    try:
        srf = read_srf_file(path, CAVE_WL)
    except SRFError as exc:  # no Excel reader installed here: a clear message naming the file
        assert str(path) in str(exc) and "CSV" in str(exc)
    else:
        _assert_valid(srf, 31)
        assert _peak(srf, "B") < _peak(srf, "G") < _peak(srf, "R")


# --------------------------------------------------------------------------------------------
# remote-sensing tables and sensors
# --------------------------------------------------------------------------------------------


def test_ikonos_on_aviris_keeps_four_bands(srf_dir: Path, aviris_wl: np.ndarray) -> None:
    path = srf_dir / "ikonos_spec_resp.mat"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        srf = read_srf_file(path, aviris_wl)
    _assert_valid(srf, 224)
    assert srf.band_names == ("B", "G", "R", "NIR")
    assert np.all(np.diff(srf.centre_wavelength) > 0)
    assert 760 < srf.centre_wavelength[3] < 830
    with_pan = read_srf_file(path, aviris_wl, include_pan=True)
    assert with_pan.band_names == ("PAN", "B", "G", "R", "NIR")


def test_cstf_matrix_on_the_pavia_bands(srf_dir: Path, pavia_wl: np.ndarray) -> None:
    np.testing.assert_allclose(pavia_wl, ROSIS_WAVELENGTHS, atol=1e-9)
    raw = scipy.io.loadmat(srf_dir / "cstf_R_rosis103_to_4band.mat")["R"]
    srf = read_srf_file(srf_dir / "cstf_R_rosis103_to_4band.mat", pavia_wl)
    _assert_valid(srf, 103)
    assert srf.band_names == ("B", "G", "R", "NIR")
    np.testing.assert_allclose(srf.matrix, raw / raw.sum(1, keepdims=True), rtol=0, atol=1e-12)
    assert np.all(np.diff(srf.centre_wavelength) > 0)


def test_landsat8_table_matches_pyrsr(srf_dir: Path) -> None:
    grid = np.arange(400.0, 2501.0)
    table = read_srf_file(srf_dir / "landsat8_oli_srf_7band.mat", grid)
    assert table.band_names == ("B2", "B3", "B4", "B5", "B9", "B6", "B7")
    pyrsr = get_srf("landsat-8", grid)
    for band, centre in zip(table.band_names, table.centre_wavelength, strict=True):
        assert abs(centre - pyrsr.centre_wavelength[pyrsr.band_names.index(band)]) < 2.0, band


def test_sentinel2a_on_cave_drops_nir_and_swir() -> None:
    with pytest.warns(UserWarning, match=r"dropped 9 band\(s\).*B8A") as record:
        srf = get_srf("sentinel-2a", CAVE_WL)
    assert len(record) == 1 and "sentinel-2a" in str(record[0].message)
    assert srf.band_names == ("B1", "B2", "B3", "B4")
    _assert_valid(srf, 31)
    assert [round(c, -1) for c in srf.centre_wavelength] == [440, 490, 560, 660]


def test_satellite_builtins_on_aviris(aviris_wl: np.ndarray) -> None:
    expected = {"sentinel-2a": 13, "sentinel-2b": 13, "landsat-7": 6, "landsat-8": 8, "landsat-9": 8}
    for name in [n for n in available_srfs() if not n.startswith("colour:")]:
        srf = _quiet(get_srf, name, aviris_wl)
        _assert_valid(srf, 224)
        if name in expected:
            assert srf.msi_bands == expected[name], (name, srf.band_names)


def test_colour_builtins_on_cave() -> None:
    names = available_srfs()
    assert "colour:Nikon 5100 (NPL)" in names and "cie-1931" in names and "nikon-d700" in names
    for name in [n for n in names if n.startswith("colour:")]:
        srf = get_srf(name, CAVE_WL)
        _assert_valid(srf, 31)
        assert srf.band_names == ("R", "G", "B")
        assert srf.centre_wavelength[2] < srf.centre_wavelength[1] < srf.centre_wavelength[0]
    cie = get_srf("CIE-1931", CAVE_WL)  # names are case-insensitive
    assert cie.band_names == ("X", "Y", "Z")
    assert 550 <= _peak(cie, "Y") <= 560 and 440 <= _peak(cie, "Z") <= 450
    with pytest.raises(SRFError, match="unknown SRF 'ikonos'.*nikon-d700"):
        get_srf("ikonos", CAVE_WL)


def test_listing_builtins_needs_no_colour_science(monkeypatch: pytest.MonkeyPatch) -> None:
    """The camera names are a constant, so listing the built-ins imports nothing (colour-science takes a second
    or more); the constant must be exactly the installed colour-science's cameras, so it cannot drift."""
    import colour

    from fusion_explorer.srf.library import COLOUR_CAMERAS

    assert sorted(COLOUR_CAMERAS) == sorted(colour.MSDS_CAMERA_SENSITIVITIES.keys())
    monkeypatch.setitem(sys.modules, "colour", None)  # any `import colour` now raises ImportError
    with pytest.raises(ImportError):
        import colour  # noqa: F401, F811 - proves the block above works
    names = available_srfs()
    assert [n for n in names if n.startswith("colour:")] == [f"colour:{c}" for c in COLOUR_CAMERAS]
    assert srf_names() == names
    assert srf_names(cameras=False) == [n for n in names if not n.startswith("colour:")]
    assert {"nikon-d700", "cie-1931", "cie-1964", "sentinel-2a", "landsat-8"} <= set(srf_names(cameras=False))


def test_none_left_raises() -> None:
    with pytest.raises(SRFError, match=r"none of the bands of landsat-8 overlaps the cube's 2000–2100 nm"):
        _quiet(get_srf, "landsat-8", np.arange(2000.0, 2101.0, 10.0))


# --------------------------------------------------------------------------------------------
# Gaussian bands
# --------------------------------------------------------------------------------------------


def test_gaussian_peaks_at_its_centres() -> None:
    srf = gaussian_srf([450, 550, 650], [20, 30, 40], CAVE_WL)
    _assert_valid(srf, 31)
    assert [_peak(srf, b) for b in srf.band_names] == [450, 550, 650]
    assert srf.band_names == ("450nm", "550nm", "650nm")
    fine = gaussian_srf(500.0, 20.0, np.arange(400.0, 601.0), name="g")
    row = fine.matrix[0]
    i = int(np.argmax(row))
    assert fine.wavelength[i] == 500
    np.testing.assert_allclose(row[i - 10] / row[i], 0.5, rtol=1e-12)  # half maximum at +-FWHM/2
    np.testing.assert_allclose(row[i + 10] / row[i], 0.5, rtol=1e-12)
    np.testing.assert_allclose(fine.resample(CAVE_WL).matrix, gaussian_srf(500.0, 20.0, CAVE_WL).matrix, atol=1e-5)
    with pytest.warns(UserWarning, match="900nm"):
        assert gaussian_srf([500, 900], 20, CAVE_WL).band_names == ("500nm",)


# --------------------------------------------------------------------------------------------
# checks, resampling, round trips
# --------------------------------------------------------------------------------------------


def test_band_count_mismatch_message(remote_dir: Path, pavia_wl: np.ndarray) -> None:
    raw = scipy.io.loadmat(require(remote_dir / "paviaU_subimg_50x50x103.mat"))["paviaU_subimg"]
    cube = make_cube(np.moveaxis(raw, -1, 0) / 8000.0, pavia_wl)
    srf = get_srf("nikon-d700", CAVE_WL)
    expected = (
        "SRF 'nikon-d700' is defined on 31 bands (400–700 nm) but the HSI has 103 bands (430–858.4 nm); "
        "resample the SRF to the cube's wavelengths with srf.resample(cube.wavelength)"
    )
    with pytest.raises(SRFError, match=re.escape(expected)):
        srf.apply(cube)
    with pytest.raises(SRFError, match="defined on 31 bands"):
        srf.apply(cube.values)
    on_pavia = srf.resample(cube.wavelength)
    on_pavia.check_cube(cube)
    msi = on_pavia.apply(cube)
    assert msi.shape == (3, 50, 50) and list(msi.band_name.values) == ["R", "G", "B"]


def test_wavelength_mismatch(cave_crop: np.ndarray) -> None:
    srf = get_srf("nikon-d700", CAVE_WL)
    srf.check_cube(make_cube(cave_crop, CAVE_WL + 0.4))  # within 0.5 nm
    with pytest.raises(SRFError, match=r"differ from the HSI's by up to 5 nm \(first at band 0: 400 vs 405 nm\)"):
        srf.check_cube(make_cube(cave_crop, CAVE_WL + 5))


def test_resample_round_trip(mossfuse_resp: np.ndarray) -> None:
    srf = get_srf("nikon-d700", CAVE_WL)
    fine = srf.resample(np.arange(400.0, 701.0, 2.0))
    assert fine.hsi_bands == 151 and fine.band_names == srf.band_names
    np.testing.assert_allclose(fine.resample(CAVE_WL).matrix, mossfuse_resp, atol=1e-12)
    bare = SRF.from_matrix(mossfuse_resp, CAVE_WL, band_names=("R", "G", "B"), name="bare")
    assert bare.table is None
    np.testing.assert_allclose(
        bare.resample(np.arange(400.0, 701.0, 5.0)).resample(CAVE_WL).matrix, bare.matrix, atol=1e-12
    )


def test_dataarray_and_netcdf_round_trip(tmp_path: Path) -> None:
    srf = _quiet(get_srf, "sentinel-2a", CAVE_WL)
    da = srf.to_dataarray()
    assert da.dims == ("msi_band", "band") and list(da.msi_band.values) == ["B1", "B2", "B3", "B4"]
    assert da.wavelength.attrs["units"] == "nm" and da.attrs["name"] == "sentinel-2a"
    back = SRF.from_dataarray(da)
    np.testing.assert_allclose(back.matrix, srf.matrix, rtol=1e-14, atol=0)
    assert (back.band_names, back.name, back.provenance) == (srf.band_names, srf.name, srf.provenance)
    path = tmp_path / "s2a.nc"
    da.to_netcdf(path, engine="h5netcdf")
    loaded = srf_from_name_or_path(str(path), CAVE_WL)
    np.testing.assert_allclose(loaded.matrix, srf.matrix, rtol=1e-14, atol=0)
    assert loaded.band_names == srf.band_names and loaded.name == "sentinel-2a"
    resampled = srf_from_name_or_path(str(path), np.arange(400.0, 701.0, 5.0))
    assert resampled.hsi_bands == 61


def test_apply_equals_einsum_on_a_cave_crop(cave_crop: np.ndarray, mossfuse_resp: np.ndarray) -> None:
    srf = get_srf("nikon-d700", CAVE_WL)
    cube = make_cube(cave_crop, CAVE_WL, attrs={"sensor": "CAVE"})
    msi = srf.apply(cube)
    expected = np.einsum("mb,byx->myx", mossfuse_resp, cave_crop)
    assert isinstance(msi, xr.DataArray) and msi.dims == ("band", "y", "x") and msi.shape == (3, 64, 64)
    np.testing.assert_allclose(msi.values, expected, rtol=1e-5, atol=1e-6)  # float32 cube
    assert list(msi.band_name.values) == ["R", "G", "B"]
    assert (
        msi.attrs["srf"] == "nikon-d700" and msi.attrs["sensor"] == "CAVE" and "MossFuse" in msi.attrs["srf_provenance"]
    )
    np.testing.assert_allclose(srf.apply(cave_crop), expected, rtol=1e-12)  # numpy: float64 in, float64 out
    tensor = srf.apply(torch.as_tensor(cave_crop[None], dtype=torch.float64))
    assert tensor.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(tensor[0].numpy(), expected, rtol=1e-12)
    t = srf.to_tensor("cpu", torch.float32)
    assert t.shape == (3, 31) and t.dtype == torch.float32


# --------------------------------------------------------------------------------------------
# files: generic tables and errors
# --------------------------------------------------------------------------------------------


def test_csv_table_reads_like_the_mat_file(srf_dir: Path, tmp_path: Path) -> None:
    ik = scipy.io.loadmat(srf_dir / "ikonos_spec_resp.mat")["ikonos_sp"]
    path = tmp_path / "ikonos.csv"
    lines = ["# IKONOS from ikonos_spec_resp.mat", "wavelength_nm,B,G,R,NIR"]
    lines += [",".join(repr(float(v)) for v in row[[0, 2, 3, 4, 5]]) for row in ik]
    path.write_text("\n".join(lines) + "\n")
    from_csv = srf_from_name_or_path(str(path), CAVE_WL, min_coverage=0.0)
    from_mat = read_srf_file(srf_dir / "ikonos_spec_resp.mat", CAVE_WL, min_coverage=0.0)
    assert from_csv.band_names == from_mat.band_names == ("B", "G", "R", "NIR")
    np.testing.assert_allclose(from_csv.matrix, from_mat.matrix, atol=1e-12)


def test_generic_mat_table(srf_dir: Path, tmp_path: Path) -> None:
    """An unknown variable name: the column of increasing wavelengths is found by the generic rule."""
    oli = scipy.io.loadmat(srf_dir / "landsat8_oli_srf_7band.mat")["srf"]
    path = tmp_path / "oli.mat"
    scipy.io.savemat(path, {"table": oli[:, [1, 0, 2, 3]]})  # wavelength in the second column
    srf = read_srf_file(path, np.arange(430.0, 701.0), name="oli-generic")
    assert srf.name == "oli-generic" and srf.msi_bands == 3
    assert [round(c) for c in srf.centre_wavelength] == [483, 561, 655]


def test_file_errors(srf_dir: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mat"
    corrupt.write_bytes((srf_dir / "ikonos_spec_resp.mat").read_bytes()[:2000])
    with pytest.raises(ReadError, match=re.escape(str(corrupt))):
        read_srf_file(corrupt, CAVE_WL)
    with pytest.raises(ReadError, match="no such file"):
        srf_from_name_or_path(str(tmp_path / "missing.mat"), CAVE_WL)
    odd = tmp_path / "odd.mat"
    scipy.io.savemat(odd, {"foo": np.ones((5, 7))})
    with pytest.raises(SRFError, match=re.escape(str(odd)) + ".*foo"):
        read_srf_file(odd, CAVE_WL)
    with pytest.raises(SRFError, match="neither a built-in name nor an existing file"):
        srf_from_name_or_path("no-such-sensor", CAVE_WL)
    assert srf_from_name_or_path("nikon-d700", CAVE_WL).name == "nikon-d700"
