"""The dashboard's own query and media functions refuse anything but reading inside the root.

SQL goes through ``dashboards.data`` (the functions the SQL and Clips pages call), which must
refuse writes, ATTACH, INSTALL/LOAD, COPY, settings and files outside the catalog. Media goes
through ``dashboards.media``: only files inside the root, whatever ``..``, absolute paths, URLs or
symlinks say. (The browser test drives the SQL page once with a file read.)
"""
from __future__ import annotations

import os

import pytest

from dashboards import data
from dashboards.media import MediaError, read_media, resolve_media
from storage import Catalog, CorpusRoot, SQLError

REFUSED_SQL = [
    "INSERT INTO clips (clip_id, video_id) VALUES ('x', 'y')",
    "UPDATE clips SET fps = 1",
    "DELETE FROM clips",
    "DROP VIEW clips",
    "CREATE TABLE t AS SELECT 1",
    "ATTACH '{outside}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "COPY (SELECT * FROM clips) TO '{outside}/leak.csv'",
    "EXPORT DATABASE '{outside}/dump'",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "SELECT 1; DROP VIEW clips",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv_auto('{outside}/secret.csv')",
    "SELECT * FROM read_parquet('{outside}/*.parquet')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM '{outside}/secret.csv'",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("sec")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("secret\nhunter2\n")
    (outside / "secret.mp4").write_bytes(b"not yours")
    root = CorpusRoot.open(base / "root", create=True)
    catalog = Catalog(root)
    catalog.append("videos", [dict(video_id="ab12", uri="/src/a.mp4", status="ok", duration_s=4.0)])
    catalog.append("clips", [dict(clip_id="c1", video_id="ab12", start_s=0.0, end_s=2.0, duration_s=2.0,
                                  width=64, height=48, fps=24.0, uri="clips/ab/c1.mp4")])
    root.put_bytes("clips/ab/c1.mp4", b"\x00\x00\x00\x18ftypmp42")
    return root, outside


def test_reads_work(root):
    r, _ = root
    assert data.run_sql(r.uri(), "SELECT count(*) AS n FROM clips")["n"].tolist() == [1]
    assert data.filter_clips(r.uri(), "width = 64")["clip_id"].tolist() == ["c1"]


@pytest.mark.parametrize("sql", REFUSED_SQL)
def test_sql_refuses_writes_extensions_and_outside_files(root, sql):
    r, outside = root
    with pytest.raises(SQLError) as err:
        data.run_sql(r.uri(), sql.format(outside=outside))
    assert "hunter2" not in str(err.value)
    assert sorted(os.listdir(outside)) == ["secret.csv", "secret.mp4"]  # nothing written out there
    assert data.run_sql(r.uri(), "SELECT count(*) AS n FROM clips")["n"].tolist() == [1]  # still intact


@pytest.mark.parametrize("where", [
    "TRUE; DROP VIEW clips",
    "TRUE) UNION ALL SELECT * FROM read_csv('/etc/passwd') --",
    "clip_id IN (SELECT * FROM read_text('/etc/passwd'))",
])
def test_clip_filter_cannot_escape_the_read_only_path(root, where):
    r, _ = root
    with pytest.raises(SQLError):
        data.filter_clips(r.uri(), where)


def test_media_inside_the_root_is_served(root):
    r, _ = root
    payload, mime = read_media(r, "clips/ab/c1.mp4")
    assert payload.startswith(b"\x00\x00\x00\x18ftyp") and mime == "video/mp4"
    assert read_media(r, "catalog/../clips/ab/c1.mp4")[0] == payload  # `..` that stays inside is fine


@pytest.mark.parametrize("path", [
    "../../etc/passwd",
    "../outside/secret.mp4",
    "clips/../../outside/secret.mp4",
    "/etc/passwd",
    "{outside}/secret.mp4",
    "file:///etc/passwd",
    "s3://bucket/clip.mp4",
    "~/clip.mp4",
    "clips/ab/c1.mp4\x00.png",
    "",
    "catalog/clips",  # not a media file
])
def test_media_outside_the_root_is_refused(root, path):
    r, outside = root
    with pytest.raises(MediaError, match="refused"):
        read_media(r, path.format(outside=outside))


def test_symlink_out_of_the_root_is_refused(root):
    r, outside = root
    link = os.path.join(r.path, "clips", "ab", "link.mp4")
    os.symlink(outside / "secret.mp4", link)
    try:
        with pytest.raises(MediaError, match="outside"):
            resolve_media(r, "clips/ab/link.mp4")
    finally:
        os.remove(link)


def test_missing_media_says_so(root):
    r, _ = root
    with pytest.raises(MediaError, match="no such file"):
        read_media(r, "clips/ab/nope.mp4")


def test_run_folders_are_only_read_by_plain_names(root):
    r, _ = root
    assert data.run_metrics(r.uri(), "../../etc").empty
    assert data.run_samples(r.uri(), "../outside") == []
