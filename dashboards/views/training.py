"""Training: loss curves from runs/<run_id>/metrics.jsonl and generated samples."""
from __future__ import annotations

import streamlit as st

from dashboards import data
from dashboards.media import MediaError, read_media


def render() -> None:
    root = data.settings().root
    st.title("Training")
    runs = data.list_runs(root)
    if not runs:
        st.info("No training runs yet (runs write ROOT/runs/<run_id>/metrics.jsonl).")
        return
    run_id = st.selectbox("Run", runs)
    metrics = data.run_metrics(root, run_id)
    if metrics.empty:
        st.caption("This run has no metrics.jsonl yet.")
    else:
        _curves(metrics)
    _samples(root, run_id)


def _curves(metrics) -> None:
    x = "step" if "step" in metrics.columns else None
    numeric = [c for c in metrics.select_dtypes("number").columns if c != x]
    if not numeric:
        st.caption("metrics.jsonl has no numeric columns.")
        return
    default = [c for c in numeric if "loss" in c] or numeric[:1]
    chosen = st.multiselect("Metrics", numeric, default=default)
    last = metrics.iloc[-1]
    cols = st.columns(min(4, max(1, len(chosen))))
    for i, name in enumerate(chosen):
        cols[i % len(cols)].metric(name, f"{last[name]:.4g}")
    for name in chosen:
        st.markdown(f"**{name}**")
        st.line_chart(metrics[[x, name]].dropna() if x else metrics[[name]].dropna(), x=x, y=name, height=240)


def _samples(root: str, run_id: str) -> None:
    st.subheader("Samples")
    samples = data.run_samples(root, run_id)
    if not samples:
        st.caption("No samples yet (mp4/png files in runs/<run_id>/samples/).")
        return
    cols = st.columns(3)
    for i, rel in enumerate(samples[-12:]):
        with cols[i % 3]:
            try:
                media, mime = read_media(data.catalog(root).root, rel)
            except MediaError as e:
                st.warning(str(e))
                continue
            if mime.startswith("video/"):
                st.video(media, format=mime)
            else:
                st.image(media)
            st.caption(rel.rsplit("/", 1)[-1])
