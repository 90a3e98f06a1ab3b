"""The reference semantics (netdsl/semantics/reference.py): one hand-written case per rule of the README
and of issue 8, then the reference as the strict judge of lowering: it must equal ProgramSemantics (which
reads the lowered IR) over the class topology (netdsl.semantics.universe), which stands for every
cluster. `compile` proves each target's output equal to ProgramSemantics over that topology (a
`translation` error otherwise), so together: reference == program == every target, on every cluster.
A disagreement is a bug in lowering or in the reference; the README decides which, never an xfail."""

from __future__ import annotations

import ipaddress
import pathlib
import random
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from netdsl import ir, parse
from netdsl.compiler import compile_paths
from netdsl.ir import Protocol
from netdsl.semantics.matrix import matrix, probe_text
from netdsl.semantics.model import CILIUM_RESERVED, Connection, Endpoint, External, Pod, Topology, topology_from_program
from netdsl.semantics.model import entity_matches as model_entity_matches
from netdsl.semantics.program import ProgramSemantics
from netdsl.semantics.reference import (
    CILIUM_ENTITIES,
    ReferenceSemantics,
    entity_matches,
    fqdn_matches,
)
from netdsl.semantics.universe import build
from netdsl.semantics.verify import coexist, describe_endpoint
from netdsl.source import SourceFile
from tests.semantics.strategies import cilium_programs, cluster_programs, ordered_programs, programs, split_files

TCP, UDP, SCTP = Protocol.TCP, Protocol.UDP, Protocol.SCTP


def modules(files: str | Mapping[str, str]) -> list[parse.Module]:
    out = []
    for path, text in ({"p.seg": files} if isinstance(files, str) else files).items():
        module, diagnostics = parse.parse(SourceFile(path, text))
        assert module is not None, [d.message for d in diagnostics]
        out.append(module)
    return out


def reference(files: str | Mapping[str, str], topology: Topology) -> ReferenceSemantics:
    return ReferenceSemantics(modules(files), topology)


def ip(text: str, name: str | None = None, identity: str | None = None) -> External:
    return External(ipaddress.ip_address(text), name, identity)


def ok(r: ReferenceSemantics, src: Endpoint, dst: Endpoint, port: int = 80, proto: Protocol = TCP) -> bool:
    return r.decide(Connection(src, dst, proto, port)).allowed


# A small cluster: two app namespaces, the DNS pods, a namespace the programs never mention.
NS: dict[str, dict[str, str]] = {"a": {"env": "prod"}, "b": {"env": "dev"}, "kube-system": {}, "other": {}}
WEB = Pod("a", "web", {"app": "web"}, {"http": (8080, TCP), "dns": (5353, UDP)})
API = Pod("a", "api", {"app": "api"})
BARE = Pod("a", "bare")
DB = Pod("b", "db", {"app": "db"})
B_BARE = Pod("b", "bare")
DNS = Pod("kube-system", "coredns", {"k8s-app": "kube-dns"})
PROXY = Pod("kube-system", "proxy", {"k8s-app": "kube-proxy"})
OTHER = Pod("other", "x", {"app": "web"})
INTERNET = ip("8.8.8.8")
OFFICE = ip("203.0.113.5")
HOST = ip("10.0.0.1", identity="cilium:host")
HEALTH = ip("10.0.0.2", identity="cilium:health")
CALICO_HOST = ip("10.0.0.3", identity="calico:host-endpoint")
CLUSTER = Topology(NS, (WEB, API, BARE, DB, B_BARE, DNS, PROXY, OTHER), (INTERNET, OFFICE, HOST, HEALTH, CALICO_HOST))


# ------------------------------------------------------------------------------------------ names


def test_services_groups_and_split_blocks_across_files() -> None:
    r = reference({
        "one.seg": "namespace a {\n  service web = app=web\n  service api = app=api\n  group both = web, g2\n}\n",
        "two.seg": "namespace a {\n  group g2 = api\n  isolate ingress\n"
                   "  both accepts pods[app=db] in namespace b\n}\n",
    }, CLUSTER)
    assert ok(r, DB, WEB) and ok(r, DB, API)
    assert not ok(r, DB, BARE)  # isolated, and not a member of the group


def test_ns_service_reference_and_cidr_sets() -> None:
    text = """
cidrs office = 203.0.113.0/24 except (203.0.113.100/32, 203.0.113.128/25)
namespace b { service db = app=db }
namespace a {
  service web = app=web
  web connects to b/db on 5432
  web connects to office
}
"""
    r = reference(text, CLUSTER)
    assert ok(r, WEB, DB, 5432) and ok(r, WEB, OFFICE, 80)
    assert not ok(r, WEB, ip("203.0.113.100")) and not ok(r, WEB, ip("203.0.113.200"))
    assert ok(r, WEB, ip("203.0.113.99")) and not ok(r, WEB, INTERNET)


def test_namespace_label_declarations_are_not_facts_about_the_cluster() -> None:
    text = "namespace a labels env=staging {\n  isolate ingress\n  all pods accepts namespaces[env=staging]\n}\n"
    assert not ok(reference(text, CLUSTER), WEB, API)  # a is labelled env=prod in this cluster
    staged = replace(CLUSTER, namespaces={**NS, "a": {"env": "staging"}})
    assert ok(reference(text, staged), WEB, API)


def test_system_namespaces_default_and_declared() -> None:
    r = reference("cluster {\n  isolate\n}\n", CLUSTER)
    assert not ok(r, OTHER, WEB) and ok(r, PROXY, DNS)  # kube-system is a system namespace
    r = reference("system namespaces = other\ncluster {\n  isolate\n}\n", CLUSTER)
    assert not ok(r, PROXY, DNS) and not ok(r, WEB, API) and ok(r, OTHER, INTERNET)
    r = reference("cluster including system {\n  isolate\n}\n", CLUSTER)
    assert not ok(r, PROXY, DNS)


# ------------------------------------------------------------------------------------------ peers


def test_non_pod_identities_only_by_anywhere_covering_entities_and_calico_hosts_by_address() -> None:
    def egress_to(peer: str) -> ReferenceSemantics:
        return reference(f"namespace a {{\n  service web = app=web\n  web connects to {peer}\n}}\n", CLUSTER)

    r = egress_to("anywhere")
    assert all(ok(r, WEB, e) for e in (INTERNET, HOST, HEALTH, CALICO_HOST, DB))
    r = egress_to("cidr 0.0.0.0/0")  # on Calico a node with a host endpoint is an address
    assert ok(r, WEB, INTERNET) and ok(r, WEB, CALICO_HOST) and not any(ok(r, WEB, e) for e in (HOST, HEALTH, DB))
    r = egress_to("cidr 10.0.0.0/31")
    assert not ok(r, WEB, CALICO_HOST) and not ok(r, WEB, HOST)  # 10.0.0.3 is outside; Cilium's host never
    r = egress_to("entity world")
    assert ok(r, WEB, INTERNET) and not any(ok(r, WEB, e) for e in (HOST, HEALTH, CALICO_HOST, DB))
    r = egress_to("entity cluster")
    assert ok(r, WEB, HOST) and ok(r, WEB, HEALTH) and ok(r, WEB, DB)
    assert not ok(r, WEB, INTERNET) and not ok(r, WEB, CALICO_HOST)
    r = egress_to("entity host")
    assert ok(r, WEB, HOST) and not any(ok(r, WEB, e) for e in (HEALTH, INTERNET, DB))
    r = egress_to("entity world-ipv6")
    assert ok(r, WEB, ip("2001:db8::1")) and not ok(r, WEB, INTERNET)
    r = egress_to("entity remote-node")  # the kube-apiserver identity is also a remote node
    assert ok(r, WEB, ip("10.0.0.4", identity="cilium:kube-apiserver")) and not ok(r, WEB, HOST)
    r = egress_to("entity kube-apiserver")  # a host that runs the API server carries its label too
    assert ok(r, WEB, External(HOST.address, None, "cilium:host", {"reserved:kube-apiserver": ""}))
    assert not ok(r, WEB, HOST)


def test_entities_agree_with_the_engines_definition() -> None:
    """The reference keeps its own copy of Cilium's entities; it must be the engine's (model.py)."""
    endpoints: list[Endpoint] = [WEB, INTERNET, ip("2001:db8::1"), CALICO_HOST, *(
        ip("10.0.0.9", identity=f"cilium:{r}") for r in CILIUM_RESERVED),
        External(HOST.address, None, "cilium:host", {"reserved:kube-apiserver": ""})]
    for entity in sorted(CILIUM_ENTITIES):
        for e in endpoints:
            assert entity_matches(entity, e) is model_entity_matches(entity, e), (entity, e)


def test_cidrs_never_match_pods_even_with_an_address() -> None:
    addressed = replace(DB, address=ipaddress.ip_address("10.1.2.3"))
    topology = replace(CLUSTER, pods=(WEB, addressed))
    r = reference("namespace a {\n  service web = app=web\n  web connects to cidr 10.0.0.0/8\n}\n", topology)
    assert not ok(r, WEB, addressed) and ok(r, WEB, ip("10.1.2.3"))
    assert not ok(r, WEB, ip("2001:db8::1"))  # another address family is outside an IPv4 CIDR


def test_cidrs_never_match_the_declared_pod_networks() -> None:
    text = "pod networks = 10.244.0.0/16, fd00::/64\nnamespace a {\n  service web = app=web\n" \
           "  web connects to cidr 10.0.0.0/8, cidr ::/0\n}\n"
    r = reference(text, CLUSTER)
    assert ok(r, WEB, ip("10.1.2.3")) and not ok(r, WEB, ip("10.244.1.1")) and not ok(r, WEB, ip("fd00::1"))
    assert ok(r, WEB, ip("2001:db8::1"))
    inside = text.replace("cidr 10.0.0.0/8", "cidr 10.244.1.0/24")
    with pytest.raises(ValueError):
        reference(inside, CLUSTER)
    assert compiled({"p.seg": inside}) is None  # lowering refuses it too
    found = compiled({"p.seg": text})
    assert found is not None and disagreements(found) == []


def test_fqdn_patterns_and_the_dns_lookups_they_need() -> None:
    assert fqdn_matches("*.example.com", "api.example.com")
    assert not fqdn_matches("*.example.com", "a.b.example.com")  # `*` is one label, no dots
    assert not fqdn_matches("*.example.com", "example.com")
    assert fqdn_matches("api.example.com", "API.example.com.") and fqdn_matches("*", "a.b.c")
    r = reference("namespace a {\n  service web = app=web\n  web connects to fqdn *.example.com on 443\n}\n", CLUSTER)
    assert ok(r, WEB, ip("198.18.0.1", "api.example.com"), 443)
    assert not ok(r, WEB, ip("198.18.0.2", "a.b.example.com"), 443)
    assert not ok(r, WEB, ip("198.18.0.1", "api.example.com"), 80)
    assert ok(r, WEB, DNS, 53, UDP) and ok(r, WEB, DNS, 53, TCP) and not ok(r, WEB, PROXY, 53, UDP)


@pytest.mark.parametrize(("peer", "reached"), [
    ("namespace b", {DB, B_BARE}),
    ("namespaces[env=dev]", {DB, B_BARE}),
    ("namespaces[kubernetes.io/metadata.name=other]", {OTHER}),
    ("all namespaces", {WEB, API, BARE, DB, B_BARE, DNS, PROXY, OTHER}),
    ("all pods", {WEB, API, BARE}),
    ("pods[app=web]", {WEB}),
    ("pods[!app]", {BARE}),
    ("pods[app notin (web, api)]", {BARE}),
    ("pods[app=web] in namespace other", {OTHER}),
    ("pods[app=web] in namespaces[env]", {WEB}),
    ("pods[app=web] in all namespaces", {WEB, OTHER}),
    ("all pods in namespace b", {DB, B_BARE}),
    ("pods[app=db], namespace other", {OTHER}),  # OR form: app=db here (none), or every pod of `other`
])
def test_pod_peers(peer: str, reached: set[Pod]) -> None:
    r = reference(f"namespace a {{\n  service web = app=web\n  isolate egress\n  web connects to {peer}\n}}\n", CLUSTER)
    assert {p for p in CLUSTER.pods if ok(r, WEB, p)} == reached
    assert not ok(r, WEB, INTERNET)


# ------------------------------------------------------------------------------------------ ports


def test_ports_numbers_protocols_ranges_and_no_ports() -> None:
    r = reference("namespace b {\n  service db = app=db\n  db accepts all namespaces on 80, 53/udp, 8000-8100, "
                  "9000/sctp, udp\n}\n", CLUSTER)
    assert ok(r, WEB, DB, 80) and not ok(r, WEB, DB, 81) and not ok(r, WEB, DB, 80, SCTP)
    assert ok(r, WEB, DB, 53, UDP) and ok(r, WEB, DB, 7, UDP) and not ok(r, WEB, DB, 53, TCP)
    assert [ok(r, WEB, DB, p) for p in (7999, 8000, 8100, 8101)] == [False, True, True, False]
    assert ok(r, WEB, DB, 9000, SCTP) and not ok(r, WEB, DB, 9000, TCP)
    r = reference("namespace b {\n  service db = app=db\n  db accepts all namespaces\n}\n", CLUSTER)
    assert all(ok(r, WEB, DB, 12345, proto) for proto in (TCP, UDP, SCTP))


def test_named_ports_are_the_destination_pods_own() -> None:
    r = reference("namespace a {\n  isolate ingress\n  all pods accepts all namespaces on http, dns/udp\n}\n", CLUSTER)
    assert ok(r, DB, WEB, 8080) and not ok(r, DB, WEB, 80)
    assert ok(r, DB, WEB, 5353, UDP) and not ok(r, DB, WEB, 5353, TCP)  # name and protocol
    assert not ok(r, DB, API, 8080)  # api has no port named http
    r = reference("namespace b {\n  service db = app=db\n  db connects to pods[app=web] in namespace a on http\n}\n",
                  CLUSTER)
    assert ok(r, DB, WEB, 8080) and not ok(r, DB, WEB, 80)  # egress: the destination's port too


def test_http_rules_are_read_as_their_ports() -> None:
    r = reference("namespace b {\n  service db = app=db\n  db accepts all namespaces on 8080 http GET /x\n}\n", CLUSTER)
    assert ok(r, WEB, DB, 8080) and not ok(r, WEB, DB, 80)


def test_allow_dns_is_udp_and_tcp_53_to_kube_dns() -> None:
    r = reference("namespace a {\n  service web = app=web\n  isolate\n  allow dns for web\n}\n", CLUSTER)
    assert ok(r, WEB, DNS, 53, UDP) and ok(r, WEB, DNS, 53, TCP)
    assert not ok(r, WEB, DNS, 54, UDP) and not ok(r, WEB, PROXY, 53, UDP)
    assert not ok(r, API, DNS, 53, UDP)  # `for web` only
    r = reference("namespace a {\n  allow dns\n}\n", CLUSTER)
    assert ok(r, BARE, DNS, 53, UDP) and not ok(r, BARE, INTERNET)  # every pod, and their egress is restricted
    assert ok(r, OTHER, INTERNET)


# ------------------------------------------------------------------------------------------ restriction


def test_restriction_by_isolation_and_by_explicit_statements() -> None:
    r = reference("namespace a {\n  isolate ingress\n}\n", CLUSTER)
    assert not ok(r, DB, WEB) and ok(r, WEB, DB)
    r = reference("namespace a {\n  service web = app=web\n  web accepts namespace b on 80\n}\n", CLUSTER)
    assert ok(r, DB, WEB, 80) and not ok(r, OTHER, WEB) and not ok(r, DB, WEB, 81)
    assert ok(r, OTHER, API) and ok(r, WEB, INTERNET)  # only web's ingress is restricted
    r = reference("namespace a {\n  service web = app=web\n  web allows to namespace b\n}\n", CLUSTER)
    assert ok(r, WEB, DB) and not ok(r, WEB, INTERNET) and ok(r, API, INTERNET)


def test_isolate_for_restricts_only_its_subjects_pods() -> None:
    r = reference("namespace a {\n  service web = app=web\n  isolate ingress for web\n}\n", CLUSTER)
    assert not ok(r, DB, WEB) and ok(r, DB, API) and ok(r, WEB, DB)  # web's ingress only
    r = reference("namespace a {\n  service web = app=web\n  service api = app=api\n  group g = web, api\n"
                  "  isolate egress for g\n  allow dns for web\n}\n", CLUSTER)
    assert not ok(r, WEB, DB) and not ok(r, API, DB) and ok(r, BARE, DB) and ok(r, WEB, DNS, 53, UDP)
    assert ok(r, DB, WEB)
    r = reference("namespace a {\n  isolate for all pods\n}\n", CLUSTER)  # = isolate
    assert not ok(r, BARE, DB) and not ok(r, DB, BARE)
    r = reference("cluster {\n  service web = app=web\n  isolate ingress for web\n}\n", CLUSTER)
    assert not ok(r, API, OTHER) and not ok(r, API, WEB) and ok(r, WEB, API)


def test_isolate_for_gets_the_other_half_of_flows_toward_its_pods() -> None:
    r = reference("namespace a {\n  service web = app=web\n  isolate ingress for web\n"
                  "  all pods connects to all pods on 80\n}\n", CLUSTER)
    assert ok(r, API, WEB, 80) and not ok(r, API, WEB, 81) and not ok(r, DB, WEB, 80)


def test_cluster_blocks_cover_their_namespaces() -> None:
    r = reference("cluster namespaces[env=prod] {\n  isolate ingress\n}\n", CLUSTER)
    assert not ok(r, DB, WEB) and ok(r, WEB, DB)
    r = reference("cluster {\n  service web = app=web\n  web accepts namespace b on 80\n}\n", CLUSTER)
    assert ok(r, DB, WEB) and ok(r, DB, OTHER) and not ok(r, WEB, OTHER) and ok(r, WEB, API)
    r = reference("cluster {\n  isolate ingress\n  all pods accepts all pods in namespace b\n}\n", CLUSTER)
    assert ok(r, DB, WEB) and not ok(r, API, WEB)  # `all pods` is a subject in every namespace


@pytest.mark.parametrize("text", [
    "cluster {\n  all pods accepts all pods\n}\n",
    "cluster {\n  service web = app=web\n  all pods accepts web\n}\n",
    "cluster {\n  all pods accepts pods[app=web]\n}\n",
    "namespace a {\n  all pods passes from anywhere\n}\n",
    "tier t order 10 {\n  namespace a {\n    isolate\n  }\n}\n",
    "tier t order 10 {\n  namespace a {\n    service web = app=web\n    isolate for web\n  }\n}\n",
    "namespace a {\n  isolate ingress for nothing\n}\n",
    "namespace a {\n  all pods accepts fqdn example.com\n}\n",
    "namespace a {\n  all pods accepts nothing\n}\n",
])
def test_what_the_reference_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        reference(text, CLUSTER)


# ------------------------------------------------------------------------------------------ evaluation


def test_outside_tiers_a_deny_always_wins() -> None:
    r = reference("namespace a {\n  all pods accepts anywhere\n  all pods denies from namespace b on 80\n}\n", CLUSTER)
    v = r.decide(Connection(DB, WEB, TCP, 80))
    assert not v.allowed and v.by_deny and v.reasons == ("p.seg:3: all pods denies from namespace b on 80",)
    assert ok(r, DB, WEB, 81) and ok(r, OTHER, WEB, 80)


def test_tiers_first_match_pass_and_otherwise() -> None:
    text = """
tier sec order 100 {
  namespace a {
    all pods passes from namespace b on 80
    all pods denies from namespace b
    all pods allows from namespace other on 80
  }
}
tier last order 2000000 otherwise deny {
  namespace a { all pods allows from namespace b on 80 }
}
namespace a { isolate ingress }
namespace b { all pods connects to anywhere }
"""
    r = reference(text, CLUSTER)
    assert not ok(r, DB, WEB, 443)  # tier sec: denied
    assert not ok(r, DB, WEB, 80)  # passed to the default tier, where `a` is isolated
    assert ok(r, OTHER, WEB, 80) and not ok(r, OTHER, WEB, 81)  # first match; then the default tier
    r = reference(text.replace("namespace a { isolate ingress }", ""), CLUSTER)
    assert ok(r, DB, WEB, 80)  # passed, the default tier does not apply, tier `last` allows
    assert not ok(r, OTHER, WEB, 81)  # no match in sec: pass; tier `last` applies: otherwise deny
    assert ok(r, OTHER, DB)  # no tier applies to b's ingress


def test_otherwise_deny_and_tiers_that_do_not_apply() -> None:
    text = "tier t order 10 otherwise deny {\n  namespace a { all pods allows from namespace b on 80 }\n}\n"
    r = reference(text, CLUSTER)
    assert ok(r, DB, WEB, 80) and not ok(r, DB, WEB, 81) and ok(r, WEB, DB, 81)


# ------------------------------------------------------------------------------------------ other halves


def test_other_half_toward_named_peers_in_other_namespaces() -> None:
    text = """
namespace b { service db = app=db; isolate }
namespace a { service web = app=web; isolate egress; web accepts b/db on 80 }
namespace other { isolate egress }
"""
    r = reference(text, CLUSTER)
    v = r.decide(Connection(DB, WEB, TCP, 80))
    assert v.allowed
    assert v.reasons == ("p.seg:3: web accepts b/db on 80 (other half)", "p.seg:3: web accepts b/db on 80")
    assert not ok(r, DB, WEB, 81) and not ok(r, DB, API, 80) and not ok(r, B_BARE, WEB, 80)
    assert not ok(r, DB, OTHER, 80)  # only toward the subject's pods


@pytest.mark.parametrize("peer", [
    "anywhere", "all namespaces", "namespaces[env=dev]", "pods[app=db] in namespaces[env]",
    "pods[app=db] in all namespaces", "all pods in namespaces[env=dev]", "entity cluster",
])
def test_broad_peers_open_no_other_namespace(peer: str) -> None:
    text = f"namespace b {{ isolate }}\nnamespace a {{ isolate\n  all pods connects to {peer} on 80\n}}\n"
    r = reference(text, CLUSTER)
    assert not ok(r, WEB, DB, 80)  # b's isolation stays closed
    if "pods[app=db]" not in peer and "env=dev" not in peer:
        assert ok(r, WEB, API, 80)  # the statement's own namespace gets the other half


def test_broad_peers_of_cluster_blocks_derive_nothing_named_ones_do() -> None:
    r = reference("namespace a { isolate }\ncluster {\n  all pods connects to all namespaces on 80\n}\n", CLUSTER)
    assert not ok(r, WEB, API, 80) and ok(r, DB, OTHER, 80)
    r = reference("namespace b { isolate }\ncluster {\n  all pods connects to namespace b on 80\n}\n", CLUSTER)
    assert ok(r, WEB, DB, 80) and ok(r, OTHER, DB, 80) and not ok(r, WEB, DB, 81)


def test_the_other_half_never_restricts() -> None:
    r = reference("namespace a { service web = app=web; web accepts b/db }\nnamespace b { service db = app=db }\n",
                  CLUSTER)
    assert ok(r, DB, INTERNET) and ok(r, DB, WEB)


def test_the_other_half_goes_to_the_statements_tier_if_it_applies_there() -> None:
    text = """
namespace b { service db = app=db; isolate egress }
namespace a { service web = app=web }
tier t order 10 {
  namespace a { web allows from b/db on 80 }
  namespace b { db denies to namespace a on 80 }
}
"""
    r = reference(text, CLUSTER)
    assert ok(r, DB, WEB, 80)  # in tier t, before the deny
    flipped = text.replace("  namespace a { web allows from b/db on 80 }\n", "") + (
        "tier t order 10 {\n  namespace a { web allows from b/db on 80 }\n}\n")
    assert not ok(reference(flipped, CLUSTER), DB, WEB, 80)  # after the deny: denied first
    no_tier_for_db = text.replace("  namespace b { db denies to namespace a on 80 }\n", "")
    assert ok(reference(no_tier_for_db, CLUSTER), DB, WEB, 80)  # t does not apply to db: the default tier


def test_allow_dns_has_an_other_half_at_kube_dns() -> None:
    r = reference("namespace kube-system { isolate ingress }\nnamespace a { allow dns }\n", CLUSTER)
    assert ok(r, WEB, DNS, 53, UDP) and not ok(r, DB, DNS, 53, UDP) and not ok(r, WEB, DNS, 80)


def test_anywhere_beside_a_named_peer_keeps_the_named_peers_other_half() -> None:
    text = "namespace a { service web = app=web; web connects to anywhere, b/db on 443 }\n" \
           "namespace b { service db = app=db; isolate }\n"
    r = reference(text, CLUSTER)
    assert ok(r, WEB, DB, 443) and not ok(r, WEB, B_BARE, 443)


# ------------------------------------------------------------------------------------------ against lowering

TARGETS = ("vanilla", "calico", "cilium")


@dataclass
class Compiled:
    program: ir.Program
    modules: list[parse.Module]
    objects: dict[str, list[Mapping[str, Any]]]  # by target, for the targets that can express the program


def compiled(files: Mapping[str, str] | Sequence[str], targets: Sequence[str] = TARGETS) -> Compiled | None:
    """Compile for every target (each compile proves its output == ProgramSemantics over the class
    topology); None when lowering refuses the program. A `translation` error fails the test."""
    with tempfile.TemporaryDirectory() as d:
        if isinstance(files, Mapping):
            paths = []
            for name, text in files.items():
                (pathlib.Path(d) / name).write_text(text)
                paths.append(str(pathlib.Path(d) / name))
        else:
            paths = list(files)
        program: ir.Program | None = None
        objects: dict[str, list[Mapping[str, Any]]] = {}
        for target in targets:
            result = compile_paths(paths, target)
            wrong = [d.message for d in result.diagnostics if d.code == "translation"]
            assert not wrong, f"{target}: " + "\n".join(wrong)
            if result.ok and result.program is not None:
                program = result.program
                objects[target] = [m.body for m in result.manifests]
        mods = modules({p: pathlib.Path(p).read_text() for p in paths})
    return None if program is None else Compiled(program, mods, objects)


def pairs_to_judge(topology: Topology, rng: random.Random | None, per_endpoint: int = 4
                   ) -> list[tuple[Endpoint, Endpoint]]:
    """Every pair (rng None), or each endpoint with itself (replicas) and `per_endpoint` random others
    as source and as destination: linear in the classes, since the reference decides one by one."""
    endpoints = topology.endpoints
    if rng is None or len(endpoints) ** 2 <= 4 * per_endpoint * len(endpoints):
        pairs = [(s, d) for s in endpoints for d in endpoints]
    else:
        pairs = [(e, e) for e in endpoints]
        for e in endpoints:
            pairs += [(e, rng.choice(endpoints)) for _ in range(per_endpoint)]
            pairs += [(rng.choice(endpoints), e) for _ in range(per_endpoint)]
    return [(s, d) for s, d in dict.fromkeys(pairs) if coexist(s, d)
            and not (isinstance(s, External) and isinstance(d, External))]


def disagreements(found: Compiled, rng: random.Random | None = None) -> list[str]:
    """The connections over the class topology of the program and every target's objects (with every
    target's own identities) where the reference and ProgramSemantics differ."""
    universe = build(found.program, found.objects, identities=True)
    topology = universe.topology
    ref = ReferenceSemantics(found.modules, topology)  # refusing what lowering accepts fails the test
    program = ProgramSemantics(found.program, topology)
    want = matrix(program, topology, universe.probes)
    out = []
    for src, dst in pairs_to_judge(topology, rng):
        for probe in universe.probes:
            conn = Connection(src, dst, *probe)
            verdict = ref.decide(conn)
            if verdict.allowed != want.is_allowed(src, dst, probe):
                out.append(f"{describe_endpoint(src, topology)} -> {describe_endpoint(dst, topology)} on "
                           f"{probe_text(probe)}: reference {verdict}, lowering {program.decide(conn)}")
    return out


STRATEGIES = {"plain": programs(), "ordered": ordered_programs(), "cluster": cluster_programs(),
              "cilium": cilium_programs()}


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
def test_lowering_means_what_the_reference_means(kind: str) -> None:
    """Random programs, compiled for every target that can express them: reference == ProgramSemantics
    on a sample of class pairs (every class, with itself and with random others), every probe."""

    @settings(max_examples=max(10, settings.default.max_examples // 6))
    @given(STRATEGIES[kind], st.randoms(use_true_random=False))
    def check(text: str, rng: random.Random) -> None:
        found = compiled({f"p{i}.seg": part for i, part in enumerate(split_files(text))})
        assume(found is not None)
        assert found is not None
        wrong = disagreements(found, rng)
        assert not wrong, text + "\n" + "\n".join(wrong[:10])

    check()


EXAMPLES = pathlib.Path(__file__).parents[2] / "examples"
# The targets each example must compile for (the others: whichever can express it).
EXAMPLE_TARGETS = {"three-tier.seg": set(TARGETS), "calico-tiers.seg": {"calico"}, "cilium-l7-fqdn.seg": {"cilium"}}


@pytest.mark.parametrize("name", sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.seg")))
def test_reference_equals_every_target_on_the_examples(name: str) -> None:
    """The chain, stated once: each target that can express the example compiles (so its output ==
    ProgramSemantics over the class topology), and the reference == ProgramSemantics over the class
    topology of the program and every target's output, on every pair of classes and every probe."""
    found = compiled([str(EXAMPLES / name)])
    assert found is not None and found.objects
    assert set(found.objects) >= EXAMPLE_TARGETS.get(name, set())
    assert disagreements(found) == []


# Minimal programs for disagreements found before (the reference's verdict, which lowering reaches).
MINIMAL = [
    pytest.param(  # a broad peer widened another namespace's isolation
        "namespace a {\n service web = app=web\n web connects to anywhere on 443\n}\nnamespace b {\n isolate\n}\n",
        ("a", "web"), ("b", "unlabelled"), 443, False, id="anywhere-opens-other-namespaces"),
    pytest.param(
        "namespace b {\n isolate\n}\ncluster {\n all pods connects to all namespaces on 80\n}\n",
        ("other-namespace", "unlabelled"), ("b", "unlabelled"), 80, False, id="cluster-broad-peer"),
    pytest.param(  # the half is in tier t (which passes) and in the default tier (which restricts db)
        "namespace b {\n service db = app=db\n isolate\n}\nnamespace a {\n service web = app=web\n}\n"
        "tier t order 10 {\n namespace b {\n  db passes from all namespaces on 80\n }\n"
        " namespace a {\n  web allows to b/db on 80\n }\n}\n",
        ("a", "web"), ("b", "db"), 80, True, id="tier-half-also-in-default-tier"),
    pytest.param(  # lowering dropped b/db as redundant next to anywhere, and with it db's other half
        "namespace a {\n service web = app=web\n web connects to anywhere, b/db on 443\n}\n"
        "namespace b {\n service db = app=db\n isolate\n}\n",
        ("a", "web"), ("b", "db"), 443, True, id="anywhere-beside-a-named-peer"),
]


@pytest.mark.parametrize(("text", "src", "dst", "port", "allowed"), MINIMAL)
def test_minimal_disagreements(text: str, src: tuple[str, str], dst: tuple[str, str], port: int,
                               allowed: bool) -> None:
    found = compiled({"p.seg": text})
    assert found is not None
    topology = topology_from_program(found.program)
    pods = {(p.namespace, p.name): p for p in topology.pods}
    conn = Connection(pods[src], pods[dst], TCP, port)
    assert ReferenceSemantics(found.modules, topology).decide(conn).allowed is allowed
    assert ProgramSemantics(found.program, topology).decide(conn).allowed is allowed
    assert disagreements(found) == []


@pytest.mark.parametrize("text", [
    "namespace a {\n isolate\n}\ncluster {\n all pods accepts all pods\n}\n",
    "namespace a {\n all pods passes from anywhere\n}\n",
])
def test_lowering_refuses_what_the_rules_refuse(text: str) -> None:
    with pytest.raises(ValueError):
        reference(text, CLUSTER)
    assert compiled({"p.seg": text}) is None


@pytest.mark.parametrize(("peer", "endpoint", "allowed"), [
    ("entity world", HOST, False), ("cidr 0.0.0.0/0", HEALTH, False), ("cidr 0.0.0.0/0", CALICO_HOST, True),
    ("entity cluster", HEALTH, True), ("entity host", HOST, True), ("entity all", CALICO_HOST, True),
    ("entity cluster", CALICO_HOST, False),
])
def test_program_semantics_on_non_pod_identities(peer: str, endpoint: External, allowed: bool) -> None:
    text = f"namespace a {{\n service web = app=web\n web connects to {peer}\n}}\n"
    found = compiled({"p.seg": text}, ["cilium"])
    assert found is not None
    conn = Connection(WEB, endpoint, TCP, 80)
    assert ReferenceSemantics(found.modules, CLUSTER).decide(conn).allowed is allowed
    assert ProgramSemantics(found.program, CLUSTER).decide(conn).allowed is allowed
