"""Where data lives and how the dashboard is served.

Data: ``FUSION_EXPLORER_DATA`` (one folder or several separated by ``os.pathsep``), else
``../shared/data`` beside the project or cwd. The dashboard lists scenes from these *roots* only
(:func:`data_roots`) and from its session's own uploads.

Serving: ``voila-config/voila.py`` (used by ``make app`` and the browser tests) binds 127.0.0.1,
culls idle kernels and installs :func:`voila_prelaunch_hook`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: the folder holding voila's configuration (``voila.py``); pass it as ``--Voila.config_file_paths``
VOILA_CONFIG_DIR = PROJECT_ROOT / "voila-config"
#: at most this many dashboard kernels at once (each costs ~0.5 GB); further page loads get HTTP 503
MAX_SESSIONS = 20


def _env_roots() -> list[Path]:
    value = os.environ.get("FUSION_EXPLORER_DATA", "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def data_roots() -> list[Path]:
    """The existing data folders, resolved and without repeats: every ``$FUSION_EXPLORER_DATA`` entry,
    then ``<project>/../shared/data`` and ``./../shared/data``."""
    roots: list[Path] = []
    for path in [*_env_roots(), PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]:
        if path.is_dir() and path.resolve() not in roots:
            roots.append(path.resolve())
    return roots


def default_data_dir() -> Path | None:
    """The first of :func:`data_roots` (``$FUSION_EXPLORER_DATA``'s first existing entry, else ``../shared/data``)."""
    roots = data_roots()
    return roots[0] if roots else None


def voila_prelaunch_hook(max_sessions: int = MAX_SESSIONS) -> Callable[..., Any]:
    """A ``VoilaConfiguration.prelaunch_hook`` run on every page request before its kernel starts.

    It (1) sets the ``_xsrf`` cookie: voila's page posts that cookie back with its kernel-shutdown
    request on ``beforeunload``, but voila 0.5 never sets it, so every shutdown got ``403 '_xsrf'
    argument missing`` and closed tabs left their kernels running (voila-dashboards/voila#1458);
    reading ``handler.xsrf_token`` makes tornado send the cookie with this page. XSRF checking stays
    on. (2) Answers 503 once ``max_sessions`` kernels are running, so page loads cannot exhaust memory.
    """

    def hook(handler: Any, notebook: Any = None, cwd: str | None = None) -> None:
        from tornado.web import HTTPError

        handler.xsrf_token  # noqa: B018 - the property sets the cookie
        running = len(handler.kernel_manager.list_kernel_ids())
        if max_sessions and running >= max_sessions:
            raise HTTPError(503, f"{running} dashboard sessions are open (the limit is {max_sessions}); "
                                 "try again when one closes")
        return None

    return hook
