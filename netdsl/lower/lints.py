"""Lints: warnings about a program that compiles but likely does not mean what it says.

Rule: a lint reads the lowered program (explicit and derived rules) and warns at the statement that
causes the problem: egress restricted (by a statement, `isolate`, or `isolate for S`) without DNS
(egress-without-dns), a selector that matches nothing
the program declares (selects-nothing), a deny outside tiers that also isolates (deny-isolates). A lint
never changes the program.
"""

from __future__ import annotations

from netdsl import ir
from netdsl.ir import Direction, Protocol, Workload
from netdsl.lower.state import ALL_PODS, DNS_NAMESPACE, DNS_SELECTOR, LoweringState, Scope, peer_label
from netdsl.source import Span


class Lints(LoweringState):
    def lint(self, program: ir.Program) -> None:
        self.lint_dns(program)
        self.lint_selects_nothing(program)
        self.lint_deny_isolates(program)

    def lint_deny_isolates(self, program: ir.Program) -> None:
        """Outside tiers, a policy with a deny rule isolates the pods it applies to (on every target):
        say so when the program allows those pods nothing else in that direction."""
        allowed = {(r.subject.namespace, r.subject.cluster, r.direction) for r in program.rules
                   if r.action is ir.Action.ALLOW and r.tier is None}
        isolated = {(i.namespace, i.cluster, i.direction) for i in program.isolations if i.subject is None}
        isolated_subjects: dict[tuple[object, ...], list[ir.Selector]] = {}
        for i in program.isolations:
            if i.subject is not None:
                isolated_subjects.setdefault((i.namespace, i.cluster, i.direction), []).append(i.selector)
        reported: set[tuple[object, ...]] = set()
        for r in program.rules:
            key = (r.subject.namespace, r.subject.cluster, r.direction)
            if r.action is not ir.Action.DENY or r.tier is not None or key in allowed or key in isolated:
                continue
            mine = set(r.subject.selector.requirements)
            if any(set(sel.requirements) <= mine for sel in isolated_subjects.get(key, ())):
                continue  # `isolate for S` already isolates every pod of the deny's subject
            if (*key, r.subject.name) in reported:
                continue
            reported.add((*key, r.subject.name))
            who = "every pod" if r.subject.name == ALL_PODS else f"`{r.subject.name}`"
            self.warn(
                "deny-isolates",
                f"this deny also isolates the {r.direction.value.lower()} of {who}: what no statement allows "
                "is denied too",
                r.span,
                f"to deny only this, also write `{peer_label(r.subject)} "
                f"{'accepts anywhere' if r.direction is Direction.INGRESS else 'connects to anywhere'}`, "
                "or put the deny in a tier (`otherwise pass`)",
            )

    def lint_dns(self, program: ir.Program) -> None:
        """egress-without-dns: a workload whose egress a statement or `isolate` restricts, and that no
        allow statement lets reach kube-dns on UDP and TCP 53. DNS counts wherever it is allowed to the
        workload's pods: its own namespace's statements and every `cluster` block that covers the
        namespace (`cluster { allow dns }`). A statement in a tier restricts only if the tier is
        `otherwise deny`: with `otherwise pass` what it does not decide (DNS) goes on to the next tier."""
        dns_labels = DNS_SELECTOR.example_labels() or {}

        def restricts(r: ir.Rule) -> bool:
            tier = program.tier(r.tier)
            return not r.derived and (tier is None or tier.otherwise is ir.Action.DENY)

        egress_by_scope: dict[tuple[str, ir.NamespaceMatch | None], list[ir.Rule]] = {}
        for r in program.rules:
            if r.direction is Direction.EGRESS:
                egress_by_scope.setdefault((r.subject.namespace, r.subject.cluster), []).append(r)
        dns_rules = {
            protocol: [r for r in program.rules if r.direction is Direction.EGRESS and r.action is ir.Action.ALLOW
                       and _reaches(r, DNS_NAMESPACE, dns_labels, protocol, 53)]
            for protocol in (Protocol.UDP, Protocol.TCP)
        }
        for ns in self.scopes():
            labels = {k: v for k, (v, _) in ns.labels.items()}
            isolations = [i for i in program.isolations if i.namespace == ns.namespace and i.cluster == ns.cluster
                          and i.direction is Direction.EGRESS]
            isolated = next((i for i in isolations if i.subject is None), None)
            restricted: dict[Workload, Span | None] = {}
            if isolated is not None:
                for s in list(ns.services.values()) or [self.all_pods(ns)]:
                    restricted[s] = isolated.span
            for i in isolations:
                if i.subject is not None:  # `isolate egress for S`
                    restricted.setdefault(i.subject, i.span)
            for r in egress_by_scope.get((ns.namespace, ns.cluster), []):
                if restricts(r):
                    restricted.setdefault(r.subject, r.span)

            for w, span in restricted.items():
                if not all(any(_applies_to(r, ns, labels, w) for r in dns_rules[p]) for p in dns_rules):
                    who = "every pod" if w.name == ALL_PODS else f"`{w.name}`"
                    self.warn(
                        "egress-without-dns",
                        f"egress of {who} in {ns.what} is restricted but DNS is not allowed",
                        span,
                        "add `allow dns` (or `allow dns for NAME`) to this namespace",
                    )

    def lint_selects_nothing(self, program: ir.Program) -> None:
        ns_labels = {ns.name: ns.label_dict for ns in program.namespaces}
        services_by_ns: dict[str, list[Workload]] = {}
        for s in program.services:
            services_by_ns.setdefault(s.namespace, []).append(s)
        declared = {(s.namespace, s.selector) for s in program.services}
        reported: set[tuple[Span, str]] = set()
        for r in program.rules:
            if r.derived:
                continue
            for p in r.peers:
                if not isinstance(p, ir.PodPeer):
                    continue
                if isinstance(p.namespaces, ir.NamespaceBySelector):
                    if "name" in p.namespaces.selector.equalities():
                        continue  # already reported as namespace-name-label
                    if any(q.key == ir.NAMESPACE_NAME_LABEL for q in p.namespaces.selector.requirements):
                        continue  # a cluster scope: every namespace but the system ones
                    if not any(p.namespaces.selector.matches(lab) for lab in ns_labels.values()):
                        key = (r.span, str(p.namespaces.selector))
                        if key not in reported:
                            reported.add(key)
                            self.warn(
                                "selects-nothing",
                                f"no namespace in this program has labels matching `{p.namespaces.selector}`",
                                r.span,
                                "declare the namespaces it is meant to match, e.g. "
                                "`namespace staging labels env=staging`",
                            )
                    continue
                if not isinstance(p.namespaces, ir.NamespaceByName) or p.pods.is_everything:
                    continue
                if (p.namespaces.name, p.pods) in declared:
                    continue
                workloads = services_by_ns.get(p.namespaces.name)
                if not workloads:
                    continue
                if not any(p.pods.matches(w.selector.example_labels() or {}) for w in workloads):
                    key = (r.span, str(p.pods))
                    if key not in reported:
                        reported.add(key)
                        self.warn(
                            "selects-nothing",
                            f"`{p.label or p.pods}` matches none of the services declared in namespace "
                            f"`{p.namespaces.name}`",
                            r.span,
                            "check the labels against the service declarations",
                        )



def _applies_to(r: ir.Rule, ns: Scope, labels: dict[str, str], w: Workload) -> bool:
    """Whether rule `r` applies to the pods of workload `w` of scope `ns`: a rule of the same scope,
    or of a `cluster` block that covers the namespace."""
    if not r.subject.selector.matches(w.example):
        return False
    if (r.subject.namespace, r.subject.cluster) == (ns.namespace, ns.cluster):
        return True
    return ns.cluster is None and r.subject.cluster is not None and r.subject.applies_in(ns.name, labels)


def _reaches(rule: ir.Rule, namespace: str, labels: dict[str, str], protocol: Protocol, port: int) -> bool:
    ports_ok = not rule.ports or any(
        p.protocol is protocol and ((p.port is None and p.name is None) or
                                    (p.port is not None and p.port <= port <= (p.end_port or p.port)))
        for p in rule.ports
    )
    if not ports_ok:
        return False
    for peer in rule.peers:
        if isinstance(peer, ir.AnyPeer):
            return True
        if isinstance(peer, ir.PodPeer) and peer.pods.matches(labels) and ir.namespace_matches(
            peer.namespaces, namespace, {}
        ):
            return True
    return False


