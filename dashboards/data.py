"""Catalog access for the dashboard: settings, cached read-only queries, and the numbers pages show.

Every query goes through ``Catalog.query`` (the read-only, sandboxed DuckDB path of
``storage.sql``): the SQL console and the clip filter can read the catalog and nothing else.
Results are cached for a few seconds (``TTL_S``) so pages stay fast while jobs write new parts.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from storage import Catalog, CorpusRoot

TTL_S = 10
ROOT_AREAS = ("catalog", "clips", "shards", "models", "runs", "jobs")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Settings:
    """What the app serves: the corpus root and (optionally) a Ray Jobs API address."""

    root: str
    ray_address: str | None = None


def settings(argv: list[str] | None = None) -> Settings:
    """From ``streamlit run app.py -- --root ROOT [--ray-address URL]``, else $VIDCORPUS_ROOT."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--root", default=os.environ.get("VIDCORPUS_ROOT"))
    ap.add_argument("--ray-address", default=os.environ.get("VIDCORPUS_RAY_ADDRESS"))
    args, _ = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not args.root:
        raise ValueError("the dashboard needs a corpus root: `vidcorpus dashboard --root ROOT` "
                         "(or VIDCORPUS_ROOT)")
    return Settings(args.root, args.ray_address)


@st.cache_resource(show_spinner=False)
def catalog(root_url: str) -> Catalog:
    return Catalog(CorpusRoot.open(root_url))


def run_sql(root_url: str, sql: str) -> pd.DataFrame:
    """One read-only query → DataFrame; raises storage.SQLError / ReadOnlyError when refused."""
    return _cached_sql(root_url, sql.strip())


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _cached_sql(root_url: str, sql: str) -> pd.DataFrame:
    return catalog(root_url).query(sql).to_pandas()


def filter_clips(root_url: str, where: str, limit: int = 200) -> pd.DataFrame:
    """Clips of ``corpus_v`` matching a user's WHERE clause (checked by the read-only SQL path)."""
    where = where.strip() or "TRUE"
    # the clause sits on its own lines so a trailing `--` comment cannot swallow the rest
    return run_sql(root_url, "SELECT clip_id, video_id, round(duration_s, 2) AS duration_s, width, height, "
                             "round(fps, 2) AS fps, transition_in, rejected, rejection_reasons, caption, uri "
                             f"FROM corpus_v WHERE (\n{where}\n) ORDER BY video_id, start_s LIMIT {int(limit)}")


def sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


# ---------------------------------------------------------------- overview
def totals(root_url: str) -> dict[str, float]:
    """Videos (ok / quarantined), clips, hours in and out, rejected clips."""
    row = run_sql(root_url, """
        SELECT (SELECT count(*) FROM videos WHERE status = 'ok') AS videos_ok,
               (SELECT count(*) FROM videos WHERE status <> 'ok') AS videos_quarantined,
               (SELECT coalesce(sum(duration_s), 0) / 3600 FROM videos WHERE status = 'ok') AS source_hours,
               (SELECT count(*) FROM clips) AS clips,
               (SELECT coalesce(sum(duration_s), 0) / 3600 FROM clips) AS clip_hours,
               (SELECT count(DISTINCT clip_id) FROM rejections) AS rejected_clips,
               (SELECT count(*) FROM captions) AS captions""").iloc[0]
    return {k: float(v) for k, v in row.items()}


@st.cache_data(ttl=60, show_spinner=False)
def storage_bytes(root_url: str) -> dict[str, int]:
    """Bytes used under each area of the root (catalog, clips, shards …)."""
    root = catalog(root_url).root
    out = {}
    for area in ROOT_AREAS:
        path = root.join(area)
        out[area] = int(root.fs.du(path, total=True)) if root.fs.exists(path) else 0
    return out


def funnel(root_url: str) -> pd.DataFrame:
    """Per-stage counts summed over the latest row of every job: stage, kind, in, kept, dropped."""
    jobs = run_sql(root_url, "SELECT job_id, kind, stages, started_at FROM jobs ORDER BY started_at NULLS LAST")
    rows: dict[tuple[str, str], dict] = {}
    for job in jobs.itertuples():
        for s in _stages(job.stages):
            key = (job.kind or "?", s.get("name", "?"))
            acc = rows.setdefault(key, dict(kind=key[0], stage=key[1], n_in=0, kept=0, dropped=0, reasons={}))
            acc["n_in"] += int(s.get("n_in", 0))
            acc["kept"] += int(s.get("kept", 0))
            for reason, n in (s.get("dropped") or {}).items():
                acc["dropped"] += int(n)
                acc["reasons"][reason] = acc["reasons"].get(reason, 0) + int(n)
    out = pd.DataFrame(list(rows.values()), columns=["kind", "stage", "n_in", "kept", "dropped", "reasons"])
    out["reasons"] = out["reasons"].map(lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-")
    return out


def rejection_reasons(root_url: str) -> pd.DataFrame:
    return run_sql(root_url, "SELECT stage, reason, count(*) AS clips FROM rejections "
                             "GROUP BY ALL ORDER BY clips DESC")


def quarantine_reasons(root_url: str) -> pd.DataFrame:
    return run_sql(root_url, "SELECT coalesce(error_class, 'unknown') AS error_class, count(*) AS videos "
                             "FROM videos WHERE status <> 'ok' GROUP BY ALL ORDER BY videos DESC")


def _stages(text: str | None) -> list[dict]:
    try:
        stages = json.loads(text or "[]")
    except json.JSONDecodeError:
        return []
    return [s for s in stages if isinstance(s, dict)] if isinstance(stages, list) else []


# ---------------------------------------------------------------- distributions
def clip_shapes(root_url: str) -> pd.DataFrame:
    return run_sql(root_url, """
        SELECT duration_s, fps, width, height, width || 'x' || height AS resolution,
               round(width / nullif(height, 0), 2) AS aspect,
               CASE WHEN width > 2 * height THEN 'ultrawide' WHEN width > height THEN 'landscape'
                    WHEN width = height THEN 'square' ELSE 'portrait' END AS shape
        FROM clips""")


def score_values(root_url: str) -> pd.DataFrame:
    return run_sql(root_url, "SELECT name, scorer, value FROM scores WHERE value IS NOT NULL")


def caption_lengths(root_url: str) -> pd.DataFrame:
    return run_sql(root_url, "SELECT source, length(text) AS chars, "
                             "len(string_split(trim(text), ' ')) AS words FROM captions WHERE text IS NOT NULL")


def histogram(values: pd.Series, bins: int = 20) -> pd.DataFrame:
    """A bar-chartable histogram: index = bin label, one column ``count``."""
    import numpy as np
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return pd.DataFrame({"count": []})
    counts, edges = np.histogram(values, bins=min(bins, max(1, values.nunique())))
    labels = [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(len(counts))]
    return pd.DataFrame({"count": counts}, index=pd.Index(labels, name="bin"))


# ---------------------------------------------------------------- one clip
def clip_detail(root_url: str, clip_id: str) -> dict | None:
    rows = run_sql(root_url, f"SELECT * FROM corpus_v WHERE clip_id = {sql_str(clip_id)}")
    return rows.iloc[0].to_dict() if len(rows) else None


def clip_captions(root_url: str, clip_id: str) -> pd.DataFrame:
    return run_sql(root_url, "SELECT source, text, model, clip_score, created_at FROM captions "
                             f"WHERE clip_id = {sql_str(clip_id)} ORDER BY source")


def clip_scores(root_url: str, clip_id: str) -> pd.DataFrame:
    return run_sql(root_url, "SELECT name, scorer, value FROM scores "
                             f"WHERE clip_id = {sql_str(clip_id)} ORDER BY name, scorer")


# ---------------------------------------------------------------- training runs
def list_runs(root_url: str) -> list[str]:
    root = catalog(root_url).root
    runs_dir = root.join("runs")
    if not root.fs.exists(runs_dir):
        return []
    names = (p.rstrip("/").rsplit("/", 1)[-1] for p in root.fs.ls(runs_dir, detail=False) if root.fs.isdir(p))
    return sorted((n for n in names if RUN_ID.match(n)), reverse=True)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_metrics(root_url: str, run_id: str) -> pd.DataFrame:
    """``runs/<run_id>/metrics.jsonl`` as a DataFrame (bad lines skipped)."""
    root = catalog(root_url).root
    path = root.join("runs", run_id, "metrics.jsonl")
    if not RUN_ID.match(run_id) or not root.fs.exists(path):
        return pd.DataFrame()
    records = []
    with root.fs.open(path, "r") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return pd.DataFrame.from_records(records)


def run_samples(root_url: str, run_id: str) -> list[str]:
    """Sample media of a run, as paths relative to the root (newest name last)."""
    from dashboards.media import MEDIA_TYPES
    root = catalog(root_url).root
    folder = root.join("runs", run_id, "samples")
    if not RUN_ID.match(run_id) or not root.fs.exists(folder):
        return []
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in root.fs.ls(folder, detail=False))
    return [f"runs/{run_id}/samples/{n}" for n in names
            if os.path.splitext(n)[1].lower() in MEDIA_TYPES]
