"""Safe to serve (issue 18): scenes from configured roots only, private per-session uploads deleted
with their kernel, bounded uploads with a message for every refusal, kernels that end with their
page, localhost by default.

The browser tests serve the dashboard as ``make app`` does (``voila-config/voila.py``) with the
kernels' temp dir (``TMPDIR``) inside the test's own folder, so their session directories can be
counted.
"""

from __future__ import annotations

import html
import os
import re
import stat
import time
from pathlib import Path

import ipywidgets as W
import pytest

from fusion_explorer.app import App
from fusion_explorer.app import data_panel as dp
from fusion_explorer.app.state import sessions_root, sweep_stale_sessions
from fusion_explorer.config import VOILA_CONFIG_DIR, data_roots, voila_prelaunch_hook
from fusion_explorer.io import write_netcdf
from fusion_explorer.synth import default_scene

from .conftest import ROOT, serve_voila


def _widgets(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _widgets(child)


def _scene_file(folder: Path, name: str = "scene.nc", size: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_netcdf(default_scene(size), folder / name)


@pytest.fixture
def two_roots(tmp_path, monkeypatch):
    a, b = _scene_file(tmp_path / "root_a", "a.nc").parent, _scene_file(tmp_path / "root_b", "b.nc").parent
    monkeypatch.setenv("FUSION_EXPLORER_DATA", os.pathsep.join([str(a), str(b)]))
    return a, b


def _forbidden(log: str) -> list[str]:
    """The log's lines with an HTTP 403 status (a whole number: the server's port, e.g. 58403, is not one)."""
    return re.findall(r"^.*\b403\b.*$", log, re.M)


# ---------------------------------------------------------------------------- 1. scene roots

def test_roots_come_from_configuration_and_no_path_can_be_typed(two_roots):
    a, b = two_roots
    assert data_roots()[:2] == [a.resolve(), b.resolve()]
    app = App(load=False)
    assert not [w for w in _widgets(app.data.widget) if isinstance(w, W.Text | W.Textarea)], \
        "the data panel has a free-text field"
    labels = [label for label, _ in app.data.root.options]
    assert len(labels) >= 3 and labels[-1] == "this session's uploads"
    assert [Path(v).name for _, v in app.data.scene.options[1:]] == ["a.nc"]
    app.data.root.value = "1"
    assert [Path(v).name for _, v in app.data.scene.options[1:]] == ["b.nc"]
    app.data.crop.value = 0
    assert app.data.load(), app.data.message.value


def test_load_refuses_a_path_outside_the_roots(two_roots, tmp_path):
    a, _ = two_roots
    outside = _scene_file(tmp_path / "elsewhere", "secret.nc")
    (a / "link.nc").symlink_to(outside)  # a symlink inside a root that leads out of it
    app = App(load=False)
    for path in (outside, a / "link.nc"):
        app.data.scene.options = [*app.data.scene.options, (path.name, str(path))]
        app.data.scene.value = str(path)
        assert not app.data.load()
        assert "not inside a data folder" in app.data.message.value
        assert app.state.truth is None
    assert str(a / "link.nc") not in [v for _, v in App(load=False).data.scene.options]


def test_scan_is_bounded_and_a_truncated_listing_is_noted(two_roots, monkeypatch):
    import fusion_explorer.io as fio

    class Listing(list):
        truncated = True

    a, _ = two_roots
    many = Listing(a / f"s{i:04d}.nc" for i in range(dp.MAX_LISTED_SCENES + 50))
    monkeypatch.setattr(fio, "list_scenes", lambda root, *args, **kw: many)
    app = App(load=False)
    assert len(app.data.scene.options) == 1 + dp.MAX_LISTED_SCENES
    assert "showing the first" in app.data.upload_msg.value


# ---------------------------------------------------------------------------- 2. private uploads
def test_sessions_have_private_dirs_and_do_not_see_each_other(tmp_path):
    first, second = App(load=False), App(load=False)
    d1, d2 = first.state.session_dir, second.state.session_dir
    assert d1 != d2 and d1.parent == d2.parent == sessions_root()
    for d in (d1, d1.parent, first.state.uploads_dir):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    good = _scene_file(tmp_path, "mine.nc")
    assert "uploaded mine.nc" in first.data.handle_upload([("mine.nc", good.read_bytes())])
    second.data.refresh_scenes()
    for root in range(len(second.data.root.options)):
        second.data.root.index = root
        assert not [v for _, v in second.data.scene.options if "mine.nc" in v]
    second.data.scene.options = [*second.data.scene.options, ("x", str(d1 / "uploads" / "mine.nc"))]
    second.data.scene.value = str(d1 / "uploads" / "mine.nc")
    assert not second.data.load() and "not inside" in second.data.message.value
    state = first.state
    del first
    state._cleanup()  # what the kernel's exit does
    assert not d1.exists()


@pytest.mark.parametrize("name, why", [
    ("bad\x00name.nc", "control characters"),
    ("x" * 253 + ".nc", "at most 255"),
    ("é" * 130 + ".nc", "at most 255"),
    ("", "without a file name"),
    (".hidden.nc", "starting with '.'"),
    ("..", "starting with '.'"),
    ("../escape.nc", "path separator"),
    ("sub/dir.nc", "path separator"),
    ("sub\\dir.nc", "path separator"),
    ("notes.txt", "unsupported type"),
])
def test_bad_upload_names_get_a_message(name, why, tmp_path):
    app = App(load=False, session_dir=tmp_path / "s")
    msg = html.unescape(app.data.handle_upload([(name, b"x")]))
    assert why in msg and "⚠" in msg
    assert list((tmp_path / "s" / "uploads").iterdir()) == []
    app.data._on_upload_msg(app.data.upload, {"event": "begin", "id": "u1", "files": [{"name": name, "size": 1}]}, [])
    assert why in html.unescape(app.data.message.value)


def test_chunked_upload_protocol(tmp_path):
    app = App(load=False, session_dir=tmp_path / "s")
    sent = []
    app.data.upload.send = lambda content, buffers=None: sent.append(content)
    data = _scene_file(tmp_path, "c.nc", 40).read_bytes()
    msg = app.data._on_upload_msg
    msg(None, {"event": "begin", "id": "u1", "files": [{"name": "c.nc", "size": len(data)}]}, [])
    step = 7000
    for off in range(0, len(data), step):
        msg(None, {"event": "chunk", "id": "u1", "file": 0, "offset": off}, [memoryview(data[off:off + step])])
    msg(None, {"event": "end", "id": "u1"}, [])
    assert "uploaded c.nc: 31 bands, 40x40" in app.data.message.value, app.data.message.value
    assert (tmp_path / "s" / "uploads" / "c.nc").read_bytes() == data
    assert app.data.scene.value.endswith("c.nc") and not sent
    # too big: refused at "begin", the page is told to stop
    msg(None, {"event": "begin", "id": "u2", "files": [{"name": "big.nc", "size": dp.MAX_UPLOAD_BYTES + 1}]}, [])
    assert "the limit is 100 MB" in app.data.message.value and sent == [{"event": "abort", "id": "u2"}]
    msg(None, {"event": "chunk", "id": "u2", "file": 0, "offset": 0}, [b"x"])  # ignored
    # pieces out of order: refused, nothing left behind
    msg(None, {"event": "begin", "id": "u3", "files": [{"name": "d.nc", "size": 10}]}, [])
    msg(None, {"event": "chunk", "id": "u3", "file": 0, "offset": 5}, [b"12345"])
    assert "out of order" in app.data.message.value
    assert sorted(p.name for p in (tmp_path / "s" / "uploads").iterdir()) == ["c.nc"]
    # refused by the page before sending
    msg(None, {"event": "refused", "files": [{"name": "huge.nc", "size": 300 * 2**20}]}, [])
    assert "huge.nc is 300.0 MB" in app.data.message.value
    msg(None, "garbage", [])  # a malformed message is ignored, not raised


def test_session_dir_is_deleted_when_the_kernel_shuts_down(tmp_path):
    """The dashboard's kernel exits (shutdown request, as voila's and the culler's): its directory goes.
    A kernel killed outright leaves one, which the next session sweeps."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    code = "from fusion_explorer.app import App\napp = App(load=False)\nprint(app.state.session_dir)"
    dirs = []
    for now in (False, True):
        km, kc = start_new_kernel(env=env, cwd=str(ROOT))
        try:
            out: list[str] = []

            def hook(m, out=out):
                if m["msg_type"] == "stream":
                    out.append(m["content"]["text"])

            reply = kc.execute_interactive(code, timeout=120, output_hook=hook)
            assert reply["content"]["status"] == "ok", reply["content"]
            session = Path("".join(out).strip())
            assert session.is_dir() and session.parent.parent == tmp_path
            dirs.append(session)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=now)
    graceful, killed = dirs
    assert not graceful.exists(), "a kernel shut down by request left its session directory"
    assert killed.exists()
    assert killed in sweep_stale_sessions(killed.parent) and not killed.exists()


# ---------------------------------------------------------------------------- 5. serving configuration
def test_make_app_serves_localhost_with_the_configuration():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^app:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "--Voila.ip=127.0.0.1" in recipe and "0.0.0.0" not in recipe
    assert "--Voila.config_file_paths=voila-config" in recipe and "preheat" not in recipe
    assert (VOILA_CONFIG_DIR / "voila.py").is_file()


def test_voila_configuration_culls_and_sets_the_xsrf_cookie():
    from traitlets.config.loader import PyFileConfigLoader

    cfg = PyFileConfigLoader("voila.py", path=str(VOILA_CONFIG_DIR)).load_config()
    km = cfg.MappingKernelManager
    assert 0 < km.cull_idle_timeout <= 3600 and km.cull_interval <= 120 and km.cull_connected is False
    assert cfg.Voila.ip == "127.0.0.1"
    assert cfg.VoilaExecutor.iopub_timeout >= 60  # 4 s dropped the widget of pages opened together
    assert cfg.Voila.tornado_settings["websocket_max_message_size"] >= 2 * dp.UPLOAD_CHUNK_BYTES
    hook = cfg.VoilaConfiguration.prelaunch_hook

    class Handler:
        touched = 0
        kernel_manager = type("KM", (), {"list_kernel_ids": lambda self: ["k"] * 3})()

        @property
        def xsrf_token(self):
            Handler.touched += 1
            return b"token"

    assert hook(Handler(), notebook=None, cwd=".") is None and Handler.touched == 1
    from tornado.web import HTTPError

    with pytest.raises(HTTPError) as err:
        voila_prelaunch_hook(max_sessions=3)(Handler(), notebook=None, cwd=".")
    assert err.value.status_code == 503


# ---------------------------------------------------------------------------- 4. kernels end with their page
def _kernels(proc) -> list:
    """voila's live kernel processes (an exited kernel not yet reaped, a zombie, holds no memory)."""
    import psutil

    alive = []
    for c in psutil.Process(proc.pid).children(recursive=True):
        try:
            if c.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(c.cmdline()):
                alive.append(c)
        except psutil.Error:
            pass
    return alive


def _total_rss(proc) -> int:
    import psutil

    voila = psutil.Process(proc.pid)
    total = voila.memory_info().rss
    for c in voila.children(recursive=True):
        try:
            total += c.memory_info().rss
        except psutil.Error:
            pass
    return total


def _sessions(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("fusion-explorer-*/session-*"))


def _wait(predicate, timeout: float) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return time.time() - t0
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout} s")


def _open(browser, url: str):
    from .test_dashboard_browser import open_app

    return open_app(browser, url)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    from .test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.browser
def test_leaving_the_page_shuts_its_kernel_down(browser, tmp_path):
    """Voila's beforeunload shutdown request gets through (no 403 '_xsrf' missing) without culling:
    the kernel and its session directory (with an upload) are gone within seconds."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    with serve_voila(env=env, log=tmp_path / "voila.log") as (url, proc):
        page = _open(browser, url)
        assert "_xsrf" in [c["name"] for c in page.context.cookies()]
        good = _scene_file(tmp_path / "up", "tiny.nc")
        with page.expect_file_chooser() as chooser:
            page.click(".fe-upload button")
        chooser.value.set_files(str(good))
        page.wait_for_selector(".fe-data-message >> text=uploaded tiny.nc", timeout=30_000)
        (session,) = _sessions(tmp_path)
        assert (session / "uploads" / "tiny.nc").is_file() and len(_kernels(proc)) == 1
        page.goto("about:blank")  # leaving the page runs voila's beforeunload handler, as closing the tab does
        took = _wait(lambda: not _kernels(proc) and not session.exists(), 20)
        page.close()
        print(f"kernel and session dir gone {took:.1f} s after leaving the page")
    assert not _forbidden((tmp_path / "voila.log").read_text())


@pytest.mark.browser
@pytest.mark.slow
def test_ten_sessions_opened_and_closed_come_back_to_baseline(browser, tmp_path):
    """10 pages at once, then 5 left (shutdown request) and 5 closed abruptly (no request: the idle
    culler, set here to 15 s, frees them): kernel count, session directories and voila's RSS (with its
    kernels) come back to the baseline within 60 s."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    cull = ["--MappingKernelManager.cull_idle_timeout=15", "--MappingKernelManager.cull_interval=2"]
    with serve_voila(*cull, env=env, log=tmp_path / "voila.log") as (url, proc):
        time.sleep(2)
        baseline = _total_rss(proc)
        # one after another: a page still loading has no websocket yet, and a kernel idle that long
        # would be culled under this test's 15 s timeout (the shipped one is 600 s)
        pages = [_open(browser, url) for _ in range(10)]
        assert len(_kernels(proc)) == 10 and len(_sessions(tmp_path)) == 10
        peak = _total_rss(proc)
        for i, page in enumerate(pages):
            if i % 2 == 0:
                page.goto("about:blank")
            page.close()
        took = _wait(lambda: not _kernels(proc) and not _sessions(tmp_path), 60)
        time.sleep(1)
        after = _total_rss(proc)
        print(f"baseline {baseline / 2**20:.0f} MB, 10 sessions {peak / 2**20:.0f} MB, "
              f"{took:.1f} s after closing: {after / 2**20:.0f} MB")
        assert peak > baseline + 10 * 200 * 2**20
        assert after < baseline + 300 * 2**20, (baseline, after)  # measured: 80 -> 5080 -> 222 MB
    log = (tmp_path / "voila.log").read_text()
    assert "Culling kernel" in log or "culled" in log.lower(), "the abruptly closed pages were not culled"
    assert not _forbidden(log)
