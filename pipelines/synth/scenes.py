"""Sampling shot contents: objects, backgrounds, camera, captions and alt texts of each shot.

Consecutive shots never share a background, so every boundary is visible. Bad shots (black,
noise, frozen, near-duplicate) are built here from the per-video defect plan.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from pipelines.synth.spec import (
    ALT_WRONG_PROB, BACKGROUNDS, CAMERAS, COLORS, MIN_COLOR_CONTRAST, MOTIONS, SHAPES,
    SIZE_FRACTION, SIZES, TWO_OBJECT_PROB, ObjectSpec, ShotSpec,
)
from pipelines.synth.text import alt_text_for, blank_alt_text, caption_for


def sample_shots(
    rng: np.random.Generator, spans: list, plan: list, width: int, height: int, dup_group: int
) -> list[ShotSpec]:
    """Sample shot contents in order; consecutive shots never share a background."""
    shots: list[ShotSpec] = []
    for i, ((start, end), defect) in enumerate(zip(spans, plan)):
        if defect in ("black", "noise"):
            alt = blank_alt_text(rng)
            shot = ShotSpec(i, start, end, (), defect, "static", caption_for((), defect, "static"),
                            alt, defects=(defect,), noise_seed=int(rng.integers(2**31)))
        elif defect == "duplicate":
            src = _pick_duplicate_source(rng, shots)
            shots[src] = replace(shots[src], dup_group=dup_group)
            shot = _near_duplicate(rng, shots[src], i, start, end)
        else:
            prev_bg = shots[-1].background if shots else None
            shot = _sample_scene(rng, i, (start, end), (width, height), prev_bg)
            if defect == "frozen":
                shot = _frozen(shot)
        shots.append(shot)
    return shots


def _pick_duplicate_source(rng: np.random.Generator, shots: list[ShotSpec]) -> int:
    """A clean shot at least two back whose background differs from the previous shot's."""
    prev_bg = shots[-1].background
    candidates = [j for j, s in enumerate(shots[:-1]) if not s.defects and s.background != prev_bg]
    return int(rng.choice(candidates))


def _near_duplicate(rng: np.random.Generator, src: ShotSpec, index: int, start: int,
                    end: int) -> ShotSpec:
    """Re-render ``src`` slightly shifted and brighter or darker, with a fresh alt text."""
    shift = tuple(float(rng.choice([-1, 1]) * rng.uniform(2, 5)) for _ in range(2))
    brightness = float(1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.1))
    wrong = rng.random() < ALT_WRONG_PROB
    alt, wrong = alt_text_for(rng, src.objects, src.background, wrong, COLORS, SHAPES)
    return replace(src, index=index, start_frame=start, end_frame=end, alt_text=alt,
                   alt_text_wrong=wrong, defects=("duplicate",), shift=shift,
                   brightness=brightness)


def _frozen(shot: ShotSpec) -> ShotSpec:
    """A real scene whose first frame is repeated: nothing moves, so the caption says so."""
    objects = tuple(replace(o, motion="still") for o in shot.objects)
    return replace(shot, objects=objects, camera="static", pan_speed=0.0, defects=("frozen",),
                   caption=caption_for(objects, shot.background, "static"))


def _sample_scene(rng: np.random.Generator, index: int, span: tuple[int, int],
                  size: tuple[int, int], prev_bg: str | None) -> ShotSpec:
    """A clean shot: one or two objects over a background, maybe a camera pan."""
    width, height = size
    length = span[1] - span[0]
    background = str(rng.choice([b for b in BACKGROUNDS if b != prev_bg]))
    n_objects = 2 if rng.random() < TWO_OBJECT_PROB else 1
    regions = _regions(width, height, n_objects)
    objects: list[ObjectSpec] = []
    for region in regions:
        used = {o.color for o in objects}
        objects.append(_sample_object(rng, region, math.sqrt(width * height), length, background,
                                      used))
    camera = CAMERAS[int(rng.choice(3, p=(0.7, 0.15, 0.15)))]
    if camera == "static" and all(o.motion == "still" for o in objects):
        camera = str(rng.choice(CAMERAS[1:]))  # keep every clean shot moving
    pan = 0.0 if camera == "static" else rng.uniform(0.2, 0.4) * width / length
    pan *= -1 if camera == "pan left" else 1
    objects = [_keep_in_view(o, pan, length, r) for o, r in zip(objects, regions)]
    texture = (rng.uniform(0.25, 0.5) * width, rng.uniform(0, 2 * np.pi),
               rng.uniform(0.5, 1.0) * height, rng.uniform(0, 2 * np.pi))
    wrong = rng.random() < ALT_WRONG_PROB
    alt, wrong = alt_text_for(rng, objects, background, wrong, COLORS, SHAPES)
    return ShotSpec(index, span[0], span[1], tuple(objects), background, camera,
                    caption_for(objects, background, camera), alt, wrong,
                    pan_speed=float(pan), texture=tuple(float(t) for t in texture))


def _keep_in_view(obj: ObjectSpec, pan: float, length: int, region: tuple) -> ObjectSpec:
    """Move the object's start so its on-screen path (own motion minus the pan) stays in view."""
    lo, hi = region[0] + obj.diameter / 2, region[2] - obj.diameter / 2
    end = obj.x + (obj.vx - pan) * length
    a, b = min(obj.x, end), max(obj.x, end)
    if b - a >= hi - lo:
        dx = (lo + hi) / 2 - (a + b) / 2
    else:
        dx = max(lo - a, 0.0) + min(hi - b, 0.0)
    return replace(obj, x=obj.x + dx)


def _regions(width: int, height: int, n_objects: int) -> list[tuple[float, float, float, float]]:
    """Areas (x0, y0, x1, y1) for object centres: the frame, or two halves along its long side."""
    if n_objects == 1:
        return [(0, 0, width, height)]
    if width >= height:
        return [(0, 0, width / 2, height), (width / 2, 0, width, height)]
    return [(0, 0, width, height / 2), (0, height / 2, width, height)]


def _sample_object(rng: np.random.Generator, region: tuple, frame_scale: float, length: int,
                   background: str, used_colors: set[str]) -> ObjectSpec:
    """Sample an object whose colour contrasts with the background, and its motion path."""
    shape = str(rng.choice(SHAPES))
    bg_rgb = np.array(COLORS[background])
    colors = [c for c in COLORS if c not in used_colors
              and np.linalg.norm(np.array(COLORS[c]) - bg_rgb) >= MIN_COLOR_CONTRAST]
    color, size = str(rng.choice(colors)), str(rng.choice(SIZES))
    motions = [m for m in MOTIONS if not (shape == "circle" and m == "spinning")]
    motion = str(rng.choice(motions))
    diameter = SIZE_FRACTION[size] * frame_scale
    x0, y0, x1, y1 = region
    x, vx = _axis_path(rng, x0, x1, diameter, length, {"left": -1, "right": 1}.get(motion, 0))
    y, vy = _axis_path(rng, y0, y1, diameter, length, {"up": -1, "down": 1}.get(motion, 0))
    scale0, dscale = {"growing": (0.5, 1.0), "shrinking": (1.5, -1.0)}.get(motion, (1.0, 0.0))
    spin = float(rng.choice([-1, 1]) * rng.uniform(3, 8)) if motion == "spinning" else 0.0
    angle0 = float(rng.uniform(0, 360)) if motion == "spinning" else 0.0
    return ObjectSpec(shape, color, size, motion, x, y, vx, vy, diameter, scale0,
                      dscale / length, angle0, spin)


def _axis_path(rng: np.random.Generator, lo: float, hi: float, diameter: float, length: int,
               direction: int) -> tuple[float, float]:
    """Start coordinate and per-frame velocity along one axis, staying inside [lo, hi]."""
    lo_c, hi_c = lo + diameter / 2, hi - diameter / 2
    if lo_c > hi_c:
        lo_c = hi_c = (lo + hi) / 2
    if direction == 0:
        return float(rng.uniform(lo_c, hi_c)), 0.0
    travel = max(0.2 * (hi - lo), rng.uniform(0.5, 0.9) * (hi_c - lo_c))
    start = rng.uniform(min(lo_c + travel, hi_c), hi_c) if direction < 0 else \
        rng.uniform(lo_c, max(hi_c - travel, lo_c))
    return float(start), direction * travel / length
