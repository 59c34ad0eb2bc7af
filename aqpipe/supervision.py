"""No thread dies silently: supervised loops, heartbeats, readiness and a fatal verdict.

Every long-lived thread of a service runs under its `Supervisor`:

- an unexpected exception is logged (`event=thread_error thread=NAME error=...`), counted in
  `aqpipe_thread_errors_total{thread}`, and the thread's loop is started again after a
  backoff. The loop keeps its work in hand on its own object (a batch, journal items), so a
  restart resumes that work instead of dropping it;
- each loop beats a heartbeat; `check()` (part of the service's `ready()`, hence `/readyz`)
  names a thread that is failing (its last step raised), dead, or stalled (no heartbeat for
  `threads.stall_after_s`);
- a thread that errs more than `threads.max_restarts` times within
  `threads.restart_window_s` is given up and the supervisor turns fatal: the runner stops
  the process with a non-zero status and systemd starts it again. Messages not yet
  acknowledged wait in the broker's session, so nothing is lost.

paho's network thread is not ours to restart: its callbacks are wrapped (`callback`), and
the thread itself is watched (`watch`): if it ends anyway, the supervisor turns fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from aqpipe.config import ThreadsConfig

log = logging.getLogger("aqpipe.supervision")

THREAD_ERRORS = Counter("aqpipe_thread_errors_total",
                        "Unexpected exceptions caught in a long-lived thread (logged as event=thread_error)", ["thread"])

EXIT_FATAL = 70  # EX_SOFTWARE: a thread could not recover; systemd (Restart=) starts the service again


@dataclass(frozen=True, slots=True)
class Policy:
    """How long a heartbeat may be silent, and how many restarts a thread gets."""

    stall_after_s: float = 120.0
    max_restarts: int = 5
    restart_window_s: float = 300.0
    max_backoff_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: ThreadsConfig) -> "Policy":
        return cls(cfg.stall_after_s, cfg.max_restarts, cfg.restart_window_s)


@dataclass(slots=True)
class _Health:
    name: str
    stalls: bool  # False for threads that may wait idle for ever (message callbacks)
    beat_at: float = 0.0
    errors: deque = field(default_factory=deque)  # monotonic times of recent errors
    failing: str | None = None  # the last step raised this and has not succeeded since
    dead: str | None = None
    thread: threading.Thread | None = None
    thread_of: Callable[[], threading.Thread | None] | None = None  # a watched thread we do not own


class Supervisor:
    """The threads of one service. Thread names are metric labels: keep them unique per process
    (`ingest-writer`, `aggregator-scheduler`, ...)."""

    def __init__(self, policy: Policy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or Policy()
        self.clock = clock
        self.stopping = threading.Event()  # set by the service's stop(): ended threads are expected
        self._threads: dict[str, _Health] = {}
        self._fatal: str | None = None
        self._lock = threading.Lock()
        _install_excepthook()

    # --- registering threads ---
    def thread(self, name: str, loop: Callable[[], None]) -> threading.Thread:
        """A daemon thread `name` (not started) that runs `loop` until it returns, and runs it
        again after an unexpected exception (backoff, restart budget)."""
        health = self._register(name, stalls=True)
        health.thread = threading.Thread(target=self._supervise, args=(health, loop), name=name, daemon=True)
        return health.thread

    def watch(self, name: str, thread_of: Callable[[], threading.Thread | None]) -> None:
        """Watch a thread we cannot restart (paho's network loop): if it ends while the service
        runs, the supervisor turns fatal."""
        self._register(name, stalls=False).thread_of = thread_of

    def callback(self, name: str, fn: Callable[..., None],
                 on_error: Callable[..., None]) -> Callable[..., None]:
        """Wrap a callback run by a thread we do not own (paho's on_message). An exception is
        logged and counted, then `on_error(*args, error)` decides what becomes of the input;
        the thread goes on. Only if on_error raises too is the service given up."""
        health = self._register(name, stalls=False)

        def guarded(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - the point: nothing escapes into paho's loop
                self._record(health, e)
                try:
                    on_error(*args, e)
                except Exception as e2:  # noqa: BLE001
                    self._record(health, e2)
                    self.give_up(name, f"could not set aside the input after {_text(e)}: {_text(e2)}")
            else:
                if health.failing is not None:
                    health.failing = None

        return guarded

    def _register(self, name: str, stalls: bool) -> _Health:
        """A new record; a thread we do not own may be named again (its callbacks, its watch)."""
        with self._lock:
            if name in self._threads:
                if stalls or self._threads[name].stalls:
                    raise ValueError(f"thread name {name!r} is already supervised")
                return self._threads[name]
            health = self._threads[name] = _Health(name, stalls, beat_at=self.clock())
            THREAD_ERRORS.labels(name)  # the series exists (at 0) before the first error
            return health

    # --- what loops call ---
    def beat(self, name: str | None = None) -> None:
        """The loop made progress (or is waiting idle, as it should): alive, and not failing."""
        health = self._threads.get(name if name is not None else threading.current_thread().name)
        if health is not None:
            health.beat_at = self.clock()
            health.failing = None

    def error(self, name: str, e: BaseException) -> bool:
        """Record an unexpected exception of thread `name`. False when the thread has erred more
        than max_restarts times within restart_window_s: it is given up (fatal)."""
        health = self._threads[name]
        self._record(health, e)
        now = self.clock()
        health.errors.append(now)
        while health.errors and now - health.errors[0] > self.policy.restart_window_s:
            health.errors.popleft()
        if len(health.errors) > self.policy.max_restarts:
            self.give_up(name, f"{len(health.errors)} errors within {self.policy.restart_window_s:g} s "
                               f"(threads.max_restarts {self.policy.max_restarts}), last: {_text(e)}")
            return False
        return True

    def give_up(self, name: str, why: str) -> None:
        """Mark thread `name` dead and the service fatal (the runner exits non-zero)."""
        health = self._threads.get(name)
        if health is not None and health.dead is None:
            health.dead = why
        with self._lock:
            if self._fatal is None:
                self._fatal = f"thread {name}: {why}"
                log.critical("event=thread_fatal thread=%s reason=%r action=exit_nonzero "
                             "(the supervisor, e.g. systemd, starts the service again; unacknowledged "
                             "messages wait in the broker)", name, why)

    def stop(self) -> None:
        """The service is stopping: threads that end from now on are expected to."""
        self.stopping.set()

    # --- what readiness and the runner ask ---
    def fatal(self) -> str | None:
        """Why the service cannot go on (a thread given up or ended), or None."""
        if not self.stopping.is_set():
            for health in list(self._threads.values()):
                thread = health.thread_of() if health.thread_of is not None else health.thread
                if health.dead is None and thread is not None and thread.ident is not None and not thread.is_alive():
                    self.give_up(health.name, "the thread has ended")
        return self._fatal

    def check(self) -> tuple[bool, str]:
        """(True, "ok"), or False and every thread that is dead, failing or stalled."""
        self.fatal()
        now = self.clock()
        problems: list[str] = []
        for h in list(self._threads.values()):
            started = h.thread is not None and h.thread.ident is not None
            if h.dead is not None:
                problems.append(f"thread {h.name} dead: {h.dead}")
            elif h.failing is not None:
                problems.append(f"thread {h.name} failing: {h.failing}")
            elif h.stalls and started and not self.stopping.is_set() and now - h.beat_at > self.policy.stall_after_s:
                problems.append(f"thread {h.name} stalled: no heartbeat for {now - h.beat_at:.0f} s "
                                f"(threads.stall_after_s {self.policy.stall_after_s:g})")
        return (not problems, "; ".join(problems) or "ok")

    def errors(self, name: str) -> int:
        """Errors of thread `name` within the restart window (status lines, tests)."""
        return len(self._threads[name].errors)

    # --- running a loop ---
    def _supervise(self, health: _Health, loop: Callable[[], None]) -> None:
        health.beat_at = self.clock()
        while True:
            try:
                loop()
                return  # a normal end: the loop saw its stop signal (or fatal() notices it ended)
            except Exception as e:  # noqa: BLE001 - the point: the thread must not die silently
                if not self.error(health.name, e):
                    return
            delay = min(self.policy.max_backoff_s, 0.1 * 2 ** (len(health.errors) - 1))
            log.warning("event=thread_restart thread=%s delay_s=%.2f errors_in_window=%d",
                        health.name, delay, len(health.errors))
            # Cut short when stopping: the loop runs again to see its own stop signal and
            # flush what it holds.
            self.stopping.wait(delay)
            health.beat_at = self.clock()

    def _record(self, health: _Health, e: BaseException) -> None:
        THREAD_ERRORS.labels(health.name).inc()
        health.failing = _text(e)
        log.error("event=thread_error thread=%s error=%r", health.name, _text(e), exc_info=e)


def logged_only(*args: Any) -> None:
    """`on_error` for callbacks whose input needs nothing set aside (on_connect, on_subscribe,
    on_disconnect): the supervisor has logged and counted the error already."""


def _text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


_hook_lock = threading.Lock()


def _install_excepthook() -> None:
    """Any thread that dies of an exception (ours missed it, or a library's thread) is logged
    and counted too; the default hook only prints a traceback to stderr. Installed again if
    someone replaced it meanwhile (a test framework restoring its own)."""
    with _hook_lock:
        previous = threading.excepthook
        if getattr(previous, "_aqpipe", False):
            return

        def hook(args: threading.ExceptHookArgs) -> None:
            if args.exc_type is not SystemExit:
                name = args.thread.name if args.thread is not None else "unknown"
                THREAD_ERRORS.labels(name).inc()
                log.error("event=thread_error thread=%s error=%r action=thread_ended", name,
                          f"{args.exc_type.__name__}: {args.exc_value}",
                          exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
            if previous is not threading.__excepthook__:
                previous(args)  # e.g. a test framework's, which turns it into a warning

        hook._aqpipe = True  # type: ignore[attr-defined]
        threading.excepthook = hook
