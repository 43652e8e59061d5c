"""Read-only SQL over the catalog: DuckDB views plus a two-layer sandbox.

Layer 1: only SELECT-like statements (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) run;
writes, ATTACH, INSTALL/LOAD, COPY, SET, PRAGMA, EXPORT are refused by statement type.
Layer 2: DuckDB itself runs with external access disabled and file access allowed only under
``ROOT/catalog/``, with the configuration locked, so ``read_csv('/etc/passwd')`` is refused by
the engine even when hidden inside a SELECT.

Views: ``<table>`` for every catalog table (each key once, latest write wins unless the table's
``current`` order says otherwise), ``clips_v``
(clips + one column per score name + rejection reasons) and ``corpus_v`` (clips_v + alt text
and the selected caption: newest captioner caption, else teacher, else original/alt text).
"""
from __future__ import annotations

import logging
import re

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from storage.schemas import TABLES

log = logging.getLogger(__name__)

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SQLError(ValueError):
    """A query that cannot run: DuckDB's reason is in the message."""


class ReadOnlyError(SQLError):
    """A query that would write, load code, or touch files outside the catalog."""


def open_readonly(catalog) -> duckdb.DuckDBPyConnection:
    """Connect an in-memory DuckDB, define the views over healthy parts, then lock it down."""
    con = duckdb.connect(":memory:")
    good, _bad = catalog.healthy_parts()
    for name, spec in TABLES.items():
        source = _source_sql(con, catalog.root, name, spec, good[name])
        keys = ", ".join(spec.key)
        con.execute(f"CREATE VIEW _src_{name} AS SELECT * FROM {source}")
        con.execute(f"CREATE VIEW _dedup_{name} AS SELECT * FROM _src_{name} "
                    f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {spec.current}) = 1")
        con.execute(f"CREATE VIEW {name} AS SELECT * EXCLUDE (_written_ns) FROM _dedup_{name}")
    _create_clips_v(con)
    _create_corpus_v(con)
    _lock_down(con, catalog)
    return con


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Check then run exactly one read-only statement; returns an Arrow table."""
    check_readonly(con, sql)
    try:
        rel = con.sql(sql)
        return rel.to_arrow_table() if rel is not None else pa.table({})
    except duckdb.PermissionException as e:
        raise ReadOnlyError(f"refused: the SQL path only reads the catalog ({_reason(e)})") from None
    except duckdb.Error as e:
        raise SQLError(_reason(e)) from None


def check_readonly(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise SQLError for SQL that does not parse, ReadOnlyError for anything but one query."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise SQLError(_reason(e)) from None
    if len(statements) != 1:
        raise SQLError(f"expected exactly one SQL statement, got {len(statements)}")
    kind = statements[0].type
    if kind not in ALLOWED:
        raise ReadOnlyError(f"refused: the catalog is read-only here and {kind.name} statements "
                            "cannot run (only SELECT queries; export results with --format/--out)")


def _reason(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _source_sql(con, root, name: str, spec, parts: list[str]) -> str:
    """A FROM-able expression with the table's stored columns, over its healthy parts."""
    schema = spec.stored_schema
    if not parts:
        con.register(f"_empty_{name}", schema.empty_table())
        return f"_empty_{name}"
    if root.is_local:
        files = ", ".join("'" + p.replace("'", "''") + "'" for p in parts)
        cols = ", ".join(f'"{c}"' for c in schema.names)
        return f"(SELECT {cols} FROM read_parquet([{files}], union_by_name = true))"
    tables = [pq.read_table(p, filesystem=root.fs) for p in parts]  # remote: Arrow in memory
    con.register(f"_parts_{name}", pa.concat_tables(tables, promote_options="default"))
    return f"_parts_{name}"


def _score_names(con) -> list[str]:
    clip_cols = set(TABLES["clips"].schema.names)
    names = [r[0] for r in con.execute("SELECT DISTINCT name FROM _src_scores ORDER BY 1").fetchall()]
    bad = [n for n in names if not _IDENT.match(n) or n in clip_cols]
    if bad:
        log.warning("scores not pivoted into clips_v (not identifiers or clash with clip columns): %s", bad)
    return [n for n in names if n not in bad]


def _create_clips_v(con) -> None:
    names = _score_names(con)
    # arg_max by write time over the raw parts is itself the dedupe (latest write of each name
    # wins, across scorers), and is twice as fast as pivoting the deduplicated view.
    pivot = ", ".join(f"arg_max(value, _written_ns) FILTER (WHERE name = '{n}') AS {n}" for n in names)
    score_join = (f"LEFT JOIN (SELECT clip_id, {pivot} FROM _src_scores GROUP BY clip_id) s "
                  "ON s.clip_id = c.clip_id" if names else "")
    score_cols = "".join(f", s.{n}" for n in names)
    con.execute(f"""
        CREATE VIEW clips_v AS
        SELECT c.*, v.uri AS video_uri{score_cols},
               r.rejection_reasons, (r.clip_id IS NOT NULL) AS rejected
        FROM clips c
        LEFT JOIN videos v ON v.video_id = c.video_id
        {score_join}
        LEFT JOIN (SELECT clip_id, string_agg(reason, ',' ORDER BY stage) AS rejection_reasons
                   FROM rejections WHERE reason IS NOT NULL GROUP BY clip_id) r
               ON r.clip_id = c.clip_id""")


def _create_corpus_v(con) -> None:
    con.execute("""
        CREATE VIEW corpus_v AS
        SELECT cv.*, alt.text AS alt_text, sel.text AS caption, sel.source AS caption_source
        FROM clips_v cv
        LEFT JOIN (SELECT clip_id, text FROM captions WHERE source = 'alt-text') alt
               ON alt.clip_id = cv.clip_id
        LEFT JOIN (SELECT clip_id, text, source FROM captions
                   QUALIFY row_number() OVER (PARTITION BY clip_id ORDER BY
                       CASE WHEN source LIKE 'captioner:%' THEN 3 WHEN source LIKE 'teacher:%' THEN 2
                            WHEN source = 'original' THEN 1 ELSE 0 END DESC,
                       created_at DESC, source) = 1) sel
               ON sel.clip_id = cv.clip_id""")


def _lock_down(con, catalog) -> None:
    if catalog.root.is_local:
        allowed = catalog.root.join("catalog").rstrip("/") + "/"
        con.execute("SET allowed_directories = [?]", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
