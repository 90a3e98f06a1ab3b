"""netdsl/cli.py: streams, exit status, diagnostics, determinism and `-o DIR` (netdsl/output.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netdsl import __version__

APP = """\
namespace production {
  isolate
  service frontend = tier=frontend
  service backend  = tier=backend
  allow dns for frontend, backend
  backend accepts frontend on 8080
}
namespace staging {
  service web = app=web
  web accepts all pods on 80
}
"""
APP_FILES = {
    "production/networkpolicy-default-deny.yaml",
    "production/networkpolicy-backend.yaml",
    "production/networkpolicy-frontend.yaml",
    "staging/networkpolicy-web.yaml",
}
# APP without the staging namespace
SMALLER = APP[: APP.index("namespace staging")]
SYNTAX_ERROR = "namespace production {\n  isolate\n"
WARNING_ONLY = "namespace a {\n  service web = app=web\n  web connects to all pods on 80\n}\n"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "app.seg"
    path.write_text(APP, encoding="utf-8")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and directory (None) below `directory`, by relative path."""
    return {
        p.relative_to(directory).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(directory.rglob("*"))
    }


def files_only(snap: dict[str, bytes | None]) -> dict[str, bytes | None]:
    return {k: v for k, v in snap.items() if v is not None}


def no_temp_files(directory: Path) -> bool:
    """No staging directory, journal, lock or temporary file: only the output and its manifest."""
    return not [p for p in directory.rglob("*") if p.name.startswith((".netdsl-", ".netdsl.journal", ".netdsl.lock"))
                or p.suffix == ".tmp"]


# --- basics -------------------------------------------------------------------------------------------


def test_version(netdsl) -> None:
    result = netdsl("--version")
    assert result.exit_code == 0
    assert result.stdout == f"netdsl, version {__version__}\n"


def test_compile_to_stdout_is_a_multi_document_stream(netdsl, app: Path) -> None:
    result = netdsl("compile", "app.seg")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert out.startswith("---\n")
    assert out.count("\n---\n") + 1 == len(APP_FILES)
    docs = list(yaml.safe_load_all(out))
    assert len(docs) == len(APP_FILES)
    assert {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs} == {
        ("production", "default-deny"), ("production", "backend"), ("production", "frontend"),
        ("staging", "web"),
    }
    assert all(d["kind"] == "NetworkPolicy" for d in docs)
    assert docs[0]["metadata"]["annotations"]["netdsl.dev/source"] == "app.seg:2"


def test_stdin(netdsl, app: Path) -> None:
    from_file = netdsl("compile", "app.seg")
    from_stdin = netdsl("compile", "-", input=APP.encode())
    assert from_stdin.exit_code == 0, from_stdin.stderr
    assert from_stdin.stdout == from_file.stdout.replace("app.seg:", "<stdin>:")
    with_bom = netdsl("compile", "-", input=b"\xef\xbb\xbf" + APP.encode())
    assert with_bom.stdout == from_stdin.stdout


def test_stdin_diagnostics_name_stdin(netdsl, app: Path) -> None:
    result = netdsl("check", "-", input=SYNTAX_ERROR)
    assert result.exit_code == 1
    assert result.stderr.startswith("<stdin>:2:")


def test_stdin_invalid_utf8_is_an_error(netdsl, app: Path) -> None:
    result = netdsl("compile", "-", input=b"# caf\xff\n" + APP.encode())
    assert result.exit_code == 1
    assert "[encoding]" in result.stderr


def test_real_process_streams(app: Path) -> None:
    """Through a real process: data on stdout only, diagnostics on stderr only, exit status."""
    ok = subprocess.run([sys.executable, "-m", "netdsl", "compile", "-"], input=APP.encode(),
                        capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == b""
    assert len(list(yaml.safe_load_all(ok.stdout))) == len(APP_FILES)
    bad = subprocess.run([sys.executable, "-m", "netdsl", "compile", "-"], input=SYNTAX_ERROR.encode(),
                         capture_output=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stdout == b""
    assert b"<stdin>:2:" in bad.stderr and b"[syntax]" in bad.stderr


# --- exit status and diagnostics ----------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["compile", "--no-such-option", "app.seg"],
    ["compile", "--target", "no-such-target", "app.seg"],
    ["compile", "--calico-version", "three", "app.seg"],
    ["compile"],
    ["check"],
    ["no-such-command"],
    ["compile", "--diagnostics", "xml", "app.seg"],
])
def test_usage_errors_exit_2(netdsl, app: Path, args: list[str]) -> None:
    result = netdsl(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr


@pytest.mark.parametrize("command", ["compile", "check"])
def test_input_errors_exit_1_on_stderr(netdsl, app: Path, command: str) -> None:
    write(app.parent / "bad.seg", SYNTAX_ERROR)
    result = netdsl(command, "bad.seg")
    assert result.exit_code == 1
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith("bad.seg:2:") and ": error: " in first and first.endswith("[syntax]")
    assert result.stderr.splitlines()[-1] == "Found 1 error in 1 file"


def test_missing_file_exits_1(netdsl, app: Path) -> None:
    result = netdsl("compile", "app.seg", "missing.seg")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "missing.seg: no such file or directory" in result.stderr


def test_all_errors_at_once(netdsl, app: Path) -> None:
    write(app.parent / "a.seg", SYNTAX_ERROR)
    write(app.parent / "b.seg", "namespace x {\n  frobnicate\n}\n")
    result = netdsl("compile", "a.seg", "b.seg")
    assert result.exit_code == 1
    assert "a.seg:2:" in result.stderr and "b.seg:2:" in result.stderr
    assert "in 2 files" in result.stderr


def test_json_diagnostics(netdsl, app: Path) -> None:
    write(app.parent / "bad.seg", SYNTAX_ERROR)
    result = netdsl("compile", "--diagnostics", "json", "bad.seg")
    assert result.exit_code == 1
    assert result.stdout == ""
    diags = json.loads(result.stderr)
    assert len(diags) == 1
    d = diags[0]
    assert (d["code"], d["severity"], d["file"], d["line"]) == ("syntax", "error", "bad.seg", 2)
    assert set(d) == {"code", "severity", "message", "file", "line", "column", "end_line", "end_column",
                      "hint"}


def test_json_diagnostics_when_clean(netdsl, app: Path) -> None:
    result = netdsl("compile", "--diagnostics", "json", "app.seg")
    assert result.exit_code == 0
    assert json.loads(result.stderr) == []
    assert len(list(yaml.safe_load_all(result.stdout))) == len(APP_FILES)


def test_check_prints_warnings_and_exits_0(netdsl, app: Path) -> None:
    write(app.parent / "warn.seg", WARNING_ONLY)
    result = netdsl("check", "warn.seg")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.startswith("warn.seg:3:3: warning: ")
    assert "[egress-without-dns]" in result.stderr
    as_json = netdsl("check", "--diagnostics", "json", "warn.seg")
    assert as_json.exit_code == 0
    assert [d["code"] for d in json.loads(as_json.stderr)] == ["egress-without-dns"]
    clean = netdsl("check", "app.seg")
    assert (clean.exit_code, clean.stdout, clean.stderr) == (0, "", "")


def test_compile_with_warnings_still_emits(netdsl, app: Path) -> None:
    write(app.parent / "warn.seg", WARNING_ONLY)
    result = netdsl("compile", "warn.seg")
    assert result.exit_code == 0
    assert "[egress-without-dns]" in result.stderr
    assert list(yaml.safe_load_all(result.stdout))


# --- determinism --------------------------------------------------------------------------------------


def test_same_input_same_bytes(netdsl, app: Path) -> None:
    first = netdsl("compile", "app.seg")
    second = netdsl("compile", "app.seg")
    assert first.exit_code == 0
    assert first.stdout_bytes == second.stdout_bytes


def test_directory_equals_sorted_file_list(netdsl, app: Path) -> None:
    # `a/b.seg` and `a-b.seg`: path-wise and string-wise sorting disagree ('-' < '/'); output must not care
    root = app.parent / "policies"
    write(root / "a-b.seg", "namespace p {\n  service web = app=web\n  isolate ingress\n}\n")
    write(root / "a" / "b.seg", "namespace p {\n  service api = app=api\n  api accepts web on 80\n"
                                "  web connects to api on 81\n  allow dns for web\n}\n")
    write(root / "z" / "y" / "x.seg", "namespace q {\n  service db = app=db\n  db accepts p/web on 5432\n}\n")
    write(root / "notes.txt", "not a program")
    files = sorted(p.relative_to(app.parent).as_posix() for p in root.rglob("*.seg"))
    by_dir = netdsl("compile", "policies")
    listed = netdsl("compile", *files)
    reversed_ = netdsl("compile", *reversed(files))
    assert by_dir.exit_code == 0, by_dir.stderr
    assert by_dir.stdout_bytes == listed.stdout_bytes == reversed_.stdout_bytes
    assert by_dir.stderr_bytes == listed.stderr_bytes


# --- -o DIR -------------------------------------------------------------------------------------------


def test_output_directory(netdsl, app: Path) -> None:
    out = app.parent / "deploy"
    result = netdsl("compile", "app.seg", "-o", "deploy")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == APP_FILES | {"kustomization.yaml", ".netdsl.manifest"}
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(APP_FILES)
    assert len(kustomization["resources"]) == len(APP_FILES)
    # the files hold exactly the documents of the stream
    stream = netdsl("compile", "app.seg").stdout
    in_files = [yaml.safe_load((out / r).read_text(encoding="utf-8")) for r in kustomization["resources"]]
    assert in_files == list(yaml.safe_load_all(stream))
    for rel in APP_FILES | {"kustomization.yaml"}:
        assert (out / rel).read_text(encoding="utf-8").startswith("# Generated by netdsl.")
    assert no_temp_files(out)


def test_unchanged_files_keep_their_mtime(netdsl, app: Path) -> None:
    out = app.parent / "deploy"
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    old = 1_000_000_000
    for p in out.rglob("*"):
        os.utime(p, (old, old))
    before = snapshot(out)
    result = netdsl("compile", "app.seg", "-o", "deploy")
    assert result.exit_code == 0
    assert result.stderr == "netdsl: 0 written, 5 unchanged, 0 removed in deploy\n"
    assert snapshot(out) == before
    assert all(p.stat().st_mtime == old for p in out.rglob("*") if p.is_file())
    assert no_temp_files(out)


def test_only_changed_files_are_rewritten(netdsl, app: Path) -> None:
    out = app.parent / "deploy"
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    old = 1_000_000_000
    for p in out.rglob("*"):
        os.utime(p, (old, old))
    app.write_text(APP.replace("on 8080", "on 8081"), encoding="utf-8")
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    changed = {p.relative_to(out).as_posix() for p in out.rglob("*.yaml") if p.stat().st_mtime != old}
    assert changed == {"production/networkpolicy-backend.yaml", "production/networkpolicy-frontend.yaml"}


@pytest.mark.parametrize("exists", [True, False])
def test_failed_compile_writes_nothing(netdsl, app: Path, exists: bool) -> None:
    out = app.parent / "deploy"
    if exists:
        assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
        write(out / "README.md", "hand-written\n")
    before = snapshot(app.parent)
    app.write_text(SYNTAX_ERROR, encoding="utf-8")
    before["app.seg"] = app.read_bytes()
    result = netdsl("compile", "app.seg", "-o", "deploy")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "[syntax]" in result.stderr
    assert snapshot(app.parent) == before
    assert out.exists() == exists


def test_foreign_files_are_never_touched(netdsl, app: Path) -> None:
    out = app.parent / "deploy"
    foreign = {
        "README.md": "hand-written\n",
        "production/extra.yaml": "apiVersion: v1\nkind: ConfigMap\n",
        "staging/networkpolicy-old.yaml": "# written by hand\nkind: NetworkPolicy\n",
        "other/x.yaml": "# Generated by someone else.\n",
    }
    for rel, text in foreign.items():
        write(out / rel, text)
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0  # a second run too
    app.write_text(SMALLER, encoding="utf-8")  # stale removal must spare them as well
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    for rel, text in foreign.items():
        assert (out / rel).read_text(encoding="utf-8") == text


@pytest.mark.parametrize("collision", [
    "staging/networkpolicy-web.yaml",  # sorts last: the files before it are already staged
    "production/networkpolicy-backend.yaml",
    "kustomization.yaml",
])
def test_foreign_file_collision_fails_and_writes_nothing(netdsl, app: Path, collision: str) -> None:
    out = app.parent / "deploy"
    write(out / collision, "# mine, not netdsl's\n")
    before = snapshot(app.parent)
    result = netdsl("compile", "app.seg", "-o", "deploy")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert collision in result.stderr and "[output]" in result.stderr
    assert files_only(snapshot(app.parent)) == files_only(before)
    assert no_temp_files(out)


def test_foreign_file_collision_creates_no_directories(netdsl, app: Path) -> None:
    out = app.parent / "deploy"
    write(out / "staging/networkpolicy-web.yaml", "# mine, not netdsl's\n")
    before = snapshot(app.parent)
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 1
    assert snapshot(app.parent) == before  # no deploy/production/


def test_foreign_file_collision_after_a_good_compile(netdsl, app: Path) -> None:
    out = app.parent / "deploy"
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    (out / "staging/networkpolicy-web.yaml").write_text("# taken over by hand\n", encoding="utf-8")
    app.write_text(APP.replace("on 8080", "on 8081"), encoding="utf-8")
    before = snapshot(app.parent)
    result = netdsl("compile", "app.seg", "-o", "deploy")
    assert result.exit_code == 1
    assert snapshot(app.parent) == before
    assert no_temp_files(out)


def test_files_no_longer_produced_are_removed(netdsl, app: Path) -> None:
    out = app.parent / "deploy"
    assert netdsl("compile", "app.seg", "-o", "deploy").exit_code == 0
    app.write_text(SMALLER, encoding="utf-8")
    result = netdsl("compile", "app.seg", "-o", "deploy")
    assert result.exit_code == 0, result.stderr
    assert not (out / "staging/networkpolicy-web.yaml").exists()
    assert "removed" in result.stderr and "staging/networkpolicy-web.yaml" in result.stderr
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == (APP_FILES - {"staging/networkpolicy-web.yaml"}) | {"kustomization.yaml", ".netdsl.manifest"}
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text(encoding="utf-8"))
    assert "staging/networkpolicy-web.yaml" not in kustomization["resources"]
    assert no_temp_files(out)


def test_output_is_not_a_directory(netdsl, app: Path) -> None:
    write(app.parent / "deploy", "a file\n")
    result = netdsl("compile", "app.seg", "-o", "deploy")
    assert result.exit_code == 2  # click rejects it as a usage error
    assert result.stdout == ""
    assert (app.parent / "deploy").read_text(encoding="utf-8") == "a file\n"


# --- import -------------------------------------------------------------------------------------------


def test_import_round_trip_stdout_and_directory(netdsl, app: Path) -> None:
    compiled = netdsl("compile", "app.seg").stdout
    write(Path("policies/all.yaml"), compiled)
    result = netdsl("import", "policies")
    assert result.exit_code == 0, result.stderr
    assert "namespace production {" in result.stdout and "namespace staging {" in result.stdout
    assert netdsl("import", "-", input=compiled).stdout == result.stdout
    out = netdsl("import", "policies", "-o", "imported")
    assert out.exit_code == 0, out.stderr
    assert sorted(p.name for p in Path("imported").iterdir()) == ["production.seg", "staging.seg"]
    again = netdsl("import", "policies", "-o", "imported")
    assert again.exit_code == 1 and "exists; not replacing it  [output]" in again.stderr
    assert netdsl("import", "policies", "-o", "imported", "--force").exit_code == 0
    # what was imported compiles back to the same policies' meaning (import proved it; check reads it)
    assert netdsl("check", "imported").exit_code == 0


def test_import_gap_exit_1_partial_exit_0(netdsl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(Path("p.yaml"), "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n"
                          "spec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - protocol: ICMP\n  - from:\n"
                          "    - podSelector: {matchLabels: {app: a}}\n")
    result = netdsl("import", "p.yaml")
    assert result.exit_code == 1 and result.stdout == ""
    assert "p.yaml:8:7: error: NetworkPolicy default/p spec.ingress[0].ports[0]" in result.stderr
    partial = netdsl("import", "p.yaml", "--partial", "-n", "shop")
    assert partial.exit_code == 0
    assert "warning: NetworkPolicy shop/p spec.ingress[0].ports[0]" in partial.stderr
    assert partial.stdout == "namespace shop {\n  service a = app=a\n  all pods accepts a\n}\n"


def test_import_unsupported_kind_is_a_clear_error(netdsl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(Path("c.yaml"), "apiVersion: example.io/v9\nkind: FancyPolicy\nmetadata: {name: f}\n---\n"
                          "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
    result = netdsl("import", "c.yaml")
    assert result.exit_code == 1
    assert "warning: Deployment default/d is not a network policy: skipped  [import-skipped]" in result.stderr
    assert "no network policy found in the input  [import-object]" in result.stderr
    write(Path("x.yaml"), "apiVersion: cilium.io/v2\nkind: CiliumFuturePolicy\nmetadata: {name: f, namespace: n}\n")
    result = netdsl("import", "x.yaml")
    assert result.exit_code == 1
    assert "importing this kind is not supported yet  [import-unsupported]" in result.stderr
