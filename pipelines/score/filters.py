"""Filter rules: named SQL boolean expressions over ``clips_v``, applied in order as a funnel.

A rule says what a clip must satisfy to be KEPT; its name is the reason slug of the clips it
rejects (``rejections.stage = 'filter:<name>'``). A rule that is NULL for a clip (a missing
score) rejects it, as in SQL's WHERE; write ``clip_text IS NULL OR clip_text >= 0.2`` to keep
clips without the score. Rules come from a YAML file::

    rules:
      too_short: duration_s >= 0.5
      low_clip_score: clip_text IS NULL OR clip_text >= 0.2

or from ``default_rules.yaml`` beside this file. Every rule is checked before anything runs by
running ``SELECT count(*) FROM clips_v WHERE (<rule>)`` through the read-only SQL path; one that
does not parse or names an unknown column is refused with the list of columns.

The funnel starts from the clips no earlier stage rejected (decode errors, duplicates); each
rule removes the clips that fail it among those still left, so every rejected clip is charged
to the first rule it fails.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

DEFAULT_RULES_PATH = Path(__file__).with_name("default_rules.yaml")
FILTER_STAGE_PREFIX = "filter:"
SLUG = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class RuleError(ValueError):
    """A rules file or rule that cannot run; the message says which and what to change."""


@dataclass(frozen=True)
class Rule:
    """Keep clips for which ``where`` is true; the rest are rejected with reason ``name``."""

    name: str
    where: str

    def __post_init__(self) -> None:
        if not SLUG.match(self.name):
            raise RuleError(f"rule name {self.name!r} must be a slug (lowercase letters, digits, _), "
                            "e.g. low_clip_score: it becomes the rejection reason")
        if not isinstance(self.where, str) or not self.where.strip():
            raise RuleError(f"rule {self.name!r}: needs an SQL boolean expression, got {self.where!r}")

    @property
    def stage(self) -> str:
        return f"{FILTER_STAGE_PREFIX}{self.name}"


def load_rules(path: str | Path | None = None) -> list[Rule]:
    """Rules from a YAML file (``rules:`` mapping name → expression), default rules when None."""
    path = Path(path) if path else DEFAULT_RULES_PATH
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RuleError(f"rules file {path}: not found") from None
    except yaml.YAMLError as e:
        raise RuleError(f"rules file {path}: not valid YAML ({e})") from None
    rules = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(rules, dict) or not rules:
        raise RuleError(f"rules file {path}: expected a non-empty mapping under `rules:` "
                        "(name: SQL boolean expression)")
    return [Rule(str(name), str(where) if where is not None else "") for name, where in rules.items()]


def clips_v_columns(catalog) -> list[str]:
    """Column names of ``clips_v`` (one per clip attribute and per score name)."""
    return catalog.query("DESCRIBE clips_v")["column_name"].to_pylist()


def validate_rules(catalog, rules: list[Rule]) -> None:
    """Run each rule once through the read-only SQL path; raise RuleError listing the columns."""
    from storage import SQLError
    for rule in rules:
        try:
            catalog.query(f"SELECT count(*) FROM clips_v WHERE ({rule.where})")
        except SQLError as e:
            columns = ", ".join(clips_v_columns(catalog))
            raise RuleError(f"rule {rule.name!r} ({rule.where}) cannot run: {e}. "
                            f"Columns of clips_v: {columns}") from None


@dataclass
class FunnelStep:
    rule: Rule
    n_in: int
    rejected: list[str] = field(default_factory=list)  # clip ids, sorted

    @property
    def left(self) -> int:
        return self.n_in - len(self.rejected)


@dataclass
class Funnel:
    """Clips left after each rule, in order; ``start`` = clips no earlier stage rejected."""

    total: int
    start: int
    steps: list[FunnelStep]

    @property
    def kept(self) -> int:
        return self.steps[-1].left if self.steps else self.start

    def text(self) -> str:
        width = max([len(s.rule.name) for s in self.steps] + [24])
        lines = [f"  {'clips in catalog':<{width}} {self.total:>8}",
                 f"  {'not rejected earlier':<{width}} {self.start:>8}"]
        for s in self.steps:
            share = 100.0 * s.left / self.start if self.start else 0.0
            lines.append(f"  {s.rule.name:<{width}} {s.left:>8}  (-{len(s.rejected)}; {share:.1f}% "
                         f"of start)   {s.rule.where}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"total": self.total, "start": self.start, "kept": self.kept,
                "steps": [{"rule": s.rule.name, "where": s.rule.where, "in": s.n_in,
                           "rejected": len(s.rejected), "left": s.left} for s in self.steps]}


def run_funnel(catalog, rules: list[Rule]) -> Funnel:
    """Evaluate every rule for every candidate clip in one query, then charge rejections in order."""
    cols = ", ".join(f"coalesce(({r.where}), false) AS r{i}" for i, r in enumerate(rules))
    table = catalog.query(f"""
        SELECT clip_id, {cols} FROM clips_v
        WHERE clip_id NOT IN (SELECT clip_id FROM rejections WHERE reason IS NOT NULL
                              AND stage NOT LIKE '{FILTER_STAGE_PREFIX}%')
        ORDER BY clip_id""")
    total = catalog.query("SELECT count(*) AS n FROM clips")["n"][0].as_py()
    ids = np.array(table["clip_id"].to_pylist(), dtype=object)
    alive = np.ones(len(ids), bool)
    steps = []
    for i, rule in enumerate(rules):
        passes = np.asarray(table[f"r{i}"].to_numpy(zero_copy_only=False), bool)
        failed = alive & ~passes
        steps.append(FunnelStep(rule, int(alive.sum()), ids[failed].tolist()))
        alive &= passes
    return Funnel(total=total, start=len(ids), steps=steps)
