"""Near-duplicate groups from clip embeddings, keeping the best clip of each group.

Two signals decide together: the CLIP video embedding (what the clip shows) and the pixel
signature (``frames.pixel_signature``: where the colours are). Each is a unit vector; their
concatenation scaled by 1/sqrt(2) (``combine_signals``) has as dot product the MEAN of the two
cosines, and ``threshold`` applies to that mean. CLIP alone calls two different red balls on
blue "duplicates" as soon as the model is weak or the content is simple; pixels alone miss a
re-encode that changed the framing. Needing both to be high on average keeps precision
without a model-specific cosine. Clips without a pixel signature count with CLIP alone at half
weight, so they need an exact CLIP match to reach any threshold above 0.5.

Pairs come from blockwise matrix products of the normalised embeddings (``block`` rows at a
time against all rows: O(N^2 D) arithmetic in BLAS, O(block x N) memory, no Python loop over
pairs); groups are the connected components of the pairs at cosine >= ``threshold``
(union-find over the found pairs only). For tens of millions of clips, swap
``near_duplicate_pairs`` for an ANN index (FAISS range search) — the rest stays the same.

The kept clip of a group is the first by ``keep_order``, an SQL ORDER BY over ``clips_v``
(default: the highest resolution, then the first seen — earliest ingested, earliest in its
video: a repeat or re-upload loses to its original), after clips another stage rejected. Group ids are derived from the kept clip's id, so a
rerun that finds the same group gives it the same id.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

DEFAULT_KEEP_ORDER = "width * height DESC, created_at, video_id, start_s, clip_id"
DEDUP_STAGE = "dedup"
SIGNATURE_MODEL = "pixels-16x16-v2"  # embeddings.model of the pixel signatures (v2: time mean + first anchor)


@dataclass(frozen=True)
class DedupConfig:
    """When two clips are near-duplicates and which of a group is kept."""

    threshold: float = 0.80  # mean of CLIP and pixel-signature cosines at or above which clips are duplicates
    keep_order: str = DEFAULT_KEEP_ORDER  # SQL ORDER BY over clips_v; the first clip is kept
    block: int = 4096  # rows per matrix product
    max_drop_fraction: float = 0.5  # refuse to drop more than this share of the clips (see check_spread)

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0 or self.block < 1 or not 0 < self.max_drop_fraction <= 1:
            raise ValueError("dedup threshold must be a cosine in [-1, 1], block >= 1 and "
                             f"max_drop_fraction in (0, 1], got {self}")


def typical_cosine(emb: np.ndarray, sample: int = 2048, seed: int = 0) -> float:
    """Median dot product of distinct clips of a random sample: how similar *unrelated* clips look.

    A trained model spreads clips out (median well below any duplicate threshold); an untrained
    or collapsed one maps everything to nearly the same direction, and every clip would look like
    a near-duplicate of every other.
    """
    if len(emb) < 2:
        return 0.0
    idx = np.random.default_rng(seed).permutation(len(emb))[:sample]
    sub = np.ascontiguousarray(emb[idx], np.float32)
    sims = sub @ sub.T
    return float(np.median(sims[np.triu_indices(len(sub), k=1)]))


def degenerate_reason(emb: np.ndarray, groups: list["DuplicateGroup"], config: DedupConfig) -> str | None:
    """Why the groups must not be applied (the embedding space is collapsed), or None."""
    n = len(emb)
    typical = typical_cosine(emb)
    dropped = sum(len(g.dropped) for g in groups)
    if n >= 3 and typical >= config.threshold:
        return (f"unrelated clips have median similarity {typical:.3f} >= threshold {config.threshold}: "
                "the embedding space does not separate clips (CLIP untrained or collapsed); use trained "
                "weights (--clip-pretrained, or vidcorpus train-clip) or raise --dedup-threshold")
    if n >= 3 and dropped > config.max_drop_fraction * n:
        return (f"{dropped} of {n} clips would be dropped as duplicates (> {config.max_drop_fraction:.0%}; "
                f"median cosine of unrelated clips {typical:.3f}); check the CLIP weights or raise "
                "--dedup-threshold")
    return None


@dataclass
class DuplicateGroup:
    """One group of near-duplicates: ``kept`` plus the ``dropped`` members (with their cosine)."""

    group_id: int
    kept: str
    dropped: list[tuple[str, float]]

    @property
    def members(self) -> list[str]:
        return [self.kept] + [c for c, _ in self.dropped]


def near_duplicate_pairs(emb: np.ndarray, threshold: float, block: int = 4096) -> np.ndarray:
    """Index pairs (i, j), i < j, with ``emb[i] . emb[j] >= threshold``; ``emb`` (N, D) normalised."""
    emb = np.ascontiguousarray(emb, np.float32)
    pairs = []
    for start in range(0, len(emb), block):
        sims = emb[start:start + block] @ emb.T  # (b, N)
        rows, cols = np.nonzero(sims >= threshold)
        rows = rows + start
        upper = cols > rows
        pairs.append(np.stack([rows[upper], cols[upper]], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Component label (the smallest member index) of each of ``n`` items linked by ``pairs``."""
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs.tolist():  # one union per found pair, not per candidate pair
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    while not np.array_equal(parent[parent], parent):  # pointer jumping: every item to its root
        parent = parent[parent]
    return parent


def group_id(kept_clip_id: str) -> int:
    """A stable id (< 2^48, exact as a float score) named after the group's kept clip."""
    return int(hashlib.sha1(kept_clip_id.encode()).hexdigest()[:12], 16)


def find_groups(clip_ids: list[str], emb: np.ndarray, rank: dict[str, int],
                config: DedupConfig) -> list[DuplicateGroup]:
    """Groups of two or more near-duplicates; in each, the clip with the lowest ``rank`` is kept."""
    pairs = near_duplicate_pairs(emb, config.threshold, config.block)
    labels = connected_components(len(clip_ids), pairs)
    members: dict[int, list[int]] = {}
    for i in np.nonzero(np.bincount(labels, minlength=len(clip_ids))[labels] > 1)[0].tolist():
        members.setdefault(int(labels[i]), []).append(i)
    groups = []
    for idx in members.values():
        order = sorted(idx, key=lambda i: (rank.get(clip_ids[i], len(rank)), clip_ids[i]))
        kept = order[0]
        cosines = emb[order[1:]] @ emb[kept]
        groups.append(DuplicateGroup(group_id(clip_ids[kept]), clip_ids[kept],
                                     [(clip_ids[i], float(c)) for i, c in zip(order[1:], cosines)]))
    return sorted(groups, key=lambda g: g.kept)


def combine_signals(clip_emb: np.ndarray, signatures: np.ndarray) -> np.ndarray:
    """(N, D + P) rows whose dot product is the mean of the CLIP and the signature cosines.

    ``clip_emb`` (N, D) and ``signatures`` (N, P) hold unit rows (a zero signature row: no
    layout, e.g. a black clip, which then matches nothing through pixels).
    """
    assert len(clip_emb) == len(signatures), f"{len(clip_emb)} embeddings vs {len(signatures)} signatures"
    return np.concatenate([clip_emb, signatures], axis=1).astype(np.float32) / np.sqrt(2.0)


def load_signatures(catalog, clip_ids: list[str]) -> np.ndarray:
    """Pixel signatures (N, P) of ``clip_ids`` in that order; zeros for a clip without one."""
    ids, vectors = load_embeddings(catalog, SIGNATURE_MODEL)
    where = {c: i for i, c in enumerate(ids)}
    out = np.zeros((len(clip_ids), vectors.shape[1] if len(ids) else 1), np.float32)
    for row, clip_id in enumerate(clip_ids):
        if clip_id in where:
            out[row] = vectors[where[clip_id]]
    return out


def load_embeddings(catalog, model: str) -> tuple[list[str], np.ndarray]:
    """Clip ids and (N, D) vectors of ``model``, leaving out clips another stage rejected for
    being unusable (anything but dedup and filter rules, e.g. decode_error)."""
    quoted = model.replace("'", "''")
    table = catalog.query(f"""
        SELECT clip_id, vector FROM embeddings WHERE model = '{quoted}'
          AND clip_id IN (SELECT clip_id FROM clips)
          AND clip_id NOT IN (SELECT clip_id FROM rejections WHERE reason IS NOT NULL
                              AND stage <> '{DEDUP_STAGE}' AND stage NOT LIKE 'filter:%')
        ORDER BY clip_id""")
    if table.num_rows == 0:
        return [], np.zeros((0, 0), np.float32)
    vectors = table["vector"].combine_chunks()
    flat = np.asarray(vectors.flatten(), np.float32)
    return table["clip_id"].to_pylist(), flat.reshape(table.num_rows, -1)


def keep_ranks(catalog, keep_order: str) -> dict[str, int]:
    """Rank of every clip under ``keep_order``, clips rejected by other stages last."""
    table: pa.Table = catalog.query(f"""
        SELECT clip_id FROM clips_v ORDER BY
          clip_id IN (SELECT clip_id FROM rejections WHERE reason IS NOT NULL
                      AND stage <> '{DEDUP_STAGE}'),
          {keep_order}""")
    return {clip_id: i for i, clip_id in enumerate(table["clip_id"].to_pylist())}
