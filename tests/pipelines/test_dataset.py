"""Datasets: SQL selections written as shards — deterministic, caption choice, catalog records."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.dataset import DatasetError, DatasetSpec, create_dataset, show_dataset
from pipelines.score.testing import ClipSpec, add_clips
from storage import Catalog, CorpusRoot
from storage.shards import load_index, read_shards

SPECS = [
    ClipSpec("alt-only", captions={"alt-text": "red box"}),
    ClipSpec("with-original", color="green", seed=1,
             captions={"alt-text": "green box", "original": "a green square slides right"}),
    ClipSpec("captioned", color="yellow", seed=2, captions={"alt-text": "yellow", "original": "a yellow square"}),
    ClipSpec("rejected", color="white", seed=3, captions={"alt-text": "white box"}),
    ClipSpec("no-caption", color="gray", seed=4),
]


@pytest.fixture
def catalog(tmp_path) -> tuple[Catalog, dict[str, str]]:
    catalog = Catalog(CorpusRoot.open(tmp_path / "root", create=True))
    ids = {s.name: c["clip_id"] for s, c in zip(SPECS, add_clips(catalog, SPECS))}
    later = datetime.now(timezone.utc) + timedelta(seconds=1)
    catalog.append("captions", [dict(clip_id=ids["captioned"], source="captioner:ckpt-1", model="ckpt-1",
                                     text="A small yellow square moves right over a blue background.",
                                     created_at=later)])
    catalog.append("scores", [dict(clip_id=i, name="clip_text", scorer="m", value=0.25 + 0.1 * k)
                              for k, i in enumerate(ids.values())])
    catalog.append("rejections", [dict(clip_id=ids["rejected"], stage="filter:x", reason="low_clip_score")])
    return catalog, ids


def _files(directory: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir())
            if p.suffix in (".tar", ".parquet")}


def test_same_dataset_twice_gives_byte_identical_shards_and_index(catalog):
    catalog, ids = catalog
    spec = DatasetSpec("demo", where="clip_text >= 0.2", max_count=2)
    first = create_dataset(catalog, spec)
    files = _files(catalog.root.join("shards", "demo"))
    second = create_dataset(catalog, spec)
    assert _files(catalog.root.join("shards", "demo")) == files
    assert sorted(files) == ["demo-000000.tar", "demo-000001.tar", "index.parquet"]
    assert first["extra"]["catalog_state"]["tables"]["clips"]["rows"] == 5
    assert second["extra"]["catalog_state"]["hash"] == first["extra"]["catalog_state"]["hash"]
    assert first["extra"]["selection_sql"].endswith("ORDER BY clip_id")


def test_samples_exclude_rejected_and_pick_the_newest_caption(catalog):
    catalog, ids = catalog
    manifest = create_dataset(catalog, DatasetSpec("demo", where="TRUE"))
    out = catalog.root.join("shards", "demo")
    samples = {s["__key__"]: s for s in read_shards(out)}
    assert set(samples) == set(ids.values()) - {ids["rejected"]}
    assert list(load_index(out)["key"].to_pylist()) == sorted(samples)  # ordered by clip_id
    assert samples[ids["captioned"]]["txt"].startswith("A small yellow square")
    assert samples[ids["with-original"]]["txt"] == "a green square slides right"
    assert samples[ids["alt-only"]]["txt"] == "red box" and samples[ids["no-caption"]]["txt"] == ""
    variants = samples[ids["captioned"]]["captions.json"]
    assert [v["source"] for v in variants] == ["alt-text", "captioner:ckpt-1", "original"]
    meta = samples[ids["alt-only"]]["json"]
    assert meta["uri"] == "/sources/alt-only.mp4" and meta["scores"]["clip_text"] == pytest.approx(0.25)
    assert meta["caption_source"] == "alt-text"
    assert samples[ids["alt-only"]]["mp4"][4:8] == b"ftyp"
    assert manifest["extra"]["without_caption"] == 1


def test_catalog_records_and_include_rejected(catalog):
    catalog, ids = catalog
    manifest = create_dataset(catalog, DatasetSpec("all", sql="SELECT clip_id FROM clips", include_rejected=True))
    assert manifest["n_samples"] == 5
    row = catalog.query("SELECT * FROM datasets WHERE dataset = 'all'").to_pylist()[0]
    assert row["n_samples"] == 5 and row["catalog_state"] == manifest["extra"]["catalog_state"]["hash"]
    samples = catalog.query("SELECT * FROM shard_samples WHERE dataset = 'all'").to_pylist()
    assert sorted(s["clip_id"] for s in samples) == sorted(ids.values())
    assert {s["shard"] for s in samples} == {"all-000000.tar"}
    create_dataset(catalog, DatasetSpec("all", sql=f"SELECT clip_id FROM clips WHERE clip_id = '{ids['captioned']}'"))
    info = show_dataset(catalog, "all")
    assert info["manifest"]["n_samples"] == 1
    assert info["caption_sources"] == [{"caption_source": "captioner:ckpt-1", "n": 1}]


def test_bad_definitions_are_refused_with_the_columns(catalog):
    catalog, _ = catalog
    with pytest.raises(DatasetError, match="exactly one"):
        DatasetSpec("x", where="TRUE", sql="SELECT clip_id FROM clips")
    with pytest.raises(DatasetError, match="dataset name"):
        DatasetSpec("bad.name", where="TRUE")
    with pytest.raises(DatasetError, match="Columns of corpus_v") as err:
        create_dataset(catalog, DatasetSpec("x", where="no_such_column > 1"))
    assert "caption_source" in str(err.value)
    assert not Path(catalog.root.join("shards", "x", "manifest.json")).exists()


def test_cli_dataset_create_list_show(catalog):
    from pipelines.cli import app
    catalog, _ = catalog
    runner = CliRunner()
    root = ["--root", catalog.root.url]
    created = runner.invoke(app, ["dataset", "create", "clean", *root, "--where", "clip_text > 0.3"])
    assert created.exit_code == 0, created.output
    assert "dataset clean: 3 samples in 1 shard(s)" in created.output
    listed = runner.invoke(app, ["dataset", "list", *root])
    assert listed.exit_code == 0 and "clean" in listed.output
    shown = runner.invoke(app, ["dataset", "show", "clean", *root])
    assert shown.exit_code == 0 and json.loads(shown.output)["definition"]["where"] == "clip_text > 0.3"
    missing = runner.invoke(app, ["dataset", "show", "nope", *root])
    assert missing.exit_code == 2 and "known: clean" in missing.output
