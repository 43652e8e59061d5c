"""Ingest throughput: clips/s and hours of video per core-hour for probe + split + extract.

    python benchmarks/ingest_throughput.py [--videos 24] [--runner ray] [--repeats 1]

Runs the real ingest job (Ray Data runner by default, local Ray on all cores; Ray's start-up is
timed apart) on a synthetic world and on ../shared/data/videos. Anchor: NeMo Curator publishes
17.5 clips/s for split + transcode on 128 CPUs, about 0.14 clips/s per CPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.ingest.config import IngestConfig, RunnerConfig  # noqa: E402
from pipelines.ingest.job import run_ingest  # noqa: E402
from pipelines.synth import render_world  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
NEMO_PER_CPU = 17.5 / 128


def measure(name: str, src: str, cfg: IngestConfig, cpus: int) -> str:
    root = tempfile.mkdtemp(prefix="vidcorpus-ingestbench-root-")
    r = run_ingest([src], root, cfg)
    per_cpu = r.clips / r.wall_s / cpus
    vh_per_core_h = (r.seconds_in / 3600) / (r.wall_s * cpus / 3600)
    return (f"| {name} | {r.videos_ok} | {r.clips} | {r.seconds_in / 60:.1f} | {r.wall_s:.1f} | "
            f"{r.clips / r.wall_s:.2f} | {per_cpu:.3f} | {per_cpu / NEMO_PER_CPU:.1f}× | {vh_per_core_h:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--runner", default="ray", choices=["ray", "local"])
    args = ap.parse_args()
    cpus = os.cpu_count() or 1 if args.runner == "ray" else 1
    cfg = IngestConfig(runner=RunnerConfig(kind=args.runner, num_cpus=cpus if args.runner == "ray" else None))
    world = tempfile.mkdtemp(prefix="vidcorpus-ingestbench-world-")
    render_world(world, n_videos=args.videos, seed=0)
    if args.runner == "ray":
        import ray
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False)
        print(f"Ray start-up (not counted below): {time.perf_counter() - t0:.1f}s")
    print(f"\nrunner={args.runner}, {cpus} CPUs; NeMo Curator anchor {NEMO_PER_CPU:.3f} clips/s per CPU\n")
    print("| input | videos ok | clips | minutes in | wall (s) | clips/s | clips/s per CPU | vs NeMo per CPU "
          "| video-hours per core-hour |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(measure("synthetic world", world, cfg, cpus))
    if REAL.is_dir():
        print(measure("shared/data/videos", str(REAL), cfg, cpus))


if __name__ == "__main__":
    main()
