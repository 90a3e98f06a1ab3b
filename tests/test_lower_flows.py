"""netdsl/lower/names.py and flows.py: what peers in `cluster { }` blocks and `passes` outside tiers mean."""

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
