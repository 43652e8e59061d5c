"""ClipScorer: any open_clip model from local weights, batched image and text embeddings.

Runs on the GPU with bf16 autocast when one is present, else fp32 on the CPU. Frames come in
as uint8 (N, S, S, 3) at the model's input size (the caller resizes while decoding, so pixels
are converted once); embeddings come out L2-normalised as float32 numpy arrays.

    scorer = ClipScorer(ClipScorerConfig("ViT-B-32", pretrained="/weights/vit-b-32.pt")).load()
    video = scorer.video_embeddings(frames)  # (B, D) from (B, K, S, S, 3)
    text = scorer.encode_texts(["a red ball"])  # (1, D)
    cosine = video @ text.T
"""
from __future__ import annotations

import copy
import hashlib
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import numpy as np

from captioner.clip_model import TINY, check_local_weights, check_views, create_clip, encode_views, image_size

Precision = Literal["fp32", "amp_bf16"]


@dataclass(frozen=True)
class ClipScorerConfig:
    """Which model, from which local weights, on which device."""

    model: str = TINY
    pretrained: str | None = None  # local checkpoint; None = random init (tests, benchmarks)
    device: str | None = None  # None: "cuda" when available, else "cpu"
    precision: Precision | None = None  # None: amp_bf16 on CUDA, fp32 on CPU
    batch_size: int = 256  # frames per forward pass
    threads: int | None = None  # torch CPU threads in this process (None: leave as is)
    views: tuple[str, ...] | None = None  # None: the checkpoint's recipe, else ("frame",)

    def __post_init__(self) -> None:
        check_local_weights(self.pretrained)
        if self.views is not None:
            object.__setattr__(self, "views", check_views(self.views))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def model_tag(model: str, pretrained: str | None) -> str:
    """What ``embeddings.model`` records: the name, plus a digest of the weights when loaded."""
    if pretrained is None:
        return f"{model}@random-init"
    digest = hashlib.sha256()
    with open(pretrained, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return f"{model}@{digest.hexdigest()[:10]}"


class ClipScorer:
    """Batched open_clip embeddings; construct cheaply, then ``load()`` on the worker."""

    def __init__(self, config: ClipScorerConfig = ClipScorerConfig()):
        self.config = config
        self.model = None
        self._text_cache: dict[str, np.ndarray] = {}

    def load(self) -> "ClipScorer":
        import torch
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.device = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.precision = self.config.precision or ("amp_bf16" if self.device.startswith("cuda") else "fp32")
        self.model, self.tokenizer = create_clip(self.config.model, self.config.pretrained, self.device)
        self.model.eval()
        recipe = checkpoint_recipe(self.config.pretrained)
        self.views = self.config.views or recipe.views
        self.frame_size = recipe.frame_size or image_size(self.model)  # side of the frames to pass in
        self.rivals = recipe.rivals  # word → rivals, for contrast scores (None: not a train-clip model)
        self.embed_dim = int(self.encode_texts([""]).shape[1])
        self.folds, self.fold_of = [self], {}
        if recipe.cross_fit:
            self.fold_of = recipe.cross_fit["fold_of"]
            for state in recipe.cross_fit["state_dicts"]:
                other = copy.copy(self)
                other.model, other._text_cache = copy.deepcopy(self.model), {}
                other.model.load_state_dict(state)
                other.folds, other.fold_of = [other], {}  # a plain one-model scorer
                self.folds.append(other)
        return self

    def judges(self, clip_id: str | None) -> list["ClipScorer"]:
        """The models that score ``clip_id``'s captions: a cross-fitted checkpoint's one model
        that did not train on the clip; all its models (to average) for a clip none trained
        on; this model alone otherwise."""
        fold = self.fold_of.get(clip_id) if clip_id is not None else None
        return self.folds if fold is None else [self.folds[fold]]

    @property
    def image_size(self) -> int:
        return image_size(self._loaded())

    @property
    def logit_scale(self) -> float:
        """The model's learned softmax temperature (exp of ``logit_scale``)."""
        return float(self._loaded().logit_scale.detach().exp())

    def _loaded(self):
        if self.model is None:
            raise RuntimeError("ClipScorer.load() must be called before use")
        return self.model

    def _autocast(self):
        import torch
        if self.precision == "amp_bf16":
            return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16)
        return nullcontext()

    def encode_frames(self, frames: np.ndarray, objects: bool = False):
        """Normalised embeddings (N, D) of uint8 frames (N, S, S, 3): each the mean of its
        views' embeddings (``views``, see ``captioner.clip_model.view_images``). ``objects``:
        also each object's normalised embedding (N, O, D) (``clip_model.object_embeddings``;
        O = 1 for whole frames), from the same forward pass."""
        import torch
        model = self._loaded()
        size = self.frame_size
        assert frames.ndim == 4 and frames.shape[1:] == (size, size, 3), \
            f"frames must be (N, {size}, {size}, 3), got {frames.shape}"
        out, objs = [], []
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(frames), self.config.batch_size):
                x = torch.as_tensor(frames[i:i + self.config.batch_size]).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (b, 3, S, S)
                made = encode_views(model, x, self.views, objects=objects)  # (b, D) [, (b, O, D)]
                out.append((made[0] if objects else made).cpu())
                if objects:
                    objs.append(made[1].cpu())
        if not out:
            empty = np.zeros((0, self.embed_dim), np.float32)
            return (empty, empty[:, None]) if objects else empty
        frames_out = normalize(torch.cat(out).numpy())
        return (frames_out, normalize(torch.cat(objs).numpy())) if objects else frames_out

    def video_embeddings(self, frames: np.ndarray, objects: bool = False):
        """(B, D): the normalised mean of each clip's frame embeddings; ``frames`` (B, K, S, S, 3).
        ``objects``: also (B, O, D), each object's normalised mean over the frames (the crops
        keep their left / top-first order from frame to frame)."""
        b, k = frames.shape[:2]
        per_frame = self.encode_frames(frames.reshape(b * k, *frames.shape[2:]), objects)
        if not objects:
            return normalize(per_frame.reshape(b, k, -1).mean(axis=1))
        per_frame, per_object = per_frame  # (B*K, D), (B*K, O, D)
        return (normalize(per_frame.reshape(b, k, -1).mean(axis=1)),
                normalize(per_object.reshape(b, k, *per_object.shape[1:]).mean(axis=1)))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Normalised embeddings (T, D); repeated texts are encoded once (cached)."""
        import torch
        model = self._loaded()
        todo = sorted({t for t in texts if t not in self._text_cache})
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(todo), self.config.batch_size):
                chunk = todo[i:i + self.config.batch_size]
                tokens = self.tokenizer(chunk).to(self.device)  # (t, context_length)
                emb = model.encode_text(tokens, normalize=True).float().cpu().numpy()  # (t, D)
                self._text_cache.update(zip(chunk, emb))
        if len(self._text_cache) > 200_000:  # bounded: keep only what this call needs
            self._text_cache = {t: self._text_cache[t] for t in texts}
        return np.stack([self._text_cache[t] for t in texts]) if texts else np.zeros((0, self.embed_dim), np.float32)


@dataclass(frozen=True)
class ClipRecipe:
    """What a ``train-clip`` checkpoint records besides its weights: what the tower saw of each
    frame (``views``), how large the frames were decoded (``frame_size``; None: the tower's
    input size), the swap vocabulary learnt from its captions (``rivals``, for
    ``captioner.caption_contrast``; None: unknown) and, when it was cross-fitted, the other
    folds' models and the fold of each training clip (``cross_fit``; ``ClipScorer.judges``)."""

    views: tuple[str, ...] = ("frame",)
    frame_size: int | None = None
    rivals: dict | None = None
    cross_fit: dict | None = None  # {folds, state_dicts of folds 1.., fold_of: clip_id → fold}


def checkpoint_recipe(pretrained: str | None) -> ClipRecipe:
    """The recipe of a ``train-clip`` checkpoint; the default — whole frames at the tower's
    input size, no rivals — for random init and for any other weights (open_clip's own
    checkpoints know only whole frames)."""
    import torch
    if pretrained is None or os.path.isdir(pretrained):
        return ClipRecipe()
    try:
        checkpoint = torch.load(pretrained, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # noqa: BLE001 - not a plain torch file (e.g. safetensors): open_clip read it
        return ClipRecipe()
    if not isinstance(checkpoint, dict) or "train_config" not in checkpoint:
        return ClipRecipe()
    source = checkpoint.get("view_source")
    return ClipRecipe(check_views(checkpoint.get("views") or ("frame",)), int(source) if source else None,
                      checkpoint.get("rivals"), checkpoint.get("cross_fit"))


def normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float32)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
