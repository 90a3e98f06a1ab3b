#!/usr/bin/env python3
"""Language server latency on a large program, side by side with a plain `check` of the same program.

Generates the program of benchmarks/compile.py (N services, default 1000, namespaces of 50) into one
directory (the unit `netdsl lsp` checks: the .seg files of the open file's directory), then:

1. `check`: `check_with_lints([dir])` in-process (what `netdsl check DIR` runs), best of --repeat;
2. starts `netdsl lsp` on stdio (pytest-lsp's client, as an editor would), opens one file and waits for
   its first diagnostics (cold: every file parsed), then --repeat times changes that file (one more flow
   statement) and times didChange -> that file's first publishDiagnostics (parse and lowering). The
   server waits DEBOUNCE seconds of quiet first; the "compile" row is the time minus that wait, and
   "server CPU" the processor time the server process used meanwhile (/proc, Linux: what the machine's
   load does not inflate);
3. hovers on the changed statement at once (answered from what is ready: the IR; the objects if the
   background worker built them within the server's HOVER_WAIT), then waits for the second
   publishDiagnostics (the background work done: the target's objects, expectations, semantic lints)
   and hovers twice more (answered from the objects).

Prints the figures and their ratios to `check`. No timed test: run it by hand
(`python benchmarks/lsp.py [--services N] [--repeat R]`, about a minute for 1000 services).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities, make_test_lsp_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile import generate

from netdsl.compiler import check_with_lints
from netdsl.lsp.server import DEBOUNCE


def write_flat(services: int, root: Path) -> Path:
    program = generate(services, 50, 10, 1)
    for rel, text in program.files.items():
        (root / rel.replace("/", "-")).write_text(text, encoding="utf-8")
    return next(p for p in sorted(root.glob("*-flows.seg")))


async def wait_for(client: LanguageClient, uri: str, before: object, timeout: float = 3600) -> float:
    """Waits until `uri` has diagnostics other than `before` (each publication is a new list); returns
    when (nan after `timeout` seconds: a server that publishes once, as the first `netdsl lsp` did)."""
    deadline = time.perf_counter() + timeout
    while client.diagnostics.get(uri) is before:
        if time.perf_counter() > deadline:
            return float("nan")
        await asyncio.sleep(0.005)
    return time.perf_counter()


def cpu_seconds(pid: int) -> float:
    """User + system time of a process so far (Linux /proc; nan elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_server(flows: Path, repeat: int, full_timeout: float) -> dict[str, list[float]]:
    client = make_test_lsp_client()
    await client.start_io(sys.executable, "-m", "netdsl", "lsp")
    await client.initialize_session(types.InitializeParams(capabilities=client_capabilities("visual-studio-code")))
    uri = flows.as_uri()
    text = flows.read_text(encoding="utf-8")
    out: dict[str, list[float]] = {"open": [], "change": [], "cpu": [], "full": [], "hover1": [], "hover2": []}
    server = getattr(client, "_server", None)
    pid = server.pid if server is not None else -1
    t0 = time.perf_counter()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="seg", version=1, text=text)))
    out["open"].append(await wait_for(client, uri, None) - t0)
    lines = text.rstrip("\n").split("\n")
    # one more flow statement before the block's closing brace: `<first service> accepts <second> on <port>`
    first_flow = next(i for i, line in enumerate(lines) if " accepts " in line or " connects to " in line)
    for k in range(repeat):
        extra = lines[first_flow].split(" accepts ")[0].split(" connects to ")[0] + f" accepts all pods on {20000 + k}"
        new = "\n".join([*lines[:-1], extra, lines[-1]]) + "\n"
        since = client.diagnostics.get(uri)
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=k + 2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=new)]))
        out["change"].append(await wait_for(client, uri, since) - t0)
        out["cpu"].append(cpu_seconds(pid) - cpu0)
        first = client.diagnostics.get(uri)
        for key in ("hover1", "full", "hover2", "hover2"):
            if key == "full":
                out[key].append(await wait_for(client, uri, first, timeout=full_timeout) - t0)
                continue
            t1 = time.perf_counter()
            got = await client.text_document_hover_async(types.HoverParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=len(lines) - 1, character=extra.index(" accepts ") + 2)))
            out[key].append(time.perf_counter() - t1)
            assert got is not None, "no hover"
    await client.shutdown_session()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--full-timeout", type=float, default=120,
                   help="seconds to wait for the second diagnostics (1 for a server that publishes once)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        flows = write_flat(args.services, root)
        files = len(list(root.glob("*.seg")))
        checks = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            check_with_lints([str(root)])
            checks.append(time.perf_counter() - t0)
        check = min(checks)
        got = asyncio.run(run_server(flows, args.repeat, args.full_timeout))
    change = statistics.median(got["change"])
    rows = [
        ("check (in-process, best)", check),
        ("lsp: open -> diagnostics (cold)", got["open"][0]),
        ("lsp: change -> diagnostics (median)", change),
        (f"lsp: of which compile (minus {DEBOUNCE:.2f} s debounce)", change - DEBOUNCE),
        ("lsp: server CPU from change to diagnostics (median)", statistics.median(got["cpu"])),
        ("lsp: change -> diagnostics with lints, objects built", statistics.median(got["full"])),
        ("lsp: first hover after a change (median)", statistics.median(got["hover1"])),
        ("lsp: hover once the objects are built (median)", statistics.median(got["hover2"])),
    ]
    print(f"{args.services} services in {files} files, {args.repeat} changes")
    print(f"{'':52} {'seconds':>8} {'/ check':>8}")
    for name, value in rows:
        print(f"{name:52} {value:8.3f} {value / check:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
