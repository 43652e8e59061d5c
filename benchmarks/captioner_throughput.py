"""Captioner inference throughput on CPU: clips/s and generated tokens/s at batch sizes 1, 8, 32.

    python benchmarks/captioner_throughput.py [--model RUN_DIR] [--threads 1] [--write-results]

Two numbers per batch size: ``model`` (frames already in memory: vision tower, resampler and
greedy decoding with the KV cache) and ``end to end`` (plus sampling the K frames from each
clip file, as the caption stage does). With ``--model`` a trained checkpoint is used (captions
stop at their eos); without, a random ``tiny`` captioner decodes exactly ``--tokens`` tokens
per clip so runs are comparable.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.captioner_quality import write_section  # noqa: E402
from captioner.captioner_data import sample_frames, shots_from_truth  # noqa: E402
from captioner.captioner_infer import CaptionPredictor, greedy_captions  # noqa: E402
from captioner.captioner_model import VideoCaptioner  # noqa: E402
from captioner.registry import load_config  # noqa: E402
from captioner.tokenizer import train_bpe  # noqa: E402

SECTION = "## Captioner throughput"


def clip_paths(n: int) -> list[str]:
    """``n`` synthetic clip files (a small world is rendered once into a temp dir)."""
    from pipelines.synth import render_world

    world = Path(tempfile.gettempdir()) / "vidcorpus-captioner-throughput"
    if not (world / "truth.json").exists():
        render_world(world, n_videos=8, seed=5, duration_s=6.0, max_side=160, progress=False)
    items = shots_from_truth(world, world / "clips")
    return [items[i % len(items)].path for i in range(n)]


def load_predictor(model: str | None, tokens: int) -> tuple[CaptionPredictor, bool]:
    """(predictor, fixed_length): a checkpoint, or a random tiny model that never emits eos."""
    if model:
        return CaptionPredictor.load(model, device="cpu"), False
    config = load_config("tiny", generate={"max_new_tokens": tokens})
    tokenizer = train_bpe(["A large red circle moves left over a blue background."] * 4, 384)
    tokenizer.eos_id = -1  # never produced: every clip decodes exactly `tokens` tokens
    torch.manual_seed(0)
    return CaptionPredictor(VideoCaptioner(config, tokenizer.vocab_size).eval(), tokenizer,
                            "random-tiny", "random"), True


def measure(predictor: CaptionPredictor, paths: list[str], batch: int, repeats: int) -> dict:
    """Median-free simple rates over ``repeats`` batches (after one warm-up batch)."""
    k, size = predictor.n_frames, predictor.model.image_size
    frames = torch.stack([torch.from_numpy(sample_frames(p, k, size)) for p in paths[:batch]])
    greedy_captions(predictor.model, predictor.tokenizer, frames, batch)  # warm-up
    t0, tokens = time.perf_counter(), 0
    for _ in range(repeats):
        tokens += greedy_captions(predictor.model, predictor.tokenizer, frames, batch)[1]
    model_s = (time.perf_counter() - t0) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        decoded = [sample_frames(p, k, size) for p in paths[:batch]]
        greedy_captions(predictor.model, predictor.tokenizer,
                        torch.stack([torch.from_numpy(f) for f in decoded]), batch)
    e2e_s = (time.perf_counter() - t0) / repeats
    return {"batch": batch, "clips_s": batch / model_s, "tokens_s": tokens / repeats / model_s,
            "e2e_clips_s": batch / e2e_s, "tokens_per_clip": tokens / repeats / batch}


def report(rows: list[dict], args, fixed: bool) -> str:
    what = (f"random `tiny`, {args.tokens} tokens per clip" if fixed
            else f"checkpoint `{args.model}` (greedy until eos)")
    lines = [SECTION, "",
             f"`python benchmarks/captioner_throughput.py` — {what}; {torch.get_num_threads()} "
             "torch thread(s) on this machine's shared CPU; K frames per clip sampled from "
             "H.264 clip files (≤160 px) for the end-to-end column.", "",
             "| batch | clips/s (model) | tokens/s (model) | clips/s (end to end) | tokens/clip |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['clips_s']:.1f} | {r['tokens_s']:.0f} | {r['e2e_clips_s']:.1f} "
              f"| {r['tokens_per_clip']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="captioner checkpoint or run dir (default: random tiny)")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    predictor, fixed = load_predictor(args.model, args.tokens)
    batches = [int(b) for b in args.batches.split(",")]
    paths = clip_paths(max(batches))
    rows = [measure(predictor, paths, b, args.repeats) for b in batches]
    text = report(rows, args, fixed)
    print(text)
    if args.write_results:
        write_section(text, section=SECTION)


if __name__ == "__main__":
    main()
