"""Train the causal video VAE on shard clips: random spacetime crops, L1 + KL, AdamW.

    from generator.train_vae import VAETrainConfig, train_vae
    result = train_vae(VAETrainConfig(root="demo_root", dataset="demo", steps=300))

Each step takes `batch_size` clips from the shards (shuffled, endless), decodes
`crop_frames` frames (1 + k*ct) from a random start, downscales them like the DiT data
(`max_pixels`) and cuts a random `crop_size` square; the VAE is fully convolutional, so it
then encodes clips of any size. At the end the latent scale/shift are fitted on a few batches
(normalised latents ~ N(0, 1)) and the checkpoint is written to ROOT/models/vae/<run_id>/
or `out` (`latest` pointers; load it with `generator.vae.load_autoencoder(path)`); metrics go to
ROOT/runs/<run_id>/metrics.jsonl. Single process: the tiny VAE trains in minutes on a CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from generator.checkpoint import save_checkpoint
from generator.data import DataConfig, decode_frames, fit_size, frame_plan, to_video
from generator.distributed import pick_device
from generator.metrics import MetricsLog
from generator.registry import create_model
from generator.train import new_run_id
from generator.vae import CausalVAE, fit_latent_stats
from storage.shards import read_shards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VAETrainConfig:
    root: str
    dataset: str
    model: str = "vae_tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    steps: int | None = 500
    minutes: float | None = None    # wall-time budget, checked after each step (at least one step runs)
    batch_size: int = 4
    crop_frames: int = 9            # frames per crop, 1 + k * ct
    crop_size: int = 32             # square crop side in pixels, a multiple of the spatial compression
    max_pixels: int = 64 * 64       # frames are downscaled to this area first (aspect kept)
    lr: float = 1e-3
    seed: int = 0
    log_every: int = 10
    stats_batches: int = 4
    run_id: str | None = None
    out: str | None = None          # run directory (default ROOT/models/vae/<run_id>, which `latest` tracks)
    device: str = "auto"
    cpu_threads: int | None = None  # torch intra-op threads (1 is fastest on a busy shared CPU)
    progress: bool = True

    def __post_init__(self):
        if self.steps is None and self.minutes is None:
            raise ValueError("give steps or minutes (or both) so that training ends")


@dataclass
class VAETrainResult:
    run_id: str
    step: int
    checkpoint: Path
    seconds: float
    recon_l1: float


def random_crop(video: Tensor, frames: int, size: int, rng: np.random.Generator) -> Tensor:
    """(3, T, H, W) -> (3, frames, size, size), replicate-padding sides that are too short."""
    _, T, H, W = video.shape
    pad_h, pad_w, pad_t = max(0, size - H), max(0, size - W), max(0, frames - T)
    if pad_h or pad_w or pad_t:
        video = F.pad(video[None], (0, pad_w, 0, pad_h, 0, pad_t), mode="replicate")[0]
    y, x = (int(rng.integers(0, n - size + 1)) for n in video.shape[2:])
    return video[:, :frames, y:y + size, x:x + size]


def crop_stream(cfg: VAETrainConfig, compression: tuple[int, int, int]) -> Iterator[Tensor]:
    """Endless (batch_size, 3, crop_frames, crop_size, crop_size) batches in [-1, 1]."""
    data = DataConfig(max_frames=cfg.crop_frames, max_pixels=cfg.max_pixels)
    rng, batch, epoch = np.random.default_rng(cfg.seed), [], 0
    dataset_dir = str(Path(cfg.root) / "shards" / cfg.dataset)
    while True:
        for sample in read_shards(dataset_dir, shuffle=64, seed=cfg.seed + epoch):
            start, count = frame_plan(int(sample["json"]["n_frames"]), data, compression[0], rng)
            frames = decode_frames(sample["mp4"], start, count)
            video = to_video(frames, fit_size(*frames.shape[1:3], cfg.max_pixels, compression[1]))
            batch.append(random_crop(video, cfg.crop_frames, cfg.crop_size, rng))
            if len(batch) == cfg.batch_size:
                yield torch.stack(batch)
                batch = []
        epoch += 1


def train_vae(cfg: VAETrainConfig) -> VAETrainResult:
    """Fit the VAE, fit its latent statistics, write the checkpoint (see the module docstring)."""
    device, run_id, t0 = pick_device(cfg.device), cfg.run_id or new_run_id("vae"), time.time()
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    vae: CausalVAE = create_model(cfg.model, **cfg.model_overrides).to(device)
    if cfg.crop_size % vae.compression[1] or (cfg.crop_frames - 1) % vae.compression[0]:
        raise ValueError(f"crop_size must divide by {vae.compression[1]} and crop_frames be 1 + k*{vae.compression[0]}")
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr)
    metrics = MetricsLog(Path(cfg.root) / "runs" / run_id / "metrics.jsonl")
    batches, gen = crop_stream(cfg, vae.compression), torch.Generator().manual_seed(cfg.seed)
    deadline = t0 + 60 * cfg.minutes if cfg.minutes else None
    bar = tqdm(total=cfg.steps, desc=f"train-vae {run_id}", unit="step", disable=not cfg.progress)
    step, recon = 0, float("nan")
    while (cfg.steps is None or step < cfg.steps) and (step == 0 or deadline is None or time.time() < deadline):
        out = vae(next(batches).to(device), generator=gen)
        optimizer.zero_grad(set_to_none=True)
        out.losses["loss"].backward()
        optimizer.step()
        step, recon = step + 1, out.losses["recon"].item()
        bar.update(1)
        bar.set_postfix(l1=f"{recon:.4f}")
        if step % cfg.log_every == 0:
            metrics.write({"step": step, **{k: v.item() for k, v in out.losses.items()}, "elapsed_s": time.time() - t0})
    bar.close()
    vae.eval()
    mean, std = fit_latent_stats(vae, [next(batches).to(device) for _ in range(cfg.stats_batches)])
    log.info("train-vae %s: %d steps, L1 %.4f, latent mean %.3f std %.3f", run_id, step, recon, mean, std)
    ckpt = {"model": vae.state_dict(), "model_config": vae.config_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "run_id": run_id, "config": asdict(cfg), "latent_stats": {"mean": mean, "std": std}}
    run_dir = Path(cfg.out) if cfg.out else Path(cfg.root) / "models" / "vae" / run_id
    path = save_checkpoint(run_dir, ckpt, keep=1, parent_pointer=cfg.out is None)
    return VAETrainResult(run_id, step, path, time.time() - t0, recon)
