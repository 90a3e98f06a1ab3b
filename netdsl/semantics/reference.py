"""The reference semantics: what a `.seg` program allows, read from the syntax tree and the README.

It shares no code with lowering or the IR, so that a lowering bug cannot hide in the judge too. Rules,
in the order `decide` applies them:

* A connection is allowed when the source pod's egress and the destination pod's ingress both allow
  it; an external endpoint has no side. Each side goes through the tiers by order, the default tier
  (statements outside `tier` blocks) at order 1000000; a direction no tier decides is allowed.
* Default tier: it applies to a pod's direction when the pod is *restricted* there: its namespace is
  isolated in that direction (`isolate`, or a `cluster` block's `isolate` covering the namespace), the
  pod is a subject of an `isolate [DIRECTION] for SUBJECTS` of that direction whose block covers it, or
  an explicit statement of that direction has the pod as subject (`accepts` = allow from,
  `connects to` = allow to, `allow dns` = allow to kube-dns). A deny that matches wins, then an allow
  that matches (explicit, or the other half of a flow), else the pod's direction is denied.
* Other tiers: a tier applies to a pod's direction when one of its explicit statements of that
  direction has the pod as subject. The first statement in source order that matches decides
  (allow, deny; pass goes on to the next tier); no match: the tier's `otherwise` (default pass).
* The other half of a flow: an allow statement `S accepts P` also allows, at the egress of P's pods,
  connections to S's pods on the same ports (`S connects to P`: at P's pods' ingress, from S). P's pods
  are every pod the peer names (services, groups, `ns/service`, `pods[...]` [in namespace X], `all
  pods` [in namespace X], `namespace X`); for broad peers (`anywhere`, `all namespaces`,
  `namespaces[...]`, `... in namespaces[...]`, `... in all namespaces`, entities) only those in the
  statement's own namespace, and none for a broad peer of a `cluster` block. The other half never
  restricts a pod. It sits in the statement's tier, at the statement's place, if that tier applies to
  the peer pod's direction, and also in the default tier (where it matters only if the default tier
  restricts the peer pod in that direction).
* Peers: pods by namespace (name, or the topology's namespace labels, which include
  kubernetes.io/metadata.name; `namespace X labels ...` declarations are not facts about a cluster)
  and pod labels; `cidr` matches, by address and minus its excepts, external addresses (identity
  None) and Calico host endpoints (on Calico a node with a host endpoint is an address), never pods
  nor Cilium's identities (Cilium's CIDR rules do not select them), nor any address inside the
  declared `pod networks` (a CIDR lying inside one is refused); `fqdn` external DNS names (`*`
  within one label; `*` alone any name); `entity` Cilium's entities by the `reserved:` labels of each
  identity (`cluster`: every pod and every reserved identity but world; `remote-node` includes the
  kube-apiserver identity); `anywhere` every endpoint. Calico host endpoints are matched only by
  `anywhere`, `entity all` and CIDRs.
* Ports: numbers, inclusive ranges, `/udp` and `/sctp`, `tcp`/`udp`/`sctp` for every port of the
  protocol, names (the destination pod's container port of that name and protocol, or in a class
  topology a named port the probe binds); no `on`: every port and protocol. HTTP rules refine ports
  and are read as their ports. An allowed `fqdn` also allows the subject's DNS lookups.

Anything lowering would refuse, or this module does not model, raises ValueError.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, Union

from netdsl import parse
from netdsl.semantics.model import Connection, Endpoint, External, Pod, Topology, Verdict
from netdsl.source import Span

# Values the README states; copied, not imported, so that the reference stays independent.
NAME_LABEL = "kubernetes.io/metadata.name"
DEFAULT_TIER_ORDER = 1_000_000
SYSTEM_NAMESPACES = (
    "calico-apiserver", "calico-system", "kube-node-lease", "kube-public", "kube-system", "tigera-operator",
)
DNS_NAMESPACE = "kube-system"
DNS_LABELS = ("k8s-app", "kube-dns")
# Cilium's reserved identities and the `reserved:` labels each carries (pkg/identity/numericidentity.go:
# the kube-apiserver identity is also a remote node); `cluster` is every pod plus all of them.
CILIUM_RESERVED: dict[str, frozenset[str]] = {
    "host": frozenset({"host"}), "remote-node": frozenset({"remote-node"}),
    "kube-apiserver": frozenset({"kube-apiserver", "remote-node"}), "health": frozenset({"health"}),
    "ingress": frozenset({"ingress"}), "init": frozenset({"init"}), "unmanaged": frozenset({"unmanaged"}),
}
CILIUM_ENTITIES = frozenset({*CILIUM_RESERVED, "all", "cluster", "world", "world-ipv4", "world-ipv6"})
# The endpoints a CIDR matches by address: plain addresses and Calico host endpoints.
ADDRESSES = (None, "calico:host-endpoint")

Direction: TypeAlias = Literal["ingress", "egress"]
Action: TypeAlias = Literal["allow", "deny", "pass"]
IPNet: TypeAlias = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def _opposite(d: Direction) -> Direction:
    return "egress" if d == "ingress" else "ingress"


# ------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Sel:
    """A conjunction of Kubernetes label requirements; empty = everything."""

    reqs: tuple[tuple[str, str, frozenset[str]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, op, values in self.reqs:
            value = labels.get(key)
            ok = {
                "in": value in values,
                "notin": value not in values,  # true when the key is absent, as in Kubernetes
                "exists": key in labels, "!exists": key not in labels,
            }[op]
            if not ok:
                return False
        return True


EVERY_POD = Sel()


def _selector(sel: parse.Selector) -> Sel:
    reqs = []
    for r in sel.requirements:
        if r.operator in ("in", "notin") and not r.values:
            raise ValueError(f"{r.span}: `{r.operator} ()` needs a value")
        op = {"=": "in", "!=": "notin"}.get(r.operator, r.operator)  # `k=v` is `k in (v)`
        reqs.append((r.key.text, op, frozenset(v.text for v in r.values)))
    return Sel(tuple(sorted(set(reqs), key=lambda r: (r[0], r[1], sorted(r[2])))))


@dataclass(frozen=True)
class Port:
    protocol: str  # "TCP", "UDP", "SCTP"
    first: int | None = None  # None with name None: every port of the protocol
    last: int | None = None
    name: str | None = None

    def matches(self, conn: Connection) -> bool:
        if conn.protocol.value != self.protocol:
            return False
        if self.name is not None:  # the destination pod's container port of that name and protocol
            dst = conn.dst
            return isinstance(dst, Pod) and (self.name in conn.names or tuple(
                dst.ports.get(self.name, (None, None))) == (conn.port, conn.protocol))
        if self.first is None:
            return True
        assert self.last is not None
        return self.first <= conn.port <= self.last


_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}


def _port(word: parse.Word) -> Port:
    text = word.text
    if text.lower() in _PROTOCOLS:
        return Port(_PROTOCOLS[text.lower()])
    what, slash, proto = text.partition("/")
    if slash and proto.lower() not in _PROTOCOLS:
        raise ValueError(f"{word.span}: unknown protocol in {text!r}")
    protocol = _PROTOCOLS[proto.lower()] if slash else "TCP"
    if m := re.fullmatch(r"(\d+)(?:-(\d+))?", what):
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"{word.span}: invalid port {text!r}")
        return Port(protocol, first, last)
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", what) or not re.search("[a-z]", what):
        raise ValueError(f"{word.span}: invalid port {text!r}")
    return Port(protocol, name=what)


DNS_PORTS = (Port("UDP", 53, 53), Port("TCP", 53, 53))


def _network(word: parse.Word) -> IPNet:
    try:
        return ipaddress.ip_network(word.text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{word.span}: {exc}") from None


# ------------------------------------------------------------------------------------------ peers


@dataclass(frozen=True)
class Namespaces:
    """Namespaces by name, by labels, or (both None) all of them."""

    name: str | None = None
    labels: Sel | None = None

    def matches(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if self.name is not None:
            return namespace == self.name
        return self.labels is None or self.labels.matches(labels)


@dataclass(frozen=True)
class PodPeer:
    namespaces: Namespaces
    pods: Sel
    named: bool  # the peer names its pods: the other half reaches them wherever they are


@dataclass(frozen=True)
class CidrPeer:
    net: IPNet
    excepts: tuple[IPNet, ...]


@dataclass(frozen=True)
class FqdnPeer:
    pattern: str


@dataclass(frozen=True)
class EntityPeer:
    entity: str


@dataclass(frozen=True)
class Anywhere:
    pass


Peer: TypeAlias = Union[PodPeer, CidrPeer, FqdnPeer, EntityPeer, Anywhere]
DNS_PEER = PodPeer(Namespaces(name=DNS_NAMESPACE), Sel(((DNS_LABELS[0], "in", frozenset({DNS_LABELS[1]})),)), True)


def fqdn_matches(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    regex = "".join("[^.]*" if ch == "*" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, name.lower().rstrip(".")) is not None


def reserved(endpoint: External) -> frozenset[str]:
    """The `reserved:` labels Cilium gives a non-pod endpoint: `world` and `world-ipv4|6` for an
    address outside the cluster, a reserved identity's own (plus any `reserved:` key among its labels,
    e.g. a host that runs the API server), none for another target's identities."""
    if endpoint.identity is None:
        return frozenset({"world", f"world-ipv{endpoint.address.version}"})
    kind, _, name = endpoint.identity.partition(":")
    if kind != "cilium":
        return frozenset()
    extra = {k.removeprefix("reserved:") for k in endpoint.labels if k.startswith("reserved:")}
    return CILIUM_RESERVED.get(name, frozenset()) | extra


def entity_matches(entity: str, endpoint: Endpoint) -> bool:
    """Cilium's entities (pkg/policy/api/entity.go): `all` everything, `cluster` every pod and every
    identity with a reserved label but world, `world` both families, every other entity the identities
    carrying its reserved label. A Calico host endpoint is only `all`."""
    if entity == "all":
        return True
    if isinstance(endpoint, Pod):
        return entity == "cluster"
    labels = reserved(endpoint)
    if entity == "cluster":
        return bool(labels) and "world" not in labels
    if entity == "world":
        return "world" in labels
    return entity in labels


# ------------------------------------------------------------------------------------------ statements


@dataclass(frozen=True)
class Scope:
    """Where a block's statements apply: one namespace, or the namespaces of a `cluster` block."""

    namespace: str | None  # None: a cluster block
    labels: Sel | None = None  # `cluster namespaces[...]`
    including_system: bool = False

    def covers(self, namespace: str, labels: Mapping[str, str], system: Sequence[str]) -> bool:
        if self.namespace is not None:
            return namespace == self.namespace
        if not self.including_system and namespace in system:
            return False
        return self.labels is None or self.labels.matches(labels)


@dataclass(frozen=True)
class Statement:
    position: tuple[str, int, int]  # source order
    tier: str | None  # None: the default tier
    direction: Direction
    action: Action
    scope: Scope
    subjects: tuple[Sel, ...]  # pods of the scope
    peers: tuple[Peer, ...]
    ports: tuple[Port, ...]  # empty: every port and protocol
    where: str  # "file:line: text"
    one_sided: bool = False  # `allows ingress from`: no other half


@dataclass(frozen=True)
class Isolation:
    scope: Scope
    direction: Direction
    where: str
    subjects: tuple[Sel, ...] = (EVERY_POD,)  # `isolate for S`: the pods of S only


@dataclass
class _Names:
    """The services and groups of one scope (a namespace, or cluster blocks with the same header)."""

    services: dict[str, Sel]
    groups: dict[str, tuple[str, ...]]

    def expand(self, name: str, span: Span, seen: frozenset[str] = frozenset()) -> list[Sel]:
        if name in self.services:
            return [self.services[name]]
        if name not in self.groups or name in seen:
            raise ValueError(f"{span}: no service or group `{name}` (or a group containing itself)")
        return [s for m in self.groups[name] for s in self.expand(m, span, seen | {name})]


Block: TypeAlias = tuple[Scope, str | None, parse.NamespaceBlock | parse.ClusterBlock]


class ReferenceSemantics:
    def __init__(self, modules: Sequence[parse.Module], topology: Topology) -> None:
        self.topology = topology
        self.sources = {m.source.path: m.source for m in modules}
        self.system: tuple[str, ...] = SYSTEM_NAMESPACES
        self.tiers: dict[str, tuple[int, Action]] = {}
        self.cidr_sets: dict[str, tuple[CidrPeer, ...]] = {}
        self.pod_networks: tuple[IPNet, ...] | None = None
        blocks: list[Block] = []
        system_seen = False
        for module in modules:
            for top in module.statements:
                if isinstance(top, parse.SystemDecl):
                    if system_seen:
                        raise ValueError(f"{top.span}: `system namespaces` declared twice")
                    system_seen = True
                    self.system = tuple(w.text for w in top.names)
                elif isinstance(top, parse.PodNetworksDecl):
                    if self.pod_networks is not None:
                        raise ValueError(f"{top.span}: `pod networks` declared twice")
                    self.pod_networks = tuple(_network(w) for w in top.networks)
                elif isinstance(top, parse.CidrsDecl):
                    if top.name.text in self.cidr_sets:
                        raise ValueError(f"{top.span}: cidr set declared twice")
                    self.cidr_sets[top.name.text] = tuple(self._cidr(i) for i in top.items)
                elif isinstance(top, parse.TierBlock):
                    self._declare_tier(top)
                    blocks += [(self._scope(item), top.name.text, item) for item in top.items]
                elif isinstance(top, (parse.NamespaceBlock, parse.ClusterBlock)):
                    blocks.append((self._scope(top), None, top))
        self.names: dict[Scope, _Names] = {}
        for scope, _tier, block in blocks:
            names = self.names.setdefault(scope, _Names({}, {}))
            for stmt in block.statements:
                if isinstance(stmt, (parse.ServiceDecl, parse.GroupDecl)):
                    name = stmt.name.text
                    if name in names.services or name in names.groups or name in self.cidr_sets:
                        raise ValueError(f"{stmt.span}: `{name}` declared twice")
                    if isinstance(stmt, parse.ServiceDecl):
                        names.services[name] = _selector(stmt.selector)
                    else:
                        names.groups[name] = tuple(w.text for w in stmt.members)
        self.statements: list[Statement] = []
        self.isolations: list[Isolation] = []
        for scope, tier, block in blocks:
            for stmt in block.statements:
                self._lower(scope, tier, stmt)
        self.statements.sort(key=lambda s: s.position)
        self.order = sorted(
            [(order, name, otherwise) for name, (order, otherwise) in self.tiers.items()]
            + [(DEFAULT_TIER_ORDER, None, "deny")],
            key=lambda t: (t[0], t[1] or "default"),
        )
        self.by_tier: dict[str | None, list[Statement]] = {}
        for statement in self.statements:
            self.by_tier.setdefault(statement.tier, []).append(statement)
        self._applies: dict[tuple[object, ...], bool] = {}
        self._labels: dict[tuple[str, int], Mapping[str, str]] = {}

    # ---- reading the tree
    def _declare_tier(self, block: parse.TierBlock) -> None:
        if not re.fullmatch(r"\d{1,9}", block.order.text) or int(block.order.text) == DEFAULT_TIER_ORDER:
            raise ValueError(f"{block.order.span}: invalid tier order")
        otherwise: Action = "deny" if block.otherwise is not None and block.otherwise.text == "deny" else "pass"
        declared = (int(block.order.text), otherwise)
        if self.tiers.setdefault(block.name.text, declared) != declared:
            raise ValueError(f"{block.span}: tier `{block.name.text}` declared differently elsewhere")

    def _scope(self, block: parse.NamespaceBlock | parse.ClusterBlock) -> Scope:
        if isinstance(block, parse.NamespaceBlock):
            return Scope(block.name.text)
        labels = _selector(block.selector) if block.selector is not None else None
        return Scope(None, labels, block.including_system)

    def _cidr(self, item: parse.CidrItem) -> CidrPeer:
        return CidrPeer(_network(item.cidr), tuple(_network(w) for w in item.excepts))

    def _where(self, span: Span) -> str:
        """`file:line: the statement as written`, on one line and without comments."""
        source = self.sources.get(span.path)
        lines = [] if source is None else [source.line(n) for n in range(span.line, span.end_line + 1)]
        if lines:
            lines[-1] = lines[-1][: span.end_column - 1]
            lines[0] = lines[0][span.column - 1:]
            lines[:-1] = [ln.split("#")[0] for ln in lines[:-1]]  # comments inside a continued statement
        return f"{span.path}:{span.line}: {' '.join(' '.join(lines).split())}"

    def _subjects(self, scope: Scope, subjects: parse.Subjects) -> tuple[Sel, ...]:
        if isinstance(subjects, parse.AllPods):
            return (EVERY_POD,)
        names = self.names[scope]
        return tuple(s for w in subjects for s in names.expand(w.text, w.span))

    def _lower(self, scope: Scope, tier: str | None, stmt: parse.NamespaceStmt) -> None:
        position = stmt.span.sort_key
        where = self._where(stmt.span)
        if isinstance(stmt, parse.IsolateStmt):
            if tier is not None:
                raise ValueError(f"{stmt.span}: `isolate` inside a tier")
            directions: tuple[Direction, ...] = (
                ("ingress", "egress") if stmt.direction is None else ("ingress" if stmt.direction.text == "ingress"
                                                                      else "egress",))
            subjects = self._subjects(scope, stmt.subjects) if stmt.subjects is not None else (EVERY_POD,)
            self.isolations += [Isolation(scope, d, where, subjects) for d in directions]
        elif isinstance(stmt, parse.DnsStmt):
            subjects = self._subjects(scope, stmt.subjects) if stmt.subjects is not None else (EVERY_POD,)
            self.statements.append(
                Statement(position, tier, "egress", "allow", scope, subjects, (DNS_PEER,), DNS_PORTS, where))
        elif isinstance(stmt, parse.FlowStmt):
            if stmt.action == "pass" and tier is None:
                raise ValueError(f"{stmt.span}: `pass` outside a tier")
            peers = tuple(p for peer in stmt.peers for p in self._peer(scope, peer))
            for p in peers:
                if isinstance(p, CidrPeer) and any(p.net.version == n.version and p.net.subnet_of(n)  # type: ignore[arg-type]
                                                   for n in self.pod_networks or ()):
                    raise ValueError(f"{stmt.span}: a CIDR inside the pod networks")
            if any(isinstance(p, FqdnPeer) for p in peers) and (stmt.direction == "ingress" or stmt.action != "allow"):
                raise ValueError(f"{stmt.span}: a DNS name is only a destination of an allow")
            subjects = self._subjects(scope, stmt.subjects)
            ports = tuple(_port(w) for w in stmt.ports)
            self.statements.append(
                Statement(position, tier, stmt.direction, stmt.action, scope, subjects, peers, ports, where,
                          one_sided=stmt.side is not None))
            if any(isinstance(p, FqdnPeer) for p in peers):  # a DNS name needs its lookups (README)
                self.statements.append(
                    Statement(position, tier, "egress", "allow", scope, subjects, (DNS_PEER,), DNS_PORTS, where))

    def _peer(self, scope: Scope, peer: parse.Peer) -> list[Peer]:
        here = Namespaces(name=scope.namespace)
        in_cluster = scope.namespace is None
        if isinstance(peer, parse.RefPeer):
            text = peer.name.text
            if "/" in text:
                ns, _, name = text.partition("/")
                names = self.names.get(Scope(ns))
                if names is None:
                    raise ValueError(f"{peer.span}: namespace `{ns}` is not declared")
                return [PodPeer(Namespaces(name=ns), s, True) for s in names.expand(name, peer.span)]
            names = self.names[scope]
            if text in names.services or text in names.groups:
                if in_cluster:
                    raise ValueError(f"{peer.span}: a service of a cluster block as a peer")
                return [PodPeer(here, s, True) for s in names.expand(text, peer.span)]
            if text in self.cidr_sets:
                return list(self.cidr_sets[text])
            raise ValueError(f"{peer.span}: unknown name `{text}`")
        if isinstance(peer, (parse.PodsPeer, parse.AllPodsPeer)):
            pods = _selector(peer.selector) if isinstance(peer, parse.PodsPeer) else EVERY_POD
            if peer.scope is None:
                if in_cluster:
                    raise ValueError(f"{peer.span}: a peer in a cluster block must say its namespaces")
                return [PodPeer(here, pods, True)]
            return [self._in_namespaces(peer.scope, pods)]
        if isinstance(peer, parse.NamespacePeer):
            return [self._in_namespaces(peer.scope, EVERY_POD)]
        if isinstance(peer, parse.CidrPeer):
            return [self._cidr(peer.item)]
        if isinstance(peer, parse.FqdnPeer):
            return [FqdnPeer(peer.name.text.lower().rstrip("."))]
        if isinstance(peer, parse.EntityPeer):
            if peer.name.text not in CILIUM_ENTITIES:
                raise ValueError(f"{peer.span}: unknown entity `{peer.name.text}`")
            return [EntityPeer(peer.name.text)]
        return [Anywhere()]

    @staticmethod
    def _in_namespaces(scope: parse.NamespaceScope, pods: Sel) -> PodPeer:
        if isinstance(scope, parse.NsByName):
            return PodPeer(Namespaces(name=scope.name.text), pods, True)
        labels = _selector(scope.selector) if isinstance(scope, parse.NsByLabels) else None
        return PodPeer(Namespaces(labels=labels), pods, False)

    # ---- meaning
    def _ns_labels(self, pod: Pod) -> Mapping[str, str]:
        key = (pod.namespace, pod.variant)
        if key not in self._labels:
            self._labels[key] = self.topology.labels_of(pod)
        return self._labels[key]

    def _is_subject(self, stmt: Statement, pod: Pod) -> bool:
        return stmt.scope.covers(pod.namespace, self._ns_labels(pod), self.system) and any(
            s.matches(pod.labels) for s in stmt.subjects)

    def _peer_matches(self, peer: Peer, endpoint: Endpoint) -> bool:
        if isinstance(peer, Anywhere):
            return True
        if isinstance(peer, EntityPeer):
            return entity_matches(peer.entity, endpoint)
        if isinstance(peer, PodPeer):
            return (isinstance(endpoint, Pod) and peer.namespaces.matches(endpoint.namespace, self._ns_labels(endpoint))
                    and peer.pods.matches(endpoint.labels))
        if not isinstance(endpoint, External):
            return False
        if isinstance(peer, FqdnPeer):
            return endpoint.identity is None and endpoint.name is not None and fqdn_matches(peer.pattern, endpoint.name)
        if endpoint.identity not in ADDRESSES:
            return False
        address = endpoint.address
        return (address.version == peer.net.version and address in peer.net
                and not any(address in e for e in (*peer.excepts, *(self.pod_networks or ()))))

    def _half_reaches(self, stmt: Statement, pod: Pod) -> bool:
        """Is `pod` among the peer pods whose opposite direction the other half of `stmt` opens?"""
        for peer in stmt.peers:
            if not self._peer_matches(peer, pod):
                continue
            named = isinstance(peer, PodPeer) and peer.named
            if named or pod.namespace == stmt.scope.namespace:  # broad peers: only the statement's namespace
                return True
        return False

    def _ports_match(self, stmt: Statement, conn: Connection) -> bool:
        return not stmt.ports or any(p.matches(conn) for p in stmt.ports)

    def _explicit(self, stmt: Statement, pod: Pod, direction: Direction, other: Endpoint, conn: Connection) -> bool:
        return (stmt.direction == direction and self._is_subject(stmt, pod)
                and any(self._peer_matches(p, other) for p in stmt.peers) and self._ports_match(stmt, conn))

    def _half(self, stmt: Statement, pod: Pod, direction: Direction, other: Endpoint, conn: Connection) -> bool:
        return (stmt.action == "allow" and not stmt.one_sided and stmt.direction == _opposite(direction)
                and isinstance(other, Pod)
                and self._is_subject(stmt, other) and self._half_reaches(stmt, pod) and self._ports_match(stmt, conn))

    def applies(self, tier: str | None, pod: Pod, direction: Direction) -> bool:
        """Does an explicit statement of `tier` in `direction` have `pod` as subject?"""
        key = (tier, pod, tuple(sorted(pod.labels.items())), direction)
        if key not in self._applies:
            self._applies[key] = any(
                s.direction == direction and self._is_subject(s, pod) for s in self.by_tier.get(tier, ()))
        return self._applies[key]

    def _isolation(self, pod: Pod, direction: Direction) -> Isolation | None:
        labels = self._ns_labels(pod)
        return next((i for i in self.isolations
                     if i.direction == direction and i.scope.covers(pod.namespace, labels, self.system)
                     and any(s.matches(pod.labels) for s in i.subjects)), None)

    def side(self, pod: Pod, direction: Direction, other: Endpoint, conn: Connection) -> Verdict:
        for _order, tier, otherwise in self.order:
            if tier is None:
                verdict = self._default_tier(pod, direction, other, conn)
                if verdict is not None:
                    return verdict
                continue
            if not self.applies(tier, pod, direction):
                continue
            decided: Statement | None = None
            for stmt in self.by_tier.get(tier, ()):
                if self._explicit(stmt, pod, direction, other, conn):
                    decided = stmt
                    break
                if self._half(stmt, pod, direction, other, conn):
                    return Verdict(True, (f"{stmt.where} (other half)",))
            if decided is not None and decided.action == "pass":
                continue
            if decided is not None:
                return Verdict(decided.action == "allow", (decided.where,), by_deny=decided.action == "deny")
            if otherwise == "deny":
                return Verdict(False, (f"tier {tier}: otherwise deny",))
        return Verdict(True, ())

    def _default_tier(self, pod: Pod, direction: Direction, other: Endpoint, conn: Connection) -> Verdict | None:
        isolation = self._isolation(pod, direction)
        if isolation is None and not self.applies(None, pod, direction):
            return None
        for stmt in self._default_statements():
            if stmt.action == "deny" and self._explicit(stmt, pod, direction, other, conn):
                return Verdict(False, (stmt.where,), by_deny=True)
        for stmt in self._default_statements():
            if stmt.action == "allow" and self._explicit(stmt, pod, direction, other, conn):
                return Verdict(True, (stmt.where,))
        for stmt in self.statements:  # every other half is in the default tier too (a tier's also in its tier)
            if self._half(stmt, pod, direction, other, conn):
                return Verdict(True, (f"{stmt.where} (other half)",))
        why = [f"{isolation.where}"] if isolation is not None else []
        why += [f"{pod} {direction} is restricted by {s.where}" for s in self._default_statements()
                if s.direction == direction and self._is_subject(s, pod)][:1]
        return Verdict(False, tuple(why))

    def _default_statements(self) -> list[Statement]:
        return self.by_tier.get(None, [])

    def decide(self, conn: Connection) -> Verdict:
        reasons: list[str] = []
        sides: tuple[tuple[Endpoint, Direction, Endpoint], ...] = (
            (conn.src, "egress", conn.dst), (conn.dst, "ingress", conn.src))
        for endpoint, direction, other in sides:
            if isinstance(endpoint, Pod):
                verdict = self.side(endpoint, direction, other, conn)
                if not verdict.allowed:
                    return verdict
                reasons += verdict.reasons
        return Verdict(True, tuple(reasons))
