"""3D rotary position embedding (RoPE) over (t, h, w) patch positions.

The head dimension is split into three even parts, one per axis; each part rotates its channel
pairs by angles `position * theta ** (-2j / d_axis)` of its own axis. Pairs are (j, j + Dh/2)
("rotate half" layout). Positions restart per clip, so a clip is encoded the same alone or packed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels given to (t, h, w): h and w get an even third each, t the (even) rest."""
    assert head_dim % 2 == 0, f"RoPE needs an even head dim, got {head_dim}"
    d_hw = 2 * ((head_dim // 3) // 2)
    return head_dim - 2 * d_hw, d_hw, d_hw


class RoPE3D(nn.Module):
    """Computes per-token rotation (cos, sin) from integer (t, h, w) positions."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        inv_freqs = [theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d) for d in rope_split(head_dim)]
        for axis, f in zip("thw", inv_freqs):
            self.register_buffer(f"inv_freq_{axis}", f.float(), persistent=False)

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """pos: (N, 3) int -> cos, sin: (N, 1, head_dim // 2), broadcastable over heads."""
        p = pos.float()
        angles = torch.cat([
            p[:, 0:1] * self.inv_freq_t,                              # (N, d_t/2)
            p[:, 1:2] * self.inv_freq_h,                              # (N, d_h/2)
            p[:, 2:3] * self.inv_freq_w,                              # (N, d_w/2)
        ], dim=-1)                                                    # (N, Dh/2)
        return angles.cos()[:, None, :], angles.sin()[:, None, :]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x: (N, H, Dh) by per-token angles; cos, sin: (N, 1, Dh/2) -> (N, H, Dh)."""
    x1, x2 = x.float().chunk(2, dim=-1)                               # each (N, H, Dh/2)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)
