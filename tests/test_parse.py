"""The parser: the SYNTAX_EXAMPLES table as a corpus, node shapes of valid programs, and properties
(a random valid program round-trips through text; arbitrary text never raises)."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdsl import parse as syn
from netdsl.compiler import compile_paths
from netdsl.diagnostics import Severity
from netdsl.parse import SYNTAX_EXAMPLES, parse
from netdsl.source import SourceFile


def parse_text(text: str, path: str = "t.seg") -> tuple[syn.Module | None, list[Any]]:
    return parse(SourceFile(path, text))


def parse_ok(text: str) -> syn.Module:
    module, diags = parse_text(text)
    assert diags == [], [d.message for d in diags]
    assert module is not None
    return module


def only_ns_stmts(text: str) -> tuple[syn.NamespaceStmt, ...]:
    block, *expectations = parse_ok(text).statements
    assert all(isinstance(e, syn.ExpectStmt) for e in expectations)
    assert isinstance(block, syn.NamespaceBlock)
    return block.statements


def flow(text: str) -> syn.FlowStmt:
    """The single statement of `namespace n { <text> }`, which must be a flow."""
    (stmt,) = only_ns_stmts("namespace n {\n" + text + "\n}\n")
    assert isinstance(stmt, syn.FlowStmt)
    return stmt


def reqs(sel: syn.Selector) -> list[tuple[str, str, list[str]]]:
    return [(r.key.text, r.operator, [v.text for v in r.values]) for r in sel.requirements]


# ------------------------------------------------------------------------------ the examples table

SAMPLES = [(label, sample) for label, samples in SYNTAX_EXAMPLES.items() for sample in samples]


@pytest.mark.parametrize(("label", "sample"), SAMPLES, ids=[repr(s) for _, s in SAMPLES])
def test_syntax_example_fails_with_its_own_label(label: str, sample: str) -> None:
    module, diags = parse_text(sample)
    assert module is None, "a sample of SYNTAX_EXAMPLES parses: it is not an example of an error"
    assert diags, "a failed parse must report at least one diagnostic"
    first = diags[0]
    assert first.code == "syntax"
    assert first.severity is Severity.ERROR
    assert first.message.startswith("unexpected ")
    assert first.message.endswith(": " + label), (
        f"sample {sample!r} is labelled {first.message!r}; another sample in the same parser state "
        "comes earlier in the table"
    )


def test_syntax_examples_are_unique() -> None:
    samples = [s for _, s in SAMPLES]
    assert len(samples) == len(set(samples))


# Errors that are not themselves table samples but must still get the right label.
@pytest.mark.parametrize(
    ("text", "label_start"),
    [
        ("namespace n {}\nfoo\n", "a statement must be inside"),
        ("namespace n {\n a accepts on 80\n}\n", "expected `,` and another peer"),  # `on` is a name there
        ("namespace n {\n a accepts b, c on 80 90\n}\n", "expected `,` and another port"),
        ("namespace n {\n a, b, c accepts\n}\n", "expected a peer"),
        ("namespace n {\n [x]\n}\n", "expected a statement"),
        ("namespace n {\n a accepts b\n", "unclosed `{`"),
        ("namespace n {\n isolate\n a accepts b c\n}\n", "expected `,` and another peer"),
    ],
)
def test_unlisted_errors_get_the_right_label(text: str, label_start: str) -> None:
    _, diags = parse_text(text)
    assert diags
    _, _, label = diags[0].message.partition(": ")
    assert label.startswith(label_start), diags[0].message


def test_labels_do_not_depend_on_what_precedes_the_block() -> None:
    _, diags = parse_text("# a comment\nnamespace n {\n a accepts b c\n}\n")
    assert diags[0].message.endswith(
        ": expected `,` and another peer, `on PORTS`, or the end of the statement"
    )


def test_syntax_error_position_and_span() -> None:
    _, diags = parse_text("namespace n {\n  a accepts b port 80\n}\n")
    (d,) = diags
    assert (d.span.line, d.span.column, d.span.end_line, d.span.end_column) == (2, 15, 2, 19)
    assert d.message.startswith("unexpected `port`: ")


def test_unexpected_keyword_is_called_a_keyword() -> None:
    _, diags = parse_text("namespace n {\n a accepts b pods\n}\n")
    assert diags and diags[0].message.startswith("unexpected keyword `pods`: ")
    _, diags = parse_text("namespace n {\n a accepts b\n}\n}\n")
    assert diags and diags[0].message.startswith("unexpected `}`: ")


def test_several_syntax_errors_are_all_reported() -> None:
    text = "namespace n {\n a accepts b c\n service x = app=\n isolate both\n allow dns a\n}\n"
    _, diags = parse_text(text)
    assert [d.span.line for d in diags] == [2, 3, 4, 5]
    assert all(d.code == "syntax" for d in diags)


def test_syntax_errors_are_capped() -> None:
    text = "namespace n {\n" + "a accepts b c\n" * (syn.MAX_SYNTAX_ERRORS + 10) + "}\n"
    _, diags = parse_text(text)
    assert len(diags) == syn.MAX_SYNTAX_ERRORS


# ------------------------------------------------------------------------------ node shapes


def test_three_tier_example_shape() -> None:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "examples" / "three-tier.seg").read_text(encoding="utf-8")
    block, *expectations = parse_ok(text).statements
    assert all(isinstance(e, syn.ExpectStmt) for e in expectations)
    assert isinstance(block, syn.NamespaceBlock)
    assert block.name.text == "production"
    kinds = [type(s).__name__ for s in block.statements]
    assert kinds == [
        "IsolateStmt",
        "ServiceDecl",
        "ServiceDecl",
        "ServiceDecl",
        "GroupDecl",
        "DnsStmt",
        "FlowStmt",
        "FlowStmt",
        "FlowStmt",
    ]


def test_peers_and_form_vs_or_form() -> None:
    and_form = flow("a accepts pods[a=b] in namespace x")
    (peer,) = and_form.peers
    assert isinstance(peer, syn.PodsPeer)
    assert reqs(peer.selector) == [("a", "=", ["b"])]
    assert isinstance(peer.scope, syn.NsByName) and peer.scope.name.text == "x"

    or_form = flow("a accepts pods[a=b], namespace x")
    first, second = or_form.peers
    assert isinstance(first, syn.PodsPeer) and first.scope is None
    assert isinstance(second, syn.NamespacePeer)
    assert isinstance(second.scope, syn.NsByName) and second.scope.name.text == "x"


def test_peer_kinds() -> None:
    f = flow(
        "a connects to b, other/svc, all pods, all pods in all namespaces, namespaces[env=prod], "
        "all namespaces, cidr 10.0.0.0/8, anywhere on 80, 443/tcp, 53/udp, 8000-9000, http, udp"
    )
    assert f.direction == "egress"
    assert f.subjects == (f.subjects[0],) and f.subjects[0].text == "a"
    shapes = [type(p).__name__ for p in f.peers]
    assert shapes == [
        "RefPeer",
        "RefPeer",
        "AllPodsPeer",
        "AllPodsPeer",
        "NamespacePeer",
        "NamespacePeer",
        "CidrPeer",
        "AnywherePeer",
    ]
    assert f.peers[1].name.text == "other/svc"
    assert f.peers[2].scope is None
    assert isinstance(f.peers[3].scope, syn.NsAll)
    assert isinstance(f.peers[4].scope, syn.NsByLabels)
    assert reqs(f.peers[4].scope.selector) == [("env", "=", ["prod"])]
    assert isinstance(f.peers[5].scope, syn.NsAll)
    assert [w.text for w in f.ports] == ["80", "443/tcp", "53/udp", "8000-9000", "http", "udp"]


def test_all_pods_subject_and_accepts() -> None:
    f = flow("all pods accepts anywhere")
    assert f.direction == "ingress"
    assert isinstance(f.subjects, syn.AllPods)
    assert f.ports == ()


def test_selector_operators() -> None:
    (svc,) = only_ns_stmts(
        "namespace n {\n service s = a=b, c!=d, e in (f, g), h notin (i), j, !k, l in ()\n}\n"
    )
    assert isinstance(svc, syn.ServiceDecl)
    assert reqs(svc.selector) == [
        ("a", "=", ["b"]),
        ("c", "!=", ["d"]),
        ("e", "in", ["f", "g"]),
        ("h", "notin", ["i"]),
        ("j", "exists", []),
        ("k", "!exists", []),
        ("l", "in", []),
    ]


def test_empty_bracket_selector() -> None:
    (peer,) = flow("a accepts pods[]").peers
    assert isinstance(peer, syn.PodsPeer) and peer.selector.requirements == ()


def test_quoted_values() -> None:
    (svc,) = only_ns_stmts('namespace n {\n service s = app="my web", tier in ("a b", c), x=""\n}\n')
    assert isinstance(svc, syn.ServiceDecl)
    values = [v for r in svc.selector.requirements for v in r.values]
    assert [(v.text, v.quoted) for v in values] == [("my web", True), ("a b", True), ("c", False), ("", True)]
    # JSON escapes are decoded; the span covers the quotes.
    (svc,) = only_ns_stmts('namespace n {\n service s = app="a\\"b\\u00e9"\n}\n')
    (value,) = svc.selector.requirements[0].values
    assert value.text == 'a"bé'
    assert (value.span.column, value.span.end_column) == (18, 30)


def test_namespace_labels_and_bare_declaration() -> None:
    first, second = parse_ok(
        'namespace mon labels team=obs, tier=x\nnamespace n labels a="b c" {\n}\n'
    ).statements
    assert isinstance(first, syn.NamespaceBlock) and isinstance(second, syn.NamespaceBlock)
    assert first.statements == ()
    assert [(lab.key.text, lab.value.text) for lab in first.labels] == [("team", "obs"), ("tier", "x")]
    assert [(lab.key.text, lab.value.text, lab.value.quoted) for lab in second.labels] == [("a", "b c", True)]


def test_cidr_except_lists() -> None:
    (decl, block) = parse_ok(
        "cidrs office = 10.0.0.0/8 except 10.1.0.0/16, 192.168.0.0/16 except (192.168.1.0/24,\n"
        "    192.168.2.0/24), 172.16.0.0/12\n"
        "namespace n {\n a connects to cidr 10.0.0.0/8 except (10.1.0.0/16), office\n}\n"
    ).statements
    assert isinstance(decl, syn.CidrsDecl) and decl.name.text == "office"
    assert [(i.cidr.text, [e.text for e in i.excepts]) for i in decl.items] == [
        ("10.0.0.0/8", ["10.1.0.0/16"]),
        ("192.168.0.0/16", ["192.168.1.0/24", "192.168.2.0/24"]),
        ("172.16.0.0/12", []),
    ]
    (stmt,) = block.statements
    cidr, ref = stmt.peers
    assert isinstance(cidr, syn.CidrPeer) and [e.text for e in cidr.item.excepts] == ["10.1.0.0/16"]
    assert isinstance(ref, syn.RefPeer) and ref.name.text == "office"


def test_multi_line_continuation_after_commas() -> None:
    f = flow("a,\n  b accepts c,   # the web tier\n\n  d,\n  e on 80,\n  443")
    assert [w.text for w in f.subjects] == ["a", "b"]
    assert [p.name.text for p in f.peers] == ["c", "d", "e"]
    assert [w.text for w in f.ports] == ["80", "443"]
    assert f.span.line == 2 and f.span.end_line >= 7
    assert f.peers[2].span.line == 6
    assert (f.ports[1].span.line, f.ports[1].span.column) == (7, 3)


def test_continuation_inside_parentheses_and_backslash() -> None:
    (svc, iso) = only_ns_stmts(
        "namespace n {\n service s = a in (\n  x,\n  y\n )\n isolate \\\n  ingress\n}\n"
    )
    assert reqs(svc.selector) == [("a", "in", ["x", "y"])]
    assert isinstance(iso, syn.IsolateStmt) and iso.direction is not None and iso.direction.text == "ingress"


def test_semicolon_separators() -> None:
    module = parse_ok(
        "cidrs x = 10.0.0.0/8; namespace n { isolate egress; allow dns for a, b; a accepts x; }; "
        "namespace m {}\n"
    )
    cidrs, n, m = module.statements
    assert isinstance(cidrs, syn.CidrsDecl)
    assert [type(s).__name__ for s in n.statements] == ["IsolateStmt", "DnsStmt", "FlowStmt"]
    assert n.statements[0].direction.text == "egress"
    dns = n.statements[1]
    assert isinstance(dns, syn.DnsStmt) and [w.text for w in dns.subjects] == ["a", "b"]
    assert m.name.text == "m" and m.statements == ()


def test_comments_and_blank_lines() -> None:
    module = parse_ok(
        "# header\n\n   # indented\nnamespace n { # after brace\n\n  # inside\n  isolate # trailing\n}"
        "  # after block\n# no newline at the end"
        "\n"
    )
    (block,) = module.statements
    (iso,) = block.statements
    assert isinstance(iso, syn.IsolateStmt) and iso.direction is None
    assert iso.span.line == 7


def test_names_that_start_with_keywords() -> None:
    f = flow("allx, pods-a accepts namespaces-b, on-prem, ingress-nginx, cidr-set, anywhere2 on http-alt")
    assert [w.text for w in f.subjects] == ["allx", "pods-a"]
    assert [p.name.text for p in f.peers] == [
        "namespaces-b",
        "on-prem",
        "ingress-nginx",
        "cidr-set",
        "anywhere2",
    ]
    assert [w.text for w in f.ports] == ["http-alt"]


def test_spans() -> None:
    (block,) = parse_ok("namespace n {\n  service web = app=web\n}\n").statements
    (svc,) = block.statements
    assert (svc.span.line, svc.span.column) == (2, 3)
    assert (svc.name.span.line, svc.name.span.column, svc.name.span.end_column) == (2, 11, 14)
    req = svc.selector.requirements[0]
    assert (req.span.column, req.span.end_column) == (17, 24)
    assert (block.name.span.line, block.name.span.column) == (1, 11)


def test_empty_and_comment_only_files_parse_to_nothing() -> None:
    assert parse_ok("").statements == ()
    assert parse_ok("# only\n# comments").statements == ()
    assert parse_ok("\n\n;\n").statements == ()


# ------------------------------------------------------------------------------ round trip property
#
# A program is generated as plain data (tuples), rendered to text with random but valid layout, parsed,
# and the syntax tree is turned back into the same plain data.

KEYWORDS = frozenset(
    {
        "namespace",
        "namespaces",
        "labels",
        "isolate",
        "allow",
        "dns",
        "for",
        "service",
        "group",
        "accepts",
        "connects",
        "to",
        "pods",
        "in",
        "notin",
        "all",
        "cidr",
        "cidrs",
        "anywhere",
        "on",
        "except",
        "ingress",
        "egress",
    }
)

_word_tail = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", max_size=8)
names = st.one_of(
    st.builds(lambda h, t: h + t, st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_"), _word_tail),
    st.sampled_from(sorted(KEYWORDS)).map(lambda k: k + "-x"),  # keyword prefixes must stay names
    st.sampled_from(["Web", "a.b", "x_y", "9lives", "a*b", "kubernetes.io/name", "fe80::1/64"]),
).filter(lambda w: w not in KEYWORDS)
ref_names = st.one_of(
    names, st.builds(lambda a, b: f"{a}/{b}", names, names).filter(lambda w: w.count(":") == 0)
)
# Quoted strings: any text, written with JSON escapes (what the lexer accepts and the parser decodes).
strings = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
values = st.one_of(names.map(lambda w: (w, False)), strings.map(lambda s: (s, True)))
value_lists = st.lists(values, max_size=3).map(tuple)

requirements = st.one_of(
    st.tuples(names, st.sampled_from(["=", "!="]), values.map(lambda v: (v,))),
    st.tuples(names, st.sampled_from(["in", "notin"]), value_lists),
    st.tuples(names, st.sampled_from(["exists", "!exists"]), st.just(())),
)
selectors = st.lists(requirements, min_size=1, max_size=3).map(tuple)
bracket_selectors = st.lists(requirements, max_size=3).map(tuple)

cidrs = st.builds(
    lambda a, b, n: f"{a}.{b}.0.0/{n}", st.integers(0, 255), st.integers(0, 255), st.integers(0, 32)
) | st.sampled_from(["2001:db8::/32", "0.0.0.0/0", "10.0.0.0/8"])
cidr_items = st.tuples(cidrs, st.lists(cidrs, max_size=3).map(tuple))

scopes = st.one_of(
    st.tuples(st.just("name"), names),
    st.tuples(st.just("labels"), bracket_selectors),
    st.just(("all",)),
)
peers = st.one_of(
    st.tuples(st.just("ref"), ref_names),
    st.tuples(st.just("pods"), bracket_selectors, st.none() | scopes),
    st.tuples(st.just("allpods"), st.none() | scopes),
    st.tuples(st.just("ns"), scopes),
    st.tuples(st.just("cidr"), cidr_items),
    st.just(("anywhere",)),
)
ports = st.one_of(
    st.integers(0, 99999).map(str),
    st.builds(lambda a, b: f"{a}-{b}", st.integers(1, 65535), st.integers(1, 65535)),
    st.sampled_from(["http", "tcp", "udp", "sctp", "53/udp", "80/TCP", "dns-tcp"]),
)
subjects = st.one_of(st.just("ALL"), st.lists(names, min_size=1, max_size=3).map(tuple))

ns_statements = st.one_of(
    st.tuples(st.just("isolate"), st.sampled_from([None, "ingress", "egress"])),
    st.tuples(st.just("dns"), st.none() | subjects),
    st.tuples(st.just("service"), names, selectors),
    st.tuples(st.just("group"), names, st.lists(names, min_size=1, max_size=4).map(tuple)),
    st.tuples(
        st.just("flow"),
        st.sampled_from(["ingress", "egress"]),
        subjects,
        st.lists(peers, min_size=1, max_size=4).map(tuple),
        st.lists(ports, max_size=4).map(tuple),
    ),
)
labels = st.lists(st.tuples(names, values), max_size=3).map(tuple)
top_statements = st.one_of(
    st.tuples(st.just("cidrs"), names, st.lists(cidr_items, min_size=1, max_size=3).map(tuple)),
    st.tuples(st.just("namespace"), names, labels, st.lists(ns_statements, max_size=6).map(tuple)),
)
programs = st.lists(top_statements, max_size=5).map(tuple)


@dataclass
class Layout:
    """Random but valid choices of whitespace, separators and comments."""

    rng: random.Random

    def sp(self) -> str:
        return self.rng.choice([" ", " ", "  ", "\t", " \\\n  "])

    def comma(self) -> str:
        return self.rng.choice([", ", ",", " , ", ",\n    ", ", # note\n  ", ",\n\n\t"])

    def end(self) -> str:
        return self.rng.choice(["\n", "\n", ";", "; ", "  # comment\n", "\n\n", " ;\n"])

    def lparen(self) -> str:
        return self.rng.choice(["(", "( ", "(\n  "])

    def rparen(self) -> str:
        return self.rng.choice([")", " )", "\n)"])

    def join(self, items: list[str]) -> str:
        out = items[0]
        for item in items[1:]:
            out += self.comma() + item
        return out


def r_value(value: tuple[str, bool]) -> str:
    text, quoted = value
    return json.dumps(text) if quoted else text


def r_requirement(lay: Layout, req: tuple[Any, ...]) -> str:
    key, op, vals = req
    if op in ("=", "!="):
        return f"{key}{op}{r_value(vals[0])}"
    if op in ("in", "notin"):
        inner = lay.join([r_value(v) for v in vals]) if vals else ""
        return f"{key}{lay.sp()}{op}{lay.sp()}{lay.lparen()}{inner}{lay.rparen()}"
    return key if op == "exists" else f"!{key}"


def r_selector(lay: Layout, sel: tuple[Any, ...]) -> str:
    return lay.join([r_requirement(lay, r) for r in sel])


def r_bracket(lay: Layout, sel: tuple[Any, ...]) -> str:
    return "[" + (r_selector(lay, sel) if sel else "") + "]"


def r_cidr_item(lay: Layout, item: tuple[Any, ...]) -> str:
    cidr, excepts = item
    if not excepts:
        return cidr
    if len(excepts) == 1 and lay.rng.random() < 0.5:
        return f"{cidr}{lay.sp()}except{lay.sp()}{excepts[0]}"
    return f"{cidr}{lay.sp()}except{lay.sp()}{lay.lparen()}{lay.join(list(excepts))}{lay.rparen()}"


def r_scope(lay: Layout, scope: tuple[Any, ...]) -> str:
    if scope[0] == "name":
        return f"namespace{lay.sp()}{scope[1]}"
    if scope[0] == "labels":
        return "namespaces" + r_bracket(lay, scope[1])
    return f"all{lay.sp()}namespaces"


def r_peer(lay: Layout, peer: tuple[Any, ...]) -> str:
    kind = peer[0]
    if kind == "ref":
        return peer[1]
    if kind == "pods":
        scope = "" if peer[2] is None else f"{lay.sp()}in{lay.sp()}{r_scope(lay, peer[2])}"
        return "pods" + r_bracket(lay, peer[1]) + scope
    if kind == "allpods":
        scope = "" if peer[1] is None else f"{lay.sp()}in{lay.sp()}{r_scope(lay, peer[1])}"
        return f"all{lay.sp()}pods{scope}"
    if kind == "ns":
        return r_scope(lay, peer[1])
    if kind == "cidr":
        return f"cidr{lay.sp()}{r_cidr_item(lay, peer[1])}"
    return "anywhere"


def r_subjects(lay: Layout, subj: Any) -> str:
    return f"all{lay.sp()}pods" if subj == "ALL" else lay.join(list(subj))


def r_ns_statement(lay: Layout, stmt: tuple[Any, ...]) -> str:
    kind = stmt[0]
    if kind == "isolate":
        return "isolate" + ("" if stmt[1] is None else lay.sp() + stmt[1])
    if kind == "dns":
        return f"allow{lay.sp()}dns" + (
            "" if stmt[1] is None else f"{lay.sp()}for{lay.sp()}{r_subjects(lay, stmt[1])}"
        )
    if kind == "service":
        return f"service{lay.sp()}{stmt[1]}{lay.sp()}={lay.sp()}{r_selector(lay, stmt[2])}"
    if kind == "group":
        return f"group{lay.sp()}{stmt[1]}{lay.sp()}={lay.sp()}{lay.join(list(stmt[2]))}"
    _, direction, subj, prs, prts = stmt
    verb = "accepts" if direction == "ingress" else f"connects{lay.sp()}to"
    text = f"{r_subjects(lay, subj)}{lay.sp()}{verb}{lay.sp()}{lay.join([r_peer(lay, p) for p in prs])}"
    if prts:
        text += f"{lay.sp()}on{lay.sp()}{lay.join(list(prts))}"
    return text


def render(program: tuple[Any, ...], seed: int) -> str:
    lay = Layout(random.Random(seed))
    out = lay.rng.choice(["", "# generated\n", "\n"])
    for top in program:
        if top[0] == "cidrs":
            out += f"cidrs{lay.sp()}{top[1]}{lay.sp()}={lay.sp()}"
            out += lay.join([r_cidr_item(lay, i) for i in top[2]]) + lay.end()
            continue
        _, name, labs, body = top
        out += f"namespace{lay.sp()}{name}"
        if labs:
            out += f"{lay.sp()}labels{lay.sp()}" + lay.join([f"{k}={r_value(v)}" for k, v in labs])
        if not body and lay.rng.random() < 0.5:
            out += lay.end()  # a bare declaration
            continue
        out += lay.sp() + "{" + lay.rng.choice(["", "\n", " ", "\n\n  "])
        for stmt in body:
            out += lay.rng.choice(["", "  ", "\t"]) + r_ns_statement(lay, stmt) + lay.end()
        out += "}" + lay.end()
    return out


# ---- the syntax tree back to plain data


def s_value(w: syn.Word) -> tuple[str, bool]:
    return (w.text, w.quoted)


def s_selector(sel: syn.Selector) -> tuple[Any, ...]:
    return tuple((r.key.text, r.operator, tuple(s_value(v) for v in r.values)) for r in sel.requirements)


def s_cidr_item(item: syn.CidrItem) -> tuple[Any, ...]:
    return (item.cidr.text, tuple(e.text for e in item.excepts))


def s_scope(scope: syn.NamespaceScope | None) -> tuple[Any, ...] | None:
    if scope is None:
        return None
    if isinstance(scope, syn.NsByName):
        return ("name", scope.name.text)
    if isinstance(scope, syn.NsByLabels):
        return ("labels", s_selector(scope.selector))
    return ("all",)


def s_peer(peer: syn.Peer) -> tuple[Any, ...]:
    if isinstance(peer, syn.RefPeer):
        return ("ref", peer.name.text)
    if isinstance(peer, syn.PodsPeer):
        return ("pods", s_selector(peer.selector), s_scope(peer.scope))
    if isinstance(peer, syn.AllPodsPeer):
        return ("allpods", s_scope(peer.scope))
    if isinstance(peer, syn.NamespacePeer):
        return ("ns", s_scope(peer.scope))
    if isinstance(peer, syn.CidrPeer):
        return ("cidr", s_cidr_item(peer.item))
    return ("anywhere",)


def s_subjects(subj: syn.Subjects) -> Any:
    return "ALL" if isinstance(subj, syn.AllPods) else tuple(w.text for w in subj)


def s_ns_statement(stmt: syn.NamespaceStmt) -> tuple[Any, ...]:
    if isinstance(stmt, syn.IsolateStmt):
        return ("isolate", None if stmt.direction is None else stmt.direction.text)
    if isinstance(stmt, syn.DnsStmt):
        return ("dns", None if stmt.subjects is None else s_subjects(stmt.subjects))
    if isinstance(stmt, syn.ServiceDecl):
        return ("service", stmt.name.text, s_selector(stmt.selector))
    if isinstance(stmt, syn.GroupDecl):
        return ("group", stmt.name.text, tuple(w.text for w in stmt.members))
    return (
        "flow",
        stmt.direction,
        s_subjects(stmt.subjects),
        tuple(s_peer(p) for p in stmt.peers),
        tuple(w.text for w in stmt.ports),
    )


def shape(module: syn.Module) -> tuple[Any, ...]:
    out: list[tuple[Any, ...]] = []
    for top in module.statements:
        if isinstance(top, syn.CidrsDecl):
            out.append(("cidrs", top.name.text, tuple(s_cidr_item(i) for i in top.items)))
        else:
            out.append(
                (
                    "namespace",
                    top.name.text,
                    tuple((lab.key.text, s_value(lab.value)) for lab in top.labels),
                    tuple(s_ns_statement(s) for s in top.statements),
                )
            )
    return tuple(out)


def _spans_within(module: syn.Module, text: str) -> None:
    n_lines = text.count("\n") + 1
    for top in module.statements:
        for span in (top.span, top.name.span):
            assert 1 <= span.line <= span.end_line <= n_lines


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.integers(0, 2**32))
def test_round_trip(program: tuple[Any, ...], seed: int) -> None:
    text = render(program, seed)
    module, diags = parse_text(text)
    assert diags == [], (text, [d.message for d in diags])
    assert module is not None
    assert shape(module) == program, text
    _spans_within(module, text)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text: str) -> None:
    module, diags = parse_text(text)
    assert (module is None) == bool(diags)
    for d in diags:
        assert d.code == "syntax" and d.span is not None and d.span.line >= 1 and d.span.column >= 1


_fragments = st.sampled_from(
    [
        "namespace",
        "n",
        "{",
        "}",
        "\n",
        ";",
        ",",
        "(",
        ")",
        "[",
        "]",
        "=",
        "!=",
        "!",
        "in",
        "notin",
        "pods",
        "all",
        "namespaces",
        "accepts",
        "connects",
        "to",
        "on",
        "80",
        "cidr",
        "10.0.0.0/8",
        "except",
        "service",
        "group",
        "isolate",
        "ingress",
        "allow",
        "dns",
        "for",
        "anywhere",
        "labels",
        "cidrs",
        '"x"',
        "#c",
        " ",
        "\t",
        "\\\n",
        "a",
        "b",
        "\u2028",
        "\x00",
        "é",
        '"',
    ]
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_fragments, max_size=40).map(" ".join))
def test_token_soup_never_raises(text: str) -> None:
    module, diags = parse_text(text)
    assert (module is None) == bool(diags)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.integers(0, 2**32))
def test_valid_syntax_never_crashes_the_compiler(
    tmp_path_factory: Any, program: tuple[Any, ...], seed: int
) -> None:
    """Whatever the names and values mean, lowering and the backend report problems, never raise."""
    path = tmp_path_factory.mktemp("p") / "p.seg"
    path.write_text(render(program, seed), encoding="utf-8")
    result = compile_paths([str(path)], "vanilla")
    assert result.ok == (not any(d.is_error for d in result.diagnostics))
    for d in result.diagnostics:
        assert d.code not in ("internal", "syntax"), d
        assert d.span is not None or d.code in ("io-error", "output")


# ------------------------------------------------------------------------------------------ keywords are whole words


def _words(node: object) -> set[str]:
    """Every Word's text in a syntax tree."""
    if isinstance(node, syn.Word):
        return {node.text}
    if isinstance(node, tuple):
        return set().union(*(_words(n) for n in node)) if node else set()
    if hasattr(node, "__dataclass_fields__") and not isinstance(node, SourceFile):
        return set().union(*(_words(getattr(node, f)) for f in node.__dataclass_fields__)) or set()
    return set()


def _keyword_sites() -> list[tuple[str, int, str]]:
    """(file, offset just after a keyword, keyword) for every keyword outside comments and strings in the
    bundled examples."""
    spellings = sorted(syn._keywords(), key=len, reverse=True)
    pattern = re.compile(r"(?<![\w.\/:*-])(" + "|".join(map(re.escape, spellings)) + r")(?![\w.\/:*-])")
    sites = []
    root = Path(__file__).parent.parent / "examples"
    for path in sorted(root.rglob("*.seg")):
        text = path.read_text(encoding="utf-8")
        offset = 0
        for line in text.split("\n"):
            code = line.split("#")[0]
            if '"' not in code:
                sites.extend((str(path), offset + m.end(), m.group()) for m in pattern.finditer(code))
            offset += len(line) + 1
    return sites


def test_a_keyword_glued_to_the_next_word_is_never_read_as_the_keyword() -> None:
    """Class fix (issue 9): the lexer used to take a keyword's prefix of a longer word wherever no name
    could come, so `a acceptsb` compiled as `a accepts b`. Now a keyword followed by any character of a
    name is not the keyword: either a syntax error or, where a name may stand, that whole word as a name."""
    sites = _keyword_sites()
    assert len(sites) > 100
    for path, end, keyword in sites:
        text = Path(path).read_text(encoding="utf-8")
        glued = text[:end] + "x" + text[end:]
        module, diags = parse_text(glued)
        if module is not None:
            assert keyword + "x" in _words(module.statements), (path, keyword, end)
        else:
            assert diags and diags[0].code == "syntax"


@pytest.mark.parametrize("statement, hint", [
    ("a acceptsb", "did you mean `accepts`? A keyword is a whole word: write `accepts b` if `b` is a name"),
    ("a acept b", "did you mean `accepts`?"),
    ("a accept b", "did you mean `accepts`?"),
    ("a conects to b", "did you mean `connects`?"),
    ("a connects tob", "did you mean `to`? A keyword is a whole word: write `to b` if `b` is a name"),
    ("a dennies from b", "did you mean `denies`?"),
    ("isolate ingres", "did you mean `ingress`?"),
])
def test_a_misspelt_keyword_is_an_error_with_did_you_mean(statement: str, hint: str) -> None:
    _, diags = parse_text(f"namespace n {{\n service a = app=a\n service b = app=b\n {statement}\n}}\n")
    (d,) = diags
    assert d.code == "syntax" and d.span.line == 4
    assert d.hint == hint


def test_acceptsb_does_not_compile() -> None:
    text = "namespace n {\n service a = app=a\n service b = app=b\n a acceptsb\n}\n"
    result = compile_paths(["-"], "vanilla", stdin=text.encode())
    assert not result.ok and result.manifests == []


def test_a_comment_with_parentheses_after_a_statement_is_only_a_comment() -> None:
    """`)` inside a comment line never closes a value list: the `_RPAREN` token only swallows whole
    comment lines (a regression where `# x (y) z` after a service line was a syntax error)."""
    text = ("namespace a {\n  service f = app=f\n  # x (y) z\n  service g = app in (a, # one (1)\n    b)\n"
            "  f accepts g\n}\n")
    module, diagnostics = parse(SourceFile("c.seg", text))
    assert module is not None and not diagnostics


# ------------------------------------------------------------------------------------------ isolate for


@pytest.mark.parametrize(("text", "direction", "subjects"), [
    ("isolate", None, None),
    ("isolate egress", "egress", None),
    ("isolate ingress for web", "ingress", ("web",)),
    ("isolate for web, api", None, ("web", "api")),
    ("isolate egress for all pods", "egress", "all pods"),
    ("isolate for web,\n  api", None, ("web", "api")),
])
def test_isolate_with_direction_and_subjects(text: str, direction: str | None, subjects: object) -> None:
    (stmt,) = only_ns_stmts("namespace n {\n  " + text + "\n}\n")
    assert isinstance(stmt, syn.IsolateStmt)
    assert (stmt.direction.text if stmt.direction else None) == direction
    got = stmt.subjects
    shown = "all pods" if isinstance(got, syn.AllPods) else None if got is None else tuple(w.text for w in got)
    assert shown == subjects


@pytest.mark.parametrize("text", ["isolate ingress for web", "isolate for web, api", "isolate egress for all pods"])
def test_isolate_for_prints_back_as_written(text: str) -> None:
    from netdsl import printer

    source = "namespace n {\n  " + text + "\n}\n"
    printed = printer.print_module(parse_ok(source))
    assert text in printed
    (again,) = only_ns_stmts(printed)
    assert isinstance(again, syn.IsolateStmt) and again.subjects is not None
