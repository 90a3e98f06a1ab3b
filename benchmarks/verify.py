#!/usr/bin/env python3
"""Proof-time benchmark: proving each target's output equivalent to the program (translation
validation over the class topology, netdsl.semantics.verify) side by side with compiling it.

For N and 4N services (the program generator of benchmarks/compile.py, seeded) and each target that
can express the program, it times, in one process and one after the other so both see the same load:

* compile: check + build + render + read back (compile_checked with validate=False), CPU time;
* prove:   netdsl.semantics.verify.prove over the emitted objects, CPU time;

and prints the class topology's size (endpoint classes, port classes) and the ratio prove / compile.
Aims: prove / compile <= 1, and prove growing ~4x from N to 4N (linear).

Usage: python benchmarks/verify.py [--sizes N ...] [--targets vanilla calico cilium] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile import generate, write  # noqa: E402  (the compile benchmark's generator)

from netdsl.backends import Options  # noqa: E402
from netdsl.compiler import check, compile_checked  # noqa: E402
from netdsl.semantics.verify import prove  # noqa: E402


def cpu(fn):  # type: ignore[no-untyped-def]
    start = time.process_time()
    value = fn()
    return time.process_time() - start, value


def measure(root: Path, target: str, repeat: int) -> tuple[float, float, int, int, int] | None:
    best_compile = best_prove = float("inf")
    sizes = (0, 0, 0)
    for _ in range(repeat):
        seconds, result = cpu(lambda: compile_checked(check([str(root)]), target, Options(), validate=False))
        if not result.ok:
            return None
        best_compile = min(best_compile, seconds)
        objects = [m.body for m in result.manifests]
        seconds, proof = cpu(lambda: prove(result.program, target, objects))  # noqa: B023
        best_prove = min(best_prove, seconds)
        if not proof.holds:
            print(f"  !!! {target}: the proof FAILED: {proof.differing} differing cells", file=sys.stderr)
        topology = proof.universe.topology
        sizes = (len(topology.pods), len(topology.externals), len(proof.universe.probes))
    return best_compile, best_prove, *sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100])
    parser.add_argument("--targets", nargs="+", default=["vanilla", "calico", "cilium"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--per-ns", type=int, default=50)
    parser.add_argument("--flows", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for base in args.sizes:
            for size in (base, 4 * base):
                root = Path(tmp) / f"n{size}"
                write(generate(size, args.per_ns, args.flows, args.seed), root)
                for target in args.targets:
                    got = measure(root, target, args.repeat)
                    if got is None:
                        print(f"{target} cannot express the N={size} program; skipped", file=sys.stderr)
                        continue
                    rows.append((size, target, *got))
                    c, p, pods, ext, probes = got
                    print(f"N={size:<5} {target:<8} compile {c:7.2f}s  prove {p:7.2f}s  ratio {p / c:5.2f}  "
                          f"classes: {pods} pods, {ext} externals, {probes} port classes", flush=True)
    print("\nsize   target   compile s  prove s  prove/compile  growth(prove N->4N)")
    by = {(size, t): (c, p) for size, t, c, p, *_ in rows}
    for size, target, c, p, *_ in rows:
        growth = ""
        if (size // 4, target) in by and size % 4 == 0:
            growth = f"{p / by[(size // 4, target)][1]:.2f}x"
        print(f"{size:<6} {target:<8} {c:9.2f} {p:8.2f} {p / c:14.2f}  {growth}")
    print("Aims: prove/compile <= 1; prove growth ~4x from N to 4N (linear).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
