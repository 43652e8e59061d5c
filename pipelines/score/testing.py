"""Small real corpora for tests and benchmarks: clips drawn with numpy, encoded with PyAV.

``add_clips`` writes H.264 clip files into the clip store and the matching ``videos``, ``clips``
and ``captions`` rows, exactly as ingest would, so scoring, filtering and datasets can be tested
without the shot splitter. ``draw_clip`` paints the kinds of clips the filters must tell apart.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction

import av
import numpy as np

COLORS = {"red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 70, 220),
          "yellow": (240, 220, 40), "white": (245, 245, 245), "gray": (128, 128, 128)}


@dataclass
class ClipSpec:
    """One clip to draw: ``kind`` is shape, black, frozen or noise."""

    name: str
    kind: str = "shape"
    color: str = "red"
    background: str = "blue"
    n_frames: int = 24
    fps: int = 12
    size: tuple[int, int] = (64, 48)  # width, height
    captions: dict[str, str] = field(default_factory=dict)  # source -> text
    seed: int = 0


def draw_clip(spec: ClipSpec) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 for ``spec``: a square moving right, or a bad clip."""
    w, h = spec.size
    rng = np.random.default_rng(spec.seed)
    if spec.kind == "black":
        return np.zeros((spec.n_frames, h, w, 3), np.uint8)
    if spec.kind == "noise":
        return rng.integers(0, 256, (spec.n_frames, h, w, 3), dtype=np.uint8)
    frames = np.empty((spec.n_frames, h, w, 3), np.uint8)
    side = max(4, h // 3)
    y0 = int(rng.integers(0, h - side))
    for t in range(spec.n_frames):
        frames[t] = COLORS[spec.background]
        step = 0 if spec.kind == "frozen" else t
        x0 = int(2 + step * (w - side - 4) / max(1, spec.n_frames - 1))
        frames[t, y0:y0 + side, x0:x0 + side] = COLORS[spec.color]
    return frames


def encode_mp4(frames: np.ndarray, fps: float) -> bytes:
    """H.264 yuv420p mp4 bytes of ``frames`` (T, H, W, 3) uint8; odd sides are edge-padded."""
    import io
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def add_clips(catalog, specs: list[ClipSpec], job_id: str = "test") -> list[dict]:
    """Write each spec as a one-clip video: media, ``videos``, ``clips`` and ``captions`` rows."""
    root, now = catalog.root, datetime.now(timezone.utc)
    videos, clips, captions = [], [], []
    for spec in specs:
        data = encode_mp4(draw_clip(spec), spec.fps)
        video_id = hashlib.sha256(data).hexdigest()[:16]
        clip_id = hashlib.sha1(f"{video_id}:{spec.name}".encode()).hexdigest()[:20]
        rel = root.clip_relpath(video_id, clip_id)
        root.put_bytes(rel, data)
        w, h = spec.size
        duration = spec.n_frames / spec.fps
        videos.append(dict(video_id=video_id, uri=f"/sources/{spec.name}.mp4", bytes=len(data),
                           width=w, height=h, fps=float(spec.fps), duration_s=duration,
                           n_frames=spec.n_frames, status="ok", job_id=job_id, ingested_at=now))
        clips.append(dict(clip_id=clip_id, video_id=video_id, start_s=0.0, end_s=duration,
                          start_frame=0, end_frame=spec.n_frames, duration_s=duration,
                          fps=float(spec.fps), width=w, height=h, n_frames=spec.n_frames,
                          transition_in="start", uri=rel, bytes=len(data), job_id=job_id))
        captions += [dict(clip_id=clip_id, source=source, text=text, job_id=job_id)
                     for source, text in spec.captions.items()]
    catalog.append("clips", clips)
    catalog.append("videos", videos)
    catalog.append("captions", captions)
    return clips
