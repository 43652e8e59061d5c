"""Scoring throughput: the score stages vs the bare model forward on the same frames (the ceiling).

    .venv/bin/python benchmarks/score_throughput.py [--clips 48] [--repeats 3] [--models tiny tiny-views ViT-B-32]

For each model (random weights; ViT-B-32 is saved to a local file and loaded from it, like real
weights; ``tiny-views`` is the tiny model with the view recipe ``train-clip`` gives it from scratch),
in one run:

- stage: the three score stages (decode frames once → pixel stats → CLIP embedding, clip_text
  and negative-prompt scores) through the local runner over real H.264 clips, pipelined (each
  stage in its own thread, as Ray streams them: decoding overlaps the model) and, beside it,
  sequential (chunk after chunk, stage after stage, one thread);
- model only: ``ClipScorer.video_embeddings`` on the very frames the stage decoded, with the
  same batch size — the rate no scoring stage can beat on this machine.

Reports clips/s and frames/s of both and their ratio (median of ``--repeats``). Goal: stage
≥ 70% of the model-only rate.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {"tiny": "vidcorpus-clip-tiny", "tiny-views": "vidcorpus-clip-tiny", "ViT-B-32": "ViT-B-32"}


def make_corpus(root: Path, n_clips: int):
    """``n_clips`` real clips (160x96, 48 frames at 24 fps) with alt text, in a fresh catalog."""
    from pipelines.score.testing import COLORS, ClipSpec, add_clips
    from storage import Catalog, CorpusRoot
    catalog = Catalog(CorpusRoot.open(root, create=True))
    colours = list(COLORS)
    specs = [ClipSpec(f"clip{i:04d}", color=colours[i % len(colours)], background="blue" if i % 2 else "white",
                      n_frames=48, fps=24, size=(160, 96), seed=i, captions={"alt-text": f"{colours[i % len(colours)]} box"})
             for i in range(n_clips)]
    add_clips(catalog, specs)
    return catalog


def random_weights(key: str, directory: Path) -> str | None:
    """A random-init checkpoint on disk for a stock model (None: the tiny one starts random).

    ``tiny-views``: a ``train-clip`` checkpoint after one step with the from-scratch recipe
    (objects + silhouettes from 128-px frames), so the stage decodes and embeds exactly
    what scoring with a trained tiny CLIP does.
    """
    import torch
    name = MODELS[key]
    if key == "tiny":
        return None
    path = directory / f"{key}.pt"
    if key == "tiny-views":
        from captioner.clip_model import TrainClipConfig, recipe_defaults, train_clip
        recipe = recipe_defaults(name, None)
        size = recipe["view_source"]
        frames = np.random.default_rng(0).integers(0, 255, (8, 2, size, size, 3), dtype=np.uint8)
        texts = [[f"{c} box"] for c in ("red", "blue", "green", "white")] * 2
        train_clip(frames, texts, TrainClipConfig(model=name, steps=1, batch_size=4, threads=1, **recipe), str(path))
        return str(path)
    import open_clip
    torch.save(open_clip.create_model(name).state_dict(), path)
    return str(path)


def measure(catalog, name: str, pretrained: str | None, threads: int, clips_per_batch: int) -> dict:
    """One stage run and one model-only run over the same clips; rates in clips/s and frames/s."""
    from pipelines.ingest.config import RunnerConfig
    from pipelines.score import records
    from pipelines.score.frames import ClipFrames
    from pipelines.score.job import ScoreConfig, build_score_stages
    from pipelines.stages.runners import LocalRunner
    config = ScoreConfig(clip_model=name, clip_pretrained=pretrained, threads=threads, n_frames=8,
                         clips_per_batch=clips_per_batch, runner=RunnerConfig(kind="local"))
    stages = build_score_stages(catalog.root.url, config)
    rows = records.select_clips(catalog, "none", None, rescore=True)
    for stage in stages:  # load models outside the timed region, as a Ray actor does at start
        stage.setup()
        stage._ready = True
    times = {}
    for pipelined in (False, True):
        t0 = time.perf_counter()
        out = [r for batch in LocalRunner(pipelined=pipelined).run(stages, rows, desc="stage", chunk=clips_per_batch)
               for r in batch]
        times[pipelined] = time.perf_counter() - t0
        assert all(r.get("embedding") for r in out), "every clip must be scored"
    stage_s, sequential_s = times[True], times[False]
    frames = np.stack([ClipFrames.from_row(r).rgb for r in stages[0](rows)])  # (N, K, S, S, 3)
    scorer = stages[2].scorer
    t0 = time.perf_counter()
    for i in range(0, len(frames), clips_per_batch):
        scorer.video_embeddings(frames[i:i + clips_per_batch])
    model_s = time.perf_counter() - t0
    n, k = frames.shape[:2]
    return {"stage_clips_s": n / stage_s, "stage_frames_s": n * k / stage_s,
            "sequential_clips_s": n / sequential_s,
            "model_clips_s": n / model_s, "model_frames_s": n * k / model_s, "ratio": model_s / stage_s,
            "sequential_ratio": model_s / sequential_s}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clips-per-batch", type=int, default=16)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="score-throughput-") as tmp:
        catalog = make_corpus(Path(tmp) / "root", args.clips)
        for key in args.models:
            pretrained = random_weights(key, Path(tmp))
            runs = [measure(catalog, MODELS[key], pretrained, args.threads, args.clips_per_batch)
                    for _ in range(args.repeats)]
            results[key] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(key, json.dumps(results[key]), flush=True)
    print("| model | stage clips/s | stage frames/s | model-only clips/s | model-only frames/s | stage / model "
          "| sequential stage clips/s | sequential / model |")
    print("|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        print(f"| {key} | {r['stage_clips_s']:.1f} | {r['stage_frames_s']:.0f} | {r['model_clips_s']:.1f} | "
              f"{r['model_frames_s']:.0f} | {r['ratio']:.2f} | {r['sequential_clips_s']:.1f} | "
              f"{r['sequential_ratio']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
