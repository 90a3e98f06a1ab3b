"""The other halves of flows: a flow works end to end.

Rule. An allow statement `S accepts P` (or `S connects to P`) opens S's side. Where the program also
restricts the opposite direction of pods of P - an `isolate` that covers them, or any statement whose
subject includes them, in that direction - netdsl emits P's side too (the "other half"): a rule on
those pods that lets exactly this flow (S, the statement's ports) through. What is derived where:

* Toward the pods the peer names: a service or group (`web`), `ns/service`, `pods[...]`,
  `pods[...] in namespace NAME`, `all pods`, `all pods in namespace NAME`, `namespace NAME`. These
  are pods of one namespace, and the other half goes there.
* For broad peers - `anywhere`, `entity all`, `entity cluster`, `all namespaces`, `namespaces[...]`,
  `... in namespaces[...]` - only in the statement's own namespace (whose owner wrote the statement),
  and only if the peer includes it: never in another namespace. A statement in a `cluster { }` block
  with a broad peer derives nothing (no rule can say "the subject's own namespace" cluster-wide).
  CIDRs, `fqdn` and the other entities are not pods: nothing is derived for them.
* Exactly the restricted pods: for every workload R that restricts the opposite direction there
  (`all pods` of an isolated namespace, or a statement's subject), the other half attaches to the
  pods of P that R selects - P's selector AND R's selector - whenever both can match one pod (a pod
  labelled `app=web` and `role=db` is both `web` and `db`). If some R selects every pod of P, the rule
  attaches to P itself. A derived rule therefore never restricts a pod that no statement or isolate
  restricts, and an explicit rule that already allows the flow there is not repeated.
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

    def __init__(self, workloads: list[Workload]) -> None:
        self.workloads = workloads
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


class _Coverage:
    """Answers "does an explicit rule already allow this?", so that the other half of a flow is not
    emitted where the user wrote it by hand (as the seed does in §6.1 and §6.2)."""

    def __init__(self, rules: list[ir.Rule]) -> None:
        self.by_subject: dict[tuple[object, ...], list[ir.Rule]] = {}
        for r in rules:
            if r.action is ir.Action.ALLOW:
                self.by_subject.setdefault(self.key(r), []).append(r)

    @staticmethod
    def key(r: ir.Rule) -> tuple[object, ...]:
        return (r.subject.namespace, r.subject.cluster, r.subject.selector, r.direction, r.tier)

    def covers(self, new: ir.Rule) -> bool:
        for r in self.by_subject.get(self.key(new), ()):
            peers_ok = all(p in r.peers for p in new.peers) or any(isinstance(p, ir.AnyPeer) for p in r.peers)
            ports_ok = not r.ports or (bool(new.ports) and set(new.ports) <= set(r.ports))
            if peers_ok and ports_ok:
                return True
        return False


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
        ns_labels = {n.name: {k: v for k, (v, _) in n.labels.items()} for n in self.namespaces.values()}
        cache: dict[tuple[str, Direction, str | None], _WorkloadIndex] = {}

        def restricting(ns: Scope, d: Direction, tier: str | None) -> _WorkloadIndex:
            """The workloads that restrict direction `d` of pods of `ns` in `tier`."""
            key = (ns.name, d, tier)
            if key not in cache:
                labels = ns_labels.get(ns.name, {})
                workloads: list[Workload] = []
                if tier is None and any(i.direction is d and i.applies_in(ns.name, labels) for i in self.isolations):
                    workloads.append(self.all_pods(ns))
                workloads += by_namespace.get((tier, d, ns.name), ())
                workloads += [
                    r.subject for r in clusterwide
                    if r.tier == tier and r.direction is d and r.subject.applies_in(ns.name, labels)
                ]
                cache[key] = _WorkloadIndex(list(dict.fromkeys(workloads)))
            return cache[key]

        covered_anywhere = [i.cluster for i in self.isolations if i.cluster is not None] + [
            r.subject.cluster for r in explicit if r.subject.cluster is not None
        ]
        seen = {rule_key(r) for r in explicit}
        covered = _Coverage(explicit)
        derived: list[ir.Rule] = []
        # Every rule a statement made, also those deduplicated away, with the peers as written: a
        # simplification of the emitted rules never loses an other half.
        for rule in self.rules:
            if rule.action is not ir.Action.ALLOW:
                continue  # a deny or pass needs no help from the other side
            here = rule.subject.cluster or ir.NamespaceByName(rule.subject.namespace)
            back = ir.PodPeer(here, rule.subject.selector, peer_label(rule.subject))
            opposite = rule.direction.opposite
            tiers: list[str | None] = [rule.tier] if rule.tier is None else [rule.tier, None]
            for peer in self.half_peers.get(rule, rule.peers):
                for ns, pods in self.peer_pods(rule, peer, ns_labels, covered_anywhere):
                    for tier in tiers:
                        for subject in self.counterpart_subjects(ns, pods, restricting(ns, opposite, tier)):
                            new = ir.Rule(subject, opposite, (back,), rule.ports, rule.span, rule.text,
                                          derived=True, tier=tier)
                            key = rule_key(new)
                            if key not in seen and not covered.covers(new):
                                seen.add(key)
                                derived.append(new)
        return derived

    def peer_pods(
        self, rule: ir.Rule, peer: ir.Peer, ns_labels: dict[str, dict[str, str]],
        covered_anywhere: list[ir.NamespaceMatch],
    ) -> list[tuple[Scope, Selector]]:
        """Where the other half toward `peer` may go: a namespace and the peer's pods in it."""
        if isinstance(peer, ir.PodPeer) and isinstance(peer.namespaces, ir.NamespaceByName):
            name = peer.namespaces.name  # a peer that names its namespace
            found = self.namespaces.get(name)
            if found is None and any(ir.namespace_matches(c, name, {}) for c in covered_anywhere):
                found = Scope(name, rule.span)  # not declared, but a cluster statement covers it
            return [(found, peer.pods)] if found is not None else []
        if rule.subject.cluster is not None:
            return []  # a broad peer of a cluster statement: "its own namespace" has no rule to say it
        own = self.namespaces.get(rule.subject.namespace)
        if own is None:
            return []
        if isinstance(peer, ir.AnyPeer) or (isinstance(peer, ir.EntityPeer) and peer.name in ("all", "cluster")):
            return [(own, ir.EVERYTHING)]
        if isinstance(peer, ir.PodPeer) and ir.namespace_matches(peer.namespaces, own.name, ns_labels[own.name]):
            return [(own, peer.pods)]
        return []  # CIDRs, DNS names, entities that are not pods; broad peers that leave out this namespace

    def counterpart_subjects(self, ns: Scope, peer: Selector, restricting: _WorkloadIndex) -> list[Workload]:
        """The workloads the other half attaches to: exactly the pods of `peer` that a workload of
        `restricting` selects."""
        candidates = restricting.compatible(peer)
        pods = set(peer.requirements)
        if any(set(r.selector.requirements) <= pods for r in candidates):
            return [self.peer_workload(ns, peer)]  # every pod of the peer is restricted
        out: list[Workload] = []
        for r in candidates:
            both = peer.conjoin(r.selector)
            if not both.satisfiable:
                continue
            if both == r.selector and r.namespace == ns.namespace and r.cluster == ns.cluster:
                out.append(r)  # the peer includes all of r: the rule joins r's own policy
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
