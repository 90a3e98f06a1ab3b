"""Lowering: syntax tree -> IR. Resolves names, applies defaults, rejects nonsense, runs lints.

All problems in all files are collected; lowering goes on after an error wherever it can, so a user
sees every mistake at once rather than one per compile.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from netdsl import ir, parse
from netdsl.diagnostics import Diagnostic, error, warning
from netdsl.ir import Direction, PortMatch, Protocol, Selector, Workload
from netdsl.source import Span

# ------------------------------------------------------------------------------------ syntax rules

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PORT_WORD = re.compile(r"^(?P<what>[^/]+)(/(?P<proto>[A-Za-z]+))?$")

PROTOCOLS = {"tcp": Protocol.TCP, "udp": Protocol.UDP, "sctp": Protocol.SCTP}

# Names netdsl gives its own policies; a service with one of these names would collide.
RESERVED_NAMES = frozenset({"all-pods", "default-deny", "default-deny-ingress", "default-deny-egress"})

ALL_PODS = "all-pods"

# Where `allow dns` points: the cluster DNS pods, by the labels every common distribution sets.
DNS_NAMESPACE = "kube-system"
DNS_SELECTOR = Selector.of([ir.Requirement("k8s-app", ir.Operator.IN, ("kube-dns",))])
DNS_PORTS = (PortMatch(Protocol.UDP, 53), PortMatch(Protocol.TCP, 53))


def check_label_key(key: str) -> str | None:
    """Why `key` is not a valid Kubernetes label key, or None if it is."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return f"the prefix {prefix!r} must be a DNS subdomain (lowercase letters, digits, '-', '.')"
    if not name:
        return "the name part is empty"
    if len(name) > 63:
        return f"the name part is {len(name)} characters long; at most 63 are allowed"
    if not _LABEL_NAME.match(name):
        return (
            "the name part must start and end with a letter or digit and contain only letters, digits, "
            "'-', '_' and '.'"
        )
    return None


def check_label_value(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > 63:
        return f"it is {len(value)} characters long; at most 63 are allowed"
    if not _LABEL_NAME.match(value):
        return (
            "a label value must be empty or start and end with a letter or digit and contain only "
            "letters, digits, '-', '_' and '.'"
        )
    return None


def check_dns_label(name: str) -> str | None:
    if len(name) > 63:
        return f"it is {len(name)} characters long; at most 63 are allowed"
    if not _DNS1123_LABEL.match(name):
        return "use lowercase letters, digits and '-', starting and ending with a letter or digit"
    return None


def check_fqdn(name: str) -> str | None:
    """Why `name` is not a DNS name or pattern Cilium's toFQDNs accepts, or None."""
    if not name or len(name) > 253:
        return "a DNS name has 1 to 253 characters"
    for label in name.split("."):
        if not label:
            return "it has an empty label (two dots in a row, or a leading dot)"
        if len(label) > 63:
            return "a label (between dots) has at most 63 characters"
        if not re.fullmatch(r"[a-z0-9*_]([-a-z0-9*_]*[a-z0-9*_])?", label):
            return "use letters, digits, '-' and '*' (a wildcard within one label)"
    return None


def check_port_name(name: str) -> str | None:
    if len(name) > 15:
        return "a port name has at most 15 characters"
    if not _IANA_SVC_NAME.match(name) or "--" in name or not re.search(r"[a-z]", name):
        return (
            "a port name has lowercase letters, digits and single '-', with at least one letter "
            "(IANA service name)"
        )
    return None


def sanitize_name(text: str, limit: int = 63) -> str:
    """A readable DNS-1123 label made from arbitrary text; a hash keeps long or lossy ones unique."""
    clean = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
    if clean != text.lower() or len(clean) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        clean = f"{clean[: limit - 9].rstrip('-')}-{digest}"
    return clean


# ------------------------------------------------------------------------------------ the lowering


@dataclass
class _Namespace:
    """A scope statements are written in: one namespace, or (with `cluster`) the namespaces a `cluster`
    block covers. `name` is what messages call it; `key` tells scopes apart."""

    name: str
    span: Span
    cluster: ir.NamespaceMatch | None = None
    labels: dict[str, tuple[str, Span]] = field(default_factory=dict)
    services: dict[str, Workload] = field(default_factory=dict)
    groups: dict[str, tuple[tuple[parse.Word, ...], Span]] = field(default_factory=dict)
    # statements by block, with the tier the block is in (None: the default tier)
    blocks: list[tuple[tuple[parse.NamespaceStmt, ...], str | None]] = field(default_factory=list)
    by_selector: dict[Selector, Workload] | None = None  # services by selector, once declared

    @property
    def namespace(self) -> str:
        """The Workload.namespace of this scope: "" for a cluster scope."""
        return "" if self.cluster is not None else self.name

    @property
    def key(self) -> str:
        return self.name if self.cluster is None else "cluster " + self.name

    @property
    def here(self) -> ir.NamespaceMatch:
        """Where a peer without `in ...` lives: this namespace, or the namespaces of the cluster scope."""
        return self.cluster if self.cluster is not None else ir.NamespaceByName(self.name)

    @property
    def what(self) -> str:
        return f"namespace `{self.name}`" if self.cluster is None else f"`{self.name}`"


@dataclass
class _CidrSet:
    name: str
    peers: tuple[ir.CidrPeer, ...]
    span: Span


class _WorkloadIndex:
    """Workloads indexed by their key=value labels, so that finding the ones a selector can overlap
    is not a scan of every service (programs have thousands)."""

    def __init__(self, workloads: list[Workload]) -> None:
        self.workloads = workloads
        self.order = {w: i for i, w in enumerate(workloads)}
        self.by_label: dict[tuple[str, str], set[Workload]] = {}
        self.without_key: dict[str, set[Workload]] = {}
        self.keys: set[str] = set()
        self.memo: dict[tuple[tuple[str, str], ...], list[Workload]] = {}
        for w in workloads:
            for k, v in w.selector.equalities().items():
                self.by_label.setdefault((k, v), set()).add(w)
                self.keys.add(k)

    def compatible(self, selector: Selector) -> list[Workload]:
        """A superset of the workloads whose selector can match a pod together with `selector`."""
        key = tuple(sorted(selector.equalities().items()))
        if key not in self.memo:
            self.memo[key] = self._compatible(dict(key))
        return self.memo[key]

    def _compatible(self, equalities: dict[str, str]) -> list[Workload]:
        candidates: set[Workload] | None = None
        for k, v in equalities.items():
            if k not in self.keys:
                continue
            if k not in self.without_key:
                self.without_key[k] = {w for w in self.workloads if k not in w.selector.equalities()}
            same = self.by_label.get((k, v), set()) | self.without_key[k]
            candidates = same if candidates is None else candidates & same
        if candidates is None:
            return self.workloads
        return sorted(candidates, key=self.order.__getitem__)


class _Coverage:
    """Answers "does an explicit rule already allow this?", so that the other half of a flow is not
    emitted where the user wrote it by hand (as the seed does in §6.1 and §6.2)."""

    def __init__(self, rules: list[ir.Rule]) -> None:
        self.by_subject: dict[tuple[object, ...], list[ir.Rule]] = {}
        for r in rules:
            if r.action is ir.Action.ALLOW:
                self.by_subject.setdefault(self.key(r), []).append(r)

    @staticmethod
    def key(r: ir.Rule) -> tuple[object, ...]:
        return (r.subject.namespace, r.subject.cluster, r.subject.selector, r.direction, r.tier)

    def covers(self, new: ir.Rule) -> bool:
        for r in self.by_subject.get(self.key(new), ()):
            peers_ok = all(p in r.peers for p in new.peers) or any(isinstance(p, ir.AnyPeer) for p in r.peers)
            ports_ok = not r.ports or (bool(new.ports) and set(new.ports) <= set(r.ports))
            if peers_ok and ports_ok:
                return True
        return False


class Lowering:
    def __init__(self, modules: Sequence[parse.Module]) -> None:
        self.modules = modules
        self.diagnostics: list[Diagnostic] = []
        self.namespaces: dict[str, _Namespace] = {}
        self.clusters: dict[tuple[ir.Selector | None, bool], _Namespace] = {}
        self.cluster_blocks: list[tuple[parse.ClusterBlock, str | None]] = []
        self.tiers: dict[str, ir.Tier] = {}
        self.expect_stmts: list[tuple[parse.ExpectStmt, _Namespace | None]] = []
        self.system: tuple[str, ...] = ir.SYSTEM_NAMESPACES
        self.system_span: Span | None = None
        self.cidr_sets: dict[str, _CidrSet] = {}
        self.isolations: list[ir.Isolation] = []
        self.rules: list[ir.Rule] = []
        self.sources = {m.source.path: m.source for m in modules}
        # Names whose declaration was rejected: uses of them are not reported again as unknown.
        self.failed: set[tuple[str, str]] = set()

    # ---- reporting
    def error(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(error(code, message, span, hint))

    def warn(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(warning(code, message, span, hint))

    def did_you_mean(self, name: str, candidates: Iterable[str]) -> str | None:
        close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
        if close:
            return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"
        return None

    # ---- entry point
    def scopes(self) -> list[_Namespace]:
        return [*self.namespaces.values(), *self.clusters.values()]

    def run(self) -> ir.Program:
        for module in self.modules:
            for top in module.statements:
                if isinstance(top, parse.CidrsDecl):
                    self.declare_cidrs(top)
                elif isinstance(top, parse.SystemDecl):
                    self.declare_system(top)
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
        explicit = self.dedupe(self.rules)
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
            expectations=tuple(e for stmt, ns in self.expect_stmts if (e := self.lower_expect(stmt, ns))),
        )
        self.lint(program)
        return program

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
        self.cidr_sets[name] = _CidrSet(name, tuple(peers), stmt.name.span)

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
            scope = self.clusters[key] = _Namespace(name, block.span, cluster=match)
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
            ns = self.namespaces[name] = _Namespace(name, block.name.span)
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

    def valid_label(self, key: parse.Word, value: parse.Word | None) -> bool:
        ok = True
        if (why := check_label_key(key.text)) is not None:
            self.error("invalid-label", f"invalid label key {key.text!r}: {why}", key.span)
            ok = False
        if value is not None and (why := check_label_value(value.text)) is not None:
            self.error("invalid-label", f"invalid label value {value.text!r}: {why}", value.span)
            ok = False
        return ok

    def check_service_name(self, ns: _Namespace, word: parse.Word, kind: str) -> bool:
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

    def declare_service(self, ns: _Namespace, stmt: parse.ServiceDecl) -> None:
        selector = self.lower_selector(stmt.selector, what=f"service `{stmt.name.text}`")
        if not self.check_service_name(ns, stmt.name, "service") or selector is None:
            self.failed.add((ns.key, stmt.name.text))
            return
        ns.services[stmt.name.text] = Workload(ns.namespace, stmt.name.text, selector, stmt.name.span,
                                               cluster=ns.cluster)

    def declare_group(self, ns: _Namespace, stmt: parse.GroupDecl) -> None:
        if self.check_service_name(ns, stmt.name, "group"):
            ns.groups[stmt.name.text] = (stmt.members, stmt.name.span)
        else:
            self.failed.add((ns.key, stmt.name.text))

    def check_groups(self, ns: _Namespace) -> None:
        for name in ns.groups:
            self.expand(ns, name, set(), report=True)

    def expand(self, ns: _Namespace, name: str, seen: set[str], report: bool = False) -> list[Workload]:
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

    # ---- values
    def lower_selector(self, sel: parse.Selector, what: str) -> Selector | None:
        reqs: list[ir.Requirement] = []
        ok = True
        for r in sel.requirements:
            if not self.valid_label(r.key, None):
                ok = False
                continue
            values: list[str] = []
            for v in r.values:
                if (why := check_label_value(v.text)) is not None:
                    self.error("invalid-label", f"invalid label value {v.text!r}: {why}", v.span)
                    ok = False
                values.append(v.text)
            if r.operator in ("in", "notin") and not values:
                self.error("invalid-label", f"`{r.operator} ()` needs at least one value", r.span)
                ok = False
                continue
            op = {
                "=": ir.Operator.IN, "in": ir.Operator.IN, "!=": ir.Operator.NOT_IN,
                "notin": ir.Operator.NOT_IN, "exists": ir.Operator.EXISTS,
                "!exists": ir.Operator.DOES_NOT_EXIST,
            }[r.operator]
            reqs.append(ir.Requirement(r.key.text, op, tuple(sorted(set(values)))))
        if not ok:
            return None
        selector = Selector.of(reqs)
        if not selector.satisfiable:
            self.error(
                "conflict", f"the selector of {what} can never match: its requirements contradict each other",
                sel.span,
            )
            return None
        return selector

    def lower_cidr(self, item: parse.CidrItem, label: str = "") -> ir.CidrPeer | None:
        net = self.parse_network(item.cidr)
        if net is None:
            return None
        excepts: list[ir.IPNetwork] = []
        for word in item.excepts:
            ex = self.parse_network(word)
            if ex is None:
                continue
            if ex.version != net.version or not ex.subnet_of(net) or ex == net:  # type: ignore[arg-type]
                self.error(
                    "invalid-cidr", f"`except {ex}` is not strictly inside `{net}`", word.span,
                    "an except block must be a smaller network within the CIDR it is attached to",
                )
                continue
            excepts.append(ex)
        return ir.CidrPeer(net, tuple(sorted(set(excepts), key=lambda n: (n.version, n))), label or str(net))

    def parse_network(self, word: parse.Word) -> ir.IPNetwork | None:
        text = word.text
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            hint = None
            try:
                loose = ipaddress.ip_network(text, strict=False)
                hint = f"host bits are set; did you mean `{loose}`?"
            except ValueError:
                hint = "write an IPv4 or IPv6 network such as 10.0.0.0/8 or 2001:db8::/32"
            self.error("invalid-cidr", f"invalid CIDR {text!r}: {exc}", word.span, hint)
            return None

    def lower_ports(self, words: Sequence[parse.Word]) -> tuple[PortMatch, ...] | None:
        out: dict[PortMatch, None] = {}
        ok = True
        for word in words:
            port = self.lower_port(word)
            if port is None:
                ok = False
            elif port in out:
                self.warn("redundant", f"port `{word.text}` is listed twice", word.span)
            else:
                out[port] = None
        return tuple(out) if ok else None

    def lower_port(self, word: parse.Word) -> PortMatch | None:
        text = word.text
        if text.lower() in PROTOCOLS:
            return PortMatch(PROTOCOLS[text.lower()])
        m = _PORT_WORD.match(text)
        proto = Protocol.TCP
        if m is None:
            self.error("invalid-port", f"invalid port {text!r}", word.span, _PORT_HINT)
            return None
        if m.group("proto") is not None:
            p = m.group("proto").lower()
            if p not in PROTOCOLS:
                self.error(
                    "invalid-port", f"unknown protocol {m.group('proto')!r} in {text!r}", word.span,
                    "the protocols are tcp, udp and sctp",
                )
                return None
            proto = PROTOCOLS[p]
        what = m.group("what")
        if re.fullmatch(r"\d+", what):
            n = int(what)
            if not 1 <= n <= 65535:
                self.error("invalid-port", f"port {n} is out of range", word.span, "ports are 1-65535")
                return None
            return PortMatch(proto, n)
        if r := re.fullmatch(r"(\d+)-(\d+)", what):
            lo, hi = int(r.group(1)), int(r.group(2))
            for n in (lo, hi):
                if not 1 <= n <= 65535:
                    self.error("invalid-port", f"port {n} is out of range", word.span, "ports are 1-65535")
                    return None
            if hi < lo:
                self.error(
                    "invalid-port", f"the range {what} ends before it starts", word.span,
                    f"did you mean {hi}-{lo}?",
                )
                return None
            return PortMatch(proto, lo, hi if hi != lo else None)
        if (why := check_port_name(what)) is not None:
            self.error("invalid-port", f"invalid port {text!r}: {why}", word.span, _PORT_HINT)
            return None
        return PortMatch(proto, name=what)

    def statement_text(self, span: Span) -> str:
        """The statement as written, on one line and without comments, for comments in the output."""
        source = self.sources.get(span.path)
        if source is None:
            return ""
        if span.line == span.end_line:
            parts = [source.line(span.line)[span.column - 1 : span.end_column - 1]]
        else:
            parts = [_without_comment(source.line(span.line)[span.column - 1 :])]
            parts += [_without_comment(source.line(n)) for n in range(span.line + 1, span.end_line)]
            parts.append(source.line(span.end_line)[: span.end_column - 1])
        return " ".join(" ".join(parts).split())

    # ---- statements
    def lower_subjects(self, ns: _Namespace, subjects: parse.Subjects) -> list[Workload]:
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

    @staticmethod
    def all_pods(ns: _Namespace) -> Workload:
        return Workload(ns.namespace, ALL_PODS, ir.EVERYTHING, cluster=ns.cluster)

    def lower_isolate(self, ns: _Namespace, stmt: parse.IsolateStmt, tier: str | None) -> None:
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
        for d in directions:
            if any(i.namespace == ns.namespace and i.cluster == ns.cluster and i.direction is d
                   for i in self.isolations):
                self.warn("redundant", f"{ns.what} is already isolated for {d.value.lower()}", stmt.span)
                continue
            self.isolations.append(ir.Isolation(ns.namespace, d, stmt.span, ns.cluster))

    def lower_dns(self, ns: _Namespace, stmt: parse.DnsStmt, tier: str | None) -> None:
        subjects = self.lower_subjects(ns, stmt.subjects) if stmt.subjects else [self.all_pods(ns)]
        peer = ir.PodPeer(ir.NamespaceByName(DNS_NAMESPACE), DNS_SELECTOR, "dns")
        text = self.statement_text(stmt.span)
        for s in subjects:
            self.rules.append(ir.Rule(s, Direction.EGRESS, (peer,), DNS_PORTS, stmt.span, text, tier=tier))

    def lower_flow(self, ns: _Namespace, stmt: parse.FlowStmt, tier: str | None) -> None:
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
        if not subjects or not peers or ports is None or http is None:
            return
        if any(isinstance(p, ir.AnyPeer) for p in peers) and len(peers) > 1:
            self.warn("redundant", "`anywhere` already includes the other peers of this statement", stmt.span)
            peers = [ir.AnyPeer()]
        direction = Direction.INGRESS if stmt.direction == "ingress" else Direction.EGRESS
        action = {"allow": ir.Action.ALLOW, "deny": ir.Action.DENY, "pass": ir.Action.PASS}[stmt.action]
        text = self.statement_text(stmt.span)
        unique = tuple(dict.fromkeys(peers))
        for s in subjects:
            self.rules.append(ir.Rule(s, direction, unique, ports, stmt.span, text, action, tier=tier,
                                      http=http))
        if action is ir.Action.ALLOW and any(isinstance(p, ir.FqdnPeer) for p in unique):
            # A DNS name is only reachable once its lookup is: the flow includes the subject's DNS.
            dns = ir.PodPeer(ir.NamespaceByName(DNS_NAMESPACE), DNS_SELECTOR, "dns")
            for s in subjects:
                self.rules.append(ir.Rule(s, Direction.EGRESS, (dns,), DNS_PORTS, stmt.span,
                                          f"DNS lookups for `{text}`", tier=tier))

    def lower_http(
        self, stmt: parse.FlowStmt, ports: tuple[PortMatch, ...] | None
    ) -> tuple[ir.HttpRule, ...] | None:
        """L7 rules: only on allow statements, and only over TCP ports the statement names."""
        if not stmt.http:
            return ()
        ok = True
        if stmt.action != "allow":
            self.error("conflict", "HTTP rules refine what a statement allows; a deny or pass cannot have them",
                       stmt.http[0].span)
            ok = False
        if ports is not None and (
            not ports or any(p.protocol is not Protocol.TCP or (p.port is None and p.name is None) for p in ports)
        ):
            self.error("conflict", "HTTP rules need the statement's ports, all TCP and named or numbered "
                       "(say `on 8080`)", stmt.http[0].span)
            ok = False
        rules = []
        for h in stmt.http:
            for word in filter(None, (h.path, h.host)):
                try:
                    re.compile(word.text)
                except re.error as exc:
                    self.error("invalid-http", f"invalid regular expression {word.text!r}: {exc}", word.span)
                    ok = False
                    continue
                if _NOT_RE2.search(word.text):
                    self.error("invalid-http", f"{word.text!r} uses lookaround or backreferences", word.span,
                               "Cilium and Envoy use RE2 regular expressions, which have neither")
                    ok = False
            for header in h.headers:
                if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(: ?[^\r\n]*)?", header.text):
                    self.error("invalid-http", f"invalid header {header.text!r}", header.span,
                               'write "Name: value", or "Name" for a header that must be present')
                    ok = False
            rules.append(ir.HttpRule(
                None if h.method.text == "ANY" else h.method.text,
                h.path.text if h.path else None,
                h.host.text if h.host else None,
                tuple(_header(w.text) for w in h.headers),
            ))
        return tuple(dict.fromkeys(rules)) if ok else None

    def lower_peer(self, ns: _Namespace, peer: parse.Peer) -> list[ir.Peer]:
        if isinstance(peer, parse.RefPeer):
            return self.lower_ref(ns, peer.name)
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

    def lower_ref(self, ns: _Namespace, word: parse.Word) -> list[ir.Peer]:
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
            return [ir.PodPeer(ns.here, w.selector, w.name) for w in self.expand(ns, name, set())]
        if name in self.cidr_sets:
            return list(self.cidr_sets[name].peers)
        if (ns.key, name) in self.failed or ("", name) in self.failed:
            return []
        hint = self.did_you_mean(name, [*ns.services, *ns.groups, *self.cidr_sets])
        if hint is None and name in self.namespaces:
            hint = f"`{name}` is a namespace; write `namespace {name}` for all of its pods"
        if hint is None and _looks_like_cidr(name):
            hint = f"write `cidr {name}`"
        self.error("unknown-name", f"no service, group or cidr set named `{name}`", word.span, hint)
        return []

    def lower_scope(self, ns: _Namespace, scope: parse.NamespaceScope | None) -> ir.NamespaceMatch | None:
        if scope is None:
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

    # ---- assertions
    def lower_expect(self, stmt: parse.ExpectStmt, ns: _Namespace | None) -> ir.Expectation | None:
        source = self.expect_endpoint(stmt.source, ns)
        dest_word = stmt.destination
        port: PortMatch | None = None
        try:
            ipaddress.ip_address(dest_word.text)
            destination = dest_word.text
        except ValueError:
            name, colon, port_text = dest_word.text.partition(":")
            destination = self.expect_endpoint(parse.Word(name, dest_word.span), ns) or ""
            if colon:
                port = self.lower_port(parse.Word(port_text, dest_word.span))
                if port is None:
                    return None
                if port.end_port is not None or (port.port is None and port.name is None):
                    self.error("invalid-port", "an expectation names one port", dest_word.span,
                               "write `backend:8080` or `backend:53/udp`")
                    return None
        if source is None or not destination:
            return None
        return ir.Expectation(source, destination, port, stmt.allowed, stmt.span, self.statement_text(stmt.span))

    def expect_endpoint(self, word: parse.Word, ns: _Namespace | None) -> str | None:
        """A service (`name` in the enclosing namespace, or `ns/name`) -> its pod `ns/name`; or an IP."""
        text = word.text
        try:
            ipaddress.ip_address(text)
            return text
        except ValueError:
            pass
        scope_name, slash, name = text.rpartition("/")
        scope = self.namespaces.get(scope_name) if slash else ns
        if scope is not None and scope.cluster is None and name in scope.services:
            return f"{scope.name}/{name}"
        hint = None
        if scope is not None:
            hint = self.did_you_mean(name, scope.services)
        if not slash and ns is None:
            hint = hint or "outside a namespace block, write `namespace/service`"
        self.error("unknown-name", f"`{text}` is not a declared service or an IP address", word.span, hint)
        return None

    # ---- end-to-end flows
    @staticmethod
    def dedupe(rules: list[ir.Rule]) -> list[ir.Rule]:
        seen: set[tuple[object, ...]] = set()
        out = []
        for r in rules:
            key = _rule_key(r)
            if key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def derive_counterparts(self, explicit: list[ir.Rule]) -> list[ir.Rule]:
        """For each flow, the other half: where the program restricts the peer's opposite direction,
        emit the rule that lets this flow through there too (a flow means the connection works).

        netdsl reasons about workloads as declared: a service's pods are those its selector describes.
        For a peer `P` in namespace `m` whose opposite direction some workload `r` restricts:
        * if every pod of `P` is restricted (`r` is `all pods`, an isolated namespace, or `P` is
          narrower than `r`), the other half attaches to `P`'s pods;
        * otherwise it attaches to each restricted declared service that lies within `P`.
        Differently-labelled services (`app=web`, `role=db`) are different workloads: netdsl does not
        emit a policy for every conceivable pod carrying both.

        With tiers: the other half goes in the flow's tier if that tier already applies to the peer in
        that direction (so it is reached in order); else in the default tier if the peer is restricted
        there. It never makes a tier apply to pods it did not apply to (which could change their fate
        under `otherwise deny`).
        """
        by_tier: dict[tuple[str | None, Direction], list[ir.Rule]] = {}
        # the same, for namespaced subjects by namespace (cluster-wide subjects are checked everywhere)
        by_namespace: dict[tuple[str | None, Direction, str], list[ir.Rule]] = {}
        for r in explicit:
            by_tier.setdefault((r.tier, r.direction), []).append(r)
            if r.subject.cluster is None:
                by_namespace.setdefault((r.tier, r.direction, r.subject.namespace), []).append(r)
        clusterwide = [r for r in explicit if r.subject.cluster is not None]
        isolations_of: dict[tuple[str, Direction], bool] = {}
        ns_labels = {n.name: {k: v for k, (v, _) in n.labels.items()} for n in self.namespaces.values()}
        cache: dict[tuple[str, Direction, str | None], tuple[_WorkloadIndex, _WorkloadIndex]] = {}

        def indexes(ns: _Namespace, d: Direction, tier: str | None) -> tuple[_WorkloadIndex, _WorkloadIndex]:
            key = (ns.name, d, tier)
            if key not in cache:
                labels = ns_labels.get(ns.name, {})
                workloads: list[Workload] = []
                if (ns.name, d) not in isolations_of:
                    isolations_of[(ns.name, d)] = any(
                        i.direction is d and i.applies_in(ns.name, labels) for i in self.isolations
                    )
                if tier is None and isolations_of[(ns.name, d)]:
                    workloads.append(self.all_pods(ns))
                workloads += [r.subject for r in by_namespace.get((tier, d, ns.name), ())]
                workloads += [
                    r.subject for r in clusterwide
                    if r.tier == tier and r.direction is d and r.subject.applies_in(ns.name, labels)
                ]
                index = _WorkloadIndex(list(dict.fromkeys(workloads)))
                restricted = _WorkloadIndex([
                    s for s in ns.services.values()
                    if any(r.selector.matches(s.example) for r in index.compatible(s.selector))
                ])
                cache[key] = (index, restricted)
            return cache[key]

        covered_anywhere = [i.cluster for i in self.isolations if i.cluster is not None] + [
            r.subject.cluster for r in explicit if r.subject.cluster is not None
        ]
        seen = {_rule_key(r) for r in explicit}
        covered = _Coverage(explicit)
        matching: dict[ir.NamespaceMatch, list[_Namespace]] = {}
        derived: list[ir.Rule] = []
        for rule in explicit:
            if rule.action is not ir.Action.ALLOW:
                continue  # a deny or pass needs no help from the other side
            here = rule.subject.cluster or ir.NamespaceByName(rule.subject.namespace)
            back = ir.PodPeer(here, rule.subject.selector, _peer_label(rule.subject))
            opposite = rule.direction.opposite
            tiers: list[str | None] = [rule.tier] if rule.tier is None else [rule.tier, None]
            for peer in rule.peers:
                if isinstance(peer, ir.AnyPeer) or (
                    isinstance(peer, ir.EntityPeer) and peer.name in ("all", "cluster")
                ):  # every pod is among these peers
                    peer = ir.PodPeer(ir.AllNamespaces(), ir.EVERYTHING, "anywhere")
                if not isinstance(peer, ir.PodPeer):
                    continue
                if isinstance(peer.namespaces, ir.NamespaceByName):
                    name = peer.namespaces.name
                    found = self.namespaces.get(name)
                    if found is None and any(ir.namespace_matches(c, name, {}) for c in covered_anywhere):
                        found = _Namespace(name, rule.span)  # not declared, but a cluster statement covers it
                    targets = [found] if found is not None else []
                else:
                    if peer.namespaces not in matching:
                        matching[peer.namespaces] = [
                            n for n in self.namespaces.values()
                            if ir.namespace_matches(peer.namespaces, n.name, ns_labels[n.name])
                        ]
                    targets = matching[peer.namespaces]
                found_subjects: list[tuple[Workload, str | None]] = []
                for ns in targets:
                    for tier in tiers:
                        restricting, restricted = indexes(ns, opposite, tier)
                        found_subjects += [
                            (subject, tier)
                            for subject in self.counterpart_subjects(ns, peer.pods, restricting, restricted)
                        ]
                if not isinstance(peer.namespaces, ir.NamespaceByName):
                    # Peers in namespaces the program does not list: where a cluster block restricts them,
                    # the other half is cluster-wide too, scoped to the peer's namespaces.
                    found_subjects += self.cluster_counterparts(peer, opposite, tiers, by_tier)
                for subject, tier in found_subjects:
                    new = ir.Rule(subject, opposite, (back,), rule.ports, rule.span, rule.text,
                                  derived=True, tier=tier)
                    key = _rule_key(new)
                    if key not in seen and not covered.covers(new):
                        seen.add(key)
                        derived.append(new)
        return derived

    def cluster_counterparts(
        self, peer: ir.PodPeer, direction: Direction, tiers: list[str | None],
        by_tier: dict[tuple[str | None, Direction], list[ir.Rule]],
    ) -> list[tuple[Workload, str | None]]:
        out: list[tuple[Workload, str | None]] = []
        for scope in self.clusters.values():
            assert scope.cluster is not None
            both = _conjoin_namespaces(peer.namespaces, scope.cluster)
            if both is None:
                continue
            for tier in tiers:
                workloads: list[Workload] = []
                if tier is None and any(
                    i.cluster == scope.cluster and i.direction is direction for i in self.isolations
                ):
                    workloads.append(self.all_pods(scope))
                workloads += [
                    r.subject for r in by_tier.get((tier, direction), ()) if r.subject.cluster == scope.cluster
                ]
                if not workloads:
                    continue
                where = _Namespace(scope.name, scope.span, cluster=both)
                index = _WorkloadIndex(list(dict.fromkeys(workloads)))
                out += [(s, tier) for s in self.counterpart_subjects(where, peer.pods, index, _WorkloadIndex([]))]
        return out

    def counterpart_subjects(
        self, ns: _Namespace, peer: Selector, restricting: _WorkloadIndex, restricted: _WorkloadIndex
    ) -> list[Workload]:
        candidates = restricting.compatible(peer)
        pods = set(peer.requirements)
        out: list[Workload] = []
        if any(set(r.selector.requirements) <= pods for r in candidates):
            return [self.peer_workload(ns, peer)]  # every pod of the peer is restricted
        if self.peer_workload(ns, peer).declared and peer != ir.EVERYTHING:
            # A service: the restricted services inside it (services are workloads, see above) - only
            # their restricted part, so that no pod becomes restricted by the other half itself.
            for s in restricted.compatible(peer):
                if not peer.matches(s.example):
                    continue
                for r in restricting.compatible(s.selector):
                    if r.selector.matches(s.example):
                        inside = set(r.selector.requirements) <= set(s.selector.requirements)
                        out.append(s if inside else self.peer_workload(ns, s.selector.conjoin(r.selector)))
            return list(dict.fromkeys(out))
        # An ad-hoc `pods[...]` peer may overlap any workload: cover exactly the overlap.
        for r in candidates:
            both = peer.conjoin(r.selector)
            if both.satisfiable:
                out.append(r if both == r.selector else self.peer_workload(ns, both))
        return list(dict.fromkeys(out))

    def peer_workload(self, ns: _Namespace, selector: Selector) -> Workload:
        """The workload a derived rule attaches to: the declared service with exactly this selector if
        there is one, else a compiler-made workload named after its labels."""
        if ns.by_selector is None:
            ns.by_selector = {}
            for s in ns.services.values():
                ns.by_selector.setdefault(s.selector, s)
        if selector in ns.by_selector:
            return ns.by_selector[selector]
        if selector.is_everything:
            return self.all_pods(ns)
        name = sanitize_name("pods-" + "-".join(
            f"{r.key.rpartition('/')[2]}-{'-'.join(r.values) or r.operator.value.lower()}"
            for r in selector.requirements
        ))
        if name in ns.services or name in ns.groups or name in RESERVED_NAMES:
            name = sanitize_name(name + "-" + str(selector))
        return Workload(ns.namespace, name, selector, None, declared=False, cluster=ns.cluster)

    # ---- lints
    def lint(self, program: ir.Program) -> None:
        self.lint_dns(program)
        self.lint_selects_nothing(program)
        self.lint_deny_isolates(program)

    def lint_deny_isolates(self, program: ir.Program) -> None:
        """Outside tiers, a policy with a deny rule isolates the pods it applies to (on every target):
        say so when the program allows those pods nothing else in that direction."""
        allowed = {(r.subject.namespace, r.subject.cluster, r.direction) for r in program.rules
                   if r.action is ir.Action.ALLOW and r.tier is None}
        isolated = {(i.namespace, i.cluster, i.direction) for i in program.isolations}
        reported: set[tuple[object, ...]] = set()
        for r in program.rules:
            key = (r.subject.namespace, r.subject.cluster, r.direction)
            if r.action is not ir.Action.DENY or r.tier is not None or key in allowed or key in isolated:
                continue
            if (*key, r.subject.name) in reported:
                continue
            reported.add((*key, r.subject.name))
            who = "every pod" if r.subject.name == ALL_PODS else f"`{r.subject.name}`"
            self.warn(
                "deny-isolates",
                f"this deny also isolates the {r.direction.value.lower()} of {who}: what no statement allows "
                "is denied too",
                r.span,
                f"to deny only this, also write `{_peer_label(r.subject)} "
                f"{'accepts anywhere' if r.direction is Direction.INGRESS else 'connects to anywhere'}`, "
                "or put the deny in a tier (`otherwise pass`)",
            )

    def lint_dns(self, program: ir.Program) -> None:
        dns_labels = DNS_SELECTOR.example_labels() or {}
        egress_by_scope: dict[tuple[str, ir.NamespaceMatch | None], list[ir.Rule]] = {}
        for r in program.rules:
            if r.direction is Direction.EGRESS:
                egress_by_scope.setdefault((r.subject.namespace, r.subject.cluster), []).append(r)
        for ns in self.scopes():
            isolated = next(
                (i for i in program.isolations if i.namespace == ns.namespace and i.cluster == ns.cluster
                 and i.direction is Direction.EGRESS),
                None,
            )
            restricted: dict[Workload, Span | None] = {}
            if isolated is not None:
                for s in list(ns.services.values()) or [self.all_pods(ns)]:
                    restricted[s] = isolated.span
            in_scope = egress_by_scope.get((ns.namespace, ns.cluster), [])
            for r in in_scope:
                if not r.derived:
                    restricted.setdefault(r.subject, r.span)
            dns_rules = [
                r for r in in_scope
                if r.action is ir.Action.ALLOW and _reaches(r, DNS_NAMESPACE, dns_labels, Protocol.UDP, 53)
            ]
            for w, span in restricted.items():
                if not any(r.subject.selector.matches(w.example) for r in dns_rules):
                    who = "every pod" if w.name == ALL_PODS else f"`{w.name}`"
                    self.warn(
                        "egress-without-dns",
                        f"egress of {who} in {ns.what} is restricted but DNS is not allowed",
                        span,
                        "add `allow dns` (or `allow dns for NAME`) to this namespace",
                    )

    def lint_selects_nothing(self, program: ir.Program) -> None:
        ns_labels = {ns.name: ns.label_dict for ns in program.namespaces}
        services_by_ns: dict[str, list[Workload]] = {}
        for s in program.services:
            services_by_ns.setdefault(s.namespace, []).append(s)
        declared = {(s.namespace, s.selector) for s in program.services}
        reported: set[tuple[Span, str]] = set()
        for r in program.rules:
            if r.derived:
                continue
            for p in r.peers:
                if not isinstance(p, ir.PodPeer):
                    continue
                if isinstance(p.namespaces, ir.NamespaceBySelector):
                    if "name" in p.namespaces.selector.equalities():
                        continue  # already reported as namespace-name-label
                    if any(q.key == ir.NAMESPACE_NAME_LABEL for q in p.namespaces.selector.requirements):
                        continue  # a cluster scope: every namespace but the system ones
                    if not any(p.namespaces.selector.matches(lab) for lab in ns_labels.values()):
                        key = (r.span, str(p.namespaces.selector))
                        if key not in reported:
                            reported.add(key)
                            self.warn(
                                "selects-nothing",
                                f"no namespace in this program has labels matching `{p.namespaces.selector}`",
                                r.span,
                                "declare the namespaces it is meant to match, e.g. "
                                "`namespace staging labels env=staging`",
                            )
                    continue
                if not isinstance(p.namespaces, ir.NamespaceByName) or p.pods.is_everything:
                    continue
                if (p.namespaces.name, p.pods) in declared:
                    continue
                workloads = services_by_ns.get(p.namespaces.name)
                if not workloads:
                    continue
                if not any(p.pods.matches(w.selector.example_labels() or {}) for w in workloads):
                    key = (r.span, str(p.pods))
                    if key not in reported:
                        reported.add(key)
                        self.warn(
                            "selects-nothing",
                            f"`{p.label or p.pods}` matches none of the services declared in namespace "
                            f"`{p.namespaces.name}`",
                            r.span,
                            "check the labels against the service declarations",
                        )


# Constructs of Python's `re` that RE2 (Cilium, Envoy) does not have: lookaround, backreferences, atomic groups.
_NOT_RE2 = re.compile(r"\(\?(=|!|<=|<!|>|P=)|\\[1-9]")


def _header(text: str) -> str:
    """`Name:value` as `Name: value`: Cilium splits a header rule at its first space."""
    name, colon, value = text.partition(":")
    return f"{name}: {value.strip()}" if colon else name


_PORT_HINT = "write a number (8080), a range (8000-9000), a port name (http), or a protocol (udp); " \
    "add /udp or /sctp for other protocols than TCP (53/udp)"


def _looks_like_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        return False


def _without_comment(line: str) -> str:
    """A line up to its `#` comment (a `#` inside a double-quoted string is not one)."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _conjoin_namespaces(a: ir.NamespaceMatch, b: ir.NamespaceMatch) -> ir.NamespaceMatch | None:
    """Namespaces matching both (None if none can); not for by-name matches."""
    if isinstance(a, ir.AllNamespaces):
        return b
    if isinstance(b, ir.AllNamespaces):
        return a
    if isinstance(a, ir.NamespaceBySelector) and isinstance(b, ir.NamespaceBySelector):
        both = a.selector.conjoin(b.selector)
        return ir.NamespaceBySelector(both) if both.satisfiable else None
    return None


def _peer_label(w: Workload) -> str:
    return "all pods" if w.name == ALL_PODS else w.name


def _rule_key(r: ir.Rule) -> tuple[object, ...]:
    return (r.subject.namespace, r.subject.cluster, r.subject.selector, r.direction, frozenset(r.peers),
            frozenset(r.ports), r.action, r.tier)


def _reaches(rule: ir.Rule, namespace: str, labels: dict[str, str], protocol: Protocol, port: int) -> bool:
    ports_ok = not rule.ports or any(
        p.protocol is protocol and ((p.port is None and p.name is None) or
                                    (p.port is not None and p.port <= port <= (p.end_port or p.port)))
        for p in rule.ports
    )
    if not ports_ok:
        return False
    for peer in rule.peers:
        if isinstance(peer, ir.AnyPeer):
            return True
        if isinstance(peer, ir.PodPeer) and peer.pods.matches(labels) and ir.namespace_matches(
            peer.namespaces, namespace, {}
        ):
            return True
    return False


def lower(modules: Sequence[parse.Module]) -> tuple[ir.Program, list[Diagnostic]]:
    lowering = Lowering(modules)
    program = lowering.run()
    return program, lowering.diagnostics
