"""Job specs and run functions of the long-running commands besides ingest and caption.

Each ``kind:`` mirrors its CLI command's options (same names, same defaults), so a command line
becomes a YAML spec by turning ``--clip-pretrained X`` into ``clip_pretrained: X``::

    kind: train-clip
    root: /data/corpus
    out: /data/corpus/models/clip-tiny/clip.pt
    steps: 400

Jobs whose library function does not record itself (dataset, train-clip, train-captioner and
train-dit) are wrapped in a ``JobRecord``: a ``running`` row in the catalog's ``jobs``
table, then ``succeeded`` with the summary or ``failed`` with the traceback.
"""
from __future__ import annotations

import traceback
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.score.job import ScoreConfig



class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    root: str = ""


def _recorded(spec: _Spec, kind: str, job_id: str, fn: Callable[[], tuple[dict[str, Any], str]],
              create: bool = False) -> str:
    """Run ``fn`` (→ (summary, text)) under a JobRecord of ``kind``; returns the text."""
    from pipelines.jobs_record import JobRecord
    from storage import Catalog, CorpusRoot
    catalog = Catalog(CorpusRoot.open(spec.root, create=create))
    record = JobRecord(catalog, job_id, kind, {"kind": kind, **spec.model_dump(mode="json")})
    try:
        summary, text = fn()
    except Exception:
        record.fail([], traceback.format_exc())
        raise
    record.finish([], summary, text)
    return text


# ------------------------------------------------------------------------------------ score
class ScoreJobSpec(ScoreConfig):
    """``kind: score`` — a ``ScoreConfig`` (the ``vidcorpus score`` options) plus the root."""

    kind: Literal["score"] = "score"
    root: str = ""

    def config(self) -> ScoreConfig:
        return ScoreConfig(**self.model_dump(exclude={"kind", "root"}))


def run_score_job(spec: ScoreJobSpec, job_id: str) -> str:
    from pipelines.score.job import run_score
    return run_score(spec.root, spec.config(), job_id=job_id).text()


# ----------------------------------------------------------------------------------- filter
class FilterJobSpec(_Spec):
    """``kind: filter`` — named SQL rules (a rules YAML, or inline ``name: expression``)."""

    kind: Literal["filter"] = "filter"
    rules_file: Optional[str] = None  # a rules YAML (default: the built-in rules)
    rules: Optional[dict[str, str]] = None  # inline rules, applied in the given order

    @model_validator(mode="after")
    def _one_source(self):
        if self.rules_file and self.rules:
            raise ValueError("give `rules_file:` or inline `rules:`, not both")
        return self


def check_filter(spec: FilterJobSpec) -> None:
    """Inline rules must parse (columns are checked against the catalog when the job runs)."""
    from pipelines.jobspec import JobSpecError
    from pipelines.score.filters import RuleError, load_rules
    try:
        _rules(spec) if spec.rules else load_rules(spec.rules_file)
    except (RuleError, OSError) as e:
        raise JobSpecError(f"filter spec: {e}") from None


def _rules(spec: FilterJobSpec):
    from pipelines.score.filters import Rule
    return [Rule(name, where) for name, where in spec.rules.items()] if spec.rules else None


def run_filter_job(spec: FilterJobSpec, job_id: str) -> str:
    from pipelines.score.job import run_filter
    return run_filter(spec.root, _rules(spec), rules_path=spec.rules_file, job_id=job_id).text()


# ---------------------------------------------------------------------------------- dataset
class DatasetJobSpec(_Spec):
    """``kind: dataset`` — ``vidcorpus dataset create NAME (--where | --sql)``."""

    kind: Literal["dataset"] = "dataset"
    name: str
    where: Optional[str] = None
    sql: Optional[str] = None
    include_rejected: bool = False
    max_count: int = Field(10_000, ge=1)
    max_bytes: int = Field(1_000_000_000, ge=1)


def run_dataset_job(spec: DatasetJobSpec, job_id: str) -> str:
    from pipelines.dataset import DatasetSpec, create_dataset
    from storage import Catalog, CorpusRoot

    def create():
        catalog = Catalog(CorpusRoot.open(spec.root))
        manifest = create_dataset(catalog, DatasetSpec(spec.name, where=spec.where, sql=spec.sql,
                                                       include_rejected=spec.include_rejected,
                                                       max_bytes=spec.max_bytes, max_count=spec.max_count))
        text = (f"dataset {spec.name}: {manifest['n_samples']} samples in {manifest['n_shards']} "
                f"shard(s), {manifest['total_bytes']} bytes")
        return {k: manifest[k] for k in ("n_samples", "n_shards", "total_bytes")}, text
    return _recorded(spec, "dataset", job_id, create)


# ------------------------------------------------------------------------------- train-clip
class TrainClipJobSpec(_Spec):
    """``kind: train-clip`` — fit or fine-tune an open_clip model on captioned clips."""

    kind: Literal["train-clip"] = "train-clip"
    out: str
    where: Optional[str] = None
    clip_model: str = "vidcorpus-clip-tiny"
    clip_pretrained: Optional[str] = None
    caption_sources: list[str] = []
    steps: int = Field(600, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: Optional[float] = Field(None, gt=0)
    max_seconds: Optional[float] = Field(None, gt=0)
    frames_per_clip: int = Field(8, ge=1)
    seed: int = 0
    threads: Optional[int] = Field(None, ge=1)
    views: Optional[list[str]] = Field(None, description="What the tower sees of a frame (frame, crops, "
                                       "objects, silhouettes); default objects + silhouettes from scratch, frame "
                                       "when fine-tuning.")
    view_source: Optional[int] = Field(None, ge=8, description="Side frames are decoded at for the views "
                                       "(default: 128 px or twice the model's input with object views, else its input).")
    folds: Optional[int] = Field(None, ge=1, description="Cross-fit K models, each without one fold of the "
                                 "clips, so every training clip is scored by a model that never saw it "
                                 "(default from scratch: 2 from 400 clips on, else 1; fine-tuning: 1).")

    @model_validator(mode="after")
    def _known_views(self):
        if self.views is not None:
            from captioner.clip_model import check_views
            check_views(self.views)
        return self

    def clip_config(self):
        """The ``TrainClipConfig``: lr 2e-3 from scratch, 2e-5 when fine-tuning, unless given; views
        and the per-view loss as ``captioner.clip_model.recipe_defaults`` chooses, unless given."""
        from captioner.clip_model import TrainClipConfig, recipe_defaults
        recipe = recipe_defaults(self.clip_model, self.clip_pretrained, self.views, self.view_source, self.folds)
        return TrainClipConfig(model=self.clip_model, pretrained=self.clip_pretrained, steps=self.steps,
                               batch_size=self.batch_size, lr=self.lr or (2e-5 if self.clip_pretrained else 2e-3),
                               max_seconds=self.max_seconds, seed=self.seed, threads=self.threads, **recipe)

    def run(self):
        """Train; returns the ``TrainClipResult``."""
        from pipelines.score.train import run_train_clip
        return run_train_clip(self.root, self.out, self.clip_config(), where=self.where,
                              sources=self.caption_sources or None, frames_per_clip=self.frames_per_clip)

    def summary(self, r) -> str:
        return (f"trained {self.clip_model} for {r.steps} steps in {r.seconds:.1f}s "
                f"(final loss {r.final_loss:.4f}); checkpoint: {self.out}")


def run_train_clip_job(spec: TrainClipJobSpec, job_id: str) -> str:
    def train():
        r = spec.run()
        return {"steps": r.steps, "seconds": r.seconds, "final_loss": r.final_loss, "out": spec.out}, spec.summary(r)
    return _recorded(spec, "train-clip", job_id, train)


# -------------------------------------------------------------------------- train-captioner
# kind: train-captioner validates with pipelines.captioner_train_job:TrainJobConfig (its fields
# are the ``vidcorpus train-captioner`` options).


def run_train_captioner_job(spec, job_id: str) -> str:
    """Run ``kind: train-captioner`` (a ``TrainJobConfig``) under a job record."""
    from pipelines.captioner_train_job import run_train_job

    def train():
        r = run_train_job(spec)
        metrics = {k: v for k, v in r.metrics.items() if isinstance(v, (int, float, str))}
        text = (f"captioner trained to step {r.step} ({r.train_seconds / 60:.1f} min): "
                + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in sorted(metrics.items())) + f"; checkpoint {r.checkpoint}")
        return {"step": r.step, "checkpoint": str(r.checkpoint), "metrics": metrics}, text
    return _recorded(spec, "train-captioner", job_id, train)


# -------------------------------------------------------------------------------- train-dit
class TrainDitJobSpec(_Spec):
    """``kind: train-dit`` — the ``vidcorpus train-dit`` options."""

    kind: Literal["train-dit"] = "train-dit"
    dataset: str
    config: str = "dit_tiny"
    vae: str = "pixel"
    text_model: str = "tiny"
    text_checkpoint: Optional[str] = None
    text_hf: Optional[str] = None
    minutes: Optional[float] = Field(None, gt=0)
    steps: Optional[int] = Field(None, ge=1)
    token_budget: int = Field(1024, ge=16)
    max_pixels: int = Field(64 * 64, ge=64)
    min_pixels: Optional[int] = Field(None, ge=64)
    max_frames: int = Field(17, ge=1)
    workers: int = Field(0, ge=0)
    lr: float = Field(3e-4, gt=0)
    logit_mean: float = 0.0
    shift_base: int = Field(256, ge=1)
    run_id: Optional[str] = None
    resume: bool = False
    ray_workers: int = Field(0, ge=0)
    address: Optional[str] = None  # Ray cluster address (with ray_workers)
    threads: Optional[int] = Field(None, ge=1)


    def train_config(self):
        """The ``generator.train.TrainConfig`` these options describe (1000 steps without a budget)."""
        from generator.data import DataConfig
        from generator.flow import FlowConfig
        from generator.text import TextConfig
        from generator.train import TrainConfig
        text = TextConfig(kind="hf", checkpoint=self.text_hf) if self.text_hf else \
            TextConfig(model=self.text_model, checkpoint=self.text_checkpoint)
        data = DataConfig(token_budget=self.token_budget, max_pixels=self.max_pixels, min_pixels=self.min_pixels,
                          max_frames=self.max_frames, num_workers=self.workers)
        return TrainConfig(root=self.root, dataset=self.dataset, model=self.config, autoencoder=self.vae,
                           text=text, data=data, flow=FlowConfig(logit_mean=self.logit_mean, base_tokens=self.shift_base),
                           steps=self.steps if self.steps or self.minutes else 1000, minutes=self.minutes,
                           lr=self.lr, run_id=self.run_id, resume=self.resume, cpu_threads=self.threads)


def run_train_dit_job(spec: TrainDitJobSpec, job_id: str) -> str:
    from dataclasses import replace

    from generator.train import train_dit

    def train():
        cfg = replace(spec.train_config(), progress=False)
        if spec.ray_workers:
            from pipelines.train_dit_ray import train_dit_ray
            r = train_dit_ray(cfg, spec.ray_workers, address=spec.address)
            return {"run_id": r.run_id, "checkpoint": str(r.checkpoint)}, \
                f"Ray Train run {r.run_id} -> {r.checkpoint}"
        r = train_dit(cfg)
        loss = r.metrics.get("loss") if r.metrics else None
        return ({"run_id": r.run_id, "step": r.step, "checkpoint": str(r.checkpoint), "metrics": r.metrics},
                f"DiT run {r.run_id}: {r.step} steps in {r.seconds / 60:.1f} min"
                + (f", loss {loss:.4f}" if loss is not None else "") + f" -> {r.checkpoint}")
    return _recorded(spec, "train-dit", job_id, train)


# ---------------------------------------------------------------------------------- curate
class CaptionSource(BaseModel):
    """Existing text to load between ingest and scoring: a caption file or a synthetic world."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file: Optional[str] = None  # CSV/JSONL/Parquet (see pipelines.captions_import)
    synth_world: Optional[str] = None  # a world rendered by `vidcorpus synth` (its truth.json)
    source: str = "alt-text"
    seed_fraction: float = Field(0.5, ge=0, le=1)  # synth_world: share of videos with 'original'

    @model_validator(mode="after")
    def _one(self):
        if (self.file is None) == (self.synth_world is None):
            raise ValueError("each captions entry needs exactly one of `file:` or `synth_world:`")
        return self


class CurateJobSpec(_Spec):
    """``kind: curate`` — ingest → load captions → (fit CLIP once) → score → filter, one job.

    Each part is recorded as its own job (``<id>.ingest``, ``<id>.score`` …) besides this one, so
    the funnel and stage stats of every part are in the catalog. Re-running is incremental: ingest
    skips finished videos, scoring skips clips this model scored, an existing CLIP is reused.
    """

    kind: Literal["curate"] = "curate"
    sources: list[str]
    ingest: Optional[dict[str, Any]] = None  # an IngestConfig mapping
    captions: list[CaptionSource] = []
    train_clip: Optional[TrainClipJobSpec] = None  # fitted when its `out` does not exist yet
    score: ScoreJobSpec = ScoreJobSpec()
    filter: FilterJobSpec = FilterJobSpec()

    @model_validator(mode="after")
    def _clip_weights(self):
        if self.train_clip and self.score.clip_pretrained not in (None, self.train_clip.out):
            raise ValueError("score.clip_pretrained must be train_clip.out (or left out) when "
                             "train_clip is given")
        return self


def run_curate_job(spec: CurateJobSpec, job_id: str) -> str:
    import os

    from pipelines.captions_import import import_captions
    from pipelines.ingest.config import IngestConfig
    from pipelines.ingest.job import run_ingest
    from pipelines.synth.match import load_world_captions
    from storage import Catalog, CorpusRoot

    def curate():
        texts = []
        cfg = IngestConfig.model_validate(spec.ingest or {})
        ingest = run_ingest(list(spec.sources), spec.root, cfg, job_id=f"{job_id}.ingest")
        texts.append(ingest.text(cfg.runner.num_cpus or os.cpu_count() or 1))
        catalog = Catalog(CorpusRoot.open(spec.root))
        for entry in spec.captions:  # re-loading is harmless: latest write per (clip, source) wins
            if entry.synth_world:
                counts = load_world_captions(catalog, entry.synth_world, entry.seed_fraction, job_id=job_id)
                texts.append(f"captions from {entry.synth_world}: {counts}")
            else:
                texts.append(import_captions(catalog, entry.file, entry.source, job_id=job_id).text(entry.source))
        score = spec.score
        if spec.train_clip:
            if not os.path.exists(spec.train_clip.out):
                texts.append(run_train_clip_job(spec.train_clip.model_copy(update={"root": spec.root}),
                                                f"{job_id}.train-clip"))
            score = score.model_copy(update={"clip_pretrained": spec.train_clip.out,
                                             "clip_model": spec.train_clip.clip_model})
        texts.append(run_score_job(score.model_copy(update={"root": spec.root}), f"{job_id}.score"))
        texts.append(run_filter_job(spec.filter.model_copy(update={"root": spec.root}), f"{job_id}.filter"))
        return {"parts": [f"{job_id}.{p}" for p in ("ingest", "score", "filter")]}, "\n\n".join(texts)
    return _recorded(spec, "curate", job_id, curate, create=True)
