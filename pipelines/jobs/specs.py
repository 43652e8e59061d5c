"""Job kinds: a registry from ``kind:`` to (pydantic spec model, run function).

A job spec is YAML with a ``kind:`` key; the rest is validated by that kind's pydantic model
*before* anything is submitted or run. Adding a kind is one entry (see the ``register_kind``
calls at the end of this module)::

    register_kind("score", spec="pipelines.score.job:ScoreJobSpec",
                  run="pipelines.score.job:run_score_job",
                  doc="Score clips with CLIP (clip_text, motion, …).")

Entries name their model and function as ``"module:attribute"`` strings, so this module stays
cheap to import (no torch, no Ray) and a kind whose library has not landed yet fails with a clear
message instead of breaking every other kind. Contract for a kind's pieces:

* the spec model is a pydantic model with a ``root`` field (the corpus root; the submitter fills it
  in from ``--root`` when the YAML leaves it out); it may declare ``kind: Literal["<name>"]`` or
  not (then ``kind:`` is taken off before validating), and should use ``extra="forbid"``;
* the run function is ``run(spec, job_id)``, records the job in the catalog's ``jobs`` table with
  ``JobRecord(catalog, job_id, …)`` and returns a summary: a string, or a result with ``text()``;
* an optional ``check(spec)`` raises ``JobSpecError`` for what the model alone cannot say.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import yaml
from pydantic import BaseModel

from pipelines.jobspec import JobSpecError, validate


@dataclass(frozen=True)
class JobKind:
    """One job kind: where its spec model, run function and optional extra check live."""

    name: str
    spec: str  # "module:Model"
    run: str  # "module:function", called as run(spec, job_id) -> str | result with text()
    check: str | None = None  # "module:function", called as check(spec); raises JobSpecError
    doc: str = ""

    def spec_model(self) -> type[BaseModel]:
        return _load(self.spec, self.name)

    def run_fn(self) -> Callable[[Any, str], Any]:
        return _load(self.run, self.name)

    def check_fn(self) -> Callable[[Any], None] | None:
        return _load(self.check, self.name) if self.check else None


KINDS: dict[str, JobKind] = {}


def register_kind(name: str, *, spec: str, run: str, check: str | None = None, doc: str = "") -> JobKind:
    """Add (or replace) a job kind; returns its entry."""
    KINDS[name] = JobKind(name, spec, run, check, doc)
    return KINDS[name]


@dataclass(frozen=True)
class JobSpec:
    """A validated job spec: its kind, typed model, and the corpus root it writes to."""

    kind: str
    model: BaseModel

    @property
    def root(self) -> str:
        return self.model.root  # type: ignore[attr-defined]

    def with_root(self, root: str) -> "JobSpec":
        return JobSpec(self.kind, self.model.model_copy(update={"root": root}))

    def to_yaml(self) -> str:
        return yaml.safe_dump({"kind": self.kind, **self.model.model_dump(mode="json")}, sort_keys=False)


def parse_spec(data: str | dict[str, Any], where: str = "job spec", root: str | None = None) -> JobSpec:
    """Validate YAML text (or a parsed mapping) into a JobSpec; ``root`` overrides ``root:``.

    Raises JobSpecError with one message per problem, naming the field and what to change.
    """
    mapping = _as_mapping(data, where)
    kind = mapping.get("kind")
    if kind is None:
        raise JobSpecError(f"{where}: missing `kind:`; use one of {', '.join(sorted(KINDS))}")
    if kind not in KINDS:
        raise JobSpecError(f"{where}: unknown kind {kind!r}; use one of {', '.join(sorted(KINDS))}")
    entry = KINDS[kind]
    model_cls = entry.spec_model()
    if "root" not in model_cls.model_fields:
        raise JobSpecError(f"job kind {kind!r}: its spec model {entry.spec} has no `root` field")
    if root is not None:
        mapping = {**mapping, "root": root}
    if "kind" not in model_cls.model_fields:
        mapping = {k: v for k, v in mapping.items() if k != "kind"}
    model = validate(model_cls, mapping, where)
    if not model.root:
        raise JobSpecError(f"{where}: no corpus root; add `root: PATH` to the spec or pass --root")
    check = entry.check_fn()
    if check is not None:
        check(model)
    return JobSpec(kind, model)


def run_spec(spec: JobSpec, job_id: str) -> str | None:
    """Run a validated spec in this process with ``job_id`` (what a submitted Ray job does)."""
    result = KINDS[spec.kind].run_fn()(spec.model, job_id)
    if result is None or isinstance(result, str):
        return result
    text = getattr(result, "text", None)
    return text() if callable(text) else str(result)


def _as_mapping(data: str | dict[str, Any], where: str) -> dict[str, Any]:
    if isinstance(data, str):
        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as e:
            raise JobSpecError(f"{where}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise JobSpecError(f"{where}: expected a mapping with `kind:` at the top level")
    return data


def _load(target: str, kind: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise JobSpecError(f"job kind {kind!r} is not available here: cannot import "
                           f"{module_name} ({e})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise JobSpecError(f"job kind {kind!r}: {module_name} has no {attr!r}") from None


# ---------------------------------------------------------------- built-in kinds: ingest
def check_ingest(spec) -> None:
    """An ingest spec that is submitted must say what to ingest."""
    if not spec.sources:
        raise JobSpecError("ingest spec: `sources:` is empty; list directories, globs or URLs to ingest")


def run_ingest_job(spec, job_id: str) -> str:
    """Run ``kind: ingest`` with the given job id (its row in the jobs table uses the same id)."""
    import os

    from pipelines.ingest.job import run_ingest
    result = run_ingest(list(spec.sources), spec.root, spec.config, job_id=job_id,
                        storage_options=spec.storage_options or None)
    return result.text(spec.config.runner.num_cpus or os.cpu_count() or 1)


# ---------------------------------------------------------------- the registry
register_kind("ingest", spec="pipelines.jobspec:IngestJobSpec", run="pipelines.jobs.specs:run_ingest_job",
              check="pipelines.jobs.specs:check_ingest",
              doc="Shot-split raw videos into clips (probe, quarantine, detect shots, extract).")
register_kind("caption", spec="pipelines.caption_stage:CaptionJobConfig",
              run="pipelines.caption_stage:run_caption_job",
              doc="Dense re-captioning with a trained captioner checkpoint or a teacher VLM.")
register_kind("score", spec="pipelines.jobs.kinds:ScoreJobSpec", run="pipelines.jobs.kinds:run_score_job",
              doc="Score clips with CLIP (embeddings, clip_text, defects, motion) and remove near-duplicates.")
register_kind("filter", spec="pipelines.jobs.kinds:FilterJobSpec", run="pipelines.jobs.kinds:run_filter_job",
              check="pipelines.jobs.kinds:check_filter",
              doc="Apply named SQL rules over clips_v and record the funnel.")
register_kind("dataset", spec="pipelines.jobs.kinds:DatasetJobSpec", run="pipelines.jobs.kinds:run_dataset_job",
              doc="Write the clips a SQL selection picks as WebDataset shards.")
register_kind("train-clip", spec="pipelines.jobs.kinds:TrainClipJobSpec",
              run="pipelines.jobs.kinds:run_train_clip_job",
              doc="Fit or fine-tune an open_clip model on captioned clips.")
register_kind("train-captioner", spec="pipelines.captioner_train_job:TrainJobConfig",
              run="pipelines.jobs.kinds:run_train_captioner_job",
              doc="Train the video captioner on clips with reference captions.")
register_kind("train-dit", spec="pipelines.jobs.kinds:TrainDitJobSpec", run="pipelines.jobs.kinds:run_train_dit_job",
              doc="Train the text-to-video DiT on a dataset's shards.")
register_kind("curate", spec="pipelines.jobs.kinds:CurateJobSpec", run="pipelines.jobs.kinds:run_curate_job",
              doc="Ingest, load captions, fit CLIP once, score and filter: one incremental job.")
