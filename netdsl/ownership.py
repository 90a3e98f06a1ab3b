"""Ownership: policies in the cluster that netdsl did not write.

Rule: given a dump of the cluster (`kubectl get networkpolicies,... -A -o yaml`, files or directories),
every policy object without the label `app.kubernetes.io/managed-by: netdsl` that applies where the
program writes policies - a namespace the program has statements or `isolate` for, or anywhere when the
object is cluster-wide or the program has `cluster` blocks - is a `foreign-policy` warning at its place
in the dump: the cluster enforces it next to netdsl's objects (allows add up, denies and tiers come
first), so what netdsl proves about the program does not cover it.
"""

from __future__ import annotations

from netdsl import ir
from netdsl.diagnostics import Diagnostic, warning
from netdsl.importer.read import Input

MANAGED_BY = ("app.kubernetes.io/managed-by", "netdsl")
NAMESPACED = {
    ("networking.k8s.io", "NetworkPolicy"), ("projectcalico.org", "NetworkPolicy"),
    ("projectcalico.org", "StagedNetworkPolicy"), ("projectcalico.org", "StagedKubernetesNetworkPolicy"),
    ("projectcalico.org", "NetworkSet"), ("cilium.io", "CiliumNetworkPolicy"),
}
CLUSTER_WIDE = {
    ("projectcalico.org", "GlobalNetworkPolicy"), ("projectcalico.org", "StagedGlobalNetworkPolicy"),
    ("projectcalico.org", "GlobalNetworkSet"), ("cilium.io", "CiliumClusterwideNetworkPolicy"),
    ("policy.networking.k8s.io", "ClusterNetworkPolicy"), ("policy.networking.k8s.io", "AdminNetworkPolicy"),
    ("policy.networking.k8s.io", "BaselineAdminNetworkPolicy"),
}


def program_namespaces(program: ir.Program) -> tuple[set[str], bool]:
    """The namespaces the program writes policies into, and whether it writes cluster-wide ones."""
    cluster = any(i.cluster is not None for i in program.isolations) or any(
        r.subject.cluster is not None for r in program.rules)
    names = {r.subject.namespace for r in program.rules if r.subject.cluster is None}
    names |= {i.namespace for i in program.isolations if i.cluster is None}
    return {n for n in names if n}, cluster


def foreign_policies(program: ir.Program, dump: Input) -> list[Diagnostic]:
    namespaces, cluster = program_namespaces(program)
    out: list[Diagnostic] = []
    for obj in dump.objects:
        kind = (obj.api_version.partition("/")[0], obj.kind)
        if kind not in NAMESPACED and kind not in CLUSTER_WIDE:
            continue
        labels = (obj.body.get("metadata") or {}).get("labels") or {}
        if isinstance(labels, dict) and labels.get(MANAGED_BY[0]) == MANAGED_BY[1]:
            continue
        if kind in CLUSTER_WIDE:
            where = "applies cluster-wide, also"
        elif cluster or obj.namespace in namespaces:
            where = f"is in namespace {obj.namespace},"
        else:
            continue
        out.append(warning(
            "foreign-policy",
            f"{obj.title} {where} where this program writes policies, and netdsl did not write it: the "
            "cluster enforces both, so what netdsl proves about the program does not cover it",
            obj.span(),
            "bring it into the program (`netdsl import` the object) or delete it; `--name-prefix` keeps the "
            "names of netdsl's objects apart from it",
        ))
    return out
