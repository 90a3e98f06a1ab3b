"""Flows: statements -> IR rules. `isolate [for S]` -> isolations (one per workload S stands for),
`allow dns` -> egress rules to kube-dns, flow statements (`accepts`, `connects to`,
`allows|denies|passes from|to`) -> one rule per subject, `expect` -> expectations.

Rule: each statement becomes rules for exactly the subjects it names, in its tier, with the peers and
ports it lists (no ports: every port). An allowed `fqdn` also allows the subject's DNS lookups.
Simplifying a rule's peers (`anywhere` beside others emits `anywhere` alone) never changes what is
derived from it: the other halves come from the statement's peers as written (state.half_peers).
"""

from __future__ import annotations

import ipaddress

from netdsl import ir, parse
from netdsl.ir import Direction, PortMatch
from netdsl.lower.names import Names
from netdsl.lower.state import DNS_NAMESPACE, DNS_PORTS, DNS_SELECTOR, Scope, rule_key
from netdsl.source import Span


class Flows(Names):
    def lower_isolate(self, ns: Scope, stmt: parse.IsolateStmt, tier: str | None) -> None:
        """`isolate [DIR]`: every pod of the scope; `isolate [DIR] for S`: one isolation per workload S
        stands for (`for all pods` is plain `isolate`). Redundancy is judged once every isolation is
        known (settle_isolations), except for plain ones repeated in one scope."""
        if tier is not None:
            self.error(
                "invalid-tier", "`isolate` cannot be used inside a tier", stmt.span,
                f"isolation is Kubernetes' default deny, in the default tier; to deny what tier `{tier}` "
                "does not allow, declare it `otherwise deny`",
            )
            return
        if stmt.direction is None:
            directions = [Direction.INGRESS, Direction.EGRESS]
        else:
            directions = [Direction.INGRESS if stmt.direction.text == "ingress" else Direction.EGRESS]
        subjects: list[ir.Workload | None] = [None]
        if stmt.subjects is not None and not isinstance(stmt.subjects, parse.AllPods):
            subjects = list(self.lower_subjects(ns, stmt.subjects))
        for d in directions:
            for s in subjects:
                if s is None and any(i.namespace == ns.namespace and i.cluster == ns.cluster and i.direction is d
                                     and i.subject is None for i in self.isolations):
                    self.warn("redundant", f"{ns.what} is already isolated for {d.value.lower()}", stmt.span)
                    continue
                self.isolations.append(ir.Isolation(ns.namespace, d, stmt.span, ns.cluster, s))

    def settle_isolations(self) -> None:
        """Drop (with a `redundant` warning) an isolation of a workload whose pods another isolation of
        the same scope and direction already covers: the scope's plain `isolate`, or a workload whose
        selector's requirements are a subset of its own (the same selector: the first one written)."""
        kept: list[ir.Isolation] = []
        redundant: dict[tuple[Span, str], tuple[list[str], ir.Isolation]] = {}
        by_scope: dict[tuple[object, ...], list[tuple[int, ir.Isolation]]] = {}
        for n, i in enumerate(self.isolations):
            by_scope.setdefault((i.namespace, i.cluster, i.direction), []).append((n, i))
        for n, i in enumerate(self.isolations):
            if i.subject is None:
                kept.append(i)
                continue
            mine = set(i.subject.selector.requirements)
            cover = next((
                o for m, o in by_scope[(i.namespace, i.cluster, i.direction)]
                if m != n and (o.subject is None or (set(o.subject.selector.requirements) <= mine and (
                    o.subject.selector != i.subject.selector or m < n)))
            ), None)
            if cover is None:
                kept.append(i)
                continue
            key = (i.span, i.subject.name)
            if key not in redundant:
                redundant[key] = ([], cover)
            redundant[key][0].append(i.direction.value.lower())
        for (span, name), (directions, cover) in redundant.items():
            where = f"{cover.span.path}:{cover.span.line}"
            why = (f"the `isolate` at {where} covers every pod of the "
                   f"{'namespace' if cover.cluster is None else 'cluster block'}") if cover.subject is None else (
                   f"`isolate for {cover.subject.name}` at {where} covers its pods")
            self.warn("redundant", f"`{name}` is already isolated for {' and '.join(directions)}: {why}", span)
        self.isolations = kept

    def lower_dns(self, ns: Scope, stmt: parse.DnsStmt, tier: str | None) -> None:
        subjects = self.lower_subjects(ns, stmt.subjects) if stmt.subjects else [self.all_pods(ns)]
        peer = ir.PodPeer(ir.NamespaceByName(DNS_NAMESPACE), DNS_SELECTOR, "dns")
        text = self.statement_text(stmt.span)
        for s in subjects:
            self.rules.append(ir.Rule(s, Direction.EGRESS, (peer,), DNS_PORTS, stmt.span, text, tier=tier))

    def lower_flow(self, ns: Scope, stmt: parse.FlowStmt, tier: str | None) -> None:
        if stmt.side is not None and stmt.side.text != stmt.direction:
            right = "ingress from" if stmt.direction == "ingress" else "egress to"
            written = "from" if stmt.direction == "ingress" else "to"
            verb = stmt.verb.text if stmt.verb else "allows"
            self.error("conflict", f"`{stmt.side.text}` does not go with `{written}`", stmt.side.span,
                       f"a rule of the subject's ingress reads `{verb} ingress from PEERS`, of its egress "
                       f"`{verb} egress to PEERS`; here: `{verb} {right}`")
            return
        subjects = self.lower_subjects(ns, stmt.subjects)
        peers: list[ir.Peer] = []
        for p in stmt.peers:
            peers.extend(self.lower_peer(ns, p))
        ports = self.lower_ports(stmt.ports)
        http = self.lower_http(stmt, ports)
        for p in stmt.peers:
            if isinstance(p, parse.FqdnPeer) and stmt.direction == "ingress":
                self.error("conflict", "a DNS name can only be a destination", p.span,
                           "use `fqdn` peers with `connects to` (egress)")
                return
            if isinstance(p, parse.FqdnPeer) and stmt.action != "allow":
                # Cilium's deny rules have no toFQDNs; a deny cannot follow DNS answers anywhere.
                self.error("conflict", "a DNS name can only be allowed, not denied or passed", p.span,
                           "deny its addresses with `cidr`, or allow only the names you want")
                return
        if stmt.action == "pass" and tier is None:
            # In Calico's default tier (the last one) Pass falls through to the namespace profile, which
            # allows everything - past `isolate`: never a silent allow.
            self.error(
                "pass-outside-tier", "`passes` hands traffic to the next tier, but this statement is in no tier",
                stmt.span,
                "put it in a `tier NAME order N { namespace ... { } }` block; outside tiers, write `denies` "
                "or leave the traffic to the statements that allow it",
            )
            return
        if not subjects or not peers or ports is None or http is None:
            return
        unique = tuple(dict.fromkeys(peers))
        emitted = unique
        if any(isinstance(p, ir.AnyPeer) for p in unique) and len(unique) > 1:
            emitted = (ir.AnyPeer(),)
            if not any(self.names_elsewhere(ns, p) for p in unique):
                self.warn("redundant", "`anywhere` already includes the other peers of this statement", stmt.span)
        direction = Direction.INGRESS if stmt.direction == "ingress" else Direction.EGRESS
        action = {"allow": ir.Action.ALLOW, "deny": ir.Action.DENY, "pass": ir.Action.PASS}[stmt.action]
        text = self.statement_text(stmt.span)
        for s in subjects:
            rule = ir.Rule(s, direction, emitted, ports, stmt.span, text, action, tier=tier, http=http,
                           one_sided=stmt.side is not None)
            self.rules.append(rule)
            if emitted != unique:
                self.half_peers[rule] = unique
        if action is ir.Action.ALLOW and any(isinstance(p, ir.FqdnPeer) for p in unique):
            # A DNS name is only reachable once its lookup is: the flow includes the subject's DNS.
            dns = ir.PodPeer(ir.NamespaceByName(DNS_NAMESPACE), DNS_SELECTOR, "dns")
            for s in subjects:
                self.rules.append(ir.Rule(s, Direction.EGRESS, (dns,), DNS_PORTS, stmt.span,
                                          f"DNS lookups for `{text}`", tier=tier))

    @staticmethod
    def names_elsewhere(ns: Scope, peer: ir.Peer) -> bool:
        """A peer whose other half `anywhere` does not derive: pods named in another namespace (or
        named at all, in a cluster block, where `anywhere` derives nothing)."""
        return (isinstance(peer, ir.PodPeer) and isinstance(peer.namespaces, ir.NamespaceByName)
                and (ns.cluster is not None or peer.namespaces.name != ns.name))

    # ---- assertions
    def lower_expect(self, stmt: parse.ExpectStmt, ns: Scope | None) -> ir.Expectation | None:
        source = self.expect_end(stmt.source, ns)
        port_word: parse.Word | None = None
        if isinstance(stmt.destination, parse.Word):
            dest_word = stmt.destination
            try:
                ipaddress.ip_address(dest_word.text)
                destination = self.expect_end(dest_word, ns)
            except ValueError:
                name, colon, port_text = dest_word.text.partition(":")
                destination = self.expect_end(parse.Word(name, dest_word.span), ns)
                if colon:
                    port_word = parse.Word(port_text, dest_word.span)
        else:
            destination = self.expect_end(stmt.destination, ns)
        if stmt.ports is not None:
            if port_word is not None or len(stmt.ports) != 1:
                self.error("invalid-port", "an expectation names one port", stmt.ports[0].span,
                           "write `backend:8080`, or `on 8080` after a class of pods")
                return None
            port_word = stmt.ports[0]
        port: PortMatch | None = None
        if port_word is not None:
            port = self.lower_port(port_word)
            if port is None:
                return None
            if port.end_port is not None or (port.port is None and port.name is None):
                self.error("invalid-port", "an expectation names one port", port_word.span,
                           "write `backend:8080` or `backend:53/udp`")
                return None
        if source is None or destination is None:
            return None
        return ir.Expectation(source[0], destination[0], port, stmt.allowed, stmt.span,
                              self.statement_text(stmt.span), source[1], destination[1])

    def expect_end(self, end: parse.Word | parse.ExpectPods, ns: Scope | None
                   ) -> tuple[str, ir.PodPeer | None] | None:
        if isinstance(end, parse.ExpectPods):
            return self.expect_pods(end, ns)
        return self.expect_endpoint(end, ns)

    # ---- end-to-end flows
    @staticmethod
    def dedupe(rules: list[ir.Rule]) -> list[ir.Rule]:
        seen: set[tuple[object, ...]] = set()
        out = []
        for r in rules:
            key = rule_key(r)
            if key not in seen:
                seen.add(key)
                out.append(r)
        return out

