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

PROMPT = "A large red circle moves left over a blue background."
DATASET_WHERE = "duration_s >= 1.0 AND caption IS NOT NULL"


@dataclass(frozen=True)
class Budget:
    """Training time of each model: the whole demo fits in ~10 minutes on 2 cores."""

    clip_s: float = 75.0
    captioner_min: float = 2.0
    vae_min: float = 0.75
    dit_min: float = 1.5


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
    "Why clips were rejected": """
        SELECT reason, count(DISTINCT clip_id) AS clips FROM rejections
        WHERE reason IS NOT NULL GROUP BY 1 ORDER BY 2 DESC""",
    "Three dense captions beside the alt text they replace": """
        SELECT left(alt_text, 40) AS alt_text, left(caption, 90) AS caption FROM corpus_v
        WHERE caption_source LIKE 'captioner:%' AND NOT rejected ORDER BY clip_id LIMIT 3""",
}


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else line for line in text.splitlines())


@dataclass
class Demo:
    root: Path
    world: Path
    videos: int = 24
    seed: int = 0
    budget: Budget = Budget()
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

    def curate(self) -> None:
        from pipelines.jobs.specs import parse_spec, run_spec
        from pipelines.jobs_record import new_job_id
        sources = [str(self.world)] + ([str(REAL_VIDEOS)] if REAL_VIDEOS.is_dir() else [])
        spec = parse_spec({
            "kind": "curate", "sources": sources,
            "ingest": {"runner": {"kind": "ray", "num_cpus": os.cpu_count()}},
            "captions": [{"synth_world": str(self.world), "seed_fraction": 0.5}],
            "train_clip": {"out": str(self.clip_checkpoint), "steps": 600, "threads": 1,
                           "max_seconds": self.budget.clip_s},
            "score": {"runner": {"kind": "ray"}, "threads": 1},
        }, where="demo curate job", root=str(self.root))
        job_id = new_job_id("curate")
        summary = run_spec(spec, job_id)
        print(summary)
        self.report.append(f"Curate job {job_id} (ingest → captions → CLIP → score → dedup → filter; "
                           f"latest run, finished work is skipped):\n" + _indent(summary))

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

    def models_dir(self, name: str) -> Path:
        return self.root / "models" / name

    @property
    def clip_checkpoint(self) -> Path:
        return self.models_dir("clip-tiny") / "clip.pt"

    @property
    def captioner_dir(self) -> Path:
        return self.models_dir("captioner-tiny")

    def train_captioner(self) -> None:
        from pipelines.captioner_train_job import TrainJobConfig, run_train_job
        out = self.captioner_dir
        if (out / "DONE").exists():
            print(f"captioner already trained: {out}")
            return
        result = run_train_job(TrainJobConfig(root=str(self.root), config="tiny", out=str(out),
                                              max_minutes=self.budget.captioner_min, where="NOT rejected"))
        (out / "DONE").write_text(str(result.checkpoint))
        metrics = {k: round(v, 3) for k, v in result.metrics.items() if isinstance(v, float)}
        print(f"captioner: step {result.step}, {result.train_seconds / 60:.1f} min; held-out {metrics}")

    def recaption(self) -> None:
        from pipelines.caption_eval import caption_quality, caption_quality_text
        from pipelines.caption_stage import CaptionJobConfig, run_caption_job
        result = run_caption_job(CaptionJobConfig(root=str(self.root), model=str(self.captioner_dir),
                                                  runner="ray", batch_size=16))
        print(result.text())
        cat = self.catalog()
        sources = [r["source"] for r in cat.query(
            "SELECT DISTINCT source FROM captions WHERE source LIKE 'captioner:%' ORDER BY 1").to_pylist()]
        quality = caption_quality_text(caption_quality(cat, self.world, sources))
        print(quality)
        self.report.append("Captions vs synthetic ground truth (clean clips outside the seed set; "
                           "attribute accuracy, CIDEr, mean words):\n" + quality)

    def dataset(self) -> None:
        from pipelines.dataset import DatasetSpec, create_dataset, show_dataset
        cat = self.catalog()
        if cat.query("SELECT count(*) AS n FROM datasets WHERE dataset = 'demo'").to_pylist()[0]["n"]:
            print("dataset 'demo' already written")
        else:
            create_dataset(cat, DatasetSpec(name="demo", where=DATASET_WHERE))
        info = show_dataset(cat, "demo")
        m = info["manifest"]
        sources = ", ".join(f"{r['caption_source']} ×{r['n']}" for r in info["caption_sources"])
        self.report.append(
            f"Dataset 'demo' (WHERE {DATASET_WHERE}):\n  {m['n_samples']} samples in {m['n_shards']} "
            f"shard(s), {m['total_bytes'] / 1e6:.1f} MB at {self.root / 'shards' / 'demo'}\n"
            f"  caption chosen per clip: {sources}")

    def generator(self) -> None:
        from generator.recipe import train_demo_generator
        r = train_demo_generator(self.root, "demo", PROMPT, vae_minutes=self.budget.vae_min,
                                 dit_minutes=self.budget.dit_min, clip_checkpoint=str(self.clip_checkpoint))
        print(json.dumps(r, indent=2, default=str))
        self.report.append(
            "Generator (tiny causal VAE + tiny DiT, trained on the 'demo' shards):\n"
            + "\n".join(f"  {k}: {v}" for k, v in r.items()))

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
        print(f"Dashboard:  .venv/bin/vidcorpus dashboard --root {self.root} --port 8501"
              "   (then open http://127.0.0.1:8501)")
        print(f"\nDemo finished in {time.perf_counter() - self.t0:.0f}s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Run the whole vidcorpus mission on the embedded defaults: synthetic world -> "
                    "ingest -> CLIP scoring and filters -> captioner -> re-captioning -> SQL dataset "
                    "-> VAE + DiT -> a generated video, then a report. A second run reuses finished steps.")
    ap.add_argument("--root", default="demo_root", type=Path, help="Corpus root to create or reuse.")
    ap.add_argument("--world", default="demo_world", type=Path, help="Where the synthetic world is rendered.")
    ap.add_argument("--videos", default=24, type=int, help="Synthetic videos to render.")
    ap.add_argument("--curate-only", action="store_true",
                    help="Stop after ingest, scoring and filtering (no captioner or generator training).")
    ap.add_argument("--clip-seconds", type=float, default=Budget.clip_s, help="Tiny CLIP training time.")
    ap.add_argument("--captioner-minutes", type=float, default=Budget.captioner_min)
    ap.add_argument("--vae-minutes", type=float, default=Budget.vae_min)
    ap.add_argument("--dit-minutes", type=float, default=Budget.dit_min)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("ray", "ray.data", "root", "open_clip"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    budget = Budget(args.clip_seconds, args.captioner_minutes, args.vae_minutes, args.dit_minutes)
    demo = Demo(args.root, args.world, videos=args.videos, budget=budget)
    demo.step("1. Render the synthetic world", demo.render)
    demo.step("2. Curate job on the embedded local Ray: ingest (probe, quarantine, shot-split, "
              "extract), alt text + seed captions, fit a tiny CLIP, score, near-duplicates, filter",
              demo.curate)
    demo.step("3. Shot detection quality", demo.shot_quality)
    if not args.curate_only:
        demo.step("4. Train the tiny captioner on the seed captions", demo.train_captioner)
        demo.step("5. Densely re-caption the corpus (local Ray)", demo.recaption)
        demo.step("6. Write a dataset defined by SQL as WebDataset shards", demo.dataset)
        demo.step("7. Train a tiny autoencoder and DiT on the shards, generate a video", demo.generator)
    demo.step("SQL answers", demo.sql_answers)
    demo.print_report()


if __name__ == "__main__":
    main()
