"""`netdsl alerts`: a Prometheus Operator `PrometheusRule` (seed §9.3) that fires when a namespace the
program isolates sees policy drops above a rate, on the metric the target's CNI really exports.

Rule: one alert per namespace an `isolate` names (`ir.Program.isolations`, in name order; the
directions of its isolations decide which drops count: ingress drops of traffic to it, egress drops
of traffic from it), and one for the namespaces of `cluster` isolations (every namespace but the
system ones; a `cluster namespaces[...]` block cannot be told apart by namespace name and counts all
drops outside the system namespaces). The expression is `sum(rate(METRIC{drops in the namespace}[W]))
> THRESHOLD`, held for FOR. Metrics, checked against each project's source and documentation:

* cilium: Hubble's `hubble_drop_total` (labels `reason`, `protocol` and the context labels), reason
  `POLICY_DENIED` (no allow rule) or `POLICY_DENY` (a deny rule) - Hubble writes the flow's drop reason
  enum name. Per-namespace labels need the metric option
  `drop:labelsContext=source_namespace,destination_namespace,traffic_direction`.
* calico: Felix's `calico_denied_packets` (labels `policy`, `srcIP`, `instance`; a gauge that Felix
  adds to, as Tigera's own alert applies rate() to it). It exists in Calico Enterprise and Calico Cloud
  (policy metrics, port 9081), not in Calico Open Source. `policy` is `<tier>|<namespace>/<name>|<rule
  index>|deny` for a namespaced policy (index -1: the tier's end, the default deny), so a namespace is
  selected by the policies that live in it.
* vanilla: NetworkPolicy has no standard drop metric (each CNI exports its own): refused, naming the
  targets that have one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from netdsl import ir
from netdsl.ir import Direction

METRIC_TARGETS = ("cilium", "calico")
HUBBLE_OPTION = "drop:labelsContext=source_namespace,destination_namespace,traffic_direction"
CLUSTER = "(cluster)"  # the alert for `cluster` isolations


class AlertError(ValueError):
    pass


@dataclass(frozen=True)
class Isolated:
    namespace: str  # CLUSTER for cluster isolations
    directions: frozenset[Direction]


def isolated_namespaces(program: ir.Program) -> list[Isolated]:
    found: dict[str, set[Direction]] = {}
    for i in program.isolations:
        found.setdefault(CLUSTER if i.cluster is not None else i.namespace, set()).add(i.direction)
    return [Isolated(ns, frozenset(d)) for ns, d in sorted(found.items(), key=lambda kv: (kv[0] == CLUSTER, kv[0]))]


def _regex(text: str) -> str:
    """A PromQL double-quoted string holding an RE2 pattern that matches `text` literally."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text).replace("\\", "\\\\")


def _alternatives(names: tuple[str, ...]) -> str:
    return "|".join(_regex(n) for n in names)


def expression(target: str, iso: Isolated, window: str, system: tuple[str, ...]) -> str:
    if target == "cilium":
        reason = 'reason=~"POLICY_DENIED|POLICY_DENY"'
        selectors = []
        for direction, side in ((Direction.INGRESS, "destination"), (Direction.EGRESS, "source")):
            if direction not in iso.directions:
                continue
            if iso.namespace == CLUSTER:
                where = f'{side}_namespace!~"{_alternatives(system)}",{side}_namespace!=""'
            else:
                where = f'{side}_namespace="{iso.namespace}"'
            selectors.append(f'rate(hubble_drop_total{{{reason},traffic_direction="{direction.value.lower()}",'
                             f'{where}}}[{window}])')
        return f"sum({' or '.join(selectors)})"
    if target == "calico":
        if iso.namespace == CLUSTER:
            # a global policy's name has no namespace; namespaced ones outside the system namespaces count
            where = f'policy!~"[^|]*\\\\|({_alternatives(system)})/.*"'
        else:
            where = f'policy=~"[^|]*\\\\|{_regex(iso.namespace)}/.*"'
        return f"sum(rate(calico_denied_packets{{{where}}}[{window}]))"
    raise AlertError(f"no drop metric for target {target!r}")


def _alert_name(namespace: str) -> str:
    if namespace == CLUSTER:
        return "NetdslPolicyDropsCluster"
    return "NetdslPolicyDrops" + "".join(part.capitalize() for part in re.split(r"[^a-zA-Z0-9]+", namespace))


def build_rule(program: ir.Program, target: str, paths: tuple[str, ...], threshold: float = 10.0,
               hold: str = "5m", window: str = "5m", severity: str = "warning", name: str = "netdsl-policy-drops",
               namespace: str = "monitoring") -> dict[str, object]:
    if target not in METRIC_TARGETS:
        raise AlertError(f"target {target} has no standard metric for packets dropped by policy (a NetworkPolicy "
                         f"is enforced by whichever CNI runs it, each with its own metrics): use --target "
                         f"{' or --target '.join(METRIC_TARGETS)} for the CNI you run")
    isolated = isolated_namespaces(program)
    if not isolated:
        raise AlertError("the program isolates no namespace: no drops to watch (add `isolate` to a namespace)")
    where = " ".join(paths)
    rules = []
    for iso in isolated:
        what = "the namespaces of `cluster` blocks" if iso.namespace == CLUSTER else f"namespace {iso.namespace}"
        explain = (f"netdsl explain {where} --to <pod-or-service>" if iso.namespace == CLUSTER
                   else f"netdsl explain {where} --to {iso.namespace}/<service>")
        directions = " and ".join(sorted(d.value.lower() for d in iso.directions))
        rules.append({
            "alert": _alert_name(iso.namespace),
            "expr": f"{expression(target, iso, window, program.system_namespaces)} > {threshold:g}",
            "for": hold,
            "labels": {"severity": severity, "netdsl_namespace": iso.namespace},
            "annotations": {
                "summary": f"Policy drops in {what} above {threshold:g}/s",
                "description": (f"{{{{ $value | humanize }}}} packets/s dropped by network policy ({directions}) in "
                                f"{what}, isolated by netdsl. A new client, a changed port or a missing flow "
                                "statement?"),
                "runbook": (f"Which statement decides: `{explain}` (and `--from <source>`); compare with "
                            + ("`hubble observe --verdict DROPPED"
                               + ("" if iso.namespace == CLUSTER else f" --namespace {iso.namespace}") + "`"
                               if target == "cilium" else "Calico flow logs")
                            + ". If the traffic is wanted, add a flow statement and recompile."),
            },
        })
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "netdsl"},
            "annotations": {"netdsl.dev/metric": _requirement(target)},
        },
        "spec": {"groups": [{"name": "netdsl.policy-drops", "interval": "30s", "rules": rules}]},
    }


def _requirement(target: str) -> str:
    if target == "cilium":
        return f"Hubble metrics with the option {HUBBLE_OPTION} (Helm: hubble.metrics.enabled)"
    return "Calico Enterprise or Calico Cloud policy metrics (calico_denied_packets, Felix port 9081)"


def render(rule: dict[str, object], target: str) -> str:
    head = (f"# Generated by netdsl alerts (target {target}). Needs: {_requirement(target)}.\n")
    return head + yaml.safe_dump(rule, sort_keys=False, allow_unicode=True, width=1000)
