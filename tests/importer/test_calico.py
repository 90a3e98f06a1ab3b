"""The Calico translator: every accepted form is proven equal to the objects it came from (for every
cluster, netdsl.semantics.verify.prove), and everything else is a Gap naming the object and rule."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from netdsl import ir
from netdsl.compiler import compile_paths
from netdsl.importer.calico import UnsupportedError, parse_dnf, pod_selectors, source_objects, translate
from netdsl.importer.model import Translation
from netdsl.semantics.verify import prove
from tests.semantics.strategies import cluster_programs, ordered_programs
from tests.semantics.test_equivalence import compile_paths_text

ROOT = Path(__file__).resolve().parents[2]
SEED = Path("/work/shared/seed/000_7a71506651f02500.txt")
EXAMPLES = sorted([*ROOT.glob("examples/*.seg"), *ROOT.glob("examples/seed/*.seg")])


def program_of(t: Translation) -> ir.Program:
    """The IR the decompiled `.seg` lowers to (the text step left out: same rules, same order)."""
    namespaces = tuple(ir.Namespace(n, labels) for n, labels in sorted(t.namespaces.items()))
    services = tuple(dict.fromkeys(r.subject for r in t.rules))
    return ir.Program(namespaces, services, tuple(t.isolations), tuple(t.rules), tuple(t.tiers))


def imported(text: str) -> Translation:
    return translate(source_objects([d for d in yaml.safe_load_all(text) if d]))


def assert_exact(t: Translation) -> None:
    proof = prove(program_of(t), "calico", t.understood)
    assert proof.holds, [c.describe(proof.universe.topology, "calico") for c in proof.counterexamples]


def reasons(t: Translation) -> list[str]:
    return [f"{g.path}: {g.reason}" for g in t.gaps]


def np(spec: str, name: str = "p", namespace: str = "prod") -> str:
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return (f"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}\n")


def gnp(spec: str, name: str = "g") -> str:
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return f"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n{body}\n"


def tier(name: str, order: int | None = None, action: str | None = None) -> str:
    spec = {k: v for k, v in (("order", order), ("defaultAction", action)) if v is not None}
    return yaml.safe_dump({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": name},
                           "spec": spec})


# ------------------------------------------------------------------------------------ round trips


def compiled(path: Path) -> list[dict[str, Any]] | None:
    result = compile_paths([str(path)], "calico")
    if not result.ok:
        return None  # fqdn / http: not for Calico
    return [dict(m.body) for m in result.manifests]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_compiled_to_calico_imports_back_exactly(path: Path) -> None:
    bodies = compiled(path)
    if bodies is None:
        pytest.skip("the example uses what Calico cannot express")
    t = translate(source_objects(bodies))
    assert t.gaps == []
    assert_exact(t)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_compiled_to_calico_imports_back_through_text(path: Path) -> None:
    """The whole way: translated, decompiled, printed, checked, lowered, proven (import_manifests)."""
    from netdsl.importer import import_manifests

    result = compile_paths([str(path)], "calico")
    if not result.ok:
        pytest.skip("the example uses what Calico cannot express")
    stream = "".join("---\n" + m.text for m in result.manifests).encode()
    out = import_manifests(["-"], stdin=stream, target="calico")
    assert out.ok, [d.message for d in out.diagnostics if d.is_error]


def test_the_proof_is_not_vacuous() -> None:
    """Dropping one imported rule is caught: the oracle tells a wrong import apart."""
    bodies = compiled(ROOT / "examples" / "calico-tiers.seg")
    assert bodies is not None
    t = translate(source_objects(bodies))
    for i in range(len(t.rules)):
        program = program_of(t)
        broken = ir.Program(program.namespaces, program.services, program.isolations,
                            program.rules[:i] + program.rules[i + 1:], program.tiers)
        assert not prove(broken, "calico", t.understood).holds, t.rules[i]


def seed_calico_documents() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", SEED.read_text(encoding="utf-8"), re.S)
    return [d for b in blocks for d in yaml.safe_load_all(b)
            if d and str(d.get("apiVersion", "")).startswith("projectcalico.org/")]


@pytest.mark.skipif(not SEED.exists(), reason="the seed article is not here")
def test_seed_article_calico_yaml() -> None:
    docs = seed_calico_documents()
    assert {d["kind"] for d in docs} == {"GlobalNetworkPolicy", "Tier", "NetworkPolicy"}
    t = translate(source_objects(docs))
    # §8.1: a GlobalNetworkPolicy without namespaceSelector also isolates host endpoints
    assert [(g.source.name, g.path) for g in t.gaps] == [("global-default-deny", "")]
    assert "host endpoints" in t.gaps[0].reason
    # §8.2: the tier has no defaultAction, so it denies what its deny-list does not: imported as it is
    assert t.tiers == [ir.Tier("security", 100, ir.Action.DENY, t.tiers[0].span)]
    assert [(r.action, r.tier) for r in t.rules] == [(ir.Action.DENY, "security")]
    assert_exact(t)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ordered_programs())
def test_ordered_programs_import_back_exactly(text: str) -> None:
    assert_round_trip(text)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_programs())
def test_cluster_programs_import_back_exactly(text: str) -> None:
    assert_round_trip(text)


def assert_round_trip(text: str) -> None:
    result = compile_paths_text(text, "calico")
    if not result.ok:
        return  # programs Calico refuses are the compiler's tests
    t = translate(source_objects([dict(m.body) for m in result.manifests]))
    assert t.gaps == [], reasons(t)
    assert_exact(t)


# ------------------------------------------------------------------------------------ defaults


def test_missing_types_follow_calico_defaults() -> None:
    t = imported(np("selector: app == 'web'\negress: [{action: Allow, destination: {nets: [10.0.0.0/8]}}]")
                 + "---\n" + np("selector: ''", name="q"))
    assert [d["spec"]["types"] for d in t.understood] == [["Egress"], ["Ingress"]]
    assert [r.direction for r in t.rules] == [ir.Direction.EGRESS]
    assert [i.direction for i in t.isolations] == [ir.Direction.INGRESS]
    assert_exact(t)


def test_order_tier_and_protocol_defaults() -> None:
    t = imported(np("ingress:\n- {action: Allow, protocol: 6, destination: {ports: ['80', '8000:8100', http]}}\n"
                    "- {action: Allow, protocol: udp}", name="b")
                 + "---\n" + np("order: 5\ningress: [{action: Allow, source: {selector: app == 'x'}}]", name="a"))
    assert [r.subject.name for r in t.rules] == ["a", "b", "b"]  # ordered first, then by name
    assert t.rules[1].ports == (ir.PortMatch(ir.Protocol.TCP, 80), ir.PortMatch(ir.Protocol.TCP, 8000, 8100),
                                ir.PortMatch(ir.Protocol.TCP, name="http"))
    assert t.rules[2].ports == (ir.PortMatch(ir.Protocol.UDP),)
    assert all(r.tier is None for r in t.rules)
    assert_exact(t)


def test_tier_without_order_comes_after_every_ordered_tier() -> None:
    rules = "ingress: [{action: Pass, source: {nets: [10.0.0.0/8]}}]"
    t = imported(tier("zz") + "---\n" + tier("aa", 2_000_000) + "---\n"
                 + np(f"tier: zz\n{rules}", name="one") + "---\n" + np(f"tier: aa\n{rules}", name="two"))
    assert [(x.name, x.order) for x in t.tiers] == [("aa", 2_000_000), ("zz", 2_000_001)]
    assert_exact(t)


# ------------------------------------------------------------------------------------ selectors


@pytest.mark.parametrize("text", [
    "app == 'web'", "app != 'web'", "has(app)", "!has(app)", "app in {'a', 'b'}", "app not in {'a'}",
    "all()", "app == 'web' && tier != 'x' && !has(legacy)", "!(app == 'a' || has(b))",
])
def test_expressible_subject_selectors(text: str) -> None:
    t = imported(np(f"selector: \"{text}\"\ningress: [{{action: Allow, source: {{selector: \"{text}\"}}}}]"))
    assert t.gaps == []
    assert_exact(t)


def test_not_equal_matches_pods_without_the_label() -> None:
    [s] = pod_selectors("app != 'web'")
    assert s == ir.Selector.of([ir.Requirement("app", ir.Operator.NOT_IN, ("web",))])
    assert s.matches({}) and not s.matches({"app": "web"})


def test_or_in_subjects_and_peers() -> None:
    t = imported(np("selector: app == 'a' || app == 'b'\n"
                    "ingress: [{action: Allow, source: {selector: role == 'x' || has(y)}}]"))
    assert len({r.subject for r in t.rules}) == 2
    assert all(len(r.peers) == 2 for r in t.rules)
    assert_exact(t)


@pytest.mark.parametrize("text", ["app contains 'x'", "app starts with 'x'", "projectcalico.org/namespace == 'a'",
                                  "pcns.env == 'x'"])
def test_inexpressible_selectors_are_gaps(text: str) -> None:
    t = imported(np(f"selector: \"{text}\"\ningress: [{{action: Allow}}]"))
    assert [g.path for g in t.gaps] == [""] and t.understood == []
    assert_exact(t)


def test_too_many_alternatives() -> None:
    with pytest.raises(UnsupportedError):
        parse_dnf(" && ".join(f"(a{i} == 'x' || b{i} == 'y')" for i in range(6)))


def test_namespace_selectors() -> None:
    t = imported(np("ingress:\n"
                    "- {action: Allow, source: {namespaceSelector: projectcalico.org/name == 'ops'}}\n"
                    "- {action: Allow, source: {namespaceSelector: env == 'prod' && team != 'x', "
                    "selector: app == 'a'}}\n"
                    "- {action: Allow, source: {namespaceSelector: all()}}\n"
                    "- {action: Allow, source: {namespaceSelector: has(projectcalico.org/name) && env != 'x'}}"))
    assert t.gaps == []
    peers = [r.peers[0] for r in t.rules]
    assert isinstance(peers[0], ir.PodPeer) and peers[0].namespaces == ir.NamespaceByName("ops")
    assert isinstance(peers[2], ir.PodPeer) and peers[2].namespaces == ir.AllNamespaces()
    assert_exact(t)


def test_negative_namespace_selector_also_matches_host_endpoints() -> None:
    t = imported(np("ingress: [{action: Allow, source: {namespaceSelector: env != 'x'}}]"))
    assert [g.path for g in t.gaps] == ["spec.ingress[0]"] and "host endpoints" in t.gaps[0].reason
    assert_exact(t)


# ------------------------------------------------------------------------------------ global policies


def test_global_policy_is_a_cluster_workload() -> None:
    t = imported(gnp("namespaceSelector: env == 'prod'\nselector: app == 'web'\n"
                     "ingress: [{action: Allow, source: {namespaceSelector: all(), selector: app == 'lb'}}]"))
    [rule] = t.rules
    assert rule.subject.cluster == ir.NamespaceBySelector(
        ir.Selector.of([ir.Requirement("env", ir.Operator.IN, ("prod",))]))
    assert_exact(t)


@pytest.mark.parametrize("spec, where, why", [
    ("selector: all()\ntypes: [Ingress]", "", "host endpoints"),
    ("namespaceSelector: env != 'x'\ntypes: [Ingress]", "", "negative"),
    ("namespaceSelector: all()\ningress: [{action: Allow, source: {selector: app == 'x'}}]",
     "spec.ingress[0]", "host endpoints"),
])
def test_global_policy_gaps(spec: str, where: str, why: str) -> None:
    t = imported(gnp(spec))
    assert [g.path for g in t.gaps] == [where] and why in t.gaps[0].reason
    assert_exact(t)


def test_global_network_sets() -> None:
    sets = ("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: office\n"
            "  labels: {netdsl.dev/network-set: office, role: office}\nspec: {nets: [192.0.2.0/24, 198.51.100.0/24]}\n")
    rule = "ingress: [{action: Allow, source: {namespaceSelector: global(), selector: %s}}]"
    t = imported(sets + "---\n" + np(rule % "netdsl.dev/network-set == 'office'"))
    assert t.gaps == [] and set(t.cidr_sets) == {"office"}
    assert {p.cidr.exploded for p in t.rules[0].peers if isinstance(p, ir.CidrPeer)} == {
        "192.0.2.0/24", "198.51.100.0/24"}
    assert_exact(t)
    # a label an admin may also give a host endpoint: that peer means more than the set
    t = imported(sets + "---\n" + np(rule % "role == 'office'"))
    assert [g.path for g in t.gaps] == ["spec.ingress[0]"] and "host endpoints" in t.gaps[0].reason
    assert_exact(t)


def test_namespaced_network_sets() -> None:
    nset = ("apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata:\n  name: partners\n  namespace: prod\n"
            "  labels: {role: partner}\nspec: {nets: [203.0.113.0/24]}\n")
    t = imported(nset + "---\n" + np("ingress: [{action: Allow, source: {selector: role == 'partner'}}]"))
    assert t.gaps == [] and set(t.cidr_sets) == {"prod-partners"}
    assert ir.CidrPeer(__import__("ipaddress").ip_network("203.0.113.0/24")) in t.rules[0].peers
    assert_exact(t)
    t = imported(nset + "---\n" + np("ingress: [{action: Allow, source: {namespaceSelector: all(), "
                                     "selector: role == 'partner'}}]", namespace="other"))
    assert [g.path for g in t.gaps] == ["spec.ingress[0]"] and "NetworkSet" in t.gaps[0].reason
    assert_exact(t)


# ------------------------------------------------------------------------------------ nets, actions, tiers


def test_nets_and_not_nets() -> None:
    t = imported(np("ingress:\n- {action: Allow, source: {nets: [10.0.0.0/8, 192.168.0.0/16], notNets: [10.1.0.0/16, "
                    "192.168.0.0/16]}}\n- {action: Allow, protocol: TCP, source: {notNets: [172.16.0.0/12]}}"))
    assert t.gaps == []
    [peer] = t.rules[0].peers
    assert isinstance(peer, ir.CidrPeer) and [str(e) for e in peer.excepts] == ["10.1.0.0/16"]
    assert_exact(t)


def test_tiers_pass_deny_and_a_policy_without_rules() -> None:
    t = imported(tier("sec", 100) + "---\n" + tier("open", 200, "Pass") + "---\n"
                 + np("tier: sec\norder: 1\nselector: app == 'web'\ningress:\n"
                      "- {action: Pass, source: {selector: app == 'lb'}}\n"
                      "- {action: Deny, protocol: TCP, destination: {ports: [22]}}", name="a")
                 + "---\n" + np("tier: sec\norder: 2\nselector: app == 'db'\ntypes: [Ingress]", name="b")
                 + "---\n" + np("tier: open\nselector: has(app)\ntypes: [Egress]", name="c"))
    assert t.gaps == []
    assert [(r.subject.name, r.action) for r in t.rules] == [
        ("a", ir.Action.PASS), ("a", ir.Action.DENY), ("b", ir.Action.DENY)]  # b: the tier's own deny
    assert_exact(t)


def test_default_tier_isolation_and_order() -> None:
    t = imported(np("types: [Ingress, Egress]", name="iso")
                 + "---\n" + np("order: 1\nselector: app == 'web'\n"
                                "ingress: [{action: Deny, source: {nets: [10.0.0.0/8]}}]", name="deny")
                 + "---\n" + np("order: 2\nselector: app == 'web'\ningress: [{action: Allow}]", name="allow"))
    assert t.gaps == [] and {i.direction for i in t.isolations} == set(ir.Direction)
    assert_exact(t)
    # a Deny after an Allow: `.seg` puts denies first outside tiers, so that order cannot be kept
    t = imported(np("ingress: [{action: Allow, source: {selector: app == 'a'}}, {action: Deny}]"))
    assert [g.path for g in t.gaps] == ["spec.ingress[1]"]
    assert_exact(t)
    # some pods isolated with no rule there: `isolate ingress for web`
    t = imported(np("selector: app == 'web'\ntypes: [Ingress, Egress]\negress: [{action: Allow}]"))
    [iso] = t.isolations
    assert t.gaps == [] and iso.subject is not None and str(iso.subject.selector) == "app=web"
    assert_exact(t)


@pytest.mark.parametrize("rule, why", [
    ("{action: Log}", "Log"),
    ("{action: Allow, protocol: TCP, destination: {notPorts: [22]}}", "notPorts"),
    ("{action: Allow, protocol: ICMP}", "ICMP"),
    ("{action: Allow, protocol: ICMP, icmp: {type: 8}}", "icmp"),
    ("{action: Allow, notProtocol: TCP}", "notProtocol"),
    ("{action: Allow, source: {serviceAccounts: {names: [x]}}}", "serviceAccounts"),
    ("{action: Allow, source: {notSelector: app == 'x'}}", "notSelector"),
    ("{action: Allow, http: {methods: [GET]}}", "http"),
    ("{action: Allow, destination: {ports: [80]}}", "without a protocol"),
    ("{action: Allow, protocol: TCP, source: {ports: [80]}}", "source ports"),
    ("{action: Allow, destination: {selector: app == 'x'}}", "narrows"),
    ("{action: Allow, source: {nets: [10.0.0.0/8], selector: app == 'x'}}", "nets together"),
    ("{action: Pass}", "Pass in the default tier"),
])
def test_rule_gaps(rule: str, why: str) -> None:
    t = imported(np(f"ingress: [{rule}, {{action: Allow, source: {{selector: app == 'ok'}}}}]"))
    assert [g.path for g in t.gaps] == ["spec.ingress[0]"], reasons(t)
    assert why in t.gaps[0].reason
    assert len(t.understood[0]["spec"]["ingress"]) == 1  # the rest is still imported
    assert_exact(t)


@pytest.mark.parametrize("text, why", [
    (np("doNotTrack: true\ningress: [{action: Allow}]"), "doNotTrack"),
    (np("serviceAccountSelector: x == 'y'\ningress: [{action: Allow}]"), "serviceAccountSelector"),
    (np("tier: missing\ningress: [{action: Allow}]"), "no Tier object"),
    (np("ingress: [{action: Allow}]").replace("kind: NetworkPolicy", "kind: StagedNetworkPolicy"), "staged"),
    ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k, namespace: prod}\n"
     "spec: {podSelector: {}}\n", "Kubernetes NetworkPolicy"),
])
def test_object_gaps(text: str, why: str) -> None:
    t = imported(text)
    assert len(t.gaps) == 1 and why in t.gaps[0].reason, reasons(t)
    assert t.understood == [] and t.rules == []


def test_crd_storage_form_reads_as_v3() -> None:
    t = imported(np("ingress: [{action: Allow, source: {selector: app == 'a'}}]").replace(
        "projectcalico.org/v3", "crd.projectcalico.org/v1"))
    assert t.gaps == [] and t.understood[0]["apiVersion"] == "projectcalico.org/v3"
    assert_exact(t)


def test_empty_fields_read_as_absent() -> None:
    t = imported(np("selector: ''\ningress: [{action: Allow, source: {selector: '', nets: []}, destination: null}]"))
    assert t.gaps == [] and t.rules[0].peers == (ir.AnyPeer(),)
    assert_exact(t)


# ------------------------------------------------------------------------------------ the evaluator


def evaluator(text: str) -> Any:
    import ipaddress

    from netdsl.semantics.calico import CalicoSemantics
    from netdsl.semantics.model import Connection, External, Pod, Topology

    web, lb = Pod("prod", "web", {"app": "web"}), Pod("prod", "lb", {"app": "lb"})
    outside = External(ipaddress.ip_address("203.0.113.7"))
    topology = Topology({"prod": {"env": "prod"}}, (web, lb), (outside,))
    sem = CalicoSemantics([d for d in yaml.safe_load_all(text) if d], topology)
    return lambda src, dst, port=80: sem.decide(Connection(
        {"web": web, "lb": lb, "out": outside}[src], {"web": web, "lb": lb, "out": outside}[dst],
        ir.Protocol.TCP, port)).allowed


def test_evaluator_types_default_to_egress_alone_with_only_egress_rules() -> None:
    decide = evaluator(np("selector: app == 'web'\negress: [{action: Allow, destination: {nets: [10.0.0.0/8]}}]"))
    assert decide("lb", "web") and not decide("web", "out")


def test_evaluator_log_goes_on_to_the_next_rule() -> None:
    decide = evaluator(np("selector: app == 'web'\n"
                          "ingress: [{action: Log}, {action: Allow, source: {selector: app == 'lb'}}]"))
    assert decide("lb", "web") and not decide("out", "web")


def test_evaluator_tier_without_order_comes_last() -> None:
    decide = evaluator(tier("b") + "---\n" + tier("a", 5) + "---\n"
                       + np("tier: b\ningress: [{action: Allow}]", name="x")
                       + "---\n" + np("tier: a\ningress: [{action: Deny, source: {selector: app == 'lb'}}, "
                                      "{action: Pass}]", name="y"))
    assert not decide("lb", "web") and decide("out", "web")


def test_evaluator_namespaced_network_set() -> None:
    nset = ("apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: s, namespace: prod, "
            "labels: {role: partner}}\nspec: {nets: [203.0.113.0/24]}\n")
    same = evaluator(nset + "---\n" + np("ingress: [{action: Allow, source: {selector: role == 'partner'}}]"))
    assert same("out", "web") and not same("lb", "web")
    rule = "ingress: [{action: Allow, source: {namespaceSelector: env == '%s', selector: role == 'partner'}}]"
    for env, allowed in (("prod", True), ("test", False)):
        decide = evaluator(nset + "---\n" + gnp("namespaceSelector: all()\nselector: app == 'web'\n" + rule % env))
        assert decide("out", "web") is allowed  # the set inherits its namespace's labels (namespace profile)
