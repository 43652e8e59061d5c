"""SQL benchmark: five typical catalog queries over 1,000,000 clips, DuckDB views vs pandas.

    python benchmarks/sql_catalog.py [--clips 1000000] [--repeats 5] [--root DIR]

DuckDB runs through the real read-only path (views that dedupe by key on every query, over the
Parquet parts). pandas runs the same questions on the same Parquet files: load time is reported
apart, and its query times are on frames already in memory and already deduplicated.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from storage import Catalog, CorpusRoot  # noqa: E402

QUERIES = {
    "count by resolution bucket": """
        SELECT CASE WHEN height >= 1080 THEN '1080p+' WHEN height >= 720 THEN '720p'
                    WHEN height >= 480 THEN '480p' ELSE '<480p' END AS bucket, count(*) AS n
        FROM clips GROUP BY bucket ORDER BY bucket""",
    "histogram of a score": """
        SELECT floor(value * 20) / 20 AS bin, count(*) AS n FROM scores
        WHERE name = 'clip_text' GROUP BY bin ORDER BY bin""",
    "top-k by score joined with captions": """
        SELECT s.clip_id, s.value, c.text FROM scores s JOIN captions c USING (clip_id)
        WHERE s.name = 'aesthetic' AND c.source = 'alt-text' ORDER BY s.value DESC LIMIT 20""",
    "multi-condition filter count": """
        SELECT count(*) AS n FROM clips_v
        WHERE clip_text >= 0.25 AND motion > 0.02 AND duration_s BETWEEN 2 AND 30 AND width >= 320""",
    "per-video aggregate": """
        SELECT video_id, count(*) AS clips, sum(duration_s) AS seconds, avg(fps) AS fps
        FROM clips GROUP BY video_id ORDER BY clips DESC LIMIT 20""",
}


def build_catalog(root: str, n: int, parts: int = 10, seed: int = 0) -> Catalog:
    cat = Catalog(CorpusRoot.open(root, create=True))
    rng = np.random.default_rng(seed)
    sizes = np.array([[320, 180], [640, 360], [1280, 720], [1920, 1080], [360, 640], [480, 480]])
    per = n // parts
    for p in range(parts):
        ids = np.char.add("c", np.arange(p * per, (p + 1) * per).astype(str))
        wh = sizes[rng.integers(0, len(sizes), per)]
        dur = rng.gamma(2.0, 4.0, per)
        cat.append("clips", pa.table({
            "clip_id": ids, "video_id": np.char.add("v", (rng.integers(0, n // 20, per)).astype(str)),
            "start_s": np.zeros(per), "end_s": dur, "duration_s": dur,
            "fps": rng.choice([24.0, 25.0, 30.0], per), "width": wh[:, 0].astype(np.int32),
            "height": wh[:, 1].astype(np.int32), "n_frames": (dur * 25).astype(np.int64)}))
        for name in ("clip_text", "motion", "aesthetic"):
            cat.append("scores", pa.table({"clip_id": ids, "name": np.full(per, name),
                                           "scorer": np.full(per, "bench"), "value": rng.random(per)}))
        words = np.array(["red", "ball", "car", "street", "dog", "sunset", "city", "beach"])
        text = [" ".join(t) for t in words[rng.integers(0, len(words), (per, 3))]]
        cat.append("captions", pa.table({"clip_id": ids, "source": np.full(per, "alt-text"), "text": text}))
    return cat


def load_pandas(cat: Catalog) -> dict[str, pd.DataFrame]:
    frames = {}
    for t, key in (("clips", ["clip_id"]), ("scores", ["clip_id", "name", "scorer"]),
                   ("captions", ["clip_id", "source"])):
        df = pd.concat([pd.read_parquet(p) for p in cat.parts(t)], ignore_index=True)
        frames[t] = df.sort_values("_written_ns").drop_duplicates(key, keep="last")
    return frames


def pandas_queries(f: dict[str, pd.DataFrame]) -> dict[str, callable]:
    clips, scores, caps = f["clips"], f["scores"], f["captions"]

    def bucket():
        h = clips["height"]
        b = np.select([h >= 1080, h >= 720, h >= 480], ["1080p+", "720p", "480p"], "<480p")
        return pd.Series(b).value_counts().sort_index()

    def hist():
        v = scores.loc[scores["name"] == "clip_text", "value"]
        return (np.floor(v * 20) / 20).value_counts().sort_index()

    def topk():
        s = scores[scores["name"] == "aesthetic"].nlargest(20, "value")
        return s.merge(caps[caps["source"] == "alt-text"], on="clip_id")

    def multi():
        wide = scores.pivot_table(index="clip_id", columns="name", values="value", aggfunc="last")
        m = clips.merge(wide, left_on="clip_id", right_index=True, how="left")
        return int(((m.clip_text >= 0.25) & (m.motion > 0.02) & m.duration_s.between(2, 30)
                    & (m.width >= 320)).sum())

    def per_video():
        g = clips.groupby("video_id").agg(clips=("clip_id", "size"), seconds=("duration_s", "sum"),
                                          fps=("fps", "mean"))
        return g.nlargest(20, "clips")

    return dict(zip(QUERIES, [bucket, hist, topk, multi, per_video]))


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--root", default=None)
    args = ap.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="vidcorpus-sqlbench-")
    t0 = time.perf_counter()
    existing = Catalog(CorpusRoot.open(root, create=True))
    if existing.parts("clips"):
        cat = existing
        print(f"reusing the catalog at {root}")
    else:
        cat = build_catalog(root, args.clips)
        print(f"built catalog of {args.clips} clips in {time.perf_counter() - t0:.1f}s at {root}")
    t0 = time.perf_counter()
    con = cat.connect()
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = load_pandas(cat)
    load_s = time.perf_counter() - t0
    pq_fns = pandas_queries(frames)
    print(f"\nDuckDB connect + views: {open_s:.3f}s; pandas load + dedupe: {load_s:.2f}s\n")
    print("| query | DuckDB median (s) | pandas median (s) | pandas / DuckDB |")
    print("|---|---|---|---|")
    for name, q in QUERIES.items():
        d = timed(lambda: con.sql(q).fetchall(), args.repeats)
        p = timed(pq_fns[name], args.repeats)
        print(f"| {name} | {d:.3f} | {p:.3f} | {p / d:.1f}× |")


if __name__ == "__main__":
    main()
