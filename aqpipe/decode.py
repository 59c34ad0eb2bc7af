"""From one MQTT message to validated readings, whatever the format."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from aqpipe import topics
from aqpipe.config import Config
from aqpipe.decoders import json as json_decoder
from aqpipe.errors import Reason, RejectedReading
from aqpipe.reading import Reading, Rows, to_line
from aqpipe.registry import Registry
from aqpipe.validate import Validator


class Decoded(Sequence[Reading]):
    """A message's validated readings. Ingest needs only their line protocol (`lines`);
    for a plain JSON message that is built straight from the payload's values, and the
    `Reading` objects only when someone iterates or indexes (replay, tools, tests)."""

    __slots__ = ("measurement", "_rows", "_readings", "_lines")

    def __init__(self, source: Rows | list[Reading]) -> None:
        if isinstance(source, Rows):
            self._rows: Rows | None = source
            self._readings: list[Reading] | None = None
            self.measurement: str | None = source.measurement
        else:
            self._rows, self._readings = None, source
            self.measurement = source[0].measurement if source else None
        self._lines: list[str] | None = None

    @property
    def lines(self) -> list[str]:
        """Line protocol, one point per reading, as `to_line` formats them."""
        if self._lines is None:
            self._lines = self._rows.lines() if self._rows is not None else [to_line(r) for r in self.readings]
        return self._lines

    @property
    def readings(self) -> list[Reading]:
        if self._readings is None:
            assert self._rows is not None
            self._readings = self._rows.readings()
        return self._readings

    def __len__(self) -> int:
        return len(self._rows) if self._rows is not None else len(self.readings)

    @overload
    def __getitem__(self, index: int) -> Reading: ...
    @overload
    def __getitem__(self, index: slice) -> list[Reading]: ...
    def __getitem__(self, index: int | slice) -> Reading | list[Reading]:
        return self.readings[index]

    def __iter__(self) -> Iterator[Reading]:
        return iter(self.readings)


class MessageDecoder:
    """Topic + payload -> readings, or RejectedReading with the reason for the dead letter."""

    def __init__(self, prefix: str, registry: Registry, validator: Validator, max_payload_bytes: int) -> None:
        self.prefix = prefix
        self.registry = registry
        self.validator = validator
        self.max_payload_bytes = max_payload_bytes

    @classmethod
    def from_config(cls, cfg: Config, registry: Registry) -> "MessageDecoder":
        """The decoder every service and tool uses, so they judge a message alike."""
        return cls(cfg.mqtt.topic_prefix, registry,
                   Validator(cfg.ingest.future_tolerance_s, cfg.ingest.retention_days,
                             {"ug/m3": cfg.ingest.negative_noise, "mg/m3": cfg.ingest.negative_noise_mg}),
                   cfg.ingest.max_payload_bytes)

    def decode(self, topic: str, payload: bytes, now_ns: int) -> Decoded:
        where = topics.parse(topic, self.prefix)
        if where is None:
            raise RejectedReading(Reason.UNKNOWN_TOPIC, f"{topic!r} is not {self.prefix}/(ambient|stack|hj212)/<id>")
        if len(payload) > self.max_payload_bytes:
            raise RejectedReading(Reason.OVERSIZE, f"{len(payload)} bytes > ingest.max_payload_bytes {self.max_payload_bytes}")
        if where.kind == "hj212":
            from aqpipe.decoders import hj212

            readings = hj212.decode(payload, where.identity, self.registry)
        else:
            rows = json_decoder.decode_rows(where.kind, where.identity, payload)
            if isinstance(rows, Rows):
                self.validator.check_rows(rows, now_ns)
                return Decoded(rows)
            readings = rows
        for reading in readings:
            self.validator.check(reading, now_ns)
        return Decoded(readings)
