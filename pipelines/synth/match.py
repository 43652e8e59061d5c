"""Join the synthetic world's ground truth to an ingested catalog.

``match_clips_to_truth`` maps each clip to the truth shot it overlaps most (same source file,
largest time overlap); ``load_world_captions`` writes each clip's alt text (source ``alt-text``)
and, for a deterministic seed subset of videos, the ground-truth caption as the human-written
seed set (source ``original``). Quality numbers (shot F1, filter precision/recall, caption
accuracy) all rest on this join.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClipTruth:
    clip_id: str
    file: str
    shot_index: int
    shot: dict[str, Any]
    overlap: float  # share of the clip's span covered by that shot

    @property
    def is_bad(self) -> bool:
        return bool(self.shot["defects"]) or bool(self.shot.get("alt_text_wrong"))


def load_truth(world_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(world_dir) / "truth.json").read_text())


def match_clips_to_truth(catalog, world_dir: str | os.PathLike, min_overlap: float = 0.5) -> dict[str, ClipTruth]:
    """clip_id → the truth shot it overlaps most (clips of non-world videos are left out)."""
    truth = {str((Path(world_dir) / v["file"]).resolve()): v for v in load_truth(world_dir)["videos"]}
    rows = catalog.query("SELECT c.clip_id, c.start_s, c.end_s, v.uri FROM clips c "
                         "JOIN videos v USING (video_id)").to_pylist()
    out: dict[str, ClipTruth] = {}
    for r in rows:
        video = truth.get(str(Path(r["uri"]).resolve())) if "://" not in r["uri"] else None
        if video is None or not video["shots"]:
            continue
        span = max(r["end_s"] - r["start_s"], 1e-9)
        overlaps = [max(0.0, min(r["end_s"], s["end_s"]) - max(r["start_s"], s["start_s"])) / span
                    for s in video["shots"]]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= min_overlap:
            out[r["clip_id"]] = ClipTruth(r["clip_id"], video["file"], best, video["shots"][best],
                                          overlaps[best])
    return out


def seed_videos(truth: dict[str, Any], fraction: float, seed: int = 0) -> set[str]:
    """A deterministic subset of usable videos whose truth captions play the human seed set."""
    files = sorted(v["file"] for v in truth["videos"] if not v["broken"])
    rng = np.random.default_rng(seed)
    k = max(1, round(fraction * len(files))) if fraction > 0 else 0
    return set(rng.choice(files, size=k, replace=False).tolist()) if k else set()


def load_world_captions(catalog, world_dir: str | os.PathLike, seed_fraction: float = 0.5,
                        seed: int = 0, job_id: str | None = None) -> dict[str, int]:
    """Write alt text for every matched clip and truth captions for the seed subset."""
    matches = match_clips_to_truth(catalog, world_dir)
    seeds = seed_videos(load_truth(world_dir), seed_fraction, seed)
    alt = [dict(clip_id=m.clip_id, source="alt-text", text=m.shot["alt_text"], model="web",
                job_id=job_id) for m in matches.values()]
    orig = [dict(clip_id=m.clip_id, source="original", text=m.shot["caption"], model="human-seed",
                 job_id=job_id) for m in matches.values() if m.file in seeds]
    catalog.append("captions", alt + orig)
    return {"alt_text": len(alt), "original": len(orig), "seed_videos": len(seeds)}


def shot_f1_against_truth(catalog, truth_videos: list, tol_frames: float = 2.0) -> dict[str, dict[str, float]]:
    """Precision/recall/F1 of the transitions the ingest job stored in ``videos.transitions``.

    ``truth_videos``: ``pipelines.shots.evaluate.load_synthetic_truth(world)`` or
    ``load_real_truth(dir)``; videos are joined by file path. Returns {"all"|"cut"|"gradual": prf}.
    """
    from pipelines.shots.evaluate import MatchCounts, score_video
    from pipelines.shots.types import Transition
    stored = {str(Path(r["uri"]).resolve()): json.loads(r["transitions"] or "[]") for r in catalog.query(
        "SELECT uri, transitions FROM videos WHERE status = 'ok'").to_pylist() if "://" not in r["uri"]}
    total = MatchCounts()
    for tv in truth_videos:
        found = stored.get(str(Path(tv.path).resolve()))
        if found is None:
            continue
        detections = [Transition(t["kind"], t["start_s"], t["end_s"], t["start_frame"], t["end_frame"])
                      for t in found]
        total = total + score_video(detections, tv.transitions, tv.avg_fps, tol_frames)
    return {"all": total.prf(), "cut": total.prf("cut"), "gradual": total.prf("gradual")}
