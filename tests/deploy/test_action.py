"""action.yml, the composite GitHub Action, run step by step the way the runner runs a composite action
(bash -eo pipefail, `${{ }}` evaluated into env, GITHUB_PATH, RUNNER_TEMP): it installs netdsl from the
action's own directory, annotates errors with workflow commands, fails on stale output, and posts the
diff as one pull-request comment that later runs update (a fake `gh` stands in for GitHub's API)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_tool

ACTION = REPO / "action.yml"
EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}
FAKE_GH = """#!/bin/sh
# A stand-in for GitHub's CLI: logs every call; lists the comment id in $GH_FAKE_COMMENT if one exists.
printf '%s\\n' "$*" >> "$GH_FAKE_LOG"
for a in "$@"; do case "$a" in body=@*) cp "${a#body=@}" "$GH_FAKE_LOG.body";; esac; done
case "$*" in *--paginate*) [ -n "${GH_FAKE_COMMENT:-}" ] && echo "$GH_FAKE_COMMENT";; esac
exit 0
"""


def action() -> dict[str, Any]:
    doc = yaml.safe_load(ACTION.read_text())
    assert isinstance(doc, dict)
    return doc


def test_the_action_is_composite_and_keeps_expressions_out_of_scripts() -> None:
    """Expressions are evaluated into `env:` and `if:` only, never pasted into a script (where a crafted
    input or branch name would become shell code)."""
    doc = action()
    assert doc["runs"]["using"] == "composite"
    for step in doc["runs"]["steps"]:
        assert step["shell"] == "bash"
        assert not EXPRESSION.search(step["run"]), step["name"]
        for expr in EXPRESSION.findall(" ".join(str(v) for v in step.get("env", {}).values())):
            name = expr.split(".")[0]
            assert name in ("inputs", "github"), expr
            if name == "inputs":
                assert expr.split(".")[1] in doc["inputs"]


class Runner:
    """Just enough of the Actions runner for this action: contexts, `if:`, env, GITHUB_PATH."""

    def __init__(self, workspace: Path, temp: Path, inputs: dict[str, str], github: dict[str, Any]) -> None:
        self.workspace, self.temp, self.github = workspace, temp, github
        self.inputs = {k: str(v.get("default", "")) for k, v in action()["inputs"].items()} | inputs
        self.path_file = temp / "github_path"
        self.path_file.write_text("")

    def value(self, expr: str) -> Any:
        if expr.startswith("inputs."):
            return self.inputs[expr.split(".", 1)[1]]
        value: Any = self.github
        for part in expr.split(".")[1:]:
            value = value.get(part, "") if isinstance(value, dict) else ""
        return value

    def condition(self, text: str) -> bool:
        text = EXPRESSION.sub(lambda m: m.group(1), text)
        clauses = [c.strip() for c in text.split("&&")]
        for clause in clauses:
            left, op, right = re.fullmatch(r"(\S+)\s*(==|!=)\s*'([^']*)'", clause).groups()  # type: ignore[union-attr]
            if (str(self.value(left)) == right) != (op == "=="):
                return False
        return True

    def run(self, extra_env: dict[str, str], skip: tuple[str, ...] = ()) -> list[subprocess.CompletedProcess[str]]:
        done = []
        for step in action()["runs"]["steps"]:
            if step["name"] in skip or ("if" in step and not self.condition(step["if"])):
                continue
            paths = [p for p in self.path_file.read_text().splitlines() if p]
            env = {**os.environ, **GIT_ENV, **extra_env, "GITHUB_ACTION_PATH": str(REPO),
                   "RUNNER_TEMP": str(self.temp), "GITHUB_PATH": str(self.path_file),
                   "GITHUB_REPOSITORY": "acme/policies",
                   "PATH": os.pathsep.join([*paths, extra_env.get("PATH", os.environ.get("PATH", ""))])}
            for key, raw in step.get("env", {}).items():
                env[key] = EXPRESSION.sub(lambda m: str(self.value(m.group(1))), str(raw))
            script = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]]
            result = subprocess.run(script, cwd=self.workspace, env=env, capture_output=True, text=True,
                                    timeout=600, check=False)
            done.append(result)
            if result.returncode != 0:
                break
        return done


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()


@pytest.fixture
def pull_request(tmp_path: Path) -> tuple[Path, str]:
    """A checkout of a pull request's head, its base commit on `origin` only (a shallow checkout)."""
    require_tool("git")
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    (work / "policies").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "three-tier.seg", work / "policies" / "app.seg")
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    base = git(work, "rev-parse", "HEAD")
    git(tmp_path, "clone", "-q", "--bare", str(work), str(origin))
    app = work / "policies" / "app.seg"
    app.write_text(app.read_text().replace("ingress-nginx on 80", "ingress-nginx on 80, 443"))
    git(work, "commit", "-q", "-am", "head")
    shutil.rmtree(work / ".git")
    git(work, "init", "-q")  # like actions/checkout: the head only, base reachable through origin
    git(work, "remote", "add", "origin", str(origin))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "merge")
    return work, base


def fake_gh(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gh").write_text(FAKE_GH)
    (bin_dir / "gh").chmod(0o755)
    return bin_dir, tmp_path / "gh.log"


def test_on_a_pull_request_it_installs_checks_and_comments_once(pull_request: tuple[Path, str], tmp_path: Path) -> None:
    work, base = pull_request
    bin_dir, log = fake_gh(tmp_path)
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    github = {"event_name": "pull_request", "token": "t0k",
              "event": {"pull_request": {"base": {"sha": base}, "number": 7}}}
    runner = Runner(work, temp, {"path": "policies"}, github)
    env = {"GH_FAKE_LOG": str(log), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    steps = runner.run(env)  # the real install step: a venv and `pip install` of the action's directory
    assert [s.returncode for s in steps] == [0, 0, 0], [s.stderr for s in steps]
    body = (log.parent / "gh.log.body").read_text()
    assert body.startswith("<!-- netdsl-diff -->") and "443" in body
    calls = log.read_text().splitlines()
    assert any("--method POST repos/acme/policies/issues/7/comments" in c for c in calls)
    # The next push updates that comment instead of adding another.
    log.unlink()
    steps = runner.run({**env, "GH_FAKE_COMMENT": "4242"}, skip=("Install netdsl",))
    assert [s.returncode for s in steps] == [0, 0]
    assert any("--method PATCH repos/acme/policies/issues/comments/4242" in c for c in log.read_text().splitlines())


def test_errors_become_annotations_and_stale_output_fails(pull_request: tuple[Path, str], tmp_path: Path) -> None:
    work, _ = pull_request
    venv_bin = str(Path(sys.executable).parent)
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    subprocess.run([f"{venv_bin}/netdsl", "compile", "policies", "-o", "deploy/netpol"], cwd=work, check=True,
                   capture_output=True, timeout=120)
    github = {"event_name": "push"}
    env = {"PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    runner = Runner(work, temp, {"path": "policies", "output": "deploy/netpol"}, github)
    steps = runner.run(env, skip=("Install netdsl",))
    assert [s.returncode for s in steps] == [0, 0]  # no comment step outside pull requests
    app = work / "policies" / "app.seg"
    app.write_text(app.read_text().replace("ingress-nginx on 80", "ingress-nginx on 8000"))  # not recompiled
    steps = runner.run(env, skip=("Install netdsl",))
    assert [s.returncode for s in steps] == [0, 1]
    assert "::error" in steps[1].stdout + steps[1].stderr and "stale-output" in steps[1].stdout + steps[1].stderr
    (work / "policies" / "broken.seg").write_text("namespace x {\n  a accepts\n}\n")
    steps = runner.run(env, skip=("Install netdsl",))
    annotations = steps[0].stdout + steps[0].stderr
    assert steps[0].returncode == 1 and "::error file=policies/broken.seg,line=2," in annotations
