"""The default shot detector: classical cut and gradual finders, fused with TransNetV2 when a GPU
makes the network cheap.

Without TransNetV2 (the default on CPU, where the network runs ~15x slower than decoding): cuts and
gradual transitions come from :mod:`pipelines.shots.classical`; cuts inside a gradual span are
dropped (the steps of a fade are not cuts).

With TransNetV2 (``transnet="always"``, or ``"auto"`` with CUDA): its transitions are the
candidates, placed and classified by the pixels: a candidate overlapping a classical gradual span
becomes that span; one containing a classical cut becomes that cut; otherwise the network's own
call stands (gradual when its many-hot span covers at least ``min_gradual_frames``). Classical
gradual spans the network missed are added; classical cuts it missed are added only when they are
strong (``strong_cut_ratio``).

In both modes, a transition that would leave a first or last "shot" shorter than
``min_shot_frames`` (a black leader frame, a tail flash) is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipelines.shots.classical import CutParams, GradualParams, find_cuts, find_gradual
from pipelines.shots.decode import FrameSet
from pipelines.shots.features import descriptors, frame_diffs, histogram_diffs
from pipelines.shots.transnet import TransNetV2Config, TransNetV2Detector, resolve_device
from pipelines.shots.types import Transition


@dataclass(frozen=True)
class HybridConfig:
    """Settings of :class:`HybridDetector`; see the module docstring."""

    cuts: CutParams = field(default_factory=CutParams)
    gradual: GradualParams = field(default_factory=GradualParams)
    min_gradual_frames: int = 3  # shorter spans are reported as cuts
    min_shot_frames: int = 3  # first/last pieces shorter than this are not shots
    transnet: Literal["auto", "always", "never"] = "auto"  # auto = only when CUDA is available
    transnet_config: TransNetV2Config = field(default_factory=TransNetV2Config)
    strong_cut_ratio: float = 4.0  # classical cuts TransNetV2 missed are kept above this ratio

    def __post_init__(self) -> None:
        if self.transnet not in ("auto", "always", "never"):
            raise ValueError(f"transnet must be 'auto', 'always' or 'never', not {self.transnet!r}")
        if self.min_gradual_frames < 2 or self.min_shot_frames < 1:
            raise ValueError("min_gradual_frames must be >= 2 and min_shot_frames >= 1")

    def uses_transnet(self) -> bool:
        """Whether TransNetV2 runs under this config on this machine."""
        if self.transnet == "auto":
            return resolve_device(self.transnet_config.device) == "cuda"
        return self.transnet == "always"


class HybridDetector:
    """Cuts and gradual transitions from frame-difference signals, optionally fused with
    TransNetV2."""

    name = "hybrid"

    def __init__(self, config: HybridConfig = HybridConfig()):
        self.config = config

    def detect(self, frames: FrameSet) -> list[Transition]:
        if len(frames) < 2:
            return []
        desc = descriptors(frames)  # (n, 3888) int16
        diffs, rms_diffs = frame_diffs(desc)  # (n,) each
        cuts = find_cuts(desc, diffs, self._histogram_diffs(desc, diffs), self.config.cuts)
        spans = find_gradual(desc, diffs, rms_diffs, self.config.gradual)
        if self.config.uses_transnet():
            found = self._fuse(frames, cuts, spans)
        else:
            found = self._classical(frames, cuts, spans)
        return _drop_edge_pieces(sorted(found, key=lambda t: t.start_s), len(frames), self.config.min_shot_frames)

    def _histogram_diffs(self, desc: np.ndarray, diffs: np.ndarray) -> np.ndarray:
        """Histogram changes where a histogram cut is possible (the change is bounded by ``diffs``)
        and around those frames, for the ratio test; 0 elsewhere."""
        p = self.config.cuts
        possible = (diffs >= p.min_hist).astype(np.float32)
        near = np.convolve(possible, np.ones(2 * p.context + 1, np.float32), mode="same") > 0
        return histogram_diffs(desc, near)

    def _classical(self, frames: FrameSet, cuts, spans) -> list[Transition]:
        """Gradual spans, plus the cuts that are not steps inside one."""
        out = [self._span(frames, s, e, score) for s, e, score in spans]
        out += [_cut(frames, t, _ratio_score(r)) for t, r in cuts if not _inside(t, spans)]
        return out

    def _fuse(self, frames: FrameSet, cuts, spans) -> list[Transition]:
        """Network transitions (located by the classical finders), then classical gradual spans
        and strong cuts the network missed."""
        network = TransNetV2Detector(self.config.transnet_config).detect(frames)
        out = [self._refine(frames, tr, cuts, spans) for tr in network]
        covered = [(t.start_frame, t.end_frame, t.score) for t in out]
        out += [self._span(frames, s, e, c) for s, e, c in spans if not _overlaps(s, e, covered)]
        strong = [(t, r) for t, r in cuts if r >= self.config.strong_cut_ratio]
        out += [_cut(frames, t, _ratio_score(r)) for t, r in strong if not _overlaps(t, t, covered + spans)]
        return _dedupe(out)

    def _refine(self, frames: FrameSet, tr: Transition, cuts, spans) -> Transition:
        """A network transition, placed and classified by the pixels: over the classical gradual
        span it overlaps, else at the classical cut inside it (the network sometimes spreads a cut
        next to motion over several frames), else as the network says."""
        span = next(((s, e) for s, e, _ in spans if _overlaps(tr.start_frame, tr.end_frame, [(s, e, 0)])), None)
        if span is not None:
            return self._span(frames, span[0], span[1], tr.score)
        inside = [t for t, _ in cuts if tr.start_frame - 2 <= t <= tr.end_frame + 2]
        if inside:
            return _cut(frames, min(inside, key=lambda t: abs(t - tr.end_frame)), tr.score)
        if tr.kind == "gradual":
            return self._span(frames, tr.start_frame, tr.end_frame, tr.score)
        return tr

    def _span(self, frames: FrameSet, start: int, end: int, score: float) -> Transition:
        """A gradual transition over ``[start, end)``, or a cut at ``end`` when it is too short."""
        if end - start < self.config.min_gradual_frames:
            return _cut(frames, end, score)
        return Transition("gradual", frames.time_of(start), frames.time_of(end), start, end, score)


def _cut(frames: FrameSet, t: int, score: float) -> Transition:
    return Transition("cut", frames.time_of(t), frames.time_of(t), t, t, score)


def _ratio_score(ratio: float) -> float:
    """Map a cut's change ratio (>= 1) to a confidence in [0, 1)."""
    return float(1.0 - 1.0 / max(ratio, 1.0))


def _inside(t: int, spans, margin: int = 1) -> bool:
    """Whether frame ``t`` lies within ``margin`` frames of one of ``spans``."""
    return any(s - margin <= t <= e + margin for s, e, _ in spans)


def _overlaps(start: int, end: int, spans, margin: int = 2) -> bool:
    """Whether frames ``[start, end]`` come within ``margin`` frames of one of ``spans``."""
    return any(start <= e + margin and end >= s - margin for s, e, _ in spans)


def _dedupe(found: list[Transition]) -> list[Transition]:
    """Drop transitions that overlap an earlier, already kept one."""
    kept: list[Transition] = []
    for tr in sorted(found, key=lambda t: (t.start_frame, -t.score)):
        if kept and tr.start_frame <= kept[-1].end_frame:
            continue
        kept.append(tr)
    return kept


def _drop_edge_pieces(found: list[Transition], n: int, min_frames: int) -> list[Transition]:
    """Drop transitions leaving fewer than ``min_frames`` frames before the first / after the last."""
    return [t for t in found if t.start_frame >= min_frames and n - t.end_frame >= min_frames]

