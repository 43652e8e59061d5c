"""A job's logs: its files under ``ROOT/jobs/<job_id>/`` and Ray's driver log when available."""
from __future__ import annotations

import re

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
TEXT_FILES = (".yaml", ".json", ".txt", ".log")
MAX_CHARS = 200_000


def job_files(root, job_id: str) -> dict[str, str]:
    """Text files of one job (spec, stats, summary, error …), name → text; {} when none."""
    if not JOB_ID.match(job_id):
        return {}
    folder = root.join("jobs", job_id)
    if not root.fs.exists(folder):
        return {}
    out = {}
    for path in sorted(root.fs.ls(folder, detail=False)):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(TEXT_FILES) and ".tmp-" not in name:
            with root.fs.open(path, "rb") as f:
                out[name] = f.read(MAX_CHARS).decode(errors="replace")
    return out


def ray_logs(address: str | None, job_id: str) -> str | None:
    """Ray's log of the job's driver, or None when no cluster is reachable or it does not know the job."""
    from pipelines.jobs.submit import JobsClient, NoClusterError
    try:
        client = JobsClient.connect(address)
        if client.job(job_id) is None:
            return None
        return client.logs(job_id)
    except NoClusterError:
        return None
    except OSError as e:  # unreachable or gone mid-request
        return f"(Ray cluster not reachable: {e})"
