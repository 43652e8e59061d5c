"""Rectified flow on packed batches: the training objective and an Euler sampler with CFG.

Convention: t = 0 is data, t = 1 is noise.
    x_t = (1 - t) * x0 + t * eps,   eps ~ N(0, I)
    velocity target v = d x_t / dt = eps - x0
Sampling integrates from t = 1 (pure noise) down to t = 0: x <- x + (t_next - t) * v.

Timesteps are drawn per clip from a logit-normal, t = sigmoid(u), u ~ N(mean, std), then
shifted toward noise for clips with more tokens (SD3): with a = sqrt(n_tokens / base_tokens),
t' = a t / (1 + (a - 1) t). The same shift is applied to the sampler's time grid.
Loss: per token, the mean squared velocity error over its values; per clip, the mean over the
clip's tokens; per batch, the loss_weight-weighted mean of the per-clip losses. So a clip
counts the same whatever its size and whatever it is packed with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from generator.packing import Clip, PackedBatch, collate
from generator.patches import grid_size, patchify, unpatchify


@dataclass(frozen=True)
class FlowConfig:
    logit_mean: float = 0.0
    logit_std: float = 1.0
    base_tokens: int = 256        # clips with this many tokens get no shift
    resolution_shift: bool = True
    caption_dropout: float = 0.1  # probability of training a clip on the null caption


@dataclass
class FlowLoss:
    loss: Tensor      # () weighted mean of per-clip losses
    per_clip: Tensor  # (n_clips,) mean squared velocity error of each clip
    t: Tensor         # (n_clips,) timesteps used


def shift_timesteps(t: Tensor, n_tokens: Tensor, base_tokens: int) -> Tensor:
    """SD3 resolution shift: t' = a t / (1 + (a - 1) t), a = sqrt(n_tokens / base_tokens)."""
    a = torch.sqrt(n_tokens.to(t.dtype) / base_tokens)
    return a * t / (1 + (a - 1) * t)


def sample_timesteps(n_tokens: Tensor, config: FlowConfig, generator: torch.Generator | None = None) -> Tensor:
    """Logit-normal timesteps, one per clip, shifted by clip size. n_tokens: (n,) -> t: (n,)."""
    u = torch.randn(n_tokens.shape, generator=generator) * config.logit_std + config.logit_mean
    t = torch.sigmoid(u).to(n_tokens.device)
    return shift_timesteps(t, n_tokens, config.base_tokens) if config.resolution_shift else t


def per_clip_mean(values: Tensor, seg: Tensor, n_clips: int) -> Tensor:
    """Mean of per-token values (N,) within each clip, given segment ids (N,) -> (n_clips,)."""
    sums = values.new_zeros(n_clips).index_add(0, seg, values)
    counts = values.new_zeros(n_clips).index_add(0, seg, torch.ones_like(values))
    return sums / counts


def null_caption(null_text: Tensor, null_mask: Tensor | None, length: int) -> tuple[Tensor, Tensor]:
    """Pad or cut the null caption (L0, D_text) to `length` tokens -> (length, D), mask (length,)."""
    L0 = null_text.shape[0]
    mask = torch.ones(L0, dtype=torch.bool, device=null_text.device) if null_mask is None else null_mask.bool()
    assert length >= int(mask.sum()), f"null caption has more real tokens than the batch's {length}"
    if L0 >= length:
        return null_text[:length], mask[:length]
    return F.pad(null_text, (0, 0, 0, length - L0)), F.pad(mask, (0, length - L0))


def drop_captions(
    batch: PackedBatch, null_text: Tensor, p: float, null_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PackedBatch:
    """Caption dropout: replace each clip's caption by the null caption with probability p."""
    drop = (torch.rand(batch.n_clips, generator=generator) < p).to(batch.text.device)  # (n_clips,)
    null, mask = null_caption(null_text.to(batch.text), null_mask, batch.text.shape[1])
    text = torch.where(drop[:, None, None], null[None], batch.text)           # (n_clips, L, D_text)
    text_mask = torch.where(drop[:, None], mask[None], batch.text_mask)       # (n_clips, L)
    return batch.replace(text=text, text_mask=text_mask)


class RectifiedFlow:
    """The training objective on packed batches (see the module docstring for the convention)."""

    def __init__(self, config: FlowConfig = FlowConfig()):
        self.config = config

    def drop_captions(
        self, batch: PackedBatch, null_text: Tensor, null_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PackedBatch:
        """Caption dropout at the configured rate (see `drop_captions`)."""
        return drop_captions(batch, null_text, self.config.caption_dropout, null_mask, generator)

    def timesteps(self, batch: PackedBatch, generator: torch.Generator | None = None) -> Tensor:
        """batch.t where given, else drawn by clip size (full grid tokens): (n_clips,)."""
        drawn = sample_timesteps(batch.grids.prod(dim=1), self.config, generator).to(batch.t)
        return torch.where(torch.isnan(batch.t), drawn, batch.t)

    def loss(
        self, model: nn.Module, batch: PackedBatch, noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> FlowLoss:
        """Velocity-matching loss. batch.x holds clean tokens; noise: (total_tokens, D_in) or None."""
        n = batch.n_real
        seg = batch.segment_ids[:n]                                   # (N,)
        t = self.timesteps(batch, generator)                          # (n_clips,)
        x0 = batch.x[:n]                                              # (N, D_in)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator).to(x0)
        eps = noise[:n]                                               # (N, D_in)
        t_tok = t[seg][:, None].to(x0.dtype)                          # (N, 1)
        x_t = (1 - t_tok) * x0 + t_tok * eps                          # (N, D_in)
        x_in = F.pad(x_t, (0, 0, 0, batch.x.shape[0] - n))            # (total_tokens, D_in)
        v = model(x_in, t, batch)[:n]                                 # (N, D_in)
        err = (v.float() - (eps - x0).float()).pow(2).mean(dim=-1)    # (N,)
        per_clip = per_clip_mean(err, seg, batch.n_clips)             # (n_clips,)
        w = batch.loss_weight.to(per_clip)
        return FlowLoss(loss=(w * per_clip).sum() / w.sum(), per_clip=per_clip, t=t)


def guided_velocity(
    model: nn.Module, x: Tensor, t: Tensor, cond: PackedBatch, uncond: PackedBatch, cfg_scale: float,
) -> Tensor:
    """Classifier-free guidance in one packed forward: cond and uncond clips side by side.

    x: (N, D_in) tokens of the cond clips, t: (n,) -> v_u + cfg_scale * (v_c - v_u): (N, D_in).
    """
    both = _concat_batches(cond, uncond)
    v = model(torch.cat([x, x]), torch.cat([t, t]), both)             # (2N, D_in)
    v_cond, v_uncond = v.chunk(2)                                     # (N, D_in) each
    return v_uncond + cfg_scale * (v_cond - v_uncond)


def _concat_batches(a: PackedBatch, b: PackedBatch) -> PackedBatch:
    """Two unpadded batches with the same clip layout and caption length -> one batch."""
    assert a.n_real == a.x.shape[0] and b.n_real == b.x.shape[0], "concatenate unpadded batches"
    return a.replace(
        x=torch.cat([a.x, b.x]), segment_ids=torch.cat([a.segment_ids, b.segment_ids + a.n_clips]),
        pos=torch.cat([a.pos, b.pos]), cu_seqlens=torch.cat([a.cu_seqlens, b.cu_seqlens[1:] + a.n_real]),
        t=torch.cat([a.t, b.t]), text=torch.cat([a.text, b.text]), text_mask=torch.cat([a.text_mask, b.text_mask]),
        loss_weight=torch.cat([a.loss_weight, b.loss_weight]), grids=torch.cat([a.grids, b.grids]),
        keys=a.keys + b.keys)


def time_grid(steps: int, n_tokens: int, config: FlowConfig) -> list[float]:
    """Sampler times from 1 to 0 (steps + 1 values), shifted like training for this clip size."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    if config.resolution_shift:
        t = shift_timesteps(t, torch.tensor(float(n_tokens), dtype=torch.float64), config.base_tokens)
    return t.tolist()


@torch.no_grad()
def sample(
    model: nn.Module, text: Tensor, text_mask: Tensor | None, null_text: Tensor,
    frames: int, height: int, width: int, latent_channels: int, patch: Sequence[int],
    steps: int = 30, cfg_scale: float = 4.0, generator: torch.Generator | None = None,
    null_mask: Tensor | None = None, config: FlowConfig = FlowConfig(),
) -> Tensor:
    """Generate one latent video per caption with Euler steps and classifier-free guidance.

    text: (n, L, D_text) caption embeddings (+ text_mask (n, L)); null_text: (L0, D_text) the
    empty caption; (frames, height, width) is the latent size, any values. Returns latents
    (n, latent_channels, frames, height, width). cfg_scale == 1 skips the unconditional pass.
    """
    device, dtype = text.device, next(model.parameters()).dtype
    n, L = text.shape[:2]
    mask = torch.ones(n, L, dtype=torch.bool, device=device) if text_mask is None else text_mask.bool()
    noise = torch.randn(n, latent_channels, frames, height, width, generator=generator).to(device, dtype)
    tokens = [patchify(z, *patch)[0] for z in noise]                  # n x (N_clip, D_in)
    cond = collate([Clip(tok, grid_size(frames, height, width, *patch), text[i].to(dtype), mask[i])
                    for i, tok in enumerate(tokens)])
    null, nmask = null_caption(null_text.to(device, dtype), null_mask, L)
    uncond = cond.replace(text=null.expand(n, -1, -1), text_mask=nmask.expand(n, -1))
    x = cond.x                                                        # (n * N_clip, D_in)
    ts = time_grid(steps, tokens[0].shape[0], config)
    for t_cur, t_next in zip(ts[:-1], ts[1:]):
        t = torch.full((n,), t_cur, device=device, dtype=dtype)       # (n,)
        v = model(x, t, cond) if cfg_scale == 1.0 else guided_velocity(model, x, t, cond, uncond, cfg_scale)
        x = x + (t_next - t_cur) * v                                  # (n * N_clip, D_in)
    grid = grid_size(frames, height, width, *patch)
    return torch.stack([unpatchify(tok, grid, *patch, latent_channels, frames, height, width)
                        for tok in x.split(grid.n_tokens)])           # (n, C, T, H, W)
