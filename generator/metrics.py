"""Training FLOPs, model FLOPs utilisation (MFU) and the metrics.jsonl writer.

FLOPs of one DiT training step (forward + backward = 3x forward, 2 FLOPs per multiply-add):

    6 * P_tok * N          every per-token matmul (patch embed, qkv, proj, MLP, cross-attn q/proj, output)
  + 6 * P_txt * N_text     per-caption-token matmuls (caption embedder, cross-attn k/v)
  + 12 * depth * D * (sum_i L_i^2 + sum_i L_i * T_i)   attention scores and weighted sums,
                           self-attention within each clip (L_i tokens) and cross-attention to
                           its caption (T_i tokens)

Per-clip work (timestep / pooled-caption MLPs, adaLN modulation) is negligible and left out.
MFU = achieved FLOP/s / peak FLOP/s of the device (dense bf16, from `PEAK_BF16_FLOPS`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generator.packing import PackedBatch

PEAK_BF16_FLOPS = {           # dense bf16 tensor-core peak per GPU, FLOP/s (vendor datasheets)
    "H200": 989e12, "H100": 989e12, "GH200": 989e12, "B200": 2250e12, "A100": 312e12,
    "L40S": 362e12, "L40": 181e12, "L4": 121e12, "A10": 125e12, "A6000": 155e12,
    "4090": 165e12, "3090": 71e12, "V100": 125e12, "T4": 65e12,
}
BLOCK_TOKEN_PARAMS = (".attn.qkv.", ".attn.proj.", ".cross_attn.q.", ".cross_attn.proj.", ".mlp.")


def dit_param_split(model: nn.Module) -> tuple[int, int]:
    """(per-token matmul params, per-caption-token matmul params) of a DiT."""
    tok = txt = 0
    for name, p in model.named_parameters():
        if name.startswith("y_embedder.") or ".cross_attn.kv." in name:
            txt += p.numel()
        elif name.startswith(("x_embedder.", "final_layer.linear.")) or (
                name.startswith("blocks.") and any(k in name for k in BLOCK_TOKEN_PARAMS)):
            tok += p.numel()
    return tok, txt


def train_flops(model: nn.Module, batch: PackedBatch, split: tuple[int, int] | None = None) -> float:
    """Training FLOPs (forward + backward) of one step of `model` on `batch` (module docstring)."""
    tok, txt = split or dit_param_split(model)
    cfg = model.config
    lens = torch.tensor(batch.seqlens, dtype=torch.float64)
    text_lens = batch.text_mask.sum(1).double().cpu()
    n, n_text = float(lens.sum()), float(text_lens.sum())
    attn = 12.0 * cfg.depth * cfg.hidden_size * float((lens * lens).sum() + (lens * text_lens).sum())
    return 6.0 * tok * n + 6.0 * txt * n_text + attn


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of a CUDA device by name, None on CPU or for an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


class MetricsLog:
    """Appends one JSON object per line to ROOT/runs/<run_id>/metrics.jsonl (rank 0 only)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
