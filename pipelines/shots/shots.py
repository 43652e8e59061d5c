"""Turn transitions into shots (clip candidates): trim around gradual transitions, drop too-short
pieces, split long shots into windows."""

from __future__ import annotations

import math

from pipelines.shots.decode import FrameSet
from pipelines.shots.types import Shot, Transition


def shots_from_transitions(
    frames: FrameSet,
    transitions: list[Transition],
    min_len_s: float = 0.5,
    max_len_s: float | None = None,
    trim_frames: int = 1,
) -> list[Shot]:
    """Shots between ``transitions`` (sorted by time) over the whole video.

    * The frames of a gradual transition belong to no shot, and ``trim_frames`` more frames are
      dropped on each side of it (the first and last frames of a fade are often already tinted).
    * A piece shorter than ``min_len_s`` is dropped (a leader before the first transition, black
      between a fade out and a fade in, a fast-cut montage). It is never glued to a neighbour: that
      would put a cut inside a clip, and the detectors already drop flashes.
    * A shot longer than ``max_len_s`` is split into equal windows no longer than ``max_len_s``
      (``transition_in="split"`` after the first).
    """
    pieces = _pieces(frames, transitions, trim_frames)
    kept = _drop_short(frames, pieces, min_len_s)
    out: list[Shot] = []
    for start, end, kind in kept:
        out += _split(frames, start, end, kind, max_len_s)
    return out


def _pieces(frames: FrameSet, transitions: list[Transition], trim: int) -> list[tuple[int, int, str]]:
    """``(start_frame, end_frame, transition_in)`` of the frames between transitions."""
    pieces = []
    start, kind, pending_trim = 0, "start", 0
    for tr in sorted(transitions, key=lambda t: t.start_frame):
        end = tr.start_frame - (trim if tr.kind == "gradual" else 0)
        pieces.append((start + pending_trim, end, kind))
        start, kind = tr.end_frame, tr.kind
        pending_trim = trim if tr.kind == "gradual" else 0
    pieces.append((start + pending_trim, len(frames), kind))
    return [(s, e, k) for s, e, k in pieces if e > s]


def _duration(frames: FrameSet, start: int, end: int) -> float:
    return frames.time_of(end) - frames.time_of(start)


def _drop_short(frames: FrameSet, pieces: list[tuple[int, int, str]], min_len_s: float) -> list[tuple[int, int, str]]:
    """The pieces lasting at least ``min_len_s`` seconds."""
    return [(s, e, k) for s, e, k in pieces if _duration(frames, s, e) >= min_len_s - 1e-9]


def _split(frames: FrameSet, start: int, end: int, kind: str, max_len_s: float | None) -> list[Shot]:
    """``[start, end)`` as one shot, or as windows of equal duration, none over ``max_len_s``."""
    duration = _duration(frames, start, end)
    parts = 1 if not max_len_s else max(1, math.ceil(duration / max_len_s - 1e-9))
    while True:
        bounds = _time_bounds(frames, start, end, parts)
        longest = max(_duration(frames, a, b) for a, b in zip(bounds, bounds[1:]))
        if not max_len_s or longest <= max_len_s + 1e-9 or parts >= end - start:
            break
        parts += 1  # frame granularity (or a variable frame rate) made a window too long
    return [
        Shot(frames.time_of(a), frames.time_of(b), a, b, kind if i == 0 else "split")  # type: ignore[arg-type]
        for i, (a, b) in enumerate(zip(bounds, bounds[1:]))
    ]


def _time_bounds(frames: FrameSet, start: int, end: int, parts: int) -> list[int]:
    """Frame indices splitting ``[start, end)`` into ``parts`` pieces of about equal duration."""
    t0, t1 = frames.time_of(start), frames.time_of(end)
    inner = [frames.frame_at(t0 + i * (t1 - t0) / parts) for i in range(1, parts)]
    bounds = [start, *sorted(set(min(max(b, start + 1), end - 1) for b in inner)), end]
    return sorted(set(bounds))
