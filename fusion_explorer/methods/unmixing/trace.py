"""The one trace recorder of the iterative methods (CNMF, SCALMU, MossFuse's fit) and its memory budget.

A trace is a list of step dicts with the keys documented in :class:`~fusion_explorer.problem.FusionResult`
(``iteration``, ``label``, ``stage``, arrays, scalars); the run's stages are ``{"name", "start",
"end"}`` in the same iteration numbering. The methods decide *which* iterations they offer (CNMF:
log-spaced within each stage; SCALMU: layers thinned evenly; MossFuse: every few steps) and
:class:`TraceRecorder` decides what is kept, by one rule:

    a step costs the bytes of its arrays that no kept step already holds (an array object shared
    with an earlier step, say HR abundances that a HSI stage left alone, counts once); it is kept
    when the bytes used so far, plus its cost, plus the room reserved for the records still
    promised (:meth:`TraceRecorder.reserve`, e.g. stage ends), stay within the budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

#: default memory for a run's recorded steps (MB)
DEFAULT_BUDGET_MB = 256.0


def _arrays(value: Any) -> Iterable[np.ndarray]:
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _arrays(v)


class TraceRecorder:
    """Collects a run's steps and stages within ``budget_mb`` megabytes (see the module docstring).

    ``steps``: the kept step dicts in order; ``stages``: ``[{"name", "start", "end"}, ...]``.
    """

    def __init__(self, budget_mb: float = DEFAULT_BUDGET_MB):
        self.budget = max(float(budget_mb), 0.0) * 2**20
        self.used = 0
        self.steps: list[dict] = []
        self.stages: list[dict] = []
        self._held: set[int] = set()
        self._reserved: list[int] = []  # bytes set aside for each record still promised, in order

    # --- stages ---------------------------------------------------------------------------------
    def begin(self, name: str, iteration: int) -> None:
        """Open stage ``name`` at ``iteration`` (closing the previous one just before, if still open)."""
        if self.stages and self.stages[-1]["end"] is None:
            self.end(iteration)
        self.stages.append({"name": name, "start": int(iteration), "end": None})

    def end(self, iteration: int) -> None:
        """Close the open stage at ``iteration`` (inclusive)."""
        if self.stages and self.stages[-1]["end"] is None:
            self.stages[-1]["end"] = int(iteration)

    @property
    def stage(self) -> str | None:
        """The name of the open stage (``None`` before the first)."""
        return self.stages[-1]["name"] if self.stages else None

    # --- the budget -----------------------------------------------------------------------------
    def reserve(self, records: int, each_bytes: int) -> None:
        """Set aside room for ``records`` more forced records of about ``each_bytes`` each (forced
        records use up the reservations in the order they were made)."""
        self._reserved.extend([int(each_bytes)] * int(records))

    def cost(self, step: dict) -> int:
        """Bytes ``step`` would add: its arrays not already held by a kept step."""
        seen: set[int] = set()
        total = 0
        for a in _arrays(step):
            if id(a) in self._held or id(a) in seen:
                continue
            seen.add(id(a))
            total += a.nbytes
        return total

    def free(self) -> int:
        """Bytes left for unforced records (the budget less what is used and reserved)."""
        return int(self.budget - self.used - sum(self._reserved))

    def capacity(self, each_bytes: int) -> int:
        """How many more unforced records of ``each_bytes`` fit."""
        return max(self.free(), 0) // max(int(each_bytes), 1)

    def room(self, cost: int, *, forced: bool = False) -> bool:
        """Whether a step of ``cost`` new bytes would be kept (a ``forced`` one uses its reservation)."""
        reserved = sum(self._reserved[1:] if forced else self._reserved)
        return self.used + int(cost) + reserved <= self.budget

    def skip(self, *, forced: bool = False) -> None:
        """A step not offered after all (it did not fit): a ``forced`` one releases its reservation."""
        if forced and self._reserved:
            self._reserved.pop(0)

    def add(self, step: dict, *, forced: bool = False) -> bool:
        """Keep ``step`` (its ``stage`` set to the open stage unless given) if it fits; ``forced``:
        one of the reserved records (its reservation is released first). Returns whether kept."""
        if forced and self._reserved:
            self._reserved.pop(0)
        cost = self.cost(step)
        if self.used + cost + sum(self._reserved) > self.budget:
            return False
        self.used += cost
        self._held.update(id(a) for a in _arrays(step))
        step.setdefault("stage", self.stage)
        self.steps.append(step)
        return True

    def finish(self, iteration: int) -> list[dict]:
        """Close the open stage at ``iteration``; the stages list."""
        self.end(iteration)
        return [dict(s) for s in self.stages]


def evenly(first: int, last: int, count: int) -> set[int]:
    """At most ``count`` integers spread evenly over ``first..last`` (both ends included when ``count >= 2``)."""
    if count <= 0 or last < first:
        return set()
    if count == 1:
        return {int(last)}
    return set(np.unique(np.round(np.linspace(first, last, min(count, last - first + 1)))).astype(int).tolist())


def log_points(length: int, count: int = 24) -> set[int]:
    """About ``count`` log-spaced iterations in ``1..length``."""
    return set(np.unique(np.round(np.geomspace(1, max(length, 1), count)).astype(int)).tolist())


__all__ = ["TraceRecorder", "DEFAULT_BUDGET_MB", "evenly", "log_points"]
