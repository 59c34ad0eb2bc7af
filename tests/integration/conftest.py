"""Fixtures of the alerts tests: an HTTP receiver, and a real Alertmanager delivering to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import servers
from tests.alerting import Receiver, alertmanager_to


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def alertmanager(receiver: Receiver, tmp_path) -> Iterator[servers.Server]:
    """A real Alertmanager on a free port whose every alert goes to `receiver` /am."""
    server = alertmanager_to(receiver, tmp_path / "am")
    yield server
    server.stop()
