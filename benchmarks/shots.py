"""Shot-detection benchmark: quality and speed of our detectors next to PySceneDetect's defaults.

    python benchmarks/shots.py [--world DIR] [--videos-dir ../shared/data/videos]
                               [--detectors hybrid,adaptive,content,transnetv2,hybrid+transnetv2]
                               [--repeats 3]
                               [--write-results]

Two sets: the hand-labelled real clips (``ground_truth.json``) and a synthetic world (24 videos,
seed 0, rendered into a temporary directory unless ``--world`` is given; broken files skipped).
For every method it reports precision / recall / F1 at +-2 frames for hard cuts, gradual
transitions and overall (see :mod:`pipelines.shots.evaluate`), wall time and frames/s. Anchors in
the same run: ``scenedetect.detect(path, AdaptiveDetector())`` and ``ContentDetector()`` with
library defaults (scene starts after the first are cut detections), and a decode-only PyAV pass
(the floor). Our detectors' times include our decode (``decode_frames``). Times are the minimum
over ``--repeats`` interleaved runs per video (the machine may be shared); TransNetV2 runs once.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.shots import create_detector, decode_frames  # noqa: E402
from pipelines.shots.evaluate import (  # noqa: E402
    MatchCounts,
    TruthVideo,
    load_real_truth,
    load_synthetic_truth,
    score_video,
)
from pipelines.shots.scenedetect_det import detect_path  # noqa: E402
from pipelines.shots.types import Transition  # noqa: E402

FLOOR = "decode only (PyAV, floor)"
ANCHORS = {"PySceneDetect detect() Adaptive": "adaptive", "PySceneDetect detect() Content": "content"}
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Shot detection"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=Path, help="rendered synthetic world (default: render 24 videos, seed 0)")
    parser.add_argument("--videos-dir", type=Path, default=REPO / ".." / "shared" / "data" / "videos")
    parser.add_argument("--detectors", default="hybrid,adaptive,content,transnetv2,hybrid+transnetv2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-results", action="store_true", help=f"replace the '{SECTION}' section of RESULTS.md")
    return parser.parse_args(argv)


class Tally:
    """Counts and (wall, CPU) seconds per method over one set of videos."""

    def __init__(self) -> None:
        self.counts: dict[str, MatchCounts] = defaultdict(MatchCounts)
        self.seconds: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(2))
        self.frames = 0

    def add(self, method: str, seconds: np.ndarray, counts: MatchCounts | None = None) -> None:
        self.seconds[method] = self.seconds[method] + seconds
        if counts is not None:
            self.counts[method] = self.counts[method] + counts


def timed(fn, repeats: int):
    """``(result of the last call, [wall, CPU] seconds)``, each the minimum over ``repeats``.

    CPU time is this process's, all threads (decoder threads included): on a shared machine it
    varies much less than wall time."""
    best, result = np.array([np.inf, np.inf]), None
    for _ in range(max(1, repeats)):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best = np.minimum(best, [time.perf_counter() - wall, time.process_time() - cpu])
    return result, best


def decode_only(path: Path) -> int:
    """Decode every frame with PyAV and do nothing else: the floor."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def run_video(video: TruthVideo, detectors: dict, tally: Tally, repeats: int) -> None:
    """Time and score every method on one video."""
    _, floor_s = timed(lambda: decode_only(video.path), repeats)
    frames, decode_s = timed(lambda: decode_frames(video.path), repeats)
    tally.frames += len(frames)
    tally.add(FLOOR, floor_s)
    network_s = np.zeros(2)  # TransNetV2 inference, cached on the FrameSet after its first run
    for name, detector in detectors.items():
        uses_network = "transnetv2" in name
        found, detect_s = timed(lambda: detector.detect(frames), 1 if uses_network else repeats)
        if name == "transnetv2":
            network_s = detect_s
        elif uses_network:  # the fusion reused the cached probabilities: charge the inference
            detect_s += network_s
        tally.add(name, decode_s + detect_s, score_video(found, video.transitions, video.avg_fps))
    for label, anchor in ANCHORS.items():
        times, anchor_s = timed(lambda: detect_path(video.path, anchor), repeats)
        found = [Transition("cut", t, t, frames.frame_at(t), frames.frame_at(t)) for t in times]
        tally.add(label, anchor_s, score_video(found, video.transitions, video.avg_fps))


def make_detectors(names: list[str]) -> dict:
    """Detectors by benchmark name; ``hybrid+transnetv2`` is the hybrid with the network forced on
    (what ``hybrid`` does by default on a GPU). TransNetV2 runs before the fusion so that the
    fusion reuses its probabilities."""
    order = sorted(names, key=lambda n: n == "hybrid+transnetv2")
    if "hybrid+transnetv2" in names and "transnetv2" not in names:
        raise SystemExit("hybrid+transnetv2 needs transnetv2 in --detectors (its inference time is charged)")
    return {
        n: create_detector("hybrid", transnet="always") if n == "hybrid+transnetv2" else create_detector(n)
        for n in order
    }


def run_set(videos: list[TruthVideo], names: list[str], repeats: int) -> Tally:
    detectors = make_detectors(names)
    tally = Tally()
    for video in videos:
        run_video(video, detectors, tally, repeats)
        print(f"  {video.file}: done", file=sys.stderr, flush=True)
    return tally


COLUMNS = ["method", "cut P", "cut R", "cut F1", "gradual P", "gradual R", "gradual F1",
           "overall P", "overall R", "**overall F1**", "wall s", "CPU s", "frames/s (wall)",
           "x floor (wall)", "x floor (CPU)"]


def table(title: str, tally: Tally, n_videos: int) -> str:
    """A markdown table of one set's results."""
    rows = [
        f"**{title}** ({n_videos} videos, {tally.frames} frames)\n",
        "| " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * (len(COLUMNS) - 1),
    ]
    floor = tally.seconds[FLOOR]
    for method, seconds in tally.seconds.items():
        quality = [""] * 9 if method == FLOOR else _quality_cells(tally.counts[method])
        wall, cpu = seconds
        speed = [f"{wall:.2f}", f"{cpu:.2f}", f"{tally.frames / wall:.0f}", f"{wall / floor[0]:.2f}", f"{cpu / floor[1]:.2f}"]
        rows.append("| " + " | ".join([method, *quality, *speed]) + " |")
    return "\n".join(rows) + "\n"


def _quality_cells(counts: MatchCounts) -> list[str]:
    """P, R, F1 for cuts, gradual transitions and overall (overall F1 in bold)."""
    cells = []
    for kind in ("cut", "gradual", None):
        prf = counts.prf(kind)
        cells += [f"{prf['precision']:.3f}", f"{prf['recall']:.3f}", f"{prf['f1']:.3f}"]
    cells[-1] = f"**{cells[-1]}**"
    return cells


def load_sets(args: argparse.Namespace, tmp: Path) -> dict[str, list[TruthVideo]]:
    sets = {}
    if (args.videos_dir / "ground_truth.json").exists():
        sets["Real clips (hand-labelled)"] = load_real_truth(args.videos_dir)
    world = args.world
    if world is None:
        from pipelines.synth import render_world

        world = tmp / "world"
        render_world(world, n_videos=24, seed=0, progress=False)
    sets[f"Synthetic world ({world.name})"] = load_synthetic_truth(world)
    return sets


NOTES = "Notes (shot detection):"


def write_section(text: str) -> None:
    """Replace (or append) the shot-detection section of RESULTS.md, leaving other sections and
    keeping the hand-written notes (from the line starting with ``NOTES``) of the old one."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = old.find(SECTION)
    if start < 0:
        RESULTS.write_text(old.rstrip("\n") + "\n\n" + text)
        return
    nxt = old.find("\n## ", start + len(SECTION))
    section = old[start : nxt + 1 if nxt >= 0 else len(old)]
    notes = section[section.find(NOTES) :] if NOTES in section else ""
    rest = old[nxt + 1 :] if nxt >= 0 else ""
    body = text.rstrip("\n") + "\n" + ("\n" + notes.rstrip("\n") + "\n" if notes else "")
    RESULTS.write_text(old[:start] + body + ("\n" + rest if rest else ""))


def main(argv=None) -> None:
    args = parse_args(argv)
    names = [n for n in args.detectors.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp:
        sets = load_sets(args, Path(tmp))
        tables = []
        for title, videos in sets.items():
            print(f"{title}: {len(videos)} videos", file=sys.stderr)
            tables.append(table(title, run_set(videos, names, args.repeats), len(videos)))
    command = "python benchmarks/shots.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"{SECTION}\n\nCommand: `{command.strip()}` - {datetime.date.today()} - {platform.machine()}, "
        f"{_cpu_note()}. Matching: +-2 frames (see `pipelines/shots/evaluate.py`).\n\n"
    )
    text = header + "\n".join(tables)
    print(text)
    if args.write_results:
        write_section(text)


def _cpu_note() -> str:
    import os

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, {gpu}"


if __name__ == "__main__":
    main()
