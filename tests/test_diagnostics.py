"""docs/diagnostics.md against the CODES table (and its examples against the compiler), and the two
renderings of diagnostics: text with carets, and JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from netdsl.cli import main
from netdsl.diagnostics import CODES, Diagnostic, Severity, error, render_json, render_text, sort_key, warning
from netdsl.source import SourceFile, Span

DOC = Path(__file__).resolve().parent.parent / "docs" / "diagnostics.md"

# ------------------------------------------------------------------------------ the documentation

_CODE_SPAN = re.compile(r"^(`+)\s?(.*?)\s?\1$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def doc_rows() -> list[dict[str, str]]:
    """The rows of the codes table: {code, severity, meaning, example, message, fix}."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        cells = _cells(line)
        assert len(cells) == 6, line
        code = _CODE_SPAN.match(cells[0])
        assert code is not None, line
        rows.append(
            dict(
                zip(
                    ("code", "severity", "meaning", "example", "message", "fix"),
                    [code.group(2), *cells[1:]],
                    strict=True,
                )
            )
        )
    return rows


def code_span(cell: str) -> str | None:
    """The text of a cell that is exactly one code span, else None."""
    m = _CODE_SPAN.match(cell)
    return m.group(2) if m and "`" * len(m.group(1)) not in m.group(2) else None


def test_doc_lists_exactly_the_codes() -> None:
    codes = [r["code"] for r in doc_rows()]
    assert len(codes) == len(set(codes)), "a code is documented twice"
    assert sorted(codes) == sorted(CODES)


def test_doc_rows_are_complete() -> None:
    for row in doc_rows():
        assert row["severity"] in ("error", "warning"), row
        assert row["meaning"] and row["fix"] and row["example"] and row["message"], row
        msg = code_span(row["message"])
        if msg is not None and msg != "none":
            assert msg.endswith(f"  [{row['code']}]"), row


EXAMPLE_ROWS = [r for r in doc_rows() if code_span(r["example"]) is not None]


def test_most_codes_have_a_runnable_example() -> None:
    assert len(EXAMPLE_ROWS) >= 12


@pytest.mark.parametrize("row", EXAMPLE_ROWS, ids=[r["code"] for r in EXAMPLE_ROWS])
def test_doc_example_produces_the_documented_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row: dict[str, str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("t.seg").write_text(code_span(row["example"]) + "\n", encoding="utf-8")  # type: ignore[operator]
    result = CliRunner().invoke(main, ["check", "t.seg"])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = code_span(row["message"])
    assert message in result.stderr.split("\n"), result.stderr
    assert result.exit_code == (1 if row["severity"] == "error" else 0)
    assert f": {row['severity']}: " in message  # type: ignore[operator]


def test_doc_text_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOC.read_text(encoding="utf-8")
    source = re.search(r"```seg\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]
    shown = re.search(r"```text\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]
    monkeypatch.chdir(tmp_path)
    Path("web.seg").write_text(source, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "web.seg"])
    assert result.stderr == shown


def test_doc_io_error_and_output_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {r["code"]: r for r in doc_rows()}
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["check", "nope.seg"])
    assert code_span(rows["io-error"]["message"]) in result.stderr.split("\n")
    Path("t.seg").write_bytes(b"namespace n {\xff}\n")
    result = CliRunner().invoke(main, ["check", "t.seg"])
    assert code_span(rows["encoding"]["message"]) in result.stderr.split("\n")
    Path("t.seg").write_text("namespace n {\n  isolate\n  allow dns\n}\n", encoding="utf-8")
    Path("out").mkdir()
    Path("out/kustomization.yaml").write_text("resources: []\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["compile", "-o", "out", "t.seg"])
    assert result.exit_code == 1
    assert code_span(rows["output"]["message"]) in result.stderr.split("\n")
    assert Path("out/kustomization.yaml").read_text(encoding="utf-8") == "resources: []\n"


def test_undocumented_code_is_refused() -> None:
    with pytest.raises(AssertionError):
        Diagnostic("no-such-code", Severity.ERROR, "x")


# ------------------------------------------------------------------------------ render_text


def src(text: str, path: str = "a.seg") -> dict[str, SourceFile]:
    return {path: SourceFile(path, text)}


def test_render_text_caret_under_the_span() -> None:
    sources = src("namespace n {\n  web accepts api on 80\n}\n")
    d = error("unknown-name", "no service named `api`", Span("a.seg", 2, 15, 2, 18), "did you mean `apx`?")
    assert render_text([d], sources) == (
        "a.seg:2:15: error: no service named `api`  [unknown-name]\n"
        "      web accepts api on 80\n"
        "                  ^~~\n"
        "a.seg:2:15: note: did you mean `apx`?\n"
    )


def test_render_text_caret_at_the_first_column() -> None:
    d = error("syntax", "unexpected `}`", Span("a.seg", 1, 1, 1, 2))
    out = render_text([d], src("}\n"))
    assert out.split("\n")[1:3] == ["    }", "    ^"]


def test_render_text_tabs_count_as_one_column() -> None:
    # Lark counts a tab as one column; the line is shown with each tab as one space so the caret lines up.
    sources = src("namespace n {\n\tweb\taccepts\tapi\n}\n")
    d = error("unknown-name", "no `api`", Span("a.seg", 2, 14, 2, 17))
    _, shown, caret, _ = render_text([d], sources).split("\n")
    assert shown == "     web accepts api"
    assert caret.index("^") == shown.index("api")
    assert caret.strip() == "^~~"


def test_render_text_multi_line_span_gets_a_single_caret() -> None:
    sources = src("namespace n {\n  a accepts b,\n    c\n}\n")
    d = warning("redundant", "statement repeats", Span("a.seg", 2, 3, 3, 6))
    lines = render_text([d], sources).split("\n")
    assert lines[1] == "      a accepts b,"
    assert lines[2] == "      ^"


def test_render_text_span_past_the_end_of_the_line() -> None:
    sources = src("namespace n {\n  service a =\n}\n")
    d = error("syntax", "unexpected end of line", Span("a.seg", 2, 14, 2, 40))
    lines = render_text([d], sources).split("\n")
    assert lines[1] == "      service a ="
    assert lines[2] == "    " + " " * 13 + "^"


def test_render_text_blank_line_shows_no_source() -> None:
    d = error("syntax", "unexpected end of file", Span("a.seg", 2, 1, 2, 2))
    assert (
        render_text([d], src("namespace n {\n\n")) == "a.seg:2:1: error: unexpected end of file  [syntax]\n"
    )


def test_render_text_trailing_whitespace_is_dropped() -> None:
    d = error("syntax", "x", Span("a.seg", 1, 3, 1, 4))
    lines = render_text([d], src("a b   \t\n")).split("\n")
    assert lines[1] == "    a b"


def test_render_text_without_a_span() -> None:
    d = error("io-error", "x.seg: no such file or directory", None, "check the path")
    assert (
        render_text([d], {})
        == "netdsl: error: x.seg: no such file or directory  [io-error]\n  hint: check the path\n"
    )


def test_render_text_unknown_source_shows_no_line() -> None:
    d = error("encoding", "not valid UTF-8 (byte 0xff)", Span("b.seg", 1, 3, 1, 4), "save the file as UTF-8")
    assert render_text([d], src("abc\n")) == (
        "b.seg:1:3: error: not valid UTF-8 (byte 0xff)  [encoding]\nb.seg:1:3: note: save the file as UTF-8\n"
    )


def test_render_text_several_and_none() -> None:
    sources = src("a\nb\n")
    ds = [
        warning("redundant", "one", Span("a.seg", 1, 1, 1, 2)),
        error("conflict", "two", Span("a.seg", 2, 1, 2, 2)),
    ]
    out = render_text(ds, sources)
    assert out.count("\n") == 6
    assert "a.seg:1:1: warning: one  [redundant]" in out and "a.seg:2:1: error: two  [conflict]" in out
    assert render_text([], sources) == ""


def test_render_text_line_outside_the_file() -> None:
    d = error("syntax", "unexpected end of file", Span("a.seg", 9, 1, 9, 2))
    assert render_text([d], src("a\n")) == "a.seg:9:1: error: unexpected end of file  [syntax]\n"


@pytest.mark.parametrize("separator", ["\f", "\u2028", "\x85"], ids=["form-feed", "u2028", "nel"])
def test_render_text_shows_the_right_line_after_unusual_line_breaks(separator: str) -> None:
    text = f"# page one{separator}\nnamespace n {{\n  a accepts b c\n}}\n"
    d = error("syntax", "unexpected `c`", Span("a.seg", 3, 15, 3, 16))
    assert render_text([d], src(text)).split("\n")[1] == "      a accepts b c"


# ------------------------------------------------------------------------------ render_json


def test_render_json_fields() -> None:
    ds = [
        error("invalid-port", "port 0 is out of range", Span("a.seg", 3, 18, 3, 19), "ports are 1-65535"),
        warning("redundant", "twice", Span("a.seg", 4, 1, 5, 1)),
        error("io-error", "nope.seg: no such file or directory"),
    ]
    text = render_json(ds)
    assert text.endswith("\n")
    data = json.loads(text)
    assert data == [
        {
            "code": "invalid-port",
            "severity": "error",
            "message": "port 0 is out of range",
            "file": "a.seg",
            "line": 3,
            "column": 18,
            "end_line": 3,
            "end_column": 19,
            "hint": "ports are 1-65535",
        },
        {
            "code": "redundant",
            "severity": "warning",
            "message": "twice",
            "file": "a.seg",
            "line": 4,
            "column": 1,
            "end_line": 5,
            "end_column": 1,
            "hint": None,
        },
        {
            "code": "io-error",
            "severity": "error",
            "message": "nope.seg: no such file or directory",
            "file": None,
            "line": None,
            "column": None,
            "end_line": None,
            "end_column": None,
            "hint": None,
        },
    ]


def test_render_json_empty_and_unicode() -> None:
    assert json.loads(render_json([])) == []
    d = error("syntax", "unexpected character 'é' \"quoted\" \u2028 \x00", Span("ü.seg", 1, 1, 1, 2))
    text = render_json([d])
    (back,) = json.loads(text)
    assert back["message"] == d.message and back["file"] == "ü.seg"
    assert "ü.seg" in text  # written as UTF-8, not escaped


def test_cli_json_diagnostics_match_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("t.seg").write_text(
        "namespace n {\n  a accepts b c\n  isolate both\n}\nnamespace N\n", encoding="utf-8"
    )
    as_json = CliRunner().invoke(main, ["check", "--diagnostics", "json", "t.seg"])
    as_text = CliRunner().invoke(main, ["check", "t.seg"])
    assert as_json.exit_code == as_text.exit_code == 1
    data = json.loads(as_json.stderr)
    heads = [line for line in as_text.stderr.split("\n") if ": error: " in line]
    assert heads == [
        f"{d['file']}:{d['line']}:{d['column']}: error: {d['message']}  [{d['code']}]" for d in data
    ]


def test_sort_key_orders_by_file_line_column() -> None:
    ds = [
        error("syntax", "c", Span("b.seg", 1, 1, 1, 2)),
        error("syntax", "b", Span("a.seg", 2, 1, 2, 2)),
        error("syntax", "a", Span("a.seg", 1, 5, 1, 6)),
        error("io-error", "z"),
    ]
    assert [d.message for d in sorted(ds, key=sort_key)] == ["z", "a", "b", "c"]
