"""Fixtures shared by the tests: the repository root, ../shared, and `netdsl.cli.main` under CliRunner;
the Hypothesis profiles; and the rule that a test marked `nca` never skips in CI (it fails instead)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings

from netdsl.cli import main

REPO = Path(__file__).resolve().parent.parent


def in_ci() -> bool:
    """CI is set (`.ci/run` sets CI=true): tests that would skip on a developer's machine must fail."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_tool(name: str) -> str:
    """The path of a real tool a test drives (kubectl, kpt, pre-commit, ...): skipped visibly on a
    developer's machine without it, a failure in CI (.ci/run installs what the tests need)."""
    path = shutil.which(name)
    if path is None:
        if in_ci():
            pytest.fail(f"`{name}` is not installed, and CI must run this test (see .ci/run)")
        pytest.skip(f"`{name}` is not installed")
    return path


# Hypothesis profiles. Every property test inherits the loaded one (`@settings(...)` only overrides the
# fields it names), so the seed policy below holds suite-wide:
# - ci: the same examples on every run (derandomize: the seed is a hash of the test's source), no
#   example database, a bounded number of examples; loaded whenever CI is set.
# - dev: the default on a developer's machine without CI: as many examples, random seeds, failures
#   replayed from the local .hypothesis database.
# - long: random seeds and 20x the examples, to hunt for bugs (`HYPOTHESIS_PROFILE=long`, see
#   CONTRIBUTING.md). HYPOTHESIS_PROFILE always wins over CI.
EXAMPLES = 150
settings.register_profile("ci", max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20 * EXAMPLES, deadline=None, derandomize=False,
                          suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if in_ci() else "dev"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI a skipped `nca` test is a failure: the cross-check against network-config-analyzer must
    run there (tests/nca.py already raises in CI; this also catches skips from anywhere else)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and in_ci() and item.get_closest_marker("nca") is not None:
        report.outcome = "failed"
        report.longrepr = f"an `nca` test skipped although CI is set: {report.longrepr}"


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def shared() -> Path:
    """`<repo>/../shared` (may not exist outside CI and the developers' machines)."""
    return REPO.parent / "shared"


@pytest.fixture
def netdsl() -> Callable[..., Result]:
    """Run the CLI in-process: `netdsl("compile", "x.seg", input="...")`; stdout and stderr are separate."""

    def run(*args: str, input: str | bytes | None = None) -> Result:
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    return run
