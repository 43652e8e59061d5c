"""The temporal resampler: learned queries cross-attending over the patch tokens of K frames.

Every token of every frame enters with what it is and where and when it is:

    x = proj(LN(token)) + proj(LN(token) − frame mean)      content and frame contrast
      + MLP([patch mean and foreground RGB, frame median RGB]) colour skip from the pixels
      + time_embed[frame] + patch_embed[position]             sinusoidal at init, then learned
      + MLP(camera shift curves of the frame)                 when ``camera_dim`` > 0
      + view_embed[view] + MLP(object boxes of the frame)     when ``views`` > 1 (object crops)

Queries attend over [all V·K·P tokens (V = 1, or 1 + crops per frame), queries] (Flamingo's
Perceiver resampler). Half of the heads start with a saliency bias on their logits
(``scale_h · z``, ``z`` the z-scored pixel deviation of the patch from its frame's median
colour): from the first step they look at what stands out from the background — the objects —
while the other heads start uniform (background, camera). Scales are learned, so the prior
fades where it does not help.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


EMBED_SCALE = 0.25  # sinusoidal time/position embeddings at init: present, not dominant


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Linear → GELU → Linear: the small MLPs that embed measured features."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, n_out))


def sincos_embedding(n: int, width: int) -> torch.Tensor:
    """(n, width) sinusoidal embedding: non-zero from the start, so order is visible at step 0."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, width, 2, dtype=torch.float32) / width)
    emb = torch.zeros(n, width)
    emb[:, 0::2] = torch.sin(pos * freqs)
    emb[:, 1::2] = torch.cos(pos * freqs[: width // 2])
    return emb


def sincos_2d(grid: tuple[int, int], width: int) -> torch.Tensor:
    """(gh·gw, width) position embedding: half the channels encode the row, half the column."""
    gh, gw = grid
    rows = sincos_embedding(gh, width // 2)[:, None, :].expand(gh, gw, -1)  # (gh, gw, W/2)
    cols = sincos_embedding(gw, width - width // 2)[None, :, :].expand(gh, gw, -1)  # (gh, gw, W/2)
    return torch.cat([rows, cols], dim=-1).flatten(0, 1)  # (gh·gw, W)


def frame_median(pixels: torch.Tensor) -> torch.Tensor:
    """Median RGB (N, 3) of each frame (N, 3, H, W): the background colour of a synthetic shot.
    Taken over 4×4-pixel means (16× fewer values, the same background colour)."""
    pooled = F.avg_pool2d(pixels, 4) if min(pixels.shape[-2:]) >= 16 else pixels  # (N, 3, H/4, W/4)
    return pooled.flatten(2).median(dim=2).values  # (N, 3)


def pixel_statistics(pixels: torch.Tensor, stride: int) -> tuple[torch.Tensor, ...]:
    """Per patch of ``stride`` pixels: saliency and colour; per frame: median RGB.

    ``pixels`` (N, 3, H, W) in [0, 1] → saliency (N, P), patch colour (N, P, 6), median (N, 3).
    Patch colour is the mean RGB and the foreground RGB (pixels weighted by their squared
    deviation from the median: the colour of a small object inside the patch, not a blend).
    The median is :func:`frame_median`.
    """
    median = frame_median(pixels)  # (N, 3)
    deviation = (pixels - median[..., None, None]).abs().sum(dim=1, keepdim=True)  # (N, 1, H, W)
    saliency = F.avg_pool2d(deviation, stride).flatten(1)  # (N, P)
    weight = deviation.square() + 1e-6  # (N, 1, H, W)
    foreground = F.avg_pool2d(weight * pixels, stride) / F.avg_pool2d(weight, stride)  # (N, 3, gh, gw)
    colour = torch.cat([F.avg_pool2d(pixels, stride), foreground], dim=1)  # (N, 6, gh, gw)
    return saliency, colour.flatten(2).transpose(1, 2), median


class ResamplerLayer(nn.Module):
    """Queries attend over [media tokens, queries], then an MLP; ``bias`` shifts media logits."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_media = nn.LayerNorm(width)
        self.norm_q = nn.LayerNorm(width)
        self.to_q = nn.Linear(width, width)
        self.to_kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = mlp(width, 4 * width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, L, W / H)

    def forward(self, q: torch.Tensor, media: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # q: (B, Q, W); media: (B, N, W); bias: (B, H, 1, N)
        qn = self.norm_q(q)  # (B, Q, W)
        kv = torch.cat([self.norm_media(media), qn], dim=1)  # (B, N + Q, W)
        k, v = self.to_kv(kv).chunk(2, dim=-1)  # (B, N + Q, W) each
        mask = F.pad(bias, (0, q.shape[1])).expand(-1, -1, q.shape[1], -1)  # (B, H, Q, N + Q)
        out = F.scaled_dot_product_attention(self._split(self.to_q(qn)), self._split(k),
                                             self._split(v), attn_mask=mask.to(q.dtype))  # (B, H, Q, W/H)
        q = q + self.proj(out.transpose(1, 2).flatten(2))  # (B, Q, W)
        return q + self.mlp(self.norm_mlp(q))  # (B, Q, W)


class TemporalResampler(nn.Module):
    """K frames of patch tokens → Q latent tokens (see the module docstring)."""

    def __init__(self, in_width: int, width: int, queries: int, layers: int, heads: int,
                 max_frames: int, grid: tuple[int, int], saliency_init: float = 3.0,
                 camera_dim: int = 0, views: int = 1, box_dim: int = 0):
        super().__init__()
        self.max_frames, self.views = max_frames, views
        self.token_norm = nn.LayerNorm(in_width)
        self.input_proj = nn.Linear(in_width, width)
        self.contrast_proj = nn.Linear(in_width, width)
        self.colour_mlp = mlp(9, width, width)
        self.camera_mlp = None  # per-frame camera-shift curves → an embedding added to its tokens
        if camera_dim:
            self.camera_mlp = mlp(camera_dim, width, width)
        self.box_mlp = None  # per-frame object boxes (crop centre, side, salient share) → embedding
        if box_dim:
            self.box_mlp = mlp(box_dim, width, width)
        self.view_embed = nn.Parameter(0.02 * torch.randn(views, width)) if views > 1 else None
        self.time_embed = nn.Parameter(EMBED_SCALE * sincos_embedding(max_frames, width))
        self.patch_embed = nn.Parameter(EMBED_SCALE * sincos_2d(grid, width))
        self.queries = nn.Parameter(0.02 * torch.randn(queries, width))
        salient_heads = (torch.arange(heads) < (heads + 1) // 2).float()
        self.saliency_scale = nn.Parameter(saliency_init * salient_heads.repeat(layers, 1))
        self.layers = nn.ModuleList(ResamplerLayer(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def embed(self, tokens: torch.Tensor, rgb: torch.Tensor, median: torch.Tensor,
              camera: torch.Tensor | None = None, box: torch.Tensor | None = None) -> torch.Tensor:
        """Media tokens (B, V·K·P, W) from tokens (B, V·K, P, Wv), patch colour (B, V·K, P, 6),
        median (B, V·K, 3), camera-shift curves (B, K, F) and object boxes (B, K, Fb); the V
        views (whole frame, object crops) are consecutive blocks of K frames."""
        vk, p = tokens.shape[1:3]
        k = vk // self.views
        tokens = self.token_norm(tokens)  # (B, V·K, P, Wv)
        contrast = tokens - tokens.mean(dim=2, keepdim=True)  # (B, V·K, P, Wv)
        colour = torch.cat([rgb, median[:, :, None].expand(-1, -1, p, -1)], dim=-1)  # (B, V·K, P, 9)
        colour = self.colour_mlp((colour - 0.5) / 0.25)  # (B, V·K, P, W)
        x = self.input_proj(tokens) + self.contrast_proj(contrast) + colour
        per_frame = self.time_embed[:k].repeat(self.views, 1)  # (V·K, W)
        if self.view_embed is not None:
            per_frame = per_frame + self.view_embed.repeat_interleave(k, dim=0)  # (V·K, W)
        x = x + per_frame[:, None, :] + self.patch_embed[None, :p, :]  # (B, V·K, P, W)
        if self.camera_mlp is not None:
            x = x + self.camera_mlp(4.0 * camera).repeat(1, self.views, 1)[:, :, None, :]
        if self.box_mlp is not None:
            x = x + self.box_mlp(box).repeat(1, self.views, 1)[:, :, None, :]  # (B, V·K, P, W)
        return x.flatten(1, 2)  # (B, V·K·P, W)

    def forward(self, tokens: torch.Tensor, saliency: torch.Tensor, rgb: torch.Tensor,
                median: torch.Tensor, camera: torch.Tensor | None = None,
                box: torch.Tensor | None = None) -> torch.Tensor:
        b, vk, p, _ = tokens.shape  # tokens: (B, V·K, P, Wv); saliency: (B, V·K, P)
        k = vk // self.views
        assert k <= self.max_frames, f"{k} frames > resampler.max_frames {self.max_frames}"
        assert (camera is None) == (self.camera_mlp is None), "camera curves iff camera_dim > 0"
        assert (box is None) == (self.box_mlp is None), "object boxes iff object crops"
        x = self.embed(tokens, rgb, median, camera, box)  # (B, V·K·P, W)
        z = saliency.flatten(1)  # (B, V·K·P)
        z = ((z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + 1e-6)).clamp(-3, 6)
        q = self.queries.expand(b, -1, -1)  # (B, Q, W)
        for layer, scale in zip(self.layers, self.saliency_scale):
            q = layer(q, x, scale[None, :, None, None] * z[:, None, None, :])  # (B, Q, W)
        return self.norm(q)  # (B, Q, W)


class ObjectTokens(nn.Module):
    """One prefix token per object crop, and one for the scene, from what was measured of them.

    Object o's token sees only object o, over all K frames: its box features and their change
    to the next frame (``per_object`` of them per frame), its mean salient colour and the
    tower's pooled embedding of its crop; the same MLP serves every object (what single-object
    shots teach holds for the second object of a pair), a learned slot embedding says which
    one it is, and a small MLP of the object's colours alone is added, so colour words are
    learned early (in the demo's 2-minute budget colour went from 15 % to 51 % with it). So one
    token carries all of one object's attributes, in caption order (the crops come left / top
    first), and the LM has no object to untangle from a mixed token. The scene
    token gets the rest, per frame: the background's median colour, the camera-shift curves and
    whether the crops split into two objects. (The camera curves in every object's token too, so
    it could subtract the pan, measured worse in one 10-minute run: 62.6 % against 86.7 %.)
    """

    def __init__(self, frames: int, objects: int, per_object: int, pooled_width: int,
                 camera_dim: int, width: int):
        super().__init__()
        self.objects = objects
        self.pooled_norm = nn.LayerNorm(pooled_width)
        self.object_mlp = mlp(frames * (2 * per_object + 3 + pooled_width), 2 * width, width)
        self.scene_mlp = mlp(frames * (3 + camera_dim + (objects > 1)), 2 * width, width)
        self.colour_mlp = mlp(frames * 3, width, width)  # the object's colours alone, added
        self.slot_embed = nn.Parameter(0.02 * torch.randn(objects + 1, width))

    def forward(self, box: torch.Tensor, change: torch.Tensor, split: torch.Tensor | None,
                colours: torch.Tensor, pooled: torch.Tensor,
                camera: torch.Tensor | None) -> torch.Tensor:
        """box and change (B, K, O·F): the objects' box features and their change to the next
        frame; split (B, K, 1) or None (one object); colours (B, K, O + 1, 3) in 0…1; pooled
        (B, O·K, E), crop-major; camera (B, K, Fc) or None → (B, O + 1, W): the objects'
        tokens, then the scene's."""
        k, o = box.shape[1], self.objects
        rgb = (colours - 0.5) / 0.25  # (B, K, O + 1, 3)
        crops = self.pooled_norm(pooled.unflatten(1, (o, k))).transpose(1, 2)  # (B, K, O, E)
        per = torch.cat([box.unflatten(-1, (o, -1)), change.unflatten(-1, (o, -1)), rgb[:, :, :o],
                         crops], dim=-1)  # (B, K, O, 2F + 3 + E)
        objects = self.object_mlp(per.transpose(1, 2).flatten(2))  # (B, O, W)
        objects = objects + self.colour_mlp(rgb[:, :, :o].transpose(1, 2).flatten(2))  # (B, O, W)
        scene = [rgb[:, :, o]] + ([split] if split is not None else [])  # (B, K, 3), (B, K, 1)
        if camera is not None:
            scene.append(4.0 * camera)  # (B, K, Fc)
        scene = self.scene_mlp(torch.cat(scene, dim=-1).flatten(1))[:, None]  # (B, 1, W)
        return torch.cat([objects, scene], dim=1) + self.slot_embed  # (B, O + 1, W)
