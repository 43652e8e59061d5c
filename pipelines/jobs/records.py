"""Job rows in the catalog seen from outside the job: submitted, stopped, or failed before start.

The job itself writes ``running`` / ``succeeded`` / ``failed`` rows through ``JobRecord``; the
submitter adds a ``pending`` row at submission and a ``stopped`` / ``failed`` row when Ray says the
job ended without the job recording it, so the catalog never shows a dead job as running.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from storage.schemas import JOB_ENDED as TERMINAL  # the jobs view ranks these rows first


def job_row(catalog, job_id: str) -> dict[str, Any] | None:
    """The current row of ``job_id`` in the jobs table (an ended row beats later ones), or None."""
    rows = catalog.query(f"SELECT * FROM jobs WHERE job_id = {sql_str(job_id)}").to_pylist()
    return rows[0] if rows else None


def job_rows(catalog, limit: int = 200) -> list[dict[str, Any]]:
    """Jobs, newest first (by start, then submission)."""
    return catalog.query("SELECT job_id, kind, status, wall_s, started_at, finished_at, error, stages "
                         f"FROM jobs ORDER BY coalesce(started_at, finished_at) DESC NULLS FIRST, "
                         f"job_id DESC LIMIT {int(limit)}").to_pylist()


def record_submitted(catalog, job_id: str, kind: str, spec_text: str) -> None:
    """A ``pending`` row written at submission, before the job starts."""
    catalog.append("jobs", [dict(job_id=job_id, kind=kind, spec=spec_text, status="pending",
                                 stages=json.dumps([]), wall_s=0.0)])


def record_outcome(catalog, job_id: str, status: str, error: str | None = None) -> bool:
    """Mark a job ``status`` unless its row already ended; keeps its stages. True when written."""
    row = job_row(catalog, job_id)
    if row is None or row["status"] in TERMINAL:
        return False
    catalog.append("jobs", [dict(row, status=status, error=error or row.get("error"),
                                 finished_at=datetime.now(timezone.utc))])
    return True


def stage_stats(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-stage counts of a job row (``[]`` when none were recorded yet)."""
    try:
        stages = json.loads(row.get("stages") or "[]")
    except json.JSONDecodeError:
        return []
    return stages if isinstance(stages, list) else []


def sql_str(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"
