"""Import, Cilium: cilium.io/v2 CiliumNetworkPolicy (`spec` and `specs[]`) and
CiliumClusterwideNetworkPolicy -> netdsl IR that means exactly what Cilium enforces, or a Gap.

Rule: every part is read the way Cilium reads it (netdsl.semantics.cilium is the judge, and every form
accepted here is one it evaluates exactly); what `.seg` cannot say is a Gap naming the object, the
rule and why, and is left out of `understood`:

* each spec of `specs[]` is a rule of its own (Cilium adds them up); in `understood` it becomes an object
  of its own, with `enableDefaultDeny` written out for both directions (Cilium's default: true for a
  direction with rules, ingress or deny) so that leaving a gapped rule out never lifts a default deny;
* the subject (endpointSelector) must select pods only: a CiliumNetworkPolicy's always does (Cilium adds
  its namespace); a clusterwide one's needs a positive requirement on a pod or namespace label, since
  otherwise it also selects Cilium's health, Ingress and init endpoints (cilium/cilium#46949), which
  `.seg` cannot restrict. `nodeSelector` (host policies) is a Gap;
* a peer selector is read with the namespace requirement Cilium adds to it (the policy's namespace in a
  CiliumNetworkPolicy, any namespace in a clusterwide one, nothing when it names the namespace key, a
  namespace label or a `reserved:` label), then split into the pods it matches (label sources `k8s:`
  and `any:` are the pod's labels, `io.kubernetes.pod.namespace` the namespace's name,
  `io.cilium.k8s.namespace.labels.K` its label K, `io.cilium.k8s.policy.*` ordinary pod labels) and
  the reserved identities it matches (as entities: a selector of only negative requirements admits
  the Internet, the nodes, ...);
* a rule with only toPorts matches every peer (`anywhere`), the empty rule none (it only makes the
  direction default-deny: `isolate [... for]` the subject when nothing else restricts it);
* toPorts: protocol ANY (or none) is TCP, UDP and SCTP, port "0" every port of the protocol, names
  lowercased (Cilium compares them so); L7 `http` rules become `ir.HttpRule`; the only `dns` rule
  accepted is the DNS-proxy rule netdsl writes itself (`matchPattern: "*"` on the subject's
  kube-dns rule when the subject has toFQDNs), since the backend writes it back exactly there;
* `fqdn` in `.seg` always allows the subject's DNS lookups (kube-dns, UDP and TCP 53): a toFQDNs rule
  whose subject does not already allow them is a Gap (importing it would allow them);
* a policy Cilium itself rejects (peers of two kinds in one rule, L7 rules on a non-TCP port, a port
  that is not a number or a name, ...) is never enforced: it is a Gap as a whole.
Known pitfalls imported exactly (toFQDNs with no DNS-proxy rule, toPorts split from toFQDNs: seed
§4.3) are `Translation.warnings`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netdsl import ir
from netdsl.importer.model import IMPORTED, Gap, SourceObject, Translation
from netdsl.lower import DNS_NAMESPACE, DNS_SELECTOR
from netdsl.lower.values import check_fqdn, check_port_name
from netdsl.re2syntax import re2_problem
from netdsl.semantics.cilium import NAMESPACE_KEY, NAMESPACE_LABELS, RESERVED, CiliumSemantics

API_VERSION = "cilium.io/v2"
CNP = "CiliumNetworkPolicy"
CCNP = "CiliumClusterwideNetworkPolicy"
KINDS = frozenset({CNP, CCNP})

DIRECTIONS = ("ingress", "egress")
# what a rule may hold that `.seg` can say; anything else is named in a Gap
_PEER_KEYS = {
    "ingress": ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities"),
    "egress": ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toFQDNs"),
}
_UNSAID = {
    "toServices": "toServices (peers by Kubernetes service)",
    "toRequires": "toRequires (a requirement added to other rules' peers)",
    "fromRequires": "fromRequires (a requirement added to other rules' peers)",
    "toGroups": "toGroups (cloud provider groups)",
    "fromGroups": "fromGroups (cloud provider groups)",
    "toNodes": "toNodes (nodes by label)",
    "fromNodes": "fromNodes (nodes by label)",
    "icmps": "ICMP rules",
    "authentication": "mutual authentication",
}
_PORT_RULE_UNSAID = {
    "serverNames": "TLS server names (SNI)",
    "listener": "a custom Envoy listener",
    "terminatingTLS": "TLS termination",
    "originatingTLS": "TLS origination",
}
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(: [^\r\n]*)?")
_DNS_PROXY = [{"matchPattern": "*"}]  # the DNS-proxy rule the backend writes (netdsl.backends.cilium)

# Cilium's identities other than pods and the `reserved:` labels each carries (the Internet by family);
# see netdsl.semantics.model.CILIUM_RESERVED_LABELS.
_IDENTITIES: dict[str, frozenset[str]] = {
    "world-ipv4": frozenset({"world", "world-ipv4"}),
    "world-ipv6": frozenset({"world", "world-ipv6"}),
    "host": frozenset({"host"}),
    "remote-node": frozenset({"remote-node"}),
    "kube-apiserver": frozenset({"kube-apiserver", "remote-node"}),
    "health": frozenset({"health"}),
    "ingress": frozenset({"ingress"}),
    "init": frozenset({"init"}),
    "unmanaged": frozenset({"unmanaged"}),
}


class _InvalidError(Exception):
    """Cilium rejects the policy: it is never enforced (the whole object is a Gap)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


class _UnsaidError(Exception):
    """A part `.seg` cannot say: the enclosing rule (or spec, for the subject) is a Gap."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


@dataclass
class _Rule:
    """One Cilium rule as imported: its IR rules and its normalized form."""

    source: SourceObject
    path: str
    direction: str
    deny: bool
    subject: ir.Workload
    rules: list[ir.Rule]
    body: dict[str, Any]
    dns_proxy: bool = False  # it carries the DNS-proxy rule
    fqdn: bool = False
    only_ports: bool = False  # toPorts and nothing else: every peer
    kept: bool = True


@dataclass
class _Spec:
    source: SourceObject
    path: str
    subject: ir.Workload
    header: dict[str, Any]  # apiVersion, kind, metadata
    selector: dict[str, Any]
    default_deny: dict[str, bool]
    rules: list[_Rule] = field(default_factory=list)


def translate(objects: Sequence[SourceObject]) -> Translation:
    t = Translation("cilium")
    specs: list[_Spec] = []
    for obj in objects:
        if obj.kind not in KINDS or obj.api_version != API_VERSION:
            why = ("a Kubernetes NetworkPolicy beside Cilium policies (Cilium enforces both); import it "
                   "on its own" if obj.kind == "NetworkPolicy" else f"not a Cilium policy ({obj.api_version})")
            t.gaps.append(Gap(obj, "", why))
            continue
        try:
            specs.extend(_read_object(obj, t))
        except _InvalidError as e:
            t.gaps.append(Gap(obj, e.path, f"Cilium rejects this policy: {e.reason}; it is never enforced"))
    _settle_dns(specs, t)
    for s in specs:
        _emit(s, t)
    return t


# ---------------------------------------------------------------------------------------- objects


def _read_object(obj: SourceObject, t: Translation) -> list[_Spec]:
    body = obj.body
    parts: list[tuple[str, Any]] = []
    if body.get("spec") is not None:
        parts.append(("spec", body["spec"]))
    specs = body.get("specs")
    if specs is not None:
        if not isinstance(specs, list):
            raise _InvalidError("specs", "`specs` is not a list")
        parts += [(f"specs[{i}]", s) for i, s in enumerate(specs)]
    if not parts:
        raise _InvalidError("", "it has neither `spec` nor `specs`")
    out: list[_Spec] = []
    read: list[tuple[str, Mapping[str, Any]]] = []
    for path, spec in parts:  # every spec is checked first: one Cilium rejects takes the object down
        if not isinstance(spec, Mapping):
            raise _InvalidError(path, "a spec is not a mapping")
        _validate(spec, path)
        read.append((path, spec))
    for path, spec in read:
        try:
            out.append(_read_spec(obj, path, spec, t))
        except _UnsaidError as e:
            t.gaps.append(Gap(obj, e.path, e.reason))
    return out


def _validate(spec: Mapping[str, Any], path: str) -> None:
    """What Cilium's Rule.Sanitize refuses (pkg/policy/api/rule_validation.go)."""
    has_endpoints = spec.get("endpointSelector") is not None
    has_nodes = spec.get("nodeSelector") is not None
    if has_endpoints == has_nodes:
        raise _InvalidError(path, "a rule needs exactly one of endpointSelector and nodeSelector")
    for section in ("ingress", "egress", "ingressDeny", "egressDeny"):
        rules = spec.get(section)
        if rules is None:
            continue
        if not isinstance(rules, list):
            raise _InvalidError(f"{path}.{section}", f"`{section}` is not a list")
        direction = "ingress" if section.startswith("ingress") else "egress"
        for i, rule in enumerate(rules):
            where = f"{path}.{section}[{i}]"
            if not isinstance(rule, Mapping):
                raise _InvalidError(where, "a rule is not a mapping")
            kinds = [k for k in (*_PEER_KEYS[direction], "toServices", "toGroups", "fromGroups", "toNodes",
                                 "fromNodes") if _present(rule.get(k))]
            if len(kinds) > 1:
                raise _InvalidError(where, f"a rule combines {kinds[0]} and {kinds[1]}")
            if _present(rule.get("icmps")) and _present(rule.get("toPorts")):
                raise _InvalidError(where, "icmps beside toPorts")
            for j, entry in enumerate(_list(rule.get("toPorts"))):
                _validate_port_rule(entry, f"{where}.toPorts[{j}]", ingress=direction == "ingress")


def _validate_port_rule(entry: Any, where: str, ingress: bool) -> None:
    if not isinstance(entry, Mapping):
        raise _InvalidError(where, "a toPorts entry is not a mapping")
    rules = entry.get("rules") or {}
    if not isinstance(rules, Mapping):
        raise _InvalidError(f"{where}.rules", "`rules` is not a mapping")
    l7 = [k for k in ("http", "kafka", "dns", "l7proto") if rules.get(k) is not None]
    if len(l7) > 1:
        raise _InvalidError(f"{where}.rules", "several L7 protocols in one port rule")
    if ingress and _present(rules.get("dns")):
        raise _InvalidError(f"{where}.rules", "DNS rules on ingress")
    for k, p in enumerate(_list(entry.get("ports"))):
        at = f"{where}.ports[{k}]"
        if not isinstance(p, Mapping):
            raise _InvalidError(at, "a port is not a mapping")
        port = p.get("port")
        if port is None or str(port) == "":
            raise _InvalidError(at, "a port must be specified")
        protocol = str(p.get("protocol") or "ANY").upper()
        if protocol not in ("TCP", "UDP", "SCTP", "ANY", "VRRP", "IGMP"):
            raise _InvalidError(at, f"unknown protocol {p.get('protocol')!r}")
        if l7 and l7 != ["dns"] and protocol != "TCP":
            raise _InvalidError(at, "L7 rules on a port that is not TCP")
        if l7 and str(port) == "0":
            raise _InvalidError(at, "L7 rules on port 0")


def _present(value: Any) -> bool:
    """Cilium reads an absent, null or empty list alike (len() == 0)."""
    return value is not None and value != [] and value != {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _read_spec(obj: SourceObject, path: str, spec: Mapping[str, Any], t: Translation) -> _Spec:
    if spec.get("endpointSelector") is None:
        raise _UnsaidError(f"{path}.nodeSelector", "nodeSelector (a host policy: the nodes' own traffic)")
    clusterwide = obj.kind == CCNP
    metadata: dict[str, Any] = {"name": obj.name}
    if not clusterwide:
        namespace = obj.namespace or "default"
        metadata["namespace"] = namespace
        t.namespaces.setdefault(namespace, ())
    header = {"apiVersion": API_VERSION, "kind": obj.kind, "metadata": metadata}
    selector = _selector_body(spec["endpointSelector"], f"{path}.endpointSelector")
    subject = _subject(obj, selector, f"{path}.endpointSelector")
    explicit = spec.get("enableDefaultDeny") or {}
    if not isinstance(explicit, Mapping):
        raise _InvalidError(f"{path}.enableDefaultDeny", "enableDefaultDeny is not a mapping")
    default_deny = {}
    for d in DIRECTIONS:
        has_rules = bool(_list(spec.get(d))) or bool(_list(spec.get(d + "Deny")))
        value = explicit.get(d)
        default_deny[d] = bool(value) if value is not None else has_rules
    s = _Spec(obj, path, subject, header, selector, default_deny)
    policy = {**header, "spec": {"endpointSelector": selector}}
    for d in DIRECTIONS:
        for deny in (False, True):
            section = d + ("Deny" if deny else "")
            for i, rule in enumerate(_list(spec.get(section))):
                where = f"{path}.{section}[{i}]"
                if not default_deny[d]:
                    if not any(_present(v) for v in rule.values()):
                        continue  # the empty rule without default deny: nothing at all
                    t.gaps.append(Gap(obj, where, f"a rule under enableDefaultDeny.{d}: false (it allows "
                                                  "or denies without isolating its pods)"))
                    continue
                try:
                    s.rules.append(_rule(obj, policy, subject, where, d, deny, rule))
                except _UnsaidError as e:
                    t.gaps.append(Gap(obj, e.path, e.reason))
    return s


def _subject(obj: SourceObject, selector: dict[str, Any], path: str) -> ir.Workload:
    requirements = _requirements(selector, path)
    reserved = [r for r in requirements if r.key.startswith(RESERVED)]
    if reserved:
        raise _UnsaidError(path, "an endpointSelector naming Cilium's reserved labels (it selects Cilium's "
                            "own endpoints)")
    namespace_part, pods = _split(requirements)
    if obj.kind == CNP:
        namespace = obj.namespace or "default"
        if namespace_part:
            raise _UnsaidError(path, "an endpointSelector naming the namespace or its labels")
        selector_ir = ir.Selector.of(pods)
        return ir.Workload(namespace, str(selector_ir) if pods else "all pods", selector_ir)
    if not any(_positive(r) for r in requirements):
        raise _UnsaidError(path, "a clusterwide endpointSelector without a positive requirement on a pod or "
                            "namespace label also selects Cilium's health, Ingress and init endpoints "
                            "(cilium/cilium#46949)")
    cluster = _namespace_match(namespace_part)
    if cluster is None:
        raise _UnsaidError(path, "an endpointSelector that selects no pod")
    selector_ir = ir.Selector.of(pods)
    return ir.Workload("", str(selector_ir) if pods else "all pods", selector_ir, cluster=cluster)


# ---------------------------------------------------------------------------------------- selectors


def _selector_body(value: Any, path: str) -> dict[str, Any]:
    """A label selector as Cilium reads it (null parts dropped), checked."""
    if not isinstance(value, Mapping):
        raise _InvalidError(path, "a selector is not a mapping")
    out: dict[str, Any] = {}
    labels = value.get("matchLabels") or {}
    expressions = value.get("matchExpressions") or []
    if not isinstance(labels, Mapping) or not isinstance(expressions, list):
        raise _InvalidError(path, "matchLabels is not a mapping or matchExpressions not a list")
    if labels:
        for k, v in labels.items():
            if not isinstance(v, str):
                raise _InvalidError(f"{path}.matchLabels", f"label {k!r} has a value that is not a string")
        out["matchLabels"] = {str(k): v for k, v in labels.items()}
    exprs = []
    for i, e in enumerate(expressions):
        where = f"{path}.matchExpressions[{i}]"
        if not isinstance(e, Mapping) or "key" not in e:
            raise _InvalidError(where, "an expression without a key")
        op = e.get("operator")
        values = e.get("values") or []
        if op not in ("In", "NotIn", "Exists", "DoesNotExist") or not isinstance(values, list):
            raise _InvalidError(where, f"unknown operator {op!r}")
        if (op in ("In", "NotIn")) != bool(values) or not all(isinstance(v, str) for v in values):
            raise _InvalidError(where, f"{op} with {'no ' if not values else ''}values")
        item: dict[str, Any] = {"key": str(e["key"]), "operator": op}
        if values:
            item["values"] = list(values)
        exprs.append(item)
    if exprs:
        out["matchExpressions"] = exprs
    return out


def _requirements(selector: Mapping[str, Any], path: str) -> list[ir.Requirement]:
    """Cilium label keys without their source (`k8s:` and `any:` are the pod's labels), `reserved:` kept."""
    out = []
    for k, v in (selector.get("matchLabels") or {}).items():
        out.append(ir.Requirement(_key(k, path), ir.Operator.IN, (v,)))
    for e in selector.get("matchExpressions") or ():
        values = tuple(sorted(set(e.get("values") or ())))
        out.append(ir.Requirement(_key(e["key"], path), ir.Operator(e["operator"]), values))
    return out


def _key(key: str, path: str) -> str:
    for source in ("k8s:", "any:"):
        if key.startswith(source):
            return key[len(source):]
    if key.startswith(RESERVED) or ":" not in key:
        return key
    raise _UnsaidError(path, f"a label with source {key.split(':')[0]!r} ({key})")


def _positive(r: ir.Requirement) -> bool:
    """A requirement that no endpoint without the label satisfies."""
    return r.operator in (ir.Operator.IN, ir.Operator.EXISTS)


def _split(requirements: list[ir.Requirement]) -> tuple[list[ir.Requirement], list[ir.Requirement]]:
    """(requirements on the namespace, by ir.NAMESPACE_NAME_LABEL and its labels; on the pod)."""
    namespace, pods = [], []
    for r in requirements:
        if r.key == NAMESPACE_KEY:
            namespace.append(ir.Requirement(ir.NAMESPACE_NAME_LABEL, r.operator, r.values))
        elif r.key.startswith(NAMESPACE_LABELS):
            namespace.append(ir.Requirement(r.key[len(NAMESPACE_LABELS):], r.operator, r.values))
        else:
            pods.append(r)
    return namespace, pods


def _namespace_match(requirements: list[ir.Requirement]) -> ir.NamespaceMatch | None:
    """Which namespaces, for pods (which always carry the namespace key); None: none."""
    kept = [r for r in requirements if not (r.key == ir.NAMESPACE_NAME_LABEL and r.operator is ir.Operator.EXISTS)]
    selector = ir.Selector.of(kept)
    if not selector.satisfiable or any(r.key == ir.NAMESPACE_NAME_LABEL and r.operator is ir.Operator.DOES_NOT_EXIST
                                       for r in kept):
        return None
    if not kept:
        return ir.AllNamespaces()
    if len(kept) == 1 and kept[0].key == ir.NAMESPACE_NAME_LABEL and kept[0].operator is ir.Operator.IN \
            and len(kept[0].values) == 1:
        return ir.NamespaceByName(kept[0].values[0])
    return ir.NamespaceBySelector(selector)


def _selector_peers(requirements: list[ir.Requirement], path: str) -> list[ir.Peer]:
    """The pods and the reserved identities an (effective) endpoint selector matches, as peers."""
    reserved = [r for r in requirements if r.key.startswith(RESERVED)]
    others = [r for r in requirements if not r.key.startswith(RESERVED)]
    peers: list[ir.Peer] = []
    every_pod = False
    if not any(_positive(r) for r in reserved):  # pods carry no reserved label
        namespace_part, pods = _split(others)
        match = _namespace_match(namespace_part)
        selector = ir.Selector.of(pods)
        if match is not None and selector.satisfiable:
            peers.append(ir.PodPeer(match, selector))
            every_pod = isinstance(match, ir.AllNamespaces) and selector.is_everything
    matched = {name for name, labels in _IDENTITIES.items()
               if all(r.matches({RESERVED + label: "" for label in labels}) for r in requirements)}
    entities: list[str] = []
    if {"world-ipv4", "world-ipv6"} <= matched:
        entities.append("world")
    else:
        entities += sorted(matched & {"world-ipv4", "world-ipv6"})
    entities += [n for n in ("host", "health", "ingress", "init", "unmanaged") if n in matched]
    if "remote-node" in matched:
        if "kube-apiserver" not in matched:
            raise _UnsaidError(path, "a selector matching the remote-node identity but not kube-apiserver "
                                "(entity remote-node includes both)")
        entities.append("remote-node")
    elif "kube-apiserver" in matched:
        entities.append("kube-apiserver")
    if every_pod and matched == set(_IDENTITIES):
        return [ir.EntityPeer("all")]
    if every_pod and matched == set(_IDENTITIES) - {"world-ipv4", "world-ipv6"}:
        return [ir.EntityPeer("cluster")]
    return peers + [ir.EntityPeer(e) for e in entities]


# ---------------------------------------------------------------------------------------- rules


def _rule(obj: SourceObject, policy: Mapping[str, Any], subject: ir.Workload, path: str, direction: str,
          deny: bool, rule: Mapping[str, Any]) -> _Rule:
    for key, why in _UNSAID.items():
        if _present(rule.get(key)):
            raise _UnsaidError(f"{path}.{key}", why)
    to = direction == "egress"
    known = {*_PEER_KEYS[direction], "toPorts", *_UNSAID}
    for key in rule:
        if key not in known:
            raise _UnsaidError(f"{path}.{key}", f"`{key}` in an {direction} rule")
    body: dict[str, Any] = {}
    peers: list[ir.Peer] = []
    fqdn = False
    for key in _PEER_KEYS[direction]:
        values = rule.get(key)
        if not _present(values):
            continue
        if not isinstance(values, list):
            raise _InvalidError(f"{path}.{key}", f"`{key}` is not a list")
        where = f"{path}.{key}"
        if key.endswith("Endpoints"):
            selectors = [_selector_body(v, f"{where}[{i}]") for i, v in enumerate(values)]
            body[key] = selectors
            for i, sel in enumerate(selectors):
                # as Cilium matches it: with the namespace requirement it adds (sources dropped)
                effective = CiliumSemantics.peer_selector(sel, policy)
                peers += _selector_peers(_requirements(effective, f"{where}[{i}]"), f"{where}[{i}]")
        elif key.endswith("CIDR"):
            body[key] = [str(v) for v in values]
            peers += [ir.CidrPeer(_network(str(v), f"{where}[{i}]")) for i, v in enumerate(values)]
        elif key.endswith("CIDRSet"):
            blocks = []
            for i, block in enumerate(values):
                at = f"{where}[{i}]"
                if not isinstance(block, Mapping):
                    raise _InvalidError(at, "a CIDR set entry is not a mapping")
                if block.get("cidrGroupRef") or block.get("cidrGroupSelector"):
                    raise _UnsaidError(at, "a CiliumCIDRGroup reference")
                if not isinstance(block.get("cidr"), str):
                    raise _InvalidError(at, "a CIDR set entry without `cidr`")
                if "/" not in block["cidr"]:
                    raise _InvalidError(at, "a CIDR set entry needs a prefix length")
                net = _network(block["cidr"], at)
                excepts = tuple(_network(str(e), f"{at}.except") for e in _list(block.get("except")))
                for e in excepts:
                    if e.version != net.version or e.network_address not in net:
                        raise _InvalidError(f"{at}.except", f"{net} does not contain {e}")
                out: dict[str, Any] = {"cidr": block["cidr"]}
                if excepts:
                    out["except"] = [str(e) for e in _list(block.get("except"))]
                blocks.append(out)
                peers.append(ir.CidrPeer(net, excepts))
            body[key] = blocks
        elif key.endswith("Entities"):
            names = [str(v) for v in values]
            for name in names:
                if name not in ir.ENTITIES:
                    raise _InvalidError(where, f"unknown entity {name!r}")
            body[key] = names
            peers += [ir.EntityPeer(n) for n in dict.fromkeys(names)]
        else:  # toFQDNs
            if deny:
                raise _UnsaidError(where, "toFQDNs in a deny rule")
            fqdn = True
            fqdns: list[dict[str, str]] = []
            for i, f in enumerate(values):
                at = f"{where}[{i}]"
                if not isinstance(f, Mapping) or len([k for k in ("matchName", "matchPattern") if f.get(k)]) != 1:
                    raise _InvalidError(at, "an FQDN selector needs one of matchName and matchPattern")
                which = "matchName" if f.get("matchName") else "matchPattern"
                name = str(f[which]).lower().rstrip(".")
                fqdns.append({which: name})
                if "**" in name:
                    raise _UnsaidError(at, f"the multi-label wildcard ** ({name})")
                if which == "matchName" and "*" in name:
                    raise _InvalidError(at, f"a matchName with a wildcard ({name})")
                if (problem := check_fqdn(name)) is not None:
                    raise _UnsaidError(at, f"DNS name {name!r}: {problem}")
                peers.append(ir.FqdnPeer(name))
            body[key] = fqdns
    only_ports = not body
    ports_body, groups, dns_proxy = _ports(rule.get("toPorts"), f"{path}.toPorts", deny)
    if ports_body:
        body["toPorts"] = ports_body
    if only_ports and ports_body:
        peers = [ir.AnyPeer()]
    elif only_ports:
        peers = []  # the empty rule: matches nothing (it only makes the direction default-deny)
    peers = list(dict.fromkeys(peers))
    d = ir.Direction.EGRESS if to else ir.Direction.INGRESS
    action = ir.Action.DENY if deny else ir.Action.ALLOW
    rules = [ir.Rule(subject, d, tuple(peers), ports, IMPORTED, f"{obj.title} {path}", action, http=http)
             for ports, http in groups] if peers else []
    return _Rule(obj, path, direction, deny, subject, rules, body, dns_proxy, fqdn, only_ports and bool(ports_body))


def _network(text: str, path: str) -> ir.IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _InvalidError(path, f"not a CIDR: {text!r}") from None


def _ports(value: Any, path: str, deny: bool
           ) -> tuple[list[dict[str, Any]], list[tuple[tuple[ir.PortMatch, ...], tuple[ir.HttpRule, ...]]], bool]:
    """toPorts -> (normalized entries, (ports, http) groups, whether it is the DNS-proxy rule).
    No toPorts: one group of every port."""
    entries = _list(value)
    if not entries:
        return [], [((), ())], False
    body: list[dict[str, Any]] = []
    groups: dict[tuple[ir.HttpRule, ...], list[ir.PortMatch]] = {}
    dns_proxy = False
    for j, entry in enumerate(entries):
        where = f"{path}[{j}]"
        for key, why in _PORT_RULE_UNSAID.items():
            if _present(entry.get(key)):
                raise _UnsaidError(f"{where}.{key}", why)
        ports_out: list[dict[str, Any]] = []
        matches: list[ir.PortMatch] = []
        for k, p in enumerate(_list(entry.get("ports"))):
            for item, match in _port(p, f"{where}.ports[{k}]"):
                ports_out.append(item)
                matches.append(match)
        if not matches:
            raise _UnsaidError(f"{where}", "a toPorts entry without ports")
        out: dict[str, Any] = {"ports": ports_out}
        http: tuple[ir.HttpRule, ...] = ()
        rules = entry.get("rules") or {}
        if _present(rules):
            if deny:
                raise _UnsaidError(f"{where}.rules", "L7 rules in a deny rule")
            other = [k for k in rules if k not in ("http", "dns")]
            if other:
                raise _UnsaidError(f"{where}.rules.{other[0]}", f"L7 {other[0]} rules")
            if "http" in rules:
                http = _http(rules["http"], f"{where}.rules.http")
                out["rules"] = {"http": [_http_body(h) for h in http]}
            else:
                if rules.get("dns") != _DNS_PROXY:
                    raise _UnsaidError(f"{where}.rules.dns", "L7 DNS rules other than the DNS-proxy rule "
                                                         "(`matchPattern: \"*\"`) netdsl writes")
                dns_proxy = True
                out["rules"] = {"dns": [dict(d) for d in _DNS_PROXY]}
        body.append(out)
        groups.setdefault(http, []).extend(matches)
    return body, [(tuple(dict.fromkeys(ms)), http) for http, ms in groups.items()], dns_proxy


def _port(p: Mapping[str, Any], path: str) -> list[tuple[dict[str, Any], ir.PortMatch]]:
    """One Cilium port entry -> one normalized entry and PortMatch per protocol (ANY: TCP, UDP, SCTP)."""
    text = str(p["port"])
    protocol = str(p.get("protocol") or "ANY").upper()
    if protocol in ("VRRP", "IGMP"):
        raise _UnsaidError(path, f"protocol {protocol}")
    protocols = [ir.Protocol(protocol)] if protocol != "ANY" else list(ir.Protocol)
    end = p.get("endPort")
    number: int | None = None
    name: str | None = None
    if re.fullmatch(r"0|[1-9][0-9]*", text):
        number = int(text)
        if number > 65535:
            raise _InvalidError(path, f"port {number} is out of range")
    else:
        name = text.lower()
        if check_port_name(name) is not None:
            raise _InvalidError(path, f"port {text!r} is neither a number nor a port name")
    if end is not None and (not isinstance(end, int) or isinstance(end, bool)):
        raise _InvalidError(path, "endPort is not a number")
    if end is not None and end != 0 and name is not None:
        raise _UnsaidError(path, "endPort after a named port")
    if end is not None and end != 0 and number is not None and (number == 0 or end < number):
        raise _UnsaidError(path, f"the port range {number}-{end}")
    out = []
    for proto in protocols:
        item: dict[str, Any] = {"port": name if name is not None else str(number), "protocol": proto.value}
        if name is not None:
            match = ir.PortMatch(proto, name=name)
        elif number == 0:
            match = ir.PortMatch(proto)
        elif end and end > (number or 0):
            item["endPort"] = end
            match = ir.PortMatch(proto, number, end)
        else:
            match = ir.PortMatch(proto, number)
        out.append((item, match))
    return out


def _http(value: Any, path: str) -> tuple[ir.HttpRule, ...]:
    if not isinstance(value, list) or not value:
        raise _UnsaidError(path, "an empty list of HTTP rules")
    out = []
    for i, h in enumerate(value):
        at = f"{path}[{i}]"
        if not isinstance(h, Mapping):
            raise _InvalidError(at, "an HTTP rule is not a mapping")
        unknown = [k for k in h if k not in ("method", "path", "host", "headers")]
        if unknown:
            raise _UnsaidError(f"{at}.{unknown[0]}", f"HTTP {unknown[0]}")
        method = h.get("method") or None
        if method is not None and method not in _HTTP_METHODS:
            raise _UnsaidError(f"{at}.method", f"HTTP method {method!r} (a regular expression, or one `.seg` lacks)")
        texts = {}
        for key in ("path", "host"):
            text = h.get(key) or None
            if text is not None and (
                    not isinstance(text, str) or re2_problem(text) is not None or re.search(r"[\s\"]", text)):
                raise _UnsaidError(f"{at}.{key}", f"HTTP {key} {text!r}")
            texts[key] = text
        headers = [str(x) for x in _list(h.get("headers"))]
        for header in headers:
            if not _HEADER.fullmatch(header) or '"' in header:
                raise _UnsaidError(f"{at}.headers", f"HTTP header {header!r} (write \"Name: value\" or \"Name\")")
        out.append(ir.HttpRule(method, texts["path"], texts["host"], tuple(headers)))
    return tuple(dict.fromkeys(out))


def _http_body(h: ir.HttpRule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (("method", h.method), ("path", h.path), ("host", h.host)):
        if value is not None:
            out[key] = value
    if h.headers:
        out["headers"] = list(h.headers)
    return out


# ---------------------------------------------------------------------------------------- DNS


def _is_dns(r: ir.Rule) -> bool:
    """The rule netdsl's backend gives the DNS-proxy rule (netdsl.backends.cilium): one allow to kube-dns,
    port 53 only."""
    return (r.action is ir.Action.ALLOW and r.direction is ir.Direction.EGRESS and len(r.peers) == 1
            and isinstance(p := r.peers[0], ir.PodPeer) and p.namespaces == ir.NamespaceByName(DNS_NAMESPACE)
            and p.pods == DNS_SELECTOR and bool(r.ports)
            and all(m.port == 53 and m.end_port is None for m in r.ports) and not r.http)


def _reaches_dns(r: ir.Rule, protocol: ir.Protocol) -> bool:
    """Whether an allow rule lets its subject reach every kube-dns pod on `protocol` port 53."""
    if r.action is not ir.Action.ALLOW or r.direction is not ir.Direction.EGRESS or r.http:
        return False
    if r.ports and not any(m.protocol is protocol and m.name is None and (
            m.port is None or m.port <= 53 <= (m.end_port or m.port)) for m in r.ports):
        return False
    dns_labels = {"k8s-app": "kube-dns"}
    for p in r.peers:
        if isinstance(p, ir.AnyPeer) or (isinstance(p, ir.EntityPeer) and p.name in ("all", "cluster")):
            return True
        if isinstance(p, ir.PodPeer) and all(q.key != "k8s-app" or q.matches(dns_labels) for q in p.pods.requirements) \
                and all(q.key == "k8s-app" for q in p.pods.requirements):
            if isinstance(p.namespaces, ir.AllNamespaces) or p.namespaces == ir.NamespaceByName(DNS_NAMESPACE):
                return True
            if isinstance(p.namespaces, ir.NamespaceBySelector) and all(
                    q.key == ir.NAMESPACE_NAME_LABEL and q.matches({q.key: DNS_NAMESPACE})
                    for q in p.namespaces.selector.requirements):
                return True
    return False


def _settle_dns(specs: list[_Spec], t: Translation) -> None:
    """The DNS-proxy rule is kept where netdsl's backend writes it back (the subject has toFQDNs and the
    rule is its kube-dns rule); a toFQDNs rule only where the subject already allows its DNS lookups,
    which `.seg`'s `fqdn` adds. Leaving one out can change the other: repeat until nothing changes."""
    rules = [r for s in specs for r in s.rules]
    changed = True
    while changed:
        changed = False
        live = [r for r in rules if r.kept]
        with_fqdn = {r.subject for r in live if r.fqdn}
        for r in live:
            if r.dns_proxy and not (r.subject in with_fqdn and all(_is_dns(x) for x in r.rules)):
                r.kept, changed = False, True
                why = ("the DNS-proxy rule (toPorts.rules.dns) on a rule other than netdsl's own: one allow to "
                       "kube-dns (kube-system, k8s-app=kube-dns) on port 53 of a pod with toFQDNs")
                t.gaps.append(Gap(r.source, r.path, why))
        live = [r for r in rules if r.kept]
        for r in live:
            if not r.fqdn:
                continue
            allows = [x for o in live if o.subject == r.subject for x in o.rules]
            if not all(any(_reaches_dns(x, proto) for x in allows) for proto in (ir.Protocol.UDP, ir.Protocol.TCP)):
                r.kept, changed = False, True
                t.gaps.append(Gap(r.source, r.path,
                                  "toFQDNs for pods that may not look names up on both UDP and TCP 53 at kube-dns: "
                                  "`.seg`'s `fqdn` also allows those lookups"))
    # the pitfalls are the input's, whether or not its parts were imported
    for subject in dict.fromkeys(r.subject for r in rules if r.fqdn):
        theirs = [r for r in rules if r.subject == subject]
        first = next(r for r in theirs if r.fqdn)
        if not any(r.dns_proxy for r in theirs):
            t.warnings.append(Gap(first.source, first.path,
                                  "toFQDNs without a DNS-proxy rule (toPorts.rules.dns on the kube-dns rule): Cilium "
                                  "only learns these names' addresses from lookups its proxy sees (seed §4.3); "
                                  "netdsl's output adds the rule"))
        for r in theirs:
            if r.only_ports and r.direction == "egress" and not r.deny:
                t.warnings.append(Gap(r.source, r.path,
                                      "toPorts in a rule of its own beside toFQDNs opens these ports to every "
                                      "destination (seed §4.3): ports that limit the names belong in their rule"))


# ---------------------------------------------------------------------------------------- output


def _emit(s: _Spec, t: Translation) -> None:
    spec: dict[str, Any] = {"endpointSelector": s.selector,
                            "enableDefaultDeny": {d: s.default_deny[d] for d in DIRECTIONS}}
    for d in DIRECTIONS:
        restricted = False
        for deny in (False, True):
            section = d + ("Deny" if deny else "")
            kept = [r for r in s.rules if r.kept and r.direction == d and r.deny == deny]
            if kept:
                spec[section] = [r.body for r in kept]
            for r in kept:
                t.rules.extend(r.rules)
                restricted = restricted or bool(r.rules)
        if s.default_deny[d] and not restricted:
            _isolate(s, ir.Direction.INGRESS if d == "ingress" else ir.Direction.EGRESS, t)
    t.understood.append({**s.header, "spec": spec})


def _isolate(s: _Spec, direction: ir.Direction, t: Translation) -> None:
    """Default deny for the subject's pods with nothing allowed: `isolate` of its namespaces when it is
    all their pods, else `isolate ... for` the subject."""
    subject = s.subject
    if subject.selector.is_everything:
        t.isolations.append(ir.Isolation(subject.namespace, direction, IMPORTED, subject.cluster))
    else:
        t.isolations.append(ir.Isolation(subject.namespace, direction, IMPORTED, subject.cluster, subject))
