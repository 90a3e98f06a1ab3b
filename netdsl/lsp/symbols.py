"""Names in a program's syntax trees, for the language server: where each service, group, cidr set and
namespace is declared and every word that refers to it, label keys in use, and the document outline.

Rule: names resolve as lowering resolves them (netdsl/lower/names.py), from the syntax trees of all the
program's files, with no lowering: a service or group in the statement's own scope (a namespace, by
name across blocks and files, or a `cluster` block, by its selector), `ns/name` in namespace `ns`, a
cidr set anywhere. A word that resolves to nothing declared is left out (lowering reports it). The
`ns` and `name` halves of `ns/name` are separate occurrences.
This module needs no pygls: it is plain data over netdsl.parse.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

from netdsl import parse
from netdsl.source import Span

Kind = Literal["namespace", "service", "group", "cidrs"]


@dataclass(frozen=True, slots=True)
class Key:
    """A declared thing: its kind, its scope (a namespace name, a cluster block's text, "" for cidr
    sets and namespaces) and its name."""

    kind: Kind
    scope: str
    name: str

    @property
    def shown(self) -> str:
        if self.kind in ("service", "group") and not self.scope.startswith("cluster"):
            return f"{self.scope}/{self.name}"
        return self.name


@dataclass(frozen=True, slots=True)
class Occurrence:
    key: Key
    span: Span
    declaration: bool


@dataclass(frozen=True, slots=True)
class Declaration:
    key: Key
    span: Span  # the declared name
    node: Union[parse.ServiceDecl, parse.GroupDecl, parse.CidrsDecl, parse.NamespaceBlock]


@dataclass(frozen=True, slots=True)
class Outline:
    """One entry of the document outline (namespaces, cluster blocks, tiers, services, groups, cidr sets)."""

    kind: Literal["namespace", "cluster", "tier", "service", "group", "cidrs"]
    name: str
    span: Span  # the whole block or statement
    name_span: Span
    detail: str = ""
    children: tuple[Outline, ...] = ()


@dataclass
class Index:
    declarations: dict[Key, list[Declaration]] = field(default_factory=dict)
    occurrences: list[Occurrence] = field(default_factory=list)
    label_keys: set[str] = field(default_factory=set)
    namespace_label_keys: set[str] = field(default_factory=set)
    _by_line: dict[tuple[str, int], list[Occurrence]] | None = None

    def at(self, path: str, line: int, column: int) -> Occurrence | None:
        """The occurrence under a position (1-based, code points); the end column counts too, so a
        cursor just after a name still finds it."""
        if self._by_line is None:
            by_line: dict[tuple[str, int], list[Occurrence]] = {}
            for occ in self.occurrences:
                by_line.setdefault((occ.span.path, occ.span.line), []).append(occ)
            self._by_line = by_line
        for occ in self._by_line.get((path, line), ()):
            if occ.span.column <= column <= occ.span.end_column:
                return occ
        return None

    def references(self, key: Key, include_declaration: bool = True) -> list[Occurrence]:
        return sorted((o for o in self.occurrences if o.key == key and (include_declaration or not o.declaration)),
                      key=lambda o: (o.span.path, o.span.line, o.span.column))

    def names_in(self, scope: str) -> list[Key]:
        """Services and groups declared in a scope."""
        return sorted((k for k in self.declarations if k.kind in ("service", "group") and k.scope == scope),
                      key=lambda k: k.name)

    def keys_of(self, kind: Kind) -> list[Key]:
        return sorted((k for k in self.declarations if k.kind == kind), key=lambda k: (k.scope, k.name))


Scoped = Union[parse.NamespaceBlock, parse.ClusterBlock]


def scope_of(block: Scoped) -> str:
    if isinstance(block, parse.NamespaceBlock):
        return block.name.text
    # cluster blocks with the same selector (as written, spaces aside) share one scope, as in lowering
    sel = "" if block.selector is None else ",".join(_requirement_text(r) for r in block.selector.requirements)
    return "cluster" + (f"[{sel}]" if sel else "") + (" including system" if block.including_system else "")


def _requirement_text(r: parse.Requirement) -> str:
    return f"{r.key.text} {r.operator} {'|'.join(v.text for v in r.values)}"


def blocks(modules: Iterable[parse.Module]) -> Iterator[tuple[Scoped, str | None]]:
    """Every namespace and cluster block with its tier's name."""
    for module in modules:
        for stmt in module.statements:
            if isinstance(stmt, (parse.NamespaceBlock, parse.ClusterBlock)):
                yield stmt, None
            elif isinstance(stmt, parse.TierBlock):
                for item in stmt.items:
                    yield item, stmt.name.text


def build_index(modules: Sequence[parse.Module]) -> Index:
    index = Index()
    # declarations first: a name may be used before (or in another file than) its declaration
    for module in modules:
        for stmt in module.statements:
            if isinstance(stmt, parse.CidrsDecl):
                _declare(index, Key("cidrs", "", stmt.name.text), stmt.name.span, stmt)
    for block, _tier in blocks(modules):
        scope = scope_of(block)
        if isinstance(block, parse.NamespaceBlock):
            _declare(index, Key("namespace", "", scope), block.name.span, block)
            for label in block.labels:
                index.namespace_label_keys.add(label.key.text)
        for s in block.statements:
            if isinstance(s, parse.ServiceDecl):
                _declare(index, Key("service", scope, s.name.text), s.name.span, s)
            elif isinstance(s, parse.GroupDecl):
                _declare(index, Key("group", scope, s.name.text), s.name.span, s)
    # then references
    for module in modules:
        for stmt in module.statements:
            if isinstance(stmt, parse.SystemDecl):
                for w in stmt.names:
                    _ref_namespace(index, w.text, w.span)
            elif isinstance(stmt, parse.ExpectStmt):
                _expect(index, stmt, None)
    for block, _tier in blocks(modules):
        scope = scope_of(block)
        if isinstance(block, parse.ClusterBlock) and block.selector is not None:
            _selector(index, block.selector, namespaces=True)
        for s in block.statements:
            _statement(index, s, scope)
    return index


def _declare(index: Index, key: Key, span: Span, node: Union[parse.ServiceDecl, parse.GroupDecl,
                                                               parse.CidrsDecl, parse.NamespaceBlock]) -> None:
    index.declarations.setdefault(key, []).append(Declaration(key, span, node))
    index.occurrences.append(Occurrence(key, span, True))


def _ref(index: Index, key: Key, span: Span) -> None:
    if key in index.declarations:
        index.occurrences.append(Occurrence(key, span, False))


def _ref_namespace(index: Index, name: str, span: Span) -> None:
    _ref(index, Key("namespace", "", name), span)


def _ref_word(index: Index, word: parse.Word, scope: str, cidrs: bool = True) -> None:
    """A service, group or (peers) cidr set by name, or `ns/name`."""
    text, span = word.text, word.span
    if "/" in text and span.line == span.end_line and not word.quoted:
        ns, _, name = text.partition("/")
        ns_span = Span(span.path, span.line, span.column, span.line, span.column + len(ns))
        name_span = Span(span.path, span.line, span.column + len(ns) + 1, span.line, span.end_column)
        _ref_namespace(index, ns, ns_span)
        for kind in ("service", "group"):
            _ref(index, Key(kind, ns, name), name_span)
        return
    for key in (Key("service", scope, text), Key("group", scope, text)):
        if key in index.declarations:
            _ref(index, key, span)
            return
    if cidrs:
        _ref(index, Key("cidrs", "", text), span)


def _subjects(index: Index, subjects: parse.Subjects | None, scope: str) -> None:
    if isinstance(subjects, tuple):
        for w in subjects:
            _ref_word(index, w, scope, cidrs=False)


def _selector(index: Index, sel: parse.Selector | None, namespaces: bool = False) -> None:
    if sel is None:
        return
    for r in sel.requirements:
        (index.namespace_label_keys if namespaces else index.label_keys).add(r.key.text)


def _ns_scope(index: Index, scope: parse.NamespaceScope | None) -> None:
    if isinstance(scope, parse.NsByName):
        _ref_namespace(index, scope.name.text, scope.name.span)
    elif isinstance(scope, parse.NsByLabels):
        _selector(index, scope.selector, namespaces=True)


def _peer(index: Index, peer: parse.Peer, scope: str) -> None:
    if isinstance(peer, parse.RefPeer):
        _ref_word(index, peer.name, scope)
    elif isinstance(peer, parse.PodsPeer):
        _selector(index, peer.selector)
        _ns_scope(index, peer.scope)
    elif isinstance(peer, (parse.AllPodsPeer, parse.NamespacePeer)):
        _ns_scope(index, peer.scope)


def _expect(index: Index, stmt: parse.ExpectStmt, scope: str | None) -> None:
    for end in (stmt.source, stmt.destination):
        if isinstance(end, parse.Word):
            text = end.text
            # `svc:8080`, `ns/svc:8080/tcp`: the port is not part of the name
            name_part = text.split(":", 1)[0] if not _is_ip(text) else ""
            if not name_part:
                continue
            word = parse.Word(name_part, Span(end.span.path, end.span.line, end.span.column, end.span.line,
                                              end.span.column + len(name_part)))
            if "/" in name_part or scope is not None:
                _ref_word(index, word, scope or "", cidrs=False)
        else:
            _selector(index, end.selector)
            _ns_scope(index, end.scope)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _statement(index: Index, s: parse.NamespaceStmt, scope: str) -> None:
    if isinstance(s, parse.ServiceDecl):
        _selector(index, s.selector)
    elif isinstance(s, parse.GroupDecl):
        for w in s.members:
            _ref_word(index, w, scope, cidrs=False)
    elif isinstance(s, (parse.IsolateStmt, parse.DnsStmt)):
        _subjects(index, s.subjects, scope)
    elif isinstance(s, parse.FlowStmt):
        _subjects(index, s.subjects, scope)
        for p in s.peers:
            _peer(index, p, scope)
    elif isinstance(s, parse.ExpectStmt):
        _expect(index, s, scope)


# ------------------------------------------------------------------------------------------ outline


def outline(module: parse.Module) -> list[Outline]:
    out: list[Outline] = []
    for stmt in module.statements:
        if isinstance(stmt, (parse.NamespaceBlock, parse.ClusterBlock)):
            out.append(_block_outline(stmt))
        elif isinstance(stmt, parse.TierBlock):
            out.append(Outline("tier", stmt.name.text, stmt.span, stmt.name.span, f"order {stmt.order.text}",
                               tuple(_block_outline(b) for b in stmt.items)))
        elif isinstance(stmt, parse.CidrsDecl):
            out.append(Outline("cidrs", stmt.name.text, stmt.span, stmt.name.span,
                               ", ".join(i.cidr.text for i in stmt.items)))
    return out


def _block_outline(block: Scoped) -> Outline:
    children: list[Outline] = []
    for s in block.statements:
        if isinstance(s, parse.ServiceDecl):
            children.append(Outline("service", s.name.text, s.span, s.name.span,
                                    ", ".join(_requirement_shown(r) for r in s.selector.requirements)))
        elif isinstance(s, parse.GroupDecl):
            children.append(Outline("group", s.name.text, s.span, s.name.span, ", ".join(w.text for w in s.members)))
    if isinstance(block, parse.NamespaceBlock):
        detail = ", ".join(f"{lb.key.text}={lb.value.text}" for lb in block.labels)
        return Outline("namespace", block.name.text, block.span, block.name.span, detail, tuple(children))
    name = scope_of(block)
    return Outline("cluster", name, block.span, block.span, "", tuple(children))


def _requirement_shown(r: parse.Requirement) -> str:
    values = [v.text for v in r.values]
    if r.operator in ("=", "!="):
        return f"{r.key.text}{r.operator}{values[0]}"
    if r.operator == "exists":
        return r.key.text
    if r.operator == "!exists":
        return f"!{r.key.text}"
    return f"{r.key.text} {r.operator} ({', '.join(values)})"


def selector_text(sel: parse.Selector) -> str:
    return ", ".join(_requirement_shown(r) for r in sel.requirements)
