"""Generate videos from a trained DiT checkpoint and write them as H.264 mp4 with PyAV.

    from generator.sample import sample_to_mp4
    sample_to_mp4("A red circle moves left over a blue background", "out.mp4",
                  frames=17, height=64, width=64, root="demo_root")   # newest run under ROOT

A DiT checkpoint carries everything sampling needs: the model (EMA weights by default), the
autoencoder and text encoder specs, the null caption and the flow settings (the sampler shifts
its time grid like training did). Any (frames, height, width) works: the latent size follows
the autoencoder's compression and the output is cropped back to the requested size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor, nn

from generator.checkpoint import load_checkpoint, resolve_checkpoint
from generator.distributed import pick_device
from generator.flow import FlowConfig, sample
from generator.registry import build_model
from generator.text import TextEncoder, load_text_encoder
from generator.vae import Autoencoder, load_autoencoder


@dataclass
class VideoGenerator:
    """Everything needed to turn prompts into pixels."""

    model: nn.Module
    autoencoder: Autoencoder
    text: TextEncoder
    null_text: Tensor     # (L0, D_text)
    null_mask: Tensor     # (L0,) bool
    flow: FlowConfig
    step: int
    path: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_dit_checkpoint(ckpt: str | Path | None = None, root: str | Path | None = None) -> Path:
    """`ckpt` (file or run dir), else the newest run's latest checkpoint under ROOT/models/dit."""
    if ckpt is not None:
        return resolve_checkpoint(ckpt)
    if root is None:
        raise ValueError("give a checkpoint (--ckpt) or a corpus root (--root) to take the newest run from")
    return resolve_checkpoint(Path(root) / "models" / "dit")


def load_generator(path: str | Path, device: str = "auto", use_ema: bool = True) -> VideoGenerator:
    """Rebuild the DiT, autoencoder and text encoder stored in a DiT checkpoint."""
    dev = pick_device(device)
    path = resolve_checkpoint(path)
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["ema" if use_ema else "model"])
    flow = FlowConfig(**ckpt["config"]["flow"])
    return VideoGenerator(
        model=model.to(dev).eval(), autoencoder=load_autoencoder(ckpt["autoencoder"], dev),
        text=load_text_encoder(ckpt["text_encoder"], dev), null_text=ckpt["null_text"].to(dev),
        null_mask=ckpt["null_mask"].to(dev), flow=flow, step=ckpt["step"], path=path)


def to_uint8(video: Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    x = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


@torch.no_grad()
def generate(gen: VideoGenerator, prompts: list[str], frames: int, height: int, width: int,
             steps: int = 30, cfg_scale: float = 4.0, seed: int = 0) -> list[np.ndarray]:
    """One video per prompt: a list of uint8 arrays (frames, height, width, 3)."""
    ae = gen.autoencoder
    t, h, w = ae.latent_size(frames, height, width)
    text, mask = gen.text.encode(prompts)                                     # (n, L, D), (n, L)
    z = sample(gen.model, text, mask, gen.null_text, t, h, w, ae.latent_channels, gen.model.config.patch_size,
               steps=steps, cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(seed),
               null_mask=gen.null_mask, config=gen.flow)                     # (n, C, t, h, w)
    videos = ae.decode(ae.denormalize(z), size=(frames, height, width))     # (n, 3, T, H, W)
    return [to_uint8(v) for v in videos]


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 24, crf: int = 18) -> Path:
    """Encode uint8 (T, H, W, 3) as H.264 yuv420p; odd sizes are padded to even by edge copy."""
    T, H, W, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"preset": "medium", "crf": str(crf)}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def sample_to_mp4(prompt: str, out: str | Path, frames: int = 17, height: int = 64, width: int = 64,
                  ckpt: str | Path | None = None, root: str | Path | None = None, steps: int = 30,
                  cfg_scale: float = 4.0, seed: int = 0, fps: int = 24, device: str = "auto") -> Path:
    """Generate one video for `prompt` and write it to `out` (see the module docstring)."""
    gen = load_generator(resolve_dit_checkpoint(ckpt, root), device)
    video = generate(gen, [prompt], frames, height, width, steps, cfg_scale, seed)[0]
    return write_mp4(video, out, fps)
