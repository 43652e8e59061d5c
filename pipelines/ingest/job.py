"""The ingest job: discover → probe → shot split → extract, writing the catalog as it goes.

Resumable by construction: a video's clips are written before its ``videos`` row (the completion
mark), ids are deterministic, and views show each key once; a re-run skips every video whose
row exists for the same uri, size, mtime and split version.
"""
from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import json

from pipelines.ingest.config import IngestConfig
from pipelines.ingest.discover import Source, discover
from pipelines.ingest.stages import ClipExtractStage, ProbeStage, ShotSplitStage
from pipelines.jobs_record import JobRecord, new_job_id
from pipelines.stages.base import DROP, ERROR, StageStats, merge_stats, summarize_stats
from pipelines.stages.runners import create_runner

log = logging.getLogger(__name__)
VIDEO_COLS = ("container", "codec", "pix_fmt", "width", "height", "sar", "fps", "duration_s",
              "n_frames", "rotation", "has_audio", "vfr")


@dataclass
class IngestResult:
    job_id: str
    stages: list[StageStats]
    videos_ok: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    clips: int = 0
    seconds_in: float = 0.0
    seconds_out: float = 0.0
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "stages"}

    def text(self, num_cpus: int) -> str:
        q = ", ".join(f"{k} {v}" for k, v in sorted(self.quarantined.items())) or "none"
        rate = self.clips / self.wall_s if self.wall_s else 0.0
        per_core_hour = self.seconds_in / 3600 / max(self.wall_s * num_cpus / 3600, 1e-9)
        lines = [f"ingest job {self.job_id}: {self.wall_s:.1f}s",
                 f"  videos: {self.videos_ok} ok, quarantined: {q}; skipped (already done): {self.skipped}",
                 f"  clips: {self.clips}; hours of video in {self.seconds_in / 3600:.3f}, "
                 f"out {self.seconds_out / 3600:.3f}",
                 f"  throughput: {rate:.2f} clips/s, {per_core_hour:.2f} video-hours per core-hour "
                 f"({num_cpus} CPUs)"]
        lines += [f"  stage {s.name}: in {s.n_in}, kept {s.kept}, dropped {s.dropped or '{}'}, "
                  f"busy {s.busy_s:.1f}s" for s in self.stages]
        return "\n".join(lines)


def run_ingest(sources: list[str], root_url: str, config: IngestConfig = IngestConfig(), *,
               job_id: str | None = None, storage_options: dict | None = None) -> IngestResult:
    """Run one ingest job; returns counts. Bad videos are quarantined, never fatal."""
    from storage import Catalog, CorpusRoot
    catalog = Catalog(CorpusRoot.open(root_url, create=True, storage_options=storage_options))
    job_id = job_id or new_job_id("ingest")
    record = JobRecord(catalog, job_id, "ingest", {"kind": "ingest", "sources": sources,
                                                   "root": root_url, "config": config.model_dump()})
    split_version = config.split_version()
    stages = [ProbeStage(storage_options),
              ShotSplitStage(config.detector, config.split, config.runner.detector_actors, storage_options),
              ClipExtractStage(root_url, config.extract, split_version, storage_options)]
    names = [s.name for s in stages]
    result = IngestResult(job_id, summarize_stats(names, []))
    t0 = time.perf_counter()
    try:
        todo, result.skipped = _todo(catalog, discover(sources, config.extensions, storage_options),
                                     split_version)
        log.info("ingest %s: %d videos to process, %d already done", job_id, len(todo), result.skipped)
        runner = create_runner(config.runner.kind, config.runner.address, config.runner.num_cpus)
        rows = [{"uri": s.uri, "bytes": s.bytes, "source_mtime": s.mtime} for s in todo]
        for batch in runner.run(stages, rows, desc="videos", chunk=4) if rows else []:
            _write_batch(catalog, batch, job_id, split_version, result)
            result.stages = merge_stats(result.stages, summarize_stats(names, batch))
            record.progress(result.stages)
    except Exception:
        record.fail(result.stages, traceback.format_exc())
        raise
    result.wall_s = time.perf_counter() - t0
    record.finish(result.stages, result.summary(), result.text(_cpus(config)))
    return result


def _cpus(config: IngestConfig) -> int:
    import os
    return config.runner.num_cpus or os.cpu_count() or 1


def _todo(catalog, sources: list[Source], split_version: str) -> tuple[list[Source], int]:
    done = {(r["uri"], r["bytes"], r["source_mtime"]) for r in catalog.query(
        "SELECT uri, bytes, source_mtime FROM videos WHERE split_version = "
        f"'{split_version}'").to_pylist()}
    todo = [s for s in sources if (s.uri, s.bytes, s.mtime) not in done]
    return todo, len(sources) - len(todo)


def _write_batch(catalog, batch: list[dict], job_id: str, split_version: str, result: IngestResult) -> None:
    """Clips first, then the videos rows that mark each video done."""
    clips = [dict(c, job_id=job_id) for r in batch if not r.get(DROP) and r.get("clips_json")
             for c in json.loads(r["clips_json"])]
    catalog.append("clips", clips)
    now = datetime.now(timezone.utc)
    videos = []
    for r in batch:
        n = len(json.loads(r["clips_json"])) if r.get("clips_json") and not r.get(DROP) else 0
        status = "ok" if not r.get(DROP) else "quarantined"
        videos.append(dict(
            video_id=r.get("video_id") or f"unhashed:{r['uri']}", uri=r["uri"], bytes=r["bytes"],
            source_mtime=r["source_mtime"], split_version=split_version, n_clips=n,
            status=status, error_class=r.get(DROP), error=r.get(ERROR) or r.get("clip_errors"),
            job_id=job_id, ingested_at=now, transitions=r.get("transitions_json"),
            **{c: r.get(c) for c in VIDEO_COLS}))
        if status == "ok":
            result.videos_ok += 1
            result.seconds_in += float(r.get("duration_s") or 0)
        else:
            result.quarantined = dict(Counter(result.quarantined) + Counter([r[DROP]]))
    catalog.append("videos", videos)
    result.clips += len(clips)
    result.seconds_out += sum(float(c["duration_s"] or 0) for c in clips)
