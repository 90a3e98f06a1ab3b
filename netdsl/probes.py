"""`netdsl probes`: a connectivity test plan for a real cluster, with expected results from the proven
semantics of the chosen target's emitted objects.

Rule: the plan runs on throwaway probe pods, one per declared service (labelled with the smallest label
set its selector matches, `Selector.example_labels`) and one of no service (`untrusted`) in every
namespace the program names (system namespaces excepted), plus one per `expect` end no such pod stands
for. Every check is one connection between two of those pods (or a DNS look-up to kube-dns) and its
expected result is the target evaluator's verdict on exactly those pods (their labels, the marker label
included, and their namespaces with the program's declared labels); the program's own verdict must be
the same (translation validation on the plan's pods), else the plan is refused as a compiler bug.

Which checks: every `expect` line between probe pods; every allowed flow between probe pods on each
probed port (one port per protocol when every port is allowed); for each allowed flow a denied
neighbour - the next probed port of the same protocol the server refuses, and the first other client
(the untrusted pod of the server's namespace first) the server refuses on that port; a DNS look-up from
every pod whose egress the program restricts. UDP answers come from an echo server: best-effort, a
lost datagram reads as denied. SCTP and named ports are not probed (nc cannot; probe pods bind no
named ports).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from netdsl import ir
from netdsl.analysis import analyse
from netdsl.backends import Options
from netdsl.compiler import Result
from netdsl.ir import Direction, Protocol
from netdsl.semantics.engine import PROGRAM, Unavailable
from netdsl.semantics.expect import members
from netdsl.semantics.model import Connection, Pod, Topology, Verdict

MANAGED_BY = ("app.kubernetes.io/managed-by", "netdsl-probes")
DEFAULT_PREFIX = "netdsl-probe-"
DEFAULT_IMAGE = "nicolaka/netshoot"  # the seed's test image (§7.1, §7.2): sh, nc, socat, nslookup
KUBE_DNS = Pod("kube-system", "kube-dns", {"k8s-app": "kube-dns"})
DNS_NAME = "kubernetes.default"


class PlanError(ValueError):
    """The plan cannot be made (the target cannot express the program, nothing to probe)."""


class MismatchError(PlanError):
    """The target's objects and the program disagree on a planned connection: a compiler bug."""


@dataclass(frozen=True)
class ProbePod:
    namespace: str
    name: str
    stands_for: str  # "service frontend", "a pod of no service", "pods[app=x] (expect ...)"
    labels: tuple[tuple[str, str], ...]

    @property
    def pod(self) -> Pod:
        return Pod(self.namespace, self.name, dict(self.labels))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Check:
    source: ProbePod
    destination: ProbePod | None  # None: a DNS look-up of kubernetes.default (kube-dns, 53/udp)
    protocol: Protocol
    port: int
    expected: bool
    origin: str
    statements: tuple[str, ...]  # what decides it in the program
    rules: tuple[str, ...]  # what decides it in the target's objects

    @property
    def kind(self) -> str:
        return "dns" if self.destination is None else self.protocol.value.lower()

    def text(self) -> str:
        if self.destination is None:
            return f"{self.source} -> DNS {DNS_NAME} (kube-dns 53/udp)"
        return f"{self.source} -> {self.destination}:{self.port}/{self.protocol.value.lower()}"


@dataclass
class Plan:
    target: str
    image: str
    namespaces: dict[str, dict[str, str]]  # name -> declared labels
    pods: list[ProbePod]
    checks: list[Check]
    skipped: list[str] = field(default_factory=list)

    def listens(self, pod: ProbePod) -> list[tuple[Protocol, int]]:
        got = {(c.protocol, c.port) for c in self.checks if c.destination == pod}
        return sorted(got, key=lambda p: (p[0] is not Protocol.TCP, p[1]))


# ------------------------------------------------------------------------------------------ the pods


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "pod"


class _Names:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.taken: set[tuple[str, str]] = set()

    def new(self, namespace: str, stem: str) -> str:
        base = (self.prefix + _slug(stem))[:60].rstrip("-")
        name, n = base, 2
        while (namespace, name) in self.taken:
            name, n = f"{base}-{n}", n + 1
        self.taken.add((namespace, name))
        return name


def _labels(selector_labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    labels = {MANAGED_BY[0]: MANAGED_BY[1], **selector_labels}
    return tuple(sorted(labels.items()))


def _namespaces(program: ir.Program) -> dict[str, dict[str, str]]:
    declared = {ns.name: dict(ns.labels) for ns in program.namespaces}
    names = set(declared) | {s.namespace for s in program.services if s.cluster is None}
    for rule in program.rules:
        names |= {p.namespaces.name for p in rule.peers
                  if isinstance(p, ir.PodPeer) and isinstance(p.namespaces, ir.NamespaceByName)}
    for e in program.expectations:
        names |= {p.namespaces.name for p in (e.source_pods, e.destination_pods)
                  if p is not None and isinstance(p.namespaces, ir.NamespaceByName)}
    names.discard("")
    return {n: declared.get(n, {}) for n in sorted(names) if n not in program.system_namespaces}


def _topology(namespaces: dict[str, dict[str, str]], pods: Sequence[ProbePod]) -> Topology:
    return Topology({**namespaces, KUBE_DNS.namespace: namespaces.get(KUBE_DNS.namespace, {})},
                    (*(p.pod for p in pods), KUBE_DNS))


def _base_pods(program: ir.Program, namespaces: dict[str, dict[str, str]], names: _Names) -> list[ProbePod]:
    pods: list[ProbePod] = []
    for ns, labels in namespaces.items():
        for s in program.services:
            example = s.selector.example_labels()
            if example is None or not s.applies_in(ns, {**labels, ir.NAMESPACE_NAME_LABEL: ns}):
                continue
            pods.append(ProbePod(ns, names.new(ns, s.name), f"service {s.name}", _labels(example)))
        pods.append(ProbePod(ns, names.new(ns, "untrusted"), "a pod of no service", _labels({})))
    return pods


def _expectation_pods(program: ir.Program, namespaces: dict[str, dict[str, str]], pods: list[ProbePod],
                      names: _Names) -> None:
    """A probe pod for each `expect` end of pods no probe pod stands for yet."""
    for e in program.expectations:
        for text, peer in ((e.source, e.source_pods), (e.destination, e.destination_pods)):
            if peer is None or members(text, program, _topology(namespaces, pods), peer):
                continue
            example = peer.pods.example_labels()
            where = next((ns for ns, labels in namespaces.items()
                          if ir.namespace_matches(peer.namespaces, ns, labels)), None)
            if example is None or where is None:
                continue
            pods.append(ProbePod(where, names.new(where, "expect"), f"{text} ({e.span})", _labels(example)))


def _egress_restricted(program: ir.Program, pod: ProbePod, ns_labels: dict[str, str]) -> bool:
    labels = {**ns_labels, ir.NAMESPACE_NAME_LABEL: pod.namespace}
    own = dict(pod.labels)
    if any(i.direction is Direction.EGRESS and i.covers(pod.namespace, labels, own) for i in program.isolations):
        return True
    return any(r.direction is Direction.EGRESS and r.subject.applies_in(pod.namespace, labels)
               and r.subject.selector.matches(own) for r in program.rules)


# ------------------------------------------------------------------------------------------ the plan


class _Judge:
    """Both verdicts per connection; the target's is the expected result, the program's must agree."""

    def __init__(self, program_ev: Any, target_ev: Any, target: str) -> None:
        self.program_ev, self.target_ev, self.target = program_ev, target_ev, target
        self.mismatches: list[str] = []
        self.cache: dict[tuple[Pod, Pod, Protocol, int], tuple[Verdict, Verdict]] = {}

    def __call__(self, src: Pod, dst: Pod, protocol: Protocol, port: int) -> tuple[Verdict, Verdict]:
        key = (src, dst, protocol, port)
        got = self.cache.get(key)
        if got is None:
            conn = Connection(src, dst, protocol, port)
            got = self.target_ev.decide(conn), self.program_ev.decide(conn)
            if got[0].allowed != got[1].allowed:
                self.mismatches.append(f"{conn}: the program {'allows' if got[1].allowed else 'denies'} it, "
                                       f"{self.target} {'allows' if got[0].allowed else 'denies'} it")
            self.cache[key] = got
        return got

    def allowed(self, src: Pod, dst: Pod, protocol: Protocol, port: int) -> bool:
        return self(src, dst, protocol, port)[0].allowed


def build_plan(result: Result, target: str, options: Options | None = None, prefix: str = DEFAULT_PREFIX,
               image: str = DEFAULT_IMAGE) -> Plan:
    program = result.program
    if program is None:
        raise PlanError("the program has errors")
    namespaces = _namespaces(program)
    names = _Names(prefix)
    pods = _base_pods(program, namespaces, names)
    _expectation_pods(program, namespaces, pods, names)
    if not pods:
        raise PlanError("the program names no namespace outside the system namespaces: nothing to probe")
    topology = _topology(namespaces, pods)
    analysis = analyse(result, [target], topology, options)
    target_ev = analysis.evaluators[target]
    if isinstance(target_ev, Unavailable):
        raise PlanError(f"target {target}: {target_ev}")
    judge = _Judge(analysis.evaluators[PROGRAM], target_ev, target)
    probes = [(p[0], p[1]) for p in analysis.probes if p[0] is not Protocol.SCTP and len(p) == 2]
    plan = Plan(target, image, namespaces, pods, [])
    checks: dict[tuple[ProbePod, ProbePod | None, Protocol, int], tuple[int, Check]] = {}

    def add(group: int, src: ProbePod, dst: ProbePod | None, protocol: Protocol, port: int, origin: str) -> None:
        key = (src, dst, protocol, port)
        if key in checks:
            return
        verdict, said = judge(src.pod, KUBE_DNS if dst is None else dst.pod, protocol, port)
        checks[key] = (group, Check(src, dst, protocol, port, verdict.allowed, origin, said.reasons, verdict.reasons))

    by_endpoint = {(p.namespace, p.name): p for p in pods}

    def probe_pods(text: str, peer: ir.PodPeer | None) -> list[ProbePod]:
        return [by_endpoint[(m.namespace, m.name)] for m in members(text, program, topology, peer)
                if isinstance(m, Pod) and (m.namespace, m.name) in by_endpoint]

    later: list[tuple[ProbePod, ProbePod, str]] = []  # `expect ... denied` without a port: every port served
    for e in program.expectations:
        origin = f"expect {e.span.path}:{e.span.line}" if e.span else "expect"
        sources, destinations = probe_pods(e.source, e.source_pods), probe_pods(e.destination, e.destination_pods)
        if not sources or not destinations:
            end = "its source" if not sources else "its destination"
            plan.skipped.append(f"`{e.text}`: no probe pod stands for {end} (an address, or a class of no "
                                "namespace the plan creates)")
            continue
        if e.port is not None and (e.port.name is not None or e.port.protocol is Protocol.SCTP):
            plan.skipped.append(f"`{e.text}`: a named or SCTP port (probe pods bind no named ports; nc has no SCTP)")
            continue
        for src in sources:
            for dst in destinations:
                if src == dst:
                    continue
                if e.port is not None:
                    assert e.port.port is not None
                    add(0, src, dst, e.port.protocol, e.port.port, origin)
                elif e.allowed:
                    hit = next((p for p in probes if judge.allowed(src.pod, dst.pod, *p)), None)
                    if hit is not None:
                        add(0, src, dst, *hit, origin)
                else:
                    later.append((src, dst, origin))

    def clients(dst: ProbePod) -> list[ProbePod]:
        # the seed's denied client first: the pod of no service next to the server
        return sorted((p for p in pods if p != dst),
                      key=lambda p: (p.namespace != dst.namespace, p.stands_for != "a pod of no service"))

    for dst in pods:
        for src in pods:
            if src == dst:
                continue
            allowed = [p for p in probes if judge.allowed(src.pod, dst.pod, *p)]
            for protocol in (Protocol.TCP, Protocol.UDP):
                mine = [p for p in probes if p[0] is protocol]
                got = [p for p in allowed if p[0] is protocol]
                if not got:
                    continue
                every = len(got) == len(mine)
                for p in got[:1] if every else got:
                    add(1, src, dst, *p, "allowed flow" + (" (every port)" if every else ""))
                    if not every:
                        i = mine.index(p)
                        other = next((q for q in [*mine[i + 1:], *reversed(mine[:i])] if q not in got), None)
                        if other is not None:
                            add(1, src, dst, *other, f"denied neighbour: another port of {dst} than {p[1]}")
                    client = next((c for c in clients(dst) if c != src and not judge.allowed(c.pod, dst.pod, *p)),
                                  None)
                    if client is not None:
                        add(1, client, dst, *p, f"denied neighbour: another client of {dst}:{p[1]} than {src}")

    for src, dst, origin in later:
        served = {(c.protocol, c.port) for _, c in checks.values() if c.destination == dst}
        for protocol, port in sorted(served, key=lambda p: (p[0] is not Protocol.TCP, p[1])) or probes[:1]:
            add(0, src, dst, protocol, port, origin)

    for pod in pods:
        if _egress_restricted(program, pod, namespaces.get(pod.namespace, {})):
            add(2, pod, None, Protocol.UDP, 53, "DNS from a pod whose egress is restricted")

    if judge.mismatches:
        raise MismatchError("\n".join(judge.mismatches[:20]))
    plan.checks = [c for _, c in sorted(checks.values(), key=lambda gc: gc[0])]
    return plan


# ------------------------------------------------------------------------------------------ output


def pod_manifest(plan: Plan, pod: ProbePod) -> dict[str, Any]:
    listens = plan.listens(pod)
    servers = [f"socat TCP-LISTEN:{port},fork,reuseaddr SYSTEM:true &" if protocol is Protocol.TCP
               else f"socat UDP-RECVFROM:{port},fork EXEC:cat &" for protocol, port in listens]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": dict(pod.labels),
            "annotations": {
                "netdsl.dev/stands-for": pod.stands_for,
                "netdsl.dev/never-ready": "a failing readiness probe keeps this pod out of every Service "
                                          "that selects its labels; network policy ignores readiness",
            },
        },
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "probe",
                "image": plan.image,
                "command": ["sh", "-c", " ".join([*servers, "exec sleep 2147483647"])],
                "ports": [{"containerPort": port, "protocol": protocol.value} for protocol, port in listens],
                "readinessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 3600},
            }],
        },
    }


def render_json(plan: Plan) -> str:
    def end(pod: ProbePod) -> dict[str, Any]:
        return {"namespace": pod.namespace, "pod": pod.name, "labels": dict(pod.labels), "stands_for": pod.stands_for}

    data = {
        "target": plan.target,
        "image": plan.image,
        "namespaces": [{"name": n, "labels": {**labels, MANAGED_BY[0]: MANAGED_BY[1]}, "created_if_absent": True}
                       for n, labels in plan.namespaces.items()],
        "pods": [pod_manifest(plan, p) for p in plan.pods],
        "checks": [{
            "source": end(c.source),
            "destination": {"dns": DNS_NAME, "via": str(KUBE_DNS)} if c.destination is None else end(c.destination),
            "protocol": c.protocol.value,
            "port": c.port,
            "kind": c.kind,
            "expected": "allowed" if c.expected else "denied",
            "origin": c.origin,
            "why": {"program": list(c.statements), plan.target: list(c.rules)},
        } for c in plan.checks],
        "skipped": plan.skipped,
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _q(text: str) -> str:
    """One shell word, whatever the text holds."""
    return "'" + text.replace("'", "'\\''") + "'"


_HEAD = """\
set -u
KUBECTL="${KUBECTL:-kubectl}"
TIMEOUT="${TIMEOUT:-3}"
SETTLE_SECONDS="${SETTLE_SECONDS:-5}"   # time for the CNI to program policy for the new pods
KEEP=0
case "${1:-}" in
  --keep) KEEP=1 ;;
  "") ;;
  *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
esac

CREATED_NAMESPACES=""
FAILED=0
TOTAL=0

cleanup() {
  rc=$?
  if [ "$KEEP" = 1 ]; then
    echo "netdsl probes: --keep: the probe pods stay (delete them with: $KUBECTL delete pod -A -l %(label)s)" >&2
    exit "$rc"
  fi
%(delete)s
  for ns in $CREATED_NAMESPACES; do
    "$KUBECTL" delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_namespace() {  # NAME [LABEL=VALUE...]: create it with the program's labels if it is absent
  ns=$1
  shift
  if "$KUBECTL" get namespace "$ns" >/dev/null 2>&1; then
    return 0
  fi
  "$KUBECTL" create namespace "$ns" >/dev/null || exit 1
  CREATED_NAMESPACES="$CREATED_NAMESPACES $ns"
  "$KUBECTL" label namespace "$ns" %(label)s "$@" >/dev/null || exit 1
}

pod_ip() {  # NAMESPACE POD
  ip=$("$KUBECTL" get pod -n "$1" "$2" -o jsonpath='{.status.podIP}') || exit 1
  if [ -z "$ip" ]; then
    echo "netdsl probes: pod $1/$2 has no IP address" >&2
    exit 1
  fi
  echo "$ip"
}

tcp() {  # NAMESPACE POD HOST PORT: does a TCP connection open?
  if "$KUBECTL" exec -n "$1" "$2" -- nc -z -w "$TIMEOUT" "$3" "$4" >/dev/null 2>&1; then
    echo allowed
  else
    echo denied
  fi
}

udp() {  # NAMESPACE POD HOST PORT: does the echo server answer? (best-effort: UDP may lose a datagram)
  if "$KUBECTL" exec -n "$1" "$2" -- sh -c "echo netdsl-probe | nc -u -w $TIMEOUT $3 $4" 2>/dev/null \\
      | grep -q netdsl-probe; then
    echo allowed
  else
    echo denied
  fi
}

dns() {  # NAMESPACE POD: does a DNS look-up through kube-dns succeed?
  if "$KUBECTL" exec -n "$1" "$2" -- nslookup %(dns)s >/dev/null 2>&1; then
    echo allowed
  else
    echo denied
  fi
}

check() {  # EXPECTED ACTUAL DESCRIPTION
  TOTAL=$((TOTAL + 1))
  if [ "$1" = "$2" ]; then
    result=PASS
  else
    result=FAIL
    FAILED=$((FAILED + 1))
  fi
  printf '%%-6s %%-9s %%-9s %%s\\n' "$result" "$1" "$2" "$3"
}
"""


def render_sh(plan: Plan, sources: Iterable[str] = ()) -> str:
    label = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
    by_ns: dict[str, list[str]] = {}
    for p in plan.pods:
        by_ns.setdefault(p.namespace, []).append(p.name)
    delete = "\n".join(f"  \"$KUBECTL\" delete pod -n {_q(ns)} {' '.join(_q(n) for n in names)} "
                       "--ignore-not-found --wait=false >/dev/null 2>&1" for ns, names in by_ns.items())
    out = [
        "#!/bin/sh",
        f"# Generated by netdsl probes (target {plan.target}) from {', '.join(sources) or 'the program'}.",
        "# A connectivity test plan: it creates throwaway probe pods labelled to stand in for each service",
        "# (and a pod of no service per namespace), servers listening on every port a check probes, runs",
        "# each check with `kubectl exec` (nc -z for TCP; an echo over nc -u for UDP, best-effort: a lost",
        "# datagram reads as denied; nslookup for DNS), prints a pass/fail table and exits 1 on any mismatch.",
        f"# Expected results: the proven semantics of the {plan.target} objects netdsl emits for the program.",
        "# Apply those policies first. Namespaces that exist are used as they are (they should carry the",
        "# program's declared labels); absent ones are created with them and deleted afterwards.",
        "# Usage: sh probes.sh [--keep]    (KUBECTL=..., TIMEOUT=seconds, SETTLE_SECONDS=... to change)",
    ]
    if plan.skipped:
        out.append("# Not probed:")
        out += [f"#   {s}" for s in plan.skipped]
    out.append(_HEAD % {"label": label, "delete": delete, "dns": DNS_NAME})
    out.append("echo 'netdsl probes: namespaces' >&2")
    for ns, labels in plan.namespaces.items():
        words = " ".join(_q(f"{k}={v}") for k, v in sorted(labels.items()))
        out.append(f"ensure_namespace {_q(ns)}{' ' + words if words else ''}")
    manifests = {"apiVersion": "v1", "kind": "List", "items": [pod_manifest(plan, p) for p in plan.pods]}
    out += ["", "echo 'netdsl probes: probe pods' >&2",
            "\"$KUBECTL\" apply -f - >/dev/null <<'NETDSL_PROBE_PODS' || exit 1",
            json.dumps(manifests, indent=2, ensure_ascii=False), "NETDSL_PROBE_PODS"]
    for p in plan.pods:
        out.append(f"\"$KUBECTL\" wait -n {_q(p.namespace)} pod/{p.name} --for=jsonpath='{{.status.phase}}'=Running "
                   "--timeout=180s >/dev/null || exit 1")
    index = {p: i for i, p in enumerate(plan.pods, 1)}
    for p in plan.pods:
        out.append(f"IP_{index[p]}=$(pod_ip {_q(p.namespace)} {_q(p.name)}) || exit 1")
    out += ["sleep \"$SETTLE_SECONDS\"", "",
            "printf '%-6s %-9s %-9s %s\\n' RESULT EXPECTED ACTUAL CHECK"]
    for c in plan.checks:
        expected = "allowed" if c.expected else "denied"
        src = f"{_q(c.source.namespace)} {_q(c.source.name)}"
        address = "" if c.destination is None else f" \"$IP_{index[c.destination]}\" {c.port}"
        probe = f"{c.kind} {src}{address}"
        out.append(f"check {expected} \"$({probe})\" {_q(f'{c.text()}  [{c.origin}]')}")
    out += [
        "",
        "echo",
        "if [ \"$FAILED\" -gt 0 ]; then",
        "  echo \"netdsl probes: FAIL: $FAILED of $TOTAL checks differ from what the policies mean\"",
        "  exit 1",
        "fi",
        "echo \"netdsl probes: all $TOTAL checks passed\"",
    ]
    return "\n".join(out) + "\n"
