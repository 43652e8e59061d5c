"""Classical (signal-processing) cut and gradual-transition finders on :mod:`features` signals.

Cuts: a frame whose change from the previous frame (in pixels, or in colour histograms) is both
large in absolute terms and several times the typical change on each side of it (so fast motion,
noise and the steady steps of a fade do not fire), and that persists (a flash, where the old
picture comes back within a few frames, is dropped).

Gradual transitions: windows of frames whose net change is large and *coherent* (the frame-to-frame
changes add up to the net change, as in a fade or a dissolve, where every pixel moves steadily
from the old picture to the new one, unlike motion; see :func:`features.window_stats`) and spread
over several frames (no single step carries most of it, else it is a cut). The most coherent
windows are picked greedily, trimmed to the frames that actually change, grown over neighbouring
frames changing at the same pace, and adjacent spans (a fade out straight into a fade in) merged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.shots.features import distance, side_medians, window_stats


@dataclass(frozen=True)
class CutParams:
    """Thresholds of :func:`find_cuts` (distances on the 0..255 scale of :mod:`features`)."""

    min_diff: float = 12.0  # the pixel change at a cut is at least this ...
    min_hist: float = 6.0  # ... or its histogram change (earth mover's distance, grey levels)
    ratio: float = 2.2  # ... and this many times the median change on each side
    context: int = 3  # frames on each side for those medians
    flash_frames: int = 3  # a change that reverts within this many frames ...
    flash_revert: float = 0.5  # ... to below this fraction of the jump is a flash, not a cut


@dataclass(frozen=True)
class GradualParams:
    """Thresholds of :func:`find_gradual`."""

    lengths: tuple[int, ...] = (4, 6, 8, 11, 16, 22, 32, 45, 64)  # window sizes, in frame steps
    min_change: float = 20.0  # net change between the window's ends
    min_coherence: float = 0.85  # RMS net change / sum of RMS frame-to-frame changes
    max_step: float = 0.5  # largest single step, as a fraction of the net change
    edge: float = 0.25  # frames changing by at least this fraction of the largest step are inside
    merge_gap: int = 2  # spans this close (in frames) are one transition (fade out + fade in)


def find_cuts(
    desc: np.ndarray, diffs: np.ndarray, hist_diffs: np.ndarray, p: CutParams
) -> list[tuple[int, float]]:
    """``(t, ratio)`` for each cut; ``t`` is the first frame of the new shot.

    A frame is a candidate on either signal: the pixel change ``diffs`` (most cuts) or the
    histogram change ``hist_diffs`` (cuts into or out of noise-like pictures, whose pixel change
    is no larger than the noise's own).
    """
    candidates: dict[int, float] = {}
    for signal, floor in ((diffs, p.min_diff), (hist_diffs, p.min_hist)):
        before, after = side_medians(signal, p.context)
        ratio = signal / (np.maximum(before, after) + 1.0)
        for t in np.flatnonzero((signal >= floor) & (ratio >= p.ratio)).tolist():
            if t > 0:
                candidates[t] = max(float(ratio[t]), candidates.get(t, 0.0))
    cuts = [(t, r) for t, r in sorted(candidates.items()) if not _is_flash(desc, t, float(diffs[t]), p)]
    return _suppress_neighbours(cuts, diffs, p.context)


def _is_flash(desc: np.ndarray, t: int, jump: float, p: CutParams) -> bool:
    """Whether the picture before ``t`` comes back within ``flash_frames`` frames."""
    last = min(len(desc) - 1, t + p.flash_frames)
    return any(distance(desc, t - 1, k) < p.flash_revert * jump for k in range(t + 1, last + 1))


def _suppress_neighbours(cuts: list[tuple[int, float]], diffs: np.ndarray, gap: int) -> list[tuple[int, float]]:
    """Of cuts closer than ``gap`` frames, keep the one with the larger change."""
    kept: list[tuple[int, float]] = []
    for t, ratio in cuts:
        if kept and t - kept[-1][0] < gap:
            if diffs[t] > diffs[kept[-1][0]]:
                kept[-1] = (t, ratio)
            continue
        kept.append((t, ratio))
    return kept


def find_gradual(
    desc: np.ndarray, diffs: np.ndarray, rms_diffs: np.ndarray, p: GradualParams
) -> list[tuple[int, int, float]]:
    """``(start, end, coherence)`` per gradual transition: frames ``[start, end)`` are transitional,
    ``end`` is the first clean frame of the new shot. ``diffs`` / ``rms_diffs``: mean-absolute and
    RMS frame-to-frame distances."""
    windows = sorted(_candidate_windows(desc, diffs, rms_diffs, p), reverse=True)
    taken = np.zeros(len(diffs), bool)
    spans: list[tuple[int, int, float]] = []
    for coherence, _, a, b in windows:
        if taken[a : b + 1].any():
            continue
        taken[a : b + 1] = True
        start, end = _grow(diffs, *_trim(diffs, a, b, p.edge), max(p.lengths))
        taken[start - 1 : end + 1] = True
        spans.append((start, end, coherence))
    return _merge(sorted(spans), p.merge_gap)


def _candidate_windows(desc: np.ndarray, diffs: np.ndarray, rms_diffs: np.ndarray, p: GradualParams):
    """``(coherence, net change, a, b)`` for every window ``[a, b]`` that looks like a gradual
    transition."""
    for length in p.lengths:
        if length >= len(diffs):
            break
        starts, net, coherence, largest = window_stats(desc, diffs, rms_diffs, length, p.max_step, p.min_change)
        ok = (net >= p.min_change) & (coherence >= p.min_coherence) & (largest <= p.max_step * net)
        for i in np.flatnonzero(ok).tolist():
            a = int(starts[i])
            yield float(coherence[i]), float(net[i]), a, a + length


def _trim(diffs: np.ndarray, a: int, b: int, edge: float) -> tuple[int, int]:
    """The frames of window ``[a, b]`` that change by at least ``edge`` x its largest step:
    ``(first changed frame, last changed frame)`` = (first transitional, first clean)."""
    steps = diffs[a + 1 : b + 1]
    inside = np.flatnonzero(steps >= edge * steps.max())
    return a + 1 + int(inside[0]), a + 1 + int(inside[-1])


def _grow(diffs: np.ndarray, start: int, end: int, max_len: int, level: float = 0.5) -> tuple[int, int]:
    """Extend ``[start, end]`` over neighbouring frames that still change by at least ``level`` x
    the span's median step (a dissolve whose ends were outside the best window), up to
    ``max_len`` frames."""
    typical = level * float(np.median(diffs[start : end + 1]))
    while start > 1 and end - start < max_len and diffs[start - 1] >= typical:
        start -= 1
    while end + 1 < len(diffs) and end - start < max_len and diffs[end + 1] >= typical:
        end += 1
    return start, end


def _merge(spans: list[tuple[int, int, float]], gap: int) -> list[tuple[int, int, float]]:
    """Join spans whose gap is at most ``gap`` frames."""
    merged: list[tuple[int, int, float]] = []
    for s, e, c in spans:
        if merged and s - merged[-1][1] <= gap:
            ps, pe, pc = merged[-1]
            merged[-1] = (ps, max(pe, e), min(pc, c))
        else:
            merged.append((s, e, c))
    return merged
