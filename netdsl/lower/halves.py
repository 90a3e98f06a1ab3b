"""The other halves of flows (see derive_counterparts).
"""

from __future__ import annotations

from netdsl import ir
from netdsl.ir import Direction, Selector, Workload
from netdsl.lower.state import RESERVED_NAMES, LoweringState, Scope, peer_label, rule_key
from netdsl.lower.values import sanitize_name


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
        """For each flow, the other half: where the program restricts the peer's opposite direction,
        emit the rule that lets this flow through there too (a flow means the connection works).

        netdsl reasons about workloads as declared: a service's pods are those its selector describes.
        For a peer `P` in namespace `m` whose opposite direction some workload `r` restricts:
        * if every pod of `P` is restricted (`r` is `all pods`, an isolated namespace, or `P` is
          narrower than `r`), the other half attaches to `P`'s pods;
        * otherwise it attaches to each restricted declared service that lies within `P`.
        Differently-labelled services (`app=web`, `role=db`) are different workloads: netdsl does not
        emit a policy for every conceivable pod carrying both.

        With tiers: the other half goes in the flow's tier if that tier already applies to the peer in
        that direction (so it is reached in order); else in the default tier if the peer is restricted
        there. It never makes a tier apply to pods it did not apply to (which could change their fate
        under `otherwise deny`).
        """
        by_tier: dict[tuple[str | None, Direction], list[ir.Rule]] = {}
        # the same, for namespaced subjects by namespace (cluster-wide subjects are checked everywhere)
        by_namespace: dict[tuple[str | None, Direction, str], list[ir.Rule]] = {}
        for r in explicit:
            by_tier.setdefault((r.tier, r.direction), []).append(r)
            if r.subject.cluster is None:
                by_namespace.setdefault((r.tier, r.direction, r.subject.namespace), []).append(r)
        clusterwide = [r for r in explicit if r.subject.cluster is not None]
        isolations_of: dict[tuple[str, Direction], bool] = {}
        ns_labels = {n.name: {k: v for k, (v, _) in n.labels.items()} for n in self.namespaces.values()}
        cache: dict[tuple[str, Direction, str | None], tuple[_WorkloadIndex, _WorkloadIndex]] = {}

        def indexes(ns: Scope, d: Direction, tier: str | None) -> tuple[_WorkloadIndex, _WorkloadIndex]:
            key = (ns.name, d, tier)
            if key not in cache:
                labels = ns_labels.get(ns.name, {})
                workloads: list[Workload] = []
                if (ns.name, d) not in isolations_of:
                    isolations_of[(ns.name, d)] = any(
                        i.direction is d and i.applies_in(ns.name, labels) for i in self.isolations
                    )
                if tier is None and isolations_of[(ns.name, d)]:
                    workloads.append(self.all_pods(ns))
                workloads += [r.subject for r in by_namespace.get((tier, d, ns.name), ())]
                workloads += [
                    r.subject for r in clusterwide
                    if r.tier == tier and r.direction is d and r.subject.applies_in(ns.name, labels)
                ]
                index = _WorkloadIndex(list(dict.fromkeys(workloads)))
                restricted = _WorkloadIndex([
                    s for s in ns.services.values()
                    if any(r.selector.matches(s.example) for r in index.compatible(s.selector))
                ])
                cache[key] = (index, restricted)
            return cache[key]

        covered_anywhere = [i.cluster for i in self.isolations if i.cluster is not None] + [
            r.subject.cluster for r in explicit if r.subject.cluster is not None
        ]
        seen = {rule_key(r) for r in explicit}
        covered = _Coverage(explicit)
        matching: dict[ir.NamespaceMatch, list[Scope]] = {}
        derived: list[ir.Rule] = []
        for rule in explicit:
            if rule.action is not ir.Action.ALLOW:
                continue  # a deny or pass needs no help from the other side
            here = rule.subject.cluster or ir.NamespaceByName(rule.subject.namespace)
            back = ir.PodPeer(here, rule.subject.selector, peer_label(rule.subject))
            opposite = rule.direction.opposite
            tiers: list[str | None] = [rule.tier] if rule.tier is None else [rule.tier, None]
            for peer in rule.peers:
                if isinstance(peer, ir.AnyPeer) or (
                    isinstance(peer, ir.EntityPeer) and peer.name in ("all", "cluster")
                ):  # every pod is among these peers
                    peer = ir.PodPeer(ir.AllNamespaces(), ir.EVERYTHING, "anywhere")
                if not isinstance(peer, ir.PodPeer):
                    continue
                if isinstance(peer.namespaces, ir.NamespaceByName):
                    name = peer.namespaces.name
                    found = self.namespaces.get(name)
                    if found is None and any(ir.namespace_matches(c, name, {}) for c in covered_anywhere):
                        found = Scope(name, rule.span)  # not declared, but a cluster statement covers it
                    targets = [found] if found is not None else []
                else:
                    if peer.namespaces not in matching:
                        matching[peer.namespaces] = [
                            n for n in self.namespaces.values()
                            if ir.namespace_matches(peer.namespaces, n.name, ns_labels[n.name])
                        ]
                    targets = matching[peer.namespaces]
                found_subjects: list[tuple[Workload, str | None]] = []
                for ns in targets:
                    for tier in tiers:
                        restricting, restricted = indexes(ns, opposite, tier)
                        found_subjects += [
                            (subject, tier)
                            for subject in self.counterpart_subjects(ns, peer.pods, restricting, restricted)
                        ]
                if not isinstance(peer.namespaces, ir.NamespaceByName):
                    # Peers in namespaces the program does not list: where a cluster block restricts them,
                    # the other half is cluster-wide too, scoped to the peer's namespaces.
                    found_subjects += self.cluster_counterparts(peer, opposite, tiers, by_tier)
                for subject, tier in found_subjects:
                    new = ir.Rule(subject, opposite, (back,), rule.ports, rule.span, rule.text,
                                  derived=True, tier=tier)
                    key = rule_key(new)
                    if key not in seen and not covered.covers(new):
                        seen.add(key)
                        derived.append(new)
        return derived

    def cluster_counterparts(
        self, peer: ir.PodPeer, direction: Direction, tiers: list[str | None],
        by_tier: dict[tuple[str | None, Direction], list[ir.Rule]],
    ) -> list[tuple[Workload, str | None]]:
        out: list[tuple[Workload, str | None]] = []
        for scope in self.clusters.values():
            assert scope.cluster is not None
            both = _conjoin_namespaces(peer.namespaces, scope.cluster)
            if both is None:
                continue
            for tier in tiers:
                workloads: list[Workload] = []
                if tier is None and any(
                    i.cluster == scope.cluster and i.direction is direction for i in self.isolations
                ):
                    workloads.append(self.all_pods(scope))
                workloads += [
                    r.subject for r in by_tier.get((tier, direction), ()) if r.subject.cluster == scope.cluster
                ]
                if not workloads:
                    continue
                where = Scope(scope.name, scope.span, cluster=both)
                index = _WorkloadIndex(list(dict.fromkeys(workloads)))
                out += [(s, tier) for s in self.counterpart_subjects(where, peer.pods, index, _WorkloadIndex([]))]
        return out

    def counterpart_subjects(
        self, ns: Scope, peer: Selector, restricting: _WorkloadIndex, restricted: _WorkloadIndex
    ) -> list[Workload]:
        candidates = restricting.compatible(peer)
        pods = set(peer.requirements)
        out: list[Workload] = []
        if any(set(r.selector.requirements) <= pods for r in candidates):
            return [self.peer_workload(ns, peer)]  # every pod of the peer is restricted
        if self.peer_workload(ns, peer).declared and peer != ir.EVERYTHING:
            # A service: the restricted services inside it (services are workloads, see above) - only
            # their restricted part, so that no pod becomes restricted by the other half itself.
            for s in restricted.compatible(peer):
                if not peer.matches(s.example):
                    continue
                for r in restricting.compatible(s.selector):
                    if r.selector.matches(s.example):
                        inside = set(r.selector.requirements) <= set(s.selector.requirements)
                        out.append(s if inside else self.peer_workload(ns, s.selector.conjoin(r.selector)))
            return list(dict.fromkeys(out))
        # An ad-hoc `pods[...]` peer may overlap any workload: cover exactly the overlap.
        for r in candidates:
            both = peer.conjoin(r.selector)
            if both.satisfiable:
                out.append(r if both == r.selector else self.peer_workload(ns, both))
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
        name = sanitize_name("pods-" + "-".join(
            f"{r.key.rpartition('/')[2]}-{'-'.join(r.values) or r.operator.value.lower()}"
            for r in selector.requirements
        ))
        if name in ns.services or name in ns.groups or name in RESERVED_NAMES:
            name = sanitize_name(name + "-" + str(selector))
        return Workload(ns.namespace, name, selector, None, declared=False, cluster=ns.cluster)


def _conjoin_namespaces(a: ir.NamespaceMatch, b: ir.NamespaceMatch) -> ir.NamespaceMatch | None:
    """Namespaces matching both (None if none can); not for by-name matches."""
    if isinstance(a, ir.AllNamespaces):
        return b
    if isinstance(b, ir.AllNamespaces):
        return a
    if isinstance(a, ir.NamespaceBySelector) and isinstance(b, ir.NamespaceBySelector):
        both = a.selector.conjoin(b.selector)
        return ir.NamespaceBySelector(both) if both.satisfiable else None
    return None


