#!/usr/bin/env python3
"""Connectivity-matrix benchmark: netdsl's semantic engine against network-config-analyzer (NCA).

1. Generates a deterministic (seeded) cluster of --namespaces namespaces x --workloads workloads (one pod
   each, with labels and named container ports) and a vanilla-expressible .seg program for it with
   about --policies NetworkPolicies (isolated namespaces with DNS, same-namespace, cross-namespace,
   namespaceSelector, AND-form, CIDR (with except) and named-port flows), compiled with
   `compile_paths(..., "vanilla")`.
2. netdsl: reads the emitted YAML back, builds `VanillaSemantics` over the cluster and computes the full
   matrix `netdsl.semantics.engine.matrix()` - every ordered pair of the cluster's pods (and the
   external addresses the program's CIDRs are probed with) for every probed (protocol, port) - best of
   --repeat runs. The probes are `probes_for([program], topology)`: the ports the program mentions, the
   cluster's named ports, DNS and web ports, one unlisted port per protocol.
3. NCA: `nca --connectivity` on the same manifests and the same topology (Namespace + Pod YAML written
   by tests/nca.py's harness, in its own cached venv: `ensure_nca()`); the time of the nca process is
   measured (and of the whole harness call, which also writes its input and parses its output).
4. Checks that both agree on every pod pair and probe (and on the external addresses), then prints the
   times side by side and the ratio. Aim: netdsl >= 50x faster.

Usage: python benchmarks/explain.py [--namespaces 50] [--workloads 10] [--policies 200] [--seed 1]
                                    [--repeat 3] [--no-verify] [--keep DIR] [--skip-nca]
"""

from __future__ import annotations

import argparse
import gc
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/nca.py, the NCA harness
try:
    import nca as harness

    from netdsl.compiler import compile_paths, stream
    from netdsl.ir import Protocol
    from netdsl.semantics.engine import matrix, probe_text, probes_for
    from netdsl.semantics.model import Pod, Topology, topology_from_program
    from netdsl.semantics.vanilla import VanillaSemantics
except ImportError:  # a checkout without the package installed
    sys.path.insert(0, str(REPO))
    import nca as harness

    from netdsl.compiler import compile_paths, stream
    from netdsl.ir import Protocol
    from netdsl.semantics.engine import matrix, probe_text, probes_for
    from netdsl.semantics.model import Pod, Topology, topology_from_program
    from netdsl.semantics.vanilla import VanillaSemantics

AIM = 50.0
TEAMS = ["core", "commerce", "platform", "data", "growth"]
# role -> (tier, named container ports)
ROLES: dict[str, tuple[str, dict[str, tuple[int, Protocol]]]] = {
    "web": ("frontend", {"http": (8080, Protocol.TCP), "metrics": (9090, Protocol.TCP)}),
    "api": ("backend", {"http": (8080, Protocol.TCP), "grpc": (9000, Protocol.TCP),
                        "metrics": (9090, Protocol.TCP)}),
    "worker": ("backend", {"metrics": (9090, Protocol.TCP)}),
    "db": ("data", {"pg": (5432, Protocol.TCP), "metrics": (9187, Protocol.TCP)}),
    "cache": ("data", {"redis": (6379, Protocol.TCP), "memcache": (11211, Protocol.UDP)}),
    "queue": ("data", {"amqp": (5672, Protocol.TCP), "http": (15672, Protocol.TCP)}),
}
SERVED = {"web": ["http", "80", "443"], "api": ["http", "grpc", "8443"], "worker": ["metrics"],
          "db": ["pg", "5432"], "cache": ["redis", "11211/udp"], "queue": ["amqp", "5672", "http"]}


# ------------------------------------------------------------------------------------------ generator


def generate(namespaces: int, workloads: int, servers: float, seed: int) -> tuple[str, Topology]:
    """A program (one file) and the cluster it runs on; on average `servers` services per namespace
    accept connections."""
    rng = random.Random(seed)
    ns_names = [f"ns-{i:02d}" for i in range(namespaces)]
    ns_labels = {n: {"team": TEAMS[i % len(TEAMS)], "env": "prod" if i % 4 else "staging"}
                 for i, n in enumerate(ns_names)}
    roles = {n: [sorted(ROLES)[(i + j) % len(ROLES)] for j in range(workloads)] for i, n in enumerate(ns_names)}
    pods: list[Pod] = []
    for n in ns_names:
        for j, role in enumerate(roles[n]):
            tier, ports = ROLES[role]
            pods.append(Pod(n, f"{role}-{j}", {"app": f"{role}-{j}", "tier": tier, "role": role}, ports))
    pods.append(Pod("kube-system", "kube-dns", {"k8s-app": "kube-dns"}, {"dns": (53, Protocol.UDP)}))
    all_ns = {**ns_labels, "kube-system": {}}

    lines = ["cidrs partners = 203.0.113.0/24, 198.51.100.0/24 except 198.51.100.128/25", ""]
    isolated = [n for i, n in enumerate(ns_names) if i % 2 == 0]
    for i, n in enumerate(ns_names):
        body = [f"namespace {n} labels team={ns_labels[n]['team']}, env={ns_labels[n]['env']} {{"]
        for j, role in enumerate(roles[n]):
            body.append(f"  service {role}-{j} = app={role}-{j}")
        if n in isolated:
            body += ["  isolate", "  allow dns"]
        # the first few services of the namespace accept (their clients may get policies too)
        for j in range(min(workloads, int((i + 1) * servers) - int(i * servers))):
            role = roles[n][j]
            port = rng.choice(SERVED[role])
            other = rng.randrange(workloads)
            if other == j:
                other = (j + 1) % workloads
            choice = rng.random()
            if choice < 0.35:
                peers = f"{roles[n][other]}-{other}"
            elif choice < 0.55:
                m = rng.choice(ns_names)
                k = rng.randrange(workloads)
                peers = f"pods[app={roles[m][k]}-{k}] in namespace {m}"
            elif choice < 0.7:
                peers = f"namespaces[team={rng.choice(TEAMS)}]"
            elif choice < 0.8:
                peers = f"pods[tier=frontend] in namespaces[env={rng.choice(['prod', 'staging'])}]"
            elif choice < 0.9:
                peers = "partners"
            else:
                peers = f"{roles[n][other]}-{other}, namespace {rng.choice(ns_names)}"
            body.append(f"  {role}-{j} accepts {peers} on {port}")
            if rng.random() < 0.3:
                body.append(f"  {role}-{j} connects to cidr 10.0.0.0/8 except (10.1.0.0/16) on 443")
        body.append("}")
        lines += [*body, ""]
    return "\n".join(lines), Topology(all_ns, tuple(sorted(pods, key=str)))


# ------------------------------------------------------------------------------------------ measuring


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - started)
    return best, value


def timed_nca(manifests: str, topology: Topology) -> tuple[float, float, Any]:
    """(nca process seconds, whole harness call seconds, Connectivity)."""
    process_times: list[float] = []
    real_run = harness.subprocess.run

    def run(cmd: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return real_run(cmd, *args, **kwargs)
        finally:
            process_times.append(time.perf_counter() - started)

    nca_topology = harness.Topology(
        {n: dict(labels) for n, labels in topology.namespaces.items()},
        [harness.Pod(p.namespace, p.name, dict(p.labels), {k: (v[0], v[1].value) for k, v in p.ports.items()})
         for p in topology.pods],
    )
    harness.subprocess.run = run  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        conn = harness.connectivity(manifests, nca_topology)
        whole = time.perf_counter() - started
    finally:
        harness.subprocess.run = real_run  # type: ignore[assignment]
    return process_times[-1], whole, conn


def verify(m: Any, conn: Any, topology: Topology) -> tuple[int, list[str]]:
    """Compare every pod pair (and pod/external pair) and probe with NCA; (checked, disagreements)."""
    problems: list[str] = []
    checked = 0
    for src, dst in m.pairs():
        allowed = set(m.allowed(src, dst))
        for probe in m.probes:
            ours = probe in allowed
            theirs = conn.allowed(str(src), str(dst), probe[0].value, probe[1])
            checked += 1
            if ours != theirs:
                problems.append(f"{src} -> {dst} {probe_text(probe)}: netdsl {ours}, NCA {theirs}")
    return checked, problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--namespaces", type=int, default=50)
    ap.add_argument("--workloads", type=int, default=10)
    ap.add_argument("--policies", type=int, default=200, help="about this many NetworkPolicies")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-verify", action="store_true", help="skip comparing every verdict with NCA's")
    ap.add_argument("--skip-nca", action="store_true", help="time netdsl only")
    ap.add_argument("--keep", type=Path, help="write the program, manifests and topology here")
    args = ap.parse_args()

    # as many accepting services per namespace as give about --policies NetworkPolicies
    servers = 0.5
    while True:
        text, cluster = generate(args.namespaces, args.workloads, servers, args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "cluster.seg"
            path.write_text(text)
            result = compile_paths([str(path)], "vanilla")
        if not result.ok or result.program is None:
            for d in result.diagnostics:
                print(d.span, d.message, file=sys.stderr)
            return 1
        if len(result.manifests) >= args.policies or servers >= args.workloads:
            break
        servers += 0.1
    manifests = stream(result.manifests)
    # the cluster plus the external addresses netdsl probes the program's CIDRs with
    derived = topology_from_program(result.program)
    externals = tuple(e for e in derived.externals if e.name is None)
    topology = Topology(cluster.namespaces, cluster.pods, externals)
    probes = probes_for([result.program], topology)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        (args.keep / "cluster.seg").write_text(text)
        (args.keep / "policies.yaml").write_text(manifests)

    kinds: dict[str, int] = {}
    for m in result.manifests:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    n = len(topology.endpoints)
    print(f"cluster: {len(cluster.namespaces)} namespaces, {len(cluster.pods)} pods, {len(externals)} external "
          f"addresses; program: {text.count(chr(10))} lines; output: "
          + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) + f", {len(manifests) // 1024} KiB")
    print(f"matrix: {n} x {n - 1} ordered pairs (minus external-external) x {len(probes)} probes: "
          + ", ".join(probe_text(p) for p in probes))

    # ---- netdsl
    def load() -> list[Any]:
        return [d for d in yaml.load_all(manifests, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]

    load_s, objects = best_of(args.repeat, load)
    build_s, evaluator = best_of(args.repeat, lambda: VanillaSemantics(objects, topology))
    matrix_s, m = best_of(args.repeat, lambda: matrix(evaluator, topology, probes))
    netdsl_s = load_s + build_s + matrix_s
    print(f"\nnetdsl: {netdsl_s:8.3f} s  (read YAML {load_s:.3f} + evaluator {build_s:.3f} + matrix {matrix_s:.3f}; "
          f"best of {args.repeat}); {m.count()} allowed connections")
    if args.skip_nca:
        return 0

    # ---- NCA
    harness.ensure_nca()
    pods_only = Topology(cluster.namespaces, cluster.pods)
    nca_s, whole_s, conn = timed_nca(manifests, pods_only)
    print(f"NCA:    {nca_s:8.3f} s  (the nca process; {whole_s:.3f} s with the harness writing its input and "
          f"parsing {len(conn.raw_output.splitlines())} output lines)")
    ratio = nca_s / netdsl_s
    print(f"\nratio:  netdsl is {ratio:.0f}x faster than NCA (matrix alone: {nca_s / matrix_s:.0f}x); "
          f"aim >= {AIM:.0f}x: {'met' if ratio >= AIM else 'NOT met'}")

    if not args.no_verify:
        started = time.perf_counter()
        checked, problems = verify(m, conn, topology)
        print(f"\nverified {checked} verdicts against NCA in {time.perf_counter() - started:.1f} s: "
              + ("all agree" if not problems else f"{len(problems)} DISAGREE"))
        for p in problems[:20]:
            print("  " + p)
        if problems:
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.TimeoutExpired as exc:
        print(f"timed out: {exc}", file=sys.stderr)
        sys.exit(1)
