"""WebDataset shards: a deterministic, kill-safe writer plus the read API (re-exported).

:class:`ShardWriter` turns validated clip samples into ``<dataset>-000000.tar`` shards,
``index.parquet`` and ``manifest.json`` (ARCHITECTURE.md, "Shards"). Guarantees:

- **Deterministic**: tar headers are fixed (mtime 0, uid/gid 0, empty owner names, mode 0o444),
  members are written in :data:`MEMBER_ORDER` and JSON with sorted keys, so the same samples
  give byte-identical shards and index. Only ``manifest.json`` carries ``created_at``.
- **Kill-safe**: every file is staged as ``<name>.tmp-<pid>`` and renamed when complete; the
  index and then the manifest are written last, so a dataset without ``manifest.json`` is
  incomplete and every ``.tar`` that exists is whole. A new writer removes a dead writer's
  staged files.
- **Bounded**: a shard is closed before adding a sample would make the file exceed
  ``max_bytes`` or hold more than ``max_count`` samples; a sample bigger than ``max_bytes``
  gets a shard of its own.

Each sample is written as one contiguous run of tar members; ``index.parquet`` records its byte
``offset`` (first member header) and ``bytes`` so a reader can fetch one sample with a range read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from storage.shard_format import (
    INDEX_NAME,
    INDEX_SCHEMA,
    MANIFEST_NAME,
    MEMBER_ORDER,
    REQUIRED_JSON_FIELDS,
    TAR_END,
    TMP_MARKER,
    check_name,
    decode_sample,
    encode_sample,
    index_row,
    validate_sample,
)
from storage.shard_reader import (
    IncompleteDatasetError,
    PathLike,
    is_local,
    list_shards,
    load_index,
    load_manifest,
    read_shards,
    resolve_fs,
    split_shards,
)

__all__ = [
    "INDEX_NAME",
    "INDEX_SCHEMA",
    "MANIFEST_NAME",
    "MEMBER_ORDER",
    "REQUIRED_JSON_FIELDS",
    "IncompleteDatasetError",
    "ShardWriter",
    "decode_sample",
    "encode_sample",
    "list_shards",
    "load_index",
    "load_manifest",
    "read_shards",
    "split_shards",
    "validate_sample",
]

# --- writer -----------------------------------------------------------------------------------


@dataclass
class _OpenShard:
    """The shard being filled: staged locally, hashed as it is written."""

    name: str
    staged: str
    file: BinaryIO
    sha256: Any = field(default_factory=hashlib.sha256)
    n_samples: int = 0
    bytes: int = 0

    def append(self, data: bytes) -> None:
        self.file.write(data)
        self.sha256.update(data)
        self.bytes += len(data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _json_dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)
    except (TypeError, ValueError) as exn:
        raise ValueError(f"{what} must be JSON-serialisable: {exn}") from exn


class ShardWriter:
    """Write clip samples to ``<dataset>-NNNNNN.tar`` shards plus ``index.parquet`` and ``manifest.json``.

    Use as a context manager; leaving the block normally calls :meth:`close`, leaving it with an
    exception discards the shard in progress and writes no manifest (the dataset stays
    incomplete). ``out_dir`` is a local path or fsspec URL (or a path within ``fs``). Opening a
    writer marks an existing dataset in ``out_dir`` incomplete (its manifest is removed) until
    :meth:`close`, and removes staged files of dead writers. Staged ``*.tmp-<pid>`` files of a live
    process on this host make it refuse to open; on a remote filesystem liveness cannot be
    checked, so all staged files there are treated as stale.

    ``created_at`` (default: now, UTC ISO 8601) and ``extra`` (any JSON-serialisable dict, e.g.
    the dataset's SQL and catalog state) go into the manifest only.
    """

    def __init__(
        self,
        out_dir: PathLike,
        dataset: str,
        max_bytes: int = 1_000_000_000,
        max_count: int = 10_000,
        fs: fsspec.AbstractFileSystem | None = None,
        *,
        created_at: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        check_name(dataset, "dataset name")
        if max_bytes < 1 or max_count < 1:
            raise ValueError(f"max_bytes and max_count must be >= 1, got {max_bytes}, {max_count}")
        self.dataset, self.max_bytes, self.max_count = dataset, max_bytes, max_count
        self.fs, self.out_dir = resolve_fs(out_dir, fs)
        self.created_at = created_at or datetime.now(UTC).isoformat(timespec="seconds")
        self.extra = dict(extra or {})
        _json_dumps(self.extra, "extra")
        self._local = is_local(self.fs)
        self._shard: _OpenShard | None = None
        self._done: list[dict[str, Any]] = []  # manifest entries of finished shards
        self._columns: dict[str, list] = {name: [] for name in INDEX_SCHEMA.names}
        self._keys: set[str] = set()
        self._closed = False
        self._prepare_dir()
        self._staging = None if self._local else tempfile.mkdtemp(prefix=f"shards-{dataset}-")

    # context manager ---------------------------------------------------------------------------

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self._closed:
                self.close()
        else:
            self.abort()

    # public API --------------------------------------------------------------------------------

    def write(self, sample: dict[str, Any]) -> None:
        """Validate ``sample`` and append it, starting a new shard first when limits require."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        validate_sample(sample)
        key = sample["__key__"]
        if key in self._keys:
            raise ValueError(f"duplicate __key__ {key!r} in dataset {self.dataset!r}")
        data = encode_sample(sample)
        if self._shard is not None and self._would_overflow(len(data)):
            self._finish_shard()
        if self._shard is None:
            self._open_shard()
        offset = self._shard.bytes
        self._shard.append(data)
        self._shard.n_samples += 1
        self._record(sample, offset=offset, size=len(data))
        self._keys.add(key)

    def close(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish the last shard, then write ``index.parquet`` and ``manifest.json``; return the manifest."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        self.extra.update(extra or {})
        _json_dumps(self.extra, "extra")  # fail before publishing anything
        if self._shard is not None:
            self._finish_shard()
        manifest = self._manifest()
        self._remove_old_shards({entry["name"] for entry in self._done})
        self._publish_bytes(INDEX_NAME, self._index_bytes())
        self._publish_bytes(MANIFEST_NAME, (_json_dumps(manifest, "manifest") + "\n").encode())
        self._closed = True
        self._drop_staging()
        return manifest

    def abort(self) -> None:
        """Discard the shard in progress and leave the dataset incomplete (no manifest)."""
        if self._shard is not None:
            self._shard.file.close()
            os.remove(self._shard.staged)
            self._shard = None
        self._closed = True
        self._drop_staging()

    # shards ------------------------------------------------------------------------------------

    def _would_overflow(self, size: int) -> bool:
        shard = self._shard
        too_big = shard.bytes + size + len(TAR_END) > self.max_bytes
        return shard.n_samples >= self.max_count or too_big

    def _open_shard(self) -> None:
        name = f"{self.dataset}-{len(self._done):06d}.tar"
        staged = self._staged_path(name)
        file = open(staged, "wb")  # noqa: SIM115 -- stays open across write() calls
        self._shard = _OpenShard(name=name, staged=staged, file=file)

    def _finish_shard(self) -> None:
        shard, self._shard = self._shard, None
        shard.append(TAR_END)
        shard.file.flush()
        os.fsync(shard.file.fileno())
        shard.file.close()
        self._publish_file(shard.staged, shard.name)
        self._done.append(
            {"name": shard.name, "n_samples": shard.n_samples, "bytes": shard.bytes,
             "sha256": shard.sha256.hexdigest()}
        )  # fmt: skip

    def _record(self, sample: dict[str, Any], offset: int, size: int) -> None:
        row = index_row(sample)
        row.update(dataset=self.dataset, shard=self._shard.name, bytes=size, offset=offset)
        for name, column in self._columns.items():
            column.append(row[name])

    # index and manifest ------------------------------------------------------------------------

    def _index_bytes(self) -> bytes:
        table = pa.Table.from_pydict(self._columns, schema=INDEX_SCHEMA)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        return buffer.getvalue()

    def _manifest(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "created_at": self.created_at,
            "n_samples": sum(entry["n_samples"] for entry in self._done),
            "n_shards": len(self._done),
            "total_bytes": sum(entry["bytes"] for entry in self._done),
            "index": INDEX_NAME,
            "shards": list(self._done),
            "extra": self.extra,
        }

    # filesystem --------------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self.out_dir, name) if self._local else f"{self.out_dir.rstrip('/')}/{name}"

    def _staged_path(self, name: str) -> str:
        """Where a file is written before it is published: beside it locally, else a temp dir."""
        if self._local:
            return self._path(f"{name}{TMP_MARKER}{os.getpid()}")
        return os.path.join(self._staging, name)

    def _publish_file(self, staged: str, name: str) -> None:
        """Move a complete staged file to its final name (atomic rename; remote: upload, then move)."""
        if self._local:
            os.replace(staged, self._path(name))
            return
        remote_tmp = self._path(f"{name}{TMP_MARKER}{os.getpid()}")
        self.fs.put_file(staged, remote_tmp)
        self.fs.mv(remote_tmp, self._path(name))
        os.remove(staged)

    def _publish_bytes(self, name: str, data: bytes) -> None:
        staged = self._staged_path(name)
        with open(staged, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._publish_file(staged, name)

    def _prepare_dir(self) -> None:
        """Create ``out_dir``, mark any previous dataset incomplete, remove dead writers' files."""
        self.fs.makedirs(self.out_dir, exist_ok=True)
        staged = self.fs.glob(self._path(f"*{TMP_MARKER}*"))
        for path in staged:
            pid_text = path.rsplit(TMP_MARKER, 1)[1]
            if self._local and pid_text.isdigit() and _pid_alive(int(pid_text)):
                raise RuntimeError(f"another writer (pid {pid_text}) is writing to {self.out_dir}: {path}")
        for name in (MANIFEST_NAME, INDEX_NAME):  # manifest first: incomplete from here on
            if self.fs.exists(self._path(name)):
                self.fs.rm(self._path(name))
        for path in staged:
            self.fs.rm(path)

    def _remove_old_shards(self, keep: set[str]) -> None:
        """Delete this dataset's shards left by an earlier, longer write (the manifest is gone)."""
        pattern = re.compile(rf"{re.escape(self.dataset)}-\d{{6}}\.tar")
        for path in self.fs.glob(self._path(f"{self.dataset}-*.tar")):
            name = os.path.basename(path)
            if pattern.fullmatch(name) and name not in keep:
                self.fs.rm(path)

    def _drop_staging(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
