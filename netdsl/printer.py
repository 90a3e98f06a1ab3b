"""The one printer: syntax tree -> canonical `.seg` text (used by `fmt`, `import` and `infer`).

Rule: the text is a function of the tree and its comments alone, so printing is idempotent and
parse(print(tree)) is the tree again (spans aside):
- 2-space indentation in blocks, one statement per line, single spaces around keywords, `, ` between list
  items; the `=` of consecutive `service` declarations aligned; a blank line around every block that has a
  body, and at most one blank line where the source had blank lines (never at a block's start or end);
  a final newline. Keywords as the grammar spells them; a Word prints its text (a quoted Word its source
  spelling, or a JSON string when built in code).
- A statement longer than WIDTH columns breaks after commas (greedy fill) onto continuation lines indented
  4 more.
- Comments stay where they were: a comment on its own line before the statement that follows it (or at
  the end of its block or file), at the block's indentation; a comment after code at the end of that
  statement's (or block header's) line, trailing comments of consecutive lines at one indentation
  aligned; a comment inside a statement (after a `,` or `(`, or before `)`) keeps the statement broken
  there, the comment after the item it followed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, Union

from netdsl import parse
from netdsl.parse import (
    AllPods,
    AllPodsPeer,
    AnywherePeer,
    CidrItem,
    CidrPeer,
    CidrsDecl,
    ClusterBlock,
    DnsStmt,
    EntityPeer,
    ExpectPods,
    ExpectStmt,
    FlowStmt,
    FqdnPeer,
    GroupDecl,
    HttpRule,
    IsolateStmt,
    NamespaceBlock,
    NamespacePeer,
    NamespaceScope,
    NsByLabels,
    NsByName,
    Peer,
    PodNetworksDecl,
    PodsPeer,
    RefPeer,
    Requirement,
    Selector,
    ServiceDecl,
    Subjects,
    SystemDecl,
    TierBlock,
    Word,
)
from netdsl.source import SourceFile, Span

SYNTHETIC = Span("<generated>", 0, 0, 0, 0)
WIDTH = 100
INDENT = 2
CONTINUATION = 4

_BARE_WORD = re.compile(r"[A-Za-z0-9_:*][A-Za-z0-9_.\/:*-]*")

T = TypeVar("T")
Stmt = Union[parse.TopStmt, parse.NamespaceStmt]


def word(text: str) -> Word:
    """A Word built in code: quoted when it is not a bare word (a label value with a space, ...)."""
    return Word(text, SYNTHETIC, quoted=_BARE_WORD.fullmatch(text) is None)


def print_module(module: parse.Module) -> str:
    """A whole file in the canonical layout, with its comments."""
    comments = tuple(getattr(module, "comments", ()))
    return _Printer(module.source, comments).file(module.statements)


def print_statements(statements: Sequence[parse.TopStmt]) -> str:
    """Statements built in code (no source, no comments) in the canonical layout."""
    return _Printer(None, ()).file(tuple(statements))


# ------------------------------------------------------------------------------------------ layout


@dataclass
class _Break:
    """A place a statement may break: after `,` (flat " "), after `(` or before `)` (flat "")."""

    flat: str
    comma: bool
    comments: list[str] = field(default_factory=list)


Piece = Union[str, _Break]


@dataclass
class _BodyState:
    header_line: int  # the source line of the block's header (0: the file)
    prev: Stmt | None = None  # the previous statement of the block
    prev_end: int = 0  # the source line the previous item (statement or comment) ended on
    prev_block: bool = False
    first: bool = True  # nothing printed in the block yet


@dataclass
class _Line:
    indent: int
    code: str  # without indentation; "" for a blank line
    comment: str | None = None


def _position(span: Span) -> tuple[int, int]:
    return (span.line, span.column)


def _end(span: Span) -> tuple[int, int]:
    return (span.end_line, span.end_column)


class _Printer:
    def __init__(self, source: SourceFile | None, comments: Sequence[parse.Comment]) -> None:
        self.source = source
        self.comments = sorted(comments, key=lambda c: _position(c.span))
        self.next = 0  # comments before this index are printed
        self.lines: list[_Line] = []

    # ---- comments
    def _take(self, before: tuple[int, int]) -> list[parse.Comment]:
        """The comments not yet printed that start before `before` (source order)."""
        out = []
        while self.next < len(self.comments) and _position(self.comments[self.next].span) < before:
            out.append(self.comments[self.next])
            self.next += 1
        return out

    def _pending_before(self, before: tuple[int, int]) -> bool:
        return self.next < len(self.comments) and _position(self.comments[self.next].span) < before

    def _after_code(self, comment: parse.Comment) -> bool:
        """True when code precedes the comment on its line."""
        if self.source is None:
            return False
        return self.source.line(comment.span.line)[: comment.span.column - 1].strip() != ""

    def _gap(self, after_line: int, before_line: int) -> tuple[bool, bool]:
        """(a blank line, an own-line comment) strictly between two source lines."""
        if self.source is None or after_line <= 0:
            return False, False
        blank = comment = False
        for n in range(after_line + 1, before_line):
            text = self.source.line(n).strip()
            blank = blank or text == ""
            comment = comment or text.startswith("#")
        return blank, comment

    def _word(self, w: Word) -> str:
        if not w.quoted:
            return w.text
        if self.source is not None and w.span.path == self.source.path and w.span.line == w.span.end_line:
            raw = self.source.line(w.span.line)[w.span.column - 1: w.span.end_column - 1]
            if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2 and _decodes_to(raw, w.text):
                return raw
        return json.dumps(w.text, ensure_ascii=False)

    # ---- lists
    def _sep(self, items: Sequence[T], render: Callable[[T], list[Piece]], start: Callable[[T], Span],
             out: list[Piece]) -> None:
        for i, item in enumerate(items):
            if i:
                out.append(",")
                out.append(_Break(" ", True, self._texts(self._take(_position(start(item))))))
            out.extend(render(item))

    def _parens(self, items: Sequence[T], render: Callable[[T], list[Piece]], start: Callable[[T], Span],
                end: Span, out: list[Piece]) -> None:
        out.append("(")
        if items:
            out.append(_Break("", False, self._texts(self._take(_position(start(items[0]))))))
            self._sep(items, render, start, out)
        out.append(_Break("", False, self._texts(self._take(_end(end)))))
        out.append(")")

    @staticmethod
    def _texts(comments: list[parse.Comment]) -> list[str]:
        return [c.text for c in comments]

    def _words(self, words: Sequence[Word], out: list[Piece]) -> None:
        self._sep(words, lambda w: [self._word(w)], lambda w: w.span, out)

    # ---- nodes
    def _selector(self, sel: Selector, out: list[Piece]) -> None:
        self._sep(sel.requirements, self._requirement, lambda r: r.span, out)

    def _requirement(self, r: Requirement) -> list[Piece]:
        key = self._word(r.key)
        if r.operator == "exists":
            return [key]
        if r.operator == "!exists":
            return ["!" + key]
        if r.operator in ("=", "!="):
            return [key + r.operator + self._word(r.values[0])]
        out: list[Piece] = [f"{key} {r.operator} "]
        self._parens(r.values, lambda w: [self._word(w)], lambda w: w.span, r.span, out)
        return out

    def _bracket(self, sel: Selector) -> list[Piece]:
        out: list[Piece] = ["["]
        self._selector(sel, out)
        out.append("]")
        return out

    def _scope(self, scope: NamespaceScope) -> list[Piece]:
        if isinstance(scope, NsByName):
            return ["namespace " + self._word(scope.name)]
        if isinstance(scope, NsByLabels):
            return ["namespaces", *self._bracket(scope.selector)]
        return ["all namespaces"]

    def _in_scope(self, scope: NamespaceScope | None) -> list[Piece]:
        return [] if scope is None else [" in ", *self._scope(scope)]

    def _cidr_item(self, item: CidrItem) -> list[Piece]:
        out: list[Piece] = [self._word(item.cidr)]
        if item.excepts:
            out.append(" except ")
            if len(item.excepts) == 1 and not self._pending_before(_end(item.span)):
                out.append(self._word(item.excepts[0]))
            else:
                self._parens(item.excepts, lambda w: [self._word(w)], lambda w: w.span, item.span, out)
        return out

    def _peer(self, peer: Peer) -> list[Piece]:
        if isinstance(peer, RefPeer):
            return [self._word(peer.name)]
        if isinstance(peer, PodsPeer):
            return ["pods", *self._bracket(peer.selector), *self._in_scope(peer.scope)]
        if isinstance(peer, AllPodsPeer):
            return ["all pods", *self._in_scope(peer.scope)]
        if isinstance(peer, NamespacePeer):
            return self._scope(peer.scope)
        if isinstance(peer, CidrPeer):
            return ["cidr ", *self._cidr_item(peer.item)]
        if isinstance(peer, AnywherePeer):
            return ["anywhere"]
        if isinstance(peer, FqdnPeer):
            return ["fqdn " + self._word(peer.name)]
        if isinstance(peer, EntityPeer):
            return ["entity " + self._word(peer.name)]
        raise TypeError(f"not a peer: {peer!r}")

    def _subjects(self, subjects: Subjects, out: list[Piece]) -> None:
        if isinstance(subjects, AllPods):
            out.append("all pods")
        else:
            self._words(subjects, out)

    def _ports(self, ports: Sequence[Word], out: list[Piece]) -> None:
        if ports:
            out.append(" on ")
            self._words(ports, out)

    def _http_rule(self, rule: HttpRule) -> list[Piece]:
        text = self._word(rule.method)
        if rule.path is not None:
            text += " " + self._word(rule.path)
        if rule.host is not None:
            text += " host " + self._word(rule.host)
        for header in rule.headers:
            text += " header " + self._word(header)
        return [text]

    def _expect_end(self, end: Word | ExpectPods) -> list[Piece]:
        if isinstance(end, Word):
            return [self._word(end)]
        head: list[Piece] = ["any pod"] if end.selector is None else ["pods", *self._bracket(end.selector)]
        return [*head, *self._in_scope(end.scope)]

    def _statement(self, stmt: Stmt, service_width: int = 0) -> list[Piece]:
        """The pieces of a statement that is not a block with a body."""
        out: list[Piece] = []
        if isinstance(stmt, IsolateStmt):
            out.append("isolate")
            if stmt.direction is not None:
                out.append(" " + self._word(stmt.direction))
            if stmt.subjects is not None:  # `isolate [DIRECTION] for SUBJECTS`
                out.append(" for ")
                self._subjects(stmt.subjects, out)
        elif isinstance(stmt, DnsStmt):
            out.append("allow dns")
            if stmt.subjects is not None:
                out.append(" for ")
                self._subjects(stmt.subjects, out)
        elif isinstance(stmt, ServiceDecl):
            out.append(f"service {self._word(stmt.name):<{service_width}} = ")
            self._selector(stmt.selector, out)
        elif isinstance(stmt, GroupDecl):
            out.append(f"group {self._word(stmt.name)} = ")
            self._words(stmt.members, out)
        elif isinstance(stmt, FlowStmt):
            self._subjects(stmt.subjects, out)
            if stmt.verb is not None:
                side = f" {stmt.side.text}" if stmt.side is not None else ""
                out.append(f" {self._word(stmt.verb)}{side} {'from' if stmt.direction == 'ingress' else 'to'} ")
            else:
                out.append(" accepts " if stmt.direction == "ingress" else " connects to ")
            self._sep(stmt.peers, self._peer, lambda p: p.span, out)
            self._ports(stmt.ports, out)
            if stmt.http:
                out.append(" http ")
                self._sep(stmt.http, self._http_rule, lambda r: r.span, out)
        elif isinstance(stmt, ExpectStmt):
            out.append("expect ")
            out.extend(self._expect_end(stmt.source))
            out.append(" -> ")
            out.extend(self._expect_end(stmt.destination))
            if stmt.ports is not None:
                self._ports(stmt.ports, out)
            out.append(" allowed" if stmt.allowed else " denied")
        elif isinstance(stmt, CidrsDecl):
            out.append(f"cidrs {self._word(stmt.name)} = ")
            self._sep(stmt.items, self._cidr_item, lambda i: i.span, out)
        elif isinstance(stmt, SystemDecl):
            out.append("system namespaces = ")
            self._words(stmt.names, out)
        elif isinstance(stmt, PodNetworksDecl):
            out.append("pod networks = ")
            self._words(stmt.networks, out)
        elif isinstance(stmt, NamespaceBlock):
            out.extend(self._namespace_header(stmt))
        else:
            raise TypeError(f"not a statement: {stmt!r}")
        return out

    def _namespace_header(self, block: NamespaceBlock) -> list[Piece]:
        out: list[Piece] = ["namespace " + self._word(block.name)]
        if block.labels:
            out.append(" labels ")
            self._sep(block.labels, lambda lb: [f"{self._word(lb.key)}={self._word(lb.value)}"],
                      lambda lb: lb.key.span, out)
        return out

    # ---- lines
    def _emit(self, pieces: list[Piece], level: int) -> None:
        """Lays out one statement at `level`, breaking after commas past WIDTH and where comments are."""
        indent = level * INDENT
        cont = indent + CONTINUATION
        # Join the pieces between the breaks that matter: commas, and any break holding a comment.
        segments: list[str] = [""]
        breaks: list[_Break] = []
        for piece in pieces:
            if isinstance(piece, str):
                segments[-1] += piece
            elif piece.comma or piece.comments:
                breaks.append(piece)
                segments.append("")
            else:
                segments[-1] += piece.flat
        flat = segments[0] + "".join(b.flat + s for b, s in zip(breaks, segments[1:], strict=True))
        if indent + len(flat) <= WIDTH and not any(b.comments for b in breaks):
            self.lines.append(_Line(indent, flat))
            return
        line = _Line(indent, segments[0])
        for brk, seg in zip(breaks, segments[1:], strict=True):
            if brk.comments:
                line.code = line.code.rstrip()
                line.comment = brk.comments[0]
                self.lines.append(line)
                self.lines.extend(_Line(cont, c) for c in brk.comments[1:])
                line = _Line(cont, seg)
            elif line.indent + len(line.code) + len(brk.flat) + len(seg) > WIDTH:
                self.lines.append(_Line(line.indent, line.code.rstrip()))
                line = _Line(cont, seg)
            else:
                line.code += brk.flat + seg
        self.lines.append(line)

    def _blank(self) -> None:
        if self.lines and self.lines[-1].code:
            self.lines.append(_Line(0, ""))

    def _trail(self, comment: parse.Comment) -> None:
        """A comment after code: at the end of the last line printed (its statement's last line)."""
        last = self.lines[-1]
        if last.comment is None and last.code and not last.code.startswith("#"):
            last.comment = comment.text
        else:  # not expected: keep the comment on a line of its own rather than lose it
            self.lines.append(_Line(last.indent, comment.text))

    def _body(self, statements: Sequence[Stmt], level: int, end: tuple[int, int] | None,
              header_line: int) -> None:
        """The statements of a block (or of the file: `end` None) with their comments."""
        state = _BodyState(header_line)
        widths = self._service_widths(statements)
        for i, stmt in enumerate(statements):
            is_block = _has_body(stmt) or (isinstance(stmt, NamespaceBlock) and self._inner_comments(stmt))
            forced = is_block or state.prev_block  # a blank line around every block with a body
            for comment in self._take(_position(stmt.span)):
                if self._comment(comment, state, level, forced):
                    forced = False  # the blank line goes before the statement's leading comments
            self._separate(state, stmt.span.line, forced)
            self._stmt(stmt, level, widths[i])
            state.prev, state.prev_end, state.prev_block, state.first = stmt, stmt.span.end_line, is_block, False
        for comment in self._take(end if end is not None else (1 << 60, 0)):
            self._comment(comment, state, level, False)

    def _separate(self, state: _BodyState, line: int, forced: bool) -> None:
        """A blank line before the next item: never first in a block; where the source had one, or
        `forced`."""
        if state.first:
            return
        blank, _ = self._gap(state.prev_end, line)
        if (blank or forced) and self.lines and self.lines[-1].code:
            self.lines.append(_Line(0, ""))

    def _comment(self, comment: parse.Comment, state: _BodyState, level: int, forced: bool) -> bool:
        """Prints a comment met between statements; True when it went on a line of its own."""
        if self._after_code(comment):
            prev = state.prev
            if prev is not None and prev.span.end_line == comment.span.line:
                self._trail(comment)
                return False
            if prev is None and state.first and state.header_line > 0:
                self._trail(comment)  # after a block's `{`
                return False
        self._separate(state, comment.span.line, forced)
        self.lines.append(_Line(level * INDENT, comment.text))
        state.prev_end, state.first = comment.span.end_line, False
        return True

    def _inner_comments(self, block: NamespaceBlock) -> bool:
        """A namespace block without statements keeps its braces when comments are inside them."""
        if block.statements or self.source is None or block.span.line <= 0:
            return False
        end = (block.span.end_line, block.span.end_column - 1)
        if not self.source.line(block.span.end_line)[: block.span.end_column - 1].endswith("}"):
            return False
        start = _end(block.labels[-1].value.span if block.labels else block.name.span)
        return any(start < _position(c.span) < end for c in self.comments[self.next:])

    def _service_widths(self, statements: Sequence[Stmt]) -> list[int]:
        """The name width of each service declaration: the longest name of its run of consecutive
        declarations (no blank line or comment line between them)."""
        widths = [0] * len(statements)
        run: list[ServiceDecl] = []
        members: list[int] = []

        def close() -> None:
            width = max((len(self._word(s.name)) for s in run), default=0)
            for j in members:
                widths[j] = width
            run.clear()
            members.clear()

        for i, stmt in enumerate(statements):
            if not isinstance(stmt, ServiceDecl):
                close()
                continue
            if run:
                blank, comment = self._gap(run[-1].span.end_line, stmt.span.line)
                if blank or comment:
                    close()
            run.append(stmt)
            members.append(i)
        close()
        return widths

    def _stmt(self, stmt: Stmt, level: int, service_width: int) -> None:
        if isinstance(stmt, NamespaceBlock):
            header = self._namespace_header(stmt)
            if not stmt.statements and not self._inner_comments(stmt):
                self._emit(header, level)
                return
            self._block(header, stmt.statements, stmt.span, level)
        elif isinstance(stmt, ClusterBlock):
            header = ["cluster"]
            if stmt.selector is not None:
                header += [" namespaces", *self._bracket(stmt.selector)]
            if stmt.including_system:
                header.append(" including system")
            self._block(header, stmt.statements, stmt.span, level)
        elif isinstance(stmt, TierBlock):
            header = [f"tier {self._word(stmt.name)} order {self._word(stmt.order)}"]
            if stmt.otherwise is not None:
                header.append(" otherwise " + self._word(stmt.otherwise))
            self._block(header, stmt.items, stmt.span, level)
        else:
            self._emit(self._statement(stmt, service_width), level)

    def _block(self, header: list[Piece], statements: Sequence[Stmt], span: Span, level: int) -> None:
        end = (span.end_line, span.end_column - 1) if span.line > 0 else (0, 0)
        if not statements and not self._pending_before(end):
            self._emit([*header, " {}"], level)
            return
        self._emit([*header, " {"], level)
        self._body(statements, level + 1, end, span.line)
        self.lines.append(_Line(level * INDENT, "}"))

    def file(self, statements: Sequence[parse.TopStmt]) -> str:
        self._body(statements, 0, None, 0)
        return _render(self.lines)


def _has_body(stmt: Stmt) -> bool:
    if isinstance(stmt, (ClusterBlock, TierBlock)):
        return True
    return isinstance(stmt, NamespaceBlock) and bool(stmt.statements)


def _decodes_to(raw: str, text: str) -> bool:
    try:
        return bool(json.loads(raw) == text)
    except ValueError:
        return raw[1:-1] == text


def _render(lines: list[_Line]) -> str:
    """Text of the lines: trailing comments of consecutive lines at one indentation aligned."""
    while lines and not lines[-1].code:
        lines.pop()
    out: list[str] = []
    i = 0
    while i < len(lines):
        j = i
        if lines[i].comment is not None:
            while (j + 1 < len(lines) and lines[j + 1].comment is not None
                   and lines[j + 1].indent == lines[i].indent):
                j += 1
            column = max(len(line.code) for line in lines[i:j + 1]) + 2
            for line in lines[i:j + 1]:
                out.append(" " * line.indent + line.code.ljust(column) + (line.comment or ""))
        else:
            line = lines[i]
            out.append(" " * line.indent + line.code if line.code else "")
        i = j + 1
    return "\n".join(out) + "\n" if out else ""
