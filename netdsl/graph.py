"""`netdsl graph`: who may talk to whom, as a picture (Mermaid, Graphviz DOT, or one self-contained HTML page).

Rule: the picture is the connectivity matrix of the chosen view - the program's semantics, or with
`--target T` T's evaluator over the objects netdsl emits for T - over the class topology
(netdsl.semantics.universe), so what it shows holds in every cluster. Nothing here decides policy
meaning: allowed ports come from the matrix, "which statement decides" from the evaluators' verdicts
(netdsl.explain), isolation from the program's `isolate` statements (ir.Isolation.covers).

* Nodes are classes of endpoints. Each class named after one of the program's services is its own node;
  other pod classes of a namespace merge when they have exactly the same connectivity (same row and
  column of the matrix, on every port, also for what deny statements block), likewise pod classes of
  namespaces the program does not declare (a merged set spanning several goes to "other namespaces")
  and external endpoints (addresses, DNS names, a target's own identities), labelled by the program's
  peers that match them (`cidr ...`, `fqdn ...`, `entity ...`). Merged members have identical edges, so
  an edge between two nodes means the same for every member.
* An edge carries the ports its source may reach its destination on (each port class of the class
  topology, merged into ranges), and the HTTP requests of the statements that allow them. An edge
  between two endpoints outside the program's namespaces that carries every port is not drawn (no
  statement is about it; a note counts them); `all_edges` draws them.
* Deny edges: what a deny statement blocks that the program without its deny statements would allow,
  labelled with the deciding statement (from the program's semantics; a target's output means the same,
  which `netdsl compile` proves).
* Large pictures stay readable: filters (`namespaces`, `services`: the selected nodes, their neighbours,
  and the edges that touch a selected node), `collapse` (a namespace drawn as one node whose edges are
  the union of its members'), and automatic collapse of a namespace with more than AUTO_COLLAPSE nodes.

Output is deterministic: node order is the topology's, identifiers are positions.
"""

from __future__ import annotations

import html
import ipaddress
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from netdsl import ir
from netdsl.explain import explain_connection, render_connection_text
from netdsl.ir import Direction, Protocol
from netdsl.semantics.engine import PROGRAM, Evaluator, Matrix, Probe, Unavailable, matrix
from netdsl.semantics.matrix import probe_names
from netdsl.semantics.model import OTHER_NAMESPACE, Connection, Endpoint, External, Pod, Topology
from netdsl.semantics.program import ProgramSemantics, peer_matches
from netdsl.semantics.universe import probe_range

AUTO_COLLAPSE = 12  # a namespace with more nodes than this is drawn as one node (unless filtered to)
MATRIX_NODES = 80  # the HTML matrix (and its per-cell explanations) up to this many nodes
OTHER_NAMESPACES = "other namespaces"
EXTERNAL = ""  # the group of external endpoints (no namespace box)


@dataclass
class Node:
    id: str
    label: str
    group: str  # its namespace box; EXTERNAL for endpoints outside the cluster's pods
    members: list[Endpoint]
    service: bool = False  # a class of one of the program's services
    isolated: tuple[str, ...] = ()  # "ingress", "egress": an `isolate` statement covers every member
    collapsed: int = 0  # a collapsed namespace: how many nodes it stands for
    details: str = ""  # a longer description (tooltips)

    @property
    def representative(self) -> Endpoint:
        return self.members[0]


@dataclass
class Edge:
    src: str
    dst: str
    label: str
    deny: bool = False
    reasons: tuple[str, ...] = ()  # deny edges: the deciding statements
    every_port: bool = False


@dataclass
class Group:
    name: str
    label: str
    isolated: tuple[str, ...] = ()
    declared: bool = False  # declared by the program


@dataclass
class Graph:
    view: str  # "program" or a target's name
    title: str
    nodes: list[Node]
    edges: list[Edge]
    groups: dict[str, Group]
    probes: tuple[Probe, ...]
    notes: list[str] = field(default_factory=list)
    # for the HTML matrix: the evaluators of the view (the program's, and the target's)
    evaluators: dict[str, Evaluator | Unavailable] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    namespaces: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    collapse: tuple[str, ...] = ()
    all_edges: bool = False
    auto_collapse: int = AUTO_COLLAPSE


# ------------------------------------------------------------------------------------------ ports


def ports_label(allowed: Sequence[Probe], probes: Sequence[Probe]) -> str:
    """The allowed probes as ports in the language's style (`8080`, `53/udp`, `1-52`), adjacent port
    classes merged; `any port` when every probe is allowed, `any tcp` for every TCP port."""
    if not allowed:
        return ""
    if len(set(allowed)) == len(set(probes)):
        return "any port"
    chosen = set(allowed)
    parts: list[str] = []
    for protocol in Protocol:
        numeric = [p for p in probes if p[0] is protocol and len(p) == 2]
        mine = [p for p in numeric if p in chosen]
        suffix = "" if protocol is Protocol.TCP else "/" + protocol.value.lower()
        if mine and len(mine) == len(numeric):
            parts.append(f"any {protocol.value.lower()}")
        else:
            ranges: list[list[int]] = []
            for p in mine:
                lo, hi = probe_range(numeric, p)
                if ranges and ranges[-1][1] + 1 == lo:
                    ranges[-1][1] = hi
                else:
                    ranges.append([lo, hi])
            parts += [(f"{lo}" if lo == hi else f"{lo}-{hi}") + suffix for lo, hi in ranges]
        # a named port allowed where its number alone is not: "http (named)"
        names = sorted({n for p in chosen if p[0] is protocol and len(p) > 2 and (p[0], p[1]) not in chosen
                        for n in probe_names(p)})
        parts += [f"{n}{suffix} (named)" for n in names]
    return ", ".join(parts)


def _http_label(rules: Iterable[ir.Rule]) -> str:
    requests: list[str] = []
    for r in rules:
        for h in r.http:
            text = " ".join(x for x in (h.method or "any method", h.path or "") if x)
            if h.host:
                text += f" host {h.host}"
            requests.append(text)
    return "; ".join(dict.fromkeys(requests))


# ------------------------------------------------------------------------------------------ building


def _display(pod: Pod) -> str:
    if pod.name == "unlabelled":
        return "other pods"
    if pod.name.startswith("pod{") and pod.name.endswith("}"):
        return pod.name[4:-1]
    return pod.name


def _peer_label(peer: ir.Peer) -> str | None:
    if isinstance(peer, ir.CidrPeer):
        return f"cidrs {peer.network_set}" if peer.network_set else f"cidr {peer.cidr}" + (
            f" except {', '.join(map(str, peer.excepts))}" if peer.excepts else "")
    if isinstance(peer, ir.FqdnPeer):
        return f"fqdn {peer.name}"
    if isinstance(peer, ir.EntityPeer):
        return f"entity {peer.name}"
    return None


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address_ranges(topology: Topology) -> dict[External, tuple[Address, Address]]:
    """Each plain address class as the range it stands for (up to the next class's address)."""
    plain = sorted({e.address for e in topology.externals if e.identity is None},
                   key=lambda a: (a.version, int(a)))
    out: dict[Address, tuple[Address, Address]] = {}
    for i, a in enumerate(plain):
        top = ipaddress.IPv4Address(2**32 - 1) if a.version == 4 else ipaddress.IPv6Address(2**128 - 1)
        nxt = plain[i + 1] if i + 1 < len(plain) and plain[i + 1].version == a.version else None
        out[a] = (a, a + (int(nxt) - int(a) - 1) if nxt is not None else top)
    return {e: out[e.address] for e in topology.externals if e.identity is None}


def _ranges_text(ranges: Iterable[tuple[Address, Address]], limit: int = 6) -> str:
    """Adjacent ranges joined, then as CIDRs."""
    joined: list[list[Address]] = []
    for lo, hi in sorted(set(ranges), key=lambda r: (r[0].version, int(r[0]))):
        if joined and joined[-1][1].version == lo.version and int(joined[-1][1]) + 1 >= int(lo):
            if int(hi) > int(joined[-1][1]):
                joined[-1][1] = hi
        else:
            joined.append([lo, hi])
    nets = [str(n) for lo, hi in joined for n in ipaddress.summarize_address_range(lo, hi)]
    return ", ".join(nets[:limit]) + (f" and {len(nets) - limit} more" if len(nets) > limit else "")


def _external_label(members: Sequence[External], program: ir.Program, topology: Topology,
                    ranges: Mapping[External, tuple[Address, Address]], specific: bool) -> tuple[str, str]:
    """(label, details): the program's peers that match the members, else what they are."""
    peers = [p for r in program.rules for p in r.peers if _peer_label(p) is not None]
    labels = sorted({_peer_label(p) or "" for p in dict.fromkeys(peers) for m in members
                     if peer_matches(p, m, topology)})
    identities = sorted({m.identity for m in members if m.identity is not None})
    names = sorted({m.name for m in members if m.name is not None and m.identity is None})
    plain = [m for m in members if m.identity is None]
    details = []
    if plain:
        details.append("addresses " + _ranges_text(ranges[m] for m in plain if m in ranges))
    if names:
        details.append("DNS names like " + ", ".join(names[:4]))
    if identities:
        details.append("identities " + ", ".join(identities))
    if labels:
        return ", ".join(labels), "; ".join(details)
    if identities and not plain:
        short = [i.split(":", 1)[1] for i in identities]
        owner = identities[0].split(":", 1)[0]
        return f"{owner} {', '.join(short)}", "; ".join(details)
    return ("other addresses" if specific else "any address"), "; ".join(details)


def _isolated(program: ir.Program, topology: Topology, pods: Sequence[Pod]) -> tuple[str, ...]:
    """The directions an `isolate` statement covers for every pod of `pods`."""
    out = []
    for direction in (Direction.INGRESS, Direction.EGRESS):
        if pods and all(any(i.direction is direction and i.covers(p.namespace, topology.labels_of(p), dict(p.labels))
                            for i in program.isolations) for p in pods):
            out.append(direction.value.lower())
    return tuple(out)


def _rows_cols(m: Matrix) -> tuple[list[dict[int, int]], list[dict[int, int]]]:
    rows = [m.codes(i) for i in range(len(m.endpoints))]
    cols: list[dict[int, int]] = [{} for _ in m.endpoints]
    for i, row in enumerate(rows):
        for j, code in row.items():
            cols[j][i] = code
    return rows, cols


def build_graph(program: ir.Program, topology: Topology, probes: Sequence[Probe],
                evaluators: Mapping[str, Evaluator | Unavailable], view: str = PROGRAM,
                options: Options | None = None, title: str = "") -> Graph:
    """The picture of `view` (an available evaluator of `evaluators`) over the class topology."""
    options = options or Options()
    ev = evaluators[view]
    semantics = evaluators[PROGRAM]
    if isinstance(ev, Unavailable) or isinstance(semantics, Unavailable):
        raise ValueError(f"{view}: {ev}")
    assert isinstance(semantics, ProgramSemantics)
    probes = tuple(probes)
    m = matrix(ev, topology, probes)
    # what deny statements block: allowed without them, denied with them (the program's semantics)
    deny_rules = [r for r in program.rules if r.action is ir.Action.DENY]
    blocked: dict[tuple[int, int], int] = {}
    if deny_rules:
        lenient = ProgramSemantics(replace(program, rules=tuple(r for r in program.rules
                                                                 if r.action is not ir.Action.DENY)), topology)
        without = matrix(lenient, topology, probes)
        strict = m if view == PROGRAM else matrix(semantics, topology, probes)
        for src, dst, probe, allowed_without in without.differences(strict):
            if allowed_without:
                i, j = strict.position(src), strict.position(dst)
                blocked[(i, j)] = blocked.get((i, j), 0) | 1 << probes.index(probe)
    rows, cols = _rows_cols(m)
    deny_rows: dict[int, dict[int, int]] = defaultdict(dict)
    deny_cols: dict[int, dict[int, int]] = defaultdict(dict)
    for (i, j), code in blocked.items():
        deny_rows[i][j] = code
        deny_cols[j][i] = code
    endpoints = m.endpoints
    declared = [ns.name for ns in program.namespaces]
    declared_set = set(declared)
    service_names = {(s.namespace, s.name) for s in program.services if s.declared}
    cluster_services = {s.name for s in program.services if s.declared and s.cluster is not None}

    def is_service(p: Pod) -> bool:
        return any((p.namespace, n) in service_names or n in cluster_services for n in p.name.split("+"))

    # classes with identical connectivity merge (within their kind); services never do
    merged: dict[tuple[object, ...], list[int]] = {}
    for i, e in enumerate(endpoints):
        signature = (tuple(sorted(rows[i].items())), tuple(sorted(cols[i].items())),
                     tuple(sorted(deny_rows[i].items())), tuple(sorted(deny_cols[i].items())))
        if isinstance(e, External):
            key: tuple[object, ...] = ("external", signature)
        elif is_service(e):
            key = ("service", i)
        elif e.namespace in declared_set:
            key = ("pods", e.namespace, signature)
        else:
            key = ("outside", signature)
        merged.setdefault(key, []).append(i)
    ranges = _address_ranges(topology)
    specific = any(_peer_label(p) for r in program.rules for p in r.peers)
    nodes: list[Node] = []
    node_of: dict[int, int] = {}
    for key, members in merged.items():
        eps = [endpoints[i] for i in members]
        if key[0] == "external":
            label, details = _external_label([e for e in eps if isinstance(e, External)], program, topology,
                                             ranges, specific)
            node = Node(str(len(nodes)), label, EXTERNAL, eps, details=details)
        else:
            pods = [e for e in eps if isinstance(e, Pod)]
            spaces = sorted({p.namespace for p in pods})
            group = spaces[0] if len(spaces) == 1 else OTHER_NAMESPACES
            names = list(dict.fromkeys(_display(p) for p in pods))
            label = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            details = "pod classes " + ", ".join(str(p) for p in pods[:12]) + (
                f" and {len(pods) - 12} more" if len(pods) > 12 else "")
            node = Node(str(len(nodes)), label, group, eps, service=key[0] == "service",
                        isolated=_isolated(program, topology, pods), details=details)
        for i in members:
            node_of[i] = len(nodes)
        nodes.append(node)
    # the namespace boxes
    groups: dict[str, Group] = {}
    for node in nodes:
        if node.group != EXTERNAL and node.group not in groups:
            pods = [p for p in topology.pods if p.namespace == node.group] if node.group != OTHER_NAMESPACES else []
            groups[node.group] = Group(node.group, node.group, _isolated(program, topology, pods),
                                       node.group in declared_set)
    # edges between nodes: from representatives (members have identical rows), deny edges likewise
    outside = [n.group == EXTERNAL or not groups[n.group].declared for n in nodes]
    edges: dict[tuple[int, int, bool], set[int]] = {}
    for i, row in enumerate(rows):
        a = node_of[i]
        for j, code in row.items():
            edges.setdefault((a, node_of[j], False), set()).add(code)
    for (i, j), code in blocked.items():
        edges.setdefault((node_of[i], node_of[j], True), set()).add(code)
    graph = Graph(view, title, nodes, [], groups, probes, evaluators=dict(evaluators))
    everything = (1 << len(probes)) - 1
    hidden = 0
    http_rules = any(r.http for r in program.rules)
    for (a, b, deny), codes in sorted(edges.items()):
        code = 0
        for c in codes:
            code |= c
        allowed = m.probes_of(code)
        every = code == everything
        if not deny and every and outside[a] and outside[b] and not options.all_edges:
            hidden += 1
            continue
        label = ports_label(allowed, probes)
        reasons: tuple[str, ...] = ()
        src, dst = nodes[a].representative, nodes[b].representative
        if deny:
            verdict = semantics.decide(Connection(src, dst, *allowed[0]))
            reasons = verdict.reasons
            label = f"deny {label}"
        elif http_rules:
            by_text = {_describe(r): r for r in program.rules}
            rules = [by_text[t] for p in allowed for t in semantics.decide(Connection(src, dst, *p)).reasons
                     if t in by_text]
            extra = _http_label(rules)
            if extra:
                label += f" {extra}"
        graph.edges.append(Edge(str(a), str(b), label, deny, reasons, every))
    if hidden:
        graph.notes.append(f"{hidden} edge{'s' * (hidden != 1)} between endpoints outside the program's "
                           "namespaces that carry every port not drawn (--all-edges draws them)")
    _select(graph, options, declared)
    rename = {node.id: f"n{k + 1}" for k, node in enumerate(graph.nodes)}  # identifiers in drawing order
    for node in graph.nodes:
        node.id = rename[node.id]
    for edge in graph.edges:
        edge.src, edge.dst = rename[edge.src], rename[edge.dst]
    return graph


def _describe(r: ir.Rule) -> str:
    """As the program's semantics names the statement that decides (netdsl.semantics.program)."""
    half = " (other half)" if r.derived else ""
    return f"{r.span.path}:{r.span.line}: {r.text}{half}"


def _namespaces_of(node: Node) -> set[str]:
    return {e.namespace for e in node.members if isinstance(e, Pod)}


def _select(graph: Graph, options: Options, declared: Sequence[str]) -> None:
    """Filters, collapse, the order nodes are drawn in, and leaving out what has nothing to show."""
    nodes = graph.nodes
    index = {str(i): n for i, n in enumerate(nodes)}
    chosen: set[str] | None = None
    if options.namespaces or options.services:
        chosen = set()
        for key, n in index.items():
            if options.namespaces and _namespaces_of(n) & set(options.namespaces):
                chosen.add(key)
            for s in options.services:
                ns, _, name = s.rpartition("/")
                if n.service and any(isinstance(p, Pod) and name in p.name.split("+") and ns in ("", p.namespace)
                                     for p in n.members):
                    chosen.add(key)
        if not chosen:
            wanted = ", ".join((*options.namespaces, *options.services))
            graph.notes.append(f"nothing matches {wanted}")
        graph.edges = [e for e in graph.edges if e.src in chosen or e.dst in chosen]
    # collapse: asked for, or a namespace box with too many nodes (unless the filter asks for it)
    sizes: dict[str, int] = defaultdict(int)
    for n in nodes:
        sizes[n.group] += 1
    collapse = [g for g in graph.groups if g in options.collapse]
    for g, size in sorted(sizes.items()):
        if g != EXTERNAL and g not in collapse and size > options.auto_collapse and g not in options.namespaces:
            collapse.append(g)
            graph.notes.append(f"namespace {g} has {size} classes of pods: drawn as one node "
                               f"(--namespace {g} shows them)")
    for g in options.collapse:
        if g not in graph.groups:
            graph.notes.append(f"--collapse {g}: no such namespace in the picture")
    for g in collapse:
        keys = [k for k, n in index.items() if n.group == g]
        first = index[keys[0]]
        members = [e for k in keys for e in index[k].members]
        first.label, first.members, first.collapsed = f"{g} ({len(keys)} classes)", members, len(keys)
        first.service, first.details = False, f"namespace {g}, collapsed: {len(keys)} nodes"
        first.isolated = graph.groups[g].isolated
        rename = set(keys[1:])
        merged: dict[tuple[str, str, bool], Edge] = {}
        for e in graph.edges:
            src = keys[0] if e.src in rename else e.src
            dst = keys[0] if e.dst in rename else e.dst
            pair = (src, dst, e.deny)
            if pair in merged:  # a union: what at least one member may do
                old = merged[pair]
                parts = list(dict.fromkeys([*old.label.split(", "), *e.label.split(", ")]))
                merged[pair] = replace(old, label=", ".join(parts), reasons=(*old.reasons, *e.reasons))
            else:
                merged[pair] = replace(e, src=src, dst=dst)
        graph.edges = list(merged.values())
        for k in rename:
            del index[k]
        if chosen is not None and rename & chosen:
            chosen.add(keys[0])
    linked = {k for e in graph.edges for k in (e.src, e.dst)}
    keep = []
    for k, n in index.items():
        if chosen is not None and k not in chosen and k not in linked:
            continue
        in_program = n.group != EXTERNAL and graph.groups[n.group].declared
        if not in_program and k not in linked:
            continue  # nothing about it is drawn
        keep.append((k, n))
    order = {g: i for i, g in enumerate(declared)}

    def place(item: tuple[str, Node]) -> tuple[int, str, int]:
        k, n = item
        if n.group == EXTERNAL:
            return (3, "", int(k))
        if n.group == OTHER_NAMESPACES:
            return (2, "", int(k))
        return (0, f"{order[n.group]:06d}", int(k)) if n.group in order else (1, n.group, int(k))

    keep.sort(key=place)
    graph.nodes = [n for _, n in keep]
    kept = {k for k, _ in keep}
    graph.edges = [e for e in graph.edges if e.src in kept and e.dst in kept]
    groups_used = list(dict.fromkeys(n.group for n in graph.nodes))  # boxes in drawing order
    graph.groups = {g: graph.groups[g] for g in groups_used if g in graph.groups}
    for box in graph.groups.values():
        if box.name == OTHER_NAMESPACE and not box.declared:
            box.label = "any other namespace"  # the class topology's stand-in for namespaces nobody names
        if box.name == OTHER_NAMESPACES:
            spaces = sorted({ns for n in graph.nodes if n.group == box.name for ns in _namespaces_of(n)})
            shown = [("any other namespace" if ns == OTHER_NAMESPACE else ns) for ns in spaces]
            box.label = ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
    # collapsed namespaces have no box of their own
    for n in graph.nodes:
        if n.collapsed:
            n.group = EXTERNAL if n.group not in graph.groups else n.group
    for g in list(graph.groups):
        if all(n.collapsed for n in graph.nodes if n.group == g):
            for n in graph.nodes:
                if n.group == g:
                    n.group = EXTERNAL
            del graph.groups[g]


def isolation_text(isolated: Sequence[str]) -> str:
    if not isolated:
        return ""
    if len(isolated) == 2:
        return "isolated"
    return f"isolated {isolated[0]}"


def group_title(g: Group) -> str:
    iso = isolation_text(g.isolated)
    return f"{g.label} ({iso})" if iso else g.label


def node_title(n: Node, group: Group | None) -> str:
    """The node's label, with its isolation where its namespace box does not already say it."""
    iso = isolation_text(n.isolated)
    if iso and (group is None or group.isolated != n.isolated):
        return f"{n.label} ({iso})"
    return n.label


def _heading(graph: Graph) -> str:
    view = "the program" if graph.view == PROGRAM else f"target {graph.view} (its emitted objects)"
    return f"netdsl graph {graph.title}: {view}, in every cluster"


# ------------------------------------------------------------------------------------------ Mermaid


def mermaid_text(text: str) -> str:
    """A label for a quoted Mermaid string: the characters Mermaid reads as markup become entity codes."""
    return "".join(f"#{ord(ch)};" if ch in '"#<>&`' or ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)


def render_mermaid(graph: Graph) -> str:
    out = ["flowchart LR"]
    out.append(f"  %% {mermaid_comment(_heading(graph))}")
    out += [f"  %% note: {mermaid_comment(n)}" for n in graph.notes]
    by_group: dict[str, list[Node]] = defaultdict(list)
    for n in graph.nodes:
        by_group[n.group].append(n)
    for gi, (name, g) in enumerate(graph.groups.items()):
        out.append(f'  subgraph g{gi + 1}["{mermaid_text(group_title(g))}"]')
        out += [f"    {_mermaid_node(n, g)}" for n in by_group[name]]
        out.append("  end")
        if g.isolated:
            out.append(f"  class g{gi + 1} isolated")
    out += [f"  {_mermaid_node(n, None)}" for n in by_group[EXTERNAL]]
    styles = []
    for k, e in enumerate(graph.edges):
        arrow = "-.->" if e.deny else "-->"
        out.append(f'  {e.src} {arrow}|"{mermaid_text(edge_text(e))}"| {e.dst}')
        if e.deny:
            styles.append(f"  linkStyle {k} stroke:#d00,color:#d00")
        elif e.every_port:
            styles.append(f"  linkStyle {k} stroke:#999")
    out += styles
    out.append("  classDef isolated stroke-dasharray:5 5")
    out.append("  classDef external fill:#fff7e0,stroke:#b80")
    out.append("  classDef service fill:#e8f0ff,stroke:#36c")
    services = [n.id for n in graph.nodes if n.service]
    externals = [n.id for n in graph.nodes if n.group == EXTERNAL and not n.collapsed]
    lone = [n.id for n in graph.nodes if n.isolated and (n.group not in graph.groups
                                                          or graph.groups[n.group].isolated != n.isolated)]
    if services:
        out.append(f"  class {','.join(services)} service")
    if externals:
        out.append(f"  class {','.join(externals)} external")
    if lone:
        out.append(f"  class {','.join(lone)} isolated")
    return "\n".join(out) + "\n"


def mermaid_comment(text: str) -> str:
    return " ".join(text.split())


def _mermaid_node(n: Node, g: Group | None) -> str:
    label = mermaid_text(node_title(n, g))
    return f'{n.id}(["{label}"])' if n.group == EXTERNAL and not n.collapsed else f'{n.id}["{label}"]'


def edge_text(e: Edge) -> str:
    if e.deny and e.reasons:
        return f"{e.label}: {e.reasons[0]}"
    return e.label


# ------------------------------------------------------------------------------------------ DOT


def dot_text(text: str) -> str:
    """A double-quoted DOT string (escString): quotes and backslashes escaped, no raw line breaks."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "") + '"'


def render_dot(graph: Graph) -> str:
    out = ["digraph netdsl {", f"  label={dot_text(_heading(graph) + ''.join(chr(10) + n for n in graph.notes))};",
           "  labelloc=t; rankdir=LR; fontname=\"Helvetica\"; newrank=true;",
           '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontname="Helvetica", fontsize=11];',
           '  edge [fontname="Helvetica", fontsize=9];']
    by_group: dict[str, list[Node]] = defaultdict(list)
    for n in graph.nodes:
        by_group[n.group].append(n)
    for gi, (name, g) in enumerate(graph.groups.items()):
        style = "dashed,rounded" if g.isolated else "rounded"
        out.append(f"  subgraph cluster_{gi + 1} {{")
        out.append(f'    label={dot_text(group_title(g))}; style="{style}"; color="#666666";')
        out += [f"    {_dot_node(n, g)}" for n in by_group[name]]
        out.append("  }")
    out += [f"  {_dot_node(n, None)}" for n in by_group[EXTERNAL]]
    for e in graph.edges:
        attrs = [f"label={dot_text(edge_text(e))}"]
        if e.deny:
            attrs += ['color="#d00000"', 'fontcolor="#d00000"', "style=dashed"]
        elif e.every_port:
            attrs += ['color="#999999"', 'fontcolor="#777777"']
        out.append(f"  {e.src} -> {e.dst} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_node(n: Node, g: Group | None) -> str:
    attrs = [f"label={dot_text(node_title(n, g))}", f"tooltip={dot_text(n.details or n.label)}"]
    if n.group == EXTERNAL and not n.collapsed:
        attrs += ["shape=ellipse", 'fillcolor="#fff7e0"']
    elif n.service:
        attrs.append('fillcolor="#e8f0ff"')
    if n.isolated and (g is None or g.isolated != n.isolated):
        attrs.append('style="rounded,filled,dashed"')
    return f"{n.id} [{', '.join(attrs)}];"


# ------------------------------------------------------------------------------------------ HTML

NODE_H = 34
ROW_GAP = 26
COL_GAP = 150
PAD = 18
CHAR_W = 7.0


@dataclass
class _Box:
    x: float
    y: float
    w: float
    h: float


def layout(graph: Graph, top: float = 0.0) -> tuple[dict[str, _Box], dict[str, _Box], float, float]:
    """A layered layout: each namespace box (and the external endpoints) is a column block; columns by the
    longest path between boxes (cycles broken in drawing order), nodes in rows by the same rule inside
    a box. Returns node boxes, group boxes, width, height."""
    group_of = {n.id: n.group for n in graph.nodes}
    order = list(dict.fromkeys([*graph.groups, *(n.group for n in graph.nodes)]))
    rank = _ranks(order, [(group_of[e.src], group_of[e.dst]) for e in graph.edges if not e.deny])
    node_rank = _ranks([n.id for n in graph.nodes],
                       [(e.src, e.dst) for e in graph.edges if not e.deny and group_of[e.src] == group_of[e.dst]])
    linked = {k for e in graph.edges for k in (e.src, e.dst)}
    columns: dict[int, list[str]] = defaultdict(list)
    for g in order:
        columns[rank[g]].append(g)
    nodes: dict[str, _Box] = {}
    groups: dict[str, _Box] = {}
    x = PAD + 70.0  # room for the arcs between nodes of the first column
    height = 0.0
    for c in sorted(columns):
        y = PAD + 24.0 + top
        col_w = 0.0
        for g in columns[c]:
            # rows: along the edges inside the box, nodes without any edge last
            members = sorted((n for n in graph.nodes if n.group == g),
                             key=lambda n: (n.id not in linked, node_rank[n.id]))
            label_w = len(group_title(graph.groups[g]) if g in graph.groups else "") * CHAR_W + 40
            w = max([label_w, 120.0, *(len(node_title(n, graph.groups.get(n.group))) * CHAR_W + 24 for n in members)])
            start = y
            y += 26 if g != EXTERNAL else 0
            for n in members:
                nodes[n.id] = _Box(x + 12, y, w - 24 if g != EXTERNAL else w, NODE_H)
                y += NODE_H + ROW_GAP
            groups[g] = _Box(x, start, w, y - start - ROW_GAP + 12)
            y += 30
            col_w = max(col_w, w)
        height = max(height, y)
        x += col_w + COL_GAP
    return nodes, groups, x - COL_GAP + PAD + 120, height + PAD


def _ranks(items: Sequence[str], pairs: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layers of a directed graph, back edges (by depth-first search in item order) dropped."""
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in pairs:
        if a != b and b not in succ[a]:
            succ[a].append(b)
    state: dict[str, int] = {}
    forward: dict[str, list[str]] = defaultdict(list)
    for start in items:
        if start in state:
            continue
        stack = [(start, iter(succ[start]))]
        state[start] = 1
        while stack:
            v, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[v] = 2
                stack.pop()
            elif state.get(nxt) is None:
                forward[v].append(nxt)
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
            elif state[nxt] == 2:
                forward[v].append(nxt)
    rank = dict.fromkeys(items, 0)
    for _ in items:  # relax: a DAG's longest paths settle within len(items) rounds
        changed = False
        for a in items:
            for b in forward[a]:
                if rank.get(b, 0) < rank[a] + 1:
                    rank[b] = rank[a] + 1
                    changed = True
        if not changed:
            break
    return rank


LANE = 16  # the spacing of the lanes above the boxes, where edges that skip a column run


def _long_edges(graph: Graph, gboxes: Mapping[str, _Box]) -> list[Edge]:
    """The edges whose ends are more than one column apart."""
    columns = sorted({b.x for b in gboxes.values()})
    column = {n.id: columns.index(gboxes[n.group].x) for n in graph.nodes}
    return [e for e in graph.edges if abs(column[e.src] - column[e.dst]) > 1]


def _svg(graph: Graph) -> str:
    boxes, gboxes, width, height = layout(graph)
    long = _long_edges(graph, gboxes)
    if long:  # again, with room for one lane per edge that skips a column (so it crosses no box)
        boxes, gboxes, width, height = layout(graph, LANE * len(long) + 10)
    lanes = {id(e): PAD + 8 + LANE * k for k, e in enumerate(long)}
    esc = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="graph" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12" role="img" '
           f'aria-label="{esc(_heading(graph))}">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#555"/></marker>'
           '<marker id="arrow-deny" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#d00"/></marker></defs>']
    for name, b in gboxes.items():
        if name == EXTERNAL or name not in graph.groups:
            continue
        g = graph.groups[name]
        dash = ' stroke-dasharray="6 4"' if g.isolated else ""
        out.append(f'<g class="ns"><rect x="{b.x:.0f}" y="{b.y:.0f}" width="{b.w:.0f}" height="{b.h:.0f}" rx="8" '
                   f'fill="#fafafa" stroke="#777"{dash}/><text x="{b.x + 8:.0f}" y="{b.y + 17:.0f}" '
                   f'font-weight="bold">{esc(group_title(g))}</text></g>')
    # edges under the nodes; labels on top
    labels = []
    for e in graph.edges:
        a, b = boxes[e.src], boxes[e.dst]
        color = "#d00" if e.deny else ("#aaa" if e.every_port else "#555")
        dash = ' stroke-dasharray="5 4"' if e.deny else ""
        marker = "arrow-deny" if e.deny else "arrow"
        if e.src == e.dst:
            x0, y0 = a.x + a.w, a.y + a.h / 2
            d = f"M{x0:.0f},{y0 - 8:.0f} C{x0 + 40:.0f},{y0 - 30:.0f} {x0 + 40:.0f},{y0 + 30:.0f} {x0:.0f},{y0 + 8:.0f}"
            lx, ly = x0 + 34, y0
        elif abs(a.x - b.x) < 1:  # same column: an arc on the left (edges to other columns leave right)
            bulge = 40 + 18 * (abs(a.y - b.y) // (NODE_H + ROW_GAP)) + (30 if a.y > b.y else 0)  # upwards: wider
            x0, y0, y1 = a.x, a.y + a.h / 2 + 6, b.y + b.h / 2 - 6
            d = f"M{x0:.0f},{y0:.0f} C{x0 - bulge:.0f},{y0:.0f} {x0 - bulge:.0f},{y1:.0f} {x0:.0f},{y1:.0f}"
            lx, ly = x0 - bulge * 0.75, (y0 + y1) / 2
        elif id(e) in lanes:  # over the boxes in its own lane
            forward = a.x < b.x
            x0 = a.x + a.w if forward else a.x
            x1 = b.x if forward else b.x + b.w
            y0, y1, lane = a.y + a.h / 2, b.y + b.h / 2, lanes[id(e)]
            step = 40 if forward else -40
            d = (f"M{x0:.0f},{y0:.0f} C{x0 + step:.0f},{y0:.0f} {x0 + step:.0f},{lane:.0f} {x0 + 2 * step:.0f},"
                 f"{lane:.0f} L{x1 - 2 * step:.0f},{lane:.0f} C{x1 - step:.0f},{lane:.0f} {x1 - step:.0f},{y1:.0f} "
                 f"{x1:.0f},{y1:.0f}")
            lx, ly = (x0 + x1) / 2, lane
        else:
            forward = a.x < b.x
            x0 = a.x + a.w if forward else a.x
            x1 = b.x if forward else b.x + b.w
            y0, y1 = a.y + a.h / 2, b.y + b.h / 2
            mid = (x0 + x1) / 2
            d = f"M{x0:.0f},{y0:.0f} C{mid:.0f},{y0:.0f} {mid:.0f},{y1:.0f} {x1:.0f},{y1:.0f}"
            lx, ly = mid, (y0 + y1) / 2
        out.append(f'<path class="edge" d="{d}" fill="none" stroke="{color}" stroke-width="1.4"{dash} '
                   f'marker-end="url(#{marker})"><title>{esc(_edge_title(graph, e))}</title></path>')
        text = edge_text(e) if not e.deny else e.label
        tw = len(text) * 6.2 + 8
        labels.append(f'<g class="edge-label"><rect x="{lx - tw / 2:.0f}" y="{ly - 8:.0f}" width="{tw:.0f}" '
                      f'height="15" rx="3" fill="#fff" fill-opacity="0.9"/><text x="{lx:.0f}" y="{ly + 3:.0f}" '
                      f'text-anchor="middle" font-size="10.5" fill="{color if e.deny else "#333"}">{esc(text)}'
                      f'<title>{esc(_edge_title(graph, e))}</title></text></g>')
    for n in graph.nodes:
        b = boxes[n.id]
        box = graph.groups.get(n.group)
        fill = "#fff7e0" if n.group == EXTERNAL and not n.collapsed else ("#e8f0ff" if n.service else "#f0f0f0")
        stroke = "#b80" if n.group == EXTERNAL and not n.collapsed else ("#36c" if n.service else "#888")
        dash = ' stroke-dasharray="5 3"' if n.isolated and (box is None or box.isolated != n.isolated) else ""
        rx = 17 if n.group == EXTERNAL and not n.collapsed else 6
        out.append(f'<g class="node" id="node-{n.id}"><rect x="{b.x:.0f}" y="{b.y:.0f}" width="{b.w:.0f}" '
                   f'height="{b.h:.0f}" rx="{rx}" fill="{fill}" stroke="{stroke}"{dash}/><text x="{b.x + b.w / 2:.0f}" '
                   f'y="{b.y + b.h / 2 + 4:.0f}" text-anchor="middle">{esc(node_title(n, box))}</text>'
                   f'<title>{esc(n.details or n.label)}</title></g>')
    out += labels
    out.append("</svg>")
    return "\n".join(out)


def _edge_title(graph: Graph, e: Edge) -> str:
    names = {n.id: n.label for n in graph.nodes}
    head = f"{names[e.src]} -> {names[e.dst]}: {e.label}"
    return "\n".join([head, *e.reasons])


_STYLE = """
body{font-family:sans-serif;margin:16px;color:#222}
h1{font-size:18px}h2{font-size:15px;margin-top:28px}
.notes{color:#555;font-size:13px}
#graph-box{overflow:auto;border:1px solid #ddd;padding:4px}
table.matrix{border-collapse:collapse;font-size:11px}
table.matrix th,table.matrix td{border:1px solid #ccc;padding:2px 4px;text-align:center;white-space:nowrap}
table.matrix th.row{text-align:right}
table.matrix th.col{writing-mode:vertical-rl;transform:rotate(180deg);vertical-align:bottom}
td.allow{background:#dff3df;cursor:pointer}td.deny{background:#fbe0e0;cursor:pointer}
td.none{background:#fff;cursor:pointer;color:#bbb}td.sel{outline:2px solid #36c}
#details{white-space:pre-wrap;font-family:monospace;font-size:12px;background:#f6f6f6;border:1px solid #ddd;
padding:8px;min-height:3em}
.legend span{display:inline-block;margin-right:14px}
"""

_SCRIPT = """
(function(){
  var data = JSON.parse(document.getElementById('cells').textContent);
  var panel = document.getElementById('details');
  var last = null;
  document.querySelectorAll('td[data-cell]').forEach(function(td){
    td.addEventListener('click', function(){
      if (last) { last.classList.remove('sel'); }
      td.classList.add('sel'); last = td;
      panel.textContent = data[td.getAttribute('data-cell')] || '';
    });
  });
})();
"""


def render_html(graph: Graph) -> str:
    esc = html.escape
    heading = _heading(graph)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(heading)}</title>", f"<style>{_STYLE}</style></head><body>",
             f"<h1>{esc(heading)}</h1>"]
    if graph.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in graph.notes) + "</ul>")
    parts.append('<p class="legend"><span>boxes: namespaces (dashed: isolated)</span><span>round: outside '
                 'the pods (addresses, names, identities)</span><span>arrows: allowed, labelled with ports'
                 '</span><span style="color:#d00">red dashed: blocked by a deny statement</span></p>')
    parts.append(f'<div id="graph-box">{_svg(graph)}</div>')
    parts.append(_matrix_html(graph))
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def _matrix_html(graph: Graph) -> str:
    esc = html.escape
    nodes = graph.nodes
    if len(nodes) > MATRIX_NODES:
        return (f"<h2>Connectivity matrix</h2><p>{len(nodes)} nodes: more than the {MATRIX_NODES} the matrix "
                "shows; filter with --namespace or --service, or run <code>netdsl explain</code>.</p>")
    evs = {k: v for k, v in graph.evaluators.items() if k in (PROGRAM, graph.view)}
    edges = {(e.src, e.dst, e.deny): e for e in graph.edges}
    cells: dict[str, str] = {}
    names = {n.id: _qualified(graph, n) for n in nodes}
    rows = ["<h2>Connectivity matrix</h2>",
            "<p>Rows are sources, columns destinations; each cell lists the ports allowed. Hover a cell for "
            "the statements that decide, click it for the full explanation (as <code>netdsl explain "
            "--from A --to B</code> prints it).</p>",
            '<table class="matrix"><tr><th></th>' + "".join(
                f'<th class="col" title="{esc(n.details or n.label)}">{esc(names[n.id])}</th>' for n in nodes)
            + "</tr>"]
    for a in nodes:
        line = [f'<tr><th class="row" title="{esc(a.details or a.label)}">{esc(names[a.id])}</th>']
        for b in nodes:
            key = f"{a.id},{b.id}"
            src, dst = a.representative, b.representative
            if isinstance(src, External) and isinstance(dst, External) and not a.collapsed and not b.collapsed:
                line.append('<td></td>')
                continue
            allow, deny = edges.get((a.id, b.id, False)), edges.get((a.id, b.id, True))
            text = allow.label if allow else ""
            if a.collapsed or b.collapsed:
                explanation = (f"{a.label} -> {b.label}: a collapsed namespace; what at least one of its "
                               f"classes may do: {text or 'nothing'}\nrun `netdsl graph --namespace ...` or "
                               "`netdsl explain --from A --to B` for each class")
            else:
                report = explain_connection(evs, src, dst, graph.probes, port_given=False)
                explanation = render_connection_text(report)
                if not allow and not deny and text == "":
                    allowed = _allowed_text(report.verdicts.get(graph.view), graph.probes)
                    text = allowed
            cells[key] = explanation
            cls = "deny" if deny else ("allow" if text else "none")
            shown = text or ("deny" if deny else "-")
            title = _first_reasons(explanation)
            line.append(f'<td class="{cls}" data-cell="{key}" title="{esc(title)}">{esc(shown)}</td>')
        rows.append("".join(line) + "</tr>")
    rows.append("</table><h2>Details</h2><div id=\"details\">Click a cell of the matrix.</div>")
    payload = json.dumps(cells, ensure_ascii=True, sort_keys=True).replace("</", "<\\/")
    rows.append(f'<script type="application/json" id="cells">{payload}</script>')
    return "\n".join(rows)


def _qualified(graph: Graph, n: Node) -> str:
    """The node's label with its namespace box's (the matrix has no boxes)."""
    g = graph.groups.get(n.group)
    return f"{g.label}/{n.label}" if g is not None else n.label


def _allowed_text(verdicts: object, probes: Sequence[Probe]) -> str:
    """Ports allowed for a pair whose edge is not drawn (between endpoints outside the program)."""
    if not isinstance(verdicts, dict):
        return ""
    return ports_label([p for p in probes if verdicts[p].allowed], probes)


def _first_reasons(explanation: str) -> str:
    lines = [ln.strip() for ln in explanation.splitlines()[2:] if ln.strip()]
    return "\n".join(lines[:12])


# ------------------------------------------------------------------------------------------ diff


def render_diff_mermaid(added: Sequence[tuple[str, str, str]], removed: Sequence[tuple[str, str, str]]) -> str:
    """What a change adds (green) and removes (red dashed): (source, destination, ports) triples."""
    names: dict[str, str] = {}
    for src, dst, _ in (*added, *removed):
        for e in (src, dst):
            names.setdefault(e, f"e{len(names) + 1}")
    out = ["flowchart LR"]
    out += [f'  {i}["{mermaid_text(n)}"]' for n, i in names.items()]
    styles = []
    k = 0
    for changes, arrow, color, sign in ((added, "-->", "#1a7f37", "+"), (removed, "-.->", "#d00", "-")):
        for src, dst, ports in changes:
            out.append(f'  {names[src]} {arrow}|"{mermaid_text(sign + " " + ports)}"| {names[dst]}')
            styles.append(f"  linkStyle {k} stroke:{color},color:{color}")
            k += 1
    return "\n".join(out + styles) + "\n"
