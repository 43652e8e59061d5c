"""Patch n' Pack vs Open-Sora-style bucketing vs pad-to-longest, and tiny-DiT training speed.

Token counts are computed arithmetically (no video is decoded): a video of F frames, H x W
pixels goes through a causal 4x8x8 autoencoder (latent 1 + ceil((F-1)/4) x ceil(H/8) x
ceil(W/8)) and 1x2x2 patches. Every method gets the same per-step token capacity (the budget):

- FFD packing (`generator.packing.stream_bins`, buffer B) of the pieces the DiT loader makes
  (`generator.data.plan_clip`, the arithmetic twin of `ClipMaker`): the whole clip (its first
  1 + 4k frames), downscaled to at most `max_pixels` = 256 * budget / `--frames-per-pack`
  (so one latent frame at the largest size is 1/16 of the budget by default) or, NaViT-style,
  to an area drawn per clip in [max_pixels / 4, max_pixels], then cut in time into pieces of
  whole latent frames that fit the budget. Waste = padding tokens.
- Bucketing as Open-Sora does it: each clip is resized to cover and centre-cropped to the
  closest of a few aspect-ratio buckets at the largest resolution bucket <= its own, and cut to
  the longest frame bucket <= its length; a step is budget // bucket_tokens clips of one
  bucket. Waste = unused step capacity (incl. each bucket's last partial batch); "cropped" =
  mean share of each clip's pixels (space x time) thrown away by the crop and the cut.
- Pad-to-longest: batches of B loader pieces in arrival order, padded to the longest one.

Mixes: (a) the synthetic world (its frame sizes and fps, 1-6 s shots); (b) web-like: aspect
ratios 9:21..21:9, 144p-1080p, 1-20 s, 24-60 fps read at <= 30 fps, 15% images. For reference
one row keeps the previous web-like policy: each whole clip downscaled just enough to fit.

    .venv/bin/python -m benchmarks.packing --write     # also rewrites "## Packing" in RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generator.data import DataConfig, plan_clip
from generator.flow import RectifiedFlow
from generator.packing import Clip, collate, stream_bins
from generator.patches import Grid, video_token_count
from generator.registry import create_model
from pipelines.synth.spec import ASPECT_QUOTA, FPS_CHOICES, FPS_PROBS
from pipelines.synth.world import frame_size

RESULTS = Path(__file__).parent / "RESULTS.md"
RESOLUTIONS = {"144p": 144 * 256, "240p": 240 * 426, "360p": 360 * 640, "480p": 480 * 854,
               "720p": 720 * 1280, "1080p": 1080 * 1920}             # bucket areas (pixels)
BUCKET_RATIOS = (9 / 16, 3 / 4, 1.0, 4 / 3, 16 / 9)                  # width / height
FRAME_BUCKETS = (1, 17, 33, 65, 129)                                  # 4k + 1 frames
WEB_RATIOS = (9 / 21, 9 / 16, 2 / 3, 3 / 4, 4 / 5, 1.0, 5 / 4, 4 / 3, 3 / 2, 16 / 10, 16 / 9, 1.85,
              2.0, 2.35, 2.39, 21 / 9)                                # width / height
WEB_RATIO_P = (2, 14, 3, 4, 3, 8, 2, 10, 3, 3, 30, 3, 3, 4, 3, 3)
WEB_SHORT_SIDES = (144, 240, 360, 480, 720, 1080)
WEB_SHORT_P = (5, 10, 20, 20, 30, 15)
NOTES = """\
- *wasted step tokens*: share of the per-step token capacity (the budget) holding no real token:
  padding for FFD packing and pad-to-longest; for buckets, capacity left by
  `budget // bucket_tokens` clips per step plus each bucket's last partial batch.
- *content cropped*: mean share of a clip's pixels (space x time) thrown away. Buckets: the centre
  crop to the bucket's aspect ratio and the cut to its frame bucket. Loader rows (packing, pad):
  only the frames past the last 1 + 4k (the causal 4x-in-time autoencoder), since the whole clip
  is taken and long clips are cut in time into pieces that are all trained. "whole clip fit" keeps
  every frame. Downscaling is not counted as cropping: *mean frame area* (pixels per trained frame)
  shows it.
- Web-like at 4096 now meets the 3% goal: 4.7% -> 1.4% padding. Before, each whole clip was
  downscaled to just under the budget and filled a pack nearly alone. The loader
  (`generator.data`, `DataConfig(max_frames=None, max_pixels, min_pixels)`) cuts long clips in time
  into pieces of whole latent frames (`oversize="split"`, `generator.packing.split_frames`): full
  pieces nearly fill a pack and the tail pieces fill the gaps. NaViT-style per-clip areas
  (`min_pixels`) vary the piece sizes further (2.2% with one max area, 1.4% with draws).
- The price is resolution, not content: at 4096 the loader trains at 32 kpx per frame (about
  180x180; max_pixels 64 kpx) where whole-clip fitting gave 118 kpx and buckets 196 kpx (buckets
  reach it by cutting clips to 17 or fewer frames). Resolution is the loader's `max_pixels` knob:
  with `--frames-per-pack 4` (max_pixels 256 kpx, a latent frame up to 1/4 of the budget)
  web-like at 4096 trains at 126 kpx but wastes 6.4% (4.4% with one max area, 219 kpx): the goal
  holds while a latent frame is small against the budget (1/16 here). Topping packs up by
  dropping tokens of a piece that almost fits is not implemented. Pieces are separate clips to
  attention: a piece does not see the rest of its clip.
- Pad-to-longest gets worse on loader pieces (34% vs 12% before) since pieces vary more in size.
  Token dropping (`drop_rate`) is off in every row.
- Training speed: the tiny DiT (width 64, depth 2) is attention-bound at these lengths (attention is
  quadratic in each clip's tokens) and the 2-core machine was shared (load ~7), so read it as an
  order of magnitude; GPU throughput needs the flex / flash_varlen backends on a GPU.
"""


@dataclass(frozen=True)
class Video:
    frames: int
    height: int
    width: int

    @property
    def tokens(self) -> int:
        return video_token_count(self.frames, self.height, self.width)


def synthetic_mix(n: int, rng: np.random.Generator) -> list[Video]:
    """Shots of the synthetic world: its aspect classes, fps choices, 1-6 s."""
    fps = np.array([float(f) for f in FPS_CHOICES])
    out = []
    for _ in range(n):
        w, h = frame_size(ASPECT_QUOTA[rng.integers(len(ASPECT_QUOTA))], 320)
        f = rng.choice(fps, p=FPS_PROBS)
        out.append(Video(max(1, round(rng.uniform(1, 6) * f)), h, w))
    return out


def web_mix(n: int, rng: np.random.Generator, image_share: float = 0.15) -> list[Video]:
    """Web-like clips at native size (frames already read at <= 30 fps) and some images."""
    ratios = rng.choice(WEB_RATIOS, size=n, p=np.array(WEB_RATIO_P) / sum(WEB_RATIO_P))
    shorts = rng.choice(WEB_SHORT_SIDES, size=n, p=np.array(WEB_SHORT_P) / sum(WEB_SHORT_P))
    fps = np.minimum(rng.choice([24, 25, 30, 60], size=n), 30)
    secs = np.exp(rng.uniform(0, math.log(20), size=n))
    out = []
    for r, s, f, d in zip(ratios, shorts, fps, secs):
        h, w = (s, round(s * r)) if r >= 1 else (round(s / r), s)
        frames = 1 if rng.random() < image_share else max(1, round(d * f))
        out.append(Video(frames, h, w))
    return out


def fit_budget(v: Video, budget: int) -> Video:
    """Downscale a video (aspect kept) as little as needed for its tokens to fit the budget."""
    def scaled(s: float) -> Video:
        return Video(v.frames, max(16, int(v.height * s)), max(16, int(v.width * s)))

    if v.tokens <= budget:
        return v
    lo, hi = 0.0, 1.0                                                 # scaled(lo) fits, scaled(hi) not
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if scaled(mid).tokens <= budget else (lo, mid)
    return scaled(lo)


def loader_config(budget: int, frames_per_pack: int, navit: bool) -> DataConfig:
    """The DiT loader's settings for a budget: whole clips, time pieces, optional NaViT areas."""
    max_pixels = 256 * budget // frames_per_pack                     # 4x8x8 autoencoder, 1x2x2 patches
    return DataConfig(token_budget=budget, max_frames=None, max_pixels=max_pixels,
                      min_pixels=max_pixels // 4 if navit else None)


def loader_plan(videos: list[Video], config: DataConfig, seed: int) -> dict:
    """Pieces (tokens) the loader makes of the videos, the share of frames it leaves out, mean area."""
    rng = np.random.default_rng(seed)
    plans = [plan_clip(v.frames, v.height, v.width, config, (4, 8, 8), (1, 2, 2), rng) for v in videos]
    return {"tokens": [n for p in plans for n in p.pieces],
            "cropped": 1 - float(np.mean([p.frames / v.frames for p, v in zip(plans, videos)])),
            "area": float(np.mean([p.height * p.width for p in plans]))}


def ffd_stats(plan: dict, budget: int, buffer: int) -> dict:
    tokens = plan["tokens"]
    packs = list(stream_bins(iter(tokens), int, budget, buffer_size=buffer))
    return {"waste": 1 - sum(tokens) / (budget * len(packs)), "steps": len(packs), "cropped": plan["cropped"],
            "area": plan["area"], "clips_per_step": len(tokens) / len(packs)}


def pad_stats(plan: dict, batch: int) -> dict:
    tokens = plan["tokens"]
    groups = [tokens[i:i + batch] for i in range(0, len(tokens), batch)]
    capacity = sum(batch * max(g) for g in groups)
    return {"waste": 1 - sum(tokens) / capacity, "steps": len(groups), "cropped": plan["cropped"],
            "area": plan["area"], "clips_per_step": len(tokens) / len(groups)}


def bucket_shape(area: int, ratio: float) -> tuple[int, int]:
    """(height, width) of a bucket with ~area pixels and width/height ratio, multiples of 16."""
    h, w = math.sqrt(area / ratio), math.sqrt(area * ratio)
    return max(16, round(h / 16) * 16), max(16, round(w / 16) * 16)


def assign_bucket(v: Video, budget: int) -> tuple[tuple[int, int, int], float] | None:
    """Open-Sora bucket (frames, h, w) for a clip and the share of its pixels kept; None = dropped."""
    ratio = min(BUCKET_RATIOS, key=lambda r: abs(math.log(r * v.height / v.width)))  # closest w/h
    best = None
    for area in RESOLUTIONS.values():
        if area > v.height * v.width * 1.05:                          # never upscale
            continue
        h, w = bucket_shape(area, ratio)
        for f in FRAME_BUCKETS:
            tokens = video_token_count(f, h, w)
            if f <= v.frames and tokens <= budget and (best is None or tokens > best[1]):
                best = ((f, h, w), tokens)
    if best is None:
        return None
    f, h, w = best[0]
    cover = max(h / v.height, w / v.width)                            # resize to cover, then crop
    kept = (h * w) / (v.height * cover * v.width * cover) * (f / v.frames)
    return best[0], kept


def bucket_stats(videos: list[Video], budget: int) -> dict:
    buckets: dict[tuple[int, int, int], int] = {}
    kept, areas, dropped = [], [], 0
    for v in videos:
        assigned = assign_bucket(v, budget)
        if assigned is None:
            dropped += 1
            continue
        buckets[assigned[0]] = buckets.get(assigned[0], 0) + 1
        kept.append(assigned[1])
        areas.append(assigned[0][1] * assigned[0][2])
    steps = real = 0
    for (f, h, w), count in buckets.items():
        tokens = video_token_count(f, h, w)
        steps += math.ceil(count / (budget // tokens))
        real += count * tokens
    return {"waste": 1 - real / (steps * budget), "steps": steps, "cropped": 1 - float(np.mean(kept)),
            "area": float(np.mean(areas)), "clips_per_step": len(kept) / steps, "dropped": dropped,
            "buckets": len(buckets)}


def compare(name: str, videos: list[Video], budget: int, args: argparse.Namespace) -> list[dict]:
    """Packing the loader's pieces, the previous fit-by-downscaling policy, buckets and padding."""
    navit = loader_plan(videos, loader_config(budget, args.frames_per_pack, True), args.seed)
    fixed = loader_plan(videos, loader_config(budget, args.frames_per_pack, False), args.seed)
    fitted = [fit_budget(v, budget) for v in videos]
    fit = {"tokens": [v.tokens for v in fitted], "cropped": 0.0,
           "area": float(np.mean([v.height * v.width for v in fitted]))}
    over = sum(v.tokens > budget for v in videos)
    cut = f"{len(navit['tokens']) - len(videos)} extra time pieces"
    buckets = bucket_stats(videos, budget)
    rows = [
        {"method": f"FFD pack, buffer {args.buffer}", **ffd_stats(navit, budget, args.buffer),
         "notes": f"NaViT areas, time pieces ({cut})"},
        {"method": "FFD pack, buffer 32", **ffd_stats(navit, budget, 32), "notes": "same pieces"},
        {"method": f"FFD pack, buffer {args.buffer}, one max area", **ffd_stats(fixed, budget, args.buffer),
         "notes": "no NaViT draw, time pieces"},
        {"method": f"FFD pack, buffer {args.buffer}, whole clip fit", **ffd_stats(fit, budget, args.buffer),
         "notes": f"previous web-like policy: {over} clips > budget downscaled to fit"},
        {"method": f"Open-Sora buckets ({len(BUCKET_RATIOS)} AR x {len(FRAME_BUCKETS)} len)", **buckets,
         "notes": f"{buckets['buckets']} buckets used, {buckets['dropped']} clips fit none"},
        {"method": f"pad to longest, B={args.batch}", **pad_stats(navit, args.batch), "notes": "loader pieces"},
    ]
    return [{"mix": name, "budget": budget, **r} for r in rows]


def train_speed(budget: int, steps: int, frames_per_pack: int, rng: np.random.Generator) -> dict:
    """Tiny DiT forward + backward + AdamW on packed synthetic-mix batches (sdpa_loop, CPU)."""
    model = create_model("dit_tiny", attn_backend="sdpa_loop").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    flow = RectifiedFlow()
    config = loader_config(budget, frames_per_pack, navit=True)
    tokens = loader_plan(synthetic_mix(400, rng), config, int(rng.integers(1 << 31)))["tokens"]
    groups = stream_bins(iter(tokens), int, budget, buffer_size=64)
    batches = [collate([Clip(torch.randn(n, model.config.patch_dim), Grid(1, 1, n), torch.randn(8, 32))
                        for n in next(groups)], budget) for _ in range(steps + 1)]
    real, start = 0, 0.0
    for i, batch in enumerate(batches):
        if i == 1:                                                   # first step is warm-up
            start = time.perf_counter()
        loss = flow.loss(model, batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        real += batch.n_real if i else 0
    elapsed = time.perf_counter() - start
    return {"budget": budget, "tokens_per_s": real / elapsed, "steps_per_s": steps / elapsed,
            "clips_per_step": np.mean([b.n_clips for b in batches])}


def markdown(rows: list[dict], speed: list[dict]) -> str:
    lines = ["| mix | budget | method | wasted step tokens | content cropped | mean frame area | steps | "
             "items/step | notes |", "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['mix']} | {r['budget']} | {r['method']} | {100 * r['waste']:.1f}% | "
                     f"{100 * r['cropped']:.1f}% | {r['area'] / 1000:.0f} kpx | {r['steps']} | "
                     f"{r['clips_per_step']:.1f} | {r['notes']} |")
    lines += ["", "| tiny DiT train step (fwd+bwd+AdamW, sdpa_loop, CPU) | budget | real tokens/s | steps/s | clips/step |",
              "|---|---:|---:|---:|---:|"]
    for s in speed:
        lines.append(f"| packed synthetic mix | {s['budget']} | {s['tokens_per_s']:.0f} | "
                     f"{s['steps_per_s']:.2f} | {s['clips_per_step']:.1f} |")
    return "\n".join(lines)


def write_section(body: str) -> None:
    """Replace (or append) the '## Packing' section of RESULTS.md, leaving the others alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = text.find("\n## Packing\n")
    end = text.find("\n## ", start + 1) if start >= 0 else -1
    section = f"\n## Packing\n\n{body}\n"
    if start < 0:
        text = text.rstrip("\n") + "\n" + section
    else:
        text = text[:start] + section + (text[end:] if end >= 0 else "")
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=4000)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--buffer", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="pad-to-longest batch size")
    parser.add_argument("--frames-per-pack", type=int, default=16,
                        help="loader max_pixels = 256 * budget / N: a pack holds >= N latent frames")
    parser.add_argument("--train-steps", type=int, default=2, help="timed steps per budget (>= 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write the section into RESULTS.md")
    args = parser.parse_args()
    if args.train_steps < 1:
        parser.error("--train-steps must be >= 1")
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    mixes = {"synthetic world": synthetic_mix(args.clips, rng), "web-like": web_mix(args.clips, rng)}
    rows = [r for budget in args.budgets for name, videos in mixes.items()
            for r in compare(name, videos, budget, args)]
    speed = [train_speed(b, args.train_steps, args.frames_per_pack, rng) for b in args.budgets]
    table = markdown(rows, speed)
    print(table)
    if args.write:
        cmd = " ".join([".venv/bin/python -m benchmarks.packing", *sys.argv[1:]])
        meta = (f"`{cmd}` — {datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
                f"{torch.get_num_threads()} CPU threads (2-core shared machine), no GPU, torch {torch.__version__}; "
                f"{args.clips} clips per mix, seed {args.seed}.")
        write_section(meta + "\n\n" + table + "\n\n" + NOTES)


if __name__ == "__main__":
    main()
