"""The whole connectivity matrix at once: for every ordered pair of endpoints of a topology and every
probed (protocol, port), whether an evaluator allows the connection.

`decide()` answers one connection at a time, so a matrix through it costs |endpoints|^2 x |probes|
calls, each walking every policy. Here an evaluator's policy is compiled once into bitsets over the
topology's endpoints (bit i = endpoint i):

* per rule: the pods it applies to (its subjects) and the endpoints its peers match - for the program
  and NetworkPolicy from label indexes (label -> pods) rather than by testing every selector against
  every pod; for Calico and Cilium by the evaluator's own matching, once per endpoint and distinct
  selector;
* per pod and direction: its plan, the tiers that apply to it with the rules that apply to it, in
  evaluation order; pods with the same plan are evaluated once;
* ports: probes that every port item of the policy treats alike (the same numeric ranges contain them,
  the same pods have them as a named port) form one class, evaluated once.

One pod's side is then a first-match walk over its plan with masks: every peer the rule matches that
no earlier rule decided is allowed, denied or passed on to the next tier in one AND. Kubernetes' union
of allows is the special case of one tier of allow rules that otherwise denies.

The result is identical to `decide()` (tests/semantics/test_engine.py compares them on random
programs). An evaluator this module does not know is asked connection by connection.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as TypingProtocol

from netdsl import ir
from netdsl.ir import Direction, Protocol
from netdsl.netset import NetSet, PortSet, by_identity
from netdsl.semantics import calico as calico_semantics
from netdsl.semantics import cilium as cilium_semantics
from netdsl.semantics import program as program_semantics
from netdsl.semantics import vanilla as vanilla_semantics
from netdsl.semantics.model import Connection, Endpoint, External, Pod, Topology, Verdict

# (protocol, port) or, in a class topology, (protocol, port, the named ports the destination binds to it)
Probe = tuple[Protocol, int] | tuple[Protocol, int, frozenset[str]]


def probe_names(probe: Probe) -> frozenset[str]:
    return probe[2] if len(probe) > 2 else frozenset()


class Evaluator(TypingProtocol):
    """What every evaluator offers: a verdict per connection."""

    def decide(self, conn: Connection) -> Verdict: ...


def probe_text(probe: Probe) -> str:
    protocol, port = probe[0], probe[1]
    names = probe_names(probe)
    bound = f" (as {', '.join(sorted(names))})" if names else ""
    return f"{port}/{protocol.value.lower()}{bound}"


# ------------------------------------------------------------------------------------------ result


@dataclass(frozen=True)
class Matrix:
    """`rows[k][i]`: the destinations (a bitmask over `endpoints`) that endpoint i may reach with
    `probes[k]`. A pod's connection to itself is traffic between two of its replicas (a pod of a
    topology stands for every replica of its workload); connections between two external endpoints
    are not part of the matrix (their bits are always 0)."""

    endpoints: tuple[Endpoint, ...]
    probes: tuple[Probe, ...]
    rows: tuple[tuple[int, ...], ...]
    _position: dict[Endpoint, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def position(self, endpoint: Endpoint) -> int:
        if not self._position:
            self._position.update((e, i) for i, e in enumerate(self.endpoints))
        return self._position[endpoint]

    def is_allowed(self, src: Endpoint, dst: Endpoint, probe: Probe) -> bool:
        k = self.probes.index(probe)
        return bool(self.rows[k][self.position(src)] >> self.position(dst) & 1)

    def allowed(self, src: Endpoint, dst: Endpoint) -> tuple[Probe, ...]:
        """The probes allowed from src to dst, in probe order."""
        i, j = self.position(src), self.position(dst)
        return tuple(p for p, rows in zip(self.probes, self.rows, strict=True) if rows[i] >> j & 1)

    def pairs(self) -> Iterator[tuple[Endpoint, Endpoint]]:
        """Every pair the matrix covers, sources in endpoint order."""
        for src in self.endpoints:
            for dst in self.endpoints:
                if not (isinstance(src, External) and isinstance(dst, External)):
                    yield src, dst

    def codes(self, i: int) -> dict[int, int]:
        """Row i as {destination index: bitmask of the allowed probes' indexes}, allowed pairs only."""
        out: dict[int, int] = defaultdict(int)
        n = len(self.endpoints)
        seen: dict[int, int] = {}  # probes of a class share their rows: decode each row once
        for k, rows in enumerate(self.rows):
            mask = rows[i]
            if not mask:
                continue
            if id(rows) in seen:
                first = seen[id(rows)]
                for j, code in out.items():
                    if code >> first & 1:
                        out[j] = code | 1 << k
                continue
            seen[id(rows)] = k
            for j in _bits(mask, n):
                out[j] |= 1 << k
        return dict(sorted(out.items()))

    def probes_of(self, code: int) -> tuple[Probe, ...]:
        return tuple(p for k, p in enumerate(self.probes) if code >> k & 1)

    def cells(self) -> Iterator[tuple[Endpoint, Endpoint, tuple[Probe, ...]]]:
        """(src, dst, allowed probes) for every pair with at least one allowed probe."""
        decoded: dict[int, tuple[Probe, ...]] = {}
        for i, src in enumerate(self.endpoints):
            for j, code in self.codes(i).items():
                if code not in decoded:
                    decoded[code] = self.probes_of(code)
                yield src, self.endpoints[j], decoded[code]

    def count(self) -> int:
        """How many (src, dst, probe) connections are allowed."""
        return sum(row.bit_count() for rows in self.rows for row in rows)

    def differences(self, other: Matrix) -> Iterator[tuple[Endpoint, Endpoint, Probe, bool]]:
        """(src, dst, probe, allowed here) for every connection where the two matrices disagree; both
        must cover the same endpoints and probes."""
        if self.endpoints != other.endpoints or self.probes != other.probes:
            raise ValueError("matrices over different endpoints or probes cannot be compared")
        n = len(self.endpoints)
        for probe, mine, theirs in zip(self.probes, self.rows, other.rows, strict=True):
            if mine is theirs:
                continue
            for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
                for j in _bits(a ^ b, n):
                    yield self.endpoints[i], self.endpoints[j], probe, bool(a >> j & 1)


_BYTE_BITS = [tuple(i for i in range(8) if b >> i & 1) for b in range(256)]


def _bits(mask: int, n: int) -> list[int]:
    """Set bit positions of mask, ascending."""
    if mask.bit_count() <= 8:
        out = []
        while mask:
            low = mask & -mask
            out.append(low.bit_length() - 1)
            mask ^= low
        return out
    found: list[int] = []  # dense: a byte at a time
    for k, byte in enumerate(mask.to_bytes((mask.bit_length() + 7) // 8, "little")):
        if byte:
            base = k * 8
            found.extend(base + i for i in _BYTE_BITS[byte])
    return found


# ------------------------------------------------------------------------------------------ compiled policy

ALLOW, DENY, PASS = 0, 1, 2


@dataclass(frozen=True, slots=True)
class PortItem:
    """One port match: a protocol (None: any) and a range (None: every port) or a named port, which
    resolves against the destination pod's container ports."""

    protocol: Protocol | None
    lo: int | None = None
    hi: int | None = None
    name: str | None = None


Ports = tuple[PortItem, ...] | None  # None: every port and protocol


@dataclass(slots=True)
class Rule:
    subjects: int  # pods the rule applies to
    peers: int  # endpoints on the other side it matches
    ports: Ports
    action: int


@dataclass(slots=True)
class Tier:
    applies: int  # pods this tier applies to (it decides for them, or passes)
    rules: list[Rule]
    otherwise: int  # what happens to what no rule of the tier decides


@dataclass(slots=True)
class Compiled:
    egress: list[Tier]
    ingress: list[Tier]
    sided: int | None = None  # endpoints policy can apply to (None: the pods; Calico adds host endpoints)


class Index:
    """A topology's endpoints as bit positions, and label indexes over its pods."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.endpoints: tuple[Endpoint, ...] = topology.endpoints
        self.n = len(self.endpoints)
        self.all = (1 << self.n) - 1
        self.pods = 0
        self.externals = 0
        self.ns_pods: dict[str, int] = defaultdict(int)  # by namespace name (every variant)
        self.ns_variants: dict[tuple[str, int], int] = defaultdict(int)  # by (name, variant)
        self.label_value: dict[tuple[str, str], int] = defaultdict(int)
        self.label_key: dict[str, int] = defaultdict(int)
        self.named: dict[tuple[str, Protocol, int], int] = defaultdict(int)  # (name, protocol, number)
        for i, e in enumerate(self.endpoints):
            bit = 1 << i
            if isinstance(e, Pod):
                self.pods |= bit
                self.ns_pods[e.namespace] |= bit
                self.ns_variants[(e.namespace, e.variant)] |= bit
                for k, v in e.labels.items():
                    self.label_value[(k, v)] |= bit
                    self.label_key[k] |= bit
                for name, (number, protocol) in e.ports.items():
                    self.named[(name, protocol, number)] |= bit
            else:
                self.externals |= bit
        self.namespaces = sorted(self.ns_variants)
        self._cache: dict[Hashable, int] = {}
        self._lists: dict[Hashable, list[Any]] = {}

    def cached_list(self, key: Hashable, compute: Callable[[], list[Any]]) -> list[Any]:
        if key not in self._lists:
            self._lists[key] = compute()
        return self._lists[key]

    def cached(self, key: Hashable, compute: Callable[[], int]) -> int:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def each(self, mask: int) -> Iterator[tuple[int, Endpoint]]:
        for i in _bits(mask, self.n):
            yield i, self.endpoints[i]

    def where(self, mask: int, test: Callable[[Endpoint], bool]) -> int:
        """The endpoints of mask that pass test."""
        out = 0
        for i, e in self.each(mask):
            if test(e):
                out |= 1 << i
        return out

    def in_namespaces(self, test: Callable[[str, dict[str, str]], bool]) -> int:
        """The pods of the namespaces (name, labels) that pass test."""
        out = 0
        for name, variant in self.namespaces:
            if test(name, self.topology.namespace_labels(name, variant)):
                out |= self.ns_variants[(name, variant)]
        return out

    def value_mask(self, key: str, value: object) -> int:
        """Pods whose label `key` equals value (a missing label reads as None)."""
        if value is None:
            return self.pods & ~self.label_key.get(key, 0)
        if isinstance(value, str):
            return self.label_value.get((key, value), 0)
        return 0

    def external_in(self, nets: Sequence[ir.IPNetwork], excepts: Sequence[ir.IPNetwork] = ()) -> int:
        within, outside = NetSet(nets), NetSet(excepts)

        def inside(e: Endpoint) -> bool:
            return isinstance(e, External) and e.address in within and e.address not in outside

        return self.where(self.externals, inside)


# ------------------------------------------------------------------------------------------ evaluation


def _run(plan: Sequence[tuple[Sequence[Rule], int]], port_mask: Callable[[Ports], int], everything: int) -> int:
    """One side of one pod: the other endpoints it allows. First match in each tier; what a tier passes
    on goes to the next; what no tier decides is allowed."""
    remaining = everything
    allowed = 0
    for rules, otherwise in plan:
        undecided = remaining
        passed = 0
        for rule in rules:
            m = rule.peers & undecided
            if not m:
                continue
            if rule.ports is not None:
                m &= port_mask(rule.ports)
                if not m:
                    continue
            if rule.action == ALLOW:
                allowed |= m
            elif rule.action == PASS:
                passed |= m
            undecided &= ~m
            if not undecided:
                break
        if otherwise == ALLOW:
            allowed |= undecided
        elif otherwise == PASS:
            passed |= undecided
        remaining = passed
        if not remaining:
            break
    return allowed | remaining


def _plans(tiers: Sequence[Tier], index: Index, sided: int | None = None) -> dict[int, list[tuple[list[Rule], int]]]:
    """Per position of an endpoint with a side (sided; None: the pods): the tiers applying to it, each
    with the rules applying to it, in order."""
    sided = index.pods if sided is None else sided
    plans: dict[int, list[tuple[list[Rule], int]]] = defaultdict(list)
    for tier in tiers:
        mine: dict[int, list[Rule]] = {}
        for i in _bits(tier.applies & sided, index.n):
            mine[i] = []
            plans[i].append((mine[i], tier.otherwise))
        for rule in tier.rules:
            for i in _bits(rule.subjects & tier.applies & sided, index.n):
                mine[i].append(rule)
    return plans


def _numeric_match(item: PortItem, probe: Probe) -> bool:
    if item.protocol is not None and item.protocol is not probe[0]:
        return False
    if item.name is not None:
        return False
    return item.lo is None or item.lo <= probe[1] <= (item.hi if item.hi is not None else item.lo)


def _named_mask(item: PortItem, probe: Probe, index: Index) -> int:
    if item.name is None or (item.protocol is not None and item.protocol is not probe[0]):
        return 0
    if item.name in probe_names(probe):  # class topology: every pod binds the probe's names
        return index.pods
    return index.named.get((item.name, probe[0], probe[1]), 0)


def _port_parts(ports: tuple[PortItem, ...]) -> tuple[PortSet, tuple[PortItem, ...]]:
    """A port list as its numeric ranges (tested by bisection) and its named items; once per list."""
    parts: tuple[PortSet, tuple[PortItem, ...]] = by_identity(ports, lambda: (
        PortSet((it.protocol, it.lo, it.hi) for it in ports if it.name is None),
        tuple(it for it in ports if it.name is not None)))
    return parts


def _numeric_any(ports: tuple[PortItem, ...], probe: Probe) -> bool:
    """any(_numeric_match(item, probe) for item in ports), in O(log n)."""
    return _port_parts(ports)[0].contains(probe[0], probe[1])


def _numeric_signatures(items: Iterable[PortItem], probes: Sequence[Probe]) -> list[tuple[int, int]]:
    """Per probe, a key equal for two probes of one protocol exactly when the same numeric items match
    them (up to a 2**-128 chance): a sweep over the ports with each item's random weight XORed in while
    it covers the port, so the cost is O((items + probes) log) instead of items x probes."""
    ranged = sorted(((it.protocol, it.lo, it.hi if it.hi is not None else it.lo) for it in items
                     if it.name is None and it.lo is not None), key=repr)
    weights = random.Random(0)
    spans = [(protocol, lo, hi, weights.getrandbits(128)) for protocol, lo, hi in ranged]
    keys: list[tuple[int, int]] = [(0, 0)] * len(probes)
    for protocol in {p[0] for p in probes}:
        mine = [sp for sp in spans if sp[0] is None or sp[0] is protocol]
        starts = sorted(mine, key=lambda sp: sp[1])
        ends = sorted(mine, key=lambda sp: sp[2])
        order = sorted((k for k, p in enumerate(probes) if p[0] is protocol), key=lambda k: probes[k][1])
        h = count = i = j = 0
        for k in order:
            port = probes[k][1]
            while i < len(starts) and starts[i][1] <= port:
                h ^= starts[i][3]
                count += 1
                i += 1
            while j < len(ends) and ends[j][2] < port:
                h ^= ends[j][3]
                count -= 1
                j += 1
            keys[k] = (h, count)
    return keys


def _probe_classes(compiled: Compiled, probes: Sequence[Probe], index: Index) -> dict[Hashable, list[int]]:
    """Probes every port item treats alike share a class (by position in probes). Items matching every
    port of a protocol treat that protocol's probes alike and need no key."""
    items: set[PortItem] = set()
    for tier in (*compiled.egress, *compiled.ingress):
        for rule in tier.rules:
            items.update(rule.ports or ())
    named = sorted((it for it in items if it.name is not None), key=repr)
    numeric = _numeric_signatures(items, probes)
    classes: dict[Hashable, list[int]] = defaultdict(list)
    for k, probe in enumerate(probes):
        signature = (probe[0], numeric[k], tuple(_named_mask(it, probe, index) for it in named))
        classes[signature].append(k)
    return classes


def _egress_ports(probe: Probe, index: Index) -> Callable[[Ports], int]:
    """Egress: the destinations a rule's ports let through (a named port depends on the destination).
    Cached by the list's identity: hashing a list of thousands of ports per lookup was quadratic."""
    cache: dict[int, int] = {}

    def mask(ports: Ports) -> int:
        if ports is None:
            return index.all
        got = cache.get(id(ports))
        if got is None:
            got = 0
            if _numeric_any(ports, probe):
                got = index.all
            else:
                for item in _port_parts(ports)[1]:
                    got |= _named_mask(item, probe, index)
            cache[id(ports)] = got
        return got

    return mask


def _ingress_ports(probe: Probe, index: Index, pod: int) -> Callable[[Ports], int]:
    """Ingress: everything or nothing, depending on the destination pod itself (cached as above)."""
    cache: dict[int, int] = {}

    def mask(ports: Ports) -> int:
        if ports is None:
            return index.all
        got = cache.get(id(ports))
        if got is None:
            got = 0
            if _numeric_any(ports, probe) or any(
                    _named_mask(item, probe, index) >> pod & 1 for item in _port_parts(ports)[1]):
                got = index.all
            cache[id(ports)] = got
        return got

    return mask


Plan = list[tuple[list[Rule], int]]


@dataclass(slots=True)
class Group:
    """Pods evaluated together: the same plan (and for ingress the same named ports)."""

    plan: Plan
    members: int


def _group(plans: Mapping[int, Plan], index: Index, by_ports: bool) -> list[Group]:
    groups: dict[Hashable, Group] = {}
    for i, plan in plans.items():
        key: Hashable = tuple((tuple(map(id, rules)), otherwise) for rules, otherwise in plan)
        if by_ports:
            pod = index.endpoints[i]
            ports = pod.ports if isinstance(pod, Pod) else {}
            key = (key, tuple(sorted((k, v[0], v[1].value) for k, v in ports.items())))
        if key in groups:
            groups[key].members |= 1 << i
        else:
            groups[key] = Group(plan, 1 << i)
    return list(groups.values())


class _Memo:
    """Across probe classes: a group's side depends only on how the probe treats the distinct port
    lists of the rules in its plan, so a group whose rules treat two probes alike is evaluated once for
    both. `keys[g]`: the positions (in `ports`) of the port lists group g's plan uses."""

    def __init__(self, groups: Sequence[Group]) -> None:
        position: dict[Ports, int] = {}
        self.keys: list[tuple[int, ...]] = []
        for g in groups:
            mine = {position.setdefault(rule.ports, len(position))
                    for rules, _ in g.plan for rule in rules if rule.ports is not None}
            self.keys.append(tuple(sorted(mine)))
        self.ports: list[Ports] = list(position)
        self.results: dict[tuple[int, tuple[object, ...]], int] = {}
        self.mask_ids: dict[int, int] = {}  # a port mask -> a small id, the same for every probe
        self.rows: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[int, ...]] = {}

    def run(self, g: int, plan: Plan, signature: tuple[object, ...], port_mask: Callable[[Ports], int],
            everything: int) -> int:
        key = (g, signature)
        got = self.results.get(key)
        if got is None:
            got = self.results[key] = _run(plan, port_mask, everything)
        return got


def _side_results(index: Index, probe: Probe, egress: Sequence[Group], ingress: Sequence[Group],
                  memo_egress: _Memo, memo_ingress: _Memo) -> tuple[list[int], list[int]]:
    """Per egress group the endpoints it may reach, per ingress group the sources it accepts."""
    everything = index.all
    # egress: per source, the destinations it may reach (unrestricted: all)
    ports = _egress_ports(probe, index)
    mask_ids = memo_egress.mask_ids  # shared by every probe: equal ids mean equal masks
    egress_ids = [mask_ids.setdefault(ports(p), len(mask_ids)) for p in memo_egress.ports]
    egress_results = [
        memo_egress.run(k, g.plan, (probe[0], *(egress_ids[j] for j in memo_egress.keys[k])), ports, everything)
        for k, g in enumerate(egress)]
    numeric = [p is not None and _numeric_any(p, probe) for p in memo_ingress.ports]
    # No pod binds a named port of its own (a class topology: the probe says which): then the probe
    # alone decides every port list for every pod, and one pod stands for all.
    alike = not index.named and index.pods
    if alike:
        shared = _ingress_ports(probe, index, (index.pods & -index.pods).bit_length() - 1)
        matched = [numeric[j] or bool(shared(p)) for j, p in enumerate(memo_ingress.ports)]
    ingress_results = []
    for k, g in enumerate(ingress):
        if alike and not g.members & ~index.pods:
            ingress_ports = shared
            signature = tuple(matched[j] for j in memo_ingress.keys[k])
        else:
            rep = (g.members & -g.members).bit_length() - 1
            ingress_ports = _ingress_ports(probe, index, rep)
            signature = tuple(numeric[j] or bool(ingress_ports(memo_ingress.ports[j])) for j in memo_ingress.keys[k])
        ingress_results.append(memo_ingress.run(k, g.plan, (probe[0], *signature), ingress_ports, everything))
    return egress_results, ingress_results


def _rows(index: Index, probe: Probe, egress: Sequence[Group], ingress: Sequence[Group],
          memo_egress: _Memo | None = None, memo_ingress: _Memo | None = None) -> tuple[int, ...]:
    n, everything = index.n, index.all
    memo_egress, memo_ingress = memo_egress or _Memo(egress), memo_ingress or _Memo(ingress)
    egress_results, ingress_results = _side_results(index, probe, egress, ingress, memo_egress, memo_ingress)
    # probes whose every group gets the same sides share their rows (memo results are kept alive, so
    # their ids identify them)
    whole = (tuple(map(id, egress_results)), tuple(map(id, ingress_results)))
    if whole in memo_egress.rows:
        return memo_egress.rows[whole]
    # egress: per source, the destinations it may reach (unrestricted: all)
    reach = [everything] * n
    for g, allowed in zip(egress, egress_results, strict=True):
        for i in _bits(g.members, n):
            reach[i] = allowed
    # ingress: per destination, the sources it accepts, collected as sources -> destinations
    accepting: dict[int, int] = defaultdict(int)
    unrestricted = everything
    for g, accepted in zip(ingress, ingress_results, strict=True):
        unrestricted &= ~g.members
        accepting[accepted] |= g.members
    accepting[everything] |= unrestricted
    # transpose: accepted_by[i] = the destinations that accept source i. The destination sets are
    # disjoint, so a source set covering most endpoints is handled through its complement.
    sparse = [0] * n
    dense = 0
    excluded = [0] * n
    for sources, dsts in accepting.items():
        if not dsts:
            continue
        if sources.bit_count() * 2 <= n:
            for i in _bits(sources, n):
                sparse[i] |= dsts
        else:
            dense |= dsts
            for i in _bits(everything & ~sources, n):
                excluded[i] |= dsts
    rows = []
    for i, e in enumerate(index.endpoints):
        valid = everything
        if isinstance(e, External):
            valid &= ~index.externals
        rows.append(reach[i] & (sparse[i] | (dense & ~excluded[i])) & valid)
    memo_egress.rows[whole] = result = tuple(rows)
    return result


def evaluate(compiled: Compiled, index: Index, probes: Sequence[Probe]) -> Matrix:
    egress = _group(_plans(compiled.egress, index, compiled.sided), index, by_ports=False)
    ingress = _group(_plans(compiled.ingress, index, compiled.sided), index, by_ports=True)
    rows: list[tuple[int, ...]] = [()] * len(probes)
    memo_egress, memo_ingress = _Memo(egress), _Memo(ingress)
    for members in _probe_classes(compiled, probes, index).values():
        result = _rows(index, probes[members[0]], egress, ingress, memo_egress, memo_ingress)
        for k in members:
            rows[k] = result
    return Matrix(index.endpoints, tuple(probes), tuple(rows))


@dataclass(frozen=True)
class Sides:
    """Per probe: what each endpoint's egress lets it reach and what its ingress accepts, as
    {set of endpoints: the endpoints with exactly that set} (an endpoint without a side: everything).
    Two evaluators with equal Sides allow the same connections; unequal Sides may still allow the same
    (both deny, on different sides)."""

    probes: tuple[Probe, ...]
    reach: tuple[dict[int, int], ...]
    accept: tuple[dict[int, int], ...]


def _by_result(groups: Sequence[Group], results: Sequence[int], everything: int) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    covered = 0
    for g, result in zip(groups, results, strict=True):
        out[result] |= g.members
        covered |= g.members
    if everything & ~covered:
        out[everything] |= everything & ~covered
    return dict(out)


def sides(evaluator: Evaluator, topology: Topology, probes: Iterable[Probe]) -> Sides | None:
    """The evaluator's Sides, or None if no fast compiler knows it (then compare matrices)."""
    probes = tuple(dict.fromkeys(probes))
    compile_ = _compiler(evaluator)
    if compile_ is None:
        return None
    index = Index(topology)
    compiled = compile_(evaluator, index)
    if compiled is None:
        return None
    egress = _group(_plans(compiled.egress, index, compiled.sided), index, by_ports=False)
    ingress = _group(_plans(compiled.ingress, index, compiled.sided), index, by_ports=True)
    memo_egress, memo_ingress = _Memo(egress), _Memo(ingress)
    done: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[dict[int, int], dict[int, int]]] = {}
    reach_rows, accept_rows = [], []
    for probe in probes:
        e_results, i_results = _side_results(index, probe, egress, ingress, memo_egress, memo_ingress)
        whole = (tuple(map(id, e_results)), tuple(map(id, i_results)))
        if whole not in done:
            done[whole] = (_by_result(egress, e_results, index.all), _by_result(ingress, i_results, index.all))
        reach_rows.append(done[whole][0])
        accept_rows.append(done[whole][1])
    return Sides(probes, tuple(reach_rows), tuple(accept_rows))


def by_decide(evaluator: Evaluator, topology: Topology, probes: Sequence[Probe]) -> Matrix:
    """The matrix one connection at a time (any evaluator; the reference the fast path must equal)."""
    endpoints = topology.endpoints
    rows: list[tuple[int, ...]] = []
    for probe in probes:
        row = []
        for src in endpoints:
            mask = 0
            for j, dst in enumerate(endpoints):
                if isinstance(src, External) and isinstance(dst, External):
                    continue
                if evaluator.decide(Connection(src, dst, *probe)).allowed:
                    mask |= 1 << j
            row.append(mask)
        rows.append(tuple(row))
    return Matrix(endpoints, tuple(probes), tuple(rows))


def matrix(evaluator: Evaluator, topology: Topology, probes: Iterable[Probe]) -> Matrix:
    """Whether evaluator allows each probe between every pair of topology's endpoints (normally the
    topology the evaluator was built with)."""
    probes = tuple(dict.fromkeys(probes))
    compile_ = _compiler(evaluator)
    if compile_ is None:
        return by_decide(evaluator, topology, probes)
    index = Index(topology)
    compiled = compile_(evaluator, index)
    if compiled is None:
        return by_decide(evaluator, topology, probes)
    return evaluate(compiled, index, probes)


# ------------------------------------------------------------------------------------------ compilers

Compiler = Callable[[Any, Index], Compiled | None]
COMPILERS: dict[type, Compiler] = {}


def _compiler(evaluator: object) -> Compiler | None:
    """Only for exactly the class a compiler was written for: a subclass may decide differently."""
    return COMPILERS.get(type(evaluator))


def _key(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# ---- networking.k8s.io/v1 NetworkPolicy


def _label_selector(selector: Mapping[str, Any] | None, index: Index, universe: int) -> int:
    """metav1.LabelSelector over the pods of universe (as vanilla.selector_matches)."""
    if not selector:
        return universe
    out = universe
    for k, v in (selector.get("matchLabels") or {}).items():
        out &= index.value_mask(k, v)
    for e in selector.get("matchExpressions") or ():
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op in ("In", "NotIn"):
            listed = 0
            for v in values:
                listed |= index.value_mask(key, v) if isinstance(v, str) or v is None else 0
            if op == "In":
                out &= listed
            else:
                out &= ~(listed & index.label_key.get(key, 0))
        elif op == "Exists":
            out &= index.label_key.get(key, 0)
        elif op == "DoesNotExist":
            out &= ~index.label_key.get(key, 0)
    return out & universe


def compile_vanilla(evaluator: vanilla_semantics.VanillaSemantics, index: Index) -> Compiled:

    def peer_mask(peer: Mapping[str, Any], policy_ns: str) -> int:
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            return index.external_in(
                [ipaddress.ip_network(block["cidr"], strict=False)],
                [ipaddress.ip_network(x, strict=False) for x in block.get("except") or ()],
            )
        if "namespaceSelector" in peer:
            ns_sel = peer["namespaceSelector"]
            namespaces = index.cached(("vanilla-ns", _key(ns_sel)), lambda: index.in_namespaces(
                lambda _name, labels: vanilla_semantics.selector_matches(ns_sel, labels)
            ))
        else:
            namespaces = index.ns_pods.get(policy_ns, 0)
        pods = index.cached(("vanilla-pods", _key(peer.get("podSelector"))),
                            lambda: _label_selector(peer.get("podSelector"), index, index.pods))
        return namespaces & pods

    def ports_of(rule: Mapping[str, Any]) -> Ports:
        ports = rule.get("ports")
        if not ports:
            return None
        items = []
        for port in ports:
            protocol = Protocol(port.get("protocol", "TCP"))
            value = port.get("port")
            if value is None:
                items.append(PortItem(protocol))
            elif isinstance(value, str):
                items.append(PortItem(protocol, name=value))
            else:
                items.append(PortItem(protocol, value, port.get("endPort", value)))
        return tuple(items)

    compiled = Compiled([], [])
    for direction, key, peers_key, tiers in (("Ingress", "ingress", "from", compiled.ingress),
                                             ("Egress", "egress", "to", compiled.egress)):
        tier = Tier(0, [], DENY)
        for namespace, policies in evaluator.by_namespace.items():
            for policy in policies:
                if direction not in vanilla_semantics._policy_types(policy):
                    continue
                spec = policy["spec"]
                selected = _label_selector(spec.get("podSelector"), index, index.ns_pods.get(namespace, 0))
                tier.applies |= selected
                for rule in spec.get(key) or ():
                    peers = rule.get(peers_key)
                    mask = index.all if not peers else 0
                    for peer in peers or ():
                        mask |= peer_mask(peer, namespace)
                    tier.rules.append(Rule(selected, mask, ports_of(rule), ALLOW))
        tiers.append(tier)
    return compiled


COMPILERS[vanilla_semantics.VanillaSemantics] = compile_vanilla


# ---- the program (IR)


def _ir_selector(selector: ir.Selector, index: Index) -> int:
    out = index.pods
    for r in selector.requirements:
        if r.operator is ir.Operator.EXISTS:
            out &= index.label_key.get(r.key, 0)
        elif r.operator is ir.Operator.DOES_NOT_EXIST:
            out &= ~index.label_key.get(r.key, 0)
        else:
            listed = 0
            for v in r.values:
                listed |= index.label_value.get((r.key, v), 0)
            out &= listed if r.operator is ir.Operator.IN else ~listed
    return out & index.pods


def _ir_ports(ports: tuple[ir.PortMatch, ...]) -> Ports:
    if not ports:
        return None
    return tuple(
        PortItem(p.protocol, name=p.name) if p.name is not None
        else PortItem(p.protocol) if p.port is None
        else PortItem(p.protocol, p.port, p.end_port or p.port)
        for p in ports
    )


def compile_program(evaluator: program_semantics.ProgramSemantics, index: Index) -> Compiled | None:
    topology = index.topology
    program = evaluator.program

    def subjects(w: ir.Workload) -> int:
        return index.cached(("subject", w), lambda: index.in_namespaces(w.applies_in) & _ir_selector(w.selector, index))

    def peer_mask(peer: ir.Peer) -> int:
        if isinstance(peer, ir.PodPeer):
            return index.cached(("peer", peer), lambda: index.in_namespaces(
                lambda name, labels: ir.namespace_matches(peer.namespaces, name, labels)
            ) & _ir_selector(peer.pods, index))
        return index.cached(("peer", peer), lambda: index.where(
            index.all, lambda e: program_semantics.peer_matches(peer, e, topology)))

    def isolated(iso: ir.Isolation) -> int:
        mask = index.in_namespaces(iso.applies_in)
        return mask if iso.subject is None else mask & _ir_selector(iso.subject.selector, index)

    compiled = Compiled([], [])
    for direction, tiers in ((Direction.INGRESS, compiled.ingress), (Direction.EGRESS, compiled.egress)):
        for _order, name, otherwise in evaluator.tiers:
            tier = Tier(0, [], PASS if otherwise is ir.Action.PASS else DENY)
            for r in evaluator.rules.get((name, direction), ()):
                peers = 0
                for p in r.peers:
                    peers |= peer_mask(p)
                action = {ir.Action.ALLOW: ALLOW, ir.Action.PASS: PASS}.get(r.action, DENY)
                rule = Rule(subjects(r.subject), peers, _ir_ports(r.ports), action)
                tier.rules.append(rule)
                tier.applies |= rule.subjects
            if name is None:
                for iso in program.isolations:
                    if iso.direction is direction:
                        tier.applies |= isolated(iso)
            tiers.append(tier)
    return compiled


COMPILERS[program_semantics.ProgramSemantics] = compile_program


# ---- projectcalico.org/v3


_RANGE = re.compile(r"\d+:\d+")
_PROTOCOLS = {p.value for p in Protocol}


def compile_calico(evaluator: calico_semantics.CalicoSemantics, index: Index) -> Compiled:
    # CalicoSemantics.entity_matches as masks: each part (nets, selector IP sets) computed once per value
    def nets_mask(nets: Sequence[str]) -> int:
        networks = [ipaddress.ip_network(n) for n in nets]
        return index.cached(("calico-nets", tuple(nets)), lambda: index.where(
            index.all, lambda e: calico_semantics._within(calico_semantics.address_of(e), networks)))

    # the labels Felix sees, per endpoint position (None: an outside address)
    felix = index.cached_list("calico-labels", lambda: [evaluator.labels(e) for e in index.endpoints])

    def matching(pred: calico_semantics.Predicate, within: int) -> int:
        out = 0
        for i in _bits(within, index.n):
            labels = felix[i]
            if labels is not None and pred(labels):
                out |= 1 << i
        return out

    def namespaces_mask(ns_text: str) -> int:
        """The pods of the namespaces a rule's namespaceSelector matches (tested once per namespace: its
        pods see the same namespace labels), and every non-pod endpoint (tested one by one)."""
        ns_pred = evaluator.selector(ns_text, "rule-namespaces")

        def compute() -> int:
            out = index.externals
            for members in index.ns_variants.values():
                first = (members & -members).bit_length() - 1
                labels = felix[first]
                if labels is not None and ns_pred(labels):
                    out |= members
            return out

        return index.cached(("calico-namespaces", ns_text), compute)

    def member_mask(pred: calico_semantics.Predicate, namespace: str | None = None, ns_text: str | None = None) -> int:
        """CalicoSemantics.member: the endpoints in the selector's IP set - its own matches, and the
        addresses inside a matching GlobalNetworkSet. namespace: the selector is confined to it (a
        namespaced policy's rule without namespaceSelector); ns_text: to the namespaces that
        namespaceSelector matches - only those pods are tested."""
        def compute() -> int:
            if namespace is not None:
                within = index.ns_pods.get(namespace, 0)
            elif ns_text:
                within = namespaces_mask(ns_text)
            else:
                within = index.all
            mask = matching(pred, within)
            for labels, nets in evaluator.network_sets:
                if pred(labels):
                    mask |= nets_mask([str(n) for n in nets])
            return mask

        return index.cached(("calico-member", id(pred), namespace, ns_text), compute)

    def entity_mask(entity: Mapping[str, Any], policy: Mapping[str, Any]) -> int:
        if not entity:
            return index.all
        mask = index.all
        if "nets" in entity:
            mask &= nets_mask(entity["nets"])
        if "notNets" in entity:
            mask &= ~nets_mask(entity["notNets"])
        positive = evaluator.rule_selector(entity, policy)
        if positive is not None:
            ns_text = entity.get("namespaceSelector")
            confined = policy["kind"] == "NetworkPolicy" and not ns_text
            mask &= member_mask(positive, policy["metadata"]["namespace"] if confined else None, ns_text or None)
        if "notSelector" in entity:
            mask &= ~member_mask(evaluator.selector(entity["notSelector"]))
        return mask & index.all

    # workload endpoints and host endpoints have sides (Calico policy applies to both)
    sided = index.cached("calico-sided", lambda: index.where(index.all, calico_semantics.has_side))

    def applies(policy: Mapping[str, Any], direction: str) -> int:
        # CalicoSemantics.applies: the policy's types, then its subject selector over the sided endpoints
        spec = policy.get("spec") or {}
        types = spec.get("types") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
        if direction not in types:
            return 0
        pred = evaluator.subject(policy)
        within = sided
        if policy["kind"] == "NetworkPolicy":  # a namespaced policy applies to its namespace's pods only
            within &= index.ns_pods.get(policy["metadata"]["namespace"], 0)
        return index.cached(("calico-subject", id(pred), within == sided), lambda: matching(pred, within))

    compiled = Compiled([], [], sided)
    for direction, tiers in (("Ingress", compiled.ingress), ("Egress", compiled.egress)):
        key = direction.lower()
        for name in evaluator.tiers:
            default = evaluator.tier_order[name][1]
            tier = Tier(0, [], ALLOW if default == "Allow" else PASS if default == "Pass" else DENY)
            for _, policy in evaluator.policies.get(name, ()):
                selected = applies(policy, direction)
                tier.applies |= selected
                if not selected:
                    continue
                for rule in policy["spec"].get(key) or ():
                    protocol = rule.get("protocol")
                    source = entity_mask(rule.get("source") or {}, policy)
                    destination = entity_mask(rule.get("destination") or {}, policy)
                    own, other = (source, destination) if direction == "Egress" else (destination, source)
                    ports: Ports = None
                    if protocol is not None:
                        if protocol not in _PROTOCOLS:
                            continue  # a protocol no probe has: never matches
                        proto = Protocol(protocol)
                        ports = (PortItem(proto),)
                        dports = (rule.get("destination") or {}).get("ports")
                        if dports is not None:
                            items = []
                            for p in dports:
                                if isinstance(p, int):
                                    items.append(PortItem(proto, p, p))
                                elif _RANGE.fullmatch(p):
                                    lo, hi = map(int, p.split(":"))
                                    items.append(PortItem(proto, lo, hi))
                                else:
                                    items.append(PortItem(proto, name=p))
                            ports = tuple(items)
                    elif "ports" in (rule.get("destination") or {}):
                        continue  # ports without a protocol never match (Calico requires one)
                    action = {"Allow": ALLOW, "Pass": PASS}.get(rule.get("action", ""), DENY)
                    tier.rules.append(Rule(selected & own, other, ports, action))
            tiers.append(tier)
    return compiled


COMPILERS[calico_semantics.CalicoSemantics] = compile_calico


# ---- cilium.io/v2


def compile_cilium(evaluator: cilium_semantics.CiliumSemantics, index: Index) -> Compiled | None:
    """Deny rules win, then any allow; what neither decides is denied for a pod in default-deny and
    allowed otherwise: one tier for the default-deny pods (otherwise deny), one for the rest. Plans are
    per pod: when a policy applies to a non-pod endpoint (a clusterwide policy selecting Cilium's health
    or Ingress endpoint, a host policy), the matrix is asked of decide() instead."""
    if any(isinstance(e, External) and evaluator.has_side(e) for _, e in index.each(index.externals)):
        return None

    # CiliumSemantics.peer_matches as masks: each endpoint selector, CIDR set, entity and FQDN list is
    # matched against every endpoint once, over the identity labels computed once per endpoint
    identity = index.cached_list("cilium-labels", lambda: [evaluator.labels(e) for e in index.endpoints])

    def selector_mask(selector: Mapping[str, Any]) -> int:
        def compute() -> int:
            out = 0
            for i, labels in enumerate(identity):
                if vanilla_semantics.selector_matches(selector, labels):
                    out |= 1 << i
            return out

        return index.cached(("cilium-selector", _key(selector)), compute)

    def peer_mask(rule: Mapping[str, Any], policy: Mapping[str, Any], to: bool) -> int:
        kinds = [k for k in rule if k != "toPorts" and rule[k]]  # [] and null read as absent
        if not kinds:
            return index.all if rule.get("toPorts") else 0  # L4-only rules match every peer; {} none
        mask = 0
        for kind in kinds:
            values = rule[kind]
            if kind == ("toEndpoints" if to else "fromEndpoints"):
                for selector in values:
                    mask |= selector_mask(evaluator.peer_selector(selector, policy))
                continue
            mask |= other_mask({kind: values}, policy, to)
        return mask

    def other_mask(part: Mapping[str, Any], policy: Mapping[str, Any], to: bool) -> int:
        """CIDRs, entities, FQDNs (the same in any policy)."""
        within = index.all if any(k.endswith("Entities") for k in part) else index.externals
        return index.cached(("cilium-peer", _key(part), to), lambda: index.where(
            within, lambda e: evaluator.peer_matches(part, policy, e, to)))

    def ports_of(rule: Mapping[str, Any]) -> Ports:
        if not rule.get("toPorts"):
            return None
        items = []
        for entry in rule["toPorts"]:
            for p in entry.get("ports") or ():
                text = str(p.get("protocol") or "ANY").upper()  # as CiliumSemantics.ports_match
                if text != "ANY" and text not in _PROTOCOLS:
                    continue  # no probe has it
                protocol = None if text == "ANY" else Protocol(text)
                port = str(p.get("port", "0")).lower()
                if port == "0":
                    items.append(PortItem(protocol))
                elif port.isdigit() and port.isascii():
                    items.append(PortItem(protocol, int(port), int(p.get("endPort", port))))
                else:
                    items.append(PortItem(protocol, name=port))
        return tuple(items)

    def selected_by(policy: Mapping[str, Any]) -> int:
        spec = policy["spec"]
        if "nodeSelector" in spec and "endpointSelector" not in spec:
            return 0  # host policies apply to the host identity only (no pod)
        mask = selector_mask(cilium_semantics._normalise(spec.get("endpointSelector"))) & index.pods
        if policy["kind"] == "CiliumNetworkPolicy":
            mask &= index.ns_pods.get(policy["metadata"]["namespace"], 0)
        return mask

    selecting = [(policy, selected_by(policy)) for policy in evaluator.policies]
    compiled = Compiled([], [])
    for direction, tiers in (("ingress", compiled.ingress), ("egress", compiled.egress)):
        to = direction == "egress"
        selected = default_deny = 0
        denies: list[Rule] = []
        allows: list[Rule] = []
        for policy, mask in selecting:
            if not mask:
                continue
            spec = policy["spec"]
            selected |= mask
            has_rules = bool(spec.get(direction)) or bool(spec.get(direction + "Deny"))
            explicit = (spec.get("enableDefaultDeny") or {}).get(direction)
            if explicit is True or (has_rules and explicit is not False):
                default_deny |= mask
            for rule in spec.get(direction + "Deny") or ():
                denies.append(Rule(mask, peer_mask(rule, policy, to), ports_of(rule), DENY))
            for rule in spec.get(direction) or ():
                allows.append(Rule(mask, peer_mask(rule, policy, to), ports_of(rule), ALLOW))
        rules = denies + allows
        tiers.append(Tier(selected & default_deny, rules, DENY))
        tiers.append(Tier(selected & ~default_deny, rules, ALLOW))
    return compiled


COMPILERS[cilium_semantics.CiliumSemantics] = compile_cilium
