"""Diffusion Transformer over packed spacetime patches (DiT + Patch n' Pack).

The input is a `PackedBatch`: tokens of several clips concatenated, each with a segment id and
its (t, h, w) position. Everything that is per clip is computed per clip and gathered per token:

- conditioning c = timestep embedding + pooled caption embedding, one vector per clip; each
  block turns c into adaLN-Zero shift/scale/gate per clip and gathers them by segment id;
- self-attention is confined to each clip, with 3D RoPE on q/k from positions that restart
  per clip; cross-attention goes from a clip's tokens to its own caption tokens only.

So a clip's output does not depend on what it is packed with (tests check this to 1e-5).
Padding tokens are never computed: the model runs on the first `n_real` tokens and returns
zeros for the padding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from generator.attention import BACKENDS, AttentionFn, VarlenLayout, get_attention
from generator.packing import PackedBatch
from generator.rope import RoPE3D, apply_rope


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of a DiT; the JSON configs in generator/configs are rows of this."""

    in_channels: int = 4                      # latent channels of the autoencoder
    patch_size: tuple[int, int, int] = (1, 2, 2)
    hidden_size: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 32                        # width of the caption embeddings
    rope_theta: float = 10000.0
    qk_norm: bool = True
    attn_backend: str = "sdpa_loop"           # sdpa_loop | flex | flash_varlen
    grad_checkpoint: bool = False

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"hidden_size {self.hidden_size} must split into {self.num_heads} heads of even size")
        if self.attn_backend not in BACKENDS:
            raise ValueError(f"attn_backend must be one of {sorted(BACKENDS)}, got {self.attn_backend!r}")

    @property
    def patch_dim(self) -> int:
        """Values per patch token: C * pt * ph * pw."""
        return self.in_channels * math.prod(self.patch_size)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """x: (B, L, D), mask: (B, L) bool -> (B, D) mean over the True positions."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of t in [0, 1] (scaled to [0, 1000] like DiT) followed by an MLP."""

    def __init__(self, hidden_size: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: Tensor) -> Tensor:
        """t: (B,) -> (B, hidden_size)."""
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000.0 * t.float()[:, None] * freqs[None]             # (B, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class Mlp(nn.Sequential):
    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__(nn.Linear(dim_in, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim_out))


@dataclass
class PackContext:
    """Per-forward data shared by all blocks (computed once from the PackedBatch)."""

    seg: Tensor                   # (N,) clip index of each real token
    rope: tuple[Tensor, Tensor]   # cos, sin: (N, 1, Dh/2)
    text: Tensor                  # (N_text, D) projected caption tokens of all clips, concatenated
    self_layout: VarlenLayout     # clip token offsets (q and k)
    cross_layout: VarlenLayout    # clip token offsets (q), caption token offsets (k)
    attn: AttentionFn = field(repr=False)  # the configured attention backend


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // num_heads, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(dim // num_heads, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, ctx: PackContext) -> Tensor:
        """x: (N, D) -> (N, D), each clip attending to itself."""
        N, D = x.shape
        q, k, v = self.qkv(x).reshape(N, 3, self.num_heads, D // self.num_heads).unbind(1)  # (N, H, Dh) each
        q = apply_rope(self.q_norm(q), *ctx.rope)                     # (N, H, Dh)
        k = apply_rope(self.k_norm(k), *ctx.rope)                     # (N, H, Dh)
        out = ctx.attn(q, k, v, ctx.self_layout)                      # (N, H, Dh)
        return self.proj(out.reshape(N, D))                           # (N, D)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = nn.RMSNorm(dim // num_heads, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(dim // num_heads, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, ctx: PackContext) -> Tensor:
        """x: (N, D) -> (N, D), each clip attending to its own caption tokens."""
        N, D = x.shape
        Dh = D // self.num_heads
        q = self.q_norm(self.q(x).reshape(N, self.num_heads, Dh))   # (N, H, Dh)
        k, v = self.kv(ctx.text).reshape(-1, 2, self.num_heads, Dh).unbind(1)  # (N_text, H, Dh) each
        out = ctx.attn(q, self.k_norm(k), v, ctx.cross_layout)       # (N, H, Dh)
        return self.proj(out.reshape(N, D))                           # (N, D)


class DiTBlock(nn.Module):
    """adaLN-Zero block: self-attention, cross-attention to the caption, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qk_norm)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, num_heads, qk_norm)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, ctx: PackContext) -> Tensor:
        """x: (N, D) tokens, c: (n_clips, D) conditioning -> (N, D)."""
        mod = self.adaLN_modulation(c)[ctx.seg]                      # (N, 6D) per token, from its clip
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)  # (N, D) each
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), ctx)  # (N, D)
        x = x + self.cross_attn(self.norm2(x), ctx)                  # (N, D)
        x = x + gate_mlp * self.mlp(modulate(self.norm3(x), shift_mlp, scale_mlp))  # (N, D)
        return x


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor, seg: Tensor) -> Tensor:
        """x: (N, D), c: (n_clips, D) -> (N, patch_dim)."""
        shift, scale = self.adaLN_modulation(c)[seg].chunk(2, dim=-1)  # (N, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, patch_dim)


class DiT(nn.Module):
    """Predicts the flow velocity of every packed patch token."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        D, H = config.hidden_size, config.num_heads
        self.x_embedder = nn.Linear(config.patch_dim, D)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = Mlp(config.text_dim, D, D)                  # caption tokens -> width D
        self.pool_embedder = Mlp(config.text_dim, D, D)               # pooled caption -> conditioning
        self.rope = RoPE3D(D // H, config.rope_theta)
        self.blocks = nn.ModuleList(DiTBlock(D, H, config.mlp_ratio, config.qk_norm) for _ in range(config.depth))
        self.final_layer = FinalLayer(D, config.patch_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT init: xavier linears, small caption/timestep MLPs, zero adaLN-Zero and output."""
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.apply(_basic_init)
        for mlp in (self.t_embedder.mlp, self.y_embedder, self.pool_embedder):
            nn.init.normal_(mlp[0].weight, std=0.02)
            nn.init.normal_(mlp[2].weight, std=0.02)
        zero = [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]
        for block in self.blocks:
            zero += [block.adaLN_modulation[-1], block.cross_attn.proj]  # identity block at init
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def context(self, batch: PackedBatch) -> PackContext:
        """Per-forward layout: segment ids, RoPE angles, caption tokens, attention offsets."""
        n = batch.n_real
        text_lens = batch.text_mask.sum(1)                           # (n_clips,)
        cu_text = F.pad(text_lens.cumsum(0), (1, 0)).to(torch.int32)  # (n_clips + 1,)
        text = self.y_embedder(batch.text[batch.text_mask])          # (N_text, D)
        return PackContext(
            seg=batch.segment_ids[:n], rope=self.rope(batch.pos[:n]), text=text,
            self_layout=VarlenLayout(batch.cu_seqlens, batch.cu_seqlens),
            cross_layout=VarlenLayout(batch.cu_seqlens, cu_text),
            attn=get_attention(self.config.attn_backend))

    def forward(self, x: Tensor, t: Tensor, batch: PackedBatch) -> Tensor:
        """x: (total_tokens, patch_dim) noisy tokens, t: (n_clips,) in [0, 1], batch: layout and
        captions -> velocity (total_tokens, patch_dim), zeros at padding."""
        assert x.shape == (batch.segment_ids.shape[0], self.config.patch_dim), f"x {tuple(x.shape)}"
        assert t.shape == (batch.n_clips,), f"t {tuple(t.shape)} for {batch.n_clips} clips"
        n = batch.n_real
        ctx = self.context(batch)
        h = self.x_embedder(x[:n])                                    # (N, D)
        c = self.t_embedder(t) + self.pool_embedder(masked_mean(batch.text, batch.text_mask))  # (n_clips, D)
        for block in self.blocks:
            if self.config.grad_checkpoint and self.training:
                h = checkpoint(block, h, c, ctx, use_reentrant=False)  # (N, D)
            else:
                h = block(h, c, ctx)                                  # (N, D)
        out = self.final_layer(h, c, ctx.seg)                         # (N, patch_dim)
        return F.pad(out, (0, 0, 0, x.shape[0] - n))                 # (total_tokens, patch_dim)

    def config_dict(self) -> dict:
        """Resolved config, JSON-serialisable (for checkpoints)."""
        return {"family": "dit", **asdict(self.config)}
