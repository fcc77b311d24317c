"""Voila's configuration for the dashboard: ``make app`` and the browser tests load it with
``--Voila.config_file_paths=voila-config`` (see README, "Serving the dashboard safely").

Any value here can be overridden on the command line, e.g.
``make app VOILA_ARGS="--MappingKernelManager.cull_idle_timeout=300"``.
"""

from fusion_explorer.config import MAX_SESSIONS, voila_prelaunch_hook

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

# Localhost only. To serve on a network, put an authenticating proxy in front (README).
c.Voila.ip = "127.0.0.1"

# Kernels end with their page. A closed tab sends voila's shutdown request (which works once the
# prelaunch hook has set the _xsrf cookie); a kernel whose page went away without it (crash, network,
# a curl GET) has no websocket left and is culled after 10 idle minutes. A kernel whose page is still
# open is never culled (cull_connected=False), and neither is a busy one.
c.MappingKernelManager.cull_idle_timeout = 600
c.MappingKernelManager.cull_interval = 60
c.MappingKernelManager.cull_connected = False
c.MappingKernelManager.cull_busy = False

# Sets the _xsrf cookie (XSRF checks stay on) and answers 503 past MAX_SESSIONS kernels.
# A prelaunch hook excludes --preheat_kernel (voila refuses both); a pre-heated pool kernel, idle and
# unconnected, would also be culled.
c.VoilaConfiguration.prelaunch_hook = voila_prelaunch_hook(MAX_SESSIONS)

# Voila renders the page from the notebook's outputs and waits only 4 s (nbclient's default) for the
# kernel's output messages after the cell finishes; with 10 pages opened at once (the dashboard's
# widget state is several MB per page) that was exceeded, the widget's output was dropped and the page
# stayed blank (1 to 6 of 10 pages in benchmarks/bench_sessions.py runs). Wait up to 2 minutes.
c.VoilaExecutor.iopub_timeout = 120

# Uploads travel in 4 MiB messages (fusion_explorer.app.upload.Uploader), under tornado's default
# 10 MiB websocket message limit, so no transport limit needs raising for the 100 MB upload cap. Keep
# the limit explicit: a bigger single message is refused by tornado, not buffered.
c.Voila.tornado_settings = {"websocket_max_message_size": 10 * 2**20}

# Every asset from this server: the "fusion-explorer" template (voila-config/share/voila/templates) is
# voila's lab template without its Font Awesome links to a CDN (voila's bundle already serves Font
# Awesome 5). Templates are found on JUPYTER_PATH, read when voila sets up its templates, after this file.
import os  # noqa: E402
from pathlib import Path  # noqa: E402

_share = str(Path(__file__).resolve().parent / "share")
if _share not in os.environ.get("JUPYTER_PATH", "").split(os.pathsep):
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (_share, os.environ.get("JUPYTER_PATH")) if p)
c.VoilaConfiguration.template = "fusion-explorer"


# plotly.js (4.8 MB) as a static file of the template, loaded by the page's <head> (``async``) while the kernel
# starts and runs the notebook, and cached by the browser: the page no longer waits for it after the widgets
# arrive, and it is not part of every page's widget state (fusion_explorer.app.figure.PlotlyLoader asks the
# kernel for it only when a page has no such file). The file is the installed plotly's own, copied (once per
# plotly version) into a private per-user folder (the sessions' parent, fusion_explorer.app.state.sessions_root)
# that is put on JUPYTER_PATH after voila-config/share. Nothing is written into the project.
def _plotly_static_root() -> str | None:
    import importlib.util
    import shutil
    import tempfile

    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not source.is_file():
        return None
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    root = Path(tempfile.gettempdir()) / f"fusion-explorer-{uid}" / "voila-share"
    static = root / "voila" / "templates" / "fusion-explorer" / "static"
    try:
        root.parent.mkdir(mode=0o700, exist_ok=True)
        if hasattr(os, "getuid") and (root.parent.is_symlink() or root.parent.stat().st_uid != os.getuid()):
            return None
        static.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = static / "plotly.min.js"
        src = source.stat()
        if target.is_file() and not target.is_symlink() and target.stat().st_size == src.st_size \
                and target.stat().st_mtime == src.st_mtime:
            return str(root)
        tmp = static / f".plotly.min.js.{os.getpid()}"
        shutil.copy2(source, tmp)  # a copy: tornado refuses a symlink that points outside the static folder
        os.replace(tmp, target)
        return str(root)
    except OSError:
        return None


_plotly_root = _plotly_static_root()
if _plotly_root and _plotly_root not in os.environ["JUPYTER_PATH"].split(os.pathsep):
    os.environ["JUPYTER_PATH"] = os.pathsep.join([os.environ["JUPYTER_PATH"], _plotly_root])

# plotly's JupyterLab extension renders plotly *outputs*; the dashboard draws its figures itself
# (fusion_explorer.app.figure), yet the page downloaded and evaluated that extension's 4.8 MB bundle on every load.
c.VoilaConfiguration.extension_denylist = ["jupyterlab-plotly"]
