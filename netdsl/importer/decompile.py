"""The decompiler: a Translation -> idiomatic `.seg` text, one text per namespace (and "" for the top
level), which netdsl/importer/__init__.py proves before anyone sees it.

Rule. Per namespace, in this order: `isolate` (both directions) or `isolate ingress|egress`; services;
`allow dns [for ...]`; flow statements. Idiom, each undone by `literal=True` where the proof says so:
* a service per selector a statement uses there (as subject, or as a peer in this namespace), named
  from its labels: app.kubernetes.io/name, app, k8s-app, name, component, tier, role, else the values
  joined, else the compiler's derived name; unique in the namespace and never a keyword. A selector of
  another namespace that has a service there is written `ns/service`;
* a rule that is exactly the DNS allowance (egress to kube-system `k8s-app=kube-dns` on UDP and TCP 53)
  is `allow dns`;
* an egress rule that is the other half of an ingress rule (`backend accepts frontend on 8080` when
  frontend's egress to backend on 8080 is also in the input) is left out: lowering derives it
  (netdsl/lower/halves.py). `literal=True` writes both halves;
* rules of one subject and peers are one statement with their ports together; of one subject and ports,
  one statement with their peers together; the same peers and ports for several services, one
  statement with the services as subjects.
Everything is sorted: the same Translation always gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from netdsl import ir
from netdsl.importer.model import Translation
from netdsl.lower.halves import derived_name
from netdsl.lower.state import RESERVED_NAMES
from netdsl.parse import _keywords

NAME_KEYS = ("app.kubernetes.io/name", "app", "k8s-app", "name", "app.kubernetes.io/component", "component",
             "tier", "role")
_BARE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
DNS_PEER = ir.PodPeer(ir.NamespaceByName("kube-system"),
                      ir.Selector.of([ir.Requirement("k8s-app", ir.Operator.IN, ("kube-dns",))]))
DNS_PORTS = frozenset({ir.PortMatch(ir.Protocol.UDP, 53), ir.PortMatch(ir.Protocol.TCP, 53)})


def value_text(value: str) -> str:
    if _BARE.fullmatch(value) and value not in _keywords():
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector_text(sel: ir.Selector) -> str:
    parts = []
    for r in sel.requirements:
        values = ", ".join(value_text(v) for v in r.values)
        if r.operator is ir.Operator.IN:
            parts.append(f"{r.key}={values}" if len(r.values) == 1 else f"{r.key} in ({values})")
        elif r.operator is ir.Operator.NOT_IN:
            parts.append(f"{r.key}!={values}" if len(r.values) == 1 else f"{r.key} notin ({values})")
        elif r.operator is ir.Operator.EXISTS:
            parts.append(r.key)
        else:
            parts.append(f"!{r.key}")
    return ", ".join(parts)


def _clean(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")


def name_candidates(sel: ir.Selector) -> list[str]:
    values = {r.key: "-".join(r.values) for r in sel.requirements if r.operator is ir.Operator.IN}
    out = [_clean(values[k]) for k in NAME_KEYS if k in values]
    out.append(_clean("-".join(values[k] for k in sorted(values))))
    return [c for c in dict.fromkeys(out) if c and c not in RESERVED_NAMES and c not in _keywords()]


def name_services(selectors: Iterable[ir.Selector]) -> dict[ir.Selector, str]:
    """A unique readable name per selector (see the module's rule). Selectors with fewer requirements
    choose first, so `app=web` is `web` and `app=web, tier=x` is `web-x` or `web-2`."""
    names: dict[ir.Selector, str] = {}
    taken: set[str] = set()
    for sel in sorted(set(selectors), key=lambda s: (len(s.requirements), str(s))):
        choice = next((c for c in name_candidates(sel) if c not in taken), None)
        if choice is None:
            base = (name_candidates(sel) or [""])[0]
            if base:
                n = 2
                while f"{base[:60]}-{n}" in taken:
                    n += 1
                choice = f"{base[:60]}-{n}"
            else:
                choice = derived_name(sel, lambda x: x in taken)
        taken.add(choice)
        names[sel] = choice
    return names


@dataclass
class _Namespace:
    name: str
    labels: tuple[tuple[str, str], ...]
    isolate: set[ir.Direction] = field(default_factory=set)
    isolate_for: list[tuple[ir.Direction, ir.Selector]] = field(default_factory=list)
    rules: list[ir.Rule] = field(default_factory=list)
    services: dict[ir.Selector, str] = field(default_factory=dict)


def is_other_half(egress: ir.Rule, ingress_rules: Iterable[ir.Rule]) -> bool:
    """Whether lowering derives `egress` from one of `ingress_rules` (the halves.py rule, for the plain
    case: a peer that names the client's pods and namespace, the same ports)."""
    if egress.direction is not ir.Direction.EGRESS or len(egress.peers) != 1:
        return False
    (back,) = egress.peers
    if not isinstance(back, ir.PodPeer) or not isinstance(back.namespaces, ir.NamespaceByName):
        return False
    client = ir.PodPeer(ir.NamespaceByName(egress.subject.namespace), egress.subject.selector)
    return any(
        i.direction is ir.Direction.INGRESS and i.subject.namespace == back.namespaces.name
        and i.subject.selector == back.pods and client in i.peers and set(i.ports) == set(egress.ports)
        and i.action is egress.action and i.tier == egress.tier
        for i in ingress_rules
    )


def decompile(t: Translation, literal: bool = False) -> dict[str, str]:
    """`.seg` text by namespace ("" for top-level statements), see the module's rule."""
    spaces: dict[str, _Namespace] = {}

    def space(name: str) -> _Namespace:
        if name not in spaces:
            spaces[name] = _Namespace(name, t.namespaces.get(name, ()))
        return spaces[name]

    for iso in t.isolations:
        subject: ir.Workload | None = getattr(iso, "subject", None)
        if subject is None or subject.selector.is_everything:
            space(iso.namespace).isolate.add(iso.direction)
        else:
            space(iso.namespace).isolate_for.append((iso.direction, subject.selector))
    ingress = [r for r in t.rules if r.direction is ir.Direction.INGRESS]
    for r in t.rules:
        if not literal and is_other_half(r, ingress):
            continue
        space(r.subject.namespace).rules.append(r)
    for name in t.namespaces:
        if t.namespaces[name] and name in spaces:
            spaces[name].labels = t.namespaces[name]
    for ns in spaces.values():
        used = [r.subject.selector for r in ns.rules if not r.subject.selector.is_everything]
        used += [sel for _, sel in ns.isolate_for]
        for r in ns.rules:
            for p in r.peers:
                if (isinstance(p, ir.PodPeer) and p.namespaces == ir.NamespaceByName(ns.name)
                        and not p.pods.is_everything and not (not literal and p == DNS_PEER)):
                    used.append(p.pods)
        ns.services = name_services(used)
    return {name: _namespace_text(spaces[name], spaces, literal) for name in sorted(spaces)}


def _peer_text(p: ir.Peer, here: str, spaces: dict[str, _Namespace]) -> str:
    if isinstance(p, ir.AnyPeer):
        return "anywhere"
    if isinstance(p, ir.CidrPeer):
        if not p.excepts:
            return f"cidr {p.cidr}"
        if len(p.excepts) == 1:
            return f"cidr {p.cidr} except {p.excepts[0]}"
        return f"cidr {p.cidr} except ({', '.join(map(str, p.excepts))})"
    if isinstance(p, ir.FqdnPeer):
        return f"fqdn {p.name}"
    if isinstance(p, ir.EntityPeer):
        return f"entity {p.name}"
    ns = p.namespaces
    if isinstance(ns, ir.NamespaceByName):
        other = spaces.get(ns.name)
        if ns.name == here:
            if p.pods.is_everything:
                return "all pods"
            return spaces[here].services.get(p.pods) or f"pods[{selector_text(p.pods)}]"
        if p.pods.is_everything:
            return f"namespace {ns.name}"
        if other is not None and p.pods in other.services:
            return f"{ns.name}/{other.services[p.pods]}"
        return f"pods[{selector_text(p.pods)}] in namespace {ns.name}"
    scope = "all namespaces" if isinstance(ns, ir.AllNamespaces) else f"namespaces[{selector_text(ns.selector)}]"
    if p.pods.is_everything:
        return scope
    return f"pods[{selector_text(p.pods)}] in {scope}"


def _ports_key(ports: Iterable[ir.PortMatch]) -> tuple[ir.PortMatch, ...]:
    order = {ir.Protocol.TCP: 0, ir.Protocol.UDP: 1, ir.Protocol.SCTP: 2}
    return tuple(sorted(set(ports), key=lambda p: (
        0 if p.port is not None else 1 if p.name is not None else 2, p.port or 0, p.end_port or 0,
        order[p.protocol], p.name or "")))


def _namespace_text(ns: _Namespace, spaces: dict[str, _Namespace], literal: bool) -> str:
    lines: list[str] = []
    if ns.isolate == {ir.Direction.INGRESS, ir.Direction.EGRESS}:
        lines.append("isolate")
    else:
        lines += [f"isolate {d.value.lower()}" for d in sorted(ns.isolate, key=lambda d: d.value)]
    for d, sel in sorted(ns.isolate_for, key=lambda x: (x[0].value, ns.services[x[1]])):
        lines.append(f"isolate {d.value.lower()} for {ns.services[sel]}")
    for sel, name in sorted(ns.services.items(), key=lambda x: x[1]):
        lines.append(f"service {name} = {selector_text(sel)}")

    def subject(w: ir.Workload) -> str:
        return "all pods" if w.selector.is_everything else ns.services[w.selector]

    # 1. one subject, direction and peers: ports together (every port wins)
    by_peers: dict[tuple[str, ir.Direction, tuple[ir.Peer, ...]], list[ir.Rule]] = {}
    for r in ns.rules:
        by_peers.setdefault((subject(r.subject), r.direction, r.peers), []).append(r)
    merged: list[tuple[str, ir.Direction, tuple[ir.Peer, ...], tuple[ir.PortMatch, ...]]] = []
    for (subj, d, peers), rules in by_peers.items():
        ports = () if any(not r.ports for r in rules) else _ports_key(p for r in rules for p in r.ports)
        merged.append((subj, d, peers, ports))
    # 2. the DNS allowance
    dns: list[str] = []
    rest: list[tuple[str, ir.Direction, tuple[ir.Peer, ...], tuple[ir.PortMatch, ...]]] = []
    for subj, d, peers, ports in merged:
        if not literal and d is ir.Direction.EGRESS and peers == (DNS_PEER,) and set(ports) == DNS_PORTS:
            dns.append(subj)
        else:
            rest.append((subj, d, peers, ports))
    if "all pods" in dns:
        lines.append("allow dns")
        dns.remove("all pods")
    if dns:
        lines.append(f"allow dns for {', '.join(sorted(dns))}")
    # 3. one subject, direction and ports: peers together; 4. the same peers and ports: subjects together
    by_ports: dict[tuple[str, ir.Direction, tuple[ir.PortMatch, ...]], list[str]] = {}
    for subj, d, peers, ports in rest:
        texts = by_ports.setdefault((subj, d, ports), [])
        texts += [t for t in (_peer_text(p, ns.name, spaces) for p in peers) if t not in texts]
    by_statement: dict[tuple[ir.Direction, str, str], list[str]] = {}
    for (subj, d, ports), peer_texts in by_ports.items():
        on = f" on {', '.join(map(str, ports))}" if ports else ""
        by_statement.setdefault((d, ", ".join(peer_texts), on), []).append(subj)
    flows: list[tuple[int, str]] = []
    for (d, peer_text, on), subjects in by_statement.items():
        verb = "accepts" if d is ir.Direction.INGRESS else "connects to"
        groups = [["all pods"]] if "all pods" in subjects else []
        named = sorted(s for s in subjects if s != "all pods")
        if named:
            groups.append(named)
        for g in groups:
            flows.append((0 if d is ir.Direction.INGRESS else 1, f"{', '.join(g)} {verb} {peer_text}{on}"))
    lines += [text for _, text in sorted(flows)]
    head = f"namespace {ns.name}"
    if ns.labels:
        head += " labels " + ", ".join(f"{k}={value_text(v)}" for k, v in ns.labels)
    return head + " {\n" + "".join(f"  {line}\n" for line in lines) + "}\n"
