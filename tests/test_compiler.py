"""netdsl/compiler.py: multi-file programs and read_sources (directories, encodings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from netdsl.compiler import check, compile_paths, read_sources, stream

PART_1 = """\
namespace production {
  isolate
  service web = app=web
}
"""
PART_2 = """\
namespace production {
  service api = app=api
  allow dns for web, api
  api accepts web on 8080
}
"""


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def errors(result) -> list:
    return [d for d in result.diagnostics if d.is_error]


# --- multi-file programs ------------------------------------------------------------------------------


def test_namespace_continued_in_another_file(cwd: Path) -> None:
    write(cwd / "1.seg", PART_1)
    write(cwd / "2.seg", PART_2)
    result = compile_paths(["1.seg", "2.seg"], "vanilla")
    assert result.ok, result.diagnostics
    by_name = {m.name: m.body for m in result.manifests}
    assert set(by_name) == {"default-deny", "api", "web"}
    api = by_name["api"]
    assert api["metadata"]["annotations"]["netdsl.dev/source"] == "2.seg:3,4"
    assert api["spec"]["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"app": "web"}}}]
    # the other half of `api accepts web`, emitted because `isolate` (1.seg) restricts web's egress
    web = by_name["web"]
    assert web["metadata"]["annotations"]["netdsl.dev/source"] == "2.seg:3,4"
    assert {"podSelector": {"matchLabels": {"app": "api"}}} in [
        peer for rule in web["spec"]["egress"] for peer in rule.get("to", [])
    ]
    assert by_name["default-deny"]["metadata"]["annotations"]["netdsl.dev/source"] == "1.seg:2"


def test_file_order_does_not_matter(cwd: Path) -> None:
    write(cwd / "1.seg", PART_1)
    write(cwd / "2.seg", PART_2)
    forward = compile_paths(["1.seg", "2.seg"], "vanilla")
    backward = compile_paths(["2.seg", "1.seg"], "vanilla")
    assert stream(forward.manifests) == stream(backward.manifests)


def test_service_used_before_its_file(cwd: Path) -> None:
    write(cwd / "a.seg", "namespace p {\n  api accepts web on 80\n}\n")
    write(cwd / "b.seg", "namespace p {\n  service api = app=api\n  service web = app=web\n}\n")
    result = compile_paths(["a.seg", "b.seg"], "vanilla")
    assert result.ok, result.diagnostics


def test_duplicate_service_across_files(cwd: Path) -> None:
    write(cwd / "1.seg", PART_1)
    write(cwd / "2.seg", "namespace production {\n  service web = app=other\n}\n")
    result = check(["1.seg", "2.seg"])
    assert not result.ok
    [dup] = errors(result)
    assert dup.code == "duplicate-name"
    assert dup.span is not None
    assert (dup.span.path, dup.span.line, dup.span.column) == ("2.seg", 2, 11)
    assert "web" in dup.message
    assert dup.hint is not None and "1.seg:3:11" in dup.hint


def test_duplicate_in_same_namespace_name_other_namespace_is_fine(cwd: Path) -> None:
    write(cwd / "1.seg", PART_1)
    write(cwd / "2.seg", "namespace staging {\n  service web = app=web\n}\n")
    assert check(["1.seg", "2.seg"]).ok


def test_same_file_twice_is_read_once(cwd: Path) -> None:
    write(cwd / "1.seg", PART_1 + PART_2)
    files, diags = read_sources(["1.seg", ".", "./1.seg"])
    assert not diags
    assert [f.path for f in files] == ["1.seg"]
    assert check(["1.seg", "1.seg"]).ok


# --- read_sources: directories ------------------------------------------------------------------------


def test_directories_recursive_and_sorted(cwd: Path) -> None:
    for rel in ["c.seg", "b.seg", "a/z.seg", "a/c/d.seg", "m/n/o/p.seg"]:
        write(cwd / "src" / rel, "# " + rel + "\n")
    write(cwd / "src" / "notes.txt", "not a program\n")
    write(cwd / "src" / "a" / "x.seg.bak", "# backup\n")
    (cwd / "src" / "dir.seg").mkdir()  # a directory named like a file: skipped
    files, diags = read_sources(["src"])
    assert not diags
    assert [f.path for f in files] == [
        "src/a/c/d.seg", "src/a/z.seg", "src/b.seg", "src/c.seg", "src/m/n/o/p.seg",
    ]
    assert files[0].text == "# a/c/d.seg\n"


def test_files_keep_the_order_given_and_directories_expand_in_place(cwd: Path) -> None:
    write(cwd / "z.seg", "")
    write(cwd / "d" / "b.seg", "")
    write(cwd / "d" / "a.seg", "")
    files, diags = read_sources(["z.seg", "d"])
    assert not diags
    assert [f.path for f in files] == ["z.seg", "d/a.seg", "d/b.seg"]


def test_absolute_paths_below_cwd_are_shown_relative(cwd: Path) -> None:
    write(cwd / "d" / "a.seg", "")
    files, _ = read_sources([str(cwd / "d")])
    assert [f.path for f in files] == ["d/a.seg"]


def test_empty_directory_and_missing_path_are_errors(cwd: Path) -> None:
    (cwd / "empty").mkdir()
    write(cwd / "empty" / "readme.txt", "")
    files, diags = read_sources(["empty", "missing.seg"])
    assert files == []
    assert [d.code for d in diags] == ["io-error", "io-error"]
    assert "empty: no .seg files" in diags[0].message
    assert "missing.seg: no such file or directory" in diags[1].message


def test_stdin_source() -> None:
    files, diags = read_sources(["-", "-"], stdin=b"# hi\n")
    assert not diags
    assert [(f.path, f.text) for f in files] == [("<stdin>", "# hi\n")]


# --- read_sources: encodings --------------------------------------------------------------------------


def test_utf8_bom_is_accepted(cwd: Path) -> None:
    write(cwd / "plain.seg", PART_1 + PART_2)
    write(cwd / "bom.seg", b"\xef\xbb\xbf" + (PART_1 + PART_2).encode())
    files, diags = read_sources(["bom.seg"])
    assert not diags
    assert files[0].text == PART_1 + PART_2
    plain = compile_paths(["plain.seg"], "vanilla")
    bom = compile_paths(["bom.seg"], "vanilla")
    assert bom.ok, bom.diagnostics
    assert stream(bom.manifests) == stream(plain.manifests).replace("plain.seg", "bom.seg")


def test_bom_file_columns_are_unchanged(cwd: Path) -> None:
    write(cwd / "bom.seg", b"\xef\xbb\xbfnamespace p {\n  isolate\n")
    [diag] = errors(check(["bom.seg"]))
    write(cwd / "plain.seg", b"namespace p {\n  isolate\n")
    [plain] = errors(check(["plain.seg"]))
    assert diag.span is not None and plain.span is not None
    assert (diag.span.line, diag.span.column) == (plain.span.line, plain.span.column)


@pytest.mark.parametrize(("data", "line", "column", "byte"), [
    (b"\xff", 1, 1, 0xFF),
    (b"# ok\n\xfe\n", 2, 1, 0xFE),
    (b"namespace a {\n  # caf\xe9\n}\n", 2, 8, 0xE9),  # Latin-1
    (b"namespace a {\n}\n# \xc3\n", 3, 3, 0xC3),  # truncated sequence
    (b"# a\n# b\n# c\n#\xed\xa0\x80\n", 4, 2, 0xED),  # encoded surrogate
])
def test_invalid_utf8_reported_with_line_and_column(cwd: Path, data: bytes, line: int, column: int,
                                                   byte: int) -> None:
    write(cwd / "bad.seg", data)
    files, diags = read_sources(["bad.seg"])
    assert files == []
    [d] = diags
    assert d.code == "encoding" and d.is_error
    assert d.span is not None
    assert (d.span.path, d.span.line, d.span.column) == ("bad.seg", line, column)
    assert f"0x{byte:02x}" in d.message


def test_invalid_utf8_via_cli(cwd: Path, netdsl) -> None:
    write(cwd / "good.seg", PART_1)
    write(cwd / "bad.seg", b"namespace a {\n  # caf\xe9\n}\n")
    result = netdsl("compile", "good.seg", "bad.seg")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("bad.seg:2:8: error: not valid UTF-8")
    assert "[encoding]" in result.stderr


def test_invalid_utf8_after_bom(cwd: Path) -> None:
    write(cwd / "bad.seg", b"\xef\xbb\xbfa\n\xff\n")
    [d] = read_sources(["bad.seg"])[1]
    assert d.span is not None
    assert (d.span.line, d.span.column) == (2, 1)
    assert "0xff" in d.message


def test_invalid_utf8_column_counts_characters(cwd: Path) -> None:
    write(cwd / "bad.seg", b"# \xc3\xa9\xff\n")
    [d] = read_sources(["bad.seg"])[1]
    assert d.span is not None
    assert (d.span.line, d.span.column) == (1, 4)


def test_nul_bytes_are_an_encoding_error(cwd: Path) -> None:
    write(cwd / "bin.seg", b"namespace a {\x00}\n")
    result = check(["bin.seg"])
    assert [d.code for d in errors(result)] == ["encoding"]


def test_one_bad_file_does_not_hide_the_others(cwd: Path) -> None:
    write(cwd / "bad.seg", b"\xff")
    write(cwd / "syntax.seg", "namespace p {\n")
    result = check(["bad.seg", "syntax.seg"])
    assert sorted(d.code for d in errors(result)) == ["encoding", "syntax"]


def test_compiled_stream_parses(cwd: Path) -> None:
    write(cwd / "1.seg", PART_1)
    write(cwd / "2.seg", PART_2)
    result = compile_paths(["."], "vanilla")
    assert result.ok, result.diagnostics
    assert list(yaml.safe_load_all(stream(result.manifests))) == [m.body for m in result.manifests]
