"""netdsl/importer/decompile.py through import_manifests: every example compiled to every target that can
express it, imported back, proven equivalent (import_manifests proves every import), idiomatic, in the
printer's canonical layout and deterministic; generated programs the same way; the forms (idiomatic,
one-sided, literal), the HTTP check and the pitfall warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from netdsl import ir
from netdsl.compiler import check_files, compile_checked, stream
from netdsl.importer import ImportResult
from netdsl.importer.decompile import (
    ClusterScope,
    DecompileError,
    cidr_set_names,
    cluster_scope,
    decompile,
    name_services,
    selector_text,
)
from netdsl.importer.model import IMPORTED, Translation
from netdsl.parse import parse
from netdsl.printer import print_module
from netdsl.source import SourceFile
from tests.importer.helpers import compiled, errors, imported
from tests.semantics.strategies import cilium_programs, ordered_programs, programs, split_files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.seg"))
TARGETS = ("vanilla", "calico", "cilium")


def sel(text: str) -> ir.Selector:
    key, _, value = text.partition("=")
    return ir.Selector.of([ir.Requirement(key, ir.Operator.IN, (value,))])


def round_trip(text: str, target: str, **kwargs: Any) -> ImportResult | None:
    """`text` compiled to `target` and imported back; None when the target cannot express it."""
    files = [SourceFile(f"f{i}.seg", part) for i, part in enumerate(split_files(text))]
    checked = check_files(files)
    if not checked.ok:
        return None
    result = compile_checked(checked, target)
    if not result.ok or not result.manifests:
        return None
    return imported(stream(result.manifests), target=target, **kwargs)


def assert_canonical(result: ImportResult) -> None:
    for name, text in result.files.items():
        module, errs = parse(SourceFile(name, text))
        assert module is not None and not errs, text
        assert print_module(module) == text  # `netdsl fmt` would change nothing


# ------------------------------------------------------------------------------------ names


def test_service_names_from_identity_labels_unique() -> None:
    a, b = sel("app=web"), ir.Selector.of([*sel("app=web").requirements, *sel("tier=x").requirements])
    names = name_services([b, a, sel("app.kubernetes.io/name=shop"), sel("k8s-app=kube-dns"), sel("app=isolate")])
    assert names[a] == "web" and names[b] == "x"
    assert names[sel("app.kubernetes.io/name=shop")] == "shop" and names[sel("k8s-app=kube-dns")] == "kube-dns"
    assert names[sel("app=isolate")] != "isolate"  # never a keyword
    assert selector_text(sel("app=has space")) == 'app="has space"'
    assert name_services([a], taken={"web"})[a] != "web"  # never a cidr set's name


def test_cidr_set_names_are_valid_and_unique() -> None:
    names = cidr_set_names(["Office.Nets", "office-nets", "isolate", "x" * 80])
    assert len(set(names.values())) == 4
    assert names["Office.Nets"] == "office-nets" and names["isolate"] != "isolate"
    assert all(len(n) <= 63 for n in names.values())


def test_cluster_scopes_are_the_headers_lowering_reads() -> None:
    system = ir.Requirement(ir.NAMESPACE_NAME_LABEL, ir.Operator.NOT_IN, ir.SYSTEM_NAMESPACES)
    env = ir.Requirement("env", ir.Operator.IN, ("a",))
    assert cluster_scope(ir.AllNamespaces()) == ClusterScope(None, True)
    assert cluster_scope(ir.NamespaceBySelector(ir.Selector.of([system]))) == ClusterScope(None, False)
    assert cluster_scope(ir.NamespaceBySelector(ir.Selector.of([system, env]))) == ClusterScope(
        ir.Selector.of([env]), False)
    assert cluster_scope(ir.NamespaceBySelector(ir.Selector.of([env]))) == ClusterScope(ir.Selector.of([env]), True)
    assert cluster_scope(ir.NamespaceByName("prod")) == "prod"


# ------------------------------------------------------------------------------------ every example, every target


CASES = [(p, t) for p in EXAMPLES for t in TARGETS]


@pytest.mark.parametrize(("path", "target"), CASES, ids=[f"{p.stem}-{t}" for p, t in CASES])
def test_every_example_to_every_target_imports_back_proven(path: Path, target: str) -> None:
    text = path.read_text()
    result = round_trip(text, target)
    if result is None:
        pytest.skip(f"{target} cannot express {path.name}")
    assert not errors(result), errors(result)
    assert result.form == "idiomatic", result.text  # netdsl's own output never needs one-sided rules
    assert_canonical(result)
    again = round_trip(text, target)
    assert again is not None and again.files == result.files  # deterministic


def test_three_tier_imports_to_its_statements() -> None:
    result = imported(compiled((ROOT / "examples" / "three-tier.seg").read_text()))
    assert not errors(result) and result.form == "idiomatic"
    for line in ("isolate", "allow dns for backend, database, frontend", "backend accepts frontend on 8080",
                 "database accepts backend on 5432", "frontend accepts namespace ingress-nginx on 80"):
        assert f"  {line}\n" in result.text, result.text
    assert "connects to" not in result.text  # every egress half is derived, not written
    assert " allows " not in result.text and "ingress from" not in result.text  # no one-sided rule


def test_calico_tiers_imports_as_a_tier_block() -> None:
    result = round_trip((ROOT / "examples" / "calico-tiers.seg").read_text(), "calico")
    assert result is not None and not errors(result)
    text = result.text
    assert text.startswith("tier security order 100 {\n  namespace production {\n"), text
    assert "    all pods denies from cidr 192.0.2.0/24, cidr 203.0.113.0/24\n" in text
    assert "cluster {\n  isolate\n  allow dns\n}\n" in text
    assert "  frontend accepts anywhere on 80\n" in text and "  backend accepts frontend on 8080\n" in text


def test_cilium_l7_fqdn_imports_with_fqdn_and_http() -> None:
    result = round_trip((ROOT / "examples" / "cilium-l7-fqdn.seg").read_text(), "cilium")
    assert result is not None and not errors(result) and result.program is not None
    assert "  backend connects to fqdn api.stripe.com, fqdn *.amazonaws.com on 443\n" in result.text
    assert "  backend accepts frontend on 8080 http GET /api/.*, POST /api/orders\n" in result.text
    assert {h for r in result.program.rules for h in r.http} == {ir.HttpRule("GET", "/api/.*"),
                                                                ir.HttpRule("POST", "/api/orders")}


def test_split_output_one_file_per_namespace(tmp_path: Path) -> None:
    text = ("namespace a { isolate; service x = app=x; x accepts b/y on 80 }\n"
            "namespace b { service y = app=y; y connects to a/x on 80 }\n")
    result = imported(compiled(text), directory=str(tmp_path))
    assert not errors(result), errors(result)
    assert sorted(result.files) == [str(tmp_path / "a.seg"), str(tmp_path / "b.seg")]
    assert "x accepts b/y on 80" in result.files[str(tmp_path / "a.seg")]


def test_tier_order_is_kept_and_blocks_interleave() -> None:
    text = ("namespace a { service w = app=w }\nnamespace b { service v = app=v }\n"
            "tier t order 10 otherwise deny {\n"
            "  namespace a { w denies from cidr 10.0.0.0/8 }\n"
            "  namespace b { v passes from cidr 10.0.0.0/8 }\n"
            "  namespace a { w allows ingress from anywhere on 80 }\n}\n")
    result = round_trip(text, "calico")
    assert result is not None and not errors(result), result and errors(result)
    body = result.text.split("tier t order 10 otherwise deny {\n")[1].split("\n}\n")[0]
    allow = body.find("w allows ingress from anywhere on 80")
    allow = allow if allow >= 0 else body.index("w accepts anywhere on 80")
    assert body.index("w denies from") < body.index("v passes from") < allow
    assert body.count("namespace a {") == 2  # a, b, a: the blocks interleave as the rules are ordered


def test_repeated_service_lists_are_groups() -> None:
    text = ("namespace p { isolate ingress; service a = app=a; service b = app=b; service c = app=c\n"
            "  a, b accepts c on 80\n  a, b accepts namespace q on 443 }\n")
    result = round_trip(text, "vanilla")
    assert result is not None and not errors(result)
    assert "  group a-b = a, b\n" in result.text and "  a-b accepts c on 80\n" in result.text, result.text


def test_cidr_sets_are_declared_and_named() -> None:
    """A Calico NetworkSet is a `cidrs` declaration with a valid name, used by name where a rule has all of it."""
    docs = [{"apiVersion": "projectcalico.org/v3", "kind": "NetworkSet",
             "metadata": {"name": "Office.Nets", "namespace": "p", "labels": {"role": "office"}},
             "spec": {"nets": ["192.0.2.0/24", "198.51.100.0/24"]}},
            {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "a", "namespace": "p"},
             "spec": {"selector": "app == 'a'", "types": ["Ingress"], "ingress": [
                 {"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'office'"},
                  "destination": {"ports": [22]}}]}}]
    result = imported(yaml.safe_dump_all(docs))
    assert not errors(result), errors(result)
    assert "cidrs p-office-nets = 192.0.2.0/24, 198.51.100.0/24\n" in result.text, result.text
    assert "  a accepts p-office-nets, office on 22\n" in result.text
    assert_canonical(result)


# ------------------------------------------------------------------------------------ the forms


def netpol(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "p"}, "spec": spec}


def test_half_a_flow_is_a_one_sided_rule() -> None:
    """web's ingress from api, where api's egress is isolated: `web accepts api` would open api's egress."""
    docs = [netpol("deny", {"podSelector": {}, "policyTypes": ["Egress"]}),
            netpol("web", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 8080}]}]})]
    result = imported(yaml.safe_dump_all(docs))
    assert not errors(result), errors(result)
    assert result.form == "one-sided"
    assert "  web allows ingress from api on 8080\n" in result.text, result.text
    assert_canonical(result)


def test_literal_form_says_every_rule_on_its_own() -> None:
    text = "namespace p { isolate; service a = app=a; service b = app=b; a accepts b on 80; allow dns }\n"
    result = round_trip(text, "vanilla")
    assert result is not None and result.translation is not None
    d = decompile(result.translation, literal=True)
    printed = "".join(d.texts().values())
    assert "allow dns" not in printed and " accepts " not in printed
    assert "a allows ingress from b on 80" in printed and "b allows egress to a on 80" in printed


def test_what_cannot_be_printed_is_an_error_naming_it() -> None:
    w = ir.Workload("p", "w", sel("app=w"))
    t = Translation("calico", rules=[ir.Rule(w, ir.Direction.INGRESS, (ir.AnyPeer(),), (), IMPORTED, "p/w ingress",
                                             ir.Action.PASS)])
    with pytest.raises(DecompileError, match="pass outside a tier"):
        decompile(t)


def test_http_rules_are_checked_structurally(monkeypatch: pytest.MonkeyPatch) -> None:
    """The L4 proof cannot see HTTP: a decompiler that lost the L7 rules is caught by the structural check."""
    import netdsl.importer as core
    from netdsl.importer.decompile import decompile as real_decompile

    def lossy(t: Translation, one_sided: Any = (), literal: bool = False) -> Any:
        stripped = Translation(t.target, t.namespaces, [
            ir.Rule(r.subject, r.direction, r.peers, r.ports, r.span, r.text, r.action, r.derived, r.tier)
            for r in t.rules], t.isolations, t.tiers, t.cidr_sets, t.understood)
        return real_decompile(stripped, one_sided, literal)

    monkeypatch.setattr(core, "decompile", lossy)
    result = round_trip((ROOT / "examples" / "cilium-l7-fqdn.seg").read_text(), "cilium")
    assert result is not None
    assert [d.code for d in result.diagnostics if d.is_error] == ["import-proof"]
    assert "HTTP rules" in errors(result)[0]


def test_pitfalls_of_the_translation_are_warnings() -> None:
    cnp = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "x", "namespace": "p"},
           "spec": {"endpointSelector": {"matchLabels": {"app": "b"}}, "egress": [
               {"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system",
                                                 "k8s:k8s-app": "kube-dns"}}],
                "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": [{"matchPattern": "*"}]}}]},
               {"toFQDNs": [{"matchName": "api.example.com"}]},
               {"toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}]}}
    result = imported(yaml.safe_dump(cnp))
    pitfalls = [d for d in result.diagnostics if d.code == "import-pitfall"]
    assert result.ok and pitfalls, [(d.code, d.message) for d in result.diagnostics]
    assert all(not d.is_error for d in pitfalls)


# ------------------------------------------------------------------------------------ generated programs


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


def _generated(text: str, target: str) -> None:
    result = round_trip(text, target)
    if result is None:
        return
    assert not errors(result), (text, errors(result))
    assert result.form is not None
    assert_canonical(result)


@SETTINGS
@given(programs(expects=False))
def test_random_programs_round_trip_vanilla(text: str) -> None:
    _generated(text, "vanilla")


@SETTINGS
@given(ordered_programs())
def test_random_ordered_programs_round_trip_calico(text: str) -> None:
    _generated(text, "calico")


@SETTINGS
@given(cilium_programs())
def test_random_cilium_programs_round_trip_cilium(text: str) -> None:
    _generated(text, "cilium")
