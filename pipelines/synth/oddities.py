"""Small, deterministic odd input files for ingest tests: broken files and unusual videos.

`write_odd_inputs(out_dir)` writes every file and returns, per file name, what ingest should
find: `{"error_class": slug}` for a file that must be quarantined, or the probe facts (width,
height, codec, fps, n_frames, duration_s, sar, vfr, rotation …) plus the ground truth of its
single hard cut (`cut_frames`, `cut_s`) and the presentation time of every frame
(`frame_times_s`) for a good one. Each good video has two shots: a dark-blue background with a
white square moving right, then an orange background with a green bar moving down.
Videos are at most 3 s and 376 px, so the whole set renders in a few seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VFR_TIME_BASE = Fraction(1, 90000)


@dataclass(frozen=True)
class VideoSpec:
    """How to render one good odd video."""

    name: str
    width: int
    height: int
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    fps: int = 24
    n_frames: int = 48
    cut: int = 24                       # index of the second shot's first frame
    key_at_cut: bool = True             # force a keyframe (IDR) on the cut
    sar: Fraction | None = None
    rotation: int = 0                   # counter-clockwise display rotation
    durations: tuple[int, ...] = ()     # per-frame durations in VFR_TIME_BASE ticks (VFR)
    options: dict = field(default_factory=dict)


def _vfr_durations(n: int, seed: int = 7) -> tuple[int, ...]:
    """Irregular frame durations between 1/40 s and 1/12 s."""
    rng = np.random.default_rng(seed)
    return tuple(int(d) for d in rng.choice([2250, 3000, 4500, 7500], size=n))


GOOD_SPECS: tuple[VideoSpec, ...] = (
    VideoSpec("portrait.mp4", 180, 320, fps=25, n_frames=50, cut=25),
    VideoSpec("ultrawide.mp4", 376, 160, fps=30, n_frames=60, cut=30),
    VideoSpec("odd_444.mp4", 321, 241, pix_fmt="yuv444p", cut=20, key_at_cut=False),
    VideoSpec("hevc10.mkv", 192, 108, codec="libx265", pix_fmt="yuv420p10le", n_frames=40,
              cut=16, key_at_cut=False, options={"x265-params": "log-level=error"}),
    VideoSpec("vp9.webm", 160, 120, codec="libvpx-vp9", cut=20, key_at_cut=False,
              options={"deadline": "realtime", "cpu-used": "8"}),
    VideoSpec("mpeg4.avi", 176, 144, codec="mpeg4", fps=25, n_frames=50, cut=22,
              key_at_cut=False, options={"qscale": "3"}),
    VideoSpec("vfr.mp4", 160, 120, n_frames=48, cut=24, durations=_vfr_durations(48)),
    VideoSpec("anamorphic.mp4", 240, 180, sar=Fraction(4, 3)),
    VideoSpec("rotated.mp4", 320, 180, rotation=90),
)


def write_odd_inputs(out_dir: str | os.PathLike) -> dict[str, dict]:
    """Write every odd input into `out_dir` and return the expectations by file name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    expected = {spec.name: write_video(out / spec.name, spec) for spec in GOOD_SPECS}
    expected.update(_write_bad_inputs(out))
    return expected


def _bounce(pos: int, span: int) -> int:
    """Position moving back and forth in [0, span]: continuous motion, no wrap-around jump."""
    span = max(1, span)
    pos %= 2 * span
    return pos if pos <= span else 2 * span - pos


def render_frame(index: int, n_frames: int, cut: int, width: int, height: int) -> np.ndarray:
    """RGB frame `index`: (height, width, 3) uint8, textured so codecs keep it distinct."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    ramp = (xx * 64 // max(width, 1) + yy * 32 // max(height, 1)).astype(np.uint8)
    if index < cut:
        img[...] = (20, 30, 110)
        img[..., 2] += ramp
        side = max(4, min(width, height) // 4)
        x0 = _bounce(index * max(2, width // max(cut, 1)), width - side)
        y0 = (height - side) // 2
        img[y0:y0 + side, x0:x0 + side] = (240, 240, 240)
    else:
        img[...] = (220, 120, 30)
        img[..., 1] += ramp // 2
        k = index - cut
        bar = max(3, height // 8)
        y0 = _bounce(k * max(2, height // max(n_frames - cut, 1)), height - bar)
        img[y0:y0 + bar, width // 4: 3 * width // 4] = (40, 200, 60)
    return img


def frame_ticks(spec: VideoSpec) -> tuple[list[int], Fraction]:
    """Presentation timestamps of every frame and their time base."""
    if spec.durations:
        return [int(t) for t in np.concatenate([[0], np.cumsum(spec.durations)[:-1]])], VFR_TIME_BASE
    return list(range(spec.n_frames)), Fraction(1, spec.fps)


def write_video(path: Path, spec: VideoSpec) -> dict:
    """Encode `spec` to `path` and return its expectation."""
    ticks, time_base = frame_ticks(spec)
    with av.open(str(path), "w") as container:
        stream = _add_video_stream(container, spec, time_base)
        for i, pts in enumerate(ticks):
            frame = av.VideoFrame.from_ndarray(
                render_frame(i, spec.n_frames, spec.cut, spec.width, spec.height), format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            if spec.key_at_cut and i == spec.cut:
                frame.pict_type = av.video.frame.PictureType.I
            _mux(container, stream.encode(frame))
        _mux(container, stream.encode(None))
    return _expectation(spec, ticks, time_base)


def _add_video_stream(container, spec: VideoSpec, time_base: Fraction):
    stream = container.add_stream(spec.codec, rate=spec.fps, options=dict(spec.options))
    stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
    stream.codec_context.time_base = time_base
    stream.time_base = time_base
    if spec.sar is not None:
        stream.codec_context.sample_aspect_ratio = spec.sar
    if spec.rotation:
        stream.set_display_rotation(spec.rotation)
    return stream


def _mux(container, packets) -> None:
    for packet in packets:
        container.mux(packet)


def _expectation(spec: VideoSpec, ticks: list[int], time_base: Fraction) -> dict:
    times = [float(t * time_base) for t in ticks]
    last = spec.durations[-1] * time_base if spec.durations else Fraction(1, spec.fps)
    duration = float(ticks[-1] * time_base + last)
    width = spec.width
    sar = spec.sar or Fraction(1)
    cuts = [spec.cut] if 0 < spec.cut < spec.n_frames else []
    return {
        "width": width,
        "height": spec.height,
        "codec": {"libx264": "h264", "libx265": "hevc", "libvpx-vp9": "vp9"}.get(spec.codec, spec.codec),
        "pix_fmt": spec.pix_fmt,
        "bit_depth": 10 if "10" in spec.pix_fmt else 8,
        "fps": spec.n_frames / duration if spec.durations else float(spec.fps),
        "n_frames": spec.n_frames,
        "duration_s": duration,
        "sar": f"{sar.numerator}:{sar.denominator}",
        "display_width": round(width * sar),
        "vfr": bool(spec.durations),
        "rotation": spec.rotation,
        "cut_frames": cuts,
        "cut_s": [times[c] for c in cuts],
        "keyframe_at_cut": spec.key_at_cut and spec.codec == "libx264",
        "frame_times_s": times,
    }


def _write_bad_inputs(out: Path) -> dict[str, dict]:
    """Files ingest must quarantine, each with a different error class."""
    base = VideoSpec("base", 160, 120)
    expected = {}
    for name, faststart in (("truncated.mp4", False), ("truncated_faststart.mp4", True)):
        data = _encode_bytes(out / f".{name}.full", base, faststart)
        (out / name).write_bytes(data[: int(len(data) * 0.3)])
        expected[name] = {"error_class": "truncated"}
    (out / "zero.mp4").write_bytes(b"")
    (out / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    (out / "notes.mov").write_text("Shot list\n1. wide, sunrise\n2. close-up, coffee\n" * 40)
    _write_audio_only(out / "audio_only.m4a")
    (out / "corrupt.mp4").write_bytes(_zero_mdat(_encode_bytes(out / ".corrupt.full", base, False)))
    write_video(out / "tiny.mp4", VideoSpec("tiny.mp4", 8, 8, n_frames=4, cut=2))
    write_video(out / "one_frame.mp4", VideoSpec("one_frame.mp4", 64, 48, n_frames=1, cut=1,
                                                 key_at_cut=False))
    expected.update({
        "zero.mp4": {"error_class": "empty_file"},
        "random.mp4": {"error_class": "not_a_video"},
        "notes.mov": {"error_class": "not_a_video"},
        "audio_only.m4a": {"error_class": "no_video_stream"},
        "corrupt.mp4": {"error_class": "decode_error"},
        "tiny.mp4": {"error_class": "too_small"},
        "one_frame.mp4": {"error_class": "too_short"},
    })
    return expected


def _encode_bytes(tmp: Path, spec: VideoSpec, faststart: bool) -> bytes:
    """Encode `spec` as an mp4 (index at the end, or at the front with faststart) → bytes."""
    with av.open(str(tmp), "w", format="mp4",
                 options={"movflags": "+faststart"} if faststart else {}) as container:
        stream = _add_video_stream(container, spec, Fraction(1, spec.fps))
        for i in range(spec.n_frames):
            frame = av.VideoFrame.from_ndarray(
                render_frame(i, spec.n_frames, spec.cut, spec.width, spec.height), format="rgb24")
            frame.pts = i
            _mux(container, stream.encode(frame))
        _mux(container, stream.encode(None))
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def _zero_mdat(data: bytes) -> bytes:
    """Zero the payload of the first top-level `mdat` box: the structure stays valid but no
    frame decodes."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8]
        if kind == b"mdat":
            end = offset + size if size else len(data)
            return data[:offset + 8] + bytes(end - offset - 8) + data[end:]
        offset += size
    raise ValueError("no mdat box found")


def _write_audio_only(path: Path, rate: int = 22050, seconds: float = 1.0) -> None:
    """A 440 Hz AAC tone in an m4a container."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        t = np.arange(int(rate * seconds)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="flt",
                                               layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
