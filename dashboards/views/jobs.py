"""Jobs: the jobs table with Ray's status, per-stage progress and throughput, logs, and a submit form."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import data

TEMPLATE = """kind: ingest
sources:
  - /path/to/videos
config:
  runner: {kind: ray}
"""


def render() -> None:
    settings = data.settings()
    st.title("Jobs")
    ray_jobs, ray_note = _ray_jobs(settings.ray_address)
    st.caption(ray_note)
    jobs = data.run_sql(settings.root, "SELECT job_id, kind, status, round(wall_s, 1) AS wall_s, started_at, "
                                       "finished_at, stages, error FROM jobs ORDER BY started_at DESC NULLS FIRST")
    if jobs.empty:
        st.info("No jobs yet. Submit one below or with `vidcorpus jobs submit SPEC.yaml`.")
    else:
        jobs["ray"] = jobs["job_id"].map(lambda j: ray_jobs.get(j, "-"))
        st.dataframe(jobs.drop(columns=["stages", "error"]), hide_index=True)
        job_id = st.selectbox("Job", jobs["job_id"].tolist())
        if job_id:
            _job(settings, jobs.loc[jobs["job_id"] == job_id].iloc[0])
    _submit_form(settings)


@st.cache_data(ttl=5, show_spinner=False)
def _ray_jobs(address: str | None) -> tuple[dict[str, str], str]:
    """job id → Ray status, and a line saying which cluster (or none) was asked."""
    from pipelines.jobs.submit import JobsClient, NoClusterError
    try:
        client = JobsClient.connect(address)
        return {j.job_id: j.status for j in client.jobs()}, f"Ray cluster: {client.address}"
    except NoClusterError:
        return {}, "Ray cluster: none running (a submitted job starts the local head)."
    except Exception as e:  # an unreachable cluster must not break the page
        return {}, f"Ray cluster {address}: not reachable ({type(e).__name__})"


def _job(settings, row: pd.Series) -> None:
    from pipelines.jobs.records import stage_stats
    c = st.columns(4)
    c[0].metric("Status", row["status"] or "?")
    c[1].metric("Ray", row["ray"])
    c[2].metric("Kind", row["kind"] or "?")
    c[3].metric("Wall time", f"{row['wall_s'] or 0:.1f} s")
    stages = stage_stats(row.to_dict())
    if stages:
        st.subheader("Stages")
        _stage_progress(stages, float(row["wall_s"] or 0))
    if isinstance(row["error"], str) and row["error"]:
        st.subheader("Error")
        st.code(row["error"], language=None)
    _logs(settings, row["job_id"])


def _stage_progress(stages: list[dict], wall_s: float) -> None:
    first = max(1, int(stages[0].get("n_in", 0)))
    for s in stages:
        n_in, kept = int(s.get("n_in", 0)), int(s.get("kept", 0))
        dropped = ", ".join(f"{k} {v}" for k, v in (s.get("dropped") or {}).items()) or "none"
        rate = f"{n_in / wall_s:.2f} items/s" if wall_s > 0 else "-"
        st.progress(min(1.0, n_in / first), text=f"**{s.get('name')}**: {n_in} in, {kept} kept, dropped: "
                                                 f"{dropped} · {rate} · busy {float(s.get('busy_s', 0)):.1f}s")


def _logs(settings, job_id: str) -> None:
    from pipelines.jobs.logs import job_files, ray_logs
    st.subheader("Logs")
    files = job_files(data.catalog(settings.root).root, job_id)
    for name, text in files.items():
        with st.expander(f"ROOT/jobs/{job_id}/{name}", expanded=name in ("summary.txt", "error.txt")):
            st.code(text, language="yaml" if name.endswith(".yaml") else None)
    logs = ray_logs(settings.ray_address, job_id)
    if logs:
        with st.expander("Ray driver log", expanded=not files):
            st.code(logs[-50_000:], language=None)
    elif not files:
        st.caption("No logs recorded for this job.")


def _submit_form(settings) -> None:
    from pipelines.jobs.specs import KINDS, parse_spec
    from pipelines.jobspec import JobSpecError
    st.subheader("Submit a job")
    st.caption(f"Kinds: {', '.join(sorted(KINDS))}. `root:` defaults to this dashboard's root.")
    with st.form("submit_job"):
        text = st.text_area("Job spec (YAML)", value=TEMPLATE, height=200)
        submitted = st.form_submit_button("Validate and submit", icon=":material/send:")
    if not submitted:
        return
    try:
        spec = parse_spec(text, "job spec", root=None if "root:" in text else settings.root)
    except JobSpecError as e:
        st.error(f"Not submitted: {e}")
        return
    with st.spinner("Submitting (the first submission starts a local Ray head)…"):
        job_id = _submit(spec, settings.ray_address)
    if job_id:
        st.success(f"Submitted {spec.kind} job `{job_id}`")
        _ray_jobs.clear()


def _submit(spec, address: str | None) -> str | None:
    from pipelines.jobs.submit import JobsClient, submit_spec
    try:
        return submit_spec(spec, JobsClient.connect(address, start=True))
    except Exception as e:  # show why (cluster down, root not writable) instead of a traceback
        st.error(f"Submission failed: {type(e).__name__}: {e}")
        return None
