"""CLI plug-in: ``dashboard``, ``jobs …``, ``schedule …``, ``scheduler`` and ``run-spec``.

Thin: each command validates its input, calls ``pipelines.jobs`` and prints one readable result.
Bad specs and options exit with status 2 and a message that says what to change.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pyarrow as pa
import typer

from pipelines.cli_util import ROOT_HELP, fail, format_table, open_catalog

RootOpt = typer.Option("corpus", "--root", "-r", envvar="VIDCORPUS_ROOT", help=ROOT_HELP)
AddressOpt = typer.Option(None, "--address", envvar="VIDCORPUS_RAY_ADDRESS",
                          help="Ray Jobs API URL (http://HEAD:8265); default: the local head.")
DASHBOARD_APP = Path(__file__).resolve().parents[1] / "dashboards" / "app.py"

jobs_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Submit job specs to Ray and follow them (one job id in Ray and the catalog).")
schedule_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Recurring jobs stored under ROOT/schedules/ (run by `vidcorpus scheduler`).")


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(schedule_app, name="schedule")
    app.command("dashboard")(dashboard)
    app.command("scheduler")(scheduler)
    app.command("run-spec")(run_spec_cmd)


# ---------------------------------------------------------------- dashboard
def dashboard(root: str = RootOpt,
              port: int = typer.Option(8501, "--port", "-p", help="Port to serve on."),
              host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0: all)."),
              address: Optional[str] = AddressOpt) -> None:
    """Serve the Streamlit dashboard over the catalog, jobs and training runs."""
    root_uri = open_catalog(root).root.uri()
    typer.echo(f"dashboard: http://{host}:{port}  (root {root_uri}; Ctrl-C to stop)", err=True)
    sys.stdout.flush()
    cmd = dashboard_command(root_uri, port, host, address)
    os.execv(cmd[0], cmd)  # become the server: signals (Ctrl-C, SIGTERM) reach it directly


def dashboard_command(root_uri: str, port: int, host: str = "127.0.0.1",
                      address: str | None = None) -> list[str]:
    """The ``streamlit run`` command line that serves the dashboard for ``root_uri``."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(DASHBOARD_APP), "--server.port", str(port),
           "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal", "--", "--root", root_uri]
    return cmd + (["--ray-address", address] if address else [])


# ---------------------------------------------------------------- jobs
@jobs_app.command("submit")
def jobs_submit(spec_file: Path = typer.Argument(..., help="Job spec YAML with `kind:`."),
                root: Optional[str] = typer.Option(None, "--root", "-r", envvar="VIDCORPUS_ROOT",
                                                   help="Corpus root (default: the spec's `root:`)."),
                address: Optional[str] = AddressOpt,
                num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1,
                                                       help="CPUs of a newly started local head."),
                wait: bool = typer.Option(False, "--wait", help="Wait for the job and print its logs.")) -> None:
    """Validate SPEC and submit it through Ray's Jobs API; prints the job id."""
    from pipelines.jobs.submit import submit_spec
    from storage import RootError
    spec = _load_spec(spec_file, root)
    client = _connect(address, start=True, num_cpus=num_cpus)
    try:
        job_id = submit_spec(spec, client)
    except RootError as e:
        fail(str(e))
    typer.echo(job_id)
    if wait:
        job = _wait(client, job_id)
        typer.echo(client.logs(job_id))
        typer.echo(f"{job_id}: {job.status}")
        raise typer.Exit(0 if job.status == "SUCCEEDED" else 1)


@jobs_app.command("list")
def jobs_list(root: str = RootOpt, address: Optional[str] = AddressOpt) -> None:
    """Jobs in the catalog, with Ray's status where the cluster knows them."""
    from pipelines.jobs.records import TERMINAL, job_rows
    from pipelines.jobs.submit import reconcile
    catalog = open_catalog(root)
    ray_jobs = {j.job_id: j for j in _client_jobs(address)}
    stale = [r["job_id"] for r in job_rows(catalog) if r["status"] not in TERMINAL and r["job_id"] in ray_jobs]
    for job_id in stale:  # ended on Ray without recording it (killed, failed on start)
        reconcile(catalog, ray_jobs[job_id])
    rows = [dict(job_id=r["job_id"], kind=r["kind"], status=r["status"],
                 ray=getattr(ray_jobs.get(r["job_id"]), "status", "-"), wall_s=r["wall_s"],
                 started_at=r["started_at"]) for r in job_rows(catalog)]
    typer.echo(format_table(pa.Table.from_pylist(rows)) if rows else "no jobs yet")


@jobs_app.command("status")
def jobs_status(job_id: str = typer.Argument(...), root: str = RootOpt,
                address: Optional[str] = AddressOpt) -> None:
    """One job: catalog status, Ray status and per-stage counts."""
    from pipelines.jobs.records import job_row, stage_stats
    from pipelines.jobs.submit import reconcile
    catalog = open_catalog(root)
    ray_job = _client_job(address, job_id)
    if ray_job is not None:
        reconcile(catalog, ray_job)
    row = job_row(catalog, job_id)
    if row is None and ray_job is None:
        fail(f"no job {job_id!r} in the catalog at {root} or on the Ray cluster")
    if row:
        typer.echo(f"{job_id}: {row['status']} ({row['kind']}, {row['wall_s'] or 0:.1f}s)")
        stages = stage_stats(row)
        if stages:
            typer.echo(format_table(pa.Table.from_pylist(
                [dict(stage=s["name"], n_in=s["n_in"], kept=s["kept"], dropped=json.dumps(s["dropped"]),
                      busy_s=round(s["busy_s"], 2)) for s in stages])))
        if row.get("error"):
            typer.echo("error: " + row["error"].strip().splitlines()[-1])
    if ray_job:
        typer.echo(f"ray: {ray_job.status}" + (f" ({ray_job.message})" if ray_job.message else ""))


@jobs_app.command("logs")
def jobs_logs(job_id: str = typer.Argument(...), root: str = RootOpt,
              address: Optional[str] = AddressOpt) -> None:
    """The job's files under ROOT/jobs/<id>/ and, when the cluster has them, Ray's driver logs."""
    from pipelines.jobs.logs import job_files, ray_logs
    catalog = open_catalog(root)
    files = job_files(catalog.root, job_id)
    for name, text in files.items():
        typer.echo(f"==> ROOT/jobs/{job_id}/{name} <==\n{text.rstrip()}\n")
    logs = ray_logs(address, job_id)
    if logs is not None:
        typer.echo(f"==> ray job logs <==\n{logs.rstrip()}")
    elif not files:
        fail(f"no logs for {job_id!r}: not under {catalog.root.uri()}/jobs/ and not on a running cluster")


@jobs_app.command("stop")
def jobs_stop(job_id: str = typer.Argument(...), root: str = RootOpt,
              address: Optional[str] = AddressOpt) -> None:
    """Stop a running job (Ray stops it; the catalog row says stopped)."""
    from pipelines.jobs.submit import stop_job
    stopped = stop_job(_connect(address), open_catalog(root), job_id)
    typer.echo(f"{job_id}: {'stopping' if stopped else 'not running (nothing to stop)'}")


@jobs_app.command("head")
def jobs_head(stop: bool = typer.Option(False, "--stop", help="Stop the local head and its processes."),
              num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1)) -> None:
    """Start (or show) the local Ray head that jobs are submitted to; --stop ends it."""
    from pipelines.jobs.head import HeadError, ensure_head, stop_head
    if stop:
        typer.echo("stopped the local Ray head" if stop_head() else "no local Ray head recorded")
        return
    try:
        state, started = ensure_head(num_cpus)
    except HeadError as e:
        fail(str(e), code=1)
    typer.echo(f"{'started' if started else 'running'}: {state.dashboard_url} "
               f"(pid {state.pid}, {state.num_cpus} CPUs)")


# ---------------------------------------------------------------- schedules
@schedule_app.command("add")
def schedule_add(name: str = typer.Argument(..., help="Schedule name (letters, digits, . _ -)."),
                 spec_file: Path = typer.Argument(..., help="Job spec YAML to submit on each run."),
                 every: Optional[str] = typer.Option(None, "--every", help="Interval: 30s, 15m, 2h, 1d."),
                 cron: Optional[str] = typer.Option(None, "--cron", help="Cron rule in UTC, e.g. '0 3 * * *'."),
                 root: str = RootOpt,
                 replace: bool = typer.Option(False, "--replace", help="Overwrite a schedule of that name.")) -> None:
    """Add a recurring job (validated now, submitted by `vidcorpus scheduler`)."""
    from pipelines.jobs.schedules import Schedule, ScheduleStore, parse_every
    from pipelines.jobspec import JobSpecError, validate
    catalog = open_catalog(root, create=True)
    spec = _load_spec(spec_file, None, default_root=catalog.root.uri())
    try:
        every_s = parse_every(every) if every is not None else None
        schedule = validate(Schedule, dict(name=name, every_s=every_s, cron=cron,
                                           spec=spec.model.model_dump(mode="json")), f"schedule {name}")
        ScheduleStore(catalog.root).add(schedule, replace=replace)
    except JobSpecError as e:
        fail(str(e))
    typer.echo(f"schedule {name}: {schedule.rule()}, submits `kind: {spec.kind}` jobs into {spec.root}")


@schedule_app.command("list")
def schedule_list(root: str = RootOpt) -> None:
    """Schedules with their rule, runs, skips and last job."""
    from pipelines.jobs.schedules import ScheduleStore
    store = ScheduleStore(open_catalog(root).root)
    rows = []
    for s in store.list():
        st = store.state(s.name)
        rows.append(dict(name=s.name, rule=s.rule(), kind=s.spec.get("kind"), runs=st.runs,
                         skipped=st.skipped, last_job=st.last_job_id or "-", note=st.note or ""))
    typer.echo(format_table(pa.Table.from_pylist(rows)) if rows else "no schedules")


@schedule_app.command("remove")
def schedule_remove(name: str = typer.Argument(...), root: str = RootOpt) -> None:
    """Remove a schedule and its state (jobs already submitted keep running)."""
    from pipelines.jobs.schedules import ScheduleStore
    from pipelines.jobspec import JobSpecError
    try:
        ScheduleStore(open_catalog(root).root).remove(name)
    except JobSpecError as e:
        fail(str(e))
    typer.echo(f"removed schedule {name}")


def scheduler(root: str = RootOpt, address: Optional[str] = AddressOpt,
              tick: float = typer.Option(30.0, "--tick", min=0.1, help="Seconds between checks."),
              once: bool = typer.Option(False, "--once", help="Check once, submit what is due, exit.")) -> None:
    """Run the scheduler loop: submit due jobs, skip overlaps, catch up once after downtime."""
    from pipelines.jobs.schedules import RaySubmitter, ScheduleStore, run_scheduler
    catalog = open_catalog(root)
    submitter = RaySubmitter(_connect(address, start=True), catalog.root.uri(), address)
    typer.echo(f"scheduler: root {catalog.root.uri()}, tick {tick:g}s" + (" (once)" if once else ""))
    stop = threading.Event()  # Ctrl-C / SIGTERM: finish the submission under way, then stop
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        events = run_scheduler(ScheduleStore(catalog.root), submitter, tick_s=tick, once=once, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop.is_set():
        typer.echo("scheduler: stopped")
        return
    for e in events:
        typer.echo(f"{e.schedule}: {e.action} {e.job_id or ''} {e.note or ''}".rstrip())


def run_spec_cmd(spec_file: str = typer.Argument(..., help="Job spec YAML (path or fsspec URL)."),
                 job_id: Optional[str] = typer.Option(None, "--job-id", help="Job id (default: new)."),
                 root: Optional[str] = typer.Option(None, "--root", "-r", help="Override the spec's root.")) -> None:
    """Run a job spec in this process (what a submitted Ray job runs)."""
    from pipelines.jobs.runspec import run_spec_file
    from pipelines.jobspec import JobSpecError
    try:
        job_id, summary = run_spec_file(spec_file, job_id, root)
    except JobSpecError as e:
        fail(str(e))
    typer.echo(summary or f"job {job_id} finished")


# ---------------------------------------------------------------- helpers
def _load_spec(path: Path, root: str | None, default_root: str | None = None):
    """Validated JobSpec from a file; exits 2 with what to change when it does not validate."""
    from pipelines.jobs.specs import parse_spec
    from pipelines.jobspec import JobSpecError, load_yaml
    try:
        data = load_yaml(path)
        if root is None and not data.get("root"):
            root = default_root
        return parse_spec(data, f"job spec {path}", root=root)
    except JobSpecError as e:
        fail(str(e))


def _connect(address: str | None, start: bool = False, num_cpus: int | None = None):
    """A JobsClient, or exit 1 with why there is none (no head, unreachable, failed to start)."""
    from pipelines.jobs.head import HeadError
    from pipelines.jobs.submit import JobsClient, NoClusterError
    try:
        return JobsClient.connect(address, start=start, num_cpus=num_cpus)
    except (NoClusterError, HeadError, OSError) as e:
        fail(str(e), code=1)


def _client_jobs(address: str | None) -> list:
    """Ray's jobs, or [] when no local head runs (an explicit unreachable address still fails)."""
    from pipelines.jobs.head import find_head
    return _connect(address).jobs() if address or find_head() else []


def _client_job(address: str | None, job_id: str):
    from pipelines.jobs.head import find_head
    return _connect(address).job(job_id) if address or find_head() else None


def _wait(client, job_id: str, poll_s: float = 1.0):
    while True:
        job = client.job(job_id)
        if job is not None and job.is_terminal:
            return job
        time.sleep(poll_s)
