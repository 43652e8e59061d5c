"""What a submitted Ray job runs: ``python -m pipelines.jobs.runspec SPEC.yaml [--job-id ID]``.

SPEC is a local path or fsspec URL (the submitter passes ``ROOT/jobs/<job_id>/spec.yaml``). The
spec is validated again here (the cluster may run other code than the submitter), then its kind's
run function runs with the job id, so Ray's submission id and the catalog's job row match.
Exit status: 0 done (or already stopped before it started: nothing runs), 2 bad spec, 1 the job
failed (the catalog row says ``failed`` with the error).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

import fsspec

from pipelines.jobs.records import record_outcome
from pipelines.jobs.specs import JobSpec, parse_spec, run_spec
from pipelines.jobs_record import JobAlreadyEnded, new_job_id
from pipelines.jobspec import JobSpecError

log = logging.getLogger("vidcorpus.runspec")


def read_spec(uri: str) -> str:
    """The spec's YAML text from a local path or fsspec URL."""
    try:
        with fsspec.open(uri, "r") as f:
            return f.read()
    except FileNotFoundError:
        raise JobSpecError(f"job spec {uri}: file not found") from None


def run_spec_file(uri: str, job_id: str | None = None, root: str | None = None) -> tuple[str, str | None]:
    """Validate and run the spec at ``uri``; returns (job id, summary). Raises on failure."""
    spec = parse_spec(read_spec(uri), where=f"job spec {uri}", root=root)
    job_id = job_id or os.environ.get("RAY_JOB_SUBMISSION_ID") or new_job_id(spec.kind)
    log.info("running %s job %s on %s", spec.kind, job_id, spec.root)
    try:
        return job_id, run_spec(spec, job_id)
    except JobAlreadyEnded as e:  # stopped before it started: nothing ran, nothing to record
        log.warning("%s", e)
        return job_id, str(e)
    except Exception:
        _record_failure(spec, job_id, traceback.format_exc())
        raise


def _record_failure(spec: JobSpec, job_id: str, error: str) -> None:
    """Make sure the catalog says failed even when the job died before recording itself."""
    from storage import Catalog, CorpusRoot
    try:
        catalog = Catalog(CorpusRoot.open(spec.root, create=True))
        record_outcome(catalog, job_id, "failed", error)
    except Exception as e:  # the root itself is the problem: the original error matters more
        log.error("could not record the failure of %s in the catalog: %s", job_id, e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.jobs.runspec", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", help="job spec YAML: local path or fsspec URL")
    ap.add_argument("--job-id", default=None, help="job id (default: Ray's submission id, else new)")
    ap.add_argument("--root", default=None, help="corpus root (overrides the spec's `root:`)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        job_id, summary = run_spec_file(args.spec, args.job_id, args.root)
    except JobSpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    print(summary or f"job {job_id} finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
