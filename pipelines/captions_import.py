"""Bring existing text into the ``captions`` table: web alt text, human descriptions, old captions.

A caption file is CSV, JSON Lines or Parquet with a ``text`` column and one key column:

* ``clip_id`` — the text belongs to that clip;
* ``video_id`` or ``uri`` (the source video as ingested: a path, resolved before matching, or a
  URL) — the text belongs to the video, and every clip cut from it gets it (alt text usually
  describes a whole upload, which is why clip scoring and re-captioning matter).

Rows are written with ``source`` (``alt-text`` by default; ``original`` marks human-written seed
captions the captioner trains on). Rows whose key matches nothing are counted and reported,
never silently dropped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

KEYS = ("clip_id", "video_id", "uri")


class CaptionImportError(ValueError):
    """A caption file that cannot be imported; the message says what to change."""


@dataclass
class ImportResult:
    rows: int = 0
    captions_written: int = 0
    unmatched: list[str] = field(default_factory=list)

    def text(self, source: str) -> str:
        line = f"{self.rows} rows read, {self.captions_written} '{source}' captions written"
        if self.unmatched:
            sample = ", ".join(self.unmatched[:5]) + (" …" if len(self.unmatched) > 5 else "")
            line += f"; {len(self.unmatched)} rows matched no clip or video: {sample}"
        return line


def read_caption_file(path: str | os.PathLike) -> pa.Table:
    """The file as a table (format from the extension: .csv, .jsonl/.json, .parquet)."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq
    p = Path(path)
    if not p.is_file():
        raise CaptionImportError(f"caption file {p}: not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            table = pcsv.read_csv(p)
        elif suffix in (".jsonl", ".json", ".ndjson"):
            table = pjson.read_json(p)
        elif suffix in (".parquet", ".pq"):
            table = pq.read_table(p)
        else:
            raise CaptionImportError(f"caption file {p}: use .csv, .jsonl or .parquet (got {suffix!r})")
    except pa.ArrowInvalid as e:
        raise CaptionImportError(f"caption file {p}: cannot be parsed ({e})") from None
    if "text" not in table.column_names or not any(k in table.column_names for k in KEYS):
        raise CaptionImportError(f"caption file {p}: needs a `text` column and one of "
                                 f"{', '.join(KEYS)}; it has {', '.join(table.column_names)}")
    return table


def _video_key(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).resolve())


def import_captions(catalog, path: str | os.PathLike, source: str = "alt-text", model: str = "import",
                    job_id: str | None = None) -> ImportResult:
    """Append the file's captions to the catalog; see the module docstring for the format."""
    if not source or "'" in source:
        raise CaptionImportError(f"caption source {source!r}: give a plain name such as alt-text or original")
    table = read_caption_file(path)
    key = next(k for k in KEYS if k in table.column_names)
    rows = [r for r in table.select([key, "text"]).to_pylist() if r[key] is not None and r["text"]]
    clips = catalog.query("SELECT c.clip_id, c.video_id, v.uri FROM clips c "
                          "LEFT JOIN videos v USING (video_id)").to_pylist()
    if key == "clip_id":
        index = {c["clip_id"]: [c["clip_id"]] for c in clips}
    else:
        index = {}
        for c in clips:
            k = c["video_id"] if key == "video_id" else (_video_key(c["uri"]) if c["uri"] else None)
            index.setdefault(k, []).append(c["clip_id"])
    out, result = [], ImportResult(rows=len(rows))
    for r in rows:
        k = str(r[key]) if key != "uri" else _video_key(str(r[key]))
        targets = index.get(k)
        if not targets:
            result.unmatched.append(str(r[key]))
            continue
        out += [dict(clip_id=c, source=source, text=str(r["text"]), model=model, job_id=job_id)
                for c in targets]
    if out:
        catalog.append("captions", out)
    result.captions_written = len(out)
    return result
