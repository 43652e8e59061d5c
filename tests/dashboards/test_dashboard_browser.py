"""The dashboard in a real browser: every page renders, SQL returns rows, a clip plays.

A small demo-like root is built for real (PyAV-encoded videos → ``run_ingest`` with the local
runner → scores, captions, a rejection, a training run), served by ``streamlit run`` on a free
port and driven with Playwright on the system Chromium. Screenshots go to ``tmp_path`` and to
``$VIDCORPUS_SCREENSHOTS`` when set. A page fails the test if it shows a Streamlit exception.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import pytest
from playwright.sync_api import expect

from pipelines.cli_jobs import dashboard_command
from storage import Catalog, CorpusRoot

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = ["overview", "distributions", "clips", "sql", "jobs", "training"]
ERROR_TEXT = ("Traceback (most recent call last)", "StreamlitAPIException", "Error running app",
              "Page not found")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")


# ---------------------------------------------------------------- a demo-like root
def write_video(path: Path, size: tuple[int, int], fps: int, colours: list[tuple[int, int, int]]) -> None:
    """One H.264 video: a 1 s shot per colour (hard cuts between), a white bar moving right."""
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for colour in colours:
            for i in range(fps):
                img = np.empty((h, w, 3), np.uint8)
                img[:] = colour
                img[:, (i * 4) % w:(i * 4) % w + 8] = 255
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def build_demo_root(base: Path) -> Path:
    """Ingest 3 small videos into ``base/root`` and add scores, captions, a rejection and a run."""
    from pipelines.ingest.config import DetectorConfig, IngestConfig, RunnerConfig
    from pipelines.ingest.job import run_ingest
    videos, root = base / "videos", base / "root"
    videos.mkdir(parents=True)
    write_video(videos / "landscape.mp4", (96, 64), 24, [(200, 30, 30), (30, 200, 30)])
    write_video(videos / "portrait.mp4", (64, 96), 25, [(30, 30, 200), (200, 200, 30)])
    write_video(videos / "wide.mp4", (160, 64), 30, [(120, 30, 200), (20, 200, 200), (90, 90, 90)])
    cfg = IngestConfig(runner=RunnerConfig(kind="local"), detector=DetectorConfig(name="content"))
    result = run_ingest([str(videos)], str(root), cfg)
    assert result.clips >= 6, result.text(1)
    catalog = Catalog(CorpusRoot.open(root))
    clip_ids = [r["clip_id"] for r in catalog.query("SELECT clip_id FROM clips ORDER BY clip_id").to_pylist()]
    add_annotations(catalog, clip_ids)
    write_run(root / "runs" / "dit-tiny-001")
    return root


def add_annotations(catalog: Catalog, clip_ids: list[str]) -> None:
    rng = np.random.default_rng(0)
    catalog.append("scores", [dict(clip_id=c, name=n, scorer="test", value=float(rng.uniform(0, 1)))
                              for c in clip_ids for n in ("clip_text", "motion")])
    catalog.append("captions", [dict(clip_id=c, source="alt-text", text=f"a coloured clip {i}")
                                for i, c in enumerate(clip_ids)])
    catalog.append("captions", [dict(clip_id=c, source="teacher:synth", model="truth", clip_score=0.3,
                                     text=f"A white bar slides right over a flat background, shot {i}.")
                                for i, c in enumerate(clip_ids)])
    catalog.append("rejections", [dict(clip_id=clip_ids[-1], stage="filter", reason="low_clip_score",
                                       detail="clip_text below 0.2")])


def write_run(run_dir: Path) -> None:
    (run_dir / "samples").mkdir(parents=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(0, 200, 10):
            f.write(json.dumps({"step": step, "loss": 1.0 / (1 + step / 50), "lr": 1e-4}) + "\n")
    write_video(run_dir / "samples" / "step-000200.mp4", (64, 64), 8, [(10, 10, 120)])


# ---------------------------------------------------------------- the served app
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return build_demo_root(tmp_path_factory.mktemp("dash"))


@contextmanager
def serve(root: Path, home: Path, log_path: Path) -> Iterator[str]:
    """Serve the app the way `vidcorpus dashboard` does, on a free port; yields its URL."""
    port = free_port()
    env = {**os.environ, "VIDCORPUS_HOME": str(home)}  # a home without a Ray head
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(dashboard_command(str(root), port), stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def dashboard_url(demo_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streamlit")
    with serve(demo_root, tmp / "home", tmp / "streamlit.log") as url:
        yield url


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "streamlit exited early"
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("streamlit did not become healthy")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def shot_dirs(tmp_path_factory) -> list[Path]:
    dirs = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("VIDCORPUS_SCREENSHOTS"):
        dirs.append(Path(os.environ["VIDCORPUS_SCREENSHOTS"]))
        dirs[-1].mkdir(parents=True, exist_ok=True)
    return dirs


def open_page(page, url: str, name: str) -> None:
    """Load a page and wait until the app's footer (drawn after the page) or an exception shows."""
    page.goto(f"{url}/{'' if name == 'overview' else name}")  # the default page lives at /
    footer = page.get_by_text("vidcorpus dashboard ·")
    page.locator('[data-testid="stException"]').or_(footer).first.wait_for(timeout=60_000)
    settle(page)
    assert_clean(page, name)


def settle(page) -> None:
    """Wait until Streamlit has finished the current run (no 'Running…' status widget)."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=60_000)
    page.wait_for_timeout(300)


def assert_clean(page, name: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, f"{name}: {exceptions.first.inner_text()}"
    text = page.inner_text("body")
    for bad in ERROR_TEXT:
        assert bad not in text, f"{name}: page shows {bad!r}"


def screenshot(page, dirs: list[Path], name: str) -> None:
    """The whole page: Streamlit scrolls inside its main section, so grow the viewport to fit it."""
    size = page.viewport_size
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(height + 40, 8000))})
    page.wait_for_timeout(300)
    for d in dirs:
        page.screenshot(path=str(d / f"{name}.png"))
    page.set_viewport_size(size)


# ---------------------------------------------------------------- the tests
def test_every_page_renders(page, dashboard_url, shot_dirs):
    for name in PAGES:
        open_page(page, dashboard_url, name)
        screenshot(page, shot_dirs, name)
    open_page(page, dashboard_url, "overview")
    metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert metrics[:3] == ["3", "0", "7"], metrics  # videos, quarantined, clips
    open_page(page, dashboard_url, "training")
    assert page.locator("video").count() == 1  # the run's sample


def test_sql_page_runs_a_query_and_refuses_file_access(page, dashboard_url, shot_dirs):
    open_page(page, dashboard_url, "sql")
    run_sql(page, "SELECT clip_id, width, height FROM clips ORDER BY clip_id")
    expect(page.get_by_text("7 row(s) × 3 column(s)")).to_be_visible()
    grid_cells = page.locator('[data-testid="stDataFrame"] [role="gridcell"]')
    expect(grid_cells).to_have_count(21)  # 7 rows × 3 columns, drawn after the run ends
    cells = grid_cells.all_inner_texts()
    assert {"64", "96", "160"} <= set(cells), cells
    assert page.get_by_text("Download CSV").is_visible()
    screenshot(page, shot_dirs, "sql-result")
    run_sql(page, "SELECT * FROM read_csv('/etc/passwd')")
    expect(page.locator('[data-testid="stAlert"]')).to_contain_text("refused")
    assert "root:x:0:0" not in page.inner_text("body")
    assert_clean(page, "sql (refusal)")
    screenshot(page, shot_dirs, "sql-refused")


def run_sql(page, query: str) -> None:
    box = page.get_by_label("Query")
    box.fill(query)
    page.get_by_role("button", name="Run").click()
    settle(page)


def test_clip_plays_with_its_captions(page, dashboard_url, shot_dirs):
    open_page(page, dashboard_url, "clips")
    video = page.locator("video").first
    video.wait_for(timeout=30_000)
    state = page.evaluate("""async () => {
        const v = document.querySelector('video');
        v.muted = true;
        if (v.readyState < 2) await new Promise(r => { v.addEventListener('loadeddata', r, {once: true});
                                                     setTimeout(r, 10000); });
        await v.play();
        await new Promise(r => setTimeout(r, 600));
        return {readyState: v.readyState, currentTime: v.currentTime, error: v.error && v.error.code};
    }""")
    assert state["error"] is None and state["readyState"] >= 2 and state["currentTime"] > 0, state
    body = page.inner_text("body")
    assert "Alt text" in body and "a coloured clip" in body
    assert "Dense caption (teacher:synth)" in body and "A white bar slides right" in body
    screenshot(page, shot_dirs, "clip-playing")


def test_clip_filter_goes_through_the_read_only_path(page, dashboard_url):
    open_page(page, dashboard_url, "clips")
    page.get_by_label("WHERE", exact=True).and_(page.locator("input")).fill("width > height AND width >= 160")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("3 clip(s) shown")).to_be_visible()
    page.get_by_label("WHERE", exact=True).and_(page.locator("input")).fill("TRUE; DROP TABLE clips")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator('[data-testid="stAlert"]')).to_contain_text("Filter refused")
    assert_clean(page, "clips (refused filter)")


def test_job_form_validates_before_submitting(page, dashboard_url):
    open_page(page, dashboard_url, "jobs")
    page.get_by_label("Job spec (YAML)").fill("kind: ingest\nsources: [/videos]\nconfig: {detector: {name: nope}}")
    page.get_by_role("button", name="Validate and submit").click()
    expect(page.locator('[data-testid="stAlert"]')).to_contain_text("Not submitted")
    assert "config.detector.name" in page.locator('[data-testid="stAlert"]').inner_text()
    assert_clean(page, "jobs (invalid spec)")


def test_empty_root_renders_every_page(tmp_path, browser, shot_dirs):
    """A fresh root with nothing in it: every page says so instead of failing."""
    empty = tmp_path / "empty"
    CorpusRoot.open(empty, create=True)
    context = browser.new_context()
    try:
        with serve(empty, tmp_path / "home", tmp_path / "streamlit.log") as url:
            page = context.new_page()
            for name in PAGES:
                open_page(page, url, name)
                screenshot(page, shot_dirs, f"empty-{name}")
            open_page(page, url, "overview")
            assert "No job has recorded stage counts yet" in page.inner_text("body")
    finally:
        context.close()
