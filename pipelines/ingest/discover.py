"""Find input videos: a directory, a glob, a text file of URIs, or any fsspec URL (s3://…)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import fsspec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    uri: str
    bytes: int
    mtime: float


def discover(sources: list[str], extensions: tuple[str, ...], storage_options: dict | None = None) -> list[Source]:
    """Expand ``sources`` into a sorted, de-duplicated list of video files with size and mtime."""
    found: dict[str, Source] = {}
    for src in sources:
        for s in _expand(src, extensions, storage_options or {}):
            found[s.uri] = s
    if not found:
        raise ValueError(f"no input videos found in {sources} (extensions: {', '.join(extensions)})")
    return [found[k] for k in sorted(found)]


def _expand(src: str, exts: tuple[str, ...], opts: dict) -> list[Source]:
    if "://" not in src and src.endswith((".txt", ".list")) and os.path.isfile(src):
        with open(src) as f:
            uris = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        return [s for u in uris for s in _expand(u, exts, opts)]
    fs, path = fsspec.core.url_to_fs(src, **opts)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if any(c in path for c in "*?["):
        paths = fs.glob(path)
    elif fs.isdir(path):
        paths = [p for p in fs.find(path) if p.rsplit(".", 1)[-1].lower() in exts]
    elif fs.exists(path):
        paths = [path]  # named explicitly: taken whatever its extension
    else:
        raise ValueError(f"input {src!r} does not exist")
    out = []
    for p in paths:
        info = fs.info(p)
        if info.get("type") == "directory":
            continue
        uri = os.path.abspath(p) if protocol in ("file", "local") else f"{protocol}://{p}"
        out.append(Source(uri, int(info.get("size") or 0), _mtime(info)))
    return out


def _mtime(info: dict) -> float:
    for k in ("mtime", "LastModified", "last_modified", "created"):
        v = info.get(k)
        if v is None:
            continue
        return float(v.timestamp()) if hasattr(v, "timestamp") else float(v)
    return 0.0
