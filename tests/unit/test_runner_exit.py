"""The runner stops every service and exits 70 when one reports a fatal thread."""

from __future__ import annotations

import signal
import threading

import pytest

from aqpipe.config import Config
from aqpipe.runner import run_services
from aqpipe.supervision import EXIT_FATAL


class Service:
    """A service whose thread gives up after `fatal_after` calls of fatal()."""

    def __init__(self, log: list[str], name: str, fatal_after: int | None) -> None:
        self.log, self.name, self.fatal_after, self.calls = log, name, fatal_after, 0
        self.status_interval_s = 0.05

    def start(self) -> None:
        self.log.append(f"start {self.name}")

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")

    def ready(self) -> tuple[bool, str]:
        return True, "ok"

    def status_line(self) -> str:
        return "fine"

    def fatal(self) -> str | None:
        self.calls += 1
        if self.fatal_after is not None and self.calls > self.fatal_after:
            return "thread x-writer: 6 errors within 300 s"
        return None


@pytest.fixture
def signals():
    """run_services installs SIGTERM/SIGINT handlers: put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_a_fatal_service_stops_every_service_in_reverse_order_and_exits_70(signals, caplog, tmp_path):
    log: list[str] = []
    cfg = Config.model_validate({"data_dir": str(tmp_path), "metrics": {"port": 0}})
    status = run_services(cfg, [("one", lambda c: Service(log, "one", None)),
                                ("two", lambda c: Service(log, "two", 3))])
    assert status == EXIT_FATAL == 70
    assert log == ["start one", "start two", "stop two", "stop one"]
    assert "event=service_fatal service=two" in caplog.text


def test_a_signal_stops_the_services_and_exits_0(signals, tmp_path):
    log: list[str] = []
    cfg = Config.model_validate({"data_dir": str(tmp_path), "metrics": {"port": 0}})
    threading.Timer(0.3, signal.raise_signal, (signal.SIGTERM,)).start()
    assert run_services(cfg, [("one", lambda c: Service(log, "one", None))]) == 0
    assert log == ["start one", "stop one"]


def test_each_service_logs_its_status_line_at_its_own_interval(signals, caplog, tmp_path):
    log: list[str] = []
    fast, slow = Service(log, "fast", None), Service(log, "slow", None)
    fast.status_interval_s, slow.status_interval_s = 0.1, 10.0
    cfg = Config.model_validate({"data_dir": str(tmp_path), "metrics": {"port": 0}})

    def stop_after_five_fast_lines() -> None:
        while caplog.text.count("service=fast") < 5:
            threading.Event().wait(0.05)
        signal.raise_signal(signal.SIGTERM)

    with caplog.at_level("INFO", logger="aqpipe"):
        threading.Thread(target=stop_after_five_fast_lines, daemon=True).start()
        assert run_services(cfg, [("fast", lambda c: fast), ("slow", lambda c: slow)]) == 0
    assert caplog.text.count("event=status service=fast") >= 5
    assert "event=status service=slow" not in caplog.text
