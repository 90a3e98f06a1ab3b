"""The decompiler: a Translation -> a netdsl/parse syntax tree, printed by netdsl/printer.py (the one
printer). netdsl/importer/__init__.py parses, lowers and proves the printed text before anyone sees it.

Rule. Every part of the Translation is said, or the decompiler raises DecompileError naming it (never
a silent drop). The tree, top level first: a `cidrs NAME = ...` per cidr set (names made valid, unique
identifiers); a `tier NAME order N [otherwise deny] { ... }` per tier, its statements in the
Translation's rule order (a tier's statements are evaluated in source order: consecutive rules of one
action may be merged and regrouped, rules of different actions never pass each other, so namespace
and cluster blocks interleave as needed); a `cluster [namespaces[...]] [including system] { ... }`
per cluster-wide scope of the default tier (ir.Workload.cluster: the system namespaces left out is
the plain header, as lowering's declare_cluster builds it); a `namespace NAME [labels ...] { ... }` per
namespace. In a scope's default-tier block, in this order: `isolate` (both directions) or `isolate
ingress|egress`, then `isolate ... for SERVICES`; services; groups; `allow dns [for ...]`; flows.
Idiom (`form` "idiomatic"), each undone where the proof says so:
* a service per selector a statement uses in its scope (as subject, as `isolate for`, or as a peer in
  its own namespace), named from its labels: app.kubernetes.io/name, app, k8s-app, name, component,
  tier, role, else the values joined, else the compiler's derived name; unique in the scope, never a
  keyword, a reserved name or a cidr set's name. A selector of another namespace that has a service
  there is written `ns/service`;
* a rule that is exactly the DNS allowance (egress to kube-system `k8s-app=kube-dns` on UDP and TCP 53)
  is `allow dns`;
* an egress rule that is the other half of an ingress rule (`backend accepts frontend on 8080` when
  frontend's egress to backend on 8080 is also in the input, and frontend's egress is restricted by
  something else there, so lowering derives it: netdsl/lower/halves.py) is left out;
* rules of one subject, action and peers are one statement with their ports together; of one subject
  and ports, one statement with their peers together; the same peers and ports for several services,
  one statement with the services as subjects; a list of two or more services that repeats is a
  `group`; peers that are a whole cidr set are the set's name.
`one_sided` (indices into Translation.rules) are written as one-sided rules (`allows ingress from`,
`allows egress to`: exactly that rule, no other half), and an egress rule is never left out for them.
`literal=True`: every rule its own one-sided statement (`denies`/`passes` as they are), no `allow dns`,
no groups - exactly the input. Everything is sorted: the same Translation always gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

from netdsl import ir, parse
from netdsl.importer.model import Translation
from netdsl.lower.halves import derived_name, may_match
from netdsl.lower.state import RESERVED_NAMES
from netdsl.parse import _keywords
from netdsl.printer import SYNTHETIC, print_statements, word

NAME_KEYS = ("app.kubernetes.io/name", "app", "k8s-app", "name", "app.kubernetes.io/component", "component",
             "tier", "role")
DNS_PEER = ir.PodPeer(ir.NamespaceByName("kube-system"),
                      ir.Selector.of([ir.Requirement("k8s-app", ir.Operator.IN, ("kube-dns",))]))
DNS_PORTS = frozenset({ir.PortMatch(ir.Protocol.UDP, 53), ir.PortMatch(ir.Protocol.TCP, 53)})
SYSTEM_REQUIREMENT = ir.Requirement(ir.NAMESPACE_NAME_LABEL, ir.Operator.NOT_IN, ir.SYSTEM_NAMESPACES)
NAMED = ir.Requirement(ir.NAMESPACE_NAME_LABEL, ir.Operator.EXISTS)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})
_HTTP_PATH = re.compile(r'/[^\s,"#;]*')
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
ALL = ""  # the subject name of `all pods`

Form = Literal["idiomatic", "one-sided", "literal"]


class DecompileError(Exception):
    """A part of the Translation `.seg` cannot print (a translator should have made it a Gap)."""


# ------------------------------------------------------------------------------------------ names


def _clean(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")


def _usable(name: str) -> bool:
    return bool(name) and name not in RESERVED_NAMES and name not in _keywords()


def name_candidates(sel: ir.Selector) -> list[str]:
    values = {r.key: "-".join(r.values) for r in sel.requirements if r.operator is ir.Operator.IN}
    out = [_clean(values[k]) for k in NAME_KEYS if k in values]
    out.append(_clean("-".join(values[k] for k in sorted(values))))
    return [c for c in dict.fromkeys(out) if _usable(c)]


def name_services(selectors: Iterable[ir.Selector], taken: Collection[str] = ()) -> dict[ir.Selector, str]:
    """A unique readable name per selector (see the module's rule), none of `taken`. Selectors with
    fewer requirements choose first, so `app=web` is `web` and `app=web, tier=x` is `x` or `web-2`."""
    names: dict[ir.Selector, str] = {}
    used: set[str] = set(taken)
    for sel in sorted(set(selectors), key=lambda s: (len(s.requirements), str(s))):
        choice = next((c for c in name_candidates(sel) if c not in used), None)
        if choice is None:
            base = (name_candidates(sel) or [""])[0]
            if base:
                n = 2
                while f"{base[:60]}-{n}" in used:
                    n += 1
                choice = f"{base[:60]}-{n}"
            else:
                choice = derived_name(sel, lambda x: x in used)
        used.add(choice)
        names[sel] = choice
    return names


def cidr_set_names(sets: Iterable[str]) -> dict[str, str]:
    """A valid, unique `cidrs` name (a DNS label, no keyword) per cidr set name of the Translation."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(sets):
        base = _clean(name) or "cidrs"
        if not _usable(base) or not _LABEL.fullmatch(base):
            base = f"cidrs-{base}".strip("-")[:63].strip("-")
        choice, n = base, 2
        while choice in used:
            choice = f"{base[:58]}-{n}"
            n += 1
        used.add(choice)
        out[name] = choice
    return out


# ------------------------------------------------------------------------------------------ scopes


@dataclass(frozen=True)
class ClusterScope:
    """A `cluster [namespaces[selector]] [including system]` header."""

    selector: ir.Selector | None
    including_system: bool


ScopeKey = Union[str, ClusterScope]  # a namespace name, or a cluster block


def cluster_scope(match: ir.NamespaceMatch) -> ScopeKey:
    """The block whose lowering (netdsl/lower/names.py declare_cluster) means exactly `match` (a required
    name label is dropped: every namespace has one)."""
    if isinstance(match, ir.NamespaceByName):
        return match.name
    if isinstance(match, ir.AllNamespaces):
        return ClusterScope(None, True)
    # every namespace has its name label: requiring it says nothing
    reqs = tuple(r for r in match.selector.requirements if r != NAMED)
    if SYSTEM_REQUIREMENT in reqs:
        rest = tuple(r for r in reqs if r != SYSTEM_REQUIREMENT)
        return ClusterScope(ir.Selector(rest) if rest else None, False)
    return ClusterScope(ir.Selector(reqs) if reqs else None, True)


def scope_of(w: ir.Workload) -> ScopeKey:
    if w.cluster is not None:
        return cluster_scope(w.cluster)
    if not w.namespace:
        raise DecompileError(f"a workload ({w.selector}) in no namespace and no cluster scope")
    return w.namespace


def _scope_order(key: ScopeKey) -> tuple[int, str]:
    if isinstance(key, str):
        return (1, key)
    return (0, f"{key.selector or ''}|{key.including_system}")


# ------------------------------------------------------------------------------------------ statements


@dataclass
class _Stmt:
    """A flow or `allow dns` statement before it is a syntax node: rules of one scope."""

    subjects: tuple[str, ...]  # service names; (ALL,) for `all pods`
    direction: ir.Direction
    action: ir.Action
    one_sided: bool
    peers: tuple[ir.Peer, ...]
    ports: tuple[ir.PortMatch, ...]
    http: tuple[ir.HttpRule, ...]
    origins: tuple[int, ...]  # indices into Translation.rules
    dns: bool = False


@dataclass
class _Scope:
    key: ScopeKey
    labels: tuple[tuple[str, str], ...] = ()
    isolate: set[ir.Direction] = field(default_factory=set)
    isolate_for: dict[ir.Selector, set[ir.Direction]] = field(default_factory=dict)
    services: dict[ir.Selector, str] = field(default_factory=dict)
    groups: dict[frozenset[str], str] = field(default_factory=dict)
    default: list[_Stmt] = field(default_factory=list)  # the default tier's statements


@dataclass
class Decompiled:
    """The tree by file key (a namespace name; "" for top-level statements) and, for each flow or
    `allow dns` statement in it, the Translation rules it says (by id of the node)."""

    files: dict[str, tuple[parse.TopStmt, ...]]
    origins: dict[int, tuple[int, ...]]

    def texts(self) -> dict[str, str]:
        return {key: print_statements(stmts) for key, stmts in self.files.items()}


def leaves(statements: Iterable[parse.TopStmt]) -> Iterator[parse.NamespaceStmt]:
    """The statements inside blocks, in the order they are printed."""
    for top in statements:
        if isinstance(top, parse.TierBlock):
            yield from leaves(top.items)
        elif isinstance(top, (parse.NamespaceBlock, parse.ClusterBlock)):
            yield from top.statements


def is_other_half(egress: ir.Rule, ingress: ir.Rule) -> bool:
    """Whether lowering derives `egress` from `ingress` where the client's egress is restricted (the
    halves.py rule, default tier): the ingress statement names the client's pods - `ns/client`, or in
    its own namespace `anywhere`, `entity all|cluster` (every pod), `pods[...] in all namespaces` - and
    the egress rule goes back to exactly the statement's subject on the same ports."""
    if (egress.direction is not ir.Direction.EGRESS or ingress.direction is not ir.Direction.INGRESS
            or len(egress.peers) != 1 or egress.http or egress.subject.cluster is not None
            or ingress.subject.cluster is not None or egress.tier is not None or ingress.tier is not None
            or egress.action is not ir.Action.ALLOW or ingress.action is not ir.Action.ALLOW
            or set(ingress.ports) != set(egress.ports)):
        return False
    (back,) = egress.peers
    if (not isinstance(back, ir.PodPeer) or back.namespaces != ir.NamespaceByName(ingress.subject.namespace)
            or back.pods != ingress.subject.selector):
        return False
    client = egress.subject.selector
    if ir.PodPeer(ir.NamespaceByName(egress.subject.namespace), client) in ingress.peers:
        return True
    if egress.subject.namespace != ingress.subject.namespace:
        return False
    return any(
        (client.is_everything and (isinstance(p, ir.AnyPeer)
                                   or (isinstance(p, ir.EntityPeer) and p.name in ("all", "cluster"))))
        or (isinstance(p, ir.PodPeer) and isinstance(p.namespaces, ir.AllNamespaces) and p.pods == client)
        for p in ingress.peers)


def _restricts_everywhere(match: ir.NamespaceMatch, namespace: str) -> bool:
    """A cluster scope that covers `namespace` whatever its labels (halves.py `within` gives the workload
    itself)."""
    return may_match(match, namespace) and (not isinstance(match, ir.NamespaceBySelector) or all(
        r.key == ir.NAMESPACE_NAME_LABEL for r in match.selector.requirements))


def _within(narrow: ir.Selector, wide: ir.Selector) -> bool:
    """Every pod `narrow` selects is one `wide` selects (by requirements)."""
    return set(wide.requirements) <= set(narrow.requirements)


def check(t: Translation) -> None:
    """DecompileError for a rule `.seg` cannot say (what lowering would reject)."""
    for r in t.rules:
        where = (f"rule {r.text or ''} ({r.direction.value.lower()} of {r.subject.namespace or 'cluster'} "
                 f"{r.subject.selector})")
        if r.action is ir.Action.PASS and r.tier is None:
            raise DecompileError(f"{where}: a pass outside a tier")
        if r.tier is not None and not any(x.name == r.tier for x in t.tiers):
            raise DecompileError(f"{where}: tier {r.tier!r} is not declared")
        if not r.peers:
            raise DecompileError(f"{where}: no peers")
        for p in r.peers:
            if isinstance(p, ir.FqdnPeer) and (r.direction is ir.Direction.INGRESS or r.action is not ir.Action.ALLOW):
                raise DecompileError(f"{where}: a DNS name as a source, or denied")
            if isinstance(p, ir.EntityPeer) and p.name not in ir.ENTITIES:
                raise DecompileError(f"{where}: unknown entity {p.name!r}")
        if r.http:
            if r.action is not ir.Action.ALLOW or not r.ports or any(
                    p.protocol is not ir.Protocol.TCP or (p.port is None and p.name is None) for p in r.ports):
                raise DecompileError(f"{where}: HTTP rules without numbered or named TCP ports, or not allowed")
            for h in r.http:
                if h.method is not None and h.method not in HTTP_METHODS:
                    raise DecompileError(f"{where}: HTTP method {h.method!r}")


# ------------------------------------------------------------------------------------------ the decompiler


class _Decompiler:
    def __init__(self, t: Translation, one_sided: Collection[int], literal: bool) -> None:
        self.t = t
        self.one_sided = set(one_sided)
        self.literal = literal
        self.sets = cidr_set_names(n for n, peers in t.cidr_sets.items() if peers)
        self.scopes: dict[ScopeKey, _Scope] = {}
        self.origins: dict[int, tuple[int, ...]] = {}

    def scope(self, key: ScopeKey) -> _Scope:
        if key not in self.scopes:
            labels = self.t.namespaces.get(key, ()) if isinstance(key, str) else ()
            self.scopes[key] = _Scope(key, labels)
        return self.scopes[key]

    # ---- which rules are said, and how
    def dropped(self) -> set[int]:
        """The egress rules left out: lowering derives them from an ingress statement (see is_other_half)
        where that client's egress is restricted by an isolation or a rule that is kept."""
        if self.literal:
            return set()
        rules = self.t.rules
        ingress = [(i, r) for i, r in enumerate(rules)
                   if r.direction is ir.Direction.INGRESS and i not in self.one_sided]
        candidates = {i for i, r in enumerate(rules) if i not in self.one_sided
                      and any(is_other_half(r, ing) for _, ing in ingress)}
        out = set()
        for i in sorted(candidates):
            e = rules[i]
            ns, sel = e.subject.namespace, e.subject.selector
            isolated = any(iso.direction is ir.Direction.EGRESS
                           and (iso.namespace == ns if iso.cluster is None else _restricts_everywhere(iso.cluster, ns))
                           and (iso.subject is None or _within(sel, iso.subject.selector))
                           for iso in self.t.isolations)
            kept = any(j not in candidates and r.tier is None and r.direction is ir.Direction.EGRESS
                       and r.subject.cluster is None and r.subject.namespace == ns
                       and _within(sel, r.subject.selector) for j, r in enumerate(rules))
            if isolated or kept:
                out.add(i)
        return out

    def build(self) -> Decompiled:
        t = self.t
        check(t)
        for iso in t.isolations:
            if iso.cluster is not None:
                key = cluster_scope(iso.cluster)
            elif iso.namespace:
                key = iso.namespace
            else:
                raise DecompileError(f"an isolation ({iso.direction.value.lower()}) of no namespace")
            sc = self.scope(key)
            if iso.subject is None or iso.subject.selector.is_everything:
                sc.isolate.add(iso.direction)
            else:
                sc.isolate_for.setdefault(iso.subject.selector, set()).add(iso.direction)
        dropped = self.dropped()
        said = [(i, r) for i, r in enumerate(t.rules) if i not in dropped]
        for _, r in said:
            self.scope(scope_of(r.subject))
        self.name_services(said)
        # the default tier: order does not matter (denies first, allows unioned)
        by_scope: dict[ScopeKey, list[tuple[int, ir.Rule]]] = {}
        for i, r in said:
            if r.tier is None:
                by_scope.setdefault(scope_of(r.subject), []).append((i, r))
        for key, rules in by_scope.items():
            self.scope(key).default = self.statements(key, rules)
        tiers: list[tuple[ir.Tier, list[tuple[ScopeKey, list[_Stmt]]]]] = []
        for tier in t.tiers:
            tiers.append((tier, self.tier_blocks([(i, r) for i, r in said if r.tier == tier.name])))
        self.name_groups([s for _, blocks in tiers for _, stmts in blocks for s in stmts])
        return self.tree(tiers)

    def tier_blocks(self, rules: list[tuple[int, ir.Rule]]) -> list[tuple[ScopeKey, list[_Stmt]]]:
        """A tier's rules in order: runs of one action (order inside a run does not matter), each run's
        statements by scope; consecutive statements of one scope share a block."""
        runs: list[list[tuple[int, ir.Rule]]] = []
        for i, r in rules:
            if runs and runs[-1][0][1].action is r.action:
                runs[-1].append((i, r))
            else:
                runs.append([(i, r)])
        blocks: list[tuple[ScopeKey, list[_Stmt]]] = []
        for run in runs:
            by_scope: dict[ScopeKey, list[tuple[int, ir.Rule]]] = {}
            for i, r in run:
                by_scope.setdefault(scope_of(r.subject), []).append((i, r))
            for key in sorted(by_scope, key=_scope_order):
                stmts = self.statements(key, by_scope[key])
                if blocks and blocks[-1][0] == key:
                    blocks[-1][1].extend(stmts)
                else:
                    blocks.append((key, stmts))
        return blocks

    def name_services(self, said: list[tuple[int, ir.Rule]]) -> None:
        used: dict[ScopeKey, list[ir.Selector]] = {k: list(sc.isolate_for) for k, sc in self.scopes.items()}
        for _, r in said:
            key = scope_of(r.subject)
            if not r.subject.selector.is_everything:
                used[key].append(r.subject.selector)
            if isinstance(key, str):
                for p in r.peers:
                    if (isinstance(p, ir.PodPeer) and p.namespaces == ir.NamespaceByName(key)
                            and not p.pods.is_everything):
                        used[key].append(p.pods)
        taken = set(self.sets.values())
        for key, selectors in used.items():
            self.scopes[key].services = name_services(selectors, taken)

    def subject(self, key: ScopeKey, w: ir.Workload) -> str:
        return ALL if w.selector.is_everything else self.scopes[key].services[w.selector]

    # ---- merging
    def statements(self, key: ScopeKey, rules: list[tuple[int, ir.Rule]]) -> list[_Stmt]:
        if self.literal:
            return [_Stmt((self.subject(key, r.subject),), r.direction, r.action, r.action is ir.Action.ALLOW,
                          r.peers, r.ports, r.http, (i,)) for i, r in rules]
        # 1. one subject, direction, action, side, peers and HTTP: ports together (no ports: every port)
        by_peers: dict[tuple[str, ir.Direction, ir.Action, bool, tuple[ir.Peer, ...], tuple[ir.HttpRule, ...]],
                       list[tuple[int, ir.Rule]]] = {}
        for i, r in rules:
            side = r.action is ir.Action.ALLOW and i in self.one_sided
            by_peers.setdefault((self.subject(key, r.subject), r.direction, r.action, side, r.peers, r.http),
                                []).append((i, r))
        merged: list[_Stmt] = []
        for (subj, d, action, side, peers, http), same in by_peers.items():
            ports = () if any(not r.ports for _, r in same) else _ports_key(p for _, r in same for p in r.ports)
            merged.append(_Stmt((subj,), d, action, side, peers, ports, http, tuple(i for i, _ in same)))
        # 2. the DNS allowance
        rest: list[_Stmt] = []
        dns: dict[bool, list[_Stmt]] = {}
        for s in merged:
            if (s.direction is ir.Direction.EGRESS and s.action is ir.Action.ALLOW and not s.one_sided
                    and s.peers == (DNS_PEER,) and set(s.ports) == DNS_PORTS and not s.http):
                dns.setdefault(s.subjects == (ALL,), []).append(s)
            else:
                rest.append(s)
        out: list[_Stmt] = []
        for everyone in (True, False):
            if everyone in dns:
                allowed = dns[everyone]
                out.append(_Stmt(tuple(sorted(x.subjects[0] for x in allowed)), ir.Direction.EGRESS, ir.Action.ALLOW,
                                 False, (DNS_PEER,), _ports_key(DNS_PORTS), (),
                                 tuple(sorted(i for x in allowed for i in x.origins)), dns=True))
        # 3. one subject, direction, action, side, ports and HTTP: peers together
        by_ports: dict[tuple[object, ...], list[_Stmt]] = {}
        for s in rest:
            by_ports.setdefault((s.subjects, s.direction, s.action, s.one_sided, s.ports, s.http), []).append(s)
        combined: list[_Stmt] = []
        for stmts in by_ports.values():
            first = stmts[0]
            combined.append(_Stmt(first.subjects, first.direction, first.action, first.one_sided,
                                  tuple(dict.fromkeys(p for x in stmts for p in x.peers)), first.ports, first.http,
                                  tuple(i for x in stmts for i in x.origins)))
        # 4. the same peers, ports and HTTP: subjects together (`all pods` on its own)
        by_stmt: dict[tuple[object, ...], list[_Stmt]] = {}
        for s in combined:
            by_stmt.setdefault((s.direction, s.action, s.one_sided, s.peers, s.ports, s.http,
                                s.subjects == (ALL,)), []).append(s)
        flows: list[_Stmt] = []
        for stmts in by_stmt.values():
            first = stmts[0]
            flows.append(_Stmt(tuple(sorted(x.subjects[0] for x in stmts)), first.direction, first.action,
                               first.one_sided, first.peers, first.ports, first.http,
                               tuple(sorted(i for x in stmts for i in x.origins))))
        flows.sort(key=lambda s: (_ACTION_ORDER[s.action], s.direction is ir.Direction.EGRESS, s.one_sided,
                                  s.subjects, min(s.origins)))
        return out + flows

    def name_groups(self, tier_statements: list[_Stmt]) -> None:
        """A `group` for each list of two or more services of a namespace that two statements repeat."""
        if self.literal:
            return
        for key, sc in sorted(self.scopes.items(), key=lambda kv: _scope_order(kv[0])):
            if not isinstance(key, str):
                continue
            counts: dict[frozenset[str], int] = {}
            stmts = sc.default + [s for s in tier_statements if self._in(s, key)]
            for s in stmts:
                for names in (self._subject_list(s), self._peer_list(key, s)):
                    if names is not None and len(names) >= 2:
                        counts[names] = counts.get(names, 0) + 1
            taken = set(sc.services.values()) | set(self.sets.values())
            for names in sorted((n for n, c in counts.items() if c >= 2), key=lambda n: sorted(n)):
                name = "-".join(sorted(names))
                if len(name) > 63 or not _usable(name) or name in taken:
                    n = 1
                    while f"group-{n}" in taken:
                        n += 1
                    name = f"group-{n}"
                taken.add(name)
                sc.groups[names] = name

    def _in(self, s: _Stmt, key: ScopeKey) -> bool:
        return any(scope_of(self.t.rules[i].subject) == key for i in s.origins[:1])

    @staticmethod
    def _subject_list(s: _Stmt) -> frozenset[str] | None:
        return None if ALL in s.subjects else frozenset(s.subjects)

    def _peer_list(self, key: str, s: _Stmt) -> frozenset[str] | None:
        services = self.scopes[key].services
        names = []
        for p in s.peers:
            if not (isinstance(p, ir.PodPeer) and p.namespaces == ir.NamespaceByName(key) and p.pods in services):
                return None
            names.append(services[p.pods])
        return frozenset(names)

    # ---- syntax
    def tree(self, tiers: list[tuple[ir.Tier, list[tuple[ScopeKey, list[_Stmt]]]]]) -> Decompiled:
        files: dict[str, list[parse.TopStmt]] = {}
        top = files.setdefault("", [])
        for name, printed in sorted(self.sets.items(), key=lambda kv: kv[1]):
            top.append(parse.CidrsDecl(word(printed), tuple(_cidr_item(p) for p in self.t.cidr_sets[name]),
                                       SYNTHETIC))
        for tier, blocks in sorted(tiers, key=lambda tb: (tb[0].order, tb[0].name)):
            otherwise = word("deny") if tier.otherwise is ir.Action.DENY else None
            top.append(parse.TierBlock(word(tier.name), word(str(tier.order)), otherwise, tuple(
                self.block(key, stmts, header_only=True) for key, stmts in blocks), SYNTHETIC))
        for key in sorted(self.scopes, key=_scope_order):
            sc = self.scopes[key]
            body = self.head(sc) + [self.flow(key, s) for s in sc.default]
            if isinstance(key, str):
                if body or sc.labels:
                    files.setdefault(key, []).append(self.block(key, [], body=body))
            elif body:
                top.append(self.block(key, [], body=body))
        if not top:
            del files[""]
        return Decompiled({k: tuple(v) for k, v in files.items()}, self.origins)

    def block(self, key: ScopeKey, stmts: list[_Stmt], header_only: bool = False,
              body: list[parse.NamespaceStmt] | None = None) -> parse.NamespaceBlock | parse.ClusterBlock:
        statements = tuple(body if body is not None else [self.flow(key, s) for s in stmts])
        if isinstance(key, str):
            labels = () if header_only else tuple(
                parse.Label(word(k), _value(v)) for k, v in self.scopes[key].labels)
            return parse.NamespaceBlock(word(key), labels, statements, SYNTHETIC)
        selector = None if key.selector is None else _selector(key.selector)
        return parse.ClusterBlock(selector, key.including_system, statements, SYNTHETIC)

    def head(self, sc: _Scope) -> list[parse.NamespaceStmt]:
        """A scope's isolations, services and groups."""
        out: list[parse.NamespaceStmt] = []
        if len(sc.isolate) == 2:
            out.append(parse.IsolateStmt(None, SYNTHETIC))
        else:
            out += [parse.IsolateStmt(word(d.value.lower()), SYNTHETIC)
                    for d in sorted(sc.isolate, key=lambda d: d.value)]
        by_directions: dict[tuple[ir.Direction, ...], list[str]] = {}
        for sel, isolated in sc.isolate_for.items():
            left = tuple(sorted(isolated - sc.isolate, key=lambda d: d.value))
            if left:
                by_directions.setdefault(left, []).append(sc.services[sel])
        for directions, services in sorted(by_directions.items(), key=lambda kv: (len(kv[0]) == 1, kv[0])):
            direction = None if len(directions) == 2 else word(directions[0].value.lower())
            out.append(parse.IsolateStmt(direction, SYNTHETIC, tuple(word(n) for n in sorted(services))))
        for sel, name in sorted(sc.services.items(), key=lambda kv: kv[1]):
            out.append(parse.ServiceDecl(word(name), _selector(sel), SYNTHETIC))
        for names, name in sorted(sc.groups.items(), key=lambda kv: kv[1]):
            out.append(parse.GroupDecl(word(name), tuple(word(n) for n in sorted(names)), SYNTHETIC))
        return out

    def _subjects(self, key: ScopeKey, subjects: tuple[str, ...]) -> parse.Subjects:
        if subjects == (ALL,):
            return parse.AllPods(SYNTHETIC)
        group = self.scopes[key].groups.get(frozenset(subjects))
        return (word(group),) if group is not None and len(subjects) >= 2 else tuple(word(s) for s in subjects)

    def flow(self, key: ScopeKey, s: _Stmt) -> parse.NamespaceStmt:
        node: parse.NamespaceStmt
        if s.dns:
            node = parse.DnsStmt(None if s.subjects == (ALL,) else self._subjects(key, s.subjects), SYNTHETIC)
        else:
            peers = self.peers(key, s.peers)
            ports = tuple(word(str(p)) for p in s.ports)
            http = tuple(_http(h) for h in s.http)
            direction: Literal["ingress", "egress"] = "ingress" if s.direction is ir.Direction.INGRESS else "egress"
            if s.action is ir.Action.ALLOW and not s.one_sided:
                node = parse.FlowStmt(direction, self._subjects(key, s.subjects), peers, ports, SYNTHETIC, http=http)
            else:
                subjects = self._subjects(key, s.subjects)
                plural = isinstance(subjects, tuple) and len(subjects) > 1  # `a, b deny from`, `a denies from`
                verb = (_PLURAL if plural else _SINGULAR)[s.action]
                side = word(direction) if s.action is ir.Action.ALLOW else None
                node = parse.FlowStmt(direction, subjects, peers, ports, SYNTHETIC,
                                      s.action.value.lower(), word(verb), http, side)  # type: ignore[arg-type]
        self.origins[id(node)] = s.origins
        return node

    def peers(self, key: ScopeKey, peers: tuple[ir.Peer, ...]) -> tuple[parse.Peer, ...]:
        out: list[parse.Peer] = []
        left = list(peers)
        for name, printed in sorted(self.sets.items(), key=lambda kv: (-len(self.t.cidr_sets[kv[0]]), kv[1])):
            members = self.t.cidr_sets[name]
            if all(m in left for m in members) and any(
                    isinstance(p, ir.CidrPeer) and p.network_set == name for p in left):
                left = [p for p in left if p not in members]
                out.append(parse.RefPeer(word(printed), SYNTHETIC))
        if not self.literal and isinstance(key, str):
            names = self._peer_list(key, _Stmt((), ir.Direction.INGRESS, ir.Action.ALLOW, False, tuple(left), (),
                                               (), ()))
            group = self.scopes[key].groups.get(names) if names is not None and len(names) >= 2 else None
            if group is not None:
                return (*out, parse.RefPeer(word(group), SYNTHETIC))
        return (*out, *(self.peer(key, p) for p in left))

    def peer(self, key: ScopeKey, p: ir.Peer) -> parse.Peer:
        if isinstance(p, ir.AnyPeer):
            return parse.AnywherePeer(SYNTHETIC)
        if isinstance(p, ir.CidrPeer):
            return parse.CidrPeer(_cidr_item(p), SYNTHETIC)
        if isinstance(p, ir.FqdnPeer):
            return parse.FqdnPeer(word(p.name), SYNTHETIC)
        if isinstance(p, ir.EntityPeer):
            return parse.EntityPeer(word(p.name), SYNTHETIC)
        ns = p.namespaces
        if isinstance(ns, ir.NamespaceByName):
            if ns.name == key:
                if p.pods.is_everything:
                    return parse.AllPodsPeer(None, SYNTHETIC)
                return parse.RefPeer(word(self.scopes[key].services[p.pods]), SYNTHETIC)
            other = self.scopes.get(ns.name)
            if not p.pods.is_everything and other is not None and p.pods in other.services:
                return parse.RefPeer(word(f"{ns.name}/{other.services[p.pods]}"), SYNTHETIC)
            scope: parse.NamespaceScope = parse.NsByName(word(ns.name), SYNTHETIC)
        elif isinstance(ns, ir.NamespaceBySelector):
            scope = parse.NsByLabels(_selector(ns.selector), SYNTHETIC)
        else:
            scope = parse.NsAll(SYNTHETIC)
        if p.pods.is_everything:
            return parse.NamespacePeer(scope, SYNTHETIC)
        return parse.PodsPeer(_selector(p.pods), scope, SYNTHETIC)


_SINGULAR = {ir.Action.ALLOW: "allows", ir.Action.DENY: "denies", ir.Action.PASS: "passes"}
_PLURAL = {ir.Action.ALLOW: "allow", ir.Action.DENY: "deny", ir.Action.PASS: "pass"}
_ACTION_ORDER = {ir.Action.DENY: 0, ir.Action.PASS: 1, ir.Action.ALLOW: 2}


def decompile(t: Translation, one_sided: Collection[int] = (), literal: bool = False) -> Decompiled:
    """The syntax tree of `t` (see the module's rule)."""
    return _Decompiler(t, one_sided, literal).build()


# ------------------------------------------------------------------------------------------ values


def _value(text: str) -> parse.Word:
    """A label value: quoted when it is not a bare word or is a keyword."""
    w = word(text)
    return parse.Word(text, SYNTHETIC, quoted=True) if text in _keywords() else w


def _selector(sel: ir.Selector) -> parse.Selector:
    reqs = []
    for r in sel.requirements:
        values = tuple(_value(v) for v in r.values)
        op: Literal["=", "!=", "in", "notin", "exists", "!exists"]
        if r.operator is ir.Operator.IN:
            op = "=" if len(values) == 1 else "in"
        elif r.operator is ir.Operator.NOT_IN:
            op = "!=" if len(values) == 1 else "notin"
        elif r.operator is ir.Operator.EXISTS:
            op = "exists"
        else:
            op = "!exists"
        reqs.append(parse.Requirement(word(r.key), op, values, SYNTHETIC))
    return parse.Selector(tuple(reqs), SYNTHETIC)


def selector_text(sel: ir.Selector) -> str:
    """A selector as `.seg` writes it (for messages and tests)."""
    return print_statements([parse.NamespaceBlock(word("n"), (), (
        parse.ServiceDecl(word("s"), _selector(sel), SYNTHETIC),), SYNTHETIC)]).split(" = ", 1)[1].split("\n")[0]


def _cidr_item(p: ir.CidrPeer) -> parse.CidrItem:
    return parse.CidrItem(word(str(p.cidr)), tuple(word(str(e)) for e in p.excepts), SYNTHETIC)


def _http(h: ir.HttpRule) -> parse.HttpRule:
    path = None
    if h.path is not None:
        path = parse.Word(h.path, SYNTHETIC, quoted=_HTTP_PATH.fullmatch(h.path) is None)
    host = None if h.host is None else word(h.host)
    return parse.HttpRule(word(h.method or "ANY"), path, host,
                          tuple(parse.Word(x, SYNTHETIC, quoted=True) for x in h.headers), SYNTHETIC)


def _ports_key(ports: Iterable[ir.PortMatch]) -> tuple[ir.PortMatch, ...]:
    order = {ir.Protocol.TCP: 0, ir.Protocol.UDP: 1, ir.Protocol.SCTP: 2}
    return tuple(sorted(set(ports), key=lambda p: (
        0 if p.port is not None else 1 if p.name is not None else 2, p.port or 0, p.end_port or 0,
        order[p.protocol], p.name or "")))


def statements_of(d: Decompiled) -> Sequence[parse.TopStmt]:
    """Every file's statements as one stream, top level first."""
    return [s for key in sorted(d.files) for s in d.files[key]]
