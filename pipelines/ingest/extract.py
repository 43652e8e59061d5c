"""Cut one clip out of a source video into an H.264 mp4, frame-exact.

`extract_clip` keeps exactly the frames whose presentation time (`probe.frame_time_s`) lies in
`[start_s, end_s)`: the clip starts on the shot's first frame and stops before the next shot's.
Output timestamps restart at 0 and keep the source's relative timing, so variable frame rate
survives. Two methods:

- `copy`: remux the source packets unchanged. Used when it is exact: an H.264 yuv420p source in
  mp4/mov/matroska, the span starts on a keyframe and the packets from that keyframe to the next
  keyframe at or after `end_s` are exactly the span's frames (no `max_side`).
- `reencode`: decode, convert, encode with libx264 (yuv420p, `crf`, `preset`).

Geometry choices: native pixels are kept and the sample aspect ratio (SAR) and the display
rotation are carried into the output as metadata (SAR in the stream and the H.264 VUI, rotation
as a display matrix), never resampled. 4:2:0 needs even sides, so an odd width or height gets one
column/row of edge replication on the right/bottom (`ClipInfo.pad_w/pad_h`); no content is
cropped. 10-bit and 4:4:4 sources become 8-bit 4:2:0. `max_side` downscales, keeping the aspect
ratio, to even sides of at most `max_side` pixels.

Clips are video-only (audio is not carried). The output is written to `out_path + ".tmp"` and
renamed, so a reader never sees a partial clip.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction

import av
import numpy as np

from pipelines.ingest.probe import (
    QuarantineError,
    frame_time_s,
    normalize_rotation,
    sample_aspect_ratio,
    scan_packets,
    sorted_by_pts,
    stream_origin,
)

log = logging.getLogger(__name__)

OUT_TIME_BASE = Fraction(1, 90000)
MIN_EPS_S = 1e-4           # timestamps closer than this are the same instant
COPY_CODECS = {"h264"}
COPY_PIX_FMTS = {"yuv420p"}
COPY_LOOKAHEAD = 16        # packets checked past the end keyframe for stragglers of the span


@dataclass(frozen=True)
class ClipInfo:
    """What `extract_clip` wrote (sizes are the encoded ones, padding included)."""

    width: int
    height: int
    n_frames: int
    fps: float
    duration_s: float
    method: str            # "copy" or "reencode"
    bytes: int
    pad_w: int = 0         # columns replicated on the right to make the width even
    pad_h: int = 0         # rows replicated at the bottom to make the height even
    sar: str = "1:1"
    rotation: int = 0      # counter-clockwise degrees carried as a display matrix
    start_s: float = 0.0   # source time of the clip's first frame


@dataclass(frozen=True)
class Span:
    """Half-open `[start_s, end_s)` in seconds; a time within `eps_s` of a bound is at it (a
    container time base rounds the true time, e.g. to milliseconds in matroska)."""

    start_s: float
    end_s: float
    eps_s: float = MIN_EPS_S

    @classmethod
    def for_stream(cls, stream, start_s: float, end_s: float) -> Span:
        eps = max(MIN_EPS_S, float(stream.time_base) / 2)
        interval = _nominal_interval_s(stream)
        return cls(start_s, end_s, min(eps, interval / 4) if interval else eps)

    def before(self, t: float) -> bool:
        return t < self.start_s - self.eps_s

    def after(self, t: float) -> bool:
        return t >= self.end_s - self.eps_s

    def contains(self, t: float) -> bool:
        return not self.before(t) and not self.after(t)


@dataclass(frozen=True)
class _Geometry:
    width: int             # encoded size
    height: int
    scaled: bool           # resampled to (width, height) for max_side
    pad_w: int
    pad_h: int


@dataclass
class _Timeline:
    """Source times (seconds) of the frames written, and the first frame after the span."""

    times: list[float]
    next_s: float | None = None
    default_interval_s: float = 0.0  # duration of a lone last frame

    def info(self, **fields) -> ClipInfo:
        n = len(self.times)
        if self.next_s is not None:
            last = self.next_s - self.times[-1]
        else:
            last = float(np.median(np.diff(self.times))) if n > 1 else self.default_interval_s
        duration = self.times[-1] + last - self.times[0]
        fps = n / duration if duration > 0 else 0.0
        return ClipInfo(n_frames=n, duration_s=duration, fps=fps, start_s=self.times[0], **fields)


def extract_clip(
    src_path: str | os.PathLike,
    start_s: float | None,
    end_s: float | None,
    out_path: str | os.PathLike,
    *,
    start_frame: int | None = None,
    end_frame: int | None = None,
    max_side: int | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    allow_stream_copy: bool = True,
) -> ClipInfo:
    """Write the frames of `src_path` presented in `[start_s, end_s)` to `out_path` (mp4).

    Frames are selected by time. `start_frame`/`end_frame` (0-based presentation indices, end
    exclusive) are the caller's view of the same span: a clip with a different frame count is
    logged as a warning. With `start_s=None` the span comes from the frame indices instead (one
    demux of the whole file). Raises `ValueError` for an empty span and
    `QuarantineError("decode_error")` when the frames do not decode.
    """
    if max_side is not None and max_side < 2:
        raise ValueError(f"max_side must be at least 2, got {max_side}")
    out_path = os.fspath(out_path)
    tmp = out_path + ".tmp"
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    try:
        with av.open(os.fspath(src_path)) as src:
            stream = src.streams.video[0]
            stream.thread_type = "AUTO"
            if start_s is None:
                start_s, end_s = _frames_to_span(src, stream, start_frame, end_frame)
            if not end_s > start_s:
                raise ValueError(f"empty span [{start_s}, {end_s})")
            span = Span.for_stream(stream, start_s, end_s)
            info = None
            if allow_stream_copy and max_side is None and _copy_eligible(src, stream):
                info = _try_copy(src, stream, span, tmp)
            if info is None:
                info = _reencode(src, stream, span, tmp, max_side, crf, preset)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if start_frame is not None and end_frame is not None:
        if info.n_frames != end_frame - start_frame:
            log.warning("%s [%.4f, %.4f): %d frames, the caller expected %d (frames %d-%d)",
                        src_path, start_s, end_s, info.n_frames, end_frame - start_frame,
                        start_frame, end_frame)
    return replace(info, bytes=os.path.getsize(out_path))


def _frames_to_span(src, stream, start_frame: int | None,
                    end_frame: int | None) -> tuple[float, float]:
    """Map presentation frame indices to `[start_s, end_s)` through the packet timestamps."""
    if start_frame is None:
        raise ValueError("give start_s or start_frame")
    pts = scan_packets(src, stream).pts
    if not 0 <= start_frame < len(pts):
        raise ValueError(f"start_frame {start_frame} outside 0..{len(pts) - 1}")
    end_frame = len(pts) if end_frame is None else end_frame
    if end_frame <= start_frame:
        raise ValueError(f"end_frame {end_frame} must exceed start_frame {start_frame}")
    end_s = frame_time_s(int(pts[end_frame]), stream) if end_frame < len(pts) else float("inf")
    return frame_time_s(int(pts[start_frame]), stream), end_s


def _nominal_interval_s(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(1 / rate) if rate else 0.0


# ---------------------------------------------------------------------------------- copy


def _copy_eligible(src, stream) -> bool:
    """Sources whose packets can go into an mp4 clip unchanged."""
    fmt = src.format.name
    return (
        stream.codec_context.codec.canonical_name in COPY_CODECS
        and stream.codec_context.pix_fmt in COPY_PIX_FMTS
        and (fmt.startswith("mov,") or fmt.startswith("matroska"))
    )


def _try_copy(src, stream, span: Span, tmp: str) -> ClipInfo | None:
    """Remux the span if its packets are exactly its frames, else return None."""
    plan = _plan_copy(src, stream, span)
    if plan is None:
        return None
    segment, next_s = plan
    times = sorted(frame_time_s(p.pts, stream) for p in segment)
    _write_copy(tmp, stream, segment)
    sar = sample_aspect_ratio(stream)
    return _Timeline(times, next_s, _nominal_interval_s(stream)).info(
        width=stream.codec_context.width, height=stream.codec_context.height, method="copy",
        bytes=0, sar=f"{sar.numerator}:{sar.denominator}", rotation=_stream_rotation(src, stream))


def _plan_copy(src, stream, span: Span):
    """Packets (decode order) from the keyframe that starts the span to the next keyframe at or
    after its end, and the time of the first frame after the span; None if that is not exact."""
    _seek(src, stream, span.start_s)
    before, segment, after = [], [], []
    for packet in src.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue
        t = frame_time_s(packet.pts, stream)
        if after or (segment and packet.is_keyframe and span.after(t)):
            after.append(t)
            if len(after) > COPY_LOOKAHEAD:
                break
        elif segment or not span.before(t):
            if not segment and not packet.is_keyframe:
                return None  # the span does not start on a keyframe
            segment.append(packet)
        else:
            before.append(t)
    return _exact_plan(stream, span, before, segment, after)


def _exact_plan(stream, span: Span, before: list[float], segment: list, after: list[float]):
    if not segment:
        return None
    if any(not span.before(t) for t in before):
        return None
    first_s = frame_time_s(segment[0].pts, stream)
    if not before and first_s > span.start_s + span.eps_s and span.start_s > 0:
        return None  # the seek may have landed past earlier frames of the span
    if any(not span.contains(frame_time_s(p.pts, stream)) for p in segment):
        return None
    if any(not span.after(t) for t in after):
        return None
    return segment, (min(after) if after else None)


def _write_copy(tmp: str, stream, segment: list[av.Packet]) -> None:
    """Remux `segment` so the first presented frame is at 0."""
    shift = min(p.pts for p in segment)
    dts = _decode_timestamps(segment)
    with av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as out:
        ostream = out.add_stream_from_template(stream)
        for packet, d in zip(segment, dts, strict=True):
            packet.pts, packet.dts = packet.pts - shift, d - shift
            packet.stream = ostream
            out.mux(packet)


def _decode_timestamps(segment: list[av.Packet]) -> list[int]:
    """The packets' dts, rebuilt from the pts when the demuxer left some unset (matroska)."""
    if all(p.dts is not None for p in segment):
        return [p.dts for p in segment]
    pts = [p.pts for p in segment]
    ordered = sorted(pts)
    delay = max(0, max(o - p for o, p in zip(ordered, pts, strict=True)))
    return [o - delay for o in ordered]


def _stream_rotation(src, stream) -> int:
    """Rotation of the source, read from its first decoded frame."""
    _seek(src, stream, 0.0)
    for frame in src.decode(stream):
        return normalize_rotation(frame.rotation or 0)
    return 0


# ------------------------------------------------------------------------------ reencode


def _reencode(src, stream, span: Span, tmp: str, max_side, crf: int, preset: str) -> ClipInfo:
    """Decode the span, convert each frame and encode it with libx264."""
    geometry = output_geometry(stream.codec_context.width, stream.codec_context.height, max_side)
    timeline = _Timeline([], default_interval_s=_nominal_interval_s(stream))
    with av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as out:
        encoder = None
        for t, frame in _span_frames(src, stream, span, timeline):
            if encoder is None:
                encoder = _Encoder(out, stream, geometry, frame, crf, preset)
            encoder.push(t, _convert(frame, geometry))
        if encoder is None:
            raise ValueError(f"no frame of {src.name} lies in [{span.start_s}, {span.end_s})")
        encoder.close(timeline.next_s)
    sar = sample_aspect_ratio(stream)
    return timeline.info(
        width=geometry.width, height=geometry.height, method="reencode", bytes=0,
        pad_w=geometry.pad_w, pad_h=geometry.pad_h, sar=f"{sar.numerator}:{sar.denominator}",
        rotation=encoder.rotation)


def _span_frames(src, stream, span: Span, timeline: _Timeline) -> Iterator:
    """(source time, frame) for the frames in the span, recording them in `timeline`."""
    try:
        for t, frame in _frames_from(src, stream, span):
            if span.before(t):
                continue
            if span.after(t):
                timeline.next_s = t
                return
            timeline.times.append(t)
            yield t, frame
    except av.FFmpegError as e:
        raise QuarantineError("decode_error",
                              f"frames near {span.start_s:.3f}s fail to decode: {e}") from e


def _seek(src, stream, target_s: float) -> None:
    """Seek to the last keyframe at or before `target_s` (seconds of presentation time)."""
    target = stream_origin(stream) + int(max(target_s, 0.0) / stream.time_base)
    src.seek(target, stream=stream, backward=True)


def _frames_from(src, stream, span: Span) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames in presentation order from a keyframe at or before the span's start. A
    seek can land past it (index entries are decode times); then seek further back, retry."""
    back_s = 0.0
    while True:
        target_s = max(span.start_s - back_s, 0.0)
        _seek(src, stream, target_s)
        frames = sorted_by_pts(src.decode(stream))
        first = next(frames, None)
        if first is None:
            return
        t0 = frame_time_s(first.pts, stream)
        if t0 <= span.start_s + span.eps_s or target_s == 0.0:
            yield t0, first
            for frame in frames:
                yield frame_time_s(frame.pts, stream), frame
            return
        back_s = max(2 * back_s, 1.0)


def output_geometry(width: int, height: int, max_side: int | None) -> _Geometry:
    """Encoded size: downscaled to `max_side` (even sides) or native, padded to even."""
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        w, h = (max(2, int(v * scale) // 2 * 2) for v in (width, height))
        return _Geometry(w, h, scaled=True, pad_w=0, pad_h=0)
    pad_w, pad_h = width % 2, height % 2
    return _Geometry(width + pad_w, height + pad_h, scaled=False, pad_w=pad_w, pad_h=pad_h)


def _convert(frame: av.VideoFrame, geometry: _Geometry) -> av.VideoFrame:
    """8-bit yuv420p at the encoded size; odd sides are padded by edge replication."""
    if geometry.pad_w or geometry.pad_h:
        planes = frame.reformat(format="yuv444p").to_ndarray()  # (3, H, W)
        planes = np.pad(planes, ((0, 0), (0, geometry.pad_h), (0, geometry.pad_w)), mode="edge")
        return av.VideoFrame.from_ndarray(planes, format="yuv444p").reformat(format="yuv420p")
    if geometry.scaled:
        return frame.reformat(geometry.width, geometry.height, "yuv420p", interpolation="AREA")
    return frame.reformat(format="yuv420p")


class _Encoder:
    """libx264 into an mp4 stream. Frames are held back by one so each one's duration (the gap
    to the next) is known; the muxer needs it for the last frame."""

    def __init__(self, out, src_stream, geometry: _Geometry, first, crf: int, preset: str):
        rate = src_stream.average_rate or src_stream.guessed_rate or 25
        self.out = out
        self.stream = out.add_stream("libx264", rate=rate,
                                     options={"crf": str(crf), "preset": preset})
        self.stream.width, self.stream.height = geometry.width, geometry.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = self.stream.codec_context.time_base = OUT_TIME_BASE
        _copy_colour_tags(src_stream.codec_context, self.stream.codec_context)
        sar = sample_aspect_ratio(src_stream)
        if sar != 1:
            self.stream.codec_context.sample_aspect_ratio = sar
        self.rotation = normalize_rotation(first.rotation or 0)
        if self.rotation:
            self.stream.set_display_rotation(self.rotation)
        self.default_ticks = max(1, round(_nominal_interval_s(src_stream) / OUT_TIME_BASE))
        self.t0: float | None = None
        self.held: tuple[float, av.VideoFrame] | None = None
        self.last_pts: int | None = None
        self.durations: dict[int, int] = {}  # pts -> ticks until the next frame

    def push(self, t: float, frame: av.VideoFrame) -> None:
        if self.t0 is None:
            self.t0 = t
        if self.held is not None:
            self._encode(*self.held, next_t=t)
        self.held = (t, frame)

    def close(self, next_s: float | None) -> None:
        """Encode the held frame (lasting until `next_s`, or one interval) and flush."""
        t, frame = self.held
        self._encode(t, frame, next_t=next_s)
        self._mux(self.stream.encode(None))

    def _encode(self, t: float, frame: av.VideoFrame, next_t: float | None) -> None:
        pts = self._ticks(t) if self.last_pts is None else max(self._ticks(t), self.last_pts + 1)
        if next_t is not None:
            end = self._ticks(next_t)
        else:  # the last frame of the file: as long as the one before, or nominal
            end = pts + (pts - self.last_pts if self.last_pts is not None else self.default_ticks)
        frame.pts, frame.time_base = pts, OUT_TIME_BASE
        self.durations[pts] = max(1, end - pts)
        self.last_pts = pts
        self._mux(self.stream.encode(frame))

    def _ticks(self, t: float) -> int:
        return round((t - self.t0) / OUT_TIME_BASE)

    def _mux(self, packets) -> None:
        for packet in packets:
            packet.duration = self.durations.get(packet.pts, packet.duration)
            self.out.mux(packet)


def _copy_colour_tags(src_ctx, dst_ctx) -> None:
    """Carry colour metadata; full-range (yuvj) sources are converted to limited range."""
    dst_ctx.colorspace = src_ctx.colorspace
    dst_ctx.color_primaries = src_ctx.color_primaries
    dst_ctx.color_trc = src_ctx.color_trc
    if not (src_ctx.pix_fmt or "").startswith("yuvj"):
        dst_ctx.color_range = src_ctx.color_range
