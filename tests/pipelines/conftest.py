"""Fixtures shared by the Ray Jobs tests (test_jobs.py, test_schedules.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.jobs.head import attached_head


@pytest.fixture(scope="session")
def ray_home(tmp_path_factory) -> Path:
    """One VIDCORPUS_HOME for the session, so every module finds the same head."""
    home = tmp_path_factory.getbasetemp() / "vidcorpus-home"
    home.mkdir(exist_ok=True)
    return home


@pytest.fixture(scope="session")
def ray_head(ray_home):
    """A local head for the session (stopped at the end only if this fixture started it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDCORPUS_HOME", str(ray_home))
        with attached_head(num_cpus=2, home=ray_home) as state:
            yield state
