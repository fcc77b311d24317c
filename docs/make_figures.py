"""Regenerate the README figures: run the notebooks and save the figures of their tagged cells.

    .venv/bin/python docs/make_figures.py                 # all notebooks -> docs/figures/*.png
    .venv/bin/python docs/make_figures.py cnmf_interpretability.ipynb

A code cell tagged ``figure:<name>`` in ``notebooks/*.ipynb`` gives ``docs/figures/<name>.png`` (its last
PNG output; earlier ones, when a cell shows several, become ``<name>-1.png``, ...). The figures are thus
exactly what the notebooks show, made by the package's plotting functions on the real data in
``../shared/data``. The kernel is this interpreter (run it with the project's venv).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUT = ROOT / "docs" / "figures"
DPI = 110


def _kernel_manager(tmp: Path):
    """A kernel manager whose ``python3`` kernel is this interpreter."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def figures_of(path: Path, out: Path) -> list[Path]:
    """Execute one notebook and write the PNGs of its ``figure:<name>`` cells into ``out``."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    setup = nbformat.v4.new_code_cell(
        f'%config InlineBackend.print_figure_kwargs = {{"bbox_inches": "tight", "dpi": {DPI}}}'
    )
    nb.cells.insert(0, setup)
    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(nb, km=_kernel_manager(Path(tmp)), timeout=1800, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    written = []
    for cell in nb.cells:
        names = [t.split(":", 1)[1] for t in cell.get("metadata", {}).get("tags", []) if t.startswith("figure:")]
        if not names:
            continue
        images = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        if not images:  # e.g. the SCALMU section when SCALMU cannot run here: keep the old file
            print(f"warning: {path.name}: the cell tagged figure:{names[0]} showed no figure; not updated")
            continue
        for i, data in enumerate(images):
            suffix = "" if i == len(images) - 1 else f"-{i + 1}"
            target = out / f"{names[0]}{suffix}.png"
            target.write_bytes(base64.b64decode(data))
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook file names in notebooks/ (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default docs/figures)")
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="only copy the browser test's screenshot (test-artifacts/02-after-runs.png, written by "
        "`pytest tests/test_dashboard_browser.py`) to docs/figures/dashboard.png, 900 px wide",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dashboard:
        from PIL import Image

        shot = Path(__file__).resolve().parents[1] / "test-artifacts" / "02-after-runs.png"
        if not shot.exists():
            print(f"{shot} is missing: run `.venv/bin/python -m pytest tests/test_dashboard_browser.py` first")
            return 1
        image = Image.open(shot).convert("RGB")
        image = image.resize((900, round(image.height * 900 / image.width)), Image.LANCZOS)
        image.save(args.out / "dashboard.png", optimize=True)
        print(f"dashboard.png <- {shot}")
        return 0
    names = args.notebooks or sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    for name in names:
        start = time.perf_counter()
        written = figures_of(NOTEBOOKS / name, args.out)
        rel = ", ".join(p.name for p in written)
        print(f"{name}: {len(written)} figures in {time.perf_counter() - start:.0f} s ({rel})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
