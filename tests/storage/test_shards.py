"""WebDataset shards: writer → reader round trip, determinism, rolling, kill safety, validation."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import pickle
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import av
import fsspec
import numpy as np
import pytest

from storage.shards import (
    INDEX_SCHEMA,
    IncompleteDatasetError,
    ShardWriter,
    encode_sample,
    list_shards,
    load_index,
    load_manifest,
    read_shards,
    split_shards,
)

REPO = Path(__file__).resolve().parents[2]
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 20)]
WORDS = "a red circle moves slowly to the left over a calm blue sea at dusk".split()
CREATED_AT = "2024-01-01T00:00:00+00:00"


def _encode_mp4(colour: tuple[int, int, int], width: int = 32, height: int = 24) -> bytes:
    """A tiny real H.264 mp4: 5 frames of one colour with a moving bright bar."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(5):
            pixels = np.full((height, width, 3), colour, np.uint8)
            pixels[:, 4 * t : 4 * t + 4] = 255
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mp4s() -> list[bytes]:
    clips = [_encode_mp4(colour) for colour in COLOURS]
    assert len(set(clips)) == len(clips) and all(clips)
    return clips


def make_sample(i: int, mp4s: list[bytes]) -> dict:
    """One clip sample; every third has text.npy, every other one a known latent token count."""
    rng = np.random.default_rng(i)
    clip_id = f"c{hashlib.sha1(str(i).encode()).hexdigest()[:15]}"
    caption = " ".join(WORDS[: 3 + i % 7])
    meta = {
        "clip_id": clip_id, "video_id": f"v{i // 10:04d}", "uri": f"clips/{clip_id}.mp4",
        "start_s": 0.5 * i, "end_s": 0.5 * i + 0.5, "fps": 10.0, "width": 32, "height": 24,
        "n_frames": 5, "scores": {"clip_text": float(rng.random()), "motion": 0.25},
    }  # fmt: skip
    if i % 2 == 0:
        meta["latent_tokens"] = 24
    sample = {
        "__key__": clip_id,
        "mp4": mp4s[i % len(mp4s)],
        "json": meta,
        "txt": caption,
        "captions.json": [{"source": "teacher:tiny", "text": caption, "score": 0.5}],
        "latent.npy": rng.standard_normal((4, 2, 3, 4)).astype(np.float16),
    }
    if i % 3 == 0:
        sample["text.npy"] = rng.standard_normal((7, 8)).astype(np.float32)
    return sample


def make_samples(n: int, mp4s: list[bytes]) -> list[dict]:
    return [make_sample(i, mp4s) for i in range(n)]


def write_dataset(out_dir: Path, samples: list[dict], **kwargs) -> dict:
    kwargs.setdefault("created_at", CREATED_AT)
    with ShardWriter(out_dir, "ds", **kwargs) as writer:
        for sample in samples:
            writer.write(sample)
    return load_manifest(out_dir)


def assert_same_sample(got: dict, want: dict) -> None:
    assert got["__key__"] == want["__key__"]
    assert got["mp4"] == want["mp4"]
    assert got["json"] == want["json"]
    assert got["txt"] == want["txt"]
    assert got["captions.json"] == want["captions.json"]
    for name in ("latent.npy", "text.npy"):
        assert (name in got) == (name in want)
        if name in want:
            assert got[name].dtype == want[name].dtype
            np.testing.assert_array_equal(got[name], want[name])


# --- round trip, index, manifest --------------------------------------------------------------


def test_round_trip_200_clips(tmp_path, mp4s):
    samples = make_samples(200, mp4s)
    manifest = write_dataset(tmp_path, samples, max_count=50, extra={"sql": "SELECT 1"})
    assert manifest["n_samples"] == 200 and manifest["n_shards"] == 4
    assert manifest["extra"] == {"sql": "SELECT 1"} and manifest["created_at"] == CREATED_AT

    got = list(read_shards(tmp_path))
    assert [s["__key__"] for s in got] == [s["__key__"] for s in samples]  # write order
    for sample_got, sample_want in zip(got, samples, strict=True):
        assert_same_sample(sample_got, sample_want)

    index = load_index(tmp_path)
    assert index.schema.equals(INDEX_SCHEMA)
    assert index.column("key").to_pylist() == [s["__key__"] for s in samples]
    rows = index.to_pylist()
    assert [r["caption_words"] for r in rows] == [len(s["txt"].split()) for s in samples]
    assert [r["latent_tokens"] for r in rows[:2]] == [24, None]
    for entry in manifest["shards"]:
        assert sum(r["shard"] == entry["name"] for r in rows) == entry["n_samples"] == 50
        data = (tmp_path / entry["name"]).read_bytes()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert manifest["total_bytes"] == sum(e["bytes"] for e in manifest["shards"])


def test_index_offsets_allow_random_access(tmp_path, mp4s):
    samples = make_samples(12, mp4s)
    write_dataset(tmp_path, samples, max_count=5)
    for row, sample in zip(load_index(tmp_path).to_pylist(), samples, strict=True):
        with open(tmp_path / row["shard"], "rb") as f:
            f.seek(row["offset"])
            chunk = f.read(row["bytes"]) + b"\0" * 1024
        with tarfile.open(fileobj=io.BytesIO(chunk)) as tar:
            names = tar.getnames()
            assert names[0] == f"{sample['__key__']}.mp4"
            assert tar.extractfile(names[0]).read() == sample["mp4"]
        assert all(name.startswith(sample["__key__"] + ".") for name in names)


def test_tar_headers_are_fixed(tmp_path, mp4s):
    write_dataset(tmp_path, make_samples(3, mp4s))
    with tarfile.open(list_shards(tmp_path)[0]) as tar:
        members = tar.getmembers()
    assert [m.name.split(".", 1)[1] for m in members[:5]] == [
        "mp4", "json", "txt", "captions.json", "latent.npy",
    ]  # fmt: skip
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (0, 0, 0, "", "", 0o444)
    }


# --- determinism ------------------------------------------------------------------------------


def test_same_samples_give_byte_identical_dataset(tmp_path, mp4s):
    samples = make_samples(200, mp4s)
    write_dataset(tmp_path / "a", samples, max_count=64)
    write_dataset(tmp_path / "b", samples, max_count=64)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "index.parquet" in names and sum(n.endswith(".tar") for n in names) == 4
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_rewrite_replaces_previous_dataset(tmp_path, mp4s):
    write_dataset(tmp_path, make_samples(30, mp4s), max_count=5)
    samples = make_samples(8, mp4s)
    manifest = write_dataset(tmp_path, samples, max_count=5)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["ds-000000.tar", "ds-000001.tar"]
    assert manifest["n_samples"] == 8 and load_index(tmp_path).num_rows == 8


# --- rolling ----------------------------------------------------------------------------------


def test_roll_by_count(tmp_path, mp4s):
    manifest = write_dataset(tmp_path, make_samples(23, mp4s), max_count=5)
    assert [s["n_samples"] for s in manifest["shards"]] == [5, 5, 5, 5, 3]
    assert [s["name"] for s in manifest["shards"]][-1] == "ds-000004.tar"


def test_roll_by_bytes(tmp_path, mp4s):
    samples = [make_sample(i, mp4s[:1]) for i in range(10)]
    for s in samples:  # same members and sizes, so each sample encodes to the same length
        s.pop("text.npy", None)
    sizes = {len(encode_sample(s)) for s in samples}
    assert len(sizes) == 1
    max_bytes = 3 * sizes.pop() + 1024  # three samples + the end-of-archive blocks
    manifest = write_dataset(tmp_path, samples, max_bytes=max_bytes)
    assert [s["n_samples"] for s in manifest["shards"]] == [3, 3, 3, 1]
    assert all(s["bytes"] <= max_bytes for s in manifest["shards"])
    assert len(list(read_shards(tmp_path))) == 10


def test_sample_bigger_than_max_bytes_gets_own_shard(tmp_path, mp4s):
    manifest = write_dataset(tmp_path, make_samples(4, mp4s), max_bytes=1)
    assert [s["n_samples"] for s in manifest["shards"]] == [1, 1, 1, 1]
    assert load_index(tmp_path).column("shard").to_pylist() == [
        f"ds-{i:06d}.tar" for i in range(4)
    ]


# --- kill safety ------------------------------------------------------------------------------

SLOW_WRITER = """
import pickle, sys, time
from storage.shards import ShardWriter
samples = pickle.load(open(sys.argv[2], "rb"))
with ShardWriter(sys.argv[1], "ds", max_count=4) as writer:
    for sample in samples:
        writer.write(sample)
        time.sleep(0.01)
"""


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the writer"
        time.sleep(0.02)


def _kill_writer_midway(out_dir: Path, samples_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(out_dir), str(samples_path)], env=env)
    try:
        _wait_for(lambda: len(list(out_dir.glob("*.tar"))) >= 2 or proc.poll() is not None)
        assert proc.poll() is None, "writer exited before it could be killed"
        _wait_for(lambda: any(out_dir.glob("*.tmp-*")))
    finally:
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait()


def test_killed_writer_leaves_no_partial_shard(tmp_path, mp4s):
    samples = make_samples(300, mp4s)
    samples_path = tmp_path / "samples.pkl"
    samples_path.write_bytes(pickle.dumps(samples))
    out_dir = tmp_path / "ds"
    _kill_writer_midway(out_dir, samples_path)

    assert not (out_dir / "manifest.json").exists()
    assert list(out_dir.glob("*.tar.tmp-*")), "the in-progress shard should be left staged"
    for path in out_dir.glob("*.tar"):
        with tarfile.open(path) as tar:  # every published shard is whole
            members = tar.getmembers()
            assert len({m.name.split(".")[0] for m in members}) == 4
            assert all(len(tar.extractfile(m).read()) == m.size for m in members)
    with pytest.raises(IncompleteDatasetError, match="incomplete dataset"):
        read_shards(out_dir)
    with pytest.raises(IncompleteDatasetError):
        load_index(out_dir)

    with ShardWriter(out_dir, "ds", max_count=100) as writer:
        assert not list(out_dir.glob("*.tmp-*"))  # the dead writer's files are gone
        for sample in samples:
            writer.write(sample)
    assert load_manifest(out_dir)["n_samples"] == 300
    assert [s["__key__"] for s in read_shards(out_dir)] == [s["__key__"] for s in samples]
    assert sorted(p.name for p in out_dir.glob("*.tar")) == [f"ds-{i:06d}.tar" for i in range(3)]


def test_refuses_dir_with_a_live_writer(tmp_path, mp4s):
    write_dataset(tmp_path, make_samples(3, mp4s))
    staged = tmp_path / f"ds-000001.tar.tmp-{os.getpid()}"  # this process is alive
    staged.write_bytes(b"partial")
    with pytest.raises(RuntimeError, match="another writer"):
        ShardWriter(tmp_path, "ds")
    assert staged.exists() and load_manifest(tmp_path)["n_samples"] == 3  # nothing touched


def test_failed_write_block_leaves_dataset_incomplete(tmp_path, mp4s):
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(tmp_path, "ds", max_count=2) as writer:
            for sample in make_samples(5, mp4s):
                writer.write(sample)
            raise RuntimeError("boom")
    assert not list(tmp_path.glob("*.tmp-*"))
    assert len(list(tmp_path.glob("*.tar"))) == 2  # the finished shards only
    with pytest.raises(IncompleteDatasetError):
        list_shards(tmp_path)


# --- validation -------------------------------------------------------------------------------


def _drop(name):
    return lambda s: s.pop(name)


def _set(name, value):
    return lambda s: s.__setitem__(name, value)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_set("__key__", "clip.1"), r"contains '\.'"),
        (_set("__key__", "a/b"), "must match"),
        (_drop("mp4"), r"missing required member\(s\) \['mp4'\]"),
        (_set("mp4", b""), "'mp4' must be non-empty bytes"),
        (lambda s: s["json"].pop("fps"), r"missing required field\(s\) \['fps'\]"),
        (lambda s: s["json"].update(width=32.5), "'width' must be a positive int"),
        (lambda s: s["json"].update(clip_id="other"), "must equal json clip_id"),
        (_set("mp3", b"x"), r"unknown member\(s\) \['mp3'\]"),
        (_set("txt", None), "'txt' must be a str"),
        (_set("latent.npy", [1, 2]), "'latent.npy' must be a numpy array"),
    ],
)
def test_invalid_samples_are_rejected(tmp_path, mp4s, mutate, message):
    sample = make_sample(0, mp4s)
    mutate(sample)
    with ShardWriter(tmp_path, "ds") as writer:
        with pytest.raises(ValueError, match=message):
            writer.write(sample)


def test_duplicate_key_and_bad_dataset_name(tmp_path, mp4s):
    with ShardWriter(tmp_path, "ds") as writer:
        writer.write(make_sample(0, mp4s))
        with pytest.raises(ValueError, match="duplicate __key__"):
            writer.write(make_sample(0, mp4s))
    with pytest.raises(ValueError, match="dataset name"):
        ShardWriter(tmp_path, "my.ds")


# --- reading options, remote filesystems, splitting -------------------------------------------


def test_shuffle_and_resample(tmp_path, mp4s):
    samples = make_samples(40, mp4s)
    write_dataset(tmp_path, samples, max_count=8)
    keys = [s["__key__"] for s in samples]
    shuffled = [s["__key__"] for s in read_shards(tmp_path, shuffle=16, seed=1)]
    assert sorted(shuffled) == sorted(keys) and shuffled != keys
    assert shuffled == [s["__key__"] for s in read_shards(tmp_path, shuffle=16, seed=1)]
    drawn = [s["__key__"] for s in itertools.islice(read_shards(tmp_path, resampled=True), 100)]
    assert len(drawn) == 100 and set(drawn) <= set(keys)
    raw = next(iter(read_shards(list_shards(tmp_path)[:1], decode=False)))
    assert isinstance(raw["json"], bytes) and raw["__key__"] == keys[0]


def test_fsspec_filesystem_round_trip(mp4s):
    url = "memory://vidcorpus-test-shards/ds"
    samples = make_samples(9, mp4s)
    try:
        with ShardWriter(url, "ds", max_count=4) as writer:
            for sample in samples:
                writer.write(sample)
        fs = fsspec.filesystem("memory")
        assert not fs.glob("/vidcorpus-test-shards/ds/*.tmp-*")
        assert load_manifest(url)["n_shards"] == 3 and load_index(url).num_rows == 9
        for got, want in zip(read_shards(url), samples, strict=True):
            assert_same_sample(got, want)
    finally:
        fsspec.filesystem("memory").rm("/vidcorpus-test-shards", recursive=True)


def test_split_shards_assigns_each_shard_once():
    shards = [f"ds-{i:06d}.tar" for i in range(13)]
    world_size, num_workers = 2, 3
    assigned = [
        split_shards(shards, rank, world_size, worker, num_workers)
        for rank in range(world_size)
        for worker in range(num_workers)
    ]
    flat = [s for part in assigned for s in part]
    assert sorted(flat) == shards and len(flat) == len(set(flat))
    assert all(len(part) in (2, 3) for part in assigned)
    assert split_shards(shards, 1, 2, 2, 3) == assigned[-1]  # deterministic
    with pytest.raises(ValueError, match="rank"):
        split_shards(shards, 2, 2, 0, 3)
