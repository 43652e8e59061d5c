"""The vidcorpus dashboard: ``vidcorpus dashboard --root ROOT [--port P]``.

Equivalent to ``streamlit run dashboards/app.py -- --root ROOT [--ray-address URL]``. One
Streamlit app with a page per concern (``dashboards/views/``; not ``pages/``, which Streamlit would
mount as a legacy multipage app instead of this navigation): Overview, Distributions, Clips,
SQL, Jobs, Training. Everything reads the catalog through the read-only SQL path.
"""
from __future__ import annotations

import streamlit as st

from dashboards import data
from dashboards.views import clips, distributions, jobs, overview, sql, training

PAGES = [
    (overview.render, "Overview", "overview", ":material/dashboard:"),
    (distributions.render, "Distributions", "distributions", ":material/bar_chart:"),
    (clips.render, "Clips", "clips", ":material/movie:"),
    (sql.render, "SQL", "sql", ":material/terminal:"),
    (jobs.render, "Jobs", "jobs", ":material/work:"),
    (training.render, "Training", "training", ":material/show_chart:"),
]


def main() -> None:
    st.set_page_config(page_title="vidcorpus", page_icon=":material/movie:", layout="wide")
    try:
        settings = data.settings()
        data.catalog(settings.root)
    except ValueError as e:  # no root given, or RootError: say what to pass instead of a traceback
        st.error(str(e))
        st.stop()
    nav = st.navigation([st.Page(fn, title=title, url_path=path, icon=icon, default=(i == 0))
                         for i, (fn, title, path, icon) in enumerate(PAGES)])
    with st.sidebar:
        st.caption(f"Corpus root: `{settings.root}`")
        if st.button("Refresh data", icon=":material/refresh:"):
            st.cache_data.clear()
    nav.run()
    st.caption(f"vidcorpus dashboard · {nav.title}")


main()
