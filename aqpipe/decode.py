"""From one MQTT message to validated readings, whatever the format."""

from __future__ import annotations

from aqpipe import topics
from aqpipe.config import Config
from aqpipe.decoders import json as json_decoder
from aqpipe.errors import Reason, RejectedReading
from aqpipe.reading import Reading
from aqpipe.registry import Registry
from aqpipe.validate import Validator


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

    def decode(self, topic: str, payload: bytes, now_ns: int) -> list[Reading]:
        where = topics.parse(topic, self.prefix)
        if where is None:
            raise RejectedReading(Reason.UNKNOWN_TOPIC, f"{topic!r} is not {self.prefix}/(ambient|stack|hj212)/<id>")
        if len(payload) > self.max_payload_bytes:
            raise RejectedReading(Reason.OVERSIZE, f"{len(payload)} bytes > ingest.max_payload_bytes {self.max_payload_bytes}")
        if where.kind == "hj212":
            from aqpipe.decoders import hj212

            readings = hj212.decode(payload, where.identity, self.registry)
        else:
            readings = json_decoder.decode(where.kind, where.identity, payload)
        for reading in readings:
            self.validator.check(reading, now_ns)
        return readings
