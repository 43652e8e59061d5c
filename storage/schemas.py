"""Explicit Arrow schemas and keys of the catalog tables (the contract in ARCHITECTURE.md).

Every part also carries ``_written_ns`` (int64): the write time that decides "latest write wins".
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
WRITTEN = pa.field("_written_ns", pa.int64(), nullable=False)


@dataclass(frozen=True)
class TableSpec:
    """A catalog table: its name, key columns and Arrow schema (without ``_written_ns``).

    ``current`` orders the rows of one key, first = the row the views show: by default the latest
    write wins.
    """

    name: str
    key: tuple[str, ...]
    schema: pa.Schema
    current: str = "_written_ns DESC"

    @property
    def stored_schema(self) -> pa.Schema:
        return self.schema.append(WRITTEN)


def _s(*fields: tuple) -> pa.Schema:
    """Schema from ``(name, type[, required])`` tuples; required columns are not nullable."""
    return pa.schema([pa.field(f[0], f[1], nullable=not (len(f) > 2 and f[2])) for f in fields])


JOB_ENDED = ("succeeded", "failed", "stopped")  # job statuses after which a job never runs again

TABLES: dict[str, TableSpec] = {t.name: t for t in [
    TableSpec("videos", ("video_id",), _s(
        ("video_id", pa.string(), True), ("uri", pa.string(), True), ("bytes", pa.int64()),
        ("source_mtime", pa.float64()), ("split_version", pa.string()), ("n_clips", pa.int32()),
        ("container", pa.string()), ("codec", pa.string()), ("pix_fmt", pa.string()),
        ("width", pa.int32()), ("height", pa.int32()), ("sar", pa.string()), ("fps", pa.float64()),
        ("duration_s", pa.float64()), ("n_frames", pa.int64()), ("rotation", pa.int32()),
        ("has_audio", pa.bool_()), ("vfr", pa.bool_()),
        ("transitions", pa.string()),  # JSON list of detected transitions: kind, start_s, end_s …
        ("status", pa.string(), True), ("error_class", pa.string()), ("error", pa.string()),
        ("job_id", pa.string()), ("ingested_at", TS))),
    TableSpec("clips", ("clip_id",), _s(
        ("clip_id", pa.string(), True), ("video_id", pa.string(), True),
        ("start_s", pa.float64()), ("end_s", pa.float64()),
        ("start_frame", pa.int64()), ("end_frame", pa.int64()), ("duration_s", pa.float64()),
        ("fps", pa.float64()), ("width", pa.int32()), ("height", pa.int32()), ("n_frames", pa.int64()),
        ("transition_in", pa.string()), ("transition_out", pa.string()), ("uri", pa.string()),
        ("bytes", pa.int64()), ("method", pa.string()), ("split_version", pa.string()),
        ("job_id", pa.string()), ("created_at", TS))),
    TableSpec("scores", ("clip_id", "name", "scorer"), _s(
        ("clip_id", pa.string(), True), ("name", pa.string(), True), ("scorer", pa.string(), True),
        ("value", pa.float64()), ("job_id", pa.string()), ("created_at", TS))),
    TableSpec("embeddings", ("clip_id", "model"), _s(
        ("clip_id", pa.string(), True), ("model", pa.string(), True),
        ("vector", pa.list_(pa.float32())), ("job_id", pa.string()), ("created_at", TS))),
    TableSpec("captions", ("clip_id", "source"), _s(
        ("clip_id", pa.string(), True), ("source", pa.string(), True), ("text", pa.string()),
        ("model", pa.string()), ("clip_score", pa.float64()), ("job_id", pa.string()),
        ("created_at", TS))),
    TableSpec("rejections", ("clip_id", "stage"), _s(
        ("clip_id", pa.string(), True), ("stage", pa.string(), True), ("reason", pa.string()),
        ("detail", pa.string()), ("job_id", pa.string()), ("created_at", TS))),
    TableSpec("datasets", ("dataset",), _s(
        ("dataset", pa.string(), True), ("sql", pa.string()), ("n_samples", pa.int64()),
        ("n_shards", pa.int32()), ("total_bytes", pa.int64()), ("path", pa.string()),
        ("catalog_state", pa.string()), ("created_at", TS))),
    TableSpec("shard_samples", ("dataset", "key"), _s(
        ("dataset", pa.string(), True), ("key", pa.string(), True), ("clip_id", pa.string()),
        ("shard", pa.string()), ("caption_source", pa.string()), ("created_at", TS))),
    TableSpec("jobs", ("job_id",), _s(
        ("job_id", pa.string(), True), ("kind", pa.string()), ("spec", pa.string()),
        ("status", pa.string()), ("stages", pa.string()), ("wall_s", pa.float64()),
        ("started_at", TS), ("finished_at", TS), ("error", pa.string())),
        # a job that ended stays ended: a driver Ray stopped before it ran may still write a late
        # ``running`` row, which must not revive it (the latest of several ended rows wins)
        current=f"status IN {JOB_ENDED} DESC, _written_ns DESC"),
]}


def table_spec(name: str) -> TableSpec:
    """The spec of table ``name``; a clear error lists the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown catalog table {name!r}; known tables: {', '.join(TABLES)}") from None
