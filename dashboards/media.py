"""Serving clip media and training samples safely: only files inside the corpus root.

Catalog rows and run folders name media by a path *relative to the root* (``clips/ab/<id>.mp4``,
``runs/<run>/samples/step-001000.mp4``). Before any byte is read, the path is resolved (``..`` and
symlinks followed) and refused unless it stays inside the root; absolute paths, URLs and other
suffixes are refused outright. The bytes are then read here and handed to ``st.video`` /
``st.image``, so the browser never gets a path to fetch.
"""
from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath

MEDIA_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime",
               ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
MAX_BYTES = 512 * 1024 * 1024


class MediaError(ValueError):
    """A media path that is refused (outside the root, absolute, unknown type) or missing."""


def resolve_media(root, relpath: str) -> str:
    """The full path of ``relpath`` inside ``root`` (a CorpusRoot); MediaError when refused."""
    rel = str(relpath or "").strip()
    if not rel or "\x00" in rel:
        raise MediaError("refused: empty media path")
    if "://" in rel or rel.startswith(("/", "\\", "~")) or PurePosixPath(rel).is_absolute() or ":" in rel[:3]:
        raise MediaError(f"refused: {rel!r} is not a path relative to the corpus root")
    suffix = PurePosixPath(rel).suffix.lower()
    if suffix not in MEDIA_TYPES:
        raise MediaError(f"refused: {rel!r} is not a media file ({', '.join(sorted(MEDIA_TYPES))})")
    if root.is_local:
        return _resolve_local(Path(root.path), rel)
    normal = posixpath.normpath(rel)
    if normal == ".." or normal.startswith("../"):
        raise MediaError(f"refused: {rel!r} points outside the corpus root")
    return root.join(normal)


def read_media(root, relpath: str, max_bytes: int = MAX_BYTES) -> tuple[bytes, str]:
    """The bytes and MIME type of a media file inside the root; MediaError when refused or missing."""
    path = resolve_media(root, relpath)
    try:
        size = root.fs.size(path)
        if size > max_bytes:
            raise MediaError(f"{relpath}: {size} bytes is over the {max_bytes}-byte limit")
        with root.fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise MediaError(f"{relpath}: no such file in the corpus root") from None
    return data, MEDIA_TYPES[PurePosixPath(relpath).suffix.lower()]


def _resolve_local(root_dir: Path, rel: str) -> str:
    base = root_dir.resolve()
    target = (base / rel).resolve()  # follows ``..`` and symlinks: judge where it really points
    if not target.is_relative_to(base):
        raise MediaError(f"refused: {rel!r} points outside the corpus root")
    return str(target)
