"""The one error every decoder raises, and the reasons it can carry.

`Reason` values are also the `reason` label of `aqpipe_deadletter_total` and the
`reason` field of a dead letter, so they are a public contract: add, never rename.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    SCHEMA = "schema"
    UNKNOWN_POLLUTANT = "unknown_pollutant"
    NOT_FINITE = "not_finite"
    NEGATIVE = "negative"
    FUTURE = "future"
    TOO_OLD = "too_old"
    NO_TIMEZONE = "no_timezone"
    IDENTITY_MISMATCH = "identity_mismatch"
    OVERSIZE = "oversize"
    UNKNOWN_TOPIC = "unknown_topic"
    UNKNOWN_UNIT = "unknown_unit"
    HJ212_FRAMING = "hj212_framing"
    HJ212_LENGTH = "hj212_length"
    HJ212_CRC = "hj212_crc"
    HJ212_SYNTAX = "hj212_syntax"
    HJ212_DECRYPT = "hj212_decrypt"  # HJ 212-2025 SM4-encrypted CP: no key, wrong key, or not the cipher-text form
    HJ212_PLAINTEXT = "hj212_plaintext"  # a logger registered to encrypt sent a data command in plain text
    UNKNOWN_MN = "unknown_mn"
    WRITE_REJECTED = "write_rejected"
    # Not the input's fault: handling it raised an unexpected exception (a bug). Kept with the
    # exception text so that, once fixed, `aqpipe deadletter replay` stores it.
    INTERNAL_ERROR = "internal_error"


class RejectedReading(Exception):
    """Input that cannot become a stored reading; it goes to the dead-letter store."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class ConfigError(Exception):
    """A configuration problem, named by its key (e.g. `influx.url`)."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail
