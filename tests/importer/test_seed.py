"""The seed article's NetworkPolicy YAML (tests/importer/fixtures, extracted verbatim): each imports
and proves, with its pitfalls as the warnings `check` gives; where a policy holds one half of a flow
whose other half netdsl would derive, that half is a one-sided rule (`allows ingress from`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netdsl.importer import import_manifests

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.yaml"))
# One half of a flow alone: a flow statement would derive the other half, so these hold one-sided rules.
HALF_FLOWS = {"01-structure", "11-three-tier-app-policies", "12-microservices-policies"}
PITFALLS = {
    "03-allow-multiple-sources": {"namespace-name-label"},
    "06-allow-egress-to-db": {"namespace-name-label", "egress-without-dns"},  # UDP-only DNS, `name:` label
    "10-default-allow-dns": {"namespace-name-label", "egress-without-dns"},
}


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_seed_yaml(path: Path) -> None:
    result = import_manifests([str(path)])
    codes = {d.code for d in result.diagnostics}
    assert result.ok and result.files, [d.message for d in result.diagnostics]
    assert result.form == ("one-sided" if path.stem in HALF_FLOWS else "idiomatic")
    if path.stem in HALF_FLOWS:
        assert re.search(r" allows? (ingress from|egress to) ", result.text), result.text
    assert PITFALLS.get(path.stem, set()) <= codes
