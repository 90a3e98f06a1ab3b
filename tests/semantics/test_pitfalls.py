"""Each evaluator on hand-written manifests - the seed article's own YAML - showing the pitfalls it has,
and that netdsl's output for the same scenario does not. The YAML below is the seed's, trimmed to the
objects involved (../shared/seed, §4.3, §5.3, §8.1, §8.2)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml

from netdsl.compiler import compile_paths
from netdsl.ir import Protocol
from netdsl.semantics.calico import CalicoSemantics
from netdsl.semantics.cilium import CiliumSemantics
from netdsl.semantics.model import Connection, External, Pod, Topology
from netdsl.semantics.vanilla import VanillaSemantics

REPO = Path(__file__).resolve().parents[2]

TOPOLOGY = Topology(
    {"production": {}, "kube-system": {}, "ingress-nginx": {}},
    (
        Pod("production", "backend", {"app": "backend"}),
        Pod("production", "frontend", {"app": "frontend"}),
        Pod("kube-system", "kube-dns", {"k8s-app": "kube-dns"}),
        Pod("kube-system", "kube-proxy", {"k8s-app": "kube-proxy"}),
        Pod("ingress-nginx", "controller", {"app": "ingress-nginx"}),
    ),
)
BACKEND, FRONTEND, DNS, PROXY = TOPOLOGY.pods[0], TOPOLOGY.pods[1], TOPOLOGY.pods[2], TOPOLOGY.pods[3]
STRIPE = External(ipaddress.ip_address("198.18.0.1"), "api.stripe.com")
ELSEWHERE = External(ipaddress.ip_address("8.8.8.8"))


def tcp(src: object, dst: object, port: int) -> Connection:
    return Connection(src, dst, Protocol.TCP, port)  # type: ignore[arg-type]


def emitted(example: str, target: str) -> list[dict[str, object]]:
    result = compile_paths([str(REPO / example)], target)
    assert result.ok, [d.message for d in result.diagnostics]
    return [m.body for m in result.manifests]


SEED_4_3 = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-specific-domains, namespace: production}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  egress:
  - toFQDNs:
    - matchName: "api.stripe.com"
    - matchPattern: "*.amazonaws.com"
  - toPorts:
    - ports:
      - port: "443"
        protocol: TCP
  - toEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: kube-system
        k8s-app: kube-dns
    toPorts:
    - ports:
      - port: "53"
        protocol: UDP
"""


def test_seed_4_3_split_fqdn_rule_opens_443_to_everyone_and_every_port_to_the_hosts() -> None:
    seed = CiliumSemantics(yaml.safe_load_all(SEED_4_3), TOPOLOGY)
    assert seed.decide(tcp(BACKEND, ELSEWHERE, 443)).allowed  # the hole: 443 to any address
    assert seed.decide(tcp(BACKEND, STRIPE, 22)).allowed  # the hole: any port to the named host
    ours = CiliumSemantics(emitted("examples/seed/4.3-cilium-fqdn.seg", "cilium"), TOPOLOGY)
    assert ours.decide(tcp(BACKEND, STRIPE, 443)).allowed
    assert not ours.decide(tcp(BACKEND, ELSEWHERE, 443)).allowed
    assert not ours.decide(tcp(BACKEND, STRIPE, 22)).allowed
    assert ours.decide(Connection(BACKEND, DNS, Protocol.TCP, 53)).allowed  # the seed forgot TCP 53


SEED_5_3 = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-allow-dns, namespace: production}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels:
          name: kube-system
    ports:
    - protocol: UDP
      port: 53
"""


def test_seed_5_3_name_label_allows_no_dns_at_all() -> None:
    seed = VanillaSemantics(yaml.safe_load_all(SEED_5_3), TOPOLOGY)
    assert not seed.decide(Connection(BACKEND, DNS, Protocol.UDP, 53)).allowed
    ours = VanillaSemantics(emitted("examples/seed/5.3-default-allow-dns.seg", "vanilla"), TOPOLOGY)
    assert ours.decide(Connection(BACKEND, DNS, Protocol.UDP, 53)).allowed
    assert ours.decide(Connection(BACKEND, DNS, Protocol.TCP, 53)).allowed
    assert not ours.decide(Connection(BACKEND, PROXY, Protocol.UDP, 53)).allowed


SEED_8_1 = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: global-default-deny}
spec:
  order: 1000
  selector: all()
  types: [Ingress, Egress]
"""


def test_seed_8_1_global_deny_isolates_kube_system() -> None:
    seed = CalicoSemantics(yaml.safe_load_all(SEED_8_1), TOPOLOGY)
    assert not seed.decide(Connection(PROXY, DNS, Protocol.UDP, 53)).allowed  # DNS itself cut off
    ours = CalicoSemantics(emitted("examples/seed/8.1-global-default-deny.seg", "calico"), TOPOLOGY)
    assert ours.decide(Connection(PROXY, DNS, Protocol.UDP, 53)).allowed
    assert ours.decide(Connection(BACKEND, DNS, Protocol.UDP, 53)).allowed
    assert not ours.decide(tcp(FRONTEND, BACKEND, 8080)).allowed


SEED_8_2 = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: security.block-malicious-ips, namespace: production}
spec:
  tier: security
  order: 10
  selector: all()
  types: [Ingress]
  ingress:
  - action: Deny
    source:
      nets: [192.0.2.0/24, 203.0.113.0/24]
"""


def test_seed_8_2_tier_without_pass_black_holes_production() -> None:
    seed = CalicoSemantics(yaml.safe_load_all(SEED_8_2), TOPOLOGY)
    assert not seed.decide(tcp(FRONTEND, BACKEND, 8080)).allowed  # every other connection dropped
    ours = CalicoSemantics(emitted("examples/seed/8.2-tiered-security-policy.seg", "calico"), TOPOLOGY)
    assert ours.decide(tcp(FRONTEND, BACKEND, 8080)).allowed
    assert not ours.decide(tcp(External(ipaddress.ip_address("192.0.2.10")), BACKEND, 8080)).allowed
