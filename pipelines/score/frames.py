"""Decode a clip's frames once and share them across every scorer.

For each clip, ``decode_clip_frames`` walks the video once and keeps ``n_frames`` anchor frames
(the centres of equal segments of the clip):

- ``rgb``:  (K, S, S, 3) uint8, each anchor resized to the scorer's square input ("squash": the
  whole frame is kept, aspect ratio is not, so no object is cropped out of a portrait or
  ultrawide clip);
- ``small``: (K, 2, s, s, 3) uint8, each anchor and the video frame right after it, point-sampled
  to s x s for the pixel statistics. Point sampling keeps per-pixel noise (area averaging
  would blur static noise into grey and make its score depend on the source resolution);
  motion is a per-frame difference, independent of how far apart the anchors are.

``frame_stats`` turns ``small`` into the cheap scores: ``motion``, ``luma``, ``black``, ``frozen``;
``pixel_signature`` into a colour-layout vector that near-duplicate detection adds to the CLIP
embedding (see ``dedup.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter


class FrameDecodeError(Exception):
    """The clip's media is missing or yields no decodable frame."""


@dataclass(frozen=True)
class FrameConfig:
    """How many frames to keep per clip and at what sizes."""

    n_frames: int = 8  # K anchors per clip
    size: int = 224  # side of the square RGB frames the CLIP model sees
    stats_size: int = 64  # side of the small frames used for motion / black / frozen
    # FFmpeg decoder threads per clip; 0: FFmpeg's choice (frame + slice threads, one per core).
    # The decode stage asks Ray for one CPU per task, and for small clips FFmpeg's threads cost
    # more than they save (160x96 H.264: 4.6 ms a clip on one thread, 5.3 with AUTO).
    decode_threads: int = 1

    def __post_init__(self) -> None:
        if self.n_frames < 1 or self.size < 8 or self.stats_size < 4 or self.decode_threads < 0:
            raise ValueError(f"FrameConfig needs n_frames >= 1, size >= 8, stats_size >= 4, "
                             f"decode_threads >= 0; got {self}")


@dataclass(frozen=True)
class StatsConfig:
    """Thresholds of the pixel statistics (luminance and differences are in 0..1)."""

    black_luma: float = 0.06  # a frame whose mean luminance is below this is near-black
    changed_diff: float = 0.1  # a pixel changed when a channel moved by more than this
    frozen_changed: float = 0.001  # frozen: no anchor has more than this fraction changed


@dataclass
class ClipFrames:
    """The decoded frames of one clip (see the module docstring for shapes)."""

    rgb: np.ndarray  # (K, S, S, 3) uint8
    small: np.ndarray  # (K, 2, s, s, 3) uint8

    def to_row(self) -> dict[str, Any]:
        """Plain columns (bytes + shapes) that survive Arrow/Ray between stages."""
        return {"frames_rgb": self.rgb.tobytes(), "frames_rgb_shape": list(self.rgb.shape),
                "frames_small": self.small.tobytes(), "frames_small_shape": list(self.small.shape)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "ClipFrames":
        rgb = np.frombuffer(row["frames_rgb"], np.uint8).reshape(row["frames_rgb_shape"])
        small = np.frombuffer(row["frames_small"], np.uint8).reshape(row["frames_small_shape"])
        return cls(rgb=rgb, small=small)


FRAME_COLUMNS = ("frames_rgb", "frames_rgb_shape", "frames_small", "frames_small_shape")
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601 weights


def anchor_indices(n_frames: int, k: int) -> np.ndarray:
    """Centres of ``k`` equal segments of ``n_frames`` frames (repeats when the clip is shorter)."""
    if n_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {n_frames}")
    return np.minimum(((np.arange(k) + 0.5) * n_frames / k).astype(np.int64), n_frames - 1)


def decode_clip_frames(path: str, config: FrameConfig, n_frames: int | None = None) -> ClipFrames:
    """Decode ``path`` once, keeping the anchors; ``n_frames`` (from the catalog) avoids a count.

    Raises FrameDecodeError when the file is missing, unreadable, or has no video frame.
    """
    try:
        total = n_frames if n_frames and n_frames > 0 else _count_frames(path)
        frames = _decode_anchors(path, config, anchor_indices(total, config.n_frames))
        if frames is None:  # the catalog's frame count was too high: count, then decode again
            frames = _decode_anchors(path, config, anchor_indices(_count_frames(path), config.n_frames))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise FrameDecodeError(f"{type(e).__name__}: {e}") from None
    if frames is None:
        raise FrameDecodeError(f"{path}: fewer frames than its own count")
    return frames


def _count_frames(path: str) -> int:
    with av.open(path) as container:
        n = sum(1 for _ in container.decode(video=0))
    if n == 0:
        raise FrameDecodeError(f"{path}: no decodable video frame")
    return n


def _decode_anchors(path: str, config: FrameConfig, anchors: np.ndarray) -> ClipFrames | None:
    """One sequential pass; None when the file ends before the last anchor."""
    k, size, small = len(anchors), config.size, config.stats_size
    rgb = np.zeros((k, size, size, 3), np.uint8)
    thumbs = np.zeros((k, 2, small, small, 3), np.uint8)
    slots: dict[int, list[int]] = {}
    for slot, index in enumerate(anchors.tolist()):
        slots.setdefault(index, []).append(slot)
    last = int(anchors.max())
    pending_next: list[int] = []  # slots whose "next frame" is the frame being decoded
    seen = -1
    # one reformatter per output keeps its swscale context: alternating sizes and filters on a
    # shared one rebuilds the context on every call (~2 ms each, most of the decode time)
    to_thumb, to_rgb = VideoReformatter(), VideoReformatter()
    with av.open(path) as container:
        stream = container.streams.video[0]
        if config.decode_threads == 1:
            stream.thread_type = "NONE"
        else:
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = config.decode_threads
        for seen, frame in enumerate(container.decode(stream)):
            anchor_slots = slots.get(seen, [])
            if pending_next or anchor_slots:  # convert only the frames that are kept
                thumb = to_thumb.reformat(frame, small, small, "rgb24", interpolation="POINT").to_ndarray()
            for slot in pending_next:
                thumbs[slot, 1] = thumb
            pending_next = anchor_slots
            if pending_next:
                image = to_rgb.reformat(frame, size, size, "rgb24").to_ndarray()
                for slot in pending_next:
                    rgb[slot], thumbs[slot, 0], thumbs[slot, 1] = image, thumb, thumb
            if seen > last:
                break
    return ClipFrames(rgb=rgb, small=thumbs) if seen >= last else None


def frame_stats(frames: ClipFrames, config: StatsConfig = StatsConfig()) -> dict[str, float]:
    """Cheap pixel scores from the small frames, all in 0..1.

    ``motion``: mean absolute difference of luminance between each anchor and the next video
    frame; ``luma``: mean luminance of the anchors; ``black``: fraction of near-black anchors;
    ``frozen``: 1.0 when no anchor (nor its next frame) differs from the first anchor in more
    than ``frozen_changed`` of its pixels — the whole clip is one picture.
    """
    k = frames.small.shape[0]
    pixels = frames.small.reshape(k, 2, -1, 3)  # (K, 2, P, 3) uint8
    luma = pixels.astype(np.float32) @ (LUMA / 255.0)  # (K, 2, P)
    # changed: a channel moved by more than changed_diff, in whole uint8 steps (no float frames;
    # per-channel comparisons instead of a max over the 3-wide last axis, a slow reduction)
    diff = np.abs(pixels.astype(np.int16) - pixels[0, 0].astype(np.int16))  # (K, 2, P, 3)
    limit = config.changed_diff * 255.0
    changed = (diff[..., 0] > limit) | (diff[..., 1] > limit) | (diff[..., 2] > limit)  # (K, 2, P)
    frame_luma = luma[:, 0].mean(axis=1)  # (K,)
    return {"motion": float(np.abs(luma[:, 1] - luma[:, 0]).mean()),
            "luma": float(frame_luma.mean()),
            "black": float((frame_luma < config.black_luma).mean()),
            "frozen": float(changed.mean(axis=2).max() <= config.frozen_changed)}


def pixel_signature(frames: ClipFrames, grid: int = 16) -> np.ndarray:
    """A colour-layout vector (2 * grid * grid * 3,) of the clip: unit, or zeros for a flat clip.

    Two halves, each a layout: the anchors area-averaged to ``grid`` x ``grid`` and centred on
    their median colour per channel (the background's: a flat background and most of a global
    brightness shift drop out), then L2-normalised —

    - averaged over time (robust to a re-cut or a different pace);
    - the first anchor alone: a copy that runs longer or shorter (another cut of the same take)
      starts alike while its time average drifts, because its objects have moved on.

    The vector is their concatenation scaled to unit length, so the cosine of two clips is the
    mean of the two halves' cosines. On the synthetic world's re-renders (shifted by a few pixels,
    brighter or darker, another length) the 10th percentile cosine of true pairs went from 0.63
    to 0.70 while the 90th percentile of each clean shot's nearest other shot fell from 0.77 to
    0.67 (benchmarks/RESULTS.md, "Filter quality"). Black or uniform clips have no layout: zeros,
    so they never match anything on this signal; a half without layout is zeros.
    """
    x = frames.small[:, 0].astype(np.float32) / 255.0  # (K, s, s, 3)
    s = x.shape[1]
    cell = s // grid
    assert cell >= 1, f"stats frames of {s}px cannot give a {grid}x{grid} signature"

    def layout(image: np.ndarray) -> np.ndarray:  # (s, s, 3) → (grid, grid, 3) cell means
        return image[:cell * grid, :cell * grid].reshape(grid, cell, grid, cell, 3).mean(axis=(1, 3))
    # averaging is linear: the layout of the time-mean frame is the time mean of the layouts
    halves = [_unit_layout(layout(x.mean(axis=0))), _unit_layout(layout(x[0]))]  # (grid, grid, 3) each
    both = np.concatenate(halves)
    norm = float(np.linalg.norm(both))
    return (both / norm if norm > 0 else both).astype(np.float32)


def _unit_layout(layout: np.ndarray) -> np.ndarray:
    """``layout`` (grid, grid, 3) centred on its median colour, flattened, unit length (zeros
    when nothing stands out from the median)."""
    layout = layout - np.median(layout.reshape(-1, 3), axis=0)
    norm = float(np.linalg.norm(layout))
    return layout.ravel() / norm if norm > 1e-2 else np.zeros(layout.size, np.float32)
