"""The meaning of the IR itself: what a program allows, independent of any target.

A connection is allowed when the source's egress and the destination's ingress both allow it. A pod's
direction is restricted when an isolation covers it (its namespace matches, and `isolate for S`: S's
selector selects the pod), or a rule of that direction applies to it; a restricted direction allows
only what a rule of that direction lists. External endpoints are never restricted (no policy applies
to them).
"""

from __future__ import annotations

from collections import defaultdict

from netdsl import ir
from netdsl.ir import Direction
from netdsl.netset import net_set
from netdsl.semantics.model import (
    Connection,
    Endpoint,
    External,
    Pod,
    Topology,
    Verdict,
    both_sides,
    entity_matches,
    port_matches,
)

# The endpoints a CIDR peer matches by address: plain addresses and Calico host endpoints.
ADDRESS_IDENTITIES = (None, "calico:host-endpoint")


def peer_matches(peer: ir.Peer, endpoint: Endpoint, topology: Topology) -> bool:
    if isinstance(peer, ir.AnyPeer):
        return True
    if isinstance(peer, ir.CidrPeer):
        return (  # addresses outside the pod network; on Calico a node with a host endpoint is one,
            # on Cilium nodes are reserved identities that CIDRs do not match (its default)
            isinstance(endpoint, External)
            and endpoint.identity in ADDRESS_IDENTITIES
            and endpoint.address.version == peer.cidr.version
            and endpoint.address in peer.cidr
            and endpoint.address not in net_set(peer.excepts)
        )
    if isinstance(peer, ir.FqdnPeer):
        return (isinstance(endpoint, External) and endpoint.identity is None and endpoint.name is not None
                and peer.matches(endpoint.name))
    if isinstance(peer, ir.EntityPeer):
        return entity_matches(peer.name, endpoint)
    if not isinstance(endpoint, Pod):
        return False
    labels = topology.labels_of(endpoint)
    return ir.namespace_matches(peer.namespaces, endpoint.namespace, labels) and peer.pods.matches(
        dict(endpoint.labels)
    )


def evaluation_order(r: ir.Rule) -> tuple[bool, str, int, int, bool]:
    """Rules of a tier in the order they are tried: source order, except that in the default tier (no
    `tier` block) deny statements come first - outside tiers a deny always wins, as in Cilium."""
    return (r.tier is None and r.action is not ir.Action.DENY, *r.span.sort_key, r.derived)


PEER_CACHE = 200_000


class ProgramSemantics:
    """Tiers are evaluated in order (the default tier, holding statements outside `tier` blocks, at
    order 1000000). A tier applies to a pod's direction when one of its rules, or (default tier) an
    isolation, covers the pod (Isolation.covers). In an applying tier the first matching rule (see
    evaluation_order) decides: allow or deny ends evaluation, pass goes on to the next tier; with no
    match the tier's `otherwise` decides (the default tier denies). A direction no tier decides is
    allowed, as without policy.
    With only allow rules this is exactly Kubernetes' union-of-allows with per-direction isolation."""

    def __init__(self, program: ir.Program, topology: Topology) -> None:
        self.program = program
        self.topology = topology
        self.tiers = sorted(
            [(t.order, t.name, t.otherwise) for t in program.tiers]
            + [(ir.DEFAULT_TIER_ORDER, None, ir.Action.DENY)],
            key=lambda t: (t[0], t[1] or "default"),
        )
        self.rules: dict[tuple[str | None, Direction], list[ir.Rule]] = defaultdict(list)
        for r in sorted(program.rules, key=evaluation_order):
            self.rules[(r.tier, r.direction)].append(r)
        # per pod and direction, the rules whose subject selects it, per tier: once per pod, not once
        # per connection (a selector with n requirements against every connection was quadratic)
        self._applying: dict[tuple[Pod, Direction], list[list[ir.Rule]]] = {}
        # likewise whether a peer (by identity: the program keeps it alive) matches an endpoint; emptied
        # past PEER_CACHE entries, so memory stays bounded however many connections are decided
        self._peer_hits: dict[tuple[int, Endpoint], bool] = {}

    def _peer_matches(self, peer: ir.Peer, endpoint: Endpoint) -> bool:
        key = (id(peer), endpoint)
        got = self._peer_hits.get(key)
        if got is None:
            if len(self._peer_hits) >= PEER_CACHE:
                self._peer_hits.clear()
            got = self._peer_hits[key] = peer_matches(peer, endpoint, self.topology)
        return got

    def _applying_rules(self, pod: Pod, direction: Direction) -> list[list[ir.Rule]]:
        got = self._applying.get((pod, direction))
        if got is None:
            labels = self.topology.labels_of(pod)
            pod_labels = dict(pod.labels)
            got = self._applying[(pod, direction)] = [
                [r for r in self.rules.get((tier, direction), ())
                 if r.subject.applies_in(pod.namespace, labels) and r.subject.selector.matches(pod_labels)]
                for _order, tier, _otherwise in self.tiers]
        return got

    def side(self, pod: Pod, direction: Direction, other: Endpoint, conn: Connection) -> Verdict:
        labels = self.topology.labels_of(pod)
        for (_order, tier, otherwise), applying in zip(self.tiers, self._applying_rules(pod, direction), strict=True):
            isolation = None
            if tier is None:
                pod_labels = dict(pod.labels)
                isolation = next(
                    (i for i in self.program.isolations
                     if i.direction is direction and i.covers(pod.namespace, labels, pod_labels)),
                    None,
                )
            if not applying and isolation is None:
                continue
            decided = next(
                (r for r in applying
                 if any(self._peer_matches(p, other) for p in r.peers)
                 and (not r.ports or any(port_matches(p, conn) for p in r.ports))),
                None,
            )
            if decided is not None and decided.action is ir.Action.PASS:
                continue
            if decided is not None:
                allowed = decided.action is ir.Action.ALLOW
                return Verdict(allowed, (_describe(decided),), by_deny=not allowed)
            if otherwise is ir.Action.PASS:
                continue
            why = [f"{isolation.span}: isolate {direction.value.lower()}"
                   + (f" for {isolation.subject.name}" if isolation.subject else "")] if isolation else []
            why += [f"{pod} {direction.value.lower()} is restricted by {_describe(r)}" for r in applying[:1]]
            if tier is not None:
                why.append(f"tier {tier}: otherwise deny")
            return Verdict(False, tuple(why))
        return Verdict(True, ())

    def decide(self, conn: Connection) -> Verdict:
        return both_sides(conn, lambda pod, egress: self.side(
            pod, Direction.EGRESS if egress else Direction.INGRESS, conn.dst if egress else conn.src, conn))


def _describe(r: ir.Rule) -> str:
    half = " (other half)" if r.derived else ""
    return f"{r.span.path}:{r.span.line}: {r.text}{half}"
