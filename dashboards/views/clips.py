"""Clips: filter with a SQL WHERE clause, play a clip, compare its captions and scores."""
from __future__ import annotations

import streamlit as st

from dashboards import data
from dashboards.media import MediaError, read_media
from storage import SQLError

EXAMPLES = "duration_s > 2 AND width >= height · NOT rejected · caption ILIKE '%red%' · clip_text > 0.25"


def render() -> None:
    root = data.settings().root
    st.title("Clips")
    with st.form("clip_filter"):
        where = st.text_input("WHERE", key="clip_where", placeholder="e.g. duration_s > 2 AND NOT rejected",
                              help=f"A condition over corpus_v columns. Examples: {EXAMPLES}")
        limit = st.slider("Max clips", 10, 1000, 200, step=10)
        st.form_submit_button("Filter", icon=":material/filter_alt:")
    try:
        clips = data.filter_clips(root, where, limit)
    except SQLError as e:
        st.error(f"Filter refused: {e}")
        return
    if clips.empty:
        st.info("No clips match." if where.strip() else "No clips in the catalog yet.")
        return
    st.caption(f"{len(clips)} clip(s) shown")
    st.dataframe(clips.drop(columns=["uri"]), hide_index=True, height=260)
    clip_id = st.selectbox("Clip", clips["clip_id"].tolist(), format_func=lambda c: _label(clips, c))
    if clip_id:
        _clip(root, clip_id)


def _label(clips, clip_id: str) -> str:
    row = clips.loc[clips["clip_id"] == clip_id].iloc[0]
    return f"{clip_id} · {row['width']}x{row['height']} · {row['duration_s']}s"


def _clip(root: str, clip_id: str) -> None:
    clip = data.clip_detail(root, clip_id)
    if clip is None:
        st.warning(f"Clip {clip_id} is not in the catalog any more.")
        return
    left, right = st.columns([2, 3])
    with left:
        try:
            media, mime = read_media(data.catalog(root).root, clip.get("uri") or "")
            st.video(media, format=mime)
        except MediaError as e:
            st.warning(f"Cannot play this clip: {e}")
    with right:
        st.markdown(f"**{clip_id}** from video `{clip['video_id']}`")
        st.markdown(f"{clip['width']}×{clip['height']} · {clip['fps']:.2f} fps · "
                    f"{clip['start_s']:.2f}–{clip['end_s']:.2f} s · in: {clip['transition_in']}")
        if clip.get("rejected"):
            st.markdown(f":orange[Rejected: {clip.get('rejection_reasons')}]")
        st.caption(f"source: {clip.get('video_uri')}")
    _captions(root, clip_id, clip)
    scores = data.clip_scores(root, clip_id)
    st.subheader("Scores")
    if scores.empty:
        st.caption("No scores for this clip.")
    else:
        st.dataframe(scores, hide_index=True)


def _captions(root: str, clip_id: str, clip: dict) -> None:
    st.subheader("Captions")
    alt, dense = st.columns(2)
    with alt:
        st.markdown("**Alt text**")
        st.write(clip.get("alt_text") or "—")
    with dense:
        st.markdown(f"**Dense caption** ({clip.get('caption_source') or 'none'})")
        st.write(clip.get("caption") or "—")
    variants = data.clip_captions(root, clip_id)
    if variants.empty:
        st.caption("No caption variants for this clip.")
    else:
        st.dataframe(variants, hide_index=True, column_config={"text": st.column_config.TextColumn(width="large")})
