"""The Parquet catalog: append-only parts per table, read through DuckDB views.

Writes: every ``append`` is one new part file ``catalog/<table>/part-<writer>-<seq>.parquet``,
written to a hidden tmp name and renamed, so readers never see a partial part and concurrent
writers (distinct writer ids) never collide. Reads: see ``storage.sql`` — views show each key
once (latest ``_written_ns`` wins, except that a job's ended row beats a later ``running`` one)
and the SQL path is read-only.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from storage.root import CorpusRoot
from storage.schemas import TABLES, TableSpec, table_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadPart:
    """A part file that cannot be read; queries skip it and `vidcorpus tables` lists it."""

    table: str
    path: str
    reason: str


class Catalog:
    """Append rows to catalog tables and query them (read-only) with DuckDB."""

    def __init__(self, root: CorpusRoot, writer_id: str | None = None):
        self.root = root
        self.writer_id = writer_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._seq = 0

    # ---------------------------------------------------------------- writes
    def append(self, table: str, rows: Iterable[dict[str, Any]] | pa.Table) -> str | None:
        """Append ``rows`` to ``table`` as one new part; returns its path (None when empty)."""
        spec = table_spec(table)
        data = to_arrow(spec, rows)
        if data.num_rows == 0:
            return None
        written = pa.array([time.time_ns()] * data.num_rows, pa.int64())
        data = data.append_column("_written_ns", written)
        self._seq += 1
        name = f"part-{self.writer_id}-{self._seq:06d}.parquet"
        dest = self.root.join("catalog", table, name)
        tmp = self.root.join("catalog", table, f".tmp-{name}")
        self.root.fs.makedirs(self.root.join("catalog", table), exist_ok=True)
        if self.root.is_local:
            with open(tmp, "wb") as f:
                pq.write_table(data, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        else:
            with self.root.fs.open(tmp, "wb") as f:
                pq.write_table(data, f, compression="zstd")
            self.root.fs.mv(tmp, dest)
        return dest

    # ---------------------------------------------------------------- parts
    def parts(self, table: str) -> list[str]:
        """Finished part files of ``table`` (tmp files of killed writers are invisible)."""
        table_spec(table)
        d = self.root.join("catalog", table)
        if not self.root.fs.exists(d):
            return []
        names = [p for p in self.root.fs.ls(d, detail=False)
                 if os.path.basename(p).startswith("part-") and p.endswith(".parquet")]
        return sorted(names)

    def healthy_parts(self) -> tuple[dict[str, list[str]], list[BadPart]]:
        """Parts per table whose footer and schema read; the rest as BadPart (with a warning)."""
        good: dict[str, list[str]] = {}
        bad: list[BadPart] = []
        for name, spec in TABLES.items():
            good[name] = []
            for path in self.parts(name):
                reason = _check_part(self.root, path, spec)
                if reason is None:
                    good[name].append(path)
                else:
                    log.warning("skipping corrupt catalog part %s: %s", path, reason)
                    bad.append(BadPart(name, path, reason))
        return good, bad

    # ---------------------------------------------------------------- reads
    def connect(self):
        """A sandboxed, read-only DuckDB connection with the catalog's views."""
        from storage.sql import open_readonly
        return open_readonly(self)

    def query(self, sql: str) -> pa.Table:
        """Run one read-only statement; returns an Arrow table (see storage.sql for refusals)."""
        from storage.sql import run_query
        with self.connect() as con:
            return run_query(con, sql)

    def read_table(self, table: str) -> pa.Table:
        """The deduplicated contents of ``table`` (each key once: its current row, normally the
        latest write; see ``TableSpec.current``)."""
        table_spec(table)
        return self.query(f"SELECT * FROM {table}")


def to_arrow(spec: TableSpec, rows: Iterable[dict[str, Any]] | pa.Table) -> pa.Table:
    """Validate rows at the boundary and cast them to the table's schema."""
    if isinstance(rows, pa.Table):
        unknown = set(rows.column_names) - set(spec.schema.names)
        missing = [f for f in spec.schema if f.name not in rows.column_names]
        for f in missing:
            rows = rows.append_column(f, pa.nulls(rows.num_rows, f.type))
        data = rows.select(spec.schema.names).cast(spec.schema) if not unknown else None
    else:
        rows = list(rows)
        unknown = set().union(*(r.keys() for r in rows)) - set(spec.schema.names) if rows else set()
        data = None if unknown else pa.Table.from_pylist(_with_defaults(spec, rows), schema=spec.schema)
    if unknown:
        raise ValueError(f"table {spec.name!r} has no column(s) {sorted(unknown)}; "
                         f"columns: {', '.join(spec.schema.names)}")
    for f in spec.schema:
        if not f.nullable and data[f.name].null_count:
            raise ValueError(f"table {spec.name!r}: column {f.name!r} is required but has nulls")
    return data


def _with_defaults(spec: TableSpec, rows: list[dict]) -> list[dict]:
    now = datetime.now(timezone.utc)
    stamp = [c for c in ("created_at", "ingested_at") if c in spec.schema.names]
    if not stamp:
        return rows
    return [{**{c: now for c in stamp}, **{k: v for k, v in r.items() if v is not None or k not in stamp}}
            for r in rows]


def _check_part(root: CorpusRoot, path: str, spec: TableSpec) -> str | None:
    """None when the part's footer reads and it has the key columns; else why not."""
    try:
        with root.fs.open(path, "rb") as f:
            schema = pq.read_schema(f)
    except Exception as e:  # any unreadable footer is a corrupt part, whatever pyarrow raises
        return f"{type(e).__name__}: {e}"
    missing = [k for k in (*spec.key, "_written_ns") if k not in schema.names]
    return f"missing key column(s) {missing}" if missing else None
