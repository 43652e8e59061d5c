"""Importing existing text: per-clip or per-video keys, unmatched rows reported, bad files refused."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines.captions_import import CaptionImportError, import_captions
from pipelines.cli import app
from pipelines.score.testing import ClipSpec, add_clips
from storage import Catalog, CorpusRoot


@pytest.fixture()
def catalog(tmp_path):
    catalog = Catalog(CorpusRoot.open(tmp_path / "root", create=True))
    add_clips(catalog, [ClipSpec("a"), ClipSpec("b", color="green", seed=1)])
    return catalog


def test_video_keyed_text_reaches_every_clip_of_the_video(catalog, tmp_path):
    clips = catalog.query("SELECT c.clip_id, c.video_id, v.uri FROM clips c JOIN videos v USING (video_id) "
                          "ORDER BY clip_id").to_pylist()
    path = tmp_path / "alt.jsonl"
    path.write_text("\n".join(json.dumps({"video_id": c["video_id"], "text": f"text of {c['video_id']}"})
                              for c in clips[:1]) + "\n" + json.dumps({"video_id": "nope", "text": "x"}) + "\n")
    result = import_captions(catalog, path)
    assert result.rows == 2 and result.unmatched == ["nope"]
    got = catalog.query("SELECT clip_id, text FROM captions WHERE source = 'alt-text'").to_pylist()
    same_video = [c["clip_id"] for c in clips if c["video_id"] == clips[0]["video_id"]]
    assert sorted(r["clip_id"] for r in got) == sorted(same_video) and result.captions_written == len(same_video)


def test_clip_keyed_csv_through_the_cli(catalog, tmp_path):
    clip_id = catalog.query("SELECT min(clip_id) AS c FROM clips").to_pylist()[0]["c"]
    path = tmp_path / "seed.csv"
    path.write_text(f'clip_id,text\n{clip_id},"a red square moves right, over blue"\n')
    out = CliRunner().invoke(app, ["captions", "import", str(path), "--root", catalog.root.url,
                                   "--source", "original"])
    assert out.exit_code == 0, out.output
    assert "1 'original' captions written" in out.output
    rows = catalog.query("SELECT text FROM captions WHERE source = 'original'").to_pylist()
    assert rows == [{"text": "a red square moves right, over blue"}]


def test_a_file_without_key_or_text_is_refused_with_the_columns(catalog, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,caption\nx,y\n")
    with pytest.raises(CaptionImportError, match="needs a `text` column.*name, caption"):
        import_captions(catalog, path)
    out = CliRunner().invoke(app, ["captions", "import", str(tmp_path / "none.csv"), "--root", catalog.root.url])
    assert out.exit_code != 0 and "not found" in out.output
