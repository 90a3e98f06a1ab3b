"""netdsl/lower/halves.py: the other half of a flow is derived only toward the pods the peer names,
only in the statement's own namespace for broad peers, and only onto pods something already restricts."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdsl import ir
from netdsl.compiler import check, check_files
from netdsl.source import SourceFile

EXAMPLES = sorted(str(p) for p in Path("examples").rglob("*.seg"))


def lowered(text: str) -> ir.Program:
    result = check_files([SourceFile("t.seg", text)])
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.program is not None
    return result.program


def derived(program: ir.Program) -> list[ir.Rule]:
    """The derived rules, but those of OTHERS' own statement (`api accepts namespace monitoring`)."""
    return [r for r in program.rules if r.derived and "monitoring" not in r.text]


def derived_in(program: ir.Program, namespace: str) -> list[ir.Rule]:
    return [r for r in derived(program) if r.subject.namespace == namespace or r.subject.cluster is not None]


OTHERS = """
namespace ops labels team=ops {
  isolate
  service api = app=api
  api accepts namespace monitoring
}
"""


@pytest.mark.parametrize("peer", [
    "anywhere", "all namespaces", "namespaces[team=ops]", "all pods in namespaces[team=ops]",
    "pods[app=api] in namespaces[team=ops]", "entity cluster", "entity all", "cidr 10.0.0.0/8",
])
def test_a_broad_peer_never_opens_another_namespace(peer: str) -> None:
    program = lowered(f"namespace prod {{\n  isolate\n  service web = app=web\n"
                      f"  web connects to {peer} on 443\n}}\n" + OTHERS)
    assert derived_in(program, "ops") == []


def test_a_broad_peer_derives_in_the_statements_own_namespace() -> None:
    program = lowered("namespace prod {\n  isolate\n  service web = app=web\n  web connects to anywhere on 443\n}\n"
                      + OTHERS)
    [half] = derived(program)
    assert (half.subject.namespace, half.subject.name, half.direction) == ("prod", "all-pods", ir.Direction.INGRESS)
    assert half.peers == (ir.PodPeer(ir.NamespaceByName("prod"), ir.Selector.of(
        [ir.Requirement("app", ir.Operator.IN, ("web",))])),)


def test_a_namespace_selector_that_leaves_out_the_own_namespace_derives_nothing() -> None:
    program = lowered("namespace prod {\n  isolate\n  service web = app=web\n"
                      "  web connects to namespaces[kubernetes.io/metadata.name in (ops, dev)] on 443\n}\n" + OTHERS)
    assert derived(program) == []


def test_a_namespace_selector_derives_where_the_own_namespace_has_its_labels() -> None:
    """Declared labels are not facts about a cluster: prod may carry team=ops there. The other half
    says so itself: it admits web only from namespaces that are prod AND have team=ops."""
    program = lowered("namespace prod labels team=web {\n  isolate\n  service web = app=web\n"
                      "  web connects to namespaces[team=ops] on 443\n}\n" + OTHERS)
    [half] = derived(program)
    assert (half.subject.namespace, half.subject.name, half.direction) == ("prod", "all-pods", ir.Direction.INGRESS)
    [peer] = half.peers
    assert isinstance(peer, ir.PodPeer) and isinstance(peer.namespaces, ir.NamespaceBySelector)
    assert peer.namespaces.selector.matches({ir.NAMESPACE_NAME_LABEL: "prod", "team": "ops"})
    assert not peer.namespaces.selector.matches({ir.NAMESPACE_NAME_LABEL: "prod", "team": "web"})


def test_a_labelled_cluster_block_restricts_by_the_namespaces_labels_in_the_cluster() -> None:
    """`cluster namespaces[env=a] { isolate }` isolates prod only where prod has env=a: the other half
    attaches to a cluster-wide workload for exactly those namespaces, never to prod unconditionally."""
    program = lowered("namespace prod {\n  service web = app=web\n  service api = app=api\n"
                      "  web accepts api on 80\n}\ncluster namespaces[env=a] {\n  isolate\n}\n")
    [half] = derived(program)
    assert half.direction is ir.Direction.EGRESS and half.subject.namespace == ""
    assert isinstance(half.subject.cluster, ir.NamespaceBySelector)
    assert half.subject.cluster.selector.matches({ir.NAMESPACE_NAME_LABEL: "prod", "env": "a"})
    assert not half.subject.cluster.selector.matches({ir.NAMESPACE_NAME_LABEL: "prod"})
    assert not half.subject.cluster.selector.matches({ir.NAMESPACE_NAME_LABEL: "other", "env": "a"})


@pytest.mark.parametrize("peer", [
    "ops/api", "pods[app=api] in namespace ops", "all pods in namespace ops", "namespace ops",
])
def test_a_peer_that_names_its_namespace_gets_the_other_half_there(peer: str) -> None:
    program = lowered(f"namespace prod {{\n  service web = app=web\n  web connects to {peer} on 443\n}}\n" + OTHERS)
    halves = derived_in(program, "ops")
    assert halves and all(h.direction is ir.Direction.INGRESS and h.subject.namespace == "ops" for h in halves)


def test_a_cluster_statement_with_a_broad_peer_derives_nothing() -> None:
    program = lowered("cluster {\n  isolate\n  all pods connects to anywhere on 443\n"
                      "  all pods accepts all namespaces on 80\n}\n" + OTHERS)
    assert derived(program) == []


def test_a_cluster_subject_toward_a_named_namespace_derives_there() -> None:
    program = lowered("cluster {\n  all pods connects to ops/api on 443\n}\n" + OTHERS)
    [half] = derived(program)
    assert (half.subject.namespace, half.subject.name, half.subject.cluster) == ("ops", "api", None)


def test_a_cluster_restricted_workload_is_not_widened_to_every_namespace() -> None:
    # `mon` restricts egress cluster-wide; the other half of prod's flow goes to ops' mon pods only
    program = lowered("""
cluster {
  service mon = app=mon
  mon connects to namespace kube-system
}
namespace ops { service x = app=x }
namespace prod {
  service web = app=web
  web accepts pods[app=mon] in namespace ops on 80
}
""")
    [half] = derived(program)
    assert half.subject.cluster is None and half.subject.namespace == "ops"
    assert half.direction is ir.Direction.EGRESS


def sel(*pairs: tuple[str, str]) -> ir.Selector:
    return ir.Selector.of([ir.Requirement(k, ir.Operator.IN, (v,)) for k, v in pairs])


def test_pods_carrying_two_services_labels_get_the_other_half() -> None:
    # only db's ingress is restricted; web's pods that are also db pods must accept api
    program = lowered("""
namespace prod {
  service web = app=web
  service db  = role=db
  service api = app=api
  db accepts pods[app=admin] on 5432
  api connects to web on 80
}
""")
    [half] = derived(program)
    assert half.direction is ir.Direction.INGRESS
    assert half.subject.selector == sel(("app", "web"), ("role", "db"))
    assert not half.subject.declared


def test_a_partly_restricted_peer_gets_the_other_half_on_the_restricted_part_only() -> None:
    program = lowered("""
namespace prod {
  service web = app=web
  service canary = app=web, track=canary
  service api = app=api
  canary connects to namespace kube-system
  api accepts web on 80
}
""")
    [half] = derived(program)
    assert half.direction is ir.Direction.EGRESS
    assert half.subject.name == "canary"  # the peer's pods restricted in egress are exactly canary's


def test_incompatible_restricting_workloads_get_nothing() -> None:
    program = lowered("""
namespace prod {
  service web = app=web
  service db  = app=db
  db accepts pods[app=admin] on 5432
  web accepts pods[app=api] on 80
}
""")
    assert all(r.direction is ir.Direction.EGRESS or not r.derived for r in program.rules)
    assert derived(program) == []


def restricted_by(program: ir.Program, rule: ir.Rule) -> bool:
    """Whether every pod of `rule`'s subject is restricted in its direction and tier by an explicit
    statement or an isolation (checked on the selectors: the subject's requirements include theirs)."""
    mine = set(rule.subject.selector.requirements)
    if rule.tier is None and any(
        i.direction is rule.direction and (i.namespace == rule.subject.namespace or i.cluster is not None)
        and set(i.selector.requirements) <= mine  # `isolate for S`: S's pods only
        for i in program.isolations
    ):
        return True
    return any(
        not r.derived and r.direction is rule.direction and r.tier == rule.tier
        and (r.subject.namespace == rule.subject.namespace or r.subject.cluster is not None)
        and set(r.subject.selector.requirements) <= mine
        for r in program.rules
    )


@pytest.mark.parametrize("path", EXAMPLES)
def test_derived_rules_only_attach_to_pods_already_restricted(path: str) -> None:
    result = check([path])
    if result.program is None:
        pytest.skip("does not compile")
    for r in derived(result.program):
        assert restricted_by(result.program, r), (r.subject, r.direction, r.tier)


def test_anywhere_beside_a_named_peer_keeps_the_named_peers_other_half() -> None:
    """`anywhere` emits alone, but b/db (another namespace, isolated) still gets its other half."""
    result = check_files([SourceFile("t.seg", "namespace a {\n  service web = app=web\n"
                                     "  web connects to anywhere, b/db on 443\n}\n"
                                     "namespace b {\n  isolate\n  service db = app=db\n}\n")])
    assert result.ok and result.program is not None
    [rule] = [r for r in result.program.rules if not r.derived]
    assert rule.peers == (ir.AnyPeer(),)
    [half] = [r for r in result.program.rules if r.derived]
    assert (half.subject.namespace, half.subject.name, half.direction) == ("b", "db", ir.Direction.INGRESS)
    assert not [d for d in result.diagnostics if d.code == "redundant"]  # b/db is not redundant


@pytest.mark.parametrize("peers", ["anywhere, namespaces[team=ops], cidr 10.0.0.0/8", "anywhere, pods[app=web]"])
def test_peers_anywhere_includes_are_redundant(peers: str) -> None:
    result = check_files([SourceFile("t.seg", f"namespace prod {{\n  isolate\n  service web = app=web\n"
                                     f"  web connects to {peers} on 443\n}}\n" + OTHERS)])
    assert [d.code for d in result.diagnostics if d.code == "redundant"] == ["redundant"]
    assert result.program is not None and derived_in(result.program, "ops") == []


def test_a_duplicate_statement_does_not_lose_the_other_half_of_its_twin() -> None:
    """Deduplicating equal rules keeps the first; the halves of the second (wider) one survive."""
    program = lowered("namespace a {\n  service web = app=web\n  web connects to anywhere on 443\n"
                      "  web connects to anywhere, b/db on 443\n}\n"
                      "namespace b {\n  isolate\n  service db = app=db\n}\n")
    assert [(r.subject.namespace, r.subject.name) for r in program.rules if r.derived] == [("b", "db")]
    assert len([r for r in program.rules if not r.derived]) == 1


# ------------------------------------------------------------------------------------------ isolate for


def test_isolate_for_gets_the_other_half_on_exactly_its_pods() -> None:
    program = lowered("namespace prod {\n  service web = app=web\n  service api = app=api\n"
                      "  isolate ingress for web\n  api connects to all pods on 80\n}\n")
    [half] = derived(program)
    assert (half.subject.name, half.direction, half.ports) == ("web", ir.Direction.INGRESS,
                                                              (ir.PortMatch(ir.Protocol.TCP, 80),))
    assert restricted_by(program, half)


def test_isolate_for_one_direction_derives_nothing_for_the_other() -> None:
    program = lowered("namespace prod {\n  service web = app=web\n  service api = app=api\n"
                      "  isolate egress for web\n  api connects to web on 80\n}\n")
    assert derived(program) == []


def test_isolate_for_in_a_cluster_block_gets_halves_in_each_namespace_it_covers() -> None:
    program = lowered("cluster {\n  service db = app=db\n  isolate ingress for db\n}\n"
                      "namespace prod {\n  service api = app=api\n  api connects to pods[app=db, tier=x] on 5432\n}\n")
    [half] = derived(program)
    assert half.subject.namespace == "prod" and half.direction is ir.Direction.INGRESS
    assert half.subject.selector == ir.Selector.of([ir.Requirement("app", ir.Operator.IN, ("db",)),
                                                    ir.Requirement("tier", ir.Operator.IN, ("x",))])


def test_a_one_sided_rule_derives_no_other_half() -> None:
    """`web allows ingress from api` is one NetworkPolicy rule: api's restricted egress stays closed,
    while the flow form `web accepts api` opens it (the other half)."""
    one_sided = lowered("namespace prod {\n  isolate\n  service web = app=web\n  service api = app=api\n"
                        "  web allows ingress from api on 8080\n}\n")
    assert not derived(one_sided)
    assert [r.one_sided for r in one_sided.rules] == [True]
    flow = lowered("namespace prod {\n  isolate\n  service web = app=web\n  service api = app=api\n"
                   "  web accepts api on 8080\n}\n")
    assert len(derived(flow)) == 1


@pytest.mark.parametrize("statement, says", [
    ("web allows egress from api", "`egress` does not go with `from`"),
    ("web allows ingress to api", "`ingress` does not go with `to`"),
])
def test_a_side_must_match_from_or_to(statement: str, says: str) -> None:
    result = check_files([SourceFile("s.seg", f"namespace prod {{\n  service web = app=web\n  service api = app=api\n"
                                               f"  {statement}\n}}\n")])
    assert [d.message for d in result.diagnostics if d.is_error] == [says]
