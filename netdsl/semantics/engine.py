"""The semantic engine as one facade for the commands: evaluators per target, the ports worth probing,
endpoints by name, topologies, whole matrices. It sits below the compiler (it imports no backend and
no compiler); netdsl.analysis compiles each target's output and wraps it in its evaluator.

    evs = analysis.evaluators(result, ["vanilla", "calico"])  # {"program": ..., "vanilla": ..., ...}
    m = matrix(evs["vanilla"], topology, probes)

A target that refuses the program is an `Unavailable` entry carrying the first error, not an
evaluator. A new target adds one entry to `EVALUATOR_BY_TARGET`.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from netdsl import ir
from netdsl.ir import Protocol
from netdsl.semantics.matrix import Evaluator, Matrix, Probe, by_decide, matrix, probe_text
from netdsl.semantics.model import Endpoint, External, Pod, Topology
from netdsl.semantics.targets import EVALUATOR_BY_TARGET, probe_sort_key, probes_for

__all__ = [
    "EVALUATOR_BY_TARGET", "PROGRAM", "EndpointError", "Evaluator", "Matrix", "Probe", "Unavailable",
    "by_decide", "matrix", "merge_topologies", "probe_text", "probes_for", "resolve_endpoint",
]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# What judges each target's emitted objects.

PROGRAM = "program"


@dataclass(frozen=True)
class Unavailable:
    """A target with no verdicts: it cannot express the program (`reason` is its first error), or
    netdsl has no evaluator for it yet."""

    target: str
    reason: str
    cannot_express: bool = True

    def __str__(self) -> str:
        return f"cannot express this program: {self.reason}" if self.cannot_express else self.reason


# ------------------------------------------------------------------------------------------ probes

# Always probed: DNS both ways, web ports; plus, per protocol, a port no statement mentions.
# ------------------------------------------------------------------------------------------ endpoints


class EndpointError(ValueError):
    pass


def parse_probe(text: str, dst: Endpoint | None = None) -> Probe:
    """`8080`, `53/udp`, `9000/sctp`, or a named port of the destination pod (`http`, `dns/udp`)."""
    word, _, proto_text = text.partition("/")
    protocol = Protocol.TCP
    if proto_text:
        try:
            protocol = Protocol(proto_text.upper())
        except ValueError:
            raise EndpointError(f"unknown protocol {proto_text!r} in {text!r} (tcp, udp or sctp)") from None
    if word.isdigit() and not word.isascii():  # str.isdigit takes '٣' and '³' too, int() reads them as 3
        raise EndpointError(f"{text!r} is not a port number (write it with the digits 0-9)")
    if word.isdigit() and len(word) > 5:  # int() refuses over 4,300 digits
        raise EndpointError(f"port {word[:8]}... ({len(word):,} digits) is not 1-65535")
    if word.isdigit():
        port = int(word)
        if not 1 <= port <= 65535:
            raise EndpointError(f"port {port} is not 1-65535")
        return protocol, port
    if not isinstance(dst, Pod):
        raise EndpointError(f"{text!r} is not a port number (a named port needs a destination pod)")
    candidates = [(number, proto) for name, (number, proto) in dst.ports.items()
                  if name == word and (not proto_text or proto is protocol)]
    if not candidates:
        have = ", ".join(f"{n}={num}/{p.value.lower()}" for n, (num, p) in sorted(dst.ports.items())) or "none"
        raise EndpointError(f"{dst} has no container port named {word!r} (its named ports: {have})")
    number, proto = candidates[0]
    return proto, number


def split_port(text: str) -> tuple[str, str | None]:
    """`B`, `B:PORT[/PROTO]`, `[2001:db8::1]:PORT`; a bare IPv6 address has no port."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise EndpointError(f"{text!r}: missing ]")
        if rest and not rest.startswith(":"):
            raise EndpointError(f"{text!r}: expected :PORT after ]")
        return host, rest[1:] or None
    try:
        ipaddress.ip_address(text)
        return text, None
    except ValueError:
        pass
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, None
    if not port:
        raise EndpointError(f"{text!r}: a port is missing after :")
    return host, port


def resolve_endpoint(text: str, topology: Topology, program: ir.Program | None = None) -> Endpoint:
    """`ns/pod`, a pod name unique in the topology, a service of the program (`svc` or `ns/svc`, when
    exactly one pod of the topology is in it), a DNS name of an external endpoint, or an IP address."""
    text = text.strip()
    if not text:
        raise EndpointError("an empty endpoint name")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return next((e for e in topology.externals if e.address == address), External(address))
    pods = [p for p in topology.pods if str(p) == text] if "/" in text else [
        p for p in topology.pods if p.name == text]
    if len(pods) == 1:
        return pods[0]
    if len(pods) > 1:
        raise EndpointError(f"{text!r} names {len(pods)} pods: {_some(pods)}; write namespace/name")
    named = [e for e in topology.externals if e.name == text]
    if named:
        return named[0]
    if program is not None:
        ns, _, name = text.rpartition("/")
        services = [s for s in program.services if s.name == name and (not ns or s.namespace == ns)]
        members = sorted({p for s in services for p in topology.pods
                          if p.namespace == s.namespace and s.selector.matches(dict(p.labels))}, key=str)
        if len(members) == 1:
            return members[0]
        if len(members) > 1:
            raise EndpointError(f"service {text!r} has {len(members)} pods in the topology: {_some(members)}; "
                                "name one")
        if services:
            raise EndpointError(f"service {text!r} has no pod in the topology")
    names = [str(p) for p in topology.pods] + [p.name for p in topology.pods]
    close = difflib.get_close_matches(text, names, n=3)
    hint = f"; did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
    raise EndpointError(f"unknown endpoint {text!r}: no pod, service or IP address of that name{hint}")


def _some(pods: Sequence[Pod], limit: int = 5) -> str:
    shown = ", ".join(str(p) for p in pods[:limit])
    return shown + (f" and {len(pods) - limit} more" if len(pods) > limit else "")


# ------------------------------------------------------------------------------------------ topologies


def merge_topologies(first: Topology, second: Topology) -> tuple[Topology, list[str]]:
    """Both topologies' endpoints, once each. Pods alike in namespace, labels and ports are one pod
    (named as in `second`); pods of the same name that differ are both kept, as `name@old` and
    `name@new`. A namespace whose labels differ takes second's labels; notes say so."""
    notes: list[str] = []
    namespaces: dict[str, Mapping[str, str]] = dict(first.namespaces)
    for name, labels in second.namespaces.items():
        if name in namespaces and dict(namespaces[name]) != dict(labels):
            notes.append(f"namespace {name}: labels differ ({_labels(namespaces[name])} before, "
                         f"{_labels(labels)} after); evaluated with the new labels")
        namespaces[name] = labels

    def shape(p: Pod) -> tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, int, str], ...]]:
        return (p.namespace, tuple(sorted(p.labels.items())),
                tuple(sorted((k, n, proto.value) for k, (n, proto) in p.ports.items())))

    second_shapes = {shape(p) for p in second.pods}
    kept_first = [p for p in first.pods if shape(p) not in second_shapes]
    names_second = {(p.namespace, p.name) for p in second.pods}
    pods: list[Pod] = []
    for p in kept_first:
        pods.append(replace(p, name=p.name + "@old") if (p.namespace, p.name) in names_second else p)
    clashing = {(p.namespace, p.name) for p in kept_first}
    for p in second.pods:
        pods.append(replace(p, name=p.name + "@new") if (p.namespace, p.name) in clashing else p)
    externals = dict.fromkeys((*first.externals, *second.externals))
    return Topology(namespaces, tuple(sorted(pods, key=str)), tuple(externals)), notes


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else "no labels"


def with_externals(topology: Topology, extra: Topology) -> Topology:
    """topology plus extra's external endpoints (the addresses a program's CIDRs are probed with)."""
    externals = dict.fromkeys((*topology.externals, *extra.externals))
    return Topology(topology.namespaces, topology.pods, tuple(externals))


def sort_probes(probes: Iterable[Probe]) -> list[Probe]:
    return sorted(probes, key=probe_sort_key)
