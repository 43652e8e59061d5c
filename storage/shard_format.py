"""The shard sample format: names, member order, validation, tar encoding, decoding, index schema.

Shared by the writer (:mod:`storage.shards`) and the reader (:mod:`storage.shard_reader`).
A sample is a dict keyed like WebDataset members (ARCHITECTURE.md, "Shards")::

    {"__key__": clip_id, "mp4": bytes, "json": {clip_id, video_id, uri, start_s, end_s, fps,
     width, height, n_frames, scores...}, "txt": caption, "captions.json": [dict, ...] (optional),
     "latent.npy": ndarray (optional), "text.npy": ndarray (optional)}

``json`` may also carry ``latent_tokens`` (int); it fills the index column of that name.
"""

from __future__ import annotations

import io
import json
import math
import re
import tarfile
from typing import Any

import numpy as np
import pyarrow as pa

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.parquet"
TMP_MARKER = ".tmp-"  # staged files are named "<final name>.tmp-<pid>"

MEMBER_ORDER = ("mp4", "json", "txt", "captions.json", "latent.npy", "text.npy")
REQUIRED_MEMBERS = ("mp4", "json", "txt")
REQUIRED_JSON_FIELDS = (
    "clip_id", "video_id", "uri", "start_s", "end_s", "fps", "width", "height", "n_frames",
)  # fmt: skip
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,199}")
TAR_BLOCK = tarfile.BLOCKSIZE
TAR_END = b"\0" * (2 * TAR_BLOCK)  # end-of-archive marker: two zero blocks

INDEX_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("shard", pa.string()),
        ("key", pa.string()),
        ("clip_id", pa.string()),
        ("video_id", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("n_frames", pa.int32()),
        ("fps", pa.float32()),
        ("duration_s", pa.float32()),
        ("caption_chars", pa.int32()),
        ("caption_words", pa.int32()),
        ("latent_tokens", pa.int32()),  # null when unknown
        ("bytes", pa.int64()),  # tar bytes of the sample's members (headers + padded data)
        ("offset", pa.int64()),  # byte offset of the sample's first member header
    ]
)


# --- validation -------------------------------------------------------------------------------


def check_name(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if "." in value:
        raise ValueError(f"{what} {value!r} contains '.', which WebDataset reads as a member suffix")
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} must match {SAFE_NAME.pattern} (letters, digits, _ and -)")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(value)


def _validate_meta(key: str, meta: Any) -> None:
    """Check the ``json`` member: a dict with the required fields, naming this clip."""
    if not isinstance(meta, dict):
        raise ValueError(f"sample {key!r}: 'json' must be a dict, got {type(meta).__name__}")
    missing = [name for name in REQUIRED_JSON_FIELDS if name not in meta]
    if missing:
        raise ValueError(f"sample {key!r}: 'json' is missing required field(s) {missing}")
    if meta["clip_id"] != key:
        raise ValueError(f"sample {key!r}: __key__ must equal json clip_id {meta['clip_id']!r}")
    _validate_meta_types(key, meta)


def _validate_meta_types(key: str, meta: dict[str, Any]) -> None:
    """Check the types and ranges of the ``json`` fields the index is built from."""
    for name in ("clip_id", "video_id", "uri"):
        if not isinstance(meta[name], str) or not meta[name]:
            raise ValueError(f"sample {key!r}: json {name!r} must be a non-empty string")
    for name in ("width", "height", "n_frames"):
        if not _is_int(meta[name]) or meta[name] <= 0:
            raise ValueError(f"sample {key!r}: json {name!r} must be a positive int, got {meta[name]!r}")
    for name in ("start_s", "end_s", "fps"):
        if not _is_number(meta[name]):
            raise ValueError(f"sample {key!r}: json {name!r} must be a finite number, got {meta[name]!r}")
    if meta["fps"] <= 0 or meta["end_s"] < meta["start_s"]:
        raise ValueError(f"sample {key!r}: need fps > 0 and end_s >= start_s")
    tokens = meta.get("latent_tokens")
    if tokens is not None and (not _is_int(tokens) or tokens < 0):
        raise ValueError(f"sample {key!r}: json 'latent_tokens' must be a non-negative int or absent")


def _validate_members(key: str, sample: dict[str, Any]) -> None:
    """Check which members are present and their Python types."""
    unknown = [m for m in sample if not m.startswith("__") and m not in MEMBER_ORDER]
    if unknown:
        raise ValueError(f"sample {key!r}: unknown member(s) {unknown}; allowed: {MEMBER_ORDER}")
    missing = [m for m in REQUIRED_MEMBERS if m not in sample]
    if missing:
        raise ValueError(f"sample {key!r}: missing required member(s) {missing}")
    mp4 = sample["mp4"]
    if not isinstance(mp4, (bytes, bytearray, memoryview)) or len(mp4) == 0:
        raise ValueError(f"sample {key!r}: 'mp4' must be non-empty bytes")
    if not isinstance(sample["txt"], str):
        raise ValueError(f"sample {key!r}: 'txt' must be a str caption")
    captions = sample.get("captions.json")
    if captions is not None and not (
        isinstance(captions, list) and all(isinstance(c, dict) for c in captions)
    ):
        raise ValueError(f"sample {key!r}: 'captions.json' must be a list of dicts")
    for name in ("latent.npy", "text.npy"):
        array = sample.get(name)
        if array is not None and (not isinstance(array, np.ndarray) or array.dtype.hasobject):
            raise ValueError(f"sample {key!r}: {name!r} must be a numpy array of a non-object dtype")


def validate_sample(sample: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the problem unless ``sample`` is writable as a shard sample."""
    if not isinstance(sample, dict):
        raise ValueError(f"a sample must be a dict, got {type(sample).__name__}")
    key = sample.get("__key__")
    check_name(key, "__key__")
    _validate_members(key, sample)
    _validate_meta(key, sample["json"])


# --- encoding ---------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """Let numpy scalars (common in scores) serialise as their Python values."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _member_bytes(name: str, value: Any) -> bytes:
    """Serialise one member's value deterministically."""
    if name.endswith("npy"):
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
        return buffer.getvalue()
    if name.endswith("json"):
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
        )
        return text.encode("utf-8")
    if name == "txt":
        return value.encode("utf-8")
    return bytes(value)


def _tar_member(name: str, data: bytes) -> bytes:
    """One regular-file tar member (header + data + padding) with fixed, reproducible metadata."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    header = info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
    return header + data + b"\0" * (-len(data) % TAR_BLOCK)


def encode_sample(sample: dict[str, Any]) -> bytes:
    """The tar bytes of one (validated) sample: its members in :data:`MEMBER_ORDER`."""
    key = sample["__key__"]
    parts = []
    for member in MEMBER_ORDER:
        if sample.get(member) is None:
            continue
        try:
            data = _member_bytes(member, sample[member])
        except (TypeError, ValueError) as exn:
            raise ValueError(f"sample {key!r}: cannot serialise {member!r}: {exn}") from exn
        parts.append(_tar_member(f"{key}.{member}", data))
    return b"".join(parts)


def index_row(sample: dict[str, Any]) -> dict[str, Any]:
    """Index columns that come from the sample itself (shard/offset/bytes are added by the writer)."""
    meta, caption = sample["json"], sample["txt"]
    return {
        "key": sample["__key__"],
        "clip_id": meta["clip_id"],
        "video_id": meta["video_id"],
        "width": int(meta["width"]),
        "height": int(meta["height"]),
        "n_frames": int(meta["n_frames"]),
        "fps": float(meta["fps"]),
        "duration_s": float(meta["end_s"]) - float(meta["start_s"]),
        "caption_chars": len(caption),
        "caption_words": len(caption.split()),
        "latent_tokens": None if meta.get("latent_tokens") is None else int(meta["latent_tokens"]),
    }


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Decode raw member bytes: ``*json`` → Python, ``txt`` → str, ``*npy`` → numpy array.

    ``mp4`` and unknown members stay bytes. Arrays load with ``allow_pickle=False`` and no
    pickle-based member is ever decoded, so a shard cannot run code on the reader.
    """
    decoded: dict[str, Any] = {}
    for name, value in sample.items():
        if name.startswith("__"):
            decoded[name] = value
        elif name == "json" or name.endswith(".json"):
            decoded[name] = json.loads(value)
        elif name == "txt" or name.endswith(".txt"):
            decoded[name] = value.decode("utf-8")
        elif name == "npy" or name.endswith(".npy"):
            decoded[name] = np.load(io.BytesIO(value), allow_pickle=False)
        else:
            decoded[name] = value
    return decoded
