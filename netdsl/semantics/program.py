"""The meaning of the IR itself: what a program allows, independent of any target.

A connection is allowed when the source's egress and the destination's ingress both allow it. A pod's
direction is restricted when its namespace is isolated for it, or a rule of that direction applies to
it; a restricted direction allows only what a rule of that direction lists. External endpoints are
never restricted (no policy applies to them).
"""

from __future__ import annotations

from collections import defaultdict

from netdsl import ir
from netdsl.ir import Direction
from netdsl.semantics.model import Connection, Endpoint, External, Pod, Topology, Verdict, port_matches


def peer_matches(peer: ir.Peer, endpoint: Endpoint, topology: Topology) -> bool:
    if isinstance(peer, ir.AnyPeer):
        return True
    if isinstance(peer, ir.CidrPeer):
        return (
            isinstance(endpoint, External)
            and endpoint.address.version == peer.cidr.version
            and endpoint.address in peer.cidr
            and not any(endpoint.address in e for e in peer.excepts)
        )
    if not isinstance(endpoint, Pod):
        return False
    labels = topology.namespace_labels(endpoint.namespace)
    return ir.namespace_matches(peer.namespaces, endpoint.namespace, labels) and peer.pods.matches(
        dict(endpoint.labels)
    )


class ProgramSemantics:
    def __init__(self, program: ir.Program, topology: Topology) -> None:
        self.program = program
        self.topology = topology
        self.isolated = {(i.namespace, i.direction): i for i in program.isolations}
        self.rules: dict[tuple[str, Direction], list[ir.Rule]] = defaultdict(list)
        for r in program.rules:
            self.rules[(r.subject.namespace, r.direction)].append(r)

    def side(self, pod: Pod, direction: Direction, other: Endpoint, conn: Connection) -> Verdict:
        applying = [
            r for r in self.rules.get((pod.namespace, direction), ())
            if r.subject.selector.matches(dict(pod.labels))
        ]
        isolation = self.isolated.get((pod.namespace, direction))
        if not applying and isolation is None:
            return Verdict(True, ())
        allowing = [
            r for r in applying
            if any(peer_matches(p, other, self.topology) for p in r.peers)
            and (not r.ports or any(port_matches(p, conn) for p in r.ports))
        ]
        if allowing:
            return Verdict(True, tuple(_describe(r) for r in allowing))
        why = [f"{isolation.span}: isolate {direction.value.lower()}"] if isolation else []
        why += [f"{pod} {direction.value.lower()} is restricted by {_describe(r)}" for r in applying[:1]]
        return Verdict(False, tuple(why))

    def decide(self, conn: Connection) -> Verdict:
        reasons: list[str] = []
        if isinstance(conn.src, Pod):
            egress = self.side(conn.src, Direction.EGRESS, conn.dst, conn)
            if not egress.allowed:
                return egress
            reasons += egress.reasons
        if isinstance(conn.dst, Pod):
            ingress = self.side(conn.dst, Direction.INGRESS, conn.src, conn)
            if not ingress.allowed:
                return ingress
            reasons += ingress.reasons
        return Verdict(True, tuple(reasons))


def _describe(r: ir.Rule) -> str:
    half = " (other half)" if r.derived else ""
    return f"{r.span.path}:{r.span.line}: {r.text}{half}"
