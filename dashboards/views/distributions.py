"""Distributions: clip duration, resolution and aspect ratio, fps, scores, caption length."""
from __future__ import annotations

import streamlit as st

from dashboards import data


def render() -> None:
    root = data.settings().root
    st.title("Distributions")
    shapes = data.clip_shapes(root)
    if shapes.empty:
        st.info("No clips yet: the distributions appear once videos are ingested.")
    else:
        _clip_shapes(shapes)
    _scores(root)
    _captions(root)


def _clip_shapes(shapes) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Clip duration (s)")
        st.bar_chart(data.histogram(shapes["duration_s"]))
        st.subheader("Frame rate")
        st.bar_chart(shapes["fps"].round(2).astype(str).value_counts().rename("clips"))
    with right:
        st.subheader("Resolution")
        st.bar_chart(shapes["resolution"].value_counts().head(20).rename("clips"))
        st.subheader("Aspect ratio")
        st.bar_chart(shapes.groupby(["aspect", "shape"]).size().rename("clips").reset_index(),
                     x="aspect", y="clips", color="shape")


def _scores(root: str) -> None:
    st.subheader("Scores")
    scores = data.score_values(root)
    if scores.empty:
        st.caption("No scores yet (score jobs add clip_text, motion, …).")
        return
    names = sorted(scores["name"].unique())
    cols = st.columns(min(3, len(names)))
    for i, name in enumerate(names):
        with cols[i % len(cols)]:
            st.markdown(f"**{name}**")
            st.bar_chart(data.histogram(scores.loc[scores["name"] == name, "value"]), height=220)


def _captions(root: str) -> None:
    st.subheader("Caption length (words)")
    caps = data.caption_lengths(root)
    if caps.empty:
        st.caption("No captions yet.")
        return
    counts = caps.groupby(["words", "source"]).size().unstack(fill_value=0)
    st.bar_chart(counts, stack=False, x_label="words", y_label="captions")
    st.dataframe(caps.groupby("source").agg(captions=("words", "size"), mean_words=("words", "mean"),
                                            mean_chars=("chars", "mean")).round(1))
