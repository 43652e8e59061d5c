"""Typed configuration of an ingest job (also the YAML job spec's ``ingest`` section)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SPLIT_ALGO_VERSION = 1  # bump when shot splitting or clip extraction changes meaningfully


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectorConfig(_Strict):
    """Which shot detector runs and its parameters (see ``pipelines.shots``)."""

    name: Literal["hybrid", "transnetv2", "adaptive", "content"] = "hybrid"
    params: dict[str, Any] = Field(default_factory=dict, description="Detector-specific thresholds.")

    def resolved_params(self) -> dict[str, Any]:
        """Params with machine-independent defaults: the hybrid fuses TransNetV2 only when asked
        (``transnet: always``, recommended on GPU clusters), so clip ids never depend on which
        worker happened to have a GPU."""
        if self.name == "hybrid":
            return {"transnet": "never", **self.params}
        return dict(self.params)


class SplitConfig(_Strict):
    """How transitions become clips."""

    min_clip_s: float = Field(0.5, ge=0, description="Shots shorter than this are dropped.")
    max_clip_s: float = Field(30.0, gt=0, description="Longer shots are split into windows.")
    trim_frames: int = Field(2, ge=0, description="Frames trimmed next to gradual transitions.")

    @model_validator(mode="after")
    def _order(self) -> "SplitConfig":
        if self.max_clip_s <= self.min_clip_s:
            raise ValueError(f"max_clip_s ({self.max_clip_s}) must exceed min_clip_s ({self.min_clip_s})")
        return self


class ExtractConfig(_Strict):
    """How clips are written to the clip store."""

    max_side: int | None = Field(None, ge=16, description="Downscale cap; None keeps native size.")
    crf: int = Field(18, ge=0, le=51)
    preset: str = "veryfast"
    stream_copy: bool = Field(True, description="Copy packets when that is exact.")


class RunnerConfig(_Strict):
    kind: Literal["ray", "local"] = "ray"
    address: str | None = Field(None, description="Ray address; None starts or joins a local Ray.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (None: all).")
    detector_actors: int = Field(1, ge=1, description="Actor pool size of the shot detector.")


class IngestConfig(_Strict):
    """Everything an ingest job needs besides its sources and root."""

    detector: DetectorConfig = DetectorConfig()
    split: SplitConfig = SplitConfig()
    extract: ExtractConfig = ExtractConfig()
    runner: RunnerConfig = RunnerConfig()
    extensions: tuple[str, ...] = ("mp4", "mov", "mkv", "webm", "avi", "m4v", "mpg", "mpeg", "ts",
                                   "flv", "wmv", "3gp", "ogv", "m4a")

    @field_validator("extensions")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(e.lower().lstrip(".") for e in v)

    def split_version(self) -> str:
        """Names the settings that decide clip boundaries and media: part of every clip_id."""
        keyed = {"algo": SPLIT_ALGO_VERSION,
                 "detector": {"name": self.detector.name, "params": self.detector.resolved_params()},
                 "split": self.split.model_dump(), "extract": self.extract.model_dump()}
        digest = hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:8]
        return f"v{SPLIT_ALGO_VERSION}-{digest}"
