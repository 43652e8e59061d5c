"""Schedules: catch up once after downtime, never overlap, persist under the root, run on Ray.

The pure parts (``due_slot``, ``tick`` with a fake submitter and a fake clock) need no Ray; the
last test runs ``vidcorpus scheduler`` for ~30 s against the session's local Ray head (shared with
test_jobs.py through the head's state file, stopped at the end whatever happened).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.jobs.schedules import (Schedule, ScheduleStore, due_slot, parse_every, run_scheduler)
from pipelines.jobs.submit import JobsClient
from pipelines.jobspec import JobSpecError
from pipelines.synth.oddities import GOOD_SPECS, write_video
from storage import CorpusRoot

SPEC = {"kind": "ingest", "root": "/r", "sources": ["/v"]}


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


# ---------------------------------------------------------------- catch up once (pure)
def test_interval_runs_at_creation_then_every_period():
    s = Schedule(name="s", every_s=10, spec=SPEC, created_at=100.0)
    assert due_slot(s, None, 99.0) is None
    assert due_slot(s, None, 100.0) == 100.0
    assert due_slot(s, 100.0, 109.9) is None
    assert due_slot(s, 100.0, 110.0) == 110.0


def test_missed_interval_slots_collapse_into_one_run():
    s = Schedule(name="s", every_s=10, spec=SPEC, created_at=0.0)
    assert due_slot(s, 10.0, 75.0) == 70.0  # slots 20..70 were missed: run once, for the latest
    assert due_slot(s, 70.0, 75.0) is None  # and not again until the next slot
    assert due_slot(s, 70.0, 80.0) == 80.0


def test_cron_catches_up_once_and_ignores_slots_before_creation():
    s = Schedule(name="c", cron="*/5 * * * *", spec=SPEC, created_at=ts("2026-01-01T12:00:30"))
    assert due_slot(s, None, ts("2026-01-01T12:04:59")) is None  # 12:00 is before creation
    assert due_slot(s, None, ts("2026-01-01T12:05:01")) == ts("2026-01-01T12:05:00")
    down = due_slot(s, ts("2026-01-01T12:05:00"), ts("2026-01-01T13:31:00"))
    assert down == ts("2026-01-01T13:30:00")  # 17 missed slots → one run


class FakeCluster:
    """Jobs that take ``duration_s`` of fake time; records submissions."""

    def __init__(self, clock, duration_s: float):
        self.clock, self.duration_s = clock, duration_s
        self.runs: list[tuple[str, float, float]] = []  # (job id, start, end)

    def submit(self, schedule: str, spec: dict) -> str:
        job_id = f"{schedule}-{len(self.runs)}"
        self.runs.append((job_id, self.clock(), self.clock() + self.duration_s))
        return job_id

    def is_running(self, job_id: str) -> bool:
        return any(j == job_id and start <= self.clock() < end for j, start, end in self.runs)


def fake_scheduler(store, cluster, now: list[float], until: float, tick_s: float = 1.0) -> list:
    events = []
    while now[0] < until:
        events += run_scheduler(store, cluster, once=True, clock=lambda: now[0])
        now[0] += tick_s
    return events


@pytest.fixture()
def store(tmp_path) -> ScheduleStore:
    return ScheduleStore(CorpusRoot.open(tmp_path / "root", create=True))


def test_scheduler_skips_while_running_and_catches_up_once_after_downtime(store):
    now = [1000.0]
    cluster = FakeCluster(lambda: now[0], duration_s=15)
    store.add(Schedule(name="s", every_s=10, spec=SPEC, created_at=1000.0))
    events = fake_scheduler(store, cluster, now, until=1060.0)
    starts = [start for _, start, _ in cluster.runs]
    assert starts == [1000.0, 1020.0, 1040.0]  # 1010, 1030, 1050 skipped: the previous job ran
    assert [e.action for e in events] == ["submitted", "skipped"] * 3
    assert all(prev_end <= start for (_, _, prev_end), (_, start, _) in zip(cluster.runs, cluster.runs[1:]))
    now[0] = 1200.5  # the scheduler was down for 140 s (14 slots)
    events = fake_scheduler(store, cluster, now, until=1205.0)
    assert [(e.action, e.slot) for e in events] == [("submitted", 1200.0)]
    state = store.state("s")
    assert state.runs == 4 and state.skipped == 3 and state.last_job_id == "s-3"


def test_unknown_job_state_never_risks_an_overlap(store):
    class Unreachable(FakeCluster):
        def is_running(self, job_id):
            raise ConnectionError("cluster gone")

    now = [0.0]
    cluster = Unreachable(lambda: now[0], duration_s=1)
    store.add(Schedule(name="s", every_s=10, spec=SPEC, created_at=0.0))
    fake_scheduler(store, cluster, now, until=1.0)  # first run: nothing to check, submitted
    now[0] = 10.0
    events = fake_scheduler(store, cluster, now, until=12.0)
    assert [e.action for e in events] == ["failed", "failed"] and len(cluster.runs) == 1
    assert "could not check job s-0" in store.state("s").note  # and the slot stays due


def test_store_persists_schedules_and_state(store, tmp_path):
    store.add(Schedule(name="nightly", cron="0 3 * * *", spec=SPEC))
    with pytest.raises(JobSpecError, match="exists"):
        store.add(Schedule(name="nightly", every_s=60, spec=SPEC))
    assert [s.name for s in store.list()] == ["nightly"]
    run_scheduler(store, FakeCluster(time.time, 1), once=True)
    files = sorted(os.listdir(tmp_path / "root" / "schedules"))
    assert files == ["nightly.yaml"]  # not due yet: no state written
    assert yaml.safe_load((tmp_path / "root" / "schedules" / "nightly.yaml").read_text())["cron"] == "0 3 * * *"
    store.remove("nightly")
    assert store.list() == []
    with pytest.raises(JobSpecError, match="no schedule"):
        store.remove("../../etc")


def test_rules_are_validated():
    assert parse_every("15m") == 900 and parse_every("30s") == 30 and parse_every("2h") == 7200
    for bad in ("0", "-5m", "15 minutes", ""):
        with pytest.raises(JobSpecError):
            parse_every(bad)
    with pytest.raises(ValueError, match="exactly one"):
        Schedule(name="x", spec=SPEC)
    with pytest.raises(ValueError, match="not a cron rule"):
        Schedule(name="x", cron="every day", spec=SPEC)
    with pytest.raises(ValueError, match="letters"):
        Schedule(name="../x", every_s=1, spec=SPEC)


# ---------------------------------------------------------------- on a real Ray head (conftest.py)

def test_scheduler_on_ray_runs_twice_without_overlap(ray_head, ray_home, tmp_path):
    videos, root = tmp_path / "videos", tmp_path / "root"
    videos.mkdir()
    write_video(videos / GOOD_SPECS[0].name, GOOD_SPECS[0])
    spec = tmp_path / "ingest.yaml"
    spec.write_text(yaml.safe_dump({"kind": "ingest", "sources": [str(videos)],
                                    "config": {"detector": {"name": "content"}, "runner": {"kind": "local"}}}))
    runner = CliRunner()
    for name, every in (("every10s", "10s"), ("every2s", "2s")):  # 2 s: shorter than a job
        result = runner.invoke(app, ["schedule", "add", name, str(spec), "--every", every, "--root", str(root)])
        assert result.exit_code == 0, result.output
    env = {**os.environ, "VIDCORPUS_HOME": str(ray_home)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "scheduler", "--root", str(root), "--tick", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(30)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
    assert "scheduler: stopped" in output, output
    client = JobsClient.connect()
    jobs = wait_all_terminal(client, str(root))
    store = ScheduleStore(CorpusRoot.open(root))
    for name in ("every10s", "every2s"):
        runs = sorted((j for j in jobs if j.metadata.get("schedule") == name), key=lambda j: j.start_time)
        assert store.state(name).runs == len(runs)
        assert all(prev.end_time <= nxt.start_time for prev, nxt in zip(runs, runs[1:])), name
        assert all(j.status == "SUCCEEDED" for j in runs), [(j.job_id, j.status, j.message) for j in runs]
    assert store.state("every10s").runs >= 2
    assert store.state("every2s").skipped >= 1  # its jobs outlast 2 s, so due runs were skipped


def wait_all_terminal(client: JobsClient, root: str, timeout_s: float = 90) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [j for j in client.jobs() if (j.metadata or {}).get("root") == root]
        if all(j.is_terminal for j in jobs):
            return jobs
        time.sleep(1)
    raise TimeoutError("scheduled jobs did not finish")
