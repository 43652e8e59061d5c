"""The Stage base class: config in, ``setup()`` loads heavy state, ``process_row`` does the work.

Every row flows through every stage. A stage that rejects a row sets ``_drop`` (a reason slug)
and ``_dropped_at`` (its name); later stages pass dropped rows through untouched. Each stage adds
``_t_<name>`` (seconds spent on the row), so the driver can account for every item: counts in,
kept, dropped by reason, and wall time per stage — whichever runner ran the stages.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

log = logging.getLogger(__name__)

DROP = "_drop"
DROPPED_AT = "_dropped_at"
ERROR = "_error"


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; ``actors`` > 0 runs it as a Ray actor pool."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 1
    actors: int = 0  # 0: stateless tasks; N: an actor pool of N (model stages)


class Stage:
    """One step of a pipeline. Subclasses set ``name``, ``resources`` and implement ``process_row``.

    ``process_row(row) -> dict`` returns the columns to add; raise ``Drop(reason, detail)`` to reject
    the row with a slug the catalog keeps. Constructors hold config only (picklable to Ray workers);
    models and other heavy state load in ``setup()``.
    """

    name: ClassVar[str] = "stage"
    resources: Resources = Resources()

    def setup(self) -> None:
        """Load heavy state (models, decoders) once per worker."""

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement process_row")

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not getattr(self, "_ready", False):
            self.setup()
            self._ready = True
        return [self._run_one(row) for row in batch]

    def _run_one(self, row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        if out.get(DROP):
            return out
        t0 = time.perf_counter()
        try:
            out.update(self.process_row(row))
        except Drop as d:
            out.update({**d.columns, DROP: d.reason, DROPPED_AT: self.name, ERROR: d.detail})
        except Exception as e:  # a bad item never kills the job: record it under a reason and go on
            log.warning("%s failed on %s: %s: %s", self.name, row.get("uri") or row, type(e).__name__, e)
            out.update({DROP: f"{self.name}_error", DROPPED_AT: self.name,
                        ERROR: f"{type(e).__name__}: {e}"})
        out[f"_t_{self.name}"] = time.perf_counter() - t0
        return out


class Drop(Exception):
    """Reject the current row: ``reason`` is a slug (too_short, decode_error …), detail is free text."""

    def __init__(self, reason: str, detail: str = "", columns: dict[str, Any] | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.columns = columns or {}  # what the stage learnt before rejecting (e.g. video_id)


@dataclass
class StageStats:
    """Counts and time of one stage over a run."""

    name: str
    n_in: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    busy_s: float = 0.0  # summed per-row time (CPU-seconds of work, across workers)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_stats(stage_names: list[str], rows: list[dict[str, Any]]) -> list[StageStats]:
    """Per-stage counts from rows that went through all stages (dropped ones included)."""
    stats = []
    for name in stage_names:
        s = StageStats(name)
        reasons: Counter[str] = Counter()
        for r in rows:
            at = r.get(DROPPED_AT)
            if at is not None and stage_names.index(at) < stage_names.index(name):
                continue  # dropped earlier: never entered this stage
            s.n_in += 1
            s.busy_s += float(r.get(f"_t_{name}") or 0.0)
            if at == name:
                reasons[r[DROP]] += 1
            else:
                s.kept += 1
        s.dropped = dict(sorted(reasons.items()))
        stats.append(s)
    return stats


def merge_stats(a: list[StageStats], b: list[StageStats]) -> list[StageStats]:
    """Add two runs' stats stage by stage (same stage order)."""
    out = []
    for x, y in zip(a, b):
        dropped = Counter(x.dropped) + Counter(y.dropped)
        out.append(StageStats(x.name, x.n_in + y.n_in, x.kept + y.kept, dict(sorted(dropped.items())),
                              x.busy_s + y.busy_s))
    return out


def stats_json(stats: list[StageStats]) -> str:
    return json.dumps([s.as_dict() for s in stats])
