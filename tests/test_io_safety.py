"""Reading stays inside the file and inside the memory budget (issue 18).

Crafted files are made with h5py in tmp_path: HDF5 external storage, virtual datasets and
external links; symlinks leaving a Zarr store, an ENVI folder or a CAVE folder; gzip files that
declare far more data than they hold. Each must be refused with one ReadError line naming the
file, before any data are read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from PIL import Image

from fusion_explorer.errors import ReadError
from fusion_explorer.io import list_scenes, open_cube, read_mat, read_netcdf, write_envi, write_netcdf, write_zarr
from fusion_explorer.io.guard import ENV_MAX_BYTES, ScanResult, check_hdf5, default_max_bytes, read_budget

SHAPE = (4, 20, 24)  # (band, y, x) of the small crafted cubes
REFUSED = "external storage, virtual datasets and external links are not read"
GiB = 1 << 30


@pytest.fixture(autouse=True)
def _no_budget_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MAX_BYTES, raising=False)


def _small_cube() -> xr.DataArray:
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) / 100
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"wavelength": ("band", [450.0, 550.0, 650.0, 750.0])})


def _netcdf_by_hand(path: Path, make_data, shape: tuple[int, int, int] = SHAPE) -> Path:
    """A NetCDF-4 file as h5netcdf writes one: dimension scales band/y/x and a variable ``cube`` on them,
    whose dataset ``make_data(file, name, shape)`` creates (so its storage can be anything HDF5 allows)."""
    with h5py.File(path, "w") as f:
        for name, n in zip(("band", "y", "x"), shape, strict=True):
            f.create_dataset(name, data=np.arange(n, dtype=np.float64)).make_scale(name)
        cube = make_data(f, "cube", shape)
        for axis, name in enumerate(("band", "y", "x")):
            cube.dims[axis].attach_scale(f[name])
    return path


def _secret(tmp_path: Path, nbytes: int) -> Path:
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir(exist_ok=True)
    secret.write_bytes(bytes(range(256)) * (nbytes // 256) + bytes(nbytes % 256))
    return secret


def _refused(path: Path, match: str, **kwargs) -> ReadError:
    with pytest.raises(ReadError, match=match) as info:
        open_cube(path, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


# --- 1. HDF5: external storage, virtual datasets, external links ------------------------------------


def test_netcdf_external_storage_refused(tmp_path: Path) -> None:
    """The probe of issue 18: a valid-looking NetCDF whose data live in another file (here a stand-in
    for /etc/passwd) loaded that file's bytes as the cube."""
    nbytes = int(np.prod(SHAPE))
    secret = _secret(tmp_path, nbytes)
    path = _netcdf_by_hand(
        tmp_path / "evil.nc",
        lambda f, name, shape: f.create_dataset(name, shape, "u1", external=[(str(secret), 0, nbytes)]),
    )
    assert path.stat().st_size < 20_000
    err = _refused(path, f"dataset 'cube' stores its data in external file '{secret}'")
    assert err.path == str(path.resolve()) and REFUSED in err.reason
    with pytest.raises(ReadError, match="external file"):
        read_netcdf(path)
    # the same file with its bytes stored inside is a valid NetCDF that loads: only the storage is refused
    stored = np.frombuffer(secret.read_bytes(), np.uint8).reshape(SHAPE)
    twin = _netcdf_by_hand(tmp_path / "twin.nc", lambda f, name, shape: f.create_dataset(name, data=stored))
    np.testing.assert_array_equal(open_cube(twin).values, stored)


def test_etc_passwd_external_storage_refused(tmp_path: Path) -> None:
    path = _netcdf_by_hand(
        tmp_path / "passwd.nc",
        lambda f, name, shape: f.create_dataset(name, shape, "u1", external=[("/etc/passwd", 0, int(np.prod(shape)))]),
    )
    _refused(path, "external file '/etc/passwd'")


def test_netcdf_virtual_dataset_refused(tmp_path: Path) -> None:
    source = tmp_path / "elsewhere.h5"
    with h5py.File(source, "w") as f:
        f["data"] = np.full(SHAPE, 7.0, np.float32)

    def virtual(f, name, shape):
        layout = h5py.VirtualLayout(shape=shape, dtype="f4")
        layout[:] = h5py.VirtualSource(str(source), "data", shape=shape)
        return f.create_virtual_dataset(name, layout)

    err = _refused(_netcdf_by_hand(tmp_path / "vds.nc", virtual), "dataset 'cube' is a virtual dataset")
    assert REFUSED in err.reason


def test_netcdf_external_link_refused_anywhere(tmp_path: Path) -> None:
    """An external link deep in a subgroup is found: the whole hierarchy is walked without following links."""
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.arange(10.0)
    path = write_netcdf(_small_cube(), tmp_path / "linked.nc")
    assert open_cube(path).shape == SHAPE
    with h5py.File(path, "a") as f:
        f.create_group("deep/er")["link"] = h5py.ExternalLink(str(other), "/data")
    err = _refused(path, "'deep/er/link' is an external link to '/data' in file '.*other.h5'")
    assert REFUSED in err.reason


def test_soft_links_inside_the_file_are_fine(tmp_path: Path) -> None:
    path = write_netcdf(_small_cube(), tmp_path / "soft.nc")
    with h5py.File(path, "a") as f:
        f.create_group("aliases")["cube"] = h5py.SoftLink("/cube")
        f["aliases"]["root"] = f["/"]  # a hard-link cycle: the walk visits each object once
    check_hdf5(path)
    np.testing.assert_array_equal(open_cube(path).values, _small_cube().values)


def test_mat73_external_storage_refused(tmp_path: Path) -> None:
    """MATLAB v7.3 files are HDF5 too: the same refusal."""
    secret = _secret(tmp_path, 8 * 24 * 20 * 4)
    path = tmp_path / "evil.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        dset = f.create_dataset("cube", (4, 24, 20), "<f8", external=[(str(secret), 0, 8 * 24 * 20 * 4)])
        dset.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    _refused(path, "dataset 'cube' stores its data in external file")
    with pytest.raises(ReadError, match="external file"):
        read_mat(path)


def test_mat73_external_link_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.ones((4, 24, 20))
    path = tmp_path / "linked.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("cube", data=np.ones((4, 24, 20))).attrs["MATLAB_class"] = np.bytes_("double")
        f["wl"] = h5py.ExternalLink(str(other), "/data")
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    _refused(path, "'wl' is an external link")


# --- 1. symlinks leaving a Zarr store, an ENVI folder, a CAVE folder ---------------------------------


def test_zarr_chunk_symlink_leaving_the_store_refused(tmp_path: Path) -> None:
    store = write_zarr(_small_cube(), tmp_path / "a.zarr")
    chunk = next(p for p in sorted(store.rglob("*")) if p.is_file() and "cube" in p.parts and p.name[0].isdigit())
    outside = tmp_path / "elsewhere" / "chunk"
    outside.parent.mkdir()
    outside.write_bytes(chunk.read_bytes())
    chunk.unlink()
    chunk.symlink_to(outside)
    err = _refused(store, "symlink .* resolves outside the Zarr store")
    assert err.path == str(store.resolve())


def test_zarr_symlink_inside_the_store_is_fine(tmp_path: Path) -> None:
    store = write_zarr(_small_cube(), tmp_path / "a.zarr")
    chunk = next(p for p in sorted(store.rglob("*")) if p.is_file() and "cube" in p.parts and p.name[0].isdigit())
    chunk.rename(store / "cube" / "spare")
    chunk.symlink_to(store / "cube" / "spare")
    np.testing.assert_array_equal(open_cube(store).values, _small_cube().values)


def test_envi_data_file_symlink_leaving_the_folder_refused(tmp_path: Path) -> None:
    (tmp_path / "scene").mkdir()
    hdr = write_envi(_small_cube(), tmp_path / "scene" / "c.hdr")
    img = hdr.with_suffix(".img")
    outside = tmp_path / "elsewhere.img"
    img.rename(outside)
    img.symlink_to(outside)
    _refused(hdr, "data file 'c.img' resolves outside the header's folder")
    with pytest.raises(ReadError):  # the data file named directly resolves to a file without a header
        open_cube(img)


def test_cave_png_symlinks_leaving_the_folder_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "s_ms"
    real.mkdir(parents=True)
    for k in range(1, 32):
        Image.fromarray(np.full((8, 8), 1000 * k, np.uint16)).save(real / f"s_ms_{k:02d}.png")
    linked = tmp_path / "scenes" / "s_ms"
    linked.mkdir(parents=True)
    for png in real.iterdir():
        (linked / png.name).symlink_to(png)
    _refused(linked, "s_ms_01.png.* resolves outside the scene folder")
    # links that stay inside the folder are fine
    for png in real.iterdir():
        (linked / png.name).unlink()
        (linked / png.name).write_bytes(png.read_bytes())
    (linked / "s_ms_02.png").unlink()
    (linked / "s_ms_02.png").symlink_to(linked / "s_ms_01.png")
    assert open_cube(linked).shape == (31, 8, 8)


# --- 2. memory budget, checked on declared sizes before anything is read -------------------------------


def _bomb(path: Path, shape: tuple[int, int, int], dtype: str = "f4") -> Path:
    """A gzip NetCDF of zeros declaring ``shape``: one written chunk, the rest the fill value; a few KB."""

    def zeros(f, name, shape):
        dset = f.create_dataset(name, shape, dtype, chunks=(1, 256, 256), compression="gzip", fillvalue=0)
        dset[0, :256, :256] = 0
        return dset

    return _netcdf_by_hand(path, zeros, shape)


def test_declared_size_over_budget_refused_before_reading(tmp_path: Path) -> None:
    path = _bomb(tmp_path / "bomb.nc", (64, 8192, 8192))  # 16 GiB of float32 zeros
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        err = _refused(path, r"declares 16 GiB .* over the read budget of 1 GiB")
        elapsed, (_, peak) = time.perf_counter() - t0, tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5 and peak < 50e6, (elapsed, peak)
    assert ENV_MAX_BYTES in err.reason and "max_bytes=" in err.reason


def test_unused_coordinates_are_not_loaded(tmp_path: Path) -> None:
    """Coordinates of other dimensions (each within budget, 1.5 GiB together) cost nothing: only the cube
    and its own coordinates are read."""
    path = write_netcdf(_small_cube(), tmp_path / "coords.nc")
    with h5py.File(path, "a") as f:
        for name in ("t1", "t2", "t3"):
            big = f.create_dataset(name, (1 << 27,), "f4", chunks=(1 << 20,), compression="gzip", fillvalue=0)
            big.make_scale(name)
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        cube = open_cube(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(cube.values, _small_cube().values)
    assert peak < 50e6, peak


def test_budget_from_keyword_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_netcdf(_small_cube(), tmp_path / "small.nc")  # 1920 float32 + 4 float64 wavelengths: 7712 bytes
    assert open_cube(path, max_bytes=7712).shape == SHAPE
    _refused(path, r"declares 7.5 KiB .* budget of 7.5 KiB", max_bytes=7711)
    _refused(path, "declares 7.5 KiB .* budget of 1000 B", max_bytes=1000)
    monkeypatch.setenv(ENV_MAX_BYTES, "1000")
    assert read_budget() == 1000
    _refused(path, "budget of 1000 B")
    assert open_cube(path, max_bytes=10_000).shape == SHAPE  # the keyword wins over the environment
    monkeypatch.setenv(ENV_MAX_BYTES, "inf")
    assert open_cube(path).shape == SHAPE
    monkeypatch.setenv(ENV_MAX_BYTES, "lots")
    with pytest.raises(ReadError, match=f"{ENV_MAX_BYTES}='lots' is not a number of bytes"):
        open_cube(path)


def test_default_budget() -> None:
    assert 64 << 20 <= default_max_bytes() <= GiB
    assert read_budget() == default_max_bytes() and read_budget(123) == 123


def test_budget_applies_to_every_format(tmp_path: Path, remote_dir: Path, cave_dir: Path) -> None:
    """Declared sizes (as float32) from .mat v5 shapes (whosmat), v7.3, ENVI headers, Zarr metadata, PNG headers."""
    samson = remote_dir / "samson_95x95x156.mat"  # (95, 95, 156) float64: 11.3 MB as stored
    _refused(samson, r"declares 10.7 MiB", max_bytes=1 << 20)
    cube = open_cube(samson)[:, :24, :24]
    small = {
        "hdr": write_envi(cube, tmp_path / "c.hdr"),
        "zarr": write_zarr(cube, tmp_path / "c.zarr"),
        "nc": write_netcdf(cube, tmp_path / "c.nc"),
    }
    mat73 = tmp_path / "c73.mat"
    with h5py.File(mat73, "w", userblock_size=512) as f:
        f.create_dataset("cube", data=np.ones((156, 24, 24))).attrs["MATLAB_class"] = np.bytes_("double")
    with open(mat73, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    small["mat73"] = mat73
    for path in small.values():
        _refused(path, r"declares .* over the read budget of 100 KiB", max_bytes=100 << 10)
        assert open_cube(path).shape == (156, 24, 24)
    _refused(cave_dir / "balloons_ms", r"declares 31 MiB .*budget of 1 MiB", max_bytes=1 << 20)


# ``python -m fusion_explorer.cli`` with a hook that writes the process's peak memory (VmHWM, which
# exec resets, unlike ru_maxrss that keeps the forked parent's size) to the file argv[1] at exit.
_CLI_WITH_PEAK = """
import atexit, runpy, sys
peak_file = sys.argv.pop(1)
def peak():
    status = open("/proc/self/status").read()
    open(peak_file, "w").write(status.split("VmHWM:")[1].split()[0])
atexit.register(peak)
sys.argv[0] = "fusion-explorer"
runpy.run_module("fusion_explorer.cli", run_name="__main__", alter_sys=True)
"""


def test_cli_info_refuses_a_gzip_bomb_quickly_and_small(tmp_path: Path) -> None:
    """The probe of issue 18: a tiny gzip NetCDF declaring 2 GiB made ``info`` use 4.9 GB."""
    path = _bomb(tmp_path / "bomb.nc", (32, 4096, 4096))  # 2 GiB of float32 zeros
    env = {k: v for k, v in os.environ.items() if k != ENV_MAX_BYTES}
    peak = tmp_path / "peak_kib"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_WITH_PEAK, str(peak), "info", str(path)], capture_output=True, text=True, env=env
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert "bomb.nc" in proc.stderr and "declares 2 GiB" in proc.stderr and ENV_MAX_BYTES in proc.stderr
    assert int(peak.read_text()) < 1_000_000, f"peak memory {peak.read_text()} KiB"
    assert elapsed < 20


# --- 3. CF packing: scale_factor, add_offset, _FillValue -------------------------------------------


def test_netcdf_cf_packing_is_unpacked(tmp_path: Path) -> None:
    """int16 stored with scale_factor/add_offset/_FillValue reads as the physical floats, fill as NaN."""
    physical = np.linspace(0.0, 0.6, int(np.prod(SHAPE))).reshape(SHAPE)
    physical[1, 2, 3] = np.nan
    ds = xr.Dataset({"refl": (("band", "y", "x"), physical)})
    encoding = {"refl": {"dtype": "int16", "scale_factor": 1e-4, "add_offset": 0.1, "_FillValue": -32768}}
    path = tmp_path / "packed.nc"
    ds.to_netcdf(path, engine="h5netcdf", encoding=encoding)
    with h5py.File(path, "r") as f:
        stored = f["refl"][()]
        assert stored.dtype == np.int16 and stored[1, 2, 3] == -32768
    cube = open_cube(path)
    expected = (np.round((physical - 0.1) / 1e-4) * 1e-4 + 0.1).astype(np.float32)
    np.testing.assert_allclose(cube.values, expected, rtol=0, atol=1e-6)
    assert np.isnan(cube.values[1, 2, 3]) and np.isfinite(cube.values).sum() == physical.size - 1
    assert float(cube.values[3, 19, 23]) == pytest.approx(0.6, abs=1e-4)


# --- 4. bounded directory scans ----------------------------------------------------------------------


def test_list_scenes_is_bounded(tmp_path: Path) -> None:
    write_netcdf(_small_cube(), tmp_path / "a.nc")
    many = tmp_path / "many"
    many.mkdir()
    for i in range(25_000):
        (many / f"f{i:05d}.nc").touch()
    t0 = time.perf_counter()
    cut = list_scenes(tmp_path)  # defaults: 20 000 entries, 2 s
    assert time.perf_counter() - t0 < 3
    assert isinstance(cut, ScanResult) and isinstance(cut, list) and cut.truncated
    assert "20000 entries" in cut.reason or "2 s" in cut.reason
    assert cut[0].name == "a.nc" and all(p.parent == many.resolve() for p in cut[1:])
    full = list_scenes(tmp_path, max_entries=10**6, max_seconds=60)
    assert not full.truncated and full.reason == "" and len(full) == 25_001
    assert list_scenes(tmp_path, max_entries=500).reason.endswith(
        "stopped after 500 entries; the list may be incomplete"
    )
    assert list_scenes(tmp_path, max_seconds=0.0).truncated


def test_list_scenes_stays_inside_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write_netcdf(_small_cube(), outside / "secret.nc")
    root = tmp_path / "root"
    root.mkdir()
    write_netcdf(_small_cube(), root / "mine.nc")
    (root / "link_dir").symlink_to(outside, target_is_directory=True)
    (root / "link.nc").symlink_to(outside / "secret.nc")
    inner = root / "sub"
    inner.mkdir()
    (root / "inner_link").symlink_to(inner, target_is_directory=True)
    write_netcdf(_small_cube(), inner / "b.nc")
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    found = list_scenes(root)
    assert [p.relative_to(root.resolve()).as_posix() for p in found] == ["mine.nc", "sub/b.nc"]


def test_dashboard_upload_of_external_storage_file_is_refused(tmp_path: Path) -> None:
    """The issue's probe through the dashboard: the crafted .nc is uploaded; the upload is answered with a
    message, nothing of the other file reaches the session and the file is not kept."""
    from fusion_explorer.app import App
    from fusion_explorer.synth import default_scene

    nbytes = int(np.prod(SHAPE))
    secret = _secret(tmp_path, nbytes)
    crafted = _netcdf_by_hand(
        tmp_path / "evil.nc",
        lambda f, name, shape: f.create_dataset(name, shape, "u1", external=[(str(secret), 0, nbytes)]),
    )
    app = App(default_scene(32), "gaussian-x8", session_dir=tmp_path / "session")
    message = app.data.handle_upload([("evil.nc", crafted.read_bytes())])
    assert "external file" in message and "could not read evil.nc" in message
    assert not [v for _, v in app.data.scene.options if str(v).endswith("evil.nc")]
    assert not list((tmp_path / "session").rglob("evil.nc"))
