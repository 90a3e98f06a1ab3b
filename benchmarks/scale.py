#!/usr/bin/env python3
"""Scaling benchmark: every command at N and 10N along each dimension of input size.

Rule: every command stays near-linear in its input (10N costs ~10x N; flagged above --flag, 15x by
default) with bounded memory. Each (dimension, size, command) runs in a fresh subprocess that builds the
CLI in-process (click's runner, no process start-up in the figure; it imports the netdsl of the
Python running this script, never one from the current directory) and reports its CPU time and its peak
resident memory (getrusage maxrss of that subprocess, so one run's memory never hides another's).

Dimensions (each a deterministic generated program):
  services      N services over namespaces of 50, each isolated + dns, each accepting the previous one
  ports         one statement listing N ports and port ranges (alternating `p` and `p-p+1`)
  requirements  one service whose selector has N requirements (`k0=v0, k1 in (a, b), !k2, ...`)
  excepts       one `cidr 10.0.0.0/8 except (...)` with N except blocks
Commands: check, compile -t vanilla, compile -t calico, explain (no --from/--to), and diff of the
program against itself with one statement changed.

Usage: python benchmarks/scale.py [--dims services ports ...] [--commands check explain ...]
                                  [--n services=100 ports=400 ...] [--timeout 120] [--flag 15]
Exit status 1 if a run failed, timed out, or grew by more than --flag.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_N = {"services": 100, "ports": 400, "requirements": 400, "excepts": 200}
COMMANDS = ["check", "compile-vanilla", "compile-calico", "explain", "diff"]
PER_NS = 50


def program(dim: str, n: int, changed: bool = False) -> str:
    """The generated program; `changed` alters one statement (for diff)."""
    port = 9090 if changed else 8080
    if dim == "services":
        out = []
        for ns_index in range((n + PER_NS - 1) // PER_NS):
            count = min(PER_NS, n - ns_index * PER_NS)
            out.append(f"namespace ns{ns_index} {{\n  isolate\n  allow dns")
            for i in range(count):
                out.append(f"  service s{i} = app=s{i}, team=t{i % 5}")
            for i in range(1, count):
                p = port if (ns_index, i) == (0, 1) else 8080 + i % 7
                out.append(f"  s{i} accepts s{i - 1} on {p}")
            if ns_index:
                out.append(f"  s0 accepts ns{ns_index - 1}/s0 on 443")
            out.append("}")
        return "\n".join(out) + "\n"
    head = "namespace app {\n  isolate\n  allow dns\n  service web = app=web\n  service api = app=api\n"
    if dim == "ports":
        items = [str(1 + 3 * i) if i % 2 == 0 else f"{1 + 3 * i}-{2 + 3 * i}" for i in range(n)]
        return head + f"  web accepts api on {', '.join(items)}\n  api accepts web on {port}\n}}\n"
    if dim == "requirements":
        reqs = []
        for i in range(n):
            kind = i % 4
            reqs.append([f"k{i}=v{i}", f"k{i} in (a, b)", f"!k{i}", f"k{i}!=x"][kind])
        return (head + f"  service big = {', '.join(reqs)}\n  big accepts web on 80\n  api accepts big on 81\n"
                f"  web accepts big on {port}\n}}\n")
    if dim == "excepts":
        blocks = [f"10.{i // 256}.{i % 256}.0/24" for i in range(n)]
        return (head + f"  web connects to cidr 10.0.0.0/8 except ({', '.join(blocks)}) on 443\n"
                f"  api accepts web on {port}\n}}\n")
    raise ValueError(dim)


CHILD = r"""
import json, resource, sys, time
from click.testing import CliRunner
from netdsl.cli import main
args = json.loads(sys.argv[1])
runner = CliRunner()
t0 = time.process_time(); w0 = time.perf_counter()
r = runner.invoke(main, args)
cpu = time.process_time() - t0; wall = time.perf_counter() - w0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
exc = None if r.exception is None or isinstance(r.exception, SystemExit) else repr(r.exception)[:200]
print(json.dumps({"cpu": cpu, "wall": wall, "rss": rss, "exit": r.exit_code, "exc": exc,
                  "out": len(r.output)}))
"""


def args_for(command: str, path: Path, changed: Path) -> list[str]:
    return {"check": ["check", str(path)],
            "compile-vanilla": ["compile", "-t", "vanilla", str(path)],
            "compile-calico": ["compile", "-t", "calico", str(path)],
            "explain": ["explain", str(path)],
            "diff": ["diff", str(path), str(changed)]}[command]


def baseline_rss(timeout: float) -> float:
    code = "import resource, click.testing, netdsl.cli; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=timeout, cwd="/").stdout)


def run(command: str, path: Path, changed: Path, timeout: float) -> dict[str, object]:
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args_for(command, path, changed))],
                              capture_output=True, text=True, timeout=timeout, cwd=path.parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout:.0f}s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["crashed"])[-1][:120]}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def cell(r: dict[str, object]) -> str:
    if "error" in r:
        return str(r["error"])
    note = f" exit {r['exit']}" if r["exit"] != 0 else ""  # 1: refused (a limit) or an input error
    note += f" EXC {r['exc']}" if r["exc"] else ""
    return f"{r['cpu']:7.2f}s {r['rss']:6.0f}MiB{note}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", nargs="*", default=list(DEFAULT_N))
    ap.add_argument("--commands", nargs="*", default=COMMANDS)
    ap.add_argument("--n", nargs="*", default=[], help="DIM=N overrides, e.g. services=200")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    ap.add_argument("--flag", type=float, default=15.0, help="flag 10N/N CPU growth above this")
    ap.add_argument("--keep", type=Path, help="write the generated programs here")
    opts = ap.parse_args()
    sizes = dict(DEFAULT_N)
    for item in opts.n:
        key, _, value = item.partition("=")
        sizes[key] = int(value)
    base = baseline_rss(opts.timeout)
    print(f"baseline (interpreter + netdsl imported): {base:.0f} MiB; CPU seconds, peak RSS MiB per run")
    print(f"{'dimension':<13} {'command':<16} {'N':>6} {'at N':>22} {'10N':>6} {'at 10N':>22}  growth")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = (opts.keep or Path(tmp)).resolve()
        for dim in opts.dims:
            n = sizes[dim]
            paths = {}
            for size in (n, 10 * n):
                d = root / f"{dim}-{size}"
                d.mkdir(parents=True, exist_ok=True)
                (d / "a.seg").write_text(program(dim, size))
                (d / "b.seg").write_text(program(dim, size, changed=True))
                paths[size] = d
            for command in opts.commands:
                r1 = run(command, paths[n] / "a.seg", paths[n] / "b.seg", opts.timeout)
                r2 = run(command, paths[10 * n] / "a.seg", paths[10 * n] / "b.seg", opts.timeout)
                if "error" in r1 or "error" in r2:
                    growth, failed = "FAILED", True
                else:
                    ratio = float(r2["cpu"]) / max(float(r1["cpu"]), 1e-3)  # type: ignore[arg-type]
                    growth = f"{ratio:5.1f}x"
                    if ratio > opts.flag:
                        growth += "  <-- superlinear"
                        failed = True
                print(f"{dim:<13} {command:<16} {n:>6} {cell(r1):>22} {10 * n:>6} {cell(r2):>22}  {growth}",
                      flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
