"""Recording a job: its row in the catalog's jobs table and its folder ROOT/jobs/<job_id>/."""
from __future__ import annotations

import json
import secrets
import time
from datetime import datetime, timezone
from typing import Any

import yaml

from pipelines.stages.base import StageStats


def new_job_id(kind: str) -> str:
    return f"{kind}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class JobAlreadyEnded(RuntimeError):
    """The catalog says this job id already ended (stopped before its driver started): not run."""


class JobRecord:
    """Writes a job's start, stage stats and end to the catalog and to ROOT/jobs/<job_id>/.

    A job whose row already ended (``vidcorpus jobs stop`` while Ray had not started it yet) is
    refused with ``JobAlreadyEnded`` before it writes or runs anything.
    """

    def __init__(self, catalog, job_id: str, kind: str, spec: dict[str, Any]):
        from pipelines.jobs.records import TERMINAL, job_row
        row = job_row(catalog, job_id)
        if row is not None and row["status"] in TERMINAL:
            raise JobAlreadyEnded(f"job {job_id} is already {row['status']} in the catalog; "
                                  "not running it")
        self.catalog, self.job_id, self.kind, self.spec = catalog, job_id, kind, spec
        self.started = datetime.now(timezone.utc)
        self.t0 = time.perf_counter()
        self.spec_text = yaml.safe_dump(spec, sort_keys=False)
        catalog.root.put_bytes(f"jobs/{job_id}/spec.yaml", self.spec_text.encode())
        self._write("running", [])

    def _write(self, status: str, stages: list[StageStats], error: str | None = None,
               finished: bool = False) -> None:
        self.catalog.append("jobs", [dict(
            job_id=self.job_id, kind=self.kind, spec=self.spec_text, status=status,
            stages=json.dumps([s.as_dict() for s in stages]), wall_s=time.perf_counter() - self.t0,
            started_at=self.started, finished_at=datetime.now(timezone.utc) if finished else None,
            error=error)])

    def progress(self, stages: list[StageStats]) -> None:
        self._write("running", stages)

    def finish(self, stages: list[StageStats], summary: dict[str, Any], text: str) -> None:
        root = self.catalog.root
        root.put_bytes(f"jobs/{self.job_id}/stats.json",
                       json.dumps({"stages": [s.as_dict() for s in stages], "summary": summary},
                                  indent=2, default=str).encode())
        root.put_bytes(f"jobs/{self.job_id}/summary.txt", text.encode())
        self._write("succeeded", stages, finished=True)

    def fail(self, stages: list[StageStats], error: str) -> None:
        self.catalog.root.put_bytes(f"jobs/{self.job_id}/error.txt", error.encode())
        self._write("failed", stages, error=error, finished=True)
