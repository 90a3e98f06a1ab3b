"""netdsl/semantics/cilium.py and model.entity_matches over Cilium's reserved identities: which selectors,
entities and CIDRs match world, host, remote-node, kube-apiserver, health, ingress, init and unmanaged,
which of them a policy can select (and isolate), and that the fast matrix (compile_cilium) agrees with
decide() when they are in the topology. Hand-written objects, so each rule of Cilium's is checked on
its own (see the module docstring of netdsl.semantics.cilium for the sources)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from netdsl.compiler import check
from netdsl.ir import Protocol
from netdsl.semantics.cilium import CiliumSemantics
from netdsl.semantics.matrix import by_decide, matrix
from netdsl.semantics.model import CILIUM_RESERVED, Connection, Endpoint, External, Pod, Topology, entity_matches
from netdsl.semantics.program import ProgramSemantics

TCP = Protocol.TCP
WEB = Pod("shop", "web", {"app": "web"})
PLAIN = Pod("shop", "plain", {})
OTHER = Pod("other", "plain", {})
WORLD = External(ipaddress.ip_address("198.51.100.7"))
WORLD6 = External(ipaddress.ip_address("2001:db8::7"))
ID = {name: External(ipaddress.ip_address(f"100.64.0.{i + 1}"), identity=f"cilium:{name}")
      for i, name in enumerate(CILIUM_RESERVED)}
IDENTITIES = tuple(ID.values())
TOPOLOGY = Topology({"shop": {"env": "prod"}, "other": {}}, (OTHER, PLAIN, WEB), (WORLD, WORLD6, *IDENTITIES))
NS = "k8s:io.kubernetes.pod.namespace"


def cnp(spec: dict[str, Any], name: str = "p", namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ccnp(spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": name}, "spec": spec}


def admitted(objects: list[dict[str, Any]], dst: Endpoint = WEB) -> set[Endpoint]:
    """The endpoints whose TCP 80 connection to dst the objects allow."""
    sem = CiliumSemantics(objects, TOPOLOGY)
    return {e for e in TOPOLOGY.endpoints if e != dst and sem.decide(Connection(e, dst, TCP, 80)).allowed}


def web_accepts(peer: dict[str, Any], kind: str = "cnp") -> list[dict[str, Any]]:
    spec = {"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"fromEndpoints": [peer]}]}
    return [cnp(spec) if kind == "cnp" else ccnp(spec)]


# ---- fromEndpoints / toEndpoints


@pytest.mark.parametrize("peer", [
    {"matchExpressions": [{"key": NS, "operator": "NotIn", "values": ["kube-system"]}]},
    {"matchExpressions": [{"key": "io.kubernetes.pod.namespace", "operator": "NotIn", "values": ["x"]}]},
    {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"},
                          {"key": NS, "operator": "NotIn", "values": ["x"]}]},
])
@pytest.mark.parametrize("kind", ["cnp", "ccnp"])
def test_negative_requirement_on_the_namespace_key_matches_every_identity(peer: dict[str, Any], kind: str) -> None:
    """cilium/cilium#46949: naming the namespace key turns Cilium's implicit namespace off, and NotIn is
    true without the label: world, the nodes and every reserved identity are admitted."""
    got = admitted(web_accepts(peer, kind))
    assert {WORLD, WORLD6, *IDENTITIES} <= got
    assert PLAIN in got


@pytest.mark.parametrize("peer", [
    {},
    {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]},
    {"matchExpressions": [{"key": "internal", "operator": "DoesNotExist"}]},
])
def test_selectors_without_the_namespace_key_get_cilium_s_namespace(peer: dict[str, Any]) -> None:
    """A CNP peer means the policy's namespace; a CCNP peer `namespace Exists`: pods only either way."""
    assert admitted(web_accepts(peer, "cnp")) == {PLAIN}
    assert admitted(web_accepts(peer, "ccnp")) == {PLAIN, OTHER}


def test_namespace_label_keys_in_a_cnp_peer_escape_the_policy_namespace_but_not_to_identities() -> None:
    """Newer Cilium adds no namespace to a CNP peer with a namespace-label key: a positive one still means
    pods of any namespace with that label; a negative one also matches the reserved identities."""
    positive = {"matchLabels": {"k8s:io.cilium.k8s.namespace.labels.env": "prod"}}
    assert admitted(web_accepts(positive)) == {PLAIN}
    negative = {"matchExpressions": [{"key": "io.cilium.k8s.namespace.labels.env", "operator": "NotIn",
                                      "values": ["dev"]}]}
    assert admitted(web_accepts(negative)) == {PLAIN, OTHER, WORLD, WORLD6, *IDENTITIES}


def test_reserved_label_selectors_are_taken_as_written() -> None:
    assert admitted(web_accepts({"matchLabels": {"reserved:host": ""}})) == {ID["host"]}
    # the kube-apiserver identity also carries reserved:remote-node
    assert admitted(web_accepts({"matchLabels": {"reserved:remote-node": ""}}, "ccnp")) == {
        ID["remote-node"], ID["kube-apiserver"]}


# ---- endpointSelector: which identities a policy applies to


def test_clusterwide_endpoint_selector_isolates_health_ingress_and_init() -> None:
    """A CCNP selecting `{}` (or only negative requirements) is applied to the health, Ingress and init
    endpoints, which become default-deny; the host needs a nodeSelector; world, remote-node,
    kube-apiserver and unmanaged are no local endpoints."""
    for selector in ({}, {"matchExpressions": [{"key": NS, "operator": "NotIn", "values": ["kube-system"]}]}):
        sem = CiliumSemantics([ccnp({"endpointSelector": selector, "ingress": [{}],
                                     "enableDefaultDeny": {"ingress": True}})], TOPOLOGY)
        sided = {i for i in IDENTITIES if sem.has_side(i)}
        assert sided == {ID["health"], ID["ingress"], ID["init"]}
        verdict = sem.decide(Connection(ID["remote-node"], ID["health"], TCP, 4240))
        assert not verdict.allowed and "default-deny" in verdict.reasons[0]
        assert sem.decide(Connection(WORLD, ID["host"], TCP, 22)).allowed


def test_a_namespaced_policy_never_applies_to_an_identity() -> None:
    sem = CiliumSemantics([cnp({"endpointSelector": {}, "ingress": [{}]})], TOPOLOGY)
    assert not any(sem.has_side(i) for i in IDENTITIES)


def test_node_selector_applies_to_the_host_only() -> None:
    sem = CiliumSemantics([ccnp({"nodeSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]})], TOPOLOGY)
    assert {i for i in IDENTITIES if sem.has_side(i)} == {ID["host"]}
    assert not sem.decide(Connection(WORLD, ID["host"], TCP, 22)).allowed
    assert sem.decide(Connection(ID["remote-node"], ID["host"], TCP, 22)).allowed
    assert sem.decide(Connection(WORLD, WEB, TCP, 80)).allowed  # pods are not selected


def test_pods_selected_by_a_pod_label_only() -> None:
    sem = CiliumSemantics([ccnp({"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]})], TOPOLOGY)
    assert not any(sem.has_side(i) for i in IDENTITIES)


# ---- entities and CIDRs


ENTITY_COVERS = {
    "all": {WEB, PLAIN, OTHER, WORLD, WORLD6, *IDENTITIES},
    "world": {WORLD, WORLD6},
    "world-ipv4": {WORLD},
    "world-ipv6": {WORLD6},
    "cluster": {WEB, PLAIN, OTHER, *IDENTITIES},
    "host": {ID["host"]},
    "remote-node": {ID["remote-node"], ID["kube-apiserver"]},
    "kube-apiserver": {ID["kube-apiserver"]},
    "health": {ID["health"]},
    "ingress": {ID["ingress"]},
    "init": {ID["init"]},
    "unmanaged": {ID["unmanaged"]},
}


@pytest.mark.parametrize("entity", sorted(ENTITY_COVERS))
def test_entities_cover_what_cilium_says(entity: str) -> None:
    assert {e for e in TOPOLOGY.endpoints if entity_matches(entity, e)} == ENTITY_COVERS[entity]
    # the objects' fromEntities mean the same
    got = admitted([cnp({"endpointSelector": {"matchLabels": {"app": "web"}},
                         "ingress": [{"fromEntities": [entity]}]})])
    assert got == ENTITY_COVERS[entity] - {WEB}


def test_entity_host_sees_extra_reserved_labels() -> None:
    """The host of a node running the API server carries reserved:kube-apiserver as well."""
    apiserver_host = External(ipaddress.ip_address("100.64.1.1"), identity="cilium:host",
                              labels={"reserved:kube-apiserver": ""})
    assert entity_matches("kube-apiserver", apiserver_host) and entity_matches("host", apiserver_host)


def test_another_target_s_identity_is_only_all() -> None:
    host_endpoint = External(ipaddress.ip_address("100.64.2.1"), identity="calico:host-endpoint")
    assert [e for e in ENTITY_COVERS if entity_matches(e, host_endpoint)] == ["all"]


@pytest.mark.parametrize("key", ["fromCIDRSet", "fromCIDR"])
def test_cidr_rules_match_world_addresses_only(key: str) -> None:
    """Default policy-cidr-match-mode: 0.0.0.0/0 is the Internet, never a pod or a reserved identity,
    whatever their addresses."""
    value = [{"cidr": "0.0.0.0/0"}] if key == "fromCIDRSet" else ["0.0.0.0/0"]
    got = admitted([cnp({"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{key: value}]})])
    assert got == {WORLD}


def test_l4_only_rules_match_every_identity() -> None:
    got = admitted([cnp({"endpointSelector": {"matchLabels": {"app": "web"}},
                         "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]})])
    assert got == {PLAIN, OTHER, WORLD, WORLD6, *IDENTITIES}


# ---- the program means the same by `entity`, and reaches identities only through anywhere / entities


def program_of(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "p.seg"
    path.write_text(text)
    result = check([str(path)])
    assert result.program is not None, [d.message for d in result.diagnostics]
    return result.program


@pytest.mark.parametrize(("peer", "reached"), [
    ("entity remote-node", {ID["remote-node"], ID["kube-apiserver"]}),
    ("entity cluster", {WEB, PLAIN, OTHER, *IDENTITIES}),
    ("anywhere", {WEB, PLAIN, OTHER, WORLD, WORLD6, *IDENTITIES}),
    ("pods[!x] in namespaces[kubernetes.io/metadata.name notin (kube-system)]", {WEB, PLAIN, OTHER}),
])
def test_program_reaches_identities_only_by_entities_and_anywhere(peer: str, reached: set[Endpoint],
                                                                   tmp_path: Path) -> None:
    program = program_of(f"namespace shop {{\n  service web = app=web\n  web accepts {peer} on 80\n}}\n",
                         tmp_path)
    sem = ProgramSemantics(program, TOPOLOGY)
    got = {e for e in TOPOLOGY.endpoints if e != WEB and sem.decide(Connection(e, WEB, TCP, 80)).allowed}
    assert got == reached - {WEB}


# ---- the fast matrix equals decide() with identities in the topology


@pytest.mark.parametrize("objects", [
    web_accepts({"matchExpressions": [{"key": NS, "operator": "NotIn", "values": ["kube-system"]}]}),
    web_accepts({}, "ccnp"),
    [ccnp({"endpointSelector": {}, "ingress": [{"fromEntities": ["remote-node"]}]})],  # health's side
    [ccnp({"nodeSelector": {}, "egress": [{"toEntities": ["world"]}]}),
     cnp({"endpointSelector": {}, "egress": [{"toEntities": ["cluster"]}], "ingressDeny": [
         {"fromEntities": ["host"], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}]})],
])
def test_matrix_equals_decide_with_identities(objects: list[dict[str, Any]]) -> None:
    sem = CiliumSemantics(objects, TOPOLOGY)
    probes = [(TCP, 80), (TCP, 443), (TCP, 4240), (Protocol.UDP, 53)]
    assert matrix(sem, TOPOLOGY, probes) == by_decide(sem, TOPOLOGY, probes)
