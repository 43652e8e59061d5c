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
    """Run stages in this process (same stages as Ray runs); what tests and small jobs use.

    ``pipelined`` (the default): each stage runs in its own thread, chunks handed on through
    small queues, so while the model stage embeds one chunk the decode stage already reads the
    next — Ray Data's streaming, in threads. It pays where stages release the GIL (PyAV
    decoding, torch, numpy): the score job's decode no longer adds to its model time on a
    two-core machine (benchmarks/RESULTS.md, "Score throughput"). Each stage instance is only
    ever called from its own thread, and batches come out in input order. ``pipelined=False``
    runs chunk after chunk, stage after stage, in the calling thread.
    """

    name = "local"
    QUEUE_CHUNKS = 2  # chunks waiting between two stages

    def __init__(self, pipelined: bool = True):
        self.pipelined = pipelined

    def run(self, stages: list[Stage], rows: list[dict[str, Any]], *, desc: str = "rows",
            chunk: int = 1) -> Iterator[list[dict[str, Any]]]:
        chunks = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
        with tqdm(total=len(rows), desc=desc, unit="item", disable=None) as bar:
            out = self._pipelined(stages, chunks) if self.pipelined and stages else (
                _through(stages, batch) for batch in chunks)
            for batch in out:
                bar.update(len(batch))
                yield batch

    def _pipelined(self, stages: list[Stage], chunks: list) -> Iterator[list[dict[str, Any]]]:
        import queue
        import threading
        queues = [queue.Queue(self.QUEUE_CHUNKS) for _ in range(len(stages) + 1)]
        stop = threading.Event()

        def put(q, item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def get(q):
            while not stop.is_set():
                try:
                    return q.get(timeout=0.1)
                except queue.Empty:
                    continue
            return _END

        def feed():
            for batch in chunks:
                if not put(queues[0], batch):
                    return
            put(queues[0], _END)

        def work(stage: Stage, inbox, outbox):
            while (batch := get(inbox)) is not _END:
                if isinstance(batch, _Failed):
                    put(outbox, batch)
                    return
                try:
                    batch = _in_batches(stage, batch)
                except BaseException as e:  # noqa: BLE001 - handed to the caller, raised there
                    put(outbox, _Failed(e))
                    return
                if not put(outbox, batch):
                    return
            put(outbox, _END)

        threads = [threading.Thread(target=feed, name="local-feed", daemon=True)]
        threads += [threading.Thread(target=work, args=(stage, queues[k], queues[k + 1]),
                                     name=f"local-{stage.name}", daemon=True)
                    for k, stage in enumerate(stages)]
        for t in threads:
            t.start()
        try:
            while (batch := queues[-1].get()) is not _END:
                if isinstance(batch, _Failed):
                    raise batch.error
                yield batch
        finally:  # also when the caller stops early: the threads wind down
            stop.set()
            for t in threads:
                t.join()


_END = object()  # end of the chunks, passed down the stage threads


class _Failed:
    """An exception a stage thread raised, handed down to the caller."""

    def __init__(self, error: BaseException):
        self.error = error


def _through(stages: list[Stage], batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for stage in stages:
        batch = _in_batches(stage, batch)
    return batch


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

