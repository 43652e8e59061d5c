"""Near-duplicate grouping: blockwise pairs equal brute force; groups keep the best-ranked clip."""
from __future__ import annotations

import numpy as np

from pipelines.score.dedup import (
    DedupConfig, connected_components, find_groups, group_id, near_duplicate_pairs,
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
