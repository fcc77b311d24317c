"""Load: 10 simultaneous dashboard sessions, served as ``make app`` serves them (voila-config/voila.py).

One headless Chromium, one browser context per session. Every session, interleaved with the others:
opens the page, uploads its own small NetCDF scene (``session-<i>.nc``, 160x160x31, a different seed
each), loads it at crop 128 (128x128x31), runs cnmf and waits for its row in the comparison table.
A page is ready when its default scene is drawn (the condition of ``open_app`` in
tests/test_dashboard_browser.py; the plots are drawn empty before the scene arrives). Checked: all
complete; no cross-talk (each page lists its own upload and no other session's, and each session
directory holds only its own upload); every kernel and session directory is gone after the pages
are left. Memory is sampled every 0.25 s with psutil: each kernel's RSS and the total of
voila and its kernels. Writes ``benchmarks/results/sessions.json`` and prints a table.

    python benchmarks/bench_sessions.py [--sessions 10] [--inner N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import serve_voila  # noqa: E402
from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, SCENE_READY_JS, plot_state  # noqa: E402

#: a page is ready when the default scene is on it (``open_app``'s condition: the page's plots are drawn empty
#: before the scene arrives, so a drawn plot is not enough) and the upload button is there
PAGE_READY_JS = f"() => ({SCENE_READY_JS})() && !!document.querySelector('.fe-upload button')"


class Sampler(threading.Thread):
    """Peak RSS of voila, of each kernel (by pid) and of all together, every ``period`` seconds."""

    def __init__(self, pid: int, period: float = 0.25):
        super().__init__(daemon=True)
        import psutil

        self.voila = psutil.Process(pid)
        self.period = period
        self.kernel_peak: dict[int, int] = {}
        self.total_peak = 0
        self.voila_peak = 0
        self.stop = threading.Event()

    def sample(self) -> tuple[int, dict[int, int]]:
        import psutil

        voila = self.voila.memory_info().rss
        kernels = {}
        for c in self.voila.children(recursive=False):
            try:
                if c.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(c.cmdline()):
                    rss = c.memory_info().rss
                    for sub in c.children(recursive=True):  # a kernel's own helpers count as the kernel
                        rss += sub.memory_info().rss
                    kernels[c.pid] = rss
            except psutil.Error:
                pass
        return voila, kernels

    def run(self) -> None:
        while not self.stop.is_set():
            voila, kernels = self.sample()
            self.voila_peak = max(self.voila_peak, voila)
            for pid, rss in kernels.items():
                self.kernel_peak[pid] = max(self.kernel_peak.get(pid, 0), rss)
            self.total_peak = max(self.total_peak, voila + sum(kernels.values()))
            time.sleep(self.period)


def wait_all(pages, js: str, timeout: float, arg=None) -> list[float]:
    """Wait until ``js`` is true in every page; return when each became true (seconds from now)."""
    t0, done = time.time(), [None] * len(pages)
    while None in done:
        if time.time() - t0 > timeout:
            raise TimeoutError(f"{done.count(None)} sessions did not finish within {timeout} s ({js[:60]}...)")
        for i, page in enumerate(pages):
            if done[i] is None and page.evaluate(js, arg):
                done[i] = time.time() - t0
        time.sleep(0.2)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--inner", type=int, default=None, help="cnmf inner_iterations (default: cnmf's own)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sessions.json"))
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from fusion_explorer.io import write_netcdf
    from fusion_explorer.synth import default_scene

    n = args.sessions
    work = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    scenes = [write_netcdf(default_scene(160, seed=100 + i), work / f"session-{i}.nc") for i in range(n)]
    tmp = work / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}  # the kernels' session directories land here, to be inspected
    timings: dict[str, list[float]] = {}
    with serve_voila(env=env, log=work / "voila.log") as (url, proc), sync_playwright() as p:
        sampler = Sampler(proc.pid)
        time.sleep(2)
        baseline_voila = sampler.sample()[0]
        sampler.start()
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        t_start = time.time()
        pages = []
        for _ in range(n):
            page = browser.new_context(viewport={"width": 1360, "height": 1000}).new_page()
            page.goto(url, wait_until="commit", timeout=300_000)
            pages.append(page)
        timings["page ready"] = wait_all(pages, PAGE_READY_JS, 600)
        for page, scene in zip(pages, scenes, strict=True):
            with page.expect_file_chooser() as chooser:
                page.click(".fe-upload button")
            chooser.value.set_files(str(scene))
        timings["upload"] = wait_all(
            pages, "() => (document.querySelector('.fe-data-message') || {}).innerText?.includes('uploaded session-')",
            300)
        before = [plot_state(page, "fe-truth") for page in pages]
        for page in pages:
            page.locator(".fe-crop select").first.select_option(label="128")
            page.click(".fe-load button, button.fe-load")
        timings["load 128x128"] = wait_all(
            pages, "() => document.querySelector('.fe-app').innerText.includes('HR truth 128x128x31')", 300)
        for page, b in zip(pages, before, strict=True):
            assert plot_state(page, "fe-truth")["revision"] != b["revision"]
        for page in pages:
            page.locator(".fe-methods select").select_option(["cnmf"])
            if args.inner:
                field = page.locator(".fe-opt-cnmf-inner_iterations input").first
                field.fill(str(args.inner))
                field.press("Enter")
        for page in pages:
            page.click("button.fe-run")
        timings["cnmf run"] = wait_all(
            pages, "() => document.querySelector('.fe-compare') && "
                   "document.querySelector('.fe-compare').innerText.includes('cnmf')", 900)
        wall = time.time() - t_start

        # cross-talk: every page lists its own upload only; every session dir holds its own upload only
        crosstalk = []
        for i, page in enumerate(pages):
            labels = page.evaluate("() => Array.from(document.querySelectorAll('.fe-scene select option'))"
                                   ".map(o => o.textContent.replace(/\\s+/g, ' '))")
            uploads = [lab for lab in labels if lab.startswith("uploaded:")]
            if uploads != [f"uploaded: session-{i}.nc"]:
                crosstalk.append(f"page {i} lists {uploads}")
            data = page.locator(".fe-section").first
            texts = data.locator("input[type=text], textarea").count()
            if texts:
                crosstalk.append(f"page {i}'s data panel has {texts} free-text fields")
        dirs = sorted(tmp.glob("fusion-explorer-*/session-*"))
        held = sorted(sorted(q.name for q in (d / "uploads").iterdir()) for d in dirs)
        if held != sorted([f"session-{i}.nc"] for i in range(n)):
            crosstalk.append(f"session directories hold {held}")
        psnr = [page.locator(".fe-compare").inner_text() for page in pages]

        for page in pages:
            page.goto("about:blank")  # leaving: voila's shutdown request
            page.context.close()
        t_close = time.time()
        while time.time() - t_close < 60 and (sampler.sample()[1] or list(tmp.glob("fusion-explorer-*/session-*"))):
            time.sleep(0.25)
        freed_s = time.time() - t_close
        left_kernels = len(sampler.sample()[1])
        left_dirs = len(list(tmp.glob("fusion-explorer-*/session-*")))
        time.sleep(1)
        after_voila = sampler.sample()[0]
        sampler.stop.set()
        browser.close()

    kernel_peaks = sorted(sampler.kernel_peak.values())
    mb = 2**20
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load avg at end {os.getloadavg()[0]:.1f}",
        "sessions": n,
        "scene": "uploaded NetCDF 160x160x31 per session, crop 128 (128x128x31), gaussian-x8, nikon-d700",
        "method": "cnmf" + (f" inner_iterations={args.inner}" if args.inner else " (default options)"),
        "all_completed": True,
        "crosstalk": crosstalk,
        "wall_s": round(wall, 1),
        "timings_s": {k: {"median": round(sorted(v)[len(v) // 2], 1), "max": round(max(v), 1)}
                      for k, v in timings.items()},
        "kernel_peak_rss_mb": {"min": round(kernel_peaks[0] / mb), "median": round(kernel_peaks[n // 2] / mb),
                               "max": round(kernel_peaks[-1] / mb)},
        "voila_rss_mb": {"before": round(baseline_voila / mb), "peak": round(sampler.voila_peak / mb),
                         "after": round(after_voila / mb)},
        "total_peak_rss_mb": round(sampler.total_peak / mb),
        "after_leaving": {"seconds": round(freed_s, 1), "kernels_left": left_kernels, "session_dirs_left": left_dirs},
        "cnmf_rows": [next((line for line in t.splitlines() if "cnmf" in line), "") for t in psnr],
    }
    shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"{n} sessions, {result['method']}, wall {wall:.1f} s; cross-talk: {crosstalk or 'none'}")
    print("| stage | median s | max s |\n|---|---|---|")
    for k, v in result["timings_s"].items():
        print(f"| {k} | {v['median']} | {v['max']} |")
    k = result["kernel_peak_rss_mb"]
    v = result["voila_rss_mb"]
    print(f"| kernel peak RSS (MB), min / median / max | {k['min']} / {k['median']} / {k['max']} | |")
    print(f"| voila RSS (MB), before / peak / after | {v['before']} / {v['peak']} / {v['after']} | |")
    print(f"| voila + kernels, peak RSS (MB) | {result['total_peak_rss_mb']} | |")
    print(f"after leaving the pages: {left_kernels} kernels and {left_dirs} session dirs left after {freed_s:.1f} s")
    if crosstalk or left_kernels or left_dirs:
        sys.exit(1)


if __name__ == "__main__":
    main()
