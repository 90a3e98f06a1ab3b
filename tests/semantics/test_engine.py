"""netdsl/semantics/engine.py and matrix.py: the fast matrix equals decide(), evaluators per target,
probes, endpoint names, merged topologies."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from netdsl import analysis
from netdsl.analysis import evaluators
from netdsl.compiler import check
from netdsl.ir import Protocol
from netdsl.semantics import engine
from netdsl.semantics.calico import CalicoSemantics
from netdsl.semantics.cilium import CiliumSemantics
from netdsl.semantics.engine import (
    EndpointError,
    Unavailable,
    merge_topologies,
    parse_probe,
    probes_for,
    resolve_endpoint,
    split_port,
)
from netdsl.semantics.matrix import by_decide, matrix
from netdsl.semantics.model import Connection, External, Pod, Topology, topology_from_program
from netdsl.semantics.program import ProgramSemantics
from netdsl.semantics.vanilla import VanillaSemantics
from tests.semantics.strategies import cilium_programs, extra_pods, ordered_programs, programs
from tests.semantics.test_equivalence import PROBES, compile_paths_text, with_extras

THREE_TIER = """\
namespace production {
  isolate
  service frontend = tier=frontend
  service backend  = tier=backend
  allow dns for frontend, backend
  frontend accepts namespace ingress-nginx on 80
  backend accepts frontend on 8080, 9000-9100
}
"""
TIERED = THREE_TIER + """\
tier security order 100 {
  namespace production { all pods denies from cidr 192.0.2.0/24 }
}
"""

# Probes around the ports the random programs use, including both ends and outside of ranges and the
# numbers the named ports below resolve to.
MATRIX_PROBES = list(dict.fromkeys([*PROBES, (Protocol.TCP, 8000), (Protocol.TCP, 8100), (Protocol.TCP, 8101),
                                    (Protocol.SCTP, 9000), (Protocol.SCTP, 9002), (Protocol.TCP, 8443),
                                    (Protocol.UDP, 8080)]))  # once each: PROBES has some of them
NAMED_PORTS = [{}, {"http": (8080, Protocol.TCP)}, {"http": (8443, Protocol.TCP)}, {"http": (8080, Protocol.UDP)},
               {"http": (8050, Protocol.TCP), "dns": (53, Protocol.UDP)}]


def program_of(text: str, tmp_path: Path, name: str = "p.seg"):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(text)
    result = check([str(path)])
    assert result.program is not None, [d.message for d in result.diagnostics]
    return result


def varied(topology: Topology, pods: list[Pod], named: list[int]) -> Topology:
    """with_extras, but pods' named ports differ (the same name, other numbers and protocols)."""
    t = with_extras(topology, pods)
    changed = tuple(replace(p, ports=NAMED_PORTS[named[i % len(named)] % len(NAMED_PORTS)])
                    for i, p in enumerate(t.pods))
    return Topology(t.namespaces, changed, t.externals)


def assert_matrix_is_decide(text: str, target: str, evaluator: type, pods: list[Pod], named: list[int]) -> None:
    result = compile_paths_text(text, target)
    assert result.ok and result.program is not None
    topology = varied(topology_from_program(result.program), pods, named)
    objects = list(yaml.safe_load_all("".join("---\n" + m.text for m in result.manifests)))
    for ev in (ProgramSemantics(result.program, topology), evaluator(objects, topology)):
        fast, slow = matrix(ev, topology, MATRIX_PROBES), by_decide(ev, topology, MATRIX_PROBES)
        diffs = [f"{s} -> {d} {p}: fast {a}" for s, d, p, a in fast.differences(slow)]
        assert not diffs, f"{type(ev).__name__}\n{text}\n" + "\n".join(diffs[:10])


@settings(max_examples=max(10, settings.default.max_examples // 8))
@given(programs(), extra_pods(), st.lists(st.integers(0, 9), min_size=1, max_size=5))
def test_matrix_equals_decide_vanilla(text: str, pods: list[Pod], named: list[int]) -> None:
    assert_matrix_is_decide(text, "vanilla", VanillaSemantics, pods, named)


@settings(max_examples=max(10, settings.default.max_examples // 8))
@given(ordered_programs(), extra_pods(), st.lists(st.integers(0, 9), min_size=1, max_size=5))
def test_matrix_equals_decide_calico(text: str, pods: list[Pod], named: list[int]) -> None:
    """Tiers, first match, deny and pass, global policies, network sets."""
    assert_matrix_is_decide(text, "calico", CalicoSemantics, pods, named)


@settings(max_examples=max(10, settings.default.max_examples // 8))
@given(cilium_programs(), extra_pods(), st.lists(st.integers(0, 9), min_size=1, max_size=5))
def test_matrix_equals_decide_cilium(text: str, pods: list[Pod], named: list[int]) -> None:
    """Deny wins, default deny per pod, entities, FQDN peers, L7 rules (which refine, not decide)."""
    assert_matrix_is_decide(text, "cilium", CiliumSemantics, pods, named)


def test_matrix_api(tmp_path: Path) -> None:
    result = program_of(THREE_TIER, tmp_path)
    topology = topology_from_program(result.program)
    m = matrix(ProgramSemantics(result.program, topology), topology, [(Protocol.TCP, 8080), (Protocol.TCP, 80)])
    front, back = resolve_endpoint("frontend", topology), resolve_endpoint("backend", topology)
    assert m.allowed(front, back) == ((Protocol.TCP, 8080),)
    assert m.is_allowed(front, back, (Protocol.TCP, 8080)) and not m.is_allowed(back, front, (Protocol.TCP, 8080))
    assert (front, back, ((Protocol.TCP, 8080),)) in list(m.cells())
    assert (front, front) in set(m.pairs())  # a pod's own column: traffic between its replicas
    assert not any(isinstance(s, External) and isinstance(d, External) for s, d in m.pairs())
    assert m.count() == sum(len(p) for _, _, p in m.cells())
    assert list(m.differences(m)) == []


def test_unknown_evaluators_are_asked_one_connection_at_a_time(tmp_path: Path) -> None:
    class Everything:
        def decide(self, conn: Connection) -> object:
            from netdsl.semantics.model import Verdict

            return Verdict(True)

    result = program_of(THREE_TIER, tmp_path)
    topology = topology_from_program(result.program)
    m = matrix(Everything(), topology, [(Protocol.TCP, 1)])
    n = len(topology.pods)
    assert m.count() == n * n + 2 * n * len(topology.externals)


# ------------------------------------------------------------------------------------------ evaluators


def test_evaluators_judge_each_targets_output(tmp_path: Path) -> None:
    result = program_of(THREE_TIER, tmp_path)
    evs = evaluators(result, ["vanilla", "calico"])
    assert list(evs) == ["program", "vanilla", "calico"]
    assert isinstance(evs["program"], ProgramSemantics)
    assert isinstance(evs["vanilla"], VanillaSemantics) and isinstance(evs["calico"], CalicoSemantics)
    topology = evs["program"].topology  # type: ignore[union-attr]
    conn = Connection(resolve_endpoint("frontend", topology), resolve_endpoint("backend", topology),
                      Protocol.TCP, 8080)
    for ev in evs.values():
        assert not isinstance(ev, Unavailable) and ev.decide(conn).allowed
    assert evs["vanilla"].decide(conn).reasons[-1] == "NetworkPolicy production/backend ingress[0]"  # type: ignore[union-attr]
    # the program alone works too (no sources needed)
    assert set(evaluators(result.program, ["vanilla"])) == {"program", "vanilla"}


def test_a_target_that_refuses_the_program_cannot_express_it(tmp_path: Path) -> None:
    result = program_of(TIERED, tmp_path)
    evs = evaluators(result, ["vanilla", "calico"])
    refused = evs["vanilla"]
    assert isinstance(refused, Unavailable) and refused.cannot_express
    assert refused.reason.startswith(f"{tmp_path / 'p.seg'}:9:") or ":9:" in refused.reason
    assert "cannot express policy tiers" in refused.reason
    assert "cannot express this program" in str(refused)
    assert isinstance(evs["calico"], CalicoSemantics)
    # evaluating for another target left the checked result alone
    assert result.ok and not result.manifests


def test_a_target_without_evaluator_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(engine.EVALUATOR_BY_TARGET, "calico")
    evs = evaluators(program_of(THREE_TIER, tmp_path), ["calico", "nonesuch"])
    assert isinstance(evs["calico"], Unavailable) and not evs["calico"].cannot_express
    assert isinstance(evs["nonesuch"], Unavailable)
    assert "calico" not in analysis.default_targets()


# ------------------------------------------------------------------------------------------ probes


def test_probes_come_from_the_program_and_the_topology(tmp_path: Path) -> None:
    result = program_of(THREE_TIER + "namespace production { backend accepts pods[app=x] on web, 7/udp }\n",
                        tmp_path)
    topology = topology_from_program(result.program)
    topology = Topology(topology.namespaces, (*topology.pods, Pod("production", "w", {}, {
        "web": (8088, Protocol.TCP), "metrics": (9102, Protocol.TCP)})))
    probes = probes_for([result.program], topology)
    for expected in [(Protocol.TCP, 80), (Protocol.TCP, 8080), (Protocol.TCP, 9000), (Protocol.TCP, 9100),
                     (Protocol.UDP, 7), (Protocol.TCP, 8088), (Protocol.TCP, 9102), (Protocol.UDP, 53),
                     (Protocol.TCP, 53), (Protocol.TCP, 443), (Protocol.TCP, 9999), (Protocol.UDP, 9999)]:
        assert expected in probes
    assert list(probes) == sorted(probes, key=lambda p: (p[1], p[0] is not Protocol.TCP, p[0] is Protocol.SCTP))
    assert len(set(probes)) == len(probes)


def test_parse_probe_and_split_port() -> None:
    pod = Pod("a", "web", {}, {"http": (8080, Protocol.TCP), "dns": (53, Protocol.UDP)})
    assert parse_probe("8080") == (Protocol.TCP, 8080)
    assert parse_probe("53/udp") == (Protocol.UDP, 53)
    assert parse_probe("9/SCTP") == (Protocol.SCTP, 9)
    assert parse_probe("http", pod) == (Protocol.TCP, 8080)
    assert parse_probe("dns", pod) == (Protocol.UDP, 53)
    for bad in ["0", "70000", "80/icmp", "grpc"]:
        with pytest.raises(EndpointError):
            parse_probe(bad, pod)
    assert split_port("web") == ("web", None)
    assert split_port("ns/web:8080/udp") == ("ns/web", "8080/udp")
    assert split_port("2001:db8::1") == ("2001:db8::1", None)
    assert split_port("[2001:db8::1]:443") == ("2001:db8::1", "443")
    assert split_port("10.0.0.1:53/udp") == ("10.0.0.1", "53/udp")
    for bad in ["[2001:db8::1", "web:", "[::1]x"]:
        with pytest.raises(EndpointError):
            split_port(bad)


def test_resolve_endpoint(tmp_path: Path) -> None:
    result = program_of(THREE_TIER, tmp_path)
    program = result.program
    topology = topology_from_program(program)
    assert str(resolve_endpoint("production/frontend", topology)) == "production/frontend"
    assert str(resolve_endpoint("frontend", topology)) == "production/frontend"
    assert resolve_endpoint("10.1.2.3", topology) == External(ipaddress.ip_address("10.1.2.3"))
    with pytest.raises(EndpointError, match=r"names \d+ pods: .*production/unlabelled"):
        resolve_endpoint("unlabelled", topology)
    with pytest.raises(EndpointError, match="did you mean production/frontend"):
        resolve_endpoint("production/frontnd", topology)
    # a service of the program in a cluster where pods have other names
    cluster = Topology({"production": {}}, (
        Pod("production", "web-7f9c", {"tier": "frontend"}), Pod("production", "api-1", {"tier": "backend"}),
        Pod("production", "api-2", {"tier": "backend"})))
    assert resolve_endpoint("frontend", cluster, program).name == "web-7f9c"  # type: ignore[union-attr]
    assert resolve_endpoint("production/frontend", cluster, program).name == "web-7f9c"  # type: ignore[union-attr]
    with pytest.raises(EndpointError, match="service 'backend' has 2 pods"):
        resolve_endpoint("backend", cluster, program)


def test_merged_topologies_keep_each_pod_once(tmp_path: Path) -> None:
    old = Topology({"a": {"env": "x"}}, (Pod("a", "web", {"app": "web"}), Pod("a", "db", {"app": "db"})))
    new = Topology({"a": {"env": "y"}}, (Pod("a", "frontend", {"app": "web"}), Pod("a", "db", {"app": "pg"})))
    merged, notes = merge_topologies(old, new)
    assert sorted(str(p) for p in merged.pods) == ["a/db@new", "a/db@old", "a/frontend"]
    assert merged.namespaces["a"] == {"env": "y"}
    assert len(notes) == 1 and "labels differ" in notes[0]
