"""Golden files shared by the backend tests: tests/golden/<target>/<example path with / as __>.yaml,
compared byte for byte; NETDSL_UPDATE_GOLDEN=1 rewrites them (then read the diff)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UPDATE = os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"


def golden_path(target: str, example: str) -> Path:
    """examples/seed/3.1-x.seg -> tests/golden/<target>/examples__seed__3.1-x.yaml"""
    return REPO / "tests" / "golden" / target / (example.removesuffix(".seg").replace("/", "__") + ".yaml")


def check_golden(target: str, example: str, out: bytes) -> None:
    assert f'netdsl.dev/source: "{example}:'.encode() in out
    path = golden_path(target, example)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != out:
            path.write_bytes(out)
    assert path.exists(), f"{path} is missing: run with NETDSL_UPDATE_GOLDEN=1"
    assert out == path.read_bytes(), f"{example} no longer compiles to {path.name}"


def stray_golden_files(target: str, examples: list[str]) -> list[str]:
    expected = {golden_path(target, e).name for e in examples}
    return sorted(p.name for p in (REPO / "tests" / "golden" / target).glob("*.yaml") if p.name not in expected)
