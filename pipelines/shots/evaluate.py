"""Score detected transitions against ground truth (real clips or a synthetic world).

Matching is greedy and one-to-one, closest midpoints first, with a tolerance of ``tol_frames``
frames (2 by default) converted to seconds at the video's average fps:

* a detection matches a hard cut at ``t`` when its whole span lies within ``[t - tol, t + tol]``
  (for a detected cut: ``|t_det - t| <= tol``);
* a detected cut matches a gradual truth ``[s, e]`` when it falls within ``[s - tol, e + tol]``;
  a detected gradual transition matches it when the spans overlap, the truth widened by ``tol``.

Precision and recall are reported overall and per truth kind. A matched detection counts for the
kind of the truth it matched; an unmatched detection counts as a false positive of the kind it
claimed (so a false cut inside a fade lowers the precision of cuts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.shots.types import Transition

KINDS = ("cut", "gradual")
_EPS = 1e-6


@dataclass
class MatchCounts:
    """True positives, false negatives and false positives per kind, summable over videos."""

    tp: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    fn: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    fp: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def __add__(self, other: MatchCounts) -> MatchCounts:
        out = MatchCounts()
        for name in ("tp", "fn", "fp"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(out, name, {k: mine[k] + theirs[k] for k in KINDS})
        return out

    def prf(self, kind: str | None = None) -> dict[str, float]:
        """Precision, recall and F1 for one kind, or overall when ``kind`` is None."""
        kinds = KINDS if kind is None else (kind,)
        tp = sum(self.tp[k] for k in kinds)
        fp = sum(self.fp[k] for k in kinds)
        fn = sum(self.fn[k] for k in kinds)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def admissible(det: Transition, truth: Transition, tol_s: float) -> bool:
    """Whether ``det`` may match ``truth`` under the tolerance rules of this module."""
    if truth.kind == "cut":
        return det.start_s >= truth.start_s - tol_s - _EPS and det.end_s <= truth.start_s + tol_s + _EPS
    lo, hi = truth.start_s - tol_s - _EPS, truth.end_s + tol_s + _EPS
    if det.kind == "cut":
        return lo <= det.start_s <= hi
    return det.start_s <= hi and det.end_s >= lo


def match(detections: list[Transition], truths: list[Transition], tol_s: float) -> list[tuple[int, int]]:
    """Greedy one-to-one ``(detection index, truth index)`` pairs, closest midpoints first."""
    pairs = [
        (abs(d.mid_s - t.mid_s), i, j)
        for i, d in enumerate(detections)
        for j, t in enumerate(truths)
        if admissible(d, t, tol_s)
    ]
    used_d: set[int] = set()
    used_t: set[int] = set()
    out = []
    for _, i, j in sorted(pairs):
        if i not in used_d and j not in used_t:
            used_d.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


def score_video(
    detections: list[Transition], truths: list[Transition], avg_fps: float, tol_frames: float = 2.0
) -> MatchCounts:
    """Match one video's detections to its truth and count per kind."""
    pairs = match(detections, truths, tol_frames / avg_fps)
    counts = MatchCounts()
    matched_d = {i for i, _ in pairs}
    matched_t = {j for _, j in pairs}
    for j, truth in enumerate(truths):
        bucket = counts.tp if j in matched_t else counts.fn
        bucket[truth.kind] += 1
    for i, det in enumerate(detections):
        if i not in matched_d:
            counts.fp[det.kind] += 1
    return counts


def kind_accuracy(detections: list[Transition], truths: list[Transition], avg_fps: float) -> tuple[int, int]:
    """``(matched detections whose kind is right, matched detections)``."""
    pairs = match(detections, truths, 2.0 / avg_fps)
    return sum(detections[i].kind == truths[j].kind for i, j in pairs), len(pairs)


@dataclass(frozen=True)
class TruthVideo:
    """One video with its true transitions."""

    file: str
    path: Path
    avg_fps: float
    transitions: list[Transition]


def load_real_truth(videos_dir: str | Path) -> list[TruthVideo]:
    """The hand-labelled real clips of ``videos_dir/ground_truth.json`` (times in seconds)."""
    videos_dir = Path(videos_dir)
    data = json.loads((videos_dir / "ground_truth.json").read_text())
    out = []
    for file, entry in sorted(data.items()):
        cuts = [Transition("cut", t, t, f, f) for t, f in zip(entry["hard_s"], entry["hard"])]
        gradual = [
            Transition("gradual", s, e, fs, fe)
            for (s, e, _), (fs, fe, _) in zip(entry["gradual_s"], entry["gradual"])
        ]
        transitions = sorted(cuts + gradual, key=lambda t: t.start_s)
        out.append(TruthVideo(file, videos_dir / file, float(entry["avg_fps"]), transitions))
    return out


def load_synthetic_truth(world_dir: str | Path) -> list[TruthVideo]:
    """The usable videos of a synthetic world (``truth.json``); broken files are skipped."""
    world_dir = Path(world_dir)
    data = json.loads((world_dir / "truth.json").read_text())
    return [
        TruthVideo(v["file"], world_dir / v["file"], float(v["fps"]), [_synthetic(t) for t in v["transitions"]])
        for v in data["videos"]
        if not v.get("broken")
    ]


def _synthetic(t: dict) -> Transition:
    if t["kind"] == "cut":
        return Transition("cut", t["time_s"], t["time_s"], t["frame"], t["frame"])
    return Transition("gradual", t["start_s"], t["end_s"], t["start_frame"], t["end_frame"])
