""".pre-commit-hooks.yaml, run by the real pre-commit on a throwaway repository: the hooks install
from this repository (as `repo:` + `rev:` in a user's config), pass on a clean program and fail - with
the `file:line:col` message - on a broken one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require_tool

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True,
                          check=True, timeout=120).stdout


@pytest.fixture(scope="module")
def hooks_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """This working tree (tracked and new files) committed into a throwaway repository: what a user's
    `repo:` would clone, at this `rev:`."""
    require_tool("git")
    copy = tmp_path_factory.mktemp("netdsl-hooks")
    files = git(REPO, "ls-files", "-co", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git(copy, "init", "-q")
    git(copy, "add", "-A")
    git(copy, "commit", "-q", "-m", "hooks")
    return copy, git(copy, "rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pre-commit-home")  # the hook environment is installed once per run


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    require_tool("git")
    (tmp_path / "policies").mkdir()
    shutil.copy(REPO / "examples" / "three-tier.seg", tmp_path / "policies" / "app.seg")
    git(tmp_path, "init", "-q")
    yield tmp_path


def run_hooks(project: Path, hooks_repo: tuple[Path, str], home: Path,
              hooks: list[dict[str, object]]) -> subprocess.CompletedProcess[str]:
    pre_commit = shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")
    if not Path(pre_commit).exists():
        require_tool("pre-commit")
    path, rev = hooks_repo
    (project / ".pre-commit-config.yaml").write_text(yaml.safe_dump(
        {"repos": [{"repo": str(path), "rev": rev, "hooks": hooks}]}))
    git(project, "add", "-A")
    env = {**os.environ, **GIT_ENV, "PRE_COMMIT_HOME": str(home),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([pre_commit, "run", "--all-files", "--color", "never"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_check_hook_passes_and_fails_with_the_line(project: Path, hooks_repo: tuple[Path, str],
                                                     pre_commit_home: Path) -> None:
    hooks: list[dict[str, object]] = [{"id": "netdsl-check", "args": ["policies/"]}]
    done = run_hooks(project, hooks_repo, pre_commit_home, hooks)
    assert done.returncode == 0, done.stdout + done.stderr
    (project / "policies" / "broken.seg").write_text("namespace x {\n  a accepts\n}\n")
    done = run_hooks(project, hooks_repo, pre_commit_home, hooks)
    assert done.returncode == 1 and "policies/broken.seg:2:" in done.stdout


def test_fmt_hooks_check_and_rewrite_file_by_file(project: Path, hooks_repo: tuple[Path, str],
                                                  pre_commit_home: Path) -> None:
    app = project / "policies" / "app.seg"
    canonical = app.read_text()
    app.write_text(canonical.replace("  isolate", "      isolate", 1))  # not in the canonical layout
    check = run_hooks(project, hooks_repo, pre_commit_home, [{"id": "netdsl-fmt-check"}])
    assert check.returncode == 1 and "policies/app.seg" in check.stdout
    assert app.read_text() != canonical  # --check changes nothing
    rewrite = run_hooks(project, hooks_repo, pre_commit_home, [{"id": "netdsl-fmt"}])
    assert rewrite.returncode == 1  # pre-commit fails a hook that changed files: stage the result
    assert app.read_text() == canonical
    again = run_hooks(project, hooks_repo, pre_commit_home, [{"id": "netdsl-fmt"}, {"id": "netdsl-fmt-check"}])
    assert again.returncode == 0, again.stdout


def test_compile_check_hook_fails_on_stale_output(project: Path, hooks_repo: tuple[Path, str],
                                                  pre_commit_home: Path) -> None:
    netdsl = Path(sys.executable).parent / "netdsl"
    subprocess.run([str(netdsl), "compile", "policies/", "-o", "deploy/netpol"], cwd=project, check=True,
                   capture_output=True, timeout=120)
    hooks: list[dict[str, object]] = [{"id": "netdsl-compile-check", "args": ["policies/", "-o", "deploy/netpol"]}]
    fresh = run_hooks(project, hooks_repo, pre_commit_home, hooks)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    app = project / "policies" / "app.seg"
    app.write_text(app.read_text().replace("ingress-nginx on 80", "ingress-nginx on 8000"))  # not recompiled
    stale = run_hooks(project, hooks_repo, pre_commit_home, hooks)
    assert stale.returncode == 1 and "deploy/netpol" in stale.stdout
