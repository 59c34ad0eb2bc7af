"""Failed-login rate limiting, per username and per client address.

After `max_failures` failures within `window_s` for a username (a guessed account) or
for a client address (one client trying many accounts), further attempts are refused
until the oldest failure leaves the window, without even checking the password.
In memory, per process: a restart forgets (a deployment with several instances puts
its proxy's rate limit in front as well).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

_MAX_KEYS = 100_000  # bound on remembered usernames/addresses (a flood of random names)


class LoginThrottle:
    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def retry_after(self, username: str, address: str) -> float | None:
        """Seconds until a login for (username, address) may be tried again, or None if it may now."""
        now = self._clock()
        with self._lock:
            waits = []
            for key in (f"user:{username}", f"addr:{address}"):
                q = self._recent(key, now)
                if len(q) >= self.max_failures:
                    waits.append(q[len(q) - self.max_failures] + self.window_s - now)
            return max(waits) if waits else None

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= _MAX_KEYS:
                for key in list(self._failures):
                    self._recent(key, now)
            for key in (f"user:{username}", f"addr:{address}"):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        """A right password clears that username's failures (not the address's)."""
        with self._lock:
            self._failures.pop(f"user:{username}", None)
