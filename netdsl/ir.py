"""The CNI-neutral intermediate representation: what a program means, with no YAML in sight.

Everything is frozen and carries the span of the statement it came from. Peers are absolute (a pod
peer names its namespace scope explicitly); backends make them relative to the policy they write.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias, Union

from netdsl.source import Span


class Direction(str, Enum):
    INGRESS = "Ingress"
    EGRESS = "Egress"

    @property
    def opposite(self) -> Direction:
        return Direction.EGRESS if self is Direction.INGRESS else Direction.INGRESS


class Protocol(str, Enum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class Action(str, Enum):
    ALLOW = "Allow"
    DENY = "Deny"
    PASS = "Pass"  # skip the rest of this tier; the next tier decides


class Operator(str, Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


# ------------------------------------------------------------------------------------ selectors


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()  # sorted, deduplicated; empty for Exists / DoesNotExist

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator is Operator.IN:
            return labels.get(self.key) in self.values
        if self.operator is Operator.NOT_IN:
            return labels.get(self.key) not in self.values
        if self.operator is Operator.EXISTS:
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True, slots=True)
class Selector:
    """A conjunction of label requirements, in canonical order. No requirements selects everything."""

    requirements: tuple[Requirement, ...] = ()

    @staticmethod
    def of(requirements: tuple[Requirement, ...] | list[Requirement]) -> Selector:
        return Selector(tuple(sorted(set(requirements), key=lambda r: (r.key, r.operator.value, r.values))))

    @property
    def is_everything(self) -> bool:
        return not self.requirements

    def matches(self, labels: dict[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def conjoin(self, other: Selector) -> Selector:
        return Selector.of(self.requirements + other.requirements)

    def equalities(self) -> dict[str, str]:
        """Requirements of the form key=value (matchLabels), by key."""
        return {
            r.key: r.values[0]
            for r in self.requirements
            if r.operator is Operator.IN and len(r.values) == 1
        }

    def example_labels(self) -> dict[str, str] | None:
        """A smallest label set this selector matches, or None if nothing can match it."""
        labels: dict[str, str] = {}
        by_key: dict[str, list[Requirement]] = {}
        for r in self.requirements:
            by_key.setdefault(r.key, []).append(r)
        for key, reqs in by_key.items():
            allowed: set[str] | None = None
            banned: set[str] = set()
            must_exist = must_not = False
            for r in reqs:
                if r.operator is Operator.IN:
                    allowed = set(r.values) if allowed is None else allowed & set(r.values)
                    must_exist = True
                elif r.operator is Operator.NOT_IN:
                    banned |= set(r.values)
                elif r.operator is Operator.EXISTS:
                    must_exist = True
                else:
                    must_not = True
            if must_exist and must_not:
                return None
            if must_not:
                continue
            if allowed is not None:
                choices = sorted(allowed - banned)
                if not choices:
                    return None
                labels[key] = choices[0]
            elif must_exist:
                value = "x"
                while value in banned:
                    value += "x"
                labels[key] = value
        return labels

    @property
    def satisfiable(self) -> bool:
        return self.example_labels() is not None

    def __str__(self) -> str:
        parts = []
        for r in self.requirements:
            if r.operator is Operator.IN and len(r.values) == 1:
                parts.append(f"{r.key}={r.values[0]}")
            elif r.operator is Operator.IN:
                parts.append(f"{r.key} in ({', '.join(r.values)})")
            elif r.operator is Operator.NOT_IN and len(r.values) == 1:
                parts.append(f"{r.key}!={r.values[0]}")
            elif r.operator is Operator.NOT_IN:
                parts.append(f"{r.key} notin ({', '.join(r.values)})")
            elif r.operator is Operator.EXISTS:
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ", ".join(parts) if parts else "(everything)"


EVERYTHING = Selector()


# ------------------------------------------------------------------------------------ namespaces

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True, slots=True)
class NamespaceByName:
    name: str


@dataclass(frozen=True, slots=True)
class NamespaceBySelector:
    selector: Selector


@dataclass(frozen=True, slots=True)
class AllNamespaces:
    pass


NamespaceMatch: TypeAlias = Union[NamespaceByName, NamespaceBySelector, AllNamespaces]


def namespace_matches(match: NamespaceMatch, name: str, labels: dict[str, str]) -> bool:
    if isinstance(match, NamespaceByName):
        return match.name == name
    if isinstance(match, NamespaceBySelector):
        return match.selector.matches({**labels, NAMESPACE_NAME_LABEL: name})
    return True


# ------------------------------------------------------------------------------------ peers

IPNetwork: TypeAlias = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True, slots=True)
class PodPeer:
    """Pods matching `pods` in namespaces matching `namespaces` (both must hold).

    `label` says how the user named the peer (a service name, `pods[...]`), for messages and comments.
    """

    namespaces: NamespaceMatch
    pods: Selector
    label: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class CidrPeer:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()
    label: str = field(default="", compare=False)
    network_set: str | None = field(default=None, compare=False)  # the `cidrs NAME` it comes from


@dataclass(frozen=True, slots=True)
class AnyPeer:
    """Every endpoint, inside the cluster or not."""

    label: str = field(default="anywhere", compare=False)


@dataclass(frozen=True, slots=True)
class FqdnPeer:
    """External endpoints by DNS name (Cilium toFQDNs): an exact name, or a pattern where `*` matches
    any run of characters within one label (and `*` alone matches every name)."""

    name: str

    @property
    def is_pattern(self) -> bool:
        return "*" in self.name

    def matches(self, host: str) -> bool:
        if self.name == "*":
            return True
        regex = "".join("[-a-z0-9_]*" if ch == "*" else re.escape(ch) for ch in self.name)
        return re.fullmatch(regex, host.lower().rstrip(".")) is not None


# Cilium's entities; `world` is everything outside the cluster, `cluster` every endpoint in it.
ENTITIES = frozenset({
    "all", "cluster", "health", "host", "ingress", "init", "kube-apiserver", "remote-node", "unmanaged",
    "world", "world-ipv4", "world-ipv6",
})


@dataclass(frozen=True, slots=True)
class EntityPeer:
    name: str


Peer: TypeAlias = Union[PodPeer, CidrPeer, AnyPeer, FqdnPeer, EntityPeer]


@dataclass(frozen=True, slots=True)
class HttpRule:
    """One allowed kind of HTTP request (L7): every given field must match; None matches anything."""

    method: str | None = None
    path: str | None = None  # a regular expression over the path
    host: str | None = None  # a regular expression over the Host header
    headers: tuple[str, ...] = ()  # "Name: value" or "Name" (present)


# ------------------------------------------------------------------------------------ ports


@dataclass(frozen=True, slots=True)
class PortMatch:
    """A protocol and optionally a port: a number, a range [port, end_port], or a named port.

    port=None and name=None means every port of the protocol."""

    protocol: Protocol
    port: int | None = None
    end_port: int | None = None
    name: str | None = None

    def __str__(self) -> str:
        if self.name is not None:
            what = self.name
        elif self.port is None:
            return self.protocol.value.lower()
        elif self.end_port is not None and self.end_port != self.port:
            what = f"{self.port}-{self.end_port}"
        else:
            what = str(self.port)
        return what if self.protocol is Protocol.TCP else f"{what}/{self.protocol.value.lower()}"


# ------------------------------------------------------------------------------------ statements


@dataclass(frozen=True, slots=True)
class Workload:
    """A set of pods that policies are attached to: a declared service, `all pods`, or a set derived by
    the compiler (the client side of a flow). It lives in one namespace, or - when `cluster` is set - in
    every namespace `cluster` matches (then `namespace` is "")."""

    namespace: str
    name: str
    selector: Selector
    span: Span | None = field(default=None, compare=False)
    declared: bool = True
    cluster: NamespaceMatch | None = None

    def applies_in(self, namespace: str, labels: dict[str, str]) -> bool:
        if self.cluster is None:
            return namespace == self.namespace
        return namespace_matches(self.cluster, namespace, labels)

    @property
    def example(self) -> dict[str, str]:
        """The labels of a pod of this workload as the program models it (see Selector.example_labels)."""
        return self.selector.example_labels() or {}


@dataclass(frozen=True, slots=True)
class Rule:
    """Allow traffic in `direction` between `subject` and any of `peers` on any of `ports`.

    `ports` empty means every port and protocol. A rule with `derived=True` is the other half of a flow
    the user wrote for the opposite direction (netdsl makes flows work end to end)."""

    subject: Workload
    direction: Direction
    peers: tuple[Peer, ...]
    ports: tuple[PortMatch, ...]
    span: Span
    text: str = field(default="", compare=False)
    action: Action = Action.ALLOW
    derived: bool = False
    tier: str | None = None  # None: the default tier (where plain Kubernetes policies live)
    http: tuple[HttpRule, ...] = ()  # L7: when given, only these requests (on the rule's TCP ports)
    widened: str = field(default="", compare=False)  # what --widen did to this rule, if anything
    one_sided: bool = False  # `allows ingress from`: exactly this rule; lowering derives no other half


@dataclass(frozen=True, slots=True)
class Isolation:
    """Default deny in `direction` for every pod of `namespace` (or of the namespaces `cluster`
    matches) - or, with `subject` (`isolate for web`), for the pods of that workload there only."""

    namespace: str
    direction: Direction
    span: Span
    cluster: NamespaceMatch | None = None
    subject: Workload | None = None

    def applies_in(self, namespace: str, labels: dict[str, str]) -> bool:
        """Whether the namespace is one this isolation is about (its pods may still not all be
        covered: see `covers`)."""
        if self.cluster is None:
            return namespace == self.namespace
        return namespace_matches(self.cluster, namespace, labels)

    def covers(self, namespace: str, labels: dict[str, str], pod_labels: dict[str, str]) -> bool:
        """Whether a pod with `pod_labels` in the namespace (with `labels`) is isolated by this."""
        return self.applies_in(namespace, labels) and (
            self.subject is None or self.subject.selector.matches(pod_labels))

    @property
    def selector(self) -> Selector:
        """The pods of each covered namespace this isolation covers."""
        return EVERYTHING if self.subject is None else self.subject.selector


@dataclass(frozen=True, slots=True)
class Tier:
    """An ordered policy tier. Lower `order` is evaluated first. Traffic that a tier's rules do not
    decide for a pod the tier applies to gets `otherwise` (Pass: on to the next tier; Deny: dropped)."""

    name: str
    order: int
    otherwise: Action
    span: Span


DEFAULT_TIER_ORDER = 1_000_000  # Calico's default tier, where statements outside `tier` blocks go
SYSTEM_NAMESPACES = (
    "calico-apiserver", "calico-system", "kube-node-lease", "kube-public", "kube-system", "tigera-operator",
)


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: tuple[tuple[str, str], ...]
    span: Span | None = None

    @property
    def label_dict(self) -> dict[str, str]:
        return {**dict(self.labels), NAMESPACE_NAME_LABEL: self.name}


@dataclass(frozen=True, slots=True)
class Expectation:
    """`expect SRC -> DST[:PORT] allowed|denied`. Each end is a class of pods (`source_pods`,
    `destination_pods`: a service's pods, `pods[...] in ...`, `any pod in ...`) or an IP address (the
    text). `allowed` holds when every member of the source class reaches every member of the
    destination class (on the port; without one, on some port), `denied` when none reaches any."""

    source: str
    destination: str
    port: PortMatch | None
    allowed: bool
    span: Span
    text: str = ""
    source_pods: PodPeer | None = None
    destination_pods: PodPeer | None = None


@dataclass(frozen=True)
class Program:
    namespaces: tuple[Namespace, ...]
    services: tuple[Workload, ...]
    isolations: tuple[Isolation, ...]
    rules: tuple[Rule, ...]
    tiers: tuple[Tier, ...] = ()
    system_namespaces: tuple[str, ...] = SYSTEM_NAMESPACES
    expectations: tuple[Expectation, ...] = ()
    # `pod networks = ...`: the cluster's pod and service address ranges (empty: not declared)
    pod_networks: tuple[IPNetwork, ...] = ()

    def tier(self, name: str | None) -> Tier | None:
        return next((t for t in self.tiers if t.name == name), None)

    @property
    def plain_cluster(self) -> NamespaceMatch:
        """The namespaces of a plain `cluster` block: all but the system ones."""
        if not self.system_namespaces:
            return AllNamespaces()
        return NamespaceBySelector(Selector.of(
            [Requirement(NAMESPACE_NAME_LABEL, Operator.NOT_IN, self.system_namespaces)]
        ))
