"""Fixtures shared by the tests: the repository root, ../shared, and `netdsl.cli.main` under CliRunner."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings

from netdsl.cli import main

REPO = Path(__file__).resolve().parent.parent

# Property tests run a modest number of examples in CI; HYPOTHESIS_PROFILE=long hunts for bugs harder.
settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
