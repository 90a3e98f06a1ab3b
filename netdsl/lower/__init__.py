"""Lowering: syntax tree -> IR. Resolves names, applies defaults, rejects nonsense, runs lints.

All problems in all files are collected; lowering goes on after an error wherever it can, so a user
sees every mistake at once rather than one per compile. The passes, one module each, in the order `run`
applies them:

* names (netdsl/lower/names.py): declarations and name resolution;
* values (netdsl/lower/values.py): labels, selectors, CIDRs, ports, HTTP;
* flows (netdsl/lower/flows.py): statements -> IR rules, isolations, expectations;
* halves (netdsl/lower/halves.py): the other half of each flow (flows work end to end);
* lints (netdsl/lower/lints.py): warnings about programs that likely do not mean what they say.
"""

from __future__ import annotations

from collections.abc import Sequence

from netdsl import ir, parse
from netdsl.diagnostics import Diagnostic
from netdsl.lower.flows import Flows
from netdsl.lower.halves import Halves
from netdsl.lower.lints import Lints
from netdsl.lower.networks import Networks
from netdsl.lower.state import ALL_PODS, DNS_NAMESPACE, DNS_PORTS, DNS_SELECTOR, RESERVED_NAMES

__all__ = ["ALL_PODS", "DNS_NAMESPACE", "DNS_PORTS", "DNS_SELECTOR", "RESERVED_NAMES", "Lowering", "lower"]


class Lowering(Flows, Halves, Lints, Networks):
    def run(self) -> ir.Program:
        for module in self.modules:
            for top in module.statements:
                if isinstance(top, parse.CidrsDecl):
                    self.declare_cidrs(top)
                elif isinstance(top, parse.SystemDecl):
                    self.declare_system(top)
                elif isinstance(top, parse.PodNetworksDecl):
                    self.declare_pod_networks(top)
                elif isinstance(top, parse.TierBlock):
                    self.declare_tier(top)
                elif isinstance(top, parse.ClusterBlock):
                    self.cluster_blocks.append((top, None))
                elif isinstance(top, parse.ExpectStmt):
                    self.expect_stmts.append((top, None))
                else:
                    self.declare_namespace(top, None)
        for block, tier in self.cluster_blocks:  # after `system namespaces`, wherever it is written
            self.declare_cluster(block, tier)
        for ns in self.scopes():
            for statements, _tier in ns.blocks:
                for stmt in statements:
                    if isinstance(stmt, parse.ServiceDecl):
                        self.declare_service(ns, stmt)
                    elif isinstance(stmt, parse.GroupDecl):
                        self.declare_group(ns, stmt)
        for ns in self.scopes():
            self.check_groups(ns)
        for ns in self.scopes():
            for statements, tier in ns.blocks:
                for stmt in statements:
                    if isinstance(stmt, parse.IsolateStmt):
                        self.lower_isolate(ns, stmt, tier)
                    elif isinstance(stmt, parse.DnsStmt):
                        self.lower_dns(ns, stmt, tier)
                    elif isinstance(stmt, parse.FlowStmt):
                        self.lower_flow(ns, stmt, tier)
                    elif isinstance(stmt, parse.ExpectStmt):
                        self.expect_stmts.append((stmt, ns))
        self.settle_isolations()
        explicit = self.dedupe(self.exclude_pod_networks(self.rules))
        derived = self.derive_counterparts(explicit)
        program = ir.Program(
            namespaces=tuple(
                ir.Namespace(ns.name, tuple(sorted((k, v) for k, (v, _) in ns.labels.items())), ns.span)
                for ns in sorted(self.namespaces.values(), key=lambda n: n.name)
            ),
            services=tuple(s for ns in self.scopes() for s in ns.services.values()),
            isolations=tuple(self.isolations),
            rules=tuple(explicit + derived),
            tiers=tuple(sorted(self.tiers.values(), key=lambda t: (t.order, t.name))),
            system_namespaces=self.system,
            pod_networks=self.pod_networks,
            expectations=tuple(e for stmt, ns in self.expect_stmts if (e := self.lower_expect(stmt, ns))),
        )
        self.lint(program)
        return program


def lower(modules: Sequence[parse.Module]) -> tuple[ir.Program, list[Diagnostic]]:
    lowering = Lowering(modules)
    program = lowering.run()
    return program, lowering.diagnostics
