"""Probe a video file and decide whether ingest can use it.

`probe_video(path)` returns a `VideoProbe` with everything the catalog's `videos` table needs, or
raises `QuarantineError(error_class, message)` with a stable slug from `ERROR_CLASSES`; the ingest
stage records the slug and moves on. Probing demuxes every video packet (no decoding: cheap) to
count frames, measure timing and catch truncation, then decodes the first and the last frames.

Time convention shared with the shot splitter and `extract_clip`: a frame's time in seconds is
`(pts - stream.start_time) * time_base` (`frame_time_s`), so the stream starts at 0 s.

`video_id` is the first 16 hex characters (64 bits) of the sha256 of the file's bytes.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

ERROR_CLASSES: tuple[str, ...] = (
    "empty_file",       # zero bytes
    "not_a_video",      # no container FFmpeg recognises (random bytes, text, a still image)
    "no_video_stream",  # a container without a video stream (audio only)
    "truncated",        # the file is cut short: missing index, fewer packets than declared, tail fails
    "decode_error",     # a video stream whose first frames do not decode
    "too_small",        # a side shorter than MIN_SIDE pixels
    "too_short",        # fewer than MIN_FRAMES frames
)
MIN_SIDE = 16
MIN_FRAMES = 2
VIDEO_ID_HEX = 16
TAIL_DECODE_MAX_S = 30.0  # longer final GOPs are not decoded by the tail check (cost)
HASH_CHUNK = 8 << 20

# Demuxers that FFmpeg offers for things that are not videos (stills, text rendered as video).
_NOT_VIDEO_FORMATS = re.compile(r"(^|,)(image2|tty|[a-z0-9]+_pipe|gif)(,|$)")
_ISO_BOX_TYPES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot", b"styp"}


class QuarantineError(Exception):
    """A file ingest cannot use; `error_class` is one of `ERROR_CLASSES`."""

    def __init__(self, error_class: str, message: str):
        if error_class not in ERROR_CLASSES:
            raise ValueError(f"unknown error class {error_class!r}; use one of {ERROR_CLASSES}")
        super().__init__(f"{error_class}: {message}")
        self.error_class = error_class
        self.message = message


@dataclass(frozen=True)
class VideoProbe:
    """What ingest knows about a usable video (sizes are stored pixels, before rotation)."""

    container: str        # demuxer short name: mp4, mov, matroska, avi …
    codec: str            # canonical codec name: h264, hevc, vp9, mpeg4 …
    width: int
    height: int
    sar: str              # sample aspect ratio "num:den"
    sar_float: float
    display_width: int    # round(width * sar): the width a player shows
    pix_fmt: str
    bit_depth: int
    fps: float            # average frame rate
    duration_s: float     # when the last frame ends, in frame time (from the 0 s origin)
    n_frames: int         # demuxed video packets
    rotation: int         # counter-clockwise degrees from the display matrix / rotate tag
    has_audio: bool
    vfr: bool             # frame intervals are irregular
    start_time_s: float   # stream start time (the 0 s origin of frame times)
    time_base: str        # stream time base "num/den"
    size_bytes: int


@dataclass(frozen=True)
class PacketScan:
    """Timing of a stream's packets, gathered by demuxing without decoding."""

    pts: np.ndarray            # int64 presentation timestamps, sorted (ticks)
    last_keyframe_pts: int | None
    corrupt: bool              # the demuxer flagged a packet or stopped with an error


def hash_file(path_or_fileobj: str | os.PathLike | BinaryIO, chunk: int = HASH_CHUNK) -> str:
    """sha256 hex digest of a file's bytes, read in `chunk`-sized pieces."""
    digest = hashlib.sha256()
    if isinstance(path_or_fileobj, (str, os.PathLike)):
        with open(path_or_fileobj, "rb") as f:
            return hash_file(f, chunk)
    while block := path_or_fileobj.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def video_id_from_hash(sha256_hex: str) -> str:
    """The catalog's `video_id`: the first 16 hex characters of the file's sha256."""
    return sha256_hex[:VIDEO_ID_HEX]


def stream_origin(stream: av.video.stream.VideoStream) -> int:
    """The pts that maps to 0 s: the stream's start time, or 0 when the header has none."""
    return stream.start_time if stream.start_time is not None else 0


def frame_time_s(pts: int, stream: av.video.stream.VideoStream) -> float:
    """Seconds of presentation time of a timestamp in `stream`'s time base."""
    return float((pts - stream_origin(stream)) * stream.time_base)


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Describe a video file, or raise `QuarantineError` saying why it cannot be used."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size == 0:
        raise QuarantineError("empty_file", "the file has zero bytes")
    with _open_or_quarantine(path) as container:
        if _iso_box_past_eof(path, size):
            raise QuarantineError("truncated", "an mp4/mov box extends past the end of the file")
        stream = _video_stream_or_quarantine(container)
        scan = scan_packets(container, stream)
        _check_complete(stream, scan)
        width, height = stream.codec_context.width, stream.codec_context.height
        if min(width, height) < MIN_SIDE:
            raise QuarantineError("too_small", f"{width}x{height} has a side under {MIN_SIDE} px")
        first = _decode_head(container, stream)
        _decode_tail(container, stream, scan)
        if len(scan.pts) < MIN_FRAMES:
            raise QuarantineError("too_short", f"{len(scan.pts)} frame(s), need {MIN_FRAMES}")
        return _describe(container, stream, scan, first, size)


def _open_or_quarantine(path: str) -> av.container.InputContainer:
    """Open `path`; a file FFmpeg cannot open is truncated if it starts like a container."""
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:
        if _looks_like_container(path):
            raise QuarantineError("truncated", f"container header found but FFmpeg fails: {e}") from e
        raise QuarantineError("not_a_video", f"FFmpeg recognises no container: {e}") from e
    if _NOT_VIDEO_FORMATS.search(container.format.name):
        container.close()
        raise QuarantineError("not_a_video", f"demuxer {container.format.name!r} is not video")
    return container


def _video_stream_or_quarantine(container: av.container.InputContainer):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise QuarantineError("no_video_stream", f"streams: {', '.join(kinds)}")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _looks_like_container(path: str) -> bool:
    """True if the first bytes carry a known video container signature."""
    with open(path, "rb") as f:
        head = f.read(512)
    return (
        head[4:8] in _ISO_BOX_TYPES                         # ISO BMFF: mp4, mov, m4v, 3gp
        or head.startswith(b"\x1a\x45\xdf\xa3")             # EBML: matroska, webm
        or (head.startswith(b"RIFF") and head[8:11] == b"AVI")
        or head.startswith((b"OggS", b"FLV\x01", b"\x00\x00\x01\xba"))
        or head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")  # ASF / WMV
        or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47)  # MPEG-TS
    )


def scan_packets(container: av.container.InputContainer, stream) -> PacketScan:
    """Demux every packet of `stream` from the start (no decoding) and collect its timing."""
    pts, last_key, corrupt = [], None, False
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet PyAV yields at the end
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                continue
            pts.append(ts)
            corrupt |= packet.is_corrupt
            if packet.is_keyframe:
                last_key = ts if last_key is None else max(last_key, ts)
    except av.FFmpegError:
        corrupt = True
    return PacketScan(np.sort(np.asarray(pts, dtype=np.int64)), last_key, corrupt)


def _check_complete(stream, scan: PacketScan) -> None:
    """Raise `truncated` when the stream holds less than its header promises (more than 2 %
    and 2 frames short: headers of files in the wild are a little off)."""
    if scan.corrupt:
        raise QuarantineError("truncated", "the demuxer hit a damaged or incomplete packet")
    declared = stream.frames or 0
    if declared and len(scan.pts) < 0.98 * declared - 2:
        raise QuarantineError("truncated", f"{len(scan.pts)} of {declared} declared frames")
    declared_s = _declared_duration_s(stream)
    found_s = _end_s(scan, stream)
    slack_s = 2 * float(typical_interval(scan.pts) * stream.time_base)
    if declared_s and found_s < 0.98 * declared_s - slack_s:
        raise QuarantineError("truncated", f"{found_s:.2f}s of {declared_s:.2f}s declared")


def _iso_box_past_eof(path: str, size: int) -> bool:
    """Walk the top-level boxes of an ISO BMFF file; True if one claims bytes past EOF."""
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            header = f.read(16)
            box_size, box_type = int.from_bytes(header[:4], "big"), header[4:8]
            if offset == 0 and box_type not in _ISO_BOX_TYPES:
                return False  # not an ISO BMFF file
            if box_size == 1:
                box_size = int.from_bytes(header[8:16], "big")
            if box_size == 0:
                return False  # the box runs to the end of the file by definition
            if box_size < 8 or offset + box_size > size:
                return True
            offset += box_size
    return False


def _declared_duration_s(stream) -> float | None:
    """The duration the header claims for this stream (mp4/avi field or matroska tag)."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", tag or "")
    if match:
        h, m, s = match.groups()
        return int(h) * 3600 + int(m) * 60 + float(s)
    return None


def _end_s(scan: PacketScan, stream) -> float:
    """Frame time at which the last frame ends, the last frame lasting the median frame
    interval (containers disagree on how to store its own duration). Every frame's time is
    below it, so `[cut_s, duration_s)` always holds the last shot."""
    if len(scan.pts) == 0:
        return 0.0
    rate = stream.average_rate or stream.guessed_rate
    nominal = round(1 / (rate * stream.time_base)) if rate else 0
    end = int(scan.pts[-1]) + (typical_interval(scan.pts) or nominal)
    return float((end - stream_origin(stream)) * stream.time_base)


def typical_interval(sorted_pts: np.ndarray) -> int:
    """Median interval between consecutive timestamps (ticks); 0 for a single frame."""
    deltas = np.diff(np.asarray(sorted_pts, dtype=np.int64))
    return int(np.median(deltas)) if len(deltas) else 0


def _decode_head(container, stream, n: int = MIN_FRAMES) -> av.VideoFrame:
    """Decode the first frames; raise `decode_error` if none come out."""
    container.seek(stream_origin(stream), stream=stream, backward=True)
    frames = []
    try:
        for frame in container.decode(stream):
            frames.append(frame)
            if len(frames) >= n:
                break
    except av.FFmpegError as e:
        raise QuarantineError("decode_error", f"first frames fail to decode: {e}") from e
    if not frames:
        raise QuarantineError("decode_error", "the video stream yields no decodable frame")
    return frames[0]


def _decode_tail(container, stream, scan: PacketScan) -> None:
    """Decode from the last keyframe to the end; a failure there means a truncated file."""
    if scan.last_keyframe_pts is None:
        return
    tail_s = float((int(scan.pts[-1]) - scan.last_keyframe_pts) * stream.time_base)
    if tail_s > TAIL_DECODE_MAX_S:
        return
    container.seek(scan.last_keyframe_pts, stream=stream, backward=True)
    try:
        for _ in container.decode(stream):
            pass
    except av.FFmpegError as e:
        raise QuarantineError("truncated", f"the last frames fail to decode: {e}") from e


def _describe(container, stream, scan: PacketScan, first: av.VideoFrame, size: int) -> VideoProbe:
    cc = stream.codec_context
    sar = sample_aspect_ratio(stream)
    duration_s = _end_s(scan, stream)
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else (len(scan.pts) / duration_s if duration_s else 0.0)
    return VideoProbe(
        container=_container_name(container),
        codec=cc.codec.canonical_name,
        width=cc.width,
        height=cc.height,
        sar=f"{sar.numerator}:{sar.denominator}",
        sar_float=float(sar),
        display_width=round(cc.width * sar),
        pix_fmt=cc.pix_fmt,
        bit_depth=max(c.bits for c in cc.format.components),
        fps=fps,
        duration_s=duration_s,
        n_frames=len(scan.pts),
        rotation=_rotation(stream, first),
        has_audio=bool(container.streams.audio),
        vfr=is_variable_frame_rate(scan.pts),
        start_time_s=float(stream_origin(stream) * stream.time_base),
        time_base=f"{stream.time_base.numerator}/{stream.time_base.denominator}",
        size_bytes=size,
    )


def sample_aspect_ratio(stream) -> Fraction:
    """Container SAR if set (FFmpeg's preference), else the codec's, else square pixels."""
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar and sar > 0:
            return Fraction(sar)
    return Fraction(1)


def _rotation(stream, first: av.VideoFrame) -> int:
    """Counter-clockwise rotation from the display matrix, else the legacy `rotate` tag."""
    return normalize_rotation(first.rotation or float(stream.metadata.get("rotate", 0) or 0))


def normalize_rotation(degrees: float) -> int:
    """Degrees rounded to a quarter turn, in 0/90/180/270."""
    return int(round(degrees / 90.0)) * 90 % 360


def _container_name(container) -> str:
    """A short name: the ISO BMFF family splits into mov (QuickTime brand) and mp4."""
    name = container.format.name
    if name.startswith("mov,"):
        return "mov" if container.metadata.get("major_brand", "").strip() == "qt" else "mp4"
    return name.split(",")[0]


def is_variable_frame_rate(pts: np.ndarray, rel_tol: float = 0.05, min_ticks: int = 2) -> bool:
    """True if frame intervals vary: ≥ 2 (and ≥ 1 %) of them differ from the median by more
    than `rel_tol` of it (and by more than `min_ticks` ticks, which time-base rounding causes)."""
    deltas = np.diff(np.asarray(pts, dtype=np.int64))
    if len(deltas) < 2:
        return False
    median = float(np.median(deltas))
    deviant = np.abs(deltas - median) > max(rel_tol * median, min_ticks)
    return int(deviant.sum()) >= max(2, 0.01 * len(deltas))


def sorted_by_pts(frames: Iterable[av.VideoFrame], window: int = 16) -> Iterator[av.VideoFrame]:
    """Re-order decoded frames by pts within a sliding window (some AVIs emit them out of
    order). Frames without a pts get their predecessor's pts plus one tick."""
    heap: list[tuple[int, int, av.VideoFrame]] = []
    last_pts, seq = None, 0
    for frame in frames:
        pts = frame.pts if frame.pts is not None else (last_pts or 0) + 1
        last_pts, seq = pts, seq + 1
        heapq.heappush(heap, (pts, seq, frame))
        if len(heap) > window:
            yield _with_pts(heapq.heappop(heap))
    while heap:
        yield _with_pts(heapq.heappop(heap))


def _with_pts(item: tuple[int, int, av.VideoFrame]) -> av.VideoFrame:
    pts, _, frame = item
    frame.pts = pts
    return frame
