"""The corpus root: one directory (local path or fsspec URL) that holds everything.

Layout (see ARCHITECTURE.md):
    ROOT/catalog/<table>/part-<writer>-<seq>.parquet
    ROOT/clips/<video_id[:2]>/<clip_id>.mp4
    ROOT/shards/<dataset>/...
    ROOT/models/<name>/, ROOT/runs/<run_id>/, ROOT/jobs/<job_id>/
"""
from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

SUBDIRS = ("catalog", "clips", "shards", "models", "runs", "jobs")


class RootError(ValueError):
    """The corpus root is missing, not a directory, or not writable."""


@dataclass
class CorpusRoot:
    """A corpus root on a local disk or any fsspec filesystem (``s3://bucket/prefix``)."""

    url: str
    fs: Any = field(repr=False)
    path: str  # root path inside ``fs`` (absolute for local)

    @classmethod
    def open(cls, url: str | os.PathLike, *, create: bool = False,
             storage_options: dict | None = None) -> "CorpusRoot":
        """Open ``url`` as a corpus root; ``create`` makes it (and its layout) when missing.

        Raises RootError with one line saying which path and why when it cannot be used.
        """
        url = str(url)
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        if _is_local(fs):
            path = str(Path(path).resolve())
        root = cls(url=url, fs=fs, path=path.rstrip("/") or "/")
        root._check(create)
        return root

    @property
    def is_local(self) -> bool:
        return _is_local(self.fs)

    def join(self, *parts: str) -> str:
        """Path of ``parts`` under the root, in the filesystem's own form."""
        return posixpath.join(self.path, *parts) if not self.is_local else os.path.join(self.path, *parts)

    def uri(self, *parts: str) -> str:
        """A URL for ``parts`` that other processes can open (``s3://…`` or a local path)."""
        p = self.join(*parts)
        if self.is_local:
            return p
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol
        return f"{protocol}://{p}"

    def clip_relpath(self, video_id: str, clip_id: str) -> str:
        """Content-addressed place of a clip's media, relative to the root."""
        return f"clips/{video_id[:2]}/{clip_id}.mp4"

    def makedirs(self, *parts: str) -> str:
        p = self.join(*parts)
        self.fs.makedirs(p, exist_ok=True)
        return p

    def put_bytes(self, relpath: str, data: bytes) -> str:
        """Write ``data`` to ``relpath`` atomically (tmp then rename); returns the full path."""
        dest = self.join(relpath)
        self.fs.makedirs(posixpath.dirname(dest) if not self.is_local else os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
        if self.is_local:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        else:
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, dest)
        return dest

    def _check(self, create: bool) -> None:
        fs, path = self.fs, self.path
        try:
            exists = fs.exists(path)
        except Exception as e:  # network / credentials: say which path and why
            raise RootError(f"corpus root {self.url}: cannot be reached ({type(e).__name__}: {e})") from e
        if exists and not fs.isdir(path):
            raise RootError(f"corpus root {self.url}: exists but is not a directory")
        if not exists and not create:
            raise RootError(f"corpus root {self.url}: does not exist (create it, or pass a command that creates it)")
        try:
            for sub in SUBDIRS:
                fs.makedirs(self.join(sub), exist_ok=True)
            if self.is_local:
                probe = self.join(f".write-probe-{uuid.uuid4().hex[:8]}")
                with open(probe, "wb"):
                    pass
                os.remove(probe)
        except OSError as e:
            raise RootError(f"corpus root {self.url}: not writable ({e.strerror or e})") from e


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")
