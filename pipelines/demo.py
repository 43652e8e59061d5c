"""``make demo``: the whole mission on the embedded defaults, ending with a readable report.

Each step is skipped when its output already exists, so a second ``make demo`` is fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("vidcorpus.demo")
REAL_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"

SQL_QUESTIONS = {
    "Clips per aspect-ratio class": """
        SELECT CASE WHEN width > 2 * height THEN 'ultrawide' WHEN width > height THEN 'landscape'
                    WHEN width = height THEN 'square' ELSE 'portrait' END AS shape,
               count(*) AS clips, round(sum(duration_s), 1) AS seconds
        FROM clips GROUP BY shape ORDER BY clips DESC""",
    "Videos by status and error class": """
        SELECT status, coalesce(error_class, '-') AS error_class, count(*) AS videos
        FROM videos GROUP BY ALL ORDER BY videos DESC""",
    "How clips were entered (transition kind)": """
        SELECT transition_in, count(*) AS clips, round(avg(duration_s), 2) AS avg_s
        FROM clips GROUP BY 1 ORDER BY 2 DESC""",
}


@dataclass
class Demo:
    root: Path
    world: Path
    videos: int = 24
    seed: int = 0
    report: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)

    def step(self, title: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        print(f"\n=== {title} ===", flush=True)
        out = fn()
        print(f"--- {title}: {time.perf_counter() - t:.1f}s", flush=True)
        return out

    def render(self) -> None:
        from pipelines.synth import render_world
        if (self.world / "truth.json").exists():
            print(f"world already rendered at {self.world}")
            return
        render_world(self.world, n_videos=self.videos, seed=self.seed)

    def ingest(self) -> None:
        from pipelines.ingest.config import IngestConfig, RunnerConfig
        from pipelines.ingest.job import run_ingest
        sources = [str(self.world)] + ([str(REAL_VIDEOS)] if REAL_VIDEOS.is_dir() else [])
        cfg = IngestConfig(runner=RunnerConfig(kind="ray", num_cpus=os.cpu_count()))
        result = run_ingest(sources, str(self.root), cfg)
        print(result.text(os.cpu_count() or 1))
        self.report.append("Ingest (latest run):\n" + result.text(os.cpu_count() or 1))

    def captions(self) -> None:
        from pipelines.synth.match import load_world_captions
        cat = self.catalog()
        if cat.query("SELECT count(*) AS n FROM captions WHERE source = 'alt-text'").to_pylist()[0]["n"]:
            print("alt text already loaded")
            return
        print(load_world_captions(cat, self.world, seed_fraction=0.5, seed=self.seed))

    def shot_quality(self) -> None:
        from pipelines.shots.evaluate import load_real_truth, load_synthetic_truth
        from pipelines.synth.match import shot_f1_against_truth
        sets = [("synthetic world", load_synthetic_truth(self.world))]
        if REAL_VIDEOS.is_dir():
            sets.append(("real clips", load_real_truth(REAL_VIDEOS)))
        lines = ["Shot detection vs ground truth (±2 frames; default hybrid detector):"]
        for name, truth in sets:
            r = shot_f1_against_truth(self.catalog(), truth)
            lines.append(f"  {name:16s} F1 {r['all']['f1']:.3f} (P {r['all']['precision']:.3f}, "
                         f"R {r['all']['recall']:.3f}); cuts F1 {r['cut']['f1']:.3f}, "
                         f"gradual F1 {r['gradual']['f1']:.3f}; {r['all']['tp'] + r['all']['fn']} transitions")
        print("\n".join(lines))
        self.report.append("\n".join(lines))

    def sql_answers(self) -> None:
        from pipelines.cli_util import format_table
        cat = self.catalog()
        for q, sql in SQL_QUESTIONS.items():
            self.report.append(f"SQL: {q}\n{format_table(cat.query(sql))}")

    def catalog(self):
        from storage import Catalog, CorpusRoot
        return Catalog(CorpusRoot.open(self.root, create=True))

    def print_report(self) -> None:
        print("\n" + "=" * 78 + "\nvidcorpus demo report\n" + "=" * 78)
        for block in self.report:
            print("\n" + block)
        print(f"\nCorpus root: {self.root.resolve()}\nSynthetic world: {self.world.resolve()}")
        print(f"Query it yourself:  .venv/bin/vidcorpus sql --root {self.root} "
              "\"SELECT * FROM corpus_v LIMIT 5\"")
        print(f"\nDemo finished in {time.perf_counter() - self.t0:.0f}s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Run the vidcorpus demo end to end.")
    ap.add_argument("--root", default="demo_root", type=Path)
    ap.add_argument("--world", default="demo_world", type=Path)
    ap.add_argument("--videos", default=24, type=int)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    demo = Demo(args.root, args.world, videos=args.videos)
    demo.step("1. Render the synthetic world", demo.render)
    demo.step("2. Ingest: probe, quarantine, shot-split, extract clips (local Ray)", demo.ingest)
    demo.step("3. Load alt text and the human seed captions", demo.captions)
    demo.step("4. Shot detection quality", demo.shot_quality)
    demo.step("5. SQL answers", demo.sql_answers)
    demo.print_report()


if __name__ == "__main__":
    main()
