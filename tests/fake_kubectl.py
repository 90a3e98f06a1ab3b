"""A fake `kubectl` for the scripts `netdsl probes` writes: it records the namespaces and pods the script
creates and answers `exec ... nc` / `nslookup` from the engine - the evaluator of the target's emitted
objects over exactly those pods (their labels as applied, the namespace labels as set by `kubectl
label`) - not from the plan. FAKE_FLIP="SRC_NS/SRC_POD DST_IP PORT" answers that one probe wrongly.

Environment: FAKE_STATE (a directory), FAKE_SEG (the program), FAKE_TARGET.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

STATE = Path(os.environ["FAKE_STATE"])


def _load() -> dict[str, Any]:
    path = STATE / "state.json"
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return {"namespaces": {}, "pods": [], "verdicts": {}, "log": []}


def _save(state: dict[str, Any]) -> None:
    (STATE / "state.json").write_text(json.dumps(state))


def _verdicts(state: dict[str, Any]) -> dict[str, bool]:
    """Every probe the applied pods could be asked: pod x pod x the destination's container ports, and
    each pod's DNS look-up (to kube-dns, kube-system, k8s-app=kube-dns, 53/udp)."""
    import yaml

    from netdsl.backends import Options
    from netdsl.compiler import compile_paths, stream
    from netdsl.ir import Protocol
    from netdsl.semantics.model import Connection, Pod, Topology
    from netdsl.semantics.targets import EVALUATOR_BY_TARGET

    target = os.environ["FAKE_TARGET"]
    result = compile_paths((os.environ["FAKE_SEG"],), target, Options({}))
    assert result.ok, result.diagnostics
    objects = [d for d in yaml.safe_load_all(stream(result.manifests)) if d]
    pods = [Pod(p["namespace"], p["name"], p["labels"]) for p in state["pods"]]
    dns = Pod("kube-system", "coredns-0", {"k8s-app": "kube-dns", "pod-template-hash": "x"})
    namespaces = {ns: labels for ns, labels in state["namespaces"].items()}
    for p in pods:
        namespaces.setdefault(p.namespace, {})
    namespaces.setdefault("kube-system", {})
    evaluator = EVALUATOR_BY_TARGET[target](objects, Topology(namespaces, (*pods, dns)))
    out: dict[str, bool] = {}
    for src in pods:
        out[f"{src.namespace}/{src.name} dns"] = evaluator.decide(Connection(src, dns, Protocol.UDP, 53)).allowed
        for dst, dst_spec in zip(pods, state["pods"], strict=True):
            for port in dst_spec["ports"]:
                conn = Connection(src, dst, Protocol(port["protocol"]), port["containerPort"])
                key = f"{src.namespace}/{src.name} {dst_spec['ip']} {port['containerPort']}/{port['protocol']}"
                out[key] = evaluator.decide(conn).allowed
    return out


def main(argv: list[str]) -> int:
    state = _load()
    state["log"].append(argv)
    code = _run(argv, state)
    _save(state)
    return code


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _run(argv: list[str], state: dict[str, Any]) -> int:
    verb = argv[0]
    if verb == "get" and argv[1] == "namespace":
        return 0 if argv[2] in state["namespaces"] else 1
    if verb == "create" and argv[1] == "namespace":
        state["namespaces"][argv[2]] = {}
        return 0
    if verb == "label" and argv[1] == "namespace":
        for word in argv[3:]:
            key, _, value = word.partition("=")
            state["namespaces"][argv[2]][key] = value
        return 0
    if verb == "apply":
        doc = json.loads(sys.stdin.read())
        for item in doc["items"]:
            meta = item["metadata"]
            state["pods"].append({"namespace": meta["namespace"], "name": meta["name"], "labels": meta["labels"],
                                  "ports": item["spec"]["containers"][0].get("ports", []),
                                  "ip": f"10.0.0.{len(state['pods']) + 1}"})
        state["verdicts"] = _verdicts(state)
        return 0
    if verb in ("wait", "delete"):
        return 0
    if verb == "get" and argv[1] == "pod":
        ns, name = _flag(argv, "-n"), argv[argv.index("-n") + 2]
        ip = next(p["ip"] for p in state["pods"] if p["namespace"] == ns and p["name"] == name)
        print(ip)
        return 0
    if verb == "exec":
        ns, pod = _flag(argv, "-n"), argv[argv.index("-n") + 2]
        command = argv[argv.index("--") + 1:]
        src = f"{ns}/{pod}"
        if command[0] == "nslookup":
            key = f"{src} dns"
            probe = f"{src} dns"
        elif command[0] == "nc":  # nc -z -w T HOST PORT
            key = f"{src} {command[-2]} {command[-1]}/TCP"
            probe = f"{src} {command[-2]} {command[-1]}"
        else:  # sh -c "echo netdsl-probe | nc -u -w T HOST PORT"
            words = command[-1].split()
            key = f"{src} {words[-2]} {words[-1]}/UDP"
            probe = f"{src} {words[-2]} {words[-1]}"
        allowed = state["verdicts"][key]
        if os.environ.get("FAKE_FLIP") == probe:
            allowed = not allowed
        if allowed and command[0] == "sh":
            print("netdsl-probe")
        return 0 if allowed else 1
    print(f"fake kubectl: unexpected {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
