"""Hypothesis strategies: random but valid .seg programs, and topologies to evaluate them over."""

from __future__ import annotations

from hypothesis import strategies as st

from netdsl.ir import Protocol
from netdsl.semantics.model import Pod

NAMESPACES = ["prod", "web", "data"]
APPS = ["api", "db", "ui", "job"]
PORT_WORDS = ["80", "443", "53/udp", "8000-8100", "udp", "http", "5432", "9000-9001/sctp"]


@st.composite
def selectors(draw: st.DrawFn) -> str:
    parts = [f"app={draw(st.sampled_from(APPS))}"]
    extra = draw(st.sampled_from(["", "tier in (x, y)", "!legacy", "tier", "tier notin (x)", "tier!=y"]))
    if extra:
        parts.append(extra)
    if draw(st.booleans()):
        parts = parts[1:] or parts
    return ", ".join(parts)


@st.composite
def programs(draw: st.DrawFn) -> str:
    """A random program: its text is all the test needs (it compiles it like a user would)."""
    namespaces = draw(st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=3, unique=True))
    services: dict[str, list[str]] = {}
    lines: list[str] = []
    for ns in namespaces:
        labels = draw(st.sampled_from(["", " labels env=a", " labels env=b"]))
        lines.append(f"namespace {ns}{labels} {{")
        names = draw(st.lists(st.sampled_from(APPS), min_size=1, max_size=3, unique=True))
        services[ns] = names
        for name in names:
            lines.append(f"  service {name} = {draw(selectors())}")
        if len(names) > 1 and draw(st.booleans()):
            lines.append(f"  group g = {', '.join(names)}")
        iso = draw(st.sampled_from(["", "isolate", "isolate ingress", "isolate egress"]))
        if iso:
            lines.append("  " + iso)
        dns = draw(st.sampled_from(["", "allow dns", f"allow dns for {names[0]}"]))
        if dns:
            lines.append("  " + dns)
        lines.append("}")
    for ns in namespaces:
        body = []
        for _ in range(draw(st.integers(0, 4))):
            subject = draw(st.sampled_from([*services[ns], "all pods"]))
            others = [f"{o}/{s}" for o in namespaces if o != ns for s in services[o]]
            peer_choices = [
                *services[ns], *others, "pods[app=api]", "pods[tier=x] in namespace web",
                "pods[app=db] in namespaces[env=a]", "pods[app=ui] in all namespaces", "all pods",
                "all pods in namespaces[env=b]", "namespace prod", "namespaces[env=a]",
                "all namespaces", "cidr 10.0.0.0/8 except (10.1.0.0/16)", "cidr 192.0.2.0/24",
                "anywhere",
            ]
            peers = draw(st.lists(st.sampled_from(peer_choices), min_size=1, max_size=3, unique=True))
            ports = draw(st.lists(st.sampled_from(PORT_WORDS), max_size=3, unique=True))
            verb = draw(st.sampled_from(["accepts", "connects to"]))
            on = f" on {', '.join(ports)}" if ports else ""
            body.append(f"  {subject} {verb} {', '.join(peers)}{on}")
        if body:
            lines += [f"namespace {ns} {{", *body, "}"]
    return "\n".join(lines) + "\n"


@st.composite
def extra_pods(draw: st.DrawFn) -> list[Pod]:
    """Pods beyond the declared ones: random mixes of the labels programs use, with a named port."""
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
        ns = draw(st.sampled_from([*NAMESPACES, "kube-system", "elsewhere"]))
        pods.append(Pod(ns, f"extra-{i}", labels, {"http": (8080, Protocol.TCP)}))
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


@st.composite
def ordered_programs(draw: st.DrawFn) -> str:
    """A program for targets with ordered policy: a vanilla-style program plus tiers with allow, deny
    and pass statements, and cluster-wide blocks."""
    text = draw(programs())
    services = services_of(text)
    namespaces = sorted(services)
    peers = [
        "cidr 10.0.0.0/8 except (10.1.0.0/16)", "cidr 192.0.2.0/24", "anywhere", "all pods",
        "pods[app=api]", "namespace prod", "namespaces[env=a]", "pods[app=db] in all namespaces",
    ]
    verbs = ["allows from", "allows to", "denies from", "denies to", "passes from", "passes to",
             "accepts", "connects to"]
    blocks = []
    for t in range(draw(st.integers(0, 2))):
        otherwise = draw(st.sampled_from(["", " otherwise deny", " otherwise pass"]))
        lines = [f"tier t{t} order {draw(st.sampled_from([10, 100, 2000000]))}{otherwise} {{"]
        for _ in range(draw(st.integers(1, 3))):
            scope = draw(st.sampled_from([*namespaces, "cluster"]))
            subject = "all pods" if scope == "cluster" else draw(st.sampled_from(["all pods", *services[scope]]))
            peer = draw(st.sampled_from(peers))
            if scope == "cluster" and peer in ("all pods", "pods[app=api]"):
                peer += " in all namespaces"  # a cluster block's peer names its namespaces (cluster-peer)
            stmt = f"{subject} {draw(st.sampled_from(verbs))} {peer}"
            ports = draw(st.sampled_from(["", " on 80", " on 53/udp, 443"]))
            header = "cluster" if scope == "cluster" else f"namespace {scope}"
            lines.append(f"  {header} {{ {stmt}{ports} }}")
        lines.append("}")
        blocks.append("\n".join(lines))
    if draw(st.booleans()):
        body = draw(st.sampled_from(["isolate", "isolate ingress", "allow dns", "isolate egress; allow dns",
                                     "all pods denies from cidr 192.0.2.0/24",
                                     "all pods accepts pods[app=api] in all namespaces"]))
        header = draw(st.sampled_from(["cluster", "cluster namespaces[env=a]", "cluster including system"]))
        blocks.append(f"{header} {{ {body} }}")
    return text + "\n".join(blocks) + "\n"


@st.composite
def cluster_programs(draw: st.DrawFn) -> str:
    """Allow-only programs with cluster-wide isolation and flows (every flow must work end to end)."""
    text = draw(programs())
    body = draw(st.sampled_from([
        "isolate", "isolate egress; allow dns", "isolate ingress", "allow dns",
        "all pods accepts pods[app=api] in all namespaces", "all pods connects to namespace prod on 80",
    ]))
    header = draw(st.sampled_from(["cluster", "cluster namespaces[env=a]", "cluster including system"]))
    return text + f"{header} {{ {body} }}\n"


@st.composite
def cilium_programs(draw: st.DrawFn) -> str:
    """A program for Cilium: a vanilla-style program plus deny statements (deny always wins outside
    tiers), FQDN and entity peers, HTTP rules and cluster blocks."""
    text = draw(programs())
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
        ]))
        lines.append(f"namespace {ns} {{ {subject} {stmt} }}")
    if draw(st.booleans()):
        body = draw(st.sampled_from(["isolate", "isolate egress; allow dns", "all pods denies from cidr 192.0.2.0/24",
                                     "all pods accepts pods[app=api] in all namespaces"]))
        header = draw(st.sampled_from(["cluster", "cluster namespaces[env=a]", "cluster including system"]))
        lines.append(f"{header} {{ {body} }}")
    return text + "\n".join(lines) + "\n"
