"""Job specs and the Ray Jobs API: validate before submitting, one job id in Ray and the catalog.

The Ray tests share one local head per session (``ray_head`` in conftest.py: started or attached to, the
schedule tests use the same one) and stop it at the end, whatever happened.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.jobs.head import find_head, state_path
from pipelines.jobs.records import job_row, record_outcome, record_submitted, stage_stats
from pipelines.jobs.specs import KINDS, parse_spec
from pipelines.jobs.submit import JobsClient
from pipelines.jobs_record import JobAlreadyEnded, JobRecord
from pipelines.jobspec import JobSpecError
from pipelines.synth.oddities import GOOD_SPECS, write_video
from storage import Catalog, CorpusRoot

FAST_CONFIG = {"detector": {"name": "content"}, "runner": {"kind": "local"}}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("videos")
    for spec in GOOD_SPECS[:2]:  # portrait and ultrawide, one hard cut each
        write_video(out / spec.name, spec)
    return out


def write_spec(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields))
    return path


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


# ---------------------------------------------------------------- validation (no Ray)
def test_ingest_is_registered_and_specs_validate_before_anything_runs(tmp_path):
    assert "ingest" in KINDS
    spec = parse_spec({"kind": "ingest", "sources": ["/v"], "config": FAST_CONFIG}, root=str(tmp_path))
    assert spec.kind == "ingest" and spec.root == str(tmp_path)
    assert parse_spec(spec.to_yaml()).model == spec.model  # round-trips through YAML
    problems = {
        "missing `kind:`": {"sources": ["/v"]},
        "unknown kind 'ingst'; use one of .*ingest": {"kind": "ingst"},
        "config.split.min_clip_s": {"kind": "ingest", "sources": ["/v"], "root": "r",
                                    "config": {"split": {"min_clip_s": -1}}},
        "Extra inputs are not permitted": {"kind": "ingest", "sources": ["/v"], "root": "r", "sorces": 1},
        "no corpus root": {"kind": "ingest", "sources": ["/v"]},
        "`sources:` is empty": {"kind": "ingest", "root": "r"},
    }
    for message, data in problems.items():
        with pytest.raises(JobSpecError, match=message):
            parse_spec(data)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_registered_kind_resolves(kind):
    """Each registry entry names an importable spec model with a root, and a run function."""
    entry = KINDS[kind]
    assert "root" in entry.spec_model().model_fields
    assert callable(entry.run_fn())


def test_bad_spec_exits_2_and_submits_nothing(tmp_path):
    bad = write_spec(tmp_path / "bad.yaml", kind="ingest", sources=["/v"], config={"detector": {"name": "nope"}})
    result = cli("jobs", "submit", str(bad), "--root", str(tmp_path / "root"),
                 env={"VIDCORPUS_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2
    assert "config.detector.name" in result.output and "hybrid" in result.output
    assert not state_path(tmp_path / "home").exists()  # no Ray head was started for it
    assert not (tmp_path / "root").exists()


def test_a_stopped_job_stays_stopped_and_its_late_driver_runs_nothing(tmp_path):
    """The race of ``jobs stop`` on a job Ray had not started: the driver may start anyway."""
    catalog = Catalog(CorpusRoot.open(tmp_path / "root", create=True))
    record_submitted(catalog, "ingest-x", "ingest", "kind: ingest\n")
    assert record_outcome(catalog, "ingest-x", "stopped", "stopped by request")
    with pytest.raises(JobAlreadyEnded, match="already stopped"):
        JobRecord(catalog, "ingest-x", "ingest", {"kind": "ingest"})
    # a driver that had passed that check writes ``running`` later: the row still says stopped
    catalog.append("jobs", [dict(job_id="ingest-x", kind="ingest", status="running", wall_s=0.0)])
    assert job_row(catalog, "ingest-x")["status"] == "stopped"
    # of several ended rows the latest wins, and a job that never ended shows its latest row
    catalog.append("jobs", [dict(job_id="ingest-x", kind="ingest", status="failed", wall_s=1.0)])
    assert job_row(catalog, "ingest-x")["status"] == "failed"
    record = JobRecord(catalog, "ingest-y", "ingest", {"kind": "ingest"})
    assert job_row(catalog, "ingest-y")["status"] == "running"
    record.fail([], "boom")
    assert job_row(catalog, "ingest-y")["status"] == "failed"


# ---------------------------------------------------------------- on a real Ray head
def wait_terminal(client: JobsClient, job_id: str, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if job is not None and job.is_terminal:
            return job
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} did not finish in {timeout_s}s")


def test_ingest_job_succeeds_on_ray_and_lands_in_the_catalog(ray_head, videos, tmp_path):
    root = tmp_path / "root"
    spec = write_spec(tmp_path / "ingest.yaml", kind="ingest", sources=[str(videos)], config=FAST_CONFIG)
    result = cli("jobs", "submit", str(spec), "--root", str(root), "--wait")
    assert result.exit_code == 0, result.output
    job_id = result.output.splitlines()[0].strip()
    client = JobsClient.connect()
    assert client.job(job_id).status == "SUCCEEDED"
    assert client.job(job_id).metadata["kind"] == "ingest"
    catalog = Catalog(CorpusRoot.open(root))
    row = job_row(catalog, job_id)
    assert row["status"] == "succeeded" and row["kind"] == "ingest" and row["finished_at"] is not None
    stages = {s["name"]: s for s in stage_stats(row)}
    assert [stages[n]["n_in"] for n in ("probe", "shots", "extract")] == [2, 2, 2]
    assert stages["extract"]["kept"] == 2
    clips = catalog.query(f"SELECT count(*) AS n FROM clips WHERE job_id = '{job_id}'").to_pylist()[0]["n"]
    assert clips == 4  # two videos, one hard cut each
    assert (root / "jobs" / job_id / "spec.yaml").exists() and (root / "jobs" / job_id / "stats.json").exists()
    listed = cli("jobs", "list", "--root", str(root)).output
    assert job_id in listed and "SUCCEEDED" in listed
    status = cli("jobs", "status", job_id, "--root", str(root)).output
    assert "succeeded" in status and "extract" in status and "ray: SUCCEEDED" in status
    logs = cli("jobs", "logs", job_id, "--root", str(root)).output
    assert "summary.txt" in logs and "pipelines.jobs.runspec" in logs


def test_stopped_job_is_stopped_in_ray_and_the_catalog(ray_head, videos, tmp_path):
    root = tmp_path / "root"
    spec = write_spec(tmp_path / "ingest.yaml", kind="ingest", sources=[str(videos)], config=FAST_CONFIG)
    job_id = cli("jobs", "submit", str(spec), "--root", str(root)).output.splitlines()[0].strip()
    assert job_row(Catalog(CorpusRoot.open(root)), job_id)["status"] == "pending"
    assert "stopping" in cli("jobs", "stop", job_id, "--root", str(root)).output
    assert wait_terminal(JobsClient.connect(), job_id).status == "STOPPED"
    cli("jobs", "status", job_id, "--root", str(root))  # reconciles a row the job could not finish
    assert job_row(Catalog(CorpusRoot.open(root)), job_id)["status"] == "stopped"


def test_the_head_is_found_again_through_its_state_file(ray_head, ray_home):
    found = find_head(ray_home)
    assert found is not None and found.dashboard_url == ray_head.dashboard_url
    assert JobsClient.connect().job("no-such-job") is None
