"""The video captioner: open_clip vision tower → temporal resampler → projector → causal LM.

    frames (B, K, 3, H, W) uint8
      → vision tower per frame: all patch tokens      (B, K, P, Wv)
      → + time and patch-position embeddings, learned queries cross-attend over all K·P tokens
                                                       (B, Q, Wr)
      → projector (MLP)                               (B, Q, D)   the visual prefix
      → LM on [prefix, bos, caption…, eos] through ``inputs_embeds``; loss on caption tokens only.

The LM is any ``transformers`` ``AutoModelForCausalLM``: built from a config dict (tiny GPT-2)
or loaded from a local directory. Greedy generation is a small batched loop with the LM's KV
cache; every clip has the same prefix length, so a batch needs no left padding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from captioner.registry import CaptionerConfig, LMConfig, VisionConfig

IGNORE = -100  # label of positions without loss (visual prefix, bos, padding)


# ----------------------------------------------------------------------------- towers


def build_vision_tower(cfg: VisionConfig, load_weights: bool = True) -> tuple[nn.Module, tuple, tuple]:
    """The open_clip ``VisionTransformer`` of ``cfg`` returning patch tokens; (tower, mean, std).

    ``load_weights`` False skips ``cfg.pretrained`` (a checkpoint will overwrite every weight).
    """
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    if cfg.model == "inline":
        visual = open_clip.model._build_vision_tower(cfg.embed_dim, dict(cfg.open_clip_cfg))
        mean, std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    else:
        _register_project_clip_configs()
        clip = open_clip.create_model(cfg.model, load_weights=False)
        visual = clip.visual
        pre = open_clip.get_model_preprocess_cfg(clip)
        mean, std = pre.get("mean", OPENAI_DATASET_MEAN), pre.get("std", OPENAI_DATASET_STD)
    if not hasattr(visual, "output_tokens") or not hasattr(visual, "grid_size"):
        raise ValueError(f"vision.model {cfg.model!r}: the captioner needs an open_clip ViT "
                         "(patch tokens); timm and ResNet towers are not supported")
    visual.output_tokens = True
    if cfg.pretrained and load_weights:
        _check_local(cfg.pretrained, "vision.pretrained", "--clip-pretrained")
        load_vision_weights(visual, cfg.pretrained)
    return visual, tuple(mean), tuple(std)


def _register_project_clip_configs() -> None:
    """Register the project's named CLIP configs (``vidcorpus-clip-*``) with open_clip."""
    import importlib.util
    if importlib.util.find_spec("captioner.clip_model") is not None:
        from captioner.clip_model import register_configs
        register_configs()


def _check_local(path: str, field: str, option: str) -> None:
    import os
    if not os.path.exists(path):
        raise ValueError(f"{field} {path!r} does not exist; weights load only from local paths "
                         f"(pass {option} PATH or override {field})")


def load_vision_weights(visual: nn.Module, path: str) -> None:
    """Load the ``visual.*`` weights of a local CLIP checkpoint (open_clip or vidcorpus dict)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    visual_state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    if not visual_state:
        raise ValueError(f"{path}: no 'visual.*' weights found; pass an open_clip CLIP checkpoint")
    visual.load_state_dict(visual_state, strict=True)


def build_lm(cfg: LMConfig, vocab_size: int, load_weights: bool = True,
             saved_config: dict | None = None) -> nn.Module:
    """A causal LM from a local directory, or from a config dict with the tokenizer's vocab.

    Without ``load_weights`` a pretrained LM is built empty from ``saved_config`` (its
    ``config.to_dict()`` as stored in a checkpoint) or from the directory's config.json.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.pretrained and not load_weights:
        if saved_config:
            saved = dict(saved_config)
            lm_config = AutoConfig.for_model(saved.pop("model_type"), **saved)
        else:
            lm_config = AutoConfig.from_pretrained(cfg.pretrained, local_files_only=True)
        lm = AutoModelForCausalLM.from_config(lm_config)
        if lm.get_input_embeddings().num_embeddings < vocab_size:
            lm.resize_token_embeddings(vocab_size)
        return lm
    if cfg.pretrained:
        _check_local(cfg.pretrained, "lm.pretrained", "--lm-pretrained")
        lm = AutoModelForCausalLM.from_pretrained(cfg.pretrained, local_files_only=True)
        if lm.get_input_embeddings().num_embeddings < vocab_size:
            lm.resize_token_embeddings(vocab_size)
        return lm
    kwargs = {"bos_token_id": None, "eos_token_id": None, **cfg.config}  # ids live in the tokenizer
    lm_config = AutoConfig.for_model(kwargs.pop("model_type"), vocab_size=vocab_size, **kwargs)
    return AutoModelForCausalLM.from_config(lm_config)


# -------------------------------------------------------------------------- resampler


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


class ResamplerLayer(nn.Module):
    """Queries attend over [media tokens, queries] (Flamingo's Perceiver resampler), then an MLP.

    ``bias`` (B, H, 1, N) is added to the attention logits of the media tokens (per head).
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_media = nn.LayerNorm(width)
        self.norm_q = nn.LayerNorm(width)
        self.to_q = nn.Linear(width, width)
        self.to_kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, L, W / H)

    def forward(self, q: torch.Tensor, media: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # q: (B, Q, W); media: (B, N, W); bias: (B, H, 1, N)
        qn = self.norm_q(q)  # (B, Q, W)
        k, v = self.to_kv(torch.cat([self.norm_media(media), qn], dim=1)).chunk(2, dim=-1)  # (B, N + Q, W)
        mask = F.pad(bias, (0, q.shape[1])).expand(-1, -1, q.shape[1], -1)  # (B, H, Q, N + Q)
        out = F.scaled_dot_product_attention(self._split(self.to_q(qn)), self._split(k),
                                             self._split(v), attn_mask=mask.to(q.dtype))  # (B, H, Q, W / H)
        q = q + self.proj(out.transpose(1, 2).flatten(2))  # (B, Q, W)
        return q + self.mlp(self.norm_mlp(q))  # (B, Q, W)


def patch_saliency(pixels: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """How much each patch differs from its frame's median colour: (N, 3, H, W) → (N, P)."""
    median = pixels.flatten(2).median(dim=2).values[..., None, None]  # (N, 3, 1, 1)
    deviation = (pixels - median).abs().sum(dim=1, keepdim=True)  # (N, 1, H, W)
    return F.avg_pool2d(deviation, patch).flatten(1)  # (N, P)


class TemporalResampler(nn.Module):
    """Learned queries cross-attending over the patch tokens of all frames of a clip.

    Each token gets a time embedding (its frame), a patch-position embedding (both sinusoidal at
    init, learned after) and a frame-contrast embedding (the token minus its frame's mean token). Attention logits get a per-head
    saliency bias ``scale_h · z`` where ``z`` is the patch's z-scored pixel deviation from its
    frame's median colour: from the first step half of the heads look at whatever stands out
    from the background (objects), the other half start uniform (background, camera). The
    scales are learned, so the prior fades where it does not help.
    """

    def __init__(self, in_width: int, width: int, queries: int, layers: int, heads: int,
                 max_frames: int, grid: tuple[int, int], saliency_init: float = 3.0):
        super().__init__()
        self.max_frames = max_frames
        self.input_proj = nn.Linear(in_width, width)
        self.contrast_proj = nn.Linear(in_width, width)
        self.time_embed = nn.Parameter(sincos_embedding(max_frames, width))  # non-zero init
        self.patch_embed = nn.Parameter(sincos_2d(grid, width))  # non-zero: where each patch is
        self.queries = nn.Parameter(0.02 * torch.randn(queries, width))
        salient_heads = torch.arange(heads) < (heads + 1) // 2
        self.saliency_scale = nn.Parameter(saliency_init * salient_heads.float().repeat(layers, 1))
        self.layers = nn.ModuleList(ResamplerLayer(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        b, k, p, _ = tokens.shape  # tokens: (B, K, P, Wv); saliency: (B, K, P)
        assert k <= self.max_frames, f"{k} frames > resampler.max_frames {self.max_frames}"
        contrast = tokens - tokens.mean(dim=2, keepdim=True)  # (B, K, P, Wv)
        x = self.input_proj(tokens) + self.contrast_proj(contrast)  # (B, K, P, W)
        x = x + self.time_embed[:k, None, :] + self.patch_embed[None, :p, :]  # (B, K, P, W)
        x = x.flatten(1, 2)  # (B, K·P, W)
        z = saliency.flatten(1)  # (B, K·P)
        z = ((z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + 1e-6)).clamp(-3, 6)
        q = self.queries.expand(b, -1, -1)  # (B, Q, W)
        for layer, scale in zip(self.layers, self.saliency_scale):
            q = layer(q, x, scale[None, :, None, None] * z[:, None, None, :])  # (B, Q, W)
        return self.norm(q)  # (B, Q, W)


# ------------------------------------------------------------------------- captioner


class VideoCaptioner(nn.Module):
    """Frames in, caption logits / greedy captions out. See the module docstring for the flow."""

    def __init__(self, config: CaptionerConfig, vocab_size: int, load_weights: bool = True,
                 lm_config: dict | None = None):
        super().__init__()
        self.config, self.vocab_size = config, vocab_size
        self.visual, mean, std = build_vision_tower(config.vision, load_weights)
        self.visual.requires_grad_(config.vision.trainable)
        self.image_size = tuple(self.visual.image_size)
        grid = self.visual.grid_size
        vision_width = self.visual.conv1.out_channels
        r = config.resampler
        self.resampler = TemporalResampler(vision_width, r.width, r.queries, r.layers, r.heads,
                                           r.max_frames, tuple(grid), r.saliency_init)
        self.lm = build_lm(config.lm, vocab_size, load_weights, lm_config)
        self.lm.requires_grad_(config.lm.trainable)
        d = self.lm.get_input_embeddings().embedding_dim
        self.projector = nn.Sequential(nn.Linear(r.width, d), nn.GELU(), nn.Linear(d, d))
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 1, 3, 1, 1), persistent=False)

    @property
    def n_frames(self) -> int:
        return self.config.vision.frames

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Visual prefix of ``frames`` (B, K, 3, H, W) uint8 → (B, Q, D)."""
        b, k, c, h, w = frames.shape
        assert (c, h, w) == (3, *self.image_size), f"frames {tuple(frames.shape)} vs {self.image_size}"
        x = (frames.float() / 255.0 - self.pixel_mean) / self.pixel_std  # (B, K, 3, H, W)
        _, tokens = self.visual(x.flatten(0, 1))  # (B·K, P, Wv)
        tokens = tokens.unflatten(0, (b, k))  # (B, K, P, Wv)
        saliency = patch_saliency(x.flatten(0, 1), self.visual.patch_size).unflatten(0, (b, k))  # (B, K, P)
        latents = self.resampler(tokens, saliency)  # (B, Q, Wr)
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
        groups.setdefault((name.startswith("visual."), decay), []).append(p)
    return [{"params": ps, "weight_decay": weight_decay if decay else 0.0,
             "lr": (vision_lr or lr) if is_visual else lr, "visual": is_visual}
            for (is_visual, decay), ps in sorted(groups.items())]
