"""The score job on real clip files: every clip scored or rejected, scores land in the catalog."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.ingest.config import RunnerConfig
from pipelines.score.dedup import SIGNATURE_MODEL
from pipelines.score.job import ScoreConfig, run_score
from pipelines.score.testing import ClipSpec, add_clips
from storage import Catalog, CorpusRoot

LOCAL = RunnerConfig(kind="local")
# exact duplicates (same pixels, re-encoded) have CLIP and pixel cosines ~1; a random-init model
# puts every clip near in CLIP, but the pixel signatures of different scenes stay apart
CONFIG = ScoreConfig(runner=LOCAL, threads=1, dedup_threshold=0.95, n_frames=4,
                     dedup_keep="duration_s DESC, clip_id")
SPECS = [
    ClipSpec("red", captions={"alt-text": "red square", "original": "a red square moves right"}),
    ClipSpec("red-copy", fps=6, captions={"alt-text": "red box"}),  # same pixels, longer: kept
    ClipSpec("green", color="green", background="white", seed=1, captions={"alt-text": "green box"}),
    ClipSpec("black", kind="black", captions={"alt-text": "video"}),
    ClipSpec("frozen", kind="frozen", color="yellow", seed=2),
    ClipSpec("noise", kind="noise", seed=3),
    ClipSpec("missing", color="blue", seed=4),
    ClipSpec("garbage", color="gray", seed=5),
]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("score") / "root"
    catalog = Catalog(CorpusRoot.open(root, create=True))
    clips = {spec.name: c for spec, c in zip(SPECS, add_clips(catalog, SPECS))}
    os.remove(catalog.root.join(clips["missing"]["uri"]))
    Path(catalog.root.join(clips["garbage"]["uri"])).write_bytes(b"not a video at all" * 50)
    result = run_score(str(root), CONFIG)
    ids = {name: c["clip_id"] for name, c in clips.items()}
    return catalog, result, ids


def _row(catalog, clip_id: str) -> dict:
    return catalog.query(f"SELECT * FROM clips_v WHERE clip_id = '{clip_id}'").to_pylist()[0]


def test_every_clip_is_scored_or_rejected_and_the_job_is_recorded(scored):
    catalog, result, ids = scored
    assert result.counts["scored"] == 6 and result.counts["decode_error"] == 2
    for name in ("missing", "garbage"):
        rejection = catalog.query(f"SELECT * FROM rejections WHERE clip_id = '{ids[name]}'").to_pylist()
        assert [(r["stage"], r["reason"]) for r in rejection] == [("score:frames", "decode_error")]
    job = catalog.query(f"SELECT * FROM jobs WHERE job_id = '{result.job_id}'").to_pylist()[0]
    assert job["status"] == "succeeded"
    stages = {s["name"]: s for s in json.loads(job["stages"])}
    assert stages["frames"]["dropped"] == {"decode_error": 2} and stages["clip"]["kept"] == 6
    assert Path(catalog.root.path, "jobs", result.job_id, "stats.json").exists()


def test_pixel_and_clip_scores(scored):
    catalog, result, ids = scored
    black, frozen, noise, red = (_row(catalog, ids[n]) for n in ("black", "frozen", "noise", "red"))
    assert (black["black"], black["frozen"], frozen["frozen"], red["frozen"]) == (1.0, 1.0, 1.0, 0.0)
    assert noise["motion"] > 0.1 > red["motion"] > 0.0
    for row in (black, frozen, noise, red):
        assert all(0.0 <= row[n] <= 1.0 for n in ("neg_black_screen", "neg_static_noise", "neg_blurry_frame"))
    assert red["clip_text"] is not None and red["clip_text_original"] is not None
    assert frozen["clip_text"] is None  # no alt text, no score
    # random init has no swap vocabulary: the column exists (NULL), so the default rules run
    assert "clip_text_contrast" in red and red["clip_text_contrast"] is None
    from pipelines.score.filters import load_rules, validate_rules
    validate_rules(catalog, load_rules(None))
    captions = catalog.query(f"SELECT source, clip_score FROM captions WHERE clip_id = '{ids['red']}' "
                             "ORDER BY source").to_pylist()
    assert [c["clip_score"] for c in captions] == pytest.approx([red["clip_text"], red["clip_text_original"]])


def test_embeddings_are_normalised_means_under_the_model_tag(scored):
    catalog, result, ids = scored
    table = catalog.query(f"SELECT clip_id, model, vector FROM embeddings WHERE model = '{result.model}'")
    assert table.num_rows == 6 and result.model == "vidcorpus-clip-tiny@random-init"
    vectors = np.array(table["vector"].to_pylist(), np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    signatures = catalog.query(f"SELECT clip_id, vector FROM embeddings WHERE model = '{SIGNATURE_MODEL}'")
    assert set(signatures["clip_id"].to_pylist()) == set(table["clip_id"].to_pylist())
    norms = {c: np.linalg.norm(v) for c, v in zip(signatures["clip_id"].to_pylist(), signatures["vector"].to_pylist())}
    assert norms[ids["black"]] == 0.0 and norms[ids["red"]] == pytest.approx(1.0, abs=1e-4)  # black: no layout


def test_exact_duplicates_grouped_and_the_best_kept(scored):
    catalog, result, ids = scored
    red, copy = _row(catalog, ids["red"]), _row(catalog, ids["red-copy"])
    assert red["dup_group"] == copy["dup_group"] is not None
    assert copy["rejection_reasons"] is None  # the longer copy is kept (dedup_keep)
    rejection = catalog.query(f"SELECT * FROM rejections WHERE clip_id = '{ids['red']}'").to_pylist()[0]
    assert (rejection["stage"], rejection["reason"]) == ("dedup", "duplicate")
    assert ids["red-copy"] in rejection["detail"]
    assert result.duplicate_groups == 1 and result.duplicates_rejected == 1


def test_rerun_skips_scored_clips_and_keeps_the_same_groups(scored):
    catalog, first, ids = scored
    again = run_score(catalog.root.url, CONFIG)
    assert again.counts["scored"] == 0 and again.counts["decode_error"] == 2  # broken files retried
    assert again.duplicate_groups == 1
    assert _row(catalog, ids["red"])["rejection_reasons"] == "duplicate"


def test_bad_where_and_remote_weights_refused_before_anything_runs(tmp_path):
    catalog = Catalog(CorpusRoot.open(tmp_path / "r", create=True))
    add_clips(catalog, SPECS[:1])
    with pytest.raises(ValueError, match="Columns of clips_v"):
        run_score(catalog.root.url, ScoreConfig(runner=LOCAL, where="no_such_column > 1"))
    with pytest.raises(ValueError, match="never downloaded"):
        run_score(catalog.root.url, ScoreConfig(runner=LOCAL, clip_pretrained="openai"))
    assert catalog.query("SELECT count(*) AS n FROM jobs")["n"][0].as_py() == 0


def test_cli_score_then_sql(tmp_path):
    from pipelines.cli import app
    catalog = Catalog(CorpusRoot.open(tmp_path / "r", create=True))
    add_clips(catalog, SPECS[:2])
    runner = CliRunner()
    out = runner.invoke(app, ["score", "--root", catalog.root.url, "--runner", "local", "--threads", "1",
                              "--negative-prompt", "a black screen"])
    assert out.exit_code == 0, out.output
    assert "2 scored" in out.output
    columns = catalog.query("DESCRIBE clips_v")["column_name"].to_pylist()
    assert "neg_black_screen" in columns and "neg_static_noise" not in columns


def test_ray_runner_gives_the_same_scores_as_local(tmp_path):
    """The same stages on a real Ray (frames as tasks, CLIP as an actor pool) as in-process."""
    import torch
    from captioner.clip_model import TINY, create_clip
    weights = tmp_path / "tiny.pt"
    torch.save(create_clip(TINY)[0].state_dict(), weights)  # both runs load the same weights
    scores = {}
    for kind in ("local", "ray"):
        catalog = Catalog(CorpusRoot.open(tmp_path / kind, create=True))
        add_clips(catalog, SPECS[:3])
        config = CONFIG.model_copy(update={"runner": RunnerConfig(kind=kind, num_cpus=2),
                                           "clip_pretrained": str(weights)})
        result = run_score(catalog.root.url, config)
        assert result.counts["scored"] == 3
        scores[kind] = catalog.query("SELECT clip_id, motion, clip_text, neg_static_noise FROM clips_v "
                                     "ORDER BY clip_id").to_pylist()
    import ray
    ray.shutdown()
    assert [r["clip_id"] for r in scores["ray"]] == [r["clip_id"] for r in scores["local"]]
    for ray_row, local_row in zip(scores["ray"], scores["local"]):
        for name in ("motion", "clip_text", "neg_static_noise"):
            assert ray_row[name] == pytest.approx(local_row[name], abs=1e-5, rel=1e-4)


def test_random_init_clip_is_the_same_in_every_process():
    """Workers without weights must agree, or an actor pool would score with different models."""
    import torch
    from captioner.clip_model import TINY, create_clip
    torch.manual_seed(123)
    a = create_clip(TINY)[0].state_dict()
    after = torch.rand(1)
    torch.manual_seed(123)
    b = create_clip(TINY)[0].state_dict()
    assert torch.equal(after, torch.rand(1)), "creating a model must not consume the global RNG"
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_train_clip_checkpoint_scores_with_its_view_recipe_and_caption_contrast(tmp_path):
    from captioner.clip_model import TrainClipConfig, recipe_defaults, train_clip
    from pipelines.score.job import build_score_stages
    root = tmp_path / "root"
    catalog = Catalog(CorpusRoot.open(root, create=True))
    specs = [ClipSpec("red", captions={"alt-text": "red square"}),
             ClipSpec("vague", color="green", seed=1, captions={"alt-text": "untitled"}),
             ClipSpec("none", color="blue", seed=2)]
    ids = {s.name: c["clip_id"] for s, c in zip(specs, add_clips(catalog, specs))}
    recipe = recipe_defaults("vidcorpus-clip-tiny", None)
    assert recipe["views"] == ("objects", "silhouettes") and recipe["view_source"] == 128
    assert recipe["folds"] is None  # auto: one model for these 6 clips
    texts = [[f"{c} {s}", f"a {c} {s} moves"] for c in ("red", "green", "blue") for s in ("square", "box")]
    frames = np.random.default_rng(0).integers(0, 255, (len(texts), 2, 128, 128, 3), dtype=np.uint8)
    out = tmp_path / "clip.pt"
    train_clip(frames, texts, TrainClipConfig(steps=2, batch_size=4, warmup_steps=1, threads=1, **recipe), str(out),
               clip_ids=[f"other-{i}" for i in range(len(texts))])

    config = ScoreConfig(runner=LOCAL, threads=1, n_frames=2, clip_pretrained=str(out))
    assert build_score_stages(str(root), config)[0].frames.size == 128  # decoded for the crops
    result = run_score(str(root), config)
    assert result.counts["scored"] == 3
    red, vague, none = (_row(catalog, ids[n]) for n in ("red", "vague", "none"))
    assert red["clip_text_contrast"] is not None and red["clip_text_contrast"] <= 0.0
    assert vague["clip_text_contrast"] == 0.0  # no swappable word: no evidence against it
    assert none["clip_text_contrast"] is None and none["clip_text"] is None


def test_a_cross_fitted_checkpoint_judges_each_training_clip_by_the_model_that_never_saw_it(tmp_path):
    """A model scores the captions it was trained on as true, wrong ones included; with folds, a
    training clip's caption scores come from the other fold's model alone, a new clip's from
    the mean of all of them, and the embedding from the checkpoint's own model."""
    from captioner.clip_model import TrainClipConfig, fold_of, train_clip
    from captioner.clip_scorer import ClipScorer, ClipScorerConfig
    from pipelines.score.frames import decode_clip_frames
    from pipelines.score.job import build_score_stages
    root = tmp_path / "root"
    catalog = Catalog(CorpusRoot.open(root, create=True))
    specs = [ClipSpec("seen", captions={"alt-text": "red square"}),
             ClipSpec("new", color="green", seed=1, captions={"alt-text": "green square"})]
    clips = {s.name: c for s, c in zip(specs, add_clips(catalog, specs))}
    texts = [[f"{c} {s}"] for c in ("red", "green", "blue", "yellow") for s in ("square", "box", "disc")]
    train_ids = [clips["seen"]["clip_id"]] + [f"other-{i}" for i in range(len(texts) - 1)]
    frames = np.random.default_rng(0).integers(0, 255, (len(texts), 2, 32, 32, 3), dtype=np.uint8)
    out = tmp_path / "clip.pt"
    config = TrainClipConfig(steps=4, batch_size=4, warmup_steps=1, threads=1, folds=2)
    train_clip(frames, texts, config, str(out), clip_ids=train_ids)

    scorer = ClipScorer(ClipScorerConfig(pretrained=str(out), threads=1)).load()
    assert len(scorer.folds) == 2 and scorer.folds[0] is scorer
    first, second = (m.model.state_dict() for m in scorer.folds)
    assert not all(np.array_equal(first[k], second[k]) for k in first), "the folds must be two models"
    fold = fold_of(clips["seen"]["clip_id"], 2)
    assert scorer.judges(clips["seen"]["clip_id"]) == [scorer.folds[fold]]
    assert scorer.judges(clips["new"]["clip_id"]) == scorer.folds

    score_config = ScoreConfig(runner=LOCAL, threads=1, n_frames=2, clip_pretrained=str(out))
    assert run_score(str(root), score_config).counts["scored"] == 2
    frame_config = build_score_stages(str(root), score_config)[0].frames

    def cosine(model, name, text):
        rgb = decode_clip_frames(catalog.root.uri(clips[name]["uri"]), frame_config, clips[name]["n_frames"]).rgb
        return float(model.video_embeddings(rgb[None])[0] @ model.encode_texts([text])[0])

    seen, new = (_row(catalog, clips[n]["clip_id"]) for n in ("seen", "new"))
    assert seen["clip_text"] == pytest.approx(cosine(scorer.folds[fold], "seen", "red square"), abs=1e-5)
    assert seen["clip_text"] != pytest.approx(cosine(scorer.folds[1 - fold], "seen", "red square"), abs=1e-5)
    both = [cosine(m, "new", "green square") for m in scorer.folds]
    assert new["clip_text"] == pytest.approx(np.mean(both), abs=1e-5)
