"""Readers and writers on the real files of ../shared/data, read in place; derived files go to tmp_path."""

from __future__ import annotations

import shutil
import struct
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import xarray as xr
from PIL import Image

from fusion_explorer.cube import validate_cube, wavelengths
from fusion_explorer.errors import ReadError
from fusion_explorer.io import (
    describe,
    list_scenes,
    open_cube,
    read_cave,
    read_mat_variables,
    write_envi,
    write_netcdf,
    write_zarr,
)

REMOTE = {  # file: (variable, shape (band, y, x), wavelength range nm or None, sensor)
    "paviaU_subimg_50x50x103.mat": ("paviaU_subimg", (103, 50, 50), None, "ROSIS-03"),
    "paris_hyperion_ali_hs_ms.mat": ("HSim", (128, 72, 72), None, "EO-1 Hyperion"),
    "aviris_santabarbara_90x90x224.mat": ("hsi_img", (224, 90, 90), (365.910004, 2496.219971), "AVIRIS"),
    "muufl_gulfport_sub_51x88x72.mat": ("hsi_img_sub", (72, 51, 88), (367.700012, 1043.400024), "CASI-1500"),
    "samson_95x95x156.mat": ("SamSon", (156, 95, 95), None, "SAMSON"),
    "jasperRidge2_R198.mat": ("Y", (198, 100, 100), None, "AVIRIS"),
}


@pytest.fixture(scope="module")
def balloons(cave_dir: Path) -> xr.DataArray:
    return open_cube(cave_dir / "balloons_ms")


def _write_mat73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """Write ``variables`` the way MATLAB ``save -v7.3`` does: HDF5 behind a 512-byte text userblock,
    each array stored transposed (column-major) with a ``MATLAB_class`` attribute."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            dset = f.create_dataset(name, data=np.asarray(value, dtype=np.float64).T)
            dset.attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


# --- CAVE --------------------------------------------------------------------------------------


def test_cave_scene_loads(balloons: xr.DataArray, cave_dir: Path) -> None:
    cube = validate_cube(balloons, need_wavelength=True)
    assert cube.dims == ("band", "y", "x") and cube.shape == (31, 512, 512) and cube.dtype == np.float32
    np.testing.assert_array_equal(wavelengths(cube), np.arange(400, 701, 10))
    assert 0.0 <= float(cube.min()) and float(cube.max()) <= 1.0
    assert cube.attrs["format"] == "cave" and cube.attrs["sensor"] == "CAVE"
    assert cube.attrs["source"] == str((cave_dir / "balloons_ms").resolve())
    for k in (1, 17, 31):
        with Image.open(cave_dir / "balloons_ms" / f"balloons_ms_{k:02d}.png") as im:
            direct = (np.asarray(im) / 65535).astype(np.float32)
        np.testing.assert_array_equal(cube.values[k - 1], direct)


def test_cave_load_is_fast(cave_dir: Path) -> None:
    t0 = time.perf_counter()
    open_cube(cave_dir / "thread_spools_ms")
    assert time.perf_counter() - t0 < 1.5


def test_cave_zip_layout(tmp_path: Path, cave_dir: Path, balloons: xr.DataArray) -> None:
    """The official zip nests the PNGs one folder down."""
    inner = tmp_path / "balloons_ms" / "balloons_ms"
    inner.mkdir(parents=True)
    for png in (cave_dir / "balloons_ms").glob("*.png"):
        shutil.copyfile(png, inner / png.name)  # copies: symlinks leaving the scene folder are refused
    cube = open_cube(tmp_path / "balloons_ms")
    np.testing.assert_array_equal(cube.values, balloons.values)
    assert list_scenes(tmp_path) == [inner.resolve()]


def _write_scene(folder: Path, bands: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for k, band in enumerate(bands, start=1):
        Image.fromarray(band).save(folder / f"{folder.name}_{k:02d}.png")
    return folder


def test_cave_8bit_rgba_oddity_only_on_request(tmp_path: Path) -> None:
    """Some CAVE distributions hold 8-bit RGBA bands with equal colour channels: refused unless allow_8bit."""
    grey = [np.full((24, 32), 8 * k, np.uint8) for k in range(31)]
    rgba = [np.dstack([g, g, g, np.full_like(g, 255)]) for g in grey]
    scene = _write_scene(tmp_path / "odd_ms", rgba)
    with pytest.raises(ReadError, match="8-bit RGBA"):
        open_cube(scene)
    cube = read_cave(scene, allow_8bit=True)
    assert cube.shape == (31, 24, 32) and "8-bit" in cube.attrs["value_note"]
    np.testing.assert_array_equal(cube.values[3], np.float32(24 / 255))


def test_cave_16bit_colour_png_refused(tmp_path: Path) -> None:
    """Pillow decodes 16-bit RGB PNGs to 8 bits; the reader refuses them rather than lose precision."""
    scene = tmp_path / "rgb16_ms"
    grey = [np.full((8, 8), 1000 * k, np.uint16) for k in range(31)]
    _write_scene(scene, grey)
    (scene / "rgb16_ms_04.png").write_bytes(_png16_rgb(8, 8))
    with pytest.raises(ReadError, match="rgb16_ms_04.png: 16-bit RGB PNG"):
        open_cube(scene)


def _png16_rgb(width: int, height: int) -> bytes:
    """A minimal valid 16-bit RGB PNG (colour type 2)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(b"\x00" + np.full(3 * width, 1000, ">u2").tobytes() for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# --- MATLAB ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REMOTE))
def test_remote_mat_files_load(name: str, remote_dir: Path) -> None:
    variable, shape, wl_range, sensor = REMOTE[name]
    cube = open_cube(remote_dir / name)
    assert cube.dims == ("band", "y", "x") and cube.shape == shape and cube.dtype == np.float32
    assert cube.attrs["format"] == "mat-v5" and cube.attrs["variable"] == variable
    assert cube.attrs["sensor"] == sensor and cube.attrs["source"] == str((remote_dir / name).resolve())
    wl = wavelengths(cube)
    if wl_range is None:
        assert wl is None
    else:
        np.testing.assert_allclose([wl.min(), wl.max()], wl_range)
        assert np.all(np.diff(wl) > 0)
    validate_cube(cube, allow_negative=True)


@pytest.mark.parametrize(
    "name", ["paviaU_subimg_50x50x103.mat", "samson_95x95x156.mat", "muufl_gulfport_sub_51x88x72.mat"]
)
def test_yxb_values_are_the_stored_ones(name: str, remote_dir: Path) -> None:
    variable = REMOTE[name][0]
    stored = scipy.io.loadmat(remote_dir / name)[variable]  # (y, x, band)
    cube = open_cube(remote_dir / name)
    np.testing.assert_array_equal(cube.values, np.moveaxis(stored, 2, 0).astype(np.float32))


def test_pavia_wavelengths_from_separate_file(remote_dir: Path) -> None:
    centres = remote_dir / "paviaU_band_centers_103.mat"
    cube = open_cube(remote_dir / "paviaU_subimg_50x50x103.mat", wavelength=centres)
    expected = scipy.io.loadmat(centres)["paviaU_spec"].ravel()
    np.testing.assert_array_equal(wavelengths(cube), expected)
    assert wavelengths(cube)[[0, -1]].tolist() == pytest.approx([430.0, 858.4])
    same = open_cube(remote_dir / "paviaU_subimg_50x50x103.mat", wavelength=expected / 1000)  # µm -> nm
    np.testing.assert_allclose(wavelengths(same), expected)
    with pytest.raises(ReadError, match="paviaU_subimg"):
        open_cube(remote_dir / "paviaU_subimg_50x50x103.mat", wavelength=np.arange(100.0))


def test_aviris_bands_sorted_by_wavelength_and_negatives_kept(remote_dir: Path) -> None:
    raw = scipy.io.loadmat(remote_dir / "aviris_santabarbara_90x90x224.mat")
    cube = open_cube(remote_dir / "aviris_santabarbara_90x90x224.mat")
    order = np.asarray(cube.attrs["band_order"])
    np.testing.assert_array_equal(wavelengths(cube), raw["wavelengths"].ravel()[order])
    np.testing.assert_array_equal(cube.values, np.moveaxis(raw["hsi_img"], 2, 0)[order].astype(np.float32))
    assert float(cube.min()) == -12.0 and "negative" in cube.attrs["value_note"]
    clipped = open_cube(remote_dir / "aviris_santabarbara_90x90x224.mat", clip_negative=True)
    assert float(clipped.min()) == 0.0 and "clipped" in clipped.attrs["value_note"]


def test_paris_variable_selects_ms(remote_dir: Path) -> None:
    ms = open_cube(remote_dir / "paris_hyperion_ali_hs_ms.mat", variable="MSim")
    assert ms.shape == (9, 72, 72) and ms.attrs["sensor"] == "EO-1 ALI"
    with pytest.raises(ReadError, match="no variable 'nope'"):
        open_cube(remote_dir / "paris_hyperion_ali_hs_ms.mat", variable="nope")


def test_jasper_ridge_reshape(remote_dir: Path) -> None:
    path = remote_dir / "jasperRidge2_R198.mat"
    raw = scipy.io.loadmat(path)
    cube = open_cube(path)
    assert cube.attrs["scale"] == 5000.0 and cube.attrs["layout"] == "bp"
    expected = (raw["Y"] / 5000.0).reshape(198, 100, 100, order="F").astype(np.float32)
    np.testing.assert_array_equal(cube.values, expected)
    # The endmember model M @ A, reshaped the same way, must reproduce the image pixel by pixel.
    abundances = raw["A"].reshape(4, 100, 100, order="F")
    model = np.einsum("bk,kyx->byx", raw["M"], abundances)
    corr = np.corrcoef(model.mean(0).ravel(), cube.values.mean(0).ravel())[0, 1]
    assert corr > 0.95
    assert np.abs(model - cube.values).mean() < 0.05
    # Not transposed: the river (endmember "2-water") runs north-south through the left half of the
    # published Jasper Ridge scene, so water is a vertical stripe: it varies across columns, not down rows.
    assert str(raw["cood"][1, 0][0]) == "2-water"
    water = abundances[1]
    assert water.mean(0).std() > 3 * water.mean(1).std()
    assert water[:, :50].mean() > 5 * water[:, 50:].mean()
    # image_shape overrides; a wrong one is refused
    assert open_cube(path, image_shape=(50, 200)).shape == (198, 50, 200)
    with pytest.raises(ReadError, match="image_shape"):
        open_cube(path, image_shape=(99, 100))


def test_layout_override(remote_dir: Path) -> None:
    path = remote_dir / "samson_95x95x156.mat"
    assert open_cube(path, layout="yxb").shape == (156, 95, 95)
    assert open_cube(path, layout="byx").shape == (95, 95, 156)
    with pytest.raises(ReadError, match="unknown layout"):
        open_cube(path, layout="xyz")


def test_mat_v73_round_trip(tmp_path: Path, remote_dir: Path) -> None:
    raw = scipy.io.loadmat(remote_dir / "samson_95x95x156.mat")
    path = tmp_path / "samson_v73.mat"
    _write_mat73(path, {"SamSon": raw["SamSon"], "A": raw["A"], "M": raw["M"]})
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file" and h5py.is_hdf5(path)
    assert read_mat_variables(path) == {"A": (95, 95, 3), "M": (156, 3), "SamSon": (95, 95, 156)}
    cube = open_cube(path)
    assert cube.attrs["format"] == "mat-v7.3" and cube.shape == (156, 95, 95)
    np.testing.assert_array_equal(cube.values, open_cube(remote_dir / "samson_95x95x156.mat").values)


def test_mat_v73_pixels_by_bands(tmp_path: Path, remote_dir: Path) -> None:
    raw = scipy.io.loadmat(remote_dir / "jasperRidge2_R198.mat")
    path = tmp_path / "jasper_v73.mat"
    _write_mat73(path, {"Y": raw["Y"], "maxValue": raw["maxValue"], "nRow": raw["nRow"], "nCol": raw["nCol"]})
    np.testing.assert_array_equal(open_cube(path).values, open_cube(remote_dir / "jasperRidge2_R198.mat").values)


# --- ENVI, NetCDF, Zarr ------------------------------------------------------------------------


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_envi_round_trip(interleave: str, tmp_path: Path, remote_dir: Path) -> None:
    cube = open_cube(remote_dir / "aviris_santabarbara_90x90x224.mat")[:, 10:40, 20:45]
    hdr = write_envi(cube, tmp_path / f"crop_{interleave}.hdr", interleave=interleave)
    for path in (hdr, hdr.with_suffix(".img")):
        back = open_cube(path)
        assert back.attrs["format"] == "envi" and back.attrs["interleave"] == interleave
        assert back.attrs["sensor"] == "AVIRIS" and back.shape == (224, 30, 25)
        np.testing.assert_array_equal(back.values, cube.values)
        np.testing.assert_array_equal(wavelengths(back), wavelengths(cube))


def test_envi_micrometres(tmp_path: Path, remote_dir: Path) -> None:
    cube = open_cube(remote_dir / "muufl_gulfport_sub_51x88x72.mat")[:, :8, :8]
    hdr = write_envi(cube, tmp_path / "um.hdr")
    text = hdr.read_text()
    um = ", ".join(f"{w / 1000:.9f}" for w in wavelengths(cube))
    start, stop = text.index("wavelength = {"), text.index("}", text.index("wavelength = {"))
    text = text[:start] + "wavelength = {" + um + text[stop:]
    hdr.write_text(text.replace("wavelength units = nm", "wavelength units = Micrometers"))
    np.testing.assert_allclose(wavelengths(open_cube(hdr)), wavelengths(cube), rtol=1e-9)


def test_netcdf_round_trip(tmp_path: Path, remote_dir: Path) -> None:
    cube = open_cube(remote_dir / "paviaU_subimg_50x50x103.mat", wavelength=remote_dir / "paviaU_band_centers_103.mat")
    cube.attrs.update(ratio=4, noisy=True, params={"lam": 0.1, "iters": [10, 20]}, empty=None)
    path = write_netcdf(cube, tmp_path / "pavia.nc")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds["wavelength"].attrs["units"] == "nm"
    back = open_cube(path)
    assert back.dims == ("band", "y", "x") and back.dtype == np.float32 and back.attrs["format"] == "netcdf"
    np.testing.assert_array_equal(back.values, cube.values)
    np.testing.assert_array_equal(wavelengths(back), wavelengths(cube))
    assert back.attrs["original_source"] == cube.attrs["source"]
    assert back.attrs["params"] == {"lam": 0.1, "iters": [10, 20]} and back.attrs["noisy"] == 1
    assert "empty" not in back.attrs
    same = {k: v for k, v in cube.attrs.items() if k not in ("source", "format", "noisy", "empty")}
    assert {k: back.attrs[k] for k in same} == same


def test_zarr_round_trip(tmp_path: Path, balloons: xr.DataArray) -> None:
    crop = balloons[:, 100:164, 200:232]
    crop.attrs["method"] = "none"
    back = open_cube(write_zarr(crop, tmp_path / "crop.zarr"))
    assert back.attrs["format"] == "zarr" and back.attrs["scene"] == "balloons_ms"
    np.testing.assert_array_equal(back.values, crop.values)
    np.testing.assert_array_equal(wavelengths(back), wavelengths(crop))


def test_netcdf_foreign_dim_names(tmp_path: Path, remote_dir: Path) -> None:
    cube = open_cube(remote_dir / "muufl_gulfport_sub_51x88x72.mat")
    ds = xr.Dataset(
        {
            "radiance": (("lines", "samples", "lambda"), np.moveaxis(cube.values, 0, 2)),
            "other": (("lines", "samples", "lambda"), np.zeros((51, 88, 72), np.float32)),
        },
        coords={"lambda": ("lambda", wavelengths(cube) / 1000, {"units": "um"})},
    )
    path = tmp_path / "foreign.nc4"
    ds.to_netcdf(path, engine="h5netcdf")
    with pytest.raises(ReadError, match="variable="):
        open_cube(path)
    back = open_cube(path, variable="radiance")
    assert back.dims == ("band", "y", "x") and back.shape == (72, 51, 88)
    np.testing.assert_array_equal(back.values, cube.values)
    np.testing.assert_allclose(wavelengths(back), wavelengths(cube))


# --- errors ------------------------------------------------------------------------------------


def _broken_files(tmp: Path, remote_dir: Path, cave_dir: Path, srf_dir: Path) -> list[tuple[Path, str]]:
    """(path to open, file name the message must contain) for each broken input."""
    real = (remote_dir / "samson_95x95x156.mat").read_bytes()
    rng = np.random.default_rng(0)
    cases = []

    def put(name: str, data: bytes) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    cases.append((put("head_only.mat", real[:1000]), "head_only.mat"))
    cases.append((put("noise.mat", rng.bytes(4096)), "noise.mat"))
    cases.append((put("empty.mat", b""), "empty.mat"))
    cases.append((put("text.nc", b"this is not netcdf\n" * 20), "text.nc"))
    cases.append(
        (
            put(
                "trunc.nc",
                write_netcdf(open_cube(remote_dir / "samson_95x95x156.mat"), tmp / "ok.nc").read_bytes()[:3000],
            ),
            "trunc.nc",
        )
    )
    zarr_dir = tmp / "bad.zarr"
    zarr_dir.mkdir()
    (zarr_dir / "zarr.json").write_text("{not json")
    cases.append((zarr_dir, "bad.zarr"))
    hdr = write_envi(open_cube(remote_dir / "samson_95x95x156.mat")[:, :10, :10], tmp / "short.hdr")
    with open(hdr.with_suffix(".img"), "r+b") as f:
        f.truncate(1000)
    cases.append((hdr, "short.img"))
    cases.append((put("garbage.hdr", b"not a header\n"), "garbage.hdr"))
    cases.append((tmp / "missing.mat", "missing.mat"))
    (tmp / "nothing_here").mkdir()
    cases.append((tmp / "nothing_here", "nothing_here"))
    cases.append((put("unknown.xyz", b"abc"), "unknown.xyz"))
    cases.append((put("srf_table.mat", (srf_dir / "mossfuse_resp_nikon_d700_3x31.mat").read_bytes()), "srf_table.mat"))

    src = cave_dir / "balloons_ms"
    pngs = sorted(src.glob("*.png"))

    def scene(name: str) -> Path:
        d = tmp / name / "balloons_ms"
        d.mkdir(parents=True)
        for p in pngs:
            shutil.copyfile(p, d / p.name)
        return d

    d = scene("cave_count")
    (d / "balloons_ms_31.png").unlink()
    cases.append((tmp / "cave_count", "cave_count"))
    for case, band, make in [
        ("cave_trunc", 5, lambda b: b[: len(b) // 2]),
        ("cave_corrupt", 11, lambda b: b[:2000] + rng.bytes(3000) + b[-12:]),
    ]:
        d = scene(case)
        target = d / f"balloons_ms_{band:02d}.png"
        data = target.read_bytes()
        target.unlink()
        target.write_bytes(make(data))
        cases.append((tmp / case, f"{case}/balloons_ms/balloons_ms_{band:02d}.png"))
    d = scene("cave_8bit")
    with Image.open(src / "balloons_ms_07.png") as im:
        eight = (np.asarray(im) >> 8).astype(np.uint8)
    (d / "balloons_ms_07.png").unlink()
    Image.fromarray(eight).save(d / "balloons_ms_07.png")
    cases.append((tmp / "cave_8bit", "cave_8bit/balloons_ms/balloons_ms_07.png"))
    d = scene("cave_size")
    with Image.open(src / "balloons_ms_09.png") as im:
        small = im.crop((0, 0, 256, 256))
        (d / "balloons_ms_09.png").unlink()
        small.save(d / "balloons_ms_09.png")
    cases.append((tmp / "cave_size", "cave_size/balloons_ms/balloons_ms_09.png"))
    return cases


def test_broken_files_raise_read_error(tmp_path: Path, remote_dir: Path, cave_dir: Path, srf_dir: Path) -> None:
    for path, name in _broken_files(tmp_path, remote_dir, cave_dir, srf_dir):
        with pytest.raises(ReadError) as info:
            open_cube(path)
        assert name in str(info.value), (path, str(info.value))
        assert "\n" not in info.value.reason


# --- describe, list_scenes ---------------------------------------------------------------------


def test_describe(remote_dir: Path, balloons: xr.DataArray) -> None:
    info = describe(remote_dir / "muufl_gulfport_sub_51x88x72.mat")
    assert info["format"] == "mat-v5" and info["shape"] == [72, 51, 88] and info["n_bands"] == 72
    assert info["wavelength_range"] == pytest.approx([367.700012, 1043.400024])
    assert info["min"] < 0 < info["mean"] < info["max"] and info["dtype"] == "float32"
    assert info["variables"]["hsi_img_sub"] == [51, 88, 72] and info["attrs"]["sensor"] == "CASI-1500"
    cave = describe(balloons)
    assert cave["dims"] == ["band", "y", "x"] and cave["wavelength_range"] == [400.0, 700.0]
    assert 0 <= cave["min"] <= cave["mean"] <= cave["max"] <= 1
    assert describe(remote_dir / "samson_95x95x156.mat")["wavelength_range"] is None


def test_list_scenes_on_shared_data(data_dir: Path) -> None:
    scenes = list_scenes(data_dir)
    names = [p.name for p in scenes]
    assert scenes == sorted(scenes)
    cave = {"balloons_ms", "chart_and_stuffed_toy_ms", "fake_and_real_peppers_ms", "thread_spools_ms"}
    assert set(names) == cave | set(REMOTE)
    assert all(p.is_absolute() for p in scenes)


def test_list_scenes_finds_written_formats(tmp_path: Path, remote_dir: Path) -> None:
    cube = open_cube(remote_dir / "samson_95x95x156.mat")[:, :24, :24]
    write_netcdf(cube, tmp_path / "a.nc")
    write_zarr(cube, tmp_path / "sub" / "b.zarr")
    write_envi(cube, tmp_path / "sub" / "c.hdr")
    (tmp_path / "notes.txt").write_text("x")
    found = [p.relative_to(tmp_path.resolve()).as_posix() for p in list_scenes(tmp_path)]
    assert found == ["a.nc", "sub/b.zarr", "sub/c.hdr"]
    for p in list_scenes(tmp_path):
        assert open_cube(p).shape == (156, 24, 24)
