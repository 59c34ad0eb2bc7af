"""Which loggers may talk to the gateway: MN in the registry and PW as in the secrets file.

The PW is compared in constant time (`hmac.compare_digest`), never logged and never
put in an error. A logger whose MN has no PW in the secrets file is refused as
`auth` (fail closed) unless `hj212_gateway.check_pw` is off.
"""

from __future__ import annotations

import hmac
import re
from typing import Literal

from aqpipe.registry import Registry

Refusal = Literal["auth", "unknown_mn"]

_PW_FIELD = re.compile(rb"(?:^|;)PW=([^;&]*)")


def pw_of(raw: bytes) -> str | None:
    """The PW field of a frame that does not parse (for the malformed frames forwarded to the dead letters)."""
    m = _PW_FIELD.search(raw[6:])
    return m.group(1).decode("utf-8", "replace") if m else None


class Access:
    """`check(mn, pw)`: None when the logger may talk, else why not."""

    def __init__(self, registry: Registry, check_pw: bool = True) -> None:
        self.registry = registry
        self.check_pw = check_pw

    def check(self, mn: str, pw: str | None) -> Refusal | None:
        if self.registry.by_mn(mn) is None:
            return "unknown_mn"
        if not self.check_pw:
            return None
        expected = self.registry.secrets.pw(mn)
        if expected is None or pw is None:
            return "auth"
        # Constant time over the bytes, so response timing does not reveal how much of a PW was right.
        return None if hmac.compare_digest(pw.encode("utf-8"), expected.encode("utf-8")) else "auth"
