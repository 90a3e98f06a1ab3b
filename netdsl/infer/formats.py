"""Read observed flows: Hubble, Calico flow logs, Inspektor Gadget `trace_network`.

Rule: a flow file is JSON, one object per line (or one JSON array of objects); the first object decides
the format of the whole file, and every object must then be a flow of that format. Each record becomes
a `Flow` - client endpoint, server endpoint, port, protocol, verdict - or is skipped for a reason the
caller can count (a reply, a packet without a port). Nothing is guessed: a line that is not JSON, an
object of another format, a port that is not 1-65535, a field of the wrong type is a `FlowError`
naming the file, the line and what was expected. Input is bounded like `.seg` sources
(netdsl.compiler.read_limited).

Field layouts (as the tools print them):
- Hubble (`hubble observe -o json`, jsonpb): `{"flow": {...}}` or the bare flow; `source`/`destination`
  {namespace, pod_name, labels ["k8s:app=web", "reserved:world", ...], identity, workloads}, `IP.source`
  / `IP.destination`, `l4.TCP|UDP|SCTP.destination_port`, `verdict` FORWARDED / DROPPED / AUDIT / ERROR,
  `traffic_direction`, `destination_names`, `l7.dns` {query, ips}, `is_reply`.
- Calico flow logs: `source_namespace`, `source_name_aggr`, `source_labels`, `source_type`, `dest_*`
  likewise with `dest_ip` and `dest_domains`, `dest_port`, `proto`, `action` allow/deny, `reporter`
  src/dst (one connection is logged once by each end that is a Calico endpoint).
- Inspektor Gadget `trace_network` (`-o json`): `k8s` {namespace, podName, podLabels, owner}, `dst`
  {addr, port, proto, k8s {kind pod/svc/raw, namespace, name, labels}}, `pktType`/`type`: OUTGOING or
  egress (the traced pod is the client, `dst` the server), HOST or ingress (the traced pod is the
  server on `dst.port`, `dst` the client). The gadget sees sockets, not policy: every record counts as
  allowed. A `svc` destination stands for the pods its selector picks: its `labels` are read as their
  labels.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from netdsl.lower.values import check_fqdn, check_label_key, check_label_value

HUBBLE = "hubble"
CALICO = "calico"
GADGET = "inspektor-gadget"
FORMATS = (HUBBLE, CALICO, GADGET)

Verdict = Literal["allowed", "audit", "denied", "error"]
PROTOCOLS = ("TCP", "UDP", "SCTP")
_PROTO_NUMBERS = {"6": "TCP", "17": "UDP", "132": "SCTP"}

# Label keys that are not the workload's own: Cilium's identity bookkeeping.
_CILIUM_INTERNAL = ("io.kubernetes.pod.namespace", "io.cilium.")
_NS_LABEL_PREFIX = "io.cilium.k8s.namespace.labels."


class FlowError(Exception):
    """A flow file that cannot be read; str() is `file:line: message`."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path = path
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Endpoint:
    """One end of a flow as the tool saw it. A pod has a namespace and a name (or an owner); a
    `reserved` identity (host, world, kube-apiserver, remote-node, ...) or a bare address has none."""

    namespace: str | None = None
    pod: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    owner: str | None = None
    address: str | None = None
    names: tuple[str, ...] = ()  # DNS names the address answers to (as observed)
    reserved: str | None = None  # Cilium's reserved identity: host, world, kube-apiserver, ...
    namespace_labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None and (self.pod is not None or self.owner is not None) \
            and self.reserved is None


@dataclass(frozen=True)
class Flow:
    client: Endpoint
    server: Endpoint
    port: int
    protocol: str  # TCP, UDP, SCTP
    verdict: Verdict
    origin: str  # file:line
    # which end reported it (Calico `reporter`, Hubble `traffic_direction`): one connection seen by both
    # ends is counted once (see model.observe)
    reporter: str = ""


@dataclass
class Reading:
    format: str
    flows: list[Flow] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> records
    # (client namespace, client pod or None, address) -> DNS names learnt from DNS answers
    dns: dict[str, set[str]] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


# ------------------------------------------------------------------------------------------ reading


def _records(path: str, text: str) -> Iterator[tuple[int, Any]]:
    stripped = text.lstrip()
    if stripped.startswith("["):  # one JSON array (jq -s, or a saved API response)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FlowError(path, exc.lineno, f"not JSON ({exc.msg})") from None
        if not isinstance(data, list):
            raise FlowError(path, 1, "expected a JSON array of flow objects")
        for item in data:
            yield 1, item
        return
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise FlowError(path, number, f"not JSON ({exc.msg}): expected one flow object per line "
                            f"({', '.join(FORMATS)})") from None
        except RecursionError:
            raise FlowError(path, number, "JSON nested too deeply") from None


def detect(record: Any) -> str | None:
    """The format a record is in, or None."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("flow"), dict):
        return HUBBLE
    if "source_namespace" in record or "dest_namespace" in record or "reporter" in record:
        return CALICO
    if isinstance(record.get("k8s"), dict) and isinstance(record.get("dst"), dict):
        return GADGET
    if ("source" in record or "destination" in record) and ("verdict" in record or "l4" in record
                                                          or "IP" in record):
        return HUBBLE
    return None


def read_flows(path: str, data: bytes) -> Reading:
    """The flows of one file (already read, bounded). FlowError when it is none of the formats, or a
    record is malformed."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FlowError(path, line, f"not UTF-8 text (byte 0x{data[exc.start]:02x}): expected JSON flows "
                        f"({', '.join(FORMATS)})") from None
    reading: Reading | None = None
    for number, record in _records(path, text):
        kind = detect(record)
        if kind is None:
            what = "a JSON object" if isinstance(record, dict) else f"JSON {type(record).__name__}"
            raise FlowError(path, number, f"{what} that is no flow record: expected Hubble (`flow` with "
                            "`source`/`destination`), Calico flow logs (`source_namespace`, `dest_namespace`, "
                            "`reporter`) or Inspektor Gadget trace_network (`k8s`, `dst`)")
        if reading is None:
            reading = Reading(kind)
        elif kind != reading.format:
            raise FlowError(path, number, f"a {kind} record in a file of {reading.format} records: one format "
                            "per file")
        where = f"{path}:{number}"
        try:
            _READERS[kind](record, where, reading)
        except _RecordError as exc:
            raise FlowError(path, number, str(exc)) from None
    if reading is None:
        raise FlowError(path, None, f"no flow records: expected JSON flows ({', '.join(FORMATS)}), one per line")
    return reading


class _RecordError(Exception):
    pass


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _str(obj: Any, dotted: str, optional: bool = True) -> str | None:
    value = _get(obj, dotted)
    if value is None or value == "":
        if optional:
            return None
        raise _RecordError(f"`{dotted}` is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _RecordError(f"`{dotted}` should be a string, not {type(value).__name__}")
    return str(value)


def _port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isascii() \
            or not str(value).isdigit() or len(str(value)) > 5 or not 1 <= int(value) <= 65535:
        raise _RecordError(f"`{what}` should be a port 1-65535, not {json.dumps(value)[:40]}")
    return int(value)


def _protocol(value: Any, what: str) -> str | None:
    """TCP/UDP/SCTP by name or number; None for another protocol (ICMP: no port, skipped)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _RecordError(f"`{what}` should be a protocol (tcp, udp, sctp), not {json.dumps(value)[:40]}")
    text = str(value).upper()
    text = _PROTO_NUMBERS.get(text, text)
    return text if text in PROTOCOLS else None


def _address(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _RecordError(f"`{what}` should be an IP address, not {value[:40]!r}") from None


def _label_pairs(value: Any, what: str) -> dict[str, str]:
    """Labels as a map, a list of `k=v`, or a string `[k=v,k2=v2]` / `k=v,k2=v2`."""
    if value is None or value in ("", "-"):
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, str):
        inner = value.strip()
        if inner.startswith("[") and inner.endswith("]"):
            inner = inner[1:-1]
        items: list[Any] = [p.strip() for p in inner.split(",") if p.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise _RecordError(f"`{what}` should be labels (a map, a list of key=value or a string), not "
                   f"{type(value).__name__}")
    out: dict[str, str] = {}
    for item in items:
        if not isinstance(item, str):
            raise _RecordError(f"`{what}` should hold key=value strings, not {json.dumps(item)[:40]}")
        key, _, val = item.partition("=")
        out[key.strip()] = val.strip()
    return _checked(out, what)


def _checked(labels: dict[str, str], what: str) -> dict[str, str]:
    """Kubernetes labels only: anything else would be written into the proposal's selectors."""
    for key, value in labels.items():
        why = check_label_key(key) or check_label_value(value)
        if why is not None:
            raise _RecordError(f"`{what}` holds {key[:40]!r}={value[:40]!r}, not a Kubernetes label: {why}")
    return labels


def _dns_names(raw: list[str]) -> tuple[str, ...]:
    """DNS names as observed, lowercased without the final dot; what is no DNS name is left out."""
    names = {n.rstrip(".").lower() for n in raw}
    return tuple(sorted(n for n in names if check_fqdn(n) is None and "*" not in n))


# ------------------------------------------------------------------------------------------ Hubble

_HUBBLE_VERDICTS: dict[str, Verdict | None] = {
    "FORWARDED": "allowed", "REDIRECTED": "allowed", "TRACED": "allowed", "TRANSLATED": "allowed",
    "AUDIT": "audit", "DROPPED": "denied", "ERROR": "error", "VERDICT_UNKNOWN": None,
}
# Cilium's numeric reserved identities (pkg/identity/numericidentity.go)
_RESERVED_IDS = {1: "host", 2: "world", 3: "unmanaged", 4: "health", 5: "init", 6: "remote-node",
                 7: "kube-apiserver", 8: "ingress", 9: "world-ipv4", 10: "world-ipv6"}


def _hubble_endpoint(flow: dict[str, Any], side: str, ip_field: str) -> Endpoint:
    ep = flow.get(side) or {}
    if not isinstance(ep, dict):
        raise _RecordError(f"`{side}` should be an object")
    raw = ep.get("labels") or []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise _RecordError(f"`{side}.labels` should be a list of strings like \"k8s:app=web\"")
    labels: dict[str, str] = {}
    ns_labels: dict[str, str] = {}
    reserved: list[str] = []
    for item in raw:
        source, _, rest = item.partition(":")
        key, _, value = rest.partition("=")
        if source == "reserved":
            reserved.append(key)
        elif source == "k8s":
            if key.startswith(_NS_LABEL_PREFIX):
                ns_labels[key[len(_NS_LABEL_PREFIX):]] = value
            elif not key.startswith(_CILIUM_INTERNAL):
                labels[key] = value
    labels = _checked(labels, f"{side}.labels")
    ns_labels = _checked(ns_labels, f"{side}.labels")
    identity = ep.get("identity")
    if not reserved and isinstance(identity, int) and identity in _RESERVED_IDS:
        reserved.append(_RESERVED_IDS[identity])
    # kube-apiserver also carries remote-node or host; world-ipv4 also world: name the most specific
    kind: str | None = next((r for r in ("kube-apiserver", "host", "remote-node", "health", "ingress", "world")
                 if r in reserved), None)
    if kind is None and any(r.startswith("world") for r in reserved):
        kind = "world"
    if kind is None and reserved:
        kind = sorted(reserved)[0]
    owner = None
    workloads = ep.get("workloads")
    if isinstance(workloads, list) and workloads and isinstance(workloads[0], dict):
        owner = _str(workloads[0], "name")
    namespace = _str(ep, "namespace")
    pod = _str(ep, "pod_name")
    if kind is not None:
        namespace = pod = None
    return Endpoint(namespace, pod, labels if kind is None else {}, owner,
                    _address(_str(flow, ip_field), ip_field), (), kind, ns_labels)


def _read_hubble(record: dict[str, Any], where: str, reading: Reading) -> None:
    flow = record["flow"] if isinstance(record.get("flow"), dict) else record
    verdict_text = flow.get("verdict", "FORWARDED")
    if not isinstance(verdict_text, str) or verdict_text not in _HUBBLE_VERDICTS:
        raise _RecordError(f"`verdict` should be one of {', '.join(_HUBBLE_VERDICTS)}, "
                           f"not {json.dumps(verdict_text)[:40]}")
    verdict = _HUBBLE_VERDICTS[verdict_text]
    client = _hubble_endpoint(flow, "source", "IP.source")
    l7 = flow.get("l7")
    if isinstance(l7, dict) and isinstance(l7.get("dns"), dict):
        dns = l7["dns"]
        query = dns.get("query")
        ips = dns.get("ips") or []
        if isinstance(query, str) and isinstance(ips, list):
            # a response travels from the DNS server to the client: the client is the destination
            asker = _hubble_endpoint(flow, "destination", "IP.destination") if l7.get("type") == "RESPONSE" \
                else client
            for ip in ips:
                if isinstance(ip, str):
                    reading.dns.setdefault(_dns_key(asker, ip), set()).update(_dns_names([query]))
        return reading.skip("DNS answers, whose names are used")
    if flow.get("is_reply") is True:
        return reading.skip("replies")
    if verdict is None:
        return reading.skip("flows without a verdict")
    server = _hubble_endpoint(flow, "destination", "IP.destination")
    names = flow.get("destination_names") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _RecordError("`destination_names` should be a list of DNS names")
    if names:
        server = Endpoint(server.namespace, server.pod, server.labels, server.owner, server.address,
                          _dns_names(names), server.reserved,
                          server.namespace_labels)
    l4 = flow.get("l4")
    if not isinstance(l4, dict):
        return reading.skip("flows without TCP, UDP or SCTP: ICMP")
    proto = next((p for p in PROTOCOLS if isinstance(l4.get(p), dict)), None)
    if proto is None:
        return reading.skip("flows without TCP, UDP or SCTP: ICMP")
    port = _port(_get(l4, f"{proto}.destination_port"), f"l4.{proto}.destination_port")
    direction = flow.get("traffic_direction")
    reading.flows.append(Flow(client, server, port, proto, verdict, where,
                              direction if isinstance(direction, str) else ""))


def _dns_key(asker: Endpoint, ip: str) -> str:
    return f"{asker.namespace}/{asker.pod}/{ip}"


# ------------------------------------------------------------------------------------------ Calico

_POD_HASH = re.compile(r"-[a-z0-9]{5}$|-\*$")


def _calico_endpoint(record: dict[str, Any], prefix: str) -> Endpoint:
    ns = _str(record, f"{prefix}_namespace")
    if ns == "-":
        ns = None
    aggr = _str(record, f"{prefix}_name_aggr") or _str(record, f"{prefix}_name")
    kind = _str(record, f"{prefix}_type")
    labels = _label_pairs(record.get(f"{prefix}_labels"), f"{prefix}_labels")
    address = _address(_str(record, f"{prefix}_ip"), f"{prefix}_ip")
    names: tuple[str, ...] = ()
    if prefix == "dest":
        raw = record.get("dest_domains")
        if isinstance(raw, str):
            raw = [d.strip() for d in raw.strip("[]").split(",") if d.strip()]
        if raw is not None and not (isinstance(raw, list) and all(isinstance(d, str) for d in raw)):
            raise _RecordError("`dest_domains` should be a list of DNS names")
        names = _dns_names(raw or [])
    if kind in ("net", "ns") or ns is None or aggr in ("pub", "pvt", None, "-"):
        reserved = "host" if kind == "hep" else "world"
        return Endpoint(None, None, {}, None, address, names, reserved)
    if kind == "hep":
        return Endpoint(None, None, {}, None, address, names, "host")
    owner = _POD_HASH.sub("", aggr) if aggr.endswith("*") else None
    pod = None if aggr.endswith("*") else aggr
    return Endpoint(ns, pod, labels, owner, None, names)


def _read_calico(record: dict[str, Any], where: str, reading: Reading) -> None:
    proto = _protocol(record.get("proto", "tcp"), "proto")
    if proto is None:
        return reading.skip("flows without TCP, UDP or SCTP: ICMP")
    port = _port(record.get("dest_port"), "dest_port")
    action = record.get("action")
    if action not in ("allow", "deny"):
        raise _RecordError(f"`action` should be allow or deny, not {json.dumps(action)[:40]}")
    reporter = record.get("reporter", "")
    if reporter not in ("src", "dst", ""):
        raise _RecordError(f"`reporter` should be src or dst, not {json.dumps(reporter)[:40]}")
    reading.flows.append(Flow(_calico_endpoint(record, "source"), _calico_endpoint(record, "dest"), port, proto,
                              "allowed" if action == "allow" else "denied", where, str(reporter)))


# ------------------------------------------------------------------------------------------ Inspektor Gadget


def _owner(value: Any) -> str | None:
    if isinstance(value, dict):
        name = value.get("name")
        return name if isinstance(name, str) and name else None
    return value if isinstance(value, str) and value else None


def _read_gadget(record: dict[str, Any], where: str, reading: Reading) -> None:
    k8s = record["k8s"]
    ns = _str(k8s, "namespace", optional=False)
    pod = Endpoint(ns, _str(k8s, "podName"), _label_pairs(k8s.get("podLabels"), "k8s.podLabels"),
                   _owner(k8s.get("owner")))
    dst = record["dst"]
    proto = _protocol(dst.get("proto", "TCP"), "dst.proto")
    if proto is None:
        return reading.skip("flows without TCP, UDP or SCTP: ICMP")
    port = _port(dst.get("port"), "dst.port")
    address = _address(_str(dst, "addr"), "dst.addr")
    kind = (_str(dst, "k8s.kind") or "raw").lower()
    if kind in ("pod", "svc"):
        other = Endpoint(_str(dst, "k8s.namespace", optional=False), _str(dst, "k8s.name") if kind == "pod" else None,
                         _label_pairs(_get(dst, "k8s.labels"), "dst.k8s.labels"),
                         _str(dst, "k8s.name") if kind == "svc" else None, address)
        if kind == "svc" and not other.labels and not (other.namespace == "kube-system"
                                                       and other.owner == "kube-dns"):
            return reading.skip("connections to a Service without a selector: no pods to name")
    elif kind == "raw":
        other = Endpoint(None, None, {}, None, address, (), "world")
    else:
        raise _RecordError(f"`dst.k8s.kind` should be pod, svc or raw, not {kind[:40]!r}")
    direction = (_str(record, "pktType") or _str(record, "type") or "OUTGOING").upper()
    if direction in ("OUTGOING", "EGRESS"):
        reading.flows.append(Flow(pod, other, port, proto, "allowed", where, "egress"))
    elif direction in ("HOST", "INGRESS"):
        reading.flows.append(Flow(other, pod, port, proto, "allowed", where, "ingress"))
    else:
        raise _RecordError(f"`pktType` should be OUTGOING (egress) or HOST (ingress), not {direction[:40]!r}")


_READERS = {HUBBLE: _read_hubble, CALICO: _read_calico, GADGET: _read_gadget}


def read_paths(shown_and_data: Sequence[tuple[str, bytes]]) -> list[Reading]:
    return [read_flows(shown, data) for shown, data in shown_and_data]
