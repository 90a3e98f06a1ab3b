"""Sets of IP networks and of ports with membership in O(log n).

Rule: an address is tested against a list of networks (a CIDR's `except` blocks, Calico `nets`) by
bisecting sorted, merged integer intervals, never by walking the list: an evaluator tests every
address class against every CIDR rule, and the number of address classes grows with the number of
`except` blocks, so a linear walk makes `explain` and every proof quadratic in the excepts.
Lists that come from emitted YAML are parsed once per list object (`net_set_of`), not once per test.
Port lists likewise (`PortSet`): a statement may list thousands of ports, and every port class of the
class topology is tested against it.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Parsed sets of lists seen in emitted objects, by identity (the list is kept alive in the entry, so
# its id is not reused while the entry exists); cleared when it grows past this many entries.
_CACHE_LIMIT = 4096
_cache: dict[int, tuple[object, Any]] = {}


def _merged(items: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Inclusive ranges sorted and merged where they overlap or touch: (starts, ends)."""
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in sorted(items):
        if ends and lo <= ends[-1] + 1:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


class NetSet:
    """A union of networks: per IP version, sorted disjoint [start, end] integer intervals."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, nets: Iterable[Network]) -> None:
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for n in nets:
            spans[n.version].append((int(n.network_address), int(n.broadcast_address)))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, items in spans.items():
            self._starts[version], self._ends[version] = _merged(items)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        starts = self._starts[address.version]
        value = int(address)
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= self._ends[address.version][i]

    def __bool__(self) -> bool:
        return any(self._starts.values())


class PortSet:
    """A union of port ranges per protocol. A protocol of None means every protocol; a range of None
    every port."""

    __slots__ = ("_ends", "_starts", "_whole")

    def __init__(self, spans: Iterable[tuple[object, int | None, int | None]]) -> None:
        self._whole: set[object] = set()
        ranges: dict[object, list[tuple[int, int]]] = {}
        for protocol, lo, hi in spans:
            if lo is None:
                self._whole.add(protocol)
            else:
                ranges.setdefault(protocol, []).append((lo, lo if hi is None else hi))
        self._starts: dict[object, list[int]] = {}
        self._ends: dict[object, list[int]] = {}
        for protocol, items in ranges.items():
            self._starts[protocol], self._ends[protocol] = _merged(items)

    def contains(self, protocol: object, port: int) -> bool:
        if None in self._whole or protocol in self._whole:
            return True
        return self._in(protocol, port) or self._in(None, port)

    def _in(self, protocol: object, port: int) -> bool:
        starts = self._starts.get(protocol)
        if not starts:
            return False
        i = bisect.bisect_right(starts, port) - 1
        return i >= 0 and port <= self._ends[protocol][i]


def by_identity(key: object, make: Any) -> Any:
    """make(), computed once per live object `key` (a list or tuple that is hashed slowly or not at all)."""
    return _cached(key, make)


def net_set(nets: Sequence[Network]) -> NetSet:
    """The set of parsed networks (a tuple of an IR peer), cached by the sequence's identity."""
    made: NetSet = _cached(nets, lambda: NetSet(nets))
    return made


def net_set_of(texts: Sequence[Any] | None) -> NetSet:
    """The set of CIDR strings of an emitted object (`except`, `nets`), parsed once per list."""
    if not texts:
        return _EMPTY
    made: NetSet = _cached(texts, lambda: NetSet(ipaddress.ip_network(str(t), strict=False) for t in texts))
    return made


def _cached(key: object, make: Any) -> Any:
    hit = _cache.get(id(key))
    if hit is not None and hit[0] is key:
        return hit[1]
    made = make()
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[id(key)] = (key, made)
    return made


_EMPTY = NetSet(())
