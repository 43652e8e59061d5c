"""Datasets: a SQL selection over the catalog, materialised as deterministic WebDataset shards.

``create_dataset`` picks clips with ``--where`` (over ``corpus_v``) or ``--sql`` (any read-only
query returning ``clip_id``), leaves out rejected clips unless asked, and writes one sample per
clip in ``clip_id`` order with :class:`storage.shards.ShardWriter` into ROOT/shards/<name>/:

- ``txt``: the selected caption (``corpus_v.caption``: newest captioner caption, else teacher,
  else the original description, else alt text; empty when the clip has none);
- ``captions.json``: every caption variant with its source, model and CLIP score;
- ``json``: clip metadata (source uri, span, geometry) and every score of the clip.

The same catalog and definition give byte-identical shards and ``index.parquet``.
``manifest.json`` records the definition, the SQL that ran and the catalog state (part files
and row counts per table, hashed); the catalog gets a ``datasets`` row and ``shard_samples``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow.parquet as pq

from storage.shard_format import check_name

STATE_TABLES = ("videos", "clips", "scores", "embeddings", "captions", "rejections")
META_COLUMNS = ("clip_id", "video_id", "start_s", "end_s", "start_frame", "end_frame",
                "duration_s", "fps", "width", "height", "n_frames", "transition_in", "split_version")


class DatasetError(ValueError):
    """A dataset definition that cannot be materialised; the message says what to change."""


@dataclass(frozen=True)
class DatasetSpec:
    """What goes into a dataset: exactly one of ``where`` (over corpus_v) or ``sql``."""

    name: str
    where: str | None = None
    sql: str | None = None
    include_rejected: bool = False
    max_bytes: int = 1_000_000_000
    max_count: int = 10_000

    def __post_init__(self) -> None:
        try:
            check_name(self.name, "dataset name")
        except ValueError as e:
            raise DatasetError(str(e)) from None
        if (self.where is None) == (self.sql is None):
            raise DatasetError("define the dataset with exactly one of --where \"…\" or --sql \"SELECT clip_id …\"")

    def selection_sql(self) -> str:
        """The query whose rows become samples, in sample order."""
        chosen = self.sql if self.sql is not None else f"SELECT clip_id FROM corpus_v WHERE ({self.where})"
        keep = "" if self.include_rejected else " AND NOT rejected"
        return (f"SELECT * FROM corpus_v WHERE clip_id IN (SELECT clip_id FROM ({chosen}) AS chosen)"
                f"{keep} ORDER BY clip_id")


def catalog_state(catalog) -> dict[str, Any]:
    """Part files and row counts of the tables a dataset reads, plus a hash of them."""
    tables = {}
    for table in STATE_TABLES:
        parts = catalog.parts(table)
        rows = 0
        for path in parts:
            with catalog.root.fs.open(path, "rb") as f:
                rows += pq.ParquetFile(f).metadata.num_rows
        tables[table] = {"parts": [os.path.basename(p) for p in parts], "rows": rows}
    digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()
    return {"hash": digest, "tables": tables}


def create_dataset(catalog, spec: DatasetSpec) -> dict[str, Any]:
    """Write the dataset's shards, index and manifest, then its catalog rows; returns the manifest."""
    from storage.shards import ShardWriter
    state = catalog_state(catalog)
    rows = _selected(catalog, spec)
    captions = _captions(catalog, spec)
    scores = _score_names(catalog)
    out_dir = catalog.root.join("shards", spec.name)
    extra = {"definition": {"where": spec.where, "sql": spec.sql, "include_rejected": spec.include_rejected},
             "selection_sql": spec.selection_sql(), "catalog_state": state}
    missing, no_caption = [], 0
    with ShardWriter(out_dir, spec.name, spec.max_bytes, spec.max_count,
                     fs=None if catalog.root.is_local else catalog.root.fs, extra=extra) as writer:
        for row in rows:
            media = _media(catalog.root, row["uri"])
            if media is None:
                missing.append(row["clip_id"])
                continue
            no_caption += not row["caption"]
            writer.write(make_sample(row, media, captions.get(row["clip_id"], []), scores))
        manifest = writer.close({"missing_media": missing, "without_caption": no_caption})
    _record(catalog, spec, manifest, out_dir, rows)
    return manifest


def _selected(catalog, spec: DatasetSpec) -> list[dict[str, Any]]:
    from storage import SQLError
    try:
        return catalog.query(spec.selection_sql()).to_pylist()
    except SQLError as e:
        columns = ", ".join(catalog.query("DESCRIBE corpus_v")["column_name"].to_pylist())
        raise DatasetError(f"dataset {spec.name!r}: the selection cannot run: {e}. "
                           f"Columns of corpus_v: {columns}") from None


def _captions(catalog, spec: DatasetSpec) -> dict[str, list[dict[str, Any]]]:
    """Every caption variant of the selected clips, by clip, in source order."""
    table = catalog.query(f"""
        SELECT clip_id, source, text, model, clip_score, created_at FROM captions
        WHERE clip_id IN (SELECT clip_id FROM ({spec.selection_sql()}) AS s) ORDER BY clip_id, source""")
    out: dict[str, list[dict[str, Any]]] = {}
    for r in table.to_pylist():
        created = r.pop("created_at")
        out.setdefault(r.pop("clip_id"), []).append({**r, "created_at": created.isoformat() if created else None})
    return out


def _score_names(catalog) -> list[str]:
    names = catalog.query("SELECT DISTINCT name FROM scores ORDER BY 1")["name"].to_pylist()
    columns = set(catalog.query("DESCRIBE clips_v")["column_name"].to_pylist())
    return [n for n in names if n in columns]


def _media(root, uri: str) -> bytes | None:
    path = root.join(uri)
    return root.fs.cat_file(path) if root.fs.exists(path) else None


def make_sample(row: dict[str, Any], media: bytes, captions: list[dict], scores: list[str]) -> dict[str, Any]:
    """One shard sample of a ``corpus_v`` row (see the module docstring)."""
    meta = {c: row[c] for c in META_COLUMNS}
    meta.update(uri=row["video_uri"] or row["uri"], clip_uri=row["uri"],
                caption_source=row["caption_source"], rejection_reasons=row["rejection_reasons"],
                scores={n: row[n] for n in scores if row.get(n) is not None})
    return {"__key__": row["clip_id"], "mp4": media, "json": meta, "txt": row["caption"] or "",
            "captions.json": captions}


def _record(catalog, spec: DatasetSpec, manifest: dict, out_dir: str, rows: list[dict]) -> None:
    """The ``datasets`` row and one ``shard_samples`` row per written sample."""
    from storage.shards import load_index
    now = datetime.now(timezone.utc)
    index = load_index(out_dir, fs=None if catalog.root.is_local else catalog.root.fs).to_pylist()
    source = {r["clip_id"]: r["caption_source"] for r in rows}
    samples = [dict(dataset=spec.name, key=r["key"], clip_id=r["clip_id"], shard=r["shard"],
                    caption_source=source.get(r["clip_id"]), created_at=now) for r in index]
    earlier = catalog.query(f"SELECT key FROM shard_samples WHERE dataset = '{spec.name}' "
                            "AND shard IS NOT NULL")["key"].to_pylist()
    written = {r["key"] for r in index}
    samples += [dict(dataset=spec.name, key=k, shard=None, created_at=now)  # no longer in it
                for k in sorted(set(earlier) - written)]
    catalog.append("shard_samples", samples)
    catalog.append("datasets", [dict(
        dataset=spec.name, sql=spec.selection_sql(), n_samples=manifest["n_samples"],
        n_shards=manifest["n_shards"], total_bytes=manifest["total_bytes"], path=out_dir,
        catalog_state=manifest["extra"]["catalog_state"]["hash"], created_at=now)])


def list_datasets(catalog):
    """The ``datasets`` table, newest first (an Arrow table)."""
    return catalog.query("SELECT dataset, n_samples, n_shards, total_bytes, created_at, path "
                         "FROM datasets ORDER BY created_at DESC, dataset")


def show_dataset(catalog, name: str) -> dict[str, Any]:
    """A dataset's catalog row, manifest and sample counts by caption source."""
    from storage.shards import load_manifest
    check_name(name, "dataset name")
    rows = catalog.query(f"SELECT * FROM datasets WHERE dataset = '{name}'").to_pylist()
    if not rows:
        known = ", ".join(list_datasets(catalog)["dataset"].to_pylist()) or "none"
        raise DatasetError(f"no dataset {name!r}; known: {known}")
    by_source = catalog.query(f"SELECT coalesce(caption_source, '(none)') AS caption_source, count(*) AS n "
                              f"FROM shard_samples WHERE dataset = '{name}' AND shard IS NOT NULL GROUP BY 1 ORDER BY 1").to_pylist()
    manifest = load_manifest(rows[0]["path"], fs=None if catalog.root.is_local else catalog.root.fs)
    return {"dataset": rows[0], "manifest": manifest, "caption_sources": by_source}
