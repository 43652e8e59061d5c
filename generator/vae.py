"""Video autoencoders behind one interface: a causal 3D-conv VAE and a `pixel` passthrough.

Every autoencoder (also the diffusers wrapper in `generator.diffusers_vae`) is an `Autoencoder`:

    encode(video: (B, 3, T, H, W) in [-1, 1]) -> latent (B, C, t, h, w)   (posterior mean)
    decode(latent) -> video (B, 3, T', H', W') in about [-1, 1]
    latent_channels, compression = (ct, cs, cs), scale / shift (buffers):
    normalize(z) = (z - shift) * scale is what the DiT sees; denormalize inverts it.

Time is causal: the first frame is encoded on its own, then every `ct` frames make one latent
frame, so an image is a one-frame video and T = 1 + k*ct frames give t = 1 + k latent frames.
Sizes that do not fit are padded, never refused: `encode` repeats the last frame up to the next
1 + k*ct and replicate-pads H and W up to multiples of cs, so t = 1 + ceil((T - 1) / ct) and
h = ceil(H / cs) (exactly `generator.patches.latent_size(..., causal=True)`). `decode` returns
1 + ct*(t - 1) frames of cs*h x cs*w pixels; pass `size=(T, H, W)` to crop the padding off.
Trainers avoid padded frames altogether by cutting clips to 1 + k*ct frames.

The VAE is causal end to end: convolutions pad time on the left only (replicating the first
frame) and GroupNorm runs per frame, so latent frame i depends on pixel frames <= 1 + ct*(i-1)
only (tests check encode(video)[:, :, :1] == encode(video[:, :, :1])). A strided causal conv
(kernel 3, stride 2, two frames of left padding) maps 1 + 2k frames to 1 + k; upsampling repeats
each latent frame twice and drops the first copy (1 + k -> 1 + 2k). Down/upsampling and the latent
bottleneck have parameter-free shortcuts (average pooling / nearest copies, channel averaging /
repeating; residual autoencoding as in DC-AE), and with `pixel_shortcut` the latent starts out near
the pooled pixels, so a small VAE learns to reconstruct in minutes on a CPU.

`load_autoencoder("pixel" | "pixel:4" | VAE checkpoint or run dir | diffusers dir | spec dict)`
builds any of them; `spec()` is what a DiT checkpoint stores to rebuild its autoencoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from generator.checkpoint import load_checkpoint
from generator.patches import latent_size
from generator.registry import build_model, register_family


class Autoencoder(nn.Module):
    """Base class: compression, latent normalisation and padding shared by all autoencoders."""

    def __init__(self, latent_channels: int, compression: tuple[int, int, int],
                 scale: float | list[float] = 1.0, shift: float | list[float] = 0.0):
        super().__init__()
        self.latent_channels = latent_channels
        self.compression = tuple(int(c) for c in compression)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))

    def _stat(self, v: Tensor, z: Tensor) -> Tensor:
        """A scalar or per-channel (C,) statistic shaped to broadcast over z: (B, C, t, h, w)."""
        return (v.view(-1, 1, 1, 1) if v.dim() else v).to(z)

    def normalize(self, z: Tensor) -> Tensor:
        """Raw latent -> what the DiT sees: (z - shift) * scale."""
        return (z - self._stat(self.shift, z)) * self._stat(self.scale, z)

    def denormalize(self, z: Tensor) -> Tensor:
        """DiT output -> raw latent: z / scale + shift."""
        return z / self._stat(self.scale, z) + self._stat(self.shift, z)

    def latent_size(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(t, h, w) latent size of a (frames, height, width) video."""
        return latent_size(frames, height, width, self.compression, causal=True)

    def pad(self, video: Tensor) -> Tensor:
        """Replicate-pad (B, 3, T, H, W) to 1 + k*ct frames and multiples of cs pixels."""
        ct, ch, cw = self.compression
        T, H, W = video.shape[2:]
        t, h, w = self.latent_size(T, H, W)
        extra_t = 1 + ct * (t - 1) - T
        if extra_t:
            video = torch.cat([video, video[:, :, -1:].expand(-1, -1, extra_t, -1, -1)], dim=2)
        if h * ch != H or w * cw != W:
            video = F.pad(video, (0, w * cw - W, 0, h * ch - H, 0, 0), mode="replicate")
        return video

    def spec(self) -> dict:
        """What `generator.autoencoders.load_autoencoder` needs to rebuild this autoencoder."""
        raise NotImplementedError


def crop_video(video: Tensor, size: tuple[int, int, int] | None) -> Tensor:
    """Crop decoded (B, 3, T', H', W') to size (T, H, W) (None: unchanged)."""
    if size is None:
        return video
    T, H, W = size
    return video[:, :, :T, :H, :W]


# ---------------------------------------------------------------------------------- pixel


class PixelAutoencoder(Autoencoder):
    """Identity "latents" = pixels, optionally average-pooled by `downsample` in space."""

    def __init__(self, downsample: int = 1):
        super().__init__(latent_channels=3, compression=(1, downsample, downsample))
        self.downsample = downsample

    def encode(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> (B, 3, T, ceil(H/s), ceil(W/s))."""
        s = self.downsample
        return F.avg_pool3d(self.pad(video), (1, s, s)) if s > 1 else video

    def decode(self, latent: Tensor, size: tuple[int, int, int] | None = None) -> Tensor:
        """(B, 3, t, h, w) -> (B, 3, t, h*s, w*s), nearest upsampling."""
        s = self.downsample
        video = F.interpolate(latent, scale_factor=(1, s, s), mode="nearest") if s > 1 else latent
        return crop_video(video, size)

    def spec(self) -> dict:
        return {"kind": "pixel", "downsample": self.downsample}


# ---------------------------------------------------------------------------- causal VAE


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of the causal VAE; generator/configs/vae_*.json are rows of this.

    Spatial compression is 2 ** (len(channels) - 1); temporal compression is 2 ** (number of
    True in `temporal_down`, one flag per downsampling level).
    """

    in_channels: int = 3
    latent_channels: int = 4
    channels: tuple[int, ...] = (16, 32, 64, 64)
    temporal_down: tuple[bool, ...] = (True, True, False)
    layers_per_block: int = 1
    groups: int = 8
    kl_weight: float = 1e-3
    pixel_shortcut: bool = True           # first 3 latent channels start as pooled pixels (CausalVAE)
    scale: float | list[float] = 1.0      # latent normalisation, fitted after training
    shift: float | list[float] = 0.0

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "temporal_down", tuple(bool(t) for t in self.temporal_down))
        if len(self.temporal_down) != len(self.channels) - 1:
            raise ValueError(f"temporal_down needs one flag per downsampling level "
                             f"({len(self.channels) - 1}), got {len(self.temporal_down)}")
        if any(c % self.groups for c in self.channels):
            raise ValueError(f"every entry of channels {self.channels} must divide by groups={self.groups}")
        if self.pixel_shortcut and self.latent_channels < self.in_channels:
            raise ValueError(f"pixel_shortcut needs latent_channels >= in_channels ({self.in_channels})")
        if self.channels[-1] % self.latent_channels:
            raise ValueError(f"channels[-1]={self.channels[-1]} must divide by latent_channels={self.latent_channels}")

    @property
    def compression(self) -> tuple[int, int, int]:
        s = 2 ** (len(self.channels) - 1)
        return 2 ** sum(self.temporal_down), s, s


class FrameNorm(nn.GroupNorm):
    """GroupNorm over (C, H, W) of each frame separately, so statistics never mix frames."""

    def forward(self, x: Tensor) -> Tensor:
        B, C, T, H, W = x.shape
        y = super().forward(x.transpose(1, 2).reshape(B * T, C, H, W))   # (B*T, C, H, W)
        return y.reshape(B, T, C, H, W).transpose(1, 2)                  # (B, C, T, H, W)


class CausalConv3d(nn.Module):
    """3D conv padded on the left in time (first frame repeated) and symmetrically in space."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.time_pad = kernel - 1
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, T, H, W) -> (B, C', T', H', W')."""
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        return self.conv(x)


class ResBlock3d(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.block = nn.Sequential(
            FrameNorm(groups, c_in), nn.SiLU(), CausalConv3d(c_in, c_out),
            FrameNorm(groups, c_out), nn.SiLU(), CausalConv3d(c_out, c_out))
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.block(x)


def causal_avg_pool(x: Tensor, ct: int, cs: int) -> Tensor:
    """Parameter-free causal average: (B, C, 1 + ct*k, H, W) -> (B, C, 1 + k, H/cs, W/cs).

    The first frame is pooled alone, then each run of ct frames (the inverse of `causal_repeat`).
    """
    x = F.avg_pool3d(x, (1, cs, cs)) if cs > 1 else x                     # (B, C, T, h, w)
    if ct == 1:
        return x
    B, C, T, H, W = x.shape
    rest = x[:, :, 1:].reshape(B, C, (T - 1) // ct, ct, H, W).mean(3)     # runs (1..ct), (ct+1..2ct), ...
    return torch.cat([x[:, :, :1], rest], dim=2)                          # (B, C, 1 + (T-1)/ct, h, w)


def causal_repeat(z: Tensor, ct: int, cs: int) -> Tensor:
    """Nearest copies: (B, C, t, h, w) -> (B, C, 1 + ct*(t-1), cs*h, cs*w); the first frame stays single."""
    if ct > 1:
        z = z.repeat_interleave(ct, dim=2)[:, :, ct - 1:]                 # (B, C, 1 + ct*(t-1), h, w)
    return F.interpolate(z, scale_factor=(1, cs, cs), mode="nearest") if cs > 1 else z


class Downsample(nn.Module):
    """Halve H and W, and 1 + 2k -> 1 + k frames when `temporal`; conv + average-pool shortcut."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, 3, stride=(2 if temporal else 1, 2, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) + causal_avg_pool(x, 2 if self.temporal else 1, 2)


class Upsample(nn.Module):
    """Double H and W, and 1 + k -> 1 + 2k frames when `temporal` (first frame stays single)."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = causal_repeat(x, 2 if self.temporal else 1, 2)               # (B, C, T, 2h, 2w)
        return self.conv(x) + x                                           # nearest-copy shortcut


class Encoder(nn.Module):
    """conv -> [ResBlocks, Downsample] per level -> ResBlock -> moments, plus a channel-average
    shortcut into the mean (residual autoencoding as in DC-AE: the easy path is an average)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, g, self.latent = cfg.channels, cfg.groups, cfg.latent_channels
        layers: list[nn.Module] = [CausalConv3d(cfg.in_channels, ch[0])]
        for i, c in enumerate(ch):
            layers += [ResBlock3d(ch[max(i - 1, 0)] if j == 0 else c, c, g) for j in range(cfg.layers_per_block)]
            if i < len(ch) - 1:
                layers += [Downsample(c, cfg.temporal_down[i])]
        self.body = nn.Sequential(*layers, ResBlock3d(ch[-1], ch[-1], g))
        self.head = nn.Sequential(FrameNorm(g, ch[-1]), nn.SiLU(), CausalConv3d(ch[-1], 2 * cfg.latent_channels))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, T, H, W) -> moments (B, 2C, t, h, w): mean then log-variance."""
        h = self.body(x)                                                  # (B, ch, t, h, w)
        short = h.unflatten(1, (self.latent, -1)).mean(2)                 # (B, C, t, h, w)
        return self.head(h) + torch.cat([short, torch.zeros_like(short)], dim=1)


class Decoder(nn.Module):
    """latent (+ channel-repeat shortcut) -> ResBlock -> [ResBlocks, Upsample] per level -> RGB."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, g = cfg.channels[::-1], cfg.groups
        down = cfg.temporal_down[::-1]
        self.repeat = ch[0] // cfg.latent_channels
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[0])
        layers: list[nn.Module] = [ResBlock3d(ch[0], ch[0], g)]
        for i, c in enumerate(ch):
            layers += [ResBlock3d(ch[max(i - 1, 0)] if j == 0 else c, c, g) for j in range(cfg.layers_per_block)]
            if i < len(ch) - 1:
                layers += [Upsample(c, down[i])]
        layers += [FrameNorm(g, ch[-1]), nn.SiLU(), CausalConv3d(ch[-1], cfg.in_channels)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """z: (B, C, t, h, w) -> video (B, 3, 1 + ct*(t-1), cs*h, cs*w)."""
        h = self.conv_in(z) + z.repeat_interleave(self.repeat, dim=1)     # (B, ch, t, h, w)
        return self.layers(h)


@dataclass
class VAEOutput:
    recon: Tensor    # (B, 3, T, H, W) reconstruction of the padded input
    mean: Tensor     # (B, C, t, h, w) posterior mean
    logvar: Tensor   # (B, C, t, h, w) posterior log-variance
    losses: dict[str, Tensor] = field(default_factory=dict)


class CausalVAE(Autoencoder):
    """Causal 3D-conv VAE with a diagonal Gaussian posterior (KL + L1 reconstruction loss).

    With `pixel_shortcut` the first 3 latent channels also carry the causally average-pooled
    pixels and the decoder adds their nearest copies to its output (its last conv starts at
    zero), so training starts near the `pixel` passthrough and learns the detail on top.
    """

    def __init__(self, config: VAEConfig):
        super().__init__(config.latent_channels, config.compression, config.scale, config.shift)
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if config.pixel_shortcut:                   # start as the exact pixel passthrough on output
            nn.init.zeros_(self.decoder.layers[-1].conv.weight)
            nn.init.zeros_(self.decoder.layers[-1].conv.bias)

    def posterior(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """video (B, 3, T, H, W) -> mean, logvar: (B, C, t, h, w) each (input padded as needed)."""
        assert video.dim() == 5 and video.shape[1] == self.config.in_channels, f"video {tuple(video.shape)}"
        video = self.pad(video)
        mean, logvar = self.encoder(video).chunk(2, dim=1)                 # (B, C, t, h, w) each
        if self.config.pixel_shortcut:
            n = self.config.in_channels
            mean = torch.cat([mean[:, :n] + causal_avg_pool(video, *self.compression[:2]), mean[:, n:]], dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> raw latent (posterior mean) (B, C, t, h, w)."""
        return self.posterior(video)[0]

    def decode(self, latent: Tensor, size: tuple[int, int, int] | None = None) -> Tensor:
        """(B, C, t, h, w) -> (B, 3, 1 + ct*(t-1), cs*h, cs*w), cropped to `size` if given."""
        video = self.decoder(latent)                                      # (B, 3, T, H, W)
        if self.config.pixel_shortcut:
            video = video + causal_repeat(latent[:, :self.config.in_channels], *self.compression[:2])
        return crop_video(video, size)

    def forward(self, video: Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Training pass: sample z from the posterior, decode, L1 + kl_weight * KL."""
        mean, logvar = self.posterior(video)
        eps = torch.randn(mean.shape, generator=generator).to(mean)
        recon = self.decode(mean + torch.exp(0.5 * logvar) * eps)         # (B, 3, T_pad, H_pad, W_pad)
        target = self.pad(video)
        rec = (recon - target).abs().mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return VAEOutput(recon, mean, logvar, {"loss": rec + self.config.kl_weight * kl, "recon": rec, "kl": kl})

    def spec(self) -> dict:
        return {"kind": "vae", "config": self.config_dict(), "state_dict": self.state_dict()}

    def config_dict(self) -> dict:
        """Resolved config with the current latent statistics (JSON-serialisable)."""
        cfg = asdict(self.config)
        cfg.update(scale=self.scale.tolist(), shift=self.shift.tolist())
        return {"family": "vae", **cfg}


@torch.no_grad()
def fit_latent_stats(vae: Autoencoder, videos: list[Tensor]) -> tuple[float, float]:
    """Set vae.shift / vae.scale so normalised latents of `videos` have mean 0 and std 1."""
    z = torch.cat([vae.encode(v).flatten() for v in videos])
    mean, std = z.mean().item(), z.std().item()
    vae.shift.fill_(mean)
    vae.scale.fill_(1.0 / max(std, 1e-6))
    return mean, std


def _build_vae(fields: dict) -> nn.Module:
    return CausalVAE(VAEConfig(**fields))


def _build_pixel(fields: dict) -> nn.Module:
    return PixelAutoencoder(**fields)


register_family("vae", _build_vae)
register_family("pixel", _build_pixel)


def load_autoencoder(spec: str | dict, device: str | torch.device = "cpu") -> Autoencoder:
    """An autoencoder from a CLI string or from the `spec()` dict a DiT checkpoint stores.

    Strings: "pixel" or "pixel:N" (passthrough, N-fold spatial pooling); a diffusers model
    directory; a VAE checkpoint file, run directory or ROOT/models/vae (newest run).
    """
    from generator.diffusers_vae import is_diffusers_dir, load_diffusers_vae
    if isinstance(spec, dict):
        return _from_spec(spec).to(device).eval()
    if spec == "pixel" or spec.startswith("pixel:"):
        return PixelAutoencoder(int(spec.split(":")[1]) if ":" in spec else 1).to(device)
    if is_diffusers_dir(spec):
        return load_diffusers_vae(spec).to(device)
    ckpt = load_checkpoint(spec)
    return _from_spec({"kind": "vae", "config": ckpt["model_config"], "state_dict": ckpt["model"]}).to(device).eval()


def _from_spec(spec: dict) -> Autoencoder:
    kind = spec.get("kind")
    if kind == "pixel":
        return PixelAutoencoder(spec.get("downsample", 1))
    if kind == "diffusers":
        from generator.diffusers_vae import load_diffusers_vae
        return load_diffusers_vae(spec["path"])
    if kind == "vae":
        vae = build_model(spec["config"])
        vae.load_state_dict(spec["state_dict"])
        return vae
    raise ValueError(f"unknown autoencoder kind {kind!r}; expected pixel, vae or diffusers")

