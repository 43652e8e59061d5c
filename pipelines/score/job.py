"""The score job (frames → pixel stats → CLIP → dedup) and the filter job (SQL rules → funnel).

Both are recorded like ingest: a ``jobs`` row updated as batches land, and ROOT/jobs/<job_id>/
with the spec, stage stats and a summary. Everything they take is validated before anything
runs: SQL (``--where``, dedup keep order, filter rules) through the read-only path, weights
must be local files.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.ingest.config import RunnerConfig
from pipelines.jobs_record import JobRecord, new_job_id
from pipelines.score import records
from pipelines.score.dedup import (DEFAULT_KEEP_ORDER, DedupConfig, combine_signals, degenerate_reason,
                                   find_groups, keep_ranks, load_embeddings, load_signatures)
from pipelines.score.filters import Funnel, Rule, clips_v_columns, load_rules, run_funnel, validate_rules
from pipelines.score.stages import (
    DEFAULT_NEGATIVE_PROMPTS, ClipScoreConfig, ClipScoreStage, DecodeFramesStage, FrameStatsStage,
)
from pipelines.stages.base import StageStats, merge_stats, summarize_stats
from pipelines.stages.runners import create_runner

log = logging.getLogger(__name__)


class ScoreConfig(BaseModel):
    """Everything a score job needs besides the root (also the YAML spec of ``kind: score``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    clip_model: str = Field("vidcorpus-clip-tiny", description="open_clip model name.")
    clip_pretrained: str | None = Field(None, description="Local weights (None: random init).")
    device: str | None = Field(None, description="cuda / cpu (None: cuda when present).")
    precision: Literal["fp32", "amp_bf16"] | None = None
    n_frames: int = Field(8, ge=1, le=64, description="Frames decoded per clip.")
    decode_threads: int = Field(1, ge=0, description="FFmpeg threads per clip decode (0: FFmpeg's "
                                "choice; 1 suits one decode task per CPU).")
    negative_prompts: tuple[str, ...] = DEFAULT_NEGATIVE_PROMPTS
    dedup_threshold: float = Field(DedupConfig.threshold, ge=-1, le=1, description="Near-duplicates: mean of the CLIP "
                                   "and pixel-signature cosines at or above this.")
    dedup_keep: str = Field(DEFAULT_KEEP_ORDER, description="ORDER BY over clips_v: first is kept.")
    where: str | None = Field(None, description="SQL over clips_v choosing the clips to score.")
    rescore: bool = Field(False, description="Score clips that already have this model's embedding.")
    clip_actors: int = Field(1, ge=1)
    clips_per_batch: int = Field(16, ge=1)
    threads: int | None = Field(None, ge=1, description="torch CPU threads per CLIP worker.")
    runner: RunnerConfig = RunnerConfig()


@dataclass
class ScoreResult:
    job_id: str
    model: str
    stages: list[StageStats]
    counts: Counter = field(default_factory=Counter)
    duplicate_groups: int = 0
    duplicates_rejected: int = 0
    dedup_skipped: str | None = None  # why dedup was not applied (a collapsed embedding space)
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "counts": dict(self.counts), "wall_s": self.wall_s,
                "duplicate_groups": self.duplicate_groups, "duplicates_rejected": self.duplicates_rejected,
                "dedup_skipped": self.dedup_skipped}

    def text(self) -> str:
        n = sum(self.counts.values())
        rate = self.counts["scored"] / self.wall_s if self.wall_s else 0.0
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()) if k != "scored") or "none"
        lines = [f"score job {self.job_id} ({self.model}): {self.wall_s:.1f}s",
                 f"  clips: {n} in, {self.counts['scored']} scored ({rate:.2f} clips/s); rejected: {errors}",
                 f"  near-duplicates: {self.duplicate_groups} groups, {self.duplicates_rejected} rejected"
                 if not self.dedup_skipped else f"  near-duplicates: SKIPPED — {self.dedup_skipped}"]
        lines += [f"  stage {s.name}: in {s.n_in}, kept {s.kept}, dropped {s.dropped or '{}'}, "
                  f"busy {s.busy_s:.1f}s" for s in self.stages]
        return "\n".join(lines)


def build_score_stages(root_url: str, config: ScoreConfig, storage_options: dict | None = None):
    """frames → stats → clip, sized for ``config.clip_model``: frames decoded at the side its
    checkpoint's view recipe names, else at its input side (read from its config)."""
    from captioner.clip_model import input_size
    from captioner.clip_scorer import ClipScorerConfig, checkpoint_recipe
    from pipelines.score.frames import FrameConfig
    size = checkpoint_recipe(config.clip_pretrained).frame_size or input_size(config.clip_model)
    frames = FrameConfig(n_frames=config.n_frames, size=size, decode_threads=config.decode_threads)
    scorer = ClipScorerConfig(config.clip_model, config.clip_pretrained, config.device,
                              config.precision, threads=config.threads)
    clip = ClipScoreConfig(tuple(config.negative_prompts), actors=config.clip_actors,
                           clips_per_batch=config.clips_per_batch)
    return [DecodeFramesStage(root_url, frames, storage_options), FrameStatsStage(),
            ClipScoreStage(scorer, clip)]


def check_score_sql(catalog, config: ScoreConfig) -> None:
    """Refuse a ``where`` or keep order that does not run, before anything runs."""
    from storage import SQLError
    produced = ["motion", "luma", "black", "frozen", "clip_text", "clip_text_original",
                "clip_text_contrast", "dup_group"]
    missing = [c for c in produced if c not in clips_v_columns(catalog)]
    future = "".join(f", NULL::DOUBLE AS {c}" for c in missing)  # scores this job will add
    for what, sql in (("--where", f"SELECT count(*) FROM clips_v WHERE ({config.where or 'TRUE'})"),
                      ("dedup keep order", f"SELECT clip_id FROM (SELECT *{future} FROM clips_v) "
                                           f"ORDER BY {config.dedup_keep} LIMIT 0")):
        try:
            catalog.query(sql)
        except SQLError as e:
            raise ValueError(f"{what} cannot run: {e}. Columns of clips_v: "
                             f"{', '.join(clips_v_columns(catalog))}") from None


def run_score(root_url: str, config: ScoreConfig = ScoreConfig(), *, job_id: str | None = None,
              storage_options: dict | None = None) -> ScoreResult:
    """Score every selected clip, write scores/embeddings/caption scores, then dedup."""
    from captioner.clip_scorer import model_tag
    from storage import Catalog, CorpusRoot
    catalog = Catalog(CorpusRoot.open(root_url, storage_options=storage_options))
    check_score_sql(catalog, config)
    stages = build_score_stages(root_url, config, storage_options)  # validates model and weights
    tag = model_tag(config.clip_model, config.clip_pretrained)
    job_id = job_id or new_job_id("score")
    record = JobRecord(catalog, job_id, "score", {"kind": "score", "root": root_url, "model_tag": tag,
                                                  "config": config.model_dump(mode="json")})
    names = [s.name for s in stages]
    result = ScoreResult(job_id, tag, summarize_stats(names, []))
    t0 = time.perf_counter()
    try:
        _score_clips(catalog, config, stages, tag, record, result)
        _dedup(catalog, config, tag, job_id, result)
    except Exception:
        record.fail(result.stages, traceback.format_exc())
        raise
    result.wall_s = time.perf_counter() - t0
    record.finish(result.stages, result.summary(), result.text())
    return result


def _score_clips(catalog, config: ScoreConfig, stages, tag: str, record: JobRecord,
                 result: ScoreResult) -> None:
    rows = records.select_clips(catalog, tag, config.where, config.rescore)
    captions = records.caption_rows(catalog)
    prior = records.prior_rejections(catalog, records.SCORE_STAGE_PREFIX)
    log.info("score %s: %d clips to score with %s", result.job_id, len(rows), tag)
    runner = create_runner(config.runner.kind, config.runner.address, config.runner.num_cpus)
    names = [s.name for s in stages]
    for batch in runner.run(stages, rows, desc="clips", chunk=2 * config.clips_per_batch) if rows else []:
        result.counts += records.write_scored_batch(catalog, batch, tag, result.job_id, captions, prior)
        result.stages = merge_stats(result.stages, summarize_stats(names, batch))
        record.progress(result.stages)


def _dedup(catalog, config: ScoreConfig, tag: str, job_id: str, result: ScoreResult) -> None:
    dedup = DedupConfig(config.dedup_threshold, config.dedup_keep)
    clip_ids, emb = load_embeddings(catalog, tag)
    both = combine_signals(emb, load_signatures(catalog, clip_ids)) if clip_ids else emb
    groups = find_groups(clip_ids, both, keep_ranks(catalog, dedup.keep_order), dedup) if clip_ids else []
    reason = degenerate_reason(both, groups, dedup) if clip_ids else None
    if reason:  # refuse to mass-reject: leave the previous dedup state as it is
        log.warning("dedup skipped: %s", reason)
        result.dedup_skipped = reason
        return
    records.write_dedup(catalog, groups, job_id, dedup.threshold)
    result.duplicate_groups = len(groups)
    result.duplicates_rejected = sum(len(g.dropped) for g in groups)


# ----------------------------------------------------------------------------- filter job


@dataclass
class FilterResult:
    job_id: str
    funnel: Funnel
    wall_s: float = 0.0

    def text(self) -> str:
        return f"filter job {self.job_id}: {self.funnel.kept} of {self.funnel.start} clips kept " \
               f"({self.wall_s:.1f}s)\n{self.funnel.text()}"


def run_filter(root_url: str, rules: list[Rule] | None = None, *, rules_path: str | None = None,
               job_id: str | None = None, storage_options: dict | None = None) -> FilterResult:
    """Apply ``rules`` (default: ``rules_path`` or the default rules) and record the funnel."""
    from storage import Catalog, CorpusRoot
    catalog = Catalog(CorpusRoot.open(root_url, storage_options=storage_options))
    rules = rules if rules is not None else load_rules(rules_path)
    validate_rules(catalog, rules)  # refuses before anything is written
    job_id = job_id or new_job_id("filter")
    spec = {"kind": "filter", "root": root_url, "rules": {r.name: r.where for r in rules}}
    record = JobRecord(catalog, job_id, "filter", spec)
    t0 = time.perf_counter()
    try:
        funnel = run_funnel(catalog, rules)
        records.write_filter_rejections(catalog, funnel, job_id)
    except Exception:
        record.fail([], traceback.format_exc())
        raise
    result = FilterResult(job_id, funnel, time.perf_counter() - t0)
    stats = [StageStats(s.rule.stage, s.n_in, s.left, {s.rule.name: len(s.rejected)} if s.rejected else {})
             for s in funnel.steps]
    catalog.root.put_bytes(f"jobs/{job_id}/funnel.json", json.dumps(funnel.as_dict(), indent=2).encode())
    record.finish(stats, {"funnel": funnel.as_dict()}, result.text())
    return result
