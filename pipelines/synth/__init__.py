"""The synthetic world: multi-shot videos with exact ground truth (docs/synthetic_world.md)."""

from pipelines.synth.render import render_world

__all__ = ["render_world"]
