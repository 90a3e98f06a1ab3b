"""The program an open file belongs to, analysed once per version of its text, for the language server.

Rule: a file's program is every `*.seg` file directly in its directory (as `netdsl check DIR` reads a
directory, without the subdirectories: an editor's folder is the unit people open) plus the file
itself, each with the text of its open editor buffer when it has one (unsaved changes count) and
else its text on disk. A snapshot holds the `check` result with the semantic lints (what `netdsl check`
reports), the syntax trees and the name index; the last good syntax tree of a file is kept while it has
syntax errors, so names, symbols and completion keep working as one types. Paths are absolute.
No pygls here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from netdsl import parse
from netdsl.backends import Manifest, Options
from netdsl.compiler import MAX_FILE_BYTES, MAX_FILES, Result, check_files, compile_checked, decode, read_limited
from netdsl.diagnostics import Diagnostic, error
from netdsl.lsp.meaning import Engine
from netdsl.lsp.symbols import Index, build_index
from netdsl.semantics.lints import semantic_lints
from netdsl.semantics.universe import TooLargeError
from netdsl.source import SourceFile


def program_files(path: str, buffers: Mapping[str, str]) -> tuple[list[SourceFile], list[Diagnostic]]:
    """The sources of the program `path` belongs to (see the module's rule), sorted by path."""
    directory = os.path.dirname(path)
    texts: dict[str, str] = {}
    problems: list[Diagnostic] = []
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".seg"))[:MAX_FILES]
    except OSError:
        names = []
    for name in names:
        p = os.path.join(directory, name)
        if p in buffers or not os.path.isfile(p):
            continue
        try:
            with open(p, "rb") as f:
                source, problem = decode(p, read_limited(f, p, MAX_FILE_BYTES))
        except Exception as exc:  # unreadable, too large: the file is left out, and said so
            problems.append(error("io-error", f"{p}: {exc}"))
            continue
        if problem is not None:
            problems.append(problem)
        if source is not None:
            texts[p] = source.text
    for p, text in buffers.items():
        if os.path.dirname(p) == directory:
            texts[p] = text
    texts.setdefault(path, "")
    return [SourceFile(p, texts[p]) for p in sorted(texts)], problems


@dataclass
class Snapshot:
    sources: dict[str, SourceFile]
    modules: dict[str, parse.Module]  # the files that parse (or their last good tree)
    result: Result
    index: Index
    diagnostics: list[Diagnostic]
    _engine: Engine | str | None = None  # str: why there is none
    _emitted: dict[str, list[Manifest] | str] = field(default_factory=dict)

    def by_file(self) -> dict[str, list[Diagnostic]]:
        """Each file's diagnostics ([] for a file without any, so a fixed error is cleared); a
        diagnostic without a span goes to every file."""
        out: dict[str, list[Diagnostic]] = {p: [] for p in self.sources}
        for d in self.diagnostics:
            if d.span is None:
                for items in out.values():
                    items.append(d)
            elif d.span.path in out:
                out[d.span.path].append(d)
        return out

    def engine(self) -> Engine | str:
        if self._engine is None:
            if self.result.program is None or not self.result.ok:
                self._engine = "the program has errors"
            else:
                try:
                    self._engine = Engine(self.result.program)
                except TooLargeError as exc:
                    self._engine = f"the program is too large to evaluate ({exc})"
        return self._engine

    def emitted(self, target: str) -> list[Manifest] | str:
        """The target's objects (not proven again: `check` and `compile` do that), or why there are none."""
        got = self._emitted.get(target)
        if got is None:
            if self.result.program is None:
                got = "the program has errors"
            else:
                base = replace(self.result, diagnostics=[d for d in self.result.diagnostics if d.code != "expectation"],
                               manifests=[])
                compiled = compile_checked(base, target, Options(), validate=False)
                first = next((d for d in compiled.diagnostics if d.is_error), None)
                got = compiled.manifests if compiled.ok else (first.message if first else "it cannot be compiled")
            self._emitted[target] = got
        return got


class Programs:
    """The latest snapshot per program, rebuilt only when a file's text changed."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[tuple[tuple[str, str], ...], Snapshot]] = {}
        self._good: dict[str, tuple[str, parse.Module]] = {}  # path -> (text, tree) of its last good parse

    def snapshot(self, path: str, buffers: Mapping[str, str]) -> Snapshot:
        files, problems = program_files(path, buffers)
        key = tuple((f.path, f.text) for f in files)
        directory = os.path.dirname(path)
        cached = self._last.get(directory)
        if cached is not None and cached[0] == key and not problems:
            return cached[1]
        snap = analyse(files, problems, self._good)
        self._last[directory] = (key, snap)
        return snap


def analyse(files: list[SourceFile], problems: list[Diagnostic] | None = None,
            good: dict[str, tuple[str, parse.Module]] | None = None) -> Snapshot:
    """`netdsl check` of the files; a file whose text is unchanged since its last good parse is not
    parsed again (parsing is most of a large program's check)."""
    good = {} if good is None else good
    modules: dict[str, parse.Module] = {}

    def parse_file(f: SourceFile) -> tuple[parse.Module | None, list[Diagnostic]]:
        old = good.get(f.path)
        if old is not None and old[0] == f.text:
            modules[f.path] = old[1]
            return old[1], []
        module, errors = parse.parse(f)
        if module is not None:
            good[f.path] = (f.text, module)
            modules[f.path] = module
        elif old is not None:
            modules[f.path] = old[1]  # names and outline from the last good tree while it does not parse
        return module, errors

    result = check_files(files, problems or [], parse_file)
    diagnostics = list(result.diagnostics)
    if result.program is not None and result.ok:
        diagnostics.extend(semantic_lints(result.program))  # (it skips what is too large to evaluate)
    for f in files:  # a file check_files did not parse (a NUL byte): its last good tree
        if f.path not in modules and f.path in good:
            modules[f.path] = good[f.path][1]
    index = build_index([modules[p] for p in sorted(modules)])
    return Snapshot({f.path: f for f in files}, modules, result, index, diagnostics)


def absolute(path: str) -> str:
    return str(Path(path).absolute())
