"""Recurring jobs: schedules stored under the root, and the scheduler loop that submits them.

A schedule is ``ROOT/schedules/<name>.yaml`` (an interval or a cron rule plus a validated job
spec); its state is ``ROOT/schedules/<name>.state.json`` (last slot run, last job id, counts);
both are written tmp+rename. Each tick, a schedule whose latest slot is newer than the last one it
ran is *due*: after downtime, all missed slots collapse into one run (``due_slot``). A due run is
skipped, not queued, while the schedule's previous job is still running on Ray, so a schedule
never overlaps itself.
"""
from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.jobspec import JobSpecError

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Schedule(BaseModel):
    """A recurring job: exactly one of ``every_s`` / ``cron``, and the job spec it submits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    every_s: float | None = Field(None, gt=0, description="Interval in seconds.")
    cron: str | None = Field(None, description="Cron rule (UTC), e.g. '0 3 * * *'.")
    spec: dict[str, Any] = Field(description="The job spec (validated when the schedule is added).")
    created_at: float = Field(default_factory=time.time, description="Epoch seconds; anchors intervals.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '.', '_' or '-' (up to 64), starting with a letter or digit")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        from croniter import croniter
        if v is not None and not croniter.is_valid(v):
            raise ValueError(f"{v!r} is not a cron rule; e.g. '*/15 * * * *' (every 15 minutes)")
        return v

    @model_validator(mode="after")
    def _one_rule(self) -> "Schedule":
        if (self.every_s is None) == (self.cron is None):
            raise ValueError("give exactly one of --every (e.g. 15m) or --cron (e.g. '0 3 * * *')")
        return self

    def rule(self) -> str:
        return f"every {_fmt_seconds(self.every_s)}" if self.every_s else f"cron '{self.cron}'"


class ScheduleState(BaseModel):
    """What the scheduler remembers about one schedule."""

    last_slot: float | None = None  # the slot time last submitted or skipped
    last_job_id: str | None = None
    last_submitted_at: float | None = None
    runs: int = 0
    skipped: int = 0
    note: str | None = None  # why the last due slot was skipped or failed


def parse_every(text: str) -> float:
    """``'15m'`` → 900.0; units s, m, h, d (seconds when none)."""
    m = _EVERY.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise JobSpecError(f"--every {text!r}: use a positive number with a unit, e.g. 30s, 15m, 2h, 1d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def due_slot(schedule: Schedule, last_slot: float | None, now: float) -> float | None:
    """The slot to run at ``now``: the latest slot <= now that is newer than ``last_slot``.

    Pure (no clock, no I/O). Several missed slots give one answer, the latest: catch up once.
    Intervals start at ``created_at`` (first run right away); cron slots count after creation.
    """
    if now < schedule.created_at:
        return None
    if schedule.every_s:
        k = math.floor((now - schedule.created_at) / schedule.every_s)
        slot = schedule.created_at + k * schedule.every_s
        return slot if last_slot is None or slot > last_slot + 1e-6 else None
    from croniter import croniter
    slot = croniter(schedule.cron, datetime.fromtimestamp(now, timezone.utc)).get_prev(float)
    after = last_slot if last_slot is not None else schedule.created_at
    return slot if slot > after else None


class ScheduleStore:
    """Schedules and their state under ``ROOT/schedules/``."""

    def __init__(self, root):
        self.root = root
        root.makedirs("schedules")

    def add(self, schedule: Schedule, replace: bool = False) -> None:
        if not replace and self._exists(f"{schedule.name}.yaml"):
            raise JobSpecError(f"schedule {schedule.name!r} exists; remove it first or pick another name")
        text = yaml.safe_dump(schedule.model_dump(mode="json"), sort_keys=False)
        self.root.put_bytes(f"schedules/{schedule.name}.yaml", text.encode())

    def get(self, name: str) -> Schedule:
        if not _NAME.match(name) or not self._exists(f"{name}.yaml"):
            raise JobSpecError(f"no schedule named {name!r}; see `vidcorpus schedule list`")
        with self.root.fs.open(self.root.join("schedules", f"{name}.yaml"), "r") as f:
            return Schedule.model_validate(yaml.safe_load(f))

    def list(self) -> list[Schedule]:
        """Every readable schedule; an unreadable file is logged and skipped."""
        names = sorted(p.rsplit("/", 1)[-1][: -len(".yaml")]
                       for p in self.root.fs.ls(self.root.join("schedules"), detail=False)
                       if p.endswith(".yaml") and ".tmp-" not in p)
        out = []
        for name in names:
            try:
                out.append(self.get(name))
            except (JobSpecError, ValueError, yaml.YAMLError) as e:
                log.warning("skipping unreadable schedule %s: %s", name, e)
        return out

    def remove(self, name: str) -> None:
        self.get(name)  # raises when unknown
        for fname in (f"{name}.yaml", f"{name}.state.json"):
            if self._exists(fname):
                self.root.fs.rm(self.root.join("schedules", fname))

    def state(self, name: str) -> ScheduleState:
        if not self._exists(f"{name}.state.json"):
            return ScheduleState()
        with self.root.fs.open(self.root.join("schedules", f"{name}.state.json"), "r") as f:
            return ScheduleState.model_validate(json.load(f))

    def save_state(self, name: str, state: ScheduleState) -> None:
        self.root.put_bytes(f"schedules/{name}.state.json", state.model_dump_json(indent=2).encode())

    def _exists(self, fname: str) -> bool:
        return self.root.fs.exists(self.root.join("schedules", fname))


class Submitter(Protocol):
    """How the scheduler submits a spec and asks whether a job is still running."""

    def submit(self, schedule: str, spec: dict[str, Any]) -> str: ...

    def is_running(self, job_id: str) -> bool: ...


@dataclass
class TickEvent:
    """One decision of one tick, for logs and tests."""

    schedule: str
    action: str  # submitted, skipped, failed
    slot: float
    job_id: str | None = None
    note: str | None = None


def tick(store: ScheduleStore, submitter: Submitter, now: float) -> list[TickEvent]:
    """Submit every due schedule once; skip one whose previous job still runs."""
    events = []
    for schedule in store.list():
        state = store.state(schedule.name)
        slot = due_slot(schedule, state.last_slot, now)
        if slot is not None:
            event = _run_due(schedule, state, slot, submitter, now)
            store.save_state(schedule.name, state)
            log.info("schedule %s: %s %s", event.schedule, event.action, event.job_id or event.note or "")
            events.append(event)
    return events


def _run_due(schedule: Schedule, state: ScheduleState, slot: float, submitter: Submitter,
             now: float) -> TickEvent:
    """Decide and act on one due slot; updates ``state`` in place."""
    try:
        running = bool(state.last_job_id) and submitter.is_running(state.last_job_id)
    except Exception as e:  # cannot tell whether it still runs: do not risk an overlap, retry next tick
        state.note = f"could not check job {state.last_job_id} at {_iso(now)}: {type(e).__name__}: {e}"
        return TickEvent(schedule.name, "failed", slot, None, state.note)
    if running:
        state.last_slot, state.skipped = slot, state.skipped + 1
        state.note = f"skipped the {_iso(slot)} run: job {state.last_job_id} is still running"
        return TickEvent(schedule.name, "skipped", slot, state.last_job_id, state.note)
    try:
        job_id = submitter.submit(schedule.name, schedule.spec)
    except Exception as e:  # Ray unreachable, root gone: keep the slot due and retry next tick
        state.note = f"submission failed at {_iso(now)}: {type(e).__name__}: {e}"
        return TickEvent(schedule.name, "failed", slot, None, state.note)
    state.last_slot, state.last_job_id, state.last_submitted_at = slot, job_id, now
    state.runs, state.note = state.runs + 1, None
    return TickEvent(schedule.name, "submitted", slot, job_id)


def run_scheduler(store: ScheduleStore, submitter: Submitter, tick_s: float = 30.0, once: bool = False,
                  clock: Callable[[], float] = time.time,
                  stop: threading.Event | None = None) -> list[TickEvent]:
    """Tick every ``tick_s`` seconds until ``stop`` is set (or once); returns every event.

    A stop request is honoured between ticks, never in the middle of a submission, so a job is
    either submitted and recorded in the schedule's state or not submitted at all.
    """
    events: list[TickEvent] = []
    stop = stop or threading.Event()
    while not stop.is_set():
        events += tick(store, submitter, clock())
        if once:
            break
        stop.wait(tick_s)
    return events


class RaySubmitter:
    """Submits through the Ray Jobs API (``pipelines.jobs.submit``) into ``root``.

    After a failed call the client is dropped and made again on the next one, so a restarted
    local head (new port) is found again through its state file.
    """

    def __init__(self, client, root: str, address: str | None = None):
        self._client, self.root, self.address = client, root, address

    @property
    def client(self):
        if self._client is None:
            from pipelines.jobs.submit import JobsClient
            self._client = JobsClient.connect(self.address, start=True)
        return self._client

    def submit(self, schedule: str, spec: dict[str, Any]) -> str:
        from pipelines.jobs.specs import parse_spec
        from pipelines.jobs.submit import submit_spec
        job_spec = parse_spec(spec, f"schedule {schedule}", root=spec.get("root") or self.root)
        try:
            return submit_spec(job_spec, self.client, metadata={"schedule": schedule})
        except OSError:  # cluster gone (requests' ConnectionError is an OSError too)
            self._client = None
            raise

    def is_running(self, job_id: str) -> bool:
        try:
            job = self.client.job(job_id)
        except OSError:  # cluster gone (requests' ConnectionError is an OSError too)
            self._client = None
            raise
        return job is not None and not job.is_terminal


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _fmt_seconds(s: float | None) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s and s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{s:g}s"
