"""Import of networking.k8s.io/v1 NetworkPolicy: objects -> IR, exactly, or a Gap.

Rule. Each policy is normalized first, the way the API server reads it: `null` is absent; policyTypes
absent means Ingress, plus Egress when egress rules are present; a port without protocol is TCP. Then,
for the pods its podSelector picks in its namespace (the subject; `{}` is every pod):
* every direction in policyTypes isolates the subject: with no rules that is an `isolate` (the whole
  namespace when the subject is every pod, else `isolate DIRECTION for SUBJECT`), and with rules the
  rules' own subject restricts it already;
* each rule is one allow rule: `from`/`to` absent or empty is every peer (`anywhere`), else the
  peers (ipBlock with except, pods by podSelector in the policy's namespace, namespaceSelector in any
  namespace - `{}` every namespace, `kubernetes.io/metadata.name=X` the namespace X - or both, AND);
  `ports` absent or empty is every port; a port absent is every port of its protocol; named ports and
  endPort ranges as written.
What `.seg` cannot say exactly is a Gap, and the part is left out of `understood`: an unknown selector
operator, a label that is not a string, a peer that is empty or mixes ipBlock with selectors, an except
outside its CIDR, an invalid port or port name, and (until `isolate ... for` exists) an isolation of
some pods in a direction that no rule of theirs restricts already.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from netdsl import ir
from netdsl.importer.model import IMPORTED, Gap, SourceObject, Translation

KINDS: frozenset[str] = frozenset({"NetworkPolicy"})
API_VERSION = "networking.k8s.io/v1"

_OPERATORS = {op.value: op for op in ir.Operator}
_PORT_NAME = re.compile(r"^(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


class GappedError(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def strip_nulls(value: Any) -> Any:
    """`null` in a mapping is the same as absent (what the API server stores)."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def normalize(body: Mapping[str, Any]) -> dict[str, Any]:
    """The policy with the API's defaults written out (policyTypes, protocol TCP)."""
    out: dict[str, Any] = strip_nulls(copy.deepcopy(dict(body)))
    spec = out.setdefault("spec", {})
    if not isinstance(spec, dict):
        spec = out["spec"] = {}
    spec.setdefault("podSelector", {})
    if "policyTypes" not in spec:
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    for key in ("ingress", "egress"):
        for rule in spec.get(key) or ():
            if isinstance(rule, dict):
                for port in rule.get("ports") or ():
                    if isinstance(port, dict):
                        port.setdefault("protocol", "TCP")
    return out


def selector(value: Any, path: str) -> ir.Selector:
    """A metav1.LabelSelector as an IR selector (`{}` selects everything)."""
    if value is None:
        return ir.EVERYTHING
    if not isinstance(value, dict):
        raise GappedError(path, "a label selector that is not a mapping")
    reqs: list[ir.Requirement] = []
    labels = value.get("matchLabels") or {}
    if not isinstance(labels, dict):
        raise GappedError(f"{path}.matchLabels", "matchLabels that is not a mapping")
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise GappedError(f"{path}.matchLabels", f"a label that is not a string: {k!r}: {v!r}")
        reqs.append(ir.Requirement(k, ir.Operator.IN, (v,)))
    for i, e in enumerate(value.get("matchExpressions") or ()):
        where = f"{path}.matchExpressions[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("key"), str) or e.get("operator") not in _OPERATORS:
            raise GappedError(where, "a match expression without a key or with an unknown operator")
        op = _OPERATORS[e["operator"]]
        values = e.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise GappedError(where, "match expression values that are not strings")
        if op in (ir.Operator.IN, ir.Operator.NOT_IN) and not values:
            raise GappedError(where, f"`{op.value}` with no values (Kubernetes rejects it)")
        if op in (ir.Operator.EXISTS, ir.Operator.DOES_NOT_EXIST) and values:
            raise GappedError(where, f"`{op.value}` with values (Kubernetes rejects it)")
        reqs.append(ir.Requirement(e["key"], op, tuple(sorted(set(values)))))
    return ir.Selector.of(reqs)


def namespace_match(sel: ir.Selector) -> ir.NamespaceMatch:
    if sel.is_everything:
        return ir.AllNamespaces()
    if len(sel.requirements) == 1:
        (r,) = sel.requirements
        if r.key == ir.NAMESPACE_NAME_LABEL and r.operator is ir.Operator.IN and len(r.values) == 1:
            return ir.NamespaceByName(r.values[0])
    return ir.NamespaceBySelector(sel)


def peer(value: Any, namespace: str, path: str) -> ir.Peer:
    if not isinstance(value, dict) or not value:
        raise GappedError(path, "an empty peer (Kubernetes requires ipBlock, podSelector or namespaceSelector)")
    if "ipBlock" in value:
        if set(value) != {"ipBlock"}:
            raise GappedError(path, "ipBlock together with a selector (Kubernetes rejects it)")
        block = value["ipBlock"]
        try:
            net = ipaddress.ip_network(str(block["cidr"]), strict=False)
            excepts = tuple(ipaddress.ip_network(str(e), strict=False) for e in block.get("except") or ())
        except (KeyError, TypeError, ValueError) as exc:
            raise GappedError(f"{path}.ipBlock", f"an invalid ipBlock: {exc}") from None
        for e in excepts:
            if e.version != net.version or not e.subnet_of(net) or e == net:  # type: ignore[arg-type]
                raise GappedError(f"{path}.ipBlock", f"except {e} is not strictly inside {net}")
        return ir.CidrPeer(net, tuple(sorted(set(excepts), key=lambda n: (n.version, n))))
    pods = selector(value.get("podSelector"), f"{path}.podSelector")
    if "namespaceSelector" in value:
        return ir.PodPeer(namespace_match(selector(value["namespaceSelector"], f"{path}.namespaceSelector")), pods)
    return ir.PodPeer(ir.NamespaceByName(namespace), pods)


def port(value: Any, path: str) -> ir.PortMatch:
    if not isinstance(value, dict):
        raise GappedError(path, "a port that is not a mapping")
    try:
        protocol = ir.Protocol(value.get("protocol", "TCP"))
    except ValueError:
        raise GappedError(path, f"protocol {value.get('protocol')!r} (TCP, UDP and SCTP exist)") from None
    number, end = value.get("port"), value.get("endPort")
    if number is None:
        if end is not None:
            raise GappedError(path, "endPort without port (Kubernetes rejects it)")
        return ir.PortMatch(protocol)
    if isinstance(number, str):
        if not _PORT_NAME.match(number) or not re.search("[a-z]", number):
            raise GappedError(path, f"port {number!r} is neither a number nor a valid port name")
        if end is not None:
            raise GappedError(path, "endPort with a named port (Kubernetes rejects it)")
        return ir.PortMatch(protocol, name=number)
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
        raise GappedError(path, f"port {number!r} is not 1-65535")
    if end is not None:
        if not isinstance(end, int) or isinstance(end, bool) or not number <= end <= 65535:
            raise GappedError(path, f"endPort {end!r} is not {number}-65535")
        return ir.PortMatch(protocol, number, end if end != number else None)
    return ir.PortMatch(protocol, number)


def _rule(obj: SourceObject, subject: ir.Workload, direction: ir.Direction, raw: Any, path: str,
          gaps: list[Gap]) -> ir.Rule | None:
    """One rule, or None if every peer or every port of it is gapped (then nothing of it is kept)."""
    if not isinstance(raw, dict):
        gaps.append(Gap(obj, path, "a rule that is not a mapping"))
        return None
    key = "from" if direction is ir.Direction.INGRESS else "to"
    peers: list[ir.Peer] = []
    kept_peers: list[Any] = []
    for i, p in enumerate(raw.get(key) or ()):
        try:
            peers.append(peer(p, subject.namespace, f"{path}.{key}[{i}]"))
            kept_peers.append(p)
        except GappedError as g:
            gaps.append(Gap(obj, g.path, g.reason))
    ports: list[ir.PortMatch] = []
    kept_ports: list[Any] = []
    for i, p in enumerate(raw.get("ports") or ()):
        try:
            ports.append(port(p, f"{path}.ports[{i}]"))
            kept_ports.append(p)
        except GappedError as g:
            gaps.append(Gap(obj, g.path, g.reason))
    if (raw.get(key) and not peers) or (raw.get("ports") and not ports):
        return None  # every peer (port) of it was gapped: keeping the rest would widen it to all
    raw.clear()  # the understood rule: only its kept parts (the normalized copy is ours to change)
    if kept_peers:
        raw[key] = kept_peers
    if kept_ports:
        raw["ports"] = kept_ports
    return ir.Rule(subject, direction, tuple(dict.fromkeys(peers or [ir.AnyPeer()])),
                   tuple(dict.fromkeys(ports)), IMPORTED)


def translate(objects: Sequence[SourceObject]) -> Translation:
    out = Translation("vanilla")
    pending: list[tuple[SourceObject, ir.Workload, ir.Direction]] = []
    for obj in objects:
        if obj.kind not in KINDS or obj.api_version != API_VERSION:
            out.gaps.append(Gap(obj, "", f"not a {API_VERSION} NetworkPolicy"))
            continue
        body = normalize(obj.body)
        spec = body["spec"]
        namespace = obj.namespace or "default"
        try:
            subject_sel = selector(spec.get("podSelector"), "spec.podSelector")
            types = spec["policyTypes"]
            if not isinstance(types, list) or not set(types) <= {"Ingress", "Egress"}:
                raise GappedError("spec.policyTypes", "policyTypes other than Ingress and Egress")
        except GappedError as g:
            out.gaps.append(Gap(obj, g.path, g.reason))
            continue
        subject = ir.Workload(namespace, "", subject_sel)
        out.namespaces.setdefault(namespace, ())
        for direction in (ir.Direction.INGRESS, ir.Direction.EGRESS):
            key = direction.value.lower()
            if direction.value not in types:
                spec.pop(key, None)  # rules of a direction the policy does not list are ignored
                continue
            rules = spec.get(key) or []
            kept = []
            for i, raw in enumerate(rules):
                rule = _rule(obj, subject, direction, raw, f"spec.{key}[{i}]", out.gaps)
                if rule is not None:
                    out.rules.append(rule)
                    kept.append(raw)
            spec[key] = kept
            if not kept:
                pending.append((obj, subject, direction))
        out.understood.append(body)
    _isolations(out, pending)
    return out


def _isolations(out: Translation, pending: list[tuple[SourceObject, ir.Workload, ir.Direction]]) -> None:
    """Directions a policy isolates without rules: `isolate` for every pod of the namespace; for some
    pods, nothing when a rule of theirs restricts them already, else `isolate DIRECTION for SUBJECT`."""
    restricted = {(r.subject.namespace, r.subject.selector, r.direction) for r in out.rules}
    for _obj, subject, direction in pending:
        if subject.selector.is_everything:
            iso = ir.Isolation(subject.namespace, direction, IMPORTED)
            if iso not in out.isolations:
                out.isolations.append(iso)
        elif (subject.namespace, subject.selector, direction) in restricted:
            continue
        else:
            iso = ir.Isolation(subject.namespace, direction, IMPORTED, None, subject)
            if iso not in out.isolations:
                out.isolations.append(iso)
