"""Stages and runners: every item accounted for, the same result locally and on a real Ray."""
from __future__ import annotations

import pytest

from pipelines.stages.base import Drop, Resources, Stage, merge_stats, summarize_stats
from pipelines.stages.runners import LocalRunner, RayRunner, create_runner


class Square(Stage):
    name = "square"

    def process_row(self, row):
        if row["x"] % 3 == 0:
            raise Drop("div3", "divisible by 3", columns={"seen": True})
        return {"y": row["x"] ** 2}


class Scale(Stage):
    """A model-like stage: state built in setup(), run as an actor pool on Ray."""

    name = "scale"
    resources = Resources(actors=1, batch_size=4)

    def setup(self):
        self.k = 10

    def process_row(self, row):
        if row["y"] > 50:
            raise Drop("too_big")
        if row["y"] == 25:
            raise RuntimeError("a bug on one item must not kill the job")
        return {"z": row["y"] * self.k}


def _run(runner):
    rows = [{"x": i} for i in range(12)]
    out = [r for batch in runner.run([Square(), Scale()], rows, chunk=4) for r in batch]
    return sorted(out, key=lambda r: r["x"])


def _check(out):
    assert len(out) == 12
    by_x = {r["x"]: r for r in out}
    assert by_x[4]["z"] == 160 and by_x[7]["z"] == 490
    assert by_x[3]["_drop"] == "div3" and by_x[3]["seen"] is True
    assert by_x[5]["_drop"] == "scale_error" and "RuntimeError" in by_x[5]["_error"]
    stats = summarize_stats(["square", "scale"], out)
    assert [(s.n_in, s.kept, s.dropped) for s in stats] == [
        (12, 8, {"div3": 4}), (8, 4, {"scale_error": 1, "too_big": 3})]
    doubled = merge_stats(stats, stats)
    assert doubled[1].dropped == {"scale_error": 2, "too_big": 6}


def test_local_runner_accounts_for_every_item():
    _check(_run(LocalRunner()))
    _check(_run(LocalRunner(pipelined=False)))


class Boom(Stage):
    name = "boom"

    def __call__(self, batch):
        if any(r["x"] == 9 for r in batch):
            raise ValueError("a stage bug outside process_row reaches the caller")
        return batch


def test_pipelined_local_runner_keeps_order_overlaps_stages_and_reports_failures():
    import threading
    import time

    class Slow(Stage):
        name = "slow"

        def __init__(self):
            self.threads, self.spans = set(), []

        def __call__(self, batch):
            self.threads.add(threading.get_ident())
            t0 = time.perf_counter()
            time.sleep(0.05)
            self.spans.append((t0, time.perf_counter()))
            return [{**r, self.name: True} for r in batch]

    first, second = Slow(), Slow()
    second.name = "slower"
    rows = [{"x": i} for i in range(12)]
    batches = list(LocalRunner().run([first, second], rows, chunk=3))
    assert [r["x"] for b in batches for r in b] == list(range(12))  # input order
    assert all(r["slow"] and r["slower"] for b in batches for r in b)
    assert len(first.threads) == len(second.threads) == 1 and first.threads != second.threads
    # stage 1 works on chunk k+1 while stage 2 works on chunk k
    assert any(a0 < b1 and b0 < a1 for a0, a1 in first.spans[1:] for b0, b1 in second.spans)

    with pytest.raises(ValueError, match="reaches the caller"):
        list(LocalRunner().run([Square(), Boom()], rows, chunk=3))
    runs = LocalRunner().run([first, second], rows, chunk=3)
    assert len(next(runs)) == 3
    runs.close()  # stopping early ends the stage threads
    assert not [t for t in threading.enumerate() if t.name.startswith("local-")]


def test_ray_runner_gives_the_same_result():
    import sys

    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
    runner = RayRunner(num_cpus=2)
    try:
        _check(_run(runner))
    finally:
        runner.shutdown()


def test_unknown_runner_is_refused():
    with pytest.raises(ValueError, match="local"):
        create_runner("spark")
