"""Overview: corpus size, storage, and the per-stage funnel with drop reasons."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import data


def render() -> None:
    root = data.settings().root
    st.title("Overview")
    t = data.totals(root)
    c = st.columns(5)
    c[0].metric("Videos", f"{int(t['videos_ok']):,}", help="Ingested videos with status ok.")
    c[1].metric("Quarantined", f"{int(t['videos_quarantined']):,}", help="Inputs that could not be used.")
    c[2].metric("Clips", f"{int(t['clips']):,}")
    c[3].metric("Clip duration", _human_hours(t["clip_hours"]),
                help=f"Source videos: {_human_hours(t['source_hours'])}")
    c[4].metric("Storage", _human_bytes(sum(data.storage_bytes(root).values())))
    _storage(root)
    _funnel(root)


def _storage(root: str) -> None:
    st.subheader("Storage by area")
    sizes = data.storage_bytes(root)
    if not any(sizes.values()):
        st.caption("Nothing stored yet.")
        return
    frame = pd.DataFrame({"MB": [n / 1e6 for n in sizes.values()]}, index=pd.Index(list(sizes), name="area"))
    st.bar_chart(frame, horizontal=True, sort=False, height=220)


def _funnel(root: str) -> None:
    st.subheader("Funnel per stage")
    funnel = data.funnel(root)
    if funnel.empty:
        st.info("No job has recorded stage counts yet. Run `vidcorpus ingest` or submit a job.")
    else:
        chart = funnel.assign(label=funnel["kind"] + ": " + funnel["stage"]).set_index("label")
        st.bar_chart(chart[["kept", "dropped"]], horizontal=True, sort=False)
        st.dataframe(funnel, hide_index=True)
    left, right = st.columns(2)
    with left:
        st.markdown("**Clip rejections by reason**")
        _table_or(data.rejection_reasons(root), "No rejected clips.")
    with right:
        st.markdown("**Quarantined videos by error class**")
        _table_or(data.quarantine_reasons(root), "No quarantined videos.")


def _table_or(df, empty_text: str) -> None:
    if len(df):
        st.dataframe(df, hide_index=True)
    else:
        st.caption(empty_text)


def _human_hours(hours: float) -> str:
    if hours >= 1:
        return f"{hours:,.1f} h"
    return f"{hours * 60:.1f} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
