"""SQL: a read-only console over the catalog (tables and views), with a CSV download."""
from __future__ import annotations

import streamlit as st

from dashboards import data
from storage import SQLError

DEFAULT_SQL = "SELECT clip_id, duration_s, width, height, caption\nFROM corpus_v\nLIMIT 20"
HELP = ("Tables: videos, clips, scores, embeddings, captions, rejections, datasets, shard_samples, jobs. "
        "Views: clips_v (clips + a column per score + rejection reasons), corpus_v (clips_v + alt_text, "
        "caption). Read-only: writes, ATTACH, INSTALL/LOAD, COPY and files outside the catalog are refused.")


def render() -> None:
    root = data.settings().root
    st.title("SQL")
    st.caption(HELP)
    with st.form("sql_form"):
        query = st.text_area("Query", value=DEFAULT_SQL, height=160, key="sql_text")
        run = st.form_submit_button("Run", icon=":material/play_arrow:", type="primary")
    if run:
        st.session_state["sql_ran"] = query
    query = st.session_state.get("sql_ran")
    if not query:
        st.caption("Write a query and press Run.")
        return
    try:
        result = data.run_sql(root, query)
    except SQLError as e:
        st.error(str(e), icon=":material/block:")
        return
    st.caption(f"{len(result)} row(s) × {len(result.columns)} column(s)")
    st.dataframe(result, hide_index=True)
    st.download_button("Download CSV", result.to_csv(index=False).encode(), file_name="query.csv",
                       mime="text/csv", icon=":material/download:")
