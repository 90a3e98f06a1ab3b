"""The CLI in a pipeline: `compile -o DIR --check` (stale output), `--name-prefix`, the summary after
`-o DIR`, shell completion (click's env-var protocol, as the shell scripts drive it) and the
`kubectl-netdsl` plugin entry point (with the real kubectl where it is installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netdsl import __version__
from tests.conftest import in_ci
from tests.test_cli import APP, SMALLER, snapshot

BIN = Path(sys.executable).parent


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tests/test_cli.py's program in app.seg, the working directory its folder."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "app.seg"
    path.write_text(APP, encoding="utf-8")
    return path


def stale_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.endswith("[stale-output]")]


# --- compile -o DIR --check -----------------------------------------------------------------------------


def test_check_of_an_up_to_date_directory(netdsl, app: Path) -> None:
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    before = snapshot(app.parent)
    result = netdsl("compile", "app.seg", "-o", "deploy", "--check")
    assert result.exit_code == 0
    assert result.stderr == "netdsl: deploy is up to date\n" and result.stdout == ""
    assert snapshot(app.parent) == before


def test_check_names_every_stale_file_and_writes_nothing(netdsl, app: Path) -> None:
    out = app.parent / "deploy"
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    # the program changes (staging goes away, production gets a new service) and nobody recompiles;
    # someone edits a generated file by hand, and deletes another
    app.write_text(SMALLER.replace("}", "  service db = app=db\n  db accepts backend on 5432\n}", 1),
                   encoding="utf-8")
    (out / "production/networkpolicy-frontend.yaml").write_text("# hand edit\n", encoding="utf-8")
    (out / "production/networkpolicy-default-deny.yaml").unlink()
    before = snapshot(app.parent)
    result = netdsl("compile", "app.seg", "-o", "deploy", "--check")
    assert result.exit_code == 1
    assert snapshot(app.parent) == before  # nothing written, not even a lock
    lines = stale_lines(result.stderr)
    assert lines == sorted(lines)
    assert {line.removeprefix("netdsl: error: ").removesuffix("  [stale-output]") for line in lines} == {
        "deploy/.netdsl.manifest: out of date",
        "deploy/kustomization.yaml: out of date (the .seg sources produce something else: recompile)",
        "deploy/production/networkpolicy-backend.yaml: out of date (the .seg sources produce something else: "
        "recompile)",
        "deploy/production/networkpolicy-db.yaml: missing",
        "deploy/production/networkpolicy-default-deny.yaml: missing",
        "deploy/production/networkpolicy-frontend.yaml: edited by hand since netdsl wrote it (its digest differs "
        "from .netdsl.manifest)",
        "deploy/staging/networkpolicy-web.yaml: no longer produced (a compile removes it)",
    }
    assert "hint: run `netdsl compile ... -o deploy` and commit the result" in result.stderr


def test_check_of_a_missing_directory(netdsl, app: Path) -> None:
    result = netdsl("compile", "app.seg", "-o", "deploy", "--check")
    assert result.exit_code == 1
    assert not (app.parent / "deploy").exists()
    assert "netdsl: error: deploy/kustomization.yaml: missing  [stale-output]" in result.stderr


def test_check_finds_foreign_files_and_an_interrupted_switch(netdsl, app: Path) -> None:
    out = app.parent / "deploy"
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    (out / ".netdsl.journal").write_text("{}", encoding="utf-8")
    result = netdsl("compile", "app.seg", "-o", "deploy", "--check")
    assert result.exit_code == 1
    assert "deploy/.netdsl.journal: an interrupted switch" in result.stderr
    (out / ".netdsl.journal").unlink()
    shutil.rmtree(out)
    out.mkdir()
    (out / "kustomization.yaml").write_text("resources: []\n", encoding="utf-8")
    result = netdsl("compile", "app.seg", "-o", "deploy", "--check")
    assert "deploy/kustomization.yaml: not written by netdsl, at a path netdsl writes  [stale-output]" in result.stderr


def test_check_works_on_a_read_only_directory(netdsl, app: Path) -> None:
    out = app.parent / "deploy"
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    out.chmod(0o555)
    try:
        result = netdsl("compile", "app.seg", "-o", "deploy", "--check")
    finally:
        out.chmod(0o755)
    assert result.exit_code == 0, result.stderr


def test_check_in_every_diagnostics_format(netdsl, app: Path) -> None:
    result = netdsl("compile", "app.seg", "-o", "deploy", "--check", "--diagnostics", "github")
    assert result.exit_code == 1
    assert "::error title=[stale-output]::deploy/kustomization.yaml: missing" in result.stderr


def test_check_needs_an_output_directory(netdsl, app: Path) -> None:
    result = netdsl("compile", "app.seg", "--check")
    assert result.exit_code == 2 and "-o DIR" in result.stderr


def test_check_of_a_broken_program_reports_the_program(netdsl, app: Path) -> None:
    app.write_text("namespace production {\n", encoding="utf-8")
    result = netdsl("compile", "app.seg", "-o", "deploy", "--check")
    assert result.exit_code == 1 and "[syntax]" in result.stderr and "[stale-output]" not in result.stderr


# --- the summary after -o DIR ------------------------------------------------------------------------------


def test_summary_line(netdsl, app: Path) -> None:
    result = netdsl("compile", "app.seg", "-o", "deploy")
    assert result.stderr == "netdsl: 5 written, 0 unchanged, 0 removed in deploy\n"
    app.write_text(SMALLER.replace("8080", "8081"), encoding="utf-8")
    result = netdsl("compile", "app.seg", "-o", "deploy")
    assert result.stderr.splitlines()[-1] == "netdsl: 3 written, 1 unchanged, 1 removed in deploy"


def test_output_files_are_0644_under_umask_022(netdsl, app: Path) -> None:
    previous = os.umask(0o022)
    try:
        assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    finally:
        os.umask(previous)
    modes = {p.stat().st_mode & 0o777 for p in (app.parent / "deploy").rglob("*") if p.is_file()}
    assert modes == {0o644}


# --- --name-prefix ------------------------------------------------------------------------------------------


def names(stdout: str) -> list[str]:
    return [doc["metadata"]["name"] for doc in yaml.safe_load_all(stdout) if doc]


def test_name_prefix(netdsl, app: Path) -> None:
    plain = netdsl("compile", "app.seg")
    prefixed = netdsl("compile", "app.seg", "--name-prefix", "team-a-")
    assert prefixed.exit_code == 0, prefixed.stderr
    assert names(prefixed.stdout) == ["team-a-" + n for n in names(plain.stdout)]
    assert netdsl("compile", "app.seg", "--name-prefix", "team-a-", "-o", "deploy").exit_code == 0
    assert (app.parent / "deploy/production/networkpolicy-team-a-backend.yaml").exists()


def test_name_prefix_from_the_environment(app: Path) -> None:
    env = {**os.environ, "NETDSL_NAME_PREFIX": "ops-"}
    run = subprocess.run([BIN / "netdsl", "compile", "app.seg"], capture_output=True, text=True, env=env,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert all(n.startswith("ops-") for n in names(run.stdout))
    run = subprocess.run([BIN / "netdsl", "compile", "app.seg", "--name-prefix", "x-"], capture_output=True,
                         text=True, env=env, check=False)
    assert all(n.startswith("x-") for n in names(run.stdout))  # the flag wins


@pytest.mark.parametrize("prefix", ["Team-", "-a", "a.b-", "a_b", "a" * 64, "a/b"])
def test_invalid_name_prefix_is_a_usage_error(netdsl, app: Path, prefix: str) -> None:
    result = netdsl("compile", "app.seg", "--name-prefix", prefix)
    assert result.exit_code == 2 and "is not a name prefix" in result.stderr and result.stdout == ""


def test_name_prefix_past_the_name_limit_is_an_error(app: Path) -> None:
    """A 63-character prefix keeps every name netdsl makes within 253 characters; the check still guards
    the limit (here with a longer prefix than the CLI accepts)."""
    from netdsl.backends import MAX_NAME, Options, apply_name_prefix, get_backend
    from netdsl.compiler import check

    result = check(["app.seg"])
    assert result.program is not None
    backend = get_backend("vanilla")
    manifests = backend.build(result.program, Options())
    longest = max(len(m.name) for m in manifests)
    problems = apply_name_prefix(backend, manifests, "p" * (MAX_NAME - longest + 1))
    assert len(problems) == 1 and problems[0].code == "invalid-name"
    assert "more than Kubernetes allows (253)" in problems[0].message


@pytest.mark.parametrize("version", ["3.31", "3.32"])
def test_calico_name_prefix_keeps_tiers_and_the_tier_dot_rule(netdsl, app: Path, version: str) -> None:
    app.write_text("tier security order 10 {\n  namespace n {\n    service web = app=web\n"
                   "    web denies from cidr 192.0.2.0/24\n  }\n}\n", encoding="utf-8")
    result = netdsl("compile", "app.seg", "-t", "calico", "--calico-version", version, "--name-prefix", "p-")
    assert result.exit_code == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    tiers = [d["metadata"]["name"] for d in docs if d["kind"] == "Tier"]
    assert tiers == ["security"]
    policies = [d["metadata"]["name"] for d in docs if d["kind"] != "Tier"]
    assert policies and all(n.startswith("security.p-" if version == "3.31" else "p-security-") for n in policies)


# --- shell completion ---------------------------------------------------------------------------------------


def complete(words: str, cwd: Path, program: str = "netdsl") -> list[str]:
    """Candidates as bash gets them: click's bash_complete protocol (COMP_WORDS, COMP_CWORD)."""
    parts = words.split()
    cword = len(parts) if words.endswith(" ") else len(parts) - 1
    var = "_" + program.upper().replace("-", "_") + "_COMPLETE"
    env = {**os.environ, var: "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    run = subprocess.run([BIN / program], capture_output=True, text=True, env=env, cwd=cwd, check=False)
    assert run.returncode == 0, run.stderr
    return [line.partition(",")[2] for line in run.stdout.splitlines() if line]


def test_completion_of_subcommands_and_targets(tmp_path: Path) -> None:
    assert set(complete("netdsl ", tmp_path)) >= {"compile", "check", "explain", "diff"}
    assert complete("netdsl ch", tmp_path) == ["check"]
    assert complete("netdsl compile --target ", tmp_path) == ["calico", "cilium", "vanilla"]
    assert complete("netdsl compile -t c", tmp_path) == ["calico", "cilium"]
    assert "--name-prefix" in complete("netdsl compile --", tmp_path)


def test_completion_of_seg_paths(tmp_path: Path) -> None:
    for name in ("app.seg", "notes.txt", "policies/a.seg", "policies/b.yaml", "policies/sub/c.seg",
                 ".hidden.seg", "pol.seg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("", encoding="utf-8")
    assert complete("netdsl compile ", tmp_path) == ["app.seg", "pol.seg", "policies/"]
    assert complete("netdsl check pol", tmp_path) == ["pol.seg", "policies/"]
    # the only match is a directory: its entries too, so bash completes `policies/` without a space
    assert complete("netdsl check poli", tmp_path) == ["policies/", "policies/a.seg", "policies/sub/"]
    assert complete("netdsl compile policies/", tmp_path) == ["policies/a.seg", "policies/sub/"]
    assert complete("netdsl compile .h", tmp_path) == [".hidden.seg"]
    assert complete("netdsl compile nothing", tmp_path) == []


# --- kubectl plugin -------------------------------------------------------------------------------------------


def test_kubectl_plugin_entry_point_is_installed() -> None:
    plugin = BIN / "kubectl-netdsl"
    assert plugin.exists(), "reinstall: pip install -e '.[test]' (pyproject.toml's [project.scripts])"
    run = subprocess.run([plugin, "--version"], capture_output=True, text=True, check=False)
    assert (run.returncode, run.stdout) == (0, f"netdsl, version {__version__}\n")


def test_kubectl_runs_the_plugin(app: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if in_ci():
            pytest.fail("kubectl is not installed (Debian: apt-get install kubernetes-client), and CI is set")
        pytest.skip("kubectl is not installed (Debian: apt-get install kubernetes-client)")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([kubectl, "netdsl", "--version"], capture_output=True, text=True, env=env, check=False)
    assert (run.returncode, run.stdout) == (0, f"netdsl, version {__version__}\n"), run.stderr
    run = subprocess.run([kubectl, "netdsl", "compile", "app.seg"], capture_output=True, text=True, env=env,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert "kind: NetworkPolicy" in run.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_of_the_readme(shell: str) -> None:
    """The README's start-up lines: each shell's script comes out (and bash accepts it)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"_NETDSL_COMPLETE={shell}_source netdsl" in readme
    env = {**os.environ, "_NETDSL_COMPLETE": f"{shell}_source"}
    run = subprocess.run([BIN / "netdsl"], capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0 and "_NETDSL_COMPLETE" in run.stdout, run.stderr
    if shell == "bash" and shutil.which("bash"):
        script = f'eval "$(_NETDSL_COMPLETE=bash_source {BIN / "netdsl"})" && complete -p netdsl'
        check = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
        assert check.returncode == 0 and "netdsl" in check.stdout, check.stderr
