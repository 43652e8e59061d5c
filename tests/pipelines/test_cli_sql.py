"""The sql and tables commands: formats, exit code 2 with DuckDB's reason, corrupt parts listed."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from pipelines.cli import app
from storage import Catalog, CorpusRoot


def _root(tmp_path):
    cat = Catalog(CorpusRoot.open(tmp_path / "root", create=True))
    cat.append("clips", [dict(clip_id=f"c{i}", video_id="v", duration_s=float(i)) for i in range(5)])
    return cat


def test_sql_formats_and_out_file(tmp_path):
    cat = _root(tmp_path)
    r = CliRunner().invoke(app, ["sql", "--root", cat.root.path, "SELECT count(*) AS n FROM clips"])
    assert r.exit_code == 0 and "5" in r.output and "(1 row)" in r.output
    r = CliRunner().invoke(app, ["sql", "--root", cat.root.path, "--format", "json",
                                 "SELECT clip_id FROM clips WHERE duration_s > 2 ORDER BY 1"])
    assert [json.loads(x)["clip_id"] for x in r.output.splitlines()] == ["c3", "c4"]
    out = tmp_path / "r.parquet"
    r = CliRunner().invoke(app, ["sql", "--root", cat.root.path, "--format", "parquet", "--out", str(out),
                                 "SELECT * FROM clips"])
    assert r.exit_code == 0 and out.stat().st_size > 0


def test_malformed_sql_exits_2_with_duckdbs_reason_and_changes_nothing(tmp_path):
    cat = _root(tmp_path)
    parts = cat.parts("clips")
    r = CliRunner().invoke(app, ["sql", "--root", cat.root.path, "SELEC clip_id FROM clips"])
    assert r.exit_code == 2 and "syntax error" in r.output
    r = CliRunner().invoke(app, ["sql", "--root", cat.root.path, "DELETE FROM clips"])
    assert r.exit_code == 2 and "read-only" in r.output
    assert cat.parts("clips") == parts
    assert cat.query("SELECT count(*) AS n FROM clips").to_pylist()[0]["n"] == 5


def test_missing_root_is_one_clear_line(tmp_path):
    r = CliRunner().invoke(app, ["sql", "--root", str(tmp_path / "nope"), "SELECT 1"])
    assert r.exit_code == 2 and "does not exist" in r.output and len(r.output.strip().splitlines()) == 1


def test_tables_lists_schemas_counts_and_corrupt_parts(tmp_path):
    cat = _root(tmp_path)
    bad = cat.root.join("catalog", "clips", "part-bad-000001.parquet")
    with open(bad, "wb") as f:
        f.write(b"not parquet")
    r = CliRunner().invoke(app, ["tables", "--root", cat.root.path])
    assert r.exit_code == 0
    assert "clips  (5 rows" in r.output and "CORRUPT PARTS (1" in r.output and "part-bad-000001" in r.output
    assert "corpus_v" in r.output
