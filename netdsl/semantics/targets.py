"""What each target's emitted objects mean (one evaluator per target: a new target adds one entry),
and which ports are worth probing when a question names none. Shared by explain, diff, expect and
the lints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from netdsl import ir
from netdsl.ir import Protocol
from netdsl.semantics.calico import CalicoSemantics
from netdsl.semantics.cilium import CiliumSemantics
from netdsl.semantics.matrix import Probe, probe_names
from netdsl.semantics.model import CILIUM_RESERVED, External, Topology
from netdsl.semantics.universe import NON_POD_BY_TARGET, Address
from netdsl.semantics.vanilla import VanillaSemantics

EVALUATOR_BY_TARGET: dict[str, type[Any]] = {
    "vanilla": VanillaSemantics,
    "calico": CalicoSemantics,
    "cilium": CiliumSemantics,
}



def _cilium_identities(label_sets: Sequence[Mapping[str, str]], addresses: Sequence[Address]) -> list[External]:
    """Cilium's reserved identities (they carry only `reserved:` labels)."""
    return [External(addresses[0], identity=f"cilium:{r}") for r in CILIUM_RESERVED]


_NOT_ON_HOST_ENDPOINTS = ("projectcalico.org/", "pcns.", "pcsa.", "netdsl.dev/", "app.kubernetes.io/managed-by")


def _calico_host_endpoints(label_sets: Sequence[Mapping[str, str]], addresses: Sequence[Address]) -> list[External]:
    """Calico host endpoints: non-namespaced, with any labels an admin gives them - one per pod label
    class (and one without labels), so no selector meant for pods can silently match one."""
    out = [External(a, identity="calico:host-endpoint") for a in addresses]  # a node is also an address
    for labels in label_sets:
        # assumed: an admin does not give a host endpoint Calico's or netdsl's own labels
        own = {k: v for k, v in labels.items() if not k.startswith(_NOT_ON_HOST_ENDPOINTS)}
        if own:
            out.append(External(addresses[0], identity="calico:host-endpoint", labels=own))
    return list(dict.fromkeys(out))


NON_POD_BY_TARGET.update({"cilium": _cilium_identities, "calico": _calico_host_endpoints})

COMMON_PROBES: tuple[Probe, ...] = ((Protocol.UDP, 53), (Protocol.TCP, 53), (Protocol.TCP, 80), (Protocol.TCP, 443))
_UNLISTED = (9999, 12345, 23456, 34567, 45678)
_PROTOCOL_ORDER = {Protocol.TCP: 0, Protocol.UDP: 1, Protocol.SCTP: 2}


def probe_sort_key(probe: Probe) -> tuple[int, int, tuple[str, ...]]:
    return probe[1], _PROTOCOL_ORDER[probe[0]], tuple(sorted(probe_names(probe)))


def probes_for(programs: Iterable[ir.Program], topology: Topology) -> tuple[Probe, ...]:
    """The (protocol, port)s worth asking about: every port the programs mention (both ends of a range,
    named ports as the topology's pods number them), the topology's named ports, DNS and web ports, and
    one port nothing mentions per protocol in use."""
    found: set[Probe] = set(COMMON_PROBES)
    named: dict[tuple[str, Protocol], set[int]] = {}
    for pod in topology.pods:
        for name, (number, protocol) in pod.ports.items():
            named.setdefault((name, protocol), set()).add(number)
            found.add((protocol, number))
    protocols = {Protocol.TCP, Protocol.UDP}
    for program in programs:
        for rule in program.rules:
            for p in rule.ports:
                protocols.add(p.protocol)
                if p.name is not None:
                    found.update((p.protocol, n) for n in named.get((p.name, p.protocol), ()))
                elif p.port is not None:
                    found.add((p.protocol, p.port))
                    found.add((p.protocol, p.end_port or p.port))
    for protocol in sorted(protocols, key=_PROTOCOL_ORDER.__getitem__):
        used = {probe[1] for probe in found if probe[0] is protocol}
        found.add((protocol, next((n for n in _UNLISTED if n not in used), 65535)))
    return tuple(sorted(found, key=probe_sort_key))
