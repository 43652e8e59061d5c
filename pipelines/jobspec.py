"""YAML job specs: validated before anything runs, with messages that say what to change."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.ingest.config import IngestConfig


class JobSpecError(ValueError):
    """A job spec or config that does not validate."""


class IngestJobSpec(BaseModel):
    """``kind: ingest`` — shot-split raw videos into clips in the catalog."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["ingest"] = "ingest"
    root: str | None = Field(None, description="Corpus root (local path or fsspec URL).")
    sources: list[str] = Field(default_factory=list, description="Directories, globs, URI lists, URLs.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options (s3 endpoint…).")
    config: IngestConfig = IngestConfig()


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise JobSpecError(f"job spec {path}: file not found") from None
    except yaml.YAMLError as e:
        raise JobSpecError(f"job spec {path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise JobSpecError(f"job spec {path}: expected a mapping at the top level")
    return data


def validate(model: type[BaseModel], data: dict[str, Any], where: str) -> Any:
    """Validate ``data`` against ``model``; errors become one readable message per problem."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                             for err in e.errors())
        raise JobSpecError(f"{where}: {problems}") from None


def load_ingest_spec(path: str | Path) -> IngestJobSpec:
    """An ingest spec from YAML: either a full job spec or just the ``config`` section."""
    data = load_yaml(path)
    if "kind" not in data and not {"root", "sources", "config"} & set(data):
        data = {"config": data}
    return validate(IngestJobSpec, data, f"job spec {path}")
