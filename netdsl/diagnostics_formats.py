"""Diagnostics for CI: GitHub workflow commands and SARIF 2.1.0 (next to render_text/render_json).

The rule: each format follows its host's documented contract, and carries the same diagnostics as
the text form - code, severity, message, position, hint - nothing dropped, nothing invented.

* GitHub (`--diagnostics github`): one workflow command per diagnostic,
  `::error file=F,line=L,col=C,endLine=L2,endColumn=C2,title=[code]::message`, escaped as
  @actions/core's command.ts does: data (the message) `%` `\\r` `\\n` -> `%25` `%0D` `%0A`; properties
  also `:` `,` -> `%3A` `%2C`. Severity error/warning/note -> ::error/::warning/::notice.
* SARIF (`--diagnostics sarif`): one run whose driver lists every code of CODES as a rule (ruleId =
  the code), with the description and the "How to fix" text of docs/diagnostics.md (shipped inside
  the package as netdsl.docs). Columns are counted in UTF-16 code units, SARIF's default columnKind:
  netdsl counts code points, so a column after a character outside the BMP moves by one per such
  character; netdsl's end column is exclusive, as SARIF's endColumn is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import metadata, resources
from typing import Any
from urllib.parse import quote

from netdsl import __version__
from netdsl.diagnostics import CODES, Diagnostic, Severity
from netdsl.source import SourceFile

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"

# ------------------------------------------------------------------------------------------ GitHub

_GITHUB_COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "notice"}


def escape_data(text: str) -> str:
    """@actions/core escapeData: the message after `::`."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """@actions/core escapeProperty: a `key=value` property (`:` and `,` would end it)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(diagnostics: Iterable[Diagnostic]) -> str:
    """GitHub workflow commands, one line each (the runner reads them from stdout and stderr)."""
    out = []
    for d in diagnostics:
        props: list[tuple[str, str]] = []
        if d.span is not None:
            s = d.span
            props += [("file", s.path), ("line", str(s.line)), ("col", str(s.column)),
                      ("endLine", str(s.end_line)), ("endColumn", str(s.end_column))]
        props.append(("title", f"[{d.code}]"))
        message = d.message + (f"\nhint: {d.hint}" if d.hint else "")
        head = ",".join(f"{key}={escape_property(value)}" for key, value in props)
        out.append(f"::{_GITHUB_COMMAND[d.severity]} {head}::{escape_data(message)}\n")
    return "".join(out)


# ------------------------------------------------------------------------------------------ SARIF

_CODE_SPAN = re.compile(r"^(`+)\s?(.*?)\s?\1$")


@lru_cache(maxsize=1)
def documented_codes() -> dict[str, dict[str, str]]:
    """The rows of docs/diagnostics.md's codes table by code: {severity, meaning, example, message, fix}.
    Every cell is one line of Markdown without `|` (tests/test_diagnostics.py keeps it so)."""
    try:
        text = resources.files("netdsl.docs").joinpath("diagnostics.md").read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):  # an install without the docs: the one-line descriptions only
        return {}
    rows: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        code = _CODE_SPAN.match(cells[0])
        if code is None or len(cells) != 6:
            continue
        rows[code.group(2)] = dict(zip(("severity", "meaning", "example", "message", "fix"), cells[1:],
                                       strict=True))
    return rows


def _information_uri() -> str | None:
    """The project's page from the installed metadata ([project.urls]), if it names one: netdsl does not
    invent an address (SARIF wants an absolute URI, and the property is optional)."""
    try:
        meta = metadata.metadata("netdsl")
    except metadata.PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or []:
        url = str(entry).partition(",")[2].strip()
        if url.startswith("https://"):
            return url
    return None


def sarif_rules() -> list[dict[str, Any]]:
    docs = documented_codes()
    rules = []
    for code in sorted(CODES):
        row = docs.get(code, {})
        rule: dict[str, Any] = {"id": code, "name": code, "shortDescription": {"text": CODES[code]}}
        if row.get("meaning"):
            rule["fullDescription"] = {"text": row["meaning"], "markdown": row["meaning"]}
        if row.get("fix"):
            rule["help"] = {"text": row["fix"], "markdown": row["fix"]}
        if row.get("severity") in ("error", "warning"):
            rule["defaultConfiguration"] = {"level": row["severity"]}
        rules.append(rule)
    return rules


def utf16_column(line: str, column: int) -> int:
    """netdsl's 1-based code-point column on `line` as a 1-based UTF-16 code-unit column (past the end of
    the line, the columns beyond it count one unit each)."""
    before = line[: column - 1]
    return len(before.encode("utf-16-le")) // 2 + (column - 1 - len(before)) + 1


def artifact_uri(path: str) -> str:
    """A relative path stays a relative URI reference (resolved against the repository root by code
    scanning); an absolute one becomes a file: URI."""
    uri = quote(path, safe="/")
    return "file://" + uri if path.startswith("/") else uri


def _result(d: Diagnostic, sources: Mapping[str, SourceFile]) -> dict[str, Any]:
    text = d.message + (f"\nhint: {d.hint}" if d.hint else "")
    result: dict[str, Any] = {"ruleId": d.code, "level": d.severity.value, "message": {"text": text}}
    if d.hint:
        result["properties"] = {"hint": d.hint}
    s = d.span
    if s is not None:
        source = sources.get(s.path)
        start, end = s.column, s.end_column
        if source is not None:
            start = utf16_column(source.line(s.line), s.column)
            end = utf16_column(source.line(s.end_line), s.end_column)
        region = {"startLine": s.line, "startColumn": start, "endLine": s.end_line,
                  "endColumn": max(end, start) if s.end_line == s.line else end}
        result["locations"] = [{"physicalLocation": {
            "artifactLocation": {"uri": artifact_uri(s.path)}, "region": region}}]
    return result


def render_sarif(diagnostics: Iterable[Diagnostic], sources: Mapping[str, SourceFile]) -> str:
    """One SARIF 2.1.0 log with one run: every rule netdsl has, the diagnostics as results."""
    driver: dict[str, Any] = {"name": "netdsl", "version": __version__, "semanticVersion": __version__,
                              "rules": sarif_rules()}
    uri = _information_uri()
    if uri:
        driver["informationUri"] = uri
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": driver},
            "columnKind": "utf16CodeUnits",
            "results": [_result(d, sources) for d in diagnostics],
        }],
    }
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"
