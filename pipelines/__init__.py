"""vidcorpus pipelines package."""
