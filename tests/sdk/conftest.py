"""SDK unit-test fixtures: every session test runs once per twin (sync and async) through
:class:`session_driver.Driver`, against the in-process :class:`fake_openai.FakeOpenAI`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_openai import FakeOpenAI
from session_driver import Driver


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest, fake: FakeOpenAI) -> Driver:
    return Driver(request.param, fake)
