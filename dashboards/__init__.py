"""vidcorpus dashboards package."""
