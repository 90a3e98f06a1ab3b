"""The Cilium translator: every form it accepts is proven to mean what Cilium enforces (the program built
from the Translation against `understood`, and against the input where nothing was left out); every
form `.seg` cannot say is a Gap naming the object and rule."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from netdsl import ir
from netdsl.compiler import compile_paths
from netdsl.importer import cilium, import_manifests
from netdsl.importer.model import SourceObject, Translation
from netdsl.semantics.verify import prove
from tests.semantics.strategies import cilium_programs
from tests.semantics.test_equivalence import compile_paths_text

REPO = Path(__file__).resolve().parents[2]
SEED = REPO.parent.parent / "shared" / "seed" / "000_7a71506651f02500.txt"


def program_of(t: Translation) -> ir.Program:
    """The IR a Translation stands for (what the decompiled `.seg` lowers to)."""
    services = tuple(dict.fromkeys(r.subject for r in t.rules))
    namespaces = tuple(ir.Namespace(n, labels) for n, labels in sorted(t.namespaces.items()))
    return ir.Program(namespaces, services, tuple(t.isolations), tuple(t.rules), tuple(t.tiers))


def translate(*objects: dict[str, Any]) -> Translation:
    t = cilium.translate([SourceObject(o, f"test, document {i + 1}") for i, o in enumerate(objects)])
    t.target = "cilium"
    INPUT[id(t)] = list(objects)
    return t


INPUT: dict[int, list[dict[str, Any]]] = {}


def exact(t: Translation, objects: list[dict[str, Any]] | None = None) -> Translation:
    """Assert the Translation's program means exactly `understood`, and the input itself when nothing
    was left out (the evaluator reads the raw forms as Cilium does)."""
    program = program_of(t)
    if objects is None and not t.gaps:
        objects = INPUT.get(id(t))
    for target in ([t.understood] if objects is None else [t.understood, objects]):
        proof = prove(program, "cilium", target)
        assert proof.holds, [c.describe(proof.universe.topology, "cilium") for c in proof.counterexamples]
    return t


def cnp(spec: dict[str, Any] | str, name: str = "p", namespace: str = "prod") -> dict[str, Any]:
    body = yaml.safe_load(spec) if isinstance(spec, str) else spec
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def ccnp(spec: dict[str, Any] | str, name: str = "c") -> dict[str, Any]:
    body = yaml.safe_load(spec) if isinstance(spec, str) else spec
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": name}, "spec": body}


def gaps(t: Translation) -> list[tuple[str, str]]:
    return [(g.path, g.reason) for g in t.gaps]


def only_gap(t: Translation, path: str, words: str) -> None:
    assert len(t.gaps) == 1, gaps(t)
    assert t.gaps[0].path == path and words in t.gaps[0].reason, gaps(t)


WEB = "endpointSelector: {matchLabels: {app: web}}\n"


# ---------------------------------------------------------------------------------------- round trips


def _cilium_examples() -> list[Path]:
    return [p for p in sorted((REPO / "examples").rglob("*.seg")) if "tier" not in p.read_text()]


@pytest.mark.parametrize("path", _cilium_examples(), ids=lambda p: p.name)
def test_every_example_compiled_to_cilium_imports_back_exactly(path: Path) -> None:
    result = compile_paths([str(path)], "cilium")
    assert result.ok
    objects = [o for o in yaml.safe_load_all("".join("---\n" + m.text for m in result.manifests)) if o]
    t = translate(*objects)
    assert not t.gaps and not t.warnings
    exact(t, objects)


@pytest.mark.parametrize("path", _cilium_examples(), ids=lambda p: p.name)
def test_every_example_compiled_to_cilium_imports_as_seg_proven_equal(path: Path, tmp_path: Path) -> None:
    """The whole way: translated, decompiled, printed, parsed, lowered, proven against the compiled objects."""
    result = compile_paths([str(path)], "cilium")
    source = tmp_path / "in.yaml"
    source.write_text("".join("---\n" + m.text for m in result.manifests))
    imported = import_manifests([str(source)])
    assert imported.ok, [d.message for d in imported.diagnostics if d.is_error]
    assert imported.program is not None
    objects = [o for o in yaml.safe_load_all(source.read_text()) if o]
    assert prove(imported.program, "cilium", objects).holds


def test_http_rules_survive_the_import(tmp_path: Path) -> None:
    source = tmp_path / "in.yaml"
    source.write_text(yaml.safe_dump(cnp(WEB + """
ingress:
- fromEndpoints: [{matchLabels: {app: api}}]
  toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: GET, path: /api/.*}]}}]
""")))
    imported = import_manifests([str(source)])
    assert imported.ok and imported.program is not None
    assert [r.http for r in imported.program.rules] == [(ir.HttpRule("GET", "/api/.*"),)]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(cilium_programs())
def test_cilium_output_of_any_program_imports_back_exactly(text: str) -> None:
    result = compile_paths_text(text, "cilium")
    if not result.ok:
        return
    objects = [o for o in yaml.safe_load_all("".join("---\n" + m.text for m in result.manifests)) if o]
    t = translate(*objects)
    assert not t.gaps, [g.describe() for g in t.gaps]
    exact(t, objects)


def _seed_objects() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", SEED.read_text(), re.S)
    return [o for b in blocks for o in yaml.safe_load_all(b)
            if isinstance(o, dict) and str(o.get("apiVersion", "")).startswith("cilium.io/")]


@pytest.mark.skipif(not SEED.exists(), reason="the seed article is not here")
def test_seed_cilium_yaml_imports_with_its_pitfalls_reported() -> None:
    objects = _seed_objects()
    assert len(objects) == 2
    t = exact(translate(*objects))
    # §4.3: the DNS rule is UDP only, and `fqdn` in `.seg` also allows TCP 53: the FQDN rule is left out
    only_gap(t, "spec.egress[0]", "UDP and TCP 53")
    warned = sorted((w.path, w.reason.split(" ")[0]) for w in t.warnings)
    assert warned == [("spec.egress[0]", "toFQDNs"), ("spec.egress[1]", "toPorts")]
    # the split toPorts rule opens 443 to everything, faithfully
    anywhere = [r for r in t.rules if r.peers == (ir.AnyPeer(),)]
    assert [str(p) for r in anywhere for p in r.ports] == ["443"]
    # §8.3: the L7 rule
    http = next(r for r in t.rules if r.http)
    assert [(h.method, h.path) for h in http.http] == [("GET", "/api/.*"), ("POST", "/api/orders")]


@pytest.mark.skipif(not SEED.exists(), reason="the seed article is not here")
def test_seed_cilium_yaml_imports_as_seg_with_partial(tmp_path: Path) -> None:
    source = tmp_path / "seed.yaml"
    source.write_text("".join("---\n" + yaml.safe_dump(o) for o in _seed_objects()))
    assert not import_manifests([str(source)]).ok  # the FQDN rule is a gap: an error without --partial
    imported = import_manifests([str(source)], partial=True)
    assert imported.ok, [d.message for d in imported.diagnostics if d.is_error]
    assert [d.code for d in imported.diagnostics if d.code == "import-gap"] == ["import-gap"]
    assert "anywhere on 443" in imported.text and "http GET /api/.*" in imported.text


# ---------------------------------------------------------------------------------------- subjects and peers


def test_specs_are_rules_of_their_own() -> None:
    obj = cnp({})
    del obj["spec"]
    obj["specs"] = [yaml.safe_load(WEB + "ingress: [{fromEndpoints: [{matchLabels: {app: api}}]}]"),
                    yaml.safe_load("endpointSelector: {}\negress: [{}]")]
    t = exact(translate(obj))
    assert not t.gaps and len(t.understood) == 2
    assert [i.direction for i in t.isolations] == [ir.Direction.EGRESS]  # the empty rule: default deny
    assert [r.subject.selector for r in t.rules] == [ir.Selector.of([ir.Requirement("app", ir.Operator.IN, ("web",))])]


def test_endpoints_mean_the_policy_namespace_unless_they_name_one() -> None:
    t = exact(translate(cnp(WEB + """
ingress:
- fromEndpoints:
  - {matchLabels: {app: api}}
  - {matchLabels: {k8s:app: mon, k8s:io.kubernetes.pod.namespace: monitoring}}
  - {matchLabels: {any:io.cilium.k8s.namespace.labels.team: a}}
""")))
    assert not t.gaps
    peers = t.rules[0].peers
    assert isinstance(peers[0], ir.PodPeer) and peers[0].namespaces == ir.NamespaceByName("prod")
    assert isinstance(peers[1], ir.PodPeer) and peers[1].namespaces == ir.NamespaceByName("monitoring")
    assert isinstance(peers[2], ir.PodPeer) and isinstance(peers[2].namespaces, ir.NamespaceBySelector)


def test_clusterwide_endpoints_mean_every_namespace() -> None:
    t = exact(translate(ccnp("""
endpointSelector: {matchLabels: {app: web}}
ingress: [{fromEndpoints: [{matchLabels: {app: api}}]}]
""")))
    assert not t.gaps
    assert t.rules[0].subject.cluster == ir.AllNamespaces()
    api = ir.Selector.of([ir.Requirement("app", ir.Operator.IN, ("api",))])
    assert t.rules[0].peers == (ir.PodPeer(ir.AllNamespaces(), api),)


def test_clusterwide_subject_without_a_positive_requirement_is_a_gap() -> None:
    # it would also select Cilium's health, Ingress and init endpoints
    t = exact(translate(ccnp("endpointSelector: {}\ningress: [{}]")))
    only_gap(t, "spec.endpointSelector", "health")
    assert t.understood == []
    t = exact(translate(ccnp("""
endpointSelector: {matchExpressions: [{key: io.kubernetes.pod.namespace, operator: NotIn, values: [kube-system]}]}
ingress: [{}]""")))
    only_gap(t, "spec.endpointSelector", "health")
    t = exact(translate(ccnp("""
endpointSelector: {matchExpressions: [{key: io.kubernetes.pod.namespace, operator: In, values: [a, b]}]}
ingress: [{}]""")))
    assert not t.gaps and isinstance(t.isolations[0].cluster, ir.NamespaceBySelector)


def test_a_selector_of_negative_requirements_also_matches_cilium_identities() -> None:
    t = exact(translate(cnp(WEB + """
ingress:
- fromEndpoints:
  - matchExpressions:
    - {key: io.kubernetes.pod.namespace, operator: NotIn, values: [kube-system]}
""")))
    assert not t.gaps
    entities = {p.name for p in t.rules[0].peers if isinstance(p, ir.EntityPeer)}
    assert entities >= {"world", "host", "remote-node", "health"}


def test_reserved_selectors_and_entities() -> None:
    t = exact(translate(cnp(WEB + """
ingress:
- fromEndpoints: [{matchLabels: {reserved:host: ""}}]
- fromEntities: [world, kube-apiserver]
""")))
    assert not t.gaps
    assert [r.peers for r in t.rules] == [(ir.EntityPeer("host"),),
                                          (ir.EntityPeer("world"), ir.EntityPeer("kube-apiserver"))]


def test_cidrs_with_except() -> None:
    t = exact(translate(cnp(WEB + """
egress:
- toCIDR: [192.0.2.0/24, 198.51.100.7]
- toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}, {cidr: "2001:db8::/32"}]
  toPorts: [{ports: [{port: "443", protocol: TCP}]}]
""")))
    assert not t.gaps
    assert t.rules[1].peers[0] == ir.CidrPeer(ir.ipaddress.ip_network("10.0.0.0/8"),
                                              (ir.ipaddress.ip_network("10.1.0.0/16"),))


# ---------------------------------------------------------------------------------------- ports and L7


def test_ports_any_protocol_ranges_names_and_every_port() -> None:
    t = exact(translate(cnp(WEB + """
ingress:
- toPorts:
  - ports:
    - {port: "53"}
    - {port: "8000", endPort: 8100, protocol: tcp}
    - {port: http, protocol: TCP}
    - {port: "0", protocol: UDP}
""")))
    assert not t.gaps
    assert [str(p) for p in t.rules[0].ports] == ["53", "53/udp", "53/sctp", "8000-8100", "http", "udp"]
    assert t.rules[0].peers == (ir.AnyPeer(),)  # a rule with only toPorts: every peer


def test_port_names_are_lowercased_as_cilium_does() -> None:
    t = translate(cnp(WEB + "ingress: [{toPorts: [{ports: [{port: HTTP, protocol: TCP}]}]}]"))
    # (only against understood: the class topology would also try a pod port named HTTP, which
    # Kubernetes refuses)
    exact(t, t.understood)
    assert [str(p) for p in t.rules[0].ports] == ["http"]
    assert t.understood[0]["spec"]["ingress"][0]["toPorts"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_http_rules() -> None:
    t = exact(translate(cnp(WEB + """
ingress:
- fromEndpoints: [{matchLabels: {app: api}}]
  toPorts:
  - ports: [{port: "8080", protocol: TCP}]
    rules: {http: [{method: GET, path: /api/.*, headers: ["X-Env: prod"]}, {}]}
  - ports: [{port: "9090", protocol: TCP}]
""")))
    assert not t.gaps
    assert [r.http for r in t.rules] == [(ir.HttpRule("GET", "/api/.*", None, ("X-Env: prod",)), ir.HttpRule()), ()]


@pytest.mark.parametrize(("rule", "path", "words"), [
    ("{method: 'GET|POST'}", "spec.ingress[0].toPorts[0].rules.http[0].method", "method"),
    ("{headerMatches: [{name: X, value: y, mismatch: LOG}]}", "spec.ingress[0].toPorts[0].rules.http[0].headerMatches",
     "headerMatches"),
])
def test_http_rules_seg_cannot_say_are_gaps(rule: str, path: str, words: str) -> None:
    t = exact(translate(cnp(WEB + f"""
ingress:
- toPorts: [{{ports: [{{port: "80", protocol: TCP}}], rules: {{http: [{rule}]}}}}]
""")))
    only_gap(t, path, words)
    # the rule is left out, the default deny it made is kept
    assert t.understood[0]["spec"]["enableDefaultDeny"] == {"ingress": True, "egress": False}
    assert not t.rules and len(t.isolations) == 1 and t.isolations[0].subject is not None


def test_fqdn_with_netdsl_dns_proxy_rule() -> None:
    t = exact(translate(cnp(WEB + """
egress:
- toFQDNs: [{matchName: API.example.com.}, {matchPattern: "*.example.org"}]
  toPorts: [{ports: [{port: "443", protocol: TCP}]}]
- toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s:k8s-app: kube-dns}}]
  toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchPattern: "*"}]}}]
""")))
    assert not t.gaps and not t.warnings
    assert t.rules[0].peers == (ir.FqdnPeer("api.example.com"), ir.FqdnPeer("*.example.org"))


def test_dns_rules_other_than_netdsl_proxy_rule_are_gaps() -> None:
    t = exact(translate(cnp(WEB + """
egress:
- toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s:k8s-app: kube-dns}}]
  toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchPattern: "*.example.org"}]}}]
""")))
    only_gap(t, "spec.egress[0].toPorts[0].rules.dns", "DNS-proxy")
    # the proxy rule without toFQDNs: netdsl would not write it back
    t = exact(translate(cnp(WEB + """
egress:
- toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s:k8s-app: kube-dns}}]
  toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchPattern: "*"}]}}]
""")))
    only_gap(t, "spec.egress[0]", "DNS-proxy")


def test_fqdn_without_dns_proxy_imports_with_a_warning() -> None:
    t = exact(translate(cnp(WEB + """
egress:
- toFQDNs: [{matchName: api.example.com}]
- toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]
  toPorts: [{ports: [{port: "53"}]}]
""")))
    assert not t.gaps
    assert [w.path for w in t.warnings] == ["spec.egress[0]"]


# ---------------------------------------------------------------------------------------- deny and default deny


def test_deny_rules() -> None:
    t = exact(translate(cnp(WEB + """
ingressDeny: [{fromCIDRSet: [{cidr: 192.0.2.0/24}]}]
egressDeny: [{toPorts: [{ports: [{port: "25", protocol: TCP}]}]}]
""")))
    assert not t.gaps
    assert [(r.direction, r.action) for r in t.rules] == [(ir.Direction.INGRESS, ir.Action.DENY),
                                                           (ir.Direction.EGRESS, ir.Action.DENY)]


def test_enable_default_deny() -> None:
    t = exact(translate(cnp("endpointSelector: {}\nenableDefaultDeny: {ingress: true}")))
    assert [(i.namespace, i.direction) for i in t.isolations] == [("prod", ir.Direction.INGRESS)]
    t = exact(translate(cnp(WEB + "ingress: [{}]")))  # the empty rule: default deny for web only
    assert not t.rules and [(i.subject.name if i.subject else None, i.direction) for i in t.isolations] == [
        ("app=web", ir.Direction.INGRESS)]
    t = exact(translate(cnp(WEB + "enableDefaultDeny: {egress: false}\negress: [{toEntities: [world]}]")))
    only_gap(t, "spec.egress[0]", "enableDefaultDeny.egress: false")
    t = exact(translate(cnp(WEB + "enableDefaultDeny: {ingress: false}\ningress: [{}]")))
    assert not t.gaps and not t.rules and not t.isolations


# ---------------------------------------------------------------------------------------- gaps


@pytest.mark.parametrize(("spec", "path", "words"), [
    ("egress: [{toServices: [{k8sService: {serviceName: x}}]}]", "spec.egress[0].toServices", "toServices"),
    ("egress: [{toRequires: [{matchLabels: {env: prod}}]}]", "spec.egress[0].toRequires", "toRequires"),
    ("ingress: [{fromEndpoints: [{}], icmps: [{fields: [{type: 8}]}]}]", "spec.ingress[0].icmps", "ICMP"),
    ("ingress: [{fromEntities: [cluster], authentication: {mode: required}}]", "spec.ingress[0].authentication",
     "authentication"),
    ("ingress: [{toPorts: [{ports: [{port: '9092', protocol: TCP}], rules: {kafka: [{topic: t}]}}]}]",
     "spec.ingress[0].toPorts[0].rules.kafka", "kafka"),
    ("egress: [{toPorts: [{ports: [{port: '443', protocol: TCP}], serverNames: [a.example]}]}]",
     "spec.egress[0].toPorts[0].serverNames", "SNI"),
    ("egress: [{toPorts: [{ports: [{port: '0', protocol: VRRP}]}]}]", "spec.egress[0].toPorts[0].ports[0]", "VRRP"),
    ("egress: [{toEndpoints: [{matchLabels: {container:app: x}}]}]", "spec.egress[0].toEndpoints[0]", "source"),
    ("egress: [{toFQDNs: [{matchPattern: '**.example.com'}]}]", "spec.egress[0].toFQDNs[0]", "**"),
    ("egress: [{toCIDRSet: [{cidrGroupRef: office}]}]", "spec.egress[0].toCIDRSet[0]", "CiliumCIDRGroup"),
])
def test_what_seg_cannot_say_is_a_gap(spec: str, path: str, words: str) -> None:
    t = exact(translate(cnp(WEB + spec)))
    only_gap(t, path, words)


def test_node_selector_is_a_gap() -> None:
    t = translate(ccnp("nodeSelector: {}\ningress: [{fromEntities: [cluster]}]"))
    only_gap(t, "spec.nodeSelector", "host policy")
    assert t.understood == []


@pytest.mark.parametrize(("spec", "words"), [
    ("egress: [{toEndpoints: [{}], toCIDR: [10.0.0.0/8]}]", "combines"),
    ("ingress: [{toPorts: [{ports: [{port: '53', protocol: UDP}], rules: {http: [{}]}}]}]", "not TCP"),
    ("egress: [{toPorts: [{ports: [{protocol: TCP}]}]}]", "port must be specified"),
    ("egress: [{toCIDRSet: [{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}]}]", "does not contain"),
])
def test_a_policy_cilium_rejects_is_a_gap_as_a_whole(spec: str, words: str) -> None:
    t = translate(cnp(WEB + spec), cnp(WEB + "ingress: [{}]", name="fine"))
    assert len(t.gaps) == 1 and t.gaps[0].source.name == "p" and words in t.gaps[0].reason, gaps(t)
    assert [o["metadata"]["name"] for o in t.understood] == ["fine"]
    exact(t)


def test_a_kubernetes_network_policy_in_the_input_is_a_gap() -> None:
    np = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "n", "namespace": "prod"}, "spec": {"podSelector": {}}}
    t = translate(np)
    only_gap(t, "", "NetworkPolicy")


def test_empty_lists_read_as_absent() -> None:
    # Cilium reads `toEndpoints: []` as no toEndpoints (then toPorts alone: every peer) and a rule of
    # only `toPorts: []` as the empty rule; the evaluator and its matrix read them so too
    t = exact(translate(cnp(WEB + """
egress: [{toEndpoints: [], toPorts: [{ports: [{port: "80", protocol: TCP}]}]}]
ingress: [{toPorts: []}]
""")))
    assert not t.gaps
    assert [(r.direction, r.peers) for r in t.rules] == [(ir.Direction.EGRESS, (ir.AnyPeer(),))]
    assert [i.direction for i in t.isolations] == [ir.Direction.INGRESS]
