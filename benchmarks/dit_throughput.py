"""DiT training throughput on packed sequences: tokens/s (and MFU on GPU) per attention backend.

A training step is exactly the trainer's: rectified-flow loss on one pack of `--budget` tokens
(clips of mixed native sizes, FFD-packed), backward, AdamW. Clips are random latents of the
sizes a 4x8x8 autoencoder gives for a mix of aspect ratios and lengths; timings skip
`--warmup` steps. MFU = model FLOPs (`generator.metrics.train_flops`: 6 * params * tokens +
attention) / elapsed / dense bf16 peak of the GPU.

    .venv/bin/python -m benchmarks.dit_throughput                       # CPU: dit_tiny, fp32
    .venv/bin/python -m benchmarks.dit_throughput --model dit_B --budget 16384 --write   # GPU: bf16
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from generator.attention import BACKENDS, backend_unavailable_reason
from generator.flow import RectifiedFlow
from generator.metrics import dit_param_split, peak_flops, train_flops
from generator.packing import Clip, PackedBatch, pack_clips
from generator.patches import grid_size, latent_size
from generator.registry import create_model

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## DiT training throughput"
# (frames, height, width) in pixels: landscape / portrait / square / ultrawide, images and clips
GPU_CLIPS = [(1, 512, 512), (17, 256, 448), (33, 448, 256), (49, 256, 256), (17, 320, 752), (1, 768, 432)]
CPU_CLIPS = [(1, 256, 256), (9, 128, 128), (17, 96, 160), (9, 160, 96), (17, 128, 128)]


def make_packs(model, clip_sizes, budget: int, n_packs: int, text_len: int = 24, seed: int = 0) -> list[PackedBatch]:
    """At least `n_packs` FFD packs of random latent clips cycling through `clip_sizes`."""
    cfg, g = model.config, torch.Generator().manual_seed(seed)
    clips = []
    while sum(c.n_tokens for c in clips) < budget * (n_packs + 1):
        frames, height, width = clip_sizes[len(clips) % len(clip_sizes)]
        T, H, W = latent_size(frames, height, width, (4, 8, 8))
        grid = grid_size(T, H, W, *cfg.patch_size)
        if grid.n_tokens <= budget:
            clips.append(Clip(torch.randn(grid.n_tokens, cfg.patch_dim, generator=g), grid,
                              torch.randn(text_len, cfg.text_dim, generator=g)))
    return pack_clips(clips, budget)[:n_packs]


def time_backend(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Train `args.steps` steps with attention backend `name`; tokens/s, padding and MFU."""
    torch.manual_seed(0)
    model = create_model(args.model, attn_backend=name).to(device)
    clip_sizes = GPU_CLIPS if device.type == "cuda" else CPU_CLIPS
    packs = [p.to(device) for p in make_packs(model, clip_sizes, args.budget, args.warmup + args.steps)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    flow, split, bf16 = RectifiedFlow(), dit_param_split(model), device.type == "cuda"
    real = flops = 0.0
    for i, batch in enumerate(packs):
        if i == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = flow.loss(model, batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= args.warmup:
            real, flops = real + batch.n_real, flops + train_flops(model, batch, split)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = peak_flops(device)
    return {"backend": name, "tokens_per_s": real / dt, "steps_per_s": args.steps / dt,
            "padding": 1 - real / (args.steps * args.budget), "tflops": flops / dt / 1e12,
            "mfu": flops / dt / peak if peak else None,
            "clips_per_step": sum(p.n_clips for p in packs[args.warmup:]) / args.steps}


def backends_to_run(device: torch.device) -> list[tuple[str, str | None]]:
    """(backend, reason it is skipped or None) for every backend."""
    out = []
    for name in BACKENDS:
        reason = backend_unavailable_reason(name)
        if reason is None and name == "flex" and device.type != "cuda":
            reason = "FlexAttention has no CPU backward in this torch"
        if reason is None and name == "flash_varlen" and device.type != "cuda":
            reason = "needs CUDA"
        out.append((name, reason))
    return out


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, bf16 autocast"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s), fp32"


def table(rows: list[dict], skipped: list[tuple[str, str]]) -> str:
    lines = ["| backend | real tokens/s | steps/s | clips/step | padding | TFLOP/s | MFU |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (CPU)"
        lines.append(f"| {r['backend']} | {r['tokens_per_s']:,.0f} | {r['steps_per_s']:.2f} | {r['clips_per_step']:.1f} "
                     f"| {r['padding']:.1%} | {r['tflops']:.3f} | {mfu} |")
    lines += [f"| {name} | skipped: {reason} | | | | | |" for name, reason in skipped]
    return "\n".join(lines)


def write_results(text: str, args: argparse.Namespace, device: torch.device) -> None:
    """Add or replace this benchmark's subsection for this device in RESULTS.md."""
    head = f"### {args.model}, budget {args.budget}, {describe(device)}"
    block = (f"{head}\n\n`.venv/bin/python -m benchmarks.dit_throughput --model {args.model} --budget {args.budget} "
             f"--steps {args.steps} --threads {torch.get_num_threads()} --write` — {time.strftime('%Y-%m-%d')}\n\n{text}\n")
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION not in current:
        current = current.rstrip() + f"\n\n{SECTION}\n\nOne training step = flow loss + backward + AdamW on one "\
            "FFD pack of mixed-size clips; MFU from `generator.metrics.train_flops` and the dense bf16 peak.\n"
    start = current.find(head)
    if start >= 0:
        end = min(i for i in (current.find("\n### ", start + 1), current.find("\n## ", start + 1), len(current)) if i >= 0)
        current = current[:start] + current[end + 1:]
    sec = current.find(SECTION)
    nxt = current.find("\n## ", sec + len(SECTION))
    insert = len(current) if nxt < 0 else nxt + 1
    RESULTS.write_text(current[:insert].rstrip() + "\n\n" + block + ("\n" + current[insert:] if nxt >= 0 else ""))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="DiT config (default: dit_B on GPU, dit_tiny on CPU)")
    ap.add_argument("--budget", type=int, default=None, help="tokens per pack (default 16384 GPU, 1024 CPU)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.model = args.model or ("dit_B" if device.type == "cuda" else "dit_tiny")
    args.budget = args.budget or (16384 if device.type == "cuda" else 1024)
    plan = backends_to_run(device)
    rows = [time_backend(name, args, device) for name, reason in plan if reason is None]
    text = table(rows, [(n, r) for n, r in plan if r is not None])
    print(f"{args.model}, budget {args.budget}, {describe(device)}\n{text}")
    if args.write:
        write_results(text, args, device)


if __name__ == "__main__":
    main()
