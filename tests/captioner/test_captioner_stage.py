"""The caption stage and CLI over a real catalog: rows written, reruns skip, bad clips rejected."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from captioner.registry import load_config
from pipelines.caption_stage import CaptionJobConfig, run_caption_job
from pipelines.cli import app
from storage import Catalog, CorpusRoot

from .conftest import MICRO


@pytest.fixture()
def catalog(synth_items, tmp_path) -> Catalog:
    """A corpus root whose catalog lists 4 synthetic clips (with 'original' captions) + 1 broken."""
    cat = Catalog(CorpusRoot.open(tmp_path / "root", create=True))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    clips = [(f"clip{i}", it.path, it.caption) for i, it in enumerate(synth_items[:4])]
    clips.append(("clip_broken", str(broken), "A broken clip."))
    cat.append("clips", [dict(clip_id=c, video_id="v" + c, uri=uri) for c, uri, _ in clips])
    cat.append("captions", [dict(clip_id=c, source="original", text=t) for c, _, t in clips])
    return cat


def _captions(cat: Catalog, prefix: str) -> list[dict]:
    return cat.query(f"SELECT clip_id, source, text FROM captions WHERE source LIKE '{prefix}%' "
                     "ORDER BY clip_id").to_pylist()


def test_caption_job_writes_rows_rejects_bad_clips_and_reruns_skip(catalog, micro_run):
    config = CaptionJobConfig(root=catalog.root.url, model=str(micro_run), runner="local",
                              batch_size=2, where="clip_id <> 'clip3'")
    first = run_caption_job(config)
    assert first.source == "captioner:micro@step6"
    assert first.captioned == 3 and first.skipped == 0 and first.dropped == {"decode_error": 1}
    rows = _captions(catalog, "captioner:")
    assert [r["clip_id"] for r in rows] == ["clip0", "clip1", "clip2"]
    assert all(r["source"] == first.source and isinstance(r["text"], str) for r in rows)
    rejected = catalog.query("SELECT clip_id, stage, reason FROM rejections").to_pylist()
    assert rejected == [{"clip_id": "clip_broken", "stage": "caption", "reason": "decode_error"}]
    again = run_caption_job(config)
    assert again.captioned == 0 and again.skipped == 3
    assert len(_captions(catalog, "captioner:")) == 3
    job = catalog.query(f"SELECT status FROM jobs WHERE job_id = '{again.job_id}'").to_pylist()
    assert job == [{"status": "succeeded"}]


def test_cli_trains_from_the_catalog_then_captions(catalog, tmp_path):
    config = tmp_path / "micro.json"
    config.write_text(json.dumps(load_config("tiny", **MICRO).model_dump()))
    root, out = catalog.root.url, tmp_path / "cli-run"
    runner = CliRunner()
    res = runner.invoke(app, ["train-captioner", "--root", root, "--config", str(config),
                              "--where", "clip_id <> 'clip_broken'", "--max-steps", "2",
                              "--out", str(out), "--val-fraction", "0.3"])
    assert res.exit_code == 0, res.output
    assert "trained 2 steps" in res.output and (out / "latest").exists()
    res = runner.invoke(app, ["caption", "--root", root, "--model", str(out), "--runner", "local",
                              "--where", "clip_id <> 'clip_broken'"])
    assert res.exit_code == 0, res.output
    assert "4 clips captioned" in res.output
    assert len(_captions(catalog, "captioner:cli-run@step2")) == 4
    res = runner.invoke(app, ["caption", "--root", root, "--runner", "local"])
    assert res.exit_code == 2 and "exactly one of --model" in res.output


def test_caption_job_scores_captions_with_a_clip_model(catalog, micro_run):
    config = CaptionJobConfig(root=catalog.root.url, model=str(micro_run), runner="local",
                              where="clip_id IN ('clip0', 'clip1')", clip_model="vidcorpus-clip-tiny")
    assert run_caption_job(config).captioned == 2
    scores = [r["clip_score"] for r in catalog.query("SELECT clip_score FROM captions "
                                                     "WHERE source LIKE 'captioner:%'").to_pylist()]
    assert len(scores) == 2 and all(isinstance(s, float) and -1.0 <= s <= 1.0 for s in scores)
