"""`netdsl fmt`: in place (atomic, only changed files, mode kept), --check, --diff, stdin, syntax errors."""

from __future__ import annotations

import os
from pathlib import Path

UGLY = "namespace shop {service web=app=web ; web accepts  all pods on 80,443   # why\n}\n"
PRETTY = "namespace shop {\n  service web = app=web\n  web accepts all pods on 80, 443  # why\n}\n"


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    ugly, pretty = tmp_path / "ugly.seg", tmp_path / "sub" / "pretty.seg"
    pretty.parent.mkdir()
    ugly.write_text(UGLY)
    pretty.write_text(PRETTY)
    return ugly, pretty


def test_in_place_rewrites_only_changed_files_keeping_mode_and_mtime(netdsl, tmp_path: Path) -> None:
    ugly, pretty = _tree(tmp_path)
    ugly.chmod(0o640)
    os.utime(pretty, (1_000_000, 1_000_000))
    result = netdsl("fmt", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert ugly.read_text() == PRETTY and pretty.read_text() == PRETTY
    assert ugly.stat().st_mode & 0o777 == 0o640
    assert pretty.stat().st_mtime == 1_000_000  # unchanged file untouched
    assert "ugly.seg" in result.stderr and "pretty.seg" not in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["pretty.seg", "sub", "ugly.seg"]  # no temp files
    assert netdsl("fmt", "--check", str(tmp_path)).exit_code == 0


def test_check_lists_files_that_would_change_and_writes_nothing(netdsl, tmp_path: Path) -> None:
    ugly, pretty = _tree(tmp_path)
    result = netdsl("fmt", "--check", str(ugly), str(pretty))
    assert result.exit_code == 1
    assert [Path(line).name for line in result.stdout.splitlines()] == ["ugly.seg"]
    assert ugly.read_text() == UGLY


def test_diff_prints_a_unified_diff_and_writes_nothing(netdsl, tmp_path: Path) -> None:
    ugly, pretty = _tree(tmp_path)
    result = netdsl("fmt", "--diff", str(tmp_path))
    assert result.exit_code == 1
    assert "-namespace shop {service web=app=web" in result.stdout
    assert "+  web accepts all pods on 80, 443  # why" in result.stdout
    assert "pretty.seg" not in result.stdout
    assert ugly.read_text() == UGLY
    assert netdsl("fmt", "--diff", str(pretty)).exit_code == 0


def test_stdin_to_stdout(netdsl) -> None:
    result = netdsl("fmt", "-", input=UGLY)
    assert result.exit_code == 0 and result.stdout == PRETTY
    assert netdsl("fmt", "--check", "-", input=UGLY).exit_code == 1
    assert netdsl("fmt", "--check", "-", input=PRETTY).exit_code == 0


def test_syntax_error_reports_and_writes_nothing(netdsl, tmp_path: Path) -> None:
    ugly, _ = _tree(tmp_path)
    bad = tmp_path / "bad.seg"
    bad.write_text("namespace n {\n a accepts\n}\n")
    result = netdsl("fmt", str(tmp_path))
    assert result.exit_code == 1
    assert "bad.seg:2:11: error: unexpected end of line" in result.stderr
    assert ugly.read_text() == UGLY and bad.read_text() == "namespace n {\n a accepts\n}\n"


def test_examples_are_formatted(netdsl, repo: Path) -> None:
    result = netdsl("fmt", "--check", str(repo / "examples"))
    assert result.exit_code == 0, result.stdout
