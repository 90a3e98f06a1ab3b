"""netdsl's own evaluators against an independent analyser, on random programs.

Rule: for random tier-free, deny-free programs (tests/semantics/strategies.py, split across files as
generated), the vanilla output judged by `VanillaSemantics` and the Calico output judged by
`CalicoSemantics` must give, on every ordered pair of distinct endpoints (pods, and pods to and from
external addresses) and every probed port, the verdict network-config-analyzer (tests/nca.py) gives for
the same YAML over the same cluster. Probes include each end of every port range and the ports just
outside (`boundary_probes`), and pods number their named ports differently. Random `cluster { }` programs
compare the Calico output alone (vanilla cannot express them).

What NCA 2.1.0 understands, and so what is compared: Kubernetes NetworkPolicy and Calico's default tier
(NetworkPolicy, GlobalNetworkPolicy; GlobalNetworkSets go into the topology, where NCA reads them). Calico
gives every namespace the `projectcalico.org/name` label, NCA does not: the topology carries it. Both
treat CIDRs as external addresses only, and neither reports a pod's traffic to itself.

Bounded in CI (`NCA_RANDOM_EXAMPLES`, default 10 programs per test, deterministic under the `ci`
profile); hunt harder with, e.g.,
    NCA_RANDOM_EXAMPLES=200 HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/semantics/test_nca_random.py
A disagreement is shrunk by Hypothesis to a minimal program; the report names each endpoint, port and
both verdicts with the rules the evaluator found.
"""

from __future__ import annotations

import ipaddress
import os
import pathlib
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import nca
import pytest
import yaml
from conftest import in_ci
from hypothesis import HealthCheck, Phase, given, settings

from netdsl.backends import Options
from netdsl.compiler import Result, compile_paths, stream
from netdsl.ir import Protocol
from netdsl.semantics.calico import CalicoSemantics
from netdsl.semantics.model import Connection, Endpoint, External, Pod, Topology, topology_from_program
from netdsl.semantics.vanilla import VanillaSemantics
from tests.semantics.strategies import (
    NAMED_PORTS,
    UNDECLARED,
    boundary_probes,
    cluster_programs,
    extra_pods,
    programs,
    split_files,
)

pytestmark = pytest.mark.nca

EXAMPLES = int(os.environ.get("NCA_RANDOM_EXAMPLES", "10"))
# Shrinking a disagreement runs NCA twice per candidate (minutes): CI reports the example as drawn, a
# developer's run shrinks it to a minimal program.
NCA_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[p for p in Phase if p is not Phase.shrink or not in_ci()],
)

CALICO_NAME_LABEL = "projectcalico.org/name"
VANILLA_KINDS = frozenset({nca.K8S_NETWORK_POLICY})
CALICO_KINDS = frozenset({nca.CALICO_NETWORK_POLICY, nca.CALICO_GLOBAL_NETWORK_POLICY})
PROBES = boundary_probes()
EXTERNAL = ("198.51.100.7", "203.0.113.5", "10.1.2.3", "10.200.0.1", "2001:db8::1", "2001:db8:1::5")
# Pods every cluster has: DNS (so NCA never invents one), a namespace nothing declares, a labelled pod in it.
FIXED_PODS = (
    Pod("kube-system", "kube-dns", {"k8s-app": "kube-dns"}),
    Pod(UNDECLARED, "prometheus", {"app": "api", "role": "a"}),
    Pod("elsewhere", "client", {"tier": "x"}),
)
FIXED_NAMESPACES = {"kube-system": {}, UNDECLARED: {"env": "b"}, "elsewhere": {"team": "x"}}


def compile_files(text: str, target: str) -> Result:
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, part in enumerate(split_files(text)):
            path = pathlib.Path(d) / f"part{i}.seg"
            path.write_text(part)
            paths.append(str(path))
        return compile_paths(paths, target, Options({"staged": False, "calico_version": "3.32"}))


def cluster_of(result: Result, pods: Sequence[Pod]) -> Topology:
    """The program's own topology, the fixed and the random extra pods, every pod with named ports
    that differ from its neighbours', `projectcalico.org/name` on every namespace, fixed externals."""
    assert result.program is not None
    base = topology_from_program(result.program)
    namespaces = {n: dict(labels) for n, labels in base.namespaces.items()}
    for n, labels in FIXED_NAMESPACES.items():
        namespaces.setdefault(n, dict(labels))
    every = [*base.pods, *FIXED_PODS, *(replace(p, name=f"{p.name}-{i}") for i, p in enumerate(pods))]
    for p in every:
        namespaces.setdefault(p.namespace, {})
    for n, labels in namespaces.items():
        labels[CALICO_NAME_LABEL] = n
    numbered = tuple(replace(p, ports=p.ports or NAMED_PORTS[i % len(NAMED_PORTS)]) for i, p in enumerate(every))
    externals = {e.address for e in base.externals if e.name is None}
    externals |= {ipaddress.ip_address(a) for a in EXTERNAL}
    return Topology(namespaces, numbered,
                    tuple(External(a) for a in sorted(externals, key=lambda a: (a.version, int(a)))))


def nca_topology(topology: Topology, network_sets: Sequence[dict[str, Any]] = ()) -> nca.Topology:
    return nca.Topology(
        {n: dict(labels) for n, labels in topology.namespaces.items()},
        [nca.Pod(p.namespace, p.name, dict(p.labels), {k: (n, proto.value) for k, (n, proto) in p.ports.items()})
         for p in topology.pods],
        network_sets,
    )


def pairs(topology: Topology) -> list[tuple[Endpoint, Endpoint]]:
    out: list[tuple[Endpoint, Endpoint]] = []
    for src in topology.endpoints:
        for dst in topology.endpoints:
            if src != dst and (isinstance(src, Pod) or isinstance(dst, Pod)):
                out.append((src, dst))
    return out


def disagreements(target: str, evaluator: Any, analysis: nca.Connectivity, topology: Topology) -> list[str]:
    out = []
    for src, dst in pairs(topology):
        for protocol, port in PROBES:
            verdict = evaluator.decide(Connection(src, dst, protocol, port))
            theirs = analysis.allowed(str(src), str(dst), protocol.value, port)
            if verdict.allowed != theirs:
                why = "; ".join(verdict.reasons) or "no rule"
                out.append(f"{src} -> {dst} {protocol.value}/{port}: {target} evaluator "
                           f"{'allows' if verdict.allowed else 'denies'} ({why}), NCA "
                           f"{'allows' if theirs else 'denies'}")
    return out


def compare(text: str, target: str, pods: Sequence[Pod]) -> list[str]:
    """Disagreements between netdsl's evaluator of `target` and NCA on the program's output."""
    result = compile_files(text, target)
    assert result.ok, [str(d) for d in result.diagnostics if d.is_error]
    topology = cluster_of(result, pods)
    docs = [d for d in yaml.safe_load_all(stream(result.manifests)) if d]
    sets = [d for d in docs if d["kind"] == "GlobalNetworkSet"]
    policies = yaml.safe_dump_all([d for d in docs if d["kind"] != "GlobalNetworkSet"], sort_keys=False)
    kinds = VANILLA_KINDS if target == "vanilla" else CALICO_KINDS
    evaluator = (VanillaSemantics if target == "vanilla" else CalicoSemantics)(docs, topology)
    analysis = nca.connectivity(policies, nca_topology(topology, sets), kinds_expected=kinds)
    # NCA invents pods ("livesim") for references the topology lacks: they would make the views differ
    assert not analysis.other_peers, analysis.other_peers
    return disagreements(target, evaluator, analysis, topology)


def report(text: str, found: list[str]) -> str:
    return f"{len(found)} disagreements with NCA for\n{text}\n" + "\n".join(found[:15])


@NCA_SETTINGS
@given(programs(), extra_pods())
def test_vanilla_evaluator_agrees_with_nca(text: str, pods: list[Pod]) -> None:
    found = compare(text, "vanilla", pods)
    assert not found, report(text, found)


@NCA_SETTINGS
@given(programs(), extra_pods())
def test_calico_evaluator_agrees_with_nca(text: str, pods: list[Pod]) -> None:
    found = compare(text, "calico", pods)
    assert not found, report(text, found)


@NCA_SETTINGS
@given(cluster_programs(), extra_pods())
def test_calico_evaluator_agrees_with_nca_on_cluster_blocks(text: str, pods: list[Pod]) -> None:
    found = compare(text, "calico", pods)
    assert not found, report(text, found)


# A cluster block's service (`cluster { service cw = ... }`) is in no namespace of its own: the topology
# once held a pod `/cw` in namespace "", which NCA put into `default` and reported as `default/cw`.
CLUSTER_SERVICE_PROGRAMS = [
    "namespace prod {\n  service api = app=api\n}\ncluster { service cw = app=db; isolate ingress for cw }\n",
    "namespace prod labels env=a {\n  service api = app=api\n  api allows ingress from pods[app=db] in all namespaces"
    "\n}\ncluster namespaces[env=a] { service cw = app=db, !legacy; isolate egress for cw }\n",
    "namespace web {\n  service ui = tier=x\n  ui allows egress to pods[app=db] in namespace monitoring on 80\n}\n"
    "cluster including system { service cw = app in (db, job); isolate for cw }\n",
]


@pytest.mark.parametrize("text", CLUSTER_SERVICE_PROGRAMS)
def test_cluster_block_service_pods_are_real_pods(text: str) -> None:
    """A cluster-block service's example pod is in every namespace of the topology (those the block
    selects and the others), never in namespace "", and NCA and the evaluator agree on it."""
    result = compile_files(text, "calico")
    topology = cluster_of(result, [])
    assert all(p.namespace for p in topology.pods)
    assert result.program is not None
    program_namespaces = set(topology_from_program(result.program).namespaces)
    assert {p.namespace for p in topology.pods if p.name == "cw"} >= program_namespaces
    found = compare(text, "calico", [])
    assert not found, report(text, found)


def test_probes_cover_range_boundaries() -> None:
    """lo-1, lo, hi, hi+1 of every range the generators write."""
    for port in (7999, 8000, 8100, 8101, 8079, 8082):
        assert (Protocol.TCP, port) in PROBES
    assert {(Protocol.SCTP, p) for p in (8999, 9000, 9001, 9002)} <= set(PROBES)


def test_random_programs_are_reproducible_in_ci() -> None:
    """The `ci` profile draws the same examples on every run, and CI loads it."""
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.database is None and ci.max_examples <= 200
    if in_ci() and not os.environ.get("HYPOTHESIS_PROFILE"):
        assert settings.default.derandomize and NCA_SETTINGS.derandomize
