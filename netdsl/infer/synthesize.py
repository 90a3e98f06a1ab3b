"""Observations -> a `.seg` syntax tree (printed by netdsl.printer, the one printer).

Rule: the proposal is an allow-list of what was observed and nothing more, except DNS.
- Per namespace with observed workloads: `service NAME = SELECTOR` for each workload (model.py says
  how workloads are found), `isolate`, and `allow dns for` every workload of the namespace - DNS is
  always kept, whether or not a lookup was seen.
- One flow statement per observed (client, server, port) whose traffic was needed (forwarded, or AUDIT:
  only an audit-mode policy would drop it; a connection only ever DROPPED or in ERROR gets none).
  Pod to pod: `server accepts client on PORT` in the server's namespace (netdsl derives the client's
  egress half); to an external: `client connects to PEER on PORT`; from one: `server accepts PEER`.
- Externals: `fqdn NAME` where DNS names are known and the target is cilium; else the addresses as a
  named `cidrs` set per destination (its DNS name, or the address); host, kube-apiserver,
  remote-node (and world without an address) as `entity` on cilium, their address otherwise.
- System namespaces (kube-system, ...) are never isolated or restricted: their workloads are declared
  and reached with the other end's statement (`client connects to kube-system/x`, `server accepts
  kube-system/x`).
- Above each statement a comment says how many flows support it and with which verdicts.
With `against` (model.Blocked), only what the program lacks: no isolate, the services the new
statements need (a service of the program with the same selector is reused), and each missing flow
written on the side that blocks it - `accepts` where the server's ingress is restricted, `connects to`
where only the client's egress is - so no statement restricts a pod the program left open.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netdsl import ir, parse, printer
from netdsl.diagnostics import printable
from netdsl.infer.model import External, Observation, Observed, Workload, dns_label, is_system

CILIUM = "cilium"
_ENTITY_KINDS = ("host", "kube-apiserver", "remote-node", "health", "ingress")


@dataclass
class Item:
    notes: tuple[str, ...]
    statement: parse.NamespaceStmt | parse.TopStmt


@dataclass
class Proposal:
    header: list[str] = field(default_factory=list)
    cidrs: list[Item] = field(default_factory=list)
    namespaces: dict[str, list[Item]] = field(default_factory=dict)
    unexpressed: list[str] = field(default_factory=list)
    unwritten: set[tuple[str, str, int, str]] = field(default_factory=set)  # Observation.key of those

    def statements(self) -> list[parse.TopStmt]:
        """The syntax tree (comments aside)."""
        tops: list[parse.TopStmt] = [i.statement for i in self.cidrs if not isinstance(
            i.statement, (parse.IsolateStmt, parse.DnsStmt, parse.ServiceDecl, parse.GroupDecl, parse.FlowStmt))]
        for ns in sorted(self.namespaces):
            body = tuple(i.statement for i in self.namespaces[ns])
            tops.append(parse.NamespaceBlock(_w(ns), (), body, printer.SYNTHETIC))  # type: ignore[arg-type]
        return tops

    @property
    def empty(self) -> bool:
        return not self.cidrs and not any(self.namespaces.values())


def _w(text: str) -> parse.Word:
    return printer.word(text)


def _selector(w: Workload) -> parse.Selector:
    reqs = tuple(
        parse.Requirement(_w(k), "!exists", (), printer.SYNTHETIC) if v is None
        else parse.Requirement(_w(k), "=", (_w(v),), printer.SYNTHETIC)
        for k, v in w.selector)
    return parse.Selector(reqs, printer.SYNTHETIC)


def port_word(port: int, protocol: str) -> str:
    return str(port) if protocol == "TCP" else f"{port}/{protocol.lower()}"


def verdict_note(o: Observation) -> str:
    n = o.flows
    parts = [f"{n} flow{'s' * (n != 1)} observed"]
    v = o.verdicts
    if v.get("audit"):
        parts.append(f"{v['audit']} AUDIT: an audit-mode policy would drop these")
    if v.get("denied"):
        parts.append(f"{v['denied']} DROPPED")
    if v.get("error"):
        parts.append(f"{v['error']} ERROR")
    if len(parts) > 1 and v.get("allowed"):
        parts.insert(1, f"{v['allowed']} forwarded")
    return ", ".join(parts)


class Synthesis:
    def __init__(self, observed: Observed, target: str, taken: Mapping[str, set[str]] | None = None,
                 reuse: Mapping[Workload, str] | None = None) -> None:
        self.observed = observed
        self.cilium = target == CILIUM
        self.proposal = Proposal()
        # names the program already declares per namespace ("" = cidr sets): never declared again
        self.taken = {k: set(v) for k, v in (taken or {}).items()}
        self.reuse = dict(reuse or {})
        self.names: dict[Workload, str] = {}
        self.declared: dict[str, list[Item]] = {}
        self.sets: dict[str, list[str]] = {}  # set name -> CIDRs
        self.set_of: dict[tuple[str, ...], str] = {}
        self.set_notes: dict[str, str] = {}
        # one statement per written (subject, direction, peers, port): observations that read the same
        # (two addresses of one DNS name) support one statement
        self.flows: dict[tuple[str, parse.FlowStmt], tuple[Observation, str]] = {}
        self.unwritten: set[tuple[str, str, int, str]] = set()

    # ---- names
    def name(self, w: Workload) -> str:
        """The service name for a workload, declaring it on first use."""
        if w in self.reuse:
            return self.reuse[w]
        if w not in self.names:
            taken = self.taken.setdefault(w.namespace, set())
            name, n = w.name, 1
            while name in taken:
                n += 1
                name = f"{w.name[:58]}-{n}"
            taken.add(name)
            self.names[w] = name
            self.declared.setdefault(w.namespace, []).append(Item(
                (), parse.ServiceDecl(_w(name), _selector(w), printer.SYNTHETIC)))
        return self.names[w]

    def ref(self, w: Workload, here: str) -> parse.Peer:
        name = self.name(w)
        return parse.RefPeer(_w(name if w.namespace == here else f"{w.namespace}/{name}"), printer.SYNTHETIC)

    def external(self, e: External) -> tuple[list[parse.Peer], str] | None:
        """Peers for an external and a note on how it is written; None: cannot be written."""
        if self.cilium and e.kind == "world" and e.names:
            return [parse.FqdnPeer(_w(n), printer.SYNTHETIC) for n in e.names], ""
        if self.cilium and (e.kind in _ENTITY_KINDS or (e.kind == "world" and not e.address)):
            return [parse.EntityPeer(_w(e.kind), printer.SYNTHETIC)], ""
        if self.cilium and e.kind not in ("world", *_ENTITY_KINDS) and e.kind in ir.ENTITIES:
            return [parse.EntityPeer(_w(e.kind), printer.SYNTHETIC)], ""
        if not e.address:
            return None
        address = ipaddress.ip_address(e.address)
        cidr = f"{address}/{address.max_prefixlen}"
        key = e.names or (cidr,)
        if key not in self.set_of:
            base = dns_label(f"ext-{e.names[0] if e.names else e.address}", "ext")
            name, n = base, 1
            while name in self.taken.setdefault("", set()):
                n += 1
                name = f"{base[:58]}-{n}"
            self.taken[""].add(name)
            self.set_of[key] = name
            self.sets[name] = []
            self.set_notes[name] = (f"{e.kind} addresses of {', '.join(e.names)}" if e.names
                                    else f"{e.kind} address {e.address}")
        name = self.set_of[key]
        if cidr not in self.sets[name]:
            self.sets[name].append(cidr)
        note = "" if e.kind == "world" else f"the {e.kind} identity, by its address"
        return [parse.RefPeer(_w(name), printer.SYNTHETIC)], note

    # ---- statements
    def flow(self, o: Observation, side: str | None = None) -> None:
        """side: `ingress` (write on the server, `accepts`) or `egress` (`connects to`); None: the default."""
        client, server = o.client, o.server
        ports = (_w(port_word(o.port, o.protocol)),)
        if side is None:
            if isinstance(server, Workload) and not is_system(server.namespace):
                side = "ingress"
            elif isinstance(client, Workload) and not is_system(client.namespace):
                side = "egress"
            else:
                self.proposal.unexpressed.append(f"{client} -> {server} on {port_word(o.port, o.protocol)}: "
                                                 "both ends are system namespaces or outside the cluster")
                self.unwritten.add(o.key)
                return
        subject, peer_party = (server, client) if side == "ingress" else (client, server)
        assert isinstance(subject, Workload)
        how = ""
        if isinstance(peer_party, Workload):
            peers: list[parse.Peer] = [self.ref(peer_party, subject.namespace)]
        else:
            got = self.external(peer_party)
            if got is None:
                self.proposal.unexpressed.append(
                    f"{client} -> {server} on {port_word(o.port, o.protocol)}: the {peer_party.kind} identity "
                    f"without an address; on cilium: `entity {peer_party.kind}`")
                self.unwritten.add(o.key)
                return
            peers, how = got
        stmt = parse.FlowStmt(side, (_w(self.name(subject)),), tuple(peers), ports,  # type: ignore[arg-type]
                              printer.SYNTHETIC)
        key = (subject.namespace, stmt)
        if key in self.flows:
            before = self.flows[key][0]
            merged = Observation(before.client, before.server, before.port, before.protocol, dict(before.verdicts))
            for verdict, n in o.verdicts.items():
                merged.verdicts[verdict] = merged.verdicts.get(verdict, 0) + n
            self.flows[key] = (merged, how)
        else:
            self.flows[key] = (o, how)

    def finish(self, isolate: Iterable[str], dns: Mapping[str, Sequence[Workload]],
               dns_counts: Mapping[str, int]) -> Proposal:
        """Assemble: per namespace services, isolate, allow dns, then the flows (as added)."""
        for (ns, stmt), (o, how) in self.flows.items():
            note = verdict_note(o) + (f"; {how}" if how else "")
            self.proposal.namespaces.setdefault(ns, []).append(Item((note,), stmt))
        out: dict[str, list[Item]] = {}
        for ns in sorted({*self.declared, *self.proposal.namespaces, *isolate, *dns}):
            items = sorted(self.declared.get(ns, []), key=lambda i: i.statement.name.text)  # type: ignore[union-attr]
            if ns in isolate:
                items.append(Item(("an allow-list: only what follows, and DNS, is allowed",),
                                  parse.IsolateStmt(None, printer.SYNTHETIC)))
            if dns.get(ns):
                names = sorted({self.name(w) for w in dns[ns]})
                seen = dns_counts.get(ns, 0)
                why = f"{seen} DNS lookup flow{'s' * (seen != 1)} observed" if seen else "no DNS lookup observed"
                items.append(Item((f"DNS stays allowed: {why}",), parse.DnsStmt(
                    tuple(_w(n) for n in names), printer.SYNTHETIC)))
            flows = sorted(self.proposal.namespaces.get(ns, []), key=lambda i: _flow_key(i.statement))
            items += flows
            # services declared while writing DNS go before the rest
            extra = [i for i in self.declared.get(ns, []) if i not in items]
            out[ns] = sorted(extra, key=lambda i: i.statement.name.text) + items  # type: ignore[union-attr]
        self.proposal.namespaces = out
        self.proposal.unwritten = self.unwritten
        for name in sorted(self.sets):
            items_ = tuple(parse.CidrItem(_w(c), (), printer.SYNTHETIC) for c in sorted(
                self.sets[name], key=lambda c: (ipaddress.ip_network(c).version, int(ipaddress.ip_network(c)[0]))))
            self.proposal.cidrs.append(Item((self.set_notes[name],), parse.CidrsDecl(
                _w(name), items_, printer.SYNTHETIC)))
        return self.proposal


def _flow_key(stmt: object) -> tuple[str, ...]:
    if not isinstance(stmt, parse.FlowStmt):
        return ("",)
    subjects = stmt.subjects if isinstance(stmt.subjects, tuple) else ()
    peers = [getattr(getattr(p, "name", None), "text", "") or getattr(getattr(p, "item", None), "cidr", _w("")).text
             for p in stmt.peers]
    port = stmt.ports[0].text if stmt.ports else ""
    number, _, proto = port.partition("/")
    return (",".join(s.text for s in subjects), stmt.direction, ",".join(peers), proto, number.zfill(5))


def propose(observed: Observed, target: str) -> Proposal:
    """The allow-list for everything observed (see the module rule)."""
    s = Synthesis(observed, target)
    needed = [o for o in observed.observations if o.needed]
    dns_counts: dict[str, int] = {}
    for o in observed.observations:
        if o.dns and isinstance(o.client, Workload):
            dns_counts[o.client.namespace] = dns_counts.get(o.client.namespace, 0) + o.flows
    for o in needed:
        if not o.dns:
            s.flow(o)
    isolate = sorted({w.namespace for w in observed.workloads if not is_system(w.namespace)})
    dns = {ns: [w for w in observed.workloads if w.namespace == ns] for ns in isolate}
    for w in observed.workloads:  # every workload is declared, also one seen only in DNS lookups
        s.name(w)
    proposal = s.finish(isolate, dns, dns_counts)
    proposal.header = _header(observed, target)
    dropped = [o for o in observed.observations if not o.needed]
    if dropped:
        proposal.header.append(f"not allowed, observed but never forwarded: {len(dropped)}")
        proposal.header += [f"  {o.client} -> {o.server} on {port_word(o.port, o.protocol)}: {verdict_note(o)}"
                            for o in dropped[:20]]
        if len(dropped) > 20:
            proposal.header.append(f"  ... and {len(dropped) - 20} more")
    return proposal


def _header(observed: Observed, target: str) -> list[str]:
    flows = len(observed.flows)
    lines = [f"Proposed by `netdsl infer` from {flows} observed flow{'s' * (flows != 1)} "
             f"- {len(observed.observations)} distinct connections - for target {target}.",
             "Review before applying: it allows what was observed, and DNS, and nothing else."]
    if observed.skipped:
        lines.append("skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(observed.skipped.items())))
    return lines


def _comment(text: str, indent: str) -> str:
    """One comment line: what came from the flows is escaped (a newline in a label would end the comment)."""
    # no parentheses: a comment line holding `)` after a selector is misread by the parser (a bug there)
    text = printable(text, keep="").replace("(", "[").replace(")", "]")
    return f"{indent}# {text}".rstrip()


def render(proposal: Proposal) -> str:
    """The proposal as `.seg` text: the printer's layout, with the notes as comment lines above."""
    out: list[str] = [_comment(line, "") for line in proposal.header]
    for item in proposal.cidrs:
        out += ["", *(_comment(n, "") for n in item.notes)]
        out += printer.print_statements([item.statement]).rstrip("\n").split("\n")  # type: ignore[list-item]
    for ns, items in proposal.namespaces.items():
        if not items:
            continue
        out.append("")
        opening = closing = ""
        body: list[str] = []
        for item in items:
            block = parse.NamespaceBlock(_w(ns), (), (item.statement,), printer.SYNTHETIC)  # type: ignore[arg-type]
            lines = printer.print_statements([block]).rstrip("\n").split("\n")
            opening, closing = lines[0], lines[-1]
            inner = lines[1:-1]
            indent = inner[0][: len(inner[0]) - len(inner[0].lstrip())] if inner else "  "
            body += [_comment(n, indent) for n in item.notes] + inner
        out += [opening, *body, closing]
    if proposal.unexpressed:
        out += ["", "# not written, no statement can say it for this target:"]
        out += [_comment(f"  {u}", "") for u in proposal.unexpressed]
    return "\n".join(out).lstrip("\n") + "\n"
