"""Every long-running command is a job kind: its YAML spec validates, runs, and lands in `jobs`.

The specs run through ``run_spec``, the function a submitted Ray job calls (``runspec``), in this
process; ``test_jobs.py`` covers the Ray Jobs API round trip with an ingest job.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.jobs.specs import KINDS, parse_spec, run_spec
from pipelines.jobspec import JobSpecError
from pipelines.score.testing import ClipSpec, add_clips
from storage import Catalog, CorpusRoot

CLIPS = [ClipSpec(f"c{i}", color=c, background=b, seed=i,
                  captions={"alt-text": f"{c} square", "original": f"a {c} square moves right on {b}"})
         for i, (c, b) in enumerate([("red", "blue"), ("green", "white"), ("yellow", "blue"),
                                     ("red", "white"), ("green", "blue"), ("yellow", "white")])]


def test_every_command_of_the_issue_has_a_kind():
    assert {"ingest", "score", "filter", "caption", "dataset", "train-clip", "train-captioner",
            "train-dit"} <= set(KINDS)


def test_bad_specs_fail_before_running(tmp_path):
    with pytest.raises(JobSpecError, match="dedup_threshold"):
        parse_spec({"kind": "score", "root": str(tmp_path), "dedup_threshold": 3})
    with pytest.raises(JobSpecError, match="rule name"):
        parse_spec({"kind": "filter", "root": str(tmp_path), "rules": {"Bad Name": "TRUE"}})
    with pytest.raises(JobSpecError, match="name"):
        parse_spec({"kind": "dataset", "root": str(tmp_path), "where": "TRUE"})
    with pytest.raises(JobSpecError, match="typo_field"):
        parse_spec({"kind": "train-dit", "root": str(tmp_path), "dataset": "d", "typo_field": 1})


def _job(catalog, job_id: str) -> dict:
    rows = catalog.query(f"SELECT * FROM jobs WHERE job_id = '{job_id}'").to_pylist()
    return rows[-1]


def test_score_filter_dataset_and_training_kinds_run_and_record(tmp_path):
    root = tmp_path / "root"
    catalog = Catalog(CorpusRoot.open(root, create=True))
    add_clips(catalog, CLIPS)
    specs = [
        ("score", {"runner": {"kind": "local"}, "threads": 1, "n_frames": 4, "dedup_threshold": 0.99999}),
        ("filter", {"rules": {"has_motion": "motion > 0", "not_black": "black < 0.5"}}),
        ("dataset", {"name": "all", "where": "TRUE"}),
        ("train-clip", {"out": str(tmp_path / "clip.pt"), "steps": 2, "batch_size": 4,
                        "frames_per_clip": 2, "threads": 1}),
        ("train-captioner", {"where": "TRUE", "max_steps": 2, "val_fraction": 0.3,
                             "out": str(tmp_path / "captioner")}),
        ("train-dit", {"dataset": "all", "steps": 2, "max_frames": 5, "max_pixels": 32 * 32,
                       "token_budget": 256, "threads": 1, "run_id": "kinds-dit"}),
    ]
    for kind, fields in specs:
        spec = parse_spec({"kind": kind, **fields}, root=str(root))
        job_id = f"{kind}-test"
        summary = run_spec(spec, job_id)
        job = _job(catalog, job_id)
        assert job["status"] == "succeeded", (kind, job["error"])
        assert job["kind"] == kind and summary, kind
        assert Path(root, "jobs", job_id, "summary.txt").read_text() == summary
    assert Path(tmp_path / "clip.pt").exists()
    assert Path(root, "shards", "all", "manifest.json").exists()
    assert Path(tmp_path, "captioner", "latest").exists()
    assert list(Path(root, "models", "dit", "kinds-dit").glob("ckpt-*.pt"))


def test_a_failing_job_is_recorded_failed(tmp_path):
    root = tmp_path / "root"
    catalog = Catalog(CorpusRoot.open(root, create=True))
    spec = parse_spec({"kind": "dataset", "name": "none", "sql": "SELECT clip_id FROM no_such_table"},
                      root=str(root))
    with pytest.raises(Exception):
        run_spec(spec, "dataset-fails")
    job = _job(catalog, "dataset-fails")
    assert job["status"] == "failed" and "no_such_table" in job["error"]


def test_curate_runs_ingest_captions_clip_score_and_filter_as_one_job(tmp_path):
    from pipelines.synth import render_world
    world, root = tmp_path / "world", tmp_path / "root"
    render_world(world, n_videos=3, seed=1, duration_s=4.0, max_side=160, progress=False)
    spec = parse_spec({
        "kind": "curate", "sources": [str(world)],
        "ingest": {"runner": {"kind": "local"}, "detector": {"name": "content"}},
        "captions": [{"synth_world": str(world)}],
        "train_clip": {"out": str(tmp_path / "clip.pt"), "steps": 3, "batch_size": 4, "frames_per_clip": 2},
        "score": {"runner": {"kind": "local"}, "threads": 1, "n_frames": 2},
    }, root=str(root))
    summary = run_spec(spec, "curate-test")
    catalog = Catalog(CorpusRoot.open(root))
    jobs = {r["job_id"]: r["status"] for r in catalog.query("SELECT job_id, status FROM jobs").to_pylist()}
    assert {jobs[j] for j in ("curate-test", "curate-test.ingest", "curate-test.train-clip",
                              "curate-test.score", "curate-test.filter")} == {"succeeded"}
    assert "filter job" in summary and "score job" in summary and "ingest job" in summary
    scored = catalog.query("SELECT count(*) AS n FROM clips_v WHERE motion IS NOT NULL").to_pylist()[0]["n"]
    assert scored == catalog.query("SELECT count(*) AS n FROM clips").to_pylist()[0]["n"] > 0
    with pytest.raises(JobSpecError, match="exactly one of"):
        parse_spec({"kind": "curate", "sources": ["x"], "captions": [{"source": "alt-text"}]}, root=str(root))
