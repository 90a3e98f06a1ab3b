"""The pipeline, start to end: read sources -> parse -> lower -> check the target -> build -> render ->
read back. Nothing here writes files; netdsl/output.py does that once everything has succeeded.

Reading is bounded (MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES): an endless input (/dev/zero, a FIFO)
is an error, never unbounded memory. A file is identified by its real path (bytes), and shown by a
name that escapes what a terminal would interpret, so no two files share a shown name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdsl import ir
from netdsl.backends import Manifest, Options, apply_name_prefix, backend_names, get_backend, render_and_check
from netdsl.diagnostics import Diagnostic, error, escape_name
from netdsl.lower import lower
from netdsl.parse import Module, parse
from netdsl.semantics.expect import check_expectations
from netdsl.semantics.lints import semantic_lints
from netdsl.semantics.universe import TooLargeError, too_large
from netdsl.semantics.verify import prove
from netdsl.source import SourceFile, Span
from netdsl.widen import widen

STDIN = "-"

# Limits on what is read (documented in README.md, "Limits"): each file, the number of files, all of it.
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_FILES = 10_000
MAX_TOTAL_BYTES = 64 * 1024 * 1024


class LimitError(Exception):
    """More than a limit allows; the message says which limit."""


@dataclass
class Result:
    sources: dict[str, SourceFile] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    program: ir.Program | None = None
    manifests: list[Manifest] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def display_path(path: Path) -> str:
    """Paths in messages and annotations: relative to the working directory when below it, so the same
    checkout compiles to the same bytes wherever it lives. Bytes that are not UTF-8, control characters
    and backslashes are escaped (escape_name), so the name is safe on a terminal and names no other file."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        rel = ".."
    shown = Path(rel).as_posix() if not rel.startswith("..") else path.as_posix()
    return escape_name(shown)


def read_limited(stream: object, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """At most `limit` bytes of a binary stream (a file, a pipe, standard input); LimitError beyond."""
    read = getattr(stream, "read")  # noqa: B009 - any object with read(n), typed loosely for sys.stdin
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = read(min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise LimitError(f"{what}: larger than {_mib(limit)}, the limit for one file")
    return b"".join(chunks)


def _mib(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB"


def _files_below(directory: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """The regular files below a directory whose names end in one of `suffixes`. Symbolic links to
    directories are followed once each (a link to a parent is no endless loop); errors below the top are
    skipped, as rglob did."""
    visited: set[str] = set()
    for root, dirs, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:
            dirs.clear()
            continue
        visited.add(real)
        dirs.sort()
        for name in names:
            if name.endswith(suffixes) and (p := Path(root) / name).is_file():
                yield p


def decode(shown: str, data: bytes) -> tuple[SourceFile | None, Diagnostic | None]:
    """UTF-8 (a leading BOM is allowed) or an `encoding` error at the offending character."""
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return SourceFile(shown, body.decode("utf-8")), None
    except UnicodeDecodeError as exc:
        before = body[: exc.start]
        line = before.count(b"\n") + 1
        line_start = before.rfind(b"\n") + 1
        col = len(before[line_start:].decode("utf-8", errors="replace")) + 1
        span = Span(shown, line, col, line, col + 1)
        return None, error("encoding", f"not valid UTF-8 (byte 0x{body[exc.start]:02x})", span,
                           "save the file as UTF-8")


@dataclass(frozen=True)
class Inputs:
    """What a directory given as input contributes, and how messages name it."""

    suffixes: tuple[str, ...]  # the file names taken below a directory
    files: str  # "more than 10,000 {files}"
    none: str  # "no {none} in this directory"


SEG_INPUTS = Inputs((".seg",), ".seg files", ".seg files")


def read_sources(
    paths: Sequence[str], stdin: bytes | None = None, located: dict[str, Path] | None = None
) -> tuple[list[SourceFile], list[Diagnostic]]:
    """Files as given, directories as every *.seg below them (sorted), `-` as standard input. A file
    named twice (also through another path to it) is read once. `located`, when given, receives the
    path of each file read by its display path (for `fmt`, which writes the files back)."""
    return read_inputs(paths, SEG_INPUTS, stdin, located)


def read_inputs(
    paths: Sequence[str], kind: Inputs, stdin: bytes | None = None, located: dict[str, Path] | None = None
) -> tuple[list[SourceFile], list[Diagnostic]]:
    """read_sources for any kind of input (`netdsl import` reads YAML): the one place that walks the
    paths, applies the limits and says what went wrong."""
    files: list[SourceFile] = []
    diags: list[Diagnostic] = []
    seen: set[bytes] = set()
    total = 0
    for raw in paths:
        if raw == STDIN:
            if b"<stdin>" in seen:
                continue
            seen.add(b"<stdin>")
            data = stdin or b""
            if len(data) > MAX_FILE_BYTES:
                diags.append(error("limit", f"<stdin>: larger than {_mib(MAX_FILE_BYTES)}, the limit for one file"))
                continue
            found_data: list[tuple[str, bytes]] = [("<stdin>", data)]
        elif not raw:
            diags.append(error("io-error", "an empty path was given"))
            continue
        else:
            path = Path(raw)
            try:  # stat can fail for reasons other than absence (ENAMETOOLONG, EACCES, ELOOP, ...)
                if path.is_dir():
                    found: list[Path] = []
                    for p in _files_below(path, kind.suffixes):
                        if len(found) == MAX_FILES:
                            raise LimitError(f"{display_path(path)}: more than {MAX_FILES:,} {kind.files}")
                        found.append(p)
                    found.sort()
                    if not found:
                        diags.append(
                            error("io-error", f"{display_path(path)}: no {kind.none} in this directory")
                        )
                elif path.exists():
                    found = [path]
                else:
                    diags.append(error("io-error", f"{display_path(path)}: no such file or directory"))
                    continue
            except OSError as exc:
                diags.append(error("io-error", f"{display_path(path)}: {exc.strerror or exc}"))
                continue
            except LimitError as exc:
                diags.append(error("limit", str(exc), hint=f"netdsl reads at most {MAX_FILES:,} files"))
                continue
            found_data = []
            for p in found:
                key = os.fsencode(os.path.realpath(p))
                if key in seen:
                    continue
                seen.add(key)
                try:
                    with open(p, "rb") as f:
                        found_data.append((display_path(p), read_limited(f, display_path(p))))
                    if located is not None:
                        located[display_path(p)] = p
                except OSError as exc:
                    diags.append(error("io-error", f"{display_path(p)}: {exc.strerror or exc}"))
                except LimitError as exc:
                    diags.append(error("limit", str(exc)))
        for shown, data in found_data:
            total += len(data)
            if total > MAX_TOTAL_BYTES:
                diags.append(error("limit", f"the input is larger than {_mib(MAX_TOTAL_BYTES)} in all",
                                   hint="netdsl reads at most that much from all files together"))
                return files, diags
            if len(files) + 1 > MAX_FILES:
                diags.append(error("limit", f"more than {MAX_FILES:,} files"))
                return files, diags
            source, problem = decode(shown, data)
            if problem is not None:
                diags.append(problem)
            if source is not None:
                files.append(source)
    return files, diags


def check(paths: Sequence[str], stdin: bytes | None = None) -> Result:
    """Everything up to the IR: syntax, names, values, lints."""
    files, diags = read_sources(paths, stdin)
    return check_files(files, diags)


def check_files(files: Sequence[SourceFile], diags: Sequence[Diagnostic] = (),
                parse_file: Callable[[SourceFile], tuple[Module | None, list[Diagnostic]]] = parse,
                expectations: bool = True) -> Result:
    """`check` for sources already read (diags: what reading them reported). parse_file: `parse`, or one
    that remembers unchanged files' trees (the language server reparses only the file that changed).
    expectations=False leaves the `expect` statements unchecked (the language server checks them later,
    in the background: they compile every target)."""
    result = Result()
    result.diagnostics.extend(diags)
    result.sources = {f.path: f for f in files}
    modules = []
    for f in files:
        if "\x00" in f.text:
            before = f.text[: f.text.index("\x00")]
            line = before.count("\n") + 1
            col = len(before) - (before.rfind("\n") + 1) + 1
            result.diagnostics.append(error(
                "encoding", "binary data (a NUL byte): this is not a .seg file",
                Span(f.path, line, col, line, col + 1),
            ))
            continue
        module, errors = parse_file(f)
        result.diagnostics.extend(errors)
        if module is not None:
            modules.append(module)
    if not result.ok:
        return result
    program, diags = lower(modules)
    result.diagnostics.extend(diags)
    if result.ok:
        result.program = program
        if program.expectations and expectations:
            result.diagnostics.extend(check_expectations(program, emitted_by_every_target(program)))
    return result


def check_with_lints(paths: Sequence[str], stdin: bytes | None = None) -> Result:
    """`netdsl check`: everything `check` does, and the lints that evaluate the program."""
    result = check(paths, stdin)
    if result.program is not None:
        result.diagnostics.extend(semantic_lints(result.program))
    return result


def emitted_by_every_target(program: ir.Program) -> dict[str, list[dict[str, object]]]:
    """The objects of every target that can express the program (for checking expectations)."""
    out: dict[str, list[dict[str, object]]] = {}
    for name in backend_names():
        backend = get_backend(name)
        if not backend.unsupported(program) and not backend.check_options(program, Options()):
            out[name] = [m.body for m in backend.build(program, Options())]
    return out


def compile_paths(
    paths: Sequence[str], target: str, options: Options | None = None, stdin: bytes | None = None
) -> Result:
    return compile_checked(check(paths, stdin), target, options)


def compile_checked(result: Result, target: str, options: Options | None = None, validate: bool = True) -> Result:
    """The rest of `compile_paths` for the result of `check` (which it extends and returns). validate:
    prove the output equivalent to the program (explain and diff, which judge it themselves, skip it)."""
    if result.program is None:
        return result
    backend = get_backend(target)
    options = options or Options()
    if options.extra.get("widen"):
        result.program, widened = widen(result.program, backend)
        result.diagnostics.extend(widened)
    result.diagnostics.extend(backend.unsupported(result.program))
    result.diagnostics.extend(backend.check_options(result.program, options))
    if not result.ok:
        return result
    manifests = backend.build(result.program, options)
    if options.extra.get("name_prefix"):
        result.diagnostics.extend(apply_name_prefix(backend, manifests, str(options.extra["name_prefix"])))
        if not result.ok:
            return result
    result.diagnostics.extend(render_and_check(backend, manifests))
    if result.ok and validate:
        result.diagnostics.extend(translation_errors(result.program, target, [m.body for m in manifests]))
    if result.ok and validate:
        # expectations hold for the program (checked by `check`) and for what this target emits
        result.diagnostics.extend(
            check_expectations(result.program, {target: [m.body for m in manifests]})
        )
    if result.ok:
        result.manifests = manifests
    return result


def translation_errors(program: ir.Program, target: str, objects: Sequence[Mapping[str, Any]]) -> list[Diagnostic]:
    """Translation validation: the objects allow exactly what the program allows, in every cluster."""
    try:
        proof = prove(program, target, objects)
    except TooLargeError as exc:
        return [too_large(exc, f"cannot prove the {target} output")]
    if proof.holds:
        return []
    first = proof.counterexamples[0]
    more = "".join(f"; also {c.describe(proof.universe.topology, target)}" for c in proof.counterexamples[1:2])
    cells = f"{proof.differing} class{'es' * (proof.differing != 1)} of connections"
    return [error(
        "translation",
        f"the {target} output differs from the program in {cells}, e.g. "
        f"{first.describe(proof.universe.topology, target)}{more}",
        None, "this is a bug in netdsl, not in your program: nothing was written; please report it with the .seg input",
    )]


def stream(manifests: Sequence[Manifest]) -> str:
    """A multi-document YAML stream: what `compile` prints."""
    return "".join("---\n" + m.text for m in manifests)
