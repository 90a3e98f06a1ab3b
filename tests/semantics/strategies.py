"""Hypothesis strategies: random but valid .seg programs, and topologies to evaluate them over.

Rule: the generators reach every construct of the language a target can express, so a property test
over them covers the whole language, not a friendly corner of it:
- selectors with several requirements and every operator (`k=v`, `k!=v`, `k in (..)`, `k notin (..)`,
  `k`, `!k`), for services, `pods[...]` peers and `namespaces[...]` peers; `pods[]`;
- every peer form (local and `ns/service` references, `pods[...]` in this namespace, in a namespace, in
  namespaces by labels, in all namespaces, `all pods [in ...]`, namespaces, `all namespaces`, CIDRs
  with one or several excepts, IPv6, `cidrs` sets, `anywhere`), namespaces the program never declares;
- numeric ports, ranges (probe their boundaries with `boundary_probes`), protocols alone, named ports
  (`on http`, `on metrics/udp`) that pods number differently (`NAMED_PORTS`);
- `isolate`, `isolate ingress|egress`, and the same `for` services, a group or `all pods`, in namespaces
  and cluster blocks (with the namespace's own `isolate` too: redundant ones);
- `expect` statements that hold by the "flows work end to end" rule (allow-only programs);
- programs split across several files (`split_files`): a namespace declared in one file is continued
  in another, `cidrs` sets are used in a file that does not declare them.
Ordered programs add tiers, deny and pass; cluster blocks use only peers with an explicit namespace
scope, and `pass` appears only inside tiers (outside, both are errors).
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from netdsl.ir import Protocol
from netdsl.semantics.model import Pod

NAMESPACES = ["prod", "web", "data"]
UNDECLARED = "monitoring"  # a namespace peers name but no program declares
APPS = ["api", "db", "ui", "job"]
PORT_WORDS = ["80", "443", "53/udp", "8000-8100", "udp", "http", "5432", "9000-9001/sctp", "metrics/udp",
              "8080-8081"]
# The port ranges above and the single ports: boundary_probes probes lo-1, lo, hi, hi+1 of each.
RANGES: tuple[tuple[Protocol, int, int], ...] = (
    (Protocol.TCP, 8000, 8100), (Protocol.SCTP, 9000, 9001), (Protocol.TCP, 8080, 8081),
    (Protocol.TCP, 80, 80), (Protocol.TCP, 443, 443), (Protocol.UDP, 53, 53), (Protocol.TCP, 5432, 5432),
)
# Named container ports pods may have: the same name bound to other numbers and protocols on other pods
# (numbers a probe set with boundary_probes() and PROBES of test_equivalence asks about).
NAMED_PORTS: tuple[dict[str, tuple[int, Protocol]], ...] = (
    {}, {"http": (8080, Protocol.TCP)}, {"http": (8050, Protocol.TCP), "metrics": (7, Protocol.UDP)},
    {"http": (8000, Protocol.TCP)}, {"metrics": (53, Protocol.UDP)}, {"http": (80, Protocol.UDP)},
)
CIDRS = [
    "cidr 192.0.2.0/24",
    "cidr 10.0.0.0/8 except (10.1.0.0/16)",
    "cidr 10.0.0.0/8 except (10.1.0.0/16, 10.2.0.0/16, 10.3.4.0/24)",
    "cidr 2001:db8::/32",
    "cidr 2001:db8::/32 except (2001:db8:1::/48, 2001:db8:2::/48)",
]
CIDR_SETS = {
    "office": "cidrs office = 203.0.113.0/24 except (203.0.113.100/32, 203.0.113.128/26), 2001:db8:abcd::/48",
    "partners": "cidrs partners = 198.51.100.0/25 except 198.51.100.64/26",
}
# A comment line marking where the next file of a program starts (see split_files); a single-file reader
# sees only a comment.
FILE_BREAK = "# netdsl-test: next file"

_VALUES = {"app": APPS, "tier": ["x", "y", "z"], "legacy": ["true"], "role": ["a", "b"]}
_NS_VALUES = {"env": ["a", "b"], "team": ["x", "y"]}


def split_files(text: str) -> list[str]:
    """The files of a generated program (one when it has no FILE_BREAK)."""
    return [part.strip("\n") + "\n" for part in text.split(FILE_BREAK + "\n")]


def boundary_probes() -> list[tuple[Protocol, int]]:
    """Each end of every port and range the generators use, and the ports just outside; plus the
    numbers of NAMED_PORTS and a port nothing mentions per protocol."""
    out: dict[tuple[Protocol, int], None] = {}
    for proto, lo, hi in RANGES:
        for port in (lo - 1, lo, hi, hi + 1):
            out[(proto, port)] = None
    for ports in NAMED_PORTS:
        for number, proto in ports.values():
            out[(proto, number)] = None
    out.update({(Protocol.TCP, 9999): None, (Protocol.UDP, 9999): None, (Protocol.SCTP, 9999): None,
                (Protocol.TCP, 53): None})
    return sorted(out, key=lambda p: (p[1], p[0].value))


@st.composite
def _requirement(draw: st.DrawFn, key: str, values: Sequence[str]) -> str:
    op = draw(st.sampled_from(["=", "!=", "in", "notin", "exists", "!exists"]))
    if op in ("=", "!="):
        return f"{key}{op}{draw(st.sampled_from(values))}"
    if op in ("in", "notin"):
        chosen = draw(st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True))
        return f"{key} {op} ({', '.join(chosen)})"
    return key if op == "exists" else f"!{key}"


@st.composite
def selectors(draw: st.DrawFn) -> str:
    """A pod selector: one to three requirements on different keys (so it is always satisfiable)."""
    keys = draw(st.lists(st.sampled_from(sorted(_VALUES)), min_size=1, max_size=3, unique=True))
    return ", ".join(draw(_requirement(k, _VALUES[k])) for k in keys)


@st.composite
def namespace_selectors(draw: st.DrawFn) -> str:
    keys = draw(st.lists(st.sampled_from(sorted(_NS_VALUES)), min_size=1, max_size=2, unique=True))
    return ", ".join(draw(_requirement(k, _NS_VALUES[k])) for k in keys)


@st.composite
def _pods(draw: st.DrawFn) -> str:
    return f"pods[{draw(st.one_of(st.just(''), selectors()))}]"


@st.composite
def cluster_peers(draw: st.DrawFn) -> str:
    """A peer with an explicit namespace scope: what a `cluster { }` block may name."""
    kind = draw(st.sampled_from(["pods_in_ns", "pods_in_all", "namespace", "namespaces", "all", "cidr",
                                 "anywhere"]))
    ns = draw(st.sampled_from([*NAMESPACES, UNDECLARED]))
    if kind == "pods_in_ns":
        return f"{draw(_pods())} in namespace {ns}"
    if kind == "pods_in_all":
        return f"{draw(_pods())} in all namespaces"
    if kind == "namespace":
        return f"namespace {ns}"
    if kind == "namespaces":
        return f"namespaces[{draw(namespace_selectors())}]"
    if kind == "all":
        return "all namespaces"
    if kind == "cidr":
        return draw(st.sampled_from(CIDRS))
    return "anywhere"


@st.composite
def peers(draw: st.DrawFn, local: Sequence[str], remote: Sequence[str], sets: Sequence[str]) -> str:
    """A peer of a statement in a namespace: local services, `ns/service`s, cidrs sets, or any form."""
    kinds = ["pods", "pods_in_nss", "all_pods", "all_pods_in", "scoped", "scoped"]
    kinds += ["service"] * 3 if local else []
    kinds += ["remote"] * 2 if remote else []
    kinds += ["set"] if sets else []
    kind = draw(st.sampled_from(kinds))
    if kind == "service":
        return draw(st.sampled_from(local))
    if kind == "remote":
        return draw(st.sampled_from(remote))
    if kind == "set":
        return draw(st.sampled_from(sets))
    if kind == "pods":
        return draw(_pods())
    if kind == "pods_in_nss":
        return f"{draw(_pods())} in namespaces[{draw(namespace_selectors())}]"
    if kind == "all_pods":
        return "all pods"
    if kind == "all_pods_in":
        scope = draw(st.one_of(st.sampled_from([f"namespace {n}" for n in [*NAMESPACES, UNDECLARED]]),
                               namespace_selectors().map(lambda s: f"namespaces[{s}]")))
        return f"all pods in {scope}"
    return draw(cluster_peers())


def _expect_port(ports: Sequence[str]) -> str | None:
    """A port the statement certainly opens (`on` absent = every port), as an expect writes it."""
    if not ports:
        return "80"
    for word in ports:
        number, _, proto = word.partition("/")
        if number[:1].isdigit():
            hi = number.partition("-")[2] or number
            return hi + (f"/{proto}" if proto else "")
    return None


_NS_LABELS = ["", " labels env=a", " labels env=b", " labels env=a, team=x", " labels team=y"]


@st.composite
def programs(draw: st.DrawFn, expects: bool = True) -> str:
    """A random allow-only program without tiers: its text is all a test needs (it compiles it like a
    user would). With `expects`, `expect ... allowed` statements for flows between services (they hold
    because flows work end to end); callers that add deny statements pass expects=False."""
    namespaces = draw(st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=3, unique=True))
    sets = draw(st.lists(st.sampled_from(sorted(CIDR_SETS)), max_size=2, unique=True))
    services: dict[str, list[str]] = {}
    blocks: list[str] = [CIDR_SETS[s] for s in sets]
    for ns in namespaces:
        lines = [f"namespace {ns}{draw(st.sampled_from(_NS_LABELS))} {{"]
        names = draw(st.lists(st.sampled_from(APPS), min_size=1, max_size=3, unique=True))
        services[ns] = names
        for name in names:
            lines.append(f"  service {name} = {draw(selectors())}")
        if len(names) > 1 and draw(st.booleans()):
            lines.append(f"  group g = {', '.join(names)}")
        # isolation of the namespace, of some services (`isolate [DIR] for S`, S a group too), or both
        subjects = [*names, "all pods"] + (["g"] if lines[-1].startswith("  group g") else [])
        for _ in range(draw(st.integers(0, 2))):
            iso = draw(st.sampled_from(["", "isolate", "isolate ingress", "isolate egress"]))
            if iso and draw(st.booleans()):
                chosen = draw(st.lists(st.sampled_from(subjects), min_size=1, max_size=2, unique=True))
                iso += " for " + ("all pods" if "all pods" in chosen else ", ".join(chosen))
            if iso:
                lines.append("  " + iso)
        dns = draw(st.sampled_from(["", "allow dns", f"allow dns for {names[0]}"]))
        if dns:
            lines.append("  " + dns)
        lines.append("}")
        blocks.append("\n".join(lines))
    expectations: list[str] = []
    for ns in namespaces:
        body = []
        remote = [f"{o}/{s}" for o in namespaces if o != ns for s in services[o]]
        for _ in range(draw(st.integers(0, 4))):
            subject = draw(st.sampled_from([*services[ns], "all pods"]))
            chosen = draw(st.lists(peers(services[ns], remote, sets), min_size=1, max_size=3, unique=True))
            ports = draw(st.lists(st.sampled_from(PORT_WORDS), max_size=3, unique=True))
            # one-sided rules (`allows ingress from`) derive no other half: no expectation follows from them
            verb = draw(st.sampled_from(["accepts", "connects to", "accepts", "connects to", "allows ingress from",
                                         "allows egress to"]))
            on = f" on {', '.join(ports)}" if ports else ""
            body.append(f"  {subject} {verb} {', '.join(chosen)}{on}")
            port = _expect_port(ports)
            if (expects and verb in ("accepts", "connects to") and subject != "all pods" and port is not None
                    and draw(st.booleans())):
                other = chosen[0]
                here, there = f"{ns}/{subject}", other if "/" in other else f"{ns}/{other}"
                src, dst = (there, here) if verb == "accepts" else (here, there)
                if (other in services[ns] or other in remote) and src != dst:
                    if other in services[ns] and draw(st.booleans()):  # the form inside a namespace block
                        src, dst = src.split("/")[1], dst.split("/")[1]
                        expectations.append(f"namespace {ns} {{ expect {src} -> {dst}:{port} allowed }}")
                    else:
                        expectations.append(f"expect {src} -> {dst}:{port} allowed")
        if body:
            blocks.append("\n".join([f"namespace {ns} {{", *body, "}"]))
    blocks += expectations
    # Several files: a break before some blocks (a namespace's statements often land in another file
    # than its declaration, cidrs sets in another file than their users).
    text = blocks[0] if blocks else ""
    for block in blocks[1:]:
        text += "\n" + (FILE_BREAK + "\n" if draw(st.integers(0, 3)) == 0 else "") + block
    return text + "\n"


@st.composite
def extra_pods(draw: st.DrawFn) -> list[Pod]:
    """Pods beyond the declared ones: random mixes of the labels programs use, with named ports that
    differ from pod to pod (NAMED_PORTS)."""
    pods = []
    for i in range(draw(st.integers(0, 4))):
        labels: dict[str, str] = {}
        if draw(st.booleans()):
            labels["app"] = draw(st.sampled_from(APPS))
        tier = draw(st.sampled_from(["", "x", "y", "z"]))
        if tier:
            labels["tier"] = tier
        if draw(st.booleans()):
            labels["legacy"] = "true"
        role = draw(st.sampled_from(["", "a", "b"]))
        if role:
            labels["role"] = role
        ns = draw(st.sampled_from([*NAMESPACES, UNDECLARED, "kube-system", "elsewhere"]))
        ports = draw(st.sampled_from(NAMED_PORTS[1:]))
        pods.append(Pod(ns, f"extra-{i}", labels, ports))
    return pods


def services_of(text: str) -> dict[str, list[str]]:
    """The services each namespace of a generated program declares."""
    services: dict[str, list[str]] = {}
    current = ""
    for ln in text.splitlines():
        if ln.startswith("namespace "):
            current = ln.split()[1]
            services.setdefault(current, [])
        elif ln.startswith("  service "):
            services[current].append(ln.split()[1])
    return services


def _cluster_block(draw: st.DrawFn, allow_only: bool) -> str:
    bodies = ["isolate", "isolate ingress", "isolate egress; allow dns", "allow dns",
              f"service cw = {draw(selectors())}; isolate {draw(st.sampled_from(['', 'ingress ', 'egress ']))}for cw",
              f"all pods accepts {draw(cluster_peers())}",
              f"all pods connects to {draw(cluster_peers())} on 80"]
    if not allow_only:
        bodies.append(f"all pods denies from {draw(st.sampled_from(CIDRS))}")
    body = draw(st.sampled_from(bodies))
    header = draw(st.sampled_from(["cluster", "cluster namespaces[env=a]", "cluster including system",
                                   f"cluster namespaces[{draw(namespace_selectors())}]"]))
    return f"{header} {{ {body} }}"


@st.composite
def ordered_programs(draw: st.DrawFn) -> str:
    """A program for targets with ordered policy: a vanilla-style program plus tiers with allow, deny
    and pass statements, and cluster-wide blocks."""
    text = draw(programs(expects=False))
    services = services_of(text)
    namespaces = sorted(services)
    verbs = ["allows from", "allows to", "denies from", "denies to", "passes from", "passes to",
             "accepts", "connects to", "allows ingress from", "allows egress to", "denies ingress from"]
    blocks = []
    for t in range(draw(st.integers(0, 2))):
        otherwise = draw(st.sampled_from(["", " otherwise deny", " otherwise pass"]))
        lines = [f"tier t{t} order {draw(st.sampled_from([10, 100, 2000000]))}{otherwise} {{"]
        for _ in range(draw(st.integers(1, 3))):
            scope = draw(st.sampled_from([*namespaces, "cluster"]))
            if scope == "cluster":
                subject, peer, header = "all pods", draw(cluster_peers()), "cluster"
            else:
                subject = draw(st.sampled_from(["all pods", *services[scope]]))
                peer, header = draw(peers(services[scope], [], [])), f"namespace {scope}"
            stmt = f"{subject} {draw(st.sampled_from(verbs))} {peer}"
            ports = draw(st.sampled_from(["", " on 80", " on 53/udp, 443", " on 8000-8100", " on http"]))
            lines.append(f"  {header} {{ {stmt}{ports} }}")
        lines.append("}")
        blocks.append("\n".join(lines))
    if draw(st.booleans()):
        blocks.append(_cluster_block(draw, allow_only=False))
    return text + "\n".join(blocks) + "\n"


@st.composite
def cluster_programs(draw: st.DrawFn) -> str:
    """Allow-only programs with cluster-wide isolation and flows (every flow must work end to end)."""
    return draw(programs()) + _cluster_block(draw, allow_only=True) + "\n"


@st.composite
def cilium_programs(draw: st.DrawFn) -> str:
    """A program for Cilium: a vanilla-style program plus deny statements (deny always wins outside
    tiers), FQDN and entity peers, HTTP rules and cluster blocks."""
    text = draw(programs(expects=False))
    services = services_of(text)
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        ns = draw(st.sampled_from(sorted(services)))
        subject = draw(st.sampled_from(["all pods", *services[ns]]))
        stmt = draw(st.sampled_from([
            "connects to fqdn www.example.org on 443",
            "connects to fqdn *.example.org, cidr 192.0.2.0/24 on 443, 80",
            "connects to entity world on 443",
            "accepts entity cluster on 80",
            "accepts entity world",
            "denies from cidr 10.0.0.0/8 except (10.1.0.0/16)",
            "denies to pods[app=db] on 5432",
            "denies from namespace prod",
            "accepts pods[app=api] on 80 http GET /api/.*, POST /x",
            "denies to anywhere on 53/udp",
            f"denies from pods[{draw(selectors())}] in namespaces[{draw(namespace_selectors())}]",
            "denies to cidr 2001:db8::/32 except (2001:db8:1::/48) on 8000-8100",
        ]))
        lines.append(f"namespace {ns} {{ {subject} {stmt} }}")
    if draw(st.booleans()):
        lines.append(_cluster_block(draw, allow_only=False))
    return text + "\n".join(lines) + "\n"
