"""Runners execute a list of stages over rows: in-process (tests) or on Ray Data (real jobs).

Both yield output batches (lists of row dicts) as they complete, so the driver can write
results to the catalog as the job goes (completion written last per video: see ingest.job).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator

from tqdm.auto import tqdm

from pipelines.stages.base import Stage

log = logging.getLogger(__name__)


class LocalRunner:
    """Run stages sequentially in this process; what tests use (same stages as Ray runs)."""

    name = "local"

    def run(self, stages: list[Stage], rows: list[dict[str, Any]], *, desc: str = "rows",
            chunk: int = 1) -> Iterator[list[dict[str, Any]]]:
        with tqdm(total=len(rows), desc=desc, unit="item", disable=None) as bar:
            for i in range(0, len(rows), chunk):
                batch = rows[i:i + chunk]
                for stage in stages:
                    batch = _in_batches(stage, batch)
                bar.update(len(batch))
                yield batch


def _in_batches(stage: Stage, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    size = max(1, stage.resources.batch_size)
    out: list[dict[str, Any]] = []
    for i in range(0, len(rows), size):
        out.extend(stage(rows[i:i + size]))
    return out


class RayRunner:
    """Run stages as a Ray Data pipeline: stateless stages as tasks, model stages as actor pools.

    ``address`` None starts (or joins, inside a Ray job) a local Ray; GPU fractions are requested
    only when the cluster has GPUs, so the same job spec runs on a laptop and on a GPU cluster.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.address = address
        self.num_cpus = num_cpus

    def _init(self):
        import ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING,
                                          configure_logging=True, log_to_driver=True)
            if self.address:
                kwargs["address"] = self.address
            elif self.num_cpus and not os.environ.get("RAY_ADDRESS"):
                kwargs["num_cpus"] = self.num_cpus
            ray.init(**kwargs)
        return ray

    def run(self, stages: list[Stage], rows: list[dict[str, Any]], *, desc: str = "rows",
            chunk: int = 1) -> Iterator[list[dict[str, Any]]]:
        ray = self._init()
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        ray.data.DataContext.get_current().enable_progress_bars = True
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
        for stage in stages:
            ds = _map_stage(ds, stage, has_gpu)
        for batch in ds.iter_batches(batch_size=chunk, batch_format="pyarrow", prefetch_batches=1):
            yield batch.to_pylist()

    def shutdown(self) -> None:
        import ray
        if ray.is_initialized():
            ray.shutdown()


def _map_stage(ds, stage: Stage, has_gpu: bool):
    res = stage.resources
    common = dict(batch_size=max(1, res.batch_size), batch_format="pyarrow",
                  num_cpus=res.num_cpus, num_gpus=res.num_gpus if has_gpu else 0)
    if res.actors > 0:
        from ray.data import ActorPoolStrategy
        return ds.map_batches(_StageActor, fn_constructor_args=(stage,),
                              compute=ActorPoolStrategy(size=res.actors), **common)
    return ds.map_batches(_make_task_fn(stage), **common)


def _make_task_fn(stage: Stage):
    def run_stage_task(batch):
        return rows_to_arrow(stage(batch.to_pylist()))
    return run_stage_task


def rows_to_arrow(rows: list[dict[str, Any]]):
    """Rows → Arrow with the union of their keys (``from_pylist`` alone takes the first row's)."""
    import pyarrow as pa
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])


class _StageActor:
    """Holds one stage instance per actor so ``setup()`` (model loading) happens once."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.stage.setup()
        self.stage._ready = True

    def __call__(self, batch):
        return rows_to_arrow(self.stage(batch.to_pylist()))


def create_runner(kind: str = "ray", address: str | None = None, num_cpus: int | None = None):
    """``local`` or ``ray`` (the default for real jobs)."""
    if kind == "local":
        return LocalRunner()
    if kind == "ray":
        return RayRunner(address=address, num_cpus=num_cpus)
    raise ValueError(f"unknown runner {kind!r}: use 'local' or 'ray'")

