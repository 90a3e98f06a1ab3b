"""`netdsl lsp`: the language server (pygls 2, stdio).

Rule: the server only translates. Diagnostics, names, outline, hover texts and formatting come from
the compiler (netdsl.lsp.state, .symbols, .meaning, netdsl.fmt); here positions become LSP positions in
the negotiated encoding (UTF-16 unless agreed otherwise, netdsl.lsp.positions) and back. Diagnostics are
published for every file of the program an opened or changed file belongs to, DEBOUNCE seconds after
the last change: first those of parsing and lowering; then one background worker builds the target's
objects (for hovers) and checks the expectations and semantic lints, and the diagnostics are published
again with those - unless a newer version of the program arrived meanwhile (stale work is dropped).
A hover answers from what is ready: it waits at most HOVER_WAIT seconds for the objects. Every handler
catches what it raises: a failure is logged (window/logMessage and standard error) and answered with
nothing, never a crash or a traceback to the client.
Settings: `netdsl.target` (initializationOptions or workspace/didChangeConfiguration; default vanilla).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import re
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from netdsl import __version__, ir, parse
from netdsl.backends import backend_names
from netdsl.diagnostics import Diagnostic, Severity
from netdsl.fmt import format_source
from netdsl.lsp.meaning import MAX_SHOWN, Objects, describe, emitted
from netdsl.lsp.positions import UTF8, UTF16, UTF32, from_client, to_client
from netdsl.lsp.state import Programs, Snapshot, absolute
from netdsl.lsp.symbols import Key, Occurrence, Outline, blocks, outline, scope_of, selector_text
from netdsl.source import SourceFile, Span

log = logging.getLogger("netdsl.lsp")

DEBOUNCE = 0.25  # seconds of quiet after a change before the program is checked again
HOVER_WAIT = 0.5  # seconds a hover waits for the target's objects before it answers without them

KEYWORDS = (
    "namespace", "cluster", "tier", "order", "otherwise", "isolate", "ingress", "egress", "for", "allow", "dns",
    "service", "group", "accepts", "connects", "to", "allows", "denies", "passes", "from", "pods", "all", "in",
    "namespaces", "cidr", "anywhere", "fqdn", "entity", "on", "http", "host", "header", "expect", "allowed",
    "denied", "any", "pod", "cidrs", "except", "system", "labels", "notin", "deny", "pass",
    "including system", "pod networks",
)

F = TypeVar("F", bound=Callable[..., Any])


class NetdslServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("netdsl", __version__)
        self.programs = Programs()
        self.target = "vanilla"
        self.pending: dict[str, asyncio.Task[None]] = {}  # program directory -> its debounced check
        self.latest: dict[str, Snapshot] = {}  # program directory -> its last published snapshot
        # one worker: the objects and the late diagnostics of the latest snapshot (CPU-bound, in order)
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="netdsl-bg")

    # ---- documents and positions
    def buffers(self) -> dict[str, str]:
        return {absolute(to_fs_path(uri) or uri): doc.source
                for uri, doc in self.workspace.text_documents.items()}

    def snapshot(self, uri: str) -> tuple[str, Snapshot]:
        path = absolute(to_fs_path(uri) or uri)
        return path, self.programs.snapshot(path, self.buffers())

    @property
    def encoding(self) -> str:
        got = str(getattr(self.workspace, "position_encoding", None) or UTF16)
        return {"utf-8": UTF8, "utf-32": UTF32}.get(got, UTF16)

    def position(self, source: SourceFile | None, line: int, column: int) -> types.Position:
        """A 1-based code point position -> LSP (0-based, code units)."""
        text = source.line(line) if source is not None else ""
        return types.Position(line=max(0, line - 1), character=to_client(text, column, self.encoding))

    def range(self, snap: Snapshot, span: Span) -> types.Range:
        source = snap.sources.get(span.path)
        return types.Range(start=self.position(source, span.line, span.column),
                           end=self.position(source, span.end_line, span.end_column))

    def location(self, snap: Snapshot, span: Span) -> types.Location:
        return types.Location(uri=from_fs_path(span.path) or span.path, range=self.range(snap, span))

    def point(self, snap: Snapshot, path: str, pos: types.Position) -> tuple[int, int]:
        """An LSP position -> (line, column), 1-based code points."""
        source = snap.sources.get(path)
        text = source.line(pos.line + 1) if source is not None else ""
        return pos.line + 1, from_client(text, pos.character, self.encoding)

    # ---- diagnostics
    def publish(self, uri: str) -> None:
        """Parse and lowering diagnostics now; the rest after the background work (see the module)."""
        path, snap = self.snapshot(uri)
        directory = os.path.dirname(path)
        self.send(snap)
        self.latest[directory] = snap
        loop = asyncio.get_running_loop()
        target = self.target

        def background() -> None:
            if self.stale(directory, snap):
                return
            snap.index  # noqa: B018 (names for hovers, definitions, completion)
            snap.objects(target)
            if self.stale(directory, snap):
                return
            snap.late_diagnostics()
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is shutting down
                loop.call_soon_threadsafe(
                    lambda: _guard("diagnostics", lambda: self.send_if_latest(directory, snap), self))

        self.worker.submit(_guard, "background", background, None)

    def stale(self, directory: str, snap: Snapshot) -> bool:
        """A newer version of the program was published: work for this one is dropped."""
        latest = self.latest.get(directory)
        return latest is not None and latest.serial > snap.serial

    def send_if_latest(self, directory: str, snap: Snapshot) -> None:
        if self.latest.get(directory) is snap:
            self.send(snap)

    def send(self, snap: Snapshot) -> None:
        for file, diags in snap.by_file().items():
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
                uri=from_fs_path(file) or file, diagnostics=[self.diagnostic(snap, d, file) for d in diags]))

    async def objects(self, path: str, snap: Snapshot) -> Objects | str | None:
        """The target's objects when they are ready within HOVER_WAIT (None: not yet). Asks the worker
        for them (after what it is doing; it skips them if the snapshot is stale by then)."""
        target = self.target
        got = snap.ready_objects(target)
        if got is not None:
            return got
        directory = os.path.dirname(path)

        def build() -> None:
            if not self.stale(directory, snap):
                snap.objects(target)

        self.worker.submit(_guard, "objects", build, None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOVER_WAIT
        while (got := snap.ready_objects(target)) is None and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return got

    def diagnostic(self, snap: Snapshot, d: Diagnostic, path: str) -> types.Diagnostic:
        span = d.span or Span(path, 1, 1, 1, 1)
        severity = {Severity.ERROR: types.DiagnosticSeverity.Error, Severity.WARNING: types.DiagnosticSeverity.Warning,
                    Severity.NOTE: types.DiagnosticSeverity.Information}[d.severity]
        message = d.message + (f"\nhint: {d.hint}" if d.hint else "")
        return types.Diagnostic(range=self.range(snap, span), message=message, severity=severity, code=d.code,
                                source="netdsl")

    def schedule(self, uri: str, delay: float) -> None:
        key = absolute(to_fs_path(uri) or uri)
        old = self.pending.pop(key, None)
        if old is not None:
            old.cancel()

        async def later() -> None:
            await asyncio.sleep(delay)
            self.pending.pop(key, None)
            _guard("diagnostics", lambda: self.publish(uri), self)

        self.pending[key] = asyncio.get_running_loop().create_task(later())

    def configure(self, settings: Any) -> None:
        if isinstance(settings, dict):
            settings = settings.get("netdsl", settings)
            target = settings.get("target") if isinstance(settings, dict) else None
            if isinstance(target, str) and target in backend_names():
                self.target = target


def _guard(what: str, run: Callable[[], Any], ls: LanguageServer | None) -> Any:
    try:
        return run()
    except Exception as exc:  # never crash the server on a document: log and answer nothing
        _report(what, exc, ls)
        return None


def _report(what: str, exc: Exception, ls: LanguageServer | None) -> None:
    log.error("%s failed: %s\n%s", what, exc, "".join(traceback.format_exception(exc)))
    if ls is not None:
        with contextlib.suppress(Exception):  # the connection itself may be what failed
            ls.window_log_message(types.LogMessageParams(type=types.MessageType.Error,
                                                         message=f"netdsl: {what} failed: {exc}"))


def guarded(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(ls: NetdslServer, params: Any) -> Any:
        return _guard(fn.__name__, lambda: fn(ls, params), ls)

    return wrapper  # type: ignore[return-value]


server = NetdslServer()


@server.feature(types.INITIALIZE)
@guarded
def initialize(ls: NetdslServer, params: types.InitializeParams) -> None:
    ls.configure(params.initialization_options)


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
@guarded
def did_change_configuration(ls: NetdslServer, params: types.DidChangeConfigurationParams) -> None:
    ls.configure(params.settings)


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
@guarded
def did_open(ls: NetdslServer, params: types.DidOpenTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri, 0)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
@guarded
def did_change(ls: NetdslServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri, DEBOUNCE)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
@guarded
def did_save(ls: NetdslServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri, 0)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
@guarded
def did_close(ls: NetdslServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri, 0)  # the file on disk counts again


# ------------------------------------------------------------------------------------------ names


def _occurrence(ls: NetdslServer, uri: str, pos: types.Position) -> tuple[Snapshot, Occurrence | None]:
    path, snap = ls.snapshot(uri)
    line, column = ls.point(snap, path, pos)
    return snap, snap.index.at(path, line, column)


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
@guarded
def definition(ls: NetdslServer, params: types.DefinitionParams) -> list[types.Location] | None:
    snap, occ = _occurrence(ls, params.text_document.uri, params.position)
    if occ is None:
        return None
    return [ls.location(snap, d.span) for d in snap.index.declarations.get(occ.key, [])]


@server.feature(types.TEXT_DOCUMENT_REFERENCES)
@guarded
def references(ls: NetdslServer, params: types.ReferenceParams) -> list[types.Location] | None:
    snap, occ = _occurrence(ls, params.text_document.uri, params.position)
    if occ is None:
        return None
    return [ls.location(snap, o.span)
            for o in snap.index.references(occ.key, params.context.include_declaration)]


# ------------------------------------------------------------------------------------------ hover


@server.feature(types.TEXT_DOCUMENT_HOVER)
async def hover(ls: NetdslServer, params: types.HoverParams) -> types.Hover | None:
    try:
        path, snap = ls.snapshot(params.text_document.uri)
        line, column = ls.point(snap, path, params.position)
        occ = snap.index.at(path, line, column)
        if occ is not None:
            text = name_hover(snap, occ.key)
        else:
            span = statement_at(snap, path, line)
            text = "" if span is None else statement_hover(ls, snap, span, await ls.objects(path, snap))
        if not text:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))
    except Exception as exc:  # as `guarded` does, for a coroutine
        _report("hover", exc, ls)
        return None


def name_hover(snap: Snapshot, key: Key) -> str:
    out: list[str] = []
    for d in snap.index.declarations.get(key, []):
        where = f"{d.span.path.rsplit('/', 1)[-1]}:{d.span.line}"
        node = d.node
        if isinstance(node, parse.ServiceDecl):
            out.append(f"**service** `{key.shown}` = `{selector_text(node.selector)}`  \n"
                       f"the pods with these labels in {_scope_words(key.scope)} ({where})")
        elif isinstance(node, parse.GroupDecl):
            out.append(f"**group** `{key.shown}` = {', '.join(f'`{w.text}`' for w in node.members)} ({where})")
        elif isinstance(node, parse.CidrsDecl):
            items = ", ".join(f"`{i.cidr.text}`" + (f" except {', '.join(e.text for e in i.excepts)}" if i.excepts
                                                    else "") for i in node.items)
            out.append(f"**cidrs** `{key.name}` = {items} ({where})")
        elif isinstance(node, parse.NamespaceBlock):
            labels = ", ".join(f"`{lb.key.text}={lb.value.text}`" for lb in node.labels)
            out.append(f"**namespace** `{key.name}`" + (f" labels {labels}" if labels else "") + f" ({where})")
    return "\n\n".join(out)


def _scope_words(scope: str) -> str:
    return f"the namespaces of `{scope}`" if scope.startswith("cluster") else f"namespace `{scope}`"


def statement_at(snap: Snapshot, path: str, line: int) -> Span | None:
    """The span of the innermost statement on the line (None: no statement starts or runs there)."""
    module = snap.modules.get(path)
    if module is None:
        return None
    best: Span | None = None
    candidates: list[Span] = []
    for stmt in module.statements:
        if not isinstance(stmt, (parse.NamespaceBlock, parse.ClusterBlock, parse.TierBlock)):
            candidates.append(stmt.span)
    for block, _ in blocks([module]):
        candidates.append(block.span)
        candidates.extend(s.span for s in block.statements)
    for span in candidates:
        if span.line <= line <= span.end_line and (best is None or span.line >= best.line):
            best = span
    return best


def statement_hover(ls: NetdslServer, snap: Snapshot, span: Span, objects: Objects | str | None) -> str:
    """The objects the statement emits (when they are built), what its rules allow in words, and what
    `check` says about it."""
    parts: list[str] = []
    if objects is None:
        parts.append(f"_{ls.target}: the objects are still being built; hover again in a moment_")
    elif isinstance(objects, str):
        parts.append(f"**{ls.target}**: emits nothing ({objects})")
    else:
        shown = emitted(objects.at(span.path, span.line), span.path, span.line)
        if shown:
            parts.append(f"**{ls.target}** emits:\n\n" + "\n\n".join(shown))
    rules, isolations = snap.at_line(span.path, span.line)
    meaning = describe(rules, isolations)
    if meaning:
        parts.append(meaning)
    late = snap.late
    flagged = [d for d in [*snap.diagnostics, *(late or [])]
               if d.span is not None and d.span.path == span.path and span.line <= d.span.line <= span.end_line]
    if flagged:
        shown = [f"- {d.severity.value} [{d.code}]: {d.message}" for d in flagged[:MAX_SHOWN]]
        if len(flagged) > MAX_SHOWN:
            shown.append(f"- ... and {len(flagged) - MAX_SHOWN} more")
        parts.append("**check**:\n" + "\n".join(shown))
    if late is None:
        parts.append("_(the semantic checks are still running)_")
    return "\n\n---\n\n".join(parts)


# ------------------------------------------------------------------------------------------ completion


_IN_SELECTOR = re.compile(r"(\[[^\]]*|service\s+\S+\s*=[^#]*|labels\s[^#]*)$")
_NS_SELECTOR = re.compile(r"namespaces\s*\[[^\]]*$")


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["[", "/", " "]))
@guarded
def completion(ls: NetdslServer, params: types.CompletionParams) -> types.CompletionList | None:
    path, snap = ls.snapshot(params.text_document.uri)
    line, column = ls.point(snap, path, params.position)
    source = snap.sources.get(path)
    before = source.line(line)[: column - 1] if source is not None else ""
    items = completions(snap, path, line, before)
    return types.CompletionList(is_incomplete=False, items=items)


def completions(snap: Snapshot, path: str, line: int, before: str) -> list[types.CompletionItem]:
    kind = types.CompletionItemKind
    last = before.split()[-1] if before.split() and not before.endswith(" ") else ""
    previous = before.split()[-1] if before.split() and before.endswith(" ") else \
        (before.split()[-2] if len(before.split()) > 1 else "")
    if previous == "entity":
        return [types.CompletionItem(label=e, kind=kind.EnumMember, detail="Cilium entity")
                for e in sorted(ir.ENTITIES)]
    if _NS_SELECTOR.search(before):
        return [types.CompletionItem(label=k, kind=kind.Property, detail="namespace label key")
                for k in sorted(snap.index.namespace_label_keys | {ir.NAMESPACE_NAME_LABEL})]
    if _IN_SELECTOR.search(before):
        return [types.CompletionItem(label=k, kind=kind.Property, detail="label key")
                for k in sorted(snap.index.label_keys | snap.index.namespace_label_keys)]
    if "/" in last:  # `ns/` -> that namespace's services and groups
        ns = last.split("/", 1)[0]
        return [types.CompletionItem(label=f"{ns}/{k.name}", kind=kind.Class, detail=k.kind)
                for k in snap.index.names_in(ns)]
    items = [types.CompletionItem(label=k, kind=kind.Keyword) for k in KEYWORDS]
    scope = _scope_at(snap, path, line)
    if scope is not None:
        items += [types.CompletionItem(label=k.name, kind=kind.Class, detail=f"{k.kind} in {scope}")
                  for k in snap.index.names_in(scope)]
    items += [types.CompletionItem(label=k.shown, kind=kind.Class, detail=k.kind)
              for k in snap.index.keys_of("service") + snap.index.keys_of("group")
              if k.scope != scope and not k.scope.startswith("cluster")]
    items += [types.CompletionItem(label=k.name, kind=kind.Constant, detail="cidr set")
              for k in snap.index.keys_of("cidrs")]
    items += [types.CompletionItem(label=k.name, kind=kind.Module, detail="namespace")
              for k in snap.index.keys_of("namespace")]
    return items


def _scope_at(snap: Snapshot, path: str, line: int) -> str | None:
    module = snap.modules.get(path)
    if module is None:
        return None
    found = None
    for block, _ in blocks([module]):
        if block.span.line <= line <= block.span.end_line:
            found = scope_of(block)
    return found


# ------------------------------------------------------------------------------------------ formatting


@server.feature(types.TEXT_DOCUMENT_FORMATTING)
@guarded
def formatting(ls: NetdslServer, params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
    doc = ls.workspace.get_text_document(params.text_document.uri)
    path = absolute(to_fs_path(doc.uri) or doc.uri)
    source = SourceFile(path, doc.source)
    text, _errors = format_source(source)
    if text is None or text == doc.source:
        return [] if text is not None else None
    last = len(source.lines)
    last_text = source.line(last)
    end = types.Position(line=last - 1, character=to_client(last_text, len(last_text) + 1, ls.encoding))
    return [types.TextEdit(range=types.Range(start=types.Position(line=0, character=0), end=end), new_text=text)]


# ------------------------------------------------------------------------------------------ outline

_SYMBOL_KINDS = {
    "namespace": types.SymbolKind.Namespace, "cluster": types.SymbolKind.Namespace,
    "tier": types.SymbolKind.Package, "service": types.SymbolKind.Class, "group": types.SymbolKind.Array,
    "cidrs": types.SymbolKind.Constant,
}


@server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@guarded
def document_symbols(ls: NetdslServer, params: types.DocumentSymbolParams) -> list[types.DocumentSymbol] | None:
    path, snap = ls.snapshot(params.text_document.uri)
    module = snap.modules.get(path)
    if module is None:
        return []
    return _symbols(ls, snap, outline(module))


def _symbols(ls: NetdslServer, snap: Snapshot, items: Sequence[Outline]) -> list[types.DocumentSymbol]:
    out = []
    for item in items:
        rng = ls.range(snap, item.span)
        sel = ls.range(snap, item.name_span)
        out.append(types.DocumentSymbol(
            name=item.name, detail=item.detail or None, kind=_SYMBOL_KINDS[item.kind], range=rng,
            selection_range=sel, children=_symbols(ls, snap, item.children) or None))
    return out


def run() -> None:
    logging.basicConfig(level=logging.WARNING, format="netdsl lsp: %(levelname)s %(message)s")
    server.start_io()
