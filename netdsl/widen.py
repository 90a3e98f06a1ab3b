"""--widen: the opt-in, loud lowering of what a target cannot express to a broader rule it can.

* an `fqdn` peer becomes every external address (0.0.0.0/0 and ::/0) on the statement's ports;
* HTTP (L7) rules are dropped, leaving their TCP ports open to the statement's peers.

Without --widen nothing is ever widened (the target refuses the statement). With it, every widened
statement gets one `widened` warning and its policy a `netdsl.dev/widened` annotation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from netdsl import ir
from netdsl.backends import Backend, Capability
from netdsl.diagnostics import Diagnostic, warning
from netdsl.source import Span

EVERYWHERE_OUTSIDE = (
    ir.CidrPeer(ipaddress.ip_network("0.0.0.0/0"), label="0.0.0.0/0"),
    ir.CidrPeer(ipaddress.ip_network("::/0"), label="::/0"),
)


def widen(program: ir.Program, backend: Backend) -> tuple[ir.Program, list[Diagnostic]]:
    can_fqdn = Capability.FQDN in backend.capabilities
    can_http = Capability.L7_HTTP in backend.capabilities
    rules: list[ir.Rule] = []
    notes: dict[Span, str] = {}
    for r in program.rules:
        if r.action is not ir.Action.ALLOW:  # never widen a deny: it would deny more than written
            rules.append(r)
            continue
        what = []
        peers: list[ir.Peer] = list(r.peers)
        if not can_fqdn and any(isinstance(p, ir.FqdnPeer) for p in peers):
            names = ", ".join(p.name for p in peers if isinstance(p, ir.FqdnPeer))
            what.append(f"fqdn {names} -> every external address on the statement's ports")
            peers = [p for p in peers if not isinstance(p, ir.FqdnPeer)]
            peers += EVERYWHERE_OUTSIDE
        http = r.http
        if not can_http and http:
            what.append("HTTP rules -> their TCP ports")
            http = ()
        if what:
            text = "; ".join(what)
            notes[r.span] = text
            r = replace(r, peers=tuple(dict.fromkeys(peers)), http=http, widened=text)
        rules.append(r)
    diags = [
        warning("widened", f"widened for target `{backend.name}`: {text}", span,
                "the target cannot express this exactly; this rule allows more than the statement says")
        for span, text in notes.items()
    ]
    return replace(program, rules=tuple(rules)), diags
