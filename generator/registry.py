"""Named generator models: `create_model(name, **overrides)` builds generator/configs/<name>.json.

A config is a JSON object with a "family" (which builder to use) and that family's fields, e.g.
`create_model("dit_tiny")`, `create_model("dit_XL", in_channels=16, text_dim=4096)`. Other
families (the autoencoder) add themselves with `register_family` when their module is imported;
`FAMILY_MODULES` names that module, so `create_model("vae_tiny")` imports it on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any, Callable

from torch import nn

from generator.dit import DiT, DiTConfig

CONFIG_DIR = Path(__file__).parent / "configs"


def _build_dit(fields: dict[str, Any]) -> nn.Module:
    known = {f.name for f in dataclasses.fields(DiTConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown DiT config fields {unknown}; valid fields: {sorted(known)}")
    return DiT(DiTConfig(**fields))


_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {"dit": _build_dit}
FAMILY_MODULES = {"vae": "generator.vae", "pixel": "generator.vae"}   # imported on first use


def register_family(family: str, builder: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Let configs with "family": family be built by `builder(fields) -> nn.Module`."""
    _BUILDERS[family] = builder


def list_models() -> list[str]:
    """Names of the bundled configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The resolved config of model `name` (its JSON with `overrides` applied)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    return {**json.loads(path.read_text()), **overrides}


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build model `name` from generator/configs/<name>.json with field overrides."""
    return build_model(load_config(name, **overrides))


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a model from a resolved config dict (e.g. one stored in a checkpoint)."""
    fields = dict(config)
    family = fields.pop("family", None)
    if family not in _BUILDERS and family in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[family])                  # registers the family
    if family not in _BUILDERS:
        raise ValueError(f"config family {family!r} unknown; registered: {sorted(_BUILDERS)}")
    return _BUILDERS[family](fields)
