"""`netdsl fmt`: every .seg file in the canonical layout of netdsl/printer.py.

Rule: formatting never changes meaning. The formatted text must parse to the same syntax tree (spans
aside) with the same comments, or the file is left alone with an `internal` error; a file with syntax errors
is never written; only files whose text changes are written, each atomically (a temporary file in the
same directory, fsynced, given the file's mode, then renamed over it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from netdsl.compiler import read_sources
from netdsl.diagnostics import Diagnostic, error
from netdsl.parse import Module, parse
from netdsl.printer import print_module
from netdsl.source import SourceFile, Span


@dataclass(frozen=True)
class Formatted:
    path: str  # as displayed (`<stdin>` for standard input)
    location: Path | None  # the file to write back (None: standard input)
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        return "".join(difflib.unified_diff(
            self.before.splitlines(keepends=True), self.after.splitlines(keepends=True),
            f"{self.path}", f"{self.path}",
        ))


def shape(node: object) -> object:
    """A syntax tree (or IR) without its spans, source and the fields equality ignores: two trees with
    the same shape mean the same."""
    if isinstance(node, (Span, SourceFile)):
        return None
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__, *(shape(getattr(node, f.name)) for f in dataclasses.fields(node)
                                       if f.compare and f.name != "comments"))
    if isinstance(node, (tuple, list)):
        return tuple(shape(item) for item in node)
    return node


def comment_texts(module: Module) -> Counter[str]:
    return Counter(c.text for c in module.comments)


def format_source(source: SourceFile) -> tuple[str | None, list[Diagnostic]]:
    """The canonical text of one file, or None and the reasons it has none (syntax errors)."""
    if "\x00" in source.text:
        before = source.text[: source.text.index("\x00")]
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        return None, [error("encoding", "binary data (a NUL byte): this is not a .seg file",
                            Span(source.path, line, col, line, col + 1))]
    module, errors = parse(source)
    if module is None:
        return None, errors
    text = print_module(module)
    again, _ = parse(SourceFile(source.path, text))
    if again is None or shape(again.statements) != shape(module.statements) \
            or comment_texts(again) != comment_texts(module):
        return None, [error("internal", f"{source.path}: formatting would change the file's meaning or "
                            "comments; the file is left as it is", None,
                            "this is a bug in netdsl, not in your file: please report it with the file")]
    return text, []


def format_paths(paths: Sequence[str], stdin: bytes | None = None
                 ) -> tuple[list[Formatted], list[Diagnostic], dict[str, SourceFile]]:
    """Every file of PATHS formatted (files with errors left out), the errors, and the sources read."""
    located: dict[str, Path] = {}
    files, diags = read_sources(paths, stdin, located)
    out: list[Formatted] = []
    for source in files:
        text, errors = format_source(source)
        diags.extend(errors)
        if text is not None:
            out.append(Formatted(source.path, located.get(source.path), source.text, text))
    return out, diags, {f.path: f for f in files}


def write_in_place(formatted: Formatted) -> None:
    """Replaces the file with its formatted text atomically, keeping its mode (the file a symbolic
    link points to is the one replaced)."""
    assert formatted.location is not None
    target = Path(os.path.realpath(formatted.location))
    mode = target.stat().st_mode & 0o7777
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".fmt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(formatted.after.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
