"""The loader's clip plan: time pieces of whole latent frames, NaViT resolution sampling, and the
arithmetic plan (`plan_clip`) that the packing benchmark uses, checked against real clips."""

from dataclasses import replace

import numpy as np
import pytest

from generator.data import ClipMaker, DataConfig, fit_size, plan_clip, target_pixels
from generator.packing import split_frames, stream_bins
from generator.text import TextEncoder
from generator.vae import load_autoencoder
from storage.shards import read_shards

pytestmark = pytest.mark.usefixtures("one_thread")


def test_split_frames_fills_pieces_and_leaves_one_tail():
    assert split_frames(5, 16, 100) == [5]                       # fits: one piece
    assert split_frames(13, 16, 100) == [6, 6, 1]                 # 96-token pieces, 16-token tail
    assert split_frames(1, 16, 16) == [1]
    with pytest.raises(ValueError, match="one latent frame"):
        split_frames(2, 101, 100)


def test_navit_areas_are_drawn_in_range_and_never_upscale():
    config = DataConfig(max_pixels=64 * 64, min_pixels=16 * 16)
    rng = np.random.default_rng(0)
    areas = [target_pixels(config, rng) for _ in range(500)]
    assert 16 * 16 <= min(areas) and max(areas) <= 64 * 64
    assert np.median(areas) == pytest.approx(32 * 32, rel=0.2)     # log-uniform: median at the geometric mean
    assert fit_size(48, 40, 64 * 64, 8) == (48, 40)                # small clips keep their size
    assert target_pixels(DataConfig(max_pixels=4096), rng) == 4096
    with pytest.raises(ValueError, match="min_pixels"):
        DataConfig(max_pixels=1024, min_pixels=2048)


@pytest.mark.parametrize("data", [
    DataConfig(token_budget=64, max_frames=None, max_pixels=32 * 32, min_pixels=12 * 12),
    DataConfig(token_budget=40, max_frames=7, max_pixels=48 * 48, min_pixels=16 * 16, drop_rate=0.25),
    DataConfig(token_budget=256, max_frames=5, max_pixels=32 * 32),
])
def test_plan_clip_matches_the_clips_the_loader_makes(root, data):
    maker = ClipMaker(data, load_autoencoder("pixel:4"), TextEncoder(), (1, 2, 2))
    sizes = set()
    for i, sample in enumerate(read_shards(str(root / "shards" / "toy"))):
        meta = sample["json"]
        clips = maker(sample, seed=i)
        plan = plan_clip(meta["n_frames"], meta["height"], meta["width"], data, maker.ae.compression,
                         maker.patch, np.random.default_rng(i))
        assert [c.n_tokens for c in clips] == plan.pieces
        assert sum(c.grid.nt for c in clips) == plan.frames                 # pixel:4 keeps every frame
        assert tuple(clips[0].grid)[1:] == (plan.height // 8, plan.width // 8)
        assert all(c.n_tokens <= data.token_budget for c in clips)
        sizes.add(tuple(clips[0].grid)[1:])
        if len(clips) > 1:                                         # whole latent frames, in order
            assert [c.key for c in clips] == [f"{sample['__key__']}#t{s}" for s in
                                              np.cumsum([0] + [c.grid.nt for c in clips[:-1]])]
    assert len(sizes) > (4 if data.min_pixels else 3)             # NaViT draws add sizes to the 4 native ones


def test_time_pieces_and_navit_sizes_fill_packs_to_within_three_percent():
    """Long clips over the budget: cut in time, pieces nearly fill packs and tails fill the gaps."""
    rng = np.random.default_rng(0)
    data = DataConfig(token_budget=1024, max_frames=None, max_pixels=128 * 128, min_pixels=64 * 64)
    clips = [(int(rng.integers(1, 200)), int(rng.choice([144, 240, 360])), int(rng.choice([256, 426, 640])))
             for _ in range(300)]
    tokens = [n for f, h, w in clips for n in plan_clip(f, h, w, data, (4, 8, 8), (1, 2, 2), rng).pieces]
    packs = list(stream_bins(iter(tokens), int, 1024, buffer_size=64))
    assert sorted(x for p in packs for x in p) == sorted(tokens) and all(sum(p) <= 1024 for p in packs)
    whole = plan_clip(197, 360, 640, replace(data, token_budget=10**6), (4, 8, 8), (1, 2, 2), rng)
    assert max(tokens) <= 1024 < whole.pieces[0]                                # long clips were cut
    assert 1 - sum(tokens) / (1024 * len(packs)) < 0.03
