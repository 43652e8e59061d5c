"""Cheap per-frame signals for the classical part of shot detection.

Every frame becomes a 3888-value descriptor: its 48x27 Y, U and V planes. Two distances
between frames are used, both on a 0..255 grey-level scale:

* ``l1``: ``mean|dY| + mean|dU| + mean|dV|`` (a hard cut between unrelated shots typically
  scores 40..100, a static shot 0..2, fast motion 10..25);
* ``rms``: the root-mean-square difference, for the coherence of windows (see
  :func:`window_stats`).

``histogram_diffs`` is the earth mover's distance between the colour distributions of consecutive
frames, computed exactly from sorted pixel values: it ignores motion over a steady background and
catches cuts into or out of noise-like pictures.
"""

from __future__ import annotations

import numpy as np

from pipelines.shots.decode import FrameSet

CHUNK = 2048  # rows per block when differencing, bounds the temporaries


def descriptors(frames: FrameSet) -> np.ndarray:
    """``(n, 3888)`` int16: the 48x27 Y, U and V planes of every frame, flattened plane by plane
    (int16 so that differences need no further conversion)."""
    return frames.yuv.reshape(len(frames), -1).astype(np.int16)


def _distances(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(l1, rms)`` per row of ``delta`` (k, 3888) int16 frame differences."""
    wide = delta.astype(np.float32)
    squares = np.einsum("ij,ij->i", wide, wide)
    np.abs(wide, out=wide)
    l1 = np.einsum("ij->i", wide) * (3.0 / wide.shape[1])
    return l1.astype(np.float32), np.sqrt(squares / wide.shape[1]).astype(np.float32)


def pair_distances(desc: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(l1, rms)``, each ``(k,)`` float32: distances between frames ``first[i]`` and ``second[i]``."""
    parts = [
        _distances(desc[second[i : i + CHUNK]] - desc[first[i : i + CHUNK]]) for i in range(0, len(first), CHUNK)
    ]
    if not parts:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def distance(desc: np.ndarray, i: int, j: int) -> float:
    """``l1`` distance between frames ``i`` and ``j``."""
    return float(np.abs(desc[j] - desc[i]).mean() * 3.0)


def frame_diffs(desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(l1, rms)``, each ``(n,)`` float32: distance between frames ``t - 1`` and ``t``; 0 at t=0."""
    l1, rms = [np.zeros(len(desc), np.float32) for _ in range(2)]
    for i in range(1, len(desc), CHUNK):
        stop = min(i + CHUNK, len(desc))
        l1[i:stop], rms[i:stop] = _distances(desc[i:stop] - desc[i - 1 : stop - 1])
    return l1, rms


def window_stats(
    desc: np.ndarray, l1_diffs: np.ndarray, rms_diffs: np.ndarray, length: int, max_step: float, min_net: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(a, net, coherence, largest step)`` for the windows of ``length`` frame steps (frames
    ``a .. a + length``) that may look like a gradual transition.

    ``coherence`` = RMS net change / sum of the RMS frame-to-frame changes. Using RMS (an L2 norm)
    makes it low for motion even when each pixel changes monotonically (an object sweeping over a
    flat background changes different pixels at each step: k disjoint steps add up to sqrt(k) times
    one step, not k times), and near 1 for a blend, where every step changes the same pixels in
    the same direction.

    Only windows that can pass are measured: the net ``l1`` change is at most the sum of the steps
    (triangle inequality), so that sum must reach ``min_net`` and exceed the largest step by the
    factor ``1 / max_step``. Long windows are tried at every ``length // 4``-th start (the span is
    refined afterwards).
    """
    path_l1 = _window_sums(l1_diffs, length)
    largest = np.lib.stride_tricks.sliding_window_view(l1_diffs[1:], length).max(axis=1)
    stride = max(1, length // 4)
    starts = np.arange(0, len(path_l1), stride)
    starts = starts[(path_l1[starts] >= min_net) & (largest[starts] <= max_step * path_l1[starts])]
    net, net_rms = pair_distances(desc, starts, starts + length)
    coherence = net_rms / np.maximum(_window_sums(rms_diffs, length)[starts], 1e-6)
    return starts, net, coherence.astype(np.float32), largest[starts]


def _window_sums(diffs: np.ndarray, length: int) -> np.ndarray:
    """``s[a]`` = ``diffs[a + 1] + ... + diffs[a + length]`` for every window start ``a``."""
    cumulative = np.concatenate([[0.0], np.cumsum(diffs[1:], dtype=np.float64)])
    return cumulative[length:] - cumulative[:-length]


def histogram_diffs(desc: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """``(n,)`` float32: earth mover's distance between the Y, U and V value distributions of
    frames ``t - 1`` and ``t``, summed over the three planes, in grey levels; 0 at t=0.

    For equal-size samples the 1-D earth mover's distance is the mean absolute difference of the
    sorted values: exact, with no bins (a flat colour drifting by one level scores 1). It never
    exceeds the ``l1`` frame difference (pairing pixels by position is one transport plan), so
    callers may pass ``where`` (bool, (n,)) to compute it only where it matters; 0 elsewhere.
    """
    n = len(desc)
    out = np.zeros(n, np.float32)
    t = np.arange(1, n) if where is None else np.flatnonzero(where[1:]) + 1
    for i in range(0, len(t), CHUNK):
        chunk = t[i : i + CHUNK]
        rows = desc[np.concatenate([chunk - 1, chunk])].reshape(2 * len(chunk), 3, -1)
        pair = np.sort(rows, axis=2, kind="stable")  # radix sort for 16-bit values
        out[chunk] = np.abs(pair[len(chunk) :] - pair[: len(chunk)]).sum(axis=(1, 2)) / pair.shape[2]
    return out


def side_medians(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(before, after)``, each ``(n,)``: medians of the ``k`` entries preceding / following each
    index. Entry 0 (no predecessor) is ignored; the ends are padded by repeating the edge values."""
    n = len(values)
    if n < 2:
        return np.zeros(n, np.float32), np.zeros(n, np.float32)
    body = values[1:]
    padded = np.concatenate([np.repeat(body[:1], k + 1), body, np.repeat(body[-1:], k + 1)])
    medians = np.median(np.lib.stride_tricks.sliding_window_view(padded, k), axis=1)
    # medians[i] covers padded[i : i + k]; values[t] sits at padded[t + k]
    return medians[:n].astype(np.float32), medians[k + 1 : k + 1 + n].astype(np.float32)
