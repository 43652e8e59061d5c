"""Catalog reads and writes of the score and filter jobs (rows in, rows out; no models).

Writes follow the catalog's rules: append-only, latest write of a key wins. A rejection is
withdrawn by writing the same (clip_id, stage) with ``reason = NULL`` (clips_v ignores it), so a
rerun with other thresholds or rules un-rejects clips it no longer rejects.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pipelines.score.dedup import DEDUP_STAGE, SIGNATURE_MODEL, DuplicateGroup
from pipelines.score.filters import FILTER_STAGE_PREFIX, Funnel
from pipelines.stages.base import DROP, DROPPED_AT, ERROR

STATS_SCORER = "frames-v1"  # scorer name of motion / luma / black / frozen
DEDUP_SCORER = "dedup"
CAPTION_SCORES = {"alt-text": "clip_text", "original": "clip_text_original"}
SCORE_STAGE_PREFIX = "score:"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def select_clips(catalog, model_tag: str, where: str | None, rescore: bool) -> list[dict[str, Any]]:
    """Clips to score, ordered by id, with their alt text and original description."""
    done = "" if rescore else (f"AND c.clip_id NOT IN (SELECT clip_id FROM embeddings "
                               f"WHERE model = {_quote(model_tag)})")
    table = catalog.query(f"""
        SELECT c.clip_id, c.uri, c.n_frames,
               (SELECT text FROM captions t WHERE t.clip_id = c.clip_id AND t.source = 'alt-text') AS alt_text,
               (SELECT text FROM captions t WHERE t.clip_id = c.clip_id AND t.source = 'original') AS original_text
        FROM clips_v c WHERE ({where or 'TRUE'}) {done}
        ORDER BY c.clip_id""")
    return table.to_pylist()


def caption_rows(catalog) -> dict[tuple[str, str], dict[str, Any]]:
    """Alt-text and original caption rows by (clip_id, source), to rewrite with ``clip_score``."""
    sources = ", ".join(_quote(s) for s in CAPTION_SCORES)
    rows = catalog.query(f"SELECT * FROM captions WHERE source IN ({sources})").to_pylist()
    return {(r["clip_id"], r["source"]): r for r in rows}


def prior_rejections(catalog, prefix: str) -> set[tuple[str, str]]:
    """(clip_id, stage) of standing rejections whose stage starts with ``prefix``."""
    rows = catalog.query(f"SELECT clip_id, stage FROM rejections WHERE reason IS NOT NULL "
                         f"AND starts_with(stage, {_quote(prefix)})").to_pylist()
    return {(r["clip_id"], r["stage"]) for r in rows}


def write_scored_batch(catalog, batch: list[dict], model_tag: str, job_id: str,
                       captions: dict, prior: set[tuple[str, str]]) -> Counter:
    """Embeddings, scores, caption clip scores and rejections of one output batch; returns counts."""
    ok = [r for r in batch if not r.get(DROP)]
    embeddings, scores, caption_updates = [], [], []
    for r in ok:
        clip_id = r["clip_id"]
        embeddings.append(dict(clip_id=clip_id, model=model_tag, vector=r["embedding"], job_id=job_id))
        if r.get("signature") is not None:
            embeddings.append(dict(clip_id=clip_id, model=SIGNATURE_MODEL, vector=r["signature"], job_id=job_id))
        stats, clip = json.loads(r["stats_json"]), json.loads(r["clip_json"])
        scores += [dict(clip_id=clip_id, name=k, scorer=STATS_SCORER, value=v, job_id=job_id)
                   for k, v in stats.items()]
        scores += [dict(clip_id=clip_id, name=k, scorer=model_tag, value=v, job_id=job_id)
                   for k, v in clip.items()]
        for source, name in CAPTION_SCORES.items():
            if (clip_id, source) in captions and name in clip:
                caption_updates.append({**captions[(clip_id, source)], "clip_score": clip[name]})
    rejections = [dict(clip_id=r["clip_id"], stage=SCORE_STAGE_PREFIX + r[DROPPED_AT], reason=r[DROP],
                       detail=r.get(ERROR), job_id=job_id) for r in batch if r.get(DROP)]
    scored = {r["clip_id"] for r in ok}
    rejections += [dict(clip_id=c, stage=s, reason=None, detail=f"cleared: scored by {job_id}",
                        job_id=job_id) for c, s in sorted(prior) if c in scored]
    catalog.append("embeddings", embeddings)
    catalog.append("scores", scores)
    catalog.append("captions", caption_updates)
    catalog.append("rejections", rejections)
    return Counter(scored=len(ok), **Counter(r[DROP] for r in batch if r.get(DROP)))


def write_dedup(catalog, groups: list[DuplicateGroup], job_id: str, threshold: float) -> None:
    """``dup_group`` for every member, ``duplicate`` rejections for the dropped; stale ones withdrawn."""
    members = {m for g in groups for m in g.members}
    dropped = {c for g in groups for c, _ in g.dropped}
    stale_groups = catalog.query(
        f"SELECT clip_id FROM scores WHERE name = 'dup_group' AND scorer = '{DEDUP_SCORER}' "
        "AND value IS NOT NULL")["clip_id"].to_pylist()
    scores = [dict(clip_id=m, name="dup_group", scorer=DEDUP_SCORER, value=float(g.group_id),
                   job_id=job_id) for g in groups for m in g.members]
    scores += [dict(clip_id=c, name="dup_group", scorer=DEDUP_SCORER, value=None, job_id=job_id)
               for c in sorted(set(stale_groups) - members)]
    rejections = [dict(clip_id=c, stage=DEDUP_STAGE, reason="duplicate", job_id=job_id,
                       detail=f"near-duplicate of {g.kept} (similarity {cos:.3f} >= {threshold})")
                  for g in groups for c, cos in g.dropped]
    rejections += [dict(clip_id=c, stage=s, reason=None, detail=f"cleared: kept by {job_id}",
                        job_id=job_id)
                   for c, s in sorted(prior_rejections(catalog, DEDUP_STAGE)) if c not in dropped]
    catalog.append("scores", scores)
    catalog.append("rejections", rejections)


def write_filter_rejections(catalog, funnel: Funnel, job_id: str) -> None:
    """One rejection per clip that failed a rule; earlier filter rejections not repeated are withdrawn."""
    rows, asserted = [], set()
    for step in funnel.steps:
        detail = f"fails rule {step.rule.name}: {step.rule.where}"
        for clip_id in step.rejected:
            rows.append(dict(clip_id=clip_id, stage=step.rule.stage, reason=step.rule.name,
                             detail=detail, job_id=job_id))
            asserted.add((clip_id, step.rule.stage))
    rows += [dict(clip_id=c, stage=s, reason=None, detail=f"cleared: passes in {job_id}", job_id=job_id)
             for c, s in sorted(prior_rejections(catalog, FILTER_STAGE_PREFIX) - asserted)]
    catalog.append("rejections", rows)
