"""Filter rules: refused before anything runs when broken, applied in order as a recorded funnel."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.score.filters import Rule, RuleError, load_rules
from pipelines.score.job import run_filter
from storage import Catalog, CorpusRoot

# clip -> (duration_s, motion, clip_text); "dead" was rejected earlier (decode_error)
CLIPS = {"ok1": (3.0, 0.01, 0.4), "ok2": (4.0, 0.02, None), "short": (0.2, 0.01, 0.5),
         "still": (3.0, 0.0, 0.5), "offtopic": (3.0, 0.01, 0.05), "dead": (3.0, 0.01, 0.9)}
RULES = [Rule("too_short", "duration_s >= 0.5"), Rule("static", "motion > 0.005"),
         Rule("low_clip_score", "clip_text IS NULL OR clip_text >= 0.2")]


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    catalog = Catalog(CorpusRoot.open(tmp_path / "root", create=True))
    catalog.append("clips", [dict(clip_id=c, video_id="v", duration_s=d, uri=f"clips/v/{c}.mp4")
                             for c, (d, _, _) in CLIPS.items()])
    scores = [dict(clip_id=c, name="motion", scorer="frames-v1", value=m) for c, (_, m, _) in CLIPS.items()]
    scores += [dict(clip_id=c, name="clip_text", scorer="m", value=t) for c, (_, _, t) in CLIPS.items() if t]
    catalog.append("scores", scores)
    catalog.append("rejections", [dict(clip_id="dead", stage="score:frames", reason="decode_error")])
    return catalog


def _reasons(catalog) -> dict[str, str | None]:
    rows = catalog.query("SELECT clip_id, rejection_reasons FROM clips_v ORDER BY clip_id").to_pylist()
    return {r["clip_id"]: r["rejection_reasons"] for r in rows}


def test_funnel_applies_rules_in_order_and_records_rejections(catalog):
    result = run_filter(catalog.root.url, RULES)
    funnel = result.funnel
    assert (funnel.total, funnel.start) == (6, 5)  # "dead" was rejected before filtering
    assert [(s.rule.name, s.left, s.rejected) for s in funnel.steps] == [
        ("too_short", 4, ["short"]), ("static", 3, ["still"]), ("low_clip_score", 2, ["offtopic"])]
    assert _reasons(catalog) == {"dead": "decode_error", "offtopic": "low_clip_score", "ok1": None,
                                 "ok2": None, "short": "too_short", "still": "static"}
    stages = catalog.query("SELECT stage FROM rejections WHERE clip_id = 'still'")["stage"].to_pylist()
    assert stages == ["filter:static"]
    job = catalog.query(f"SELECT * FROM jobs WHERE job_id = '{result.job_id}'").to_pylist()[0]
    assert job["status"] == "succeeded" and job["kind"] == "filter"
    assert [s["kept"] for s in json.loads(job["stages"])] == [4, 3, 2]
    stored = json.loads(Path(catalog.root.path, "jobs", result.job_id, "funnel.json").read_text())
    assert stored["kept"] == 2 and [s["left"] for s in stored["steps"]] == [4, 3, 2]
    assert "low_clip_score" in result.text() and "2 of 5" in result.text()


def test_rerun_with_looser_rules_withdraws_rejections(catalog):
    run_filter(catalog.root.url, RULES)
    run_filter(catalog.root.url, [Rule("too_short", "duration_s >= 0.1")])
    assert _reasons(catalog) == {"dead": "decode_error", "offtopic": None, "ok1": None, "ok2": None,
                                 "short": None, "still": None}


@pytest.mark.parametrize("where, message", [
    ("motion >", "Parser Error"),
    ("no_such_score > 0.5", "no_such_score"),
])
def test_broken_rule_is_refused_before_anything_runs_listing_columns(catalog, where, message):
    with pytest.raises(RuleError) as err:
        run_filter(catalog.root.url, [RULES[0], Rule("broken", where)])
    text = str(err.value)
    assert "broken" in text and message.lower() in text.lower()
    assert "Columns of clips_v:" in text and "clip_text" in text and "duration_s" in text
    assert catalog.query("SELECT count(*) AS n FROM jobs")["n"][0].as_py() == 0
    assert catalog.query("SELECT count(*) AS n FROM rejections WHERE stage LIKE 'filter:%'")["n"][0].as_py() == 0


def test_rules_file_and_defaults(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  too_short: duration_s >= 2\n  static: motion > 0.01\n")
    assert load_rules(path) == [Rule("too_short", "duration_s >= 2"), Rule("static", "motion > 0.01")]
    assert [r.name for r in load_rules()][:2] == ["unscored", "too_short"]
    path.write_text("rules:\n  Bad Name: motion > 0\n")
    with pytest.raises(RuleError, match="slug"):
        load_rules(path)


def test_cli_filter_prints_funnel_and_refuses_bad_rules(catalog, tmp_path):
    from pipelines.cli import app
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("rules:\n  too_short: duration_s >= 0.5\n")
    bad.write_text("rules:\n  oops: durationn_s >= 0.5\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["filter", "--root", catalog.root.url, "--rules", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "too_short" in ok.output and "4 of 5" in ok.output
    refused = runner.invoke(app, ["filter", "--root", catalog.root.url, "--rules", str(bad)])
    assert refused.exit_code == 2 and "durationn_s" in refused.output and "Columns of clips_v" in refused.output
