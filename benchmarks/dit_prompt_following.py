"""Does a tiny DiT follow the prompt? Background-colour accuracy on the synthetic world.

1. Shards: the synthetic world (`pipelines.synth.world.sample_world`) is drawn shot by shot with
   its own painter (`ShotPainter`, the frames `render_world` encodes), the first 9 clean frames
   of every good shot (no black / noise defect) are encoded as H.264 at the shot's native size
   and written with `ShardWriter` together with the shot's ground-truth caption.
2. Text tower: the tiny CLIP is fitted on those clips (`captioner.clip_model.train_clip`, what
   `vidcorpus train-clip` runs in the demo); its frozen text tower embeds the captions.
   `--text random` uses a frozen randomly initialised tower instead (the ablation).
3. Train: `generator.train.train_dit`, the tiny DiT on `pixel:4` latents, minutes on the CPU.
4. Evaluate: held-out prompts in the world's caption style (new object/background pairings),
   `n` per background colour; generate a clip for each, classify every pixel to the nearest
   background colour (`pipelines.synth.spec.COLORS`) and take the most frequent one. Accuracy
   is compared with chance (1 / number of background colours) and with the majority class.

    .venv/bin/python -m benchmarks.dit_prompt_following --minutes 7 --write
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections import Counter
from pathlib import Path

import av
import numpy as np

from pipelines.synth.render import ShotPainter
from pipelines.synth.spec import BACKGROUNDS, COLORS, MOTIONS, SHAPES, SIZES, ObjectSpec
from pipelines.synth.text import caption_for
from pipelines.synth.world import sample_world
from storage.shards import ShardWriter

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## DiT prompt following"


def encode_mp4(frames: list[np.ndarray], fps: float) -> bytes:
    """uint8 (H, W, 3) frames (even sides) -> H.264 mp4 bytes."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt, stream.options = "yuv420p", {"preset": "ultrafast", "crf": "18"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return buf.getvalue()


def shot_sample(video, shot, frames: int) -> dict:
    """One shard sample: the shot's first clean frames at native size (cut to even sides)."""
    w, h = video.width // 2 * 2, video.height // 2 * 2
    painter = ShotPainter(shot, video.width, video.height)
    n = min(frames, shot.end_frame - shot.start_frame)
    rgb = [np.clip(painter.frame(i) + 0.5, 0, 255).astype(np.uint8)[:h, :w] for i in range(n)]
    key = f"w{video.index:04d}s{shot.index:02d}"
    meta = dict(clip_id=key, video_id=f"world-{video.index:04d}", uri=video.file,
                start_s=float(shot.start_frame / video.fps), end_s=float((shot.start_frame + n) / video.fps),
                fps=float(video.fps), width=w, height=h, n_frames=n, background=shot.background)
    return {"__key__": key, "mp4": encode_mp4(rgb, float(video.fps)), "json": meta, "txt": shot.caption}


def write_world_shards(out_dir: str | Path, n_videos: int = 160, seed: int = 0, max_side: int = 96,
                       frames: int = 9, duration_s: float = 6.0, per_shard: int = 64) -> Counter:
    """Write the good shots of a synthetic world as shards; returns the background counts."""
    counts: Counter = Counter()
    with ShardWriter(out_dir, Path(out_dir).name, max_count=per_shard) as writer:
        for video in sample_world(seed, n_videos, duration_s, max_side):
            for shot in video.shots if video.broken is None else ():
                if shot.background in BACKGROUNDS and not {"black", "noise"} & set(shot.defects):
                    writer.write(shot_sample(video, shot, frames))
                    counts[shot.background] += 1
    return counts


def eval_prompts(n_per_background: int, seed: int = 1) -> list[tuple[str, str]]:
    """(caption, background) pairs in the world's caption style, `n` per background colour."""
    rng = np.random.default_rng(seed)
    prompts = []
    for bg in BACKGROUNDS:
        for _ in range(n_per_background):
            color = str(rng.choice([c for c in COLORS if c != bg]))
            obj = ObjectSpec(str(rng.choice(SHAPES)), color, str(rng.choice(SIZES)), str(rng.choice(MOTIONS)), 0.0, 0.0)
            prompts.append((caption_for([obj], bg, "static"), bg))
    return prompts


def dominant_background(frames: np.ndarray) -> str:
    """The background colour most pixels of uint8 (T, H, W, 3) frames are nearest to."""
    palette = np.array([COLORS[b] for b in BACKGROUNDS], np.float32)          # (K, 3)
    pixels = frames.reshape(-1, 3).astype(np.float32)                         # (P, 3)
    nearest = ((pixels[:, None] - palette[None]) ** 2).sum(-1).argmin(1)      # (P,)
    return BACKGROUNDS[int(np.bincount(nearest, minlength=len(BACKGROUNDS)).argmax())]


def evaluate(gen, prompts: list[tuple[str, str]], frames: int, height: int, width: int,
             steps: int = 20, cfg_scale: float = 4.0, seed: int = 0) -> dict:
    """Accuracy of the dominant colour of generated clips against the background named."""
    from generator.sample import generate
    videos = generate(gen, [p for p, _ in prompts], frames, height, width, steps, cfg_scale, seed)
    hits = [dominant_background(v) == bg for v, (_, bg) in zip(videos, prompts)]
    per_bg = {bg: float(np.mean([h for h, (_, b) in zip(hits, prompts) if b == bg])) for bg in BACKGROUNDS}
    return {"accuracy": float(np.mean(hits)), "n": len(hits), "per_background": per_bg, "videos": videos}


def clip_frames(dataset_dir: Path, size: int, n: int = 4) -> tuple[np.ndarray, list[list[str]]]:
    """`n` frames per clip squashed to size x size (N, n, S, S, 3) uint8, and each clip's caption."""
    from generator.data import decode_frames, to_video
    from storage.shards import read_shards
    frames, texts = [], []
    for sample in read_shards(str(dataset_dir)):
        video = to_video(decode_frames(sample["mp4"], 0, 2 * n)[::2][:n], (size, size))     # (3, n, S, S)
        frames.append(((video.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy())
        texts.append([sample["txt"]])
    return np.stack(frames), texts


def train_text_tower(root: Path, dataset_dir: Path, steps: int) -> tuple[Path, float]:
    """Fit the tiny CLIP (what `vidcorpus train-clip` does) on the shard clips; its text tower conditions the DiT."""
    from captioner.clip_model import TINY, TrainClipConfig, create_clip, image_size, train_clip
    t0, path = time.time(), root / "models" / "clip" / "tiny.pt"
    frames, texts = clip_frames(dataset_dir, image_size(create_clip(TINY)[0]))
    train_clip(frames, texts, TrainClipConfig(steps=steps, batch_size=64, log_every=100), str(path))
    return path, time.time() - t0


def run(root: Path, minutes: float | None, steps: int | None, n_videos: int, n_eval: int,
        text: str = "clip", clip_steps: int = 300) -> dict:
    """Shards -> text tower -> DiT -> evaluate (EMA and raw weights); returns the numbers."""
    import torch
    from generator.data import DataConfig
    from generator.flow import FlowConfig
    from generator.sample import load_generator, write_mp4
    from generator.text import TextConfig
    from generator.train import TrainConfig, train_dit
    torch.set_num_threads(1)                                  # fastest on a busy shared CPU
    dataset = root / "shards" / "world"
    t0 = time.time()
    counts = write_world_shards(dataset, n_videos=n_videos)
    out = {"clips": sum(counts.values()), "backgrounds": dict(counts), "shard_s": time.time() - t0,
           "chance": 1 / len(BACKGROUNDS), "majority": max(counts.values()) / sum(counts.values()), "text": text}
    clip_path, out["clip_s"] = train_text_tower(root, dataset, clip_steps) if text == "clip" else (None, 0.0)
    data = DataConfig(token_budget=1024, buffer_size=64, max_frames=3, max_pixels=48 * 48, num_workers=1)
    cfg = TrainConfig(root=str(root), dataset="world", autoencoder="pixel:4", data=data, steps=steps,
                      minutes=minutes, text=TextConfig(checkpoint=str(clip_path) if clip_path else None),
                      flow=FlowConfig(base_tokens=16), lr=1e-3, warmup_steps=20, ema_decay=0.99,
                      ckpt_every=10_000, log_every=20, run_id=f"prompt-following-{text}", cpu_threads=1)
    result = train_dit(cfg)
    out.update(train_s=result.seconds, steps=result.step, last=result.metrics)
    prompts = eval_prompts(n_eval)
    for weights in ("ema", "model"):
        gen = load_generator(result.checkpoint, device="cpu", use_ema=weights == "ema")
        ev = evaluate(gen, prompts, frames=3, height=40, width=64)
        grid = np.concatenate(ev.pop("videos")[::n_eval], axis=2)                 # one clip per colour, side by side
        write_mp4(grid, root / "runs" / cfg.run_id / f"samples-{weights}.mp4", fps=4)
        out[weights] = ev
    return out


def write_results(out: dict, args: argparse.Namespace) -> None:
    """Replace this benchmark's section of RESULTS.md."""
    ema, raw = out["ema"], out["model"]
    rows = "\n".join(f"| {bg} | {out['backgrounds'].get(bg, 0)} | {ema['per_background'][bg]:.0%} | "
                     f"{raw['per_background'][bg]:.0%} |" for bg in BACKGROUNDS)
    tower = "a frozen randomly initialised tiny text tower"
    if out["text"] == "clip":
        tower = (f"the tiny CLIP fitted on the same clips ({args.clip_steps} steps, {out['clip_s'] / 60:.1f} min; "
                 "its frozen text tower embeds captions)")
    command = f"python -m benchmarks.dit_prompt_following --minutes {args.minutes} --text {out['text']} --write"
    text = f"""{SECTION}

`.venv/bin/{command}` — {time.strftime('%Y-%m-%d')},
1 CPU thread on the 2-core shared machine, no GPU. {out['clips']} training clips (good shots of a {args.videos}-video
synthetic world, first 9 frames at native size, ground-truth captions). Text: {tower}. DiT: dit_tiny (width 64,
depth 2) on `pixel:4` latents (frames downscaled to <= 48x48 px, 3 frames, 81-108 tokens per clip), 1024-token packs,
lr 1e-3, flow shift base 16 tokens; {out['steps']} steps in {out['train_s'] / 60:.1f} min
({out['last'].get('tokens_per_s', 0):,.0f} tokens/s, {out['last'].get('clips_per_step', 0):.1f} clips per pack at the end).
Evaluation: {ema['n']} held-out prompts ({ema['n'] // len(BACKGROUNDS)} per background, new object/background pairings),
3 frames at 64x40, 20 Euler steps, CFG 4; a clip is a hit when the background colour nearest to most of its pixels is
the one the prompt names.

| weights | accuracy | chance (1/{len(BACKGROUNDS)}) | majority class |
|---|---:|---:|---:|
| EMA | **{ema['accuracy']:.0%}** | {out['chance']:.0%} | {out['majority']:.0%} |
| raw | {raw['accuracy']:.0%} | {out['chance']:.0%} | {out['majority']:.0%} |

| background | training clips | EMA accuracy | raw accuracy |
|---|---:|---:|---:|
{rows}
"""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = current.find(SECTION)
    if start >= 0:
        end = current.find("\n## ", start + len(SECTION))
        current = current[:start] + current[end + 1:] if end >= 0 else current[:start]
    RESULTS.write_text(current.rstrip() + "\n\n" + text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/vidcorpus-prompt-following"))
    ap.add_argument("--minutes", type=float, default=7.0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--videos", type=int, default=160)
    ap.add_argument("--eval-per-background", type=int, default=8)
    ap.add_argument("--text", choices=("clip", "random"), default="clip",
                    help="clip: fit the tiny CLIP on the shards first; random: frozen random text tower")
    ap.add_argument("--clip-steps", type=int, default=300)
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    out = run(args.root, args.minutes, args.steps, args.videos, args.eval_per_background, args.text, args.clip_steps)
    print(json.dumps({k: v for k, v in out.items()}, indent=2, default=str))
    if args.write:
        write_results(out, args)


if __name__ == "__main__":
    main()
