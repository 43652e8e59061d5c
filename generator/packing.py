"""Patch n' Pack: pack clips and images of any size into fixed token budgets (NaViT, Sora).

A `Clip` is one patchified latent video (an image is a 1-frame clip) with its caption. Packing
concatenates the tokens of several clips into one sequence of exactly `token_budget` tokens,
padding the tail. Each token carries its clip's segment id (-1 for padding) and its (t, h, w)
patch position, which restarts at 0 for every clip; per-clip data (timestep, caption, loss
weight, grid) stays per clip and the model gathers it by segment id.

Bins are filled by first-fit-decreasing (FFD). `pack_clips` packs a finite list; `pack_stream`
packs an endless iterator through a buffer of `buffer_size` clips (what the trainer uses).

Clips larger than the budget: `oversize="error"` (default) raises; `oversize="split"` cuts the
clip along time into pieces of whole latent frames, each trained as its own clip with the same
caption and positions restarting at 0 (a single frame larger than the budget raises). Pieces
take as many frames as fit, so they nearly fill a pack, and the shorter tail piece fills a gap
in another pack (`split_frames` says the piece lengths without touching a tensor).

NaViT token dropping (`drop_rate`): before packing, each clip keeps a random subset of
round(N * (1 - rate)) of its tokens (at least one), in order, with their original positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Literal, Sequence, TypeVar

import torch
from torch import Tensor

from generator.patches import Grid, patchify, positions

Item = TypeVar("Item")
Oversize = Literal["error", "split"]


@dataclass
class Clip:
    """One training item: patch tokens of one latent clip (or image) and its caption.

    tokens: (N, D_in) in grid order (only the kept tokens after dropping); grid: (nt, nh, nw);
    text: (L, D_text); text_mask: (L,) bool, True = real token; keep: (N,) indices of the kept
    tokens in the full grid, None when all are kept; t: timestep in [0, 1] or nan to let the
    objective draw one.
    """

    tokens: Tensor
    grid: Grid
    text: Tensor
    text_mask: Tensor | None = None
    t: float = math.nan
    loss_weight: float = 1.0
    keep: Tensor | None = None
    key: str = ""

    @classmethod
    def from_latent(cls, latent: Tensor, patch: tuple[int, int, int], text: Tensor, **kw) -> "Clip":
        """Patchify a latent (C, T, H, W) into a clip."""
        tokens, grid = patchify(latent, *patch)
        return cls(tokens=tokens, grid=grid, text=text, **kw)

    @property
    def n_tokens(self) -> int:
        return self.tokens.shape[0]

    def positions(self) -> Tensor:
        """(t, h, w) of each kept token: (N, 3) int64."""
        pos = positions(self.grid, device=self.tokens.device)
        return pos if self.keep is None else pos[self.keep]


@dataclass
class PackedBatch:
    """A pack of clips in one token sequence; clips are contiguous, padding is at the end."""

    x: Tensor            # (total_tokens, D_in) patch tokens, zeros at padding
    segment_ids: Tensor  # (total_tokens,) int64 clip index, -1 = padding
    pos: Tensor          # (total_tokens, 3) int64 (t, h, w), restarting per clip
    cu_seqlens: Tensor   # (n_clips + 1,) int32 token offsets of the clips
    t: Tensor            # (n_clips,) float32 timestep, nan = drawn by the objective
    text: Tensor         # (n_clips, L, D_text) caption embeddings
    text_mask: Tensor    # (n_clips, L) bool, True = real caption token
    loss_weight: Tensor  # (n_clips,) float32
    grids: Tensor        # (n_clips, 3) int64 full (nt, nh, nw) of each clip
    keys: list[str] = field(default_factory=list)

    @property
    def n_clips(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def seqlens(self) -> list[int]:
        """Tokens per clip (after any dropping)."""
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).tolist()

    @property
    def n_real(self) -> int:
        """Number of non-padding tokens."""
        return int(self.cu_seqlens[-1])

    def replace(self, **changes) -> "PackedBatch":
        return replace(self, **changes)

    def to(self, device: torch.device | str) -> "PackedBatch":
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, Tensor)}
        return replace(self, **moved)

    def validate(self) -> None:
        """Cheap shape and layout checks at the model boundary."""
        n, total = self.n_clips, self.x.shape[0]
        assert self.segment_ids.shape == (total,) and self.pos.shape == (total, 3)
        assert self.t.shape == (n,) and self.loss_weight.shape == (n,) and self.grids.shape == (n, 3)
        assert self.text.shape[0] == n and self.text_mask.shape == self.text.shape[:2]
        assert bool(self.text_mask.any(dim=1).all()), "every clip needs at least one caption token"
        assert self.n_real <= total


def first_fit_decreasing(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Bin-pack `sizes` into bins of capacity `budget`; returns item indices per bin."""
    bins: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        if sizes[i] > budget:
            raise ValueError(f"item {i} has {sizes[i]} tokens > token_budget {budget}")
        slot = next((b for b, room in enumerate(free) if room >= sizes[i]), None)
        if slot is None:
            bins.append([])
            free.append(budget)
            slot = len(bins) - 1
        bins[slot].append(i)
        free[slot] -= sizes[i]
    return bins


def stream_bins(
    items: Iterable[Item], size_fn: Callable[[Item], int], budget: int,
    buffer_size: int = 256, min_fill: float = 0.97,
) -> Iterator[list[Item]]:
    """FFD over a sliding buffer: yield groups of items whose sizes sum to <= budget.

    When the buffer holds `buffer_size` items, FFD runs over it; every bin filled to at least
    `min_fill` of the budget is emitted (at least the fullest one) and the other items stay
    for the next round. At the end of the stream all remaining bins are emitted.
    """
    buffer: list[Item] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= buffer_size:
            emitted, buffer = _emit_full_bins(buffer, size_fn, budget, min_fill)
            yield from emitted
    while buffer:
        bins = first_fit_decreasing([size_fn(it) for it in buffer], budget)
        yield from ([buffer[i] for i in b] for b in bins)
        buffer = []


def _emit_full_bins(
    buffer: list[Item], size_fn: Callable[[Item], int], budget: int, min_fill: float,
) -> tuple[list[list[Item]], list[Item]]:
    """Split one FFD round over `buffer` into (emitted bins, items kept for later)."""
    sizes = [size_fn(it) for it in buffer]
    bins = first_fit_decreasing(sizes, budget)
    fill = [sum(sizes[i] for i in b) / budget for b in bins]
    full = [k for k, f in enumerate(fill) if f >= min_fill] or [max(range(len(bins)), key=fill.__getitem__)]
    taken = {i for k in full for i in bins[k]}
    return [[buffer[i] for i in bins[k]] for k in full], [it for i, it in enumerate(buffer) if i not in taken]


def kept_tokens(n_tokens: int, rate: float) -> int:
    """How many of a clip's n_tokens NaViT dropping at `rate` keeps: round(N * (1 - rate)), >= 1."""
    return n_tokens if rate <= 0.0 else max(1, round(n_tokens * (1.0 - rate)))


def drop_tokens(clip: Clip, rate: float, generator: torch.Generator | None = None) -> Clip:
    """NaViT token dropping: keep a random `kept_tokens(N, rate)` of the clip's tokens, in order."""
    if rate <= 0.0:
        return clip
    assert clip.keep is None and 0.0 <= rate < 1.0, "drop once, with 0 <= rate < 1"
    n_keep = kept_tokens(clip.n_tokens, rate)
    keep = torch.randperm(clip.n_tokens, generator=generator)[:n_keep].sort().values
    return replace(clip, tokens=clip.tokens[keep.to(clip.tokens.device)], keep=keep)


def split_frames(nt: int, frame_tokens: int, budget: int) -> list[int]:
    """Latent frames of each piece of an nt-frame clip cut to fit `budget`: full pieces, then a tail."""
    if nt * frame_tokens <= budget:
        return [nt]
    if frame_tokens > budget:
        raise ValueError(f"one latent frame has {frame_tokens} tokens > token_budget {budget}: "
                         "lower the resolution or raise the budget")
    step = budget // frame_tokens
    return [min(step, nt - s) for s in range(0, nt, step)]


def split_clip(clip: Clip, budget: int) -> list[Clip]:
    """Cut a clip along time into pieces of whole latent frames with <= budget tokens each."""
    nt, nh, nw = clip.grid
    if clip.n_tokens <= budget:
        return [clip]
    assert clip.keep is None, "split before dropping tokens"
    lengths = split_frames(nt, nh * nw, budget)
    frames = clip.tokens.reshape(nt, nh * nw, -1)                        # (nt, nh*nw, D_in)
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    return [replace(clip, tokens=frames[s:s + n].reshape(-1, frames.shape[-1]),
                    grid=Grid(n, nh, nw), key=f"{clip.key}#t{s}")
            for s, n in zip(starts, lengths)]


def prepare_clip(
    clip: Clip, budget: int, drop_rate: float = 0.0, oversize: Oversize = "error",
    generator: torch.Generator | None = None,
) -> list[Clip]:
    """Apply the oversize policy, then token dropping; returns clips that each fit the budget."""
    if oversize not in ("error", "split"):
        raise ValueError(f"oversize must be 'error' or 'split', got {oversize!r}")
    if clip.n_tokens > budget and oversize == "error":
        raise ValueError(f"clip {clip.key!r} has {clip.n_tokens} tokens > token_budget {budget}; "
                         "downscale it, raise the budget, or pack with oversize='split'")
    parts = split_clip(clip, budget) if oversize == "split" else [clip]
    return [drop_tokens(p, drop_rate, generator) for p in parts]


def collate(clips: Sequence[Clip], token_budget: int | None = None) -> PackedBatch:
    """Concatenate clips into one PackedBatch of `token_budget` tokens (default: no padding)."""
    lens = [c.n_tokens for c in clips]
    total = sum(lens) if token_budget is None else token_budget
    assert sum(lens) <= total, f"{sum(lens)} tokens do not fit a budget of {total}"
    pad = total - sum(lens)
    ref = clips[0].tokens
    x = torch.cat([c.tokens for c in clips] + [ref.new_zeros(pad, ref.shape[1])])
    seg = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)] + [torch.full((pad,), -1)])
    pos = torch.cat([c.positions() for c in clips] + [torch.zeros(pad, 3, dtype=torch.long, device=ref.device)])
    text, text_mask = _pad_text(clips)
    return PackedBatch(
        x=x, segment_ids=seg.to(ref.device), pos=pos,
        cu_seqlens=torch.tensor([0] + lens, device=ref.device).cumsum(0).to(torch.int32),
        t=torch.tensor([c.t for c in clips], dtype=torch.float32, device=ref.device),
        text=text, text_mask=text_mask,
        loss_weight=torch.tensor([c.loss_weight for c in clips], dtype=torch.float32, device=ref.device),
        grids=torch.tensor([tuple(c.grid) for c in clips], dtype=torch.long, device=ref.device),
        keys=[c.key for c in clips],
    )


def _pad_text(clips: Sequence[Clip]) -> tuple[Tensor, Tensor]:
    """Stack captions of different lengths: (n_clips, L_max, D_text) and mask (n_clips, L_max)."""
    L = max(c.text.shape[0] for c in clips)
    text = clips[0].text.new_zeros(len(clips), L, clips[0].text.shape[1])
    mask = torch.zeros(len(clips), L, dtype=torch.bool, device=text.device)
    for i, c in enumerate(clips):
        n = c.text.shape[0]
        text[i, :n] = c.text
        mask[i, :n] = True if c.text_mask is None else c.text_mask.to(text.device)
    return text, mask


def pack_clips(
    clips: Sequence[Clip], token_budget: int, drop_rate: float = 0.0,
    oversize: Oversize = "error", generator: torch.Generator | None = None,
) -> list[PackedBatch]:
    """Pack a finite list of clips into PackedBatches of `token_budget` tokens by FFD."""
    ready = [p for c in clips for p in prepare_clip(c, token_budget, drop_rate, oversize, generator)]
    bins = first_fit_decreasing([c.n_tokens for c in ready], token_budget)
    return [collate([ready[i] for i in b], token_budget) for b in bins]


def pack_stream(
    clips: Iterable[Clip], token_budget: int, buffer_size: int = 256, drop_rate: float = 0.0,
    oversize: Oversize = "error", min_fill: float = 0.97, generator: torch.Generator | None = None,
) -> Iterator[PackedBatch]:
    """Pack an iterator of clips through a buffer of `buffer_size` clips (see `stream_bins`)."""
    ready = (p for c in clips for p in prepare_clip(c, token_budget, drop_rate, oversize, generator))
    for group in stream_bins(ready, lambda c: c.n_tokens, token_budget, buffer_size, min_fill):
        yield collate(group, token_budget)


def unpack(batch: PackedBatch, y: Tensor) -> list[Tensor]:
    """Split per-token outputs y: (total_tokens, ...) back into one tensor per clip."""
    return list(torch.split(y[: batch.n_real], batch.seqlens))
