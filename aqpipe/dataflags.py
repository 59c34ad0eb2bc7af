"""HJ 212 data flags (数据标记) as one table: letter -> meaning and what a value so marked counts as.

Used by the decoders (which letters are stored), the validator and the aggregator
(which values count). HJ 212-2025 may have added letters (domain/hj212.md): a letter
not in this table is still stored as sent, and counts as *invalid* in every rollup,
by the lookup below, never by a branch. Adding a letter is adding a row.
"""

from __future__ import annotations

import re
from typing import Literal

Validity = Literal["valid", "invalid", "not_running"]

# HJ 212-2017 table (domain/hj212.md); validity as HJ 75-2017 is read in aggregator/stack.py:
# C calibration, M maintenance, D fault, B comms fault are not valid data; F (plant
# stopped) is "not running": neither a valid emission nor judged for exceedance.
DATA_FLAGS: dict[str, tuple[str, Validity]] = {
    "N": ("normal", "valid"),
    "F": ("plant stopped (停运)", "not_running"),
    "M": ("maintenance (维护)", "invalid"),
    "S": ("manually set value (手工输入)", "valid"),
    "D": ("instrument fault (故障)", "invalid"),
    "C": ("calibration (校准)", "invalid"),
    "T": ("over measuring range (超测上限)", "valid"),
    "B": ("communication fault (通讯异常)", "invalid"),
}

VALID_FLAGS = frozenset(k for k, (_, v) in DATA_FLAGS.items() if v == "valid")
NOT_RUNNING_FLAGS = frozenset(k for k, (_, v) in DATA_FLAGS.items() if v == "not_running")
INVALID_FLAGS = frozenset(k for k, (_, v) in DATA_FLAGS.items() if v == "invalid")

# What a flag looks like on the wire: a short code of ASCII letters (and digits, which
# no table uses yet). Anything else is garbage, not a flag, and rejects the frame.
_FLAG_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,3}")


def is_flag(value: str) -> bool:
    """True for anything shaped like a data flag, known or not (unknown ones are kept)."""
    return _FLAG_SHAPE.fullmatch(value) is not None


def validity(letter: str) -> Validity:
    """How a value with this flag counts; unknown letters count as invalid."""
    return DATA_FLAGS.get(letter, ("unknown", "invalid"))[1]
