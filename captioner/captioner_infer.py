"""Captioning with a trained captioner: load a checkpoint, sample frames, greedy-decode captions."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from captioner.captioner_data import sample_frames
from captioner.captioner_model import VideoCaptioner
from captioner.checkpoint import checkpoint_name, load_checkpoint, resolve_checkpoint
from captioner.registry import load_config
from captioner.tokenizer import CaptionTokenizer


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    """bf16 autocast on GPU; fp32 on CPU (no fast bf16 matmuls there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def greedy_captions(model: VideoCaptioner, tokenizer: CaptionTokenizer, frames: torch.Tensor,
                    batch_size: int = 32, max_new_tokens: int | None = None) -> tuple[list[str], int]:
    """Captions of ``frames`` (N, K, 3, H, W) uint8 and the number of generated tokens."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts, n_tokens = [], 0
    for i in range(0, len(frames), batch_size):
        with autocast(device):
            ids = model.generate(frames[i:i + batch_size].to(device), tokenizer.bos_id,
                                 tokenizer.eos_id, max_new_tokens)  # (B, T_gen)
        for row in ids.tolist():
            n_tokens += row.index(tokenizer.eos_id) + 1 if tokenizer.eos_id in row else len(row)
            texts.append(tokenizer.decode(row).strip())
    model.train(was_training)
    return texts, n_tokens


@dataclass
class CaptionPredictor:
    """A loaded captioner checkpoint: ``name`` is stable per checkpoint (``<run>@step<N>``)."""

    model: VideoCaptioner
    tokenizer: CaptionTokenizer
    name: str
    path: str

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> "CaptionPredictor":
        """Build the architecture from the checkpoint's config, then load its weights."""
        device = torch.device(device) if device else default_device()
        ckpt = load_checkpoint(path)
        model = VideoCaptioner(load_config(ckpt["config"]), ckpt["vocab_size"], load_weights=False,
                               lm_config=ckpt.get("lm_config"))
        model.load_state_dict(ckpt["model"])
        model.to(device).eval()
        tokenizer = CaptionTokenizer.from_dict(ckpt["tokenizer"])
        return cls(model, tokenizer, checkpoint_name(path), str(resolve_checkpoint(path)))

    @property
    def n_frames(self) -> int:
        return self.model.n_frames

    @property
    def source(self) -> str:
        return f"captioner:{self.name}"

    def frames(self, path: str) -> np.ndarray:
        """(K, 3, H, W) uint8 frames of one clip file, as the model expects them."""
        return sample_frames(path, self.n_frames, self.model.image_size)

    def caption_frames(self, frames: Sequence[np.ndarray] | torch.Tensor,
                       batch_size: int = 32) -> tuple[list[str], int]:
        """Captions for a batch of clips' frames, and the number of generated tokens."""
        batch = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.stack(frames))
        return greedy_captions(self.model, self.tokenizer, batch, batch_size)

    def caption_paths(self, paths: Sequence[str], batch_size: int = 32) -> list[str]:
        return self.caption_frames([self.frames(p) for p in paths], batch_size)[0]


def checkpoint_source(path: str | Path) -> str:
    """The ``captions.source`` a checkpoint writes, without loading it."""
    return f"captioner:{checkpoint_name(path)}"
