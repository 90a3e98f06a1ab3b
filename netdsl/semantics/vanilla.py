"""What a set of networking.k8s.io/v1 NetworkPolicy objects allows, read from the objects themselves
(not from netdsl's IR), following the Kubernetes API documentation:

* policies are additive; a pod is isolated for a direction when some policy selecting it lists that
  direction in policyTypes (absent policyTypes: Ingress, plus Egress if it has egress rules);
* an isolated direction allows what any rule of any such policy allows; a rule without from/to
  matches every peer, without ports every port;
* a peer is an ipBlock (cidr minus except), or pods by podSelector in the policy's namespace, by
  namespaceSelector in any namespace, or both together (AND);
* named ports resolve against the destination pod; a port without protocol is TCP.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from netdsl.ir import Protocol
from netdsl.netset import net_set_of
from netdsl.semantics.model import (
    Connection,
    Endpoint,
    External,
    Pod,
    Topology,
    Verdict,
    binds,
    both_sides,
)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector; an empty selector matches everything."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or ():
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], policy_ns: str, endpoint: Endpoint, topology: Topology) -> bool:
    if "ipBlock" in peer:
        if not isinstance(endpoint, External):
            return False
        block = peer["ipBlock"]
        net = ipaddress.ip_network(block["cidr"], strict=False)
        if endpoint.address.version != net.version or endpoint.address not in net:
            return False
        return endpoint.address not in net_set_of(block.get("except"))
    if not isinstance(endpoint, Pod):
        return False
    if "namespaceSelector" in peer:
        ns_ok = selector_matches(peer["namespaceSelector"], topology.labels_of(endpoint))
    else:
        ns_ok = endpoint.namespace == policy_ns
    pod_ok = selector_matches(peer.get("podSelector"), endpoint.labels)
    return ns_ok and pod_ok


def _port_matches(port: Mapping[str, Any], conn: Connection) -> bool:
    protocol = Protocol(port.get("protocol", "TCP"))
    if protocol is not conn.protocol:
        return False
    value = port.get("port")
    if value is None:
        return True
    if isinstance(value, str):
        return binds(conn, value, protocol)
    end = port.get("endPort", value)
    return bool(value <= conn.port <= end)


def _policy_types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy.get("spec") or {}
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


class VanillaSemantics:
    def __init__(self, objects: Iterable[Mapping[str, Any]], topology: Topology) -> None:
        self.topology = topology
        self.by_namespace: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for obj in objects:
            staged = (obj.get("apiVersion"), obj.get("kind")) == (
                "projectcalico.org/v3", "StagedKubernetesNetworkPolicy"
            )  # evaluated as if enforced: a preview
            if not staged and (obj.get("kind"), obj.get("apiVersion")) != ("NetworkPolicy", "networking.k8s.io/v1"):
                raise ValueError(f"not a networking.k8s.io/v1 NetworkPolicy: {obj.get('kind')}")
            self.by_namespace[obj["metadata"]["namespace"]].append(obj)

    def side(self, pod: Pod, direction: str, other: Endpoint, conn: Connection) -> Verdict:
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        selecting = [
            p for p in self.by_namespace.get(pod.namespace, ())
            if direction in _policy_types(p) and selector_matches(p["spec"].get("podSelector"), pod.labels)
        ]
        if not selecting:
            return Verdict(True, ())
        allowing: list[str] = []
        for p in selecting:
            for i, rule in enumerate(p["spec"].get(key) or ()):
                peers = rule.get(peers_key)
                peer_ok = not peers or any(
                    _peer_matches(peer, pod.namespace, other, self.topology) for peer in peers
                )
                ports = rule.get("ports")
                port_ok = not ports or any(_port_matches(port, conn) for port in ports)
                if peer_ok and port_ok:
                    allowing.append(f"NetworkPolicy {pod.namespace}/{p['metadata']['name']} {key}[{i}]")
        if allowing:
            return Verdict(True, tuple(allowing))
        names = ", ".join(p["metadata"]["name"] for p in selecting)
        return Verdict(False, (f"{pod} {key} is isolated by NetworkPolicy {names}",))

    def decide(self, conn: Connection) -> Verdict:
        return both_sides(conn, lambda pod, egress: self.side(
            pod, "Egress" if egress else "Ingress", conn.dst if egress else conn.src, conn))
