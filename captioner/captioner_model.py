"""The video captioner: open_clip vision tower → temporal resampler → projector → causal LM.

    frames (B, K, 3, H, W) uint8
      → vision tower per frame: all patch tokens          (B, K, P, Wv)   towers.FrameEncoder
      → learned queries over all K·P tokens, with time,
        position, contrast, colour and saliency cues       (B, Q, Wr)      resampler
      → projector (MLP)                                    (B, Q, D)       the visual prefix
      → LM on [prefix, bos, caption…, eos] through ``inputs_embeds``; loss on caption tokens only.

``vision.input`` picks what the tower sees: ``rgb`` (normalised pixels, what pretrained CLIP
towers expect) or ``rgb_silhouette`` (6 channels: those pixels plus |frame − its median colour|,
where backgrounds go to zero and objects become colour-independent silhouettes; a tiny tower
trained from scratch learns shapes from silhouettes in a few hundred steps, from RGB alone it
barely starts in that time).

The LM is any ``transformers`` ``AutoModelForCausalLM``: built from a config dict (tiny GPT-2)
or loaded from a local directory. Greedy generation is a small batched loop with the LM's KV
cache; every clip has the same prefix length, so a batch needs no left padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioner.registry import CaptionerConfig
from captioner.resampler import TemporalResampler, pixel_statistics
from captioner.towers import FrameEncoder, build_lm

IGNORE = -100  # label of positions without loss (visual prefix, bos, padding)
SILHOUETTE_GAIN = 4.0  # |frame − median| is mostly small; scale it towards unit range


# ------------------------------------------------------------------------- captioner


class VideoCaptioner(nn.Module):
    """Frames in, caption logits / greedy captions out. See the module docstring for the flow."""

    def __init__(self, config: CaptionerConfig, vocab_size: int, load_weights: bool = True,
                 lm_config: dict | None = None):
        super().__init__()
        self.config, self.vocab_size = config, vocab_size
        self.frame_encoder = FrameEncoder(config.vision, load_weights)
        self.frame_encoder.requires_grad_(config.vision.trainable)
        self.image_size = self.frame_encoder.image_size
        r = config.resampler
        self.resampler = TemporalResampler(self.frame_encoder.width, r.width, r.queries, r.layers,
                                           r.heads, r.max_frames, self.frame_encoder.grid,
                                           r.saliency_init)
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

    def tower_input(self, pixels: torch.Tensor, median: torch.Tensor) -> torch.Tensor:
        """What the tower sees: (N, 3, H, W) in [0, 1], medians (N, 3) → (N, 3 or 6, H, W)."""
        rgb = (pixels - self.pixel_mean) / self.pixel_std  # (N, 3, H, W)
        if self.config.vision.input == "rgb":
            return rgb
        silhouette = (pixels - median[..., None, None]).abs() * SILHOUETTE_GAIN  # (N, 3, H, W)
        return torch.cat([rgb, silhouette], dim=1)  # (N, 6, H, W)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Visual prefix of ``frames`` (B, K, 3, H, W) uint8 → (B, Q, D)."""
        b, k, c, h, w = frames.shape
        assert (c, h, w) == (3, *self.image_size), f"frames {tuple(frames.shape)} vs {self.image_size}"
        pixels = frames.flatten(0, 1).float() / 255.0  # (B·K, 3, H, W)
        saliency, rgb, median = pixel_statistics(pixels, self.frame_encoder.stride)  # (B·K, P), (B·K, P, 3), (B·K, 3)
        tokens = self.frame_encoder(self.tower_input(pixels, median))  # (B·K, P, Wv)
        latents = self.resampler(tokens.unflatten(0, (b, k)), saliency.unflatten(0, (b, k)),
                                 rgb.unflatten(0, (b, k)), median.unflatten(0, (b, k)))  # (B, Q, Wr)
        return self.projector(latents)  # (B, Q, D)

    def forward(self, frames: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits): mean cross-entropy over caption tokens; logits (B, Q + T, V).

        ``input_ids`` (B, T) are ``[bos, caption…, eos, pad…]``; ``attention_mask`` (B, T) marks
        real ids. Labels follow from them: the caption and eos are predicted, nothing else.
        """
        prefix = self.encode_video(frames)  # (B, Q, D)
        text = self.lm.get_input_embeddings()(input_ids)  # (B, T, D)
        embeds = torch.cat([prefix, text.to(prefix.dtype)], dim=1)  # (B, Q + T, D)
        mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], dim=1)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask).logits  # (B, Q + T, V)
        labels = caption_labels(input_ids, attention_mask, prefix.shape[1])  # (B, Q + T)
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
