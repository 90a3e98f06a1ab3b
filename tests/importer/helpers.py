"""Shared by the importer tests: compile `.seg` to a target's YAML stream, import YAML text."""

from __future__ import annotations

from netdsl.compiler import check_files, compile_checked, stream
from netdsl.importer import ImportResult, import_manifests
from netdsl.source import SourceFile


def compiled(text: str, target: str = "vanilla") -> str:
    result = compile_checked(check_files([SourceFile("t.seg", text)]), target)
    assert result.ok, [d.message for d in result.diagnostics if d.is_error]
    return stream(result.manifests)


def imported(yaml_text: str, **kwargs: object) -> ImportResult:
    return import_manifests(["-"], stdin=yaml_text.encode(), **kwargs)  # type: ignore[arg-type]


def errors(result: ImportResult) -> list[str]:
    return [f"{d.code}: {d.message}" for d in result.diagnostics if d.is_error]
