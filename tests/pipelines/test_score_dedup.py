"""Near-duplicate grouping: blockwise pairs equal brute force; groups keep the best-ranked clip."""
from __future__ import annotations

import numpy as np

from pipelines.score.dedup import (
    DedupConfig, combine_signals, connected_components, degenerate_reason, find_groups, group_id,
    near_duplicate_pairs, typical_cosine,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_blockwise_pairs_equal_brute_force():
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(40, 16)))
    emb = _unit(np.concatenate([base, base[:10] + 0.05 * rng.normal(size=(10, 16))]))
    sims = emb @ emb.T
    expected = {(i, j) for i in range(len(emb)) for j in range(i + 1, len(emb)) if sims[i, j] >= 0.9}
    got = {tuple(p) for p in near_duplicate_pairs(emb, 0.9, block=7).tolist()}
    assert got == expected and len(expected) >= 10


def test_connected_components_are_transitive():
    labels = connected_components(6, np.array([[0, 3], [3, 5], [1, 2]]))
    assert labels.tolist() == [0, 1, 1, 0, 4, 0]


def test_groups_keep_lowest_rank_and_ids_follow_the_kept_clip():
    rng = np.random.default_rng(1)
    a, b, c = _unit(rng.normal(size=(3, 8)))
    emb = _unit(np.stack([a, a + 0.01, b, c, c + 0.01, c - 0.01]))
    ids = ["a1", "a2", "b", "c1", "c2", "c3"]
    rank = {"a2": 0, "a1": 1, "c3": 2, "c1": 3, "c2": 4, "b": 5}
    groups = find_groups(ids, emb, rank, DedupConfig(threshold=0.99))
    assert [(g.kept, sorted(c for c, _ in g.dropped)) for g in groups] == [("a2", ["a1"]), ("c3", ["c1", "c2"])]
    assert groups[0].group_id == group_id("a2") < 2 ** 48
    assert all(cos >= 0.99 for g in groups for _, cos in g.dropped)


def test_a_collapsed_embedding_space_is_refused_not_applied():
    """An untrained CLIP maps every clip to almost one direction; dedup must not reject them all."""
    rng = np.random.default_rng(0)
    config = DedupConfig(threshold=0.95)
    spread = rng.normal(size=(60, 32)).astype(np.float32)
    spread[1] = spread[0] + 0.01 * rng.normal(size=32)  # one real duplicate pair
    spread /= np.linalg.norm(spread, axis=1, keepdims=True)
    ids = [f"c{i:02d}" for i in range(60)]
    groups = find_groups(ids, spread, {}, config)
    assert [g.members for g in groups] == [["c00", "c01"]]
    assert degenerate_reason(spread, groups, config) is None
    collapsed = np.ones((60, 32), np.float32) + 0.05 * rng.normal(size=(60, 32)).astype(np.float32)
    collapsed /= np.linalg.norm(collapsed, axis=1, keepdims=True)
    assert typical_cosine(collapsed) > 0.95
    groups = find_groups(ids, collapsed, {}, config)
    assert sum(len(g.dropped) for g in groups) == 59  # what would happen without the guard
    assert "does not separate clips" in degenerate_reason(collapsed, groups, config)


def test_combined_signal_needs_clip_and_pixels_to_agree():
    """Same content by CLIP but another layout (two different red balls) is not a duplicate;
    a black clip (zero pixel signature) matches no other black clip."""
    rng = np.random.default_rng(2)
    clip = _unit(rng.normal(size=(4, 16)))
    clip[1] = clip[0]  # CLIP cannot tell 0 and 1 apart
    clip[3] = clip[2]
    pix = _unit(rng.normal(size=(4, 12)))
    pix[1] = _unit((pix[0] + 0.1 * rng.normal(size=12))[None])[0]  # a shifted re-render of 0
    pix[2:] = 0.0  # 2 and 3: flat (black) clips
    both = combine_signals(clip, pix)
    assert np.allclose(both @ both.T, 0.5 * (clip @ clip.T + pix @ pix.T), atol=1e-6)
    groups = find_groups(["a", "b", "k1", "k2"], both, {}, DedupConfig(threshold=0.85))
    assert [g.members for g in groups] == [["a", "b"]]
    pix[1] = _unit(rng.normal(size=(1, 12)))[0]  # another layout: no longer a duplicate
    assert find_groups(["a", "b", "k1", "k2"], combine_signals(clip, pix), {}, DedupConfig(threshold=0.85)) == []
