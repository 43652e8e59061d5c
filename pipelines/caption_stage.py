"""Dense re-captioning: the caption stage (actor pool, batched greedy generation) and its job.

``run_caption_job`` selects clips from the catalog (``--where`` over ``clips_v``) that have no
caption from this checkpoint yet, runs :class:`CaptionStage` on the local or Ray runner and
appends ``captions`` rows with source ``captioner:<run>@step<N>`` (or ``teacher:<name>``) and,
when a CLIP model is configured, the caption's CLIP score. Clips that cannot be decoded get a
``rejections`` row (stage ``caption``, reason ``decode_error``). Reruns skip captioned clips.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.jobs_record import JobRecord, new_job_id
from pipelines.stages.base import DROP, ERROR, Drop, Resources, Stage, StageStats, merge_stats, \
    summarize_stats
from pipelines.stages.runners import create_runner

log = logging.getLogger(__name__)


class CaptionJobConfig(BaseModel):
    """What to caption, with which model, on which runner."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str
    model: Optional[str] = None  # captioner checkpoint file or run directory
    teacher: Optional[str] = None  # local Hugging Face VLM directory (captioner/teacher.py)
    where: Optional[str] = None  # SQL predicate over clips_v
    runner: Literal["local", "ray"] = "ray"
    address: Optional[str] = None
    num_cpus: Optional[int] = None
    actors: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)
    num_gpus: float = Field(0.0, ge=0)  # per actor, used only when the cluster has GPUs
    clip_model: Optional[str] = None
    clip_pretrained: Optional[str] = None

    @model_validator(mode="after")
    def _one_model(self):
        if (self.model is None) == (self.teacher is None):
            raise ValueError("set exactly one of model (captioner checkpoint) or teacher (VLM dir)")
        if self.clip_pretrained and not self.clip_model:
            raise ValueError("clip_pretrained needs clip_model (the open_clip architecture name)")
        return self


def load_predictor(model: str | None, teacher: str | None):
    """The student (``CaptionPredictor``) or teacher (``TeacherCaptioner``) to caption with."""
    if model is not None:
        from captioner.captioner_infer import CaptionPredictor
        return CaptionPredictor.load(model)
    from captioner.teacher import TeacherCaptioner
    return TeacherCaptioner.load(teacher)


class CaptionStage(Stage):
    """Samples each clip's frames once (per row), then captions the batch in one generate call.

    Adds ``caption``, ``caption_source``, ``caption_tokens`` and (with a CLIP model)
    ``caption_clip_score``. An undecodable clip is dropped as ``decode_error``.
    """

    name = "caption"

    def __init__(self, model: str | None = None, teacher: str | None = None, batch_size: int = 16,
                 actors: int = 1, num_gpus: float = 0.0, clip_model: str | None = None,
                 clip_pretrained: str | None = None):
        self.model, self.teacher = model, teacher
        self.clip_model, self.clip_pretrained = clip_model, clip_pretrained
        self.resources = Resources(num_cpus=1, num_gpus=num_gpus, batch_size=batch_size, actors=actors)

    def setup(self) -> None:
        self.predictor = load_predictor(self.model, self.teacher)
        self.scorer = None
        if self.clip_model:
            from captioner.clip_scorer import ClipScorer, ClipScorerConfig
            self.scorer = ClipScorer(ClipScorerConfig(self.clip_model, self.clip_pretrained)).load()
        self._frames: dict[str, Any] = {}

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            self._frames[row["clip_id"]] = self.predictor.frames(row["uri"])
        except Exception as e:  # any decoder error is this clip's problem, not the job's
            raise Drop("decode_error", f"{type(e).__name__}: {e}") from e
        return {}

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = super().__call__(batch)  # frames per row, drops recorded by the base class
        todo = [r for r in rows if not r.get(DROP)]
        if not todo:
            return rows
        t0 = time.perf_counter()
        frames = [self._frames.pop(r["clip_id"]) for r in todo]
        texts, n_tokens = self.predictor.caption_frames(frames, batch_size=len(frames))
        scores = clip_scores(self.scorer, frames, texts) if self.scorer else [None] * len(texts)
        share = (time.perf_counter() - t0) / len(todo)
        for row, text, score in zip(todo, texts, scores):
            row.update(caption=text, caption_source=self.predictor.source,
                       caption_model=self.predictor.path, caption_clip_score=score,
                       caption_tokens=n_tokens / len(todo))
            row[f"_t_{self.name}"] = row.get(f"_t_{self.name}", 0.0) + share
        return rows


def clip_scores(scorer, frames: list[np.ndarray], texts: list[str]) -> list[float]:
    """Cosine between each clip's mean frame embedding and its caption's text embedding.

    ``frames`` are the captioner's (K, 3, H, W) uint8 frames, resized to the side the CLIP
    scorer takes (its input size, or the larger side its view recipe decodes at).
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.stack(frames))  # (B, K, 3, H, W) uint8
    b, k, _, h, w = x.shape
    s = scorer.frame_size
    if (h, w) != (s, s):
        x = F.interpolate(x.flatten(0, 1).float(), size=(s, s), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8).unflatten(0, (b, k))  # (B, K, 3, S, S)
    video = scorer.video_embeddings(x.permute(0, 1, 3, 4, 2).numpy())  # (B, D)
    text = scorer.encode_texts(list(texts))  # (B, D)
    return [float(v) for v in (video * text).sum(axis=1)]


@dataclass
class CaptionResult:
    job_id: str
    source: str
    stages: list[StageStats]
    captioned: int = 0
    skipped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    tokens: float = 0.0
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "stages"}

    def text(self) -> str:
        rate = self.captioned / self.wall_s if self.wall_s else 0.0
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        return (f"caption job {self.job_id} ({self.source}): {self.captioned} clips captioned, "
                f"{self.skipped} already done, dropped: {drops}; {self.wall_s:.1f}s, "
                f"{rate:.2f} clips/s, {self.tokens / max(self.wall_s, 1e-9):.1f} tokens/s")


def caption_source(config: CaptionJobConfig) -> str:
    """The captions.source this job writes (read from the checkpoint, cheap for a teacher)."""
    if config.model is not None:
        from captioner.captioner_infer import checkpoint_source
        return checkpoint_source(config.model)
    from captioner.teacher import teacher_source
    return teacher_source(config.teacher)


def clips_to_caption(catalog, where: str | None, source: str) -> tuple[list[dict], int]:
    """(rows of clips matching ``where`` without a ``source`` caption, number already done)."""
    cond = f"({where})" if where else "TRUE"
    src = source.replace("'", "''")
    rows = catalog.query(
        f"WITH c AS (SELECT clip_id, uri FROM clips_v WHERE {cond}), "
        f"cap AS (SELECT DISTINCT clip_id FROM captions WHERE source = '{src}') "
        f"SELECT c.clip_id, c.uri, (cap.clip_id IS NOT NULL) AS done FROM c "
        f"LEFT JOIN cap ON cap.clip_id = c.clip_id ORDER BY c.clip_id").to_pylist()
    # clips.uri is relative to the corpus root; workers get a path they can open
    todo = [{"clip_id": r["clip_id"], "uri": catalog.root.join(r["uri"])} for r in rows if not r["done"]]
    return todo, len(rows) - len(todo)


def run_caption_job(config: CaptionJobConfig, job_id: str | None = None) -> CaptionResult:
    """Caption every selected clip that lacks this model's caption; see the module docstring."""
    from storage import Catalog, CorpusRoot

    catalog = Catalog(CorpusRoot.open(config.root))
    job_id = job_id or new_job_id("caption")
    source = caption_source(config)
    record = JobRecord(catalog, job_id, "caption", {"kind": "caption", **config.model_dump()})
    stage = CaptionStage(config.model, config.teacher, config.batch_size, config.actors,
                         config.num_gpus, config.clip_model, config.clip_pretrained)
    result = CaptionResult(job_id, source, summarize_stats([stage.name], []))
    t0 = time.perf_counter()
    try:
        rows, result.skipped = clips_to_caption(catalog, config.where, source)
        runner = create_runner(config.runner, config.address, config.num_cpus)
        for batch in runner.run([stage], rows, desc="clips", chunk=config.batch_size) if rows else []:
            _write_batch(catalog, batch, job_id, result)
            result.stages = merge_stats(result.stages, summarize_stats([stage.name], batch))
            record.progress(result.stages)
    except Exception:
        record.fail(result.stages, traceback.format_exc())
        raise
    result.wall_s = time.perf_counter() - t0
    record.finish(result.stages, result.summary(), result.text())
    return result


def _write_batch(catalog, batch: list[dict], job_id: str, result: CaptionResult) -> None:
    """Captions of the kept rows, rejections of the dropped ones."""
    kept = [r for r in batch if not r.get(DROP)]
    catalog.append("captions", [dict(
        clip_id=r["clip_id"], source=r["caption_source"], text=r["caption"],
        model=r["caption_model"], clip_score=r["caption_clip_score"], job_id=job_id) for r in kept])
    dropped = [r for r in batch if r.get(DROP)]
    catalog.append("rejections", [dict(clip_id=r["clip_id"], stage="caption", reason=r[DROP],
                                       detail=r.get(ERROR), job_id=job_id) for r in dropped])
    result.captioned += len(kept)
    result.tokens += sum(float(r["caption_tokens"]) for r in kept)
    for r in dropped:
        result.dropped[r[DROP]] = result.dropped.get(r[DROP], 0) + 1
