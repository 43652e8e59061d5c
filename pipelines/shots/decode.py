"""Decode a video once into a compact :class:`FrameSet` for shot detection.

Every detector works on the same small arrays, so a video is decoded exactly once:

* ``yuv``: ``(n, 3, 27, 48)`` uint8 Y, U and V planes at 48x27 (aspect ratio squashed, area
  filtered by swscale), ~3.9 KB per frame;
* ``rgb``: ``(n, 27, 48, 3)`` uint8 RGB frames, the TransNetV2 input, converted from ``yuv`` on
  first use (BT.601, like ffmpeg's default conversion);
* ``pts_s``: ``(n,)`` float64 presentation timestamps in seconds, sorted (decoders may emit frames
  out of presentation order, and timestamps need not start at 0 or be evenly spaced).

Speed: small videos decode on one thread (see :class:`DecodeConfig`); one swscale call per frame, to 48x27 YUV 4:4:4 with a scaler context kept between frames
(``VideoFrame.reformat`` builds a new one per call, which costs more than decoding small videos).
The H.264/HEVC in-loop deblocking filter is skipped by default (``skip_loop_filter``): it only
polishes block edges, invisible at 48x27.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import av

from pipelines.ingest.probe import frame_time_s
import numpy as np
from av.video.reformatter import VideoReformatter

SIZE = (48, 27)  # (width, height) of the decoded thumbnails, TransNetV2's input size


class DecodeError(RuntimeError):
    """The file could not be decoded into at least one frame (error class ``decode_error``)."""


@dataclass(frozen=True)
class DecodeConfig:
    """Decoder threads, deblocking and the swscale filter of the thumbnails.

    Frames smaller than ``min_pixels_for_threads`` decode on one thread: for them FFmpeg's frame
    threads cost ~25% more CPU and gain no wall time on a busy machine (measured on 320x180 H.264;
    a pipeline runs one video per core anyway).
    """

    thread_type: str = "AUTO"
    min_pixels_for_threads: int = 640 * 360
    skip_loop_filter: bool = True
    interpolation: str = "AREA"  # FAST_BILINEAR is cheaper on large sources but aliases

    def __post_init__(self) -> None:
        if self.thread_type not in {"AUTO", "FRAME", "SLICE", "NONE"}:
            raise ValueError(f"thread_type must be AUTO, FRAME, SLICE or NONE, not {self.thread_type!r}")


@dataclass(frozen=True, eq=False)
class FrameSet:
    """Low-resolution frames of one video in presentation order, with their timestamps.

    ``cache`` holds signals derived from the frames (TransNetV2 probabilities ...) so that several
    detectors run on the same FrameSet compute them once.
    """

    yuv: np.ndarray  # (n, 3, 27, 48) uint8: Y, U, V planes
    pts_s: np.ndarray  # (n,) float64 seconds, sorted ascending
    avg_fps: float
    width: int  # native size of the video
    height: int
    path: str = ""
    cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.pts_s)
        assert self.yuv.shape == (n, 3, SIZE[1], SIZE[0]) and self.yuv.dtype == np.uint8, self.yuv.shape
        assert n == 0 or bool(np.all(np.diff(self.pts_s) >= 0)), "pts_s must be sorted"

    def __len__(self) -> int:
        return len(self.pts_s)

    @cached_property
    def rgb(self) -> np.ndarray:
        """``(n, 27, 48, 3)`` uint8 RGB frames (the TransNetV2 input), computed on first use."""
        return yuv_to_rgb(self.yuv)

    @property
    def frame_duration_s(self) -> float:
        """Nominal duration of one frame (1 / average fps)."""
        return 1.0 / self.avg_fps

    @property
    def duration_s(self) -> float:
        """From the first frame's timestamp to the end of the last frame."""
        return self.end_s - self.start_s

    @property
    def start_s(self) -> float:
        """Presentation time of the first frame."""
        return float(self.pts_s[0]) if len(self) else 0.0

    @property
    def end_s(self) -> float:
        """End of the last frame: its timestamp plus one nominal frame duration."""
        return float(self.pts_s[-1]) + self.frame_duration_s if len(self) else 0.0

    def time_of(self, frame: int) -> float:
        """Presentation time of frame index ``frame``; ``len(self)`` maps to :attr:`end_s`."""
        return self.end_s if frame >= len(self) else float(self.pts_s[frame])

    def frame_at(self, time_s: float) -> int:
        """Index of the frame whose timestamp is nearest to ``time_s``."""
        i = int(np.searchsorted(self.pts_s, time_s))
        if i > 0 and (i == len(self) or time_s - self.pts_s[i - 1] <= self.pts_s[i] - time_s):
            return i - 1
        return i


def decode_frames(path: str | Path, config: DecodeConfig = DecodeConfig()) -> FrameSet:
    """Decode the first video stream of ``path`` into a :class:`FrameSet`.

    Raises :class:`DecodeError` when the file cannot be opened, fails while decoding, or yields no
    frame.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            _configure(stream, config)
            pts, thumbs = _read_frames(container, stream, config.interpolation)
            avg_fps = _average_fps(stream, pts)
            width, height = stream.codec_context.width, stream.codec_context.height
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(f"{path}: {type(exc).__name__}: {exc}") from exc
    if not pts:
        raise DecodeError(f"{path}: no frame could be decoded")
    order = np.argsort(np.asarray(pts), kind="stable")  # presentation order
    yuv = np.frombuffer(b"".join(thumbs[i] for i in order), np.uint8)
    return FrameSet(
        yuv=yuv.reshape(len(pts), 3, SIZE[1], SIZE[0]),
        pts_s=np.asarray(pts, dtype=np.float64)[order],
        avg_fps=avg_fps,
        width=width,
        height=height,
        path=str(path),
    )


def _configure(stream: av.VideoStream, config: DecodeConfig) -> None:
    pixels = (stream.codec_context.width or 0) * (stream.codec_context.height or 0)
    stream.thread_type = config.thread_type if pixels >= config.min_pixels_for_threads else "NONE"
    if config.skip_loop_filter:
        stream.codec_context.options = {"skip_loop_filter": "all"}


def _read_frames(container, stream, interpolation: str) -> tuple[list[float], list[bytes]]:
    """Timestamps (seconds) and planar 48x27 YUV bytes of every decoded frame, in decode order."""
    reformatter = VideoReformatter()  # keeps its scaling context between frames
    rate = float(stream.average_rate or 25)
    pts: list[float] = []
    thumbs: list[bytes] = []
    for index, frame in enumerate(container.decode(stream)):
        if frame.pts is not None and frame.time_base is not None:
            pts.append(frame_time_s(frame.pts, stream))  # the clock extract_clip cuts by
        else:  # raw streams without timestamps: assume a constant rate
            pts.append(index / rate)
        small = reformatter.reformat(frame, SIZE[0], SIZE[1], "yuv444p", interpolation=interpolation)
        thumbs.append(b"".join(_plane_bytes(plane) for plane in small.planes))
    return pts, thumbs


def _plane_bytes(plane) -> bytes:
    """The pixels of one 48x27 plane, without row padding."""
    data = bytes(plane)
    if plane.line_size == SIZE[0]:
        return data
    return np.frombuffer(data, np.uint8).reshape(-1, plane.line_size)[: SIZE[1], : SIZE[0]].tobytes()


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """Limited-range BT.601 YUV -> RGB (ffmpeg's default): ``(n, 3, h, w)`` planes in,
    ``(n, h, w, 3)`` uint8 out."""
    y = (yuv[:, 0].astype(np.float32) - 16.0) * 1.164
    u = yuv[:, 1].astype(np.float32) - 128.0
    v = yuv[:, 2].astype(np.float32) - 128.0
    rgb = np.stack([y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u], axis=-1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _average_fps(stream, pts_s: list[float]) -> float:
    """The stream's average rate, else one derived from the timestamps, else 25."""
    if stream.average_rate:
        return float(stream.average_rate)
    if len(pts_s) > 1 and max(pts_s) > min(pts_s):
        return (len(pts_s) - 1) / (max(pts_s) - min(pts_s))
    return 25.0
