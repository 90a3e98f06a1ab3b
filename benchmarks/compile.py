#!/usr/bin/env python3
"""Compile-time benchmark for netdsl on a large, synthetic but realistic program.

For every size N given with --sizes (default 500 services; --sizes 1000 for the 1000 -> 4000 figures)
the benchmark also runs 4N, and for each size it:

1. generates a deterministic (seeded) program into a temporary directory: N services spread over
   namespaces of --per-ns services (default 50), each namespace `isolate` + `allow dns`, services with
   1-2 labels (some `app in (...)` selectors), a couple of groups per namespace, shared cidr sets, and
   about --flows flow statements per service (default 10): accepts / connects to, same-namespace and
   cross-namespace `ns/svc` references, `pods[...] in namespace x`, `namespace x`,
   `namespaces[team=...]`, cidr peers with `except`, cidr-set references, single ports, port ranges,
   udp ports and multi-port lists;
2. times netdsl's full in-process compile, `compile_paths([dir], "vanilla")` + `stream(...)`, best of
   --repeat runs (wall-clock and CPU time), and measures its peak memory with tracemalloc in a
   separate run;
3. times how long PyYAML's C loader takes to read the emitted stream back
   (`list(yaml.load_all(text, Loader=yaml.CSafeLoader))`), best of --repeat runs, each right after a
   compile run (so both see the same load on a shared machine) - the yardstick:
   a compiler that reads, checks, lowers, builds, renders and re-reads its output should cost no more
   than a small multiple of just reading that output;
4. times the phases of one more compile separately (read, parse, lower, capability check, build,
   render+readback, stream), mirroring netdsl.compiler.compile_paths, and re-times the render step
   of render+readback alone.

Aims (printed with the results): compile / read-back <= 3, and compile time growing ~4x from N to 4N
(linear). --profile runs cProfile over one compile of the largest size and prints the hotspots.

Usage: python benchmarks/compile.py [--sizes N ...] [--repeat R] [--per-ns S] [--flows F]
                                    [--seed X] [--no-memory] [--profile] [--keep DIR]
Only the standard library, PyYAML and netdsl itself are used.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

try:
    from netdsl import compiler
    from netdsl.backends import Options, get_backend, render_and_check
    from netdsl.lower import lower
    from netdsl.parse import parse
    from netdsl.render import environment
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from netdsl import compiler
    from netdsl.backends import Options, get_backend, render_and_check
    from netdsl.lower import lower
    from netdsl.parse import parse
    from netdsl.render import environment

TARGET = "vanilla"
# 500 -> 2000 services (~20,000 flow statements at 4N) keeps a default run under ~5 minutes on 2 cores,
# most of it at 4N (3 compiles, 3 read-backs, 1 tracemalloc compile ~5x slower, 1 phase compile).
# For the 1000 -> 4000 figures use --sizes 1000 (~12-15 minutes).
DEFAULT_N = 500
AIM_RATIO = 3.0
AIM_GROWTH = 4.0

# ------------------------------------------------------------------------------------ the generator

DOMAINS = [
    "payments", "orders", "catalog", "search", "identity", "billing", "shipping", "inventory",
    "analytics", "messaging", "checkout", "reviews", "pricing", "fraud", "support", "media",
    "accounts", "loyalty", "ads", "recommend",
]
TEAMS = ["core", "commerce", "platform", "data", "growth", "trust", "ops", "content"]
ENVS = ["prod", "staging"]
# (role, tier, the ports it usually serves)
ROLES = [
    ("api", "backend", ["8080", "8443", "9090"]),
    ("web", "frontend", ["80", "443", "8080"]),
    ("worker", "backend", ["9090", "8081"]),
    ("gateway", "frontend", ["443", "8443"]),
    ("auth", "backend", ["8443", "9000-9010"]),
    ("db", "data", ["5432", "3306"]),
    ("cache", "data", ["6379", "11211", "11211/udp"]),
    ("queue", "data", ["9092", "5672", "4369"]),
    ("search", "data", ["9200", "9300-9400"]),
    ("metrics", "backend", ["9090", "9091", "8125/udp"]),
    ("stream", "backend", ["7000-7100", "5000-5010/udp"]),
    ("cron", "backend", ["8080"]),
]
EXTRA_PORTS = ["443", "8080", "53/udp", "514/udp", "30000-32767", "8000-8099", "http-alt", "grpc"]
CIDR_SETS = {
    "corp-net": "cidrs corp-net = 10.0.0.0/8 except (10.200.0.0/16, 10.201.0.0/16), 172.16.0.0/12",
    "partners": "cidrs partners = 203.0.113.0/24, 198.51.100.0/24 except 198.51.100.128/25",
    "saas-apis": "cidrs saas-apis = 192.0.2.0/24, 2001:db8::/32 except 2001:db8:ffff::/48",
    "logging": "cidrs logging = 100.64.0.0/10 except 100.64.0.0/16",
}


@dataclass
class Service:
    name: str
    role: str
    tier: str | None
    selector: str
    ports: list[str]


@dataclass
class Namespace:
    name: str
    team: str
    env: str
    services: list[Service] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Program:
    size: int
    files: dict[str, str]
    counts: Counter[str]

    @property
    def statements(self) -> int:
        return sum(self.counts.values())

    @property
    def flows(self) -> int:
        return self.counts["accepts"] + self.counts["connects"]


def namespace_name(i: int) -> str:
    base = DOMAINS[i % len(DOMAINS)]
    return base if i < len(DOMAINS) else f"{base}-{i // len(DOMAINS) + 1}"


def generate(size: int, per_ns: int, flows_per_service: int, seed: int) -> Program:
    """A deterministic program with `size` services: {relative path: text}, plus statement counts."""
    rng = random.Random(f"{seed}/{size}/{per_ns}/{flows_per_service}")
    counts: Counter[str] = Counter()

    # --- model: namespaces, services, groups
    namespaces: list[Namespace] = []
    left = size
    while left > 0:
        i = len(namespaces)
        ns = Namespace(namespace_name(i), TEAMS[i % len(TEAMS)], ENVS[0] if i % 5 else ENVS[1])
        for j in range(min(per_ns, left)):
            role, tier, ports = ROLES[rng.randrange(len(ROLES))]
            name = f"{role}-{j}"
            r = rng.random()
            if r < 0.15:
                selector = f"app in ({name}, {name}-canary)"
                tier = None
            elif r < 0.65:
                selector = f"app={name}, tier={tier}"
            else:
                selector = f"app={name}"
                tier = None
            ns.services.append(Service(name, role, tier, selector, ports))
        left -= len(ns.services)
        names = [s.name for s in ns.services]
        for g in ("backends", "edge"):
            if len(names) >= 4:
                ns.groups[g] = rng.sample(names, min(len(names), rng.randint(3, 5)))
        namespaces.append(ns)
    teams_in_use = sorted({ns.team for ns in namespaces})

    # --- statements
    def ports_for(target: Service) -> str:
        r = rng.random()
        if r < 0.05:
            return ""  # every port
        if r < 0.75:
            chosen = [rng.choice(target.ports)]
        elif r < 0.90:
            chosen = rng.sample(target.ports, min(2, len(target.ports)))
        else:
            chosen = [rng.choice(target.ports), rng.choice(EXTRA_PORTS)]
        chosen = list(dict.fromkeys(chosen))
        return " on " + ", ".join(chosen)

    def other_service(ns: Namespace, me: Service) -> Service:
        while True:
            t = rng.choice(ns.services)
            if t is not me or len(ns.services) == 1:
                return t

    def pods_selector(ns: Namespace) -> str:
        """A `pods[...]` selector that matches at least one declared service of `ns`."""
        t = rng.choice(ns.services)
        if t.tier is not None and rng.random() < 0.6:
            return f"pods[tier={t.tier}]"
        if rng.random() < 0.5:
            u = rng.choice(ns.services)
            return f"pods[app in ({t.name}, {u.name})]"
        return f"pods[app={t.name}]"

    def flow(ns: Namespace, me: Service) -> str:
        others = [n for n in namespaces if n is not ns] or [ns]
        r = rng.random()
        if r < 0.28:  # same namespace, ingress
            t = other_service(ns, me)
            peers = t.name
            if rng.random() < 0.15:
                peers += ", " + other_service(ns, me).name
            counts["accepts"] += 1
            return f"{me.name} accepts {peers}{ports_for(me)}"
        if r < 0.43:  # same namespace, egress
            t = other_service(ns, me)
            counts["connects"] += 1
            return f"{me.name} connects to {t.name}{ports_for(t)}"
        if r < 0.63:  # cross-namespace service reference, egress
            o = rng.choice(others)
            t = rng.choice(o.services)
            counts["connects"] += 1
            return f"{me.name} connects to {o.name}/{t.name}{ports_for(t)}"
        if r < 0.68:  # cross-namespace service reference, ingress
            o = rng.choice(others)
            counts["accepts"] += 1
            return f"{me.name} accepts {o.name}/{rng.choice(o.services).name}{ports_for(me)}"
        if r < 0.76:  # pods[...] in namespace x
            o = rng.choice(others)
            if rng.random() < 0.5:
                counts["accepts"] += 1
                return f"{me.name} accepts {pods_selector(o)} in namespace {o.name}{ports_for(me)}"
            counts["connects"] += 1
            return f"{me.name} connects to {pods_selector(o)} in namespace {o.name}{ports_for(me)}"
        if r < 0.80:  # whole namespaces
            counts["accepts"] += 1
            if rng.random() < 0.5:
                return f"{me.name} accepts namespace {rng.choice(others).name}{ports_for(me)}"
            return f"{me.name} accepts namespaces[team={rng.choice(teams_in_use)}]{ports_for(me)}"
        if r < 0.88:  # inline cidr, usually with except
            a, b = rng.randrange(1, 250), rng.randrange(0, 250)
            cidr = f"cidr 10.{a}.0.0/16"
            if rng.random() < 0.7:
                cidr += f" except 10.{a}.{b}.0/24"
            elif rng.random() < 0.5:
                cidr += f" except (10.{a}.{b}.0/24, 10.{a}.{(b + 1) % 256}.0/24)"
            counts["connects"] += 1
            return f"{me.name} connects to {cidr} on {rng.choice(['443', '8443', '9000-9100', '514/udp'])}"
        if r < 0.94:  # cidr set
            counts["connects"] += 1
            port = rng.choice(["443", "22", "6514"])
            return f"{me.name} connects to {rng.choice(sorted(CIDR_SETS))} on {port}"
        # groups, as subject or peer
        if ns.groups:
            g = rng.choice(sorted(ns.groups))
            if rng.random() < 0.5:
                counts["accepts"] += 1
                return f"{me.name} accepts {g}{ports_for(me)}"
            counts["connects"] += 1
            return f"{g} connects to {me.name}{ports_for(me)}"
        counts["accepts"] += 1
        return f"{me.name} accepts all pods{ports_for(me)}"

    files: dict[str, str] = {}
    header = "# External networks the services talk to."
    files["shared/cidrs.seg"] = "\n".join([header, *CIDR_SETS.values(), ""])
    counts["cidrs"] += len(CIDR_SETS)
    for ns in namespaces:
        decl = [
            f"# Namespace {ns.name}: owned by team {ns.team}.",
            f"namespace {ns.name} labels team={ns.team}, env={ns.env} {{",
            "  isolate",
            "  allow dns",
            "",
        ]
        counts["isolate"] += 1
        counts["dns"] += 1
        width = max(len(s.name) for s in ns.services)
        for s in ns.services:
            decl.append(f"  service {s.name.ljust(width)} = {s.selector}")
            counts["service"] += 1
        decl.append("")
        for g, members in ns.groups.items():
            decl.append(f"  group {g} = {', '.join(members)}")
            counts["group"] += 1
        decl.append("}")
        files[f"{ns.name}/services.seg"] = "\n".join(decl) + "\n"

        body = [f"# Flows of namespace {ns.name}.", f"namespace {ns.name} {{"]
        for s in ns.services:
            body.append(f"  # {s.name}")
            n = max(1, flows_per_service + rng.randint(-2, 2))
            for _ in range(n):
                body.append("  " + flow(ns, s))
        body.append("}")
        files[f"{ns.name}/flows.seg"] = "\n".join(body) + "\n"
    return Program(size, files, counts)


def write(program: Program, root: Path) -> None:
    for rel, text in program.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------ measurements


@dataclass
class Timing:
    """Best wall-clock and best CPU (process) time of several runs. The CPU time is the steadier of the
    two on a shared machine: it leaves out the time the process waited for a core."""

    wall: float = 0.0
    cpu: float = 0.0

    def best(self, other: Timing) -> Timing:
        return Timing(min(self.wall, other.wall), min(self.cpu, other.cpu))


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[Timing, Any]:
    best = Timing(float("inf"), float("inf"))
    value = None
    for _ in range(repeat):
        value = None  # free the previous run's result before the next one
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        best.wall = min(best.wall, time.perf_counter() - w0)
        best.cpu = min(best.cpu, time.process_time() - c0)
    return best, value


def full_compile(root: str) -> tuple[compiler.Result, str]:
    result = compiler.compile_paths([root], TARGET)
    return result, compiler.stream(result.manifests) if result.ok else ""


def read_back(text: str) -> int:
    return len(list(yaml.load_all(text, Loader=yaml.CSafeLoader)))


def peak_memory(root: str) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        result, _text = full_compile(root)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if not result.ok:
        log("tracemalloc run: the compile FAILED, so its peak is not comparable")
    return peak


PhaseTimes = dict[str, Timing]
SPLIT = "  "  # phase names starting with this split render+readback and are not part of the total


def phases(root: str) -> tuple[PhaseTimes, list[str]]:
    """One compile, piece by piece, mirroring compiler.check + compiler.compile_paths (render_and_check
    as a whole: `render+readback`); then render_and_check's three steps once more, one by one."""
    out: PhaseTimes = {}
    problems: list[str] = []
    gc.collect()

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        out[name] = Timing(time.perf_counter() - w0, time.process_time() - c0)
        return value

    def errors(diags: list[Any]) -> list[str]:
        return [f"[{d.code}] {d.message} ({d.span})" for d in diags if d.is_error]

    files, diags = timed("read", lambda: compiler.read_sources([root]))
    problems += errors(diags)

    def parse_all() -> list[Any]:
        modules = []
        for f in files:
            module, errs = parse(f)
            problems.extend(errors(errs))
            if module is not None:
                modules.append(module)
        return modules

    modules = timed("parse", parse_all)
    program, diags = timed("lower", functools.partial(lower, modules))
    problems += errors(diags)
    modules.clear()  # compile_paths drops the syntax trees after lowering too
    if problems:
        return out, problems
    backend = get_backend(TARGET)
    options = Options()

    def capabilities() -> list[Any]:
        diags = backend.unsupported(program)
        check_options = getattr(backend, "check_options", None)  # newer netdsl checks options too
        return diags + (check_options(program, options) if check_options else [])

    problems += errors(timed("capabilities", capabilities))
    manifests = timed("build", lambda: backend.build(program, options))
    problems += errors(timed("render+readback", lambda: render_and_check(backend, manifests)))
    text = timed("stream", lambda: compiler.stream(manifests))

    # render_and_check = render every template + read the stream back + compare with the intended
    # objects; re-time its first step alone (the rest is about the read-back of table (b)).
    env = environment(backend.name)

    def render() -> None:
        for m in manifests:
            m.text = env.get_template(m.template).render(m.context)

    timed(SPLIT + "of which render", render)
    whole, part = out["render+readback"], out[SPLIT + "of which render"]
    out[SPLIT + "of which readback+compare"] = Timing(max(0.0, whole.wall - part.wall),
                                                      max(0.0, whole.cpu - part.cpu))
    del text
    return out, problems


@dataclass
class Row:
    size: int
    program: Program
    out_bytes: int = 0
    documents: int = 0
    rules: int = 0
    compile: Timing = field(default_factory=Timing)
    read: Timing = field(default_factory=Timing)
    peak_bytes: int = 0
    diagnostics: list[Any] = field(default_factory=list)
    phases: PhaseTimes = field(default_factory=dict)
    seconds: float = 0.0  # how long measuring this size took
    failure: str = ""

    @property
    def ok(self) -> bool:
        return self.documents > 0 and not self.failure

    def ratio(self, kind: str) -> float:
        read = getattr(self.read, kind)
        return getattr(self.compile, kind) / read if read else float("inf")


def measure(size: int, args: argparse.Namespace, workdir: Path) -> Row:
    """Measure one size; an exception (netdsl is a moving target) is reported, not fatal."""
    row = Row(size, generate(size, args.per_ns, args.flows, args.seed))
    started = time.perf_counter()
    try:
        measure_into(row, args, workdir)
    except Exception as exc:  # noqa: BLE001
        row.failure = f"{type(exc).__name__}: {exc}"
        log(f"N={size}: FAILED: {row.failure}")
        traceback.print_exc(file=sys.stderr)
    row.seconds = time.perf_counter() - started
    log(f"N={size}: done in {row.seconds:.0f}s")
    return row


def measure_into(row: Row, args: argparse.Namespace, workdir: Path) -> None:
    size, program = row.size, row.program
    root = workdir / f"n{size}"
    write(program, root)
    log(f"N={size}: {len(program.files)} files, {program.statements} statements "
        f"({program.flows} flows), {sum(len(t) for t in program.files.values()) / 1e6:.1f} MB of .seg "
        f"in {root}")

    # Compile and read-back alternate, so that both see the same machine (other processes come and go).
    for i in range(args.repeat):
        compile_time, (result, text) = best_of(1, lambda: full_compile(str(root)))
        row.compile = compile_time if i == 0 else row.compile.best(compile_time)
        if not result.ok:
            row.diagnostics = result.diagnostics
            log(f"N={size}: compile FAILED with {sum(d.is_error for d in result.diagnostics)} errors:")
            for d in [d for d in result.diagnostics if d.is_error][:10]:
                log(f"  {d.severity.value}: [{d.code}] {d.message} ({d.span})")
            row.failure = "compile errors"
            return
        if i == 0:
            row.diagnostics = result.diagnostics
            row.out_bytes = len(text.encode())
            row.documents = len(result.manifests)
            row.rules = len(result.program.rules) if result.program else 0
        result = None
        read_time, docs = best_of(1, functools.partial(read_back, text))
        row.read = read_time if i == 0 else row.read.best(read_time)
        if docs != row.documents:
            log(f"N={size}: read back {docs} documents, expected {row.documents}")
        text = ""
        log(f"N={size}: run {i + 1}/{args.repeat}: compile {compile_time.wall:.2f}s wall / "
            f"{compile_time.cpu:.2f}s CPU, read-back {read_time.wall:.2f}s / {read_time.cpu:.2f}s CPU")
    log(f"N={size}: best compile {row.compile.wall:.2f}s wall / {row.compile.cpu:.2f}s CPU, best "
        f"read-back {row.read.wall:.2f}s / {row.read.cpu:.2f}s; {row.documents} documents, "
        f"{row.out_bytes / 1e6:.1f} MB")

    if not args.no_memory:
        t0 = time.perf_counter()
        row.peak_bytes = peak_memory(str(root))
        log(f"N={size}: peak traced memory {row.peak_bytes / 2**20:.0f} MiB "
            f"(tracemalloc run took {time.perf_counter() - t0:.0f}s)")
    row.phases, problems = phases(str(root))
    for p in problems[:10]:
        log(f"N={size}: phase run: {p}")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ reporting


def table(headers: list[str], rows: list[list[str]], left: int = 0) -> str:
    """Right-aligned columns, except the first `left` ones."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def source_stamp() -> str:
    """Where netdsl was imported from and when its newest source file changed (it is edited often)."""
    root = Path(compiler.__file__).resolve().parent
    newest = max((p.stat().st_mtime, p) for p in root.rglob("*.py"))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(newest[0]))
    return f"{root} (newest source: {newest[1].relative_to(root)}, modified {when})"


def report(rows: dict[int, Row], bases: list[int], args: argparse.Namespace) -> None:
    print()
    print(f"netdsl compile benchmark - target {TARGET}, {args.per_ns} services/namespace, "
          f"~{args.flows} flows/service, seed {args.seed}, best of {args.repeat}")
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"python {sys.version.split()[0]}, PyYAML {yaml.__version__} (libyaml: {yaml.__with_libyaml__}), "
          f"{os.cpu_count()} CPUs{load}")
    print(f"netdsl from {source_stamp()}")
    print(f"aim: compile / read-back <= {AIM_RATIO:g}; compile time growth N -> 4N ~{AIM_GROWTH:g}x (linear)")
    print("compile = compile_paths([dir], 'vanilla') + stream(); read-back = "
          "list(yaml.load_all(out, Loader=yaml.CSafeLoader)); wall and CPU (process) time, best of each")
    print()
    headers = ["N", "statements", "flows", "rules", "output bytes", "documents", "compile s", "compile cpu",
               "read-back s", "read-back cpu", "ratio", "ratio cpu", "peak MiB"]
    body = []
    for size in sorted(rows):
        r = rows[size]
        ok = r.ok
        body.append([
            str(size), str(r.program.statements), str(r.program.flows), str(r.rules),
            str(r.out_bytes), str(r.documents), f"{r.compile.wall:.2f}", f"{r.compile.cpu:.2f}",
            f"{r.read.wall:.2f}" if ok else "-", f"{r.read.cpu:.2f}" if ok else "-",
            f"{r.ratio('wall'):.2f}" if ok else "-", f"{r.ratio('cpu'):.2f}" if ok else "-",
            f"{r.peak_bytes / 2**20:.0f}" if r.peak_bytes else "-",
        ])
    print(table(headers, body))

    growth = []
    for n in bases:
        a, b = rows.get(n), rows.get(4 * n)
        if not a or not b or not a.ok or not b.ok:
            continue
        cg, cgc = b.compile.wall / a.compile.wall, b.compile.cpu / a.compile.cpu
        rg, rgc = b.read.wall / a.read.wall, b.read.cpu / a.read.cpu
        verdict = "linear" if min(cg, cgc) <= AIM_GROWTH * 1.2 else "SUPER-LINEAR"
        ratio = max(b.ratio("wall"), b.ratio("cpu"))
        growth.append([
            f"{n} -> {4 * n}", f"{b.program.statements / a.program.statements:.2f}x",
            f"{b.out_bytes / a.out_bytes:.2f}x", f"{cg:.2f}x", f"{cgc:.2f}x", f"{rg:.2f}x", f"{rgc:.2f}x",
            f"{cgc / rgc:.2f}", verdict,
            "met" if ratio <= AIM_RATIO else f"MISSED ({ratio:.2f} > {AIM_RATIO:g})",
        ])
    if growth:
        print()
        print(table(["growth", "statements", "output", "compile", "compile cpu", "read-back",
                     "read-back cpu", "compile/read-back growth (cpu)", "compile growth", "ratio <= 3 at 4N"],
                    growth))
        print("(compile/read-back growth ~1 means netdsl scales like reading its own output does; "
              "both pay for the larger heap)")

    sizes = [s for s in sorted(rows) if rows[s].phases]
    if sizes:
        names = list(dict.fromkeys(n for s in sizes for n in rows[s].phases))
        big = rows[sizes[-1]]
        total_cpu = sum(t.cpu for k, t in big.phases.items() if not k.startswith(SPLIT))
        headers = ["phase"]
        for s in sizes:
            headers += [f"N={s} s", f"N={s} cpu"]
        headers.append(f"share@{sizes[-1]} (cpu)")
        body = []
        for name in names:
            cells = [name]
            for s in sizes:
                t = rows[s].phases.get(name)
                cells += [f"{t.wall:.3f}", f"{t.cpu:.3f}"] if t else ["-", "-"]
            t = big.phases.get(name)
            cells.append(f"{t.cpu / total_cpu:.0%}" if t and total_cpu and not name.startswith(SPLIT) else "")
            body.append(cells)
        cells = ["total (phases)"]
        for s in sizes:
            main = [t for k, t in rows[s].phases.items() if not k.startswith(SPLIT)]
            cells += [f"{sum(t.wall for t in main):.3f}", f"{sum(t.cpu for t in main):.3f}"]
        body.append([*cells, "100%"])
        print()
        print("phase breakdown, one compile (indented rows split render+readback: render re-timed alone, "
              "readback+compare = the rest; not in the total):")
        print(table(headers, body, left=1))

    print()
    for size in sorted(rows):
        if rows[size].failure:
            print(f"N={size} FAILED: {rows[size].failure}")
        diags = rows[size].diagnostics
        by = Counter((d.severity.value, d.code) for d in diags)
        summary = ", ".join(f"{n} {sev} [{code}]" for (sev, code), n in sorted(by.items())) or "none"
        print(f"netdsl diagnostics at N={size}: {summary}")
        for d in diags[:5]:
            print(f"    {d.severity.value}: [{d.code}] {d.message} ({d.span})")


def profile(root: str, top: int) -> None:
    """cProfile one full compile: the top functions overall, then netdsl's own, by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    full_compile(root)
    prof.disable()
    views = [
        ("cumulative", "cumulative time", [top], False),
        ("tottime", "own time", [top], False),
        ("cumulative", "cumulative time, netdsl's own functions", [r"netdsl[/\\\\]", top], True),
    ]
    for key, title, restrictions, full_paths in views:
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        if not full_paths:
            stats.strip_dirs()
        stats.sort_stats(key).print_stats(*restrictions)
        text = buf.getvalue()
        print(f"\ncProfile of one compile of {root}: top {top} by {title}")
        print(text[text.find("   ncalls"):].rstrip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[DEFAULT_N],
                   help=f"service counts N; each is measured together with 4N (default: {DEFAULT_N})")
    p.add_argument("--repeat", type=int, default=3, help="best of R timed runs (default: 3)")
    p.add_argument("--per-ns", type=int, default=50, help="services per namespace (default: 50)")
    p.add_argument("--flows", type=int, default=10, help="flow statements per service, +-2 (default: 10)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default: 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc run")
    p.add_argument("--profile", action="store_true", help="cProfile one compile of the largest size")
    p.add_argument("--top", type=int, default=25, help="rows of profile output (default: 25)")
    p.add_argument("--keep", metavar="DIR", help="write the generated programs to DIR and keep them")
    args = p.parse_args(argv)

    sizes = sorted({s for n in args.sizes for s in (n, 4 * n)})
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="netdsl-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        # Warm-up: build the (cached) Lark parser and Jinja environment outside the timings.
        warm = workdir / "warmup"
        write(generate(20, 10, 3, args.seed), warm)
        result, _ = full_compile(str(warm))
        if not result.ok:
            for d in result.diagnostics:
                log(f"warm-up: {d.severity.value}: [{d.code}] {d.message} ({d.span})")
        rows = {size: measure(size, args, workdir) for size in sizes}
        report(rows, sorted(args.sizes), args)
        if args.profile:
            profile(str(workdir / f"n{max(sizes)}"), args.top)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal benchmark time {time.perf_counter() - t0:.0f}s")
    return 0 if all(r.ok for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
