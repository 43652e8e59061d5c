"""Catalog: appends, latest-write-wins views, concurrency, SIGKILL safety, corrupt parts, sandbox."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from storage import Catalog, CorpusRoot, ReadOnlyError, RootError, SQLError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture()
def cat(tmp_path):
    return Catalog(CorpusRoot.open(tmp_path / "root", create=True))


def _clips(n, start=0, **extra):
    return [dict(clip_id=f"c{i:06d}", video_id=f"v{i % 7}", duration_s=float(i % 30), **extra)
            for i in range(start, start + n)]


def test_rewriting_keys_shows_each_key_once_latest_wins(cat):
    cat.append("clips", _clips(50, fps=24.0))
    cat.append("clips", _clips(50, fps=30.0))
    rows = cat.query("SELECT fps, count(*) AS n FROM clips GROUP BY fps").to_pylist()
    assert rows == [{"fps": 30.0, "n": 50}]
    assert len(cat.parts("clips")) == 2


def test_scores_pivot_and_caption_selection(cat):
    cat.append("clips", _clips(3))
    cat.append("scores", [dict(clip_id="c000001", name="motion", scorer="m", value=0.2)])
    cat.append("scores", [dict(clip_id="c000001", name="motion", scorer="m", value=0.7)])
    cat.append("captions", [dict(clip_id="c000001", source="alt-text", text="red ball"),
                            dict(clip_id="c000001", source="original", text="a red ball"),
                            dict(clip_id="c000001", source="captioner:ck1", text="A large red circle")])
    cat.append("rejections", [dict(clip_id="c000002", stage="filter", reason="too_short")])
    rows = {r["clip_id"]: r for r in cat.query("SELECT * FROM corpus_v").to_pylist()}
    assert rows["c000001"]["motion"] == pytest.approx(0.7)
    assert rows["c000001"]["caption"] == "A large red circle"
    assert rows["c000001"]["alt_text"] == "red ball"
    assert rows["c000002"]["rejected"] and rows["c000002"]["rejection_reasons"] == "too_short"
    assert rows["c000000"]["motion"] is None and not rows["c000000"]["rejected"]


def test_bad_rows_are_refused_with_column_names(cat):
    with pytest.raises(ValueError, match="no column"):
        cat.append("clips", [dict(clip_id="x", video_id="v", colour="red")])
    with pytest.raises(ValueError, match="required"):
        cat.append("clips", [dict(clip_id=None, video_id="v")])
    with pytest.raises(ValueError, match="unknown catalog table"):
        cat.append("nope", [])


def _appender_script(root, n_parts, rows_per_part, tag, sleep=0.0):
    return textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        from storage import Catalog, CorpusRoot
        cat = Catalog(CorpusRoot.open({str(root)!r}))
        for p in range({n_parts}):
            cat.append("scores", [dict(clip_id=f"{tag}-{{p}}-{{i}}", name="motion", scorer="{tag}",
                                       value=float(i)) for i in range({rows_per_part})])
            print(p, flush=True)
            time.sleep({sleep})
    """)


def test_two_processes_appending_at_once_lose_no_rows(cat, tmp_path):
    root = cat.root.path
    procs = [subprocess.Popen([sys.executable, "-c", _appender_script(root, 20, 500, tag)],
                              stdout=subprocess.DEVNULL) for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    rows = cat.query("SELECT scorer, count(*) AS n, count(DISTINCT clip_id) AS d FROM scores "
                     "GROUP BY scorer ORDER BY scorer").to_pylist()
    assert rows == [{"scorer": "a", "n": 10000, "d": 10000}, {"scorer": "b", "n": 10000, "d": 10000}]


def test_sigkill_mid_append_leaves_views_consistent(cat):
    root = cat.root.path
    proc = subprocess.Popen([sys.executable, "-c", _appender_script(root, 10_000, 20_000, "k")],
                            stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # let it finish a few parts, then kill it mid-write
        proc.stdout.readline()
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_parts = len(cat.parts("scores"))
    n = cat.query("SELECT count(*) AS n FROM scores").to_pylist()[0]["n"]
    assert n_parts >= 3 and n == n_parts * 20_000  # whole parts only, never a partial one
    cat.append("scores", [dict(clip_id="after", name="motion", scorer="k", value=1.0)])
    assert cat.query("SELECT count(*) AS n FROM scores").to_pylist()[0]["n"] == n + 1


def test_corrupt_part_is_skipped_with_warning_and_listed(cat, caplog):
    cat.append("clips", _clips(10))
    good = cat.append("clips", _clips(10, start=10))
    bad = good.replace(".parquet", "-x.parquet")
    with open(bad, "wb") as f:
        f.write(b"PAR1 this is not a parquet file")
    with caplog.at_level("WARNING"):
        n = cat.query("SELECT count(*) AS n FROM clips").to_pylist()[0]["n"]
    assert n == 20
    assert any(os.path.basename(bad) in r.getMessage() for r in caplog.records)
    _, bad_parts = cat.healthy_parts()
    assert [b.path for b in bad_parts] == [bad]


@pytest.mark.parametrize("sql,kind", [
    ("INSERT INTO clips (clip_id, video_id) VALUES ('x', 'y')", ReadOnlyError),
    ("CREATE TABLE t AS SELECT 1", ReadOnlyError),
    ("DROP VIEW clips", ReadOnlyError),
    ("ATTACH '/tmp/evil.db' AS evil", ReadOnlyError),
    ("INSTALL httpfs", ReadOnlyError),
    ("LOAD httpfs", ReadOnlyError),
    ("COPY clips TO '/tmp/out.csv'", ReadOnlyError),
    ("SET enable_external_access = true", ReadOnlyError),
    ("SELECT * FROM read_csv('/etc/passwd')", ReadOnlyError),
    ("SELECT * FROM read_text('/etc/hostname')", ReadOnlyError),
    ("SELECT * FROM glob('/etc/*')", ReadOnlyError),
    ("SELECT 1; SELECT 2", SQLError),
    ("SELEC clip_id FROM clips", SQLError),
    ("SELECT no_such_column FROM clips", SQLError),
])
def test_sql_path_is_read_only(cat, sql, kind):
    cat.append("clips", _clips(3))
    with pytest.raises(kind):
        cat.query(sql)
    assert cat.query("SELECT count(*) AS n FROM clips").to_pylist()[0]["n"] == 3


def test_reading_outside_root_via_traversal_is_refused(cat):
    cat.append("clips", _clips(3))
    outside = os.path.join(cat.root.path, "catalog", "..", "..")
    with pytest.raises(ReadOnlyError):
        cat.query(f"SELECT * FROM read_csv('{outside}/x.csv')")


def test_missing_and_unwritable_roots_say_which_path_and_why(tmp_path):
    with pytest.raises(RootError, match="does not exist"):
        CorpusRoot.open(tmp_path / "missing")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RootError, match="not a directory"):
        CorpusRoot.open(f)
    if os.geteuid() == 0:  # root writes anywhere a normal fs allows: use a read-only one
        ro = "/proc/1"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
    with pytest.raises(RootError, match="not writable"):
        CorpusRoot.open(ro)
