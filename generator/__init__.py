"""vidcorpus generator package."""
