"""Independent-analyser harness around IBM's network-config-analyzer (NCA).

NCA (PyPI ``network-config-analyzer``, CLI ``nca``) pins exact versions of its dependencies, so it is never
installed into the project's environment.  :func:`ensure_nca` creates, once, a dedicated virtualenv

* at ``$NETDSL_NCA_VENV`` if set, else at ``${XDG_CACHE_HOME:-~/.cache}/netdsl/nca-venv-<NCA_VERSION>``,
* under an exclusive ``flock`` on ``<venv>.lock`` (concurrent pytest workers/processes wait for each other),
* finished by writing a marker file last, so a half-built venv (crash, Ctrl-C) is detected and rebuilt.

If the install fails, :func:`connectivity` skips the calling test (``pytest.skip``, listed by ``-ra``) when
the ``CI`` environment variable is unset/false, and raises :class:`NCAUnavailableError` when it is set
(CI=true must fail loudly; ``.ci/run`` sets it, and tests/conftest.py turns any skip of an ``nca`` test
into a failure in CI).  A failed install is remembered for the rest of the process (no retry per test).

Public API::

    Pod(namespace, name, labels, ports={})     # ports: named container ports, name -> (port, protocol)
    Topology(namespaces, pods, network_sets=()) # namespaces: name -> labels; Calico GlobalNetworkSets
    connectivity(manifests_yaml, topology, *, kinds_expected=DEFAULT_KINDS) -> Connectivity
    Connectivity.allowed(src, dst, protocol, port) -> bool
        # src/dst: "namespace/podname" or an IP address string ("203.0.113.5") for an external endpoint

One ``nca`` process per (uncached) :func:`connectivity` call::

    nca --connectivity policies.yaml --ns_list namespaces.yaml --pod_list pods.yaml
        --output_format txt_no_fw_rules --output_endpoints pods --print_ipv6 --file_out conn.txt

Output format parsed (NCA 2.1.0, ``ConnectivityGraph.get_connections_without_fw_rules_txt_format``): one line
per (source, destination, connection-set), lines sorted, no header (with ``--file_out`` the file holds only
the query result)::

    <src> => <dst> : <conns>

* ``<src>``/``<dst>``: a pod as ``namespace/name`` (``--output_endpoints pods``; the default "deployments"
  mode prints ``ns/name[Pod]``), or an external IP block as comma-separated addresses/ranges with no CIDR
  notation, e.g. ``0.0.0.0-203.0.112.255,203.0.113.100,203.0.114.0-255.255.255.255`` (IPv6 likewise).
  NCA adds pods of its own ("livesim", e.g. ``kube-system/kube-dns-livesim``) when policies reference
  kube-dns / ingress-controller / istio gateways missing from the topology; those are kept in
  :attr:`Connectivity.other_peers` and never match a query.  Any other endpoint that is neither a topology
  pod nor an IP set raises :class:`NCAOutputError` (NCA read the topology otherwise than the caller meant);
  namespace and pod names must be valid Kubernetes names for the same reason (NCA puts a pod whose
  namespace is ``""`` into ``default``).
* A pair may appear on several lines (one per distinct connection set, e.g. one TCP line, one UDP line);
  the allowed set is their union.  Pairs with no line have no connection.  Self-connections (src == dst)
  are never printed by NCA, so :meth:`Connectivity.allowed` refuses to answer them.
* ``<conns>`` is one of
    - ``All connections``
    - ``No connections`` (not printed in practice)
    - a comma-separated list of cubes ``{dim:value,dim:value,...}``, e.g.
      ``{protocols:TCP,dst_ports:1000-2000,8080},{protocols:UDP,dst_ports:53}``; a dimension absent from a
      cube means "any value".  ``protocols`` is ``TCP, UDP`` (", "-separated names, number for unnamed
      protocols) or ``all but ICMP, UDP``; ``dst_ports`` is ``,``-separated numbers and ``lo-hi`` ranges.
      Other dimensions (``src_ports``, ``icmp_type``, ``icmp_code``, ``methods``, ``paths``, ``hosts``) only
      occur with Calico/Istio features; a query that depends on them raises :class:`NCAOutputError`.
    - ``All but <cube list>``: the complement of the cube list.

Guard: NCA silently ignores documents whose kind/apiVersion it does not know and drops duplicate policies
with only a warning.  The harness (1) rejects any document whose (apiVersion, kind) is not in
``kinds_expected`` before calling NCA, and (2) records, from inside the NCA process, the set of policies
NCA actually loaded (a ``sitecustomize`` audit hook put on the NCA process's PYTHONPATH wraps
``nca.NetworkConfig.PoliciesFinder.PoliciesFinder.parse_policies_in_parse_queue``; the ``nca`` executable
itself is unchanged) and raises :class:`NCAGuardError` unless it equals the set of input documents.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Union

import yaml

__all__ = [
    "CALICO_GLOBAL_NETWORK_POLICY",
    "CALICO_NETWORK_POLICY",
    "DEFAULT_KINDS",
    "K8S_NETWORK_POLICY",
    "NCA_VERSION",
    "Connectivity",
    "NCAError",
    "NCAGuardError",
    "NCAOutputError",
    "NCAUnavailableError",
    "Pod",
    "Topology",
    "connectivity",
    "ensure_nca",
    "venv_path",
]

NCA_VERSION = "2.1.0"
_MARKER = "netdsl-nca-ready"
_INSTALL_TIMEOUT_S = 1800
_RUN_TIMEOUT_S = 600

K8S_NETWORK_POLICY = ("networking.k8s.io/v1", "NetworkPolicy")
CALICO_NETWORK_POLICY = ("projectcalico.org/v3", "NetworkPolicy")
CALICO_GLOBAL_NETWORK_POLICY = ("projectcalico.org/v3", "GlobalNetworkPolicy")
DEFAULT_KINDS: frozenset[tuple[str, str]] = frozenset({K8S_NETWORK_POLICY})
# (apiVersion, kind) -> NCA's NetworkPolicy.PolicyType name
_NCA_POLICY_TYPE = {
    K8S_NETWORK_POLICY: "K8sNetworkPolicy",
    CALICO_NETWORK_POLICY: "CalicoNetworkPolicy",
    CALICO_GLOBAL_NETWORK_POLICY: "CalicoGlobalNetworkPolicy",
}
_PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}


class NCAError(RuntimeError):
    """Base class of the harness's errors."""


class NCAUnavailableError(NCAError):
    """The NCA venv could not be created / NCA could not be installed."""


class NCAGuardError(NCAError):
    """Input documents NCA would ignore, or NCA did not load every policy document."""


class NCAOutputError(NCAError):
    """NCA failed, or printed something the harness cannot interpret faithfully."""


# --------------------------------------------------------------------------------------------- topology


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # named container ports


@dataclass(frozen=True)
class Topology:
    namespaces: Mapping[str, Mapping[str, str]]  # name -> labels; kubernetes.io/metadata.name is added
    pods: Sequence[Pod]
    # Calico GlobalNetworkSet documents: NCA reads them as topology (with the pods), not as policies
    network_sets: Sequence[Mapping[str, Any]] = ()


# Kubernetes object names (DNS-1123 label / subdomain). NCA does not check them: it reads a pod whose
# namespace is "" as a pod of `default` and reports it as `default/<name>`, a peer the caller never
# declared; so a name Kubernetes would refuse is refused here, before NCA can reinterpret it.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _check_name(what: str, name: str, pattern: re.Pattern[str]) -> None:
    if not pattern.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a valid Kubernetes name; NCA would read it otherwise "
                         "(an empty namespace as `default`) and report a peer the topology does not hold")


def _namespace_docs(topology: Topology) -> list[dict[str, Any]]:
    docs = []
    for name, labels in topology.namespaces.items():
        _check_name("namespace", name, _DNS_LABEL)
        all_labels = dict(labels)
        if all_labels.setdefault("kubernetes.io/metadata.name", name) != name:
            raise ValueError(f"namespace {name!r}: label kubernetes.io/metadata.name must equal its name")
        docs.append({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": name, "labels": all_labels}})
    return docs


def _pod_docs(topology: Topology) -> list[dict[str, Any]]:
    docs, seen = [], set()
    for pod in topology.pods:
        key = f"{pod.namespace}/{pod.name}"
        _check_name(f"pod {key}: name", pod.name, _DNS_SUBDOMAIN)
        if pod.namespace not in topology.namespaces:
            raise ValueError(f"pod {key}: namespace {pod.namespace!r} is not in the topology")
        if key in seen:
            raise ValueError(f"pod {key} appears twice in the topology")
        seen.add(key)
        ports = []
        for port_name, (number, protocol) in pod.ports.items():
            if protocol not in _PROTOCOL_NUMBERS:
                raise ValueError(f"pod {key}: port {port_name!r} has protocol {protocol!r}")
            ports.append({"name": port_name, "containerPort": int(number), "protocol": protocol})
        container: dict[str, Any] = {"name": "main", "image": "registry.invalid/netdsl-test:latest"}
        if ports:
            container["ports"] = ports
        # No ownerReferences: NCA keeps bare pods apart (it merges isomorphic pods of one workload).
        docs.append({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": dict(pod.labels)},
            "spec": {"containers": [container]},
        })
    if not docs:
        raise ValueError("the topology needs at least one pod")
    for doc in topology.network_sets:
        if (doc.get("apiVersion"), doc.get("kind")) != ("projectcalico.org/v3", "GlobalNetworkSet"):
            raise ValueError(f"network_sets holds a {doc.get('kind')!r}, not a GlobalNetworkSet")
        docs.append(dict(doc))
    return docs


# ------------------------------------------------------------------------------------------------ venv


def venv_path() -> Path:
    env = os.environ.get("NETDSL_NCA_VENV")
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "netdsl" / f"nca-venv-{NCA_VERSION}"


def _nca_exe(venv: Path) -> Path:
    return venv / "bin" / "nca"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ready(venv: Path) -> bool:
    marker = venv / _MARKER
    return marker.is_file() and marker.read_text().strip() == NCA_VERSION and _nca_exe(venv).is_file()


def _run_logged(cmd: list[str], log: list[str]) -> None:
    log.append("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S, check=False)
    log.append(proc.stdout[-4000:] + proc.stderr[-4000:])
    if proc.returncode != 0:
        raise NCAUnavailableError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                                  + "\n".join(log))


def _create_venv(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)  # a leftover without marker is a half-built venv
    log: list[str] = []
    try:
        _run_logged([sys.executable, "-m", "venv", str(venv)], log)
        py = str(venv / "bin" / "python")
        _run_logged([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                     f"network-config-analyzer=={NCA_VERSION}"], log)
        _run_logged([str(_nca_exe(venv)), "--version"], log)
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    tmp = venv / (_MARKER + ".tmp")
    tmp.write_text(NCA_VERSION + "\n")
    os.replace(tmp, venv / _MARKER)


_install_error: str | None = None


def _unavailable(reason: str) -> NoReturn:
    if not _ci():
        try:
            import pytest
        except ImportError:
            pass
        else:
            pytest.skip(f"network-config-analyzer {NCA_VERSION} unavailable (CI unset, so skipping): "
                        f"{reason}")
    raise NCAUnavailableError(reason)


def ensure_nca() -> Path:
    """Path of the venv's ``nca`` executable, creating the venv on first use (see module doc)."""
    global _install_error
    venv = venv_path()
    if _install_error is None and not _ready(venv):
        try:
            with _locked(venv.with_name(venv.name + ".lock")):
                if not _ready(venv):
                    _create_venv(venv)
        except (OSError, subprocess.SubprocessError, NCAUnavailableError) as exc:
            _install_error = f"could not create the NCA venv at {venv}: {exc}"
    if _install_error is not None:
        _unavailable(_install_error)
    return _nca_exe(venv)


# ------------------------------------------------------------------------------------------- the guard

# Imported by the NCA process at start-up (PYTHONPATH); appends one JSON line per policy-parsing pass
# with the (full name, PolicyType) keys of the policies NCA kept.  The last line is the final config
# (NCA re-parses everything once more when it adds "livesim" resources).
_AUDIT_HOOK = textwrap.dedent('''
    import json, os
    _log = os.environ.get("NETDSL_NCA_AUDIT")
    if _log:
        try:
            from nca.NetworkConfig.PoliciesFinder import PoliciesFinder as _PF
            _orig = _PF.parse_policies_in_parse_queue

            def _audited(self, *args, **kwargs):
                result = _orig(self, *args, **kwargs)
                keys = [[name, getattr(kind, "name", str(kind))]
                        for (name, kind) in self.policies_container.policies]
                with open(_log, "a") as fh:
                    fh.write(json.dumps({"policies": keys}) + "\\n")
                return result

            _PF.parse_policies_in_parse_queue = _audited
        except Exception as exc:
            with open(_log, "a") as fh:
                fh.write(json.dumps({"hook_error": repr(exc)}) + "\\n")
''')


def _expected_policies(
    manifests_yaml: str, topology: Topology, kinds_expected: frozenset[tuple[str, str]]
) -> tuple[list[dict[str, Any]], set[tuple[str, str]]]:
    """Validate the input documents; return them (as NCA will get them) and the keys NCA must load."""
    unsupported = set(kinds_expected) - set(_NCA_POLICY_TYPE)
    if unsupported:
        raise ValueError(f"kinds_expected contains kinds NCA does not analyse: {sorted(unsupported)}")
    try:
        raw_docs = list(yaml.safe_load_all(manifests_yaml))
    except yaml.YAMLError as exc:
        raise NCAGuardError(f"manifests are not valid YAML: {exc}") from exc
    docs: list[dict[str, Any]] = []
    expected: set[tuple[str, str]] = set()
    for index, doc in enumerate(raw_docs):
        if doc is None:
            continue
        where = f"document #{index + 1}"
        if not isinstance(doc, dict):
            raise NCAGuardError(f"{where} is not a mapping: {doc!r:.80}")
        api_kind = (doc.get("apiVersion"), doc.get("kind"))
        if api_kind not in kinds_expected:
            raise NCAGuardError(
                f"{where} has apiVersion/kind {api_kind[0]}/{api_kind[1]}, not one of kinds_expected "
                f"{sorted('/'.join(k) for k in kinds_expected)}; NCA would silently ignore it or analyse it "
                "with other semantics")
        meta = doc.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise NCAGuardError(f"{where} has no metadata.name")
        name = meta["name"]
        if api_kind == CALICO_GLOBAL_NETWORK_POLICY:
            full_name = name
        else:
            namespace = meta.get("namespace") or "default"
            if namespace not in topology.namespaces:
                raise ValueError(f"{where} ({name}) is in namespace {namespace!r}, "
                                 "which is not in the topology")
            full_name = f"{namespace}/{name}"
        if api_kind[0] == "projectcalico.org/v3":
            spec = doc.get("spec")
            if isinstance(spec, dict) and "tier" in spec:
                # NCA 2.1.0 has no tiers (it rejects the key); the default tier is what it models.
                if spec["tier"] != "default":
                    raise NCAGuardError(f"{where} ({name}) is in Calico tier {spec['tier']!r}; NCA models "
                                        "only the default tier")
                doc = {**doc, "spec": {k: v for k, v in spec.items() if k != "tier"}}
        key = (full_name, _NCA_POLICY_TYPE[api_kind])
        if key in expected:
            raise NCAGuardError(f"{where}: duplicate policy {key[1]} {full_name} "
                                "(NCA would keep only the first)")
        expected.add(key)
        docs.append(doc)
    return docs, expected


_ABSENT = "netdsl-nca-no-pod-has-this-value"


def _pin_key_requirements(doc: dict[str, Any], topology: Topology) -> dict[str, Any]:
    """Work around an NCA 2.1.0 bug in Kubernetes NetworkPolicies: in a peer with a namespaceSelector,
    a podSelector requirement ``Exists``/``DoesNotExist`` selects pods of the *policy's* namespace only
    (``K8sPolicyYamlParser.parse_label_selector_requirement`` calls ``get_peers_with_key(self.namespace,
    ...)``, while ``In``/``NotIn`` look in every namespace), so ``{namespaceSelector: X, podSelector:
    {matchExpressions: [{key: k, operator: Exists}]}}`` selects nothing in any other namespace. Kubernetes
    says the peer selects the pods matching podSelector in the namespaces namespaceSelector selects.
    Over a fixed topology, ``k Exists`` = ``k In (every value pods give k)`` and ``k DoesNotExist`` =
    ``k NotIn (those values)`` (NotIn also holds when the key is absent), so the rewrite is exact.
    ``test_nca_harness.test_nca_misreads_exists_in_other_namespaces`` pins the bug."""
    spec = doc.get("spec")
    if doc.get("kind") != "NetworkPolicy" or doc.get("apiVersion") != K8S_NETWORK_POLICY[0] \
            or not isinstance(spec, dict):
        return doc

    def values(key: str) -> list[str]:
        return sorted({p.labels[key] for p in topology.pods if key in p.labels}) or [_ABSENT]

    def fix_peer(peer: Any) -> Any:
        if not isinstance(peer, dict) or "namespaceSelector" not in peer:
            return peer
        selector = peer.get("podSelector")
        if not isinstance(selector, dict) or not isinstance(selector.get("matchExpressions"), list):
            return peer
        exprs = []
        for e in selector["matchExpressions"]:
            if isinstance(e, dict) and e.get("operator") in ("Exists", "DoesNotExist"):
                op = "In" if e["operator"] == "Exists" else "NotIn"
                e = {"key": e["key"], "operator": op, "values": values(e["key"])}
            exprs.append(e)
        return {**peer, "podSelector": {**selector, "matchExpressions": exprs}}

    new_spec = dict(spec)
    for section, side in (("ingress", "from"), ("egress", "to")):
        rules = spec.get(section)
        if isinstance(rules, list):
            new_spec[section] = [
                {**r, side: [fix_peer(peer) for peer in r[side]]}
                if isinstance(r, dict) and isinstance(r.get(side), list) else r
                for r in rules]
    return {**doc, "spec": new_spec}


def _check_audit(audit_file: Path, expected: set[tuple[str, str]], stderr: str) -> tuple[str, ...]:
    records = []
    if audit_file.exists():
        records = [json.loads(line) for line in audit_file.read_text().splitlines() if line.strip()]
    errors = [r["hook_error"] for r in records if "hook_error" in r]
    passes = [r["policies"] for r in records if "policies" in r]
    if errors or not passes:
        raise NCAGuardError(f"the NCA audit hook did not run ({errors or 'no record'}); cannot verify "
                            f"that NCA loaded every policy.\nNCA stderr:\n{stderr}")
    loaded = {(name, kind) for name, kind in passes[-1]}
    if loaded != expected:
        raise NCAGuardError(
            "NCA did not load exactly the input policies:\n"
            f"  missing (dropped by NCA): {sorted(expected - loaded)}\n"
            f"  unexpected: {sorted(loaded - expected)}\nNCA stderr:\n{stderr}")
    return tuple(sorted(f"{kind} {name}" for name, kind in loaded))


# -------------------------------------------------------------------------------------- output parsing

_DIMENSIONS = ("protocols", "src_ports", "dst_ports", "icmp_type", "icmp_code", "methods", "paths", "hosts",
               "src_peers", "dst_peers")
_DIM_SPLIT = re.compile(r",(?=(?:" + "|".join(_DIMENSIONS) + r"):)")
_CUBE = re.compile(r"\{([^{}]*)\}")
_LINE = re.compile(r"^(?P<src>\S+) => (?P<dst>\S+) : (?P<conns>\S.*)$")


@dataclass(frozen=True)
class _Cube:
    """One ``{dim:value,...}`` cube; None = dimension absent = any value."""

    protocols: tuple[bool, frozenset[str]] | None  # (negated, names/numbers)
    dst_ports: tuple[tuple[int, int], ...] | None
    other: tuple[tuple[str, str], ...]  # dimensions the harness cannot evaluate
    text: str

    def matches(self, protocol: str, port: int) -> bool:
        if self.protocols is not None:
            negated, names = self.protocols
            listed = protocol in names or str(_PROTOCOL_NUMBERS[protocol]) in names
            if listed == negated:
                return False
        if self.dst_ports is not None and not any(lo <= port <= hi for lo, hi in self.dst_ports):
            return False
        if self.other:
            raise NCAOutputError(f"connection cube {self.text!r} restricts {dict(self.other)}, which a "
                                 f"{protocol}/{port} query cannot decide")
        return True


def _parse_ranges(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out.append((int(lo), int(hi or lo)))
    return tuple(out)


def _parse_cube(body: str) -> _Cube:
    protocols = None
    dst_ports = None
    other = []
    for item in _DIM_SPLIT.split(body):
        dim, sep, value = item.partition(":")
        if not sep or dim not in _DIMENSIONS:
            raise NCAOutputError(f"cannot parse connection cube {{{body}}}")
        if dim == "protocols":
            negated = value.startswith("all but ")
            names = value[len("all but "):] if negated else value
            protocols = (negated, frozenset(n.strip() for n in names.split(",")))
        elif dim == "dst_ports":
            dst_ports = _parse_ranges(value)
        else:
            other.append((dim, value))
    return _Cube(protocols, dst_ports, tuple(other), "{" + body + "}")


@dataclass(frozen=True)
class _ConnSet:
    """``All connections`` (cubes=(), negated=True), a cube list, or ``All but`` a cube list."""

    cubes: tuple[_Cube, ...]
    negated: bool
    text: str

    def contains(self, protocol: str, port: int) -> bool:
        return any(c.matches(protocol, port) for c in self.cubes) != self.negated


def _parse_conns(text: str) -> _ConnSet:
    if text == "All connections":
        return _ConnSet((), True, text)
    if text == "No connections":
        return _ConnSet((), False, text)
    negated = text.startswith("All but ")
    body = text[len("All but "):] if negated else text
    cubes = _CUBE.findall(body)
    if not cubes or ",".join("{" + c + "}" for c in cubes) != body:
        raise NCAOutputError(f"cannot parse connection set {text!r}")
    return _ConnSet(tuple(_parse_cube(c) for c in cubes), negated, text)


_IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _parse_ip_set(text: str) -> tuple[tuple[_IP, _IP], ...] | None:
    """``a-b,c,...`` (NCA's range-only IpBlock notation) -> address ranges; None if not an IP set."""
    out = []
    for part in text.split(","):
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                first, last = ipaddress.ip_address(lo), ipaddress.ip_address(hi)
            else:
                first = last = ipaddress.ip_address(part)
        except ValueError:
            return None
        out.append((first, last))
    return tuple(out)


@dataclass(frozen=True)
class _IpEdge:
    ranges: tuple[tuple[_IP, _IP], ...]
    pod: str
    ip_is_src: bool
    conns: _ConnSet

    def covers(self, ip: _IP) -> bool:
        return any(lo.version == ip.version and int(lo) <= int(ip) <= int(hi) for lo, hi in self.ranges)


# NCA names every pod it adds itself (nca/NetworkConfig/LiveSim/*.yaml) with this suffix.
_LIVESIM_SUFFIX = "-livesim"


class Connectivity:
    """The connectivity map NCA computed for one (manifests, topology)."""

    def __init__(self, output: str, stderr: str, pods: frozenset[str],
                 loaded_policies: tuple[str, ...]) -> None:
        self.raw_output = output
        self.stderr = stderr
        self.loaded_policies = loaded_policies  # "<NCA PolicyType> <ns/name>" for every policy NCA loaded
        self.pods = pods
        self.other_peers: set[str] = set()  # peers NCA added itself (livesim), never queried
        self._pod_edges: dict[tuple[str, str], list[_ConnSet]] = {}
        self._ip_edges: list[_IpEdge] = []
        for line in output.splitlines():
            if not line.strip():
                continue
            match = _LINE.match(line)
            if not match:
                raise NCAOutputError(f"cannot parse NCA output line {line!r}\nfull output:\n{output}")
            conns = _parse_conns(match["conns"])
            src, dst = match["src"], match["dst"]
            src_ips = None if src in pods else _parse_ip_set(src)
            dst_ips = None if dst in pods else _parse_ip_set(dst)
            if src in pods and dst in pods:
                self._pod_edges.setdefault((src, dst), []).append(conns)
            elif src_ips is not None and dst in pods:
                self._ip_edges.append(_IpEdge(src_ips, dst, True, conns))
            elif dst_ips is not None and src in pods:
                self._ip_edges.append(_IpEdge(dst_ips, src, False, conns))
            else:
                for peer in (src, dst):
                    if peer not in pods and _parse_ip_set(peer) is None:
                        if not peer.endswith(_LIVESIM_SUFFIX):
                            # NCA's name for a pod the caller described: harness and NCA disagree on
                            # what the topology is, so no verdict about that pod could be trusted
                            raise NCAOutputError(
                                f"NCA reports endpoint {peer!r}, neither a topology pod nor one of NCA's "
                                f"own (*{_LIVESIM_SUFFIX}) pods\nfull output:\n{output}")
                        self.other_peers.add(peer)

    def _endpoint(self, endpoint: str) -> str | _IP:
        if endpoint in self.pods:
            return endpoint
        try:
            return ipaddress.ip_address(endpoint)
        except ValueError:
            raise ValueError(f"{endpoint!r} is neither a topology pod (namespace/name) "
                             "nor an IP address") from None

    def allowed(self, src: str, dst: str, protocol: str, port: int) -> bool:
        """Whether NCA says ``src`` may open a ``protocol``/``port`` connection to ``dst``."""
        if protocol not in _PROTOCOL_NUMBERS:
            raise ValueError(f"protocol must be one of {sorted(_PROTOCOL_NUMBERS)}, not {protocol!r}")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port must be an int in 1..65535, not {port!r}")
        s, d = self._endpoint(src), self._endpoint(dst)
        if isinstance(s, str) and isinstance(d, str):
            if s == d:
                raise ValueError(f"NCA does not report a pod's connections to itself ({s})")
            return any(c.contains(protocol, port) for c in self._pod_edges.get((s, d), []))
        if isinstance(s, str) == isinstance(d, str):
            raise ValueError("NCA models connections between pods and IP blocks only, not IP to IP")
        ip, pod, ip_is_src = (s, d, True) if isinstance(d, str) else (d, s, False)
        assert isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)) and isinstance(pod, str)
        return any(e.conns.contains(protocol, port) for e in self._ip_edges
                   if e.pod == pod and e.ip_is_src == ip_is_src and e.covers(ip))


# ------------------------------------------------------------------------------------------ the entry

_cache: dict[str, Connectivity] = {}


def _dump(docs: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False) if docs else ""


def connectivity(
    manifests_yaml: str,
    topology: Topology,
    *,
    kinds_expected: frozenset[tuple[str, str]] | set[tuple[str, str]] = DEFAULT_KINDS,
    work_around_nca_bugs: bool = True,
) -> Connectivity:
    """Run NCA's connectivity-map query on ``manifests_yaml`` (policy documents only) over ``topology``.

    ``kinds_expected``: (apiVersion, kind) pairs the documents may have; any other document raises
    :class:`NCAGuardError` (as does NCA not loading every policy).  Supported: :data:`K8S_NETWORK_POLICY`
    (default), :data:`CALICO_NETWORK_POLICY`, :data:`CALICO_GLOBAL_NETWORK_POLICY` (default tier only).
    ``work_around_nca_bugs``: rewrite what NCA misreads into what it reads right, exactly over this
    topology (see :func:`_pin_key_requirements`). Results are cached per process by input hash.
    """
    kinds = frozenset(kinds_expected)
    ns_docs, pod_docs = _namespace_docs(topology), _pod_docs(topology)
    policy_docs, expected = _expected_policies(manifests_yaml, topology, kinds)
    if work_around_nca_bugs:
        policy_docs = [_pin_key_requirements(d, topology) for d in policy_docs]
    key = hashlib.sha256(json.dumps([NCA_VERSION, policy_docs, ns_docs, pod_docs, sorted(kinds)],
                                    sort_keys=True).encode()).hexdigest()
    if key in _cache:
        return _cache[key]
    exe = ensure_nca()
    with tempfile.TemporaryDirectory(prefix="netdsl-nca-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "hook").mkdir()
        (tmp / "hook" / "sitecustomize.py").write_text(_AUDIT_HOOK)
        (tmp / "namespaces.yaml").write_text(_dump(ns_docs))
        (tmp / "pods.yaml").write_text(_dump(pod_docs))
        (tmp / "policies.yaml").write_text(_dump(policy_docs))
        out_file, audit_file = tmp / "conn.txt", tmp / "audit.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PYTHONPATH=str(tmp / "hook"), PYTHONNOUSERSITE="1", NETDSL_NCA_AUDIT=str(audit_file))
        env.pop("KUBECONFIG", None)
        cmd = [str(exe), "--connectivity", str(tmp / "policies.yaml"),
               "--ns_list", str(tmp / "namespaces.yaml"), "--pod_list", str(tmp / "pods.yaml"),
               "--output_format", "txt_no_fw_rules", "--output_endpoints", "pods", "--print_ipv6",
               "--file_out", str(out_file)]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env,
                              timeout=_RUN_TIMEOUT_S, check=False)
        elapsed = time.monotonic() - started
        if proc.returncode != 0 or not out_file.exists():
            raise NCAOutputError(f"nca failed (exit {proc.returncode}, {elapsed:.1f}s): {' '.join(cmd)}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        loaded = _check_audit(audit_file, expected, proc.stderr)
        result = Connectivity(out_file.read_text(), proc.stderr,
                              frozenset(f"{p.namespace}/{p.name}" for p in topology.pods), loaded)
    _cache[key] = result
    return result
