"""The captioner's two pretrainable towers: an open_clip vision tower and a causal LM.

:class:`FrameEncoder` turns an open_clip vision tower into a per-frame patch-token extractor:
a ``VisionTransformer`` gives all its patch tokens (CLS dropped), a ``ModifiedResNet`` (CLIP's
ResNet) the feature map of block ``token_layer`` (0 stem, 1–4 layers) as a grid of tokens.
Blocks after ``token_layer`` and the pooling head are dropped, unless ``vision.pooled_tokens``
asks for the tower's pooled embedding too (the whole tower runs then). Weights load from local
paths only.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from captioner.registry import LMConfig, VisionConfig


def _check_local(path: str, field: str, option: str) -> None:
    if not os.path.exists(path):
        raise ValueError(f"{field} {path!r} does not exist; weights load only from local paths "
                         f"(pass {option} PATH or override {field})")


def _register_project_clip_configs() -> None:
    """Register the project's named CLIP configs (``vidcorpus-clip-*``) with open_clip."""
    import importlib.util
    if importlib.util.find_spec("captioner.clip_model") is not None:
        from captioner.clip_model import register_configs
        register_configs()


def build_vision_tower(cfg: VisionConfig, load_weights: bool = True) -> tuple[nn.Module, tuple, tuple]:
    """(open_clip vision tower, pixel mean, pixel std) for ``cfg``.

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
    if cfg.pretrained and load_weights:
        _check_local(cfg.pretrained, "vision.pretrained", "--clip-pretrained")
        load_vision_weights(visual, cfg.pretrained)
    return visual, tuple(mean), tuple(std)


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


INPUT_CHANNELS = {"rgb": 3, "rgb_silhouette": 6, "silhouette_motion": 2,
                  "rgb_silhouette_motion": 5}


def widen_stem(conv: nn.Conv2d, in_channels: int, zero_new: bool, keep_rgb: bool = True) -> nn.Conv2d:
    """``conv`` taking ``in_channels`` inputs: its RGB filters kept (``keep_rgb``), the new
    inputs' filters freshly initialised (or zero, so a pretrained tower starts out unchanged)."""
    wide = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     bias=conv.bias is not None)
    if not keep_rgb:
        return wide
    with torch.no_grad():
        wide.weight[:, : conv.in_channels] = conv.weight
        if zero_new:
            wide.weight[:, conv.in_channels:] = 0.0
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    return wide


class FrameEncoder(nn.Module):
    """Frames (N, C_in, H, W) → patch tokens (N, P, C) from an open_clip ViT or ModifiedResNet.

    ``vision.input`` ``rgb_silhouette`` / ``rgb_silhouette_motion`` widen the tower's first
    convolution to 6 / 5 inputs (RGB filters kept); ``silhouette_motion`` gives it a fresh
    2-input convolution (no RGB to keep).
    """

    def __init__(self, cfg: VisionConfig, load_weights: bool = True):
        super().__init__()
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        self.tower, self.mean, self.std = build_vision_tower(cfg, load_weights)
        size = self.tower.image_size
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        if isinstance(self.tower, VisionTransformer):
            self.tower.output_tokens = True
            self.kind = "vit"
        elif isinstance(self.tower, ModifiedResNet):
            self.kind, self.token_layer = "resnet", cfg.token_layer
            if not cfg.pooled_tokens:
                for i in range(cfg.token_layer + 1, 5):  # blocks after the token layer never run
                    setattr(self.tower, f"layer{i}", nn.Identity())
                self.tower.attnpool = nn.Identity()
        else:
            raise ValueError(f"vision.model {cfg.model!r}: the captioner needs an open_clip "
                             "VisionTransformer or ModifiedResNet tower (timm towers give no tokens)")
        self.in_channels = INPUT_CHANNELS[cfg.input]
        if cfg.input in ("rgb_silhouette", "rgb_silhouette_motion"):
            self.tower.conv1 = widen_stem(self.tower.conv1, self.in_channels, zero_new=bool(cfg.pretrained))
        elif cfg.input == "silhouette_motion":
            self.tower.conv1 = widen_stem(self.tower.conv1, self.in_channels, zero_new=False,
                                          keep_rgb=False)
        self.pooled = cfg.pooled_tokens
        with torch.no_grad():
            self.tower.eval()
            fmap, pooled = self._feature_map(torch.zeros(1, self.in_channels, *self.image_size), 0)
            self.tower.train()
        self.grid, self.width = tuple(fmap.shape[-2:]), fmap.shape[1]
        self.pooled_width = pooled.shape[-1] if pooled is not None else 0
        self.stride = self.image_size[0] // self.grid[0]

    def _feature_map(self, x: torch.Tensor,
                     pooled_from: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, C, gh, gw) tokens laid out on their grid, and with ``vision.pooled_tokens`` the
        pooled embedding (N − pooled_from, E) of ``x[pooled_from:]`` (None: no pooled embedding;
        a ResNet then stops at its token layer, and its later blocks see only those inputs)."""
        if self.kind == "vit":
            emb, tokens = self.tower(x)  # (N, E), (N, gh·gw, C)
            gh, gw = self.tower.grid_size
            fmap = tokens.transpose(1, 2).unflatten(2, (gh, gw))  # (N, C, gh, gw)
            return fmap, emb[pooled_from:] if self.pooled and pooled_from is not None else None
        if not self.pooled or pooled_from is None:
            out = self.tower.forward_intermediates(x, indices=[self.token_layer], stop_early=True,
                                                   intermediates_only=True)
            return out["image_intermediates"][0], None  # (N, C, gh, gw)
        x = fmap = self.tower.stem(x)  # (N, C0, H/4, W/4)
        if self.token_layer == 0:
            x = x[pooled_from:]
        for i in range(1, 5):
            x = getattr(self.tower, f"layer{i}")(x)
            if i == self.token_layer:  # the later blocks run on the pooled inputs only
                fmap, x = x, x[pooled_from:]
        return fmap, self.tower.attnpool(x)  # (N, C, gh, gw), (N − pooled_from, E)

    def forward(self, x: torch.Tensor,
                pooled_from: int | None = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Patch tokens (N, P, C) of all of ``x`` and, with ``vision.pooled_tokens``, the pooled
        embedding (N − pooled_from, E) of ``x[pooled_from:]`` (None when ``pooled_from`` is None).

        Callers pass all views of a batch in one call: batch-norm statistics are then those of
        the same mix of views in training and in evaluation.
        """
        fmap, emb = self._feature_map(x, pooled_from)
        return fmap.flatten(2).transpose(1, 2), emb


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
    elif cfg.pretrained:
        _check_local(cfg.pretrained, "lm.pretrained", "--lm-pretrained")
        lm = AutoModelForCausalLM.from_pretrained(cfg.pretrained, local_files_only=True)
    else:
        kwargs = {"bos_token_id": None, "eos_token_id": None, **cfg.config}  # ids: the tokenizer's
        config = AutoConfig.for_model(kwargs.pop("model_type"), vocab_size=vocab_size, **kwargs)
        return AutoModelForCausalLM.from_config(config)
    if lm.get_input_embeddings().num_embeddings < vocab_size:
        lm.resize_token_embeddings(vocab_size)
    return lm
