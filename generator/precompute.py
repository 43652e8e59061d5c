"""Precompute autoencoder latents and caption features into a copy of a shard dataset.

    precompute_dataset("ROOT/shards/web", "ROOT/shards/web-latents", maker)
    name = precompute_for_training(train_config)      # same, built from a TrainConfig
    train_dit(replace(train_config, dataset=name))

Every sample is copied with two new members: `latent.npy` (C, t, h, w) float16 raw latents
(before the autoencoder's scale/shift, so a refitted normalisation still applies) and
`text.npy` (L, D_text) float16 features of the caption's real tokens; its `json` gains
`latent_tokens` (patch tokens of the latent, for packing plans without opening a tar).
The trainer then skips decoding and encoding (`DataConfig.use_precomputed`, on by default).

What is frozen: the frame choice (first `max_frames` frames, 1 + k*ct, from a start drawn per
clip key), the resolution (`max_pixels`, or with `min_pixels` one NaViT area drawn per clip key)
and the autoencoder; the manifest's `extra` records them, and the trainer checks channel counts
and text width when it reads the members.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from generator.data import ClipMaker
from generator.patches import grid_size
from generator.registry import load_config
from generator.text import load_text_encoder
from generator.vae import load_autoencoder
from storage.shards import ShardWriter, load_manifest, read_shards

if TYPE_CHECKING:
    from generator.train import TrainConfig

SAMPLE_MEMBERS = ("mp4", "json", "txt", "captions.json")


def _key_rng(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


@torch.no_grad()
def precompute_sample(sample: dict[str, Any], maker: ClipMaker, latents: bool = True,
                      text: bool = True) -> dict[str, Any]:
    """A copy of `sample` with latent.npy and/or text.npy added (and json.latent_tokens)."""
    out = {k: sample[k] for k in ("__key__", *SAMPLE_MEMBERS) if k in sample}
    out["json"] = dict(sample["json"])
    if latents:
        z = maker.raw_latent(sample, _key_rng(sample["__key__"]))             # (C, t, h, w)
        out["latent.npy"] = z.numpy().astype(np.float16)
        out["json"]["latent_tokens"] = grid_size(*z.shape[1:], *maker.patch).n_tokens
    if text:
        out["text.npy"] = maker.text.encode_one(sample["txt"]).cpu().numpy().astype(np.float16)
    return out


def precompute_dataset(src_dir: str | Path, out_dir: str | Path, maker: ClipMaker, latents: bool = True,
                       text: bool = True, max_count: int = 1000) -> dict[str, Any]:
    """Write `out_dir` (a new dataset named after it) from `src_dir` with precomputed members."""
    source = load_manifest(src_dir)
    extra = {"source": source["dataset"], "latents": maker.ae.spec() if latents else None,
             "text": maker.text.spec()["config"] if text else None,
             "max_pixels": maker.config.max_pixels, "min_pixels": maker.config.min_pixels,
             "max_frames": maker.config.max_frames}
    extra["latents"] = {k: v for k, v in (extra["latents"] or {}).items() if k != "state_dict"} or None
    with ShardWriter(out_dir, Path(out_dir).name, max_count=max_count, extra=extra) as writer:
        for sample in read_shards(src_dir):
            writer.write(precompute_sample(sample, maker, latents, text))
    return load_manifest(out_dir)


def precompute_for_training(config: "TrainConfig", out_dataset: str | None = None, device: str = "cpu") -> str:
    """Precompute ROOT/shards/<dataset> for `config` (its autoencoder, text encoder, frame policy and
    patch size) into ROOT/shards/<out_dataset> (default "<dataset>-latents"); returns that name."""
    out_dataset = out_dataset or f"{config.dataset}-latents"
    shards = Path(config.root) / "shards"
    patch = tuple(load_config(config.model, **config.model_overrides)["patch_size"])
    maker = ClipMaker(config.data, load_autoencoder(config.autoencoder, device).requires_grad_(False),
                      load_text_encoder(config.text, device), patch)
    precompute_dataset(shards / config.dataset, shards / out_dataset, maker)
    return out_dataset
