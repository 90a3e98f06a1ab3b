"""netdsl/backends/calico.py: every example compiles to its golden file and validates against the pinned
upstream schemas (also with --staged and --calico-version 3.31); the rendered YAML reads back as exactly
the manifest bodies; and the seed's Calico pitfalls (§8.1 `selector: all()` isolating kube-system, §8.2 a
tier without a way on black-holing traffic, `<tier>.<name>` naming before Calico 3.32) are checked on
the emitted objects with `netdsl.semantics.calico.CalicoSemantics` over hand-built clusters.

Regenerate the golden files with `NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/backends/test_calico.py`
and review the diff.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from netdsl.backends import Options, get_backend
from netdsl.compiler import Result, check, compile_paths, stream
from netdsl.diagnostics import Diagnostic
from netdsl.ir import Protocol
from netdsl.semantics.calico import CalicoSemantics
from netdsl.semantics.model import Connection, External, Pod, Topology
from netdsl.semantics.program import ProgramSemantics
from tests.backends.golden import check_golden, stray_golden_files

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "calico"
ALL_EXAMPLES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "examples").rglob("*.seg"))


def beyond_calico(example: str) -> list[Diagnostic]:
    """The `unsupported` errors the Calico target reports for an example (other targets' features: FQDN,
    L7 HTTP). Decided from the program's needs, not from whether compiling happens to succeed."""
    result = check([str(REPO / example)])
    assert result.program is not None, [str(d) for d in result.diagnostics]
    return get_backend("calico").unsupported(result.program)


EXAMPLES = [e for e in ALL_EXAMPLES if not beyond_calico(e)]
NOT_FOR_CALICO = [e for e in ALL_EXAMPLES if e not in EXAMPLES]

API = "projectcalico.org/v3"
POLICY_KINDS = {"NetworkPolicy", "GlobalNetworkPolicy"}
CALICO_KINDS = {"Tier", "GlobalNetworkSet", *POLICY_KINDS}
STAGED_KINDS = {"StagedNetworkPolicy", "StagedGlobalNetworkPolicy"}
SYSTEM = ("calico-apiserver", "calico-system", "kube-node-lease", "kube-public", "kube-system", "tigera-operator")
# negative only: `has(...)` keeps host endpoints and network sets (no namespace labels) out
NOT_SYSTEM = (
    "has(projectcalico.org/name) && projectcalico.org/name not in {" + ", ".join(f"'{n}'" for n in SYSTEM) + "}"
)
TCP, UDP = Protocol.TCP, Protocol.UDP


def golden_path(example: str) -> Path:
    """examples/seed/8.1-x.seg -> tests/golden/calico/examples__seed__8.1-x.yaml"""
    return GOLDEN / (example.removesuffix(".seg").replace("/", "__") + ".yaml")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    # netdsl.dev/source annotations and rule comments name paths relative to the working directory
    monkeypatch.chdir(REPO)


# ------------------------------------------------------------------------------------------- helpers


def options(**extra: Any) -> Options:
    return Options({"staged": extra.get("staged", False), "calico_version": extra.get("version", "3.32")})


def compile_text(text: str, target: str = "calico", **extra: Any) -> Result:
    """Compile a program given as text (it reads as `<stdin>`)."""
    return compile_paths(["-"], target, options(**extra), stdin=text.encode())


def compiled(text: str, target: str = "calico", **extra: Any) -> list[dict[str, Any]]:
    result = compile_text(text, target, **extra)
    assert result.ok, [str(d) for d in result.diagnostics if d.is_error]
    return [m.body for m in result.manifests]


def example(path: str, **extra: Any) -> list[dict[str, Any]]:
    result = compile_paths([path], "calico", options(**extra))
    assert result.ok, [str(d) for d in result.diagnostics if d.is_error]
    return [m.body for m in result.manifests]


def without_expectations(path: str) -> str:
    """An example's text without its `expect` lines (they are checked by the compiler for the target)."""
    return "".join(line for line in (REPO / path).read_text().splitlines(keepends=True)
                   if not line.lstrip().startswith("expect "))


def errors(result: Result) -> list[Any]:
    return [d for d in result.diagnostics if d.is_error]


def by_name(objects: Iterable[Mapping[str, Any]], kind: str | None = None) -> dict[str, Mapping[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if kind is None or o["kind"] == kind}


def policies(objects: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [o for o in objects if o["kind"].removeprefix("Staged") in POLICY_KINDS]


def rules(objects: Iterable[Mapping[str, Any]], name: str, direction: str = "ingress") -> list[dict[str, Any]]:
    return list(by_name(objects)[name]["spec"][direction])


def pod(namespace: str, name: str, **labels: str) -> Pod:
    return Pod(namespace, name, {k.replace("_", "-"): v for k, v in labels.items()})


def ip(address: str) -> External:
    return External(ipaddress.ip_address(address))


class Cluster:
    """A hand-built topology and the Calico objects to evaluate on it."""

    def __init__(self, objects: list[dict[str, Any]], namespaces: Mapping[str, Mapping[str, str]],
                 pods: Iterable[Pod], externals: Iterable[str] = ()) -> None:
        self.topology = Topology(dict(namespaces), tuple(pods), tuple(ip(a) for a in externals))
        self.calico = CalicoSemantics(objects, self.topology)

    def endpoint(self, text: str) -> Pod | External:
        found = self.topology.find(text)
        assert found is not None, f"{text} is not in the topology"
        return found

    def allowed(self, src: str, dst: str, port: int, protocol: Protocol = TCP) -> bool:
        return self.calico.decide(Connection(self.endpoint(src), self.endpoint(dst), protocol, port)).allowed


# ------------------------------------------------------------------------------------- golden files


def test_examples_exist() -> None:
    seed = ["1.3-structure", "3.1-allow-from-frontend", "3.2-allow-multiple-sources", "3.3-allow-from-namespace",
            "3.4-allow-from-office", "4.1-allow-egress-to-db", "4.2-allow-external-api", "5.1-default-deny-all",
            "5.2-default-deny-ingress", "5.3-default-allow-dns", "6.1-three-tier", "6.2-microservices",
            "8.1-global-default-deny", "8.2-tiered-security-policy"]
    expected = {"examples/calico-tiers.seg", "examples/three-tier.seg", "examples/microservices.seg"}
    expected |= {f"examples/seed/{name}.seg" for name in seed}
    assert expected <= set(EXAMPLES)


@pytest.mark.parametrize("example", NOT_FOR_CALICO)
def test_examples_beyond_calico_are_refused(example: str) -> None:
    """An example using what only other targets can express is an `unsupported` error at each such
    statement (naming the targets that can), and nothing is emitted."""
    result = compile_paths([example], "calico", options())
    assert not result.ok and not result.manifests
    errs = errors(result)
    assert errs and all(d.code == "unsupported" and d.span is not None for d in errs), errs
    assert {(d.span.line, d.message) for d in errs if d.span} == {
        (d.span.line, d.message) for d in beyond_calico(example) if d.span}
    for d in errs:
        assert d.hint is not None and "calico" not in d.hint.removeprefix("targets that can: ").split(", ")


@pytest.mark.parametrize("example", EXAMPLES)
def test_golden(example: str, netdsl) -> None:
    result = netdsl("compile", "--target", "calico", example)
    assert result.exit_code == 0, result.stderr
    check_golden("calico", example, result.stdout_bytes)


def test_no_stray_golden_files() -> None:
    stray = stray_golden_files("calico", EXAMPLES)
    assert not stray, f"golden files without an example: {stray}"


VARIANTS = {"default": {}, "staged": {"staged": True}, "3.31": {"version": "3.31"}}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("example", EXAMPLES)
def test_rendered_yaml_is_the_body(example: str, variant: str) -> None:
    result = compile_paths([example], "calico", options(**VARIANTS[variant]))
    assert result.ok, result.diagnostics
    assert result.manifests
    kinds = CALICO_KINDS - POLICY_KINDS | STAGED_KINDS if variant == "staged" else CALICO_KINDS
    for m in result.manifests:
        assert m.text.startswith("# Generated by netdsl.")
        assert yaml.safe_load(m.text) == m.body
        assert m.body["apiVersion"] == API and m.body["kind"] in kinds, (m.body["apiVersion"], m.body["kind"])
        assert m.body["metadata"]["name"] == m.name and m.body["metadata"].get("namespace") == m.namespace
        assert (m.namespace is not None) == (m.kind.removeprefix("Staged") == "NetworkPolicy")
    assert list(yaml.safe_load_all(stream(result.manifests))) == [m.body for m in result.manifests]


# Programs of this file whose output the schemas must accept too (they use what the examples do not:
# network sets, notNets, port ranges, named ports, SCTP, deny/pass ordering, several tiers).
GLOBAL_NETWORK_SETS = """\
cidrs office = 203.0.113.0/24 except (203.0.113.100/32, 203.0.113.128/26)
cidrs lab = 10.0.0.0/8 except 10.1.0.0/16
namespace production {
  service web = app=web
  service api = app=api
  web accepts office on 443
  api accepts office on 8443
  api accepts lab on 9000
}
cluster {
  all pods connects to office on 22
}
"""
SELECTORS = """\
namespace monitoring labels team=obs
namespace production {
  service a = app=x
  service b = k in (a, b)
  service c = k notin (a)
  service d = k
  service e = !k
  service f = app=x, tier in (a, b), !legacy
  a accepts namespace monitoring on 80
  b accepts all pods on 8000-9000
  c accepts pods[app=y] on http, 53/udp, 53, 60-70, 7/sctp
  d accepts namespaces[team=obs] on udp, 443
  e accepts pods[app=y] in namespaces[kubernetes.io/metadata.name in (monitoring, staging)]
  f accepts all pods in all namespaces
  f connects to namespace monitoring on udp, 53/udp
}
"""
ORDERED = """\
tier security order 100 {
  namespace production {
    service web = app=web
    service api = app=api
    all pods denies from cidr 192.0.2.0/24
    web, api passes from namespace monitoring
    web allows from namespace ingress-nginx on 80
    all pods denies from cidr 203.0.113.0/24
  }
}
tier platform order 200 {
  namespace production {
    api accepts namespace monitoring on 9090
  }
}
"""
EXTRA_PROGRAMS = {"network-sets": GLOBAL_NETWORK_SETS, "selectors": SELECTORS, "ordered": ORDERED}


def test_examples_validate_against_schemas(shared: Path, tmp_path: Path) -> None:
    """Strict (no --loose): a field the upstream CRD does not define is an error."""
    tool = shared / "tools" / "validate-manifests"
    if not shared.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{shared} is missing (CI must have ../shared)")
        pytest.skip(f"{shared} does not exist")
    files = []
    for variant, extra in VARIANTS.items():
        for example in EXAMPLES:
            result = compile_paths([example], "calico", options(**extra))
            assert result.ok, (example, variant, result.diagnostics)
            out = tmp_path / f"{variant}--{golden_path(example).name}"
            out.write_text(stream(result.manifests), encoding="utf-8")
            files.append(str(out))
        for name, text in EXTRA_PROGRAMS.items():
            result = compile_text(text, **extra)
            assert result.ok, (name, variant, result.diagnostics)
            out = tmp_path / f"{variant}--{name}.yaml"
            out.write_text(stream(result.manifests), encoding="utf-8")
            files.append(str(out))
    # vanilla --staged emits Calico's StagedKubernetesNetworkPolicy
    for example in ("examples/three-tier.seg", "examples/microservices.seg"):
        result = compile_text(without_expectations(example), "vanilla", staged=True)
        assert result.ok, result.diagnostics
        out = tmp_path / f"vanilla-staged--{golden_path(example).name}"
        out.write_text(stream(result.manifests), encoding="utf-8")
        files.append(str(out))
    proc = subprocess.run([sys.executable, str(tool), *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 problems" in proc.stdout, proc.stdout


# --------------------------------------------------------------------- semantics: the seed's pitfalls

TIERS_EXAMPLE = "examples/calico-tiers.seg"
TIERS_NAMESPACES = {"production": {}, "kube-system": {}, "ingress-nginx": {}, "team-x": {"team": "x"}}
TIERS_PODS = (
    pod("production", "frontend", app="frontend"),
    pod("production", "backend", app="backend"),
    pod("production", "other"),
    pod("kube-system", "kube-dns", k8s_app="kube-dns"),
    pod("kube-system", "other-system"),
    pod("ingress-nginx", "controller", app="ingress-nginx"),  # a namespace the program never declares
    pod("team-x", "app", app="x"),  # another non-system namespace
)
BAD, ALSO_BAD, GOOD, UPSTREAM_DNS = "192.0.2.10", "203.0.113.5", "198.51.100.7", "8.8.8.8"


def tiers_cluster(objects: list[dict[str, Any]] | None = None) -> Cluster:
    return Cluster(objects if objects is not None else example(TIERS_EXAMPLE), TIERS_NAMESPACES, TIERS_PODS,
                   (BAD, ALSO_BAD, GOOD, UPSTREAM_DNS))


def test_calico_tiers_application_flows() -> None:
    c = tiers_cluster()
    assert c.allowed("production/frontend", "production/backend", 8080)
    assert not c.allowed("production/frontend", "production/backend", 9999)
    assert not c.allowed("production/other", "production/backend", 8080)
    assert c.allowed(GOOD, "production/frontend", 80)
    assert not c.allowed(GOOD, "production/backend", 8080)
    # `anywhere` is a broad peer: production's statement never opens the egress of other isolated
    # namespaces (their owners did not allow it); their pods stay out until they say so themselves
    assert not c.allowed("ingress-nginx/controller", "production/frontend", 80)
    assert not c.allowed("team-x/app", "production/frontend", 80)
    assert c.allowed("production/other", "production/frontend", 80)  # its own namespace: the other half


def test_calico_tiers_security_tier_denies_known_bad_networks() -> None:
    c = tiers_cluster()
    for bad in (BAD, ALSO_BAD):
        assert not c.allowed(bad, "production/backend", 8080)
        assert not c.allowed(bad, "production/frontend", 80)  # although frontend accepts anywhere on 80


def test_calico_tiers_spares_the_system_namespaces() -> None:
    """§8.1: the cluster-wide isolation must not isolate kube-system; every pod keeps DNS."""
    c = tiers_cluster()
    clients = [str(p) for p in TIERS_PODS if str(p) != "kube-system/kube-dns"]
    for client in clients:
        for protocol in (UDP, TCP):
            assert c.allowed(client, "kube-system/kube-dns", 53, protocol), (client, protocol)
    # kube-system is not isolated at all
    assert c.allowed("kube-system/other-system", "kube-system/kube-dns", 9999)
    assert c.allowed("kube-system/kube-dns", "kube-system/other-system", 9999)
    assert c.allowed("kube-system/kube-dns", UPSTREAM_DNS, 53, UDP)
    assert c.allowed(GOOD, "kube-system/other-system", 443)


def test_calico_tiers_isolates_the_other_namespaces() -> None:
    c = tiers_cluster()
    # reached on a port no statement allows: denied by the cluster-wide isolation (ingress side)
    assert not c.allowed("kube-system/other-system", "team-x/app", 9999)
    assert not c.allowed(GOOD, "team-x/app", 80)
    assert not c.allowed("production/frontend", "team-x/app", 80)
    # egress isolated too
    assert not c.allowed("team-x/app", UPSTREAM_DNS, 53, UDP)
    assert not c.allowed("production/frontend", GOOD, 443)
    assert not c.allowed("team-x/app", "kube-system/other-system", 9999)


def test_calico_tiers_agrees_with_the_program_semantics() -> None:
    """The emitted objects allow what the IR means, on this hand-built cluster (every pair and probe)."""
    result = compile_paths([TIERS_EXAMPLE], "calico", options())
    assert result.ok and result.program is not None
    c = tiers_cluster([m.body for m in result.manifests])
    program = ProgramSemantics(result.program, c.topology)
    mismatches = []
    for src in c.topology.endpoints:
        for dst in c.topology.endpoints:
            if src == dst or (isinstance(src, External) and isinstance(dst, External)):
                continue
            for protocol, port in ((TCP, 80), (TCP, 8080), (UDP, 53), (TCP, 53), (TCP, 9999)):
                conn = Connection(src, dst, protocol, port)
                if program.decide(conn).allowed != c.calico.decide(conn).allowed:
                    mismatches.append(str(conn))
    assert not mismatches


def test_a_tier_is_always_emitted_with_a_default_action() -> None:
    for path in EXAMPLES:
        for tier in (o for o in example(path) if o["kind"] == "Tier"):
            assert tier["spec"]["defaultAction"] == "Pass", (path, tier)
    objects = compiled(
        "tier t order 10 otherwise deny {\n namespace p {\n  all pods denies from cidr 192.0.2.0/24\n }\n}\n"
        "tier u order 20 otherwise pass {\n namespace p {\n  all pods allows from anywhere\n }\n}\n"
    )
    tiers = by_name(objects, "Tier")
    assert tiers["t"]["spec"] == {"order": 10, "defaultAction": "Deny"}
    assert tiers["u"]["spec"] == {"order": 20, "defaultAction": "Pass"}


def test_seed_8_2_tier_otherwise_deny_black_holes_what_it_does_not_decide() -> None:
    """§8.2: with `otherwise deny` (the article's tier, which has no way on) the security tier drops
    frontend -> backend; netdsl's default (Pass) is what keeps it working."""
    # the example's own `expect` lines (if any) assert the Pass behaviour: leave them out of the variant
    text = without_expectations(TIERS_EXAMPLE)
    header = "tier security order 100 {"
    assert header in text
    objects = compiled(text.replace(header, "tier security order 100 otherwise deny {"))
    assert by_name(objects, "Tier")["security"]["spec"]["defaultAction"] == "Deny"
    blackholed = tiers_cluster(objects)
    assert not blackholed.allowed("production/frontend", "production/backend", 8080)
    assert not blackholed.allowed(GOOD, "production/frontend", 80)
    # outside production the security tier does not apply
    assert blackholed.allowed("production/frontend", "kube-system/kube-dns", 53, UDP)
    passing = tiers_cluster()
    assert passing.allowed("production/frontend", "production/backend", 8080)
    assert passing.allowed(GOOD, "production/frontend", 80)


def test_seed_8_2_example() -> None:
    objects = example("examples/seed/8.2-tiered-security-policy.seg")
    assert by_name(objects, "Tier")["security"]["spec"] == {"order": 100, "defaultAction": "Pass"}
    (policy,) = policies(objects)
    assert policy["metadata"]["namespace"] == "production"
    assert policy["spec"]["tier"] == "security" and policy["spec"]["selector"] == "all()"
    assert policy["spec"]["ingress"] == [
        {"action": "Deny", "source": {"nets": ["192.0.2.0/24"]}},
        {"action": "Deny", "source": {"nets": ["203.0.113.0/24"]}},
    ]
    c = Cluster(objects, {"production": {}}, [pod("production", "a"), pod("production", "b")], (BAD, GOOD))
    assert not c.allowed(BAD, "production/a", 80)
    assert c.allowed(GOOD, "production/a", 80)
    assert c.allowed("production/b", "production/a", 80)


def test_seed_8_1_example() -> None:
    objects = example("examples/seed/8.1-global-default-deny.seg")
    isolation = by_name(objects, "GlobalNetworkPolicy")["default-deny"]
    assert isolation["spec"]["namespaceSelector"] == NOT_SYSTEM
    assert isolation["spec"]["selector"] == "all()"
    assert isolation["spec"]["types"] == ["Ingress", "Egress"]
    c = tiers_cluster(objects)
    assert c.allowed("production/frontend", "kube-system/kube-dns", 53, UDP)
    assert c.allowed("team-x/app", "kube-system/kube-dns", 53, TCP)
    assert not c.allowed("team-x/app", "kube-system/kube-dns", 80)
    assert not c.allowed("production/frontend", "production/backend", 8080)
    assert c.allowed("kube-system/other-system", "kube-system/kube-dns", 9999)


# ------------------------------------------------------------------------------------------- naming


def tiered_names(objects: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
    return {p["metadata"]["name"]: p["spec"].get("tier") for p in policies(objects)}


def test_before_3_32_tiered_policies_are_named_tier_dot_name() -> None:
    for path in ("examples/seed/8.2-tiered-security-policy.seg", TIERS_EXAMPLE):
        old = tiered_names(example(path, version="3.31"))
        new = tiered_names(example(path, version="3.32"))
        default = tiered_names(example(path))
        assert new == default
        assert any(tier is not None for tier in old.values())
        for name, tier in old.items():
            if tier is not None:
                assert name.startswith(f"{tier}."), name
                # from 3.32 the name is kept as written: netdsl writes <tier>-<name> (unique across tiers)
                assert f"{tier}-" + name.removeprefix(f"{tier}.") in new
            else:  # default-tier policies never get a prefix
                assert name in new
                assert not name.startswith(("security.", "default."))
        for name, tier in new.items():
            assert tier is None or not name.startswith(f"{tier}."), name
        assert len(old) == len(new)
    # the Tier object itself is never renamed
    assert set(by_name(example(TIERS_EXAMPLE, version="3.31"), "Tier")) == {"security"}


def tier_line() -> int:
    lines = (REPO / TIERS_EXAMPLE).read_text().splitlines()
    (number,) = [i for i, line in enumerate(lines, 1) if line.startswith("tier security order 100")]
    return number


def test_tiers_before_calico_3_29_are_unsupported() -> None:
    result = compile_paths([TIERS_EXAMPLE], "calico", options(version="3.28"))
    assert not result.manifests
    (err,) = errors(result)
    assert err.code == "unsupported"
    assert err.span is not None and (err.span.path, err.span.line) == (TIERS_EXAMPLE, tier_line())
    assert "3.28" in err.message and "tier" in err.message
    # without tiers, 3.28 is fine
    assert compile_paths(["examples/three-tier.seg"], "calico", options(version="3.28")).ok
    assert compile_paths(["examples/seed/8.1-global-default-deny.seg"], "calico", options(version="3.28")).ok


def test_tiers_cli_error_names_the_tier_line(netdsl) -> None:
    result = netdsl("compile", "--target", "calico", "--calico-version", "3.28", TIERS_EXAMPLE)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"{TIERS_EXAMPLE}:{tier_line()}:" in result.stderr and "[unsupported]" in result.stderr


@pytest.mark.parametrize("target", ["calico", "vanilla"])
def test_staged_before_calico_3_30_is_an_error(target: str, netdsl) -> None:
    text = without_expectations("examples/three-tier.seg")
    result = compile_text(text, target, staged=True, version="3.29")
    assert not result.ok and not result.manifests
    assert [d.code for d in errors(result)] == ["unsupported"]
    cli = netdsl("compile", "--target", target, "--staged", "--calico-version", "3.29", "-", input=text)
    assert cli.exit_code == 1 and cli.stdout == ""
    assert "[unsupported]" in cli.stderr
    assert compile_text(text, target, staged=True, version="3.30").ok


def test_staged_calico_kinds() -> None:
    for text in ((REPO / TIERS_EXAMPLE).read_text(), GLOBAL_NETWORK_SETS):
        enforced = compiled(text)
        staged = compiled(text, staged=True)
        assert len(enforced) == len(staged)
        for before, after in zip(enforced, staged, strict=True):
            assert after["apiVersion"] == API and after["metadata"] == before["metadata"]
            if before["kind"] in POLICY_KINDS:
                assert after["kind"] == "Staged" + before["kind"]
                assert after["spec"] == {"stagedAction": "Set", **before["spec"]}
                assert next(iter(after["spec"])) == "stagedAction"
            else:
                assert before["kind"] in ("Tier", "GlobalNetworkSet")
                assert after == before
        assert {o["kind"] for o in staged} >= {"StagedNetworkPolicy", "StagedGlobalNetworkPolicy"}


def test_staged_vanilla_is_a_staged_kubernetes_network_policy() -> None:
    text = without_expectations("examples/three-tier.seg")
    enforced, staged = compiled(text, "vanilla"), compiled(text, "vanilla", staged=True)
    assert enforced and len(enforced) == len(staged)
    for before, after in zip(enforced, staged, strict=True):
        assert before["apiVersion"] == "networking.k8s.io/v1" and before["kind"] == "NetworkPolicy"
        assert after["apiVersion"] == API and after["kind"] == "StagedKubernetesNetworkPolicy"
        assert after["metadata"] == before["metadata"]
        assert after["spec"] == {"stagedAction": "Set", **before["spec"]}


def test_staged_vanilla_with_expectations(netdsl) -> None:
    text = "\n".join([
        "namespace production {",
        "  isolate ingress",
        "  service web = app=web",
        "  web accepts namespace monitoring on 80",
        "}",
        "expect 198.51.100.7 -> production/web:80 denied",
        "",
    ])
    assert compile_text(text, "vanilla").ok
    result = netdsl("compile", "--target", "vanilla", "--staged", "-", input=text)
    assert result.exit_code == 0, result.stderr
    assert "kind: StagedKubernetesNetworkPolicy" in result.stdout


def object_keys(objects: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str | None, str]]:
    return [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]


@pytest.mark.parametrize("version", ["3.31", "3.32"])
@pytest.mark.parametrize("example_path", EXAMPLES)
def test_object_names_are_unique(example_path: str, version: str) -> None:
    keys = object_keys(example(example_path, version=version))
    assert len(keys) == len(set(keys))


# The same workload or statement in two tiers: with the <tier>. prefix (before 3.32) the names differ.
SAME_SERVICE_IN_A_TIER_AND_THE_DEFAULT_TIER = """\
tier platform order 200 {
  namespace production {
    service web = app=web
    web accepts namespace monitoring on 9090
  }
}
namespace production {
  web accepts namespace ingress-nginx on 80
}
"""
SAME_STATEMENT_IN_TWO_TIERS = """\
tier a order 10 {
  namespace production {
    all pods denies from cidr 192.0.2.0/24
  }
}
tier b order 20 {
  namespace production {
    all pods denies from cidr 192.0.2.0/24
  }
}
"""
CLUSTER_IN_TWO_TIERS = """\
tier a order 10 otherwise deny {
  cluster {
    all pods allows to anywhere on 80
  }
}
tier b order 20 {
  cluster {
    all pods allows to anywhere on 443
  }
}
"""
COLLIDING = {
    "service-in-tier-and-default-tier": SAME_SERVICE_IN_A_TIER_AND_THE_DEFAULT_TIER,
    "statement-in-two-tiers": SAME_STATEMENT_IN_TWO_TIERS,
    "cluster-in-two-tiers": CLUSTER_IN_TWO_TIERS,
}


@pytest.mark.parametrize("program", sorted(COLLIDING))
def test_policy_names_in_different_tiers_are_unique_before_3_32(program: str) -> None:
    keys = object_keys(compiled(COLLIDING[program], version="3.31"))
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("program", sorted(COLLIDING))
def test_policy_names_in_different_tiers_are_unique_from_3_32(program: str) -> None:
    keys = object_keys(compiled(COLLIDING[program], version="3.32"))
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


# -------------------------------------------------------------------------------------------- order


def test_ordered_tier_policies_follow_the_statements() -> None:
    objects = compiled(ORDERED)
    security = [p for p in policies(objects) if p["spec"].get("tier") == "security"]
    orders: dict[int, set[tuple[str, str]]] = {}
    for p in security:
        first_rule = p["spec"]["ingress"][0]
        orders.setdefault(p["spec"]["order"], set()).add((p["spec"]["selector"], first_rule["action"]))
    assert orders == {
        100: {("all()", "Deny")},
        200: {("app == 'web'", "Pass"), ("app == 'api'", "Pass")},
        300: {("app == 'web'", "Allow")},
        400: {("all()", "Deny")},
    }
    deny_100 = next(p for p in security if p["spec"]["order"] == 100)
    deny_400 = next(p for p in security if p["spec"]["order"] == 400)
    assert deny_100["spec"]["ingress"] == [{"action": "Deny", "source": {"nets": ["192.0.2.0/24"]}}]
    assert deny_400["spec"]["ingress"] == [{"action": "Deny", "source": {"nets": ["203.0.113.0/24"]}}]
    # an allow-only tier: one policy per workload, order 1000
    platform = [p for p in policies(objects) if p["spec"].get("tier") == "platform"]
    assert [(p["metadata"]["name"], p["spec"]["order"]) for p in platform] == [("platform-api", 1000)]


def test_allow_only_tier_orders_are_1000() -> None:
    """In a tier whose statements all allow (the default tier included), every policy with rules has order
    1000 and the isolations (no rules) 10000."""
    for path in [*EXAMPLES, "-"]:
        objects = compiled(ORDERED) if path == "-" else example(path)
        tiers: dict[str | None, list[Mapping[str, Any]]] = {}
        for p in policies(objects):
            tiers.setdefault(p["spec"].get("tier"), []).append(p)
        for tier, members in tiers.items():
            actions = {r["action"] for p in members for d in ("ingress", "egress") for r in p["spec"].get(d, ())}
            if actions - {"Allow"}:
                continue
            for p in members:
                has_rules = bool(p["spec"].get("ingress") or p["spec"].get("egress"))
                assert p["spec"]["order"] == (1000 if has_rules else 10000), (path, tier, p["metadata"]["name"])


def test_order_and_names_are_deterministic_across_runs(tmp_path: Path) -> None:
    source = tmp_path / "ordered.seg"
    source.write_text(ORDERED)
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", "from netdsl.cli import main; main()", "compile", "-t", "calico", str(source)],
            capture_output=True, env=env, timeout=60, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.add(proc.stdout)
    assert len(outputs) == 1
    assert compile_text(ORDERED).manifests[0].text == compile_text(ORDERED).manifests[0].text


# ------------------------------------------------------------------------------------- capabilities

NOT_ON_VANILLA = {
    "deny": ("namespace production {\n  all pods denies from cidr 192.0.2.0/24\n}\n", [2], "deny rules"),
    # (a pass outside tiers is an error on every target: pass-outside-tier)
    "pass": ("tier t order 10 {\n  namespace production {\n    all pods passes from cidr 192.0.2.0/24\n  }\n}\n",
             [1, 3], "pass rules"),
    "tier": ("tier t order 10 {\n  namespace production {\n    service web = app=web\n"
             "    web accepts all pods on 80\n  }\n}\n", [1, 4], "policy tiers"),
    "cluster-isolate": ("cluster {\n  isolate\n}\n", [2], "cluster-wide statements"),
    "cluster-rule": ("cluster {\n  allow dns\n}\n", [2], "cluster-wide statements"),
}


@pytest.mark.parametrize("case", sorted(NOT_ON_VANILLA))
def test_calico_only_statements_are_errors_on_vanilla(case: str, netdsl) -> None:
    text, lines, what = NOT_ON_VANILLA[case]
    result = compile_text(text, "vanilla")
    assert not result.manifests
    errs = errors(result)
    assert errs and all(d.code == "unsupported" for d in errs)
    assert sorted({d.span.line for d in errs if d.span}) == lines
    for d in errs:  # other targets (cilium) may be listed too
        assert d.hint is not None and d.hint.startswith("targets that can: ")
        assert "calico" in d.hint.removeprefix("targets that can: ").split(", ")
    assert any(what in d.message for d in errs)
    cli = netdsl("compile", "--target", "vanilla", "-", input=text)
    assert cli.exit_code == 1
    assert cli.stdout == ""
    for line in lines:
        assert f"<stdin>:{line}:" in cli.stderr
    assert "note: targets that can: " in cli.stderr and "calico" in cli.stderr and "[unsupported]" in cli.stderr
    assert compile_text(text, "calico").ok


# ---------------------------------------------------------------------------------------- selectors


def test_selectors_are_rendered_in_calico_syntax() -> None:
    objects = compiled(SELECTORS)
    selectors = {p["metadata"]["name"]: p["spec"]["selector"] for p in policies(objects)}
    assert selectors == {
        "a": "app == 'x'",
        "b": "k in {'a', 'b'}",
        "c": "k not in {'a'}",
        "d": "has(k)",
        "e": "!has(k)",
        "f": "app == 'x' && !has(legacy) && tier in {'a', 'b'}",
    }
    assert all(p["metadata"]["namespace"] == "production" for p in policies(objects))
    assert all(p["kind"] == "NetworkPolicy" for p in policies(objects))
    # a namespace by name: Calico's own projectcalico.org/name label, never kubernetes.io/metadata.name
    assert rules(objects, "a") == [{"action": "Allow", "protocol": "TCP",
                                    "source": {"namespaceSelector": "projectcalico.org/name == 'monitoring'"},
                                    "destination": {"ports": [80]}}]
    # f's egress: the other halves of `b accepts all pods`, `d accepts namespaces[team=obs]` (where
    # production has team=obs) and `f accepts all pods in all namespaces` (f is among those pods and its
    # egress is restricted), then its own statement
    in_production_if_obs = {"namespaceSelector": "projectcalico.org/name == 'production' && team == 'obs'",
                            "selector": "has(k)"}
    assert rules(objects, "f", "egress") == [
        {"action": "Allow", "protocol": "TCP", "destination": {"selector": "k in {'a', 'b'}", "ports": ["8000:9000"]}},
        {"action": "Allow", "protocol": "UDP", "destination": in_production_if_obs},
        {"action": "Allow", "protocol": "TCP", "destination": {**in_production_if_obs, "ports": [443]}},
        {"action": "Allow", "destination": {"selector": "app == 'x' && !has(legacy) && tier in {'a', 'b'}"}},
        {"action": "Allow", "protocol": "UDP",
         "destination": {"namespaceSelector": "projectcalico.org/name == 'monitoring'"}},
    ]
    # this namespace: a bare selector; every namespace: all()
    assert rules(objects, "b") == [{"action": "Allow", "protocol": "TCP", "source": {"selector": "all()"},
                                    "destination": {"ports": ["8000:9000"]}}]
    assert rules(objects, "f") == [{"action": "Allow", "source": {"namespaceSelector": "all()"}}]
    # namespaces by labels; kubernetes.io/metadata.name becomes projectcalico.org/name
    assert [r.get("source") for r in rules(objects, "d")] == [{"namespaceSelector": "team == 'obs'"}] * 2
    assert rules(objects, "e") == [{"action": "Allow", "source": {
        "namespaceSelector": "projectcalico.org/name in {'monitoring', 'staging'}", "selector": "app == 'y'"}}]
    assert "kubernetes.io/metadata.name" not in repr(objects)


def test_ports_one_rule_per_protocol() -> None:
    objects = compiled(SELECTORS)
    c_rules = rules(objects, "c")
    assert [(r["protocol"], r["destination"]["ports"]) for r in c_rules] == [
        ("TCP", ["http", 53, "60:70"]),  # named port, int, range as "a:b"
        ("UDP", [53]),
        ("SCTP", [7]),
    ]
    for r in c_rules:
        assert r["source"] == {"selector": "app == 'y'"}
        assert all(isinstance(p, int) or p == "http" or p == "60:70" for p in r["destination"]["ports"])
    # every UDP port: the protocol without ports; and a TCP port besides
    assert [(r["protocol"], r.get("destination")) for r in rules(objects, "d")] == [
        ("UDP", None), ("TCP", {"ports": [443]})]
    # `udp` (every port) absorbs `53/udp`
    assert rules(objects, "f", "egress")[-1] == {
        "action": "Allow", "protocol": "UDP",
        "destination": {"namespaceSelector": "projectcalico.org/name == 'monitoring'"}}


def test_selectors_mean_what_they_say() -> None:
    objects = compiled(SELECTORS)
    namespaces = {"production": {}, "monitoring": {"team": "obs"}, "staging": {}, "other": {}}
    pods = [
        pod("production", "a", app="x"), pod("production", "b", k="b"), pod("production", "c-unlabelled"),
        pod("production", "c", k="z"), pod("production", "k-a", k="a"),
        pod("production", "y", app="y"), pod("monitoring", "y", app="y"), pod("staging", "y", app="y"),
        pod("other", "y", app="y"), pod("production", "f", app="x", tier="a"),
        pod("production", "f-legacy", app="x", tier="a", legacy="1"),
    ]
    c = Cluster(objects, namespaces, pods)
    assert c.allowed("monitoring/y", "production/a", 80) and not c.allowed("other/y", "production/a", 80)
    assert c.allowed("production/y", "production/b", 8500) and not c.allowed("monitoring/y", "production/b", 8500)
    assert not c.allowed("production/y", "production/b", 9001)
    # c = k notin (a): unlabelled pods too (as in Kubernetes); k=a pods are not c
    assert c.allowed("production/y", "production/c-unlabelled", 60, TCP)
    assert c.allowed("production/y", "production/c", 53, UDP)
    assert not c.allowed("production/y", "production/k-a", 60)
    assert c.allowed("monitoring/y", "production/b", 53, UDP)  # d = has(k): team=obs, any UDP port
    assert not c.allowed("other/y", "production/b", 53, UDP)
    # e = !has(k): app=y pods of monitoring and staging only
    assert c.allowed("staging/y", "production/a", 1234) and c.allowed("monitoring/y", "production/a", 1234)
    assert not c.allowed("other/y", "production/a", 1234) and not c.allowed("production/y", "production/a", 1234)
    assert not c.allowed("staging/y", "production/b", 1234)  # b has the label k
    # f: everything from any namespace, but not the legacy pods (they fall back to e: !has(k))
    assert c.allowed("other/y", "production/f", 5)
    assert not c.allowed("other/y", "production/f-legacy", 5)


# --------------------------------------------------------------------------------- GlobalNetworkSet


def addresses(nets: Iterable[str]) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return {a for n in nets for a in ipaddress.ip_network(n)}


def test_a_cidr_set_used_twice_is_one_global_network_set() -> None:
    objects = compiled(GLOBAL_NETWORK_SETS)
    sets = [o for o in objects if o["kind"] == "GlobalNetworkSet"]
    assert [s["metadata"]["name"] for s in sets] == ["office"]
    (office,) = sets
    assert office["metadata"]["labels"]["netdsl.dev/network-set"] == "office"
    assert "namespace" not in office["metadata"]
    nets = office["spec"]["nets"]
    expected = (set(ipaddress.ip_network("203.0.113.0/24"))
                - set(ipaddress.ip_network("203.0.113.100/32")) - set(ipaddress.ip_network("203.0.113.128/26")))
    assert addresses(nets) == expected
    assert sum(ipaddress.ip_network(n).num_addresses for n in nets) == len(expected)  # no overlaps
    ref = {"namespaceSelector": "global()", "selector": "netdsl.dev/network-set == 'office'"}
    assert rules(objects, "web") == [{"action": "Allow", "protocol": "TCP", "source": ref,
                                      "destination": {"ports": [443]}}]
    assert rules(objects, "api")[0]["source"] == ref
    # in a GlobalNetworkPolicy too: the selector alone would also match pods carrying the set's label
    assert rules(objects, "cluster-all-pods", "egress") == [{"action": "Allow", "protocol": "TCP", "destination": {
        "namespaceSelector": "global()", "selector": "netdsl.dev/network-set == 'office'", "ports": [22]}}]


def test_a_cidr_set_used_once_is_inline() -> None:
    objects = compiled(GLOBAL_NETWORK_SETS)
    assert rules(objects, "api")[1] == {"action": "Allow", "protocol": "TCP",
                                        "source": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]},
                                        "destination": {"ports": [9000]}}
    seed = example("examples/seed/3.4-allow-from-office.seg")
    assert not [o for o in seed if o["kind"] == "GlobalNetworkSet"]
    assert rules(seed, "admin-panel")[0]["source"] == {"nets": ["203.0.113.0/24"], "notNets": ["203.0.113.100/32"]}


def test_global_network_set_semantics() -> None:
    objects = compiled(GLOBAL_NETWORK_SETS)
    inside = ["203.0.113.0", "203.0.113.5", "203.0.113.99", "203.0.113.101", "203.0.113.127", "203.0.113.192",
              "203.0.113.255"]
    outside = ["203.0.113.100", "203.0.113.128", "203.0.113.150", "203.0.113.191", "203.0.112.255", "10.0.0.1"]
    c = Cluster(objects, {"production": {}, "team-x": {}},
                [pod("production", "web", app="web"), pod("production", "api", app="api"),
                 pod("team-x", "app")], inside + outside + ["10.1.0.1", "10.2.0.1"])
    for address in inside:
        assert c.allowed(address, "production/web", 443), address
        assert c.allowed(address, "production/api", 8443), address
        assert not c.allowed(address, "production/web", 8443), address
        assert c.allowed("team-x/app", address, 22), address
    for address in outside:
        assert not c.allowed(address, "production/web", 443), address
        assert not c.allowed(address, "production/api", 8443), address
        assert not c.allowed("team-x/app", address, 22), address
    assert c.allowed("10.2.0.1", "production/api", 9000) and not c.allowed("10.1.0.1", "production/api", 9000)


# ------------------------------------------------------------------------------------ cluster blocks


def test_cluster_including_system_warns() -> None:
    result = compile_text("cluster including system {\n  isolate\n  allow dns\n}\n")
    assert result.ok
    warnings = [d for d in result.diagnostics if d.code == "system-namespaces"]
    assert len(warnings) == 1 and not warnings[0].is_error
    assert warnings[0].span is not None and warnings[0].span.line == 1
    plain = compile_text("cluster {\n  isolate\n  allow dns\n}\n")
    assert plain.ok and not [d for d in plain.diagnostics if d.code == "system-namespaces"]


SPARE_NAMESPACES = {"production": {}, "kube-system": {}, "calico-system": {}, "my-sys": {}}
SPARE_PODS = (pod("production", "web", app="web"), pod("production", "other"),
              pod("kube-system", "kube-dns", k8s_app="kube-dns"), pod("kube-system", "other"),
              pod("calico-system", "node", k8s_app="calico-node"), pod("my-sys", "agent"))


def test_plain_cluster_isolation_spares_the_system_namespaces() -> None:
    objects = compiled("cluster {\n  isolate\n}\n")
    (isolation,) = policies(objects)
    assert isolation["kind"] == "GlobalNetworkPolicy"
    assert isolation["spec"]["namespaceSelector"] == NOT_SYSTEM
    assert isolation["spec"]["selector"] == "all()"
    c = Cluster(objects, SPARE_NAMESPACES, SPARE_PODS)
    assert c.allowed("kube-system/other", "kube-system/kube-dns", 53, UDP)
    assert c.allowed("calico-system/node", "kube-system/other", 9999)
    assert not c.allowed("my-sys/agent", "kube-system/other", 9999)  # my-sys is not a system namespace
    assert not c.allowed("kube-system/other", "production/web", 80)
    assert not c.allowed("production/web", "kube-system/kube-dns", 53, UDP)  # no `allow dns`
    assert not c.allowed("kube-system/other", "my-sys/agent", 80)


def test_system_namespaces_can_be_redeclared() -> None:
    objects = compiled("system namespaces = kube-system, my-sys\ncluster {\n  isolate\n}\n")
    (isolation,) = policies(objects)
    assert isolation["spec"]["namespaceSelector"] == (
        "has(projectcalico.org/name) && projectcalico.org/name not in {'kube-system', 'my-sys'}")
    c = Cluster(objects, SPARE_NAMESPACES, SPARE_PODS)
    assert c.allowed("kube-system/other", "my-sys/agent", 80)
    assert not c.allowed("kube-system/other", "calico-system/node", 80)


def test_cluster_including_system_isolates_everything() -> None:
    objects = compiled("cluster including system {\n  isolate\n  allow dns\n}\n")
    isolation = next(p for p in policies(objects) if p["metadata"]["name"].startswith("default-deny"))
    assert isolation["spec"]["namespaceSelector"] == "all()"
    c = Cluster(objects, SPARE_NAMESPACES, SPARE_PODS)
    # DNS still works (the other half of `allow dns` lets it into kube-dns) but nothing else does
    for client in ("production/web", "kube-system/other", "calico-system/node"):
        assert c.allowed(client, "kube-system/kube-dns", 53, UDP), client
    assert not c.allowed("kube-system/other", "kube-system/kube-dns", 9999)
    assert not c.allowed("calico-system/node", "kube-system/other", 9999)


# ------------------------------------------------------------------------------------------ isolate for


def test_isolate_for_is_a_default_tier_policy_selecting_the_service_without_rules() -> None:
    objects = compiled("namespace shop {\n  service web = app=web\n  isolate ingress for web\n}\n"
                       "cluster namespaces[env=prod] {\n  service db = app=db\n  isolate egress for db\n}\n")
    named = by_name(objects)
    assert named["isolate-ingress-web"]["kind"] == "NetworkPolicy"
    assert named["isolate-ingress-web"]["spec"] == {"order": 10000, "selector": "app == 'web'", "types": ["Ingress"]}
    [glob] = [o for o in objects if o["kind"] == "GlobalNetworkPolicy"]
    assert glob["metadata"]["name"].startswith("cluster-isolate-egress-db-")
    assert glob["spec"]["selector"] == "app == 'db'" and glob["spec"]["types"] == ["Egress"]
    assert "env == 'prod'" in glob["spec"]["namespaceSelector"] and "ingress" not in glob["spec"]


def test_ordered_policy_names_follow_what_statements_say_not_how_they_are_written() -> None:
    """Names of policies in tiers digest the rules' content: the same statement text in two namespaces
    (whose other halves land on the same kube-dns pods) gives two names, not one object replacing the
    other; respelling a statement (`web,api` -> `web, api`, as `netdsl fmt` does) keeps its name."""
    from netdsl.compiler import check_files, compile_checked
    from netdsl.source import SourceFile

    def names(text: str) -> list[str]:
        result = compile_checked(check_files([SourceFile("n.seg", text)]), "calico")
        assert result.ok, [d.message for d in result.diagnostics if d.is_error]
        return sorted(m.name for m in result.manifests)

    twice = ("namespace prod {\n  service db = app=db\n  allow dns for db\n}\n"
             "namespace web {\n  service db = app=db\n  allow dns for db\n}\n"
             "tier t order 10 {\n  namespace prod { all pods allows from all pods }\n}\n"
             "cluster including system { all pods denies from cidr 10.0.0.0/8 }\n")
    assert len(set(names(twice))) == len(names(twice))
    spaced = ("namespace prod {\n  service web = app=web\n  service api = app=api\n}\n"
              "tier t order 10 {\n  namespace prod { web,api denies from cidr 10.0.0.0/8 except (10.1.0.0/16) }\n}\n")
    canonical = spaced.replace("web,api", "web, api").replace("(10.1.0.0/16)", "10.1.0.0/16")
    assert names(spaced) == names(canonical)
