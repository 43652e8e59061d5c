"""Named captioner configs (``captioner/configs/captioner_<name>.json``) and ``create_captioner``.

A config is validated once, here, into frozen pydantic objects grouped by concern; a bad key
or value raises with the path of the field to change. Overrides are nested dicts merged over
the named config, e.g. ``load_config("tiny", vision={"frames": 6}, train={"max_steps": 50})``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_DIR = Path(__file__).parent / "configs"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VisionConfig(_Frozen):
    """The open_clip vision tower (ViT or CLIP ResNet) applied to each of ``frames`` frames."""

    model: str = "inline"  # an open_clip model name, "local-dir:/path", or "inline" (open_clip_cfg)
    pretrained: Optional[str] = None  # local weights: open_clip checkpoint or vidcorpus CLIP ckpt
    open_clip_cfg: Optional[dict[str, Any]] = None  # open_clip vision_cfg, for model == "inline"
    embed_dim: int = 128  # open_clip's joint embedding size (unused by the captioner's tokens)
    trainable: bool = True
    frames: int = Field(8, ge=1, le=64)  # K frames sampled per clip (segment centres)
    input: Literal["rgb", "rgb_silhouette", "silhouette_motion",
                   "rgb_silhouette_motion"] = "rgb"  # what the tower sees: see captioner_model
    token_layer: int = Field(2, ge=0, le=4)  # ModifiedResNet block whose feature map gives tokens
    object_crops: int = Field(0, ge=0)  # > 0: frames come at this side; the tower sees each frame
    #   downscaled plus a crop around what stands out from its background (see captioner_model)
    max_objects: int = Field(1, ge=1, le=2)  # object crops per frame: 1 around everything
    #   salient, or 2 (split at the widest empty band between two objects; see captioner_model)
    crop_colour: bool = True  # False: the object crops reach the tower without their RGB
    #   channels (silhouette and motion only), so it learns shapes there instead of colours
    pooled_tokens: bool = False  # the whole tower's pooled embedding of each frame's object crop
    #   (or of the frame, without crops) also goes to the LM as a prefix token (see captioner_model)
    word_head: float = Field(0.0, ge=0.0)  # > 0 (needs pooled_tokens): weight of an auxiliary
    #   loss predicting which caption tokens occur from those pooled embeddings (training only)

    @model_validator(mode="after")
    def _colour_free_crops_need_silhouettes(self):
        if not self.crop_colour and self.input not in ("rgb_silhouette", "rgb_silhouette_motion"):
            raise ValueError("vision.crop_colour false needs vision.input 'rgb_silhouette' or "
                             "'rgb_silhouette_motion' (the crops keep those channels)")
        return self

    @model_validator(mode="after")
    def _word_head_needs_pooled(self):
        if self.word_head and not self.pooled_tokens:
            raise ValueError("vision.word_head > 0 needs vision.pooled_tokens: true")
        return self

    @model_validator(mode="after")
    def _inline_needs_cfg(self):
        if self.model == "inline" and not self.open_clip_cfg:
            raise ValueError("vision.model 'inline' needs vision.open_clip_cfg (an open_clip "
                             "vision_cfg such as {image_size, patch_size, width, layers})")
        return self


class ResamplerConfig(_Frozen):
    """Learned queries cross-attending over the patch tokens of all frames."""

    queries: int = Field(32, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    width: int = Field(128, ge=8)
    max_frames: int = Field(64, ge=1)
    saliency_init: float = 3.0  # initial saliency-bias scale of half the heads (0: plain attention)
    camera_shift: int = Field(0, ge=0)  # > 0: per-frame background-shift curves at ±this many px
    crop_tokens: bool = True  # False: the queries attend over the whole frames' tokens only; the
    #   object crops reach the LM through their pooled tokens (needs vision.pooled_tokens)
    track_token: bool = False  # the clip's object-box and camera trajectory → one prefix token
    colour_token: bool = False  # the clip's object and background colours (measured per crop and
    #   frame, all frames) → one prefix token (needs vision.object_crops)
    object_tokens: bool = False  # instead of those two: one prefix token per object crop (its boxes,
    #   colour and pooled crop embedding over all frames; one MLP shared by the objects) and one
    #   for the scene (background colour, camera curves); needs object_crops and pooled_tokens


class LMConfig(_Frozen):
    """The causal LM: a local Hugging Face directory, or an ``AutoConfig`` dict built from scratch."""

    pretrained: Optional[str] = None  # local HF directory (AutoModelForCausalLM.from_pretrained)
    config: Optional[dict[str, Any]] = None  # e.g. {"model_type": "gpt2", "n_layer": 2, ...}
    trainable: bool = True

    @model_validator(mode="after")
    def _one_source(self):
        if (self.pretrained is None) == (self.config is None):
            raise ValueError("set exactly one of lm.pretrained (a local HF dir) or lm.config")
        return self


class TokenizerConfig(_Frozen):
    kind: Literal["bpe", "lm"] = "bpe"  # bpe: trained on the training captions; lm: lm.pretrained's
    vocab_size: int = Field(512, ge=300)
    max_len: int = Field(64, ge=4)  # caption ids incl. bos/eos


class TrainConfig(_Frozen):
    """Optimisation, evaluation and checkpoint cadence (steps are optimizer steps)."""

    batch_size: int = Field(16, ge=1)
    lr: float = 1e-3
    vision_lr: Optional[float] = None  # default: lr
    vision_warmup_steps: int = Field(0, ge=0)  # the tower's lr ramps up over these steps
    weight_decay: float = 0.05
    warmup_steps: int = 50
    max_steps: int = 1000
    max_minutes: Optional[float] = None  # stop early (and checkpoint) after this wall time
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_items: int = 256  # val clips captioned per eval (all for the final eval)
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    seed: int = 0
    reverse_swaps: Optional[dict[str, str]] = None  # time-reversal augmentation: word swaps
    hflip_swaps: Optional[dict[str, str]] = None  # horizontal-flip augmentation: word swaps
    vflip_swaps: Optional[dict[str, str]] = None  # vertical-flip augmentation: word swaps
    flip_two_objects: bool = False  # also mirror clips whose frames cut into two objects (by
    #   default they are not: a mirror swaps which object comes first, and captions of two objects
    #   tend to name them in reading order, which the model's left / top-first crops follow)
    max_shift: int = Field(0, ge=0)  # translation augmentation, pixels at the model's input size
    word_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # caption tokens the LM reads as pad
    num_threads: Optional[int] = None  # torch CPU threads


class GenerateConfig(_Frozen):
    max_new_tokens: int = Field(48, ge=1)


class CaptionerConfig(_Frozen):
    """Everything needed to build, train and run one captioner; stored resolved in checkpoints."""

    name: str
    vision: VisionConfig
    resampler: ResamplerConfig = ResamplerConfig()
    lm: LMConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()

    @model_validator(mode="after")
    def _lm_tokenizer(self):
        if self.tokenizer.kind == "lm" and self.lm.pretrained is None:
            raise ValueError("tokenizer.kind 'lm' needs lm.pretrained (the LM's directory)")
        if self.tokenizer.kind == "bpe" and self.lm.pretrained is not None:
            raise ValueError("a pretrained LM needs its own tokenizer: set tokenizer.kind 'lm'")
        return self


def list_configs() -> list[str]:
    """Names of the bundled configs (``captioner_<name>.json``)."""
    return sorted(p.stem.removeprefix("captioner_") for p in CONFIG_DIR.glob("captioner_*.json"))


def load_config(name_or_path: str | Path | dict, **overrides: Any) -> CaptionerConfig:
    """A validated config from a bundled name, a JSON path or a dict, with nested overrides."""
    if isinstance(name_or_path, dict):
        raw = copy.deepcopy(name_or_path)
    else:
        path = Path(name_or_path)
        if not path.suffix:
            path = CONFIG_DIR / f"captioner_{name_or_path}.json"
        if not path.exists():
            raise ValueError(f"unknown captioner config {name_or_path!r}; bundled: {list_configs()}")
        raw = json.loads(path.read_text())
    return CaptionerConfig.model_validate(deep_merge(raw, overrides))


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in (nested dicts merged, other values replaced)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def create_captioner(name_or_config: str | Path | dict | CaptionerConfig, vocab_size: int,
                     **overrides: Any):
    """Build a ``VideoCaptioner`` (random or locally pretrained towers) for a tokenizer's vocab."""
    from captioner.captioner_model import VideoCaptioner

    if isinstance(name_or_config, CaptionerConfig):
        name_or_config = name_or_config.model_dump()
    return VideoCaptioner(load_config(name_or_config, **overrides), vocab_size)
