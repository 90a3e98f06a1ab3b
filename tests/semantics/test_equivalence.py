"""Translation validation: for random programs and topologies, the emitted manifests of each target
allow exactly what the program (the IR) allows - never more (a hole), never less (an outage)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import yaml
from hypothesis import given, settings

from netdsl import ir
from netdsl.compiler import compile_paths
from netdsl.ir import Protocol
from netdsl.semantics.calico import CalicoSemantics
from netdsl.semantics.cilium import CiliumSemantics
from netdsl.semantics.model import Connection, External, Pod, Topology, topology_from_program
from netdsl.semantics.program import ProgramSemantics
from netdsl.semantics.vanilla import VanillaSemantics
from tests.semantics.strategies import (
    cilium_programs,
    cluster_programs,
    extra_pods,
    ordered_programs,
    programs,
    split_files,
)

PROBES = [
    (Protocol.UDP, 53), (Protocol.TCP, 53), (Protocol.TCP, 80), (Protocol.TCP, 443),
    (Protocol.TCP, 8050), (Protocol.TCP, 8080), (Protocol.TCP, 5432), (Protocol.UDP, 7),
    (Protocol.SCTP, 9001), (Protocol.TCP, 9999),
    # both ends of the generators' ranges and the ports just outside (an off-by-one shows here)
    (Protocol.TCP, 7999), (Protocol.TCP, 8000), (Protocol.TCP, 8100), (Protocol.TCP, 8101),
    (Protocol.TCP, 8081), (Protocol.TCP, 8082), (Protocol.SCTP, 8999), (Protocol.SCTP, 9002),
]




def with_extras(topology: Topology, pods: list[Pod]) -> Topology:
    namespaces = dict(topology.namespaces)
    for p in pods:
        namespaces.setdefault(p.namespace, {})
    namespaces.setdefault("elsewhere", {})  # a namespace the program does not mention
    named = tuple(replace(p, ports={"http": (8080, Protocol.TCP)}) for p in topology.pods)
    named += (Pod("elsewhere", "unlabelled"), Pod("elsewhere", "api", {"app": "api"}))
    externals = (*topology.externals, External(ipaddress.ip_address("10.1.2.3")),
                 External(ipaddress.ip_address("10.200.0.1")))
    return Topology(namespaces, named + tuple(pods), externals)


@given(programs(), extra_pods())
def test_vanilla_manifests_mean_what_the_program_means(text: str, pods: list[Pod]) -> None:
    assert_same_meaning(text, "vanilla", VanillaSemantics, pods)


def compile_paths_text(text: str, target: str = "vanilla"):  # type: ignore[no-untyped-def]
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, part in enumerate(split_files(text)):  # generated programs may span several files
            path = pathlib.Path(d) / f"p{i}.seg"
            path.write_text(part)
            paths.append(str(path))
        return compile_paths(paths, target)


def assert_same_meaning(text: str, target: str, evaluator: type, pods: list[Pod]) -> None:
    result = compile_paths_text(text, target)
    assert result.ok, [d.message for d in result.diagnostics if d.is_error]
    assert result.program is not None
    topology = with_extras(topology_from_program(result.program), pods)
    objects = list(yaml.safe_load_all("".join("---\n" + m.text for m in result.manifests)))
    program = ProgramSemantics(result.program, topology)
    emitted = evaluator(objects, topology)
    mismatches = []
    for src in topology.endpoints:
        for dst in topology.endpoints:
            if src == dst or (isinstance(src, External) and isinstance(dst, External)):
                continue
            for proto, port in PROBES:
                conn = Connection(src, dst, proto, port)
                want, got = program.decide(conn), emitted.decide(conn)
                if want.allowed != got.allowed:
                    mismatches.append(f"{conn}: program {want}, {target} {got}")
    assert not mismatches, text + "\n" + "\n".join(mismatches[:10])


@settings(max_examples=settings.default.max_examples // 2)
@given(programs(), extra_pods())
def test_calico_manifests_of_vanilla_programs_mean_the_same(text: str, pods: list[Pod]) -> None:
    assert_same_meaning(text, "calico", CalicoSemantics, pods)


@settings(max_examples=settings.default.max_examples // 2)
@given(programs(), extra_pods())
def test_cilium_manifests_of_vanilla_programs_mean_the_same(text: str, pods: list[Pod]) -> None:
    assert_same_meaning(text, "cilium", CiliumSemantics, pods)


@settings(max_examples=settings.default.max_examples)
@given(cilium_programs(), extra_pods())
def test_cilium_manifests_mean_what_the_program_means(text: str, pods: list[Pod]) -> None:
    """Deny wins, FQDN as named externals, entities, L7 as a refinement, cluster-wide policies."""
    assert_same_meaning(text, "cilium", CiliumSemantics, pods)


@settings(max_examples=settings.default.max_examples)
@given(ordered_programs(), extra_pods())
def test_calico_manifests_mean_what_the_program_means(text: str, pods: list[Pod]) -> None:
    """Tiers, first-match order, deny and pass, cluster-wide statements."""
    assert_same_meaning(text, "calico", CalicoSemantics, pods)


@given(programs())
def test_every_flow_works_end_to_end(text: str) -> None:
    """A flow statement means the connection works: for each pod the program models (one per declared
    service, unlabelled pods, peers' pods), whatever a statement lists is allowed - whatever else the
    program restricts on the other side."""
    check_end_to_end(text, "vanilla")


@given(cluster_programs())
def test_every_flow_works_end_to_end_with_cluster_isolation(text: str) -> None:
    check_end_to_end(text, "calico")


def check_end_to_end(text: str, target: str) -> None:
    result = compile_paths_text(text, target)
    assert result.ok and result.program is not None
    topology = with_extras(topology_from_program(result.program), [])
    program = ProgramSemantics(result.program, topology)
    from netdsl.ir import Direction
    from netdsl.semantics.model import port_matches
    from netdsl.semantics.program import peer_matches

    broken = []
    for rule in result.program.rules:
        if rule.derived or rule.one_sided:  # a one-sided rule promises its own side only
            continue
        subjects = [
            p for p in topology.pods
            if p.namespace == rule.subject.namespace and rule.subject.selector.matches(dict(p.labels))
        ]
        for s in subjects:
            # the flow is promised toward the peers' pods that the statement names (README, "Flows work end
            # to end"); a broad peer (anywhere, namespaces[...]) only in the statement's own namespace: another
            # namespace's isolation is its owner's to open
            peers = [e for e in topology.endpoints if any(
                peer_matches(q, e, topology) and (
                    not isinstance(e, Pod) or e.namespace == s.namespace
                    or (isinstance(q, ir.PodPeer) and isinstance(q.namespaces, ir.NamespaceByName))
                ) for q in rule.peers
            )]
            for p in peers:
                if p == s:
                    continue
                src, dst = (p, s) if rule.direction is Direction.INGRESS else (s, p)
                for proto, port in PROBES:
                    conn = Connection(src, dst, proto, port)
                    if rule.ports and not any(port_matches(m, conn) for m in rule.ports):
                        continue
                    verdict = program.decide(conn)
                    if not verdict.allowed:
                        broken.append(f"{conn} ({rule.text}): {verdict.reasons}")
    assert not broken, text + "\n" + "\n".join(broken[:10])
