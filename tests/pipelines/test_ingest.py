"""Ingest end to end: real clips, bad and odd inputs, reruns, SIGKILL + resume, s3 through moto."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipelines.ingest.config import IngestConfig, RunnerConfig
from pipelines.ingest.job import run_ingest
from storage import Catalog, CorpusRoot

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "videos"
LOCAL = IngestConfig(runner=RunnerConfig(kind="local"))


def _catalog(root) -> Catalog:
    return Catalog(CorpusRoot.open(root))


def _clips_by_file(cat: Catalog) -> dict[str, list[dict]]:
    rows = cat.query("SELECT v.uri AS src, c.* FROM clips c JOIN videos v USING (video_id) "
                     "ORDER BY src, start_s").to_pylist()
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(os.path.basename(r["src"]), []).append(r)
    return out


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/videos not present")
def test_real_clips_hard_cuts_within_two_frames(tmp_path):
    run_ingest([str(REAL)], str(tmp_path / "root"), LOCAL)
    truth = json.loads((REAL / "ground_truth.json").read_text())
    cat = _catalog(tmp_path / "root")
    clips = _clips_by_file(cat)
    assert len(clips["moviepy_chaplin.mp4"]) == 1  # the no-cut clip yields one shot
    detected = {os.path.basename(r["uri"]): json.loads(r["transitions"])
                for r in cat.query("SELECT uri, transitions FROM videos").to_pylist()}
    for name, gt in truth.items():
        tol = 2.0 / gt["avg_fps"]
        starts = [t["start_s"] for t in detected[name] if t["kind"] == "cut"]
        clip_starts = [c["start_s"] for c in clips[name] if c["transition_in"] == "cut"]
        assert set(clip_starts) <= set(starts)
        for cut in gt["hard_s"]:
            assert any(abs(s - cut) <= tol for s in starts), f"{name}: cut at {cut}s missing in {starts}"
        false = [s for s in starts if not any(abs(s - c) <= tol for c in gt["hard_s"])]
        assert not false, f"{name}: false cuts at {false}"


@pytest.fixture(scope="module")
def odd_ingest(tmp_path_factory):
    from pipelines.synth.oddities import write_odd_inputs
    src = tmp_path_factory.mktemp("odd")
    expected = write_odd_inputs(src)
    root = tmp_path_factory.mktemp("root")
    result = run_ingest([str(src)], str(root), LOCAL)
    return expected, result, _catalog(root)


def test_bad_inputs_are_quarantined_with_distinct_classes_and_job_goes_on(odd_ingest):
    expected, result, cat = odd_ingest
    rows = {os.path.basename(r["uri"]): r for r in cat.query("SELECT * FROM videos").to_pylist()}
    bad = {k: v["error_class"] for k, v in expected.items() if "error_class" in v}
    assert {"truncated", "empty_file", "not_a_video", "no_video_stream"} <= set(bad.values())
    for name, cls in bad.items():
        assert rows[name]["status"] == "quarantined" and rows[name]["error_class"] == cls, name
    good = [k for k, v in expected.items() if "error_class" not in v]
    assert good and all(rows[k]["status"] == "ok" for k in good)
    assert result.videos_ok == len(good) and sum(result.quarantined.values()) == len(bad)


def test_odd_formats_give_clips_whose_durations_add_up(odd_ingest):
    expected, _, cat = odd_ingest
    clips = _clips_by_file(cat)
    for name, exp in expected.items():
        if "error_class" in exp:
            continue
        total = sum(c["duration_s"] for c in clips[name])
        assert total == pytest.approx(exp["duration_s"], rel=0.01), name
        assert [c["start_s"] for c in clips[name]][1:] == pytest.approx(exp["cut_s"], abs=2 / exp["fps"]), name
        for c in clips[name]:  # native resolution, nothing cropped away (padding to even allowed)
            assert c["width"] >= exp["width"] - 0 and c["height"] >= exp["height"], name


def test_clip_media_exists_and_starts_on_its_first_frame(odd_ingest):
    import av
    _, _, cat = odd_ingest
    for c in cat.query("SELECT uri, n_frames FROM clips").to_pylist():
        path = cat.root.join(c["uri"])
        with av.open(path) as f:
            n = sum(1 for _ in f.decode(video=0))
        assert n == c["n_frames"], path


def test_rerun_does_no_work_for_finished_videos(tmp_path):
    from pipelines.synth import render_world
    render_world(tmp_path / "w", n_videos=3, seed=3, duration_s=4, max_side=96, progress=False)
    first = run_ingest([str(tmp_path / "w")], str(tmp_path / "root"), LOCAL)
    cat = _catalog(tmp_path / "root")
    parts = len(cat.parts("clips"))
    second = run_ingest([str(tmp_path / "w")], str(tmp_path / "root"), LOCAL)
    assert second.skipped == 3 and second.clips == 0 and len(cat.parts("clips")) == parts
    assert first.clips > 0
    jobs = cat.query("SELECT status, count(*) AS n FROM jobs GROUP BY status").to_pylist()
    assert jobs == [{"status": "succeeded", "n": 2}]


KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from pipelines.ingest.config import IngestConfig, RunnerConfig
    from pipelines.ingest.job import run_ingest
    run_ingest([{world!r}], {root!r}, IngestConfig(runner=RunnerConfig(kind="local")))
""")


def test_sigkill_mid_job_then_rerun_loses_and_duplicates_nothing(tmp_path):
    from pipelines.synth import render_world
    world = tmp_path / "w"
    render_world(world, n_videos=10, seed=5, duration_s=5, max_side=96, progress=False)
    run_ingest([str(world)], str(tmp_path / "clean"), LOCAL)
    root = tmp_path / "killed"
    script = KILL_SCRIPT.format(repo=str(REPO), world=str(world), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    clips_dir = root / "catalog" / "clips"
    deadline = time.time() + 120
    while time.time() < deadline and not (clips_dir.is_dir() and list(clips_dir.glob("part-*"))):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _catalog(root).query("SELECT count(*) AS n FROM videos").to_pylist()[0]["n"]
    assert done < 10, "the job finished before the kill; make the world bigger"
    run_ingest([str(world)], str(root), LOCAL)
    q = "SELECT clip_id, start_s, end_s, n_frames, bytes FROM clips ORDER BY clip_id"
    killed, clean = _catalog(root).query(q).to_pylist(), _catalog(tmp_path / "clean").query(q).to_pylist()
    assert killed == clean and len(clean) > 10
    media = sorted(p.name for p in (root / "clips").rglob("*.mp4"))
    assert media == sorted(c["clip_id"] + ".mp4" for c in clean)


def test_s3_sources_and_root_through_moto(tmp_path):
    import boto3
    from moto.server import ThreadedMotoServer
    from pipelines.synth import render_world
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = dict(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
        s3 = boto3.client("s3", endpoint_url=endpoint, **creds)
        s3.create_bucket(Bucket="raw")
        s3.create_bucket(Bucket="corpus")
        truth = render_world(tmp_path / "w", n_videos=2, seed=2, duration_s=3, max_side=96, progress=False)
        for v in truth["videos"]:
            s3.upload_file(str(tmp_path / "w" / v["file"]), "raw", f"in/{v['file']}")
        opts = {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": endpoint}}
        result = run_ingest(["s3://raw/in/"], "s3://corpus/root", LOCAL, storage_options=opts)
        ok = sum(1 for v in truth["videos"] if not v["broken"])
        assert result.videos_ok == ok and result.clips >= ok
        cat = Catalog(CorpusRoot.open("s3://corpus/root", storage_options=opts))
        uris = [r["uri"] for r in cat.query("SELECT uri FROM clips").to_pylist()]
        assert len(uris) == result.clips
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="corpus", Prefix="root/clips/")["Contents"]}
        assert {f"root/{u}" for u in uris} <= keys
    finally:
        server.stop()


def test_cli_ingest_on_ray_and_bad_config(tmp_path):
    from pipelines.synth import render_world
    render_world(tmp_path / "w", n_videos=3, seed=4, duration_s=4, max_side=96, progress=False)
    exe = [sys.executable, "-m", "pipelines.cli"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("config:\n  split: {min_clip_s: 5, max_clip_s: 2}\n")
    r = subprocess.run(exe + ["ingest", str(tmp_path / "w"), "--root", str(tmp_path / "r"), "--config", str(bad)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "max_clip_s" in r.stderr
    r = subprocess.run(exe + ["ingest", str(tmp_path / "w"), "--root", str(tmp_path / "r")],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "clips:" in r.stdout
    n = _catalog(tmp_path / "r").query("SELECT count(*) AS n FROM clips").to_pylist()[0]["n"]
    assert n > 0
