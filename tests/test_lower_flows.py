"""netdsl/lower/names.py and flows.py: what peers in `cluster { }` blocks and `passes` outside tiers mean,
and `isolate [DIRECTION] for SUBJECTS` (one isolation per service, redundancy, tiers, cluster blocks)."""

from __future__ import annotations

import pytest

from netdsl import ir
from netdsl.compiler import check_files
from netdsl.diagnostics import Diagnostic
from netdsl.source import SourceFile


def diagnostics(text: str) -> list[Diagnostic]:
    return check_files([SourceFile("t.seg", text)]).diagnostics


def errors(text: str) -> list[Diagnostic]:
    return [d for d in diagnostics(text) if d.is_error]


@pytest.mark.parametrize(("statement", "column"), [
    ("web accepts all pods", 15),
    ("web accepts pods[app=x] on 80", 15),
    ("web connects to web on 80", 19),
    ("web connects to both on 80", 19),
    ("all pods accepts namespace ops, all pods", 35),
])
def test_a_cluster_peer_without_namespaces_is_an_error_at_the_peer(statement: str, column: int) -> None:
    text = f"cluster {{\n  service web = app=web\n  group both = web\n  {statement}\n}}\n"
    [problem] = errors(text)
    assert problem.code == "cluster-peer"
    assert problem.span is not None and (problem.span.line, problem.span.column) == (4, column)
    assert problem.hint is not None and "all namespaces" in problem.hint


@pytest.mark.parametrize("peer", [
    "all namespaces", "pods[app=x] in all namespaces", "all pods in all namespaces", "namespace ops",
    "pods[app=x] in namespace ops", "namespaces[env=a]", "ops/api", "cidr 10.0.0.0/8", "anywhere",
])
def test_a_cluster_peer_that_names_its_namespaces_is_fine(peer: str) -> None:
    text = f"namespace ops {{ service api = app=api }}\ncluster {{\n  service web = app=web\n  web accepts {peer}\n}}\n"
    assert errors(text) == []


def test_all_pods_as_a_cluster_subject_is_each_namespaces_pods() -> None:
    result = check_files([SourceFile("t.seg", "cluster {\n  all pods accepts namespace ops on 80\n}\n")])
    assert result.program is not None
    [rule] = result.program.rules
    assert rule.subject.selector == ir.EVERYTHING and rule.subject.cluster is not None


def test_the_same_peer_in_a_namespace_block_is_that_namespaces_pods() -> None:
    result = check_files([SourceFile("t.seg", "namespace ops {\n  service web = app=web\n  web accepts all pods\n}\n")])
    assert result.program is not None
    [rule] = result.program.rules
    assert rule.peers == (ir.PodPeer(ir.NamespaceByName("ops"), ir.EVERYTHING),)


@pytest.mark.parametrize("where", [
    "namespace n {{ {stmt} }}",
    "cluster {{ {stmt} }}",
])
def test_pass_outside_a_tier_is_an_error(where: str) -> None:
    text = "namespace n { service web = app=web }\n" + where.format(stmt="all pods passes from anywhere") + "\n"
    [problem] = errors(text)
    assert problem.code == "pass-outside-tier"
    assert problem.span is not None and problem.span.line == 2
    assert problem.hint is not None and "tier" in problem.hint


def test_pass_inside_a_tier_is_fine() -> None:
    text = "tier t order 10 {\n  namespace n { all pods passes from anywhere }\n}\n"
    assert errors(text) == []


# ------------------------------------------------------------------------------------------ DNS lint


def dns_warnings(text: str) -> list[Diagnostic]:
    return [d for d in diagnostics(text) if d.code == "egress-without-dns"]


def test_dns_allowed_by_a_cluster_block_counts() -> None:
    text = """
cluster {
  isolate
  allow dns
}
namespace shop {
  service web = app=web
  web connects to pods[app=db] on 5432
}
"""
    assert dns_warnings(text) == []


def test_dns_allowed_by_a_cluster_block_that_leaves_the_namespace_out_does_not_count() -> None:
    text = """
cluster namespaces[env=prod] { allow dns }
namespace shop labels env=dev {
  service web = app=web
  web connects to pods[app=db] on 5432
}
"""
    [warning] = dns_warnings(text)
    assert "`web`" in warning.message


def test_dns_allowed_by_a_statement_to_kube_dns_on_udp_and_tcp_counts() -> None:
    both = "web connects to pods[k8s-app=kube-dns] in namespace kube-system on 53/udp, 53"
    text = f"namespace shop {{\n  isolate egress\n  service web = app=web\n  {both}\n}}\n"
    assert dns_warnings(text) == []
    udp_only = both.replace(", 53", "")
    assert dns_warnings(text.replace(both, udp_only))  # TCP 53 is DNS too (large answers)


def test_a_tier_that_only_passes_traffic_on_does_not_restrict_dns() -> None:
    text = """
tier security order 100 {
  namespace shop {
    all pods passes to namespace payments
    all pods denies to cidr 192.0.2.0/24
  }
}
namespace shop { service web = app=web }
"""
    assert dns_warnings(text) == []


def test_a_tier_that_denies_the_rest_restricts_dns() -> None:
    text = """
tier security order 100 otherwise deny {
  namespace shop {
    all pods passes to namespace payments
  }
}
namespace shop { service web = app=web }
"""
    assert dns_warnings(text)


def test_a_namespace_without_dns_still_warns() -> None:
    text = "namespace shop {\n  isolate\n  service web = app=web\n}\n"
    [warning] = dns_warnings(text)
    assert warning.span is not None and warning.span.line == 2


# ------------------------------------------------------------------------------------------ pod networks


def test_pod_networks_are_declared_once_at_the_top() -> None:
    text = "pod networks = 10.244.0.0/16, fd00::/48, 10.96.0.0/12\nnamespace pod { service pod = app=pod }\n"
    result = check_files([SourceFile("t.seg", text)])
    assert result.ok and result.program is not None
    assert [str(n) for n in result.program.pod_networks] == ["10.96.0.0/12", "10.244.0.0/16", "fd00::/48"]
    assert check_files([SourceFile("t.seg", "namespace n {}\n")]).program.pod_networks == ()  # type: ignore[union-attr]


def test_pod_networks_errors() -> None:
    [bad] = errors("pod networks = 10.244.0.1/16\n")
    assert bad.code == "invalid-cidr" and bad.hint is not None and "10.244.0.0/16" in bad.hint
    [twice] = errors("pod networks = 10.244.0.0/16\npod networks = 10.96.0.0/12\n")
    assert twice.code == "duplicate-name" and twice.span is not None and twice.span.line == 2


# ------------------------------------------------------------------------------------------ isolate for


def lowered(text: str) -> tuple[ir.Program, list[Diagnostic]]:
    result = check_files([SourceFile("t.seg", text)])
    assert result.ok and result.program is not None, [d.message for d in result.diagnostics]
    return result.program, result.diagnostics


SHOP = "namespace shop {\n  service web = app=web\n  service api = app=api\n  group both = web, api\n"


def isolated(program: ir.Program) -> list[tuple[str, str | None, str]]:
    return [(i.namespace, i.subject.name if i.subject else None, i.direction.value) for i in program.isolations]


@pytest.mark.parametrize(("statement", "expected"), [
    ("isolate ingress for web", [("shop", "web", "Ingress")]),
    ("isolate egress for both", [("shop", "web", "Egress"), ("shop", "api", "Egress")]),
    ("isolate for web", [("shop", "web", "Ingress"), ("shop", "web", "Egress")]),
    ("isolate for web, both", [("shop", "web", "Ingress"), ("shop", "api", "Ingress"),
                               ("shop", "web", "Egress"), ("shop", "api", "Egress")]),
    ("isolate ingress for all pods", [("shop", None, "Ingress")]),  # `for all pods` is plain isolate
])
def test_isolate_for_is_one_isolation_per_subject_and_direction(statement: str, expected: list[object]) -> None:
    program, _ = lowered(SHOP + f"  {statement}\n}}\n")
    assert isolated(program) == expected
    for i in program.isolations:
        if i.subject is not None:
            assert i.subject.selector == ir.Selector.of([ir.Requirement("app", ir.Operator.IN, (i.subject.name,))])


def test_isolation_covers_only_the_pods_its_subject_selects() -> None:
    program, _ = lowered(SHOP + "  isolate ingress for web\n}\n")
    [iso] = program.isolations
    assert iso.covers("shop", {}, {"app": "web"}) and not iso.covers("shop", {}, {"app": "api"})
    assert not iso.covers("other", {}, {"app": "web"})


def test_isolate_for_an_unknown_name_is_an_error_at_the_name() -> None:
    [problem] = errors("namespace shop {\n  service web = app=web\n  isolate for wbe\n}\n")
    assert problem.code == "unknown-name" and problem.span is not None and problem.span.column == 15
    assert "`web`" in (problem.hint or "")


def test_isolate_for_inside_a_tier_is_an_error_like_isolate() -> None:
    [problem] = errors("tier t order 10 {\n  namespace shop {\n    service web = app=web\n"
                       "    isolate for web\n  }\n}\n")
    assert problem.code == "invalid-tier" and problem.span is not None and problem.span.line == 4


def redundant(text: str) -> list[tuple[int, str]]:
    return [(d.span.line if d.span else 0, d.message) for d in diagnostics(text) if d.code == "redundant"]


@pytest.mark.parametrize("order", ["isolate ingress\n  isolate ingress for web", "isolate ingress for web\n  isolate"])
def test_isolate_for_in_an_isolated_namespace_is_redundant_in_any_order(order: str) -> None:
    text = SHOP + f"  {order}\n}}\n"
    [(line, message)] = redundant(text)
    assert "`web` is already isolated for ingress" in message and "every pod of the namespace" in message
    assert line == (6 if order.startswith("isolate ingress\n") else 5)
    program, _ = lowered(text)
    assert all(i.subject is None for i in program.isolations)  # the plain isolation says it all


def test_isolate_for_a_service_twice_or_inside_an_isolated_one_is_redundant() -> None:
    text = SHOP + ("  service v2 = app=web, v=2\n  isolate egress for v2\n  isolate for web\n"
                   "  isolate egress for web\n}\n")
    found = redundant(text)
    assert [line for line, _ in found] == [6, 8]
    assert "`isolate for web` at t.seg:7 covers its pods" in found[0][1]
    program, _ = lowered(text)
    assert isolated(program) == [("shop", "web", "Ingress"), ("shop", "web", "Egress")]


def test_isolate_for_another_direction_or_another_namespaces_isolation_is_not_redundant() -> None:
    text = SHOP + "  isolate ingress\n  isolate egress for web\n}\nnamespace other {\n  isolate\n}\n"
    assert redundant(text) == []


def test_isolate_for_in_a_cluster_block_is_cluster_wide() -> None:
    program, _ = lowered("cluster {\n  service web = app=web\n  isolate ingress for web\n}\n")
    [iso] = program.isolations
    assert iso.cluster is not None and iso.subject is not None and iso.subject.cluster == iso.cluster
    assert iso.covers("shop", {}, {"app": "web"}) and not iso.covers("kube-system", {}, {"app": "web"})
    assert not iso.covers("shop", {}, {"app": "api"})


def test_egress_isolation_of_a_service_without_dns_warns_at_the_isolate() -> None:
    [warning] = dns_warnings(SHOP + "  isolate egress for web\n}\n")
    assert warning.span is not None and warning.span.line == 5 and "`web`" in warning.message
    assert dns_warnings(SHOP + "  isolate egress for web\n  allow dns for web\n}\n") == []
    assert dns_warnings(SHOP + "  isolate ingress for web\n}\n") == []


def test_a_deny_of_an_isolated_service_does_not_warn_that_it_isolates() -> None:
    text = "namespace shop {\n  service web = app=web\n  service v2 = app=web, v=2\n  isolate ingress for web\n" \
           "  v2 denies from namespace ops\n}\n"
    assert not [d for d in diagnostics(text) if d.code == "deny-isolates"]
    text = text.replace("isolate ingress for web", "isolate egress for web")
    assert [d.code for d in diagnostics(text) if d.code == "deny-isolates"] == ["deny-isolates"]
