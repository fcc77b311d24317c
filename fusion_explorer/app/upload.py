"""Uploads: a file button that streams files to the kernel in chunks, and the checks on names and sizes.

Uploads stream in chunks (:class:`Uploader`) into the session's private directory; the page refuses
files over :data:`MAX_UPLOAD_BYTES` before sending anything. The data panel wires it
(:mod:`.data_panel`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import anywidget
import traitlets as T

#: uploads larger than this (all files of one upload together) are refused, by the page before sending (bytes)
MAX_UPLOAD_BYTES = 100 * 2**20
#: the page sends an upload in messages of this size: far below tornado's 10 MiB websocket message limit
UPLOAD_CHUNK_BYTES = 4 * 2**20
UPLOAD_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".mat", ".hdr", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip")
_MAX_NAME_BYTES = 255


def upload_name_error(name: Any) -> str | None:
    """Why ``name`` cannot be an upload's file name (None when it can): empty, a dot-file, a path
    separator, a control character (NUL), over 255 bytes in UTF-8, or an unsupported type."""
    if not isinstance(name, str) or not name.strip():
        return "refused an upload without a file name"
    shown = repr(name if len(name) <= 60 else name[:57] + "...")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"refused file name {shown}: it contains control characters"
    if "/" in name or "\\" in name:
        return f"refused file name {shown}: it contains a path separator"
    if name.startswith("."):
        return f"refused file name {shown}: names starting with '.' are not accepted"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"refused file name {shown}: it is not valid Unicode"
    if size > _MAX_NAME_BYTES:
        return f"refused file name {shown}: it is {size} bytes long; at most {_MAX_NAME_BYTES}"
    if Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        return f"{name}: unsupported type; expected one of {', '.join(UPLOAD_SUFFIXES)}"
    return None


def _size_error(name: str, size: int) -> str:
    mb = size / 2**20
    shown = f"{mb:.1f} MB" if abs(mb - MAX_UPLOAD_BYTES / 2**20) >= 0.05 else f"{size:,} bytes"
    return (f"{name} is {shown}; the limit is {MAX_UPLOAD_BYTES >> 20} MB ({MAX_UPLOAD_BYTES:,} bytes) "
            "per upload (nothing was kept)")


_UPLOADER_ESM = r"""
function render({ model, el }) {
  const button = document.createElement("button");
  button.className = "jupyter-widgets jupyter-button widget-button fe-upload-button";
  button.style.cssText = "flex:0 0 auto;width:130px;white-space:nowrap;overflow:hidden";
  const input = document.createElement("input");
  input.type = "file";
  input.multiple = true;
  input.style.display = "none";
  const status = document.createElement("span");
  status.className = "fe-upload-status";
  status.style.cssText = "margin-left:6px;font-size:12px;color:#556;white-space:nowrap";
  el.append(button, input, status);
  el.style.display = "flex";
  el.style.alignItems = "center";
  const label = () => {
    button.textContent = "⬆ " + model.get("description");
    input.accept = model.get("accept");
    button.disabled = model.get("disabled");
  };
  label();
  model.on("change:description", label);
  model.on("change:disabled", label);
  const aborted = new Set();
  model.on("msg:custom", (msg) => { if (msg && msg.event === "abort") aborted.add(msg.id); });
  button.addEventListener("click", () => { input.value = ""; input.click(); });
  input.addEventListener("change", async () => {
    const files = Array.from(input.files || []);
    input.value = "";
    if (!files.length) return;
    const cap = model.get("max_bytes"), chunk = model.get("chunk_bytes");
    const meta = files.map((f) => ({ name: f.name, size: f.size }));
    const total = files.reduce((s, f) => s + f.size, 0);
    if (total > cap) {  // refused here: nothing is sent
      model.send({ event: "refused", files: meta });
      status.textContent = "too big, not sent";
      return;
    }
    const id = Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
    button.disabled = true;
    try {
      model.send({ event: "begin", id, files: meta });
      for (let i = 0; i < files.length; i++) {
        const f = files[i];
        for (let offset = 0; offset < f.size; offset += chunk) {
          if (aborted.has(id)) { status.textContent = ""; return; }
          const buffer = await f.slice(offset, offset + chunk).arrayBuffer();
          model.send({ event: "chunk", id, file: i, offset }, undefined, [buffer]);
          status.textContent = "sending " + f.name + ": " +
            Math.round(100 * Math.min(offset + chunk, f.size) / f.size) + "%";
        }
      }
      model.send({ event: "end", id });
      status.textContent = "";
    } catch (e) {
      status.textContent = "upload failed: " + e;
    } finally {
      button.disabled = model.get("disabled");
    }
  });
}
export default { render };
"""


class Uploader(anywidget.AnyWidget):
    """A file button that streams its files to the kernel in :data:`UPLOAD_CHUNK_BYTES` messages.

    ipywidgets' ``FileUpload`` sends every file in one websocket message, which tornado drops above
    10 MiB (silently, for the user). Here the page refuses an upload over ``max_bytes`` before
    reading it and sends the rest in small chunks; the kernel writes them straight to disk. Messages to
    the kernel: ``refused`` (too big, nothing sent), ``begin`` (names and sizes), ``chunk`` (one
    buffer at ``offset`` of file ``i``), ``end``. ``on_message(fn)`` registers ``fn(content, buffers)``.
    """

    _esm = _UPLOADER_ESM
    description = T.Unicode("Upload cube").tag(sync=True)
    accept = T.Unicode("").tag(sync=True)
    disabled = T.Bool(False).tag(sync=True)
    max_bytes = T.Int(MAX_UPLOAD_BYTES).tag(sync=True)
    chunk_bytes = T.Int(UPLOAD_CHUNK_BYTES).tag(sync=True)

    def abort(self, upload_id: str) -> None:
        """Tell the page to stop sending upload ``upload_id``."""
        self.send({"event": "abort", "id": upload_id})


class _Incoming:
    """One upload being received: its files' partial paths, open handles and byte counts."""

    def __init__(self, upload_id: str, target: Path, files: list[tuple[str, int]]):
        self.id = upload_id
        self.started = time.monotonic()
        self.names = [n for n, _ in files]
        self.sizes = [s for _, s in files]
        self.written = [0] * len(files)
        self.partial = [target / f".partial-{upload_id}-{i}" for i in range(len(files))]
        self.final = [target / n for n in self.names]
        self.handles = [open(p, "wb") for p in self.partial]  # noqa: SIM115 - closed in finish/discard

    def write(self, i: int, offset: int, data: bytes) -> str | None:
        if not 0 <= i < len(self.names):
            return "the upload named a file it did not announce"
        if offset != self.written[i] or offset + len(data) > self.sizes[i]:
            return f"{self.names[i]}: the upload's pieces arrived out of order or too long"
        self.handles[i].write(data)
        self.written[i] += len(data)
        return None

    def finish(self) -> list[Path]:
        for h in self.handles:
            h.close()
        for i, (part, final) in enumerate(zip(self.partial, self.final, strict=True)):
            if self.written[i] != self.sizes[i]:
                raise OSError(f"{self.names[i]}: received {self.written[i]} of {self.sizes[i]} bytes")
            os.replace(part, final)
        return list(self.final)

    def discard(self) -> None:
        for h in self.handles:
            h.close()
        for p in self.partial:
            p.unlink(missing_ok=True)
