"""Spacetime patches and Patch n' Pack: exact round trips, FFD, positions, segments, dropping."""

import math

import pytest
import torch

from generator.packing import (
    Clip, collate, drop_tokens, first_fit_decreasing, pack_clips, pack_stream, stream_bins, unpack)
from generator.patches import grid_size, patch_padding, patchify, positions, unpatchify, video_token_count

PATCH = (1, 2, 2)
D_IN = 4 * math.prod(PATCH)


@pytest.mark.parametrize("shape,patch", [
    ((3, 5, 17, 23), (2, 4, 4)), ((4, 1, 9, 7), (1, 2, 2)), ((2, 7, 8, 8), (3, 2, 2)), ((1, 1, 1, 1), (2, 2, 2))])
def test_unpatchify_inverts_patchify_exactly(shape, patch):
    x = torch.randn(shape)
    tokens, grid = patchify(x, *patch)
    C, T, H, W = shape
    assert tuple(grid) == tuple(math.ceil(s / p) for s, p in zip((T, H, W), patch))
    assert tokens.shape == (grid.n_tokens, C * math.prod(patch))
    assert torch.equal(unpatchify(tokens, grid, *patch, C, T, H, W), x)


def test_padding_is_recorded_and_zero():
    x = torch.randn(3, 5, 17, 23)
    assert patch_padding(5, 17, 23, 2, 4, 4) == (1, 3, 1)
    tokens, grid = patchify(x, 2, 4, 4)
    padded = unpatchify(tokens, grid, 2, 4, 4, 3, 6, 20, 24)          # keep the padding
    assert padded[:, 5:].abs().sum() == 0 and padded[:, :, 17:].abs().sum() == 0
    assert padded[:, :, :, 23:].abs().sum() == 0


def test_positions_name_the_patch_each_token_came_from():
    x = torch.randn(2, 4, 6, 10)
    tokens, grid = patchify(x, 2, 2, 2)
    pos = positions(grid)
    assert pos.shape == (grid.n_tokens, 3) and pos.dtype == torch.long
    for i in [0, 5, grid.n_tokens - 1]:
        t, h, w = pos[i].tolist()
        patch = x[:, 2 * t:2 * t + 2, 2 * h:2 * h + 2, 2 * w:2 * w + 2]
        assert torch.equal(tokens[i], patch.reshape(-1))


def test_token_count_arithmetic_matches_patchify():
    # 318x178, 31 frames, 4x8x8 causal autoencoder -> latent (9, 23, 40), 1x2x2 patches.
    assert video_token_count(31, 178, 318) == grid_size(9, 23, 40, *PATCH).n_tokens == 9 * 12 * 20


def make_clip(T, H, W, L=3, key="", **kw):
    return Clip.from_latent(torch.randn(4, T, H, W), PATCH, torch.randn(L, 8), key=key, **kw)


def test_ffd_fills_bins_and_places_every_item_once():
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 400, (300,), generator=g).tolist()
    bins = first_fit_decreasing(sizes, 1000)
    placed = sorted(i for b in bins for i in b)
    assert placed == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in b) <= 1000 for b in bins)
    assert len(bins) <= math.ceil(sum(sizes) / 1000) + 1       # near the lower bound on this mix


def test_ffd_rejects_items_over_budget():
    with pytest.raises(ValueError, match="token_budget"):
        first_fit_decreasing([5, 11], 10)


def test_pack_clips_layout_segments_and_positions():
    clips = [make_clip(3, 9, 7, key="a"), make_clip(1, 16, 12, L=5, key="img"), make_clip(5, 4, 4, key="b"),
             make_clip(2, 6, 6, key="c")]
    packs = pack_clips(clips, token_budget=128)
    by_key = {c.key: c for c in clips}
    seen = []
    for pack in packs:
        pack.validate()
        assert pack.x.shape == (128, D_IN)
        seg = pack.segment_ids
        assert (seg[pack.n_real:] == -1).all() and (seg[:pack.n_real] >= 0).all()
        assert pack.x[pack.n_real:].abs().sum() == 0
        for i, (key, toks) in enumerate(zip(pack.keys, unpack(pack, pack.x))):
            clip = by_key[key]
            lo, hi = pack.cu_seqlens[i].item(), pack.cu_seqlens[i + 1].item()
            assert (seg[lo:hi] == i).all()
            assert torch.equal(toks, clip.tokens)                     # every token, in order
            assert torch.equal(pack.pos[lo:hi], positions(clip.grid))  # restarting at 0
            assert pack.grids[i].tolist() == list(clip.grid)
            L = clip.text.shape[0]
            assert torch.equal(pack.text[i, :L], clip.text) and pack.text_mask[i].sum() == L
            seen.append(key)
    assert sorted(seen) == sorted(by_key)                              # each clip exactly once


def test_pack_clips_oversize_error_or_split():
    big = make_clip(6, 8, 8, key="big")                                # 6 * 16 = 96 tokens
    with pytest.raises(ValueError, match="oversize='split'"):
        pack_clips([big], token_budget=40)
    packs = pack_clips([big], token_budget=40, oversize="split")       # 2 frames (32 tokens) per chunk
    chunks = [t for p in packs for t in unpack(p, p.x)]
    assert torch.equal(torch.cat(chunks), big.tokens)
    assert all(p.pos[:, 0].max() <= 1 for p in packs)
    with pytest.raises(ValueError, match="one latent frame"):
        pack_clips([make_clip(1, 20, 20)], token_budget=40, oversize="split")


def test_navit_dropping_keeps_requested_fraction_and_positions():
    clip = make_clip(4, 10, 10)                                        # 100 tokens
    dropped = drop_tokens(clip, 0.3, torch.Generator().manual_seed(0))
    assert dropped.n_tokens == 70
    assert torch.equal(dropped.tokens, clip.tokens[dropped.keep])
    assert torch.equal(dropped.positions(), positions(clip.grid)[dropped.keep])
    packs = pack_clips([clip, make_clip(2, 4, 4)], 256, drop_rate=0.5, generator=torch.Generator().manual_seed(1))
    assert sorted(packs[0].seqlens) == [4, 50]


def test_pack_stream_uses_every_clip_once_and_fills_budgets():
    g = torch.Generator().manual_seed(0)
    shapes = [(int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(2, 17, (1,), generator=g)),
               int(torch.randint(2, 17, (1,), generator=g))) for _ in range(300)]
    clips = (make_clip(*s, key=str(i)) for i, s in enumerate(shapes))
    packs = list(pack_stream(clips, token_budget=512, buffer_size=64))
    keys = [k for p in packs for k in p.keys]
    assert sorted(keys, key=int) == [str(i) for i in range(300)]
    real = sum(p.n_real for p in packs)
    assert real / (512 * len(packs)) > 0.95


def test_stream_bins_is_generic_over_sizes():
    bins = list(stream_bins(iter([7, 3, 5, 5, 2, 8]), int, budget=10, buffer_size=3))
    assert sorted(x for b in bins for x in b) == [2, 3, 5, 5, 7, 8]
    assert all(sum(b) <= 10 for b in bins)


def test_collate_without_budget_has_no_padding():
    batch = collate([make_clip(1, 4, 4), make_clip(2, 2, 2)])
    assert batch.x.shape[0] == batch.n_real == 6 and batch.cu_seqlens.tolist() == [0, 4, 6]
