"""CLI commands of the generator: ``train-vae``, ``train-dit`` and ``sample`` (registered by pipelines.cli)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from pipelines.cli_util import ROOT_HELP, fail

RootOpt = typer.Option("corpus", "--root", "-r", envvar="VIDCORPUS_ROOT", help=ROOT_HELP)


def register(app: typer.Typer) -> None:
    app.command("train-vae")(train_vae_cmd)
    app.command("train-dit")(train_dit_cmd)
    app.command("sample")(sample_cmd)


def _budget(minutes: Optional[float], steps: Optional[int], default_steps: int) -> tuple[Optional[float], Optional[int]]:
    """--minutes and/or --steps; neither means `default_steps`."""
    return minutes, steps if (steps is not None or minutes is not None) else default_steps


def train_vae_cmd(
        root: str = RootOpt,
        dataset: str = typer.Option(..., "--dataset", "-d", help="Train on ROOT/shards/<dataset>."),
        config: str = typer.Option("vae_tiny", "--config", "-c", help="VAE config in generator/configs."),
        steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps (default 500)."),
        minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop after M minutes."),
        batch_size: int = typer.Option(4, "--batch-size", min=1, help="Crops per step."),
        crop_size: int = typer.Option(32, "--crop-size", min=8, help="Square crop side, pixels."),
        crop_frames: int = typer.Option(9, "--crop-frames", min=1, help="Frames per crop (1 + k*4)."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory (default ROOT/models/vae/<run>)."),
        run_id: Optional[str] = typer.Option(None, "--run-id", help="Run name (default vae-<time>)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads.")) -> None:
    """Train the causal video VAE on a shard dataset; writes ROOT/models/vae/<run>/ with `latest` pointers."""
    from generator.train_vae import VAETrainConfig, train_vae
    minutes, steps = _budget(minutes, steps, 500)
    try:
        cfg = VAETrainConfig(root=root, dataset=dataset, model=config, steps=steps, minutes=minutes,
                             batch_size=batch_size, crop_size=crop_size, crop_frames=crop_frames,
                             run_id=run_id, out=out, cpu_threads=threads)
        result = train_vae(cfg)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(f"trained {result.step} steps in {result.seconds / 60:.1f} min (L1 {result.recon_l1:.4f}) "
               f"-> {result.checkpoint}\nuse it with: vidcorpus train-dit --vae {Path(result.checkpoint).parent}")


def train_dit_cmd(
        root: str = RootOpt,
        dataset: str = typer.Option(..., "--dataset", "-d", help="Train on ROOT/shards/<dataset>."),
        config: str = typer.Option("dit_tiny", "--config", "-c", help="DiT config in generator/configs."),
        vae: str = typer.Option("pixel", "--vae", help="pixel | pixel:N | VAE checkpoint or run dir | diffusers dir."),
        text_model: str = typer.Option("tiny", "--text-model", help="open_clip model for captions (tiny: built-in)."),
        text_checkpoint: Optional[str] = typer.Option(None, "--text-checkpoint", help="Local open_clip/train-clip file."),
        text_hf: Optional[str] = typer.Option(None, "--text-hf", help="Local transformers encoder dir (T5, CLIP)."),
        minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop after M minutes."),
        steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Stop after N steps (default 1000)."),
        token_budget: int = typer.Option(1024, "--token-budget", min=16, help="Tokens per pack (per step and rank)."),
        max_pixels: int = typer.Option(64 * 64, "--max-pixels", min=64, help="Downscale frames to this area."),
        min_pixels: Optional[int] = typer.Option(None, "--min-pixels", min=64, help="NaViT-style: draw each clip's area log-uniformly in [min, max] pixels (never upscaled)."),
        max_frames: int = typer.Option(17, "--max-frames", min=1, help="Frames per clip."),
        workers: int = typer.Option(0, "--workers", min=0, help="Data-loader workers per rank."),
        lr: float = typer.Option(3e-4, "--lr", help="AdamW learning rate."),
        logit_mean: float = typer.Option(0.0, "--logit-mean", help="Timestep logit-normal mean (> 0: noisier)."),
        shift_base: int = typer.Option(256, "--shift-base", min=1, help="Clip tokens with no timestep shift."),
        run_id: Optional[str] = typer.Option(None, "--run-id", help="Run name (default dit-<time>)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the newest run (or --run-id) exactly."),
        ray_workers: int = typer.Option(0, "--ray-workers", min=0, help="Train on N Ray Train workers."),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (with --ray-workers)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads.")) -> None:
    """Train the text-to-video DiT on packed native-resolution clips (torchrun-aware; --ray-workers for Ray)."""
    from generator.train import train_dit
    from pipelines.jobs.kinds import TrainDitJobSpec
    try:
        spec = TrainDitJobSpec(root=root, dataset=dataset, config=config, vae=vae, text_model=text_model,
                               text_checkpoint=text_checkpoint, text_hf=text_hf, minutes=minutes, steps=steps,
                               token_budget=token_budget, max_pixels=max_pixels, min_pixels=min_pixels,
                               max_frames=max_frames, workers=workers, lr=lr, logit_mean=logit_mean,
                               shift_base=shift_base, run_id=run_id, resume=resume, threads=threads)
        cfg = spec.train_config()
        if ray_workers:
            from pipelines.train_dit_ray import train_dit_ray
            result = train_dit_ray(replace(cfg, progress=False), ray_workers, address=address)
            typer.echo(f"Ray Train run {result.run_id} -> {result.checkpoint}")
            return
        result = train_dit(cfg)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    m = result.metrics
    typer.echo(f"run {result.run_id}: {result.step} steps in {result.seconds / 60:.1f} min -> {result.checkpoint}")
    if m:
        typer.echo(f"  loss {m['loss']:.4f}, {m['tokens_per_s']:.0f} tokens/s, padding {m['padding']:.1%}"
                   + (f", MFU {m['mfu']:.1%}" if "mfu" in m else ""))


def sample_cmd(
        prompt: str = typer.Argument(..., help="What the video should show."),
        root: str = RootOpt,
        ckpt: Optional[str] = typer.Option(None, "--ckpt", help="DiT checkpoint or run dir (default: newest under ROOT)."),
        frames: int = typer.Option(17, "--frames", min=1, help="Frames."),
        height: int = typer.Option(64, "--height", min=8, help="Height in pixels."),
        width: int = typer.Option(64, "--width", min=8, help="Width in pixels."),
        steps: int = typer.Option(30, "--steps", min=1, help="Euler steps."),
        cfg: float = typer.Option(4.0, "--cfg", help="Classifier-free guidance scale (1 = off)."),
        seed: int = typer.Option(0, "--seed", help="Noise seed."),
        fps: int = typer.Option(24, "--fps", min=1, help="Frame rate of the mp4."),
        out: Path = typer.Option(Path("sample.mp4"), "--out", "-o", help="Output mp4.")) -> None:
    """Generate a video for PROMPT with a trained DiT and write it as H.264 mp4."""
    from generator.sample import sample_to_mp4
    try:
        path = sample_to_mp4(prompt, out, frames=frames, height=height, width=width, ckpt=ckpt, root=root,
                             steps=steps, cfg_scale=cfg, seed=seed, fps=fps)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(f"wrote {path} ({frames} frames, {width}x{height})")
