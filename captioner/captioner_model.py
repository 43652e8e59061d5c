"""The video captioner: open_clip vision tower → temporal resampler → projector → causal LM.

    frames (B, K, 3, H, W) uint8
      → vision tower per frame: all patch tokens          (B, K, P, Wv)   towers.FrameEncoder
      → learned queries over all K·P tokens, with time,
        position, contrast, colour and saliency cues       (B, Q, Wr)      resampler
      → projector (MLP)                                    (B, Q, D)       the visual prefix
      → LM on [prefix, bos, caption…, eos] through ``inputs_embeds``; loss on caption tokens only.

``vision.input`` picks what the tower sees: ``rgb`` (normalised pixels, what pretrained CLIP
towers expect), ``rgb_silhouette`` (6 channels: those pixels plus |frame − its median colour|),
``silhouette_motion`` (2 colour- and texture-free channels: where the frame differs from its
median colour by more than a faint texture does, and that mask's change to the next frame), or
``rgb_silhouette_motion`` (5: the normalised pixels and those two).
Colour also reaches the resampler through its own pixel-statistics path. (Measured on the
synthetic world: a tiny tower that sees colour memorises clips by it instead of learning
shapes; without colour it learns shapes from a direct label, but inside the captioner colour
and background words were then learned far more slowly than with RGB in the tower.)

``vision.object_crops`` S > 0 makes the model take frames of S × S pixels (S above the tower's
input side) and show the tower two views of each: the whole frame scaled down to the tower's
input, and a square crop around the pixels that stand out from the frame's median colour (the
objects, with a margin), scaled to the same input: object-centric views, so a small object's
shape and colour fill the tower's input instead of a few pixels. The resampler sees the 2·K
views (a learned view embedding tells them apart) plus, per frame, the crop box (centre, side,
share of salient pixels) and its change to the next frame: where the objects are, how big they
are and how they move.
(Measured on the synthetic world: a 2-layer ViT probe learns shape to 72 % from 32-pixel crops
in 600 steps, 29 % from whole 64-pixel frames.)

``resampler.camera_shift`` S > 0 adds, per frame, the correlation of the background's row and
column profiles (medians, so objects barely count) with the next frame's at shifts −S…S: how
the camera moved, which object motion is relative to. It is a fixed, non-learned measurement,
as optical flow is for two-stream video models.

The LM is any ``transformers`` ``AutoModelForCausalLM``: built from a config dict (tiny GPT-2)
or loaded from a local directory. Greedy generation is a small batched loop with the LM's KV
cache; every clip has the same prefix length, so a batch needs no left padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioner.registry import CaptionerConfig
from captioner.resampler import TemporalResampler, frame_median, pixel_statistics
from captioner.towers import FrameEncoder, build_lm

IGNORE = -100  # label of positions without loss (visual prefix, bos, padding)
SILHOUETTE_GAIN = 4.0  # |frame − median| is mostly small; scale it towards unit range
SILHOUETTE_FLOOR, SILHOUETTE_RISE = 0.2, 0.2  # Σ|frame − median| over RGB: texture < 0.15 < objects


# ------------------------------------------------------------------------- captioner


class VideoCaptioner(nn.Module):
    """Frames in, caption logits / greedy captions out. See the module docstring for the flow."""

    def __init__(self, config: CaptionerConfig, vocab_size: int, load_weights: bool = True,
                 lm_config: dict | None = None):
        super().__init__()
        self.config, self.vocab_size = config, vocab_size
        self.frame_encoder = FrameEncoder(config.vision, load_weights)
        self.frame_encoder.requires_grad_(config.vision.trainable)
        self.tower_size = self.frame_encoder.image_size
        crop = config.vision.object_crops
        self.image_size = (crop, crop) if crop else self.tower_size  # the frames the model takes
        r = config.resampler
        self.resampler = TemporalResampler(self.frame_encoder.width, r.width, r.queries, r.layers,
                                           r.heads, r.max_frames, self.frame_encoder.grid,
                                           r.saliency_init, camera_curve_width(r.camera_shift),
                                           views=2 if crop else 1, box_dim=BOX_FEATURES if crop else 0)
        self.lm = build_lm(config.lm, vocab_size, load_weights, lm_config)
        self.lm.requires_grad_(config.lm.trainable)
        d = self.lm.get_input_embeddings().embedding_dim
        self.projector = nn.Sequential(nn.Linear(r.width, d), nn.GELU(), nn.Linear(d, d))
        mean, std = self.frame_encoder.mean, self.frame_encoder.std
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def n_frames(self) -> int:
        return self.config.vision.frames

    def tower_input(self, pixels: torch.Tensor, median: torch.Tensor, k: int) -> torch.Tensor:
        """What the tower sees: (N, 3, H, W) in [0, 1] for N = B·K frames, medians (N, 3)
        → (N, C, H, W), C = 3, 6, 2 or 5 (``vision.input``; see the module docstring)."""
        kind = self.config.vision.input
        deviation = pixels - median[..., None, None]  # (N, 3, H, W)
        if kind == "silhouette_motion":
            return motion_channels(deviation, k)  # (N, 2, H, W)
        rgb = (pixels - self.pixel_mean) / self.pixel_std  # (N, 3, H, W)
        if kind == "rgb":
            return rgb
        if kind == "rgb_silhouette_motion":
            return torch.cat([rgb, motion_channels(deviation, k)], dim=1)  # (N, 5, H, W)
        return torch.cat([rgb, deviation.abs() * SILHOUETTE_GAIN], dim=1)  # (N, 6, H, W)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Visual prefix of ``frames`` (B, K, 3, H, W) uint8 → (B, Q, D)."""
        b, k, c, h, w = frames.shape
        assert (c, h, w) == (3, *self.image_size), f"frames {tuple(frames.shape)} vs {self.image_size}"
        pixels = frames.flatten(0, 1).float() / 255.0  # (B·K, 3, H, W)
        box = None
        if self.config.vision.object_crops:
            crops, box = object_crops(pixels, self.tower_size)  # (B·K, 3, h, w), (B·K, 4)
            pixels = F.interpolate(pixels, size=self.tower_size, mode="area")  # (B·K, 3, h, w)
            box = box.unflatten(0, (b, k))  # (B, K, 4)
            box = torch.cat([box, 4.0 * _next_frame_change(box)], dim=-1)  # (B, K, 8): and its motion
        # saliency (B·K, P), patch colour (B·K, P, 6), median (B·K, 3)
        saliency, rgb, median = pixel_statistics(pixels, self.frame_encoder.stride)
        camera = None
        if self.config.resampler.camera_shift:
            deviation = pixels - median[..., None, None]  # (B·K, 3, h, w)
            camera = camera_shift_curves(deviation, k, self.config.resampler.camera_shift)  # (B, K, F)
        views = [(pixels, saliency, rgb, median)]
        if box is not None:
            views.append((crops, *pixel_statistics(crops, self.frame_encoder.stride)))
        tokens = torch.cat([self.frame_encoder(self.tower_input(px, med, k)).unflatten(0, (b, k))
                            for px, _, _, med in views], dim=1)  # (B, V·K, P, Wv)

        def stack(i: int) -> torch.Tensor:  # the views' statistic i, (B, V·K, …)
            return torch.cat([v[i].unflatten(0, (b, k)) for v in views], dim=1)
        latents = self.resampler(tokens, stack(1), stack(2), stack(3), camera, box)  # (B, Q, Wr)
        return self.projector(latents)  # (B, Q, D)

    def forward(self, frames: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                target_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits): mean cross-entropy over caption tokens; logits (B, Q + T, V).

        ``input_ids`` (B, T) are ``[bos, caption…, eos, pad…]``; ``attention_mask`` (B, T) marks
        real ids. Labels follow from them: the caption and eos are predicted, nothing else.
        ``target_ids`` (B, T), when given, are the labels' ids and ``input_ids`` what the LM reads
        (word dropout: some caption words replaced, so captions lean on the video).
        """
        prefix = self.encode_video(frames)  # (B, Q, D)
        text = self.lm.get_input_embeddings()(input_ids)  # (B, T, D)
        embeds = torch.cat([prefix, text.to(prefix.dtype)], dim=1)  # (B, Q + T, D)
        mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], dim=1)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask).logits  # (B, Q + T, V)
        targets = input_ids if target_ids is None else target_ids
        labels = caption_labels(targets, attention_mask, prefix.shape[1])  # (B, Q + T)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                               ignore_index=IGNORE)
        return loss, logits

    @torch.no_grad()
    def generate(self, frames: torch.Tensor, bos_id: int, eos_id: int,
                 max_new_tokens: int | None = None) -> torch.Tensor:
        """Greedy captions (B, T_gen) ending in eos (or cut at ``max_new_tokens``)."""
        max_new_tokens = max_new_tokens or self.config.generate.max_new_tokens
        prefix = self.encode_video(frames)  # (B, Q, D)
        bos = torch.full((prefix.shape[0], 1), bos_id, dtype=torch.long, device=prefix.device)
        embeds = torch.cat([prefix, self.lm.get_input_embeddings()(bos).to(prefix.dtype)], 1)
        out = self.lm(inputs_embeds=embeds, use_cache=True)  # logits: (B, Q + 1, V)
        done = torch.zeros(prefix.shape[0], dtype=torch.bool, device=prefix.device)
        tokens = []
        for _ in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            tokens.append(nxt)
            done |= nxt == eos_id
            if bool(done.all()):
                break
            out = self.lm(input_ids=nxt[:, None], past_key_values=out.past_key_values,
                          use_cache=True)  # logits: (B, 1, V)
        return torch.stack(tokens, dim=1)  # (B, T_gen)


BOX_FEATURES = 8  # per frame: crop centre (x, y), side, salient share; and their change to the next
CROP_MARGIN = 0.35  # the crop adds this share of the salient box's side on each side
CROP_MIN_SIDE = 0.2  # … and is at least this share of the frame's side


def object_crops(pixels: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A square crop of each frame around what stands out from its background.

    ``pixels`` (N, 3, H, W) in [0, 1] → crops (N, 3, *size) and box features (N, 4): the crop's
    centre (−1…1, as ``affine_grid`` takes it), its side (frame units 0…2, minus 1) and the share
    of salient pixels (× 8, minus 1). Salient: Σ|pixel − the frame's median colour| over RGB above
    SILHOUETTE_FLOOR + SILHOUETTE_RISE / 2 (objects, not the faint background texture); the box
    spans the 2nd to 98th percentile of their rows and columns, so a stray pixel does not
    stretch it. A frame with no salient pixel gives the whole frame.
    """
    n, _, h, w = pixels.shape
    median = frame_median(pixels)  # (N, 3)
    deviation = (pixels - median[..., None, None]).abs().sum(1)  # (N, H, W)
    mask = deviation > SILHOUETTE_FLOOR + SILHOUETTE_RISE / 2  # (N, H, W)
    share = mask.float().mean(dim=(1, 2))  # (N,)
    y0, y1 = _mass_range(mask.float().sum(2))  # (N,) in pixels, rows
    x0, x1 = _mass_range(mask.float().sum(1))  # (N,) columns
    cx, cy = (x0 + x1 + 1) / w - 1, (y0 + y1 + 1) / h - 1  # (N,) centre in −1…1
    side = torch.maximum((x1 - x0 + 1) / w, (y1 - y0 + 1) / h) * 2 * (1 + 2 * CROP_MARGIN)  # (N,)
    side = side.clamp(min=2 * CROP_MIN_SIDE, max=2.0)
    empty = share == 0
    cx, cy, side = cx.masked_fill(empty, 0.0), cy.masked_fill(empty, 0.0), side.masked_fill(empty, 2.0)
    theta = torch.zeros(n, 2, 3, dtype=pixels.dtype, device=pixels.device)
    theta[:, 0, 0], theta[:, 1, 1] = side / 2, side / 2
    theta[:, 0, 2], theta[:, 1, 2] = cx, cy
    grid = F.affine_grid(theta, [n, 3, *size], align_corners=False)  # (N, h, w, 2)
    crops = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    box = torch.stack([cx, cy, side - 1, 8 * share - 1], dim=1)  # (N, 4), roughly unit range
    return crops, box


def _mass_range(counts: torch.Tensor, lo: float = 0.02,
                hi: float = 0.98) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index (N,) between which the mass of ``counts`` (N, L) lies, trimming
    ``lo`` and ``1 − hi`` of it at the ends (meaningless for all zeros: callers mask those)."""
    cum = counts.cumsum(1)  # (N, L)
    total = cum[:, -1:].clamp(min=1e-6)  # (N, 1)
    first = (cum < lo * total).sum(1).float()  # (N,)
    last = (cum < hi * total).sum(1).float()  # (N,)
    return first, last.clamp(max=counts.shape[1] - 1)


def motion_channels(deviation: torch.Tensor, k: int) -> torch.Tensor:
    """Colour- and texture-free tower input from ``deviation`` (B·K, 3, H, W), frames minus medians.

    Channels: silhouette (Σ|deviation| over RGB ramped from SILHOUETTE_FLOOR over
    SILHOUETTE_RISE to 1: objects, not the faint background texture) and its change to the next
    frame of the same clip (the last frame repeats the change before it). → (B·K, 2, H, W).
    """
    silhouette = deviation.abs().sum(1, keepdim=True)  # (N, 1, H, W)
    silhouette = ((silhouette - SILHOUETTE_FLOOR) / SILHOUETTE_RISE).clamp(0.0, 1.0)
    change = _next_frame_change(silhouette.unflatten(0, (-1, k))).flatten(0, 1)  # (N, 1, H, W)
    return torch.cat([2.0 * silhouette - 0.5, 2.0 * change], dim=1)  # (N, 2, H, W)


def _next_frame_change(x: torch.Tensor) -> torch.Tensor:
    """x[:, t + 1] − x[:, t] along dim 1 (B, K, …), the last step repeated; zeros for K = 1."""
    if x.shape[1] == 1:
        return torch.zeros_like(x)
    change = x[:, 1:] - x[:, :-1]  # (B, K - 1, …)
    return torch.cat([change, change[:, -1:]], dim=1)  # (B, K, …)


def camera_curve_width(max_shift: int) -> int:
    """Features per frame of :func:`camera_shift_curves` (0: no camera curves)."""
    return 2 * (2 * max_shift + 1) if max_shift else 0


def camera_shift_curves(deviation: torch.Tensor, k: int, max_shift: int) -> torch.Tensor:
    """How the background moves from each frame to the next: (B·K, 3, H, W) → (B, K, 2·(2S+1)).

    The luminance's column profile (median over rows) and row profile (median over columns)
    are normalised and correlated with the next frame's at shifts −S…S (S = ``max_shift``).
    """
    lum = deviation.mean(1)  # (N, H, W)
    curves = []
    for profile in (lum.median(dim=1).values, lum.median(dim=2).values):  # (N, W), (N, H)
        profile = profile - profile.mean(1, keepdim=True)
        profile = profile / (profile.norm(dim=1, keepdim=True) + 1e-4)  # (N, L)
        profile = profile.unflatten(0, (-1, k))  # (B, K, L)
        nxt = torch.cat([profile[:, 1:], profile[:, -1:]], dim=1) if k > 1 else profile
        padded = F.pad(nxt, (max_shift, max_shift))  # (B, K, L + 2S)
        windows = padded.unfold(2, profile.shape[2], 1)  # (B, K, 2S + 1, L)
        curves.append((windows * profile[:, :, None, :]).sum(-1))  # (B, K, 2S + 1)
    out = torch.cat(curves, dim=-1)  # (B, K, 2·(2S+1))
    if k > 1:
        out = torch.cat([out[:, :-1], out[:, -2:-1]], dim=1)  # the last frame: the change before it
    return out


def caption_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   prefix_len: int) -> torch.Tensor:
    """Labels (B, Q + T): caption ids and eos; IGNORE on the prefix, bos and padding."""
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE)  # (B, T)
    labels[:, 0] = IGNORE  # bos is given, not predicted
    prefix = labels.new_full((labels.shape[0], prefix_len), IGNORE)  # (B, Q)
    return torch.cat([prefix, labels], dim=1)  # (B, Q + T)


def parameter_groups(model: VideoCaptioner, lr: float, vision_lr: float | None,
                     weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on biases, norms and embeddings; the vision tower's own lr.

    Each group is tagged ``visual`` so the trainer can give the tower its own warmup.
    """
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and not any(k in name for k in ("embed", "queries", "saliency"))
        groups.setdefault((name.startswith("frame_encoder."), decay), []).append(p)
    return [{"params": ps, "weight_decay": weight_decay if decay else 0.0,
             "lr": (vision_lr or lr) if is_visual else lr, "visual": is_visual}
            for (is_visual, decay), ps in sorted(groups.items())]
