"""netdsl/backends/cilium.py: every example that Cilium can express compiles to its golden file, validates
against the pinned upstream CRD schemas, and its rendered YAML reads back as exactly the manifest bodies;
the seed's Cilium pitfalls (§4.3 toFQDNs and toPorts in separate rules, no DNS-proxy rule; rule-less
`ingress: []`; mixed peer kinds in one rule; selectors that silently mean the policy's own namespace;
§8.3's HTTP rules) are checked on the emitted objects; what the objects allow is judged by
`netdsl.semantics.cilium.CiliumSemantics` over hand-built clusters; and the target capabilities
(fqdn / http / entity need Cilium, deny / pass / tiers need Calico), `--widen` and the language errors of
the Cilium-only statements are checked through the CLI.

Regenerate the golden files with `NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/backends/test_cilium.py`
and review the diff.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result as CliResult

from netdsl.backends import get_backend
from netdsl.compiler import Result, check, compile_paths, stream
from netdsl.ir import Protocol
from netdsl.semantics.calico import CalicoSemantics
from netdsl.semantics.cilium import CiliumSemantics
from netdsl.semantics.engine import probes_for
from netdsl.semantics.model import (
    CILIUM_RESERVED,
    Connection,
    External,
    Pod,
    Topology,
    topology_from_program,
)
from netdsl.semantics.program import ProgramSemantics
from tests.backends.golden import check_golden, stray_golden_files

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "cilium"
ALL_EXAMPLES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "examples").rglob("*.seg"))

API = "cilium.io/v2"
CNP, CCNP = "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"
NAMESPACE_KEY = "k8s:io.kubernetes.pod.namespace"
SECTIONS = ("ingress", "ingressDeny", "egress", "egressDeny")
PEER_KEYS = {
    "fromEndpoints", "toEndpoints", "fromEntities", "toEntities", "fromCIDRSet", "toCIDRSet", "fromCIDR",
    "toCIDR", "toFQDNs", "toServices", "toGroups", "fromGroups", "fromNodes", "toNodes", "fromRequires",
    "toRequires",
}
TCP, UDP = Protocol.TCP, Protocol.UDP

# What only Calico can express (ordered tiers, pass): Cilium must refuse these examples.
CALICO_ONLY = {"examples/calico-tiers.seg", "examples/seed/8.2-tiered-security-policy.seg"}


def beyond_cilium(example: str) -> list[str]:
    """The hints of the `unsupported` errors the Cilium target reports for an example, decided from the
    program's needs (not from whether compiling happens to succeed)."""
    result = check([str(REPO / example)])
    assert result.program is not None, [str(d) for d in result.diagnostics]
    return [d.hint or "" for d in get_backend("cilium").unsupported(result.program)]


EXAMPLES = [e for e in ALL_EXAMPLES if not beyond_cilium(e)]
NOT_FOR_CILIUM = [e for e in ALL_EXAMPLES if e not in EXAMPLES]


def golden_path(example: str) -> Path:
    """examples/seed/4.3-x.seg -> tests/golden/cilium/examples__seed__4.3-x.yaml"""
    return GOLDEN / (example.removesuffix(".seg").replace("/", "__") + ".yaml")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    # netdsl.dev/source annotations and rule comments name paths relative to the working directory
    monkeypatch.chdir(REPO)


# ------------------------------------------------------------------------------------------ helpers

# Programs that exercise what the examples do not: port ranges, named ports, SCTP, whole protocols, CIDR
# except, entities, FQDN patterns, HTTP hosts and headers, deny rules, cluster blocks, other namespaces.
PROGRAMS: dict[str, str] = {
    "kitchen-sink": """\
cidrs office = 203.0.113.0/24 except 203.0.113.100/32

namespace monitoring labels team=obs {
  isolate egress
  allow dns
  service prometheus = app=prometheus
}

namespace production labels env=prod {
  isolate
  service web = app=web, tier in (a, b), !legacy
  service api = app=api
  service db = app=db
  allow dns

  web accepts anywhere on 80, 443
  web accepts office on 8443
  web accepts entity world, entity remote-node on 9000-9100
  web accepts monitoring/prometheus on metrics
  web accepts pods[app=x] in namespaces[team=obs] on 7000/sctp
  api accepts web on 8080 http GET /api/.*,
    POST /api/orders host "shop\\.example\\.com" header "X-Env: prod", ANY /health
  api connects to fqdn api.stripe.com, fqdn *.amazonaws.com, cidr 10.0.0.0/8 except (10.1.0.0/16) on 443, 8000-8100
  api connects to entity kube-apiserver on 6443
  db accepts api on 5432
  db accepts all pods in namespaces[team=obs] on udp
  db denies from cidr 192.0.2.0/24 on 5432
  api denies to cidr 198.51.100.0/24
  api denies to entity world on 25
}

cluster namespaces[env=prod] {
  allow dns
  all pods connects to namespace logging on 5140/udp
}
""",
    "cluster-fqdn": """\
cluster {
  isolate
  all pods connects to fqdn api.example.com, fqdn *.example.org on 443
}
""",
    "fqdn-with-every-dns-form": """\
namespace production {
  isolate
  allow dns
  service backend = app=backend
  service frontend = app=frontend
  group both = backend, frontend
  both connects to fqdn api.example.com, cidr 10.0.0.0/8, entity world, frontend on 443, 8443
  backend connects to fqdn *
}
""",
    "cross-namespace": """\
namespace monitoring labels team=obs {
  isolate
  allow dns
  service prometheus = app=prometheus
}
namespace staging labels env=staging {
  isolate
  allow dns
  service web = app=web
}
namespace production labels env=prod {
  isolate
  allow dns
  service web = app=web
  web accepts monitoring/prometheus on 9090
  web accepts pods[app=web] in namespace staging on 8080
  web accepts namespaces[team=obs] on 8081
  web accepts all pods in namespaces[env=staging] on 8082
  web connects to staging/web on 8443
  web connects to namespaces[team=obs] on 9999
}
""",
    "all-namespaces": """\
namespace monitoring labels team=obs {
  isolate
  service prometheus = app=prometheus
}
namespace production {
  isolate
  allow dns
  service web = app=web
  web connects to all namespaces on 9999
  web accepts all pods in all namespaces on 8080
  web accepts all namespaces on 8081
}
""",
    # Selectors made only of negative requirements: in Cilium they also match the reserved identities
    # (world, host, remote-node, health, ingress...) unless the output says it means pods.
    "negative-only-peers": """\
namespace production labels env=prod {
  isolate
  allow dns
  service web = app=web
  service unlabelled = !app
  web accepts pods[!internal], pods[tier notin (db)] on 8080
  web accepts namespaces[env notin (prod)] on 8081
  web accepts namespaces[kubernetes.io/metadata.name notin (kube-system)] on 8082
  web connects to pods[!x] in namespaces[kubernetes.io/metadata.name notin (staging)] on 8443
  unlabelled connects to namespaces[kubernetes.io/metadata.name notin (kube-system)]
}
""",
    "negative-only-cluster": """\
cluster {
  isolate
  allow dns
  service untiered = !tier
  untiered accepts pods[!internal] in all namespaces, pods[tier notin (db)] in all namespaces on 8080
  all pods connects to namespaces[kubernetes.io/metadata.name notin (kube-system)] on 9999
}
cluster including system {
  isolate ingress
}
""",
}

CROSS_NAMESPACE_ONLY = "cross-namespace"


def compile_text(text: str, target: str = "cilium", name: str = "p.seg") -> Result:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_text(text, encoding="utf-8")
        return compile_paths([str(path)], target)


def documents(result: Result) -> list[dict[str, Any]]:
    """The objects as a reader of the YAML stream sees them (not the backend's in-memory bodies)."""
    assert result.ok, [f"{d.span}: {d.message}" for d in result.diagnostics if d.is_error]
    return [d for d in yaml.safe_load_all(stream(result.manifests)) if d is not None]


@functools.cache
def output_result(kind: str, name: str) -> Result:
    """Compiled once per test session (the tests only read the result)."""
    assert Path.cwd() == REPO
    return compile_paths([name], "cilium") if kind == "example" else compile_text(PROGRAMS[name], name=f"{name}.seg")


_NOTE = re.compile(r"^[^:]*:\d+: (?:other half of `)?(?P<text>.*?)`?$")


def rules_with_statements(result: Result) -> Iterator[tuple[dict[str, Any], str, int, dict[str, Any], str]]:
    """Every rule of every emitted policy with the text of the statement it comes from (the backend's
    per-rule comments: `path:line: statement` or `path:line: other half of `statement``)."""
    assert result.ok, result.diagnostics
    for m in result.manifests:
        comments = m.context.get("comments") or {}
        for section, i, rule in rules(m.body):
            notes = comments.get(section) or []
            match = _NOTE.match(notes[i]) if i < len(notes) else None
            yield m.body, section, i, rule, match.group("text") if match else ""


def example_documents(example: str) -> list[dict[str, Any]]:
    return documents(output_result("example", example))


def program_documents(name: str) -> list[dict[str, Any]]:
    return documents(output_result("program", name))


ALL_OUTPUTS = [*(("example", e) for e in EXAMPLES), *(("program", p) for p in PROGRAMS)]


def output_documents(kind: str, name: str) -> list[dict[str, Any]]:
    return example_documents(name) if kind == "example" else program_documents(name)


def rules(doc: Mapping[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for section in SECTIONS:
        for i, rule in enumerate(doc["spec"].get(section) or ()):
            yield section, i, rule


def where(doc: Mapping[str, Any], section: str, i: int) -> str:
    meta = doc["metadata"]
    return f"{doc['kind']} {meta.get('namespace', '')}/{meta['name']} {section}[{i}]"


def selectors(rule: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*rule.get("fromEndpoints", ()), *rule.get("toEndpoints", ())]


def names_namespace(sel: Mapping[str, Any]) -> bool:
    return NAMESPACE_KEY in (sel.get("matchLabels") or {}) or any(
        e["key"] == NAMESPACE_KEY for e in sel.get("matchExpressions") or ()
    )


def run_json(netdsl: Callable[..., CliResult], *args: str) -> tuple[CliResult, list[dict[str, Any]]]:
    result = netdsl(*args[:1], "--diagnostics", "json", *args[1:])
    diags = json.loads(result.stderr) if result.stderr.strip() else []
    return result, diags


def write(tmp_path: Path, text: str, name: str = "app.seg") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def ns_block(*statements: str) -> str:
    """A production namespace with frontend and backend services; statement i is on line 4 + i."""
    body = "".join(f"  {s}\n" for s in statements)
    return (
        "namespace production {\n  service backend = app=backend\n  service frontend = app=frontend\n"
        + body + "}\n"
    )


def glob_matches(pattern: str, name: str) -> bool:
    """Cilium's matchPattern: `*` alone is every name, otherwise `*` is any run of DNS characters."""
    if pattern == "*":
        return True
    regex = "".join("[-a-z0-9_]*" if ch == "*" else re.escape(ch) for ch in pattern.rstrip("."))
    return re.fullmatch(regex, name.rstrip(".")) is not None


# ------------------------------------------------------------------------------------------ examples


def test_examples_exist() -> None:
    assert "examples/cilium-l7-fqdn.seg" in EXAMPLES
    assert "examples/seed/4.3-cilium-fqdn.seg" in EXAMPLES
    assert "examples/seed/8.3-l7-http.seg" in EXAMPLES
    assert "examples/three-tier.seg" in EXAMPLES
    assert len(EXAMPLES) >= 10


def test_only_the_calico_only_examples_are_beyond_cilium() -> None:
    assert set(NOT_FOR_CILIUM) == CALICO_ONLY & set(ALL_EXAMPLES)


@pytest.mark.parametrize("example", sorted(CALICO_ONLY & set(ALL_EXAMPLES)))
def test_examples_beyond_cilium_are_refused(example: str, netdsl) -> None:
    result = netdsl("compile", "--target", "cilium", example)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "[unsupported]" in result.stderr and "Traceback" not in result.stderr
    assert "targets that can: calico" in result.stderr
    assert all(hint == "targets that can: calico" for hint in beyond_cilium(example))


@pytest.mark.parametrize("example", EXAMPLES)
def test_golden(example: str, netdsl) -> None:
    result = netdsl("compile", "--target", "cilium", example)
    assert result.exit_code == 0, result.stderr
    check_golden("cilium", example, result.stdout_bytes)


def test_no_stray_golden_files() -> None:
    stray = stray_golden_files("cilium", EXAMPLES)
    assert not stray, f"golden files without an example: {stray}"


@pytest.mark.parametrize(("kind", "name"), ALL_OUTPUTS)
def test_rendered_yaml_is_the_body(kind: str, name: str) -> None:
    result = output_result(kind, name)
    assert result.ok, result.diagnostics
    assert result.manifests
    for m in result.manifests:
        assert m.text.startswith("# Generated by netdsl.")
        assert yaml.safe_load(m.text) == m.body
        assert m.body["apiVersion"] == API and m.body["kind"] in (CNP, CCNP)
        assert m.body["metadata"]["name"] == m.name
        if m.body["kind"] == CNP:
            assert m.body["metadata"]["namespace"] == m.namespace
        else:
            assert "namespace" not in m.body["metadata"] and m.namespace is None
    assert list(yaml.safe_load_all(stream(result.manifests))) == [m.body for m in result.manifests]


def test_examples_validate_against_schemas(shared: Path, tmp_path: Path) -> None:
    tool = shared / "tools" / "validate-manifests"
    if not tool.is_file():
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{tool} is missing (CI must have ../shared)")
        pytest.skip(f"{tool} does not exist")
    files = []
    for example in EXAMPLES:
        result = output_result("example", example)
        assert result.ok, (example, result.diagnostics)
        out = tmp_path / golden_path(example).name
        out.write_text(stream(result.manifests), encoding="utf-8")
        files.append(str(out))
    for name in PROGRAMS:
        result = output_result("program", name)
        assert result.ok, (name, result.diagnostics)
        out = tmp_path / f"program__{name}.yaml"
        out.write_text(stream(result.manifests), encoding="utf-8")
        files.append(str(out))
    # strict (no --loose): a field the CRD does not define is an error (the API server would prune it)
    proc = subprocess.run([sys.executable, str(tool), *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------ pitfalls


@pytest.mark.parametrize(("kind", "name"), ALL_OUTPUTS)
def test_pitfall_ports_stay_inside_the_rule_they_restrict(kind: str, name: str) -> None:
    """§4.3: toFQDNs in one rule and toPorts in another opens the port to everyone and every port to the
    named hosts. So a rule with toFQDNs carries the statement's ports itself, and a rule with toPorts but
    no peer (which matches every peer) may only come from an `anywhere`-like statement."""
    for doc, section, i, rule, statement in rules_with_statements(output_result(kind, name)):
        if not rule:
            continue  # the isolation rule `{}`
        assert statement, f"{where(doc, section, i)} has no source statement"
        peers = PEER_KEYS & set(rule)
        if "toPorts" in rule and not peers:
            assert "anywhere" in statement or "entity all" in statement, (
                f"{where(doc, section, i)}: toPorts without a peer, from `{statement}`"
            )
        if "toFQDNs" in rule and re.search(r"\bon\b", statement):
            assert rule.get("toPorts"), f"{where(doc, section, i)}: toFQDNs without the ports of `{statement}`"
        if "toFQDNs" in rule and not re.search(r"\bon\b", statement) and not statement.endswith(","):
            # (a comment holds a statement's first line: one continued after `,` may name ports later)
            assert "toPorts" not in rule, f"{where(doc, section, i)}: ports `{statement}` did not name"


@pytest.mark.parametrize("example", ["examples/seed/4.3-cilium-fqdn.seg", "examples/cilium-l7-fqdn.seg"])
def test_pitfall_4_3_fqdn_rule_holds_exactly_its_port(example: str) -> None:
    (policy,) = [d for d in example_documents(example) if d["metadata"]["name"] == "backend"]
    fqdn = [r for r in policy["spec"]["egress"] if "toFQDNs" in r]
    assert fqdn == [{
        "toFQDNs": [{"matchName": "api.stripe.com"}, {"matchPattern": "*.amazonaws.com"}],
        "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
    }]
    # nothing else in the policy opens 443 (or every port) to every destination
    for section, i, rule in rules(policy):
        assert PEER_KEYS & set(rule), f"{where(policy, section, i)} matches every peer: {rule}"


def _is_kube_dns(sel: Mapping[str, Any]) -> bool:
    labels = sel.get("matchLabels") or {}
    return labels.get("k8s-app") == "kube-dns" and labels.get(NAMESPACE_KEY) == "kube-system"


@pytest.mark.parametrize(("kind", "name"), ALL_OUTPUTS)
def test_pitfall_fqdn_policies_carry_the_dns_proxy_rule(kind: str, name: str) -> None:
    """§4.3: Cilium learns an FQDN's addresses only from lookups its DNS proxy sees, so the policy with
    toFQDNs needs an egress rule to kube-dns on UDP and TCP 53 with `rules.dns` covering those names."""
    for doc in output_documents(kind, name):
        names = [next(iter(f.values())) for r in doc["spec"].get("egress") or () for f in r.get("toFQDNs", ())]
        if not names:
            continue
        patterns: list[str] = []
        for rule in doc["spec"]["egress"]:
            if not any(_is_kube_dns(s) for s in rule.get("toEndpoints", ())):
                continue
            for entry in rule.get("toPorts", ()):
                ports = {(p["port"], p["protocol"]) for p in entry["ports"]}
                if {("53", "UDP"), ("53", "TCP")} <= ports:
                    patterns += [d["matchPattern"] for d in (entry.get("rules") or {}).get("dns", ())]
        assert patterns, f"{where(doc, 'egress', 0)}: toFQDNs {names} without a DNS-proxy rule to kube-dns"
        for fqdn in names:
            assert any(glob_matches(p, fqdn.replace("*", "x")) for p in patterns), (fqdn, patterns)


def test_dns_proxy_rule_only_where_fqdn_rules_are() -> None:
    """`rules.dns` sends every lookup through the proxy: only policies that need it get it."""
    for doc in example_documents("examples/cilium-l7-fqdn.seg"):
        has_fqdn = any("toFQDNs" in r for _, _, r in rules(doc))
        has_proxy = any("dns" in (e.get("rules") or {}) for _, _, r in rules(doc) for e in r.get("toPorts", ()))
        assert has_fqdn == has_proxy, doc["metadata"]["name"]


_EMPTY_SECTION = re.compile(r"^\s*(ingress|egress|ingressDeny|egressDeny):\s*\[\s*\]\s*$", re.MULTILINE)


@pytest.mark.parametrize(("kind", "name"), ALL_OUTPUTS)
def test_pitfall_no_empty_rule_lists(kind: str, name: str) -> None:
    """`ingress: []` is no policy for that direction in Cilium; isolation is enableDefaultDeny plus [{}]."""
    result = output_result(kind, name)
    assert not _EMPTY_SECTION.search(stream(result.manifests))
    for doc in documents(result):
        spec = doc["spec"]
        for section in SECTIONS:
            assert spec.get(section, [None]) != [], f"{where(doc, section, 0)}: empty list"
        deny = spec.get("enableDefaultDeny") or {}
        for direction in ("ingress", "egress"):
            if {} in (spec.get(direction) or ()):
                # the empty rule (allows nothing) only appears as isolation, and then alone
                assert deny.get(direction) is True, where(doc, direction, 0)
                assert spec[direction] == [{}], where(doc, direction, 0)
            if deny.get(direction):
                assert spec.get(direction) == [{}], where(doc, direction, 0)


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("examples/seed/5.1-default-deny-all.seg", {"ingress": True, "egress": True}),
        ("examples/seed/5.2-default-deny-ingress.seg", {"ingress": True}),
        ("examples/seed/8.1-global-default-deny.seg", {"ingress": True, "egress": True}),
        ("examples/cilium-l7-fqdn.seg", {"ingress": True, "egress": True}),
    ],
)
def test_isolation_is_enable_default_deny_with_an_empty_rule(example: str, expected: dict[str, bool]) -> None:
    docs = [d for d in example_documents(example) if "enableDefaultDeny" in d["spec"]]
    assert len(docs) == 1
    spec = docs[0]["spec"]
    assert spec["enableDefaultDeny"] == expected
    for direction in ("ingress", "egress"):
        assert spec.get(direction) == ([{}] if direction in expected else None)
    if docs[0]["kind"] == CCNP:  # §8.1: a cluster-wide isolation spares the system namespaces
        # ... and Cilium's own endpoints (health, Ingress): only pods carry the namespace label
        expr, pods = spec["endpointSelector"]["matchExpressions"]
        assert expr["key"] == NAMESPACE_KEY and expr["operator"] == "NotIn" and "kube-system" in expr["values"]
        assert pods == {"key": NAMESPACE_KEY, "operator": "Exists"}
    else:
        assert spec["endpointSelector"] == {}


@pytest.mark.parametrize(("kind", "name"), ALL_OUTPUTS)
def test_pitfall_one_kind_of_peer_per_rule(kind: str, name: str) -> None:
    """Cilium rejects fromEndpoints/toEndpoints combined with entities, CIDRs or FQDNs in one rule."""
    for doc in output_documents(kind, name):
        for section, i, rule in rules(doc):
            peers = PEER_KEYS & set(rule)
            if peers & {"fromEndpoints", "toEndpoints"}:
                assert len(peers) == 1, f"{where(doc, section, i)} mixes {sorted(peers)}"
            assert len(peers) <= 1, f"{where(doc, section, i)} mixes {sorted(peers)}"


@pytest.mark.parametrize(("kind", "name"), ALL_OUTPUTS)
def test_pitfall_ports_are_strings_and_end_ports_integers(kind: str, name: str) -> None:
    seen_range = False
    for doc in output_documents(kind, name):
        for section, i, rule in rules(doc):
            for entry in rule.get("toPorts", ()):
                for p in entry["ports"]:
                    assert isinstance(p["port"], str), f"{where(doc, section, i)}: port {p['port']!r}"
                    assert p["protocol"] in ("TCP", "UDP", "SCTP"), p
                    if "endPort" in p:
                        seen_range = True
                        assert type(p["endPort"]) is int and p["endPort"] > int(p["port"]), p
    if name == "kitchen-sink":
        assert seen_range


@pytest.mark.parametrize(("kind", "name"), ALL_OUTPUTS)
def test_pitfall_selectors_in_other_namespaces_name_the_namespace(kind: str, name: str) -> None:
    """A namespaced policy's endpoint selector without `k8s:io.kubernetes.pod.namespace` means the
    policy's own namespace. Every selector whose label names a namespace (or namespace labels) must name
    the namespace key too; in `cross-namespace` every flow crosses namespaces, so every selector must."""
    for doc in output_documents(kind, name):
        if doc["kind"] != CNP:
            continue
        for section, i, rule in rules(doc):
            for sel in selectors(rule):
                keys = {*(sel.get("matchLabels") or {}), *(e["key"] for e in sel.get("matchExpressions") or ())}
                if name == CROSS_NAMESPACE_ONLY or any(k.startswith("k8s:io.cilium.k8s.namespace.") for k in keys):
                    assert names_namespace(sel), f"{where(doc, section, i)}: {sel}"


def test_cross_namespace_peers_name_their_namespace() -> None:
    docs = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in program_documents(CROSS_NAMESPACE_ONLY)}
    web = docs[("production", "web")]["spec"]
    sources = [s for r in web["ingress"] for s in r["fromEndpoints"]]
    assert {"matchLabels": {"app": "prometheus", NAMESPACE_KEY: "monitoring"}} in sources
    assert {"matchLabels": {"app": "web", NAMESPACE_KEY: "staging"}} in sources
    # the other half, in the other namespace's policy, names production
    prometheus = docs[("monitoring", "prometheus")]["spec"]
    assert {"matchLabels": {"app": "web", NAMESPACE_KEY: "production"}} in [
        s for r in prometheus["egress"] for s in r.get("toEndpoints", ())
    ]


@pytest.mark.parametrize("example", ["examples/seed/8.3-l7-http.seg", "examples/cilium-l7-fqdn.seg"])
def test_pitfall_8_3_backend_port_8080_carries_exactly_the_two_http_rules(example: str) -> None:
    (policy,) = [d for d in example_documents(example) if d["metadata"]["name"] == "backend"]
    on_8080 = [
        (r, e) for r in policy["spec"]["ingress"] for e in r.get("toPorts", ())
        if any(p["port"] == "8080" for p in e["ports"])
    ]
    assert len(on_8080) == 1, on_8080  # no L4-only rule beside it that would bypass the HTTP rules
    rule, entry = on_8080[0]
    assert rule["fromEndpoints"] == [{"matchLabels": {"app": "frontend"}}]
    assert entry["ports"] == [{"port": "8080", "protocol": "TCP"}]
    assert entry["rules"] == {"http": [{"method": "GET", "path": "/api/.*"}, {"method": "POST", "path": "/api/orders"}]}


def test_http_rule_fields_are_emitted() -> None:
    (api,) = [d for d in program_documents("kitchen-sink") if d["metadata"]["name"] == "api"]
    (rule,) = api["spec"]["ingress"]
    assert rule["toPorts"][0]["rules"]["http"] == [
        {"method": "GET", "path": "/api/.*"},
        {"method": "POST", "path": "/api/orders", "host": r"shop\.example\.com", "headers": ["X-Env: prod"]},
        {"path": "/health"},  # ANY: every method
    ]


# ------------------------------------------------------------------------------------------ semantics

STRIPE = External(ipaddress.ip_address("198.18.0.1"), name="api.stripe.com")
S3 = External(ipaddress.ip_address("198.18.0.2"), name="s3.amazonaws.com")
EVIL = External(ipaddress.ip_address("198.18.0.3"), name="evil.example.com")
GOOGLE_DNS = External(ipaddress.ip_address("8.8.8.8"))
FRONTEND = Pod("production", "frontend", {"app": "frontend"})
BACKEND = Pod("production", "backend", {"app": "backend"})
OTHER = Pod("production", "other", {"app": "other"})
KUBE_DNS = Pod("kube-system", "kube-dns", {"k8s-app": "kube-dns"})
L7_TOPOLOGY = Topology(
    {"production": {}, "kube-system": {}},
    (FRONTEND, BACKEND, OTHER, KUBE_DNS),
    (STRIPE, S3, EVIL, GOOGLE_DNS),
)

L7_CASES = [
    (BACKEND, STRIPE, TCP, 443, True),
    (BACKEND, STRIPE, TCP, 80, False),
    (BACKEND, S3, TCP, 443, True),
    (BACKEND, EVIL, TCP, 443, False),
    (BACKEND, GOOGLE_DNS, TCP, 443, False),
    (BACKEND, KUBE_DNS, UDP, 53, True),
    (BACKEND, KUBE_DNS, TCP, 53, True),
    (FRONTEND, KUBE_DNS, UDP, 53, True),
    (FRONTEND, BACKEND, TCP, 8080, True),  # L4: the HTTP rules refine it in the proxy
    (FRONTEND, BACKEND, TCP, 9090, False),
    (OTHER, BACKEND, TCP, 8080, False),
    (FRONTEND, STRIPE, TCP, 443, False),
    (BACKEND, FRONTEND, TCP, 8080, False),
]


@pytest.mark.parametrize(("src", "dst", "protocol", "port", "allowed"), L7_CASES, ids=lambda v: str(v))
def test_cilium_l7_fqdn_semantics(src: Pod, dst: Any, protocol: Protocol, port: int, allowed: bool) -> None:
    result = output_result("example", "examples/cilium-l7-fqdn.seg")
    conn = Connection(src, dst, protocol, port)
    verdict = CiliumSemantics(documents(result), L7_TOPOLOGY).decide(conn)
    assert verdict.allowed is allowed, f"{conn}: {verdict}"
    # and the program itself means the same
    assert ProgramSemantics(result.program, L7_TOPOLOGY).decide(conn).allowed is allowed


# Cilium's reserved identities, at addresses no program here names (the program's CIDR peers match by
# address; Cilium's CIDR rules never match an identity).
IDENTITIES = tuple(
    External(ipaddress.ip_address(f"fd00:c1::{i + 1}"), identity=f"cilium:{name}")
    for i, name in enumerate(CILIUM_RESERVED)
)


@pytest.mark.parametrize(("kind", "name"), ALL_OUTPUTS)
def test_emitted_policies_mean_what_the_program_means(kind: str, name: str) -> None:
    """Translation validation over the program's own topology, plus a twin of every pod (same labels) in a
    namespace the program never mentions: a selector that lost its namespace would match the twin, one
    that kept the policy's namespace by mistake would miss the peer. Cilium's reserved identities are
    there too: a selector that meant pods but matched them would admit the nodes or isolate Cilium's
    health and Ingress endpoints."""
    result = output_result(kind, name)
    assert result.program is not None
    base = topology_from_program(result.program)
    twins = tuple(Pod("elsewhere", f"twin-{p.namespace}-{p.name}", p.labels) for p in base.pods)
    topology = Topology({**base.namespaces, "elsewhere": {}}, base.pods + twins, base.externals + IDENTITIES)
    cilium = CiliumSemantics(documents(result), topology)
    program = ProgramSemantics(result.program, topology)
    probes = probes_for([result.program], topology)
    mismatches = []
    for src in topology.endpoints:
        for dst in topology.endpoints:
            if src == dst or (isinstance(src, External) and isinstance(dst, External)):
                continue
            for protocol, port in probes:
                conn = Connection(src, dst, protocol, port)
                want, got = program.decide(conn), cilium.decide(conn)
                if want.allowed != got.allowed:
                    mismatches.append(f"{conn}: program {want.allowed}, cilium {got}")
    assert not mismatches, "\n".join(mismatches[:10])


WORLD = External(ipaddress.ip_address("198.51.100.77"))
HEALTH, INGRESS, REMOTE_NODE = (next(i for i in IDENTITIES if i.identity == f"cilium:{n}")
                                for n in ("health", "ingress", "remote-node"))
PLAIN = Pod("production", "plain", {})  # satisfies every negative-only selector below
NEGATIVE_PEERS = [
    "pods[!internal]",
    "pods[tier notin (db)]",
    "namespaces[env notin (prod)]",
    "namespaces[kubernetes.io/metadata.name notin (kube-system)]",
    "pods[!x] in namespaces[kubernetes.io/metadata.name notin (staging)]",
    "all pods in namespaces[kubernetes.io/metadata.name notin (staging)]",
]


@pytest.mark.parametrize("block", ["namespace production", "cluster"])
@pytest.mark.parametrize("peer", NEGATIVE_PEERS)
def test_negative_only_peers_admit_no_reserved_identity(peer: str, block: str) -> None:
    """A peer selector with only NotIn / DoesNotExist requirements means pods: the emitted selector must
    not admit the Internet, the nodes or any other identity of Cilium's that carries no pod labels."""
    if block == "cluster" and peer.startswith("pods[") and " in " not in peer:
        peer += " in all namespaces"  # a cluster block's peers name their namespaces
    text = (f"{block} {{\n  service backend = app=backend\n"
            f"  backend accepts {peer} on 8080\n  backend connects to {peer} on 8080\n}}\n")
    topology = Topology({"production": {}}, (BACKEND, PLAIN), (WORLD, *IDENTITIES))
    cilium = CiliumSemantics(documents(compile_text(text)), topology)
    assert cilium.decide(Connection(PLAIN, BACKEND, TCP, 8080)).allowed  # the peer's pods are admitted
    assert cilium.decide(Connection(BACKEND, PLAIN, TCP, 8080)).allowed
    for other in (WORLD, *IDENTITIES):
        assert not cilium.decide(Connection(other, BACKEND, TCP, 8080)).allowed, other
        assert not cilium.decide(Connection(BACKEND, other, TCP, 8080)).allowed, other


@pytest.mark.parametrize("text", [
    "cluster {\n  isolate\n}\n",
    "cluster including system {\n  isolate\n}\n",
    "cluster namespaces[env notin (dev)] {\n  isolate ingress\n}\n",
    "cluster {\n  service untiered = !tier\n  untiered accepts pods[app=x] in all namespaces on 80\n}\n",
])
def test_clusterwide_isolation_spares_ciliums_own_endpoints(text: str) -> None:
    """A CiliumClusterwideNetworkPolicy's endpointSelector also selects the health and Ingress endpoints
    when nothing in it requires a pod label; default deny there stops the health checks between nodes
    and every request through Cilium's Ingress."""
    topology = Topology({"production": {}}, (PLAIN,), (WORLD, *IDENTITIES))
    cilium = CiliumSemantics(documents(compile_text(text)), topology)
    assert not cilium.decide(Connection(WORLD, PLAIN, TCP, 80)).allowed  # the pods are isolated
    assert not any(cilium.has_side(i) for i in IDENTITIES)
    assert cilium.decide(Connection(REMOTE_NODE, HEALTH, TCP, 4240)).allowed
    assert cilium.decide(Connection(WORLD, INGRESS, TCP, 80)).allowed


def test_clusterwide_selectors_that_mean_pods_say_so() -> None:
    """Structurally, for every output: a clusterwide endpointSelector, and every peer selector of a
    clusterwide policy or that names the namespace key (then Cilium adds no namespace of its own), has
    a positive requirement on a label only pods carry."""
    def positive(sel: Mapping[str, Any]) -> bool:
        return bool(sel.get("matchLabels")) or any(
            e["operator"] in ("In", "Exists") and not e["key"].startswith("reserved:")
            for e in sel.get("matchExpressions") or ())

    for kind, name in ALL_OUTPUTS:
        for doc in output_documents(kind, name):
            if doc["kind"] == CCNP:
                assert positive(doc["spec"]["endpointSelector"]), (name, doc["metadata"]["name"])
            for section, i, rule in rules(doc):
                for sel in selectors(rule):
                    if names_namespace(sel) or doc["kind"] == CCNP:
                        assert positive(sel), (name, where(doc, section, i), sel)


DENY_WINS = {
    "accept-then-deny": ns_block("backend accepts all pods", "backend denies from pods[role=bad]"),
    "deny-then-accept": ns_block("backend denies from pods[role=bad]", "backend accepts all pods"),
}
BAD = Pod("production", "bad", {"role": "bad"})
GOOD = Pod("production", "good", {"role": "good"})
ELSEWHERE = Pod("staging", "good", {"role": "good"})
DENY_TOPOLOGY = Topology({"production": {}, "staging": {}}, (BACKEND, FRONTEND, BAD, GOOD, ELSEWHERE))


@pytest.mark.parametrize("order", sorted(DENY_WINS))
@pytest.mark.parametrize("target", ["cilium", "calico", "program"])
def test_deny_wins_over_allow(order: str, target: str) -> None:
    result = compile_text(DENY_WINS[order], "calico" if target == "calico" else "cilium")
    evaluator: Any
    if target == "cilium":
        evaluator = CiliumSemantics(documents(result), DENY_TOPOLOGY)
    elif target == "calico":
        evaluator = CalicoSemantics(documents(result), DENY_TOPOLOGY)
    else:
        assert result.program is not None
        evaluator = ProgramSemantics(result.program, DENY_TOPOLOGY)
    for protocol, port in ((TCP, 8080), (TCP, 80), (UDP, 53)):
        for src, allowed in ((BAD, False), (GOOD, True), (FRONTEND, True), (ELSEWHERE, False)):
            conn = Connection(src, BACKEND, protocol, port)
            verdict = evaluator.decide(conn)
            assert verdict.allowed is allowed, f"{target}: {conn}: {verdict}"


def test_deny_wins_cilium_objects() -> None:
    (policy,) = documents(compile_text(DENY_WINS["accept-then-deny"]))
    assert policy["spec"]["ingress"] == [{"fromEndpoints": [{}]}]
    assert policy["spec"]["ingressDeny"] == [{"fromEndpoints": [{"matchLabels": {"role": "bad"}}]}]


# ------------------------------------------------------------------------------------------ capabilities

CILIUM_ONLY = {
    "fqdn": "backend connects to fqdn api.example.com on 443",
    "fqdn-pattern": "backend connects to fqdn *.example.com",
    "http": "backend accepts frontend on 8080 http GET /api/.*",
    "http-egress": "frontend connects to backend on 8080 http POST /api/orders",
    "entity": "backend accepts entity world on 443",
    "entity-egress": "backend connects to entity kube-apiserver on 6443",
}


@pytest.mark.parametrize("case", sorted(CILIUM_ONLY))
@pytest.mark.parametrize("target", ["vanilla", "calico"])
def test_cilium_only_statements_are_unsupported_elsewhere(target: str, case: str, netdsl, tmp_path: Path) -> None:
    path = write(tmp_path, ns_block("allow dns", CILIUM_ONLY[case]))
    result, diags = run_json(netdsl, "compile", "--target", target, path)
    assert result.exit_code == 1
    assert result.stdout == ""
    errors = [d for d in diags if d["severity"] == "error"]
    assert errors and all(d["code"] == "unsupported" for d in errors), errors
    assert {d["line"] for d in errors} == {5}
    assert all(d["hint"] == "targets that can: cilium" for d in errors), errors
    assert all(f"target `{target}` cannot express" in d["message"] for d in errors)
    # the same program compiles for cilium
    ok = netdsl("compile", "--target", "cilium", path)
    assert ok.exit_code == 0, ok.stderr


def test_unsupported_text_diagnostics(netdsl, tmp_path: Path) -> None:
    path = write(tmp_path, ns_block("allow dns", *CILIUM_ONLY.values()))
    result = netdsl("compile", "--target", "vanilla", path)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("[unsupported]") == len(CILIUM_ONLY)
    assert result.stderr.count("targets that can: cilium") == len(CILIUM_ONLY)
    for line in range(5, 5 + len(CILIUM_ONLY)):
        assert f"app.seg:{line}:3: error: target `vanilla` cannot express" in result.stderr


CALICO_ONLY_PROGRAMS = {
    # a pass is written in a tier (outside tiers it is an error on every target: pass-outside-tier)
    "pass": ("tier security order 100 {\n  namespace production {\n"
             "    all pods passes from cidr 10.0.0.0/8\n  }\n}\n", {1, 3}),
    "pass-egress": ("tier security order 100 {\n  namespace production {\n"
                    "    all pods pass to cidr 10.0.0.0/8 on 443\n  }\n}\n", {1, 3}),
    "tier": (
        "tier security order 100 {\n  namespace production {\n"
        "    all pods denies from cidr 192.0.2.0/24\n  }\n}\n",
        {1, 3},
    ),
}


@pytest.mark.parametrize("case", sorted(CALICO_ONLY_PROGRAMS))
def test_calico_only_statements_are_unsupported_on_cilium(case: str, netdsl, tmp_path: Path) -> None:
    text, lines = CALICO_ONLY_PROGRAMS[case]
    path = write(tmp_path, text)
    result, diags = run_json(netdsl, "compile", "--target", "cilium", path)
    assert result.exit_code == 1
    assert result.stdout == ""
    errors = [d for d in diags if d["severity"] == "error"]
    assert errors and all(d["code"] == "unsupported" for d in errors), errors
    assert {d["line"] for d in errors} == lines
    assert all(d["hint"] == "targets that can: calico" for d in errors), errors
    assert netdsl("compile", "--target", "calico", path).exit_code == 0


# ------------------------------------------------------------------------------------------ --widen

WIDEN_FQDN = ns_block("allow dns", "backend connects to fqdn api.example.com on 443")
WIDEN_HTTP = ns_block("allow dns", "backend accepts frontend on 8080 http GET /api/.*, POST /api/orders")
WIDEN_BOTH = ns_block(
    "allow dns",
    "backend, frontend connects to fqdn api.example.com, fqdn *.example.org on 443",
    "backend accepts frontend on 8080 http GET /api/.*",
)


def _policy(out: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(out) if d and d["metadata"]["name"] == name]
    return doc


def test_widen_fqdn_on_vanilla(netdsl, tmp_path: Path) -> None:
    path = write(tmp_path, WIDEN_FQDN)
    refused = netdsl("compile", "--target", "vanilla", path)
    assert refused.exit_code == 1 and refused.stdout == "" and "[unsupported]" in refused.stderr
    result, diags = run_json(netdsl, "compile", "--target", "vanilla", "--widen", path)
    assert result.exit_code == 0, result.stderr
    assert [(d["code"], d["line"]) for d in diags if d["code"] == "widened"] == [("widened", 5)]
    assert all(d["severity"] == "warning" for d in diags)
    backend = _policy(result.stdout, "backend")
    assert "api.example.com" in backend["metadata"]["annotations"]["netdsl.dev/widened"]
    assert backend["metadata"]["annotations"]["netdsl.dev/widened"].startswith(f"{path}:5: ")
    assert {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
        "ports": [{"protocol": "TCP", "port": 443}],
    } in backend["spec"]["egress"]
    # the DNS lookups the FQDN needed are still there, and nothing else is widened
    assert "netdsl.dev/widened" not in _policy(result.stdout, "all-pods")["metadata"]["annotations"]


def test_widen_http_on_vanilla(netdsl, tmp_path: Path) -> None:
    path = write(tmp_path, WIDEN_HTTP)
    assert netdsl("compile", "--target", "vanilla", path).exit_code == 1
    result, diags = run_json(netdsl, "compile", "--target", "vanilla", "--widen", path)
    assert result.exit_code == 0, result.stderr
    assert [(d["code"], d["line"]) for d in diags] == [("widened", 5)]
    backend = _policy(result.stdout, "backend")
    assert backend["spec"]["ingress"] == [{
        "from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
        "ports": [{"protocol": "TCP", "port": 8080}],
    }]
    assert "HTTP rules" in backend["metadata"]["annotations"]["netdsl.dev/widened"]


@pytest.mark.parametrize("target", ["vanilla", "calico"])
def test_widen_warns_once_per_statement(target: str, netdsl, tmp_path: Path) -> None:
    path = write(tmp_path, WIDEN_BOTH)
    result, diags = run_json(netdsl, "compile", "--target", target, "--widen", path)
    assert result.exit_code == 0, result.stderr
    assert sorted(d["line"] for d in diags if d["code"] == "widened") == [5, 6]
    for name in ("backend", "frontend"):  # both subjects of line 5 are widened, one warning for them
        assert f"{path}:5: " in _policy(result.stdout, name)["metadata"]["annotations"]["netdsl.dev/widened"]
    assert netdsl("compile", "--target", target, path).exit_code == 1


@pytest.mark.parametrize("source", [*EXAMPLES, *(f"program:{p}" for p in PROGRAMS), "program:widen-both"])
def test_widen_changes_nothing_on_cilium(source: str, netdsl, tmp_path: Path) -> None:
    if source.startswith("program:"):
        name = source.removeprefix("program:")
        source = write(tmp_path, WIDEN_BOTH if name == "widen-both" else PROGRAMS[name])
    plain = netdsl("compile", "--target", "cilium", source)
    widened = netdsl("compile", "--target", "cilium", "--widen", source)
    assert plain.exit_code == widened.exit_code == 0, widened.stderr
    assert widened.stdout_bytes == plain.stdout_bytes
    assert widened.stderr == plain.stderr and "[widened]" not in widened.stderr


# ------------------------------------------------------------------------------------------ language errors

LANGUAGE_ERRORS = {
    # statement -> (code, column of the error, text in the message)
    "fqdn-ingress": ("backend accepts fqdn api.example.com on 443", "conflict", 19, "only be a destination"),
    "http-deny": ("backend denies from frontend on 8080 http GET /x", "conflict", 45, "deny or pass"),
    "http-no-ports": ("backend accepts frontend http GET /x", "conflict", 33, "all TCP"),
    "http-udp": ("backend accepts frontend on 53/udp http GET /x", "conflict", 43, "all TCP"),
    "http-mixed": ("backend accepts frontend on 8080, 53/udp http GET /x", "conflict", 49, "all TCP"),
    "http-regex": ("backend accepts frontend on 8080 http GET /api/(.*", "invalid-http", 45, "regular expression"),
    "http-host-regex": (
        'backend accepts frontend on 8080 http GET /x host "[a-"', "invalid-http", 53, "regular expression"
    ),
    "http-header": (
        'backend accepts frontend on 8080 http GET /x header "X Bad: 1"', "invalid-http", 55, "invalid header"
    ),
    "fqdn-empty-label": ("backend connects to fqdn api..example.com on 443", "invalid-name", 28, "empty label"),
    "fqdn-bad-label": ("backend connects to fqdn api-.example.com on 443", "invalid-name", 28, "invalid DNS name"),
    "fqdn-long-label": (f"backend connects to fqdn {'a' * 64}.com on 443", "invalid-name", 28, "63"),
    "entity-typo": ("backend connects to entity wolrd", "unknown-name", 30, "unknown entity"),
}


@pytest.mark.parametrize("case", sorted(LANGUAGE_ERRORS))
@pytest.mark.parametrize("target", ["cilium", "vanilla"])
def test_language_errors(case: str, target: str, netdsl, tmp_path: Path) -> None:
    statement, code, column, text = LANGUAGE_ERRORS[case]
    path = write(tmp_path, ns_block("allow dns", statement))
    result, diags = run_json(netdsl, "compile", "--target", target, path)
    assert result.exit_code == 1
    assert result.stdout == ""
    errors = [d for d in diags if d["severity"] == "error"]
    # a language error is reported as such, never as a target's `unsupported`
    assert [(d["code"], d["line"], d["column"]) for d in errors] == [(code, 5, column)], errors
    assert text in errors[0]["message"]


def test_unknown_entity_suggests_the_closest() -> None:
    result = compile_text(ns_block("backend connects to entity wolrd", "backend accepts entity kube-apiservr"))
    errors = [d for d in result.diagnostics if d.is_error]
    assert [(d.code, d.span.line if d.span else 0) for d in errors] == [("unknown-name", 4), ("unknown-name", 5)]
    assert errors[0].hint == "did you mean `world`?"
    assert errors[1].hint == "did you mean `kube-apiserver`?"


def test_fqdn_names_are_normalised() -> None:
    (policy,) = [
        d for d in documents(compile_text(ns_block("backend connects to fqdn API.Example.COM. on 443")))
        if d["metadata"]["name"] == "backend"
    ]
    assert policy["spec"]["egress"][0]["toFQDNs"] == [{"matchName": "api.example.com"}]


# ------------------------------------------------------------------------------------------ fixed bugs


def _errors_at(result: Result, line: int) -> list[str]:
    return [d.code for d in result.diagnostics if d.is_error and d.span is not None and d.span.line == line]


def test_fixed_deny_to_fqdn_is_refused_on_cilium() -> None:
    result = compile_text(ns_block("allow dns", "backend denies to fqdn evil.example.com on 443"))
    assert not result.ok
    assert _errors_at(result, 5)


def test_fixed_http_rules_on_a_whole_protocol_are_refused() -> None:
    result = compile_text(ns_block("backend accepts frontend on tcp http GET /x"))
    assert _errors_at(result, 4) == ["conflict"]


def test_fixed_http_regex_is_checked_as_re2() -> None:
    result = compile_text(ns_block("backend accepts frontend on 8080 http GET /api/(?!admin).*"))
    assert _errors_at(result, 4) == ["invalid-http"]


def test_fixed_header_without_space_after_colon() -> None:
    result = compile_text(ns_block('backend accepts frontend on 8080 http GET /x header "X-Env:prod"'))
    if result.ok:
        (policy,) = [d for d in documents(result) if d["metadata"]["name"] == "backend"]
        headers = policy["spec"]["ingress"][0]["toPorts"][0]["rules"]["http"][0]["headers"]
        assert headers == ["X-Env: prod"]
    else:
        assert _errors_at(result, 4) == ["invalid-http"]


def test_fixed_widen_never_widens_a_deny(netdsl, tmp_path: Path) -> None:
    path = write(tmp_path, ns_block("allow dns", "backend denies to fqdn evil.example.com on 443"))
    result, diags = run_json(netdsl, "compile", "--target", "calico", "--widen", path)
    assert result.exit_code == 1, result.stdout
    # a deny to a DNS name is refused by the language itself (no target can follow DNS answers in a deny)
    assert [d["code"] for d in diags if d["severity"] == "error"] == ["conflict"]
    assert not [d for d in diags if d["code"] == "widened"]


def test_objects_holding_a_dollar_are_protected_from_flux_substitution() -> None:
    """Flux's post-build substitution would rewrite `$` in an HTTP path regex; such objects (and only
    those) carry kustomize.toolkit.fluxcd.io/substitute: disabled."""
    from netdsl.compiler import check_files, compile_checked
    from netdsl.source import SourceFile

    text = ("namespace shop {\n  service api = app=api\n  service web = app=web\n  service db = app=db\n"
            '  api accepts web on 8080 http GET "^/api/v1/items$"\n  db accepts api on 5432\n}\n')
    result = compile_checked(check_files([SourceFile("flux.seg", text)]), "cilium")
    assert result.ok, result.diagnostics
    marked = {m.name: (m.body["metadata"]["annotations"].get("kustomize.toolkit.fluxcd.io/substitute"), m.text)
              for m in result.manifests}
    assert marked["api"][0] == "disabled" and "kustomize.toolkit.fluxcd.io/substitute: disabled" in marked["api"][1]
    assert marked["db"][0] is None


# ------------------------------------------------------------------------------------------ isolate for


def test_isolate_for_is_default_deny_with_the_services_endpoint_selector() -> None:
    objects = documents(compile_text("namespace shop {\n  service web = app=web\n  isolate ingress for web\n}\n"
                                     "cluster {\n  service db = !app\n  isolate for db\n}\n"))
    named = {o["metadata"]["name"]: o for o in objects}
    assert named["isolate-ingress-web"]["spec"] == {
        "endpointSelector": {"matchLabels": {"app": "web"}}, "enableDefaultDeny": {"ingress": True},
        "ingress": [{}]}
    clusterwide = named["cluster-isolate-db"]
    assert clusterwide["kind"] == "CiliumClusterwideNetworkPolicy"
    assert clusterwide["spec"]["enableDefaultDeny"] == {"ingress": True, "egress": True}
    # a negative-only selector also says it means pods (Cilium's own identities carry no pod labels)
    expressions = clusterwide["spec"]["endpointSelector"]["matchExpressions"]
    assert {"key": "app", "operator": "DoesNotExist"} in expressions
    assert {"key": "k8s:io.kubernetes.pod.namespace", "operator": "Exists"} in expressions
