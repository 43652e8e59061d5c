"""Dashboard pages (a plain package, not Streamlit's auto-mounted `pages/`): each module has ``render()``, mounted by ``dashboards/app.py`` with st.navigation."""
