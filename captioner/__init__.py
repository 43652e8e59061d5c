"""vidcorpus captioner package."""
