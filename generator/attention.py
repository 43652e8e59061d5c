"""Variable-length attention backends: each query segment attends only to its own key segment.

All backends take packed q: (Nq, H, Dh), k, v: (Nk, H, Dh) and a `VarlenLayout` whose
cu_seqlens say where segment i starts in q and in k; they return (Nq, H, Dh). Self-attention
uses the same offsets for q and k (one clip's tokens); cross-attention uses the clips' token
offsets for q and their caption-token offsets for k. Every segment must have >= 1 key.

- `sdpa_loop`: a Python loop of torch SDPA calls, one per segment. Exact and portable; the
  CPU default. Cost grows with the number of clips (one kernel launch each).
- `flex`: torch FlexAttention with a block mask built from segment ids. On CUDA the kernel is
  compiled; on CPU it runs the eager reference (materialises Nq x Nk scores, forward only:
  torch 2.14 has no FlexAttention backward on CPU), good for checking, not for training.
- `flash_varlen`: flash-attn's `flash_attn_varlen_func` (CUDA, fp16/bf16; float32 inputs are
  run in bf16 and cast back). Unavailable, with a clear error, when flash-attn is not installed.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class VarlenLayout:
    """Segment offsets of packed queries and keys; `cache` holds per-backend precomputation."""

    cu_q: Tensor  # (n_segments + 1,) int32
    cu_k: Tensor  # (n_segments + 1,) int32
    cache: dict = field(default_factory=dict)

    def lens(self) -> tuple[list[int], list[int]]:
        """Python lists of query and key lengths per segment (computed once)."""
        if "lens" not in self.cache:
            self.cache["lens"] = ((self.cu_q[1:] - self.cu_q[:-1]).tolist(),
                                  (self.cu_k[1:] - self.cu_k[:-1]).tolist())
        return self.cache["lens"]


AttentionFn = Callable[[Tensor, Tensor, Tensor, VarlenLayout], Tensor]


def sdpa_loop(q: Tensor, k: Tensor, v: Tensor, layout: VarlenLayout) -> Tensor:
    """One torch SDPA call per segment. q: (Nq, H, Dh), k, v: (Nk, H, Dh) -> (Nq, H, Dh)."""
    q_lens, k_lens = layout.lens()
    outs = []
    for qs, ks, vs in zip(q.split(q_lens), k.split(k_lens), v.split(k_lens)):
        o = F.scaled_dot_product_attention(                          # (H, Lq, Dh)
            qs.transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1))
        outs.append(o.transpose(0, 1))                               # (Lq, H, Dh)
    return torch.cat(outs)                                           # (Nq, H, Dh)


def _segment_ids(cu: Tensor) -> Tensor:
    """cu_seqlens (n+1,) -> segment id of every position (cu[-1],)."""
    lens = (cu[1:] - cu[:-1]).long()
    return torch.repeat_interleave(torch.arange(lens.numel(), device=cu.device), lens)


def _flex_block_mask(layout: VarlenLayout, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    if "flex_mask" not in layout.cache:
        seg_q, seg_k = _segment_ids(layout.cu_q), _segment_ids(layout.cu_k)

        def same_segment(b, h, q_idx, kv_idx):
            return seg_q[q_idx] == seg_k[kv_idx]

        layout.cache["flex_mask"] = create_block_mask(
            same_segment, B=None, H=None, Q_LEN=seg_q.numel(), KV_LEN=seg_k.numel(), device=device)
    return layout.cache["flex_mask"]


_compiled_flex: Callable | None = None


def flex(q: Tensor, k: Tensor, v: Tensor, layout: VarlenLayout) -> Tensor:
    """FlexAttention with a segment block mask. q: (Nq, H, Dh), k, v: (Nk, H, Dh) -> (Nq, H, Dh)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = _flex_block_mask(layout, q.device)
    qb, kb, vb = (t.transpose(0, 1)[None] for t in (q, k, v))      # (1, H, N, Dh)
    if q.is_cuda:
        _compiled_flex = _compiled_flex or torch.compile(flex_attention, dynamic=True)
        out = _compiled_flex(qb, kb, vb, block_mask=block_mask)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            out = flex_attention(qb, kb, vb, block_mask=block_mask)  # (1, H, Nq, Dh)
    return out[0].transpose(0, 1)                                    # (Nq, H, Dh)


def flash_varlen(q: Tensor, k: Tensor, v: Tensor, layout: VarlenLayout) -> Tensor:
    """flash-attn varlen kernel. q: (Nq, H, Dh), k, v: (Nk, H, Dh) -> (Nq, H, Dh)."""
    from flash_attn import flash_attn_varlen_func

    q_lens, k_lens = layout.lens()
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    out = flash_attn_varlen_func(
        q.to(dtype), k.to(dtype), v.to(dtype),
        cu_seqlens_q=layout.cu_q.int(), cu_seqlens_k=layout.cu_k.int(),
        max_seqlen_q=max(q_lens), max_seqlen_k=max(k_lens))          # (Nq, H, Dh)
    return out.to(q.dtype)


BACKENDS: dict[str, AttentionFn] = {"sdpa_loop": sdpa_loop, "flex": flex, "flash_varlen": flash_varlen}


def backend_unavailable_reason(name: str) -> str | None:
    """Why backend `name` cannot run here, or None when it can."""
    if name not in BACKENDS:
        return f"unknown attention backend {name!r}; choose one of {sorted(BACKENDS)}"
    if name == "flex" and importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention"
    if name == "flash_varlen":
        if importlib.util.find_spec("flash_attn") is None:
            return "flash_varlen needs the flash-attn package (pip install flash-attn) and a CUDA GPU"
        if not torch.cuda.is_available():
            return "flash_varlen needs a CUDA GPU"
    return None


def available_backends() -> list[str]:
    """Backends that can run on this machine."""
    return [name for name in BACKENDS if backend_unavailable_reason(name) is None]


def get_attention(name: str) -> AttentionFn:
    """The attention function for backend `name`; raises with the reason if it cannot run here."""
    reason = backend_unavailable_reason(name)
    if reason is not None:
        raise RuntimeError(reason)
    return BACKENDS[name]
