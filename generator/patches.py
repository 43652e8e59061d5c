"""Spacetime patches: cut a latent video (C, T, H, W) into a sequence of flat patch tokens.

A latent of any size is padded with zeros at the *end* of each axis up to a multiple of the
patch size (pt, ph, pw), then cut into a (nt, nh, nw) grid of patches. Each patch becomes one
token of C*pt*ph*pw values, flattened in (C, pt, ph, pw) order. Tokens are ordered t-major,
then h, then w, so token i sits at `positions(grid)[i]`. `unpatchify` inverts this exactly and
crops the padding away again (`patch_padding` says how much there was).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

Patch = tuple[int, int, int]  # (pt, ph, pw)


class Grid(NamedTuple):
    """Number of patches along time, height and width."""

    nt: int
    nh: int
    nw: int

    @property
    def n_tokens(self) -> int:
        return self.nt * self.nh * self.nw


def grid_size(T: int, H: int, W: int, pt: int, ph: int, pw: int) -> Grid:
    """Patch grid of a (T, H, W) latent: each axis is rounded up to a whole patch."""
    return Grid(math.ceil(T / pt), math.ceil(H / ph), math.ceil(W / pw))


def patch_padding(T: int, H: int, W: int, pt: int, ph: int, pw: int) -> tuple[int, int, int]:
    """Zeros appended at the end of (T, H, W) so that each axis is a whole number of patches."""
    nt, nh, nw = grid_size(T, H, W, pt, ph, pw)
    return nt * pt - T, nh * ph - H, nw * pw - W


def patchify(x: Tensor, pt: int, ph: int, pw: int) -> tuple[Tensor, Grid]:
    """Cut a latent video into patch tokens.

    x: (C, T, H, W) -> tokens: (nt*nh*nw, C*pt*ph*pw), grid: (nt, nh, nw)
    """
    assert x.dim() == 4, f"expected (C, T, H, W), got {tuple(x.shape)}"
    C, T, H, W = x.shape
    pad_t, pad_h, pad_w = patch_padding(T, H, W, pt, ph, pw)
    x = F.pad(x, (0, pad_w, 0, pad_h, 0, pad_t))                  # (C, nt*pt, nh*ph, nw*pw)
    grid = grid_size(T, H, W, pt, ph, pw)
    x = x.reshape(C, grid.nt, pt, grid.nh, ph, grid.nw, pw)       # (C, nt, pt, nh, ph, nw, pw)
    x = x.permute(1, 3, 5, 0, 2, 4, 6)                            # (nt, nh, nw, C, pt, ph, pw)
    tokens = x.reshape(grid.n_tokens, C * pt * ph * pw)           # (N, C*pt*ph*pw)
    return tokens, grid


def unpatchify(
    tokens: Tensor, grid: tuple[int, int, int], pt: int, ph: int, pw: int,
    C: int, T: int, H: int, W: int,
) -> Tensor:
    """Inverse of `patchify`: tokens (N, C*pt*ph*pw) -> x (C, T, H, W), padding cropped."""
    nt, nh, nw = grid
    assert tokens.shape == (nt * nh * nw, C * pt * ph * pw), (
        f"tokens {tuple(tokens.shape)} do not match grid {tuple(grid)} and patch {(C, pt, ph, pw)}")
    x = tokens.reshape(nt, nh, nw, C, pt, ph, pw)                 # (nt, nh, nw, C, pt, ph, pw)
    x = x.permute(3, 0, 4, 1, 5, 2, 6)                            # (C, nt, pt, nh, ph, nw, pw)
    x = x.reshape(C, nt * pt, nh * ph, nw * pw)                   # (C, T_pad, H_pad, W_pad)
    return x[:, :T, :H, :W]                                       # (C, T, H, W)


def positions(grid: tuple[int, int, int], device: torch.device | str | None = None) -> Tensor:
    """Integer (t, h, w) patch coordinates of each token, in token order: (N, 3) int64."""
    nt, nh, nw = grid
    axes = [torch.arange(n, device=device) for n in (nt, nh, nw)]
    t, h, w = torch.meshgrid(*axes, indexing="ij")                # each (nt, nh, nw)
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3)          # (N, 3)


def latent_size(
    frames: int, height: int, width: int, compression: tuple[int, int, int] = (4, 8, 8),
    causal: bool = True,
) -> tuple[int, int, int]:
    """(T, H, W) latent size of a video after an autoencoder with the given (t, h, w) strides.

    A causal video autoencoder keeps the first frame on its own: T = 1 + ceil((frames-1)/ct).
    """
    ct, ch, cw = compression
    T = 1 + math.ceil((frames - 1) / ct) if causal else math.ceil(frames / ct)
    return T, math.ceil(height / ch), math.ceil(width / cw)


def video_token_count(
    frames: int, height: int, width: int, patch: Patch = (1, 2, 2),
    compression: tuple[int, int, int] = (4, 8, 8), causal: bool = True,
) -> int:
    """Number of patch tokens of a video of `frames` x `height` x `width` pixels (arithmetic only)."""
    T, H, W = latent_size(frames, height, width, compression, causal)
    return grid_size(T, H, W, *patch).n_tokens
