"""The command line as a careless or hostile user drives it (issue 18): writes never clobber or leave
partial files, checkpoints load as weights only, every failure is exit 2 and one line, and inputs
that would give silently wrong numbers are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from fusion_explorer.cli import main

CLI = [sys.executable, "-m", "fusion_explorer.cli"]


def run(*args: str, prefix: str = "") -> subprocess.CompletedProcess:
    """The CLI in a subprocess; ``prefix`` runs it under ``bash -c '<prefix>; exec ...'``."""
    cmd = [*CLI, *args]
    if prefix:
        cmd = ["bash", "-c", f"{prefix}; exec \"$@\"", "bash", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def fails(capsys, *args: str) -> str:
    """Run ``main`` in this process; assert exit 2 and one line on stderr; return that line."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    return one_line(err)


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def sim(cave_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "sim"
    args = ["simulate", str(cave_dir / "balloons_ms"), "--protocol", "gaussian-x8", "--crop", "64", "--out", str(out)]
    assert main(args) == 0
    return out


def fuse_args(sim: Path, out: Path, *extra: str, lr_hsi: Path | None = None, srf: Path | None | str = "") -> list[str]:
    """``fuse`` on the simulated pair (``srf=None``: no ``--srf``; default: the simulated one)."""
    srf = sim / "srf.nc" if srf == "" else srf
    return ["fuse", "--lr-hsi", str(lr_hsi or sim / "lr_hsi.nc"), "--hr-msi", str(sim / "hr_msi.nc"),
            *(["--srf", str(srf)] if srf is not None else []), "--quiet", "--out", str(out), *extra]


def small_cube():
    from fusion_explorer.cube import make_cube

    return make_cube(np.random.default_rng(0).random((3, 8, 8)), [450.0, 550.0, 650.0])


# ---- writes: atomic, never clobbering ---------------------------------------------------------------


def test_atomic_target_keeps_the_previous_file_when_the_write_fails(tmp_path):
    from fusion_explorer.errors import WriteError
    from fusion_explorer.io.atomic import atomic_target

    target = tmp_path / "cube.nc"
    target.write_text("old")
    with pytest.raises(WriteError, match="exists; pass --overwrite"):
        with atomic_target(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_target(target, overwrite=True) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".")
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and hidden_files(tmp_path) == []
    with atomic_target(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and hidden_files(tmp_path) == []


def test_writers_refuse_an_existing_target_unless_overwrite(tmp_path):
    from fusion_explorer.errors import WriteError
    from fusion_explorer.io import open_cube, write_envi, write_netcdf, write_zarr

    cube = small_cube()
    for write, name in ((write_netcdf, "a.nc"), (write_zarr, "b.zarr"), (write_envi, "c.hdr")):
        path = write(cube, tmp_path / name)
        with pytest.raises(WriteError, match="exists"):
            write(cube * 2, tmp_path / name)
        np.testing.assert_allclose(open_cube(path).values, cube.values, rtol=1e-6)
        write(cube * 2, tmp_path / name, overwrite=True)
        np.testing.assert_allclose(open_cube(path).values, 2 * cube.values, rtol=1e-6)
    assert hidden_files(tmp_path) == []
    folder = tmp_path / "folder"
    (folder / "keep").mkdir(parents=True)
    for write in (write_netcdf, write_zarr):  # a folder is never deleted to make room
        with pytest.raises(WriteError, match="folder"):
            write(cube, folder, overwrite=True)
    assert (folder / "keep").is_dir() and hidden_files(tmp_path) == []


def test_fuse_refuses_an_existing_out_unless_overwrite(sim, tmp_path, capsys):
    out = tmp_path / "fused.nc"
    out.write_bytes(b"previous result")
    r = run(*fuse_args(sim, out))
    assert r.returncode == 2 and "--overwrite" in one_line(r.stderr)
    assert out.read_bytes() == b"previous result"
    assert main([*fuse_args(sim, out), "--overwrite"]) == 0
    assert xr.open_dataarray(out, engine="h5netcdf").shape == (31, 64, 64)
    assert hidden_files(tmp_path) == []


def test_out_equal_to_an_input_is_refused_even_with_overwrite(sim, tmp_path, capsys):
    alias = tmp_path / "alias.nc"
    alias.symlink_to(sim / "hr_msi.nc")
    before = {p.name: p.read_bytes() for p in sim.iterdir()}
    for out in (sim / "lr_hsi.nc", alias, sim / "srf.nc", tmp_path / ".." / tmp_path.name / "alias.nc"):
        line = fails(capsys, *fuse_args(sim, out), "--overwrite")
        assert "input" in line, line
    assert {p.name: p.read_bytes() for p in sim.iterdir()} == before


def test_full_disk_exits_2_and_keeps_the_previous_out(sim, tmp_path):
    out = tmp_path / "fused.nc"
    out.write_bytes(b"x" * 1000)
    # 100 blocks of 512 bytes: the inputs read fine, the 0.5 MB result cannot be written
    r = run(*fuse_args(sim, out), "--overwrite", prefix="ulimit -f 100")
    assert r.returncode == 2, r.stderr
    assert "File too large" in one_line(r.stderr)
    assert out.read_bytes() == b"x" * 1000 and hidden_files(tmp_path) == []


def test_simulate_refuses_existing_outputs_unless_overwrite(cave_dir, sim, tmp_path, capsys):
    scene = str(cave_dir / "balloons_ms")
    before = (sim / "lr_hsi.nc").read_bytes()
    line = fails(capsys, "simulate", scene, "--protocol", "gaussian-x8", "--crop", "64", "--snr", "30", "--out",
                 str(sim))
    assert "lr_hsi.nc" in line and "--overwrite" in line
    assert (sim / "lr_hsi.nc").read_bytes() == before
    target = tmp_path / "file"
    target.write_text("keep")
    fails(capsys, "simulate", scene, "--protocol", "gaussian-x8", "--crop", "64", "--out", str(target))
    assert target.read_text() == "keep"
    out = tmp_path / "again"
    for extra in ([], ["--overwrite"]):
        assert main(["simulate", scene, "--protocol", "gaussian-x8", "--crop", "32", "--out", str(out), *extra]) == 0
    assert hidden_files(out) == []


TINY_TRAIN = ["--layers", "1", "--train-batches", "1", "--val-batches", "1", "--batch-size", "1", "--size", "16",
              "--init-iterations", "2", "--epochs", "1", "--quiet"]


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A pickle whose loading would run ``touch marker``."""

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"config": {"model": {"layers": 1}, "train": {}}, "model": Evil(), "epoch": 0}, path)
    return path


def test_train_refuses_a_previous_run_and_crafted_resume(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"epoch": 1}\n')
    line = fails(capsys, "train", "scalmu", "--out", str(out), *TINY_TRAIN)
    assert "--resume" in line and "--overwrite" in line
    assert (out / "log.jsonl").read_text() == '{"epoch": 1}\n'
    marker = tmp_path / "PWNED"
    evil_checkpoint(out / "last.pt", marker)
    fails(capsys, "train", "scalmu", "--out", str(out), *TINY_TRAIN, "--resume")
    assert not marker.exists()


# ---- checkpoints: weights only ---------------------------------------------------------------------


def test_crafted_checkpoint_is_refused_without_running_it(sim, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    r = run(*fuse_args(sim, tmp_path / "f.nc"), "--method", "scalmu", "--checkpoint", str(evil))
    assert r.returncode == 2 and "evil.pt" in one_line(r.stderr)
    assert not marker.exists()
    line = fails(capsys, *fuse_args(sim, tmp_path / "g.nc"), "--method", "mossfuse", "--checkpoint", str(evil))
    assert "evil.pt" in line and not marker.exists()
    rnd = tmp_path / "random.pt"
    rnd.write_bytes(np.random.default_rng(0).bytes(5000))
    assert "random.pt" in fails(capsys, *fuse_args(sim, tmp_path / "h.nc"), "--method", "scalmu", "--checkpoint",
                                str(rnd))
    assert not (tmp_path / "f.nc").exists() and not (tmp_path / "h.nc").exists()


def test_shipped_checkpoint_loads_as_weights_only():
    from fusion_explorer.methods.scalmu import default_checkpoint_path, load_model

    ckpt = torch.load(default_checkpoint_path(), map_location="cpu", weights_only=True)
    net, loaded = load_model()
    for key, value in ckpt["model"].items():
        assert torch.equal(net.state_dict()[key], value)
    assert loaded["config"] == ckpt["config"]


# ---- every failure: exit 2 and one line ------------------------------------------------------------


def test_unknown_option_lists_the_valid_ones(sim, tmp_path, capsys):
    r = run(*fuse_args(sim, tmp_path / "f.nc"), "--method", "cnmf", "--option", "inner_iteratons=5")
    line = one_line(r.stderr)
    assert r.returncode == 2 and "inner_iteratons" in line and "inner_iterations" in line and "n_endmembers" in line
    line = fails(capsys, *fuse_args(sim, tmp_path / "f.nc"), "--method", "cnmf", "--option", "inner_iterations=abc")
    assert "inner_iterations" in line and "int" in line
    assert not (tmp_path / "f.nc").exists()


def test_options_are_checked_against_the_signature():
    from fusion_explorer.errors import ProblemError
    from fusion_explorer.methods import FusionProblem, fuse
    from fusion_explorer.physics import simulate
    from fusion_explorer.synth import default_scene

    problem = simulate(default_scene(32), "gaussian-x8")
    assert isinstance(problem, FusionProblem)
    with pytest.raises(ProblemError, match="valid options.*threshold"):
        fuse(problem, "cnmf", device="cpu", treshold=1e-3)
    with pytest.raises(ProblemError, match="threshold"):
        fuse(problem, "cnmf", device="cpu", threshold="small")
    with pytest.raises(ProblemError, match="learned"):
        fuse(problem, "scalmu", device="cpu", learned="yes")
    # what callers pass today stays valid: ints for floats, None for optionals, strings for str | bool
    fuse(problem, "cnmf", device="cpu", inner_iterations=np.int64(5), trace_budget_mb=0, sum_to_one=None,
         consistency="projection", msi_pyramid=((2, 5), (1, 5)))


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--psf-sigma", "2", "--psf-size", "100001"], "PSF"),
        (["--psf-sigma", "1e6"], "PSF"),
        (["--psf-size", "5"], "--psf-sigma"),
        (["--psf-sigma", "2", "--psf-size", "0"], "psf-size"),
        (["--offset", "99", "--ratio", "8"], "offset"),
        (["--device", "mps"], "cpu"),
        (["--device", "meta"], "cpu"),
        (["--device", "cuda:7"], "cpu"),
        (["--device", "garbage"], "cpu"),
    ],
)
def test_fuse_sizes_and_devices_refused_up_front(sim, tmp_path, capsys, extra, needle):
    line = fails(capsys, *fuse_args(sim, tmp_path / "f.nc"), "--method", "cnmf", *extra)
    assert needle in line, line
    assert not (tmp_path / "f.nc").exists()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--crop", "0"], "crop"),
        (["--crop", "-5"], "crop"),
        (["--ratio", "0"], "ratio"),
        (["--ratio", "8", "--sigma", "1e6"], "PSF"),
        (["--ratio", "8", "--sigma", "-1"], "sigma"),
        (["--ratio", "128"], "ratio"),
    ],
)
def test_simulate_sizes_refused_up_front(cave_dir, tmp_path, capsys, extra, needle):
    line = fails(capsys, "simulate", str(cave_dir / "balloons_ms"), "--crop", "64", *extra, "--out",
                 str(tmp_path / "s"))
    assert needle in line, line


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a running process, from ``/proc`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_ctrl_c_during_a_fusion_exits_130_without_output(cave_dir, tmp_path):
    sim = tmp_path / "sim"
    assert main(["simulate", str(cave_dir / "balloons_ms"), "--protocol", "gaussian-x8", "--crop", "128", "--out",
                 str(sim)]) == 0
    out = tmp_path / "fused.nc"
    # the default SIGINT disposition in the child: a shell that runs the suite in the background hands its
    # children SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
    proc = subprocess.Popen([*CLI, *fuse_args(sim, out), "--method", "cnmf", "--option", "inner_iterations=3000",
                             "--option", "threshold=0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # start-up (imports, reading) takes 2-3 s of CPU; the fusion then runs for about a minute
    deadline = time.monotonic() + 60
    while cpu_seconds(proc.pid) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in one_line(err)
    assert not out.exists() and hidden_files(tmp_path) == []


def test_unexpected_errors_are_one_line_with_a_debug_switch(monkeypatch, capsys):
    import fusion_explorer.cli as cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_info", broken)
    line = fails(capsys, "info", "anything")
    assert "ZeroDivisionError" in line and "FUSION_EXPLORER_DEBUG=1" in line
    monkeypatch.setenv("FUSION_EXPLORER_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["info", "anything"])


# ---- no silently wrong numbers ---------------------------------------------------------------------


def test_srf_that_leaves_hsi_bands_out_is_an_error(sim, tmp_path, capsys):
    from fusion_explorer.errors import SRFError
    from fusion_explorer.srf import CAVE_WAVELENGTHS, read_srf_file

    srf = xr.open_dataarray(sim / "srf.nc", engine="h5netcdf").load()
    part = tmp_path / "srf20.nc"
    srf.isel(band=slice(0, 20)).to_netcdf(part, engine="h5netcdf")
    line = fails(capsys, *fuse_args(sim, tmp_path / "f.nc", srf=part))
    assert "590" in line and "700" in line, line
    with pytest.raises(SRFError, match="590"):
        read_srf_file(part, CAVE_WAVELENGTHS)
    table = tmp_path / "short.csv"  # a measured table cut at 550 nm where its green band still responds
    nm = np.arange(400.0, 551.0, 10.0)
    table.write_text("nm,B,G\n" + "".join(f"{w},{np.exp(-((w - 450) / 30) ** 2)},{np.exp(-((w - 540) / 40) ** 2)}\n"
                                          for w in nm))
    with pytest.warns(UserWarning, match=r"covers 400–550 nm .* G \(94% of its peak\).* taken as 0"):
        read_srf_file(table, CAVE_WAVELENGTHS)  # resampled, and said so


def test_lr_hsi_and_msi_on_different_scales_are_refused(sim, tmp_path, capsys):
    from fusion_explorer.errors import ProblemError
    from fusion_explorer.io import open_cube
    from fusion_explorer.methods import FusionProblem
    from fusion_explorer.srf import read_srf_file

    lr = xr.open_dataarray(sim / "lr_hsi.nc", engine="h5netcdf").load()
    scaled = tmp_path / "lr_int16.nc"
    lr.copy(data=np.round(lr.values * 1e4).astype(np.int16)).to_netcdf(scaled, engine="h5netcdf")
    assert "scale" in fails(capsys, *fuse_args(sim, tmp_path / "f.nc", "--method", "cnmf", lr_hsi=scaled))
    assert "scale" in fails(capsys, *fuse_args(sim, tmp_path / "f.nc", "--method", "cnmf", lr_hsi=scaled, srf=None))
    assert not (tmp_path / "f.nc").exists()
    cube, msi = open_cube(scaled), open_cube(sim / "hr_msi.nc")
    with pytest.raises(ProblemError, match="scale"):
        FusionProblem(cube, msi, srf=read_srf_file(sim / "srf.nc", cube))


def test_clean_and_noisy_simulations_pass_the_scale_check(cave_dir):
    from fusion_explorer.bench import center_crop
    from fusion_explorer.io import open_cube
    from fusion_explorer.methods import FusionProblem
    from fusion_explorer.physics import get_protocol, simulate

    truth = center_crop(open_cube(cave_dir / "balloons_ms"), 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("gaussian-x8", "mossfuse-cave-x32"):
            for snr in (None, 25.0):
                p = simulate(truth, get_protocol(name).with_(snr_db=snr), seed=1)
                FusionProblem(p.lr_hsi, p.hr_msi, srf=p.srf, ratio=p.ratio)
                FusionProblem(p.lr_hsi, p.hr_msi, ratio=p.ratio)
