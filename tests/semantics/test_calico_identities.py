"""Calico's endpoints that are not plain pods, and what its CIDR rules match.

Rule: the Calico evaluator reads selectors the way Calico's syncer rewrites them for Felix (see the
docstring of netdsl.semantics.calico): host endpoints are policy subjects and rule peers, network-set
selectors are IP sets, and `nets` match pod and host addresses. netdsl's Calico output must then not
let a pod pass for a network set, and must neither isolate nor admit a host endpoint unless the program
says `anywhere`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from netdsl.ir import Protocol
from netdsl.semantics.calico import HOST_ENDPOINT, CalicoSemantics
from netdsl.semantics.matrix import by_decide, matrix
from netdsl.semantics.model import Connection, Endpoint, External, Pod, Topology
from tests.backends.test_calico import compiled

TCP = Protocol.TCP
WORLD = External(ipaddress.ip_address("198.51.100.7"))
OFFICE = External(ipaddress.ip_address("203.0.113.5"))


def host(address: str, **labels: str) -> External:
    return External(ipaddress.ip_address(address), identity=HOST_ENDPOINT, labels=labels)


def topology(*endpoints: Endpoint, **namespaces: Mapping[str, str]) -> Topology:
    pods = tuple(e for e in endpoints if isinstance(e, Pod))
    externals = tuple(e for e in endpoints if isinstance(e, External))
    names = {p.namespace: {} for p in pods} | dict(namespaces)
    return Topology(names, pods, externals)


def allowed(objects: Any, topo: Topology, src: Endpoint, dst: Endpoint, port: int) -> bool:
    return CalicoSemantics(objects, topo).decide(Connection(src, dst, TCP, port)).allowed


def agrees_with_matrix(objects: list[dict[str, Any]], topo: Topology) -> None:
    evaluator = CalicoSemantics(objects, topo)
    probes = ((TCP, 22), (TCP, 80), (TCP, 443), (TCP, 9999))
    assert matrix(evaluator, topo, probes) == by_decide(evaluator, topo, probes)


# ---- network sets: a pod cannot claim to be one

NETWORK_SET_PROGRAM = """\
cidrs office = 203.0.113.0/24
namespace production {
  service web = app=web
  web accepts office on 443
}
cluster {
  isolate
  all pods connects to office on 22
  all pods accepts office on 443
}
"""


def test_a_pod_carrying_a_network_sets_label_is_not_that_network() -> None:
    objects = compiled(NETWORK_SET_PROGRAM)
    web = Pod("production", "web", {"app": "web"})
    # in a system namespace (which `cluster` leaves open), so only web's side decides
    impostor = Pod("kube-system", "impostor", {"netdsl.dev/network-set": "office"})
    topo = topology(web, impostor, OFFICE, WORLD)
    # the office itself, in the namespaced and in the global policy
    assert allowed(objects, topo, OFFICE, web, 443)
    assert allowed(objects, topo, web, OFFICE, 22)
    # a pod with the set's label: neither as a source nor as a destination
    assert not allowed(objects, topo, impostor, web, 443)
    assert not allowed(objects, topo, web, impostor, 22)
    agrees_with_matrix(objects, topo)


def test_evaluator_a_global_rule_selector_alone_also_matches_pods() -> None:
    """What Calico does with the old output: a GlobalNetworkPolicy rule selector without
    namespaceSelector matches endpoints in every namespace as well as network sets."""
    objects = yaml.safe_load_all("""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: office, labels: {netdsl.dev/network-set: office}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Allow
    source: {selector: netdsl.dev/network-set == 'office'}
""")
    web = Pod("production", "web", {"app": "web"})
    impostor = Pod("tenant", "impostor", {"netdsl.dev/network-set": "office"})
    assert allowed(list(objects), topology(web, impostor, OFFICE), impostor, web, 80)


# ---- host endpoints: only `anywhere` reaches them

HOST_PROGRAM = """\
namespace prod labels env=prod
cluster {
  isolate ingress
  all pods accepts namespaces[env!=prod] on 80
  all pods accepts anywhere on 443
}
cluster {
  service web = app=web
  web accepts namespace prod on 8080
}
namespace prod {
  service web = app=web
  web accepts namespaces[env notin (prod)] on 9999
}
"""


@pytest.fixture
def hosts() -> tuple[Pod, External, External]:
    web = Pod("prod", "web", {"app": "web"})
    return web, host("192.168.1.10", app="web"), host("192.168.1.11", env="dev")


def test_a_host_endpoint_is_not_isolated_by_netdsls_output(hosts: tuple[Pod, External, External]) -> None:
    web, node, other = hosts
    objects = compiled(HOST_PROGRAM)
    topo = topology(web, node, other, WORLD)
    # nothing in the program restricts a host endpoint, whatever its labels
    for h in (node, other):
        assert allowed(objects, topo, WORLD, h, 22)
        assert allowed(objects, topo, h, WORLD, 22)
    agrees_with_matrix(objects, topo)


def test_a_host_endpoint_is_admitted_only_by_anywhere(hosts: tuple[Pod, External, External]) -> None:
    web, node, other = hosts
    dev = Pod("dev", "client", {"app": "client"})
    objects = compiled(HOST_PROGRAM)
    topo = topology(web, node, other, dev, prod={"env": "prod"}, dev={"env": "dev"})
    for h in (node, other):
        assert not allowed(objects, topo, h, web, 80)  # namespaces[env!=prod] means pods
        assert not allowed(objects, topo, h, web, 9999)  # in a namespaced policy too
        assert allowed(objects, topo, h, web, 443)  # anywhere
    assert allowed(objects, topo, dev, web, 80)
    assert allowed(objects, topo, dev, web, 9999)
    agrees_with_matrix(objects, topo)


def test_evaluator_global_policy_selector_all_applies_to_host_endpoints() -> None:
    """Seed §8.1 as written: `selector: all()` without namespaceSelector isolates every host endpoint."""
    objects = list(yaml.safe_load_all("""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: global-default-deny}
spec: {order: 1000, selector: all(), types: [Ingress, Egress]}
"""))
    node = host("192.168.1.10")
    topo = topology(node, WORLD)
    assert not allowed(objects, topo, WORLD, node, 22)
    assert not allowed(objects, topo, node, WORLD, 22)
    agrees_with_matrix(objects, topo)


@pytest.mark.parametrize(("namespace_selector", "selector", "isolated"), [
    ("projectcalico.org/name not in {'kube-system'}", "app == 'web'", True),  # pcns. labels absent
    ("projectcalico.org/name not in {'kube-system'}", "all()", False),  # all() -> in a namespace
    ("all()", "app == 'web'", False),
    ("has(projectcalico.org/name) && projectcalico.org/name not in {'kube-system'}", "app == 'web'", False),
])
def test_evaluator_global_policy_namespace_selector_and_host_endpoints(
    namespace_selector: str, selector: str, isolated: bool,
) -> None:
    policy = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "p"},
              "spec": {"namespaceSelector": namespace_selector, "selector": selector, "types": ["Ingress"]}}
    node = host("192.168.1.10", app="web")
    assert allowed([policy], topology(node, WORLD), WORLD, node, 22) is not isolated


# ---- CIDR rules and pod addresses


def cidr_policy(nets: list[str], not_nets: list[str] | None = None) -> list[dict[str, Any]]:
    destination: dict[str, Any] = {"nets": nets, "ports": [443]}
    if not_nets:
        destination["notNets"] = not_nets
    return [{"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
             "metadata": {"name": "web", "namespace": "prod"},
             "spec": {"selector": "app == 'web'", "types": ["Egress"],
                      "egress": [{"action": "Allow", "protocol": "TCP", "destination": destination}]}}]


def test_nets_also_match_pod_and_host_addresses() -> None:
    """Calico matches `nets` against every address, pods' included: `cidr 0.0.0.0/0` reaches pods."""
    web = Pod("prod", "web", {"app": "web"})
    api = Pod("prod", "api", {"app": "api"}, address=ipaddress.ip_address("10.244.1.5"))
    unaddressed = Pod("prod", "db", {"app": "db"})  # outside every CIDR the objects mention
    node = host("192.168.1.10")
    topo = topology(web, api, unaddressed, node, WORLD)
    objects = cidr_policy(["0.0.0.0/0"])
    assert allowed(objects, topo, web, WORLD, 443)
    assert allowed(objects, topo, web, api, 443)
    assert allowed(objects, topo, web, node, 443)
    assert not allowed(objects, topo, web, unaddressed, 443)
    agrees_with_matrix(objects, topo)
    # excluding the pod network (what `pod networks = ...` will emit) keeps pods out
    objects = cidr_policy(["0.0.0.0/0"], ["10.244.0.0/16"])
    assert allowed(objects, topo, web, WORLD, 443)
    assert not allowed(objects, topo, web, api, 443)
    agrees_with_matrix(objects, topo)


def test_a_network_set_also_matches_the_pods_inside_it() -> None:
    """A selector is an IP set: a GlobalNetworkSet's nets admit a pod whose address lies in them."""
    objects = compiled(NETWORK_SET_PROGRAM.replace("203.0.113.0/24", "10.0.0.0/8"))
    web = Pod("production", "web", {"app": "web"})
    # in a system namespace, so that its own egress is open
    inside = Pod("kube-system", "inside", address=ipaddress.ip_address("10.1.2.3"))
    topo = topology(web, inside)
    assert allowed(objects, topo, inside, web, 443)
    agrees_with_matrix(objects, topo)
