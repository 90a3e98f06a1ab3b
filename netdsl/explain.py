"""`netdsl explain`: what a program and each target's output allow, and why.

One connection (`--from A --to B[:PORT]`): each evaluator's verdict with what decided it - the `.seg`
statements for the program, the emitted resource and rule for a target. Without endpoints: the whole
connectivity matrix (rows: sources, columns: destinations), as text that fits a terminal or as JSON.

Wherever a target's verdict differs from the program's, that is a compiler bug, and the output says so.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from netdsl import ir
from netdsl.semantics.engine import PROGRAM, Evaluator, Matrix, Probe, Unavailable, matrix, probe_text
from netdsl.semantics.model import Connection, Endpoint, External, Pod, Topology, Verdict
from netdsl.semantics.universe import class_name, is_other_value
from netdsl.semantics.verify import coexist

WIDTH = 100
LABEL_WIDTH = 30

BUG = "a compiler bug: the emitted policy does not mean what the program says (please report it)"


# ------------------------------------------------------------------------------------------ grouping classes
#
# Rule: over the class topology one pair of endpoints stands for a class of pairs, and a namespace may
# appear as several variants (one per label set its selectors tell apart). Lines that say the same thing
# - same key (ports, deciding statements: whatever the caller shows) - for pairs that differ only in the
# namespace variant or the pod class become one line, when together they form a product
# (sources x destinations x namespace label sets): nothing is merged that was shown differently, and
# each line names exactly the classes it stands for, in words: a service when the classes are exactly
# its pods, `any pod`, one class, or the classes listed; and the namespace label sets, when not all.

T = TypeVar("T")
REPLICA = "another replica of it"  # the destination of a pod class's connection to itself
_SAME = -1  # the destination's variant is the source's (one namespace has one label set at a time)


@dataclass
class PairGroup(Generic[T]):
    """One line: `src -> dst` under `condition` ("" when none), standing for `members`."""

    src: str
    dst: str
    condition: str
    members: list[T]


def group_pairs(items: Sequence[T], key: Callable[[T], Hashable], ends: Callable[[T], tuple[Endpoint, Endpoint]],
                topology: Topology, services: Sequence[ir.Workload] = (),
                quiet: frozenset[str] = frozenset()) -> list[PairGroup[T]]:
    """The items as few exact lines as the greedy product search finds, in the order of their first
    members. `services` (declared workloads) name a set of pod classes that is exactly theirs; no
    condition is given for the namespaces in `quiet` (the one endpoint a listing is about names its own)."""
    namer = _ClassNamer(topology, services)
    buckets: dict[tuple[Hashable, str, str], list[T]] = {}
    for item in items:
        src, dst = ends(item)
        buckets.setdefault((key(item), _place(src), _place(dst)), []).append(item)
    groups: list[tuple[int, PairGroup[T]]] = []
    order = {id(item): i for i, item in enumerate(items)}
    for (_, src_place, dst_place), members in buckets.items():
        for product, got in _factor(members, ends):
            src_cls, dst_cls = product[0], product[1]
            src_var, dst_var = cast(frozenset[int], product[2]), cast(frozenset[int], product[3])
            same = _SAME in dst_var
            first_src, first_dst = ends(got[0])
            src_text = namer.side(first_src, src_place, src_cls, src_var)
            dst_text = namer.side(first_dst, dst_place, dst_cls, src_var if same else dst_var)
            if all(ends(m)[0] == ends(m)[1] for m in got):  # a pod class to itself: between its replicas
                dst_text = REPLICA
            conditions = [namer.condition(src_place, src_var)] if isinstance(first_src, Pod) else []
            if isinstance(first_dst, Pod) and not same:
                conditions.append(namer.condition(dst_place, dst_var))
            if src_place in quiet and conditions:
                conditions[0] = ""
            if dst_place in quiet and len(conditions) == 2:
                conditions[1] = ""
            condition = "; ".join(c for c in conditions if c)
            groups.append((min(order[id(m)] for m in got), PairGroup(src_text, dst_text, condition, got)))
    return [g for _, g in sorted(groups, key=lambda g: g[0])]


def _place(e: Endpoint) -> str:
    return e.namespace if isinstance(e, Pod) else str(e)


Coords = tuple[Hashable, Hashable, int, int]  # source class, destination class, their namespace variants
Product = tuple[frozenset[Hashable], frozenset[Hashable], frozenset[Hashable], frozenset[Hashable]]


def _coords(src: Endpoint, dst: Endpoint) -> Coords:
    def cls(e: Endpoint) -> Hashable:
        return frozenset(e.labels.items()) if isinstance(e, Pod) else e

    src_var = src.variant if isinstance(src, Pod) else 0
    dst_var = dst.variant if isinstance(dst, Pod) else 0
    if isinstance(src, Pod) and isinstance(dst, Pod) and src.namespace == dst.namespace and src_var == dst_var:
        dst_var = _SAME
    return cls(src), cls(dst), src_var, dst_var


def _factor(members: Sequence[T], ends: Callable[[T], tuple[Endpoint, Endpoint]]) -> list[tuple[Product, list[T]]]:
    """Disjoint products (sets per coordinate) whose union is exactly the members' coordinates: start
    with one product per member, merge two that agree on every coordinate but one (namespace variants
    first, then destinations, then sources) until none merge."""
    start: dict[Product, list[T]] = {}
    for m in members:
        c = _coords(*ends(m))
        product: Product = (frozenset([c[0]]), frozenset([c[1]]), frozenset([c[2]]), frozenset([c[3]]))
        start.setdefault(product, []).append(m)
    # greedy, so the order matters: try destinations before sources and the other way round
    tries = [_merge(start, order) for order in ((2, 3, 1, 0), (2, 3, 0, 1))]
    return list(min(tries, key=len).items())


def _merge(products: dict[Product, list[T]], order: tuple[int, ...]) -> dict[Product, list[T]]:
    changed = True
    while changed:
        changed = False
        for d in order:
            merged: dict[tuple[frozenset[Hashable], ...], tuple[set[Hashable], list[T]]] = {}
            for product, got in products.items():
                rest = tuple(product[i] for i in range(4) if i != d)
                values, items = merged.setdefault(rest, (set(), []))
                values.update(product[d])
                items.extend(got)
            if len(merged) < len(products):
                changed = True
                rebuilt: dict[Product, list[T]] = {}
                for rest, (values, items) in merged.items():
                    parts = list(rest)
                    parts.insert(d, frozenset(values))
                    rebuilt[(parts[0], parts[1], parts[2], parts[3])] = items
                products = rebuilt
    return products


class _ClassNamer:
    """Words for a set of pod classes of one namespace and a set of its label sets (variants)."""

    def __init__(self, topology: Topology, services: Sequence[ir.Workload]) -> None:
        self.topology = topology
        self.services = [s for s in services if s.declared and s.cluster is None]
        self.pods: dict[tuple[str, int], list[Pod]] = defaultdict(list)
        for p in topology.pods:
            self.pods[(p.namespace, p.variant)].append(p)
        self.variants: dict[str, list[int]] = defaultdict(list)
        for ns, v in self.pods:
            self.variants[ns].append(v)

    def side(self, first: Endpoint, place: str, classes: frozenset[Hashable], variants: frozenset[int]) -> str:
        if not isinstance(first, Pod):
            return str(first)
        per_variant = [{frozenset(p.labels.items()): p for p in self.pods[(place, v)]} for v in sorted(variants)]
        if all(set(pv) == classes for pv in per_variant):
            return f"{place}/any pod"
        if len(classes) == 1:
            (only,) = classes
            pod = next(pv[only] for pv in per_variant if only in pv)
            return f"{place}/{class_name(pod, self.topology)}"
        seen: set[str] = set()
        for s in self.services:
            if s.namespace != place or s.name in seen:
                continue
            seen.add(s.name)
            if all({c for c in pv if s.selector.matches(dict(pv[c].labels))} == classes for pv in per_variant):
                return f"{place}/{s.name}"
        names = sorted({class_name(pv[c], self.topology) for pv in per_variant for c in classes if c in pv})
        return f"{place}/({' or '.join(names)})"

    def condition(self, namespace: str, variants: frozenset[int]) -> str:
        every = sorted(self.variants.get(namespace, [0]))
        if len(every) < 2:
            return ""
        if set(every) <= variants:
            return f"whatever labels namespace {namespace} has"
        labels = {v: self.topology.namespace_labels(namespace, v) for v in every}
        keys = sorted({k for ls in labels.values() for k in ls if len({ls.get(k) for ls in labels.values()}) > 1})

        def words(v: int) -> str:
            return " and ".join(_label_words(k, labels[v].get(k)) for k in keys)

        inside = [words(v) for v in every if v in variants]
        outside = [words(v) for v in every if v not in variants]
        if len(outside) < len(inside):
            return f"unless namespace {namespace} has {' or '.join(outside)}"
        return f"where namespace {namespace} has {' or '.join(inside)}"


def _label_words(key: str, value: str | None) -> str:
    if value is None:
        return f"no label {key}"
    if is_other_value(value):
        return f"{key}=(a value no selector names)"
    return f"{key}={value}"


# ------------------------------------------------------------------------------------------ one connection


@dataclass
class ConnectionReport:
    src: Endpoint
    dst: Endpoint
    probes: tuple[Probe, ...]
    port_given: bool
    verdicts: dict[str, dict[Probe, Verdict] | Unavailable]
    mismatches: list[str] = field(default_factory=list)


def explain_connection(evaluators: Mapping[str, Evaluator | Unavailable], src: Endpoint, dst: Endpoint,
                       probes: Sequence[Probe], port_given: bool) -> ConnectionReport:
    report = ConnectionReport(src, dst, tuple(probes), port_given, {})
    for name, ev in evaluators.items():
        if isinstance(ev, Unavailable):
            report.verdicts[name] = ev
            continue
        report.verdicts[name] = {p: ev.decide(Connection(src, dst, p[0], p[1])) for p in probes}
    program = report.verdicts.get(PROGRAM)
    if isinstance(program, dict):
        for name, verdicts in report.verdicts.items():
            if name == PROGRAM or not isinstance(verdicts, dict):
                continue
            for p in probes:
                want, got = program[p].allowed, verdicts[p].allowed
                if want != got:
                    report.mismatches.append(
                        f"{src} -> {dst} {probe_text(p)}: the program {_verb(want)}s it, {name} {_verb(got)}s it")
    return report


def _verb(allowed: bool) -> str:
    return "allow" if allowed else "denie"


def _word(allowed: bool) -> str:
    return "allowed" if allowed else "denied"


def render_connection_text(report: ConnectionReport) -> str:
    head = f"{report.src} -> {report.dst}"
    if report.port_given:
        head += f" {probe_text(report.probes[0])}"
    else:
        head += f" (no port given: {len(report.probes)} probed ports)"
    out = [head, ""]
    width = max(len(n) for n in report.verdicts) + 2
    for name, verdicts in report.verdicts.items():
        if isinstance(verdicts, Unavailable):
            out.append(f"  {name:<{width}}{verdicts}")
            continue
        groups: dict[tuple[bool, tuple[str, ...]], list[Probe]] = {}
        for p in report.probes:
            v = verdicts[p]
            groups.setdefault((v.allowed, v.reasons), []).append(p)
        first = True
        for (allowed, reasons), probes in sorted(groups.items(), key=lambda g: not g[0][0]):
            label = f"{name:<{width}}" if first else " " * width
            first = False
            ports = "" if report.port_given else "  " + ", ".join(probe_text(p) for p in probes)
            out.append(f"  {label}{_word(allowed).upper()}{ports}")
            for r in reasons or (("no policy applies to either end",) if allowed else ()):
                out.append(f"  {' ' * width}  {r}")
    if report.mismatches:
        out += ["", f"!!! MISMATCH: {BUG}"]
        out += [f"!!!   {m}" for m in report.mismatches]
    return "\n".join(out) + "\n"


def render_connection_json(report: ConnectionReport) -> str:
    connections = []
    for p in report.probes:
        verdicts: dict[str, Any] = {}
        for name, vs in report.verdicts.items():
            if isinstance(vs, Unavailable):
                verdicts[name] = _unavailable_json(vs)
            else:
                verdicts[name] = {"allowed": vs[p].allowed, "reasons": list(vs[p].reasons)}
        connections.append({"protocol": p[0].value, "port": p[1], "verdicts": verdicts})
    return _dump({
        "from": str(report.src), "to": str(report.dst), "connections": connections,
        "mismatches": report.mismatches,
    })


def _unavailable_json(u: Unavailable) -> dict[str, Any]:
    return {"cannot_express" if u.cannot_express else "unavailable": u.reason}


def _dump(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------------------------ the matrix


@dataclass
class MatrixReport:
    topology: Topology
    probes: tuple[Probe, ...]
    matrices: dict[str, Matrix | Unavailable]
    mismatches: dict[str, list[tuple[Endpoint, Endpoint, Probe, bool]]] = field(default_factory=dict)
    sources: tuple[Endpoint, ...] | None = None  # only these rows (--from)
    destinations: tuple[Endpoint, ...] | None = None  # only these columns (--to)
    every_cluster: bool = False  # the topology is the class topology (netdsl.semantics.universe)
    services: tuple[ir.Workload, ...] = ()  # the program's: names for groups of pod classes in listings

    @property
    def program(self) -> Matrix:
        m = self.matrices[PROGRAM]
        assert isinstance(m, Matrix)
        return m

    def mismatch_lines(self, limit: int | None = 20) -> list[str]:
        lines = []
        for name, diffs in self.mismatches.items():
            lines.append(f"{name} disagrees with the program on {len(diffs)} connection(s):")
            for src, dst, probe, target_allows in diffs[:limit]:
                lines.append(f"  {src} -> {dst} {probe_text(probe)}: the program {_verb(not target_allows)}s it, "
                             f"{name} {_verb(target_allows)}s it")
            if limit is not None and len(diffs) > limit:
                lines.append(f"  ... and {len(diffs) - limit} more")
        return lines


# The whole matrix (no --from/--to) is shown up to this many cells: 5,000 classes. Past it, its text
# alone would take gigabytes; explain asks for --from or --to instead.
MAX_MATRIX_CELLS = 25_000_000


def explain_matrix(evaluators: Mapping[str, Evaluator | Unavailable], topology: Topology, probes: Sequence[Probe],
                   sources: Sequence[Endpoint] | None = None,
                   destinations: Sequence[Endpoint] | None = None, every_cluster: bool = False,
                   services: Sequence[ir.Workload] = ()) -> MatrixReport:
    """Every evaluator's matrix; where a target's differs from the program's (among the pairs shown:
    sources x destinations, None meaning all), the differences."""
    report = MatrixReport(topology, tuple(probes), {}, sources=None if sources is None else tuple(sources),
                          destinations=None if destinations is None else tuple(destinations),
                          every_cluster=every_cluster, services=tuple(services))
    for name, ev in evaluators.items():
        report.matrices[name] = ev if isinstance(ev, Unavailable) else matrix(ev, topology, probes)
    for name, m in report.matrices.items():
        if name != PROGRAM and isinstance(m, Matrix):
            # (src, dst, probe, allowed by the target) where it differs from the program
            diffs = [d for d in m.differences(report.program) if _keep(report, d[0], d[1]) and coexist(d[0], d[1])]
            if diffs:
                report.mismatches[name] = diffs
    return report


def _keep(report: MatrixReport, src: Endpoint, dst: Endpoint) -> bool:
    return (report.sources is None or src in report.sources) and (
        report.destinations is None or dst in report.destinations)


def _targets_lines(report: MatrixReport, width: int) -> list[str]:
    out = []
    for name, mat in report.matrices.items():
        if name == PROGRAM:
            continue
        if isinstance(mat, Unavailable):
            out.append(_wrap(f"{name}: {mat}", width))
        elif name in report.mismatches:
            out.append(_wrap(f"{name}: !!! MISMATCH with the program: {BUG}", width))
        else:
            where = " in every cluster" if report.every_cluster else " in this topology"
            out.append(f"{name}: the emitted policies allow exactly what the program allows{where}")
    if report.mismatches:
        out += [""] + ["!!! " + line for line in report.mismatch_lines()]
    return out


def render_list_text(report: MatrixReport, width: int = WIDTH) -> str:
    """Everything from one source (--from) or to one destination (--to), one peer a line."""
    m = report.program
    one_source = report.sources is not None and len(report.sources) == 1
    if one_source:
        assert report.sources is not None
        me = report.sources[0]
        pairs = [(me, e) for e in m.endpoints if report.destinations is None or e in report.destinations]
        head = f"{me} may connect to"
    else:
        assert report.destinations is not None
        me = report.destinations[0]
        pairs = [(e, me) for e in m.endpoints]
        head = f"{me} accepts connections from"
    out = [f"{head} ({len(m.probes)} probed ports):"]
    found: list[tuple[Endpoint, Endpoint, str]] = []
    nothing = 0
    for src, dst in pairs:
        if isinstance(src, External) and isinstance(dst, External):
            continue
        if report.every_cluster and not coexist(src, dst):
            continue  # another label set of the same namespace: no such pair in any cluster
        allowed = m.allowed(src, dst)
        if not allowed:
            nothing += 1
            continue
        ports = "every probed port" if len(allowed) == len(m.probes) else ", ".join(probe_text(p) for p in allowed)
        found.append((src, dst, ports))
    lines = _listing_lines(report, found, me, one_source)
    name_width = min(LABEL_WIDTH, max((len(n) for n, _ in lines), default=0))
    for name, ports in lines:
        if len(name) > name_width:
            out.append(f"  {name}")
            name = ""
        out.append(_wrap(f"  {name:<{name_width}}  {ports}", width, indent=name_width + 4))
    if not lines:
        out.append("  nothing")
    if nothing and lines:
        out.append(f"  (nothing {'to' if one_source else 'from'} the other {nothing} endpoint{'s' * (nothing != 1)})")
    out.append(f"probed: {', '.join(probe_text(p) for p in m.probes)}")
    out[-1] = _wrap(out[-1], width)
    return "\n".join([*out, "", *_targets_lines(report, width)]).rstrip("\n") + "\n"


def _listing_lines(report: MatrixReport, found: list[tuple[Endpoint, Endpoint, str]], me: Endpoint,
                   one_source: bool) -> list[tuple[str, str]]:
    """(peer, ports) lines of a listing; over the class topology, peers with the same ports that differ
    only in namespace label set or pod class are one line (group_pairs)."""
    if not report.every_cluster:
        return [(str(dst if one_source else src), ports) for src, dst, ports in found]
    quiet = frozenset([me.namespace]) if isinstance(me, Pod) else frozenset()
    out = []
    for g in group_pairs(found, lambda f: f[2], lambda f: (f[0], f[1]), report.topology, report.services, quiet):
        peer = g.dst if one_source else g.src
        if peer == REPLICA:
            peer = str(me)
        out.append((peer + (f" ({g.condition})" if g.condition else ""), g.members[0][2]))
    return out


def _codes() -> Iterator[str]:
    yield from "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    while True:
        yield "#"


def shorten(text: str, width: int) -> str:
    """Keep the end of a long name (where pod names differ) and mark the cut."""
    if len(text) <= width:
        return text
    if "/" in text:
        ns, name = text.split("/", 1)
        room = width - len(name) - 2
        if room >= 3:
            return ns[:room] + "~/" + name
    return "~" + text[-(width - 1):]


def render_matrix_text(report: MatrixReport, width: int = WIDTH) -> str:
    if (report.sources is not None and len(report.sources) == 1) or (
            report.destinations is not None and len(report.destinations) == 1):
        return render_list_text(report, width)
    m = report.program
    endpoints = m.endpoints
    n_probes = len(m.probes)
    rows = [e for e in endpoints if report.sources is None or e in report.sources]
    cols = [e for e in endpoints if report.destinations is None or e in report.destinations]
    number = {e: i + 1 for i, e in enumerate(endpoints)}
    digits = len(str(len(endpoints)))
    # cells: "*" every probed port, "." none, a letter per other set of ports (legend), " " no such pair
    legend: dict[int, str] = {}  # probe code (see Matrix.codes) -> its letter
    letters = _codes()
    everything = (1 << n_probes) - 1
    external = [isinstance(e, External) for e in endpoints]
    pod_row = ["."] * len(endpoints)
    external_row = [" " if x else "." for x in external]
    cells: dict[Endpoint, list[str]] = {}  # per source, a character per endpoint
    for src in rows:
        i = m.position(src)
        chars = list(external_row if external[i] else pod_row)  # a pod's own column: its replicas
        for j, code in m.codes(i).items():
            if code == everything:
                chars[j] = "*"
            else:
                if code not in legend:
                    legend[code] = next(letters)
                chars[j] = legend[code]
        cells[src] = chars
    label_width = min(LABEL_WIDTH, max((len(str(e)) for e in rows), default=1))
    prefix = digits + 1 + label_width + 2
    per_block = max(1, (width - prefix) // 2)
    out = [_wrap(f"Connectivity: rows are sources, columns destinations ({len(rows)} x {len(cols)}); "
                 f"{n_probes} probed ports: {', '.join(probe_text(p) for p in m.probes)}", width)]
    if report.every_cluster:
        out.append(_wrap("Each row and column is a class: every pod (any number of replicas; a pod's own "
                         "column is traffic between its replicas), namespace and address alike in everything the "
                         "policies look at, so the matrix holds in every cluster. Each port stands for its range "
                         "up to the next one listed.", width))
    out.append("")
    for start in range(0, len(cols), per_block):
        block = cols[start:start + per_block]
        for d in range(digits):  # destination numbers, written downwards
            line = " " * prefix
            for dst in block:
                line += str(number[dst]).rjust(digits)[d] + " "
            out.append(line.rstrip())
        block_index = [number[dst] - 1 for dst in block]
        for src in rows:
            chars = cells[src]
            line = f"{number[src]:>{digits}} {shorten(str(src), label_width):<{label_width}}  "
            line += " ".join(chars[j] for j in block_index)
            out.append(line.rstrip())
        out.append("")
    out += ["*  every probed port", ".  none"]
    for code, letter in legend.items():
        out.append(_wrap(f"{letter}  {', '.join(probe_text(p) for p in m.probes_of(code))}", width, indent=3))
    truncated = [e for e in rows if len(str(e)) > label_width]
    if truncated:
        out.append("")
        out += [f"{number[e]:>{digits}} {e}" for e in truncated]
    out += ["", *_targets_lines(report, width)]
    return "\n".join(out).rstrip("\n") + "\n"


def _wrap(text: str, width: int, indent: int = 2) -> str:
    """Wrap at spaces; continuation lines start with indent spaces (leading spaces are kept)."""
    body = text.lstrip(" ")
    lines, line = [], text[: len(text) - len(body)]
    for w in body.split(" "):
        if line.strip() and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = " " * indent + w
        else:
            line = f"{line} {w}" if line.strip() else line + w
    lines.append(line)
    return "\n".join(lines)


def render_matrix_json(report: MatrixReport) -> str:
    m = report.program
    allowed = [
        {"from": str(src), "to": str(dst), "ports": [probe_text(p) for p in probes]}
        for src, dst, probes in m.cells() if _keep(report, src, dst)
    ]
    evaluators: dict[str, Any] = {PROGRAM: {"allowed": allowed}}
    for name, mat in report.matrices.items():
        if name == PROGRAM:
            continue
        if isinstance(mat, Unavailable):
            evaluators[name] = _unavailable_json(mat)
        else:
            diffs = report.mismatches.get(name, [])
            evaluators[name] = {"agrees": not diffs, "differences": [
                {"from": str(s), "to": str(d), "port": probe_text(p), "program": not allows, name: allows}
                for s, d, p, allows in diffs]}
    return _dump({
        "endpoints": [_endpoint_json(e) for e in m.endpoints],
        "probes": [probe_text(p) for p in m.probes],
        "evaluators": evaluators,
    })


def _endpoint_json(e: Endpoint) -> dict[str, Any]:
    if isinstance(e, Pod):
        return {"name": str(e), "namespace": e.namespace, "pod": e.name, "labels": dict(e.labels)}
    return {"name": str(e), "address": str(e.address)}
