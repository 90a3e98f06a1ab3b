"""projectcalico.org/v3: Tier, NetworkPolicy, GlobalNetworkPolicy, GlobalNetworkSet (and the Staged
kinds with --staged).

Calico evaluates tiers by order, policies in a tier by order, rules in a policy in order; the first
Allow or Deny decides, Pass goes on to the next tier, and a tier that applies to a pod but decides
nothing applies its defaultAction. So:

* a tier with only allow statements gets one policy per workload (order does not matter there);
  a tier with deny or pass statements gets one policy per statement and workload, ordered like the
  statements, with gaps (100, 200, ...) so hand-written policies can be slotted in between;
* every `tier` is emitted with an explicit defaultAction: Pass unless the program says
  `otherwise deny` - the seed's §8.2 black-hole is a tier without it;
* rule fields are ANDed in Calico, so each peer becomes its own rule, and each protocol too;
* every selector that means pods says so in a way no workload or non-namespaced resource satisfies:
  a GlobalNetworkPolicy's subject and every rule peer meaning pods carry a namespaceSelector with a
  positive requirement (see namespace_selector) - Calico puts `projectcalico.org/namespace` and the
  `pcns.` namespace labels on every workload endpoint and strips pods' attempts to set them, and host
  endpoints and network sets have none; a NetworkPolicy is scoped to its namespace by Calico itself.
  A rule that picks a GlobalNetworkSet by label always says `namespaceSelector: global()`
  (non-namespaced resources only), so a pod carrying the set's label is not the set. Host endpoints
  may carry any label an admin gives them, except Calico's (`projectcalico.org/`, `pcns.`) and
  netdsl's (`netdsl.dev/`); with that, only `anywhere` reaches them (netdsl.semantics.calico).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from netdsl import ir
from netdsl.backends import (
    MANAGED_BY,
    Backend,
    Capability,
    Manifest,
    Options,
    digest,
    isolation_groups,
    object_annotations,
    rule_comment,
)
from netdsl.diagnostics import Diagnostic, error
from netdsl.semantics.program import evaluation_order
from netdsl.source import Span

API_VERSION = "projectcalico.org/v3"
NETWORK_SET_LABEL = "netdsl.dev/network-set"
CALICO_NAMESPACE_NAME = "projectcalico.org/name"  # Calico's own label for a namespace's name
DEFAULT_VERSION = "3.32"
ALLOW_ONLY_ORDER = 1000


def parse_version(text: str) -> tuple[int, int]:
    major, _, rest = text.removeprefix("v").partition(".")
    minor = rest.partition(".")[0]
    return int(major), int(minor)


def quote(value: str) -> str:
    """A Calico selector string literal. Label values are validated (letters, digits, - _ .), so no
    escaping is ever needed; refuse anything else rather than emit a selector that means something else."""
    if "'" in value or "\\" in value:
        raise ValueError(f"cannot quote {value!r} in a Calico selector")
    return f"'{value}'"


def selector(sel: ir.Selector, *, namespace_labels: bool = False) -> str:
    """A Calico selector expression: `app == 'web' && tier in {'a', 'b'} && !has(legacy)`."""
    parts = []
    for r in sel.requirements:
        key = CALICO_NAMESPACE_NAME if namespace_labels and r.key == ir.NAMESPACE_NAME_LABEL else r.key
        values = ", ".join(quote(v) for v in r.values)
        if r.operator is ir.Operator.IN:
            parts.append(f"{key} == {quote(r.values[0])}" if len(r.values) == 1 else f"{key} in {{{values}}}")
        elif r.operator is ir.Operator.NOT_IN:
            # `not in` also matches pods without the label, like Kubernetes' NotIn
            parts.append(f"{key} not in {{{values}}}")
        elif r.operator is ir.Operator.EXISTS:
            parts.append(f"has({key})")
        else:
            parts.append(f"!has({key})")
    return " && ".join(parts) if parts else "all()"


def namespace_selector(match: ir.NamespaceMatch) -> str:
    """A namespaceSelector that only namespaces satisfy. Calico evaluates it on the endpoint's
    `pcns.`-prefixed namespace labels, which host endpoints and network sets lack, so a selector of
    negative requirements only (`env != 'x'`, `!has(k)`, `not in`) would also pick every host endpoint
    and network set: such a selector also requires `has(projectcalico.org/name)`, the label Calico puts
    on every namespace. `all()` is Calico's own "every namespace" (has(projectcalico.org/namespace))."""
    if isinstance(match, ir.NamespaceByName):
        return f"{CALICO_NAMESPACE_NAME} == {quote(match.name)}"
    if isinstance(match, ir.NamespaceBySelector):
        text = selector(match.selector, namespace_labels=True)
        positive = (ir.Operator.IN, ir.Operator.EXISTS)
        if match.selector.requirements and not any(r.operator in positive for r in match.selector.requirements):
            return f"has({CALICO_NAMESPACE_NAME}) && {text}"
        return text
    return "all()"


def exact_nets(peer: ir.CidrPeer) -> list[str]:
    """The CIDR minus its except blocks, as a list of CIDRs (for network sets, which have no except).
    The gaps between the sorted except blocks, each summarized into CIDRs: O(n log n) in the excepts
    (cutting each except out of every piece so far was quadratic)."""
    cidr = peer.cidr
    inside = sorted((int(ex.network_address), int(ex.broadcast_address)) for ex in peer.excepts
                    if ex.version == cidr.version and ex.subnet_of(cidr))  # type: ignore[arg-type]
    make = ipaddress.IPv4Address if cidr.version == 4 else ipaddress.IPv6Address
    nets: list[ir.IPNetwork] = []
    start, end = int(cidr.network_address), int(cidr.broadcast_address)
    for lo, hi in inside:
        if lo > start:
            nets.extend(ipaddress.summarize_address_range(make(start), make(lo - 1)))
        start = max(start, hi + 1)
    if start <= end:
        nets.extend(ipaddress.summarize_address_range(make(start), make(end)))
    return [str(n) for n in ipaddress.collapse_addresses(nets)]  # type: ignore[type-var]


def rule_content(rules: Sequence[ir.Rule]) -> str:
    """What a statement's rules say - direction, action, peers, ports, HTTP - without where or how it
    was written: the name of an ordered policy digests this, so reformatting or moving a statement
    keeps its object's name, and two statements that say different things never share one."""
    parts = []
    for r in rules:
        peers = sorted(repr(_unlabelled(p)) for p in r.peers)
        parts.append(f"{r.direction.value}|{r.action.value}|{peers}|{sorted(map(repr, r.ports))}|{r.http!r}")
    return "\n".join(sorted(parts))


def _unlabelled(peer: ir.Peer) -> ir.Peer:
    """A peer without how the user named it (labels do not take part in equality, but show in repr)."""
    if isinstance(peer, ir.PodPeer):
        return ir.PodPeer(peer.namespaces, peer.pods)
    if isinstance(peer, ir.CidrPeer):
        return ir.CidrPeer(peer.cidr, peer.excepts)
    if isinstance(peer, ir.AnyPeer):
        return ir.AnyPeer()
    return peer


class CalicoBackend(Backend):
    name = "calico"
    capabilities = frozenset({
        Capability.ALLOW, Capability.DENY, Capability.PASS, Capability.TIERS, Capability.CLUSTER_WIDE,
        Capability.ISOLATION, Capability.NAMED_PORTS, Capability.PORT_RANGES, Capability.SCTP,
        Capability.CIDR_EXCEPT,
    })

    def prefixed_name(self, manifest: Manifest, prefix: str) -> str | None:
        """Tiers keep their names (policies name them in `spec.tier`); before 3.32 a tier's policy must
        be named `<tier>.<name>`, so the prefix goes after the dot."""
        if manifest.kind == "Tier":
            return None
        tier = manifest.body.get("spec", {}).get("tier")
        if tier is not None and manifest.name.startswith(tier + "."):
            return f"{tier}.{prefix}{manifest.name[len(tier) + 1:]}"
        return prefix + manifest.name

    def check_options(self, program: ir.Program, options: Options) -> list[Diagnostic]:
        version = parse_version(str(options.extra.get("calico_version", DEFAULT_VERSION)))
        out = []
        if version < (3, 29) and program.tiers:
            out.append(error(
                "unsupported", f"Calico {version[0]}.{version[1]} has no policy tiers (open source "
                "Calico has them from 3.29)", program.tiers[0].span, "use --calico-version 3.29 or later",
            ))
        if version < (3, 30) and options.extra.get("staged"):
            out.append(error(
                "unsupported", f"Calico {version[0]}.{version[1]} has no staged policies (open source "
                "Calico has them from 3.30)", None, "use --calico-version 3.30 or later",
            ))
        return out

    def build(self, program: ir.Program, options: Options) -> list[Manifest]:
        return _Builder(program, options).build()


class _Builder:
    def __init__(self, program: ir.Program, options: Options) -> None:
        self.program = program
        self.version = parse_version(str(options.extra.get("calico_version", DEFAULT_VERSION)))
        self.staged = bool(options.extra.get("staged"))
        self.network_sets = self.reused_network_sets()
        self.out: list[Manifest] = []

    # ---- objects
    def build(self) -> list[Manifest]:
        for t in self.program.tiers:
            body = {
                "apiVersion": API_VERSION,
                "kind": "Tier",
                "metadata": self.metadata(t.name, None, [t.span]),
                "spec": {"order": t.order, "defaultAction": t.otherwise.value},
            }
            self.add(body, "Tier.yaml.j2", rank=0)
        for name, (peer, spans) in sorted(self.network_sets.items()):
            body = {
                "apiVersion": API_VERSION,
                "kind": "GlobalNetworkSet",
                "metadata": self.metadata(name, None, spans, {NETWORK_SET_LABEL: name}),
                "spec": {"nets": [n for p in peer for n in exact_nets(p)]},
            }
            self.add(body, "GlobalNetworkSet.yaml.j2", rank=0)
        self.isolations()
        tiers: dict[str | None, list[ir.Rule]] = defaultdict(list)
        for r in self.program.rules:
            tiers[r.tier].append(r)
        for tier, rules in tiers.items():
            rules.sort(key=evaluation_order)  # outside tiers, deny statements first (deny always wins)
            if all(r.action is ir.Action.ALLOW for r in rules):
                groups = self.group(rules, lambda r: (r.subject,))
                for (subject,), members in groups.items():
                    self.policy(subject, tier, ALLOW_ONLY_ORDER, members, subject.name)
            else:
                statements = list(dict.fromkeys(r.span for r in rules))
                position = {span: i for i, span in enumerate(statements)}
                groups = self.group(rules, lambda r: (r.span, r.subject))
                taken: set[str] = set()
                for (span, subject), members in groups.items():
                    action = members[0].action.value.lower()
                    name = f"{subject.name}-{action}-{digest(rule_content(members))}"
                    for n in itertools.count(2):  # the same rules twice in one tier: distinct objects
                        if name not in taken:
                            break
                        name = f"{subject.name}-{action}-{digest(rule_content(members) + f'#{n}')}"
                    taken.add(name)
                    self.policy(subject, tier, 100 * (position[span] + 1), members, name)
        self.unique_tier_names()
        self.out.sort(key=lambda m: m.sort_key)
        return self.out

    def unique_tier_names(self) -> None:
        """From 3.32 a tier's policy is named `<tier>-<name>`, which a default-tier policy can also be
        named (service `security-web` next to `web` in tier `security`): such a tier policy gets a
        digest of its tier, so neither replaces the other. Default-tier names never change."""
        untiered = {(m.kind, m.namespace, m.name) for m in self.out if "tier" not in m.body.get("spec", {})}
        for m in self.out:
            tier = m.body.get("spec", {}).get("tier")
            if tier is not None and m.kind != "Tier" and (m.kind, m.namespace, m.name) in untiered:
                m.name = m.body["metadata"]["name"] = f"{m.name}-{digest('tier ' + tier)}"

    @staticmethod
    def group(rules: list[ir.Rule], key: Any) -> dict[Any, list[ir.Rule]]:
        groups: dict[Any, list[ir.Rule]] = {}
        for r in rules:
            groups.setdefault(key(r), []).append(r)
        return groups

    def isolations(self) -> None:
        """Default deny: a policy without rules in the default tier, after every other (order 10000),
        selecting every pod of its scope, or the pods of `isolate for S`."""
        for g in isolation_groups(self.program):
            name = g.name
            if g.subject is not None and g.cluster is not None:
                name = "cluster-" + name  # like the policies of the block's workloads
            if g.cluster is not None and g.cluster != self.program.plain_cluster:
                name = f"{name}-{digest(str(g.cluster))}"
            spec: dict[str, Any] = {"order": ALLOW_ONLY_ORDER * 10}
            if g.cluster is not None:
                spec["namespaceSelector"] = namespace_selector(g.cluster)
            spec["selector"] = "all()" if g.subject is None else selector(g.subject.selector)
            spec["types"] = [d.value for d in g.directions]
            scope = g.namespace if g.cluster is None else None
            self.add_policy(name, scope, spec, g.spans, [], [], rank=0)

    def policy(self, subject: ir.Workload, tier: str | None, order: int, rules: list[ir.Rule],
               base_name: str) -> None:
        name = base_name
        if subject.cluster is not None:
            name = "cluster-" + name
            if subject.cluster != self.program.plain_cluster:
                name = f"{name}-{digest(str(subject.cluster))}"
        if tier is not None:
            # Before Calico 3.32 the API server renames a tiered policy to <tier>.<name> unless it is
            # named so (GitOps would see a rename); from 3.32 names are kept, and the tier keeps the
            # same statement in two tiers from colliding.
            name = f"{tier}.{name}" if self.version < (3, 32) else f"{tier}-{name}"
        spec: dict[str, Any] = {}
        if tier is not None:
            spec["tier"] = tier
        spec["order"] = order
        if subject.cluster is not None:
            spec["namespaceSelector"] = namespace_selector(subject.cluster)
        spec["selector"] = selector(subject.selector)
        ingress = [r for r in rules if r.direction is ir.Direction.INGRESS]
        egress = [r for r in rules if r.direction is ir.Direction.EGRESS]
        directions = ((ir.Direction.INGRESS, ingress), (ir.Direction.EGRESS, egress))
        spec["types"] = [d.value for d, rs in directions if rs]
        global_policy = subject.cluster is not None
        ingress_rules = [(rule_comment(r), self.rules(r, global_policy)) for r in ingress]
        egress_rules = [(rule_comment(r), self.rules(r, global_policy)) for r in egress]
        if ingress:
            spec["ingress"] = [x for _, rs in ingress_rules for x in rs]
        if egress:
            spec["egress"] = [x for _, rs in egress_rules for x in rs]
        self.add_policy(
            name, subject.namespace if subject.cluster is None else None, spec, [r.span for r in rules],
            _comments(ingress_rules), _comments(egress_rules), rules,
        )

    def add_policy(self, name: str, namespace: str | None, spec: dict[str, Any], spans: list[Span],
                   ingress_comments: list[str], egress_comments: list[str], rules: Iterable[ir.Rule] = (),
                   rank: int = 1) -> None:
        kind = "NetworkPolicy" if namespace is not None else "GlobalNetworkPolicy"
        if self.staged:
            kind = "Staged" + kind
            spec = {"stagedAction": "Set", **spec}
        body = {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": self.metadata(name, namespace, spans, rules=rules),
            "spec": spec,
        }
        self.add(body, "Policy.yaml.j2", ingress_comments=ingress_comments, egress_comments=egress_comments,
                 rank=rank)

    def metadata(self, name: str, namespace: str | None, spans: Iterable[Span],
                 labels: dict[str, str] | None = None, rules: Iterable[ir.Rule] = ()) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if namespace is not None:
            meta["namespace"] = namespace
        meta["labels"] = {**MANAGED_BY, **(labels or {})}
        meta["annotations"] = object_annotations(spans, rules)
        return meta

    def add(self, body: dict[str, Any], template: str, rank: int = 1, **context: Any) -> None:
        meta = body["metadata"]
        self.out.append(Manifest(
            body["apiVersion"], body["kind"], meta["name"], meta.get("namespace"), body, template,
            {"obj": body, **context}, rank=rank,
        ))

    # ---- rules
    def rules(self, r: ir.Rule, global_policy: bool) -> list[dict[str, Any]]:
        """One Calico rule per peer and protocol (Calico ANDs the fields of one rule)."""
        out = []
        for peer in r.peers:
            entity = self.entity(peer, r.subject, global_policy)
            for protocol, ports in _by_protocol(r.ports):
                rule: dict[str, Any] = {"action": r.action.value}
                if protocol is not None:
                    rule["protocol"] = protocol
                target = dict(entity) if r.direction is ir.Direction.EGRESS else {}
                if ports:
                    target["ports"] = ports
                if r.direction is ir.Direction.INGRESS and entity:
                    rule["source"] = entity
                if target:
                    rule["destination"] = target
                out.append(rule)
        return out

    def entity(self, peer: ir.Peer, subject: ir.Workload, global_policy: bool) -> dict[str, Any]:
        if isinstance(peer, ir.AnyPeer):
            return {}
        if isinstance(peer, ir.CidrPeer):
            if peer.network_set and peer.network_set in self.network_sets:
                # global(): non-namespaced resources only. Without it, a GlobalNetworkPolicy's selector
                # also matches every pod that carries the set's label (any pod can claim to be the set).
                out = {"namespaceSelector": "global()",
                       "selector": f"{NETWORK_SET_LABEL} == {quote(peer.network_set)}"}
                # the set holds the CIDRs minus their excepts, so this matches exactly this item's part
                # only when the set has one item; several items are refused by reused_network_sets
                return out
            out2: dict[str, Any] = {"nets": [str(peer.cidr)]}
            if peer.excepts:
                out2["notNets"] = [str(e) for e in peer.excepts]
            return out2
        assert isinstance(peer, ir.PodPeer), "the target's capabilities exclude other peers"
        same_namespace = (
            not global_policy and isinstance(peer.namespaces, ir.NamespaceByName)
            and peer.namespaces.name == subject.namespace
        )
        if same_namespace:
            return {"selector": selector(peer.pods)}
        entity: dict[str, Any] = {"namespaceSelector": namespace_selector(peer.namespaces)}
        if not peer.pods.is_everything:
            entity["selector"] = selector(peer.pods)
        return entity

    def reused_network_sets(self) -> dict[str, tuple[list[ir.CidrPeer], list[Span]]]:
        """Named cidr sets used by two or more statements become GlobalNetworkSets. A rule can match a
        network set only as a whole, so a set is used this way only when each statement uses all of it:
        a set of one CIDR item (its excepts are folded into the set's nets exactly)."""
        uses: dict[str, set[Span]] = defaultdict(set)
        items: dict[str, ir.CidrPeer] = {}
        multi: set[str] = set()
        for r in self.program.rules:
            for p in r.peers:
                if isinstance(p, ir.CidrPeer) and p.network_set:
                    uses[p.network_set].add(r.span)
                    if p.network_set in items and items[p.network_set] != p:
                        multi.add(p.network_set)
                    items[p.network_set] = p
        return {
            name: ([items[name]], sorted(spans, key=lambda s: s.sort_key))
            for name, spans in uses.items() if len(spans) >= 2 and name not in multi
        }


def _by_protocol(ports: tuple[ir.PortMatch, ...]) -> list[tuple[str | None, list[int | str]]]:
    """Calico rules name one protocol; ports of several protocols become several rules."""
    if not ports:
        return [(None, [])]
    out: dict[str, list[int | str]] = {}
    whole: set[str] = set()
    for p in ports:
        proto = p.protocol.value
        out.setdefault(proto, [])
        if p.name is not None:
            out[proto].append(p.name)
        elif p.port is None:
            whole.add(proto)
        elif p.end_port is not None:
            out[proto].append(f"{p.port}:{p.end_port}")
        else:
            out[proto].append(p.port)
    return [(proto, [] if proto in whole else values) for proto, values in out.items()]


def _comments(pairs: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    """One comment per emitted Calico rule (a statement may have become several)."""
    return [comment for comment, rules in pairs for _ in rules]
