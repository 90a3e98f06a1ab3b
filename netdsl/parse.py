"""Parse .seg text into a syntax tree whose every node carries its source span.

The tree is a faithful, unvalidated picture of the text: a port is still the WORD the user typed.
Checking what the words mean is lowering's job (netdsl/lower/), where there is context to say
precisely what is wrong.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, TypeAlias, Union

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from netdsl.diagnostics import Diagnostic, error
from netdsl.source import SourceFile, Span

# ------------------------------------------------------------------------------------------ nodes


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    span: Span
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Requirement:
    key: Word
    operator: Literal["=", "!=", "in", "notin", "exists", "!exists"]
    values: tuple[Word, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class CidrItem:
    cidr: Word
    excepts: tuple[Word, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class NsByName:
    name: Word
    span: Span


@dataclass(frozen=True, slots=True)
class NsByLabels:
    selector: Selector
    span: Span


@dataclass(frozen=True, slots=True)
class NsAll:
    span: Span


NamespaceScope: TypeAlias = Union[NsByName, NsByLabels, NsAll]


@dataclass(frozen=True, slots=True)
class RefPeer:
    """A name: a service or group in this namespace, `ns/service`, or a cidr set."""

    name: Word
    span: Span


@dataclass(frozen=True, slots=True)
class PodsPeer:
    """`pods[sel]`, optionally `in <scope>` (both must match: the AND form)."""

    selector: Selector
    scope: NamespaceScope | None
    span: Span


@dataclass(frozen=True, slots=True)
class AllPodsPeer:
    scope: NamespaceScope | None
    span: Span


@dataclass(frozen=True, slots=True)
class NamespacePeer:
    """Every pod of the namespaces in `scope`."""

    scope: NamespaceScope
    span: Span


@dataclass(frozen=True, slots=True)
class CidrPeer:
    item: CidrItem
    span: Span


@dataclass(frozen=True, slots=True)
class AnywherePeer:
    span: Span


@dataclass(frozen=True, slots=True)
class FqdnPeer:
    name: Word
    span: Span


@dataclass(frozen=True, slots=True)
class EntityPeer:
    name: Word
    span: Span


Peer: TypeAlias = Union[RefPeer, PodsPeer, AllPodsPeer, NamespacePeer, CidrPeer, AnywherePeer, FqdnPeer, EntityPeer]


@dataclass(frozen=True, slots=True)
class HttpRule:
    method: Word
    path: Word | None
    host: Word | None
    headers: tuple[Word, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class AllPods:
    span: Span


Subjects: TypeAlias = Union[AllPods, tuple[Word, ...]]


@dataclass(frozen=True, slots=True)
class IsolateStmt:
    """`isolate [ingress|egress] [for SUBJECTS]`: default deny for every pod of the scope, or (with
    `subjects`) for the pods of those services."""

    direction: Word | None
    span: Span
    subjects: Subjects | None = None


@dataclass(frozen=True, slots=True)
class DnsStmt:
    subjects: Subjects | None
    span: Span


@dataclass(frozen=True, slots=True)
class ServiceDecl:
    name: Word
    selector: Selector
    span: Span


@dataclass(frozen=True, slots=True)
class GroupDecl:
    name: Word
    members: tuple[Word, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class FlowStmt:
    """`X accepts P on ...` (allow, ingress), `X connects to P on ...` (allow, egress), or the general
    `X allows|denies|passes from|to P on ...`."""

    direction: Literal["ingress", "egress"]
    subjects: Subjects
    peers: tuple[Peer, ...]
    ports: tuple[Word, ...]
    span: Span
    action: Literal["allow", "deny", "pass"] = "allow"
    verb: Word | None = None  # the action word, when written
    http: tuple[HttpRule, ...] = ()
    side: Word | None = None  # `allows ingress from`: this side only, no other half


@dataclass(frozen=True, slots=True)
class ExpectStmt:
    """`expect SRC -> DST[:PORT[/PROTO]] [on PORT] allowed|denied`; each end a service, an IP address
    or a class of pods (ExpectPods)."""

    source: Word | ExpectPods
    destination: Word | ExpectPods
    ports: tuple[Word, ...] | None
    allowed: bool
    span: Span


@dataclass(frozen=True)
class ExpectPods:
    """`pods[sel] [in SCOPE]` or `any pod [in SCOPE]` (selector None) as an end of an expectation."""

    selector: Selector | None
    scope: NamespaceScope | None
    span: Span


NamespaceStmt: TypeAlias = Union[IsolateStmt, DnsStmt, ServiceDecl, GroupDecl, FlowStmt, ExpectStmt]


@dataclass(frozen=True, slots=True)
class Label:
    key: Word
    value: Word


@dataclass(frozen=True, slots=True)
class NamespaceBlock:
    name: Word
    labels: tuple[Label, ...]
    statements: tuple[NamespaceStmt, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class CidrsDecl:
    name: Word
    items: tuple[CidrItem, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ClusterBlock:
    """Statements for every namespace (but the system ones, unless `including system`), or for the
    namespaces matching `selector`."""

    selector: Selector | None
    including_system: bool
    statements: tuple[NamespaceStmt, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class TierBlock:
    name: Word
    order: Word
    otherwise: Word | None  # `deny` or `pass`
    items: tuple[Union[NamespaceBlock, ClusterBlock], ...]
    span: Span


@dataclass(frozen=True, slots=True)
class SystemDecl:
    names: tuple[Word, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class PodNetworksDecl:
    """`pod networks = CIDR, ...`: the address ranges the cluster gives pods (and services)."""

    networks: tuple[Word, ...]
    span: Span


TopStmt: TypeAlias = Union[
    NamespaceBlock, CidrsDecl, ClusterBlock, TierBlock, SystemDecl, PodNetworksDecl, ExpectStmt
]


@dataclass(frozen=True, slots=True)
class Comment:
    """A `#` comment as written (its text from `#` to the end of the line)."""

    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Module:
    source: SourceFile
    statements: tuple[TopStmt, ...]
    comments: tuple[Comment, ...] = ()


# ------------------------------------------------------------------------------------------ parser


# What may not follow a keyword: any character a WORD may hold (the grammar's named keyword terminals
# end with the same lookahead).
_WORD_BOUNDARY = r"(?![\w.\/:*-])"
_QUOTED_KEYWORD = re.compile(r"[A-Za-z]+( [A-Za-z]+)*")


def _whole_word(terminal: lark.lexer.TerminalDef) -> None:
    """Lark's `edit_terminals` hook: a quoted keyword ("accepts") becomes a regular expression that matches
    only a whole word. Without it, where the grammar expects a keyword and no name, the lexer took the
    keyword's prefix of a longer word: `a acceptsb` was read as `a accepts b`. The keyword outranks WORD
    where both may come (as Lark's own keyword-over-WORD rule did), and the lookahead keeps `acceptsb` a
    WORD there."""
    pattern = terminal.pattern
    if isinstance(pattern, lark.lexer.PatternStr) and _QUOTED_KEYWORD.fullmatch(pattern.value):
        terminal.pattern = lark.lexer.PatternRE(re.escape(pattern.value) + _WORD_BOUNDARY, pattern.flags)
        terminal.priority = max(terminal.priority, 1)


# The tokens that hold comments (COMMENT itself, and `,` `(` `)`, which swallow the comments and newlines
# after or before them so that a statement may continue on the next line), collected while one parse
# runs: the grammar ignores comments, the formatter keeps them.
_COMMENT_TOKENS = ("COMMENT", "_COMMA", "_LPAREN", "_RPAREN")
_collected: contextvars.ContextVar[list[Token] | None] = contextvars.ContextVar("_collected", default=None)


def _collect(tok: Token) -> Token:
    bucket = _collected.get()
    if bucket is not None and "#" in tok:
        bucket.append(tok)
    return tok


def _comments_of(tokens: Sequence[Token], path: str) -> tuple[Comment, ...]:
    """The comments inside the collected tokens, each with its own span."""
    out: dict[tuple[int, int], Comment] = {}
    for tok in tokens:
        line, column = tok.line or 1, tok.column or 1
        for match in re.finditer(r"#[^\n]*", str(tok)):
            before = str(tok)[: match.start()]
            n = before.count("\n")
            col = match.start() - before.rfind("\n") if n else column + match.start()
            text = match.group().rstrip()
            out[(line + n, col)] = Comment(text, Span(path, line + n, col, line + n, col + len(text)))
    return tuple(out[k] for k in sorted(out))


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("netdsl.grammar").joinpath("seg.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True,
                edit_terminals=_whole_word, lexer_callbacks={name: _collect for name in _COMMENT_TOKENS})


def _token_span(path: str, tok: Token) -> Span:
    line = tok.line or 1
    col = tok.column or 1
    return Span(path, line, col, tok.end_line or line, tok.end_column or col + len(tok))


def _meta_span(path: str, meta: Any) -> Span:
    if getattr(meta, "empty", True):
        return Span(path, 1, 1, 1, 1)
    return Span(path, meta.line, meta.column, meta.end_line, meta.end_column)


_ACTIONS = {"allows": "allow", "allow": "allow", "denies": "deny", "deny": "deny", "passes": "pass",
            "pass": "pass"}


@v_args(meta=True)
class _Build(Transformer[Token, Any]):
    """Turns Lark's tree into the node classes above. Runs once per file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def _span(self, meta: Any) -> Span:
        return _meta_span(self.path, meta)

    def _word(self, tok: Token) -> Word:
        if tok.type == "STRING":
            text = json.loads(tok)
            if any("\ud800" <= ch <= "\udfff" for ch in text):  # a lone surrogate escape: keep as written
                raise json.JSONDecodeError("surrogate", str(tok), 0)
            return Word(text, _token_span(self.path, tok), quoted=True)
        return Word(str(tok), _token_span(self.path, tok))

    # ---- values
    def WORD(self, tok: Token) -> Word:  # noqa: N802 - Lark calls terminal callbacks by name
        return self._word(tok)

    def STRING(self, tok: Token) -> Word:  # noqa: N802
        try:
            return self._word(tok)
        except json.JSONDecodeError:
            # Not a JSON escape: keep the text between the quotes as written.
            return Word(str(tok)[1:-1], _token_span(self.path, tok), quoted=True)

    def DIRECTION(self, tok: Token) -> Word:  # noqa: N802
        return self._word(tok)

    # ---- selectors
    def _req(self, meta: Any, key: Word, op: Any, values: Sequence[Word]) -> Requirement:
        return Requirement(key, op, tuple(values), self._span(meta))

    def req_eq(self, meta: Any, c: list[Any]) -> Requirement:
        return self._req(meta, c[0], "=", [c[1]])

    def req_ne(self, meta: Any, c: list[Any]) -> Requirement:
        return self._req(meta, c[0], "!=", [c[1]])

    def req_in(self, meta: Any, c: list[Any]) -> Requirement:
        return self._req(meta, c[0], "in", c[1])

    def req_notin(self, meta: Any, c: list[Any]) -> Requirement:
        return self._req(meta, c[0], "notin", c[1])

    def req_exists(self, meta: Any, c: list[Any]) -> Requirement:
        return self._req(meta, c[0], "exists", [])

    def req_not_exists(self, meta: Any, c: list[Any]) -> Requirement:
        return self._req(meta, c[0], "!exists", [])

    def value_list(self, meta: Any, c: list[Any]) -> list[Word]:
        return [w for w in c if w is not None]

    def selector(self, meta: Any, c: list[Requirement]) -> Selector:
        return Selector(tuple(c), self._span(meta))

    def bracket_selector(self, meta: Any, c: list[Any]) -> Selector:
        if c[0] is None:
            return Selector((), self._span(meta))
        return Selector(c[0].requirements, self._span(meta))

    def label(self, meta: Any, c: list[Word]) -> Label:
        return Label(c[0], c[1])

    def label_list(self, meta: Any, c: list[Label]) -> tuple[Label, ...]:
        return tuple(c)

    # ---- cidrs
    def except_list(self, meta: Any, c: list[Word]) -> tuple[Word, ...]:
        return tuple(c)

    def cidr_item(self, meta: Any, c: list[Any]) -> CidrItem:
        return CidrItem(c[0], c[1] or (), self._span(meta))

    def cidrs_decl(self, meta: Any, c: list[Any]) -> CidrsDecl:
        return CidrsDecl(c[0], tuple(c[1:]), self._span(meta))

    # ---- peers
    def ns_by_name(self, meta: Any, c: list[Word]) -> NsByName:
        return NsByName(c[0], self._span(meta))

    def ns_by_labels(self, meta: Any, c: list[Selector]) -> NsByLabels:
        return NsByLabels(c[0], self._span(meta))

    def ns_all(self, meta: Any, c: list[Any]) -> NsAll:
        return NsAll(self._span(meta))

    def all_pods(self, meta: Any, c: list[Any]) -> AllPods:
        return AllPods(self._span(meta))

    def ref_peer(self, meta: Any, c: list[Word]) -> RefPeer:
        return RefPeer(c[0], c[0].span)

    def pods_peer(self, meta: Any, c: list[Any]) -> PodsPeer:
        return PodsPeer(c[0], c[1], self._span(meta))

    def all_pods_peer(self, meta: Any, c: list[Any]) -> AllPodsPeer:
        return AllPodsPeer(c[1], self._span(meta))

    def namespace_peer(self, meta: Any, c: list[Any]) -> NamespacePeer:
        return NamespacePeer(c[0], self._span(meta))

    def cidr_peer(self, meta: Any, c: list[CidrItem]) -> CidrPeer:
        return CidrPeer(c[0], self._span(meta))

    def anywhere_peer(self, meta: Any, c: list[Any]) -> AnywherePeer:
        return AnywherePeer(self._span(meta))

    def fqdn_peer(self, meta: Any, c: list[Word]) -> FqdnPeer:
        return FqdnPeer(c[0], self._span(meta))

    def entity_peer(self, meta: Any, c: list[Word]) -> EntityPeer:
        return EntityPeer(c[0], self._span(meta))

    def HTTP_METHOD(self, tok: Token) -> Word:  # noqa: N802
        return self._word(tok)

    def HTTP_PATH(self, tok: Token) -> Word:  # noqa: N802
        return self._word(tok)

    def http_path(self, meta: Any, c: list[Word]) -> Word:
        return c[0]

    def http_header(self, meta: Any, c: list[Word]) -> Word:
        return c[0]

    def http_rule(self, meta: Any, c: list[Any]) -> HttpRule:
        return HttpRule(c[0], c[1], c[2], tuple(c[3:]), self._span(meta))

    def http_rules(self, meta: Any, c: list[HttpRule]) -> tuple[HttpRule, ...]:
        return tuple(c)

    def peers(self, meta: Any, c: list[Peer]) -> tuple[Peer, ...]:
        return tuple(c)

    def port(self, meta: Any, c: list[Word]) -> Word:
        return c[0]

    def ports(self, meta: Any, c: list[Word]) -> tuple[Word, ...]:
        return tuple(c)

    def subjects(self, meta: Any, c: list[Any]) -> Subjects:
        if isinstance(c[0], AllPods):
            return c[0]
        return tuple(c)

    # ---- statements
    def isolate_stmt(self, meta: Any, c: list[Any]) -> IsolateStmt:
        return IsolateStmt(c[0], self._span(meta), c[1])

    def dns_stmt(self, meta: Any, c: list[Any]) -> DnsStmt:
        return DnsStmt(c[0], self._span(meta))

    def service_decl(self, meta: Any, c: list[Any]) -> ServiceDecl:
        return ServiceDecl(c[0], c[1], self._span(meta))

    def group_decl(self, meta: Any, c: list[Word]) -> GroupDecl:
        return GroupDecl(c[0], tuple(c[1:]), self._span(meta))

    def accepts_stmt(self, meta: Any, c: list[Any]) -> FlowStmt:
        return FlowStmt("ingress", c[0], c[1], c[2] or (), self._span(meta), http=c[3] or ())

    def connects_stmt(self, meta: Any, c: list[Any]) -> FlowStmt:
        return FlowStmt("egress", c[0], c[1], c[2] or (), self._span(meta), http=c[3] or ())

    def action_stmt(self, meta: Any, c: list[Any]) -> FlowStmt:
        verb: Word = c[1]
        action: Any = _ACTIONS[verb.text]
        side: Word | None = c[2]
        direction: Any = "ingress" if c[3].text == "from" else "egress"
        return FlowStmt(direction, c[0], c[4], c[5] or (), self._span(meta), action, verb, c[6] or (), side)

    def ACTION(self, tok: Token) -> Word:  # noqa: N802
        return self._word(tok)

    def FROM_TO(self, tok: Token) -> Word:  # noqa: N802
        return self._word(tok)

    def OTHERWISE(self, tok: Token) -> Word:  # noqa: N802
        word = self._word(tok)
        return Word(word.text.split()[-1], word.span)

    def INCLUDING_SYSTEM(self, tok: Token) -> Word:  # noqa: N802
        return self._word(tok)

    def cluster_block(self, meta: Any, c: list[Any]) -> ClusterBlock:
        return ClusterBlock(c[0], c[1] is not None, c[2], self._span(meta))

    def tier_block(self, meta: Any, c: list[Any]) -> TierBlock:
        return TierBlock(c[0], c[1], c[2], tuple(c[3:]), self._span(meta))

    def EXPECTATION(self, tok: Token) -> Word:  # noqa: N802
        return self._word(tok)

    def expect_stmt(self, meta: Any, c: list[Any]) -> ExpectStmt:
        return ExpectStmt(c[0], c[1], c[2], c[3].text == "allowed", self._span(meta))

    def expect_word(self, meta: Any, c: list[Word]) -> Word:
        return c[0]

    def expect_pods(self, meta: Any, c: list[Any]) -> ExpectPods:
        return ExpectPods(c[0], c[1], self._span(meta))

    def expect_any(self, meta: Any, c: list[Any]) -> ExpectPods:
        return ExpectPods(None, c[0], self._span(meta))

    def system_decl(self, meta: Any, c: list[Word]) -> SystemDecl:
        return SystemDecl(tuple(c), self._span(meta))

    def pod_networks_decl(self, meta: Any, c: list[Word]) -> PodNetworksDecl:
        return PodNetworksDecl(tuple(c), self._span(meta))

    def ns_body(self, meta: Any, c: list[Any]) -> tuple[NamespaceStmt, ...]:
        return tuple(c)

    def namespace_block(self, meta: Any, c: list[Any]) -> NamespaceBlock:
        return NamespaceBlock(c[0], c[1] or (), c[2], self._span(meta))

    def start(self, meta: Any, c: list[TopStmt]) -> tuple[TopStmt, ...]:
        return tuple(c)


# ------------------------------------------------------------------------------------------ errors

# Malformed samples -> a friendly message. Lark's match_examples finds the sample whose parser state
# is the same as the failing input's. The table doubles as a test corpus (tests/test_parse.py).
SYNTAX_EXAMPLES: dict[str, list[str]] = {
    "a statement must be inside a `namespace NAME { ... }` block": [
        "isolate\n",
        "service a = app=a\n",
        "a accepts b\n",
        "allow dns\n",
        "namespace n {}\nisolate\n",
        "namespace n {}\na accepts b\n",
    ],
    "expected a namespace name after `namespace`": [
        "namespace\n",
        "namespace {\n}\n",
    ],
    "expected `{`, a newline, or `labels key=value` after the namespace name": [
        "namespace a b\n",
        "namespace a accepts\n",
    ],
    "expected `accepts` or `connects to` after the service names (or `,` and another name)": [
        "namespace n {\n allow dns for a b\n}\n",
        "namespace n {\n a b\n}\n",
        "namespace n {\n a\n}\n",
        "namespace n {\n a, b\n}\n",
        "namespace n {\n a, b c\n}\n",
        "namespace n {\n a connect to b\n}\n",
        "namespace n {\n a accept b\n}\n",
    ],
    "expected `to` after `connects`": [
        "namespace n {\n a connects b\n}\n",
    ],
    "expected a peer: a service name, `pods[...]`, `all pods`, `namespace NAME`, `namespaces[...]`, "
    "`all namespaces`, `cidr CIDR` or `anywhere`": [
        "namespace n {\n a accepts\n}\n",
        "namespace n {\n a connects to\n}\n",
        "namespace n {\n a accepts b,\n}\n",
        "namespace n {\n a accepts [x=y]\n}\n",
    ],
    "expected `,` and another peer, `on PORTS`, or the end of the statement": [
        "namespace n {\n a accepts b c\n}\n",
        "namespace n {\n a accepts b port 80\n}\n",
        "namespace n {\n a accepts b 80\n}\n",
        "namespace n {\n a accepts b : 80\n}\n",
        "namespace n {\n a accepts b, c d\n}\n",
        "namespace n {\n a accepts pods[x=y] z\n}\n",
    ],
    "expected a port after `on` (a number, a range like 8000-9000, a name, or tcp/udp/sctp)": [
        "namespace n {\n a accepts b on\n}\n",
        "namespace n {\n a accepts b on 80,\n}\n",
    ],
    "expected `,` and another port, or the end of the statement": [
        "namespace n {\n a accepts b on 80 443\n}\n",
        "namespace n {\n a accepts b on 80 tcp\n}\n",
        "namespace n {\n a accepts b on 80, 443 8080\n}\n",
    ],
    "expected a label selector after `=`, such as `app=web` or `tier in (a, b)`": [
        "namespace n {\n service a =\n}\n",
        "namespace n {\n service a = ,\n}\n",
    ],
    "expected `=` and a label selector after the service name": [
        "namespace n {\n service a\n}\n",
        "namespace n {\n service a app=a\n}\n",
        "namespace n {\n service\n}\n",
    ],
    "expected `,` and another label requirement, or the end of the selector": [
        "namespace n {\n service a = app=a tier=b\n}\n",
        "namespace n {\n service a = app=a b\n}\n",
        "namespace n {\n a accepts pods[app=a b]\n}\n",
        "namespace n {\n service a = app=a, tier=b c\n}\n",
    ],
    "expected a label value after `=` (quote it if it has spaces or symbols)": [
        "namespace n {\n service a = app=\n}\n",
        "namespace n {\n service a = app=,b\n}\n",
        "namespace n {\n a accepts pods[app=]\n}\n",
        "namespace n {\n service a = app==a\n}\n",
        "namespace n {\n a accepts pods[x=y, z=]\n}\n",
        "namespace n labels a= {\n}\n",
    ],
    "expected a label key after `!` (`!key` means the pod has no such label)": [
        "namespace n {\n service a = !\n}\n",
        "namespace n {\n a accepts pods[!]\n}\n",
    ],
    "expected a parenthesised value list, like `in (a, b)`": [
        "namespace n {\n service a = app in a\n}\n",
        "namespace n {\n service a = app notin a\n}\n",
    ],
    "unclosed `[`: expected `]` after the selector": [
        "namespace n {\n a accepts pods[app=a\n}\n",
    ],
    "expected `[` and a label selector after `pods` / `namespaces`": [
        "namespace n {\n a accepts pods app=a\n}\n",
        "namespace n {\n a accepts namespaces env=a\n}\n",
        "namespace n {\n a accepts pods\n}\n",
    ],
    "expected `pods` or `namespaces` after `all`": [
        "namespace n {\n a accepts all\n}\n",
        "namespace n {\n all accepts b\n}\n",
        "namespace n {\n a accepts all pod\n}\n",
    ],
    "expected `namespace NAME`, `namespaces[...]` or `all namespaces` after `in`": [
        "namespace n {\n a accepts pods[a=b] in\n}\n",
        "namespace n {\n a accepts pods[a=b] in x\n}\n",
    ],
    "expected a CIDR after `cidr`, like 10.0.0.0/8": [
        "namespace n {\n a accepts cidr\n}\n",
        "cidrs x =\n",
    ],
    "expected a CIDR or a parenthesised list of CIDRs after `except`": [
        "namespace n {\n a accepts cidr 10.0.0.0/8 except\n}\n",
    ],
    "expected `ingress`, `egress`, `for` and service names, or the end of the statement after `isolate`": [
        "namespace n {\n isolate both\n}\n",
        "namespace n {\n isolate ingress egress\n}\n",
        "namespace n {\n isolate web\n}\n",
    ],
    "expected service or group names, or `all pods`, after `isolate ... for`": [
        "namespace n {\n isolate for\n}\n",
        "namespace n {\n isolate ingress for\n}\n",
    ],
    "expected `dns` after `allow` (other flows are written `X accepts Y` or `X connects to Y`)": [
        "namespace n {\n allow b\n}\n",
        "namespace n {\n allow\n}\n",
    ],
    "expected `for` and service names, or the end of the statement, after `allow dns`": [
        "namespace n {\n allow dns a\n}\n",
        "namespace n {\n allow dns for\n}\n",
    ],
    "expected `=` and a comma-separated list of service or group names after `group NAME`": [
        "namespace n {\n group g\n}\n",
        "namespace n {\n group g =\n}\n",
        "namespace n {\n group g a, b\n}\n",
    ],
    "expected `,` and another name, or the end of the statement": [
        "namespace n {\n group g = a b\n}\n",
    ],
    "expected `=` and a comma-separated list of CIDRs after `cidrs NAME`": [
        "cidrs x 10.0.0.0/8\n",
        "cidrs\n",
    ],
    "expected `,` and another CIDR, `except`, or the end of the statement": [
        "cidrs x = 10.0.0.0/8 y\n",
        "namespace n {\n a accepts cidr 10.0.0.0/8 y\n}\n",
    ],
    "expected `key=value` labels after `labels`": [
        "namespace n labels {\n}\n",
        "namespace n labels\n",
    ],
    "expected a statement: `isolate`, `allow dns`, `service`, `group`, or a flow like `a accepts b`": [
        "namespace n {\n = a\n}\n",
        "namespace n {\n @\n}\n",
    ],
    "unclosed `{`: the file ended inside a namespace block": [
        "namespace n {\n",
        "namespace n {\n isolate\n",
        "namespace n {\n a accepts b\n",
    ],
    "unexpected `}` with no open block": [
        "}\n",
        "namespace n {\n}\n}\n",
    ],
    "expected the end of the statement (a newline or `;`)": [
        "namespace n {} isolate\n",
    ],
}


def _error_key(exc: UnexpectedInput) -> tuple[int, str] | None:
    """Where the parser was (its LALR state) and what it met: the same mistake gives the same key
    wherever it is in a file, unlike Lark's match_examples, which also compares the stack depth."""
    state = getattr(exc, "state", None)
    position = getattr(state, "position", None)
    if not isinstance(position, int):
        return None
    if isinstance(exc, UnexpectedToken):
        return position, exc.token.type
    if isinstance(exc, UnexpectedEOF):
        return position, "$END"
    return position, "<char>"


@functools.cache
def _example_index() -> tuple[dict[tuple[int, str], str], dict[int, str]]:
    """SYNTAX_EXAMPLES by error key, and by state alone as a fallback (first sample wins)."""
    exact: dict[tuple[int, str], str] = {}
    by_state: dict[int, str] = {}
    for label, samples in SYNTAX_EXAMPLES.items():
        for sample in samples:
            try:
                _parser().parse(sample)
            except UnexpectedInput as exc:
                key = _error_key(exc)
                if key is not None:
                    exact.setdefault(key, label)
                    by_state.setdefault(key[0], label)
    return exact, by_state


def friendly_label(exc: UnexpectedInput) -> str | None:
    key = _error_key(exc)
    if key is None:
        return None
    exact, by_state = _example_index()
    return exact.get(key) or by_state.get(key[0])


def _describe_token(exc: UnexpectedInput) -> str:
    if isinstance(exc, UnexpectedEOF):
        return "end of file"
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            return "end of file"
        if tok.type == "_END":
            return "end of line" if tok.strip() == "" else "`;`"
        text = str(tok).strip()
        if tok.type not in ("WORD", "STRING") and text.isalpha():
            return f"keyword `{text}`"
        return f"`{text}`"
    if isinstance(exc, UnexpectedCharacters):
        return f"character {exc.char!r}"
    return "input"


def _syntax_diagnostic(exc: UnexpectedInput, source: SourceFile) -> Diagnostic:
    line = getattr(exc, "line", None) or 1
    column = getattr(exc, "column", None) or 1
    if line < 1:
        line = len(source.lines) or 1
        column = len(source.line(line)) + 1
    found = _describe_token(exc)
    label = friendly_label(exc)
    hint: str | None = None
    message = f"unexpected {found}"
    if isinstance(exc, UnexpectedCharacters) and exc.char == "'":
        hint = "strings are written in double quotes"
    elif isinstance(exc, UnexpectedCharacters) and exc.char == '"':
        hint = "a string must end on the line where it starts"
    if label:
        message = f"{message}: {label}"
    end_col = column + 1
    if isinstance(exc, UnexpectedToken) and exc.token.type not in ("$END", "_END"):
        end_col = column + max(1, len(str(exc.token).strip()))
    if isinstance(exc, UnexpectedToken) and "WORD" in exc.expected and str(exc.token) in _keywords():
        hint = f"`{exc.token}` is a keyword of the language and cannot be used as a name"
    elif (suggestion := _did_you_mean(exc)) is not None:
        hint = suggestion
    return error("syntax", message, Span(source.path, line, column, line, end_col), hint)


@functools.cache
def _keyword_spellings() -> dict[str, tuple[str, ...]]:
    """Each keyword terminal and the words it stands for (ACTION: allows, allow, denies, ...): the words of
    its pattern before the boundary lookahead that the terminal matches on their own."""
    out: dict[str, tuple[str, ...]] = {}
    for t in _parser().terminals:
        body = t.pattern.to_regexp()
        if not body.endswith(_WORD_BOUNDARY):
            continue
        words = re.findall(r"[A-Za-z]{2,}(?: [A-Za-z]{2,})*", body[: -len(_WORD_BOUNDARY)])
        if spellings := tuple(w for w in dict.fromkeys(words) if re.fullmatch(body, w)):
            out[t.name] = spellings
    return out


@functools.cache
def _keywords() -> frozenset[str]:
    return frozenset(w for spellings in _keyword_spellings().values() for w in spellings)


def _did_you_mean(exc: UnexpectedInput) -> str | None:
    """A word where the parser wanted a keyword: the keyword it is closest to (`acceptsb`, `acept`)."""
    if not isinstance(exc, UnexpectedToken) or exc.token.type != "WORD":
        return None
    text = str(exc.token)
    spellings = _keyword_spellings()
    wanted = sorted({w for name in exc.expected for w in spellings.get(name, ())})
    glued = [w for w in wanted if text.startswith(w) and len(text) > len(w)]
    if glued:  # `acceptsb`: a keyword run together with the next word
        word = max(glued, key=len)
        rest = text[len(word):]
        return f"did you mean `{word}`? A keyword is a whole word: write `{word} {rest}` if `{rest}` is a name"
    close = difflib.get_close_matches(text, wanted, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


MAX_SYNTAX_ERRORS = 20

# No name, number, port, CIDR or label is near this long (a DNS name has at most 253 characters); the
# limit keeps every word far below Python's 4,300-digit limit on converting text to an integer.
MAX_WORD_LENGTH = 1000


def _overlong_words(tree: lark.Tree[Token], path: str) -> list[Diagnostic]:
    return [
        error("limit", f"a word of {len(tok):,} characters (`{str(tok)[:20]}...`): the limit is "
              f"{MAX_WORD_LENGTH:,}", _token_span(path, tok), "no name, number or value is that long")
        for tok in tree.scan_values(lambda v: isinstance(v, Token) and v.type == "WORD")
        if len(tok) > MAX_WORD_LENGTH
    ]


def parse(source: SourceFile) -> tuple[Module | None, list[Diagnostic]]:
    """Parse one file. On syntax errors, report up to MAX_SYNTAX_ERRORS of them (each offending line
    is blanked and the parse retried, so later independent mistakes are found too) and return None."""
    text = source.text
    diagnostics: list[Diagnostic] = []
    seen_lines: set[int] = set()
    while True:
        collected: list[Token] = []
        reset = _collected.set(collected)
        try:
            tree = _parser().parse(text)
        except UnexpectedInput as exc:
            d = _syntax_diagnostic(exc, source)
            assert d.span is not None
            if d.span.line in seen_lines:
                break
            seen_lines.add(d.span.line)
            diagnostics.append(d)
            if len(diagnostics) >= MAX_SYNTAX_ERRORS:
                break
            lines = text.split("\n")
            idx = d.span.line - 1
            if not 0 <= idx < len(lines):
                break
            # Keep braces so the block structure survives; blank the rest of the offending line.
            lines[idx] = "".join(ch if ch in "{}" else " " for ch in lines[idx])
            text = "\n".join(lines)
            continue
        finally:
            _collected.reset(reset)
        if diagnostics:
            return None, diagnostics
        if overlong := _overlong_words(tree, source.path):
            return None, overlong
        statements = _Build(source.path).transform(tree)
        return Module(source, statements, _comments_of(collected, source.path)), []
    return None, diagnostics
