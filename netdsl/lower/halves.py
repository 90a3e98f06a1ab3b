"""The other halves of flows: a flow works end to end.

Rule. An allow statement `S accepts P` (or `S connects to P`) opens S's side. Where the program also
restricts the opposite direction of pods of P - an `isolate` that covers them (`isolate for R`: the
pods R selects), or any statement whose subject includes them, in that direction - netdsl emits P's
side too (the "other half"): a rule on those pods that lets exactly this flow (S, the statement's
ports) through. What is derived where:

* Toward the pods the peer names: a service or group (`web`), `ns/service`, `pods[...]`,
  `pods[...] in namespace NAME`, `all pods`, `all pods in namespace NAME`, `namespace NAME`. These
  are pods of one namespace, and the other half goes there.
* For broad peers - `anywhere`, `entity all`, `entity cluster`, `all namespaces`, `namespaces[...]`,
  `... in namespaces[...]` - only in the statement's own namespace (whose owner wrote the statement),
  and only if the peer includes it: never in another namespace. Whether `namespaces[...]` includes it
  depends on the labels the namespace has in the cluster (a `labels` declaration is not a fact about
  a cluster), so the derived rule's peer says so: the statement's subject in the namespaces that are
  this one AND match the peer's namespace selector. A statement in a `cluster { }` block
  with a broad peer derives nothing (no rule can say "the subject's own namespace" cluster-wide).
  CIDRs, `fqdn` and the other entities are not pods: nothing is derived for them.
* Exactly the restricted pods: for every workload R that restricts the opposite direction there (`all
  pods` of an isolated namespace, the subject of `isolate for S`, or a statement's subject), the other
  half attaches to the pods of P that R selects - P's selector AND R's selector - whenever both can
  match one pod (a pod labelled `app=web` and `role=db` is both `web` and `db`). If some R of that
  namespace selects every pod of P, the rule attaches to P itself. A derived rule therefore never
  restricts a pod that no statement or isolate restricts, and an explicit rule that already allows the
  flow there is not repeated. Whether a `cluster namespaces[...]` block restricts a namespace depends on
  the labels the namespace has in the cluster, not on its `labels` declaration: such an R restricts
  namespace N where N matches the block's selector, so the other half attaches to a cluster-wide
  workload for exactly those namespaces (N AND the block's selector).
* Tiers: the other half goes in the flow's tier where that tier already restricts those pods in
  that direction (so it is reached in order), and in the default tier where the default tier does
  (isolations live there). It never makes a tier apply to pods it did not apply to (which could
  change their fate under `otherwise deny`).
* Deny and pass statements derive nothing (they need no help from the other side).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from netdsl import ir
from netdsl.ir import Direction, Selector, Workload
from netdsl.lower.state import RESERVED_NAMES, LoweringState, Scope, peer_label, rule_key

_WORD = re.compile(r"[a-z0-9]+")


def derived_name(selector: Selector, taken: Callable[[str], bool] = lambda _: False) -> str:
    """The name of a compiler-made workload, unique for its selector by construction.

    `pods-app-web-role-db` when that can only be read back as this selector (every requirement
    key=value, keys and values single lowercase words: the words alternate key, value) and no service
    or group has it; otherwise the readable part, `--` (which a readable name never has) and a digest
    of the selector: `pods[app=x]` and `pods[app notin (x)]` never share a name."""
    parts = [f"{r.key.rpartition('/')[2]}-{'-'.join(r.values) or r.operator.value.lower()}"
             for r in selector.requirements]
    readable = "pods-" + "-".join(parts)
    reversible = all(
        r.operator is ir.Operator.IN and len(r.values) == 1 and _WORD.fullmatch(r.key) and _WORD.fullmatch(r.values[0])
        for r in selector.requirements
    )
    if reversible and len(readable) <= 63 and not taken(readable):
        return readable
    clean = re.sub(r"[^a-z0-9]+", "-", readable.lower()).strip("-")
    return f"{clean[:53].rstrip('-')}--{hashlib.sha256(str(selector).encode()).hexdigest()[:8]}"


class _WorkloadIndex:
    """Workloads indexed by their key=value labels, so that finding the ones a selector can overlap
    is not a scan of every service (programs have thousands)."""

    def __init__(self, workloads: list[Workload], conditional: set[Workload]) -> None:
        self.workloads = workloads
        self.conditional = conditional  # they restrict the namespace only where its labels match
        self.order = {w: i for i, w in enumerate(workloads)}
        self.by_label: dict[tuple[str, str], set[Workload]] = {}
        self.without_key: dict[str, set[Workload]] = {}
        self.keys: set[str] = set()
        self.memo: dict[tuple[tuple[str, str], ...], list[Workload]] = {}
        for w in workloads:
            for k, v in w.selector.equalities().items():
                self.by_label.setdefault((k, v), set()).add(w)
                self.keys.add(k)

    def compatible(self, selector: Selector) -> list[Workload]:
        """A superset of the workloads whose selector can match a pod together with `selector`."""
        key = tuple(sorted(selector.equalities().items()))
        if key not in self.memo:
            self.memo[key] = self._compatible(dict(key))
        return self.memo[key]

    def _compatible(self, equalities: dict[str, str]) -> list[Workload]:
        candidates: set[Workload] | None = None
        for k, v in equalities.items():
            if k not in self.keys:
                continue
            if k not in self.without_key:
                self.without_key[k] = {w for w in self.workloads if k not in w.selector.equalities()}
            same = self.by_label.get((k, v), set()) | self.without_key[k]
            candidates = same if candidates is None else candidates & same
        if candidates is None:
            return self.workloads
        return sorted(candidates, key=self.order.__getitem__)


_Ports = frozenset[ir.PortMatch] | None  # an allow rule's ports as a set; None: every port


@dataclass
class _Allowing:
    """The allow rules of one subject, direction and tier, for _Coverage: each rule's peers and ports,
    found by one of its peers (or among those that allow `anywhere`)."""

    anywhere: list[_Ports] = field(default_factory=list)
    by_peer: dict[ir.Peer, list[tuple[tuple[ir.Peer, ...], _Ports]]] = field(default_factory=dict)
    every: list[_Ports] = field(default_factory=list)


class _Coverage:
    """Answers "does an explicit rule already allow this?", so that the other half of a flow is not
    emitted where the user wrote it by hand (as the seed does in §6.1 and §6.2). A rule R covers NEW
    when they have the same subject, direction and tier, R allows `anywhere` or every peer of NEW, and R
    allows every port (or NEW names ports, all of them R's)."""

    def __init__(self, rules: list[ir.Rule]) -> None:
        self.rules: dict[tuple[object, ...], list[ir.Rule]] = {}
        for r in rules:
            if r.action is ir.Action.ALLOW:
                self.rules.setdefault(self.key(r), []).append(r)
        self.by_subject: dict[tuple[object, ...], _Allowing] = {}  # built for a subject when first asked

    def allowing(self, key: tuple[object, ...]) -> _Allowing | None:
        if key not in self.by_subject:
            rules = self.rules.get(key)
            if rules is None:
                return None
            entry = self.by_subject[key] = _Allowing()
            for r in rules:
                ports = frozenset(r.ports) if r.ports else None
                entry.every.append(ports)
                if any(isinstance(p, ir.AnyPeer) for p in r.peers):
                    entry.anywhere.append(ports)
                for p in dict.fromkeys(r.peers):
                    entry.by_peer.setdefault(p, []).append((r.peers, ports))
        return self.by_subject[key]

    @staticmethod
    def key(r: ir.Rule) -> tuple[object, ...]:
        return (r.subject.namespace, r.subject.cluster, r.subject.selector, r.direction, r.tier)

    def covers(self, new: ir.Rule, new_ports: frozenset[ir.PortMatch]) -> bool:
        """new_ports: frozenset(new.ports)."""
        entry = self.allowing(self.key(new))
        if entry is None:
            return False

        def ports_ok(ports: _Ports) -> bool:
            return ports is None or (bool(new_ports) and new_ports <= ports)

        if not new.peers:  # no peer to miss: any rule of the subject whose ports fit
            return any(ports_ok(ports) for ports in entry.every)
        if any(ports_ok(ports) for ports in entry.anywhere):
            return True
        return any(all(p in peers for p in new.peers[1:]) and ports_ok(ports)
                   for peers, ports in entry.by_peer.get(new.peers[0], ()))


def _name_is(name: str) -> Selector:
    return Selector.of([ir.Requirement(ir.NAMESPACE_NAME_LABEL, ir.Operator.IN, (name,))])


def may_match(match: ir.NamespaceMatch, name: str) -> bool:
    """Can namespace `name` match `match` in some cluster (with some labels)?"""
    if isinstance(match, ir.NamespaceBySelector):
        return _name_is(name).conjoin(match.selector).satisfiable
    return ir.namespace_matches(match, name, {})


def within(w: Workload, match: ir.NamespaceMatch, name: str) -> Workload | None:
    """Workload `w` as it restricts namespace `name` when `match` (a cluster scope) says where: None
    if never; `w` itself if the name decides; else `w` cluster-wide for the namespaces that are `name`
    and match (the namespace's labels in the cluster decide)."""
    if not may_match(match, name):
        return None
    if not isinstance(match, ir.NamespaceBySelector) or all(
            r.key == ir.NAMESPACE_NAME_LABEL for r in match.selector.requirements):
        return w
    return Workload("", w.name, w.selector, w.span, w.declared,
                    ir.NamespaceBySelector(_name_is(name).conjoin(match.selector)))


class Halves(LoweringState):
    def derive_counterparts(self, explicit: list[ir.Rule]) -> list[ir.Rule]:
        """The other half of every allow statement (see the module's rule): `explicit` is the
        deduplicated rules, which say what restricts; the halves come from every rule of self.rules
        toward the statement's peers as written (self.half_peers)."""
        by_namespace: dict[tuple[str | None, Direction, str], list[Workload]] = {}
        for r in explicit:
            if r.subject.cluster is None:
                by_namespace.setdefault((r.tier, r.direction, r.subject.namespace), []).append(r.subject)
        clusterwide = [r for r in explicit if r.subject.cluster is not None]
        cache: dict[tuple[str, Direction, str | None], _WorkloadIndex] = {}

        def restricting(ns: Scope, d: Direction, tier: str | None) -> _WorkloadIndex:
            """The workloads that restrict direction `d` of pods of `ns` in `tier`; one that restricts
            them only when the namespace has some labels is cluster-wide, for exactly those namespaces."""
            key = (ns.name, d, tier)
            if key not in cache:
                workloads: list[Workload] = []
                conditional: set[Workload] = set()

                def add(w: Workload, match: ir.NamespaceMatch | None) -> None:
                    if match is None:
                        workloads.append(w)
                    elif (cond := within(w, match, ns.name)) is not None:
                        workloads.append(cond)
                        if cond is not w:
                            conditional.add(cond)

                if tier is None:
                    for i in self.isolations:
                        if i.direction is d and (i.cluster is not None or i.namespace == ns.name):
                            # `isolate for S` restricts exactly S's pods, like a statement of subject S
                            add(self.all_pods(ns) if i.subject is None else i.subject, i.cluster)
                workloads += by_namespace.get((tier, d, ns.name), ())
                for r in clusterwide:
                    if r.tier == tier and r.direction is d:
                        add(r.subject, r.subject.cluster)
                cache[key] = _WorkloadIndex(list(dict.fromkeys(workloads)), conditional)
            return cache[key]

        covered_anywhere = [i.cluster for i in self.isolations if i.cluster is not None] + [
            r.subject.cluster for r in explicit if r.subject.cluster is not None
        ]
        seen = {rule_key(r) for r in explicit}
        covered = _Coverage(explicit)
        derived: list[ir.Rule] = []
        # Equal rules have equal spans: only a rule with one of these spans can be a key of half_peers
        # (hashing every rule to look it up is a tenth of lowering).
        half_spans = {r.span for r in self.half_peers}
        # Every rule a statement made, also those deduplicated away, with the peers as written: a
        # simplification of the emitted rules never loses an other half.
        for rule in self.rules:
            if rule.action is not ir.Action.ALLOW or rule.one_sided:
                continue  # a deny or pass needs no help from the other side; a one-sided rule wants none
            here = rule.subject.cluster or ir.NamespaceByName(rule.subject.namespace)
            opposite = rule.direction.opposite
            tiers: list[str | None] = [rule.tier] if rule.tier is None else [rule.tier, None]
            ports = frozenset(rule.ports)
            for peer in self.half_peers.get(rule, rule.peers) if rule.span in half_spans else rule.peers:
                for ns, pods, only_if in self.peer_pods(rule, peer, covered_anywhere):
                    where = here if only_if is None else only_if
                    back = ir.PodPeer(where, rule.subject.selector, peer_label(rule.subject))
                    for tier in tiers:
                        for subject in self.counterpart_subjects(ns, pods, restricting(ns, opposite, tier)):
                            new = ir.Rule(subject, opposite, (back,), rule.ports, rule.span, rule.text,
                                          derived=True, tier=tier)
                            key = rule_key(new)
                            if key not in seen and not covered.covers(new, ports):
                                seen.add(key)
                                derived.append(new)
        return derived

    def peer_pods(
        self, rule: ir.Rule, peer: ir.Peer, covered_anywhere: list[ir.NamespaceMatch],
    ) -> list[tuple[Scope, Selector, ir.NamespaceMatch | None]]:
        """Where the other half toward `peer` may go: a namespace, the peer's pods in it, and (None:
        always) the namespaces the statement's subject must be in for the peer to include them."""
        if isinstance(peer, ir.PodPeer) and isinstance(peer.namespaces, ir.NamespaceByName):
            name = peer.namespaces.name  # a peer that names its namespace
            found = self.namespaces.get(name)
            if found is None and any(may_match(c, name) for c in covered_anywhere):
                found = Scope(name, rule.span)  # not declared, but a cluster statement covers it
            return [(found, peer.pods, None)] if found is not None else []
        if rule.subject.cluster is not None:
            return []  # a broad peer of a cluster statement: "its own namespace" has no rule to say it
        own = self.namespaces.get(rule.subject.namespace)
        if own is None:
            return []
        if isinstance(peer, ir.AnyPeer) or (isinstance(peer, ir.EntityPeer) and peer.name in ("all", "cluster")):
            return [(own, ir.EVERYTHING, None)]
        if isinstance(peer, ir.PodPeer) and isinstance(peer.namespaces, ir.AllNamespaces):
            return [(own, peer.pods, None)]
        if isinstance(peer, ir.PodPeer) and isinstance(peer.namespaces, ir.NamespaceBySelector):
            # this namespace, when its labels (in the cluster, not as declared) match the peer's
            this = ir.Selector.of([ir.Requirement(ir.NAMESPACE_NAME_LABEL, ir.Operator.IN, (own.name,))])
            both = this.conjoin(peer.namespaces.selector)
            return [(own, peer.pods, ir.NamespaceBySelector(both))] if both.satisfiable else []
        return []  # CIDRs, DNS names, entities that are not pods

    def counterpart_subjects(self, ns: Scope, peer: Selector, restricting: _WorkloadIndex) -> list[Workload]:
        """The workloads the other half attaches to: exactly the pods of `peer` that a workload of
        `restricting` selects."""
        candidates = restricting.compatible(peer)
        pods = set(peer.requirements)
        if any(r not in restricting.conditional and set(r.selector.requirements) <= pods for r in candidates):
            return [self.peer_workload(ns, peer)]  # every pod of the peer is restricted
        out: list[Workload] = []
        for r in candidates:
            both = peer.conjoin(r.selector)
            if not both.satisfiable:
                continue
            if both == r.selector and r.namespace == ns.namespace and r.cluster == ns.cluster:
                out.append(r)  # the peer includes all of r: the rule joins r's own policy
            elif r in restricting.conditional:  # r restricts ns only where its labels match r's namespaces
                out.append(r if both == r.selector else Workload(
                    "", derived_name(both, lambda n: n in RESERVED_NAMES), both, None, declared=False,
                    cluster=r.cluster))
            else:
                out.append(self.peer_workload(ns, both))
        return list(dict.fromkeys(out))

    def peer_workload(self, ns: Scope, selector: Selector) -> Workload:
        """The workload a derived rule attaches to: the declared service with exactly this selector if
        there is one, else a compiler-made workload named after its labels."""
        if ns.by_selector is None:
            ns.by_selector = {}
            for s in ns.services.values():
                ns.by_selector.setdefault(s.selector, s)
        if selector in ns.by_selector:
            return ns.by_selector[selector]
        if selector.is_everything:
            return self.all_pods(ns)
        name = derived_name(selector, lambda n: n in ns.services or n in ns.groups or n in RESERVED_NAMES)
        return Workload(ns.namespace, name, selector, None, declared=False, cluster=ns.cluster)
