"""Values: labels, selectors, CIDRs, ports, HTTP rules, DNS names - each checked with a precise message.

Rule: a value is checked where it is written, against what Kubernetes and the targets accept (label
syntax, DNS-1123 names, port ranges 1-65535, strict CIDRs with excepts strictly inside, RE2 regular
expressions); a bad value is an error at its span with a hint, and lowering goes on without it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from netdsl import ir, parse
from netdsl.ir import PortMatch, Protocol, Selector
from netdsl.lower.state import PROTOCOLS, LoweringState
from netdsl.re2syntax import re2_problem
from netdsl.source import Span

# ------------------------------------------------------------------------------------ syntax rules

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PORT_WORD = re.compile(r"^(?P<what>[^/]+)(/(?P<proto>[A-Za-z]+))?$")




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



class Values(LoweringState):
    def valid_label(self, key: parse.Word, value: parse.Word | None) -> bool:
        ok = True
        if (why := check_label_key(key.text)) is not None:
            self.error("invalid-label", f"invalid label key {key.text!r}: {why}", key.span)
            ok = False
        if value is not None and (why := check_label_value(value.text)) is not None:
            self.error("invalid-label", f"invalid label value {value.text!r}: {why}", value.span)
            ok = False
        return ok

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
                if (problem := re2_problem(word.text)) is not None:
                    self.error("invalid-http", f"invalid regular expression {word.text!r}: {problem}", word.span,
                               "Cilium and Envoy read RE2 regular expressions (github.com/google/re2/wiki/Syntax)")
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


def _header(text: str) -> str:
    """`Name:value` as `Name: value`: Cilium splits a header rule at its first space."""
    name, colon, value = text.partition(":")
    return f"{name}: {value.strip()}" if colon else name


_PORT_HINT = "write a number (8080), a range (8000-9000), a port name (http), or a protocol (udp); " \
    "add /udp or /sctp for other protocols than TCP (53/udp)"


def looks_like_cidr(text: str) -> bool:
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

