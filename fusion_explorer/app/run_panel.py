"""Run panel: pick methods and their main options; run off the widget thread with progress and cancel."""

from __future__ import annotations

import html
import inspect
import threading
import time
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ipywidgets as W

from .panel import Panel
from .state import AppState, Run

#: keyword options never shown (plumbing, not science)
_HIDDEN = {"device", "progress", "seed", "dtype", "trace_budget_mb", "checkpoint"}
_MAX_OPTIONS = 4


class Cancelled(Exception):
    """Raised from the progress callback when the user presses Cancel."""


def method_options(function: Any) -> dict[str, Any]:
    """The simple keyword options of a method (int, float, bool, str or None defaults), in signature order."""
    out = {}
    for name, p in inspect.signature(function).parameters.items():
        if p.kind is not p.KEYWORD_ONLY or name in _HIDDEN or p.default is inspect.Parameter.empty:
            continue
        if p.default is None or isinstance(p.default, bool | int | float | str):
            out[name] = p.default
    return out


def _option_widget(name: str, default: Any, hint: Any = None) -> W.Widget:
    style = {"description_width": "130px"}
    lay = W.Layout(width="250px")
    if default is None and hint is not None and set(typing.get_args(hint)) == {bool, type(None)}:
        # ``bool | None``: None means "the method decides" (e.g. HySure estimates a response only when unknown)
        return W.Dropdown(options=[("auto", None), ("yes", True), ("no", False)], value=None, description=name,
                          style=style, layout=lay)
    if isinstance(default, bool):
        return W.Checkbox(value=default, description=name, style=style, layout=lay, indent=False)
    if isinstance(default, int):
        return W.IntText(value=default, description=name, style=style, layout=lay)
    if isinstance(default, float):
        return W.FloatText(value=default, description=name, style=style, layout=lay)
    return W.Text(value="" if default is None else str(default), placeholder="default", description=name,
                  style=style, layout=lay)


def _parse(widget: W.Widget) -> Any:
    v = widget.value
    if isinstance(widget, W.Text):
        v = v.strip()
        if not v:
            return None
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
    return v


def describe_steps(run: Run) -> None:
    """``run.step_metrics`` without scores: each step's iteration, label, stage and recorded residuals (instant)."""
    steps = []
    for i, s in enumerate(run.trace):
        m = {"iteration": int(s.get("iteration", i)), "label": str(s.get("label", i))}
        if s.get("stage") is not None:
            m["stage"] = str(s["stage"])
        for k in ("objective", "residual_hsi", "residual_msi"):
            if k in s and s[k] is not None:
                m[k] = float(s[k])
        steps.append(m)
    run.step_metrics = steps


def score(run: Run, problem, on_metrics=None, diagnostics=None) -> None:
    """Fill ``run.metrics`` (checked :func:`~fusion_explorer.metrics.evaluate`, estimate clipped) and each
    trace step's PSNR/SAM (:class:`~.scoring.StepScorer`) against the truth; ``on_metrics()`` is called
    between the two (the table can show its row before the curves are scored). A problem without truth (a
    real pair) gets no-reference diagnostics instead (:func:`score_without_truth`)."""
    from ..methods import trace_fused
    from ..metrics import evaluate
    from .scoring import StepScorer

    if not run.step_metrics and run.trace:
        describe_steps(run)
    if problem.truth is None:
        score_without_truth(run, problem, diagnostics, on_metrics)
        return
    names = ("psnr", "ssim", "sam", "ergas", "rmse")
    run.metrics = evaluate(problem.truth, run.result.fused, problem.ratio, metrics=names)
    if on_metrics is not None:
        on_metrics()
    if len(run.trace) > 1:
        scorer = StepScorer(problem.truth.values)
        for m, s in zip(run.step_metrics, run.trace, strict=True):
            m.update(scorer(trace_fused(s)))
    run.scored = True


def score_without_truth(run: Run, problem, diagnostics=None, on_metrics=None) -> None:
    """A real pair: ``run.metrics`` holds the relative residuals of the result against each input
    (``hsi_residual``, ``msi_residual``, :class:`~.no_reference.Diagnostics`) and ``diagnostics_how``; each
    trace step gets the same two numbers (``nr_hsi``, ``nr_msi``). Nothing is compared with a truth."""
    from ..methods import trace_fused
    from .no_reference import Diagnostics

    d = diagnostics if diagnostics is not None and diagnostics.problem is problem else Diagnostics(problem)
    out = d(run.result.fused.values, run.result, maps=False)
    run.metrics = {"hsi_residual": out["hsi_residual"], "msi_residual": out["msi_residual"]}
    run.diagnostics_how = out["how"]
    if on_metrics is not None:
        on_metrics()
    if len(run.trace) > 1:
        for m, s in zip(run.step_metrics, run.trace, strict=True):
            o = d(trace_fused(s), run.result, maps=False)
            m.update(nr_hsi=o["hsi_residual"], nr_msi=o["msi_residual"])
    run.scored = True


class RunPanel(Panel):
    """Method picker + options, Run / Cancel, progress bar; the work runs in a thread."""

    name = "runner"
    title = "Run"
    hint = "methods run in the background; the page stays usable"
    observes = {"_enable": ("problem", "busy"), "_on_problem": ("problem",)}

    def __init__(self, state: AppState, **context):
        from ..methods import available_methods

        super().__init__(state)
        self.infos = available_methods()
        names = list(self.infos)
        default = ["bicubic"] if "bicubic" in names else names[:1]
        self.methods = W.SelectMultiple(options=names, value=default, rows=min(6, max(3, len(names))),
                                        description="methods", layout=W.Layout(width="260px"))
        self.describe = W.HTML(layout=W.Layout(width="720px"))
        self.device = W.Dropdown(options=_devices(), value="auto", description="device", layout=W.Layout(width="200px"))
        self.seed = W.IntText(value=0, description="seed", layout=W.Layout(width="200px"))
        self.option_box = W.VBox()
        self.options: dict[str, dict[str, W.Widget]] = {}
        self.run_button = W.Button(description="Run", button_style="primary", icon="play",
                                   layout=W.Layout(width="120px"))
        self.cancel_button = W.Button(description="Cancel", button_style="warning", icon="stop", disabled=True,
                                      layout=W.Layout(width="120px"))
        self.progress = W.FloatProgress(value=0, min=0, max=1, description="", layout=W.Layout(width="340px"))
        self.progress_label = W.HTML("idle")
        self.log = W.HTML()
        self.mossfuse_note = W.HTML()
        self.mossfuse = None  # the MossFuse plan of the current scene (mossfuse_plan.Plan), once offered
        self._cancel = threading.Event()
        #: scoring runs here, one run at a time, while the next method already runs (see :meth:`_score`)
        self._scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fe-scoring")
        self._scoring: list = []
        for key, w in {"fe-methods": self.methods, "fe-run": self.run_button, "fe-cancel": self.cancel_button,
                       "fe-progress": self.progress_label, "fe-run-log": self.log}.items():
            w.add_class(key)
        self.thread: threading.Thread | None = None
        self.methods.observe(self._on_methods, "value")
        self.run_button.on_click(lambda _: self.start())
        self.cancel_button.on_click(lambda _: self.cancel())
        self._on_methods()
        self._enable()
        self.widget = W.VBox([
            W.HBox([W.VBox([self.methods, self.device, self.seed]), W.VBox([self.describe, self.option_box])],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.run_button, self.cancel_button, self.progress, self.progress_label],
                   layout=W.Layout(align_items="center")),
            self.log,
        ])

    def _on_methods(self, _=None) -> None:
        rows, desc = [], []
        for name in self.methods.value:
            info = self.infos[name]
            tag = " <span style='color:#777'>(iterative)</span>" if info.iterative else ""
            desc.append(f"<b>{name}</b>{tag}: {info.description}")
            if name not in self.options:
                opts = list(method_options(info.function).items())[:_MAX_OPTIONS]
                try:
                    hints = typing.get_type_hints(info.function)
                except Exception:  # noqa: BLE001 - an annotation that does not evaluate: plain widgets
                    hints = {}
                self.options[name] = {k: _option_widget(k, v, hints.get(k)) for k, v in opts}
                if name == "mossfuse":
                    self.options[name] = {"weights": W.Dropdown(description="weights", layout=W.Layout(width="250px"),
                                                                style={"description_width": "60px"}),
                                          **self.options[name]}
                    self.options[name]["weights"].observe(lambda _: self._mossfuse_weights(), "value")
                    self._plan_mossfuse()
                for k, w in self.options[name].items():
                    w.add_class(f"fe-opt-{name}-{k}")
            if name == "mossfuse" and self.mossfuse_note.value:
                desc.append(self.mossfuse_note.value)
            if self.options[name]:
                rows.append(W.HBox([W.HTML(f"<b>{name}</b>", layout=W.Layout(width="80px")),
                                    *self.options[name].values()], layout=W.Layout(flex_flow="row wrap")))
        self.describe.value = "<br>".join(desc) or "<i>pick one or more methods</i>"
        self.option_box.children = rows

    def _plan_mossfuse(self) -> None:
        """Offer the shared checkpoint when the scene fits it, else a fit with an estimate and a CPU-sized step
        count."""
        from .mossfuse_plan import plan

        widgets = self.options.get("mossfuse")
        if widgets is None or self.state.problem is None:
            return
        p = self.mossfuse = plan(self.state.problem)
        fit = f"fit on this pair ({p.steps} steps)"
        choices = ([(f"published ({p.checkpoint.name})", "checkpoint")] if p.checkpoint is not None else []) + [
            (fit, "fit")]
        widgets["weights"].options = choices
        widgets["weights"].value = choices[0][1]
        widgets["steps"].value = p.steps
        self.mossfuse_note.value = p.html()
        self._mossfuse_weights()

    def _mossfuse_weights(self) -> None:
        widgets = self.options["mossfuse"]
        fit = widgets["weights"].value == "fit"
        widgets["fit"].value = fit or (widgets["fit"].value and widgets["weights"].value == "checkpoint")
        widgets["fit"].disabled = fit  # a fit needs fit=True; with the checkpoint it means fine-tuning
        widgets["fit"].description = "fit" if fit else "fine-tune"

    def _enable(self, _=None) -> None:
        busy = self.state.busy
        self.run_button.disabled = busy or self.state.problem is None
        self.cancel_button.disabled = not busy

    # ------------------------------------------------------------------ running
    def start(self, block: bool = False) -> None:
        """Run the selected methods in a background thread (``block``: wait for it, for tests)."""
        if self.state.busy or self.state.problem is None:
            return
        jobs = []
        for n in self.methods.value:
            defaults = method_options(self.infos[n].function)
            opts = {k: _parse(w) for k, w in self.options.get(n, {}).items()}
            if n == "mossfuse" and opts.pop("weights", None) == "checkpoint" and self.mossfuse.checkpoint:
                opts["checkpoint"] = str(self.mossfuse.checkpoint)
            if n == "mossfuse" and not opts.get("fit"):  # fitting options mean nothing without a fit
                opts = {k: v for k, v in opts.items() if k not in ("steps", "lr", "blind_lr")}
            jobs.append((n, {k: v for k, v in opts.items() if v is not None and v != defaults.get(k)}))
        self._cancel.clear()
        self.state.busy = True
        self.thread = threading.Thread(target=self._work, args=(self.state.problem, jobs), daemon=True)
        self.thread.start()
        if block:
            self.wait()

    def wait(self) -> None:
        """Until the methods of the last Run and their scoring have finished (for tests and scripts)."""
        if self.thread is not None:
            self.thread.join()
        for future in list(self._scoring):
            future.result()

    def _score(self, run: Run, problem) -> None:
        """Score ``run`` in the scoring thread; the state says so twice (table row, then curves)."""
        def published() -> None:
            if self.state.runs.get(run.name) is run:  # not a run of a scene that has since changed
                self.state.scored += 1

        try:
            if problem.truth is None and problem is self.state.problem:  # a real pair: the state's diagnostics
                score(run, problem, on_metrics=published, diagnostics=self.state.diagnostics)
            else:
                score(run, problem, on_metrics=published)
        except Exception as e:  # noqa: BLE001 - shown to the user, the run stays usable
            run.score_error = f"{type(e).__name__}: {e}"
            run.scored = True
        published()

    def cancel(self) -> None:
        self._cancel.set()
        self.progress_label.value = "cancelling…"

    def _work(self, problem, jobs: list[tuple[str, dict]]) -> None:
        from ..methods import fuse

        messages: list[str] = []
        finished: list[str] = []
        failed: list[str] = []
        cancelled = False
        try:
            for k, (name, options) in enumerate(jobs):
                prefix = f"{name} ({k + 1}/{len(jobs)})"
                last = [0.0, time.perf_counter()]

                def progress(done: int, total: int, info: dict, prefix: str = prefix, last: list = last) -> None:
                    if self._cancel.is_set():
                        raise Cancelled()
                    now = time.perf_counter()
                    if now - last[0] > 0.1 or done >= total:
                        last[0] = now
                        self.progress.value = done / max(total, 1)
                        stage = f" · {info['stage']}" if isinstance(info, dict) and "stage" in info else ""
                        left = _left(now - last[1], done, total)
                        self.progress_label.value = f"{prefix}: {done}/{total}{stage}{left}"

                self.progress.bar_style = ""
                self.progress.value = 0
                self.progress_label.value = f"{prefix}: starting"
                try:
                    result = fuse(problem, name, device=self.device.value, progress=progress,
                                  seed=int(self.seed.value), **options)
                    if problem is not self.state.problem:
                        messages.append(f"{name}: the scene changed while running; result dropped")
                        failed.append(name)
                        break
                    shown = {a: (Path(b).name if a == "checkpoint" else b) for a, b in options.items()}
                    label = name if not shown else f"{name} " + ",".join(f"{a}={b}" for a, b in shown.items())
                    run = Run(label, result)
                    describe_steps(run)
                except Cancelled:
                    cancelled = True
                    messages.append(f"<span style='color:#b36b00'>{name}: cancelled</span>")
                    break
                except Exception as e:  # noqa: BLE001 - shown to the user
                    failed.append(name)
                    messages.append(f"<span style='color:#b00020'>{name} failed: {type(e).__name__}: "
                                    f"{html.escape(str(e))}</span>")
                    continue
                self.state.add_run(run)  # selects it: the newest run is the one shown, before it is scored
                self._scoring.append(self._scorer.submit(self._score, run, problem))
                finished.append(label)
                messages.append(f"{html.escape(label)}: done in {result.seconds:.2f} s on {result.device}")
        except Exception as e:  # noqa: BLE001 - never leave the panel saying "done" after a crash
            failed.append("run")
            messages.append(f"<span style='color:#b00020'>failed: {type(e).__name__}: {html.escape(str(e))}</span>")
        finally:
            cancelled = cancelled or (self._cancel.is_set() and len(finished) + len(failed) < len(jobs))
            self.progress_label.value, self.progress.bar_style = outcome(len(jobs), finished, failed, cancelled)
            if not (cancelled or failed):
                self.progress.value = 1
            self.log.value = "<br>".join(messages)
            self.state.busy = False

    def _on_problem(self, _=None) -> None:
        """A new scene: the last run's outcome and log describe the old one; MossFuse's offer is the new scene's."""
        self._plan_mossfuse()
        self._on_methods()
        if not self.state.busy:
            self.progress.value = 0
            self.progress.bar_style = ""
            self.progress_label.value = "idle"
            self.log.value = ""


def outcome(total: int, done: list[str], failed: list[str], cancelled: bool) -> tuple[str, str]:
    """The progress label and bar style after a Run: says "done" only when every method finished."""
    of = f" ({len(done)} of {total} done)" if total > 1 else ""
    if cancelled:
        return f"<span style='color:#b36b00'><b>cancelled</b>{of}</span>", "warning"
    if failed:
        return f"<span style='color:#b00020'><b>failed</b>: {html.escape(', '.join(failed))}{of}</span>", "danger"
    return f"done ({len(done)} of {total})" if total > 1 else "done", "success"


def _left(elapsed: float, done: int, total: int) -> str:
    """`` · about N s left`` at the rate so far (nothing before the first step or after the last)."""
    if done <= 0 or done >= total or elapsed < 2:
        return ""
    left = elapsed / done * (total - done)
    return f" · about {left:.0f} s left" if left < 90 else f" · about {left / 60:.0f} min left"


def _devices() -> list[str]:
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out
