"""The pod networks pass: a CIDR peer means addresses outside the cluster, never a pod.

Rule: when the program declares `pod networks = ...`, every CIDR peer gets each declared pod network
inside it as an `except` (a CIDR inside a pod network matches no address outside the cluster: an error
at the peer). Every target then says the same - Calico's `nets` and, on some implementations,
NetworkPolicy's `ipBlock` also match pod IPs, Cilium's CIDR rules do not by default. Without the
declaration netdsl cannot exclude pods, and warns (cidr-may-match-pods) where a CIDR covers a private
range, where clusters put their pods.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from netdsl import ir
from netdsl.lower.state import LoweringState

# Where clusters put pod addresses: RFC 1918, shared address space (RFC 6598), IPv6 unique local.
PRIVATE_RANGES = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


def _overlaps(a: ir.IPNetwork, b: ir.IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)


class Networks(LoweringState):
    def exclude_pod_networks(self, rules: list[ir.Rule]) -> list[ir.Rule]:
        out = []
        warned: set[object] = set()
        for rule in rules:
            peers: list[ir.Peer] = []
            for peer in rule.peers:
                if isinstance(peer, ir.CidrPeer):
                    outside = self.outside_pods(rule, peer, warned)
                    if outside is not None:
                        peers.append(outside)
                    continue
                peers.append(peer)
            if not peers:
                continue  # every peer was inside the pod networks (an error was reported)
            out.append(replace(rule, peers=tuple(peers)) if len(peers) != len(rule.peers) or any(
                p is not q for p, q in zip(peers, rule.peers, strict=False)) else rule)
        return out

    def outside_pods(self, rule: ir.Rule, peer: ir.CidrPeer, warned: set[object]) -> ir.CidrPeer | None:
        if not self.pod_networks:
            if any(_overlaps(peer.cidr, private) for private in PRIVATE_RANGES) and rule.span not in warned:
                warned.add(rule.span)
                self.warn("cidr-may-match-pods",
                          f"`{peer.label or peer.cidr}` may contain pod addresses: on Calico (and NetworkPolicy "
                          "implementations like it) a CIDR also matches the pods inside it", rule.span,
                          "declare the cluster's pod networks (`pod networks = 10.244.0.0/16`) so netdsl "
                          "excludes them")
            return peer
        inside = [n for n in self.pod_networks if n.version == peer.cidr.version
                  and n.subnet_of(peer.cidr)]  # type: ignore[arg-type]
        if any(n.version == peer.cidr.version and peer.cidr.subnet_of(n)  # type: ignore[arg-type]
               for n in self.pod_networks):
            self.error("conflict", f"`{peer.label or peer.cidr}` lies inside the pod networks: a CIDR means "
                       "addresses outside the cluster", rule.span, "name the pods instead (a service, "
                       "`pods[...]`, `namespace x`)")
            return None
        excepts = tuple(dict.fromkeys((*peer.excepts, *(n for n in inside if not any(
            n.subnet_of(e) for e in peer.excepts if e.version == n.version)))))  # type: ignore[arg-type]
        return peer if excepts == peer.excepts else replace(peer, excepts=excepts)
