"""The program an open file belongs to, analysed once per version of its text, for the language server.

Rule: a file's program is every `*.seg` file directly in its directory (as `netdsl check DIR` reads a
directory, without the subdirectories: an editor's folder is the unit people open) plus the file
itself, each with the text of its open editor buffer when it has one (unsaved changes count) and
else its text on disk. A snapshot holds the result of parsing and lowering (its diagnostics are ready at
once), the syntax trees and the name index; what `netdsl check` adds (failed expectations, the semantic
lints) and the target's objects are computed once per snapshot, later (by the server's background
worker). The last good syntax tree of a file is kept while it has syntax errors, so names, symbols and
completion keep working as one types. Paths are absolute. No pygls here.
"""

from __future__ import annotations

import gc
import itertools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from netdsl import ir, parse
from netdsl.compiler import (
    MAX_FILE_BYTES,
    MAX_FILES,
    Result,
    check_files,
    decode,
    emitted_by_every_target,
    read_limited,
)
from netdsl.diagnostics import Diagnostic, error
from netdsl.lsp.meaning import Objects, build_objects
from netdsl.lsp.symbols import Index, build_index
from netdsl.semantics.expect import check_expectations
from netdsl.semantics.lints import semantic_lints
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


_SERIALS = itertools.count()


@dataclass
class Snapshot:
    """One version of a program. `diagnostics` are the parse and lowering ones (ready at once); the
    expensive ones (failed `expect`s, the semantic lints) and the target's objects are computed later,
    once each (`late_diagnostics`, `objects`: thread-safe, for a background worker)."""

    sources: dict[str, SourceFile]
    modules: dict[str, parse.Module]  # the files that parse (or their last good tree)
    result: Result
    diagnostics: list[Diagnostic]
    serial: int = field(default_factory=lambda: next(_SERIALS))  # later snapshots have larger ones
    late: list[Diagnostic] | None = None  # None: not computed yet
    _objects: dict[str, Objects | str] = field(default_factory=dict)
    _index: Index | None = None
    _index_lock: threading.Lock = field(default_factory=threading.Lock)
    _at_line: dict[tuple[str, int], tuple[list[ir.Rule], list[ir.Isolation]]] | None = None
    _late_lock: threading.Lock = field(default_factory=threading.Lock)
    _objects_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def index(self) -> Index:
        """The names of the program's syntax trees (built on first use: diagnostics do not need it)."""
        with self._index_lock:
            if self._index is None:
                self._index = build_index([self.modules[p] for p in sorted(self.modules)])
            return self._index

    def late_diagnostics(self) -> list[Diagnostic]:
        """What `netdsl check` adds to lowering's diagnostics: failed expectations (every target is
        built for them) and the lints that evaluate the program."""
        with self._late_lock:
            if self.late is None:
                program = self.result.program
                late: list[Diagnostic] = []
                if program is not None:
                    if program.expectations and self.result.ok:
                        late.extend(check_expectations(program, emitted_by_every_target(program)))
                    late.extend(semantic_lints(program))  # (it skips what is too large to evaluate)
                self.late = late
            return self.late

    def by_file(self) -> dict[str, list[Diagnostic]]:
        """Each file's diagnostics, with the late ones once they are ready ([] for a file without any,
        so a fixed error is cleared); a diagnostic without a span goes to every file."""
        out: dict[str, list[Diagnostic]] = {p: [] for p in self.sources}
        for d in [*self.diagnostics, *(self.late or [])]:
            if d.span is None:
                for items in out.values():
                    items.append(d)
            elif d.span.path in out:
                out[d.span.path].append(d)
        return out

    def objects(self, target: str) -> Objects | str:
        """The target's objects (not proven again: `check` and `compile` do that), or why there are none."""
        with self._objects_lock:
            got = self._objects.get(target)
            if got is None:
                if self.result.program is None or not self.result.ok:
                    got = "the program has errors"
                else:
                    got = build_objects(self.result.program, target)
                self._objects[target] = got
            return got

    def ready_objects(self, target: str) -> Objects | str | None:
        """The target's objects if they are built (None: not yet); never waits."""
        return self._objects.get(target)

    def at_line(self, path: str, line: int) -> tuple[list[ir.Rule], list[ir.Isolation]]:
        """The IR rules (explicit and derived) and isolations the statement starting at the line made."""
        if self._at_line is None:
            index: dict[tuple[str, int], tuple[list[ir.Rule], list[ir.Isolation]]] = {}
            program = self.result.program
            if program is not None:
                for r in program.rules:
                    index.setdefault((r.span.path, r.span.line), ([], []))[0].append(r)
                for i in program.isolations:
                    index.setdefault((i.span.path, i.span.line), ([], []))[1].append(i)
            self._at_line = index
        return self._at_line.get((path, line), ([], []))


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
        # Analysing allocates millions of objects that live on (no garbage cycles to speak of): the
        # cyclic collector would walk the whole heap again and again (40% of the time); it runs after.
        collecting = gc.isenabled()
        gc.disable()
        try:
            snap = analyse(files, problems, self._good)
        finally:
            if collecting:
                gc.enable()
        self._last[directory] = (key, snap)
        return snap


def analyse(files: list[SourceFile], problems: list[Diagnostic] | None = None,
            good: dict[str, tuple[str, parse.Module]] | None = None) -> Snapshot:
    """Parse and lower the files (`netdsl check` without expectations and semantic lints: the snapshot
    adds those later); a file whose text is unchanged since its last good parse is not parsed again."""
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

    result = check_files(files, problems or [], parse_file, expectations=False)
    diagnostics = list(result.diagnostics)
    for f in files:  # a file check_files did not parse (a NUL byte): its last good tree
        if f.path not in modules and f.path in good:
            modules[f.path] = good[f.path][1]
    return Snapshot({f.path: f for f in files}, modules, result, diagnostics)


def absolute(path: str) -> str:
    return str(Path(path).absolute())
