"""The thread supervisor: errors logged and counted, loops restarted, heartbeats, a fatal verdict."""

from __future__ import annotations

import logging
import threading

import pytest
from prometheus_client import REGISTRY

from aqpipe.supervision import Policy, Supervisor

FAST = Policy(stall_after_s=5.0, max_restarts=3, restart_window_s=60.0, max_backoff_s=0.01)


def _errors(thread: str) -> float:
    return REGISTRY.get_sample_value("aqpipe_thread_errors_total", {"thread": thread}) or 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_that_raises_is_logged_counted_and_run_again_until_it_ends(caplog):
    sup = Supervisor(FAST)
    runs: list[int] = []

    def loop() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise RuntimeError(f"bug {len(runs)}")
        sup.beat("t-restart")

    before = _errors("t-restart")
    with caplog.at_level(logging.ERROR, logger="aqpipe.supervision"):
        thread = sup.thread("t-restart", loop)
        thread.start()
        thread.join(5)
    assert not thread.is_alive()
    assert len(runs) == 3
    assert _errors("t-restart") == before + 2
    assert "event=thread_error thread=t-restart error='RuntimeError: bug 1'" in caplog.text
    sup.stop()  # the loop ended because the service stops: expected, not dead
    assert sup.check() == (True, "ok")
    assert sup.fatal() is None


def test_a_failing_thread_is_named_by_readiness_until_it_beats_again():
    sup = Supervisor(FAST)
    release = threading.Event()
    failed_once = threading.Event()

    def loop() -> None:
        if not failed_once.is_set():
            failed_once.set()
            raise ValueError("decoder bug")
        release.wait(5)
        sup.beat("t-failing")
        sup.stopping.wait(5)

    thread = sup.thread("t-failing", loop)
    thread.start()
    failed_once.wait(5)
    ok, why = sup.check()
    assert not ok and "thread t-failing failing: ValueError: decoder bug" in why
    release.set()
    for _ in range(500):
        if sup.check()[0]:
            break
        threading.Event().wait(0.01)
    assert sup.check() == (True, "ok")
    sup.stop()
    thread.join(5)


def test_a_thread_that_keeps_failing_is_given_up_and_the_service_is_fatal():
    sup = Supervisor(FAST)
    calls: list[int] = []

    def loop() -> None:
        calls.append(1)
        raise OSError("disk gone")

    thread = sup.thread("t-fatal", loop)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert len(calls) == FAST.max_restarts + 1  # the first run and max_restarts restarts
    reason = sup.fatal()
    assert reason is not None and "t-fatal" in reason and "OSError: disk gone" in reason
    ok, why = sup.check()
    assert not ok and why.startswith("thread t-fatal dead: 4 errors within 60 s")


def test_errors_older_than_the_window_do_not_count_towards_giving_up():
    clock = FakeClock()
    sup = Supervisor(FAST, clock=clock)
    sup.thread("t-window", lambda: None)
    for _ in range(10):
        assert sup.error("t-window", RuntimeError("now and then"))
        clock.now += 61.0
    assert sup.fatal() is None
    assert sup.errors("t-window") == 1


def test_a_thread_without_a_heartbeat_for_the_bound_is_named_stalled():
    clock = FakeClock()
    sup = Supervisor(FAST, clock=clock)
    hold = threading.Event()
    thread = sup.thread("t-stall", lambda: hold.wait(5))
    thread.start()
    assert sup.check() == (True, "ok")
    clock.now += 4.0
    assert sup.check() == (True, "ok")
    clock.now += 2.0
    ok, why = sup.check()
    assert not ok and why == "thread t-stall stalled: no heartbeat for 6 s (threads.stall_after_s 5)"
    sup.beat("t-stall")
    assert sup.check() == (True, "ok")
    hold.set()
    sup.stop()
    thread.join(5)


def test_a_loop_that_ends_while_the_service_runs_is_dead_and_fatal():
    sup = Supervisor(FAST)
    thread = sup.thread("t-ended", lambda: None)
    thread.start()
    thread.join(5)
    assert sup.fatal() == "thread t-ended: the thread has ended"
    assert sup.check() == (False, "thread t-ended dead: the thread has ended")


def test_a_callback_error_is_counted_handed_to_on_error_and_the_caller_goes_on():
    sup = Supervisor(FAST)
    set_aside: list[tuple[str, str]] = []

    def on_message(msg: str) -> None:
        if msg == "poison":
            raise KeyError("pm25")

    def on_error(msg: str, error: Exception) -> None:
        set_aside.append((msg, repr(error)))

    guarded = sup.callback("t-callback", on_message, on_error)
    before = _errors("t-callback")
    guarded("poison")  # does not raise: paho's loop would end
    assert set_aside == [("poison", "KeyError('pm25')")]
    assert _errors("t-callback") == before + 1
    assert sup.check() == (False, "thread t-callback failing: KeyError: 'pm25'")
    guarded("fine")
    assert sup.check() == (True, "ok")
    for _ in range(10):  # a stream of bad messages is not a reason to restart the process
        guarded("poison")
    assert sup.fatal() is None


def test_a_callback_whose_error_cannot_be_set_aside_makes_the_service_fatal():
    sup = Supervisor(FAST)

    def on_error(msg: str, error: Exception) -> None:
        raise OSError("dead-letter store not writable")

    guarded = sup.callback("t-callback-fatal", lambda msg: 1 / 0, on_error)
    guarded("x")
    reason = sup.fatal()
    assert reason is not None and "could not set aside" in reason and "OSError" in reason


def test_a_watched_thread_that_ends_makes_the_service_fatal_unless_it_stops():
    sup = Supervisor(FAST)
    thread = threading.Thread(target=lambda: None, name="not-ours")
    sup.watch("t-watched", lambda: thread)
    assert sup.fatal() is None  # not started yet
    thread.start()
    thread.join(5)
    assert sup.fatal() == "thread t-watched: the thread has ended"

    stopping = Supervisor(FAST)
    other = threading.Thread(target=lambda: None)
    stopping.watch("t-watched-stop", lambda: other)
    other.start()
    other.join(5)
    stopping.stop()
    assert stopping.fatal() is None


def test_a_thread_name_is_supervised_once():
    sup = Supervisor(FAST)
    sup.thread("t-once", lambda: None)
    with pytest.raises(ValueError, match="already supervised"):
        sup.thread("t-once", lambda: None)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_any_thread_that_dies_of_an_exception_is_counted(caplog):
    Supervisor(FAST)  # installs the hook

    def die() -> None:
        raise RuntimeError("library thread bug")

    before = _errors("t-plain")
    with caplog.at_level(logging.ERROR, logger="aqpipe.supervision"):
        thread = threading.Thread(target=die, name="t-plain")
        thread.start()
        thread.join(5)
    assert _errors("t-plain") == before + 1
    assert "event=thread_error thread=t-plain error='RuntimeError: library thread bug' action=thread_ended" in caplog.text
