"""Submitting job specs through Ray's Jobs API, with one job id in Ray and in the catalog.

``submit_spec`` writes the validated spec to ``ROOT/jobs/<job_id>/spec.yaml``, adds a ``pending``
row to the catalog's jobs table, and submits ``python -m pipelines.jobs.runspec <spec> --job-id ID``
with ``submission_id = job_id``; the job then records ``running`` / ``succeeded`` / ``failed``
itself. Without an address the local head of ``pipelines.jobs.head`` is used (started on submit,
only attached to for list/status/logs/stop).
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Any

from pipelines.jobs.head import ensure_head, find_head
from pipelines.jobs.records import record_outcome, record_submitted
from pipelines.jobs.specs import JobSpec
from pipelines.jobs_record import new_job_id

RAY_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class NoClusterError(RuntimeError):
    """No Ray address was given and no local head is running."""


@dataclass(frozen=True)
class RayJob:
    """What Ray says about one submitted job (times in epoch seconds)."""

    job_id: str
    status: str
    message: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    entrypoint: str = ""
    metadata: dict[str, str] | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in RAY_TERMINAL


class JobsClient:
    """A thin wrapper over ``ray.job_submission.JobSubmissionClient``."""

    def __init__(self, address: str, headers: dict[str, str] | None = None, local: bool = False):
        from ray.job_submission import JobSubmissionClient
        self.address, self.local = address, local
        self._client = JobSubmissionClient(address, headers=headers or None)

    @classmethod
    def connect(cls, address: str | None = None, *, start: bool = False,
                num_cpus: int | None = None) -> "JobsClient":
        """``address``, else the local head (started when ``start``); NoClusterError otherwise."""
        if address:
            return cls(address)
        if start:
            state, _ = ensure_head(num_cpus)
        else:
            state = find_head()
            if state is None:
                raise NoClusterError("no Ray cluster: pass --address URL, or submit a job to start "
                                     "the local head")
        return cls(state.dashboard_url, state.auth_headers(), local=True)

    def submit(self, entrypoint: str, job_id: str, metadata: dict[str, str]) -> str:
        return self._client.submit_job(entrypoint=entrypoint, submission_id=job_id, metadata=metadata)

    def job(self, job_id: str) -> RayJob | None:
        """Ray's view of ``job_id``, or None when this cluster does not know it."""
        try:
            info = self._client.get_job_info(job_id)
        except RuntimeError:  # the SDK raises RuntimeError for unknown ids (HTTP 404)
            return None
        return _ray_job(info)

    def jobs(self) -> list[RayJob]:
        return [_ray_job(j) for j in self._client.list_jobs() if j.submission_id]

    def logs(self, job_id: str) -> str:
        return self._client.get_job_logs(job_id)

    def stop(self, job_id: str) -> bool:
        return self._client.stop_job(job_id)


def _ray_job(info: Any) -> RayJob:
    def secs(ms):
        return ms / 1000.0 if ms else None
    return RayJob(job_id=info.submission_id, status=str(info.status.value), message=info.message,
                  start_time=secs(info.start_time), end_time=secs(info.end_time),
                  entrypoint=info.entrypoint, metadata=dict(info.metadata or {}))


def entrypoint_for(spec_uri: str, job_id: str, local: bool) -> str:
    """The command a Ray job runs: this interpreter on a local head, ``python`` on a cluster."""
    python = sys.executable if local else "python"
    return " ".join(shlex.quote(x) for x in (python, "-m", "pipelines.jobs.runspec", spec_uri,
                                               "--job-id", job_id))


def submit_spec(spec: JobSpec, client: JobsClient, job_id: str | None = None,
                metadata: dict[str, str] | None = None) -> str:
    """Submit a validated spec; returns the job id used in Ray and in the catalog."""
    from storage import Catalog, CorpusRoot
    root = CorpusRoot.open(spec.root, create=True, storage_options=_storage_options(spec))
    spec = spec.with_root(root.uri())  # absolute: the job may run in another working directory
    catalog = Catalog(root)
    job_id = job_id or new_job_id(spec.kind)
    spec_text = spec.to_yaml()
    root.put_bytes(f"jobs/{job_id}/spec.yaml", spec_text.encode())
    record_submitted(catalog, job_id, spec.kind, spec_text)
    entrypoint = entrypoint_for(root.uri("jobs", job_id, "spec.yaml"), job_id, client.local)
    try:
        client.submit(entrypoint, job_id, {"kind": spec.kind, "root": spec.root, **(metadata or {})})
    except Exception as e:  # the submission itself failed: the catalog must not say pending
        record_outcome(catalog, job_id, "failed", f"submission failed: {type(e).__name__}: {e}")
        raise
    return job_id


def stop_job(client: JobsClient, catalog, job_id: str) -> bool:
    """Ask Ray to stop ``job_id`` and mark it stopped in the catalog; True when Ray stopped it."""
    stopped = client.stop(job_id)
    if stopped:
        record_outcome(catalog, job_id, "stopped", "stopped by request")
    return stopped


def reconcile(catalog, ray_job: RayJob) -> None:
    """A job Ray saw end without the job writing its outcome (killed, crashed on start)."""
    if ray_job.status in ("FAILED", "STOPPED"):
        record_outcome(catalog, ray_job.job_id, ray_job.status.lower(), ray_job.message)


def _storage_options(spec: JobSpec) -> dict | None:
    return getattr(spec.model, "storage_options", None) or None
