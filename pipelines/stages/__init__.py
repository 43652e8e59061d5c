"""Pipeline stages and the runners that execute them (locally or on Ray Data)."""
from pipelines.stages.base import DROP, Resources, Stage, StageStats, summarize_stats
from pipelines.stages.runners import LocalRunner, RayRunner, create_runner

__all__ = ["DROP", "Resources", "Stage", "StageStats", "summarize_stats",
           "LocalRunner", "RayRunner", "create_runner"]
