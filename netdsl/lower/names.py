"""Names and scopes: declarations (namespaces, cluster blocks, tiers, services, groups, cidr sets,
system namespaces) and name resolution (subjects, peers, `ns/service`, namespace scopes, expect endpoints).

Rule: a name means what its scope declares. A service or group name resolves in the statement's own
scope (a namespace, or a `cluster` block); `ns/name` in namespace `ns`, which must be declared; a cidr set
anywhere. A peer without `in ...` lives where the statement's subjects live. Unknown names are errors at
the word, with the closest declared names as a hint; a name whose declaration failed is not reported
again.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from netdsl import ir, parse
from netdsl.ir import Selector, Workload
from netdsl.lower.state import RESERVED_NAMES, CidrSet, Scope
from netdsl.lower.values import Values, check_dns_label, check_fqdn, looks_like_cidr
from netdsl.source import Span


class Names(Values):
    # ---- declarations
    def declare_cidrs(self, stmt: parse.CidrsDecl) -> None:
        name = stmt.name.text
        if (why := check_dns_label(name)) is not None:
            self.error("invalid-name", f"invalid cidr set name {name!r}: {why}", stmt.name.span)
        if name in self.cidr_sets:
            first = self.cidr_sets[name].span
            self.failed.add(("", name))
            self.error(
                "duplicate-name", f"cidr set `{name}` is declared twice", stmt.name.span,
                f"first declared at {first}",
            )
            return
        peers = [
            replace(p, network_set=name)
            for item in stmt.items if (p := self.lower_cidr(item, label=name)) is not None
        ]
        if len(peers) != len(stmt.items):
            self.failed.add(("", name))
            return
        self.cidr_sets[name] = CidrSet(name, tuple(peers), stmt.name.span)

    def declare_system(self, stmt: parse.SystemDecl) -> None:
        if self.system_span is not None:
            self.error("duplicate-name", "`system namespaces` is declared twice", stmt.span,
                       f"first declared at {self.system_span}")
            return
        for word in stmt.names:
            if (why := check_dns_label(word.text)) is not None:
                self.error("invalid-name", f"invalid namespace name {word.text!r}: {why}", word.span)
        self.system = tuple(sorted({w.text for w in stmt.names}))
        self.system_span = stmt.span

    def declare_pod_networks(self, stmt: parse.PodNetworksDecl) -> None:
        """`pod networks = CIDR, ...`: once per program; each a strict CIDR."""
        if self.pod_networks_span is not None:
            self.error("duplicate-name", "`pod networks` is declared twice", stmt.span,
                       f"first declared at {self.pod_networks_span}; list every range in one declaration")
            return
        self.pod_networks_span = stmt.span
        networks = [n for word in stmt.networks if (n := self.parse_network(word)) is not None]
        self.pod_networks = tuple(sorted(set(networks), key=lambda n: (n.version, n)))

    def declare_tier(self, block: parse.TierBlock) -> None:
        name = block.name.text
        ok = True
        if (why := check_dns_label(name)) is not None:
            self.error("invalid-name", f"invalid tier name {name!r}: {why}", block.name.span)
            ok = False
        elif name in ("default", "kube-admin", "kube-baseline", "calico-system", "allow-tigera"):
            self.error("reserved-name", f"`{name}` is a tier Calico manages itself", block.name.span,
                       "statements outside `tier` blocks go to Calico's default tier")
            ok = False
        order: int | None = None
        if re.fullmatch(r"\d{1,9}", block.order.text):
            order = int(block.order.text)
            if order == ir.DEFAULT_TIER_ORDER:
                self.error("invalid-tier", f"order {order} is the default tier's own order", block.order.span,
                           "choose a lower order to run before it, or a higher one to run after it")
                ok = False
        else:
            self.error("invalid-tier", f"invalid tier order {block.order.text!r}", block.order.span,
                       "write a whole number; lower orders are evaluated first (Calico's default tier "
                       f"is {ir.DEFAULT_TIER_ORDER})")
            ok = False
        otherwise = ir.Action.DENY if block.otherwise and block.otherwise.text == "deny" else ir.Action.PASS
        if ok and order is not None:
            tier = ir.Tier(name, order, otherwise, block.name.span)
            first = self.tiers.get(name)
            if first is None:
                self.tiers[name] = tier
            elif (first.order, first.otherwise) != (order, otherwise):
                self.error(
                    "conflict",
                    f"tier `{name}` is declared with order {first.order} and `otherwise "
                    f"{first.otherwise.value.lower()}` elsewhere",
                    block.name.span, f"the other declaration is at {first.span}",
                )
        for item in block.items:
            if isinstance(item, parse.ClusterBlock):
                self.cluster_blocks.append((item, name))
            else:
                self.declare_namespace(item, name)

    def declare_cluster(self, block: parse.ClusterBlock, tier: str | None) -> None:
        """A cluster scope: its namespaces as one selector (system namespaces left out unless asked)."""
        selector = None
        if block.selector is not None:
            selector = self.lower_selector(block.selector, what="this cluster block")
            if selector is None:
                return
        requirements = list(selector.requirements) if selector else []
        if not block.including_system and self.system:
            requirements.append(ir.Requirement(ir.NAMESPACE_NAME_LABEL, ir.Operator.NOT_IN, self.system))
        match: ir.NamespaceMatch = (
            ir.NamespaceBySelector(Selector.of(requirements)) if requirements else ir.AllNamespaces()
        )
        key = (selector, block.including_system)
        scope = self.clusters.get(key)
        if scope is None:
            name = "cluster" + (f" namespaces[{selector}]" if selector else "")
            if block.including_system:
                name += " including system"
            scope = self.clusters[key] = Scope(name, block.span, cluster=match)
            if block.including_system and any(isinstance(s, parse.IsolateStmt) for s in block.statements):
                self.warn(
                    "system-namespaces",
                    "this isolation also applies to the system namespaces: DNS, the CNI and the control "
                    "plane's pods lose every connection no statement allows",
                    block.span,
                    f"without `including system`, netdsl leaves out {', '.join(self.system)}",
                )
        scope.blocks.append((block.statements, tier))

    def declare_namespace(self, block: parse.NamespaceBlock, tier: str | None) -> None:
        name = block.name.text
        if (why := check_dns_label(name)) is not None:
            self.error("invalid-name", f"invalid namespace name {name!r}: {why}", block.name.span)
        ns = self.namespaces.get(name)
        if ns is None:
            ns = self.namespaces[name] = Scope(name, block.name.span)
        ns.blocks.append((block.statements, tier))
        for label in block.labels:
            key, value = label.key.text, label.value.text
            if not self.valid_label(label.key, label.value):
                continue
            if key == ir.NAMESPACE_NAME_LABEL and value != name:
                self.error(
                    "conflict",
                    f"Kubernetes sets `{key}={name}` on this namespace itself; it cannot be {value!r}",
                    label.key.span,
                )
                continue
            if key in ns.labels and ns.labels[key][0] != value:
                self.error(
                    "conflict",
                    f"namespace `{name}` is labelled `{key}={ns.labels[key][0]}` elsewhere; "
                    f"it cannot also be `{key}={value}`",
                    label.key.span,
                    f"the other label is at {ns.labels[key][1]}",
                )
                continue
            ns.labels.setdefault(key, (value, label.key.span))

    def check_service_name(self, ns: Scope, word: parse.Word, kind: str) -> bool:
        name = word.text
        if (why := check_dns_label(name)) is not None:
            self.error("invalid-name", f"invalid {kind} name {name!r}: {why}", word.span)
            return False
        if name in RESERVED_NAMES:
            self.error("reserved-name", f"`{name}` is a name netdsl uses for its own policies", word.span,
                       "choose another name")
            return False
        if name in ns.services or name in ns.groups:
            first = ns.services[name].span if name in ns.services else ns.groups[name][1]
            self.error(
                "duplicate-name", f"`{name}` is already declared in {ns.what}", word.span,
                f"first declared at {first}",
            )
            return False
        if name in self.cidr_sets:
            self.error(
                "duplicate-name", f"`{name}` is already the name of a cidr set", word.span,
                f"the cidr set is declared at {self.cidr_sets[name].span}",
            )
            return False
        return True

    def declare_service(self, ns: Scope, stmt: parse.ServiceDecl) -> None:
        selector = self.lower_selector(stmt.selector, what=f"service `{stmt.name.text}`")
        if not self.check_service_name(ns, stmt.name, "service") or selector is None:
            self.failed.add((ns.key, stmt.name.text))
            return
        ns.services[stmt.name.text] = Workload(ns.namespace, stmt.name.text, selector, stmt.name.span,
                                               cluster=ns.cluster)

    def declare_group(self, ns: Scope, stmt: parse.GroupDecl) -> None:
        if self.check_service_name(ns, stmt.name, "group"):
            ns.groups[stmt.name.text] = (stmt.members, stmt.name.span)
        else:
            self.failed.add((ns.key, stmt.name.text))

    def check_groups(self, ns: Scope) -> None:
        for name in ns.groups:
            self.expand(ns, name, set(), report=True)

    def expand(self, ns: Scope, name: str, seen: set[str], report: bool = False) -> list[Workload]:
        """The services a service or group name stands for (groups may contain groups)."""
        if name in ns.services:
            return [ns.services[name]]
        members, _span = ns.groups[name]
        if name in seen:
            return []
        seen = seen | {name}
        out: list[Workload] = []
        for m in members:
            if m.text in ns.services or m.text in ns.groups:
                if m.text in seen:
                    if report:
                        self.error("conflict", f"group `{name}` contains itself through `{m.text}`", m.span)
                    continue
                out.extend(self.expand(ns, m.text, seen, report))
            elif report and (ns.key, m.text) not in self.failed:
                self.error(
                    "unknown-name", f"no service or group `{m.text}` in {ns.what}", m.span,
                    self.did_you_mean(m.text, [*ns.services, *ns.groups]),
                )
        return list(dict.fromkeys(out))

    def lower_subjects(self, ns: Scope, subjects: parse.Subjects) -> list[Workload]:
        if isinstance(subjects, parse.AllPods):
            return [self.all_pods(ns)]
        out: list[Workload] = []
        for word in subjects:
            if word.text in ns.services or word.text in ns.groups:
                out.extend(self.expand(ns, word.text, set()))
            elif (ns.key, word.text) not in self.failed:
                self.error(
                    "unknown-name", f"no service or group `{word.text}` in {ns.what}", word.span,
                    self.did_you_mean(word.text, [*ns.services, *ns.groups])
                    or f"declare it first: `service {word.text} = app={word.text}`",
                )
        return list(dict.fromkeys(out))

    def cluster_peer(self, ns: Scope, what: str, span: Span) -> bool:
        """In a `cluster` block a peer without `in ...` would have to mean "in the subject's own
        namespace", which no target can say cluster-wide: an error, never every pod of every namespace."""
        if ns.cluster is None:
            return False
        self.error(
            "cluster-peer",
            f"in a `cluster` block, {what} as a peer cannot mean the subject's own namespace (no target can say "
            "that cluster-wide), and netdsl does not widen it to every namespace",
            span,
            "say which namespaces: `all namespaces`, `pods[...] in all namespaces`, `pods[...] in namespace "
            "NAME`, or write the statement in a `namespace NAME { }` block",
        )
        return True

    def lower_peer(self, ns: Scope, peer: parse.Peer) -> list[ir.Peer]:
        if isinstance(peer, parse.RefPeer):
            return self.lower_ref(ns, peer.name)
        if peer_without_scope(peer) and self.cluster_peer(
            ns, "`all pods`" if isinstance(peer, parse.AllPodsPeer) else "`pods[...]` without `in ...`", peer.span
        ):
            return []
        if isinstance(peer, parse.PodsPeer):
            scope = self.lower_scope(ns, peer.scope)
            sel = self.lower_selector(peer.selector, what="this peer")
            if scope is None or sel is None:
                return []
            return [ir.PodPeer(scope, sel, f"pods[{sel}]")]
        if isinstance(peer, parse.AllPodsPeer):
            scope = self.lower_scope(ns, peer.scope)
            return [] if scope is None else [ir.PodPeer(scope, ir.EVERYTHING, "all pods")]
        if isinstance(peer, parse.NamespacePeer):
            scope = self.lower_scope(ns, peer.scope)
            return [] if scope is None else [ir.PodPeer(scope, ir.EVERYTHING, "namespace")]
        if isinstance(peer, parse.CidrPeer):
            c = self.lower_cidr(peer.item)
            return [] if c is None else [c]
        if isinstance(peer, parse.FqdnPeer):
            name = peer.name.text.lower().rstrip(".")
            if (why := check_fqdn(name)) is not None:
                self.error("invalid-name", f"invalid DNS name {peer.name.text!r}: {why}", peer.name.span,
                           "write a name like api.example.com, or a pattern like *.example.com")
                return []
            return [ir.FqdnPeer(name)]
        if isinstance(peer, parse.EntityPeer):
            if peer.name.text not in ir.ENTITIES:
                self.error("unknown-name", f"unknown entity `{peer.name.text}`", peer.name.span,
                           self.did_you_mean(peer.name.text, ir.ENTITIES)
                           or "the entities are " + ", ".join(sorted(ir.ENTITIES)))
                return []
            return [ir.EntityPeer(peer.name.text)]
        return [ir.AnyPeer()]

    def lower_ref(self, ns: Scope, word: parse.Word) -> list[ir.Peer]:
        name = word.text
        if "/" in name:
            ns_name, _, svc = name.partition("/")
            other = self.namespaces.get(ns_name)
            if other is None:
                self.error(
                    "unknown-name", f"`{name}`: namespace `{ns_name}` is not declared in this program",
                    word.span,
                    f"declare its services in a `namespace {ns_name} {{ ... }}` block, or write "
                    f"`pods[...] in namespace {ns_name}`",
                )
                return []
            if svc in other.services or svc in other.groups:
                return [
                    ir.PodPeer(ir.NamespaceByName(ns_name), w.selector, f"{ns_name}/{w.name}")
                    for w in self.expand(other, svc, set())
                ]
            self.error(
                "unknown-name", f"no service or group `{svc}` in namespace `{ns_name}`", word.span,
                self.did_you_mean(svc, [*other.services, *other.groups]),
            )
            return []
        if name in ns.services or name in ns.groups:
            if self.cluster_peer(ns, f"`{name}` (declared in this block)", word.span):
                return []
            return [ir.PodPeer(ns.here, w.selector, w.name) for w in self.expand(ns, name, set())]
        if name in self.cidr_sets:
            return list(self.cidr_sets[name].peers)
        if (ns.key, name) in self.failed or ("", name) in self.failed:
            return []
        hint = self.did_you_mean(name, [*ns.services, *ns.groups, *self.cidr_sets])
        if hint is None and name in self.namespaces:
            hint = f"`{name}` is a namespace; write `namespace {name}` for all of its pods"
        if hint is None and looks_like_cidr(name):
            hint = f"write `cidr {name}`"
        self.error("unknown-name", f"no service, group or cidr set named `{name}`", word.span, hint)
        return []

    def expect_pods(self, end: parse.ExpectPods, ns: Scope | None) -> tuple[str, ir.PodPeer] | None:
        """`pods[sel] [in SCOPE]`, `any pod [in SCOPE]`: without a scope, this namespace (block) or, at
        the top level, every namespace."""
        selector = ir.EVERYTHING
        if end.selector is not None:
            got = self.lower_selector(end.selector, what="this selector")
            if got is None:
                return None
            selector = got
        if end.scope is None:
            where: ir.NamespaceMatch | None = ns.here if ns is not None else ir.AllNamespaces()
        else:
            where = self.lower_scope(ns, end.scope)
        if where is None:
            return None
        return self.statement_text(end.span), ir.PodPeer(where, selector, self.statement_text(end.span))

    def lower_scope(self, ns: Scope | None, scope: parse.NamespaceScope | None) -> ir.NamespaceMatch | None:
        """A peer's namespace scope; none: the statement's own namespace (ns, which then must be given)."""
        if scope is None:
            assert ns is not None
            return ns.here
        if isinstance(scope, parse.NsByName):
            if (why := check_dns_label(scope.name.text)) is not None:
                self.error("invalid-name", f"invalid namespace name {scope.name.text!r}: {why}",
                           scope.name.span)
                return None
            return ir.NamespaceByName(scope.name.text)
        if isinstance(scope, parse.NsAll):
            return ir.AllNamespaces()
        sel = self.lower_selector(scope.selector, what="this namespace selector")
        if sel is None:
            return None
        eq = sel.equalities()
        if "name" in eq and not any("name" in n.labels for n in self.namespaces.values()):
            self.warn(
                "namespace-name-label",
                f"Kubernetes does not set a `name` label on namespaces, so `name={eq['name']}` "
                "matches no namespace unless you label it yourself",
                scope.span,
                f"write `namespace {eq['name']}` (it uses the automatic label kubernetes.io/metadata.name)",
            )
        if len(sel.requirements) == 1 and ir.NAMESPACE_NAME_LABEL in eq:
            return ir.NamespaceByName(eq[ir.NAMESPACE_NAME_LABEL])
        return ir.NamespaceBySelector(sel)

    def expect_endpoint(self, word: parse.Word, ns: Scope | None) -> tuple[str, ir.PodPeer | None] | None:
        """A service (`name` in the enclosing namespace or cluster block, or `ns/name`) -> `ns/name` and
        the class of its pods; or an IP address (no class)."""
        text = word.text
        try:
            ipaddress.ip_address(text)
            return text, None
        except ValueError:
            pass
        scope_name, slash, name = text.rpartition("/")
        scope = self.namespaces.get(scope_name) if slash else ns
        if scope is not None and name in scope.services:
            service = scope.services[name]
            where: ir.NamespaceMatch = scope.cluster if scope.cluster is not None else ir.NamespaceByName(scope.name)
            shown = f"{scope.name}/{name}" if scope.cluster is None else name
            return shown, ir.PodPeer(where, service.selector, shown)
        hint = None
        if scope is not None:
            hint = self.did_you_mean(name, scope.services)
        if not slash and ns is None:
            hint = hint or "outside a namespace block, write `namespace/service`"
        self.error("unknown-name", f"`{text}` is not a declared service or an IP address", word.span, hint)
        return None


def peer_without_scope(peer: parse.Peer) -> bool:
    """`all pods` or `pods[...]` without `in ...`: pods of the statement's own namespace."""
    return isinstance(peer, (parse.PodsPeer, parse.AllPodsPeer)) and peer.scope is None
