"""Sampling the synthetic world: per-video specs, shot timelines and their ground truth.

Pure Python/numpy, no I/O. :func:`sample_world` returns :class:`VideoSpec` objects that
``render.py`` draws; :func:`world_truth` turns them into the ``truth.json`` dict documented in
docs/synthetic_world.md. World-level choices (formats, aspect classes, broken files, which
defect a video features) come from ``default_rng(seed)``; everything inside video ``i`` comes
from ``default_rng([seed, i])``. The vocabulary lives in ``spec.py`` and is re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from pipelines.synth.scenes import sample_shots
from pipelines.synth.spec import (
    ASPECT_QUOTA, ASPECTS, BACKGROUNDS, BROKEN_KINDS, CAMERAS, COLORS, DEFECT_QUOTA, DEFECTS,
    FORMAT_QUOTA, FORMATS, FPS_CHOICES, FPS_PROBS, GRADUAL_FRAMES, HEVC_MIN_WIDTH, MOTIONS,
    SHAPES, SIZES, TRANSITION_PROBS, TRANSITIONS, ShotSpec, TransitionSpec, VideoSpec,
)

__all__ = [  # the vocabulary is defined in spec.py and re-exported here, as the contract says
    "SHAPES", "COLORS", "SIZES", "MOTIONS", "BACKGROUNDS", "CAMERAS", "TRANSITIONS", "DEFECTS",
    "BROKEN_KINDS", "ASPECTS", "FPS_CHOICES", "FORMATS", "VideoPlan", "sample_world",
    "sample_video", "frame_size", "n_broken", "world_truth", "video_truth",
]

# ----------------------------------------------------------------------------- world


@dataclass(frozen=True)
class VideoPlan:
    """World-level choices for one video, made before its own generator takes over."""

    index: int
    format_name: str  # a FORMATS key
    aspect: str  # an ASPECTS class
    featured_defect: str | None  # the kind of this video's one bad shot, if it has one
    broken: str | None
    dup_group: int  # the group id a near-duplicate in this video would get


def sample_world(seed: int, n_videos: int, duration_s: float, max_side: int) -> list[VideoSpec]:
    """Sample every video of the world; deterministic per ``seed``.

    Broken files, aspect classes, formats and featured defects are dealt out from shuffled
    quotas (the last three over usable files only), so even a small world has the variety the
    pipelines are measured on.
    """
    if n_videos < 0 or duration_s <= 0 or max_side < 32:
        raise ValueError("need n_videos >= 0, duration_s > 0 and max_side >= 32")
    plans = _plan_videos(np.random.default_rng(seed), n_videos)
    videos, next_group = [], 0
    for plan in plans:
        plan = replace(plan, dup_group=next_group)
        video = sample_video(np.random.default_rng([seed, plan.index]), plan, duration_s, max_side)
        next_group += any(s.dup_group is not None for s in video.shots)
        videos.append(video)
    return videos


def _plan_videos(world_rng: np.random.Generator, n_videos: int) -> list[VideoPlan]:
    """Deal broken kinds, then aspects, formats and defects over the usable videos."""
    broken = _deal(world_rng, n_videos, BROKEN_KINDS, n_broken(n_videos))
    usable = [i for i in range(n_videos) if broken[i] is None]
    aspects = dict(zip(usable, _deal(world_rng, len(usable), ASPECT_QUOTA)))
    regular = [i for i in usable if aspects[i] != "odd"]  # odd sizes need 4:4:4 H.264 in mkv
    formats = dict(zip(regular, _deal(world_rng, len(regular), FORMAT_QUOTA)))
    defects = dict(zip(usable, _deal(world_rng, len(usable), DEFECT_QUOTA)))
    return [
        VideoPlan(i, formats.get(i, "mkv_h264_444" if i in aspects else "mp4_h264"),
                  aspects.get(i, "landscape"), defects.get(i), broken[i], dup_group=0)
        for i in range(n_videos)
    ]


def n_broken(n_videos: int) -> int:
    """How many files are broken on purpose: one per started ten videos, none below eight."""
    return max(1, math.ceil(n_videos / 10)) if n_videos >= 8 else 0


def _deal(rng: np.random.Generator, n: int, quota: tuple, count: int | None = None) -> list:
    """``count`` (default ``n``) items cycling through ``quota``, at shuffled positions of ``n``."""
    count = n if count is None else count
    offset = int(rng.integers(len(quota)))
    items = [quota[(k + offset) % len(quota)] for k in range(count)]
    slots: list = [None] * n
    for position, item in zip(rng.permutation(n)[:count], items):
        slots[int(position)] = item
    return slots


def sample_video(rng: np.random.Generator, plan: VideoPlan, duration_s: float,
                 max_side: int) -> VideoSpec:
    """Sample one video: size, fps, shot timeline and shot contents."""
    width, height = frame_size(plan.aspect, max_side)
    fps = FPS_CHOICES[int(rng.choice(len(FPS_CHOICES), p=FPS_PROBS))]
    n_frames = max(1, round(duration_s * fps))
    min_len = max(8, round(0.75 * fps))  # shortest clean shot, frames
    n_shots = _sample_n_shots(rng, duration_s, n_frames // (2 * min_len), plan.featured_defect)
    defect_plan = _sample_defect_plan(rng, n_shots, plan.featured_defect)
    transitions, spans = _sample_timeline(rng, n_frames, min_len, defect_plan)
    shots = sample_shots(rng, spans, defect_plan, width, height, plan.dup_group)
    fmt_name = plan.format_name
    if fmt_name == "mkv_hevc" and width < HEVC_MIN_WIDTH:
        fmt_name = "mp4_h264"
    fmt = FORMATS[fmt_name]
    return VideoSpec(
        index=plan.index, file=f"vid_{plan.index:04d}.{fmt.container}", fmt=fmt, width=width,
        height=height, fps=fps, n_frames=n_frames, broken=plan.broken,
        transitions=tuple(transitions), shots=tuple(shots), byte_seed=int(rng.integers(2**31)),
    )


def _sample_n_shots(rng: np.random.Generator, duration_s: float, most: int,
                    featured_defect: str | None) -> int:
    """About three to six shots per ten seconds; a near-duplicate needs a shot between it and
    its source, so such videos get at least three. Never more than ``most`` (at least one)."""
    lo, hi = max(1, round(0.3 * duration_s)), max(1, round(0.6 * duration_s))
    n_shots = int(rng.integers(lo, max(lo, hi) + 1))
    if featured_defect == "duplicate":
        n_shots = max(n_shots, 3)
    return min(n_shots, max(1, most))


def frame_size(aspect: str, max_side: int) -> tuple[int, int]:
    """(width, height) for an aspect class; longest side <= max_side. "odd" gives odd sides."""
    def even(v: float) -> int:
        return max(16, int(v) // 2 * 2)

    if aspect == "landscape":
        return max_side // 2 * 2, even(max_side * 9 / 16)
    if aspect == "portrait":
        return even(max_side * 9 / 16), max_side // 2 * 2
    if aspect == "square":
        return even(max_side * 0.8), even(max_side * 0.8)
    if aspect == "ultrawide":
        return max_side // 2 * 2, even(max_side / 2.35)
    if aspect == "odd":
        width = max_side - 3 if max_side % 2 == 0 else max_side - 2
        return width, int(width * 9 / 16) | 1
    raise ValueError(f"unknown aspect {aspect!r}; expected one of {ASPECTS}")


# -------------------------------------------------------------------------- timeline


def _sample_defect_plan(rng: np.random.Generator, n_shots: int, featured: str | None) -> list:
    """Where the video's one bad shot goes, if any; a near-duplicate needs two shots before it."""
    plan: list[str | None] = [None] * n_shots
    if featured == "duplicate" and n_shots >= 3:
        plan[int(rng.integers(2, n_shots))] = featured
    elif featured is not None and featured != "duplicate":
        plan[int(rng.integers(n_shots))] = featured
    return plan


def _boundary_kind(rng: np.random.Generator, before: str | None, after: str | None) -> str:
    """Mostly cuts; black and noise shots only ever meet their neighbours with a cut."""
    if before in ("black", "noise") or after in ("black", "noise"):
        return "cut"
    return TRANSITIONS[int(rng.choice(3, p=TRANSITION_PROBS))]


def _sample_timeline(
    rng: np.random.Generator, n_frames: int, min_len: int, plan: list
) -> tuple[list[TransitionSpec], list[tuple[int, int]]]:
    """Lay shots and transitions end to end over exactly ``n_frames`` frames."""
    n_shots = len(plan)
    kinds = [_boundary_kind(rng, plan[b], plan[b + 1]) for b in range(n_shots - 1)]
    spans_len = [0 if k == "cut" else int(rng.integers(GRADUAL_FRAMES[0], GRADUAL_FRAMES[1] + 1))
                 for k in kinds]
    min_len = min(min_len, n_frames // n_shots)
    for b in reversed(range(n_shots - 1)):  # too short for the gradual spans: use cuts
        if n_frames - sum(spans_len) >= n_shots * min_len:
            break
        kinds[b], spans_len[b] = "cut", 0
    free = n_frames - sum(spans_len) - n_shots * min_len
    extra = np.floor(rng.dirichlet(np.full(n_shots, 2.0)) * free).astype(int)
    extra[: free - int(extra.sum())] += 1
    transitions, spans, cursor = [], [], 0
    for i in range(n_shots):
        end = cursor + min_len + int(extra[i])
        spans.append((cursor, end))
        if i < n_shots - 1:
            transitions.append(TransitionSpec(kinds[i], end, end + spans_len[i]))
            end += spans_len[i]
        cursor = end
    assert cursor == n_frames, (cursor, n_frames)
    return transitions, spans


# ---------------------------------------------------------------------------- truth


def world_truth(seed: int, videos: list[VideoSpec]) -> dict:
    """The ``truth.json`` dict for a sampled world."""
    return {"version": 1, "seed": seed, "n_videos": len(videos),
            "videos": [video_truth(v) for v in videos]}


def video_truth(video: VideoSpec) -> dict:
    """One video's truth entry; broken files list no transitions or shots."""
    def secs(frame: int) -> float:
        return round(float(frame / video.fps), 4)

    usable = video.broken is None
    return {
        "file": video.file, "container": video.fmt.container, "codec": video.fmt.codec,
        "pix_fmt": video.fmt.pix_fmt, "width": video.width, "height": video.height,
        "fps": float(video.fps), "n_frames": video.n_frames, "duration_s": secs(video.n_frames),
        "broken": video.broken,
        "transitions": [_transition_truth(t, secs) for t in video.transitions] if usable else [],
        "shots": [_shot_truth(s, secs) for s in video.shots] if usable else [],
    }


def _transition_truth(t: TransitionSpec, secs) -> dict:
    if t.kind == "cut":
        return {"kind": "cut", "frame": t.start_frame, "time_s": secs(t.start_frame)}
    return {"kind": t.kind, "start_frame": t.start_frame, "end_frame": t.end_frame,
            "start_s": secs(t.start_frame), "end_s": secs(t.end_frame)}


def _shot_truth(s: ShotSpec, secs) -> dict:
    return {
        "index": s.index, "start_frame": s.start_frame, "end_frame": s.end_frame,
        "start_s": secs(s.start_frame), "end_s": secs(s.end_frame), "caption": s.caption,
        "alt_text": s.alt_text, "alt_text_wrong": s.alt_text_wrong,
        "attributes": {"objects": [o.attributes() for o in s.objects],
                       "background": s.background, "camera": s.camera},
        "defects": list(s.defects), "dup_group": s.dup_group,
    }
