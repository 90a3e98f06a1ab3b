"""Lowering's shared state: the scopes statements are written in, what has been declared, the rules
lowered so far, and how problems are reported. Every pass (names, values, flows, halves, lints) reads and
writes this state; none keeps state of its own.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from netdsl import ir, parse
from netdsl.diagnostics import Diagnostic, error, warning
from netdsl.ir import PortMatch, Protocol, Selector, Workload
from netdsl.source import Span

PROTOCOLS = {"tcp": Protocol.TCP, "udp": Protocol.UDP, "sctp": Protocol.SCTP}

# Names netdsl gives its own policies; a service with one of these names would collide.
RESERVED_NAMES = frozenset({"all-pods", "default-deny", "default-deny-ingress", "default-deny-egress"})

ALL_PODS = "all-pods"

# Where `allow dns` points: the cluster DNS pods, by the labels every common distribution sets.
DNS_NAMESPACE = "kube-system"
DNS_SELECTOR = Selector.of([ir.Requirement("k8s-app", ir.Operator.IN, ("kube-dns",))])
DNS_PORTS = (PortMatch(Protocol.UDP, 53), PortMatch(Protocol.TCP, 53))


@dataclass
class Scope:
    """A scope statements are written in: one namespace, or (with `cluster`) the namespaces a `cluster`
    block covers. `name` is what messages call it; `key` tells scopes apart."""

    name: str
    span: Span
    cluster: ir.NamespaceMatch | None = None
    labels: dict[str, tuple[str, Span]] = field(default_factory=dict)
    services: dict[str, Workload] = field(default_factory=dict)
    groups: dict[str, tuple[tuple[parse.Word, ...], Span]] = field(default_factory=dict)
    # statements by block, with the tier the block is in (None: the default tier)
    blocks: list[tuple[tuple[parse.NamespaceStmt, ...], str | None]] = field(default_factory=list)
    by_selector: dict[Selector, Workload] | None = None  # services by selector, once declared

    @property
    def namespace(self) -> str:
        """The Workload.namespace of this scope: "" for a cluster scope."""
        return "" if self.cluster is not None else self.name

    @property
    def key(self) -> str:
        return self.name if self.cluster is None else "cluster " + self.name

    @property
    def here(self) -> ir.NamespaceMatch:
        """Where a peer without `in ...` lives: this namespace, or the namespaces of the cluster scope."""
        return self.cluster if self.cluster is not None else ir.NamespaceByName(self.name)

    @property
    def what(self) -> str:
        return f"namespace `{self.name}`" if self.cluster is None else f"`{self.name}`"


@dataclass
class CidrSet:
    name: str
    peers: tuple[ir.CidrPeer, ...]
    span: Span



class LoweringState:
    def __init__(self, modules: Sequence[parse.Module]) -> None:
        self.modules = modules
        self.diagnostics: list[Diagnostic] = []
        self.namespaces: dict[str, Scope] = {}
        self.clusters: dict[tuple[ir.Selector | None, bool], Scope] = {}
        self.cluster_blocks: list[tuple[parse.ClusterBlock, str | None]] = []
        self.tiers: dict[str, ir.Tier] = {}
        self.expect_stmts: list[tuple[parse.ExpectStmt, Scope | None]] = []
        self.system: tuple[str, ...] = ir.SYSTEM_NAMESPACES
        self.system_span: Span | None = None
        self.pod_networks: tuple[ir.IPNetwork, ...] = ()
        self.pod_networks_span: Span | None = None
        self.cidr_sets: dict[str, CidrSet] = {}
        self.isolations: list[ir.Isolation] = []
        self.rules: list[ir.Rule] = []
        # The peers a rule's other half is derived toward, where they differ from the peers it emits
        # (`anywhere, b/db` emits `anywhere` but keeps b/db's other half in namespace b).
        self.half_peers: dict[ir.Rule, tuple[ir.Peer, ...]] = {}
        self.sources = {m.source.path: m.source for m in modules}
        # Names whose declaration was rejected: uses of them are not reported again as unknown.
        self.failed: set[tuple[str, str]] = set()

    # ---- reporting
    def error(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(error(code, message, span, hint))

    def warn(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(warning(code, message, span, hint))

    def did_you_mean(self, name: str, candidates: Iterable[str]) -> str | None:
        close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
        if close:
            return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"
        return None

    # ---- entry point
    def scopes(self) -> list[Scope]:
        return [*self.namespaces.values(), *self.clusters.values()]

    @staticmethod
    def all_pods(ns: Scope) -> Workload:
        return Workload(ns.namespace, ALL_PODS, ir.EVERYTHING, cluster=ns.cluster)



def peer_label(w: Workload) -> str:
    return "all pods" if w.name == ALL_PODS else w.name


def rule_key(r: ir.Rule) -> tuple[object, ...]:
    return (r.subject.namespace, r.subject.cluster, r.subject.selector, r.direction, frozenset(r.peers),
            frozenset(r.ports), r.action, r.tier)

