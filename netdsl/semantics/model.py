"""What the semantic engine reasons about: endpoints, a topology, connections and verdicts.

Pods have labels and named container ports but no IP addresses: CIDR peers match only external
endpoints. Whether an ipBlock / `nets` / `toCIDR` matches a pod's own IP differs between CNIs (the
Kubernetes API calls it implementation-defined), so the engine does not pretend to know.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, Union

from netdsl import ir
from netdsl.ir import NAMESPACE_NAME_LABEL, Protocol


@dataclass(frozen=True)
class Pod:
    """A pod, or in a class topology (netdsl.semantics.universe) every pod alike in the labels and
    named ports every selector and port rule looks at. A pod stands for one or more replicas: the
    connection from a pod to itself means traffic between two replicas."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    # named container ports: name -> (number, protocol)
    ports: Mapping[str, tuple[int, Protocol]] = field(default_factory=dict, hash=False)
    # A class topology may hold one namespace name with several label sets (a namespace `prod` with and
    # without `env=prod`); variant k > 0 picks Topology.variants[(namespace, k)].
    variant: int = 0
    # The pod's IP address where it matters (CNIs whose CIDR rules also match pods: Calico's `nets`,
    # ipBlock on some implementations); None: outside every CIDR the policies mention.
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = field(default=None, hash=False)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class External:
    """An endpoint that is not a pod. `identity` None: an address outside the cluster (the Internet,
    another network), optionally answering to a DNS `name`. Otherwise one of a target's own non-pod
    identities (NON_POD_IDENTITIES), which no netdsl statement may reach unless it names it
    (`anywhere`, an entity): a Cilium reserved identity (`cilium:host`, `cilium:health`, ...) or a Calico
    host endpoint (`calico:host-endpoint`, with `labels`)."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    name: str | None = None  # a DNS name it answers to (for FQDN rules)
    identity: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __hash__(self) -> int:
        # the labels count: host endpoints differ only by them, and one hash for all of them made every
        # dict of endpoints quadratic. Computed once (the labels are never changed after construction).
        got: int | None = self.__dict__.get("_hash")
        if got is None:
            got = hash((self.address, self.name, self.identity, frozenset(self.labels.items())))
            object.__setattr__(self, "_hash", got)
        return got

    def __str__(self) -> str:
        if self.identity is not None:
            return f"{self.identity}({self.address})" if not self.labels else f"{self.identity}{dict(self.labels)}"
        return self.name or str(self.address)


# Non-pod identities the class topology adds for a target (see netdsl.semantics.universe). Cilium's
# reserved identities carry only `reserved:` labels; Calico host endpoints carry any labels an admin sets.
CILIUM_RESERVED = ("host", "remote-node", "kube-apiserver", "health", "ingress", "init", "unmanaged")
NON_POD_IDENTITIES = (*(f"cilium:{r}" for r in CILIUM_RESERVED), "calico:host-endpoint")


Endpoint: TypeAlias = Union[Pod, External]


@dataclass(frozen=True)
class Connection:
    src: Endpoint
    dst: Endpoint
    protocol: Protocol
    port: int
    # Class topologies: the named container ports the destination pod binds to this port (a pod of a
    # class topology stands for every binding of its named ports, so the probe says which).
    names: frozenset[str] = frozenset()

    def __str__(self) -> str:
        bound = f" (as {', '.join(sorted(self.names))})" if self.names else ""
        return f"{self.src} -> {self.dst}:{self.port}/{self.protocol.value.lower()}{bound}"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    # what decided: the statements or policy rules that allow, or the isolation that denies
    reasons: tuple[str, ...] = ()
    by_deny: bool = False  # denied by an explicit deny statement (not by isolation)


@dataclass(frozen=True)
class Topology:
    namespaces: Mapping[str, Mapping[str, str]]  # name -> its labels (the automatic name label added)
    pods: tuple[Pod, ...]
    externals: tuple[External, ...] = ()
    # (name, k) -> the labels of variant k > 0 of that namespace (class topologies only, see Pod.variant)
    variants: Mapping[tuple[str, int], Mapping[str, str]] = field(default_factory=dict)

    def namespace_labels(self, name: str, variant: int = 0) -> dict[str, str]:
        labels = self.variants.get((name, variant), {}) if variant else self.namespaces.get(name, {})
        return {**labels, NAMESPACE_NAME_LABEL: name}

    def labels_of(self, pod: Pod) -> dict[str, str]:
        """The labels of the pod's namespace (with the automatic name label)."""
        return self.namespace_labels(pod.namespace, pod.variant)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return (*self.pods, *self.externals)

    def find(self, text: str) -> Endpoint | None:
        """`ns/pod`, a pod name if unique, or an IP address."""
        try:
            return External(ipaddress.ip_address(text))
        except ValueError:
            pass
        if "/" in text:
            return next((p for p in self.pods if str(p) == text), None)
        matches = [p for p in self.pods if p.name == text]
        return matches[0] if len(matches) == 1 else None


def both_sides(
    conn: Connection,
    side: Callable[[Any, bool], Verdict],  # Any: takes pods and the endpoints has_side admits
    identity_side: Callable[[External, bool], Verdict | None] | None = None,
    has_side: Callable[[Endpoint], bool] = lambda e: isinstance(e, Pod),
) -> Verdict:
    """A connection is allowed when the source's egress (side(src, True)) and the destination's ingress
    (side(dst, False)) both allow it. Endpoints has_side admits (pods, unless a target's evaluator says
    more, e.g. Calico host endpoints) have a side; another non-pod endpoint has one only where
    identity_side gives a verdict (Cilium's health and ingress endpoints), otherwise none. The first
    denial decides."""
    reasons: list[str] = []
    for endpoint, egress in ((conn.src, True), (conn.dst, False)):
        if has_side(endpoint):
            verdict: Verdict | None = side(endpoint, egress)
        elif isinstance(endpoint, External) and identity_side is not None:
            verdict = identity_side(endpoint, egress)
        else:
            verdict = None
        if verdict is None:
            continue
        if not verdict.allowed:
            return verdict
        reasons += verdict.reasons
    return Verdict(True, tuple(reasons))


# The `reserved:` labels of each Cilium reserved identity (cilium pkg/identity/numericidentity.go,
# reservedIdentityLabels): the kube-apiserver identity is also a remote node. An External may add more in
# its `labels` (`reserved:kube-apiserver` on the host identity of a node that runs the API server).
CILIUM_RESERVED_LABELS: dict[str, tuple[str, ...]] = {
    "host": ("host",),
    "remote-node": ("remote-node",),
    "kube-apiserver": ("kube-apiserver", "remote-node"),
    "health": ("health",),
    "ingress": ("ingress",),
    "init": ("init",),
    "unmanaged": ("unmanaged",),
}

# Cilium entities as the reserved labels they select (cilium pkg/policy/api/entity.go,
# EntitySelectorMapping and InitEntities); `all` and `cluster` are handled apart.
_ENTITY_LABELS: dict[str, frozenset[str]] = {
    "world": frozenset({"world", "world-ipv4", "world-ipv6"}),
    "world-ipv4": frozenset({"world-ipv4"}),
    "world-ipv6": frozenset({"world-ipv6"}),
    **{name: frozenset({name}) for name in CILIUM_RESERVED},
}


def reserved_labels(endpoint: Endpoint) -> frozenset[str]:
    """The `reserved:` labels (without the prefix) Cilium gives an endpoint: none for a pod, `world` and
    `world-ipv4`/`world-ipv6` for an address outside the cluster, the reserved identity's own for
    `cilium:<name>` (plus any `reserved:` key in its `labels`); none for another target's identities."""
    if isinstance(endpoint, Pod):
        return frozenset()
    if endpoint.identity is None:
        return frozenset({"world", f"world-ipv{endpoint.address.version}"})
    if not endpoint.identity.startswith("cilium:"):
        return frozenset()
    extra = {k.removeprefix("reserved:") for k in endpoint.labels if k.startswith("reserved:")}
    return frozenset(CILIUM_RESERVED_LABELS.get(endpoint.identity.removeprefix("cilium:"), ())) | extra


def entity_matches(entity: str, endpoint: Endpoint) -> bool:
    """Cilium's entity `entity`; the program's `entity X` means exactly this. `all` is everything;
    `cluster` every pod of the cluster and every reserved identity but world (host, remote-node,
    kube-apiserver, health, ingress, init, unmanaged); `world` every address outside the cluster
    (`world-ipv4`/`-ipv6` by family); `remote-node` includes the kube-apiserver identity (it carries
    `reserved:remote-node`); every other entity its own reserved identity. Another target's identities
    (Calico host endpoints) are only `all`."""
    if entity == "all":
        return True
    if isinstance(endpoint, Pod):
        return entity == "cluster"
    labels = reserved_labels(endpoint)
    if entity == "cluster":
        return bool(labels) and "world" not in labels
    return bool(labels & _ENTITY_LABELS.get(entity, frozenset()))


def resolve_port(dst: Endpoint, name: str, protocol: Protocol) -> int | None:
    """A named port means the destination pod's container port of that name (and protocol)."""
    if isinstance(dst, Pod) and name in dst.ports:
        number, proto = dst.ports[name]
        if proto is protocol:
            return number
    return None


def binds(conn: Connection, name: str, protocol: Protocol) -> bool:
    """Whether the connection's destination port is the destination pod's named port `name` (with that
    protocol): as the probe says in a class topology, else by the pod's container ports."""
    if not isinstance(conn.dst, Pod) or protocol is not conn.protocol:
        return False
    return name in conn.names or resolve_port(conn.dst, name, protocol) == conn.port


def port_matches(p: ir.PortMatch, conn: Connection) -> bool:
    if p.protocol is not conn.protocol:
        return False
    if p.name is not None:
        return binds(conn, p.name, p.protocol)
    if p.port is None:
        return True
    return p.port <= conn.port <= (p.end_port or p.port)


OTHER_NAMESPACE = "other-namespace"


def topology_from_program(program: ir.Program) -> Topology:
    """One pod per declared service with labels that satisfy its selector (a `cluster { }` block's
    service: one in every namespace of the topology, those the block matches and the others), one
    unlabelled pod per namespace (and in one namespace the program does not mention), the pods peers
    name, and external addresses inside and outside every CIDR (and named ones for DNS names)."""
    namespaces: dict[str, dict[str, str]] = {ns.name: dict(ns.labels) for ns in program.namespaces}
    pods: list[Pod] = []
    for s in program.services:
        if s.cluster is None:
            pods.append(Pod(s.namespace, s.name, s.example))
    for ns in program.namespaces:
        pods.append(Pod(ns.name, "unlabelled"))
    externals: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = {
        ipaddress.ip_address("198.51.100.77"),
        ipaddress.ip_address("2001:db8:ffff::77"),
    }
    named: dict[str, None] = {"www.example.org": None}
    for rule in program.rules:
        for peer in rule.peers:
            if isinstance(peer, ir.PodPeer) and isinstance(peer.namespaces, ir.NamespaceByName):
                name = peer.namespaces.name
                namespaces.setdefault(name, {})
                labels = peer.pods.example_labels()
                if labels is not None and not any(
                    p.namespace == name and peer.pods.matches(dict(p.labels)) for p in pods
                ):
                    pods.append(Pod(name, "peer-" + str(len(pods)), labels))
            if isinstance(peer, ir.CidrPeer):
                for net in (peer.cidr, *peer.excepts):
                    externals.add(net.network_address)
                    externals.add(net[-1])
            if isinstance(peer, ir.FqdnPeer):
                named[peer.name.replace("*", "x")] = None
    # a namespace the program does not mention (what cluster-wide statements and selectors reach)
    namespaces.setdefault(OTHER_NAMESPACE, {})
    # A cluster block's service has no namespace (Workload.namespace is ""): a pod in namespace "" exists
    # nowhere (an analyser given one puts it in `default`), so its pods are the ones it selects everywhere.
    for s in program.services:
        if s.cluster is not None:
            for name in namespaces:
                taken = {p.name for p in pods if p.namespace == name}
                pods.append(Pod(name, s.name if s.name not in taken else f"cluster-{s.name}", s.example))
    for name in namespaces:
        if not any(p.namespace == name and not p.labels for p in pods):
            pods.append(Pod(name, "unlabelled"))
    # DNS names answer from addresses in 198.18.0.0/15 (benchmarking space: no rule's CIDR is there)
    fqdn = [External(ipaddress.ip_address(f"198.18.0.{i + 1}"), name) for i, name in enumerate(sorted(named))]
    return Topology(
        namespaces,
        tuple(sorted(pods, key=str)),
        tuple(External(a) for a in sorted(externals, key=lambda a: (a.version, a))) + tuple(fqdn),
    )
