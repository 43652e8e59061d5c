"""A diffusers video VAE (CogVideoX, LTX-Video, Wan, ...) behind the `Autoencoder` interface.

`load_diffusers_vae(local_dir)` reads `config.json` of a diffusers-format directory, builds the
class its `_class_name` names (e.g. `AutoencoderKLCogVideoX`, `AutoencoderKLLTXVideo`,
`AutoencoderKLWan`) with `from_pretrained(local_dir)` and never downloads. The compression and
latent normalisation come from the model's config (or its own attributes, e.g. LTX's buffers):

    compression  (temporal_compression_ratio | scale_factor_temporal,
                  spatial_compression_ratio | scale_factor_spatial | 2 ** (levels - 1))
    normalise    (z - latents_mean) * scaling_factor / latents_std   (each part when present)

Needs the optional `diffusers` package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from generator.vae import Autoencoder, crop_video


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _own(vae: nn.Module, name: str) -> Any:
    """An attribute or buffer set on the model itself (not a config value seen through it)."""
    return vae.__dict__.get(name, vae._buffers.get(name))


def diffusers_compression(vae: nn.Module) -> tuple[int, int, int]:
    """(ct, cs, cs) of a diffusers video VAE, from its config or attributes."""
    cfg = dict(vae.config)
    ct = _first(cfg.get("temporal_compression_ratio"), cfg.get("scale_factor_temporal"),
                _own(vae, "temporal_compression_ratio"))
    blocks = cfg.get("block_out_channels")
    cs = _first(cfg.get("spatial_compression_ratio"), cfg.get("scale_factor_spatial"),
                _own(vae, "spatial_compression_ratio"), 2 ** (len(blocks) - 1) if blocks else None)
    if ct is None or cs is None:
        raise ValueError(f"cannot tell the compression of {type(vae).__name__}: no temporal/spatial "
                         "compression ratio in its config or attributes")
    return int(ct), int(cs), int(cs)


def diffusers_normalisation(vae: nn.Module) -> tuple[Tensor, Tensor]:
    """(scale, shift) so that normalise(z) = (z - shift) * scale matches the pipeline's convention."""
    cfg = dict(vae.config)
    mean = _first(cfg.get("latents_mean"), _own(vae, "latents_mean"))
    std = _first(cfg.get("latents_std"), _own(vae, "latents_std"))
    factor = float(_first(cfg.get("scaling_factor"), 1.0))
    shift = torch.as_tensor(mean, dtype=torch.float32).flatten() if mean is not None else \
        torch.tensor(float(_first(cfg.get("shift_factor"), 0.0)))
    scale = factor / torch.as_tensor(std, dtype=torch.float32).flatten() if std is not None else torch.tensor(factor)
    return scale, shift


class DiffusersAutoencoder(Autoencoder):
    """Wraps a diffusers `AutoencoderKL*` video VAE; encode returns the posterior mode."""

    def __init__(self, vae: nn.Module, path: str):
        scale, shift = diffusers_normalisation(vae)
        channels = int(_first(vae.config.get("latent_channels"), vae.config.get("z_dim")))
        super().__init__(channels, diffusers_compression(vae), scale.tolist(), shift.tolist())
        self.vae = vae
        self.path = path

    def encode(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> raw latent (B, C, t, h, w)."""
        return self.vae.encode(self.pad(video).to(self.vae.dtype)).latent_dist.mode().float()

    def decode(self, latent: Tensor, size: tuple[int, int, int] | None = None) -> Tensor:
        """(B, C, t, h, w) -> (B, 3, T', H', W'), cropped to `size` if given."""
        return crop_video(self.vae.decode(latent.to(self.vae.dtype)).sample.float(), size)

    def spec(self) -> dict:
        return {"kind": "diffusers", "path": self.path}


def is_diffusers_dir(path: str | Path) -> bool:
    """True for a directory whose config.json names a diffusers class."""
    config = Path(path) / "config.json"
    return config.is_file() and "_class_name" in json.loads(config.read_text())


def load_diffusers_vae(local_dir: str | Path, dtype: torch.dtype = torch.float32) -> DiffusersAutoencoder:
    """Load the diffusers video VAE saved in `local_dir` (its config.json names the class)."""
    try:
        import diffusers
    except ImportError as e:
        raise ImportError("loading a diffusers VAE needs the diffusers package: pip install diffusers") from e
    local_dir = Path(local_dir)
    if not is_diffusers_dir(local_dir):
        raise ValueError(f"{local_dir} is not a diffusers model directory (config.json with _class_name)")
    name = json.loads((local_dir / "config.json").read_text())["_class_name"]
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ValueError(f"diffusers {diffusers.__version__} has no class {name!r} (from {local_dir}/config.json)")
    vae = cls.from_pretrained(str(local_dir), torch_dtype=dtype, local_files_only=True).eval()
    return DiffusersAutoencoder(vae, str(local_dir.resolve()))
