"""Every command in the README works as written.

``bash`` blocks run in order, as one session in a scratch directory with ``.venv/bin`` on PATH,
exactly as written except for training budgets (``BUDGETS``: minutes and steps shrink so the
tour takes a few minutes here). ``sh`` blocks need the user's data, weights or cluster: each of
their ``vidcorpus`` commands must name an existing command with options it accepts.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent
BUDGETS = [  # (pattern, replacement) applied to bash blocks only
    (r"--steps 300\b", "--steps 30"),
    (r"--max-minutes \d+(\.\d+)?", "--max-minutes 0.15"),
    (r"--minutes \d+(\.\d+)?", "--minutes 0.1"),
]


def blocks(lang: str) -> list[str]:
    text = README.read_text()
    return [m.group(1) for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)]


def commands(block: str) -> list[list[str]]:
    """The vidcorpus command lines of a block (``torchrun … -m pipelines.cli`` included)."""
    out = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["vidcorpus"]:
            out.append(words[1:])
        elif "pipelines.cli" in words:
            out.append(words[words.index("pipelines.cli") + 1:])
    return out


def check_parses(args: list[str]) -> None:
    from pipelines.cli import app
    command = typer.main.get_command(app)  # typer's own click: duck-type groups
    ctx = command.make_context("vidcorpus", [], resilient_parsing=True)
    words = list(args)
    while hasattr(command, "commands") and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    assert not hasattr(command, "commands"), f"not a command: vidcorpus {' '.join(args)}"
    command.make_context(command.name, words, parent=ctx, resilient_parsing=False)  # raises on bad options


def test_readme_has_the_two_commands_first():
    assert blocks("bash")[0].split() == ["make", "demo", "make", "test"]


@pytest.mark.parametrize("line", [c for b in blocks("sh") for c in commands(b)], ids=lambda c: " ".join(c[:2]))
def test_documented_commands_parse(line):
    check_parses(line)


def test_the_tour_runs_as_written(tmp_path):
    tour = [b for b in blocks("bash")[1:]]
    assert len(tour) >= 6 and all(commands(b) or "cat >" in b for b in tour)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "VIDCORPUS_HOME": str(tmp_path / "home"),
           "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS")
    log = []
    try:
        for block in tour:
            script = block
            for pattern, repl in BUDGETS:
                script = re.sub(pattern, repl, script)
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=900)
            log.append(f"$ {script}\n{proc.stdout}{proc.stderr}")
            assert proc.returncode == 0, "\n".join(log)[-6000:]
    finally:
        subprocess.run([str(BIN / "vidcorpus"), "jobs", "head", "--stop"], cwd=tmp_path, env=env,
                       capture_output=True, timeout=120)
    out = "\n".join(log)
    (tmp_path / "tour.log").write_text(out)
    assert Path(tmp_path, "corpus", "shards", "tour", "manifest.json").exists()
    assert Path(tmp_path, "corpus", "shards", "long_clips", "manifest.json").exists(), out[-3000:]
    assert Path(tmp_path, "red_circle.mp4").stat().st_size > 0
    assert Path(tmp_path, "clips.csv").read_text().splitlines()[0].startswith('"clip_id"')
    assert "captioner:" in out  # the SQL over re-captioned clips printed rows


@pytest.mark.parametrize("block", [b for b in blocks("yaml") if "kind:" in b], ids=lambda b: b.split("\n")[0])
def test_documented_job_specs_validate(block):
    from pipelines.jobs.specs import parse_spec
    parse_spec(block, where="README job spec")
